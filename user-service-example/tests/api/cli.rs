//! The command line: `user create`, `migrate`, `check-config`.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;
use testkit::{both_backends, free_port};

use crate::support::*;

/// Runs the binary with `env` only, `stdin` written to it; returns (success, stdout, stderr).
fn cli_run(
    args: &[&str],
    env: &testkit::Env,
    dir: &std::path::Path,
    stdin: &str,
) -> (bool, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

both_backends! {
    async fn user_create_then_serve(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = testkit::TestDb::new(b, dir.path());
        let port = free_port();
        let env = service_env(&db, dir.path(), port, &[]);
        let (ok, out, err) = cli_run(&["migrate"], &env, dir.path(), "");
        assert!(ok, "{err}");
        assert!(out.contains("applied migrations"), "{out}");
        let (ok, out, _) = cli_run(&["migrate"], &env, dir.path(), "");
        assert!(ok && out.contains("up to date"), "{out}");
        let password = "operator chosen password";
        let (ok, out, err) = cli_run(
            &["user", "create", "--username", "root", "--email", "Root@Example.com", "--admin"],
            &env,
            dir.path(),
            &format!("{password}\n"),
        );
        assert!(ok, "{err}");
        assert!(out.contains("created user root") && out.contains("admin,user"), "{out}");
        assert!(!out.contains(password) && !err.contains(password));
        // Refusals: taken name, weak password, no password.
        let (ok, _, err) = cli_run(&["user", "create", "--username", "ROOT"], &env, dir.path(), "another password\n");
        assert!(!ok && err.contains("taken"), "{err}");
        let (ok, _, err) = cli_run(&["user", "create", "--username", "weak"], &env, dir.path(), "short\n");
        assert!(!ok && err.contains("password"), "{err}");
        let (ok, _, err) = cli_run(&["user", "create", "--username", "none"], &env, dir.path(), "");
        assert!(!ok && err.contains("no password"), "{err}");

        let service = testkit::Service::start(
            "user-service",
            bin(),
            env,
            dir.path(),
            vec![format!("http://127.0.0.1:{port}/healthz")],
        )
        .await;
        let r = testkit::send(
            reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/v1/credentials/verify"))
                .basic_auth(CLIENT_ID, Some(SECRET))
                .json(&json!({"login": "root@example.com", "password": password})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["roles"], json!(["admin", "user"]));
        service.assert_never_logged(&[password, SECRET]);
    }
}

#[test]
fn check_config_redacts_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let base = testkit::env(&[
        ("USERS__SERVICE__CLIENT_SECRET", SECRET),
        ("USERS__ADMIN__TOKEN", ADMIN_TOKEN),
        ("USERS__DATABASE__URL", "postgres://u:dbpassword@db/users"),
        ("USERS__AUTH__URL", "http://auth:8081"),
        ("USERS__AUTH__CLIENT_SECRET", OUT_SECRET),
    ]);
    let (ok, out, err) = cli_run(&["check-config"], &base, dir.path(), "");
    assert!(ok, "{err}");
    assert!(out.contains("server.addr = \"127.0.0.1:8090\""), "{out}");
    assert!(
        out.contains("service.client_id = \"auth-service\""),
        "{out}"
    );
    for secret in [SECRET, ADMIN_TOKEN, OUT_SECRET, "dbpassword"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} shown:\n{out}{err}"
        );
    }
    for (key, value, named) in [
        (
            "USERS__SERVICE__CLIENT_SECRET",
            "too-short",
            "service.client_secret",
        ),
        ("USERS__SERVICE__CLIENT_SECRET", "", "service.client_secret"),
        ("USERS__ADMIN__TOKEN", "too-short", "admin.token"),
        // deploy/.env.example's values, as they ship: long enough, and public.
        (
            "USERS__ADMIN__TOKEN",
            "change-me-to-a-fifth-long-random-value",
            "admin.token: still the placeholder",
        ),
        (
            "USERS__SERVICE__CLIENT_SECRET",
            "change-me-to-a-third-long-random-value",
            "service.client_secret: still the placeholder",
        ),
        (
            "USERS__AUTH__CLIENT_SECRET",
            "change-me-to-a-fourth-long-random-value",
            "auth.client_secret: still the placeholder",
        ),
        ("USERS__DATABASE__URL", "mysql://x/y", "database.url"),
        ("USERS__SERVER__ADDR", "nowhere", "server.addr"),
    ] {
        let mut env = base.clone();
        env.insert(key.into(), value.into());
        env.retain(|_, v| !v.is_empty());
        let (ok, _, err) = cli_run(&["check-config"], &env, dir.path(), "");
        assert!(!ok && err.contains(named), "{key}={value}: {err}");
        assert!(!err.contains(SECRET));
    }
}
