//! `GET /.well-known/jwks.json` (public listener): the public keys that verify access tokens
//! (RFC 7517), so a resource server can check tokens itself. Cacheable: keys change only
//! with the configuration, and a verifier meeting an unknown `kid` fetches the set again.

use actix_web::HttpResponse;
use actix_web::http::header;

use crate::http::State;

/// How long clients may keep the key set.
const MAX_AGE_SECS: u32 = 300;

pub async fn jwks(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={MAX_AGE_SECS}"),
        ))
        .json(state.services.sessions.published_keys())
}
