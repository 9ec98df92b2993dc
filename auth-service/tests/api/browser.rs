//! Browser apps: CORS from the allow-list, the refresh-token cookie (`/login?cookie=true`,
//! `/refresh` and `/logout` without a token in the body) and the CSRF rule of every
//! cookie-authenticated request.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const APP: &str = "http://app.test:3000";
const EVIL: &str = "http://evil.test";
const COOKIE: &str = "__Host-refresh_token";

async fn app_with(b: Backend, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![(
        "AUTH__CORS__ALLOWED_ORIGINS",
        "http://app.test:3000, https://other.test",
    )];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(b, &settings).await
}

/// A request as a page at `origin` sends it with fetch: Origin, the custom header, and the
/// cookie the browser holds (`cookie`, the refresh token).
fn browser_post(
    app: &TestApp,
    path: &str,
    origin: Option<&str>,
    xrw: bool,
    cookie: Option<&str>,
    body: Value,
) -> reqwest::RequestBuilder {
    let mut req = app.client.post(format!("{}{path}", app.public)).json(&body);
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    if xrw {
        req = req.header("x-requested-with", "fetch");
    }
    if let Some(token) = cookie {
        req = req.header("cookie", format!("theme=dark; {COOKIE}={token}"));
    }
    req
}

/// The cookie of a `Set-Cookie` answer: (value, attributes as written).
fn set_cookie(r: &Reply) -> (String, String) {
    let line = r
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie: {:?}", r.headers));
    let (pair, attributes) = line.split_once(';').unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, COOKIE, "{line}");
    (value.to_string(), attributes.trim().to_string())
}

async fn cookie_login(app: &TestApp, username: &str) -> (Reply, String) {
    let r = app.register(username, "correct horse battery").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = app
        .send(browser_post(
            app,
            "/login?cookie=true",
            Some(APP),
            true,
            None,
            json!({"username": username, "password": "correct horse battery"}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (token, _) = set_cookie(&r);
    (r, token)
}

fn cors_headers(r: &Reply) -> Vec<String> {
    r.headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

both_backends! {
    async fn preflights_are_answered_for_allowed_origins_only(b: Backend) {
        let app = app_with(b, &[]).await;
        let preflight = |origin: &str, headers: &str| {
            app.client
                .request(Method::OPTIONS, format!("{}/login", app.public))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", headers)
        };
        let r = app.send(preflight(APP, "content-type, x-requested-with")).await;
        assert_eq!(r.status, 200, "{:?}", r.headers);
        assert_eq!(r.header("access-control-allow-origin"), Some(APP));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert!(r.header("access-control-allow-methods").unwrap().contains("POST"));
        let allowed = r.header("access-control-allow-headers").unwrap().to_ascii_lowercase();
        assert!(allowed.contains("x-requested-with") && allowed.contains("content-type"), "{allowed}");
        assert!(r.header("vary").unwrap().to_ascii_lowercase().contains("origin"));
        // The second allowed origin gets its own name back, never `*`.
        let r = app.send(preflight("https://other.test", "content-type")).await;
        assert_eq!(r.header("access-control-allow-origin"), Some("https://other.test"));

        // Another origin: an ordinary OPTIONS (405 in the error shape), no CORS header.
        let r = app.send(preflight(EVIL, "content-type, x-requested-with")).await;
        r.assert_error(405, "method_not_allowed");
        assert!(cors_headers(&r).is_empty(), "{:?}", r.headers);
        // A header outside the list, from an allowed origin: 400 in the error shape.
        let r = app.send(preflight(APP, "x-unknown")).await;
        r.assert_error(400, "invalid_request");
        assert!(cors_headers(&r).is_empty(), "{:?}", r.headers);

        // Actual requests: the allowed origin's answer names it; another's has no CORS headers.
        let r = app.send(app.client.get(format!("{}/healthz", app.public)).header("origin", APP)).await;
        assert_eq!(r.header("access-control-allow-origin"), Some(APP));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        let r = app.send(app.client.get(format!("{}/healthz", app.public)).header("origin", EVIL)).await;
        assert_eq!(r.status, 200);
        assert!(cors_headers(&r).is_empty(), "{:?}", r.headers);
        // Errors carry the headers too, so the page can read them.
        let r = app.send(browser_post(&app, "/login", Some(APP), true, None, json!({"username": "x", "password": "wrong password"}))).await;
        r.assert_error(401, "invalid_credentials");
        assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    }

    async fn without_an_allow_list_there_is_no_cors(b: Backend) {
        let app = TestApp::spawn(b).await;
        let r = app
            .send(app.client.request(Method::OPTIONS, format!("{}/login", app.public))
                .header("origin", APP)
                .header("access-control-request-method", "POST"))
            .await;
        r.assert_error(405, "method_not_allowed");
        assert!(cors_headers(&r).is_empty(), "{:?}", r.headers);
    }

    async fn the_cookie_flow_logs_in_refreshes_and_logs_out(b: Backend) {
        let app = app_with(b, &[("AUTH__TOKENS__REUSE_GRACE", "0s")]).await;
        let (r, rt) = cookie_login(&app, "alice").await;
        // The body has the access token and not the refresh token; the cookie has that.
        assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
        let at = r.str("access_token");
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.body["refresh_expires_in"], 7_776_000);
        assert_eq!(claims(&rt)["sid"], claims(&at)["sid"]);
        let (_, attributes) = set_cookie(&r);
        assert_eq!(attributes, "Path=/; Max-Age=7776000; HttpOnly; SameSite=Strict; Secure");
        assert_eq!(r.header("access-control-allow-origin"), Some(APP));
        assert_eq!(app.verify(&at).await.status, 200);

        // Refresh with the cookie (an empty body): a new access token, the child in the cookie.
        let r = app.send(browser_post(&app, "/refresh", Some(APP), true, Some(&rt), json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
        let (child, attributes) = set_cookie(&r);
        assert_ne!(child, rt);
        assert_eq!(claims(&child)["sid"], claims(&rt)["sid"]);
        assert!(attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict"), "{attributes}");
        let at2 = r.str("access_token");
        assert_eq!(app.verify(&at2).await.status, 200);
        // The access token may go along, as in the body flow.
        app.advance(1);
        let r = app.send(browser_post(&app, "/refresh", Some(APP), true, Some(&child), json!({"access_token": at2}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (grandchild, _) = set_cookie(&r);

        // A replayed cookie is reuse: the session ends and the cookie is cleared.
        app.advance(1);
        let r = app.send(browser_post(&app, "/refresh", Some(APP), true, Some(&rt), json!({}))).await;
        r.assert_error(401, "token_reused");
        let (value, attributes) = set_cookie(&r);
        assert_eq!((value.as_str(), attributes.as_str()), ("", "Path=/; Max-Age=0; HttpOnly; SameSite=Strict; Secure"));
        app.send(browser_post(&app, "/refresh", Some(APP), true, Some(&grandchild), json!({}))).await
            .assert_error(401, "session_revoked");

        // Log in again, log out with the cookie: 204, the cookie cleared, the session over.
        let r = app.send(browser_post(&app, "/login?cookie=true", Some(APP), true, None,
            json!({"username": "alice", "password": "correct horse battery"}))).await;
        let (rt, _) = set_cookie(&r);
        let at = r.str("access_token");
        let r = app.send(browser_post(&app, "/logout", Some(APP), true, Some(&rt), json!({}))).await;
        assert_eq!(r.status, 204);
        let (value, attributes) = set_cookie(&r);
        assert_eq!(value, "");
        assert!(attributes.contains("Max-Age=0"), "{attributes}");
        assert_eq!(app.verify(&at).await.body["error"], "token_revoked");
        let r = app.send(browser_post(&app, "/refresh", Some(APP), true, Some(&rt), json!({}))).await;
        r.assert_error(401, "session_revoked");
        assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
        // A cookie that is no token: refused and cleared.
        let r = app.send(browser_post(&app, "/refresh", Some(APP), true, Some("garbage"), json!({}))).await;
        r.assert_error(401, "invalid_token");
        assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    }

    async fn the_cookie_lives_as_long_as_the_refresh_token(b: Backend) {
        let app = app_with(b, &[("AUTH__TOKENS__SESSION_TTL", "1h")]).await;
        let (_, rt) = cookie_login(&app, "alice").await;
        let r = app.send(browser_post(&app, "/refresh", Some(APP), true, Some(&rt), json!({}))).await;
        assert!(set_cookie(&r).1.contains("Max-Age=3600;"), "{:?}", r.headers);
        let (child, _) = set_cookie(&r);
        app.advance(600);
        let r = app.send(browser_post(&app, "/refresh", Some(APP), true, Some(&child), json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (grandchild, attributes) = set_cookie(&r);
        assert!(attributes.contains("Max-Age=3000;"), "{attributes}");
        assert_eq!(r.body["refresh_expires_in"], 3000);
        assert_eq!(claims(&grandchild)["exp"].as_i64().unwrap() - app.now(), 3000);
    }

    async fn cookie_requests_without_the_csrf_proof_are_refused_and_change_nothing(b: Backend) {
        // No reuse grace: a refresh that happened would make the next one a reuse.
        let app = app_with(b, &[("AUTH__TOKENS__REUSE_GRACE", "0s")]).await;
        let (r, rt) = cookie_login(&app, "alice").await;
        let at = r.str("access_token");
        app.advance(1);
        for path in ["/refresh", "/logout"] {
            for (origin, xrw) in [(None, true), (Some(EVIL), true), (Some("null"), true), (Some(APP), false)] {
                let r = app.send(browser_post(&app, path, origin, xrw, Some(&rt), json!({}))).await;
                r.assert_error(403, "csrf_rejected");
                assert!(r.header("set-cookie").is_none(), "{path} {origin:?}: {:?}", r.headers);
            }
            // An empty X-Requested-With is none.
            let r = app.send(browser_post(&app, path, Some(APP), false, Some(&rt), json!({})).header("x-requested-with", "")).await;
            r.assert_error(403, "csrf_rejected");
        }
        // Nothing happened: the session is live and the token unused.
        assert_eq!(app.verify(&at).await.status, 200);
        let r = app.send(browser_post(&app, "/refresh", Some(APP), true, Some(&rt), json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.body);

        // The service's own origin passes without being listed.
        let (child, _) = set_cookie(&r);
        let own = app.public.clone();
        let r = app.send(browser_post(&app, "/refresh", Some(&own), true, Some(&child), json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.body);

        // A cookie login is held to the same rule: no cookie, no session.
        app.register("bob", "correct horse battery").await;
        let creds = json!({"username": "bob", "password": "correct horse battery"});
        for (origin, xrw) in [(Some(EVIL), true), (Some(APP), false), (None, true)] {
            let r = app.send(browser_post(&app, "/login?cookie=true", origin, xrw, None, creds.clone())).await;
            r.assert_error(403, "csrf_rejected");
            assert!(r.header("set-cookie").is_none());
        }
        // Bob's only session is the one he opens now.
        let r = app.login("bob", "correct horse battery").await;
        let sessions = app.get_as("/me/sessions", &r.str("access_token")).await;
        assert_eq!(sessions.body["sessions"].as_array().unwrap().len(), 1, "{}", sessions.body);
    }

    async fn json_clients_keep_the_body_flow(b: Backend) {
        let app = app_with(b, &[]).await;
        let (at, rt) = app.signed_in("alice").await;
        assert!(!at.is_empty());
        let r = app.login("alice", "correct horse battery").await;
        assert!(r.header("set-cookie").is_none());
        assert!(r.body["refresh_token"].is_string());
        // A token in the body wins over any cookie and needs no CSRF proof.
        let r = app.send(browser_post(&app, "/refresh", None, false, Some("garbage"), json!({"refresh_token": rt}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.header("set-cookie").is_none());
        let rt2 = r.str("refresh_token");
        let r = app.send(browser_post(&app, "/logout", None, false, None, json!({"refresh_token": rt2}))).await;
        assert_eq!(r.status, 204);
        assert!(r.header("set-cookie").is_none());
        // Neither body token nor cookie: 400, as before.
        app.post("/refresh", json!({})).await.assert_error(400, "invalid_request");
        app.post("/logout", json!({})).await.assert_error(400, "invalid_request");
        // ?cookie must be a boolean.
        app.send(app.client.post(format!("{}/login?cookie=maybe", app.public))
            .json(&json!({"username": "alice", "password": "correct horse battery"})))
            .await
            .assert_error(400, "invalid_request");
        let r = app.send(app.client.post(format!("{}/login?cookie=false", app.public))
            .json(&json!({"username": "alice", "password": "correct horse battery"}))).await;
        assert!(r.body["refresh_token"].is_string() && r.header("set-cookie").is_none());
    }

    async fn secure_can_be_turned_off_for_plain_http_development(b: Backend) {
        let app = app_with(b, &[("AUTH__COOKIE__SECURE", "false")]).await;
        app.register("alice", "correct horse battery").await;
        let r = app.send(browser_post(&app, "/login?cookie=true", Some(APP), true, None,
            json!({"username": "alice", "password": "correct horse battery"}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let line = r.header("set-cookie").unwrap().to_string();
        assert!(line.starts_with("refresh_token=") && line.ends_with("; Path=/; Max-Age=7776000; HttpOnly; SameSite=Strict"), "{line}");
        let rt = line["refresh_token=".len()..].split(';').next().unwrap();
        let r = app.send(app.client.post(format!("{}/refresh", app.public))
            .header("origin", APP).header("x-requested-with", "1")
            .header("cookie", format!("refresh_token={rt}"))
            .json(&json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // The secure name is not read when cookies are not secure.
        let r = app.send(browser_post(&app, "/refresh", Some(APP), true, Some(rt), json!({}))).await;
        r.assert_error(400, "invalid_request");
    }
}
