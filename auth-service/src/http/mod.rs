//! The HTTP layer: the two listeners' routes ([`routes`]), extractors that parse and check
//! everything a handler takes ([`extract`]), the wire types ([`wire`]), thin handlers per
//! area, and the one table that turns errors into answers ([`error`]). A handler parses its
//! input, calls one domain operation and renders the result; no SQL and no rules live here.

pub mod account;
pub mod admin;
pub mod auth;
pub mod browser;
pub mod error;
pub mod extract;
pub mod form;
pub mod health;
pub mod metrics;
pub mod oauth;
pub mod routes;
pub mod user_events;
pub mod verify;
pub mod wellknown;
pub mod wire;

use actix_web::web;

pub use error::ApiError;
pub use routes::{configure_internal, configure_public};

use crate::config::NetList;
use crate::domain::Services;

/// What every handler can reach.
pub struct AppState {
    pub services: Services,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
    pub trusted_proxies: NetList,
    /// The RFC 8414 discovery document.
    pub discovery: serde_json::Value,
    /// `openapi.yaml` as JSON.
    pub openapi: actix_web::web::Bytes,
    /// `verify.require_client`: `/verify` answers authenticated resource servers only.
    pub require_verify_client: bool,
    /// CORS, the refresh-token cookie and its CSRF rule.
    pub browser: browser::BrowserPolicy,
}

pub(crate) type State = web::Data<AppState>;
