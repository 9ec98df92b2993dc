//! Typed configuration, loaded once at start-up through the `config` crate: built-in defaults,
//! then an optional TOML file, then `RS__SECTION__KEY` environment variables. Every failure
//! names the offending key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::events::EventsConfig;
use crate::verify::{CacheInvalidation, ClientCredentials, VerifyClient, VerifyConfig};

/// Environment prefix: `RS__AUTH__VERIFY_URL` sets `auth.verify_url`.
pub const ENV_PREFIX: &str = "RS";

/// Longest allowed positive-answer cache lifetime: beyond it, revocations arrive too late.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(60);

/// Longest allowed lifetime with `events.url` set. Session-ending events drop entries at
/// once, so the TTL only bounds what an event that never arrives can cost; still bounded,
/// for a broker that delivers late without looking disconnected.
pub const MAX_CACHE_TTL_WITH_EVENTS: Duration = Duration::from_secs(300);

/// `auth.cache_ttl` when it is not set and `events.url` is: events drop entries at once,
/// so a longer-lived cache saves many more `/verify` round trips at no cost in revocation
/// delay.
pub const DEFAULT_CACHE_TTL_WITH_EVENTS: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct SettingsError(pub String);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub demo: DemoSettings,
    pub events: EventsSettings,
}

/// The auth service's events on NATS JetStream, used to drop kept `/verify` answers the
/// moment their session ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    /// The broker, e.g. `nats://nats:4222` (several: comma-separated); unset (the default)
    /// turns the consumer off.
    #[serde(default)]
    pub url: Option<String>,
    /// The JetStream stream the auth service publishes into.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<kind>`; the relay's heartbeats come on
    /// `<subject_prefix>-heartbeat`.
    pub subject_prefix: String,
    /// For this long after an event, no answer for its user (or session) is kept: another
    /// auth replica may not have applied the revocation yet. At least the auth service's
    /// `revocation.poll_interval`; `0s` only with a single auth replica.
    #[serde(with = "humantime_serde")]
    pub quiet_period: Duration,
    /// The cache is used only while a heartbeat of the auth service's relay arrived within
    /// this window (they come every 2 s while events are published).
    #[serde(with = "humantime_serde")]
    pub heartbeat_window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    /// The auth service's public URL as browsers reach it, for the demo page at `GET /`
    /// (served to it by `GET /demo/config.json`, and named in its Content-Security-Policy).
    pub auth_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address, e.g. `0.0.0.0:8090` in a container.
    pub addr: String,
    /// Worker threads; unset means one per CPU.
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The auth service's internal `/verify` endpoint.
    pub verify_url: String,
    /// Upper bound for one verification; past it the request is refused with 503.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Reuse a positive answer for this long; `0s` turns the cache off. Unset: off, or
    /// [`DEFAULT_CACHE_TTL_WITH_EVENTS`] with `events.url` set (see
    /// [`Settings::cache_ttl`]).
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    /// This service's client id, for an auth service with `verify.require_client` on.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret, inline; or
    #[serde(default)]
    pub client_secret: Option<Redacted>,
    /// from a file (surrounding whitespace dropped), e.g. a Docker secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
}

/// A setting that is a secret: `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the configuration comes from; tests pass their own environment map.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: HashMap<String, String>,
}

impl Sources {
    pub fn process(file: Option<PathBuf>) -> Sources {
        Sources {
            file: file.or_else(|| std::env::var_os("RS_CONFIG").map(PathBuf::from)),
            env: std::env::vars().collect(),
        }
    }
}

fn defaults() -> Vec<(&'static str, config::Value)> {
    vec![
        ("server.addr", "127.0.0.1:8090".into()),
        ("auth.verify_url", "http://127.0.0.1:8081/verify".into()),
        ("auth.timeout", "2s".into()),
        ("demo.auth_url", "http://127.0.0.1:8080".into()),
        ("events.stream", "AUTH_EVENTS".into()),
        ("events.subject_prefix", "auth.events".into()),
        ("events.quiet_period", "10s".into()),
        ("events.heartbeat_window", "10s".into()),
    ]
}

/// The mark of `deploy/.env.example`'s placeholders (`change-me-to-another-long-random-value`):
/// such a secret is known to everyone who has read the file, so it is refused.
const PLACEHOLDER_MARK: &str = "change-me";

impl Settings {
    pub fn load(sources: &Sources) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder();
        for (key, value) in defaults() {
            builder = builder
                .set_default(key, value)
                .map_err(|e| SettingsError(format!("{key}: {e}")))?;
        }
        if let Some(file) = &sources.file {
            if !file.exists() {
                return Err(SettingsError(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            builder = builder.add_source(config::File::from(file.as_path()).required(true));
        }
        let prefix = format!("{ENV_PREFIX}__");
        let env: HashMap<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                // `RS__EVENTS__URL=` (as compose writes an unset `${VAR:-}`) means "not set",
                // as the auth service reads it.
                .ignore_empty(true)
                .source(Some(env)),
        );
        let settings: Settings = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let err = |key: &str, msg: &str| Err(SettingsError(format!("{key}: {msg}")));
        if self.server.addr.parse::<std::net::SocketAddr>().is_err() {
            return err("server.addr", "must be an address like 127.0.0.1:8090");
        }
        if self.server.workers == Some(0) {
            return err("server.workers", "must be at least 1");
        }
        let t = self.auth.timeout;
        if t < Duration::from_millis(10) || t > Duration::from_secs(60) {
            return err("auth.timeout", "must be between 10ms and 60s");
        }
        if self.events.url.is_some() {
            if self.cache_ttl() > MAX_CACHE_TTL_WITH_EVENTS {
                return err(
                    "auth.cache_ttl",
                    "must be at most 5m with events.url set (60s without)",
                );
            }
        } else if self.cache_ttl() > MAX_CACHE_TTL {
            return err(
                "auth.cache_ttl",
                "must be at most 60s (a cached answer outlives a logout by that much; \
                 set events.url to drop it at the logout instead)",
            );
        }
        if self.events.quiet_period > Duration::from_secs(300) {
            return err("events.quiet_period", "must be at most 5m");
        }
        let w = self.events.heartbeat_window;
        if w < Duration::from_secs(3) || w > Duration::from_secs(300) {
            return err(
                "events.heartbeat_window",
                "must be between 3s and 5m (the auth service sends a heartbeat every 2s)",
            );
        }
        let events_err = |e: crate::events::ConfigError| SettingsError(format!("events.{e}"));
        crate::events::check_stream_name(&self.events.stream).map_err(events_err)?;
        crate::events::check_subject_prefix(&self.events.subject_prefix).map_err(events_err)?;
        self.events_config().map_err(events_err)?;
        if crate::demo::origin_of(&self.demo.auth_url).is_none() {
            return err(
                "demo.auth_url",
                "must be an http:// or https:// URL such as http://127.0.0.1:8080",
            );
        }
        self.verify_client()?;
        Ok(())
    }

    /// The client credentials, read from `auth.client_secret_file` when that is the source.
    fn client_credentials(&self) -> Result<Option<ClientCredentials>, SettingsError> {
        let a = &self.auth;
        let err = |key: &str, msg: String| Err(SettingsError(format!("{key}: {msg}")));
        let secret = match (&a.client_secret, &a.client_secret_file) {
            (Some(_), Some(_)) => {
                return err(
                    "auth.client_secret",
                    "set it or auth.client_secret_file, not both".into(),
                );
            }
            (Some(s), None) => Some(s.0.trim().to_string()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(s) => Some(s.trim().to_string()),
                Err(e) => {
                    return err(
                        "auth.client_secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                }
            },
            (None, None) => None,
        };
        if let Some(s) = &secret
            && s.to_ascii_lowercase().contains(PLACEHOLDER_MARK)
        {
            return err(
                "auth.client_secret",
                format!(
                    "still the placeholder from deploy/.env.example (it contains \
                     \"{PLACEHOLDER_MARK}\"): set the secret registered for this service"
                ),
            );
        }
        match (&a.client_id, secret) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(Some(ClientCredentials {
                    id: id.clone(),
                    secret,
                }))
            }
            (Some(id), Some(_)) if id.is_empty() => {
                err("auth.client_id", "must not be empty".into())
            }
            (Some(_), _) => err(
                "auth.client_secret",
                "auth.client_id is set: give its secret (or auth.client_secret_file)".into(),
            ),
            (None, Some(_)) => err(
                "auth.client_id",
                "a client secret is set: give the client id it belongs to".into(),
            ),
        }
    }

    /// The positive-answer cache's lifetime: `auth.cache_ttl`, else off without events
    /// and [`DEFAULT_CACHE_TTL_WITH_EVENTS`] with them.
    pub fn cache_ttl(&self) -> Duration {
        match (self.auth.cache_ttl, &self.events.url) {
            (Some(ttl), _) => ttl,
            (None, Some(_)) => DEFAULT_CACHE_TTL_WITH_EVENTS,
            (None, None) => Duration::ZERO,
        }
    }

    /// The events consumer's settings, when `events.url` is set; errors name the key
    /// below `events.`.
    pub fn events_config(&self) -> Result<Option<EventsConfig>, crate::events::ConfigError> {
        self.events
            .url
            .as_ref()
            .map(|url| {
                EventsConfig::new(url, &self.events.stream, &self.events.subject_prefix)
                    .map(|c| c.with_heartbeat_window(self.events.heartbeat_window))
            })
            .transpose()
    }

    pub fn verify_config(&self) -> Result<VerifyConfig, SettingsError> {
        Ok(VerifyConfig {
            url: self.auth.verify_url.clone(),
            timeout: self.auth.timeout,
            cache_ttl: self.cache_ttl(),
            invalidation: if self.events.url.is_some() {
                CacheInvalidation::Events
            } else {
                CacheInvalidation::TtlOnly
            },
            quiet_period: self.events.quiet_period,
            client: self.client_credentials()?,
        })
    }

    /// The client for `/verify`; errors name the `auth.*` key.
    pub fn verify_client(&self) -> Result<VerifyClient, SettingsError> {
        VerifyClient::new(&self.verify_config()?).map_err(|e| SettingsError(format!("auth.{e}")))
    }

    /// The effective configuration, one `key = value` line per setting.
    pub fn summary(&self) -> String {
        let dur = |d: Duration| humantime::format_duration(d).to_string();
        [
            ("server.addr", format!("{:?}", self.server.addr)),
            (
                "server.workers",
                self.server
                    .workers
                    .map_or_else(|| "<one per CPU>".into(), |w| w.to_string()),
            ),
            ("auth.verify_url", format!("{:?}", self.auth.verify_url)),
            ("auth.timeout", dur(self.auth.timeout)),
            ("demo.auth_url", format!("{:?}", self.demo.auth_url)),
            (
                "auth.client_id",
                self.auth
                    .client_id
                    .as_ref()
                    .map_or_else(|| "<unset>".into(), |id| format!("{id:?}")),
            ),
            (
                "auth.client_secret",
                if self.auth.client_secret.is_some() || self.auth.client_secret_file.is_some() {
                    "<redacted>".into()
                } else {
                    "<unset>".into()
                },
            ),
            (
                "auth.cache_ttl",
                match (self.cache_ttl(), &self.events.url) {
                    (ttl, _) if ttl.is_zero() => "0s (off)".into(),
                    (ttl, Some(_)) => format!("{} (entries also dropped by events)", dur(ttl)),
                    (ttl, None) => dur(ttl),
                },
            ),
            (
                "events.url",
                match self.events_config() {
                    Ok(Some(events)) => format!("{:?}", events.display_url()),
                    Ok(None) | Err(_) => "<unset> (off)".into(),
                },
            ),
            ("events.stream", format!("{:?}", self.events.stream)),
            (
                "events.subject_prefix",
                format!("{:?}", self.events.subject_prefix),
            ),
            ("events.quiet_period", dur(self.events.quiet_period)),
            ("events.heartbeat_window", dur(self.events.heartbeat_window)),
        ]
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::load(&Sources {
            file: None,
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn defaults() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.addr, "127.0.0.1:8090");
        assert_eq!(s.auth.verify_url, "http://127.0.0.1:8081/verify");
        assert_eq!(s.auth.timeout, Duration::from_secs(2));
        assert_eq!(s.auth.cache_ttl, None);
        assert!(s.cache_ttl().is_zero());
        assert!(s.verify_config().unwrap().client.is_none());
        assert_eq!(
            s.verify_config().unwrap().invalidation,
            CacheInvalidation::TtlOnly
        );
        assert!(s.events_config().unwrap().is_none());
        assert_eq!(s.events.stream, "AUTH_EVENTS");
        assert_eq!(s.events.subject_prefix, "auth.events");
        let summary = s.summary();
        for line in [
            "auth.cache_ttl = 0s (off)",
            "events.url = <unset> (off)",
            "events.stream = \"AUTH_EVENTS\"",
            "events.subject_prefix = \"auth.events\"",
            "events.quiet_period = 10s",
            "events.heartbeat_window = 10s",
        ] {
            assert!(summary.contains(line), "{line} missing in:\n{summary}");
        }
        assert_eq!(s.demo.auth_url, "http://127.0.0.1:8080");
        assert!(
            s.summary()
                .contains("demo.auth_url = \"http://127.0.0.1:8080\"")
        );
    }

    #[test]
    fn client_credentials_come_in_pairs_and_from_a_file() {
        let dir = std::env::temp_dir().join(format!("rs-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "file-secret\n").unwrap();
        let file = file.to_str().unwrap();
        let s = load(&[
            ("RS__AUTH__CLIENT_ID", "posts-api"),
            ("RS__AUTH__CLIENT_SECRET_FILE", file),
        ])
        .unwrap();
        let c = s.verify_config().unwrap().client.unwrap();
        assert_eq!(
            (c.id.as_str(), c.secret.as_str()),
            ("posts-api", "file-secret")
        );
        assert!(!format!("{c:?}").contains("file-secret"));
        assert!(!s.summary().contains("file-secret"));
        let s = load(&[
            ("RS__AUTH__CLIENT_ID", "posts-api"),
            ("RS__AUTH__CLIENT_SECRET", "inline"),
        ])
        .unwrap();
        assert_eq!(s.verify_config().unwrap().client.unwrap().secret, "inline");
        assert!(!s.summary().contains("inline"));
        assert!(!format!("{s:?}").contains("inline"));
        for (pairs, key) in [
            (
                vec![("RS__AUTH__CLIENT_ID", "posts-api")],
                "auth.client_secret",
            ),
            (vec![("RS__AUTH__CLIENT_SECRET", "s")], "auth.client_id"),
            (
                vec![
                    ("RS__AUTH__CLIENT_ID", "a"),
                    ("RS__AUTH__CLIENT_SECRET", "s"),
                    ("RS__AUTH__CLIENT_SECRET_FILE", file),
                ],
                "auth.client_secret",
            ),
            (
                vec![
                    ("RS__AUTH__CLIENT_ID", "a"),
                    ("RS__AUTH__CLIENT_SECRET_FILE", "/nonexistent/secret"),
                ],
                "auth.client_secret_file",
            ),
            // deploy/.env.example's value, as it ships (and in another case).
            (
                vec![
                    ("RS__AUTH__CLIENT_ID", "a"),
                    (
                        "RS__AUTH__CLIENT_SECRET",
                        "change-me-to-another-long-random-value",
                    ),
                ],
                "auth.client_secret: still the placeholder",
            ),
            (
                vec![
                    ("RS__AUTH__CLIENT_ID", "a"),
                    (
                        "RS__AUTH__CLIENT_SECRET",
                        "0123456789abcdef-CHANGE-ME-0123456789",
                    ),
                ],
                "auth.client_secret: still the placeholder",
            ),
        ] {
            let e = load(&pairs).unwrap_err().to_string();
            assert!(e.contains(key), "{pairs:?}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn environment_overrides() {
        let s = load(&[
            ("RS__SERVER__ADDR", "0.0.0.0:9000"),
            ("RS__AUTH__VERIFY_URL", "http://auth-service:8081/verify"),
            ("RS__AUTH__TIMEOUT", "500ms"),
            ("RS__AUTH__CACHE_TTL", "5s"),
            ("AUTH__SERVER__PUBLIC_ADDR", "ignored: not ours"),
        ])
        .unwrap();
        assert_eq!(s.server.addr, "0.0.0.0:9000");
        assert_eq!(s.auth.verify_url, "http://auth-service:8081/verify");
        assert_eq!(s.auth.timeout, Duration::from_millis(500));
        assert_eq!(s.cache_ttl(), Duration::from_secs(5));
    }

    #[test]
    fn events_lengthen_the_default_cache_and_allow_a_longer_one() {
        let url = ("RS__EVENTS__URL", "nats://nats:4222");
        let s = load(&[url]).unwrap();
        assert_eq!(s.cache_ttl(), DEFAULT_CACHE_TTL_WITH_EVENTS);
        let v = s.verify_config().unwrap();
        assert_eq!(v.invalidation, CacheInvalidation::Events);
        assert_eq!(v.cache_ttl, Duration::from_secs(30));
        assert_eq!(v.quiet_period, Duration::from_secs(10));
        let s2 = load(&[
            url,
            ("RS__EVENTS__QUIET_PERIOD", "6s"),
            ("RS__EVENTS__HEARTBEAT_WINDOW", "20s"),
        ])
        .unwrap();
        assert_eq!(
            s2.verify_config().unwrap().quiet_period,
            Duration::from_secs(6)
        );
        assert!(format!("{:?}", s2.events_config().unwrap().unwrap()).contains("20s"));
        assert!(s2.summary().contains("events.heartbeat_window = 20s"));
        let events = s.events_config().unwrap().unwrap();
        assert_eq!(events.stream(), "AUTH_EVENTS");
        assert_eq!(
            events.subjects(),
            [
                "auth.events.refresh_token_reused",
                "auth.events.logged_out",
                "auth.events.logged_out_all",
                "auth.events.session_revoked",
                "auth.events.password_changed",
                "auth.events.role_revoked",
                "auth.events.user_disabled",
            ]
        );
        assert!(
            s.summary()
                .contains("auth.cache_ttl = 30s (entries also dropped by events)")
        );
        assert!(s.summary().contains("events.url = \"nats://nats:4222\""));
        // Longer than without events, and still bounded; 0s still turns the cache off.
        let s = load(&[url, ("RS__AUTH__CACHE_TTL", "5m")]).unwrap();
        assert_eq!(s.cache_ttl(), Duration::from_secs(300));
        let e = load(&[url, ("RS__AUTH__CACHE_TTL", "301s")]).unwrap_err();
        assert!(e.to_string().contains("auth.cache_ttl"), "{e}");
        let s = load(&[url, ("RS__AUTH__CACHE_TTL", "0s")]).unwrap();
        assert!(s.cache_ttl().is_zero());
        assert!(s.summary().contains("auth.cache_ttl = 0s (off)"));
        let s = load(&[
            ("RS__EVENTS__URL", "nats://a:4222, tls://b:4222"),
            ("RS__EVENTS__STREAM", "AUTH_EVENTS_2"),
            ("RS__EVENTS__SUBJECT_PREFIX", "prod.auth"),
        ])
        .unwrap();
        let events = s.events_config().unwrap().unwrap();
        assert_eq!(events.subjects()[0], "prod.auth.refresh_token_reused");
    }

    #[test]
    fn a_broker_password_is_never_shown() {
        let s = load(&[("RS__EVENTS__URL", "nats://posts:hunter2secret@nats:4222")]).unwrap();
        let summary = s.summary();
        assert!(!summary.contains("hunter2secret"), "{summary}");
        assert!(
            summary.contains("events.url = \"nats://posts:<redacted>@nats:4222\""),
            "{summary}"
        );
        let events = s.events_config().unwrap().unwrap();
        assert!(!format!("{events:?}").contains("hunter2secret"));
    }

    /// Compose writes an unset `${VAR:-}` as an empty variable: that is "not set".
    #[test]
    fn an_empty_variable_is_unset() {
        let s = load(&[
            ("RS__EVENTS__URL", ""),
            ("RS__EVENTS__STREAM", ""),
            ("RS__AUTH__CACHE_TTL", ""),
        ])
        .unwrap();
        assert!(s.events.url.is_none());
        assert_eq!(s.events.stream, "AUTH_EVENTS");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, value, expect) in [
            ("RS__SERVER__ADDR", "nowhere", "server.addr"),
            ("RS__AUTH__TIMEOUT", "soon", "timeout"),
            ("RS__AUTH__TIMEOUT", "0s", "auth.timeout"),
            ("RS__AUTH__CACHE_TTL", "10m", "auth.cache_ttl"),
            (
                "RS__AUTH__VERIFY_URL",
                "https://auth/verify",
                "auth.verify_url",
            ),
            ("RS__AUTH__VERIFY_URL", "auth:8081", "auth.verify_url"),
            ("RS__AUTH__VERIFY_URLL", "http://x/verify", "verify_urll"),
            ("RS__DEMO__AUTH_URL", "auth.example.com", "demo.auth_url"),
            ("RS__DEMO__AUTH_URL", "https://", "demo.auth_url"),
            ("RS__DEMO__AUTH_URL", "https://a b", "demo.auth_url"),
            ("RS__EVENTS__URL", "http://nats:4222", "events.url"),
            ("RS__EVENTS__URL", "nats:4222", "events.url"),
            ("RS__EVENTS__URL", "nats://", "events.url"),
            ("RS__EVENTS__URL", "nats://a:4222,", "events.url"),
            ("RS__EVENTS__URL", "nats://a:4222/path?q=1", "events.url"),
            ("RS__EVENTS__URLL", "nats://a:4222", "urll"),
            ("RS__EVENTS__QUIET_PERIOD", "6m", "events.quiet_period"),
            ("RS__EVENTS__QUIET_PERIOD", "soon", "quiet_period"),
            (
                "RS__EVENTS__HEARTBEAT_WINDOW",
                "2s",
                "events.heartbeat_window",
            ),
            (
                "RS__EVENTS__HEARTBEAT_WINDOW",
                "6m",
                "events.heartbeat_window",
            ),
        ] {
            let e = load(&[(key, value)]).unwrap_err();
            assert!(e.to_string().contains(expect), "{key}={value}: {e}");
        }
        let url = ("RS__EVENTS__URL", "nats://nats:4222");
        for (key, value, expect) in [
            ("RS__EVENTS__STREAM", "AUTH.EVENTS", "events.stream"),
            ("RS__EVENTS__STREAM", "AUTH EVENTS", "events.stream"),
            ("RS__EVENTS__STREAM", "AUTH>", "events.stream"),
            (
                "RS__EVENTS__SUBJECT_PREFIX",
                "auth..events",
                "events.subject_prefix",
            ),
            (
                "RS__EVENTS__SUBJECT_PREFIX",
                "auth.*",
                "events.subject_prefix",
            ),
            (
                "RS__EVENTS__SUBJECT_PREFIX",
                "auth.>",
                "events.subject_prefix",
            ),
            (
                "RS__EVENTS__SUBJECT_PREFIX",
                "auth events",
                "events.subject_prefix",
            ),
            (
                "RS__EVENTS__SUBJECT_PREFIX",
                ".auth",
                "events.subject_prefix",
            ),
        ] {
            let e = load(&[url, (key, value)]).unwrap_err();
            assert!(e.to_string().contains(expect), "{key}={value}: {e}");
        }
        // Checked even while events are off, so a typo shows before it is turned on.
        for (key, value, expect) in [
            ("RS__EVENTS__STREAM", "A.B", "events.stream"),
            (
                "RS__EVENTS__SUBJECT_PREFIX",
                "a..b",
                "events.subject_prefix",
            ),
        ] {
            let e = load(&[(key, value)]).unwrap_err();
            assert!(e.to_string().contains(expect), "{key}={value}: {e}");
        }
    }
}
