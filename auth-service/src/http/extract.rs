//! Extractors: everything a handler takes from a request is parsed and checked here, once.
//! The client's address and user agent, the verified bearer token, typed ids from the path
//! (a malformed id is 404 here and never reaches the domain), and JSON bodies and query
//! strings whose failures are mapped onto the one error shape.

use std::net::IpAddr;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use crate::domain::sessions::AccessClaims;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::model::ClientInfo;
use crate::security::tokens::MAX_TOKEN_BYTES;

/// Largest request body accepted anywhere.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn json_error(err: &JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::InvalidRequest(format!("invalid request body: {e}"))
        }
        JsonPayloadError::Deserialize(e) if e.is_eof() => {
            ApiError::InvalidRequest("request body is empty or truncated JSON".into())
        }
        JsonPayloadError::Deserialize(_) => {
            ApiError::InvalidRequest("request body is not valid JSON".into())
        }
        _ => ApiError::InvalidRequest("request body could not be read".into()),
    }
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _req| json_error(&err).into())
}

/// A path segment that does not parse (an id that is no id) names nothing: 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| ApiError::NotFound.into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        ApiError::InvalidRequest(format!("invalid query string: {err}")).into()
    })
}

impl FromRequest for ClientInfo {
    type Error = ApiError;
    type Future = std::future::Ready<Result<ClientInfo, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let trusted = req
            .app_data::<web::Data<AppState>>()
            .map(|s| &s.trusted_proxies);
        let ip = req.peer_addr().map(|peer| match trusted {
            Some(trusted) if !trusted.is_empty() => {
                // Lossy, not `to_str`: a client must not be able to make the whole header (and
                // the address its proxy appended to it) vanish with one non-ASCII byte.
                let forwarded = req
                    .headers()
                    .get_all("x-forwarded-for")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()));
                client_ip(peer.ip(), forwarded, |ip| trusted.contains(ip))
            }
            _ => peer.ip().to_canonical(),
        });
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        std::future::ready(Ok(ClientInfo::new(ip, user_agent)))
    }
}

/// The client's address. Only a trusted proxy's `X-Forwarded-For` is believed, and only
/// from the right: each trusted proxy appends the address it received the request from, so
/// walking the list right to left, the first address that is not a trusted proxy is the one
/// that connected to the outermost trusted proxy. Everything left of it was written by the
/// client and is ignored. `Forwarded` is ignored too (proxies pass it through unchanged).
pub fn client_ip<S: AsRef<str>>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = S>,
    is_trusted: impl Fn(&IpAddr) -> bool,
) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let values: Vec<S> = forwarded_for.collect();
    let hops: Vec<&str> = values.iter().flat_map(|v| v.as_ref().split(',')).collect();
    for hop in hops.iter().rev() {
        match parse_hop(hop.trim()) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Garbage where a trusted proxy should have written an address: stop at the
            // last address a trusted party vouched for.
            None => break,
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|sa| sa.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Why a `Basic` credentials header was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicError {
    /// Another scheme, e.g. `Bearer`.
    NotBasic,
    /// `Basic`, but not base64 of `id:secret` in UTF-8.
    Malformed,
}

/// The client id and secret of a `Basic …` header value (RFC 7617), each form-URL-decoded
/// as RFC 6749 2.3.1 asks.
pub fn basic_credentials(value: &header::HeaderValue) -> Result<(String, String), BasicError> {
    use base64::Engine;
    let value = ascii(value).ok_or(BasicError::Malformed)?;
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicError::NotBasic);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(BasicError::Malformed)?;
    let (id, secret) = decoded.split_once(':').ok_or(BasicError::Malformed)?;
    let form_decode = |s: &str| {
        crate::http::form::decode_strict(s)
            .map(|c| c.into_owned())
            .ok_or(BasicError::Malformed)
    };
    Ok((form_decode(id)?, form_decode(secret)?))
}

/// A header value as text, if it is ASCII, as `HeaderValue::to_str` asks; checked a word at a
/// time rather than a byte at a time (this runs on every /verify and introspection; the
/// header has already been parsed, so it holds no control characters but a tab).
fn ascii(value: &header::HeaderValue) -> Option<&str> {
    std::str::from_utf8(value.as_bytes())
        .ok()
        .filter(|v| v.is_ascii())
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer_token(req: &HttpRequest) -> Result<&str, ApiError> {
    use crate::domain::Error::InvalidToken;
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(InvalidToken("missing bearer token"))?;
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(InvalidToken("token is too large").into());
    }
    let value = ascii(value).ok_or(InvalidToken("authorization header is not valid"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(InvalidToken("authorization header is not a bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(InvalidToken("authorization header is not a bearer token").into());
    }
    Ok(token.trim())
}

/// The verified access token of the request's `Authorization: Bearer` header.
pub struct Caller(pub std::sync::Arc<crate::domain::sessions::Verified>);

impl Caller {
    /// The token's claims.
    pub fn claims(&self) -> &AccessClaims {
        &self.0.claims
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => bearer_token(req).and_then(|t| {
                state
                    .services
                    .sessions
                    .verify(t)
                    .map(Caller)
                    .map_err(ApiError::from)
            }),
            None => Err(ApiError::from(crate::domain::Error::Internal(
                "application state missing".into(),
            ))),
        };
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetList;

    fn nets(list: &str) -> NetList {
        list.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn with(peer: &str, xff: &[&str], trusted: &str) -> IpAddr {
        let trusted = nets(trusted);
        client_ip(ip(peer), xff.iter(), |ip| trusted.contains(ip))
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        assert_eq!(with("1.2.3.4", &["9.9.9.9"], ""), ip("1.2.3.4"));
        assert_eq!(with("1.2.3.4", &["9.9.9.9"], "10.0.0.0/8"), ip("1.2.3.4"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = "10.0.0.0/8, 192.168.1.1/32";
        assert_eq!(
            with(
                "10.0.0.2",
                &["6.6.6.6, 203.0.113.7", "192.168.1.1:4000"],
                trusted
            ),
            ip("203.0.113.7")
        );
        // IPv6, bracketed with a port, and IPv4-mapped.
        assert_eq!(
            with("10.0.0.2", &["[2001:db8::1]:443"], trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            with("10.0.0.2", &["::ffff:198.51.100.1"], trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            with("::ffff:10.0.0.2", &["8.8.8.8"], trusted),
            ip("8.8.8.8")
        );
    }

    #[test]
    fn garbage_or_all_trusted_stops_at_the_last_vouched_address() {
        let trusted = "10.0.0.0/8";
        assert_eq!(
            with("10.0.0.2", &["1.1.1.1, junk"], trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            with("10.0.0.2", &["1.1.1.1, junk, 10.0.0.9"], trusted),
            ip("10.0.0.9")
        );
        assert_eq!(
            with("10.0.0.2", &["10.0.0.7, 10.0.0.8"], trusted),
            ip("10.0.0.7")
        );
        assert_eq!(with("10.0.0.2", &[], trusted), ip("10.0.0.2"));
    }
}
