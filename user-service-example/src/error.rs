//! The service's one error type and its one HTTP rendering:
//! `{"error": "snake_case_code", "message": "…"}` (the auth service's shape), plus the
//! headers an error calls for: `Retry-After` on 503, a challenge on 401. A 500 carries only an
//! error id; the cause goes to the log under that id.

use std::error::Error as _;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Seconds to wait after a 503 for the database.
const RETRY_AFTER_SECS: &str = "5";
/// Seconds to wait after a 503 `overloaded`: hashing slots free up within a second or two.
const OVERLOADED_RETRY_AFTER_SECS: &str = "1";

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A body, query or field the service cannot accept.
    #[error("{0}")]
    InvalidRequest(String),
    /// A password that breaks the length rule.
    #[error("{0}")]
    WeakPassword(String),
    /// The caller is not the configured service client (Basic) or operator (Bearer).
    #[error("{message}")]
    Unauthorized {
        message: &'static str,
        /// The `WWW-Authenticate` challenge.
        challenge: &'static str,
    },
    /// Unknown login, wrong password and disabled user alike.
    #[error("invalid login or password")]
    InvalidCredentials,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Also for a taken email: the contract has one conflict code.
    #[error("username or email is already taken")]
    UsernameTaken,
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("request body is too large")]
    PayloadTooLarge,
    /// No password hashing slot came free in time.
    #[error("too many password checks at once; try again shortly")]
    Overloaded,
    /// Storage did not answer (in time).
    #[error("storage is unavailable; try again shortly")]
    Unavailable(#[source] Cause),
    #[error("internal error")]
    Internal(#[source] Cause),
}

impl Error {
    pub fn unavailable(cause: impl Into<Cause>) -> Error {
        Error::Unavailable(cause.into())
    }

    pub fn internal(cause: impl Into<Cause>) -> Error {
        Error::Internal(cause.into())
    }

    /// The stable, machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        status_and_code(self).1
    }
}

/// Status and code of every error: the table clients rely on.
fn status_and_code(e: &Error) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match e {
        Error::InvalidRequest(_) => (S::BAD_REQUEST, "invalid_request"),
        Error::WeakPassword(_) => (S::BAD_REQUEST, "weak_password"),
        Error::Unauthorized { .. } => (S::UNAUTHORIZED, "unauthorized"),
        Error::InvalidCredentials => (S::UNAUTHORIZED, "invalid_credentials"),
        Error::NotFound => (S::NOT_FOUND, "not_found"),
        Error::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        Error::UsernameTaken => (S::CONFLICT, "username_taken"),
        Error::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
        Error::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        Error::Overloaded => (S::SERVICE_UNAVAILABLE, "overloaded"),
        Error::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "service_unavailable"),
        Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

/// `cause: its cause: …`, for the log.
pub fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_id: Option<String>,
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        status_and_code(self).0
    }

    fn error_response(&self) -> HttpResponse {
        let body = match self {
            Error::Internal(cause) => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                log::error!("internal error {id}: {}", cause_chain(cause.as_ref()));
                ErrorBody {
                    error: self.code(),
                    message: format!("internal error; reference {id}"),
                    error_id: Some(id),
                }
            }
            Error::Unavailable(_) => {
                log::warn!(
                    "storage unavailable: {}",
                    self.source().map_or_else(String::new, cause_chain)
                );
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
        };
        let mut response = HttpResponse::build(self.status_code()).json(body);
        let headers = response.headers_mut();
        match self {
            Error::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            Error::Overloaded => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(OVERLOADED_RETRY_AFTER_SECS),
                );
            }
            Error::Unauthorized { challenge, .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            _ => {}
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_and_overloaded_carry_retry_after() {
        for (e, code) in [
            (Error::unavailable("pool timed out"), "service_unavailable"),
            (Error::Overloaded, "overloaded"),
        ] {
            let r = e.error_response();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(r.headers().contains_key(header::RETRY_AFTER), "{code}");
            assert_eq!(e.code(), code);
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = Error::internal("secret detail");
        assert_eq!(e.to_string(), "internal error");
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
