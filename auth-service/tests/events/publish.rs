//! Every audited action reaches the stream, in order per user, in the documented shape; with
//! events off nothing is queued.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::stream::*;
use crate::support::*;

/// Registers `username` and makes them an administrator the way `auth-service user
/// grant-role` does (with the outbox on, as the command line has it when `events.url` is
/// set); returns their access token.
async fn admin_with_events(app: &TestApp, username: &str) -> String {
    let r = app.register(username, "correct horse battery").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let user_id = auth_service::model::UserId::parse(&r.str("id")).unwrap();
    let roles = auth_service::model::Roles::parse(&["admin", "user"]).unwrap();
    let now = app.now();
    app.pool
        .run(move |conn| {
            auth_service::domain::admin::apply_roles(
                conn,
                user_id,
                &roles,
                None,
                &Default::default(),
                now,
                auth_service::domain::audit::Outbox { enabled: true },
            )
        })
        .await
        .unwrap();
    let r = app.login(username, "correct horse battery").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.str("access_token")
}

/// Every kind of audited action, one after the other: (bob's id, bob's first session id).
async fn every_action(app: &TestApp) -> (String, String) {
    let admin_at = admin_with_events(app, "root").await;
    let (bob_at, bob_rt) = app.signed_in("bob").await;
    let bob = sub_of(&bob_at);
    app.login("bob", "the-secret-guess")
        .await
        .assert_error(401, "invalid_credentials");
    app.login("nobody", "another-secret-guess")
        .await
        .assert_error(401, "invalid_credentials");
    assert_eq!(app.refresh(&bob_rt).await.status, 200);
    app.advance(1);
    app.refresh(&bob_rt).await.assert_error(401, "token_reused");
    let s2 = app.login("bob", "correct horse battery").await;
    let s3 = app.login("bob", "correct horse battery").await;
    let s2_at = s2.str("access_token");
    let path = format!("/me/sessions/{}", sid_of(&s3.str("access_token")));
    let r = app.send(app.authed(Method::DELETE, &path, &s2_at)).await;
    assert_eq!(r.status, 204);
    let body =
        json!({"current_password": "correct horse battery", "new_password": "brand new secret"});
    let r = app
        .send(app.authed(Method::PUT, "/me/password", &s2_at).json(&body))
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .post("/logout", json!({"refresh_token": s2.str("refresh_token")}))
        .await;
    assert_eq!(r.status, 204);
    let s4 = app.login("bob", "brand new secret").await;
    let r = app
        .send(app.authed(Method::POST, "/logout/all", &s4.str("access_token")))
        .await;
    assert_eq!(r.status, 204);
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/admin/users/{bob}/roles"),
            Some(json!({"roles": ["user", "editor"]})),
        ),
        (
            Method::PUT,
            format!("/admin/users/{bob}/roles"),
            Some(json!({"roles": ["user"]})),
        ),
        (Method::POST, format!("/admin/users/{bob}/disable"), None),
        (Method::POST, format!("/admin/users/{bob}/enable"), None),
    ] {
        let mut req = app.authed(method, &path, &admin_at);
        if let Some(b) = body {
            req = req.json(&b);
        }
        assert!(app.send(req).await.status.is_success());
    }
    (bob, sid_of(&bob_at))
}

both_backends! {
    async fn every_audited_action_is_published_in_order(b: Backend) {
        let url = shared_nats_url();
        let (stream_name, prefix) = unique_names();
        let _cleanup = StreamCleanup { url: url.clone(), stream: stream_name.clone() };
        let mut settings = events_env(&url, &stream_name, &prefix);
        settings.push(("AUTH__TOKENS__REUSE_GRACE".into(), "0s".into()));
        let app = TestApp::spawn_with(b, &as_pairs(&settings)).await;
        let (bob, bob_first_sid) = every_action(&app).await;

        let published = wait_until_relayed(&app.pool, &url, &stream_name).await;
        let rows = audit_rows(&app.pool).await;
        // Exactly once each here: nothing failed, so nothing was published twice.
        assert_eq!(published.len(), rows.len(), "{published:#?}");
        check_messages(&published, &rows, &prefix);
        for (user, streamed, recorded) in per_user_orders(&published, &rows) {
            assert_eq!(streamed, recorded, "the order of user {user}'s events");
        }
        let bob_kinds: Vec<&str> = published
            .iter()
            .filter(|p| p.body["user_id"] == bob.as_str())
            .map(|p| p.body["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            bob_kinds,
            [
                "registered", "login_succeeded", "login_failed", "token_refreshed",
                "refresh_token_reused", "login_succeeded", "login_succeeded", "session_revoked",
                "password_changed", "logged_out", "login_succeeded", "logged_out_all",
                "role_granted", "role_revoked", "user_disabled", "user_enabled",
            ]
        );
        // A failed login for an unknown name names no user; it is published too.
        let unknown = published
            .iter()
            .find(|p| p.body["kind"] == "login_failed" && p.body["user_id"].is_null())
            .expect("the failed login of an unknown user");
        assert!(unknown.body["session_id"].is_null());
        // What was typed as the name stays in the audit row and is not published: it is
        // sometimes a password typed into the wrong field.
        assert_eq!(unknown.body["detail"], json!({}));
        let row = rows
            .iter()
            .find(|r| r.event_id.as_deref() == Some(unknown.id()))
            .unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&row.detail).unwrap(), json!({"username": "nobody"}));
        for p in published.iter().filter(|p| p.body["kind"] == "login_failed") {
            assert!(p.body["detail"].get("username").is_none(), "{p:?}");
        }
        let reused = published
            .iter()
            .find(|p| p.body["kind"] == "refresh_token_reused")
            .unwrap();
        assert_eq!(reused.body["session_id"], bob_first_sid.as_str());
        // Neither the address nor the user agent, nor any secret, leaves the service.
        let everything = serde_json::to_string(
            &published.iter().map(|p| &p.body).collect::<Vec<_>>(),
        )
        .unwrap();
        for absent in ["127.0.0.1", "\"ip\"", "user_agent", "correct horse", "brand new secret"] {
            assert!(!everything.contains(absent), "{absent} in {everything}");
        }
        // The relay's counters.
        let text = scrape(&app.internal).await;
        let stored = sample(&text, "auth_events_published_total{result=\"stored\"}");
        assert_eq!(stored as usize, rows.len(), "{text}");
        assert_eq!(sample(&text, "auth_events_outbox_depth"), 0.0, "{text}");
    }

    async fn with_events_off_nothing_is_queued(b: Backend) {
        let app = TestApp::spawn(b).await;
        app.signed_in("carol").await;
        app.login("carol", "wrong password here")
            .await
            .assert_error(401, "invalid_credentials");
        let rows = audit_rows(&app.pool).await;
        assert_eq!(rows.len(), 3);
        // Every audit row still gets an event id of its own (a UUID v4).
        let mut ids: Vec<String> = rows.iter().map(|r| r.event_id.clone().unwrap()).collect();
        for id in &ids {
            assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
        }
        ids.dedup();
        assert_eq!(ids.len(), 3);
        assert_eq!(outbox_depth(&app.pool).await, 0);
    }

    async fn with_events_on_the_outbox_row_commits_with_the_audit_row(b: Backend) {
        // The broker is never reachable here (a port nothing listens on): each audited
        // action leaves exactly one queued event, the answers are as always.
        let port = testkit::free_port();
        let url = format!("nats://127.0.0.1:{port}");
        let settings = events_env(&url, "AUTH_EVENTS", "auth.events");
        let app = TestApp::spawn_with(b, &as_pairs(&settings)).await;
        app.signed_in("dave").await;
        app.login("dave", "wrong password here")
            .await
            .assert_error(401, "invalid_credentials");
        app.register("dave", "correct horse battery")
            .await
            .assert_error(409, "username_taken");
        let rows = audit_rows(&app.pool).await;
        assert_eq!(rows.len(), 3, "a refused registration records nothing");
        assert_eq!(outbox_depth(&app.pool).await, 3);
        wait_until(Duration::from_secs(30), "relay errors counted", || async {
            let text = scrape(&app.internal).await;
            sample(&text, "auth_events_relay_errors_total{stage=\"connect\"}") > 0.0
                && sample(&text, "auth_events_outbox_depth") == 3.0
        })
        .await;
    }
}
