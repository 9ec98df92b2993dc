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
    /// No answer within `database.timeout`.
    #[error("the database did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The user service (`users.source = "remote"`) cannot be reached, is busy, or did not
    /// answer as its contract says; retrying later may succeed.
    #[error("the user service is unavailable: {0}")]
    RemoteUnavailable(String),
}

impl StorageError {
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StorageError::Unavailable(_)
                | StorageError::TimedOut(_)
                | StorageError::RemoteUnavailable(_)
        )
    }
}

impl From<DieselError> for StorageError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
            | DieselError::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _)
            | DieselError::BrokenTransactionManager => StorageError::Unavailable(Box::new(e)),
            DieselError::DatabaseError(_, info) if is_transient(info.message()) => {
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

/// Failures of the database's environment rather than of the query: a full disk, a
/// read-only or vanished file, a busy lock, a timeout, a server going away or out of
/// connections. Retrying later may succeed, so they answer 503, never 500. (diesel reports
/// these as "unknown" with the server's message; these are SQLite's and PostgreSQL's texts.)
fn is_transient(message: &str) -> bool {
    const TRANSIENT: [&str; 18] = [
        // SQLite
        "database is locked",
        "database is busy",
        "database or disk is full",
        "attempt to write a readonly database",
        "disk I/O error",
        "unable to open database file",
        // PostgreSQL
        "No space left on device",
        "could not extend file",
        "could not write",
        "read-only transaction",
        "canceling statement due to statement timeout",
        "canceling statement due to lock timeout",
        "terminating connection",
        "the database system is",
        "too many clients",
        "server closed the connection",
        "deadlock detected",
        "could not serialize access",
    ];
    TRANSIENT.iter().any(|t| message.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_failures_are_unavailable_not_internal() {
        struct Info(&'static str);
        impl diesel::result::DatabaseErrorInformation for Info {
            fn message(&self) -> &str {
                self.0
            }
            fn details(&self) -> Option<&str> {
                None
            }
            fn hint(&self) -> Option<&str> {
                None
            }
            fn table_name(&self) -> Option<&str> {
                None
            }
            fn column_name(&self) -> Option<&str> {
                None
            }
            fn constraint_name(&self) -> Option<&str> {
                None
            }
            fn statement_position(&self) -> Option<i32> {
                None
            }
        }
        let error = |m: &'static str| {
            StorageError::from(DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new(Info(m)),
            ))
        };
        for m in [
            "database or disk is full",
            "attempt to write a readonly database",
            "could not extend file \"base/16384/2619\": No space left on device",
            "canceling statement due to statement timeout",
            "sorry, too many clients already",
        ] {
            assert!(error(m).is_unavailable(), "{m}");
        }
        assert!(!error("syntax error at or near \"x\"").is_unavailable());
    }
}
