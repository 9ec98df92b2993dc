//! One connection type over SQLite and PostgreSQL, how each connection is opened and
//! prepared, write transactions, the embedded migrations, and [`Store`]: the pool plus the
//! rule that storage work runs on the blocking pool under a deadline.

use std::path::Path;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::r2d2::{ManageConnection, Pool, R2D2Connection};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::Error;
use crate::settings::{DatabaseUrl, Settings, SettingsError};

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection to whichever backend `database.url` names.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

impl DbConn {
    /// A transaction that takes the write lock up front: `BEGIN IMMEDIATE` on SQLite (two
    /// writers never both read and then race to upgrade), a plain `BEGIN` on PostgreSQL,
    /// where the operations lock the rows they change with a guarded `UPDATE` first.
    /// Inside an open transaction it nests as a savepoint. An error rolls it back.
    pub fn write_transaction<T, F>(&mut self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut DbConn) -> Result<T, Error>,
    {
        let nested =
            <DbConn as Connection>::TransactionManager::transaction_manager_status_mut(self)
                .transaction_depth()
                .map_err(db_error)?
                .is_some();
        let begun = match self {
            DbConn::Sqlite(c) if !nested => {
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
            }
            DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction(c),
            DbConn::Pg(c) => AnsiTransactionManager::begin_transaction(c),
        };
        begun.map_err(db_error)?;
        match f(self) {
            Ok(value) => {
                <DbConn as Connection>::TransactionManager::commit_transaction(self)
                    .map_err(db_error)?;
                Ok(value)
            }
            Err(e) => {
                <DbConn as Connection>::TransactionManager::rollback_transaction(self)
                    .map_err(db_error)?;
                Err(e)
            }
        }
    }
}

/// Any database error that is not a business outcome (those are matched where they can
/// happen, like a unique violation on insert) means storage trouble: 503, cause logged.
pub fn db_error(e: diesel::result::Error) -> Error {
    Error::unavailable(e)
}

/// Opens connections of the configured backend and prepares each one.
pub struct ConnectionManager {
    url: DatabaseUrl,
    /// SQLite's `busy_timeout`; PostgreSQL's `statement_timeout` and `lock_timeout`.
    timeout: Duration,
}

impl ConnectionManager {
    pub fn new(url: DatabaseUrl, timeout: Duration) -> ConnectionManager {
        ConnectionManager { url, timeout }
    }

    /// The PostgreSQL URL with a connect timeout and TCP keepalives added unless the URL
    /// sets them, so a dead server is noticed rather than waited on.
    fn postgres_url(&self, url: &str) -> String {
        let wanted = [
            ("connect_timeout", self.timeout.as_secs().max(2).to_string()),
            ("keepalives", "1".to_string()),
            ("keepalives_idle", "10".to_string()),
            ("keepalives_interval", "3".to_string()),
            ("keepalives_count", "3".to_string()),
        ];
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let mut out = url.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for (key, value) in wanted {
            if !query
                .split('&')
                .any(|pair| pair.split('=').next() == Some(key))
            {
                out.push(sep);
                out.push_str(&format!("{key}={value}"));
                sep = '&';
            }
        }
        out
    }
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConn, Self::Error> {
        let ms = self.timeout.as_millis();
        match &self.url {
            DatabaseUrl::SqliteFile(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                // Per-connection settings in SQLite.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {ms};
                     PRAGMA foreign_keys = ON;
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = NORMAL;"
                ))
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConn::Sqlite(conn))
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = PgConnection::establish(&self.postgres_url(url))
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                // Nothing the server runs for us outlives the request that asked.
                conn.batch_execute(&format!(
                    "SET statement_timeout = {ms}; SET lock_timeout = {ms};"
                ))
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConn::Pg(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        conn.is_broken()
    }
}

/// Parses the database setting and makes sure a SQLite file can be opened: the default data
/// directory is created (private) when missing; an explicitly configured file's directory
/// must exist. The file is created readable by this user only: it holds password hashes.
pub fn prepare(settings: &Settings) -> Result<DatabaseUrl, SettingsError> {
    let url = settings.database_url()?;
    let DatabaseUrl::SqliteFile(path) = &url else {
        return Ok(url);
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if settings.database_is_default() {
            create_private_dir(parent)?;
        } else if !parent.is_dir() {
            return Err(SettingsError(format!(
                "database.url: the directory {} does not exist; create it first",
                parent.display()
            )));
        }
    }
    create_private_file(path)?;
    Ok(url)
}

fn create_private_dir(dir: &Path) -> Result<(), SettingsError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| SettingsError(format!("data_dir: cannot create {}: {e}", dir.display())))
}

fn create_private_file(path: &Path) -> Result<(), SettingsError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SettingsError(format!(
            "database.url: cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Any number: the key of the advisory lock that serialises migrations on PostgreSQL.
const MIGRATION_LOCK: i64 = 0x7573_6572_736d_6967; // "usersmig"

/// Applies pending migrations; returns the versions applied. Instances starting together
/// take turns (an advisory lock on PostgreSQL, one `BEGIN IMMEDIATE` on SQLite).
pub fn run_migrations(conn: &mut DbConn) -> Result<Vec<String>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("migration failed: {e}");
    match conn {
        DbConn::Sqlite(c) => c
            .immediate_transaction(|c| {
                c.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(|v| v.iter().map(|v| v.to_string()).collect::<Vec<_>>())
                    .map_err(MigrationError::Harness)
            })
            .map_err(|e| failed(&e)),
        DbConn::Pg(c) => {
            c.batch_execute(&format!(
                "SET statement_timeout = 0; SET lock_timeout = 0; \
                 SELECT pg_advisory_lock({MIGRATION_LOCK});"
            ))
            .map_err(|e| failed(&e))?;
            let applied = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.iter().map(|v| v.to_string()).collect::<Vec<_>>())
                .map_err(|e| failed(&e));
            let unlocked =
                c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK});"));
            let applied = applied?;
            unlocked.map_err(|e| failed(&e))?;
            Ok(applied)
        }
    }
}

/// A harness error inside diesel's transaction, which wants errors it can build itself.
#[derive(Debug, thiserror::Error)]
enum MigrationError {
    #[error("{0}")]
    Harness(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Diesel(#[from] diesel::result::Error),
}

/// One connection with no pool, for commands and start-up.
pub fn open_connection(settings: &Settings) -> Result<DbConn, String> {
    let manager = ConnectionManager::new(
        prepare(settings).map_err(|e| e.to_string())?,
        settings.database.timeout,
    );
    manager
        .connect()
        .map_err(|e| format!("cannot open the database: {e}"))
}

/// The connection pool. Every operation runs on the blocking pool, bounded by
/// `database.timeout` (waiting for a connection included); past it the caller gets
/// [`Error::Unavailable`].
#[derive(Clone)]
pub struct Store {
    pool: Pool<ConnectionManager>,
    timeout: Duration,
}

impl Store {
    pub fn new(settings: &Settings) -> Result<Store, SettingsError> {
        let url = prepare(settings)?;
        let timeout = settings.database.timeout;
        // Built unchecked: the database may come up after this service; requests meanwhile
        // get 503 rather than the process exiting.
        let pool = Pool::builder()
            .max_size(settings.database.pool_size)
            .min_idle(Some(1))
            .connection_timeout(timeout)
            .build_unchecked(ConnectionManager::new(url, timeout));
        Ok(Store { pool, timeout })
    }

    /// Runs `f` with a pooled connection off the async workers.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut DbConn) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        let timeout = self.timeout;
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = pool.get_timeout(timeout).map_err(Error::unavailable)?;
            f(&mut conn)
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Error::internal(join)),
            Err(_) => Err(Error::unavailable(format!(
                "storage did not answer within {}",
                humantime::format_duration(timeout)
            ))),
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
        conn.write_transaction(|c| {
            c.batch_execute("INSERT INTO t VALUES (1)")
                .map_err(db_error)?;
            let inner: Result<(), Error> = c.write_transaction(|c| {
                c.batch_execute("INSERT INTO t VALUES (2)")
                    .map_err(db_error)?;
                Err(Error::NotFound)
            });
            assert!(matches!(inner, Err(Error::NotFound)));
            Ok(())
        })
        .unwrap();
        let count = diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT COUNT(*) FROM t")
            .get_result::<i64>(&mut conn)
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn postgres_url_gets_timeouts_unless_set() {
        let m =
            ConnectionManager::new(DatabaseUrl::Postgres(String::new()), Duration::from_secs(5));
        let u = m.postgres_url("postgres://h/db?connect_timeout=9");
        assert!(u.contains("connect_timeout=9") && !u.contains("connect_timeout=5"));
        assert!(u.contains("&keepalives=1"));
        assert!(
            m.postgres_url("postgres://h/db")
                .starts_with("postgres://h/db?connect_timeout=5&")
        );
    }
}
