//! Storage: the pool, the schema, and one module per table or aggregate. Every query
//! function takes a connection and runs synchronously; [`Database::run`] runs them on the
//! blocking pool. Nothing here knows about HTTP or the domain's rules; it returns its own
//! [`StorageError`], and outcomes (a taken name, a reused token) as plain values.

pub mod audit;
pub mod clients;
pub mod connection;
mod error;
pub mod outbox;
pub mod prune;
pub mod refresh_tokens;
pub mod revocation_feed;
pub mod schema;
pub mod sessions;
pub mod throttle;
pub mod user_events;
pub mod user_service;
pub mod users;

pub mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use tokio::sync::Semaphore;

pub use connection::{DbConn, claim_single_instance, open_connection, run_migrations};
pub use error::StorageError;

use crate::config::{DatabaseUrl, Settings};
use connection::{ConnectionManager, prepare};

pub type Pool = r2d2::Pool<ConnectionManager>;

/// The database handle the rest of the service uses.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    backend: &'static str,
    /// `database.timeout`: how long a caller waits for its work.
    timeout: Duration,
    /// Bounds the blocking threads working for the database: a hung database can tie up
    /// this many, not one per request.
    slots: Arc<Semaphore>,
    /// SQLite only: writers take turns here, first come first served, instead of polling
    /// for the file's write lock (whose back-off made the slowest of many concurrent
    /// writers wait most of a second).
    write_turn: Option<Arc<Semaphore>>,
    url: DatabaseUrl,
    settings: Arc<Settings>,
    /// Failures to connect, as the pool reports them.
    connection_errors: Arc<AtomicU64>,
    /// Calls answered `TimedOut`.
    timeouts: Arc<AtomicU64>,
}

/// The pool and its troubles, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    pub connections: u32,
    pub idle: u32,
    pub connection_errors: u64,
    pub timeouts: u64,
}

impl Database {
    /// Opens the pool (creating the default data directory if needed). Fails if the database
    /// cannot be reached within `database.connect_timeout`.
    pub fn connect(settings: &Settings) -> Result<Database, StorageError> {
        let url = prepare(settings)?;
        let backend = url.backend_name();
        let memory = matches!(url, DatabaseUrl::SqliteMemory);
        let manager = ConnectionManager::new(settings, url.clone());
        let connection_errors = Arc::new(AtomicU64::new(0));
        let mut builder = r2d2::Pool::builder()
            .max_size(settings.database.pool_size)
            .connection_timeout(settings.database.connect_timeout.get())
            .error_handler(Box::new(LogPoolErrors(connection_errors.clone())));
        if memory {
            // Every connection to :memory: is its own database: keep exactly one, forever.
            builder = builder
                .max_size(1)
                .min_idle(Some(1))
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            builder = builder.min_idle(Some(1));
        }
        let pool = builder.build(manager)?;
        let slots = settings.database.pool_size as usize * 4;
        Ok(Database {
            pool,
            backend,
            timeout: settings.database.timeout.get(),
            slots: Arc::new(Semaphore::new(slots)),
            write_turn: (backend == "sqlite").then(|| Arc::new(Semaphore::new(1))),
            url,
            settings: Arc::new(settings.clone()),
            connection_errors,
            timeouts: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            connections: state.connections,
            idle: state.idle_connections,
            connection_errors: self.connection_errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Runs `f` with a pooled connection on the blocking thread pool. `f` may return any
    /// error that storage errors convert into, so callers compose queries in their own terms.
    ///
    /// Answers within `database.timeout` whatever the database does: past it the caller
    /// gets [`StorageError::TimedOut`] (a 503) while the work, if it is stuck in a hung
    /// server, finishes or fails in the background and gives its connection back. In a
    /// transaction nothing is committed unless `f` returns, so a request answered 503 may
    /// still have taken effect only if its commit was already under way.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.run_in_turn(false, f).await
    }

    /// [`Database::run`] for work that writes. On SQLite, writers of this process take
    /// turns in arrival order (the turn is held until the work ends, even past the caller's
    /// deadline); on PostgreSQL it is `run`, and row locks order the writers.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        self.run_in_turn(true, f).await
    }

    async fn run_in_turn<T, E, F>(&self, writes: bool, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
            E::from(StorageError::TimedOut(self.timeout))
        };
        let slot = match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) | Err(_) => return Err(timed_out()),
        };
        let turn = match (&self.write_turn, writes) {
            (Some(turns), true) => {
                match tokio::time::timeout_at(deadline, turns.clone().acquire_owned()).await {
                    Ok(Ok(turn)) => Some(turn),
                    Ok(Err(_)) | Err(_) => return Err(timed_out()),
                }
            }
            _ => None,
        };
        let pool = self.pool.clone();
        let work = tokio::task::spawn_blocking(move || {
            let result = pool
                .get()
                .map_err(StorageError::from)
                .map_err(E::from)
                .and_then(|mut conn| f(&mut conn));
            drop(turn);
            drop(slot);
            result
        });
        match tokio::time::timeout_at(deadline, work).await {
            Ok(joined) => joined.map_err(|e| E::from(StorageError::Task(e)))?,
            Err(_) => Err(timed_out()),
        }
    }

    /// Same as [`Database::run`] for code that is already off the async workers.
    pub fn run_blocking<T, E>(&self, f: impl FnOnce(&mut DbConn) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        let mut conn = self.pool.get().map_err(StorageError::from)?;
        f(&mut conn)
    }

    /// Applies pending migrations on a connection of its own (see [`run_migrations`]);
    /// returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<String>, StorageError> {
        let mut conn = ConnectionManager::new(&self.settings, self.url.clone())
            .connect()
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?;
        run_migrations(&mut conn)
    }

    /// Whether a pooled connection answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.run(|conn| conn.ping().map_err(StorageError::from))
            .await
    }
}

#[derive(Debug)]
struct LogPoolErrors(Arc<AtomicU64>);

impl r2d2::HandleError<r2d2::Error> for LogPoolErrors {
    fn handle_error(&self, error: r2d2::Error) {
        self.0.fetch_add(1, Ordering::Relaxed);
        // Connection errors may echo the URL's host, never its password (libpq omits it).
        log::warn!("database connection error: {error}");
    }
}
