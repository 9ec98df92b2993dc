//! `Authenticated`: an actix-web extractor that admits a request only once the auth service
//! has verified its bearer token, and the refusals it answers with.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;

use crate::verify::{BearerToken, Identity, Rejection, VerifyClient, VerifyError};

/// Seconds a client should wait before retrying while the auth service is unavailable.
pub const RETRY_AFTER_SECS: &str = "5";

/// The verified caller. Add it as a handler argument and the handler runs only for requests
/// whose bearer token the auth service accepted; everything else is answered with an
/// [`AuthError`] before the handler is called.
///
/// The extractor needs a [`VerifyClient`] in the app data, as `web::Data<VerifyClient>`.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Identity);

impl Deref for Authenticated {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.0
    }
}

impl FromRequest for Authenticated {
    type Error = AuthError;
    type Future = Pin<Box<dyn Future<Output = Result<Authenticated, AuthError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let client = req.app_data::<web::Data<VerifyClient>>().cloned();
        // A missing or malformed header is refused here: the auth service is not asked.
        let token = BearerToken::from_headers(req.headers());
        Box::pin(async move {
            let token = token.map_err(AuthError::Rejected)?;
            let Some(client) = client else {
                log::error!("Authenticated used without web::Data<VerifyClient> in the app");
                return Err(AuthError::NotConfigured);
            };
            match client.verify(&token).await {
                Ok(identity) => Ok(Authenticated(identity)),
                Err(VerifyError::Rejected(r)) => Err(AuthError::Rejected(r)),
                Err(VerifyError::Unavailable(cause)) => {
                    log::warn!("refusing a request, no answer from the auth service: {cause}");
                    Err(AuthError::Unavailable)
                }
            }
        })
    }
}

/// Why a request was not admitted. Rendered as `{"error": "code", "message": "…"}`:
/// 401 with `WWW-Authenticate: Bearer error="invalid_token", error_description="<code>"`
/// for a refused token, 503 with `Retry-After` when the auth service gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}", .0.message())]
    Rejected(Rejection),
    #[error("authentication service unavailable; try again later")]
    Unavailable,
    #[error("internal error")]
    NotConfigured,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Rejected(r) => r.code(),
            AuthError::Unavailable => "service_unavailable",
            AuthError::NotConfigured => "internal_error",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            AuthError::Rejected(_) => StatusCode::UNAUTHORIZED,
            AuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code()).json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        });
        let headers = response.headers_mut();
        match self {
            AuthError::Rejected(r) => {
                let challenge = format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    r.code()
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            AuthError::Unavailable => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            AuthError::NotConfigured => {}
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
