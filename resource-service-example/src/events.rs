//! The consumer of the auth service's events on NATS JetStream: a background task that drops
//! kept `/verify` answers the moment their session ends, so the positive-answer cache can
//! live longer without outliving a logout.
//!
//! Every replica reads every event: each subscribes with ordered consumers of its own
//! (ephemeral, unacknowledged, in stream order, removed by the server 30 s after the replica
//! is gone), one per session-ending kind (`<subject_prefix>.<kind>`; the server of this
//! deployment, 2.9, filters one subject per consumer), delivering only events published
//! from the moment of subscribing. For each event it drops the cached answers of `user_id`,
//! or of `session_id` when there is no user. Delivery is at least once, so event ids are
//! remembered (the last [`RECENT_IDS`]) and a repeated one is counted, not applied again.
//!
//! Fail safe: until the consumer has subscribed, and from the moment it loses the broker
//! (a disconnect, or the stream not answering a check every [`PROBE_EVERY`]) until it has
//! subscribed again, the cache is bypassed and every request asks the auth service. Each
//! new subscription starts from an empty cache, as events may have been missed meanwhile.
//!
//! A broker that answers does not mean events are published: the auth service's relay may
//! be stopped, crashed, unable to publish into the stream, or publishing under another
//! prefix. While it publishes, it sends a heartbeat every 2 s with core NATS on
//! `<subject_prefix>-heartbeat` (outside the stream), `{"at":…,"stream":"<stream>"}`; the
//! cache is used only while one naming this stream arrived within `events.heartbeat_window`,
//! and is emptied when they come back after a lapse.
//!
//! An event can arrive before every auth replica has applied its revocation (replicas learn
//! of it through the database, within `revocation.poll_interval` at worst), and such a
//! replica still answers "active". So after an event, no answer for its user (or session)
//! is kept for `events.quiet_period` (see [`crate::verify::VerifyConfig::quiet_period`]).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::verify::{CacheInvalidator, UserId};

/// The event kinds after which a session's cached answers must go (from the auth service's
/// audit kinds). Every other kind is not subscribed to.
pub const SESSION_ENDING_KINDS: [&str; 7] = [
    "refresh_token_reused",
    "logged_out",
    "logged_out_all",
    "session_revoked",
    "password_changed",
    "role_revoked",
    "user_disabled",
];

/// Event ids remembered to recognise a repeated delivery (a bound on memory: an event
/// repeated after this many others is applied again, which only drops entries again).
pub const RECENT_IDS: usize = 10_000;

/// How often the stream is checked while subscribed; a check that fails or takes longer than
/// [`PROBE_TIMEOUT`] counts as losing the broker (a connection can look open while the
/// server no longer answers).
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait of a pull request. The server's idle heartbeat is half of it, so a consumer
/// the server has lost is noticed, and recreated, within a few seconds.
const PULL_EXPIRES: Duration = Duration::from_secs(4);

/// Longest pause between two attempts to connect or subscribe.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Longest event id considered (ids are UUIDs); a longer one makes the event unreadable.
const MAX_ID_LEN: usize = 128;

/// How long the cache stays in use after the relay's last heartbeat, unless configured.
pub const DEFAULT_HEARTBEAT_WINDOW: Duration = Duration::from_secs(10);

/// How long after an event its user's (or session's) answers are not kept, unless
/// configured: twice the auth service's default `revocation.poll_interval` (5 s).
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(10);

/// A setting of the events section that cannot work; the message starts with the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the events come from. `Debug` hides any password in the broker URL.
#[derive(Clone)]
pub struct EventsConfig {
    servers: Vec<String>,
    stream: String,
    subject_prefix: String,
    heartbeat_window: Duration,
}

impl fmt::Debug for EventsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsConfig")
            .field("url", &self.display_url())
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("heartbeat_window", &self.heartbeat_window)
            .finish()
    }
}

impl EventsConfig {
    /// `url`: one or more comma-separated `nats://HOST:PORT` or `tls://HOST:PORT`.
    pub fn new(url: &str, stream: &str, subject_prefix: &str) -> Result<EventsConfig, ConfigError> {
        check_stream_name(stream)?;
        check_subject_prefix(subject_prefix)?;
        let servers = url
            .split(',')
            .map(|part| parse_server(part.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EventsConfig {
            servers,
            stream: stream.to_string(),
            subject_prefix: subject_prefix.to_string(),
            heartbeat_window: DEFAULT_HEARTBEAT_WINDOW,
        })
    }

    /// How long the cache stays in use after the relay's last heartbeat.
    pub fn with_heartbeat_window(mut self, window: Duration) -> EventsConfig {
        self.heartbeat_window = window;
        self
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The subject of the relay's heartbeats: `<subject_prefix>-heartbeat`, beside the
    /// stream's subjects rather than below them, so the stream never stores them.
    pub fn heartbeat_subject(&self) -> String {
        format!("{}-heartbeat", self.subject_prefix)
    }

    /// The subjects subscribed to: `<subject_prefix>.<kind>` for each session-ending kind.
    pub fn subjects(&self) -> Vec<String> {
        SESSION_ENDING_KINDS
            .iter()
            .map(|kind| format!("{}.{kind}", self.subject_prefix))
            .collect()
    }

    /// The broker URL(s) for logs and `check-config`: a password shows as `<redacted>`.
    pub fn display_url(&self) -> String {
        self.servers
            .iter()
            .map(|server| match reqwest::Url::parse(server) {
                Ok(mut url) if url.password().is_some() => {
                    let _ = url.set_password(Some("<redacted>"));
                    url.to_string().replace("%3Credacted%3E", "<redacted>")
                }
                _ => server.clone(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn parse_server(raw: &str) -> Result<String, ConfigError> {
    let err = |msg: &str| Err(ConfigError(format!("url: {msg}")));
    let Ok(url) = reqwest::Url::parse(raw) else {
        return err("must be nats://HOST:PORT (or tls://HOST:PORT; several: comma-separated)");
    };
    if url.scheme() != "nats" && url.scheme() != "tls" {
        return err("must be a nats:// or tls:// URL");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return err("has no host");
    }
    if !url.path().trim_start_matches('/').is_empty() || url.query().is_some() {
        return err("must not have a path or a query");
    }
    // Without a port the client would use 4222; say it, so every address is explicit.
    let port = url.port().unwrap_or(4222);
    let mut normal = url.clone();
    let _ = normal.set_port(Some(port));
    Ok(normal.as_str().trim_end_matches('/').to_string())
}

/// A JetStream stream name: letters, digits, `-` and `_`.
pub fn check_stream_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError(
            "stream: must be 1 to 64 letters, digits, '-' or '_', such as AUTH_EVENTS".into(),
        ))
    }
}

/// A subject prefix: dot-separated tokens without wildcards or spaces.
pub fn check_subject_prefix(prefix: &str) -> Result<(), ConfigError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 128
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError(
            "subject_prefix: must be dot-separated words without spaces or wildcards, such as auth.events"
                .into(),
        ))
    }
}

/// The last event ids seen, at most `capacity` of them, the oldest forgotten first.
pub struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> RecentIds {
        RecentIds {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Remembers `id`; false when it is remembered already (a repeated delivery).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(id.to_string());
        self.seen.insert(id.to_string());
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// An event as the auth service publishes it; `at` and `detail` are not needed here, and
/// fields added later are ignored.
#[derive(Deserialize)]
struct AuthEvent {
    id: String,
    kind: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
}

/// What became of one delivered event.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Its user's (or session's) cached answers were dropped: this many.
    Applied { dropped: usize },
    /// Its id was seen already: nothing done.
    Duplicate,
    /// It could not be read, so which session ended is unknown: the whole cache was dropped.
    Unreadable(&'static str),
}

/// The relay's heartbeat; `at` is informational, fields added later are ignored.
#[derive(Deserialize)]
struct Heartbeat {
    stream: String,
}

/// Counters of the consumer, shared with the status endpoint.
#[derive(Default)]
struct Counters {
    subscribed: AtomicBool,
    subscriptions: AtomicU64,
    heartbeats: AtomicU64,
    /// Heartbeats naming another stream, or unreadable: not counted as heartbeats.
    foreign_heartbeats: AtomicU64,
    applied: AtomicU64,
    duplicates: AtomicU64,
    unreadable: AtomicU64,
    dropped_entries: AtomicU64,
}

/// Applies delivered events to the cache, recognising repeated ones.
struct Applier {
    cache: CacheInvalidator,
    recent: RecentIds,
    counters: Arc<Counters>,
}

impl Applier {
    fn new(cache: CacheInvalidator, counters: Arc<Counters>) -> Applier {
        Applier {
            cache,
            recent: RecentIds::new(RECENT_IDS),
            counters,
        }
    }

    /// Handles one message's payload, counting the outcome.
    fn handle(&mut self, subject: &str, payload: &[u8]) -> Outcome {
        let outcome = self.apply(payload);
        let c = &self.counters;
        match &outcome {
            Outcome::Applied { dropped } => {
                c.applied.fetch_add(1, Ordering::Relaxed);
                c.dropped_entries
                    .fetch_add(*dropped as u64, Ordering::Relaxed);
            }
            Outcome::Duplicate => {
                c.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Unreadable(why) => {
                c.unreadable.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "unreadable auth event on {subject} ({why}): dropped every cached answer"
                );
            }
        }
        outcome
    }

    fn apply(&mut self, payload: &[u8]) -> Outcome {
        let Ok(event) = serde_json::from_slice::<AuthEvent>(payload) else {
            self.cache.clear();
            return Outcome::Unreadable("not an auth event");
        };
        if event.id.is_empty() || event.id.len() > MAX_ID_LEN {
            self.cache.clear();
            return Outcome::Unreadable("no usable event id");
        }
        if !self.recent.insert(&event.id) {
            log::info!(
                "auth event {} ({}) seen before: ignored",
                event.id,
                event.kind
            );
            return Outcome::Duplicate;
        }
        // The subject chose the kind; dropping entries is safe whatever `kind` says.
        let user = event.user_id.filter(|u| !u.is_empty());
        let session = event.session_id.filter(|s| !s.is_empty());
        let dropped = match (&user, &session) {
            (Some(user), _) => self.cache.drop_user(&UserId::new(user.as_str())),
            (None, Some(session)) => self.cache.drop_session(session),
            (None, None) => {
                self.cache.clear();
                return Outcome::Unreadable("neither user_id nor session_id");
            }
        };
        log::info!(
            "auth event {} ({}, user {}, session {}): dropped {dropped} cached answer(s)",
            event.id,
            event.kind,
            user.as_deref().unwrap_or("-"),
            session.as_deref().unwrap_or("-"),
        );
        Outcome::Applied { dropped }
    }
}

/// The running consumer, as the status endpoint sees it. Cheap to clone.
#[derive(Clone)]
pub struct ConsumerStatus {
    counters: Arc<Counters>,
    cache: CacheInvalidator,
    stream: String,
}

/// `GET /events/status`: counts and state only, nothing about any user.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub enabled: bool,
    pub stream: String,
    /// Subscribed now: the cache is in use. False: every request asks the auth service.
    pub subscribed: bool,
    /// Times it has subscribed (1 + resubscriptions after losing the broker).
    pub subscriptions: u64,
    /// A heartbeat of the auth service's relay arrived within the window.
    pub heartbeat_fresh: bool,
    /// Subscribed and the heartbeat fresh: answers are being reused.
    pub cache_in_use: bool,
    pub heartbeats: u64,
    /// Heartbeats on the subject that name another stream (or cannot be read): ignored.
    pub foreign_heartbeats: u64,
    /// Users and sessions whose answers are not kept now, for a while after their event.
    pub quiet_ids: usize,
    /// No answer at all is kept now: for a while after (re)subscribing or an unreadable event.
    pub quiet_all: bool,
    pub applied: u64,
    pub duplicates: u64,
    pub unreadable: u64,
    /// Cached answers dropped by applied events.
    pub dropped_entries: u64,
    pub cache_entries: usize,
}

impl ConsumerStatus {
    pub fn report(&self) -> StatusReport {
        let c = &self.counters;
        StatusReport {
            enabled: true,
            stream: self.stream.clone(),
            subscribed: c.subscribed.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            heartbeat_fresh: self.cache.heartbeat_fresh(),
            cache_in_use: self.cache.in_use(),
            heartbeats: c.heartbeats.load(Ordering::Relaxed),
            foreign_heartbeats: c.foreign_heartbeats.load(Ordering::Relaxed),
            quiet_ids: self.cache.quiet_ids(),
            quiet_all: self.cache.quiet_all(),
            applied: c.applied.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            unreadable: c.unreadable.load(Ordering::Relaxed),
            dropped_entries: c.dropped_entries.load(Ordering::Relaxed),
            cache_entries: self.cache.len(),
        }
    }
}

/// Starts the consumer on the current actix/tokio runtime; it runs, reconnecting on its
/// own, for as long as the runtime does.
pub fn spawn(config: EventsConfig, cache: CacheInvalidator) -> ConsumerStatus {
    let counters = Arc::new(Counters::default());
    let status = ConsumerStatus {
        counters: counters.clone(),
        cache: cache.clone(),
        stream: config.stream.clone(),
    };
    cache.suspend();
    actix_web::rt::spawn(run(config, Applier::new(cache, counters)));
    status
}

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(8))).min(MAX_BACKOFF)
}

async fn run(config: EventsConfig, mut applier: Applier) {
    // Counts the client's disconnects; a change ends the current subscription.
    let (disconnects_tx, mut disconnects) = watch::channel(0u64);
    let disconnects_tx = Arc::new(disconnects_tx);
    let client = connect(&config, disconnects_tx).await;
    let _heartbeats = AbortOnDrop(tokio::spawn(watch_heartbeats(
        client.clone(),
        config.clone(),
        applier.cache.clone(),
        applier.counters.clone(),
    )));
    let js = jetstream::new(client.clone());
    let mut failures = 0u32;
    loop {
        while client.connection_state() != async_nats::connection::State::Connected {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        disconnects.borrow_and_update();
        let messages = match subscribe(&js, &config).await {
            Ok(messages) => messages,
            Err(e) => {
                if failures == 0 {
                    log::warn!(
                        "cannot subscribe to auth events (stream {}): {e}; retrying, the /verify cache stays bypassed",
                        config.stream
                    );
                }
                failures = failures.saturating_add(1);
                actix_web::rt::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        if disconnects.has_changed().unwrap_or(true) {
            continue;
        }
        failures = 0;
        // Events may have been missed before now: start from an empty cache.
        applier.cache.resume();
        let c = &applier.counters;
        c.subscribed.store(true, Ordering::Relaxed);
        let n = c.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
        log::info!(
            "subscribed to auth events on {} (stream {}, subscription {n}): /verify answers are cached until their session ends",
            config.display_url(),
            config.stream
        );
        let why = consume(messages, &js, &config, &mut disconnects, &mut applier).await;
        applier.cache.suspend();
        applier.counters.subscribed.store(false, Ordering::Relaxed);
        log::warn!(
            "auth events interrupted ({why}): the /verify cache is bypassed until subscribed again"
        );
    }
}

/// Connects, retrying until the broker answers. The client reconnects on its own after
/// that; each disconnect is counted in `disconnects`.
async fn connect(
    config: &EventsConfig,
    disconnects: Arc<watch::Sender<u64>>,
) -> async_nats::Client {
    let mut failures = 0u32;
    loop {
        let tx = disconnects.clone();
        let options = async_nats::ConnectOptions::new()
            .name(env!("CARGO_PKG_NAME"))
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                backoff(u32::try_from(attempts).unwrap_or(u32::MAX))
            })
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => tx.send_modify(|n| *n += 1),
                        async_nats::Event::Connected => {
                            log::info!("connected to the events broker")
                        }
                        other => log::warn!("events broker: {other}"),
                    }
                }
            });
        match options.connect(config.servers.clone()).await {
            Ok(client) => return client,
            Err(e) => {
                if failures == 0 {
                    log::warn!(
                        "cannot connect to the events broker at {}: {e}; retrying, the /verify cache stays bypassed",
                        config.display_url()
                    );
                }
                failures = failures.saturating_add(1);
                actix_web::rt::time::sleep(backoff(failures)).await;
            }
        }
    }
}

/// One ordered consumer per session-ending kind, from new messages on, merged.
async fn subscribe(
    js: &jetstream::Context,
    config: &EventsConfig,
) -> Result<SelectAll<Ordered>, String> {
    let stream = js
        .get_stream(&config.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", config.stream))?;
    let mut all = Vec::new();
    for subject in config.subjects() {
        let consumer = stream
            .create_consumer(OrderedConfig {
                description: Some(format!("{} /verify cache", env!("CARGO_PKG_NAME"))),
                filter_subject: subject.clone(),
                deliver_policy: DeliverPolicy::New,
                max_expires: PULL_EXPIRES,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("consumer for {subject}: {e}"))?;
        all.push(
            consumer
                .messages()
                .await
                .map_err(|e| format!("messages of {subject}: {e}"))?,
        );
    }
    Ok(futures_util::stream::select_all(all))
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies events until the subscription is lost; returns why.
async fn consume(
    mut messages: SelectAll<Ordered>,
    js: &jetstream::Context,
    config: &EventsConfig,
    disconnects: &mut watch::Receiver<u64>,
    applier: &mut Applier,
) -> String {
    let (failed_tx, mut probe_failed) = oneshot::channel();
    let _probe = AbortOnDrop(tokio::spawn(probe(
        js.clone(),
        config.stream.clone(),
        failed_tx,
    )));
    loop {
        tokio::select! {
            _ = disconnects.changed() => return "disconnected from the broker".into(),
            why = &mut probe_failed => {
                return why.unwrap_or_else(|_| "the stream check stopped".into());
            }
            message = messages.next() => match message {
                Some(Ok(message)) => {
                    applier.handle(message.subject.as_str(), &message.payload);
                }
                Some(Err(e)) => return format!("consumer failed: {e}"),
                None => return "the consumer ended".into(),
            },
        }
    }
}

/// Listens for the relay's heartbeats (core NATS; the client resubscribes by itself after a
/// reconnect) and keeps the cache in use for the window after each that names this stream.
async fn watch_heartbeats(
    client: async_nats::Client,
    config: EventsConfig,
    cache: CacheInvalidator,
    counters: Arc<Counters>,
) {
    let subject = config.heartbeat_subject();
    let window = config.heartbeat_window;
    let mut failures = 0u32;
    loop {
        let mut heartbeats = match client.subscribe(subject.clone()).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                if failures == 0 {
                    log::warn!(
                        "cannot subscribe to {subject}: {e}; retrying, the /verify cache stays bypassed"
                    );
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        failures = 0;
        let mut heard = false;
        loop {
            tokio::select! {
                message = heartbeats.next() => {
                    let Some(message) = message else { break };
                    match serde_json::from_slice::<Heartbeat>(&message.payload) {
                        Ok(beat) if beat.stream == config.stream => {
                            cache.heartbeat(window);
                            counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                            if !heard {
                                log::info!("heartbeats of the auth service's relay on {subject}: events are published");
                                heard = true;
                            }
                        }
                        Ok(beat) => {
                            if counters.foreign_heartbeats.fetch_add(1, Ordering::Relaxed) == 0 {
                                log::warn!(
                                    "a heartbeat on {subject} names stream {:?}, not {}: ignored (check events.stream on both sides)",
                                    beat.stream.chars().take(64).collect::<String>(),
                                    config.stream
                                );
                            }
                        }
                        Err(_) => {
                            counters.foreign_heartbeats.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ = tokio::time::sleep(window), if heard => {
                    heard = false;
                    cache.forget_if_unused();
                    log::warn!(
                        "no heartbeat of the auth service's relay on {subject} for {}: events may not be published, the /verify cache is bypassed",
                        humantime::format_duration(window)
                    );
                }
            }
        }
    }
}

/// Checks the stream every [`PROBE_EVERY`]; reports the first failure and stops.
async fn probe(js: jetstream::Context, stream: String, failed: oneshot::Sender<String>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let why = match tokio::time::timeout(PROBE_TIMEOUT, js.get_stream(&stream)).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => format!("stream check failed: {e}"),
            Err(_) => "the stream check timed out".into(),
        };
        let _ = failed.send(why);
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{CacheInvalidation, VerifyClient, VerifyConfig};

    #[test]
    fn recent_ids_recognise_repeats_and_stay_bounded() {
        let mut ids = RecentIds::new(3);
        assert!(ids.insert("a"));
        assert!(!ids.insert("a"));
        assert!(ids.insert("b") && ids.insert("c"));
        assert!(!ids.insert("b"));
        assert_eq!(ids.len(), 3);
        // A fourth forgets the oldest: "a" counts as new again, "b" and "c" do not.
        assert!(ids.insert("d"));
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.seen.len(), 3);
        assert!(ids.insert("a"));
        assert!(!ids.insert("c") && !ids.insert("d"));
        let mut many = RecentIds::new(RECENT_IDS);
        for i in 0..RECENT_IDS * 2 {
            assert!(many.insert(&format!("id-{i}")));
        }
        assert_eq!((many.len(), many.seen.len()), (RECENT_IDS, RECENT_IDS));
        assert!(!many.insert(&format!("id-{}", RECENT_IDS * 2 - 1)));
        assert!(many.insert("id-0"));
    }

    fn applier() -> Applier {
        let client = VerifyClient::new(&VerifyConfig {
            url: "http://127.0.0.1:1/verify".into(),
            timeout: Duration::from_secs(1),
            cache_ttl: Duration::from_secs(60),
            invalidation: CacheInvalidation::Events,
            quiet_period: DEFAULT_QUIET_PERIOD,
            client: None,
        })
        .unwrap();
        Applier::new(client.invalidator().unwrap(), Arc::default())
    }

    fn event(id: &str, user: Option<&str>, session: Option<&str>) -> Vec<u8> {
        serde_json::json!({
            "id": id, "kind": "logged_out", "at": 1_764_400_000,
            "user_id": user, "session_id": session, "detail": {"reason": "logout"},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_event_is_applied_once_and_counted() {
        let mut a = applier();
        let subject = "auth.events.logged_out";
        assert_eq!(
            a.handle(subject, &event("e1", Some("u1"), Some("s1"))),
            Outcome::Applied { dropped: 0 }
        );
        assert_eq!(
            a.handle(subject, &event("e1", Some("u1"), Some("s1"))),
            Outcome::Duplicate
        );
        assert_eq!(
            a.handle(subject, &event("e2", None, Some("s1"))),
            Outcome::Applied { dropped: 0 }
        );
        // The user of the first, the session of the third: quiet for a while.
        assert_eq!(a.cache.quiet_ids(), 2);
        let c = &a.counters;
        assert_eq!(c.applied.load(Ordering::Relaxed), 2);
        assert_eq!(c.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(c.unreadable.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_unreadable_event_is_counted_and_not_remembered() {
        let mut a = applier();
        for payload in [
            &b"not json"[..],
            br#"{"kind":"logged_out","user_id":"u1"}"#,
            br#"{"id":"","kind":"logged_out","user_id":"u1"}"#,
        ] {
            assert!(matches!(a.handle("s", payload), Outcome::Unreadable(_)));
        }
        assert_eq!(
            a.handle("s", &event("e3", None, None)),
            Outcome::Unreadable("neither user_id nor session_id")
        );
        // Empty ids are as good as none.
        assert_eq!(
            a.handle("s", &event("e4", Some(""), Some(""))),
            Outcome::Unreadable("neither user_id nor session_id")
        );
        assert_eq!(a.counters.unreadable.load(Ordering::Relaxed), 5);
        assert_eq!(a.counters.applied.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn config_checks_and_subjects() {
        let c = EventsConfig::new("nats://127.0.0.1", "AUTH_EVENTS", "auth.events").unwrap();
        assert_eq!(c.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(c.heartbeat_subject(), "auth.events-heartbeat");
        assert!(!c.heartbeat_subject().starts_with("auth.events."));
        assert_eq!(c.heartbeat_window, DEFAULT_HEARTBEAT_WINDOW);
        assert_eq!(c.subjects().len(), SESSION_ENDING_KINDS.len());
        assert!(c.subjects().iter().all(|s| s.starts_with("auth.events.")));
        let c = EventsConfig::new("nats://u:p@a:1, tls://b:2", "S", "p").unwrap();
        assert_eq!(c.display_url(), "nats://u:<redacted>@a:1,tls://b:2");
        for bad in [
            "http://a:1",
            "a:4222",
            "nats://",
            "nats://a:1/x",
            "nats://a:1,,",
        ] {
            let e = EventsConfig::new(bad, "S", "p").unwrap_err();
            assert!(e.0.starts_with("url:"), "{bad}: {e}");
        }
    }
}
