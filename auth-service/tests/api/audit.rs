use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn events(app: &TestApp, admin_at: &str, query: &str) -> Vec<Value> {
    let r = app
        .get_as(&format!("/admin/audit?limit=200&{query}"), admin_at)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["events"].as_array().unwrap().clone()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

both_backends! {
    async fn every_security_event_is_recorded(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__REUSE_GRACE", "0s")]).await;
        let (admin_id, admin_at, _) = app.admin("root").await;
        let (bob_at, bob_rt) = app.signed_in("bob").await;
        let bob = sub_of(&bob_at);
        app.login("bob", "the-secret-guess").await.assert_error(401, "invalid_credentials");
        app.login("nobody", "another-secret-guess").await.assert_error(401, "invalid_credentials");
        let r = app.refresh(&bob_rt).await;
        assert_eq!(r.status, 200);
        app.advance(1);
        app.refresh(&bob_rt).await.assert_error(401, "token_reused");
        let s2 = app.login("bob", "correct horse battery").await;
        let s3 = app.login("bob", "correct horse battery").await;
        let s2_at = s2.str("access_token");
        let r = app.send(app.authed(Method::DELETE, &format!("/me/sessions/{}", sid_of(&s3.str("access_token"))), &s2_at)).await;
        assert_eq!(r.status, 204);
        let r = app
            .send(app.authed(Method::PUT, "/me/password", &s2_at).json(&json!({"current_password": "correct horse battery", "new_password": "brand new secret"})))
            .await;
        assert_eq!(r.status, 204);
        assert_eq!(app.post("/logout", json!({"refresh_token": s2.str("refresh_token")})).await.status, 204);
        let s4 = app.login("bob", "brand new secret").await;
        assert_eq!(app.send(app.authed(Method::POST, "/logout/all", &s4.str("access_token"))).await.status, 204);
        for (method, path, body) in [
            (Method::PUT, format!("/admin/users/{bob}/roles"), Some(json!({"roles": ["user", "editor"]}))),
            (Method::PUT, format!("/admin/users/{bob}/roles"), Some(json!({"roles": ["user"]}))),
            (Method::POST, format!("/admin/users/{bob}/disable"), None),
            (Method::POST, format!("/admin/users/{bob}/enable"), None),
        ] {
            let mut req = app.authed(method, &path, &admin_at);
            if let Some(b) = body {
                req = req.json(&b);
            }
            assert!(app.send(req).await.status.is_success());
        }

        let bob_events = events(&app, &admin_at, &format!("user_id={bob}")).await;
        let k = kinds(&bob_events);
        for expected in [
            "registered", "login_succeeded", "login_failed", "token_refreshed", "refresh_token_reused",
            "session_revoked", "password_changed", "logged_out", "logged_out_all", "role_granted",
            "role_revoked", "user_disabled", "user_enabled",
        ] {
            assert!(k.contains(&expected), "{expected} missing from {k:?}");
        }
        // Newest first.
        let ids: Vec<i64> = bob_events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
        // Details: who did it, which session was revoked, which username was tried.
        let granted = bob_events.iter().find(|e| e["kind"] == "role_granted").unwrap();
        assert_eq!(granted["detail"], json!({"role": "editor", "by": admin_id}));
        let reused = bob_events.iter().find(|e| e["kind"] == "refresh_token_reused").unwrap();
        assert_eq!(reused["detail"]["revoked_session"], sid_of(&bob_at));
        assert_eq!(reused["session_id"], sid_of(&bob_at));
        let failed = events(&app, &admin_at, "kind=login_failed").await;
        let tried: Vec<&str> = failed.iter().map(|e| e["detail"]["username"].as_str().unwrap()).collect();
        assert!(tried.contains(&"bob") && tried.contains(&"nobody"), "{tried:?}");
        assert!(failed.iter().any(|e| e["user_id"].is_null()));
        let login = bob_events.iter().find(|e| e["kind"] == "login_succeeded").unwrap();
        assert_eq!(login["ip"], "127.0.0.1");
        assert!(login["at"].is_string());
        // No password, hash or token ever lands in the trail.
        let everything = serde_json::to_string(&events(&app, &admin_at, "").await).unwrap();
        for secret in ["the-secret-guess", "another-secret-guess", "correct horse", "brand new secret", "argon2", &bob_rt, &bob_at] {
            assert!(!everything.contains(secret), "{secret} leaked into the audit trail");
        }
    }

    async fn filters_and_pages(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (_, admin_at, _) = app.admin("root").await;
        for i in 0..4 {
            app.signed_in(&format!("user{i}")).await;
        }
        let registered = events(&app, &admin_at, "kind=registered").await;
        assert_eq!(registered.len(), 5);
        assert!(kinds(&registered).iter().all(|k| *k == "registered"));
        // Pages of two, no overlap, all covered.
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let r = app.get_as(&format!("/admin/audit?kind=registered&limit=2{cursor}"), &admin_at).await;
            let page = r.body["events"].as_array().unwrap();
            assert!(page.len() <= 2);
            seen.extend(page.iter().map(|e| e["id"].as_i64().unwrap()));
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        let all: Vec<i64> = registered.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert_eq!(seen, all);
        // Time range.
        assert!(events(&app, &admin_at, "since=2999-01-01T00:00:00Z").await.is_empty());
        assert!(events(&app, &admin_at, "until=2000-01-01T00:00:00Z").await.is_empty());
        assert_eq!(events(&app, &admin_at, "kind=registered&since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z").await.len(), 5);
        // Bad filters.
        app.get_as("/admin/audit?kind=everything", &admin_at).await.assert_error(400, "validation_failed");
        app.get_as("/admin/audit?since=yesterday", &admin_at).await.assert_error(400, "validation_failed");
        app.get_as("/admin/audit?cursor=x", &admin_at).await.assert_error(400, "invalid_request");
    }

    async fn pruning_removes_only_what_is_old(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__RETENTION__AUDIT_MAX_AGE", "30d"), ("AUTH__RETENTION__BATCH_SIZE", "2")]).await;
        let (live_at, live_rt) = app.signed_in("alice").await;
        let (dead_at, _) = app.signed_in("bob").await;
        let (dead_sid, live_sid) = (sid_of(&dead_at), sid_of(&live_at));
        // Age some rows: five old audit events, one long-idle session with an expired token.
        let now = app.now();
        app.with_db(move |conn| {
            use auth_service::storage::schema::{audit_events, refresh_tokens, sessions};
            use diesel::prelude::*;
            let old = now - 40 * 86_400;
            for _ in 0..5 {
                diesel::insert_into(audit_events::table)
                    .values((audit_events::at.eq(old), audit_events::kind.eq("login_failed"), audit_events::detail.eq("{}")))
                    .execute(conn)?;
            }
            // Last used 100 days ago: its newest refresh token (90 days) has expired.
            let idle = now - 100 * 86_400;
            diesel::update(sessions::table.find(&dead_sid))
                .set((sessions::last_used_at.eq(idle), sessions::created_at.eq(idle)))
                .execute(conn)?;
            diesel::update(refresh_tokens::table.filter(refresh_tokens::session_id.eq(&dead_sid)))
                .set(refresh_tokens::expires_at.eq(old))
                .execute(conn)?;
            Ok(())
        })
        .await;
        let pruned = app.server.state.services.maintenance.prune().await.unwrap();
        assert_eq!(pruned.audit_events, 5);
        assert_eq!(pruned.refresh_tokens, 1);
        assert_eq!(pruned.sessions, 1);
        let (sessions_left, recent_audit) = app
            .with_db(move |conn| {
                use auth_service::storage::schema::{audit_events, sessions};
                use diesel::prelude::*;
                let s: Vec<String> = sessions::table.select(sessions::id).load(conn)?;
                let a: i64 = audit_events::table.count().get_result(conn)?;
                Ok((s, a))
            })
            .await;
        assert_eq!(sessions_left, vec![live_sid]);
        assert!(recent_audit >= 4, "recent events were kept");
        // The live session is untouched and works.
        assert_eq!(app.refresh(&live_rt).await.status, 200);
        // A second pass finds nothing.
        let again = app.server.state.services.maintenance.prune().await.unwrap();
        assert_eq!((again.audit_events, again.refresh_tokens, again.sessions), (0, 0, 0));
    }
}
