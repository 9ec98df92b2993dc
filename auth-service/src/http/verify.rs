//! `/verify` on the internal listener: is this access token good, and whose is it? Answered
//! from keys and the revocation index in memory, never the database; with
//! `verify.require_client`, the caller's client record is read at most once per 5 s.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::domain::Error;
use crate::domain::sessions::{AccessClaims, Answer, Verified};
use crate::http::State;
use crate::http::error::ApiError;
use crate::http::extract::{MAX_BODY_BYTES, basic_credentials, bearer_token, json_error};
use crate::http::wire::{Active, Inactive, VerifyRequest};

/// A `/verify` refusal: the usual error body plus `"active": false`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerifyRejection(ApiError);

impl ResponseError for VerifyRejection {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let body = self.0.body();
        let mut response = HttpResponse::build(self.status_code()).json(Inactive {
            active: false,
            error: body.error,
            message: body.message,
        });
        self.0.decorate(&mut response);
        response
    }
}

impl From<ApiError> for VerifyRejection {
    fn from(e: ApiError) -> Self {
        VerifyRejection(e)
    }
}

impl From<crate::domain::Error> for VerifyRejection {
    fn from(e: crate::domain::Error) -> Self {
        VerifyRejection(e.into())
    }
}

/// JSON bodies of `POST /verify` fail in the same `active: false` shape.
pub fn verify_json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| VerifyRejection(json_error(&err)).into())
}

/// The positive answer: the claims as JSON, and the identity as headers for an nginx
/// `auth_request`. Made once per verified token and kept with it, so a repeated token is
/// answered with the bytes made the first time.
fn verified(verified: &Verified) -> HttpResponse {
    let answer = verified.answer.get_or_init(|| render(&verified.claims));
    let mut response = HttpResponse::Ok()
        .content_type("application/json")
        .body(answer.body.clone());
    let headers = response.headers_mut();
    for (name, value) in &answer.headers {
        if let Ok(v) = HeaderValue::from_maybe_shared(value.clone()) {
            headers.insert(header::HeaderName::from_static(name), v);
        }
    }
    response
}

fn render(claims: &AccessClaims) -> Answer {
    let body = serde_json::to_vec(&Active::from(claims)).unwrap_or_default();
    Answer {
        body: body.into(),
        headers: vec![
            ("x-auth-user-id", claims.sub.to_string().into()),
            ("x-auth-user", claims.username.clone().into()),
            ("x-auth-roles", claims.roles.join(",").into()),
        ],
    }
}

/// The header a resource server authenticates with when `verify.require_client` is on:
/// `Authorization` carries the token being checked.
pub const CLIENT_AUTHORIZATION: &str = "x-client-authorization";

/// With `verify.require_client`, only a client registered to check tokens is answered.
async fn check_caller(state: &State, req: &HttpRequest) -> Result<(), VerifyRejection> {
    if !state.require_verify_client {
        return Ok(());
    }
    let (id, secret) = req
        .headers()
        .get(CLIENT_AUTHORIZATION)
        .ok_or(Error::InvalidClient)
        .and_then(|v| basic_credentials(v).map_err(|_| Error::InvalidClient))?;
    state
        .services
        .clients
        .authenticate_resource_server(&id, &secret)
        .await?;
    Ok(())
}

pub async fn verify_get(state: State, req: HttpRequest) -> Result<HttpResponse, VerifyRejection> {
    check_caller(&state, &req).await?;
    let token = bearer_token(&req)?;
    let claims = state.services.sessions.verify(token)?;
    Ok(verified(&claims))
}

pub async fn verify_post(
    state: State,
    req: HttpRequest,
    body: web::Json<VerifyRequest>,
) -> Result<HttpResponse, VerifyRejection> {
    check_caller(&state, &req).await?;
    let claims = state.services.sessions.verify(&body.token)?;
    Ok(verified(&claims))
}
