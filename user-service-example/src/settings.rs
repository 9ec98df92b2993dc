//! Typed configuration, loaded once at start-up through the `config` crate: built-in defaults,
//! then an optional TOML file, then `USERS__SECTION__KEY` environment variables. Every failure
//! names the offending key; secrets never reach `Debug` or the summary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Environment prefix: `USERS__DATABASE__URL` sets `database.url`.
pub const ENV_PREFIX: &str = "USERS";
/// Shortest accepted service credential secret and admin token.
pub const MIN_SECRET_CHARS: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct SettingsError(pub String);

fn fail<T>(key: &str, msg: impl std::fmt::Display) -> Result<T, SettingsError> {
    Err(SettingsError(format!("{key}: {msg}")))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the default SQLite database lives (`<data_dir>/users.db`).
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub service: ServiceSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub password: PasswordSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub addr: String,
    /// Worker threads; unset means one per CPU.
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://…`; unset means `<data_dir>/users.db`.
    pub url: Option<Redacted>,
    pub pool_size: u32,
    /// Upper bound for one storage operation (waiting for a connection included); past it
    /// the request is answered 503.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// The credential the auth service presents (HTTP Basic) on every `/v1/…` call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    pub client_id: String,
    pub client_secret: Option<Redacted>,
    pub client_secret_file: Option<PathBuf>,
}

/// The operators' bearer token for `/admin/…`; unset turns the admin API off (404).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub token: Option<Redacted>,
    pub token_file: Option<PathBuf>,
}

/// Where notifications go: the auth service's internal listener. Unset `url`: none are sent
/// (they are still written, and sent once a URL is configured).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub url: Option<String>,
    /// This service's client id at the auth service.
    pub client_id: String,
    pub client_secret: Option<Redacted>,
    pub client_secret_file: Option<PathBuf>,
    /// Upper bound for one delivery.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often pending rows are looked for without a local commit waking the sender
    /// (rows another replica wrote).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    /// Argon2id memory cost (KiB), iterations and lanes: OWASP's first recommendation.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes running at once; unset means one per CPU.
    pub max_concurrent: Option<usize>,
    /// How long a request may wait for a hashing slot before it is answered 503 `overloaded`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
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

/// A client id and secret, sent or checked as HTTP Basic.
#[derive(Clone)]
pub struct Credential {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The database the settings name.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    SqliteFile(PathBuf),
    /// The whole URL, which may hold a password.
    Postgres(String),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::SqliteFile(p) => write!(f, "sqlite://{}", p.display()),
            DatabaseUrl::Postgres(_) => f.write_str("postgres://<redacted>"),
        }
    }
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<DatabaseUrl, String> {
        const EXPECTED: &str = "expected sqlite://PATH or postgres://user:password@host/db";
        if let Some(path) = raw.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(format!("{EXPECTED}; sqlite:// needs a file path"));
            }
            return Ok(DatabaseUrl::SqliteFile(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(raw.to_string()));
        }
        // An unknown scheme (or a bare path) is refused, not taken for a SQLite file name.
        Err(EXPECTED.to_string())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            DatabaseUrl::SqliteFile(_) => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
        }
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
            file: file.or_else(|| std::env::var_os("USERS_CONFIG").map(PathBuf::from)),
            env: std::env::vars().collect(),
        }
    }
}

fn defaults() -> Vec<(&'static str, config::Value)> {
    vec![
        ("data_dir", "./data".into()),
        ("server.addr", "127.0.0.1:8090".into()),
        ("database.pool_size", 8.into()),
        ("database.timeout", "5s".into()),
        ("service.client_id", "auth-service".into()),
        ("auth.client_id", "user-service".into()),
        ("auth.timeout", "3s".into()),
        ("auth.poll_interval", "5s".into()),
        ("password.memory_kib", 19_456.into()),
        ("password.iterations", 2.into()),
        ("password.parallelism", 1.into()),
        ("password.queue_timeout", "1s".into()),
    ]
}

/// The mark of `deploy/.env.example`'s placeholders (`change-me-to-a-fifth-long-random-value`,
/// …): long enough for the length check, and known to everyone who has read the file.
const PLACEHOLDER_MARK: &str = "change-me";

/// A secret given inline or in a file (surrounding whitespace dropped), not both; never
/// one of `deploy/.env.example`'s placeholders.
fn secret_of(
    key: &str,
    inline: &Option<Redacted>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, SettingsError> {
    let secret = given_secret(key, inline, file)?;
    if let Some(s) = &secret
        && s.to_ascii_lowercase().contains(PLACEHOLDER_MARK)
    {
        return fail(
            key,
            format!(
                "still the placeholder from deploy/.env.example (it contains \"{PLACEHOLDER_MARK}\"): \
                 set a random value, e.g. `openssl rand -hex 24`"
            ),
        );
    }
    Ok(secret)
}

fn given_secret(
    key: &str,
    inline: &Option<Redacted>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, SettingsError> {
    match (inline, file) {
        (Some(_), Some(_)) => fail(key, format!("set it or {key}_file, not both")),
        (Some(s), None) => Ok(Some(s.0.trim().to_string())),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) => fail(
                &format!("{key}_file"),
                format!("cannot read {}: {e}", path.display()),
            ),
        },
        (None, None) => Ok(None),
    }
}

fn long_enough(key: &str, secret: String) -> Result<String, SettingsError> {
    if secret.chars().count() < MIN_SECRET_CHARS {
        return fail(
            key,
            format!("must be at least {MIN_SECRET_CHARS} characters (a random value)"),
        );
    }
    Ok(secret)
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
                .source(Some(env)),
        );
        let settings: Settings = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks everything every command needs. The service credential is checked by
    /// [`Settings::service_credential`], which only `serve` and `check-config` need.
    fn validate(&self) -> Result<(), SettingsError> {
        if self.server.addr.parse::<std::net::SocketAddr>().is_err() {
            return fail("server.addr", "must be an address like 127.0.0.1:8090");
        }
        if self.server.workers == Some(0) {
            return fail("server.workers", "must be at least 1");
        }
        self.database_url()?;
        if !(1..=100).contains(&self.database.pool_size) {
            return fail("database.pool_size", "must be between 1 and 100");
        }
        let t = self.database.timeout;
        if t < Duration::from_millis(100) || t > Duration::from_secs(60) {
            return fail("database.timeout", "must be between 100ms and 60s");
        }
        let p = &self.password;
        if p.parallelism == 0 {
            return fail("password.parallelism", "must be at least 1");
        }
        if p.memory_kib < 8 * p.parallelism {
            return fail("password.memory_kib", "must be at least 8 × parallelism");
        }
        if p.iterations == 0 {
            return fail("password.iterations", "must be at least 1");
        }
        if p.max_concurrent == Some(0) {
            return fail("password.max_concurrent", "must be at least 1");
        }
        if p.queue_timeout > Duration::from_secs(60) {
            return fail("password.queue_timeout", "must be at most 60s");
        }
        if self.service.client_id.is_empty() {
            return fail("service.client_id", "must not be empty");
        }
        self.admin_token()?;
        if let Some(url) = &self.auth.url {
            let ok = reqwest::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if ok.is_none() {
                return fail(
                    "auth.url",
                    "must be an http:// or https:// URL such as http://127.0.0.1:8081",
                );
            }
        }
        let t = self.auth.timeout;
        if t < Duration::from_millis(10) || t > Duration::from_secs(60) {
            return fail("auth.timeout", "must be between 10ms and 60s");
        }
        let t = self.auth.poll_interval;
        if t < Duration::from_millis(100) || t > Duration::from_secs(3600) {
            return fail("auth.poll_interval", "must be between 100ms and 1h");
        }
        self.auth_credential()?;
        Ok(())
    }

    /// The effective database: `database.url`, or a SQLite file in `data_dir`.
    pub fn database_url(&self) -> Result<DatabaseUrl, SettingsError> {
        match &self.database.url {
            Some(raw) => DatabaseUrl::parse(raw.0.trim()).or_else(|e| fail("database.url", e)),
            None => Ok(DatabaseUrl::SqliteFile(self.data_dir.join("users.db"))),
        }
    }

    /// Whether the database is the default one (its directory may be created on demand).
    pub fn database_is_default(&self) -> bool {
        self.database.url.is_none()
    }

    /// The credential the auth service must present. Required to serve.
    pub fn service_credential(&self) -> Result<Credential, SettingsError> {
        let s = &self.service;
        let secret = secret_of(
            "service.client_secret",
            &s.client_secret,
            &s.client_secret_file,
        )?;
        let Some(secret) = secret else {
            return fail(
                "service.client_secret",
                "required: the secret the auth service sends (users.remote_secret there); or \
                 service.client_secret_file",
            );
        };
        Ok(Credential {
            id: s.client_id.clone(),
            secret: long_enough("service.client_secret", secret)?,
        })
    }

    /// The operators' bearer token, if the admin API is on.
    pub fn admin_token(&self) -> Result<Option<String>, SettingsError> {
        secret_of("admin.token", &self.admin.token, &self.admin.token_file)?
            .map(|t| long_enough("admin.token", t))
            .transpose()
    }

    /// This service's credentials at the auth service, when notifications are on.
    pub fn auth_credential(&self) -> Result<Option<Credential>, SettingsError> {
        let a = &self.auth;
        let secret = secret_of(
            "auth.client_secret",
            &a.client_secret,
            &a.client_secret_file,
        )?;
        match (&a.url, secret) {
            (None, _) => Ok(None),
            (Some(_), None) => fail(
                "auth.client_secret",
                "auth.url is set: give this service's client secret at the auth service (or \
                 auth.client_secret_file)",
            ),
            (Some(_), Some(_)) if a.client_id.is_empty() => {
                fail("auth.client_id", "must not be empty")
            }
            (Some(_), Some(secret)) if secret.is_empty() => {
                fail("auth.client_secret", "must not be empty")
            }
            (Some(_), Some(secret)) => Ok(Some(Credential {
                id: a.client_id.clone(),
                secret,
            })),
        }
    }

    /// The effective configuration, one `key = value` line per setting, secrets redacted.
    pub fn summary(&self) -> String {
        let dur = |d: Duration| humantime::format_duration(d).to_string();
        let set = |present: bool| {
            if present {
                "<redacted>".to_string()
            } else {
                "<unset>".to_string()
            }
        };
        let database = match self.database_url() {
            Ok(DatabaseUrl::SqliteFile(p)) => format!("sqlite://{}", p.display()),
            Ok(DatabaseUrl::Postgres(_)) => "postgres://<redacted>".into(),
            Err(_) => "<invalid>".into(),
        };
        [
            ("data_dir", format!("{:?}", display(&self.data_dir))),
            ("server.addr", format!("{:?}", self.server.addr)),
            (
                "server.workers",
                self.server
                    .workers
                    .map_or_else(|| "<one per CPU>".into(), |w| w.to_string()),
            ),
            ("database.url", database),
            ("database.pool_size", self.database.pool_size.to_string()),
            ("database.timeout", dur(self.database.timeout)),
            ("service.client_id", format!("{:?}", self.service.client_id)),
            (
                "service.client_secret",
                set(self.service.client_secret.is_some()
                    || self.service.client_secret_file.is_some()),
            ),
            (
                "admin.token",
                if self.admin.token.is_some() || self.admin.token_file.is_some() {
                    "<redacted>".into()
                } else {
                    "<unset> (admin API off)".into()
                },
            ),
            (
                "auth.url",
                self.auth.url.as_ref().map_or_else(
                    || "<unset> (notifications are kept, not sent)".into(),
                    |u| format!("{u:?}"),
                ),
            ),
            ("auth.client_id", format!("{:?}", self.auth.client_id)),
            (
                "auth.client_secret",
                set(self.auth.client_secret.is_some() || self.auth.client_secret_file.is_some()),
            ),
            ("auth.timeout", dur(self.auth.timeout)),
            ("auth.poll_interval", dur(self.auth.poll_interval)),
            ("password.memory_kib", self.password.memory_kib.to_string()),
            ("password.iterations", self.password.iterations.to_string()),
            (
                "password.parallelism",
                self.password.parallelism.to_string(),
            ),
            (
                "password.max_concurrent",
                self.password
                    .max_concurrent
                    .map_or_else(|| "<one per CPU>".into(), |n| n.to_string()),
            ),
            ("password.queue_timeout", dur(self.password.queue_timeout)),
        ]
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect()
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

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
        assert_eq!(s.service.client_id, "auth-service");
        assert_eq!(
            s.database_url().unwrap(),
            DatabaseUrl::SqliteFile(PathBuf::from("./data/users.db"))
        );
        assert!(s.admin_token().unwrap().is_none());
        assert!(s.auth_credential().unwrap().is_none());
        // Serving needs the service credential.
        let e = s.service_credential().unwrap_err().to_string();
        assert!(e.contains("service.client_secret"), "{e}");
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        let s = load(&[
            ("USERS__SERVICE__CLIENT_SECRET", SECRET),
            ("USERS__ADMIN__TOKEN", "admin-token-admin-token-admin-token"),
            ("USERS__AUTH__URL", "http://auth:8081"),
            ("USERS__AUTH__CLIENT_SECRET", "outgoing-secret"),
            ("USERS__DATABASE__URL", "postgres://u:dbpass@h/db"),
        ])
        .unwrap();
        assert_eq!(s.service_credential().unwrap().secret, SECRET);
        assert_eq!(
            s.auth_credential().unwrap().unwrap().id.as_str(),
            "user-service"
        );
        for text in [s.summary(), format!("{s:?}")] {
            for secret in [SECRET, "admin-token-admin", "outgoing-secret", "dbpass"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
        let short = load(&[("USERS__SERVICE__CLIENT_SECRET", "short")]).unwrap();
        let e = short.service_credential().unwrap_err().to_string();
        assert!(e.contains("at least 32"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (pairs, key) in [
            (vec![("USERS__SERVER__ADDR", "nowhere")], "server.addr"),
            (vec![("USERS__DATABASE__URL", "./users.db")], "database.url"),
            (
                vec![("USERS__DATABASE__URL", "mysql://h/d")],
                "database.url",
            ),
            (vec![("USERS__ADMIN__TOKEN", "short")], "admin.token"),
            (vec![("USERS__AUTH__URL", "auth:8081")], "auth.url"),
            (
                vec![("USERS__AUTH__URL", "http://a:1")],
                "auth.client_secret",
            ),
            (
                vec![("USERS__PASSWORD__ITERATIONS", "0")],
                "password.iterations",
            ),
            (vec![("USERS__DATABASE__TIMEOUT", "0s")], "database.timeout"),
            (
                vec![
                    ("USERS__ADMIN__TOKEN", SECRET),
                    ("USERS__ADMIN__TOKEN_FILE", "/x"),
                ],
                "admin.token",
            ),
            (
                vec![("USERS__ADMIN__TOKEN_FILE", "/nonexistent/token")],
                "admin.token_file",
            ),
            (vec![("USERS__SERVER__ADDRESS", "x")], "address"),
        ] {
            let e = load(&pairs).unwrap_err().to_string();
            assert!(e.contains(key), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, format!("{SECRET}\n")).unwrap();
        let file = file.to_str().unwrap();
        let s = load(&[
            ("USERS__SERVICE__CLIENT_SECRET_FILE", file),
            ("USERS__ADMIN__TOKEN_FILE", file),
        ])
        .unwrap();
        assert_eq!(s.service_credential().unwrap().secret, SECRET);
        assert_eq!(s.admin_token().unwrap().unwrap(), SECRET);
    }
}
