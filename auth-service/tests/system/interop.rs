//! Interoperability with client libraries of other ecosystems, unmodified: Node's `jose`
//! verifies access tokens with the keys from `/.well-known/jwks.json`; Python's Authlib uses
//! the token, introspection and revocation endpoints found through the discovery metadata.
//! `tools/test.sh` installs them (npm, pip) into `INTEROP_NODE_DIR` (default
//! `target/interop`) and the virtualenv `INTEROP_PYTHON` (default
//! `target/interop/venv/bin/python`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::*;

fn node_dir() -> PathBuf {
    std::env::var_os("INTEROP_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::workspace_root().join("target/interop"))
}

/// Runs the jose script on `token`; its one line of JSON.
fn jose_verify(jwks_url: &str, token: &str, issuer: &str, audience: &str) -> Value {
    let dir = node_dir();
    assert!(
        dir.join("node_modules/jose").is_dir(),
        "the jose library is missing from {}: run tools/test.sh, which installs it with npm",
        dir.display()
    );
    // ESM resolves `jose` from the script's own directory.
    let script = dir.join("jose_verify.mjs");
    std::fs::copy(
        testkit::workspace_root().join("auth-service/tests/interop/jose_verify.mjs"),
        &script,
    )
    .unwrap();
    let out = Command::new("node")
        .arg(&script)
        .args([jwks_url, token, issuer, audience])
        .output()
        .expect("node (Node.js 20) on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

both_backends! {
    async fn node_jose_verifies_access_tokens_with_the_published_keys(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(b, dir.path());
        let auth = Auth::start(dir.path(), &db.url, &[]).await;
        assert_eq!(auth.register("alice").await.status, 201);
        let r = auth.login("alice").await;
        let (at, rt) = (r.str("access_token"), r.str("refresh_token"));
        let jwks = format!("{}/.well-known/jwks.json", auth.public);

        let good = jose_verify(&jwks, &at, "auth-service", "resource-servers");
        assert_eq!(good["ok"], true, "{good}");
        assert_eq!(good["sub"], testkit::sub_of(&at).as_str());
        // Another audience, another issuer, a refresh token, a changed byte: all refused.
        for (token, issuer, audience) in [
            (at.as_str(), "auth-service", "someone-else"),
            (at.as_str(), "another-issuer", "resource-servers"),
            (rt.as_str(), "auth-service", "resource-servers"),
        ] {
            let refused = jose_verify(&jwks, token, issuer, audience);
            assert_eq!(refused["ok"], false, "{refused}");
        }
        let mut tampered = at.clone().into_bytes();
        let i = tampered.len() - 3;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let refused = jose_verify(&jwks, &String::from_utf8(tampered).unwrap(), "auth-service", "resource-servers");
        assert_eq!(refused["ok"], false, "{refused}");
    }
}

fn python() -> PathBuf {
    std::env::var_os("INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| node_dir().join("venv/bin/python"))
}

/// Registers a client with the real command line; its generated secret.
fn register_client(auth: &Auth, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .env_clear()
        .envs(&auth.service.env)
        .args(["client", "create"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("secret (shown once): "))
        .expect("a generated secret")
        .to_string()
}

both_backends! {
    async fn python_authlib_uses_discovery_token_introspection_and_revocation(b: Backend) {
        let python = python();
        assert!(
            python.exists(),
            "Authlib's virtualenv is missing at {}: run tools/test.sh, which installs it with pip",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(b, dir.path());
        let auth = Auth::start(dir.path(), &db.url, &[]).await;
        assert_eq!(auth.register("alice").await.status, 201);
        let app_secret = register_client(&auth, &["--client-id", "python-app", "--password-grant"]);
        let rs_secret = register_client(&auth, &["--client-id", "python-rs", "--introspect"]);
        let worker_secret = register_client(
            &auth,
            &["--client-id", "python-worker", "--client-credentials", "--scope", "reports:read", "--scope", "reports:write"],
        );
        let out = Command::new(&python)
            .arg(testkit::workspace_root().join("auth-service/tests/interop/authlib_client.py"))
            .args([&auth.public, "python-app", &app_secret, "python-rs", &rs_secret, "alice", PASSWORD])
            .args(["python-worker", &worker_secret])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(seen["grant_types"], serde_json::json!(["refresh_token", "password", "client_credentials"]), "{seen}");
        assert_eq!(seen["token_type"], "Bearer");
        assert_eq!(seen["has_refresh_token"], true);
        assert_eq!(seen["refresh_rotated"], true);
        assert_eq!(seen["access_active"]["active"], true, "{seen}");
        assert_eq!(seen["access_active"]["username"], "alice");
        assert_eq!(seen["old_refresh_active"], false);
        assert_eq!(seen["after_revoke_active"], false);
        assert_eq!(seen["refresh_after_revoke"], "invalid_grant", "{seen}");
        assert_eq!(seen["machine_scope"], "reports:read", "{seen}");
        assert_eq!(seen["machine_has_refresh_token"], false);
        assert_eq!(seen["machine_introspected"]["active"], true, "{seen}");
        assert_eq!(seen["machine_introspected"]["client_id"], "python-worker");
        assert_eq!(seen["machine_revoked_by_other"], serde_json::json!([400, "unauthorized_client"]), "{seen}");
        assert_eq!(seen["machine_active_after_refusal"], true, "{seen}");
        assert_eq!(seen["machine_revoked_by_owner"], 200, "{seen}");
        assert_eq!(seen["machine_after_revoke"], serde_json::json!({"active": false}), "{seen}");
        auth.service.assert_never_logged(&[&app_secret, &rs_secret, &worker_secret, PASSWORD]);
    }
}
