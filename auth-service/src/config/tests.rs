use std::time::Duration;

use secrecy::ExposeSecret;

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

fn file(text: &str) -> (tempfile::TempDir, Sources) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, text).unwrap();
    (
        dir,
        Sources {
            file: Some(path),
            env: HashMap::new(),
        },
    )
}

fn error_of(sources: &Sources) -> String {
    Settings::load(sources).unwrap_err().to_string()
}

#[test]
fn defaults_load() {
    let s = Settings::load(&env(&[])).unwrap();
    assert_eq!(s.tokens.access_ttl.get(), Duration::from_secs(300));
    assert_eq!(s.tokens.refresh_ttl.get(), Duration::from_secs(90 * 86_400));
    assert_eq!(s.tokens.reuse_grace.get(), Duration::from_secs(10));
    assert_eq!(s.server.public_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(s.server.internal_addr.to_string(), "127.0.0.1:8081");
    assert_eq!(s.keys.algorithm, SigningAlgorithm::EdDSA);
    assert!(s.database.url.is_none());
    assert!(matches!(s.database_url(), DatabaseUrl::SqliteFile(p) if p.ends_with("auth.db")));
}

#[test]
fn environment_overrides_and_alias() {
    let s = Settings::load(&env(&[
        ("AUTH__TOKENS__ACCESS_TTL", "3s"),
        ("AUTH__PASSWORD__MEMORY_KIB", "1024"),
        ("DATABASE_URL", "postgres://u:p@db/auth"),
    ]))
    .unwrap();
    assert_eq!(s.tokens.access_ttl, Span::secs(3));
    assert_eq!(s.password.memory_kib, 1024);
    assert!(
        matches!(s.database_url(), DatabaseUrl::Postgres(u) if u.expose_secret() == "postgres://u:p@db/auth")
    );

    let s = Settings::load(&env(&[
        ("AUTH__DATABASE__URL", "sqlite::memory:"),
        ("DATABASE_URL", "postgres://u:p@db/auth"),
    ]))
    .unwrap();
    assert!(matches!(s.database_url(), DatabaseUrl::SqliteMemory));
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
    assert_eq!(s.tokens.access_ttl, Span::secs(300));
    assert!(matches!(s.database_url(), DatabaseUrl::Postgres(_)));
    let s = Settings::load(&env(&[("DATABASE_URL", "")])).unwrap();
    assert!(s.database.url.is_none());
}

#[test]
fn typed_addresses_and_ranges() {
    let s = Settings::load(&env(&[
        (
            "AUTH__SERVER__TRUSTED_PROXIES",
            "10.0.0.0/8, 192.168.1.7 ,fd00::/8",
        ),
        ("AUTH__SERVER__PUBLIC_ADDR", "[::1]:9000"),
    ]))
    .unwrap();
    assert_eq!(s.server.trusted_proxies.0.len(), 3);
    assert!(
        s.server
            .trusted_proxies
            .contains(&"192.168.1.7".parse().unwrap())
    );
    assert_eq!(s.server.public_addr.port(), 9000);
    let (_dir, sources) = file("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n");
    let s = Settings::load(&sources).unwrap();
    assert_eq!(s.server.trusted_proxies.0.len(), 2);

    let e = error_of(&env(&[(
        "AUTH__SERVER__TRUSTED_PROXIES",
        "10.0.0.0/8,proxy",
    )]));
    assert!(
        e.contains("server.trusted_proxies") && e.contains("\"proxy\""),
        "{e}"
    );
    let e = error_of(&env(&[("AUTH__SERVER__PUBLIC_ADDR", "nowhere")]));
    assert!(
        e.contains("server.public_addr") && e.contains("127.0.0.1:8080"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_refused_by_name() {
    // A typo, or a key that no longer exists, must not be silently ignored.
    for (var, key) in [
        ("AUTH__SERVER__TRUST_FORWARDED_FOR", "trust_forwarded_for"),
        ("AUTH__TOKENS__ACESS_TTL", "acess_ttl"),
        ("AUTH__NOPE", "nope"),
    ] {
        let e = error_of(&env(&[(var, "1")]));
        assert!(e.contains(key), "{e}");
    }
    let (_dir, sources) = file("[login]\nmax_failure = 3\n");
    let e = error_of(&sources);
    assert!(e.contains("max_failure"), "{e}");
}

#[test]
fn errors_name_the_key_and_what_is_allowed() {
    let e = error_of(&env(&[("AUTH__KEYS__ALGORITHM", "none")]));
    assert!(
        e.contains("keys.algorithm: expected one of EdDSA, ES256, HS256"),
        "{e}"
    );
    let e = error_of(&env(&[("AUTH__TOKENS__ACCESS_TTL", "soon")]));
    assert!(e.contains("tokens.access_ttl: expected a duration"), "{e}");
    let e = error_of(&env(&[("AUTH__DATABASE__URL", "mysql://x")]));
    assert!(e.contains("database.url: expected sqlite://"), "{e}");
    assert!(!e.contains("mysql://x"), "the URL is not echoed: {e}");
    let e = error_of(&env(&[("AUTH__TOKENS__REFRESH_TTL", "1m")]));
    assert!(e.contains("tokens.refresh_ttl"), "{e}");
    // -1 in a count, from the environment and from a file.
    let e = error_of(&env(&[("AUTH__LOGIN__MAX_FAILURES", "-1")]));
    assert!(
        e.contains("login.max_failures: expected a whole number from 0 to 4294967295"),
        "{e}"
    );
    let (_dir, sources) = file("[login]\nmax_failures = -1\n");
    let e = error_of(&sources);
    assert!(
        e.contains("login.max_failures: expected a whole number from 0 to 4294967295"),
        "{e}"
    );
    // A bare number where a duration belongs.
    let (_dir, sources) = file("[tokens]\naccess_ttl = 300\n");
    let e = error_of(&sources);
    assert!(
        e.contains("tokens.access_ttl: expected a duration") && e.contains("no unit"),
        "{e}"
    );
}

#[test]
fn secrets_never_printed() {
    let s = Settings::load(&env(&[
        (
            "AUTH__KEYS__REFRESH_SECRET",
            "super-secret-refresh-value-0123456789",
        ),
        (
            "DATABASE_URL",
            "postgres://user:hunter2@db/auth?password=swordfish&sslmode=disable",
        ),
    ]))
    .unwrap();
    let debug = format!("{s:?}");
    let summary = s.render_redacted();
    for text in [&debug, &summary] {
        for secret in ["super-secret", "hunter2", "swordfish"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert!(
        summary.contains("postgres://user:***@db/auth?password=***&sslmode=disable"),
        "{summary}"
    );
    assert!(
        summary.contains("keys.refresh_secret = <redacted>"),
        "{summary}"
    );
}

#[test]
fn check_config_prints_every_key_as_configured() {
    let s = Settings::load(&env(&[("AUTH__TOKENS__REFRESH_TTL", "90d")])).unwrap();
    let summary = s.render_redacted();
    for line in [
        "tokens.refresh_ttl = \"90d\"",
        "tokens.access_ttl = \"5m\"",
        "revocation.poll_interval = \"5s\"",
        "server.public_addr = \"127.0.0.1:8080\"",
        "keys.algorithm = \"EdDSA\"",
        "keys.signing_key = <unset>",
        "database.url = <unset>",
        "login.max_failures = 10",
        "cors.allowed_origins = \"\"",
        "cookie.secure = true",
        "events.url = <unset>",
        "events.stream = \"AUTH_EVENTS\"",
        "events.subject_prefix = \"auth.events\"",
        "events.poll_interval = \"200ms\"",
        "events.max_age = \"7d\"",
        "events.max_bytes = <unset>",
    ] {
        assert!(
            summary.lines().any(|l| l == line),
            "{line} missing:\n{summary}"
        );
    }
    // Every key of the defaults is printed, so the list of keys cannot drift from the types.
    let keys = summary.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(keys, 62, "{summary}");
}

#[test]
fn cors_origins_from_the_environment_and_a_file() {
    let s = Settings::load(&env(&[(
        "AUTH__CORS__ALLOWED_ORIGINS",
        "https://app.example.com, http://localhost:3000",
    )]))
    .unwrap();
    assert_eq!(
        s.cors.allowed_origins.0,
        ["https://app.example.com", "http://localhost:3000"]
    );
    assert!(
        s.render_redacted()
            .contains("cors.allowed_origins = \"https://app.example.com, http://localhost:3000\"")
    );
    let (_dir, sources) =
        file("[cors]\nallowed_origins = [\"https://a.example\"]\n[cookie]\nsecure = false\n");
    let s = Settings::load(&sources).unwrap();
    assert_eq!(s.cors.allowed_origins.0, ["https://a.example"]);
    assert!(!s.cookie.secure);
    let e = error_of(&env(&[("AUTH__CORS__ALLOWED_ORIGINS", "*")]));
    assert!(e.contains("cors.allowed_origins"), "{e}");
}

#[test]
fn events_are_off_by_default_and_configurable() {
    let s = Settings::load(&env(&[])).unwrap();
    assert!(s.events.url.is_none());
    assert_eq!(s.events.stream, "AUTH_EVENTS");
    assert_eq!(s.events.subject_prefix, "auth.events");
    assert_eq!(s.events.poll_interval, Span::millis(200));
    assert_eq!(s.events.batch_size, 100);
    assert_eq!(s.events.publish_timeout, Span::secs(5));
    assert_eq!(s.events.max_age, Span::secs(7 * 86_400));
    assert_eq!(s.events.max_bytes, None);
    let s = Settings::load(&env(&[
        (
            "AUTH__EVENTS__URL",
            "nats://127.0.0.1:4222, nats://10.0.0.2:4222",
        ),
        ("AUTH__EVENTS__STREAM", "ACME_AUTH"),
        ("AUTH__EVENTS__SUBJECT_PREFIX", "acme.auth-events"),
        ("AUTH__EVENTS__POLL_INTERVAL", "1s"),
        ("AUTH__EVENTS__BATCH_SIZE", "500"),
        ("AUTH__EVENTS__MAX_AGE", "30d"),
        ("AUTH__EVENTS__MAX_BYTES", "1073741824"),
    ]))
    .unwrap();
    assert_eq!(
        s.events.url.as_ref().unwrap().expose(),
        "nats://127.0.0.1:4222,nats://10.0.0.2:4222"
    );
    assert_eq!(s.events.stream, "ACME_AUTH");
    assert_eq!(s.events.subject_prefix, "acme.auth-events");
    assert_eq!(s.events.poll_interval, Span::secs(1));
    assert_eq!(s.events.batch_size, 500);
    assert_eq!(s.events.max_age, Span::secs(30 * 86_400));
    assert_eq!(s.events.max_bytes, Some(1 << 30));
    let (_dir, sources) = file("[events]\nurl = \"tls://broker:4222\"\nstream = \"S\"\n");
    let s = Settings::load(&sources).unwrap();
    assert_eq!(s.events.url.unwrap().expose(), "tls://broker:4222");
}

#[test]
fn bad_event_settings_are_refused_by_name() {
    for (key, value) in [
        ("AUTH__EVENTS__URL", "http://broker:4222"),
        ("AUTH__EVENTS__URL", "nats://"),
        ("AUTH__EVENTS__URL", "nats://a:4222,broker:4222"),
        ("AUTH__EVENTS__STREAM", "auth.events"),
        ("AUTH__EVENTS__STREAM", "has space"),
        ("AUTH__EVENTS__SUBJECT_PREFIX", "auth.*"),
        ("AUTH__EVENTS__SUBJECT_PREFIX", "auth.>"),
        ("AUTH__EVENTS__SUBJECT_PREFIX", "auth..events"),
        ("AUTH__EVENTS__SUBJECT_PREFIX", ".auth"),
        ("AUTH__EVENTS__SUBJECT_PREFIX", "auth events"),
        ("AUTH__EVENTS__POLL_INTERVAL", "1ms"),
        ("AUTH__EVENTS__POLL_INTERVAL", "200"),
        ("AUTH__EVENTS__BATCH_SIZE", "0"),
        ("AUTH__EVENTS__BATCH_SIZE", "100001"),
        ("AUTH__EVENTS__PUBLISH_TIMEOUT", "10ms"),
        ("AUTH__EVENTS__MAX_AGE", "1m"),
        ("AUTH__EVENTS__MAX_AGE", "7"),
        ("AUTH__EVENTS__MAX_BYTES", "1000"),
        ("AUTH__EVENTS__MAX_BYTES", "1GB"),
        ("AUTH__EVENTS__MAX_BYTES", "-1"),
    ] {
        let e = error_of(&env(&[(key, value)]));
        let name = key
            .trim_start_matches("AUTH__")
            .replace("__", ".")
            .to_lowercase();
        assert!(e.contains(&name), "{key}={value}: {e}");
    }
    let e = error_of(&env(&[("AUTH__EVENTS__HOST", "x")]));
    assert!(e.contains("host"), "{e}");
}

#[test]
fn broker_credentials_never_printed() {
    for (url, shown) in [
        (
            "nats://relay:hunter2@broker:4222",
            "nats://relay:***@broker:4222",
        ),
        ("nats://s3cr3t-token@broker:4222", "nats://***@broker:4222"),
        ("nats://broker:4222", "nats://broker:4222"),
    ] {
        let s = Settings::load(&env(&[("AUTH__EVENTS__URL", url)])).unwrap();
        let summary = s.render_redacted();
        assert!(
            summary.contains(&format!("events.url = \"{shown}\"")),
            "{summary}"
        );
        let debug = format!("{s:?}");
        for text in [&summary, &debug] {
            assert!(
                !text.contains("hunter2") && !text.contains("s3cr3t"),
                "{text}"
            );
        }
    }
}

#[test]
fn the_env_example_placeholder_is_refused_as_the_user_service_secret() {
    let remote = [
        ("AUTH__USERS__SOURCE", "remote"),
        ("AUTH__USERS__REMOTE_URL", "http://user-service:8090"),
    ];
    for placeholder in [
        "change-me-to-a-third-long-random-value",
        "0123456789abcdef0123456789-Change-Me",
    ] {
        let mut pairs = remote.to_vec();
        pairs.push(("AUTH__USERS__REMOTE_SECRET", placeholder));
        let e = error_of(&env(&pairs));
        assert!(
            e.contains("users.remote_secret: still the placeholder"),
            "{e}"
        );
        assert!(!e.contains(placeholder), "{e}");
    }
    let mut pairs = remote.to_vec();
    pairs.push((
        "AUTH__USERS__REMOTE_SECRET",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    ));
    assert!(Settings::load(&env(&pairs)).is_ok());
    assert!(!is_placeholder_secret(
        "a-changeable-but-random-value-0123456789"
    ));
}

#[test]
fn the_env_example_database_password_is_refused() {
    let shipped = "postgres://auth:change-me-to-a-long-random-value@db:5432/auth";
    let e = error_of(&env(&[("DATABASE_URL", shipped)]));
    assert!(
        e.contains("database.url: the password: still the placeholder"),
        "{e}"
    );
    assert!(!e.contains("change-me-to"), "{e}");
    // Only the credentials are looked at.
    let fine = "postgres://auth:9f86d081884c7d659a2feaa0c55ad015@change-me.internal:5432/auth";
    assert!(Settings::load(&env(&[("DATABASE_URL", fine)])).is_ok());
}

#[test]
fn the_user_service_secret_is_checked_with_the_settings() {
    // So `check-config` refuses what `serve` would: too short, or the placeholder, whether
    // given inline or in a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    let remote = [
        ("AUTH__USERS__SOURCE", "remote"),
        ("AUTH__USERS__REMOTE_URL", "http://user-service:8090"),
    ];
    let with = |pair: (&str, &str)| {
        let mut pairs = remote.to_vec();
        pairs.push(pair);
        env(&pairs)
    };
    let e = error_of(&with(("AUTH__USERS__REMOTE_SECRET", "short")));
    assert!(
        e.contains("users.remote_secret: must be at least 32"),
        "{e}"
    );
    let path = file.to_str().unwrap();
    std::fs::write(&file, "change-me-to-a-third-long-random-value\n").unwrap();
    let e = error_of(&with(("AUTH__USERS__REMOTE_SECRET_FILE", path)));
    assert!(
        e.contains("users.remote_secret: still the placeholder"),
        "{e}"
    );
    std::fs::write(&file, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b\n").unwrap();
    let s = Settings::load(&with(("AUTH__USERS__REMOTE_SECRET_FILE", path))).unwrap();
    assert_eq!(
        s.users_remote_secret().unwrap().expose_secret(),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
    );
    let e = error_of(&env(&remote));
    assert!(e.contains("users.remote_secret: required"), "{e}");
}
