//! The contract the auth service relies on: `/v1/…` behind the service credential.

use reqwest::Method;
use serde_json::json;
use testkit::{Backend, Reply, both_backends, send};

use crate::support::*;

const PW: &str = "correct horse battery";

#[track_caller]
fn assert_user_shape(r: &Reply, username: &str, email: Option<&str>) {
    let u = &r.body;
    let id = u["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    assert_eq!(u["username"], username);
    assert_eq!(u["email"], json!(email));
    assert_eq!(u["roles"], json!(["user"]));
    assert_eq!(u["disabled"], false);
    assert!(u["created_at"].as_i64().unwrap() > 1_700_000_000);
    assert!(u["updated_at"].as_i64().unwrap() >= u["created_at"].as_i64().unwrap());
    let keys: Vec<&String> = u.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "exactly the contract's fields, no hash: {u}");
}

#[track_caller]
fn assert_unauthorized(r: &Reply) {
    r.assert_error(401, "unauthorized");
    assert!(
        r.header("www-authenticate").unwrap().starts_with("Basic "),
        "{:?}",
        r.headers
    );
}

both_backends! {
    async fn register_get_and_verify(b: Backend) {
        let s = UserService::start(b).await;
        let r = s.register("Alice", PW, Some(" Alice@Example.COM ")).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_user_shape(&r, "Alice", Some("alice@example.com"));
        let id = r.str("id");
        let got = s.get_user(&id).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, r.body);
        // Login by username or email, in any case.
        for login in ["alice", "ALICE", "Alice@example.com"] {
            let v = s.verify(login, PW).await;
            assert_eq!(v.status, 200, "{login}: {}", v.body);
            assert_eq!(v.body, r.body);
        }
        // Without an email.
        let r = s.register("bob", PW, None).await;
        assert_eq!(r.status, 201);
        assert_user_shape(&r, "bob", None);
        // Unknown or malformed ids name nothing.
        s.get_user(&uuid::Uuid::new_v4().to_string()).await.assert_error(404, "not_found");
        s.get_user("not-a-uuid").await.assert_error(404, "not_found");
        s.assert_no_secrets(&[PW]);
    }

    async fn every_call_needs_the_service_credential(b: Backend) {
        let s = UserService::start(b).await;
        let id = s.user("carol", PW).await;
        let bodies = [
            (Method::POST, "/v1/users".to_string(), json!({"username": "mallory", "password": PW})),
            (Method::POST, "/v1/credentials/verify".into(), json!({"login": "carol", "password": PW})),
            (Method::GET, format!("/v1/users/{id}"), json!(null)),
            (
                Method::POST,
                format!("/v1/users/{id}/password"),
                json!({"current_password": PW, "new_password": "a whole new password"}),
            ),
        ];
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for (method, path, body) in &bodies {
            let with = |req: reqwest::RequestBuilder| {
                if body.is_null() { req } else { req.json(body) }
            };
            let refusals = [
                with(s.anonymous(method.clone(), path)),
                with(s.anonymous(method.clone(), path).basic_auth(CLIENT_ID, Some("wrong-secret-0123456789-abcdefghijkl"))),
                with(s.anonymous(method.clone(), path).basic_auth("someone-else", Some(SECRET))),
                with(s.anonymous(method.clone(), path).basic_auth(CLIENT_ID, None::<&str>)),
                with(s.anonymous(method.clone(), path).bearer_auth(SECRET)),
                with(s.anonymous(method.clone(), path).header("authorization", "Basic !!notbase64")),
                with(s.anonymous(method.clone(), path).header("authorization", format!("Basic {}", b64("no-colon")))),
            ];
            for req in refusals {
                assert_unauthorized(&send(req).await);
            }
        }
        // Auth comes before the body: a refused caller learns nothing about its input.
        assert_unauthorized(
            &send(s.anonymous(Method::POST, "/v1/users").body("{not json")).await,
        );
        // Nothing changed: mallory does not exist, carol's password is the old one.
        let r = s.register("mallory", PW, None).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(s.verify("carol", PW).await.status, 200);
        // The id and secret are form-decoded (RFC 6749 2.3.1): encoded forms are accepted.
        let encoded = format!("Basic {}", b64(&format!("auth%2Dservice:{SECRET}")));
        let r = send(s.anonymous(Method::GET, &format!("/v1/users/{id}")).header("authorization", encoded)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        s.assert_no_secrets(&[PW]);
    }

    async fn unknown_user_wrong_password_and_disabled_look_alike(b: Backend) {
        let s = UserService::start(b).await;
        s.user("dave", PW).await;
        let erin = s.user("erin", PW).await;
        s.set_disabled(&erin, true).await;
        let answers = [
            s.verify("nobody", PW).await,
            s.verify("nobody@example.com", PW).await,
            s.verify("dave", "wrong password").await,
            s.verify("erin", PW).await,
            s.verify("erin", "wrong password").await,
            s.verify("", "").await,
        ];
        for a in &answers {
            a.assert_error(401, "invalid_credentials");
            assert_eq!(a.body, answers[0].body);
            assert!(a.header("www-authenticate").is_none());
        }
        // A disabled user is still there for GET.
        let got = s.get_user(&erin).await;
        assert_eq!((got.status.as_u16(), got.body["disabled"].as_bool()), (200, Some(true)));
    }

    async fn registration_conflicts(b: Backend) {
        let s = UserService::start(b).await;
        assert_eq!(s.register("frank", PW, Some("frank@example.com")).await.status, 201);
        s.register("FRANK", PW, None).await.assert_error(409, "username_taken");
        s.register("Frank", PW, Some("other@example.com")).await.assert_error(409, "username_taken");
        s.register("frank2", PW, Some("FRANK@Example.com")).await.assert_error(409, "username_taken");
        // Neither of the refused ones exists.
        assert_eq!(s.register("frank2", PW, Some("frank2@example.com")).await.status, 201);
        s.verify("other@example.com", PW).await.assert_error(401, "invalid_credentials");
    }

    async fn weak_passwords_and_invalid_fields(b: Backend) {
        let s = UserService::start(b).await;
        s.register("grace", "1234567", None).await.assert_error(400, "weak_password");
        s.register("grace", &"x".repeat(129), None).await.assert_error(400, "weak_password");
        s.register("gr", PW, None).await.assert_error(400, "invalid_request");
        s.register(&"g".repeat(65), PW, None).await.assert_error(400, "invalid_request");
        s.register("gr ace", PW, None).await.assert_error(400, "invalid_request");
        s.register("gr@ce", PW, None).await.assert_error(400, "invalid_request");
        s.register("grace", PW, Some("not-an-address")).await.assert_error(400, "invalid_request");
        // 8 and 128 characters (not bytes) are fine; nothing above was stored.
        assert_eq!(s.register("grace", &"é".repeat(8), None).await.status, 201);
        assert_eq!(s.register("grace2", &"é".repeat(128), None).await.status, 201);
        assert_eq!(s.verify("grace", &"é".repeat(8)).await.status, 200);
    }

    async fn password_change(b: Backend) {
        let s = UserService::start(b).await;
        let id = s.user("heidi", PW).await;
        let new = "a whole new password";
        s.change_password(&id, "wrong password", new).await.assert_error(401, "invalid_credentials");
        s.change_password(&id, PW, "short").await.assert_error(400, "weak_password");
        s.change_password(&uuid::Uuid::new_v4().to_string(), PW, new).await.assert_error(404, "not_found");
        s.change_password("nope", PW, new).await.assert_error(404, "not_found");
        // Refusals changed nothing.
        assert_eq!(s.verify("heidi", PW).await.status, 200);
        let r = s.change_password(&id, PW, new).await;
        assert_eq!(r.status, 204, "{}", r.body);
        assert!(r.body.is_null());
        s.verify("heidi", PW).await.assert_error(401, "invalid_credentials");
        assert_eq!(s.verify("heidi", new).await.status, 200);
        let updated = s.get_user(&id).await;
        assert!(updated.body["updated_at"].as_i64() >= updated.body["created_at"].as_i64());
        // A disabled user cannot change a password.
        s.set_disabled(&id, true).await;
        s.change_password(&id, new, "yet another password").await.assert_error(401, "invalid_credentials");
        s.assert_no_secrets(&[PW, new]);
    }

    async fn malformed_requests_get_the_error_shape(b: Backend) {
        let s = UserService::start(b).await;
        let id = s.user("ivan", PW).await;
        let post = |path: &str| s.call(Method::POST, path);
        let cases = [
            (post("/v1/users").header("content-type", "application/json").body("{not json"), 400, "invalid_request"),
            (post("/v1/users").header("content-type", "application/json").body(""), 400, "invalid_request"),
            (post("/v1/users").header("content-type", "application/json").body("{\"username\":\"x\""), 400, "invalid_request"),
            (post("/v1/users").json(&json!({"username": "judy"})), 400, "invalid_request"),
            (post("/v1/users").json(&json!({"username": 5, "password": PW})), 400, "invalid_request"),
            (post("/v1/users").json(&json!({"username": "judy", "password": PW, "admin": true})), 400, "invalid_request"),
            (post("/v1/users").header("content-type", "text/plain").body("{}"), 415, "unsupported_media_type"),
            (post("/v1/users").body("{}"), 415, "unsupported_media_type"),
            (
                post("/v1/users").json(&json!({"username": "judy", "password": "p".repeat(20_000)})),
                413,
                "payload_too_large",
            ),
            (post("/v1/credentials/verify").json(&json!({"login": "ivan"})), 400, "invalid_request"),
            (post("/v1/credentials/verify").json(&json!({"login": null, "password": PW})), 400, "invalid_request"),
            (post(&format!("/v1/users/{id}/password")).json(&json!({"new_password": PW})), 400, "invalid_request"),
            (s.call(Method::GET, "/v1/nothing"), 404, "not_found"),
            (s.anonymous(Method::GET, "/"), 404, "not_found"),
        ];
        for (req, status, code) in cases {
            send(req).await.assert_error(status, code);
        }
        let r = send(s.call(Method::DELETE, "/v1/users")).await;
        r.assert_error(405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some("POST"));
        // Still serving, and nothing was created.
        assert_eq!(s.register("judy", PW, None).await.status, 201);
    }

    async fn openapi_and_health(b: Backend) {
        let s = UserService::start(b).await;
        let r = send(s.anonymous(Method::GET, "/openapi.json")).await;
        assert_eq!(r.status, 200);
        for path in ["/v1/users", "/v1/credentials/verify", "/v1/users/{id}", "/v1/users/{id}/password"] {
            assert!(r.body["paths"][path].is_object(), "{path}");
        }
        let r = send(s.anonymous(Method::GET, "/healthz")).await;
        assert_eq!((r.status.as_u16(), r.body["status"].as_str()), (200, Some("ok")));
    }
}

/// Hashing slots are bounded: past them, 503 `overloaded` with Retry-After, never a queue
/// that grows without end. (Not about storage: SQLite only.)
#[actix_web::test]
async fn hashing_is_bounded() {
    let s = UserService::start_with(
        Backend::Sqlite,
        &[
            ("USERS__PASSWORD__MAX_CONCURRENT", "1"),
            ("USERS__PASSWORD__QUEUE_TIMEOUT", "0s"),
            // Slow enough hashes that simultaneous requests overlap.
            ("USERS__PASSWORD__MEMORY_KIB", "16384"),
            ("USERS__PASSWORD__ITERATIONS", "40"),
            ("USERS__SERVER__WORKERS", "4"),
        ],
    )
    .await;
    let answers =
        futures_util::future::join_all((0..8).map(|_| s.verify("nobody", PW)).collect::<Vec<_>>())
            .await;
    let overloaded: Vec<&Reply> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(!overloaded.is_empty(), "no request was refused");
    for r in &overloaded {
        r.assert_error(503, "overloaded");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    for r in answers.iter().filter(|r| r.status != 503) {
        r.assert_error(401, "invalid_credentials");
    }
    // Once the slot is free, requests are served again.
    s.verify("nobody", PW)
        .await
        .assert_error(401, "invalid_credentials");
}

/// Storage trouble is 503 `service_unavailable` with Retry-After, never a 500 or a hang, and
/// the service recovers by itself once the database is back.
#[actix_web::test]
async fn database_outage_is_503_then_recovers() {
    let s = UserService::start_with(Backend::Postgres, &[("USERS__DATABASE__TIMEOUT", "1s")]).await;
    let id = s.user("olivia", PW).await;
    let name = s.db.pg_name().to_string();
    s.db.pg_admin(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ));
    s.db.pg_admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ));
    for r in [
        s.get_user(&id).await,
        s.verify("olivia", PW).await,
        s.register("pablo", PW, None).await,
    ] {
        r.assert_unavailable();
    }
    s.db.pg_admin(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = s.get_user(&id).await;
        if r.status == 200 {
            break;
        }
        r.assert_unavailable();
        assert!(std::time::Instant::now() < deadline, "never recovered");
        testkit::sleep_secs(0.1).await;
    }
    assert_eq!(s.verify("olivia", PW).await.status, 200);
}
