//! An example resource server for the auth service: a tiny posts API that serves nothing
//! until the auth service's internal `/verify` has vouched for the request's bearer token.
//!
//! The reusable part is [`verify`] and [`extractor`]: a [`VerifyClient`] (one pooled HTTP
//! client, a short timeout, fail-closed) and the [`Authenticated`] extractor built on it.
//! Any actix-web service can use them the same way:
//!
//! ```no_run
//! use std::time::Duration;
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use resource_service_example::{Authenticated, CacheInvalidation, VerifyClient, VerifyConfig};
//!
//! async fn whoami(caller: Authenticated) -> HttpResponse {
//!     // Only reached with a token the auth service accepted.
//!     HttpResponse::Ok().body(format!("{} ({})", caller.username, caller.user_id))
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let verify = VerifyClient::new(&VerifyConfig {
//!         url: "http://auth-service:8081/verify".into(),
//!         timeout: Duration::from_secs(2),
//!         cache_ttl: Duration::ZERO, // off: revocations take effect at once
//!         invalidation: CacheInvalidation::TtlOnly,
//!         quiet_period: Duration::ZERO, // used with CacheInvalidation::Events only
//!         client: None,              // or Some(ClientCredentials { id, secret })
//!     })
//!     .map_err(std::io::Error::other)?;
//!     let verify = web::Data::new(verify); // one client, shared by every worker
//!     HttpServer::new(move || {
//!         App::new()
//!             .app_data(verify.clone())
//!             .route("/whoami", web::get().to(whoami))
//!     })
//!     .bind("127.0.0.1:8090")?
//!     .run()
//!     .await
//! }
//! ```
//!
//! What a request gets:
//! * valid token → the handler runs, with the [`Identity`] (user id, username, roles, session
//!   id, token id) in `Authenticated`;
//! * missing or malformed `Authorization` → 401 `invalid_token`, decided locally;
//! * token refused by the auth service → 401 with its reason (`token_expired`: refresh;
//!   `token_revoked` / `invalid_token`: log in again) in the body and in
//!   `WWW-Authenticate: Bearer error="invalid_token", error_description="<code>"`;
//! * auth service unreachable, too slow or answering 5xx → 503 `service_unavailable` with
//!   `Retry-After`, never the data.

pub mod demo;
pub mod error;
pub mod events;
pub mod extractor;
pub mod http;
pub mod posts;
pub mod server;
pub mod settings;
pub mod verify;

pub use extractor::{AuthError, Authenticated};
pub use verify::{
    BearerToken, CacheInvalidation, CacheInvalidator, ClientCredentials, Identity, Rejection,
    UserId, VerifyClient, VerifyConfig, VerifyError,
};
