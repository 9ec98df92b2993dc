use crate::support::*;
use reqwest::Method;
use serde_json::json;

const PW: &str = "correct horse battery";

both_backends! {
    async fn me_needs_a_valid_access_token(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, rt) = app.signed_in("alice").await;
        let r = app.get_as("/me", &at).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["username"], "alice");
        assert_eq!(r.body["id"], sub_of(&at));
        assert_eq!(r.body["roles"], json!(["user"]));
        assert!(r.body.get("password_hash").is_none());
        let none = app.send(app.client.get(format!("{}/me", app.public))).await;
        none.assert_error(401, "invalid_token");
        assert!(none.header("www-authenticate").is_some());
        app.get_as("/me", &rt).await.assert_error(401, "invalid_token");
        app.get_as("/me", "garbage").await.assert_error(401, "invalid_token");
    }

    async fn password_change_only_ever_touches_the_caller(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (a_at, _) = app.signed_in("alice").await;
        let (b_at, _) = app.signed_in("bob").await;
        let bob_id = sub_of(&b_at);
        // Every way of naming Bob in the request is ignored or refused.
        for path in [
            format!("/me/{bob_id}/password"),
            format!("/users/{bob_id}/password"),
            format!("/admin/users/{bob_id}/password"),
        ] {
            let r = app
                .send(app.authed(Method::PUT, &path, &a_at).json(&json!({"current_password": PW, "new_password": "hijacked-password"})))
                .await;
            assert!(r.status == 404 || r.status == 405, "{path}: {}", r.status);
        }
        let r = app
            .send(app.authed(Method::PUT, "/me/password", &a_at).json(&json!({
                "current_password": PW,
                "new_password": "alice's new password",
                "user_id": bob_id,
                "username": "bob",
                "sub": bob_id,
            })))
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
        // Bob is untouched; Alice's password changed.
        assert_eq!(app.login("bob", PW).await.status, 200);
        app.login("bob", "alice's new password").await.assert_error(401, "invalid_credentials");
        assert_eq!(app.login("alice", "alice's new password").await.status, 200);
        app.login("alice", PW).await.assert_error(401, "invalid_credentials");
    }

    async fn password_change_checks_and_ends_other_sessions(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at1, rt1) = app.signed_in("alice").await;
        let second = app.login("alice", PW).await;
        let (at2, rt2) = (second.str("access_token"), second.str("refresh_token"));
        let put = |body: serde_json::Value| app.send(app.authed(Method::PUT, "/me/password", &at1).json(&body));
        put(json!({"current_password": "wrong password", "new_password": "a new password"}))
            .await
            .assert_error(401, "invalid_credentials");
        put(json!({"current_password": PW, "new_password": "short"}))
            .await
            .assert_error(400, "validation_failed");
        put(json!({"new_password": "a new password"})).await.assert_error(400, "invalid_request");
        // None of that changed anything.
        assert_eq!(app.verify(&at2).await.status, 200);
        let r = put(json!({"current_password": PW, "new_password": "a new password"})).await;
        assert_eq!(r.status, 204, "{}", r.body);
        assert_eq!(app.verify(&at2).await.body["error"], "token_revoked");
        app.refresh(&rt2).await.assert_error(401, "session_revoked");
        // The session that changed the password lives on.
        assert_eq!(app.verify(&at1).await.status, 200);
        assert_eq!(app.refresh(&rt1).await.status, 200);
    }

    async fn sessions_list_and_end_only_own(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at1, _) = app.signed_in("alice").await;
        let r = app
            .send(app.client.post(format!("{}/login", app.public)).header("user-agent", "phone/1.0").json(&json!({"username": "alice", "password": PW})))
            .await;
        let (at2, rt2) = (r.str("access_token"), r.str("refresh_token"));
        let (bob_at, bob_rt) = app.signed_in("bob").await;

        let list = app.get_as("/me/sessions", &at1).await;
        assert_eq!(list.status, 200, "{}", list.body);
        let sessions = list.body["sessions"].as_array().unwrap().clone();
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
        let current = sessions.iter().find(|s| s["current"] == true).unwrap();
        assert_eq!(current["id"], sid_of(&at1));
        assert!(sessions.iter().any(|s| s["user_agent"] == "phone/1.0" && s["ip"] == "127.0.0.1"));
        for s in &sessions {
            assert!(s["created_at"].is_string() && s["last_used_at"].is_string());
        }

        // Bob's session id through Alice's token: 404, and Bob's session is untouched.
        let del = |sid: String, token: String| app.send(app.authed(Method::DELETE, &format!("/me/sessions/{sid}"), &token));
        del(sid_of(&bob_at), at1.clone()).await.assert_error(404, "not_found");
        assert_eq!(app.verify(&bob_at).await.status, 200);
        assert_eq!(app.refresh(&bob_rt).await.status, 200);
        del("not-a-uuid".into(), at1.clone()).await.assert_error(404, "not_found");
        del(uuid::Uuid::new_v4().to_string(), at1.clone()).await.assert_error(404, "not_found");

        // Alice ends her phone session.
        assert_eq!(del(sid_of(&at2), at1.clone()).await.status, 204);
        assert_eq!(app.verify(&at2).await.body["error"], "token_revoked");
        app.refresh(&rt2).await.assert_error(401, "session_revoked");
        let list = app.get_as("/me/sessions", &at1).await;
        assert_eq!(list.body["sessions"].as_array().unwrap().len(), 1);
        // Ending it again is a 404: it is no longer live.
        del(sid_of(&at2), at1.clone()).await.assert_error(404, "not_found");
    }

    async fn logout_all_ends_every_session(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at1, rt1) = app.signed_in("alice").await;
        let second = app.login("alice", PW).await;
        let (bob_at, _) = app.signed_in("bob").await;
        app.send(app.client.post(format!("{}/logout/all", app.public)))
            .await
            .assert_error(401, "invalid_token");
        let r = app.send(app.authed(Method::POST, "/logout/all", &at1)).await;
        assert_eq!(r.status, 204, "{}", r.body);
        for at in [at1.clone(), second.str("access_token")] {
            assert_eq!(app.verify(&at).await.body["error"], "token_revoked");
        }
        for rt in [rt1, second.str("refresh_token")] {
            app.refresh(&rt).await.assert_error(401, "session_revoked");
        }
        assert_eq!(app.verify(&bob_at).await.status, 200);
        // The revoked token cannot be used for /me either.
        app.get_as("/me", &at1).await.assert_error(401, "token_revoked");
    }
}
