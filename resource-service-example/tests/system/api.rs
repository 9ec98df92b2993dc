//! The posts API and its refusals. The resource service keeps its posts in memory and only
//! talks to the auth service over HTTP, so its behaviour does not depend on the auth
//! service's database: these run against a SQLite-backed auth service, or against a stand-in
//! `/verify` where the point is what the auth service answers. The end-to-end flow runs on
//! both backends.

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use crate::support::*;

/// A resource service in front of a stand-in `/verify`.
async fn resource_service_with(verify_url: &str, extra: &[(&str, &str)]) -> (Service, String) {
    let port = free_port();
    let mut env = resource_env(port, verify_url);
    env.extend(crate::support::env(extra));
    let dir = std::env::temp_dir();
    let rs = format!("http://127.0.0.1:{port}");
    let service = Service::start(
        "resource-service-example",
        Path::new(RESOURCE_SERVICE_BIN),
        env,
        &dir,
        vec![format!("{rs}/healthz")],
    )
    .await;
    (service, rs)
}

#[actix_web::test]
async fn posts_ownership_and_admin_delete() {
    let stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let (alice, _) = stack.signed_in("alice").await;
    let (bob, _) = stack.signed_in("bob").await;
    // An administrator, made the way an operator makes one.
    let out = stack.auth_cli(
        &["user", "create", "--username", "root", "--admin"],
        "a strong admin password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = stack
        .auth_post(
            "/login",
            json!({"username": "root", "password": "a strong admin password"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let root = r.str("access_token");

    let first = stack.rs_post("  first  ", &alice).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["text"], "first", "text is trimmed");
    let second = stack.rs_post("second", &alice).await;
    let bobs = stack.rs_post("bob's", &bob).await;
    let (p1, p2, pb) = (first.str("id"), second.str("id"), bobs.str("id"));

    // Each caller lists their own posts, newest first.
    let mine = stack.rs_get("/posts", &alice).await;
    let ids: Vec<&str> = mine.body["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [p2.as_str(), p1.as_str()]);
    let theirs = stack.rs_get("/posts", &bob).await;
    assert_eq!(theirs.body["posts"].as_array().unwrap().len(), 1);
    assert_eq!(theirs.body["posts"][0]["id"], pb.as_str());

    // Any signed-in user reads any post; only the owner or an admin deletes it.
    let r = stack.rs_get(&format!("/posts/{p1}"), &bob).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["owner_username"], "alice");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    stack
        .rs_delete(&format!("/posts/{p1}"), &bob)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        stack.rs_get(&format!("/posts/{p1}"), &alice).await.status,
        200
    );
    assert_eq!(
        stack.rs_delete(&format!("/posts/{p1}"), &root).await.status,
        204
    );
    stack
        .rs_get(&format!("/posts/{p1}"), &alice)
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        stack
            .rs_delete(&format!("/posts/{p2}"), &alice)
            .await
            .status,
        204
    );
    stack
        .rs_delete(&format!("/posts/{p2}"), &alice)
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        stack.rs_get("/posts", &alice).await.body,
        json!({"posts": []})
    );
    assert_eq!(
        stack.rs_get("/posts", &bob).await.body["posts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    stack.resource.assert_never_logged(&[&alice, &bob, &root]);
}

#[actix_web::test]
async fn bad_requests_get_a_clear_4xx() {
    let stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let (at, _) = stack.signed_in("alice").await;
    let post = |body: &'static [u8], content_type: Option<&'static str>| {
        let mut req = stack
            .rs_request(Method::POST, "/posts")
            .bearer_auth(&at)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        send(req)
    };
    let json_ct = Some("application/json");
    post(b"{\"text\": ", json_ct)
        .await
        .assert_error(400, "invalid_request");
    post(b"not json", json_ct)
        .await
        .assert_error(400, "invalid_request");
    post(b"", json_ct)
        .await
        .assert_error(400, "invalid_request");
    post(b"[1,2]", json_ct)
        .await
        .assert_error(400, "invalid_request");
    post(b"{\"text\": 5}", json_ct)
        .await
        .assert_error(400, "invalid_request");
    post(
        b"{\"text\": \"x\", \"owner_id\": \"someone-else\"}",
        json_ct,
    )
    .await
    .assert_error(400, "invalid_request");
    post(b"{\"text\": \"   \"}", json_ct)
        .await
        .assert_error(400, "validation_failed");
    post(b"{\"text\": \"hi\"}", Some("text/plain"))
        .await
        .assert_error(415, "unsupported_media_type");
    post(b"{\"text\": \"hi\"}", None)
        .await
        .assert_error(415, "unsupported_media_type");
    let long = json!({ "text": "é".repeat(501) });
    send(
        stack
            .rs_request(Method::POST, "/posts")
            .bearer_auth(&at)
            .json(&long),
    )
    .await
    .assert_error(400, "validation_failed");
    let huge = json!({ "text": "a".repeat(5000) });
    send(
        stack
            .rs_request(Method::POST, "/posts")
            .bearer_auth(&at)
            .json(&huge),
    )
    .await
    .assert_error(413, "payload_too_large");
    // Charset parameters are fine.
    let r = post(
        b"{\"text\": \"ok\"}",
        Some("application/json; charset=utf-8"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);

    for path in [
        "/posts/not-a-uuid",
        "/posts/%00",
        "/posts/00000000-0000-0000-0000-000000000000",
    ] {
        stack.rs_get(path, &at).await.assert_error(404, "not_found");
        stack
            .rs_delete(path, &at)
            .await
            .assert_error(404, "not_found");
    }
    stack
        .rs_get("/nothing/here", &at)
        .await
        .assert_error(404, "not_found");
    send(stack.rs_request(Method::PUT, "/posts").bearer_auth(&at))
        .await
        .assert_error(405, "method_not_allowed");
    send(stack.rs_request(Method::PATCH, "/posts/x").bearer_auth(&at))
        .await
        .assert_error(405, "method_not_allowed");
    // Nothing above created a post but the one good request.
    assert_eq!(
        stack.rs_get("/posts", &at).await.body["posts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[actix_web::test]
async fn malformed_authorization_is_refused_without_asking_the_auth_service() {
    // A /verify that would fail closed if asked: any 401 below was decided locally.
    let fake = FakeVerify::start(FakeAnswer::Status(500, "{}"));
    let (_rs, url) = resource_service_with(&fake.url, &[]).await;
    let client = reqwest::Client::new();
    let long = format!("Bearer {}", "a".repeat(9000));
    for header in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer a b"),
        Some("Bearer a\"b"),
        Some("Token abc"),
        Some(long.as_str()),
    ] {
        let mut req = client.get(format!("{url}/posts"));
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        send(req).await.assert_unauthorized("invalid_token");
    }
    // Refused before the body is looked at: a bad body does not change the answer.
    let r = send(
        client
            .post(format!("{url}/posts"))
            .header(CONTENT_TYPE, "text/plain")
            .body("garbage"),
    )
    .await;
    r.assert_unauthorized("invalid_token");
    assert_eq!(fake.requests(), 0, "the auth service was asked");
    // A well-formed token is passed on (and here fails closed).
    send(
        client
            .get(format!("{url}/posts"))
            .bearer_auth("abc.def.ghi"),
    )
    .await
    .assert_unavailable();
    assert_eq!(fake.requests(), 1);
}

#[actix_web::test]
async fn refusals_from_verify_are_passed_on() {
    for (body, code) in [
        (
            r#"{"active":false,"error":"token_expired","message":"token has expired"}"#,
            "token_expired",
        ),
        (
            r#"{"active":false,"error":"token_revoked","message":"revoked"}"#,
            "token_revoked",
        ),
        (
            r#"{"active":false,"error":"invalid_token","message":"bad"}"#,
            "invalid_token",
        ),
        (
            r#"{"active":false,"error":"something_new","message":"?"}"#,
            "invalid_token",
        ),
        ("not json at all", "invalid_token"),
    ] {
        let fake = FakeVerify::start(FakeAnswer::Status(401, body));
        let (_rs, url) = resource_service_with(&fake.url, &[]).await;
        let r = send(
            reqwest::Client::new()
                .get(format!("{url}/posts"))
                .bearer_auth("abc"),
        )
        .await;
        r.assert_unauthorized(code);
        assert_eq!(fake.requests(), 1);
    }
}

#[actix_web::test]
async fn no_trustworthy_answer_fails_closed() {
    let valid_looking = r#"{"active":true,"sub":"u","username":"mallory","roles":["admin"],"sid":"s","jti":"j","exp":99999999999,"iat":0}"#;
    let answers = [
        FakeAnswer::Status(500, r#"{"error":"internal_error"}"#),
        FakeAnswer::Status(502, ""),
        FakeAnswer::Status(503, r#"{"error":"service_unavailable"}"#),
        FakeAnswer::Status(404, r#"{"error":"not_found"}"#),
        FakeAnswer::Status(400, r#"{"error":"invalid_request"}"#),
        FakeAnswer::Status(302, ""),
        FakeAnswer::Status(200, "<html>a login page</html>"),
        FakeAnswer::Status(200, r#"{"active":false}"#),
        FakeAnswer::Status(200, r#"{"active":true}"#),
        FakeAnswer::Hang,
    ];
    for answer in answers {
        let fake = FakeVerify::start(answer);
        let (_rs, url) = resource_service_with(&fake.url, &[("RS__AUTH__TIMEOUT", "300ms")]).await;
        let client = reqwest::Client::new();
        send(client.get(format!("{url}/posts")).bearer_auth("abc"))
            .await
            .assert_unavailable();
        send(
            client
                .post(format!("{url}/posts"))
                .bearer_auth("abc")
                .json(&json!({"text": "x"})),
        )
        .await
        .assert_unavailable();
        assert!(fake.requests() >= 1);
    }
    // Nobody listening at all.
    let (_rs, url) =
        resource_service_with(&format!("http://127.0.0.1:{}/verify", free_port()), &[]).await;
    send(
        reqwest::Client::new()
            .get(format!("{url}/posts"))
            .bearer_auth("abc"),
    )
    .await
    .assert_unavailable();
    // The stand-in's "valid" answer is trusted only because it is /verify's: shown here so
    // the failures above are known to be about the answers, not about the harness.
    let fake = FakeVerify::start(FakeAnswer::Status(200, valid_looking));
    let (_rs, url) = resource_service_with(&fake.url, &[]).await;
    let r = send(
        reqwest::Client::new()
            .get(format!("{url}/posts"))
            .bearer_auth("abc"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[actix_web::test]
async fn optional_cache_keeps_only_positive_answers() {
    let mut stack = Stack::start(Backend::Sqlite, &[], &[("RS__AUTH__CACHE_TTL", "30s")]).await;
    let (cached, _) = stack.signed_in("alice").await;
    let (uncached, _) = stack.login("alice").await;
    assert_eq!(stack.rs_get("/posts", &cached).await.status, 200);
    // A refused token is not remembered: asked again, and refused again.
    stack
        .rs_get("/posts", "abc.def.ghi")
        .await
        .assert_unauthorized("invalid_token");
    stack.auth.stop();
    // The trade-off, visible: a cached answer outlives the auth service (and would outlive a
    // logout) for up to the cache TTL; anything not cached fails closed.
    assert_eq!(stack.rs_get("/posts", &cached).await.status, 200);
    stack.rs_get("/posts", &uncached).await.assert_unavailable();
    stack
        .rs_get("/posts", "abc.def.ghi")
        .await
        .assert_unavailable();
    assert!(stack.resource.output().contains("cached for 30s"));
}

#[test]
fn bad_configuration_stops_with_the_key_named() {
    let run = |args: &[&str], pairs: &[(&str, &str)]| {
        Command::new(RESOURCE_SERVICE_BIN)
            .env_clear()
            .envs(pairs.iter().copied())
            .args(args)
            .output()
            .unwrap()
    };
    for (key, value, expect) in [
        ("RS__SERVER__ADDR", "nowhere", "server.addr"),
        ("RS__AUTH__TIMEOUT", "soon", "timeout"),
        ("RS__AUTH__TIMEOUT", "5m", "auth.timeout"),
        ("RS__AUTH__CACHE_TTL", "1h", "auth.cache_ttl"),
        (
            "RS__AUTH__VERIFY_URL",
            "https://auth/verify",
            "auth.verify_url",
        ),
        (
            "RS__AUTH__VERIFY_URL",
            "ftp://auth/verify",
            "auth.verify_url",
        ),
        ("RS__AUTH__VERIFYURL", "http://auth/verify", "verifyurl"),
        ("RS__EVENTS__URL", "http://nats:4222", "events.url"),
        ("RS__EVENTS__STREAM", "AUTH.EVENTS", "events.stream"),
    ] {
        for args in [&[][..], &["check-config"][..]] {
            let out = run(args, &[(key, value)]);
            assert_eq!(out.status.code(), Some(2), "{key}={value} {args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(expect), "{key}={value}: {err}");
        }
    }
    let out = run(&["--config", "/nonexistent.toml", "check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["check-config"],
        &[
            ("RS__SERVER__ADDR", "0.0.0.0:9000"),
            ("RS__AUTH__VERIFY_URL", "http://auth-service:8081/verify"),
            ("RS__AUTH__TIMEOUT", "1500ms"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "server.addr = \"0.0.0.0:9000\"",
        "auth.verify_url = \"http://auth-service:8081/verify\"",
        "auth.timeout = 1s 500ms",
        "auth.cache_ttl = 0s (off)",
        "events.url = <unset> (off)",
        "events.stream = \"AUTH_EVENTS\"",
        "events.subject_prefix = \"auth.events\"",
    ] {
        assert!(text.contains(line), "{line} missing in:\n{text}");
    }
    // With events the cache is on by default, for longer, and the broker's password hidden.
    let out = run(
        &["check-config"],
        &[("RS__EVENTS__URL", "nats://posts:broker-password@nats:4222")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "auth.cache_ttl = 30s (entries also dropped by events)",
        "events.url = \"nats://posts:<redacted>@nats:4222\"",
    ] {
        assert!(text.contains(line), "{line} missing in:\n{text}");
    }
    assert!(!text.contains("broker-password"), "{text}");
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("check-config"));
}

#[actix_web::test]
async fn authenticates_to_an_auth_service_that_requires_clients() {
    // A secret with characters that must be form-encoded before the Basic encoding.
    const SECRET: &str = "posts-api secret: 100% +plus/slash=equals, long enough";
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), format!("{SECRET}\n")).unwrap();
    let stack = Stack::start(
        Backend::Sqlite,
        &[("AUTH__VERIFY__REQUIRE_CLIENT", "true")],
        &[
            ("RS__AUTH__CLIENT_ID", "posts-api"),
            (
                "RS__AUTH__CLIENT_SECRET_FILE",
                secret_file.path().to_str().unwrap(),
            ),
        ],
    )
    .await;
    // Registered first with another secret: the resource service is refused, and says so
    // as 503 (its own credentials failed, not the user's token).
    let out = stack.auth_cli(
        &[
            "client",
            "create",
            "--client-id",
            "posts-api",
            "--introspect",
        ],
        "an older secret that the resource service does not have\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (at, _) = stack.signed_in("alice").await;
    stack.rs_get("/posts", &at).await.assert_unavailable();
    // The reason is logged (the log arrives through a pipe: wait for it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !stack
        .resource
        .output()
        .contains("refused this service's client credentials")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stack.resource.output()
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Provisioned again from the shared secret file, as docker-compose does.
    let out = stack.auth_cli(
        &[
            "client",
            "create",
            "--client-id",
            "posts-api",
            "--introspect",
            "--update-existing",
            "--secret-file",
            secret_file.path().to_str().unwrap(),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Servers trust a client record for 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = stack.rs_get("/posts", &at).await;
        if r.status == 200 || std::time::Instant::now() > deadline {
            break r;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(r.status, 200, "{}", r.body);
    stack
        .rs_get("/posts", "abc.def.ghi")
        .await
        .assert_unauthorized("invalid_token");
    // Without its credentials the auth service refuses the resource service itself, which
    // is no answer about the token: 503, never a 401 that would log the user out.
    let (_rs, bare) = resource_service_with(&format!("{}/verify", stack.internal), &[]).await;
    let r = send(stack.client.get(format!("{bare}/posts")).bearer_auth(&at)).await;
    r.assert_unavailable();
    stack.auth.assert_never_logged(&[&at, SECRET]);
    stack.resource.assert_never_logged(&[&at, SECRET]);
}
