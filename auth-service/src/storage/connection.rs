//! One connection type over SQLite and PostgreSQL, how each connection is opened and
//! prepared, write transactions, and the embedded migrations.

use std::path::Path;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::r2d2::{ManageConnection, R2D2Connection};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret;

use crate::config::{DatabaseUrl, Settings};
use crate::storage::StorageError;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// A connection to whichever backend `database.url` names.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

impl DbConn {
    pub fn backend_name(&self) -> &'static str {
        match self {
            DbConn::Sqlite(_) => "sqlite",
            DbConn::Pg(_) => "postgres",
        }
    }

    /// A transaction that takes the write lock up front: `BEGIN IMMEDIATE` on SQLite (so two
    /// writers never both read and then race to upgrade), a plain `BEGIN` on PostgreSQL, where
    /// callers lock the rows they change (`SELECT … FOR UPDATE` or a guarded `UPDATE`).
    /// Inside an open transaction it nests as a savepoint. Any error type that storage errors
    /// convert into can leave it, and rolls it back.
    pub fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E>,
        E: From<StorageError>,
    {
        let begin = |conn: &mut DbConn| -> Result<(), diesel::result::Error> {
            let nested =
                <DbConn as Connection>::TransactionManager::transaction_manager_status_mut(conn)
                    .transaction_depth()?
                    .is_some();
            match conn {
                DbConn::Sqlite(c) if !nested => {
                    AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
                }
                DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction(c),
                DbConn::Pg(c) => AnsiTransactionManager::begin_transaction(c),
            }
        };
        begin(self).map_err(|e| E::from(StorageError::from(e)))?;
        match f(self) {
            Ok(value) => {
                <DbConn as Connection>::TransactionManager::commit_transaction(self)
                    .map_err(|e| E::from(StorageError::from(e)))?;
                Ok(value)
            }
            Err(e) => {
                <DbConn as Connection>::TransactionManager::rollback_transaction(self)
                    .map_err(|e| E::from(StorageError::from(e)))?;
                Err(e)
            }
        }
    }
}

/// Why [`DbConn::insert_unless_taken`]'s work stopped: diesel's error kept whole (for the
/// unique-violation check), or a storage error.
pub enum Refusal {
    Diesel(diesel::result::Error),
    Storage(StorageError),
}

impl From<diesel::result::Error> for Refusal {
    fn from(e: diesel::result::Error) -> Self {
        Refusal::Diesel(e)
    }
}

impl From<StorageError> for Refusal {
    fn from(e: StorageError) -> Self {
        Refusal::Storage(e)
    }
}

impl DbConn {
    /// Runs inserts in a (sub)transaction of their own and reports `false` when a unique
    /// constraint refused them: a taken name or a repeated id is an outcome, not an error.
    /// (After a failed statement PostgreSQL refuses further queries in the transaction
    /// until it is rolled back; the savepoint keeps the caller's transaction usable.)
    pub fn insert_unless_taken<F>(&mut self, insert: F) -> Result<bool, StorageError>
    where
        F: FnOnce(&mut DbConn) -> Result<(), Refusal>,
    {
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        match self.write_transaction(insert) {
            Ok(()) => Ok(true),
            Err(Refusal::Diesel(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            ))) => Ok(false),
            Err(Refusal::Diesel(e)) => Err(e.into()),
            Err(Refusal::Storage(e)) => Err(e),
        }
    }
}

/// Opens connections of the configured backend and prepares each one.
pub struct ConnectionManager {
    pub(crate) url: DatabaseUrl,
    pub(crate) busy_timeout: Duration,
    /// `database.timeout`: PostgreSQL's `statement_timeout` and `lock_timeout`.
    pub(crate) statement_timeout: Duration,
    /// `database.connect_timeout`: libpq's `connect_timeout`.
    pub(crate) connect_timeout: Duration,
}

impl ConnectionManager {
    pub(crate) fn new(settings: &Settings, url: DatabaseUrl) -> ConnectionManager {
        ConnectionManager {
            url,
            busy_timeout: settings.database.busy_timeout.get(),
            statement_timeout: settings.database.timeout.get(),
            connect_timeout: settings.database.connect_timeout.get(),
        }
    }

    /// The PostgreSQL URL with what bounds a hung server added, unless the URL sets it
    /// itself: a connect timeout, TCP keepalives, and a TCP user timeout (unacknowledged
    /// data gives up after it), so a dead peer is noticed.
    fn postgres_url(&self, url: &str) -> String {
        let secs = self.connect_timeout.as_secs().max(2);
        let user_timeout_ms = self.statement_timeout.as_millis().max(1000);
        let wanted = [
            ("connect_timeout", secs.to_string()),
            ("keepalives", "1".to_string()),
            ("keepalives_idle", "10".to_string()),
            ("keepalives_interval", "3".to_string()),
            ("keepalives_count", "3".to_string()),
            ("tcp_user_timeout", user_timeout_ms.to_string()),
        ];
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let mut out = url.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for (key, value) in wanted {
            let present = query
                .split('&')
                .any(|pair| pair.split('=').next() == Some(key));
            if !present {
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
        let sqlite = |path: &str| -> Result<DbConn, Self::Error> {
            let mut conn =
                SqliteConnection::establish(path).map_err(diesel::r2d2::Error::ConnectionError)?;
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
        };
        match &self.url {
            DatabaseUrl::SqliteFile(path) => sqlite(&path.to_string_lossy()),
            DatabaseUrl::SqliteMemory => sqlite(":memory:"),
            DatabaseUrl::Postgres(url) => {
                let mut conn = PgConnection::establish(&self.postgres_url(url.expose_secret()))
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                // The server gives up on a statement or a lock wait after database.timeout
                // too, so nothing it runs for us outlives the request that asked.
                let ms = self.statement_timeout.as_millis();
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

/// Parses `database.url` and makes sure a SQLite file can be opened: the default data
/// directory is created when missing, an explicitly configured file's directory must exist
/// (a typo in a path should not quietly create a tree of directories).
pub(crate) fn prepare(settings: &Settings) -> Result<DatabaseUrl, StorageError> {
    let url = settings.database_url();
    let DatabaseUrl::SqliteFile(path) = &url else {
        return Ok(url);
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        if settings.database.url.is_none() {
            create_private_dir(parent)?;
        } else if !parent.is_dir() {
            return Err(StorageError::Setup(format!(
                "database.url: the directory {} does not exist; create it first",
                parent.display()
            )));
        }
    }
    create_private_file(path)?;
    Ok(url)
}

fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            StorageError::Setup(format!(
                "cannot create the data directory {}: {e}",
                dir.display()
            ))
        })
}

/// The database holds password hashes: create it readable by this user only (SQLite would
/// create it 0644, and gives its -wal and -shm files the database file's mode).
fn create_private_file(path: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                log::warn!(
                    "database file {} is open to other users (mode {:o}) and holds password \
                     hashes; consider chmod 600 (and its -wal and -shm files)",
                    path.display(),
                    meta.permissions().mode() & 0o777
                );
            }
            Ok(())
        }
        Err(e) => Err(StorageError::Setup(format!(
            "cannot create the database file {}: {e}",
            path.display()
        ))),
    }
}

/// SQLite serves one instance: a server holds an exclusive lock on `<database>.serve-lock`
/// for as long as it runs, and a second server on the same file refuses to start (two would
/// each keep their own revocation index and limits, and miss each other's revocations).
/// Commands (`user`, `prune`, `migrate`) take no lock and may run beside a server. `None`
/// on PostgreSQL and for `sqlite::memory:`.
pub fn claim_single_instance(settings: &Settings) -> Result<Option<std::fs::File>, StorageError> {
    let DatabaseUrl::SqliteFile(path) = settings.database_url() else {
        return Ok(None);
    };
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".serve-lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StorageError::Setup(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Setup(format!(
            "another auth-service is already serving {}; SQLite serves one instance (use \
             PostgreSQL to run several replicas)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError::Setup(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

/// One connection with no pool behind it, for short-lived commands: a pool keeps background
/// threads that may still be inside the database driver when the process exits.
pub fn open_connection(settings: &Settings) -> Result<DbConn, StorageError> {
    let manager = ConnectionManager::new(settings, prepare(settings)?);
    manager
        .connect()
        .map_err(|e| StorageError::Unavailable(Box::new(e)))
}

/// Any number key of the advisory lock that serialises migrations on PostgreSQL.
const MIGRATION_LOCK: i64 = 0x0061_7574_686d_6967; // "authmig"

/// Applies pending migrations; returns the versions applied. Instances starting together
/// take turns: on PostgreSQL under an advisory lock, on SQLite inside one `BEGIN IMMEDIATE`
/// transaction; whoever comes second finds nothing left to do. On PostgreSQL it lifts the
/// connection's statement timeout: run it on a connection of its own.
pub fn run_migrations(conn: &mut DbConn) -> Result<Vec<String>, StorageError> {
    let failed = |e: &dyn std::fmt::Display| StorageError::Setup(format!("migration failed: {e}"));
    let applied = match conn {
        DbConn::Sqlite(c) => {
            // Rebuilding a table (SQLite's way to drop a constraint) must not cascade
            // deletes from the old copy: foreign keys are off while migrations run (the
            // pragma is a no-op inside a transaction, so it is set around it).
            c.batch_execute("PRAGMA foreign_keys = OFF")?;
            let off = diesel::sql_query("SELECT foreign_keys AS n FROM pragma_foreign_keys")
                .get_result::<Count>(c)?
                .n
                == 0;
            if !off {
                // Inside an open transaction the pragma does nothing; never rebuild then.
                return Err(StorageError::Setup(
                    "migration failed: foreign keys could not be turned off".into(),
                ));
            }
            let applied = c
                .immediate_transaction(|c| {
                    let applied = c
                        .run_pending_migrations(SQLITE_MIGRATIONS)
                        .map(|v| v.iter().map(|v| v.to_string()).collect::<Vec<_>>())
                        .map_err(MigrationError::Harness)?;
                    let broken: i64 =
                        diesel::sql_query("SELECT count(*) AS n FROM pragma_foreign_key_check")
                            .get_result::<Count>(c)?
                            .n;
                    if broken > 0 {
                        return Err(MigrationError::Harness(
                            format!("{broken} row(s) break a foreign key").into(),
                        ));
                    }
                    Ok(applied)
                })
                .map_err(|e| failed(&e));
            let restored = c.batch_execute("PRAGMA foreign_keys = ON");
            let applied = applied?;
            restored?;
            applied
        }
        DbConn::Pg(c) => {
            // A migration may take longer than a request may; the lock waits as long as the
            // other instance needs.
            c.batch_execute(&format!(
                "SET statement_timeout = 0; SET lock_timeout = 0; SELECT pg_advisory_lock({MIGRATION_LOCK});"
            ))?;
            let applied = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.iter().map(|v| v.to_string()).collect::<Vec<_>>())
                .map_err(|e| failed(&e));
            let unlocked =
                c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK});"));
            let applied = applied?;
            unlocked?;
            applied
        }
    };
    Ok(applied)
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// A migration harness error inside diesel's transaction, which wants errors it can build
/// from its own.
#[derive(Debug, thiserror::Error)]
enum MigrationError {
    #[error("{0}")]
    Harness(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Diesel(#[from] diesel::result::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Migration 000006 rebuilds `sessions` on SQLite: a database with sessions and refresh
    /// tokens keeps every row (nothing cascades), keeps every index, and afterwards accepts
    /// a session of a user it does not hold (the user service's).
    #[test]
    fn sqlite_sessions_rebuild_keeps_every_row_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.db");
        let mut raw = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        raw.batch_execute("PRAGMA foreign_keys = ON").unwrap();
        let pending = raw.pending_migrations(SQLITE_MIGRATIONS).unwrap();
        for m in pending
            .iter()
            .filter(|m| m.name().version().to_string().as_str() < "20261129000006")
        {
            raw.run_migration(m.as_ref()).unwrap();
        }
        raw.batch_execute(
            "INSERT INTO users (id, username, username_key, password_hash, disabled, created_at, updated_at)
               VALUES ('u1', 'alice', 'alice', 'x', FALSE, 1, 1);
             INSERT INTO sessions (id, user_id, created_at, last_used_at) VALUES ('s1', 'u1', 1, 1);
             INSERT INTO refresh_tokens (jti, session_id, issued_at, expires_at) VALUES ('t1', 's1', 1, 9);
             INSERT INTO refresh_tokens (jti, session_id, parent_jti, issued_at, expires_at) VALUES ('t2', 's1', 't1', 2, 9);",
        )
        .unwrap();
        let mut conn = DbConn::Sqlite(raw);
        let applied = run_migrations(&mut conn).unwrap();
        assert!(applied.iter().any(|v| v == "20261129000006"), "{applied:?}");
        let count = |conn: &mut DbConn, sql: &str| {
            diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
        };
        assert_eq!(count(&mut conn, "SELECT count(*) AS n FROM sessions"), 1);
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM refresh_tokens"),
            2
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions'
                   AND name IN ('sessions_user_id_idx', 'sessions_revoked_at_idx', 'sessions_last_used_at_idx')"
            ),
            3
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT foreign_keys AS n FROM pragma_foreign_keys"
            ),
            1,
            "foreign keys are on again"
        );
        conn.batch_execute(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at) VALUES ('s2', 'remote-user', 1, 1)",
        )
        .unwrap();
        // refresh_tokens still references sessions.
        assert!(
            conn.batch_execute(
                "INSERT INTO refresh_tokens (jti, session_id, issued_at, expires_at) VALUES ('t3', 'nope', 1, 9)"
            )
            .is_err()
        );
    }

    #[test]
    fn write_transactions_nest_and_roll_back() {
        let mut conn = DbConn::Sqlite(SqliteConnection::establish(":memory:").unwrap());
        conn.batch_execute("CREATE TABLE t (x INTEGER)").unwrap();
        let r: Result<(), StorageError> = conn.write_transaction(|c| {
            c.batch_execute("INSERT INTO t VALUES (1)")?;
            let inner: Result<(), StorageError> = c.write_transaction(|c| {
                c.batch_execute("INSERT INTO t VALUES (2)")?;
                Err(StorageError::Corrupt("roll back".into()))
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

    fn settings_with(data_dir: &Path, url: Option<&str>) -> Settings {
        let mut s = Settings {
            data_dir: data_dir.to_path_buf(),
            ..Settings::default()
        };
        s.database.url = url.map(|u| DatabaseUrl::parse(u).unwrap());
        s
    }

    #[test]
    fn only_the_default_data_directory_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        // Default: <data_dir>/auth.db, the directory made on demand.
        let data = tmp.path().join("data");
        prepare(&settings_with(&data, None)).unwrap();
        assert!(data.join("auth.db").is_file());
        // Explicit: the directory must exist already.
        let missing = tmp.path().join("nonexistent/dir/a.db");
        let url = format!("sqlite://{}", missing.display());
        let e = prepare(&settings_with(&data, Some(&url))).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!tmp.path().join("nonexistent").exists());
        let present = tmp.path().join("b.db");
        prepare(&settings_with(
            &data,
            Some(&format!("sqlite://{}", present.display())),
        ))
        .unwrap();
        assert!(present.is_file());
    }
}
