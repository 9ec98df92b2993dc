//! `GET /.well-known/jwks.json` (public listener): the public keys that verify access tokens
//! (RFC 7517), so a resource server can check tokens itself. Cacheable: keys change only
//! with the configuration, and a verifier meeting an unknown `kid` fetches the set again.

use actix_web::HttpResponse;
use actix_web::http::header;

use crate::http::State;

/// How long clients may keep the key set (and the metadata): the one value `keys rotate`
/// waits out before a new key signs.
const MAX_AGE_SECS: i64 = crate::security::keys::JWKS_MAX_AGE_SECS;

pub async fn jwks(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={MAX_AGE_SECS}"),
        ))
        .json(state.services.sessions.published_keys())
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414): where the endpoints are and
/// what they support. Made once at start-up (see [`discovery`]).
pub async fn authorization_server(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={MAX_AGE_SECS}"),
        ))
        .json(&state.discovery)
}

/// The discovery document. `issuer` is `tokens.issuer`, the `iss` of every token, so that
/// clients comparing the two agree; set it to the public URL for clients that require the
/// issuer to be one.
pub fn discovery(issuer: &str, public_url: &str, internal_url: &str) -> serde_json::Value {
    let auth_methods = ["client_secret_basic", "client_secret_post"];
    // Public clients (a browser or mobile app with no secret) refresh and revoke their own
    // tokens without authenticating; introspection always needs a client.
    let public_too = ["client_secret_basic", "client_secret_post", "none"];
    serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{public_url}/oauth/token"),
        "revocation_endpoint": format!("{public_url}/oauth/revoke"),
        "introspection_endpoint": format!("{internal_url}/oauth/introspect"),
        "jwks_uri": format!("{public_url}/.well-known/jwks.json"),
        "grant_types_supported": ["refresh_token", "password", "client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": public_too,
        "revocation_endpoint_auth_methods_supported": public_too,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "service_documentation": format!("{public_url}/openapi.json"),
    })
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 description (`auth-service/openapi.yaml`).
pub async fn openapi(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi.clone())
}

/// The embedded OpenAPI description as JSON.
pub fn openapi_json() -> Result<actix_web::web::Bytes, String> {
    let spec: serde_json::Value =
        serde_norway::from_str(include_str!("../../openapi.yaml")).map_err(|e| e.to_string())?;
    serde_json::to_vec(&spec)
        .map(actix_web::web::Bytes::from)
        .map_err(|e| e.to_string())
}
