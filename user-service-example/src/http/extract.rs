//! Extractors: the caller's credentials (the auth service's HTTP Basic, an operator's
//! Bearer token), and JSON bodies, paths and query strings whose failures become the one
//! error shape.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::http::AppState;
use crate::settings::Credential;

/// Largest request body accepted anywhere.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The service credential, kept as digests and compared in constant time (digests, so the
/// comparison takes the same time whatever the lengths).
pub struct ServiceCredential {
    id: [u8; 32],
    secret: [u8; 32],
}

impl ServiceCredential {
    pub fn new(c: &Credential) -> ServiceCredential {
        ServiceCredential {
            id: digest(&c.id),
            secret: digest(&c.secret),
        }
    }

    fn matches(&self, id: &str, secret: &str) -> bool {
        let id_ok = self.id.ct_eq(&digest(id));
        let secret_ok = self.secret.ct_eq(&digest(secret));
        (id_ok & secret_ok).into()
    }
}

/// The operators' token as a digest; `None` when the admin API is off.
pub struct AdminToken(pub Option<[u8; 32]>);

impl AdminToken {
    pub fn new(token: Option<&str>) -> AdminToken {
        AdminToken(token.map(digest))
    }
}

const SERVICE_CHALLENGE: &str = "Basic realm=\"user-service\", charset=\"UTF-8\"";
const ADMIN_CHALLENGE: &str = "Bearer realm=\"user-service-admin\"";

/// The id and secret of a `Basic …` header value (RFC 7617), each form-decoded as RFC 6749
/// 2.3.1 asks.
pub fn basic_credentials(value: &header::HeaderValue) -> Option<(String, String)> {
    use base64::Engine;
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())?;
    let (id, secret) = decoded.split_once(':')?;
    let form_decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some((form_decode(id)?, form_decode(secret)?))
}

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, Error> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| Error::internal("application state is missing"))
}

/// A request from the configured service client (the auth service).
pub struct ServiceCaller;

impl FromRequest for ServiceCaller {
    type Error = Error;
    type Future = std::future::Ready<Result<ServiceCaller, Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = state(req).and_then(|state| {
            let refused = |message| Error::Unauthorized {
                message,
                challenge: SERVICE_CHALLENGE,
            };
            let value = req
                .headers()
                .get(header::AUTHORIZATION)
                .ok_or_else(|| refused("client credentials are required (HTTP Basic)"))?;
            let (id, secret) = basic_credentials(value)
                .ok_or_else(|| refused("the authorization header is not valid HTTP Basic"))?;
            if state.service.matches(&id, &secret) {
                Ok(ServiceCaller)
            } else {
                Err(refused("invalid client credentials"))
            }
        });
        std::future::ready(result)
    }
}

/// A request from an operator (`Authorization: Bearer <admin.token>`). With no token
/// configured the admin API does not exist: 404.
pub struct Operator;

impl FromRequest for Operator {
    type Error = Error;
    type Future = std::future::Ready<Result<Operator, Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = state(req).and_then(|state| {
            let Some(expected) = &state.admin.0 else {
                return Err(Error::NotFound);
            };
            let refused = |message| Error::Unauthorized {
                message,
                challenge: ADMIN_CHALLENGE,
            };
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .ok_or_else(|| refused("the admin token is required (Bearer)"))?;
            if bool::from(expected.ct_eq(&digest(token))) {
                Ok(Operator)
            } else {
                Err(refused("invalid admin token"))
            }
        });
        std::future::ready(result)
    }
}

pub fn json_error(err: &JsonPayloadError) -> Error {
    match err {
        JsonPayloadError::ContentType => Error::UnsupportedMediaType,
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            Error::PayloadTooLarge
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            Error::InvalidRequest(format!("invalid request body: {e}"))
        }
        JsonPayloadError::Deserialize(e) if e.is_eof() => {
            Error::InvalidRequest("request body is empty or truncated JSON".into())
        }
        JsonPayloadError::Deserialize(_) => {
            Error::InvalidRequest("request body is not valid JSON".into())
        }
        _ => Error::InvalidRequest("request body could not be read".into()),
    }
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| json_error(&err).into())
}

/// A path segment that does not parse (an id that is no id) names nothing: 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| Error::NotFound.into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        Error::InvalidRequest(format!("invalid query string: {err}")).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let value = |s: String| header::HeaderValue::from_str(&s).unwrap();
        assert_eq!(
            basic_credentials(&value(format!("Basic {}", b64("a%3Ab:c+d%2B")))),
            Some(("a:b".into(), "c d+".into()))
        );
        assert_eq!(
            basic_credentials(&value(format!("basic {}", b64("id:")))),
            Some(("id".into(), String::new()))
        );
        for bad in [
            format!("Bearer {}", b64("a:b")),
            format!("Basic {}", b64("no-colon")),
            "Basic !!!".to_string(),
            "Basic".to_string(),
        ] {
            assert_eq!(basic_credentials(&value(bad.clone())), None, "{bad}");
        }
    }

    #[test]
    fn credentials_must_match_both_parts() {
        let c = ServiceCredential::new(&Credential {
            id: "auth-service".into(),
            secret: "s".repeat(32),
        });
        assert!(c.matches("auth-service", &"s".repeat(32)));
        assert!(!c.matches("auth-service", &"s".repeat(31)));
        assert!(!c.matches("other", &"s".repeat(32)));
    }
}
