//! The service's one error type and its one HTTP rendering: `{"error": "code", "message": "…"}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Validation(String),
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("username is already taken")]
    UsernameTaken,
    #[error("email is already registered")]
    EmailTaken,
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
    #[error("this change would leave no enabled administrator")]
    LastAdmin,
    /// Too many attempts (failed logins, registrations); retry after this many seconds.
    #[error("too many attempts; try again later")]
    TooManyAttempts(i64),
    #[error("service temporarily unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
}

impl Error {
    /// The stable, machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::Validation(_) => "validation_failed",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::PayloadTooLarge => "payload_too_large",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::UsernameTaken => "username_taken",
            Error::EmailTaken => "email_taken",
            Error::InvalidCredentials => "invalid_credentials",
            Error::InvalidToken(_) => "invalid_token",
            Error::TokenExpired => "token_expired",
            Error::TokenRevoked => "token_revoked",
            Error::TokenReused => "token_reused",
            Error::SessionRevoked => "session_revoked",
            Error::Forbidden => "forbidden",
            Error::LastAdmin => "last_admin",
            Error::TooManyAttempts(_) => "too_many_attempts",
            Error::Unavailable(_) => "service_unavailable",
            Error::Internal(_) => "internal_error",
        }
    }

    /// Errors about a presented bearer token carry a `WWW-Authenticate` challenge (RFC 6750).
    fn bearer_challenge(&self) -> bool {
        matches!(
            self,
            Error::InvalidToken(_) | Error::TokenExpired | Error::TokenRevoked
        )
    }

    /// Builds the body, logging server-side causes under an id that the client sees instead.
    pub fn body(&self) -> ErrorBody<'static> {
        match self {
            Error::Internal(cause) => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                log::error!("internal error {id}: {cause}");
                ErrorBody {
                    error: self.code(),
                    message: format!("internal error; reference {id}"),
                    error_id: Some(id),
                }
            }
            Error::Unavailable(cause) => {
                log::warn!("service unavailable: {cause}");
                ErrorBody {
                    error: self.code(),
                    message: self.to_string(),
                    error_id: None,
                }
            }
            _ => ErrorBody {
                error: self.code(),
                message: self.to_string(),
                error_id: None,
            },
        }
    }

    /// Adds the headers that go with this error to a response.
    pub fn decorate(&self, response: &mut HttpResponse) {
        let headers = response.headers_mut();
        if self.bearer_challenge() {
            let value = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                self.code()
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        match self {
            Error::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            Error::TooManyAttempts(secs) => {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidRequest(_) | Error::Validation(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::UsernameTaken | Error::EmailTaken | Error::LastAdmin => StatusCode::CONFLICT,
            Error::InvalidCredentials
            | Error::InvalidToken(_)
            | Error::TokenExpired
            | Error::TokenRevoked
            | Error::TokenReused
            | Error::SessionRevoked => StatusCode::UNAUTHORIZED,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code()).json(self.body());
        self.decorate(&mut response);
        response
    }
}

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error as D};
        match e {
            D::DatabaseError(DatabaseErrorKind::ClosedConnection, info)
            | D::DatabaseError(DatabaseErrorKind::UnableToSendCommand, info) => {
                Error::Unavailable(info.message().to_string())
            }
            D::BrokenTransactionManager => Error::Unavailable("broken transaction".into()),
            D::DatabaseError(_, ref info) if is_sqlite_busy(info.message()) => {
                Error::Unavailable(info.message().to_string())
            }
            other => Error::Internal(format!("database error: {other}")),
        }
    }
}

fn is_sqlite_busy(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database is busy")
}
