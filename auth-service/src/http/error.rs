//! The one place errors become HTTP answers: every error has a status, a stable code and the
//! one JSON shape `{"error": "code", "message": "…"}`, plus the headers it calls for
//! (`WWW-Authenticate` for token errors, `Retry-After` for 429 and 503). A 500 carries only
//! an error id; the cause chain goes to the log under that id.

use std::error::Error as _;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::Error;

/// Seconds a client should wait before retrying after a 503 for the database.
const RETRY_AFTER_SECS: &str = "5";
/// Seconds to wait after a 503 `overloaded`: the queue drains within a second or two.
const OVERLOADED_RETRY_AFTER_SECS: &str = "1";

/// An error at the HTTP edge: a domain error, or a request the edge itself refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] Error),
    /// A body, query or header that cannot be understood.
    #[error("{0}")]
    InvalidRequest(String),
    /// A well-formed request field with a value the edge refuses (an id that is no id).
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
    /// A cookie-authenticated request without the proof that a page allowed to use the
    /// cookie sent it (see `http/browser.rs`).
    #[error("{0}")]
    CsrfRejected(&'static str),
}

/// The JSON error body.
#[derive(Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
}

/// Status and code of every error: the table clients rely on.
fn status_and_code(e: &ApiError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match e {
        ApiError::InvalidRequest(_) => (S::BAD_REQUEST, "invalid_request"),
        ApiError::Validation(_) => (S::BAD_REQUEST, "validation_failed"),
        ApiError::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ApiError::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ApiError::NotFound => (S::NOT_FOUND, "not_found"),
        ApiError::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ApiError::CsrfRejected(_) => (S::FORBIDDEN, "csrf_rejected"),
        ApiError::Domain(d) => match d {
            Error::Validation(_) => (S::BAD_REQUEST, "validation_failed"),
            Error::InvalidRequest(_) => (S::BAD_REQUEST, "invalid_request"),
            Error::NotFound => (S::NOT_FOUND, "not_found"),
            Error::UsernameTaken => (S::CONFLICT, "username_taken"),
            Error::EmailTaken => (S::CONFLICT, "email_taken"),
            Error::LastAdmin => (S::CONFLICT, "last_admin"),
            Error::ManagedByUserService => (S::CONFLICT, "managed_by_user_service"),
            Error::InvalidCredentials => (S::UNAUTHORIZED, "invalid_credentials"),
            Error::InvalidToken(_) => (S::UNAUTHORIZED, "invalid_token"),
            Error::TokenExpired => (S::UNAUTHORIZED, "token_expired"),
            Error::TokenRevoked => (S::UNAUTHORIZED, "token_revoked"),
            Error::TokenReused => (S::UNAUTHORIZED, "token_reused"),
            Error::SessionRevoked => (S::UNAUTHORIZED, "session_revoked"),
            Error::Forbidden => (S::FORBIDDEN, "forbidden"),
            Error::InvalidClient => (S::UNAUTHORIZED, "invalid_client"),
            Error::UnauthorizedClient => (S::FORBIDDEN, "unauthorized_client"),
            Error::InvalidScope(_) => (S::BAD_REQUEST, "invalid_scope"),
            Error::TooManyAttempts { .. } => (S::TOO_MANY_REQUESTS, "too_many_attempts"),
            Error::Overloaded => (S::SERVICE_UNAVAILABLE, "overloaded"),
            Error::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "service_unavailable"),
            Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal_error"),
        },
    }
}

/// `cause: its cause: …`, for the log.
fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

impl ApiError {
    /// The stable, machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        status_and_code(self).1
    }

    /// Builds the body, logging server-side causes under an id that the client sees instead.
    pub fn body(&self) -> ErrorBody {
        match self {
            ApiError::Domain(Error::Internal(cause)) => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                log::error!("internal error {id}: {}", cause_chain(cause.as_ref()));
                ErrorBody {
                    error: self.code(),
                    message: format!("internal error; reference {id}"),
                    error_id: Some(id),
                }
            }
            ApiError::Domain(e @ Error::Unavailable(_)) => {
                log::warn!(
                    "service unavailable: {}",
                    e.source().map_or_else(String::new, cause_chain)
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
        }
    }

    /// Adds the headers that go with this error to a response.
    pub fn decorate(&self, response: &mut HttpResponse) {
        let headers = response.headers_mut();
        if let ApiError::Domain(
            Error::InvalidToken(_) | Error::TokenExpired | Error::TokenRevoked,
        ) = self
        {
            // RFC 6750: a bearer token was presented and refused.
            let value = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                self.code()
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let ApiError::Domain(Error::InvalidClient) = self {
            // RFC 6749 2.3.1: clients authenticate with HTTP Basic.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"auth-service\", charset=\"UTF-8\""),
            );
        }
        match self {
            ApiError::Domain(Error::Unavailable(_)) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            ApiError::Domain(Error::Overloaded) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(OVERLOADED_RETRY_AFTER_SECS),
                );
            }
            ApiError::Domain(Error::TooManyAttempts { retry_after }) => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status_and_code(self).0
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code()).json(self.body());
        self.decorate(&mut response);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;

    #[test]
    fn internal_errors_hide_their_cause_from_the_client() {
        let e = ApiError::from(Error::Internal(Box::new(StorageError::Corrupt(
            "users.id \"secret detail\"".into(),
        ))));
        let body = e.body();
        assert_eq!(body.error, "internal_error");
        assert!(!body.message.contains("secret"), "{}", body.message);
        assert!(body.error_id.is_some());
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn unavailable_and_throttled_say_when_to_retry() {
        for (e, retry) in [
            (
                ApiError::from(Error::Unavailable(StorageError::Setup("down".into()))),
                "5",
            ),
            (
                ApiError::from(Error::TooManyAttempts { retry_after: 42 }),
                "42",
            ),
        ] {
            let response = e.error_response();
            assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), retry);
        }
    }
}
