//! Typed configuration: built-in defaults, then an optional TOML file, then the environment.
//!
//! Loaded once at start-up and validated; every failure names the offending key.
//! Secrets are held in `SecretString` so that neither `Debug` nor `check-config` prints them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Environment prefix: `AUTH__TOKENS__ACCESS_TTL` sets `tokens.access_ttl`.
pub const ENV_PREFIX: &str = "AUTH";

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct SettingsError(pub String);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directory for the SQLite database and generated keys.
    pub data_dir: PathBuf,
    pub database: DatabaseSettings,
    pub server: ServerSettings,
    pub tokens: TokenSettings,
    pub keys: KeySettings,
    pub password: PasswordSettings,
    pub retention: RetentionSettings,
    pub revocation: RevocationSettings,
    pub login: LoginSettings,
    pub register: RegisterSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSettings {
    /// Registrations from one address within `window` (each costs a password hash); 0 means
    /// no limit.
    pub max_per_ip: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    /// Failed attempts for one account from one address within `failure_window` before
    /// further attempts are refused with 429.
    pub max_failures: u32,
    /// Failed attempts from one address (any account) within `failure_window`.
    pub max_failures_per_ip: u32,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Audit rows older than this are deleted by `prune`.
    #[serde(with = "humantime_serde")]
    pub audit_max_age: Duration,
    /// How often the server prunes by itself.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows deleted per statement, so a large table is never locked for long.
    pub batch_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationSettings {
    /// How often the revocation index picks up revocations made elsewhere (other instances,
    /// the command line) from the database.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH`, `sqlite::memory:` or `postgres://…`. Unset: a SQLite file in `data_dir`.
    pub url: Option<SecretString>,
    pub pool_size: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a SQLite connection waits for a lock before giving up.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub public_addr: String,
    pub internal_addr: String,
    /// Worker threads per listener; unset means one per CPU.
    pub workers: Option<usize>,
    /// Reverse proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For`
    /// is believed. Empty: the client address is the TCP peer.
    pub trusted_proxies: String,
}

impl ServerSettings {
    /// `server.trusted_proxies` parsed; a plain address is a one-address range.
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// Idle lifetime of a refresh token; every rotation issues a fresh one.
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    /// Absolute lifetime of a session regardless of rotation; unset means no cap.
    #[serde(default, with = "humantime_serde")]
    pub session_ttl: Option<Duration>,
    /// How long the just-rotated parent may be presented again and get the same child.
    #[serde(with = "humantime_serde")]
    pub reuse_grace: Duration,
    /// Clock-skew allowance on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    pub issuer: String,
    pub audience: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    EdDSA,
    ES256,
    HS256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::HS256 => "HS256",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Algorithm of the access-token signing key.
    pub algorithm: SigningAlgorithm,
    /// Active signing key: PKCS#8 PEM (EdDSA, ES256) or a secret of at least 32 bytes (HS256).
    pub signing_key: Option<SecretString>,
    pub signing_key_file: Option<PathBuf>,
    /// Key id of the active key; derived from the key when unset.
    pub kid: Option<String>,
    /// Further keys accepted for verification only (keys being rotated out).
    #[serde(default)]
    pub verification_keys: Vec<VerificationKeySettings>,
    /// HMAC secret for refresh tokens (at least 32 bytes); never leaves the service.
    pub refresh_secret: Option<SecretString>,
    pub refresh_secret_file: Option<PathBuf>,
    /// Where generated keys are kept; defaults to `<data_dir>/keys`.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationKeySettings {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    /// Public key PEM (EdDSA, ES256) or the secret (HS256).
    pub key: Option<SecretString>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    /// Argon2id memory cost in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// How many hashes may run at once; unset means one per CPU.
    pub max_concurrent: Option<usize>,
}

/// Where the configuration comes from. `Sources::process()` is what the binary uses;
/// tests pass their own environment map so the process environment never leaks in.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: HashMap<String, String>,
}

impl Sources {
    pub fn process(file: Option<PathBuf>) -> Self {
        let file = file.or_else(|| std::env::var_os("AUTH_CONFIG").map(PathBuf::from));
        Sources {
            file,
            env: std::env::vars().collect(),
        }
    }
}

fn defaults() -> Vec<(&'static str, config::Value)> {
    vec![
        ("data_dir", "./data".into()),
        ("database.pool_size", 10i64.into()),
        ("database.connect_timeout", "3s".into()),
        ("database.busy_timeout", "5s".into()),
        ("server.public_addr", "127.0.0.1:8080".into()),
        ("server.internal_addr", "127.0.0.1:8081".into()),
        ("server.trusted_proxies", "".into()),
        ("tokens.access_ttl", "5m".into()),
        ("tokens.refresh_ttl", "90d".into()),
        ("tokens.reuse_grace", "10s".into()),
        ("tokens.leeway", "2s".into()),
        ("tokens.issuer", "auth-service".into()),
        ("tokens.audience", "resource-servers".into()),
        ("keys.algorithm", "EdDSA".into()),
        ("password.memory_kib", 19456i64.into()),
        ("password.iterations", 2i64.into()),
        ("password.parallelism", 1i64.into()),
        ("retention.audit_max_age", "90d".into()),
        ("retention.interval", "1h".into()),
        ("retention.batch_size", 1000i64.into()),
        ("revocation.poll_interval", "5s".into()),
        ("login.max_failures", 10i64.into()),
        ("login.max_failures_per_ip", 100i64.into()),
        ("login.failure_window", "15m".into()),
        ("register.max_per_ip", 20i64.into()),
        ("register.window", "1h".into()),
    ]
}

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
        let prefixed: HashMap<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                // `AUTH__KEYS__SIGNING_KEY=` (as compose writes an unset `${VAR:-}`) means
                // "not set", not "set to the empty string".
                .ignore_empty(true)
                .source(Some(prefixed.clone())),
        );
        // DATABASE_URL is the conventional alias; the explicit AUTH__DATABASE__URL wins.
        let explicit_url = prefixed
            .get("AUTH__DATABASE__URL")
            .is_some_and(|v| !v.is_empty());
        if !explicit_url
            && let Some(url) = sources.env.get("DATABASE_URL").filter(|v| !v.is_empty())
        {
            builder = builder
                .set_override("database.url", url.clone())
                .map_err(|e| SettingsError(format!("database.url: {e}")))?;
        }
        let raw = builder.build().map_err(|e| SettingsError(e.to_string()))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let err = |key: &str, msg: &str| Err(SettingsError(format!("{key}: {msg}")));
        let t = &self.tokens;
        if t.access_ttl < Duration::from_secs(1) || t.access_ttl > Duration::from_secs(86_400) {
            return err("tokens.access_ttl", "must be between 1s and 1d");
        }
        if t.refresh_ttl <= t.access_ttl {
            return err(
                "tokens.refresh_ttl",
                "must be longer than tokens.access_ttl",
            );
        }
        if t.session_ttl.is_some_and(|s| s < Duration::from_secs(1)) {
            return err("tokens.session_ttl", "must be at least 1s");
        }
        if t.reuse_grace > Duration::from_secs(300) {
            return err("tokens.reuse_grace", "must be at most 5m");
        }
        if t.leeway > Duration::from_secs(60) {
            return err("tokens.leeway", "must be at most 60s");
        }
        if t.issuer.trim().is_empty() {
            return err("tokens.issuer", "must not be empty");
        }
        if t.audience.trim().is_empty() {
            return err("tokens.audience", "must not be empty");
        }
        for (key, addr) in [
            ("server.public_addr", &self.server.public_addr),
            ("server.internal_addr", &self.server.internal_addr),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return err(key, "must be an address like 127.0.0.1:8080");
            }
        }
        if let Err(e) = self.server.trusted_proxies() {
            return err("server.trusted_proxies", &e);
        }
        if self.server.workers == Some(0) {
            return err("server.workers", "must be at least 1");
        }
        if self.retention.batch_size == 0 {
            return err("retention.batch_size", "must be at least 1");
        }
        if self.retention.interval < Duration::from_secs(1) {
            return err("retention.interval", "must be at least 1s");
        }
        if self.revocation.poll_interval < Duration::from_millis(100) {
            return err("revocation.poll_interval", "must be at least 100ms");
        }
        if self.login.max_failures == 0 {
            return err("login.max_failures", "must be at least 1");
        }
        if self.login.max_failures_per_ip == 0 {
            return err("login.max_failures_per_ip", "must be at least 1");
        }
        if self.login.failure_window < Duration::from_secs(1) {
            return err("login.failure_window", "must be at least 1s");
        }
        if self.register.window < Duration::from_secs(1) {
            return err("register.window", "must be at least 1s");
        }
        if self.database.pool_size == 0 {
            return err("database.pool_size", "must be at least 1");
        }
        let p = &self.password;
        if p.memory_kib < 8 * p.parallelism.max(1) {
            return err("password.memory_kib", "must be at least 8 × parallelism");
        }
        if p.iterations == 0 {
            return err("password.iterations", "must be at least 1");
        }
        if p.parallelism == 0 {
            return err("password.parallelism", "must be at least 1");
        }
        if p.max_concurrent == Some(0) {
            return err("password.max_concurrent", "must be at least 1");
        }
        if self.keys.signing_key.is_some() && self.keys.signing_key_file.is_some() {
            return err(
                "keys.signing_key",
                "set either keys.signing_key or keys.signing_key_file, not both",
            );
        }
        if self.keys.refresh_secret.is_some() && self.keys.refresh_secret_file.is_some() {
            return err(
                "keys.refresh_secret",
                "set either keys.refresh_secret or keys.refresh_secret_file, not both",
            );
        }
        crate::db::DatabaseUrl::parse(&self.database_url())?;
        Ok(())
    }

    /// The effective database URL (a SQLite file under `data_dir` when none is set).
    pub fn database_url(&self) -> SecretString {
        match &self.database.url {
            Some(url) => url.clone(),
            None => SecretString::from(format!(
                "sqlite://{}",
                self.data_dir.join("auth.db").display()
            )),
        }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// The effective configuration as TOML-like lines, with every secret redacted.
    pub fn redacted_summary(&self) -> String {
        fn secret(s: &Option<SecretString>) -> &'static str {
            if s.is_some() { "<redacted>" } else { "<unset>" }
        }
        fn opt_path(p: &Option<PathBuf>) -> String {
            p.as_ref()
                .map(|p| format!("{:?}", p.display().to_string()))
                .unwrap_or_else(|| "<unset>".into())
        }
        fn dur(d: Duration) -> String {
            humantime::format_duration(d).to_string()
        }
        let db_url = redact_url(self.database_url().expose_secret());
        let mut out = String::new();
        let mut line = |k: &str, v: String| {
            out.push_str(k);
            out.push_str(" = ");
            out.push_str(&v);
            out.push('\n');
        };
        line(
            "data_dir",
            format!("{:?}", self.data_dir.display().to_string()),
        );
        line("database.url", format!("{db_url:?}"));
        line("database.pool_size", self.database.pool_size.to_string());
        line(
            "database.connect_timeout",
            dur(self.database.connect_timeout),
        );
        line("database.busy_timeout", dur(self.database.busy_timeout));
        line(
            "server.public_addr",
            format!("{:?}", self.server.public_addr),
        );
        line(
            "server.internal_addr",
            format!("{:?}", self.server.internal_addr),
        );
        line(
            "server.workers",
            self.server
                .workers
                .map(|w| w.to_string())
                .unwrap_or_else(|| "<one per CPU>".into()),
        );
        line(
            "server.trusted_proxies",
            format!("{:?}", self.server.trusted_proxies),
        );
        line("tokens.access_ttl", dur(self.tokens.access_ttl));
        line("tokens.refresh_ttl", dur(self.tokens.refresh_ttl));
        line(
            "tokens.session_ttl",
            self.tokens
                .session_ttl
                .map(dur)
                .unwrap_or_else(|| "<unset>".into()),
        );
        line("tokens.reuse_grace", dur(self.tokens.reuse_grace));
        line("tokens.leeway", dur(self.tokens.leeway));
        line("tokens.issuer", format!("{:?}", self.tokens.issuer));
        line("tokens.audience", format!("{:?}", self.tokens.audience));
        line(
            "keys.algorithm",
            format!("{:?}", self.keys.algorithm.as_str()),
        );
        line("keys.signing_key", secret(&self.keys.signing_key).into());
        line(
            "keys.signing_key_file",
            opt_path(&self.keys.signing_key_file),
        );
        line(
            "keys.kid",
            self.keys
                .kid
                .clone()
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|| "<derived from the key>".into()),
        );
        line(
            "keys.verification_keys",
            format!(
                "[{}]",
                self.keys
                    .verification_keys
                    .iter()
                    .map(|k| format!("{:?}", k.kid))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        line(
            "keys.refresh_secret",
            secret(&self.keys.refresh_secret).into(),
        );
        line(
            "keys.refresh_secret_file",
            opt_path(&self.keys.refresh_secret_file),
        );
        line(
            "keys.dir",
            format!("{:?}", self.keys_dir().display().to_string()),
        );
        line("password.memory_kib", self.password.memory_kib.to_string());
        line("password.iterations", self.password.iterations.to_string());
        line(
            "password.parallelism",
            self.password.parallelism.to_string(),
        );
        line(
            "password.max_concurrent",
            self.password
                .max_concurrent
                .map(|w| w.to_string())
                .unwrap_or_else(|| "<one per CPU>".into()),
        );
        line("retention.audit_max_age", dur(self.retention.audit_max_age));
        line("retention.interval", dur(self.retention.interval));
        line(
            "retention.batch_size",
            self.retention.batch_size.to_string(),
        );
        line(
            "revocation.poll_interval",
            dur(self.revocation.poll_interval),
        );
        line("login.max_failures", self.login.max_failures.to_string());
        line(
            "login.max_failures_per_ip",
            self.login.max_failures_per_ip.to_string(),
        );
        line("login.failure_window", dur(self.login.failure_window));
        line("register.max_per_ip", self.register.max_per_ip.to_string());
        line("register.window", dur(self.register.window));
        out
    }
}

/// Replaces the password part of a URL (`postgres://user:secret@host`) with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{}://{}@{}", &url[..scheme_end], masked, &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// Reads a secret from a file, trimming the trailing newline editors add.
pub fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError(format!("{key}: cannot read {}: {e}", path.display())))?;
    Ok(SecretString::from(text.trim_end().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            file: None,
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn defaults_load() {
        let s = Settings::load(&env(&[])).unwrap();
        assert_eq!(s.tokens.access_ttl, Duration::from_secs(300));
        assert_eq!(s.tokens.refresh_ttl, Duration::from_secs(90 * 86_400));
        assert_eq!(s.tokens.reuse_grace, Duration::from_secs(10));
        assert_eq!(s.server.public_addr, "127.0.0.1:8080");
        assert_eq!(s.server.internal_addr, "127.0.0.1:8081");
        assert_eq!(s.keys.algorithm, SigningAlgorithm::EdDSA);
        assert!(s.database_url().expose_secret().starts_with("sqlite://"));
    }

    #[test]
    fn environment_overrides_and_alias() {
        let s = Settings::load(&env(&[
            ("AUTH__TOKENS__ACCESS_TTL", "3s"),
            ("AUTH__PASSWORD__MEMORY_KIB", "1024"),
            ("DATABASE_URL", "postgres://u:p@db/auth"),
        ]))
        .unwrap();
        assert_eq!(s.tokens.access_ttl, Duration::from_secs(3));
        assert_eq!(s.password.memory_kib, 1024);
        assert_eq!(s.database_url().expose_secret(), "postgres://u:p@db/auth");

        let s = Settings::load(&env(&[
            ("AUTH__DATABASE__URL", "sqlite::memory:"),
            ("DATABASE_URL", "postgres://u:p@db/auth"),
        ]))
        .unwrap();
        assert_eq!(s.database_url().expose_secret(), "sqlite::memory:");
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let s = Settings::load(&env(&[
            ("AUTH__KEYS__SIGNING_KEY", ""),
            ("AUTH__TOKENS__ACCESS_TTL", ""),
            ("AUTH__DATABASE__URL", ""),
            ("DATABASE_URL", "postgres://u:p@db/auth"),
        ]))
        .unwrap();
        assert!(s.keys.signing_key.is_none());
        assert_eq!(s.tokens.access_ttl, Duration::from_secs(300));
        assert_eq!(s.database_url().expose_secret(), "postgres://u:p@db/auth");
        let s = Settings::load(&env(&[("DATABASE_URL", "")])).unwrap();
        assert!(s.database_url().expose_secret().starts_with("sqlite://"));
    }

    #[test]
    fn trusted_proxies_parse_or_name_the_key() {
        let s = Settings::load(&env(&[(
            "AUTH__SERVER__TRUSTED_PROXIES",
            "10.0.0.0/8, 192.168.1.7 ,fd00::/8",
        )]))
        .unwrap();
        let nets: Vec<String> = s
            .server
            .trusted_proxies()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
        let e = Settings::load(&env(&[(
            "AUTH__SERVER__TRUSTED_PROXIES",
            "10.0.0.0/8,proxy",
        )]))
        .unwrap_err();
        assert!(e.to_string().contains("server.trusted_proxies"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        // A typo, or a key that no longer exists, must not be silently ignored.
        for (var, key) in [
            ("AUTH__SERVER__TRUST_FORWARDED_FOR", "trust_forwarded_for"),
            ("AUTH__TOKENS__ACESS_TTL", "acess_ttl"),
            ("AUTH__NOPE", "nope"),
        ] {
            let e = Settings::load(&env(&[(var, "1")])).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.toml");
        std::fs::write(&file, "[login]\nmax_failure = 3\n").unwrap();
        let e = Settings::load(&Sources {
            file: Some(file),
            env: HashMap::new(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("max_failure"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::load(&env(&[("AUTH__TOKENS__ACCESS_TTL", "soon")])).unwrap_err();
        assert!(e.to_string().contains("access_ttl"), "{e}");
        let e = Settings::load(&env(&[("AUTH__DATABASE__URL", "mysql://x")])).unwrap_err();
        assert!(e.to_string().contains("database.url"), "{e}");
        let e = Settings::load(&env(&[("AUTH__SERVER__PUBLIC_ADDR", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("server.public_addr"), "{e}");
        let e = Settings::load(&env(&[("AUTH__KEYS__ALGORITHM", "none")])).unwrap_err();
        assert!(e.to_string().contains("algorithm"), "{e}");
        let e = Settings::load(&env(&[("AUTH__TOKENS__REFRESH_TTL", "1m")])).unwrap_err();
        assert!(e.to_string().contains("tokens.refresh_ttl"), "{e}");
    }

    #[test]
    fn secrets_never_printed() {
        let s = Settings::load(&env(&[
            (
                "AUTH__KEYS__REFRESH_SECRET",
                "super-secret-refresh-value-0123456789",
            ),
            ("DATABASE_URL", "postgres://user:hunter2@db/auth"),
        ]))
        .unwrap();
        let debug = format!("{s:?}");
        let summary = s.redacted_summary();
        for text in [&debug, &summary] {
            assert!(!text.contains("super-secret"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        assert!(summary.contains("postgres://user:***@db/auth"), "{summary}");
    }

    #[test]
    fn redact_url_variants() {
        assert_eq!(
            redact_url("postgres://a:b@h:5432/d"),
            "postgres://a:***@h:5432/d"
        );
        assert_eq!(redact_url("postgres://a@h/d"), "postgres://a@h/d");
        assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }
}
