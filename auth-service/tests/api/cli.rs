//! The binary itself: sub-commands, start-up validation, and a first run with defaults.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_auth-service");

/// The binary with none of the caller's AUTH__* or DATABASE_URL settings.
fn command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTH") || k == "DATABASE_URL" {
            c.env_remove(k);
        }
    }
    c
}

use testkit::free_port;

#[test]
fn check_config_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .arg("check-config")
        .env(
            "AUTH__KEYS__REFRESH_SECRET",
            "s3cret-refresh-value-that-is-long-enough",
        )
        .env("DATABASE_URL", "postgres://app:hunter2@db:5432/auth")
        .env("AUTH__TOKENS__ACCESS_TTL", "3s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tokens.access_ttl = \"3s\""), "{text}");
    assert!(text.contains("keys.refresh_secret = <redacted>"), "{text}");
    assert!(text.contains("postgres://app:***@db:5432/auth"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret"),
        "{text}"
    );
}

#[test]
fn bad_configuration_stops_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, expect) in [
        ("AUTH__TOKENS__ACCESS_TTL", "soon", "access_ttl"),
        ("DATABASE_URL", "mysql://db/auth", "database.url"),
        ("AUTH__DATABASE__URL", "./relative.db", "database.url"),
        (
            "AUTH__SERVER__INTERNAL_ADDR",
            "somewhere",
            "server.internal_addr",
        ),
        ("AUTH__KEYS__ALGORITHM", "none", "algorithm"),
    ] {
        let out = command(dir.path())
            .arg("serve")
            .env(key, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{key}={value}: {err}");
    }
    let out = command(dir.path())
        .args(["--config", "/nonexistent.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Key material is checked too, by name, and checking writes nothing.
    for (key, value, expect) in [
        ("AUTH__KEYS__SIGNING_KEY", "not a pem", "keys.signing_key"),
        (
            "AUTH__KEYS__REFRESH_SECRET",
            "too short",
            "keys.refresh_secret",
        ),
        (
            "AUTH__KEYS__SIGNING_KEY_FILE",
            "/nonexistent/key.pem",
            "keys.signing_key_file",
        ),
    ] {
        let out = command(dir.path())
            .arg("check-config")
            .env(key, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{key}: {err}");
        assert!(
            !err.contains(value) || value.starts_with('/'),
            "the bad secret is echoed: {err}"
        );
    }
    let out = command(dir.path()).arg("check-config").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("# active access-token key: kid="));
    assert!(
        !dir.path().join("data").exists(),
        "check-config wrote files"
    );
}

#[test]
fn check_config_prints_what_was_configured_and_names_allowed_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .arg("check-config")
        .env("AUTH__TOKENS__REFRESH_TTL", "90d")
        .env(
            "DATABASE_URL",
            "postgres://app@db/auth?password=hunter2&sslmode=require",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tokens.refresh_ttl = \"90d\""), "{text}");
    assert!(
        text.contains("postgres://app@db/auth?password=***&sslmode=require"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    for (key, value, expect) in [
        (
            "AUTH__KEYS__ALGORITHM",
            "RS256",
            "keys.algorithm: expected one of EdDSA, ES256, HS256",
        ),
        (
            "AUTH__LOGIN__MAX_FAILURES",
            "-1",
            "login.max_failures: expected a whole number from 0 to 4294967295",
        ),
    ] {
        let out = command(dir.path())
            .arg("check-config")
            .env(key, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{key}={value}: {err}");
    }
}

#[test]
fn an_explicit_sqlite_path_needs_an_existing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexistent/dir/a.db");
    let out = command(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", format!("sqlite://{}", missing.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        !dir.path().join("nonexistent").exists(),
        "the directory was created"
    );
}

#[test]
fn user_create_without_a_password_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["user", "create", "--username", "root"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no password was given"), "{err}");
}

#[test]
fn a_second_server_on_one_sqlite_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let serve = || {
        let (public, internal) = (free_port(), free_port());
        command(dir.path())
            .env("AUTH__SERVER__PUBLIC_ADDR", format!("127.0.0.1:{public}"))
            .env(
                "AUTH__SERVER__INTERNAL_ADDR",
                format!("127.0.0.1:{internal}"),
            )
            .env("AUTH__PASSWORD__MEMORY_KIB", "256")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = serve();
    // Until the first one is up (its data directory and lock exist).
    let mut up = false;
    for _ in 0..300 {
        up = dir.path().join("data/auth.db.serve-lock").exists()
            && dir.path().join("data/keys").exists();
        if up {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !up {
        let _ = first.kill();
        let _ = first.wait();
        panic!("the first server did not start within 30 s");
    }
    std::thread::sleep(Duration::from_millis(300));
    let second = serve().wait_with_output().unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another auth-service is already serving"),
        "{err}"
    );
    // Commands still run beside a server.
    let out = command(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["check-config", "--help"],
        vec!["keys", "rotate", "--help"],
        vec!["keys", "list", "--help"],
    ] {
        let out = command(dir.path()).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn first_run_with_defaults_creates_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (public, internal) = (free_port(), free_port());
    let mut child = command(dir.path())
        .env("AUTH__SERVER__PUBLIC_ADDR", format!("127.0.0.1:{public}"))
        .env(
            "AUTH__SERVER__INTERNAL_ADDR",
            format!("127.0.0.1:{internal}"),
        )
        .env("AUTH__PASSWORD__MEMORY_KIB", "256")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", public)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", internal)).is_ok()
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(ready, "server did not come up: {log}");
    assert!(dir.path().join("data/auth.db").exists());
    assert!(dir.path().join("data/keys/access-eddsa.pem").exists());
    assert!(dir.path().join("data/keys/refresh-hs256.secret").exists());
    assert!(log.contains("generated a new EdDSA key"), "{log}");
    // The log names files and ids, never key material.
    assert!(!log.contains("PRIVATE KEY"), "{log}");
}

both_backends! {
    async fn migrate_command(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(b, dir.path());
        let run = || command(dir.path()).arg("migrate").env("DATABASE_URL", &db.url).output().unwrap();
        let first = run();
        assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
        assert!(String::from_utf8_lossy(&first.stdout).contains("applied migrations"));
        let second = run();
        assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
        assert!(String::from_utf8_lossy(&second.stdout).contains("no pending migrations"));
    }

    async fn instances_started_together_all_migrate(b: Backend) {
        // Replicas starting at once on a fresh database: one migrates, the others wait for
        // it and find nothing left to do. Every one of them succeeds.
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(b, dir.path());
        let children: Vec<_> = (0..4)
            .map(|_| {
                command(dir.path())
                    .arg("migrate")
                    .env("DATABASE_URL", &db.url)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        for out in &outputs {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let applied = outputs
            .iter()
            .filter(|o| String::from_utf8_lossy(&o.stdout).contains("applied migrations"))
            .count();
        assert_eq!(applied, 1, "exactly one instance applies the migrations");
    }
}

fn run_with_stdin(mut cmd: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

both_backends! {
    async fn user_commands_create_admins_and_change_roles(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__REVOCATION__POLL_INTERVAL", "200ms")]).await;
        let cli = |args: &[&str]| {
            let mut c = command(app.data_dir.path());
            c.args(args)
                .env("DATABASE_URL", &app.db.url)
                .env("AUTH__DATA_DIR", app.data_dir.path())
                .env("AUTH__PASSWORD__MEMORY_KIB", "256");
            c
        };
        let out = run_with_stdin(cli(&["user", "create", "--username", "root", "--admin"]), "a strong admin password\n");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("admin,user"));
        let login = app.login("root", "a strong admin password").await;
        assert_eq!(login.status, 200, "{}", login.body);
        assert_eq!(claims(&login.str("access_token"))["roles"], serde_json::json!(["admin", "user"]));
        // The first registered user is never an admin by itself.
        let (bob_at, _) = app.signed_in("bob").await;
        assert_eq!(claims(&bob_at)["roles"], serde_json::json!(["user"]));
        // Bad input: short password, taken name.
        let out = run_with_stdin(cli(&["user", "create", "--username", "carol"]), "short\n");
        assert!(!out.status.success());
        let out = run_with_stdin(cli(&["user", "create", "--username", "ROOT"]), "long enough password\n");
        assert!(!out.status.success());

        let out = cli(&["user", "grant-role", "--username", "bob", "--role", "editor"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = cli(&["user", "revoke-role", "--username", "bob", "--role", "editor"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 session(s) ended"));
        // The running server learns of the revocation from the database.
        let mut revoked = false;
        for _ in 0..50 {
            if app.verify(&bob_at).await.body["error"] == "token_revoked" {
                revoked = true;
                break;
            }
            sleep_secs(0.1).await;
        }
        assert!(revoked, "the running server never saw the revocation");
        // The last admin cannot be demoted from the command line either.
        let out = cli(&["user", "revoke-role", "--username", "root", "--role", "admin"]).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("administrator"));
        let out = cli(&["user", "grant-role", "--username", "nobody", "--role", "admin"]).output().unwrap();
        assert!(!out.status.success());
    }

    async fn prune_command(b: Backend) {
        let app = TestApp::spawn(b).await;
        app.signed_in("alice").await;
        let out = command(app.data_dir.path())
            .arg("prune")
            .env("DATABASE_URL", &app.db.url)
            .env("AUTH__DATA_DIR", app.data_dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("pruned 0 audit event(s), 0 refresh token(s), 0 session(s)"));
    }
}

#[test]
fn client_commands_register_list_rotate_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], stdin: &str| {
        run_with_stdin(
            {
                let mut c = command(dir.path());
                c.args(args);
                c
            },
            stdin,
        )
    };
    let out = cli(
        &[
            "client",
            "create",
            "--client-id",
            "posts-api",
            "--introspect",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("posts-api (may: introspect)"), "{text}");
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret (shown once): "))
        .unwrap()
        .to_string();
    assert_eq!(secret.len(), 43);
    // A given secret must be long; a taken id is refused.
    let out = cli(&["client", "create", "--client-id", "short"], "too-short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("32 to 512"));
    // So is deploy/.env.example's placeholder, long as it is, in any case.
    for placeholder in [
        "change-me-to-another-long-random-value",
        "PLEASE-CHANGE-ME-0123456789abcdef0123",
    ] {
        let out = cli(
            &["client", "create", "--client-id", "example"],
            &format!("{placeholder}\n"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("still the placeholder"),
            "{err}"
        );
        assert!(!err.contains(placeholder), "{err}");
    }
    let out = cli(&["client", "create", "--client-id", "posts-api"], "");
    assert!(!out.status.success());
    // An id shaped like a user's id is refused.
    let out = cli(
        &[
            "client",
            "create",
            "--client-id",
            "5b0e2c3a-1d2f-4e5a-8b6c-7d8e9f0a1b2c",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not be a UUID"));
    let long = "a".repeat(40);
    let out = cli(
        &[
            "client",
            "create",
            "--client-id",
            "legacy",
            "--password-grant",
        ],
        &format!("{long}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("secret (shown once)"),
        "a given secret is not echoed"
    );
    let listed = String::from_utf8_lossy(&cli(&["client", "list"], "").stdout).to_string();
    assert!(
        listed.contains("legacy (may: password grant)") && listed.contains("posts-api"),
        "{listed}"
    );
    assert!(!listed.contains(&secret) && !listed.contains(&long));
    let out = cli(&["client", "rotate-secret", "posts-api"], "");
    let rotated = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        rotated.contains("secret (shown once)") && !rotated.contains(&secret),
        "{rotated}"
    );
    assert!(cli(&["client", "delete", "posts-api"], "").status.success());
    assert!(!cli(&["client", "delete", "posts-api"], "").status.success());

    // Provisioning: the secret from a file, and --update-existing converges.
    let file = dir.path().join("worker.secret");
    std::fs::write(&file, format!("  {}\n", "w".repeat(40))).unwrap();
    let file = file.to_str().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec![
            "client",
            "create",
            "--client-id",
            "worker",
            "--secret-file",
            file,
        ];
        args.extend_from_slice(extra);
        cli(&args, "")
    };
    let out = create(&["--introspect", "--update-existing"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("created client worker (may: introspect)"),
        "{text}"
    );
    assert!(!text.contains("secret (shown once)") && !text.contains(&"w".repeat(40)));
    assert!(
        !create(&["--introspect"]).status.success(),
        "a taken id without --update-existing"
    );
    let out = create(&[
        "--client-credentials",
        "--scope",
        "jobs:run",
        "--update-existing",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("updated client worker (may: client_credentials; scopes: jobs:run)"),
        "{text}"
    );
    let listed = String::from_utf8_lossy(&cli(&["client", "list"], "").stdout).to_string();
    assert!(
        listed.contains("worker (may: client_credentials; scopes: jobs:run)"),
        "{listed}"
    );
    std::fs::write(file, "\n").unwrap();
    let out = create(&["--update-existing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    // Or from an environment variable, never echoed.
    let from_env = |value: Option<&str>| {
        let mut c = command(dir.path());
        c.args([
            "client",
            "create",
            "--client-id",
            "env-client",
            "--introspect",
            "--update-existing",
            "--secret-env",
            "ENV_CLIENT_SECRET",
        ]);
        if let Some(v) = value {
            c.env("ENV_CLIENT_SECRET", v);
        }
        run_with_stdin(c, "")
    };
    let out = from_env(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ENV_CLIENT_SECRET is not set"));
    let secret = "e".repeat(36);
    let out = from_env(Some(&secret));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&secret));
    let out = from_env(Some(&secret));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("updated client env-client (may: introspect)")
    );
}

/// Settings the key-rotation test shares between its servers and the command line: the same
/// keys.dir, lifetimes and reload interval (a retired key's time depends on all three).
const ROTATION_ENV: [(&str, &str); 3] = [
    ("AUTH__TOKENS__ACCESS_TTL", "60s"),
    ("AUTH__TOKENS__LEEWAY", "0s"),
    ("AUTH__REVOCATION__POLL_INTERVAL", "200ms"),
];

fn keys_command_output(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut c = command(app.data_dir.path());
    c.arg("keys")
        .args(args)
        .env("AUTH__DATA_DIR", app.data_dir.path())
        .env("AUTH__DATABASE__URL", &app.db.url);
    for (k, v) in ROTATION_ENV {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn keys_command(app: &TestApp, args: &[&str]) -> String {
    let out = keys_command_output(app, args);
    assert!(
        out.status.success(),
        "keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The word after `prefix` on the line that has it.
fn word_after<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
}

/// An RFC 3339 time the command line printed, as Unix seconds.
fn unix_time(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .unix_timestamp()
}

async fn published_kids(app: &TestApp, public: &str) -> Vec<String> {
    let r = app
        .send(app.client.get(format!("{public}/.well-known/jwks.json")))
        .await;
    assert_eq!(r.status, 200);
    let mut kids: Vec<String> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    kids.sort();
    kids
}

/// Alice's access token, from the instance at `public`.
async fn alice_at(app: &TestApp, public: &str) -> String {
    let body = serde_json::json!({"username": "alice", "password": "correct horse battery"});
    let r = app
        .send(app.client.post(format!("{public}/login")).json(&body))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.str("access_token")
}

/// Waits (the servers re-read keys.dir every 200 ms here) until `done`, for at most 5 s.
async fn within_seconds<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    for _ in 0..50 {
        if done().await {
            return;
        }
        sleep_secs(0.1).await;
    }
    panic!("not within 5 s: {what}");
}

both_backends! {
    async fn keys_rotate_switches_running_replicas_and_retires_the_old_key(b: Backend) {
        let app = TestApp::spawn_with(b, &ROTATION_ENV).await;
        // SQLite serves one instance; on PostgreSQL a replica shares keys.dir (and the clock).
        let replica = match b {
            Backend::Postgres => Some(app.replica(&[]).await),
            _ => None,
        };
        let publics: Vec<String> = std::iter::once(app.public.clone()).chain(replica.iter().map(|r| r.public.clone())).collect();
        let internals: Vec<String> = std::iter::once(app.internal.clone()).chain(replica.iter().map(|r| r.internal.clone())).collect();
        let (first, _) = app.signed_in("alice").await;
        let old_kid = header(&first)["kid"].as_str().unwrap().to_string();
        // Issued before the rotation, never verified before it (so not in the verify cache).
        let old_token = alice_at(&app, &app.public).await;
        assert_eq!(published_kids(&app, &app.public).await, std::slice::from_ref(&old_kid));

        // The command line runs on the real clock: the new key signs from then + 301 s
        // (twice the 200 ms reload interval, rounded up, plus the JWKS max-age of 300 s).
        let before = time::OffsetDateTime::now_utc().unix_timestamp();
        let out = keys_command(&app, &["rotate"]);
        let after = time::OffsetDateTime::now_utc().unix_timestamp();
        let new_kid = word_after(&out, "pending access-token key: kid=").to_string();
        assert_ne!(new_kid, old_kid);
        let signs_from = unix_time(word_after(&out, "signs from "));
        assert!((before + 301..=after + 301).contains(&signs_from), "{out}");
        assert!(out.contains(&format!("then it retires kid={old_kid}: still published and accepted until")), "{out}");
        let until = unix_time(word_after(&out, "accepted until "));
        assert_eq!(until, signs_from + 1 + 60, "{out}");
        assert!(!out.contains("PRIVATE"), "{out}");
        // A second rotation while this one is pending is refused.
        let again = keys_command_output(&app, &["rotate"]);
        assert_eq!(again.status.code(), Some(1));
        let err = String::from_utf8_lossy(&again.stderr);
        assert!(err.contains(&format!("a rotation is pending already: kid={new_kid}")), "{err}");
        let listed = keys_command(&app, &["list"]);
        assert!(listed.contains(&format!("{old_kid}\tEdDSA\tactive")), "{listed}");
        assert!(listed.contains(&format!("{new_kid}\tEdDSA\tpending, signs from ")), "{listed}");
        assert!(!listed.contains("KEY-----"), "{listed}");

        // Every instance publishes both keys, and still signs with the old one.
        let mut both = vec![old_kid.clone(), new_kid.clone()];
        both.sort();
        for public in &publics {
            within_seconds("the new key is published", || async {
                published_kids(&app, public).await == both
            })
            .await;
            assert_eq!(header(&alice_at(&app, public).await)["kid"], old_kid.as_str(), "signs with the old key until {signs_from}");
        }
        // A token signed with the new key (the pending key file's, with the old token's
        // claims) is accepted by every instance before any of them signs with it.
        let pending_file = std::fs::read_dir(app.data_dir.path().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().contains(&format!(".next-{signs_from}.{new_kid}.")))
            .expect("the pending key's file");
        let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        jwt_header.kid = Some(new_kid.clone());
        jwt_header.typ = Some("at+jwt".into());
        let key = jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(&pending_file).unwrap()).unwrap();
        let early_new = jsonwebtoken::encode(&jwt_header, &claims(&old_token), &key).unwrap();
        for internal in &internals {
            assert_eq!(app.verify_at(internal, &early_new).await.status, 200, "the new key verifies before it signs");
            assert_eq!(app.verify_at(internal, &old_token).await.status, 200);
        }

        // Just before its time: still the old key. Then at its time every instance switches
        // by itself (nothing else runs), and accepts tokens of both keys.
        app.advance(u64::try_from(signs_from - 1 - app.now()).unwrap());
        let last_old = alice_at(&app, &app.public).await;
        assert_eq!(header(&last_old)["kid"], old_kid.as_str());
        app.advance(1);
        for public in &publics {
            within_seconds("new tokens carry the new kid", || async {
                header(&alice_at(&app, public).await)["kid"] == new_kid.as_str()
            })
            .await;
            assert_eq!(published_kids(&app, public).await, both);
        }
        let new_token = alice_at(&app, &app.public).await;
        for internal in &internals {
            assert_eq!(app.verify_at(internal, &last_old).await.status, 200, "old key still verifies");
            assert_eq!(app.verify_at(internal, &new_token).await.status, 200);
        }

        // After access_ttl (+ leeway, + twice the reload interval) every token the old key
        // signed has expired: the servers drop it.
        app.advance(u64::try_from(until + 1 - app.now()).unwrap());
        for public in &publics {
            within_seconds("the old key is dropped", || async {
                published_kids(&app, public).await == [new_kid.clone()]
            })
            .await;
        }
        let fresh = alice_at(&app, &app.public).await;
        assert_eq!(header(&fresh)["kid"], new_kid.as_str());
        for internal in &internals {
            assert_eq!(app.verify_at(internal, &fresh).await.status, 200);
        }
    }
}

#[test]
fn keys_rotate_publishes_first_and_now_switches_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let keys = |args: &[&str]| command(dir.path()).arg("keys").args(args).output().unwrap();
    let ok = |args: &[&str]| {
        let out = keys(args);
        assert!(
            out.status.success(),
            "keys {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // No key yet: the first one signs at once.
    let out = ok(&["rotate"]);
    let first = word_after(&out, "new active access-token key: kid=").to_string();
    assert!(out.contains("there was no key before"), "{out}");
    // The next one is published first (5 s poll interval by default: 10 s + 300 s).
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let out = ok(&["rotate"]);
    let pending = word_after(&out, "pending access-token key: kid=").to_string();
    let signs_from = unix_time(word_after(&out, "signs from "));
    assert!(signs_from >= before + 310, "{out}");
    assert!(
        out.contains(&format!("then it retires kid={first}: still published")),
        "{out}"
    );
    let listed = ok(&["list"]);
    assert!(
        listed.contains(&format!("{first}\tEdDSA\tactive\n")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{pending}\tEdDSA\tpending, signs from ")),
        "{listed}"
    );
    let out = keys(&["rotate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("a rotation is pending already: kid={pending}"))
            && err.contains("--now"),
        "{err}"
    );
    // --now: a new key signs at once; the pending one is retired instead of signing.
    let out = ok(&["rotate", "--now"]);
    let now_kid = word_after(&out, "new active access-token key: kid=").to_string();
    assert!(
        out.contains(&format!(
            "retired kid={first}: still published and accepted until"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "pending kid={pending} will not sign: retired instead, still accepted until"
        )),
        "{out}"
    );
    assert!(
        out.contains("refuses tokens signed with the new key"),
        "{out}"
    );
    let listed = ok(&["list"]);
    assert!(
        listed.contains(&format!("{now_kid}\tEdDSA\tactive")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{first}\tEdDSA\tretired until ")),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{pending}\tEdDSA\tretired until "))
            && !listed.contains("KEY-----"),
        "{listed}"
    );
}

#[test]
fn keys_rotate_refuses_a_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = auth_service::security::keys::generate(auth_service::config::SigningAlgorithm::EdDSA)
        .unwrap();
    let file = dir.path().join("access.pem");
    std::fs::write(&file, secrecy::ExposeSecret::expose_secret(&key)).unwrap();
    let out = command(dir.path())
        .args(["keys", "rotate"])
        .env("AUTH__KEYS__SIGNING_KEY_FILE", &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keys.signing_key_file is set") && err.contains("keys.verification_keys"),
        "{err}"
    );
    // The configured key is listed as active, by kid only.
    let out = command(dir.path())
        .args(["keys", "list"])
        .env("AUTH__KEYS__SIGNING_KEY_FILE", &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\tEdDSA\tactive") && !text.contains("KEY-----"),
        "{text}"
    );
    assert!(
        !dir.path().join("data/keys/access-eddsa.pem").exists(),
        "generated nothing"
    );
}
