//! The domain's one error type: what went wrong in terms of the service's rules. It knows
//! nothing of HTTP; `http::error` gives each variant its status, code and headers. Causes
//! from below (storage, hashing, signing) stay attached as `source` for the log.

use crate::model::{InvalidId, RoleError};
use crate::security::passwords::PasswordError;
use crate::security::tokens::{SigningError, TokenError};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A well-formed request whose values break a rule (a short password, a bad role name).
    #[error("{0}")]
    Validation(String),
    /// A request that cannot be understood (a cursor that was never issued).
    #[error("{0}")]
    InvalidRequest(String),
    #[error("not found")]
    NotFound,
    #[error("username is already taken")]
    UsernameTaken,
    #[error("email is already registered")]
    EmailTaken,
    /// Unknown user, wrong password and disabled account alike.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The token is malformed, forged, of the wrong kind, or otherwise unacceptable.
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("token has expired")]
    TokenExpired,
    #[error("token's session has been revoked")]
    TokenRevoked,
    #[error("refresh token was already used; the session has been revoked")]
    TokenReused,
    #[error("session has been revoked")]
    SessionRevoked,
    #[error("forbidden")]
    Forbidden,
    /// A client's id or secret is wrong (the same for both).
    #[error("client authentication failed")]
    InvalidClient,
    /// A client asked for a scope it is not granted.
    #[error("{0}")]
    InvalidScope(String),
    /// An authenticated client asked for something it is not allowed to do.
    #[error("this client is not allowed to do that")]
    UnauthorizedClient,
    #[error("this change would leave no enabled administrator")]
    LastAdmin,
    /// Users live in a user service (`users.source = "remote"`): change them there.
    #[error("users are managed by the user service; make this change there")]
    ManagedByUserService,
    /// Too many attempts (failed logins, registrations); retry after this many seconds.
    #[error("too many attempts; try again later")]
    TooManyAttempts { retry_after: i64 },
    /// Too much work queued (password hashing): retrying shortly may succeed.
    #[error("the service is overloaded; try again shortly")]
    Overloaded,
    /// The database cannot be reached or is busy; retrying later may succeed.
    #[error("service temporarily unavailable")]
    Unavailable(#[source] StorageError),
    /// Anything else: a bug or a broken environment. Clients see only an error id.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        if e.is_unavailable() {
            Error::Unavailable(e)
        } else {
            Error::Internal(Box::new(e))
        }
    }
}

impl From<PasswordError> for Error {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Overloaded => Error::Overloaded,
            other => Error::Internal(Box::new(other)),
        }
    }
}

impl From<SigningError> for Error {
    fn from(e: SigningError) -> Self {
        Error::Internal(Box::new(e))
    }
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid(why) => Error::InvalidToken(why),
            TokenError::Expired => Error::TokenExpired,
        }
    }
}

impl From<RoleError> for Error {
    fn from(e: RoleError) -> Self {
        Error::Validation(e.to_string())
    }
}

impl From<InvalidId> for Error {
    fn from(e: InvalidId) -> Self {
        Error::Validation(e.to_string())
    }
}
