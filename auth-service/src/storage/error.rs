//! What can go wrong in storage, sorted by what the caller can do about it: wait and retry
//! (`Unavailable`), or nothing (`Query`, `Corrupt`, `Setup`). The diesel or r2d2 error stays
//! attached as the source, for the log.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached or is busy right now; retrying later may succeed.
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A query failed for a reason retrying will not fix.
    #[error("a database query failed")]
    Query(#[source] DieselError),
    /// A stored value breaks the rules it was written under.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database could not be prepared (a path, a file, migrations).
    #[error("{0}")]
    Setup(String),
    /// The blocking task running the query did not finish.
    #[error("the database task did not finish")]
    Task(#[source] tokio::task::JoinError),
}

impl StorageError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

impl From<DieselError> for StorageError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
            | DieselError::BrokenTransactionManager => StorageError::Unavailable(Box::new(e)),
            DieselError::DatabaseError(_, info) if is_sqlite_busy(info.message()) => {
                StorageError::Unavailable(Box::new(e))
            }
            _ => StorageError::Query(e),
        }
    }
}

impl From<diesel::r2d2::PoolError> for StorageError {
    /// No pooled connection within `database.connect_timeout`.
    fn from(e: diesel::r2d2::PoolError) -> Self {
        StorageError::Unavailable(Box::new(e))
    }
}

fn is_sqlite_busy(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database is busy")
}
