//! The OAuth 2.0 endpoints: token (refresh_token and password grants), introspection,
//! revocation, client authentication, and RFC 6749's error shape.

use auth_service::domain::clients::Permissions;
use reqwest::Method;
use serde_json::json;

use crate::support::*;

fn form(app: &TestApp, base: &str, path: &str, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    app.client.post(format!("{base}{path}")).form(
        &fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
    )
}

/// Asserts RFC 6749's error shape with the given status and code.
#[track_caller]
fn assert_oauth_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["error"], code, "{}", r.body);
    assert!(r.body["error_description"].is_string(), "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

both_backends! {
    async fn refresh_token_grant_rotates_like_refresh(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__REUSE_GRACE", "0s")]).await;
        let (_, rt) = app.signed_in("alice").await;
        let r = app.send(form(&app, &app.public, "/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &rt)])).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(r.body["expires_in"].as_i64().unwrap() > 0);
        let (at, child) = (r.str("access_token"), r.str("refresh_token"));
        assert_eq!(app.verify(&at).await.status, 200);
        // A refresh token from the token endpoint works at /refresh, and the reverse.
        let r = app.refresh(&child).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let grandchild = r.str("refresh_token");
        // Reuse detection is the same: the old one again revokes the session.
        let r = app.send(form(&app, &app.public, "/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &rt)])).await;
        assert_oauth_error(&r, 400, "invalid_grant");
        app.refresh(&grandchild).await.assert_error(401, "session_revoked");
        assert_eq!(app.verify(&at).await.body["error"], "token_revoked");
    }

    async fn password_grant_only_for_clients_allowed_to(b: Backend) {
        let app = TestApp::spawn(b).await;
        app.register("alice", "correct horse").await;
        let plain = app.create_client("plain-app", Permissions::default()).await;
        let trusted = app.create_client("legacy-app", Permissions { password: true, ..Permissions::default() }).await;
        let grant = [("grant_type", "password"), ("username", "alice"), ("password", "correct horse")];
        // No client: invalid_client, with a Basic challenge.
        let r = app.send(form(&app, &app.public, "/oauth/token", &grant)).await;
        assert_oauth_error(&r, 401, "invalid_client");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
        // A client not registered for it.
        let r = app.send(form(&app, &app.public, "/oauth/token", &grant).basic_auth("plain-app", Some(&plain))).await;
        assert_oauth_error(&r, 400, "unauthorized_client");
        // A wrong secret, either way.
        let r = app.send(form(&app, &app.public, "/oauth/token", &grant).basic_auth("legacy-app", Some("wrong"))).await;
        assert_oauth_error(&r, 401, "invalid_client");
        // Allowed: client_secret_basic and client_secret_post both work.
        let r = app.send(form(&app, &app.public, "/oauth/token", &grant).basic_auth("legacy-app", Some(&trusted))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(app.verify(&r.str("access_token")).await.status, 200);
        let mut posted = grant.to_vec();
        posted.extend([("client_id", "legacy-app"), ("client_secret", trusted.as_str())]);
        let r = app.send(form(&app, &app.public, "/oauth/token", &posted)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // Both methods at once is refused.
        let r = app.send(form(&app, &app.public, "/oauth/token", &posted).basic_auth("legacy-app", Some(&trusted))).await;
        assert_oauth_error(&r, 400, "invalid_request");
        // Wrong credentials of the user: invalid_grant, counted by the login throttle.
        let wrong = [("grant_type", "password"), ("username", "alice"), ("password", "wrong horse")];
        let r = app.send(form(&app, &app.public, "/oauth/token", &wrong).basic_auth("legacy-app", Some(&trusted))).await;
        assert_oauth_error(&r, 400, "invalid_grant");
    }

    async fn token_endpoint_refuses_what_it_does_not_understand(b: Backend) {
        let app = TestApp::spawn(b).await;
        let r = app.send(form(&app, &app.public, "/oauth/token", &[("grant_type", "authorization_code"), ("code", "x")])).await;
        assert_oauth_error(&r, 400, "unsupported_grant_type");
        let r = app.send(form(&app, &app.public, "/oauth/token", &[("refresh_token", "x")])).await;
        assert_oauth_error(&r, 400, "invalid_request");
        let r = app.send(form(&app, &app.public, "/oauth/token", &[("grant_type", "refresh_token")])).await;
        assert_oauth_error(&r, 400, "invalid_request");
        let r = app.send(form(&app, &app.public, "/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", "garbage")])).await;
        assert_oauth_error(&r, 400, "invalid_grant");
        let r = app.send(app.client.post(format!("{}/oauth/token", app.public)).json(&json!({"grant_type": "refresh_token"}))).await;
        assert_oauth_error(&r, 400, "invalid_request");
        let r = app.send(form(&app, &app.public, "/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", "x"), ("scope", "admin")])).await;
        assert_oauth_error(&r, 400, "invalid_scope");
        let r = app.send(form(&app, &app.public, "/oauth/token", &[("grant_type", "client_credentials")])).await;
        assert_oauth_error(&r, 401, "invalid_client");
        let r = app.send(app.client.request(Method::GET, format!("{}/oauth/token", app.public))).await;
        r.assert_error(405, "method_not_allowed");
    }

    async fn introspection_for_allowed_clients_from_memory(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__REUSE_GRACE", "0s")]).await;
        let rs = app.create_client("posts-api", Permissions { introspect: true, ..Permissions::default() }).await;
        let other = app.create_client("web-app", Permissions::default()).await;
        let (at, rt) = app.signed_in("alice").await;
        let ask = |token: &str| form(&app, &app.internal, "/oauth/introspect", &[("token", token)]);
        // Clients authenticate, and must be allowed to introspect.
        assert_oauth_error(&app.send(ask(&at)).await, 401, "invalid_client");
        assert_oauth_error(&app.send(ask(&at).basic_auth("posts-api", Some("wrong"))).await, 401, "invalid_client");
        assert_oauth_error(&app.send(ask(&at).basic_auth("web-app", Some(&other))).await, 403, "unauthorized_client");
        let r = app.send(ask(&at).basic_auth("posts-api", Some(&rs))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["active"], true);
        assert_eq!(r.body["token_type"], "access_token");
        assert_eq!(r.body["sub"], sub_of(&at).as_str());
        assert_eq!(r.body["username"], "alice");
        assert_eq!(r.body["roles"], json!(["user"]));
        assert_eq!(r.body["sid"], sid_of(&at).as_str());
        for field in ["exp", "iat", "iss", "aud", "jti"] {
            assert!(!r.body[field].is_null(), "{field}: {}", r.body);
        }
        // A refresh token is active until it is used.
        let r = app.send(ask(&rt).basic_auth("posts-api", Some(&rs))).await;
        assert_eq!((r.body["active"].as_bool(), r.body["token_type"].as_str()), (Some(true), Some("refresh_token")), "{}", r.body);
        assert_eq!(app.refresh(&rt).await.status, 200);
        assert_eq!(app.send(ask(&rt).basic_auth("posts-api", Some(&rs))).await.body, json!({"active": false}));
        // Anything else is inactive, with 200.
        for junk in ["garbage", "a.b.c", &"x".repeat(9000)] {
            let r = app.send(ask(junk).basic_auth("posts-api", Some(&rs))).await;
            assert_eq!((r.status.as_u16(), &r.body), (200, &json!({"active": false})));
        }
        // A revoked session's tokens are inactive at once.
        app.refresh(&rt).await.assert_error(401, "token_reused");
        assert_eq!(app.send(ask(&at).basic_auth("posts-api", Some(&rs))).await.body, json!({"active": false}));
    }

    async fn revocation_ends_the_session_of_either_token(b: Backend) {
        let app = TestApp::spawn(b).await;
        let web = app.create_client("web-app", Permissions::default()).await;
        let revoke = |token: &str| form(&app, &app.public, "/oauth/revoke", &[("token", token)]);
        // A refresh token, from a public client (no credentials).
        let (at1, rt1) = app.signed_in("alice").await;
        assert_eq!(app.send(revoke(&rt1)).await.status, 200);
        assert_eq!(app.verify(&at1).await.body["error"], "token_revoked");
        app.refresh(&rt1).await.assert_error(401, "session_revoked");
        // An access token, from a confidential client.
        let r = app.login("alice", "correct horse battery").await;
        let (at2, rt2) = (r.str("access_token"), r.str("refresh_token"));
        assert_eq!(app.send(revoke(&at2).basic_auth("web-app", Some(&web))).await.status, 200);
        assert_eq!(app.verify(&at2).await.body["error"], "token_revoked");
        app.refresh(&rt2).await.assert_error(401, "session_revoked");
        // Unknown tokens: 200, and nothing happens. Wrong client credentials: 401.
        assert_eq!(app.send(revoke("never-issued")).await.status, 200);
        assert_oauth_error(&app.send(revoke("x").basic_auth("web-app", Some("wrong"))).await, 401, "invalid_client");
        assert_oauth_error(&app.send(form(&app, &app.public, "/oauth/revoke", &[])).await, 400, "invalid_request");
    }
}

#[actix_web::test]
async fn discovery_and_openapi_describe_the_service() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("AUTH__SERVER__PUBLIC_URL", "https://auth.example.com/")],
    )
    .await;
    let r = app
        .send(app.client.get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.public
        )))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(r.body["issuer"], "auth-service");
    assert_eq!(
        r.body["token_endpoint"],
        "https://auth.example.com/oauth/token"
    );
    assert_eq!(
        r.body["revocation_endpoint"],
        "https://auth.example.com/oauth/revoke"
    );
    assert_eq!(
        r.body["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    // Not configured: the internal listener's own address.
    assert_eq!(
        r.body["introspection_endpoint"],
        format!("{}/oauth/introspect", app.internal)
    );
    assert_eq!(
        r.body["grant_types_supported"],
        json!(["refresh_token", "password", "client_credentials"])
    );
    // Public clients refresh and revoke without a secret; introspection needs a client.
    for endpoint in ["token", "revocation"] {
        assert_eq!(
            r.body[format!("{endpoint}_endpoint_auth_methods_supported")],
            json!(["client_secret_basic", "client_secret_post", "none"])
        );
    }
    assert_eq!(
        r.body["introspection_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    // The OpenAPI description, as JSON, lists the OAuth endpoints.
    let r = app
        .send(app.client.get(format!("{}/openapi.json", app.public)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    for path in [
        "/oauth/token",
        "/oauth/introspect",
        "/oauth/revoke",
        "/.well-known/jwks.json",
    ] {
        assert!(r.body["paths"][path].is_object(), "{path}");
    }
}

both_backends! {
    async fn client_credentials_for_machine_clients(b: Backend) {
        let app = TestApp::spawn(b).await;
        let allowed = Permissions { client_credentials: true, ..Permissions::default() };
        let worker = app.create_client_with_scopes("billing-worker", allowed, &["posts:read", "posts:write"]).await;
        let plain = app.create_client("web-app", Permissions::default()).await;
        let rs = app.create_client("posts-api", Permissions { introspect: true, ..Permissions::default() }).await;
        let grant = |scope: Option<&str>| {
            let mut fields = vec![("grant_type", "client_credentials")];
            if let Some(s) = scope {
                fields.push(("scope", s));
            }
            form(&app, &app.public, "/oauth/token", &fields)
        };
        // Its own token, all its scopes by default, no refresh token.
        let r = app.send(grant(None).basic_auth("billing-worker", Some(&worker))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.body["scope"], "posts:read posts:write");
        assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
        let at = r.str("access_token");
        let claims = claims(&at);
        assert_eq!((claims["sub"].as_str(), claims["client_id"].as_str()), (Some("billing-worker"), Some("billing-worker")));
        assert_eq!(header(&at)["typ"], "at+jwt");
        // A narrower scope on request; one it does not have is refused.
        let r = app.send(grant(Some("posts:read")).basic_auth("billing-worker", Some(&worker))).await;
        assert_eq!(r.body["scope"], "posts:read", "{}", r.body);
        let r = app.send(grant(Some("admin")).basic_auth("billing-worker", Some(&worker))).await;
        assert_oauth_error(&r, 400, "invalid_scope");
        // Only clients registered for the grant, and only authenticated.
        assert_oauth_error(&app.send(grant(None).basic_auth("web-app", Some(&plain))).await, 400, "unauthorized_client");
        assert_oauth_error(&app.send(grant(None)).await, 401, "invalid_client");
        // Introspection knows machine tokens.
        let ask = |token: &str| form(&app, &app.internal, "/oauth/introspect", &[("token", token)]).basic_auth("posts-api", Some(&rs));
        let r = app.send(ask(&at)).await;
        assert_eq!(r.body["active"], true, "{}", r.body);
        assert_eq!(r.body["client_id"], "billing-worker");
        assert_eq!(r.body["scope"], "posts:read posts:write");
        // /verify is for users' tokens: a machine token is not one.
        assert_eq!(app.verify(&at).await.body["error"], "invalid_token");
        // A deleted client's tokens die once servers re-read it (records are kept 5 s).
        app.with_db(|conn| {
            use auth_service::storage::schema::clients;
            use diesel::prelude::*;
            diesel::delete(clients::table.find("billing-worker")).execute(conn)?;
            Ok(())
        })
        .await;
        app.advance(6);
        assert_eq!(app.send(ask(&at)).await.body, json!({"active": false}));
    }
}

/// Introspection's answer for `token` on the internal listener `internal`, asked as `rs`.
async fn introspected(app: &TestApp, internal: &str, rs: &str, token: &str) -> serde_json::Value {
    let r = app
        .send(
            form(app, internal, "/oauth/introspect", &[("token", token)])
                .basic_auth("posts-api", Some(rs)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

both_backends! {
    /// A machine token has no session to end: it is revoked by itself, by its own client
    /// only, on every replica at once, for good (a restart loads it), and the record goes
    /// once no replica needs it.
    async fn a_machine_token_is_revoked_by_its_own_client(b: Backend) {
        // Polling an hour apart: a replica hears of the revocation through the feed.
        let app = TestApp::spawn_with(b, &[("AUTH__REVOCATION__POLL_INTERVAL", "1h")]).await;
        let (_, admin_at, _) = app.admin("root").await;
        let allowed = Permissions { client_credentials: true, ..Permissions::default() };
        let worker = app.create_client_with_scopes("billing-worker", allowed, &["posts:read"]).await;
        let other = app.create_client_with_scopes("report-worker", allowed, &["posts:read"]).await;
        let rs = app.create_client("posts-api", Permissions { introspect: true, ..Permissions::default() }).await;
        let grant = |id: &str, secret: &str| {
            form(&app, &app.public, "/oauth/token", &[("grant_type", "client_credentials")]).basic_auth(id, Some(secret))
        };
        let at = app.send(grant("billing-worker", &worker)).await.str("access_token");
        let sibling = app.send(grant("billing-worker", &worker)).await.str("access_token");
        let replica = match b {
            Backend::Postgres => Some(app.replica(&[("AUTH__REVOCATION__POLL_INTERVAL", "1h")]).await),
            Backend::Sqlite => None,
        };
        let mut internals = vec![app.internal.clone()];
        internals.extend(replica.iter().map(|r| r.internal.clone()));
        for internal in &internals {
            assert_eq!(introspected(&app, internal, &rs, &at).await["active"], true);
        }
        let revoke = |token: &str| form(&app, &app.public, "/oauth/revoke", &[("token", token)]);
        // Only its own client may revoke it: 401 without credentials, 400 as another client,
        // and the token stays good.
        assert_oauth_error(&app.send(revoke(&at)).await, 401, "invalid_client");
        let r = app.send(revoke(&at).basic_auth("report-worker", Some(&other))).await;
        assert_oauth_error(&r, 400, "unauthorized_client");
        assert_eq!(introspected(&app, &app.internal, &rs, &at).await["active"], true);
        // By its client: 200, and every replica refuses it; the client's other token, and
        // its next one, are still good. Revoking it again is no error.
        for _ in 0..2 {
            let r = app.send(revoke(&at).basic_auth("billing-worker", Some(&worker))).await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        for internal in &internals {
            let mut tries = 0;
            while introspected(&app, internal, &rs, &at).await != json!({"active": false}) {
                tries += 1;
                assert!(tries < 200, "{internal} never heard of the revocation");
                sleep_secs(0.05).await;
            }
            assert_eq!(introspected(&app, internal, &rs, &sibling).await["active"], true);
        }
        let next = app.send(grant("billing-worker", &worker)).await.str("access_token");
        assert_eq!(introspected(&app, &app.internal, &rs, &next).await["active"], true);
        // One audit event, naming the client and the token's jti (never the token).
        let r = app.get_as("/admin/audit?kind=client_token_revoked", &admin_at).await;
        let events = r.body["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{}", r.body);
        assert_eq!(events[0]["detail"], json!({"client_id": "billing-worker", "jti": claims(&at)["jti"]}));
        assert!(!r.body.to_string().contains(&at));
        // Stored, and kept while the token lives: restarted with shorter-lived tokens and
        // past the new, shorter horizon after the revocation (but before the token's own
        // exp, 5 minutes), pruning keeps the row and a server loads it.
        drop(replica);
        let shorter = [("AUTH__TOKENS__ACCESS_TTL", "1m")];
        let app = app.restart_with(&shorter).await;
        assert_eq!(introspected(&app, &app.internal, &rs, &at).await, json!({"active": false}));
        app.advance(150);
        let pruned = app.server.state.services.maintenance.prune().await.unwrap();
        assert_eq!(pruned.revoked_client_tokens, 0);
        let app = app.restart_with(&shorter).await;
        assert_eq!(introspected(&app, &app.internal, &rs, &at).await, json!({"active": false}));
        assert_eq!(introspected(&app, &app.internal, &rs, &sibling).await["active"], true);
        // Once the token has expired, and the horizon after that, the record goes.
        app.advance(24 * 3600);
        let pruned = app.server.state.services.maintenance.prune().await.unwrap();
        assert_eq!(pruned.revoked_client_tokens, 1);
        assert_eq!(introspected(&app, &app.internal, &rs, &at).await, json!({"active": false}));
    }
}

/// A client that mints and revokes machine tokens in a loop is held to
/// `MAX_REVOCATIONS_PER_MINUTE` on each server: then 429 with `Retry-After`, the token stays
/// good, and the next minute it may revoke again.
#[actix_web::test]
async fn a_client_revoking_in_a_loop_is_held_to_a_limit() {
    use auth_service::domain::clients::MAX_REVOCATIONS_PER_MINUTE;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let allowed = Permissions {
        client_credentials: true,
        ..Permissions::default()
    };
    let worker = app
        .create_client_with_scopes("billing-worker", allowed, &["posts:read"])
        .await;
    let rs = app
        .create_client(
            "posts-api",
            Permissions {
                introspect: true,
                ..Permissions::default()
            },
        )
        .await;
    // Start on a minute's first second, so the whole loop falls in one minute.
    app.advance((60 - app.now().rem_euclid(60)) as u64);
    let mint = || {
        form(
            &app,
            &app.public,
            "/oauth/token",
            &[("grant_type", "client_credentials")],
        )
        .basic_auth("billing-worker", Some(&worker))
    };
    let revoke = |token: &str| {
        form(&app, &app.public, "/oauth/revoke", &[("token", token)])
            .basic_auth("billing-worker", Some(&worker))
    };
    for _ in 0..MAX_REVOCATIONS_PER_MINUTE {
        let token = app.send(mint()).await.str("access_token");
        assert_eq!(app.send(revoke(&token)).await.status, 200);
    }
    let token = app.send(mint()).await.str("access_token");
    let r = app.send(revoke(&token)).await;
    assert_oauth_error(&r, 429, "too_many_attempts");
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(
        introspected(&app, &app.internal, &rs, &token).await["active"],
        true
    );
    app.advance(60);
    assert_eq!(app.send(revoke(&token)).await.status, 200);
    assert_eq!(
        introspected(&app, &app.internal, &rs, &token).await,
        json!({"active": false})
    );
}

/// Form bodies: percent-escapes and `+` are decoded, a UTF-8 charset is accepted and any
/// other refused, a parameter given twice or a body over the limit is `invalid_request`, and
/// none of these changes anything.
#[actix_web::test]
async fn form_bodies_are_read_as_rfc_6749_asks() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let rs = app
        .create_client(
            "posts-api",
            Permissions {
                introspect: true,
                ..Permissions::default()
            },
        )
        .await;
    let (at, rt) = app.signed_in("alice").await;
    let raw = |body: String, content_type: &str| {
        app.client
            .post(format!("{}/oauth/introspect", app.internal))
            .header("content-type", content_type)
            .basic_auth("posts-api", Some(&rs))
            .body(body)
    };
    const FORM: &str = "application/x-www-form-urlencoded";
    // Every byte of the token escaped still names the token; so does `token_type_hint`
    // written with an escape and a `+`-free value.
    let escaped: String = at.bytes().map(|b| format!("%{b:02X}")).collect();
    for body in [
        format!("token={at}"),
        format!("token={escaped}"),
        format!("t%6Fken={at}&&unknown=x+y"),
    ] {
        let r = app.send(raw(body.clone(), FORM)).await;
        assert_eq!(
            (r.status.as_u16(), &r.body["active"]),
            (200, &json!(true)),
            "{body}: {}",
            r.body
        );
    }
    for content_type in [
        "application/x-www-form-urlencoded; charset=UTF-8",
        "Application/X-WWW-Form-Urlencoded;charset=\"utf-8\"",
    ] {
        let r = app.send(raw(format!("token={at}"), content_type)).await;
        assert_eq!(r.body["active"], true, "{content_type}: {}", r.body);
    }
    for content_type in [
        "application/x-www-form-urlencoded; charset=iso-8859-1",
        "application/json",
        "text/plain",
    ] {
        assert_oauth_error(
            &app.send(raw(format!("token={at}"), content_type)).await,
            400,
            "invalid_request",
        );
    }
    let r = app.send(raw(format!("token={at}&token={rt}"), FORM)).await;
    assert_oauth_error(&r, 400, "invalid_request");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("token"),
        "{}",
        r.body
    );
    let huge = format!("token={at}&padding={}", "x".repeat(17 * 1024));
    assert_oauth_error(&app.send(raw(huge, FORM)).await, 400, "invalid_request");
    // At the token endpoint too, and nothing was used up: the refresh token still rotates once.
    let token = |body: String| {
        app.client
            .post(format!("{}/oauth/token", app.public))
            .header("content-type", FORM)
            .body(body)
    };
    let r = app
        .send(token(format!(
            "grant_type=refresh_token&refresh_token={rt}&refresh_token={rt}"
        )))
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = app
        .send(token(format!(
            "grant_type=refresh_token&refresh_token={rt}&password=a&password=b"
        )))
        .await;
    assert_oauth_error(&r, 400, "invalid_request");
    let r = app
        .send(token(format!(
            "grant_type=refresh%5Ftoken&refresh_token={rt}"
        )))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}
