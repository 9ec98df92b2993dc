//! Typed configuration, the bottom of the crate: every setting is declared once, with its
//! default beside it; values are read from built-in defaults, then an optional TOML file, then
//! the environment; [`Settings::validate`] holds every cross-field and range rule; and
//! `check-config` prints what was loaded, derived from the same types, secrets redacted.
//!
//! Adding a setting is one edit: a line in its section below (and, if it has a range, a line
//! in `validate`).

mod render;
pub mod values;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

pub use values::{
    BrokerUrl, DatabaseUrl, NetList, OriginList, SigningAlgorithm, Span, UserSource, redact_url,
};

/// Environment prefix: `AUTH__TOKENS__ACCESS_TTL` sets `tokens.access_ttl`.
pub const ENV_PREFIX: &str = "AUTH";

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct SettingsError(pub String);

/// Declares a settings section: the struct, its serde form (unknown keys refused, missing
/// keys defaulted) and its `Default`, with each field's default written beside it.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }
    };
}

section! {
    pub struct Settings {
        /// Directory for the SQLite database and generated keys.
        pub data_dir: PathBuf = PathBuf::from("./data"),
        pub database: DatabaseSettings = DatabaseSettings::default(),
        pub server: ServerSettings = ServerSettings::default(),
        pub tokens: TokenSettings = TokenSettings::default(),
        pub keys: KeySettings = KeySettings::default(),
        pub password: PasswordSettings = PasswordSettings::default(),
        pub retention: RetentionSettings = RetentionSettings::default(),
        pub revocation: RevocationSettings = RevocationSettings::default(),
        pub login: LoginSettings = LoginSettings::default(),
        pub register: RegisterSettings = RegisterSettings::default(),
        pub verify: VerifySettings = VerifySettings::default(),
        pub cors: CorsSettings = CorsSettings::default(),
        pub cookie: CookieSettings = CookieSettings::default(),
        pub users: UsersSettings = UsersSettings::default(),
        pub events: EventsSettings = EventsSettings::default(),
    }
}

section! {
    /// Audit events published to a message broker (NATS JetStream) through an outbox table
    /// written in the same transaction as the event. Off unless `url` is set.
    pub struct EventsSettings {
        /// The NATS server(s): `nats://host:4222`, `tls://…`, comma-separated for a cluster.
        /// Unset: nothing is published (and no outbox rows are written).
        pub url: Option<BrokerUrl> = None,
        /// The JetStream stream, created (file storage, 2-minute duplicate window) if missing.
        pub stream: String = "AUTH_EVENTS".to_string(),
        /// Events go to `<subject_prefix>.<kind>`; the stream takes `<subject_prefix>.>`.
        pub subject_prefix: String = "auth.events".to_string(),
        /// How often the relay looks for queued events (this process's, the command line's,
        /// other replicas'): the most an event waits before it is published.
        pub poll_interval: Span = Span::millis(200),
        /// Events read and published per pass.
        #[serde(deserialize_with = "values::whole")]
        pub batch_size: u32 = 100,
        /// Longest wait for the broker to acknowledge one event before the relay backs off
        /// and tries again.
        pub publish_timeout: Span = Span::secs(5),
        /// How long the stream keeps an event (older ones are discarded first). Applied when
        /// the relay creates the stream; an existing stream keeps the limits it has (the
        /// operator's, changed with the `nats` CLI).
        pub max_age: Span = Span::secs(7 * 86_400),
        /// The most the stream stores, in bytes (the oldest events are discarded to stay
        /// under it); unset: bounded by `max_age` only. Applied when the stream is created.
        #[serde(deserialize_with = "values::whole_opt")]
        pub max_bytes: Option<u64> = None,
    }
}

section! {
    /// Where users are kept: this service's own tables (`local`), or a user service that
    /// checks credentials and owns names, emails, hashes and roles (`remote`).
    pub struct UsersSettings {
        pub source: UserSource = UserSource::Local,
        /// The user service's base URL, e.g. `http://user-service:8090` (remote only).
        pub remote_url: Option<String> = None,
        /// The id this service presents to the user service (HTTP Basic).
        pub remote_client_id: String = "auth-service".to_string(),
        /// The secret it presents (at least 32 characters); or `remote_secret_file`.
        #[serde(serialize_with = "values::redacted")]
        pub remote_secret: Option<SecretString> = None,
        pub remote_secret_file: Option<PathBuf> = None,
        /// Upper bound for one call to the user service; past it, 503.
        pub remote_timeout: Span = Span::secs(3),
        /// Calls to the user service in flight at once; more wait up to `remote_timeout`.
        pub remote_max_concurrent: usize = 64,
    }
}

section! {
    pub struct CorsSettings {
        /// Origins (`scheme://host[:port]`) of browser apps that may call the public listener
        /// with credentials; a comma-separated string or a TOML list. Empty: no CORS at all.
        pub allowed_origins: OriginList = OriginList::default(),
    }
}

section! {
    pub struct CookieSettings {
        /// The refresh-token cookie (`POST /login?cookie=true`) is `Secure`; turn off only
        /// for development over plain http.
        pub secure: bool = true,
    }
}

section! {
    pub struct VerifySettings {
        /// Access tokens whose checked claims `/verify` keeps (until each token expires),
        /// so a repeated token skips the signature check; 0 turns the cache off.
        /// Revocation is checked on every call regardless.
        #[serde(deserialize_with = "values::whole")]
        pub cache_size: usize = 50_000,
        /// When on, `/verify` answers only callers that authenticate as a client registered
        /// with `--introspect` (HTTP Basic in `X-Client-Authorization`), as
        /// `/oauth/introspect` does; others get 401 `invalid_client`.
        pub require_client: bool = false,
    }
}

section! {
    pub struct DatabaseSettings {
        /// `sqlite://PATH`, `sqlite::memory:` or `postgres://…`. Unset: `<data_dir>/auth.db`.
        pub url: Option<DatabaseUrl> = None,
        /// Connections in the pool.
        #[serde(deserialize_with = "values::whole")]
        pub pool_size: u32 = 10,
        /// Longest wait for a pooled connection (and, on PostgreSQL, for a new connection
        /// to be made) before answering 503.
        pub connect_timeout: Span = Span::secs(3),
        /// Longest a request waits on the database, connection and queries together,
        /// before answering 503 `service_unavailable`, even when the database hangs. Also
        /// PostgreSQL's `statement_timeout` and `lock_timeout` for each connection.
        pub timeout: Span = Span::secs(3),
        /// How long a SQLite connection waits for a lock before giving up.
        pub busy_timeout: Span = Span::secs(5),
    }
}

section! {
    pub struct ServerSettings {
        /// The public listener (clients).
        #[serde(deserialize_with = "values::socket_addr")]
        pub public_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        /// The internal listener (`/verify`, for resource servers).
        #[serde(deserialize_with = "values::socket_addr")]
        pub internal_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8081)),
        /// Worker threads per listener; unset means one per CPU.
        #[serde(deserialize_with = "values::whole_opt")]
        pub workers: Option<usize> = None,
        /// Reverse proxies whose `X-Forwarded-For` is believed. Empty: the client is the TCP
        /// peer.
        pub trusted_proxies: NetList = NetList::default(),
        /// Where clients reach the public listener, for the discovery document
        /// (`/.well-known/oauth-authorization-server`); unset: `http://<public_addr>`.
        pub public_url: Option<String> = None,
        /// Where resource servers reach the internal listener (introspection); unset:
        /// `http://<internal_addr>`.
        pub internal_url: Option<String> = None,
    }
}

section! {
    pub struct TokenSettings {
        /// Access-token lifetime.
        pub access_ttl: Span = Span::secs(300),
        /// Idle lifetime of a refresh token; every rotation issues a fresh one.
        pub refresh_ttl: Span = Span::secs(90 * 86_400),
        /// Absolute lifetime of a session regardless of rotation; unset means no cap.
        pub session_ttl: Option<Span> = None,
        /// How long the just-rotated parent may be presented again and get the same child.
        pub reuse_grace: Span = Span::secs(10),
        /// Clock-skew allowance on `exp` and `nbf`.
        pub leeway: Span = Span::secs(2),
        pub issuer: String = "auth-service".to_string(),
        pub audience: String = "resource-servers".to_string(),
    }
}

section! {
    pub struct KeySettings {
        /// Algorithm of the access-token signing key.
        pub algorithm: SigningAlgorithm = SigningAlgorithm::EdDSA,
        /// Active signing key: PKCS#8 PEM (EdDSA, ES256) or a secret of at least 32 bytes.
        #[serde(serialize_with = "values::redacted")]
        pub signing_key: Option<SecretString> = None,
        pub signing_key_file: Option<PathBuf> = None,
        /// Key id of the active key; derived from the key when unset.
        pub kid: Option<String> = None,
        /// Further keys accepted for verification only (keys being rotated out).
        pub verification_keys: Vec<VerificationKeySettings> = Vec::new(),
        /// HMAC secret for refresh tokens (at least 32 bytes); never leaves the service.
        #[serde(serialize_with = "values::redacted")]
        pub refresh_secret: Option<SecretString> = None,
        pub refresh_secret_file: Option<PathBuf> = None,
        /// Where generated keys are kept; unset means `<data_dir>/keys`.
        pub dir: Option<PathBuf> = None,
    }
}

/// One entry of `keys.verification_keys` (TOML only).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationKeySettings {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    /// Public key PEM (EdDSA, ES256) or the secret (HS256).
    #[serde(default, serialize_with = "values::redacted")]
    pub key: Option<SecretString>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

section! {
    pub struct PasswordSettings {
        /// Argon2id memory cost in KiB (the OWASP recommendation).
        #[serde(deserialize_with = "values::whole")]
        pub memory_kib: u32 = 19_456,
        #[serde(deserialize_with = "values::whole")]
        pub iterations: u32 = 2,
        #[serde(deserialize_with = "values::whole")]
        pub parallelism: u32 = 1,
        /// Hashing workers (each keeps its own `memory_kib` buffer); unset means one per CPU.
        #[serde(deserialize_with = "values::whole_opt")]
        pub max_concurrent: Option<usize> = None,
        /// Hashes that may wait for a worker; past this, 503 `overloaded` at once.
        #[serde(deserialize_with = "values::whole")]
        pub queue_size: usize = 64,
        /// Longest wait for a worker; a request that waited longer gets 503 `overloaded`.
        pub queue_timeout: Span = Span::secs(1),
    }
}

section! {
    pub struct RetentionSettings {
        /// Audit rows older than this are deleted by pruning.
        pub audit_max_age: Span = Span::secs(90 * 86_400),
        /// How often the server prunes by itself.
        pub interval: Span = Span::secs(3600),
        /// Rows deleted per statement, so a large table is never locked for long.
        #[serde(deserialize_with = "values::whole")]
        pub batch_size: u32 = 1000,
    }
}

section! {
    pub struct RevocationSettings {
        /// How often the revocation index picks up revocations made elsewhere (other
        /// instances, the command line) from the database.
        pub poll_interval: Span = Span::secs(5),
    }
}

section! {
    pub struct LoginSettings {
        /// Failed attempts for one account from one address within `failure_window` before
        /// further attempts are refused with 429.
        #[serde(deserialize_with = "values::whole")]
        pub max_failures: u32 = 10,
        /// Failed attempts from one address (any account) within `failure_window`.
        #[serde(deserialize_with = "values::whole")]
        pub max_failures_per_ip: u32 = 100,
        pub failure_window: Span = Span::secs(15 * 60),
        /// Longest a login waits for earlier attempts on the same account or address to
        /// finish (while failures plus running attempts reach a limit) before 503
        /// `overloaded`. Correct logins wait; they are never refused for others in flight.
        pub max_wait: Span = Span::secs(2),
    }
}

section! {
    pub struct RegisterSettings {
        /// Registrations from one address within `window` (each costs a password hash); 0
        /// means no limit.
        #[serde(deserialize_with = "values::whole")]
        pub max_per_ip: u32 = 20,
        pub window: Span = Span::secs(3600),
    }
}

/// Where the configuration comes from. `Sources::process()` is what the binary uses; tests
/// pass their own environment map so the process environment never leaks in.
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

impl Settings {
    pub fn load(sources: &Sources) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder();
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
        let prefixed: HashMap<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
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
        let settings: Settings = serde_path_to_error::deserialize(raw).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path.is_empty() || path == "." {
                SettingsError(inner)
            } else {
                SettingsError(format!("{path}: {inner}"))
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every rule that one value's type cannot express: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let err = |key: &str, msg: &str| Err(SettingsError(format!("{key}: {msg}")));
        let t = &self.tokens;
        if t.access_ttl < Span::secs(1) || t.access_ttl > Span::secs(86_400) {
            return err("tokens.access_ttl", "must be between 1s and 1d");
        }
        if t.refresh_ttl <= t.access_ttl {
            return err(
                "tokens.refresh_ttl",
                "must be longer than tokens.access_ttl",
            );
        }
        if t.session_ttl.is_some_and(|s| s < Span::secs(1)) {
            return err("tokens.session_ttl", "must be at least 1s");
        }
        if t.reuse_grace > Span::secs(300) {
            return err("tokens.reuse_grace", "must be at most 5m");
        }
        if t.leeway > Span::secs(60) {
            return err("tokens.leeway", "must be at most 60s");
        }
        if t.issuer.trim().is_empty() {
            return err("tokens.issuer", "must not be empty");
        }
        if t.audience.trim().is_empty() {
            return err("tokens.audience", "must not be empty");
        }
        for (key, url) in [
            ("server.public_url", &self.server.public_url),
            ("server.internal_url", &self.server.internal_url),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return err(key, "expected an http:// or https:// URL");
            }
        }
        if self.server.workers == Some(0) {
            return err("server.workers", "must be at least 1");
        }
        if self.retention.batch_size == 0 {
            return err("retention.batch_size", "must be at least 1");
        }
        if self.retention.interval < Span::secs(1) {
            return err("retention.interval", "must be at least 1s");
        }
        if self.revocation.poll_interval < Span::millis(100) {
            return err("revocation.poll_interval", "must be at least 100ms");
        }
        if self.login.max_failures == 0 {
            return err("login.max_failures", "must be at least 1");
        }
        if self.login.max_failures_per_ip == 0 {
            return err("login.max_failures_per_ip", "must be at least 1");
        }
        if self.login.max_wait > Span::secs(60) {
            return err("login.max_wait", "must be at most 60s");
        }
        if self.login.failure_window < Span::secs(1) {
            return err("login.failure_window", "must be at least 1s");
        }
        if self.register.window < Span::secs(1) {
            return err("register.window", "must be at least 1s");
        }
        if self.database.pool_size == 0 {
            return err("database.pool_size", "must be at least 1");
        }
        if self.database.timeout < Span::millis(100) || self.database.timeout > Span::secs(300) {
            return err("database.timeout", "must be between 100ms and 5m");
        }
        if self.database.connect_timeout < Span::secs(1) {
            return err("database.connect_timeout", "must be at least 1s");
        }
        let p = &self.password;
        if p.parallelism == 0 {
            return err("password.parallelism", "must be at least 1");
        }
        if p.memory_kib < 8 * p.parallelism {
            return err("password.memory_kib", "must be at least 8 × parallelism");
        }
        if p.iterations == 0 {
            return err("password.iterations", "must be at least 1");
        }
        if p.max_concurrent == Some(0) {
            return err("password.max_concurrent", "must be at least 1");
        }
        if p.queue_timeout > Span::secs(60) {
            return err("password.queue_timeout", "must be at most 60s");
        }
        let k = &self.keys;
        if k.signing_key.is_some() && k.signing_key_file.is_some() {
            return err(
                "keys.signing_key",
                "set either keys.signing_key or keys.signing_key_file, not both",
            );
        }
        if k.refresh_secret.is_some() && k.refresh_secret_file.is_some() {
            return err(
                "keys.refresh_secret",
                "set either keys.refresh_secret or keys.refresh_secret_file, not both",
            );
        }
        if let Some(DatabaseUrl::Postgres(url)) = &self.database.url
            && let Some((_, rest)) = url.expose_secret().split_once("://")
            && let Some((userinfo, _)) = rest.rsplit_once('@')
            && is_placeholder_secret(userinfo)
        {
            // POSTGRES_PASSWORD of deploy/.env.example, as it ships.
            return Err(SettingsError(placeholder_refused(
                "database.url: the password",
            )));
        }
        let u = &self.users;
        if u.remote_secret.is_some() && u.remote_secret_file.is_some() {
            return err(
                "users.remote_secret",
                "set either users.remote_secret or users.remote_secret_file, not both",
            );
        }
        if let Some(url) = &u.remote_url
            && !url.starts_with("http://")
        {
            // This build has no TLS client: the user service belongs on the private network,
            // like the internal listener.
            return err("users.remote_url", "expected an http:// URL");
        }
        if u.source == UserSource::Remote {
            if u.remote_url.is_none() {
                return err(
                    "users.remote_url",
                    "required when users.source = \"remote\"",
                );
            }
            self.users_remote_secret()?;
            if u.remote_client_id.is_empty() || u.remote_client_id.contains(':') {
                return err("users.remote_client_id", "must be non-empty, without ':'");
            }
        }
        if u.remote_timeout < Span::millis(100) || u.remote_timeout > Span::secs(60) {
            return err("users.remote_timeout", "must be between 100ms and 60s");
        }
        if u.remote_max_concurrent == 0 {
            return err("users.remote_max_concurrent", "must be at least 1");
        }
        self.validate_events()?;
        for (i, v) in k.verification_keys.iter().enumerate() {
            if v.key.is_some() == v.key_file.is_some() {
                return err(
                    &format!("keys.verification_keys[{i}]"),
                    "set exactly one of key or key_file",
                );
            }
        }
        Ok(())
    }

    fn validate_events(&self) -> Result<(), SettingsError> {
        let err = |key: &str, msg: &str| Err(SettingsError(format!("{key}: {msg}")));
        let e = &self.events;
        // JetStream stream names: no whitespace, `.`, `*`, `>` or path separators.
        if e.stream.is_empty()
            || e.stream.len() > 64
            || !e
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return err(
                "events.stream",
                "1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
            );
        }
        // Literal subject tokens: the kind is appended, and the stream takes `<prefix>.>`.
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if e.subject_prefix.len() > 128 || !e.subject_prefix.split('.').all(token_ok) {
            return err(
                "events.subject_prefix",
                "dot-separated tokens of A-Z, a-z, 0-9, '_' and '-' (no wildcards, no empty \
                 token), at most 128 characters",
            );
        }
        if e.poll_interval < Span::millis(10) || e.poll_interval > Span::secs(60) {
            return err("events.poll_interval", "must be between 10ms and 60s");
        }
        if e.batch_size == 0 || e.batch_size > 10_000 {
            return err("events.batch_size", "must be between 1 and 10000");
        }
        if e.publish_timeout < Span::millis(100) || e.publish_timeout > Span::secs(60) {
            return err("events.publish_timeout", "must be between 100ms and 60s");
        }
        // The broker refuses a stream whose age limit is shorter than its duplicate window.
        if e.max_age < Span::secs(120) || e.max_age > Span::secs(3650 * 86_400) {
            return err("events.max_age", "must be between 2m and 3650d");
        }
        if e.max_bytes
            .is_some_and(|b| b < 1 << 20 || b > i64::MAX as u64)
        {
            return err("events.max_bytes", "must be at least 1048576 (1 MiB)");
        }
        Ok(())
    }

    /// The secret this service presents to the user service: `users.remote_secret`, or read
    /// from `users.remote_secret_file`; at least 32 characters, and never the placeholder of
    /// `deploy/.env.example`. (Checked by `validate` when users are remote, so `check-config`
    /// catches a bad one.)
    pub fn users_remote_secret(&self) -> Result<SecretString, SettingsError> {
        let u = &self.users;
        let secret = match (&u.remote_secret, &u.remote_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => read_secret_file("users.remote_secret_file", path)?,
            (None, None) => {
                return Err(SettingsError(
                    "users.remote_secret: required (or users.remote_secret_file) when \
                     users.source = \"remote\""
                        .into(),
                ));
            }
        };
        if is_placeholder_secret(secret.expose_secret()) {
            return Err(SettingsError(placeholder_refused("users.remote_secret")));
        }
        if secret.expose_secret().chars().count() < MIN_REMOTE_SECRET_CHARS {
            return Err(SettingsError(format!(
                "users.remote_secret: must be at least {MIN_REMOTE_SECRET_CHARS} characters"
            )));
        }
        Ok(secret)
    }

    /// The effective database URL: `database.url`, or a SQLite file in `data_dir`.
    pub fn database_url(&self) -> DatabaseUrl {
        match &self.database.url {
            Some(url) => url.clone(),
            None => DatabaseUrl::SqliteFile(self.data_dir.join("auth.db")),
        }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.keys
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// `key = value` lines for `check-config`, from the loaded settings: secrets redacted,
    /// durations as written, unset options as `<unset>`, then the values that unset keys
    /// resolve to as `#` comments.
    pub fn render_redacted(&self) -> String {
        let mut out = render::key_value_lines(self);
        out.push_str(&format!(
            "# effective database: {}\n# effective keys.dir: {}\n",
            self.database_url().redacted(),
            self.keys_dir().display()
        ));
        out
    }
}

/// The shortest secret this service presents to the user service.
const MIN_REMOTE_SECRET_CHARS: usize = 32;

/// The mark of the values `deploy/.env.example` puts where a secret belongs
/// (`change-me-to-a-long-random-value`, …).
const PLACEHOLDER_MARK: &str = "change-me";

/// Whether `secret` is still one of `deploy/.env.example`'s placeholders. Such a value is long
/// enough for every length check and known to everyone who has read the file, so a secret
/// that contains the mark (in any case) is refused wherever an operator gives one.
pub fn is_placeholder_secret(secret: &str) -> bool {
    secret.to_ascii_lowercase().contains(PLACEHOLDER_MARK)
}

/// The refusal of a placeholder secret given as `key`.
pub fn placeholder_refused(key: &str) -> String {
    format!(
        "{key}: still the placeholder from deploy/.env.example (it contains \"{PLACEHOLDER_MARK}\"): \
         set a random value, e.g. `openssl rand -hex 24`"
    )
}

/// Reads a secret from a file, trimming the trailing newline editors add.
pub fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError(format!("{key}: cannot read {}: {e}", path.display())))?;
    Ok(SecretString::from(text.trim_end().to_string()))
}

#[cfg(test)]
mod tests;
