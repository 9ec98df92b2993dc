//! The client side of the auth service's internal `/verify`: one pooled HTTP client, a short
//! timeout, and an answer that is either a verified [`Identity`], a [`Rejection`] (the auth
//! service said no) or [`VerifyError::Unavailable`] (it could not say yes — fail closed).

use std::collections::{HashMap, HashSet, VecDeque};
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

/// User and session ids in their quiet period at most; past it, nothing is kept until the
/// oldest forgotten one's period is over.
const QUIET_MAX_IDS: usize = 10_000;

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
    /// service up to this much later, so keep it short or keep it off, or let events
    /// drop entries early (`invalidation`).
    pub cache_ttl: Duration,
    /// What else ends a kept answer besides its TTL.
    pub invalidation: CacheInvalidation,
    /// With [`CacheInvalidation::Events`]: for this long after an event dropped a user's (or a
    /// session's) answers, no answer for that user (or session) is kept. Another auth
    /// replica may not have applied the revocation yet when the event arrives, and would
    /// still answer "active"; keep it at least the auth service's `revocation.poll_interval`.
    pub quiet_period: Duration,
    /// This service's client credentials, for an auth service with `verify.require_client`
    /// on (a client registered with `--introspect`); `None` sends none.
    pub client: Option<ClientCredentials>,
}

/// How the positive-answer cache learns that a session has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheInvalidation {
    /// Only by time: a kept answer is reused for its whole TTL, logout or not.
    #[default]
    TtlOnly,
    /// Also by the auth service's session-ending events, fed in through
    /// [`VerifyClient::invalidator`]. Fail safe: the cache is bypassed until the consumer
    /// calls [`CacheInvalidator::resume`], and again whenever it calls
    /// [`CacheInvalidator::suspend`]; and, while subscribed, whenever the last heartbeat of
    /// the auth service's relay ([`CacheInvalidator::heartbeat`]) is older than its window.
    Events,
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
    pub fn new(id: impl Into<String>) -> UserId {
        UserId(id.into())
    }

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
    cache: Option<Arc<PositiveCache>>,
    invalidation: CacheInvalidation,
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
        let cache = (!config.cache_ttl.is_zero()).then(|| {
            Arc::new(PositiveCache::new(
                config.cache_ttl,
                config.invalidation,
                config.quiet_period,
            ))
        });
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
                invalidation: config.invalidation,
                client,
            }),
        })
    }

    /// Asks the auth service about `token`. Never returns an identity it did not vouch for.
    pub async fn verify(&self, token: &BearerToken) -> Result<Identity, VerifyError> {
        let ticket = match &self.inner.cache {
            Some(cache) => match cache.lookup(token, Instant::now(), unix_now()) {
                Lookup::Hit(identity) => return Ok(identity),
                Lookup::Miss(ticket) => ticket,
            },
            None => None,
        };
        let identity = self.ask(token).await?;
        if let (Some(cache), Some(ticket)) = (&self.inner.cache, ticket) {
            cache.put(ticket, token, &identity, Instant::now(), unix_now());
        }
        Ok(identity)
    }

    /// The handle an events consumer drops kept answers through: `Some` when the cache is
    /// on and was configured with [`CacheInvalidation::Events`].
    pub fn invalidator(&self) -> Option<CacheInvalidator> {
        let cache = self.inner.cache.as_ref()?;
        (self.inner.invalidation == CacheInvalidation::Events).then(|| CacheInvalidator {
            cache: cache.clone(),
        })
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

/// A cache key: the SHA-256 of a token, so no token sits in memory.
type TokenKey = [u8; 32];

/// One kept answer and the moment it stops being used.
struct CachedAnswer {
    identity: Identity,
    until: Instant,
}

/// Positive answers kept for a short while, keyed by the SHA-256 of the token. An entry is
/// dropped at its TTL or at the token's own expiry, whichever comes first, and (with
/// [`CacheInvalidation::Events`]) as soon as its user's or session's session-ending event
/// arrives. Negative answers are never kept: a refused token is refused again by the auth
/// service.
struct PositiveCache {
    ttl: Duration,
    state: Mutex<CacheState>,
}

/// Everything behind one lock, so the entries, their two indexes, the bypass flags, the
/// quiet ids and the epoch always agree.
struct CacheState {
    /// False while answers must not be reused: with events, until the consumer has
    /// subscribed and whenever it loses the broker.
    live: bool,
    /// With events: answers are reused only until this moment, the last heartbeat of the
    /// auth service's relay plus its window. `None` (no heartbeat since the consumer last
    /// lost the broker): not reused. Without events it is not consulted.
    heartbeat_until: Option<Instant>,
    needs_heartbeat: bool,
    /// Users and sessions whose answers are not kept for a while after an event.
    quiet: Quiet,
    /// Moves on every invalidation. An answer fetched across one is not kept: the event
    /// may have been about it, and it was not in the cache yet to be dropped.
    epoch: u64,
    entries: HashMap<TokenKey, CachedAnswer>,
    /// User id → keys of that user's entries. Holds only keys of present entries, so it is
    /// bounded by [`CACHE_MAX_ENTRIES`] as well.
    by_user: HashMap<UserId, HashSet<TokenKey>>,
    /// Session id → keys of that session's entries; bounded the same way.
    by_session: HashMap<String, HashSet<TokenKey>>,
}

/// What a cache lookup found.
enum Lookup {
    Hit(Identity),
    /// Not kept; the ticket (absent while the cache is bypassed) lets the answer about to be
    /// fetched be kept, unless an invalidation happens in between.
    Miss(Option<Ticket>),
}

/// The cache's epoch when a lookup missed.
#[derive(Clone, Copy)]
struct Ticket(u64);

impl CacheState {
    fn remove(&mut self, key: &TokenKey) -> bool {
        let Some(answer) = self.entries.remove(key) else {
            return false;
        };
        unindex(&mut self.by_user, &answer.identity.user_id, key);
        unindex(&mut self.by_session, &answer.identity.session_id, key);
        true
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.by_user.clear();
        self.by_session.clear();
        self.epoch += 1;
    }

    /// Whether answers may be reused (and kept) at `now`.
    fn usable(&self, now: Instant) -> bool {
        self.live
            && (!self.needs_heartbeat || self.heartbeat_until.is_some_and(|until| now < until))
    }
}

/// A user or a session in its quiet period.
#[derive(Clone, PartialEq, Eq, Hash)]
enum QuietId {
    User(UserId),
    Session(String),
}

/// The ids whose answers are not kept for `period` after an event about them, at most
/// [`QUIET_MAX_IDS`], forgotten as their period ends.
struct Quiet {
    period: Duration,
    /// (end of the period, id), in the order they began; as the period is fixed, also in the
    /// order they end. An id quieted again appears twice; `until` has its later end.
    order: VecDeque<(Instant, QuietId)>,
    until: HashMap<QuietId, Instant>,
    /// Nothing is kept until then: after an event that could not be read, a (re)subscription
    /// (events may have been missed), or an id forgotten early to stay within the bound.
    everything_until: Option<Instant>,
}

impl Quiet {
    fn new(period: Duration) -> Quiet {
        Quiet {
            period,
            order: VecDeque::new(),
            until: HashMap::new(),
            everything_until: None,
        }
    }

    /// Forgets the ids whose period is over at `now`.
    fn expire(&mut self, now: Instant) {
        while let Some((end, _)) = self.order.front()
            && *end <= now
        {
            if let Some((end, id)) = self.order.pop_front() {
                self.forget(&id, end);
            }
        }
        if self.everything_until.is_some_and(|until| until <= now) {
            self.everything_until = None;
        }
    }

    /// Drops `id` from the map unless it was quieted again after `end` was set.
    fn forget(&mut self, id: &QuietId, end: Instant) {
        if self.until.get(id).is_some_and(|until| *until <= end) {
            self.until.remove(id);
        }
    }

    /// Starts `id`'s quiet period at `now`.
    fn add(&mut self, id: QuietId, now: Instant) {
        if self.period.is_zero() {
            return;
        }
        self.expire(now);
        if self.order.len() >= QUIET_MAX_IDS
            && let Some((end, oldest)) = self.order.pop_front()
        {
            // Forgotten before its period is over: keep nothing at all until then instead.
            self.forget(&oldest, end);
            self.everything_until = self.everything_until.max(Some(end));
        }
        let end = now + self.period;
        self.order.push_back((end, id.clone()));
        self.until.insert(id, end);
    }

    /// Keeps nothing at all for a period from `now`.
    fn everything(&mut self, now: Instant) {
        if !self.period.is_zero() {
            self.everything_until = self.everything_until.max(Some(now + self.period));
        }
    }

    /// Whether an answer about `identity` must not be kept at `now`.
    fn holds(&mut self, identity: &Identity, now: Instant) -> bool {
        self.expire(now);
        self.everything_until.is_some()
            || self
                .until
                .contains_key(&QuietId::User(identity.user_id.clone()))
            || self
                .until
                .contains_key(&QuietId::Session(identity.session_id.clone()))
    }

    fn len(&self) -> usize {
        self.until.len()
    }
}

fn unindex<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, HashSet<TokenKey>>,
    id: &K,
    key: &TokenKey,
) {
    if let Some(keys) = index.get_mut(id) {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(id);
        }
    }
}

impl PositiveCache {
    fn new(
        ttl: Duration,
        invalidation: CacheInvalidation,
        quiet_period: Duration,
    ) -> PositiveCache {
        let events = invalidation == CacheInvalidation::Events;
        PositiveCache {
            ttl,
            state: Mutex::new(CacheState {
                // With events, nothing is reused before the consumer has subscribed and the
                // relay's heartbeat has been heard.
                live: !events,
                heartbeat_until: None,
                needs_heartbeat: events,
                quiet: Quiet::new(if events { quiet_period } else { Duration::ZERO }),
                epoch: 0,
                entries: HashMap::new(),
                by_user: HashMap::new(),
                by_session: HashMap::new(),
            }),
        }
    }

    fn key(token: &BearerToken) -> TokenKey {
        Sha256::digest(token.as_str().as_bytes()).into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup(&self, token: &BearerToken, now: Instant, unix_now: i64) -> Lookup {
        let key = Self::key(token);
        let mut state = self.lock();
        if !state.usable(now) {
            // The relay's heartbeats may have stopped: what was kept is not trusted again.
            if !state.entries.is_empty() {
                state.clear();
            }
            return Lookup::Miss(None);
        }
        match state.entries.get(&key) {
            Some(answer) if now < answer.until && unix_now < answer.identity.expires_at => {
                return Lookup::Hit(answer.identity.clone());
            }
            Some(_) => {
                state.remove(&key);
            }
            None => {}
        }
        Lookup::Miss(Some(Ticket(state.epoch)))
    }

    fn put(
        &self,
        ticket: Ticket,
        token: &BearerToken,
        identity: &Identity,
        now: Instant,
        unix_now: i64,
    ) {
        let left = identity.expires_at.saturating_sub(unix_now);
        let Ok(left) = u64::try_from(left) else {
            return;
        };
        let keep = self.ttl.min(Duration::from_secs(left));
        if keep.is_zero() {
            return;
        }
        let mut state = self.lock();
        if !state.usable(now) || state.epoch != ticket.0 || state.quiet.holds(identity, now) {
            return;
        }
        if state.entries.len() >= CACHE_MAX_ENTRIES {
            let expired: Vec<TokenKey> = state
                .entries
                .iter()
                .filter(|(_, answer)| now >= answer.until)
                .map(|(key, _)| *key)
                .collect();
            for key in &expired {
                state.remove(key);
            }
            if state.entries.len() >= CACHE_MAX_ENTRIES {
                state.clear();
            }
        }
        let key = Self::key(token);
        state.remove(&key);
        state
            .by_user
            .entry(identity.user_id.clone())
            .or_default()
            .insert(key);
        state
            .by_session
            .entry(identity.session_id.clone())
            .or_default()
            .insert(key);
        state.entries.insert(
            key,
            CachedAnswer {
                identity: identity.clone(),
                until: now + keep,
            },
        );
    }

    /// Drops every entry of `user`, and keeps none of theirs for the quiet period from
    /// `now`; returns how many there were.
    fn drop_user(&self, user: &UserId, now: Instant) -> usize {
        let mut state = self.lock();
        state.epoch += 1;
        state.quiet.add(QuietId::User(user.clone()), now);
        let keys = state.by_user.remove(user).unwrap_or_default();
        keys.iter().filter(|key| state.remove(key)).count()
    }

    /// Drops every entry of `session`, and keeps none of its for the quiet period from
    /// `now`; returns how many there were.
    fn drop_session(&self, session: &str, now: Instant) -> usize {
        let mut state = self.lock();
        state.epoch += 1;
        state.quiet.add(QuietId::Session(session.to_string()), now);
        let keys = state.by_session.remove(session).unwrap_or_default();
        keys.iter().filter(|key| state.remove(key)).count()
    }

    /// Drops everything and keeps nothing for the quiet period from `now`: any session may
    /// have ended.
    fn drop_all(&self, now: Instant) {
        let mut state = self.lock();
        state.clear();
        state.quiet.everything(now);
    }

    /// Drops everything; `live`: the consumer is subscribed (from `now`: events may have been
    /// missed before, so nothing is kept for the quiet period), or not (it has lost the
    /// broker, and a heartbeat must be heard again).
    fn set_live(&self, live: bool, now: Instant) {
        let mut state = self.lock();
        state.clear();
        state.live = live;
        if live {
            state.quiet.everything(now);
        } else {
            state.heartbeat_until = None;
        }
    }

    /// The relay's heartbeat arrived at `now`: answers may be reused until `now + window`.
    /// After a lapse, what was kept before it is dropped.
    fn heartbeat(&self, now: Instant, window: Duration) {
        let mut state = self.lock();
        if state.heartbeat_until.is_some_and(|until| until <= now) {
            state.clear();
        }
        state.heartbeat_until = Some(now + window);
    }
}

/// The handle an events consumer invalidates the positive-answer cache through (see
/// [`VerifyClient::invalidator`]). Cheap to clone; clones act on the same cache.
#[derive(Clone)]
pub struct CacheInvalidator {
    cache: Arc<PositiveCache>,
}

impl fmt::Debug for CacheInvalidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheInvalidator")
            .field("entries", &self.len())
            .field("live", &self.is_live())
            .finish()
    }
}

impl CacheInvalidator {
    /// Drops every kept answer of `user` (all its sessions), and keeps none of theirs for
    /// the quiet period; returns how many there were.
    pub fn drop_user(&self, user: &UserId) -> usize {
        self.cache.drop_user(user, Instant::now())
    }

    /// Drops every kept answer of the session `session_id`, and keeps none of its for the
    /// quiet period; returns how many there were.
    pub fn drop_session(&self, session_id: &str) -> usize {
        self.cache.drop_session(session_id, Instant::now())
    }

    /// Forgets everything and bypasses the cache (every request asks the auth service)
    /// until [`CacheInvalidator::resume`] and the next heartbeat: for while the consumer
    /// cannot hear events.
    pub fn suspend(&self) {
        self.cache.set_live(false, Instant::now());
    }

    /// Forgets everything (events may have been missed) and uses the cache again, once a
    /// heartbeat is heard, keeping nothing new for the quiet period: for when the consumer
    /// has (re)subscribed.
    pub fn resume(&self) {
        self.cache.set_live(true, Instant::now());
    }

    /// The auth service's relay said it is publishing: answers may be reused for `window`
    /// from now (while subscribed). After a lapse, what was kept before is dropped.
    pub fn heartbeat(&self, window: Duration) {
        self.cache.heartbeat(Instant::now(), window);
    }

    /// Drops everything and keeps nothing for the quiet period, leaving the cache in use:
    /// when an event cannot be read, any session may have ended.
    pub fn clear(&self) {
        self.cache.drop_all(Instant::now());
    }

    /// Drops what is kept if the cache is bypassed now (a lookup would, too): so answers
    /// kept before heartbeats stopped do not sit in memory until they come back.
    pub fn forget_if_unused(&self) {
        let mut state = self.cache.lock();
        if !state.usable(Instant::now()) && !state.entries.is_empty() {
            state.clear();
        }
    }

    /// Subscribed (the consumer's view; see [`CacheInvalidator::in_use`]).
    pub fn is_live(&self) -> bool {
        self.cache.lock().live
    }

    /// A heartbeat of the relay was heard within its window.
    pub fn heartbeat_fresh(&self) -> bool {
        let state = self.cache.lock();
        state
            .heartbeat_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Answers are being reused right now: subscribed, with a fresh heartbeat.
    pub fn in_use(&self) -> bool {
        self.cache.lock().usable(Instant::now())
    }

    /// User and session ids in their quiet period now.
    pub fn quiet_ids(&self) -> usize {
        let mut state = self.cache.lock();
        state.quiet.expire(Instant::now());
        state.quiet.len()
    }

    /// No answer at all is kept now (after a (re)subscription or an unreadable event).
    pub fn quiet_all(&self) -> bool {
        let mut state = self.cache.lock();
        state.quiet.expire(Instant::now());
        state.quiet.everything_until.is_some()
    }

    /// How many answers are kept right now (expired ones included until they are met).
    pub fn len(&self) -> usize {
        self.cache.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        identity_of("u1", "s1", expires_at)
    }

    fn identity_of(user: &str, session: &str, expires_at: i64) -> Identity {
        Identity {
            user_id: UserId(user.into()),
            username: "alice".into(),
            roles: vec!["user".into()],
            session_id: session.into(),
            token_id: "j1".into(),
            expires_at,
        }
    }

    const NOW: i64 = 1_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    /// An events cache, subscribed at `t0`, with a heartbeat heard then that lasts an hour.
    fn live_events_cache(quiet_period: Duration, t0: Instant) -> PositiveCache {
        let cache = PositiveCache::new(
            Duration::from_secs(60),
            CacheInvalidation::Events,
            quiet_period,
        );
        cache.set_live(true, t0);
        cache.heartbeat(t0, HOUR);
        cache
    }

    impl PositiveCache {
        /// `lookup`, for a test that does not care why a lookup missed.
        fn get(&self, token: &BearerToken, now: Instant, unix_now: i64) -> Option<Identity> {
            match self.lookup(token, now, unix_now) {
                Lookup::Hit(identity) => Some(identity),
                Lookup::Miss(_) => None,
            }
        }

        /// A lookup and a put, as `VerifyClient::verify` does them around a fetch.
        fn fill(&self, token: &str, identity: &Identity, now: Instant, unix_now: i64) {
            let token = BearerToken(token.into());
            let Lookup::Miss(Some(ticket)) = self.lookup(&token, now, unix_now) else {
                panic!("expected a miss that may be kept");
            };
            self.put(ticket, &token, identity, now, unix_now);
        }

        fn index_sizes(&self) -> (usize, usize, usize) {
            let state = self.lock();
            (
                state.entries.len(),
                state.by_user.values().map(HashSet::len).sum(),
                state.by_session.values().map(HashSet::len).sum(),
            )
        }
    }

    fn has(cache: &PositiveCache, token: &str) -> bool {
        cache
            .get(&BearerToken(token.into()), Instant::now(), NOW)
            .is_some()
    }

    #[test]
    fn cache_keeps_positive_answers_for_the_ttl_at_most() {
        let cache = PositiveCache::new(
            Duration::from_secs(10),
            CacheInvalidation::TtlOnly,
            Duration::ZERO,
        );
        let token = BearerToken("tok".into());
        let other = BearerToken("other".into());
        let t0 = Instant::now();
        cache.fill("tok", &identity(1_000_100), t0, 1_000_000);
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
        // The entry is gone for good once expired, from the indexes too.
        assert_eq!(cache.get(&token, t0, 1_000_000), None);
        assert_eq!(cache.index_sizes(), (0, 0, 0));
    }

    #[test]
    fn cache_never_outlives_the_token() {
        let cache = PositiveCache::new(
            Duration::from_secs(60),
            CacheInvalidation::TtlOnly,
            Duration::ZERO,
        );
        let token = BearerToken("tok".into());
        let t0 = Instant::now();
        cache.fill("tok", &identity(1_000_005), t0, 1_000_000);
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
        cache.fill("late", &identity(1_000_000), t0, 1_000_000);
        assert!(cache.get(&late, t0, 999_999).is_none());
    }

    #[test]
    fn cache_is_bounded_and_so_are_its_indexes() {
        let cache = PositiveCache::new(
            Duration::from_secs(60),
            CacheInvalidation::TtlOnly,
            Duration::ZERO,
        );
        let t0 = Instant::now();
        for i in 0..CACHE_MAX_ENTRIES + 5 {
            // Many users and sessions, so the indexes would grow without the bound.
            let who = identity_of(&format!("u{i}"), &format!("s{i}"), 2_000_000);
            cache.fill(&format!("t{i}"), &who, t0, 1_000_000);
        }
        let (entries, by_user, by_session) = cache.index_sizes();
        assert!(entries <= CACHE_MAX_ENTRIES, "{entries}");
        assert_eq!((by_user, by_session), (entries, entries));
        let state = cache.lock();
        assert!(state.by_user.len() <= CACHE_MAX_ENTRIES);
        assert!(state.by_session.len() <= CACHE_MAX_ENTRIES);
    }

    #[test]
    fn dropping_a_user_drops_all_its_sessions_and_nothing_else() {
        let t0 = Instant::now();
        let cache = live_events_cache(Duration::ZERO, t0);
        cache.fill("a1", &identity_of("alice", "sa1", NOW + 100), t0, NOW);
        cache.fill("a1b", &identity_of("alice", "sa1", NOW + 100), t0, NOW);
        cache.fill("a2", &identity_of("alice", "sa2", NOW + 100), t0, NOW);
        cache.fill("b1", &identity_of("bob", "sb1", NOW + 100), t0, NOW);
        assert_eq!(cache.index_sizes(), (4, 4, 4));
        assert_eq!(cache.drop_user(&UserId("alice".into()), t0), 3);
        assert!(!has(&cache, "a1") && !has(&cache, "a1b") && !has(&cache, "a2"));
        assert!(has(&cache, "b1"));
        assert_eq!(cache.index_sizes(), (1, 1, 1));
        assert_eq!(cache.drop_user(&UserId("alice".into()), t0), 0);
        assert_eq!(cache.drop_user(&UserId("nobody".into()), t0), 0);
        assert!(has(&cache, "b1"));
    }

    #[test]
    fn dropping_a_session_leaves_the_users_other_sessions() {
        let t0 = Instant::now();
        let cache = live_events_cache(Duration::ZERO, t0);
        cache.fill("a1", &identity_of("alice", "sa1", NOW + 100), t0, NOW);
        cache.fill("a2", &identity_of("alice", "sa2", NOW + 100), t0, NOW);
        assert_eq!(cache.drop_session("sa1", t0), 1);
        assert!(!has(&cache, "a1"));
        assert!(has(&cache, "a2"));
        assert_eq!(cache.index_sizes(), (1, 1, 1));
        // The user index no longer names the dropped entry: dropping the user finds one.
        assert_eq!(cache.drop_user(&UserId("alice".into()), t0), 1);
        assert_eq!(cache.index_sizes(), (0, 0, 0));
        let state = cache.lock();
        assert!(state.by_user.is_empty() && state.by_session.is_empty());
    }

    #[test]
    fn the_same_token_kept_again_is_indexed_once() {
        let cache = PositiveCache::new(
            Duration::from_secs(60),
            CacheInvalidation::TtlOnly,
            Duration::ZERO,
        );
        let t0 = Instant::now();
        cache.fill("a1", &identity_of("alice", "sa1", NOW + 100), t0, NOW);
        // Expired at t0 + 61 s, then kept again with the same key.
        let later = t0 + Duration::from_secs(61);
        cache.fill("a1", &identity_of("alice", "sa1", NOW + 100), later, NOW);
        assert_eq!(cache.index_sizes(), (1, 1, 1));
    }

    #[test]
    fn with_events_the_cache_is_bypassed_until_resumed_and_cleared_on_resume() {
        let cache = PositiveCache::new(
            Duration::from_secs(60),
            CacheInvalidation::Events,
            Duration::ZERO,
        );
        let t0 = Instant::now();
        let token = BearerToken("a1".into());
        // Not subscribed yet: nothing is reused, and nothing may be kept.
        assert!(matches!(cache.lookup(&token, t0, NOW), Lookup::Miss(None)));
        // Subscribed, but no heartbeat heard yet: still bypassed.
        cache.set_live(true, t0);
        assert!(matches!(cache.lookup(&token, t0, NOW), Lookup::Miss(None)));
        cache.heartbeat(t0, HOUR);
        cache.fill("a1", &identity_of("alice", "sa1", NOW + 100), t0, NOW);
        assert!(has(&cache, "a1"));
        // The consumer lost the broker: bypassed and forgotten.
        cache.set_live(false, t0);
        assert!(matches!(cache.lookup(&token, t0, NOW), Lookup::Miss(None)));
        assert_eq!(cache.index_sizes(), (0, 0, 0));
        // Subscribed again: a heartbeat is needed again, and what was kept before is gone.
        cache.set_live(true, t0);
        assert!(matches!(cache.lookup(&token, t0, NOW), Lookup::Miss(None)));
        cache.heartbeat(t0, HOUR);
        assert!(!has(&cache, "a1"));
        cache.fill("a1", &identity_of("alice", "sa1", NOW + 100), t0, NOW);
        assert!(has(&cache, "a1"));
    }

    #[test]
    fn with_events_answers_are_reused_only_while_heartbeats_arrive() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let cache = PositiveCache::new(
            Duration::from_secs(60),
            CacheInvalidation::Events,
            Duration::ZERO,
        );
        cache.set_live(true, t0);
        cache.heartbeat(t0, window);
        let token = BearerToken("a1".into());
        let alice = identity_of("alice", "sa1", NOW + 100);
        cache.fill("a1", &alice, t0, NOW);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(cache.get(&token, at(9), NOW), Some(alice.clone()));
        // Heartbeats keep it in use.
        cache.heartbeat(at(8), window);
        assert_eq!(cache.get(&token, at(17), NOW), Some(alice.clone()));
        // None within the window: bypassed, nothing may be kept, and what was kept is gone.
        assert!(matches!(
            cache.lookup(&token, at(18), NOW),
            Lookup::Miss(None)
        ));
        assert_eq!(cache.index_sizes(), (0, 0, 0));
        // A heartbeat again: in use, empty.
        cache.heartbeat(at(30), window);
        assert_eq!(cache.get(&token, at(30), NOW), None);
        cache.fill("a1", &alice, at(30), NOW);
        assert_eq!(cache.get(&token, at(31), NOW), Some(alice.clone()));
        // A lapse that no lookup saw still drops what was kept before it.
        cache.heartbeat(at(45), window);
        assert_eq!(cache.get(&token, at(45), NOW), None);
        // An answer fetched before a lapse and stored after it is not kept.
        let Lookup::Miss(Some(ticket)) = cache.lookup(&token, at(46), NOW) else {
            panic!("expected a miss");
        };
        cache.put(ticket, &token, &alice, at(56), NOW);
        cache.heartbeat(at(57), window);
        assert_eq!(cache.get(&token, at(57), NOW), None);
    }

    #[test]
    fn after_an_event_its_user_and_session_are_not_cached_for_the_quiet_period() {
        let t0 = Instant::now();
        let quiet = Duration::from_secs(10);
        let cache = live_events_cache(quiet, t0);
        // Past the quiet period of the (re)subscription itself.
        let start = t0 + quiet;
        let at = |ms: u64| start + Duration::from_millis(ms);
        let keep = |token: &str, who: &Identity, now: Instant| {
            cache.fill(token, who, now, NOW);
            cache.get(&BearerToken(token.into()), now, NOW).is_some()
        };
        let alice = identity_of("alice", "sa1", NOW + 100);
        let alice2 = identity_of("alice", "sa2", NOW + 100);
        let bob = identity_of("bob", "sb1", NOW + 100);
        let carol = identity_of("carol", "sc1", NOW + 100);
        assert!(keep("a1", &alice, at(0)));
        assert_eq!(cache.drop_user(&UserId("alice".into()), at(0)), 1);
        assert_eq!(cache.drop_session("sc1", at(0)), 0);
        // A replica that has not applied the revocation yet still answers "active": that
        // answer (fetched after the event) is not kept, for any of the user's sessions,
        // nor for the session named; others are kept as usual.
        for ms in [1, 5_000, 9_999] {
            assert!(!keep("a1", &alice, at(ms)), "{ms} ms");
            assert!(!keep("a2", &alice2, at(ms)), "{ms} ms");
            assert!(!keep("c1", &carol, at(ms)), "{ms} ms");
        }
        assert!(keep("b1", &bob, at(1)));
        assert_eq!(cache.lock().quiet.len(), 2);
        // Over: kept again, and forgotten.
        assert!(keep("a1", &alice, at(10_000)));
        assert!(keep("c1", &carol, at(10_000)));
        assert_eq!(cache.lock().quiet.len(), 0);
        // Quieted again before the end: the later end counts.
        cache.drop_user(&UserId("bob".into()), at(20_000));
        cache.drop_user(&UserId("bob".into()), at(25_000));
        assert!(!keep("b1", &bob, at(30_001)));
        assert!(keep("b1", &bob, at(35_000)));
    }

    #[test]
    fn an_unreadable_event_or_a_resubscription_quiets_everyone() {
        let t0 = Instant::now();
        let quiet = Duration::from_secs(10);
        let cache = live_events_cache(quiet, t0);
        let bob = identity_of("bob", "sb1", NOW + 100);
        let fill = |now: Instant| {
            cache.fill("b1", &bob, now, NOW);
            cache.get(&BearerToken("b1".into()), now, NOW).is_some()
        };
        // Subscribed at t0: events before it may have been missed.
        assert!(!fill(t0 + Duration::from_secs(9)));
        assert!(fill(t0 + quiet));
        let t1 = t0 + Duration::from_secs(100);
        cache.drop_all(t1);
        assert!(!fill(t1 + Duration::from_secs(9)));
        assert!(fill(t1 + quiet));
    }

    #[test]
    fn quiet_ids_are_bounded_and_an_early_forgotten_one_quiets_everyone() {
        let t0 = Instant::now();
        let quiet = Duration::from_secs(10);
        let cache = live_events_cache(quiet, t0);
        let start = t0 + quiet;
        for i in 0..QUIET_MAX_IDS + 5 {
            cache.drop_session(
                &format!("s{i}"),
                start + Duration::from_millis(i as u64 / 100),
            );
        }
        {
            let state = cache.lock();
            assert!(state.quiet.len() <= QUIET_MAX_IDS);
            assert!(state.quiet.order.len() <= QUIET_MAX_IDS);
        }
        // s0..s4 were forgotten before their period was over: nothing is kept until then.
        let bob = identity_of("bob", "sb1", NOW + 100);
        let now = start + Duration::from_secs(5);
        cache.fill("b1", &bob, now, NOW);
        assert!(cache.get(&BearerToken("b1".into()), now, NOW).is_none());
        // Afterwards, the others expire on their own and all is as before.
        let later = start + Duration::from_secs(20);
        cache.fill("b1", &bob, later, NOW);
        assert!(cache.get(&BearerToken("b1".into()), later, NOW).is_some());
        let state = cache.lock();
        assert_eq!((state.quiet.len(), state.quiet.order.len()), (0, 0));
    }

    #[test]
    fn an_answer_fetched_across_an_invalidation_is_not_kept() {
        let t0 = Instant::now();
        let cache = live_events_cache(Duration::ZERO, t0);
        let token = BearerToken("a1".into());
        for invalidate in [
            &(|c: &PositiveCache| {
                c.drop_user(&UserId("alice".into()), t0);
            }) as &dyn Fn(&PositiveCache),
            &|c: &PositiveCache| {
                c.drop_session("someone else's", t0);
            },
            &|c: &PositiveCache| c.set_live(true, t0),
            &|c: &PositiveCache| c.heartbeat(t0 + Duration::from_secs(7200), HOUR),
        ] {
            let Lookup::Miss(Some(ticket)) = cache.lookup(&token, t0, NOW) else {
                panic!("expected a miss");
            };
            // The event arrives while /verify is being asked.
            invalidate(&cache);
            cache.put(
                ticket,
                &token,
                &identity_of("alice", "sa1", NOW + 100),
                t0,
                NOW,
            );
            assert!(!has(&cache, "a1"));
        }
        // Without one in between, it is kept.
        cache.fill("a1", &identity_of("alice", "sa1", NOW + 100), t0, NOW);
        assert!(has(&cache, "a1"));
    }
}
