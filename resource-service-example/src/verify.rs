//! The client side of the auth service's internal `/verify`: one pooled HTTP client, a short
//! timeout, and an answer that is either a verified [`Identity`], a [`Rejection`] (the auth
//! service said no) or [`VerifyError::Unavailable`] (it could not say yes — fail closed).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest token accepted; the auth service refuses larger ones unparsed as well.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Largest `/verify` answer read; anything bigger is not the auth service talking.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Entries the positive-answer cache holds at most (a bound on memory, not a tuning knob).
const CACHE_MAX_ENTRIES: usize = 10_000;

/// How the verify client reaches the auth service.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The internal `/verify` endpoint, e.g. `http://auth-service:8081/verify`. Plain `http`
    /// only: the internal listener belongs on a private network.
    pub url: String,
    /// Upper bound for one verification, connecting included. Past it the request fails
    /// closed with 503.
    pub timeout: Duration,
    /// How long a positive answer may be reused without asking again; zero (the default)
    /// turns the cache off. A logout or a detected refresh-token replay then reaches this
    /// service up to this much later, so keep it short or keep it off.
    pub cache_ttl: Duration,
    /// This service's client credentials, for an auth service with `verify.require_client`
    /// on (a client registered with `--introspect`); `None` sends none.
    pub client: Option<ClientCredentials>,
}

/// A client id and secret for `/verify`. `Debug` hides the secret.
#[derive(Clone)]
pub struct ClientCredentials {
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ClientCredentials {
    /// `Basic …` of the form-encoded id and secret (RFC 6749 2.3.1), marked sensitive so
    /// it is never logged by the HTTP stack.
    fn header_value(&self) -> Result<reqwest::header::HeaderValue, ConfigError> {
        use base64::Engine;
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let pair = format!(
            "{}:{}",
            utf8_percent_encode(&self.id, NON_ALPHANUMERIC),
            utf8_percent_encode(&self.secret, NON_ALPHANUMERIC)
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| ConfigError("client_secret: cannot be sent in a header".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// The header `/verify` reads the caller's client credentials from (`Authorization` carries
/// the token being checked).
const CLIENT_AUTHORIZATION: &str = "x-client-authorization";

/// A user id as the auth service issues it (the token's `sub`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is calling, as the auth service vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    pub username: String,
    pub roles: Vec<String>,
    /// The session (refresh-token family) the access token belongs to.
    pub session_id: String,
    /// The access token's own id (`jti`): log this, never the token.
    pub token_id: String,
    /// Expiry of the access token, seconds since the Unix epoch.
    pub expires_at: i64,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why the auth service refused a token. The code tells the client what to do next:
/// `token_expired` → refresh; `token_revoked` or `invalid_token` → log in again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Expired,
    Revoked,
    Invalid(&'static str),
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Rejection::Expired => "token_expired",
            Rejection::Revoked => "token_revoked",
            Rejection::Invalid(_) => "invalid_token",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Rejection::Expired => "access token has expired; refresh it",
            Rejection::Revoked => "access token's session has been revoked; log in again",
            Rejection::Invalid(reason) => reason,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The auth service looked at the token and refused it.
    #[error("token rejected: {}", .0.code())]
    Rejected(Rejection),
    /// No trustworthy answer: unreachable, timed out, 5xx, or an answer that is not a
    /// `/verify` answer. The caller must refuse the request (fail closed).
    #[error("auth service unavailable: {0}")]
    Unavailable(String),
}

/// A bearer token taken from an `Authorization` header. Its `Debug` output hides the token.
#[derive(Clone)]
pub struct BearerToken(String);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// Takes the token from `Authorization: Bearer <token>`. A missing or malformed header is
    /// an [`Rejection::Invalid`], decided here without asking the auth service.
    pub fn from_headers(headers: &HeaderMap) -> Result<BearerToken, Rejection> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Rejection::Invalid("missing bearer token"))?;
        if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
            return Err(Rejection::Invalid("token is too large"));
        }
        let value = value
            .to_str()
            .map_err(|_| Rejection::Invalid("authorization header is not valid"))?;
        let (scheme, token) = value.split_once(' ').ok_or(Rejection::Invalid(
            "authorization header is not a bearer token",
        ))?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Rejection::Invalid(
                "authorization header is not a bearer token",
            ));
        }
        // RFC 6750 b64token: only these characters can be a token, so anything else is
        // refused here rather than forwarded.
        let body = token.trim_end_matches('=');
        if !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        {
            return Err(Rejection::Invalid("bearer token has invalid characters"));
        }
        Ok(BearerToken(token.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The successful `/verify` answer.
#[derive(Deserialize)]
struct Active {
    active: bool,
    sub: String,
    username: String,
    roles: Vec<String>,
    sid: String,
    jti: String,
    exp: i64,
}

/// The refusing `/verify` answer; only the code is used.
#[derive(Deserialize)]
struct Inactive {
    error: String,
}

/// Verifies bearer tokens with the auth service. Cheap to clone: clones share one connection
/// pool (and the cache, when it is on). Build it once at start-up and hand it to every worker.
#[derive(Clone)]
pub struct VerifyClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: reqwest::Url,
    cache: Option<PositiveCache>,
    /// `Basic …` for `X-Client-Authorization`, when client credentials are configured.
    client: Option<reqwest::header::HeaderValue>,
}

impl fmt::Debug for VerifyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyClient")
            .field("url", &self.inner.url.as_str())
            .field("cache", &self.inner.cache.as_ref().map(|c| c.ttl))
            .finish()
    }
}

/// A `VerifyConfig` that cannot work; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl VerifyClient {
    pub fn new(config: &VerifyConfig) -> Result<VerifyClient, ConfigError> {
        let url = parse_verify_url(&config.url)?;
        if config.timeout.is_zero() {
            return Err(ConfigError("timeout: must be more than zero".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A token goes to the configured address and nowhere else: no redirects, and no
            // proxy picked up from HTTP_PROXY and friends.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| ConfigError(format!("cannot build the HTTP client: {e}")))?;
        let cache = (!config.cache_ttl.is_zero()).then(|| PositiveCache::new(config.cache_ttl));
        let client = config
            .client
            .as_ref()
            .map(ClientCredentials::header_value)
            .transpose()?;
        Ok(VerifyClient {
            inner: Arc::new(Inner {
                http,
                url,
                cache,
                client,
            }),
        })
    }

    /// Asks the auth service about `token`. Never returns an identity it did not vouch for.
    pub async fn verify(&self, token: &BearerToken) -> Result<Identity, VerifyError> {
        if let Some(cache) = &self.inner.cache
            && let Some(identity) = cache.get(token, Instant::now(), unix_now())
        {
            return Ok(identity);
        }
        let identity = self.ask(token).await?;
        if let Some(cache) = &self.inner.cache {
            cache.put(token, &identity, Instant::now(), unix_now());
        }
        Ok(identity)
    }

    async fn ask(&self, token: &BearerToken) -> Result<Identity, VerifyError> {
        let unavailable = |what: String| VerifyError::Unavailable(what);
        let mut request = self
            .inner
            .http
            .get(self.inner.url.clone())
            .bearer_auth(token.as_str())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(client) = &self.inner.client {
            request = request.header(CLIENT_AUTHORIZATION, client.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| unavailable(describe_transport_error(e)))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(describe_transport_error(e)))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(unavailable("answer from /verify is too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        match status.as_u16() {
            200 => {
                let answer: Active = serde_json::from_slice(&body).map_err(|_| {
                    unavailable("200 from /verify is not a verification answer".into())
                })?;
                if !answer.active {
                    return Err(unavailable("200 from /verify without active=true".into()));
                }
                Ok(Identity {
                    user_id: UserId(answer.sub),
                    username: answer.username,
                    roles: answer.roles,
                    session_id: answer.sid,
                    token_id: answer.jti,
                    expires_at: answer.exp,
                })
            }
            // The auth service refused the token. An unreadable refusal is still a refusal.
            401 => {
                let code = serde_json::from_slice::<Inactive>(&body)
                    .map(|i| i.error)
                    .unwrap_or_default();
                if code == "invalid_client" {
                    // This service was refused, not the token: no answer about the token.
                    return Err(unavailable(
                        "/verify refused this service's client credentials (auth.client_id, auth.client_secret)".into(),
                    ));
                }
                Err(VerifyError::Rejected(match code.as_str() {
                    "token_expired" => Rejection::Expired,
                    "token_revoked" => Rejection::Revoked,
                    _ => Rejection::Invalid("access token is not valid"),
                }))
            }
            // 5xx, and anything a correctly configured /verify never answers (a redirect, a
            // 404 from the wrong URL, …): no trustworthy answer.
            other => Err(unavailable(format!("/verify answered HTTP {other}"))),
        }
    }
}

fn parse_verify_url(raw: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(raw).map_err(|e| {
        ConfigError(format!(
            "verify_url: {e} (expected http://HOST:PORT/verify)"
        ))
    })?;
    if url.scheme() != "http" {
        return Err(ConfigError(
            "verify_url: must be an http:// URL (this build has no TLS; keep the internal \
             listener on a private network)"
                .into(),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError("verify_url: has no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(ConfigError(
            "verify_url: must not carry credentials or a query".into(),
        ));
    }
    Ok(url)
}

/// A transport failure in words, without the URL's query or anything request-specific.
fn describe_transport_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "request to /verify timed out".into()
    } else if e.is_connect() {
        "cannot connect to /verify".into()
    } else {
        format!("request to /verify failed: {}", e.without_url())
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Positive answers kept for a short while, keyed by the SHA-256 of the token. An entry is
/// dropped at its TTL or at the token's own expiry, whichever comes first. Negative answers
/// are never kept: a refused token is refused again by the auth service.
struct PositiveCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
}

impl PositiveCache {
    fn new(ttl: Duration) -> PositiveCache {
        PositiveCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(token: &BearerToken) -> [u8; 32] {
        Sha256::digest(token.as_str().as_bytes()).into()
    }

    fn get(&self, token: &BearerToken, now: Instant, unix_now: i64) -> Option<Identity> {
        let key = Self::key(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&key) {
            Some((identity, until)) if now < *until && unix_now < identity.expires_at => {
                Some(identity.clone())
            }
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    fn put(&self, token: &BearerToken, identity: &Identity, now: Instant, unix_now: i64) {
        let left = identity.expires_at.saturating_sub(unix_now);
        let Ok(left) = u64::try_from(left) else {
            return;
        };
        let keep = self.ttl.min(Duration::from_secs(left));
        if keep.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX_ENTRIES {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= CACHE_MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(Self::key(token), (identity.clone(), now + keep));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_token_parsing() {
        let t = BearerToken::from_headers(&headers("Bearer abc.DEF-_~+/x==")).unwrap();
        assert_eq!(t.as_str(), "abc.DEF-_~+/x==");
        assert_eq!(
            BearerToken::from_headers(&headers("bearer   abc "))
                .unwrap()
                .as_str(),
            "abc"
        );
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearerabc",
            "Bearer a b",
            "Bearer ab\"c",
            "Bearer a=b",
        ] {
            let e = BearerToken::from_headers(&headers(bad)).unwrap_err();
            assert_eq!(e.code(), "invalid_token", "{bad}");
        }
        assert_eq!(
            BearerToken::from_headers(&HeaderMap::new()).unwrap_err(),
            Rejection::Invalid("missing bearer token")
        );
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(BearerToken::from_headers(&headers(&huge)).is_err());
        assert!(!format!("{t:?}").contains("abc"));
    }

    #[test]
    fn verify_url_is_checked() {
        assert!(parse_verify_url("http://auth-service:8081/verify").is_ok());
        for bad in [
            "https://auth/verify",
            "auth:8081/verify",
            "http://user:pw@auth/verify",
            "http://:8081/verify",
            "not a url",
        ] {
            let e = parse_verify_url(bad).unwrap_err();
            assert!(e.0.starts_with("verify_url"), "{bad}: {e}");
        }
    }

    fn identity(expires_at: i64) -> Identity {
        Identity {
            user_id: UserId("u1".into()),
            username: "alice".into(),
            roles: vec!["user".into()],
            session_id: "s1".into(),
            token_id: "j1".into(),
            expires_at,
        }
    }

    #[test]
    fn cache_keeps_positive_answers_for_the_ttl_at_most() {
        let cache = PositiveCache::new(Duration::from_secs(10));
        let token = BearerToken("tok".into());
        let other = BearerToken("other".into());
        let t0 = Instant::now();
        cache.put(&token, &identity(1_000_100), t0, 1_000_000);
        assert_eq!(cache.get(&token, t0, 1_000_000), Some(identity(1_000_100)));
        assert_eq!(cache.get(&other, t0, 1_000_000), None);
        assert_eq!(
            cache.get(&token, t0 + Duration::from_secs(9), 1_000_009),
            Some(identity(1_000_100))
        );
        assert_eq!(
            cache.get(&token, t0 + Duration::from_secs(10), 1_000_010),
            None
        );
        // The entry is gone for good once expired.
        assert_eq!(cache.get(&token, t0, 1_000_000), None);
    }

    #[test]
    fn cache_never_outlives_the_token() {
        let cache = PositiveCache::new(Duration::from_secs(60));
        let token = BearerToken("tok".into());
        let t0 = Instant::now();
        cache.put(&token, &identity(1_000_005), t0, 1_000_000);
        assert!(
            cache
                .get(&token, t0 + Duration::from_secs(4), 1_000_004)
                .is_some()
        );
        assert!(
            cache
                .get(&token, t0 + Duration::from_secs(5), 1_000_005)
                .is_none()
        );
        // An answer for a token already at its expiry is not kept at all.
        let late = BearerToken("late".into());
        cache.put(&late, &identity(1_000_000), t0, 1_000_000);
        assert!(cache.get(&late, t0, 999_999).is_none());
    }

    #[test]
    fn cache_is_bounded() {
        let cache = PositiveCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..CACHE_MAX_ENTRIES + 5 {
            cache.put(
                &BearerToken(format!("t{i}")),
                &identity(2_000_000),
                t0,
                1_000_000,
            );
        }
        let len = cache.entries.lock().unwrap().len();
        assert!(len <= CACHE_MAX_ENTRIES, "{len}");
    }
}
