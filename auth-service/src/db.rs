//! Storage plumbing: one connection type over SQLite and PostgreSQL, the pool, migrations,
//! and running diesel work on the blocking pool.

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;
use crate::settings::{Settings, SettingsError};

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// A connection to whichever backend `database.url` names.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

/// The parsed `database.url`. The backend is chosen by the scheme; anything else is refused.
#[derive(Clone)]
pub enum DatabaseUrl {
    /// A file path, or `:memory:`.
    Sqlite(String),
    Postgres(SecretString),
}

impl DatabaseUrl {
    pub fn parse(url: &SecretString) -> Result<DatabaseUrl, SettingsError> {
        let raw = url.expose_secret();
        if raw == "sqlite::memory:" || raw == "sqlite://:memory:" {
            return Ok(DatabaseUrl::Sqlite(":memory:".into()));
        }
        if let Some(path) = raw.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(SettingsError(
                    "database.url: sqlite:// needs a file path, e.g. sqlite://./data/auth.db"
                        .into(),
                ));
            }
            return Ok(DatabaseUrl::Sqlite(path.to_string()));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.clone()));
        }
        Err(SettingsError(
            "database.url: unsupported scheme; use sqlite://PATH, sqlite::memory: or postgres://…"
                .into(),
        ))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }

    fn is_memory(&self) -> bool {
        matches!(self, DatabaseUrl::Sqlite(p) if p == ":memory:")
    }
}

/// Opens connections of the configured backend and prepares each one.
pub struct ConnectionManager {
    url: DatabaseUrl,
    busy_timeout: Duration,
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConn, Self::Error> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(path)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                // Set on every connection: these are per-connection in SQLite.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {};
                     PRAGMA foreign_keys = ON;
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = NORMAL;",
                    self.busy_timeout.as_millis()
                ))
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConn::Sqlite(conn))
            }
            DatabaseUrl::Postgres(url) => PgConnection::establish(url.expose_secret())
                .map(DbConn::Pg)
                .map_err(diesel::r2d2::Error::ConnectionError),
        }
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        conn.is_broken()
    }
}

pub type Pool = r2d2::Pool<ConnectionManager>;

/// The database handle the rest of the service uses.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    backend: &'static str,
}

/// Parses `database.url` and creates a SQLite file's directory if needed.
fn prepare(settings: &Settings) -> Result<DatabaseUrl, Error> {
    let url =
        DatabaseUrl::parse(&settings.database_url()).map_err(|e| Error::Internal(e.to_string()))?;
    if let DatabaseUrl::Sqlite(path) = &url
        && !url.is_memory()
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    Error::Internal(format!(
                        "cannot create database directory {}: {e}",
                        parent.display()
                    ))
                })?;
        }
        // The database holds password hashes: create it readable by this user only (SQLite
        // would create it 0644, and gives its -wal and -shm files the database file's mode).
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    log::warn!(
                        "database file {path} is open to other users (mode {:o}) and holds \
                         password hashes; consider chmod 600 (and its -wal and -shm files)",
                        meta.permissions().mode() & 0o777
                    );
                }
            }
            Err(e) => {
                return Err(Error::Internal(format!(
                    "cannot create database file {path}: {e}"
                )));
            }
        }
    }
    Ok(url)
}

/// One connection with no pool behind it, for short-lived commands: a pool keeps
/// background threads that may still be inside the database driver when the process exits.
pub fn open_connection(settings: &Settings) -> Result<DbConn, Error> {
    let manager = ConnectionManager {
        url: prepare(settings)?,
        busy_timeout: settings.database.busy_timeout,
    };
    manager
        .connect()
        .map_err(|e| Error::Unavailable(format!("cannot connect to the database: {e}")))
}

impl Database {
    /// Opens the pool (creating the SQLite file's directory if needed). Fails if the
    /// database cannot be reached within `database.connect_timeout`.
    pub fn connect(settings: &Settings) -> Result<Database, Error> {
        let url = prepare(settings)?;
        let backend = url.backend_name();
        let memory = url.is_memory();
        let manager = ConnectionManager {
            url,
            busy_timeout: settings.database.busy_timeout,
        };
        let mut builder = r2d2::Pool::builder()
            .max_size(settings.database.pool_size)
            .connection_timeout(settings.database.connect_timeout)
            .error_handler(Box::new(LogPoolErrors));
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
        let pool = builder
            .build(manager)
            .map_err(|e| Error::Unavailable(format!("cannot connect to the database: {e}")))?;
        Ok(Database { pool, backend })
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut DbConn) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| Error::Unavailable(e.to_string()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::Internal(format!("database task failed: {e}")))?
    }

    /// Same as [`Database::run`] for code that is already off the async workers.
    pub fn run_blocking<T>(
        &self,
        f: impl FnOnce(&mut DbConn) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self
            .pool
            .get()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        f(&mut conn)
    }

    /// Applies pending migrations; returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<String>, Error> {
        self.run_blocking(run_migrations)
    }

    pub async fn ping(&self) -> Result<(), Error> {
        self.run(|conn| conn.ping().map_err(Error::from)).await
    }
}

#[derive(Debug)]
struct LogPoolErrors;

impl r2d2::HandleError<diesel::r2d2::Error> for LogPoolErrors {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        // Connection errors may echo the URL's host, never its password (libpq omits it).
        log::warn!("database connection error: {error}");
    }
}

pub fn run_migrations(conn: &mut DbConn) -> Result<Vec<String>, Error> {
    let applied = match conn {
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
        DbConn::Pg(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS),
    }
    .map_err(|e| Error::Internal(format!("migration failed: {e}")))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

impl DbConn {
    /// A transaction that takes the write lock up front: `BEGIN IMMEDIATE` on SQLite (so two
    /// writers never both read and then race to upgrade), a plain `BEGIN` on PostgreSQL, where
    /// callers lock the rows they change (`SELECT … FOR UPDATE` or a guarded `UPDATE`).
    /// Inside an open transaction it nests as a savepoint.
    pub fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        let nested =
            <DbConn as Connection>::TransactionManager::transaction_manager_status_mut(self)
                .transaction_depth()?
                .is_some();
        match self {
            DbConn::Sqlite(c) if !nested => {
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?
            }
            DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction(c)?,
            DbConn::Pg(c) => AnsiTransactionManager::begin_transaction(c)?,
        }
        match f(self) {
            Ok(value) => {
                <DbConn as Connection>::TransactionManager::commit_transaction(self)?;
                Ok(value)
            }
            Err(e) => {
                <DbConn as Connection>::TransactionManager::rollback_transaction(self)?;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_transactions_nest_and_roll_back() {
        let mut conn = DbConn::Sqlite(SqliteConnection::establish(":memory:").unwrap());
        conn.batch_execute("CREATE TABLE t (x INTEGER)").unwrap();
        let r: Result<(), diesel::result::Error> = conn.write_transaction(|c| {
            c.batch_execute("INSERT INTO t VALUES (1)")?;
            let inner: Result<(), diesel::result::Error> = c.write_transaction(|c| {
                c.batch_execute("INSERT INTO t VALUES (2)")?;
                Err(diesel::result::Error::RollbackTransaction)
            });
            assert!(inner.is_err());
            Ok(())
        });
        r.unwrap();
        let count = diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT COUNT(*) FROM t")
            .get_result::<i64>(&mut conn)
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn url_schemes() {
        let p = |s: &str| DatabaseUrl::parse(&SecretString::from(s.to_string()));
        assert!(
            matches!(p("sqlite://./data/a.db"), Ok(DatabaseUrl::Sqlite(x)) if x == "./data/a.db")
        );
        assert!(
            matches!(p("sqlite:///var/lib/a.db"), Ok(DatabaseUrl::Sqlite(x)) if x == "/var/lib/a.db")
        );
        assert!(matches!(p("sqlite::memory:"), Ok(DatabaseUrl::Sqlite(x)) if x == ":memory:"));
        assert!(matches!(
            p("postgres://u@h/d"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(matches!(
            p("postgresql://u@h/d"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        for bad in ["./data/a.db", "mysql://h/d", "sqlite://", "", "SQLITE://x"] {
            let err = p(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("database.url"), "{bad}: {err}");
        }
    }
}
