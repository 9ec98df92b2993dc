use crate::support::*;
use reqwest::Method;
use serde_json::json;

fn admin_endpoints(target: &str) -> Vec<(Method, String, Option<serde_json::Value>)> {
    vec![
        (Method::GET, "/admin/users".into(), None),
        (Method::GET, format!("/admin/users/{target}"), None),
        (
            Method::PUT,
            format!("/admin/users/{target}/roles"),
            Some(json!({"roles": ["user", "admin"]})),
        ),
        (Method::POST, format!("/admin/users/{target}/disable"), None),
        (Method::POST, format!("/admin/users/{target}/enable"), None),
        (
            Method::DELETE,
            format!("/admin/users/{target}/sessions"),
            None,
        ),
        (Method::GET, "/admin/audit".into(), None),
    ]
}

both_backends! {
    async fn non_admins_get_403_and_anonymous_401(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, _) = app.signed_in("alice").await;
        let target = sub_of(&at);
        for (method, path, body) in admin_endpoints(&target) {
            let mut req = app.authed(method.clone(), &path, &at);
            if let Some(b) = &body {
                req = req.json(b);
            }
            app.send(req).await.assert_error(403, "forbidden");
            let mut anon = app.client.request(method, format!("{}{path}", app.public));
            if let Some(b) = &body {
                anon = anon.json(b);
            }
            app.send(anon).await.assert_error(401, "invalid_token");
        }
        // Nothing changed: still a plain user, still enabled.
        let me = app.get_as("/me", &at).await;
        assert_eq!(me.body["roles"], json!(["user"]));
        assert_eq!(app.verify(&at).await.status, 200);
    }

    async fn promoting_b_changes_b_not_the_admin(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (admin_id, admin_at, _) = app.admin("root").await;
        let (bob_at, bob_rt) = app.signed_in("bob").await;
        let bob_id = sub_of(&bob_at);
        let r = app
            .send(app.authed(Method::PUT, &format!("/admin/users/{bob_id}/roles"), &admin_at).json(&json!({"roles": ["user", "admin"]})))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["id"], bob_id);
        assert_eq!(r.body["roles"], json!(["admin", "user"]));
        let admin_view = app.get_as(&format!("/admin/users/{admin_id}"), &admin_at).await;
        assert_eq!(admin_view.body["roles"], json!(["admin", "user"]));
        assert_eq!(admin_view.body["username"], "root");
        // Granting takes effect at Bob's next refresh; his current token is unchanged.
        assert_eq!(claims(&bob_at)["roles"], json!(["user"]));
        assert_eq!(app.verify(&bob_at).await.status, 200);
        let refreshed = app.refresh(&bob_rt).await;
        assert_eq!(refreshed.status, 200);
        assert_eq!(claims(&refreshed.str("access_token"))["roles"], json!(["admin", "user"]));
        let v = app.verify(&refreshed.str("access_token")).await;
        assert_eq!(v.header("x-auth-roles"), Some("admin,user"));
        // Demoting Bob leaves the admin alone too.
        let r = app
            .send(app.authed(Method::PUT, &format!("/admin/users/{bob_id}/roles"), &admin_at).json(&json!({"roles": ["user"]})))
            .await;
        assert_eq!(r.body["roles"], json!(["user"]));
        assert_eq!(app.verify(&admin_at).await.status, 200);
        assert_eq!(app.get_as(&format!("/admin/users/{admin_id}"), &admin_at).await.body["roles"], json!(["admin", "user"]));
    }

    async fn last_admin_cannot_lock_everyone_out(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (admin_id, admin_at, _) = app.admin("root").await;
        let roles = |id: &str, roles: serde_json::Value| {
            app.send(app.authed(Method::PUT, &format!("/admin/users/{id}/roles"), &admin_at).json(&json!({"roles": roles})))
        };
        roles(&admin_id, json!(["user"])).await.assert_error(409, "last_admin");
        app.send(app.authed(Method::POST, &format!("/admin/users/{admin_id}/disable"), &admin_at))
            .await
            .assert_error(409, "last_admin");
        assert_eq!(app.verify(&admin_at).await.status, 200);
        // With a second (enabled) admin, stepping down works and ends the old admin's sessions.
        let (_, _, _) = app.admin("deputy").await;
        let r = roles(&admin_id, json!(["user"])).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(app.verify(&admin_at).await.body["error"], "token_revoked");
    }

    async fn removing_a_role_revokes_sessions_at_once(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (_, admin_at, _) = app.admin("root").await;
        let (bob_id, bob_at, bob_rt) = app.admin("bob").await;
        assert_eq!(app.get_as("/admin/users", &bob_at).await.status, 200);
        let r = app
            .send(app.authed(Method::PUT, &format!("/admin/users/{bob_id}/roles"), &admin_at).json(&json!({"roles": ["user"]})))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(app.verify(&bob_at).await.body["error"], "token_revoked");
        app.get_as("/admin/users", &bob_at).await.assert_error(401, "token_revoked");
        app.refresh(&bob_rt).await.assert_error(401, "session_revoked");
        // Invalid role names are refused and change nothing.
        app.send(app.authed(Method::PUT, &format!("/admin/users/{bob_id}/roles"), &admin_at).json(&json!({"roles": ["Admin!"]})))
            .await
            .assert_error(400, "validation_failed");
        app.send(app.authed(Method::PUT, &format!("/admin/users/{bob_id}/roles"), &admin_at).json(&json!({"roles": "admin"})))
            .await
            .assert_error(400, "invalid_request");
    }

    async fn admin_role_is_rechecked_against_the_database(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (bob_id, bob_at, _) = app.admin("bob").await;
        let (_, _, _) = app.admin("root").await;
        // Demote Bob behind the service's back: no session revocation, his token still says admin.
        let id = bob_id.clone();
        app.with_db(move |conn| {
            use auth_service::storage::schema::user_roles;
            use diesel::prelude::*;
            diesel::delete(user_roles::table.filter(user_roles::user_id.eq(id)).filter(user_roles::role.eq("admin"))).execute(conn)?;
            Ok(())
        })
        .await;
        assert_eq!(claims(&bob_at)["roles"], json!(["admin", "user"]));
        app.get_as("/admin/users", &bob_at).await.assert_error(403, "forbidden");
    }

    async fn an_admin_demoted_mid_request_changes_nothing(b: Backend) {
        // The request passed the entry check; the demotion lands before its transaction. The
        // change itself re-checks the actor under the lock and refuses.
        let app = TestApp::spawn(b).await;
        let (bob_id, _, _) = app.admin("bob").await;
        let (_, root_at, _) = app.admin("root").await;
        let carol = app.register("carol", "correct horse battery").await.str("id");
        let actor = auth_service::model::UserId::parse(&bob_id).unwrap();
        let target = auth_service::model::UserId::parse(&carol).unwrap();
        let now = app.now();
        let refused = app
            .with_db(move |conn| {
                use auth_service::domain::admin::{apply_disabled, apply_roles};
                use auth_service::storage::schema::user_roles;
                use diesel::prelude::*;
                diesel::delete(user_roles::table.filter(user_roles::user_id.eq(actor.to_string())).filter(user_roles::role.eq("admin"))).execute(conn)?;
                let client = auth_service::model::ClientInfo::default();
                let admin_and_user = auth_service::model::Roles::parse(&["admin", "user"]).unwrap();
                let roles = apply_roles(conn, target, &admin_and_user, Some(actor), &client, now, Default::default()).err();
                let disabled = apply_disabled(conn, target, true, Some(actor), &client, now, Default::default()).err();
                Ok::<_, auth_service::storage::StorageError>((roles, disabled))
            })
            .await;
        use auth_service::domain::Error::Forbidden;
        assert!(matches!(refused, (Some(Forbidden), Some(Forbidden))), "{refused:?}");
        let carol_now = app.get_as(&format!("/admin/users/{carol}"), &root_at).await;
        assert_eq!(carol_now.body["roles"], json!(["user"]));
        assert_eq!(carol_now.body["disabled"], false);
    }

    async fn disable_and_enable(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (_, admin_at, _) = app.admin("root").await;
        let (bob_at, bob_rt) = app.signed_in("bob").await;
        let bob_id = sub_of(&bob_at);
        let r = app.send(app.authed(Method::POST, &format!("/admin/users/{bob_id}/disable"), &admin_at)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["disabled"], true);
        assert_eq!(app.verify(&bob_at).await.body["error"], "token_revoked");
        app.refresh(&bob_rt).await.assert_error(401, "session_revoked");
        app.login("bob", "correct horse battery").await.assert_error(401, "invalid_credentials");
        let r = app.send(app.authed(Method::POST, &format!("/admin/users/{bob_id}/enable"), &admin_at)).await;
        assert_eq!(r.body["disabled"], false);
        let again = app.login("bob", "correct horse battery").await;
        assert_eq!(again.status, 200);
        assert_eq!(app.verify(&again.str("access_token")).await.status, 200);
        // Unknown and malformed ids.
        for id in [uuid::Uuid::new_v4().to_string(), "nope".to_string()] {
            app.send(app.authed(Method::POST, &format!("/admin/users/{id}/disable"), &admin_at))
                .await
                .assert_error(404, "not_found");
            app.get_as(&format!("/admin/users/{id}"), &admin_at).await.assert_error(404, "not_found");
        }
    }

    async fn ending_a_users_sessions(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (_, admin_at, _) = app.admin("root").await;
        let (bob_at, bob_rt) = app.signed_in("bob").await;
        let second = app.login("bob", "correct horse battery").await;
        let (carol_at, _) = app.signed_in("carol").await;
        let bob_id = sub_of(&bob_at);
        let r = app.send(app.authed(Method::DELETE, &format!("/admin/users/{bob_id}/sessions"), &admin_at)).await;
        assert_eq!(r.status, 204);
        for at in [bob_at, second.str("access_token")] {
            assert_eq!(app.verify(&at).await.body["error"], "token_revoked");
        }
        app.refresh(&bob_rt).await.assert_error(401, "session_revoked");
        assert_eq!(app.verify(&carol_at).await.status, 200);
        // Bob can still log in again: ending sessions is not disabling.
        assert_eq!(app.login("bob", "correct horse battery").await.status, 200);
        let unknown = uuid::Uuid::new_v4();
        app.send(app.authed(Method::DELETE, &format!("/admin/users/{unknown}/sessions"), &admin_at))
            .await
            .assert_error(404, "not_found");
    }

    async fn pagination_sees_everyone_once_while_users_are_added(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (_, admin_at, _) = app.admin("root").await;
        let mut expected = vec!["root".to_string()];
        for i in 0..9 {
            let name = format!("user{i}");
            assert_eq!(app.register(&name, "password1").await.status, 201);
            expected.push(name);
        }
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut added = 0;
        loop {
            let mut path = "/admin/users?limit=3".to_string();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = app.get_as(&path, &admin_at).await;
            assert_eq!(page.status, 200, "{}", page.body);
            let users = page.body["users"].as_array().unwrap();
            assert!(users.len() <= 3);
            seen.extend(users.iter().map(|u| u["username"].as_str().unwrap().to_string()));
            // Someone registers between every two pages.
            assert_eq!(app.register(&format!("late{added}"), "password1").await.status, 201);
            added += 1;
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
            assert!(added < 50, "pagination does not end");
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "a user appeared twice: {seen:?}");
        for name in &expected {
            assert!(seen.contains(name), "{name} missing from {seen:?}");
        }
        // Filtering and bad parameters.
        let filtered = app.get_as("/admin/users?username=USER1", &admin_at).await;
        let names: Vec<&str> = filtered.body["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["user1"]);
        let wild = app.get_as("/admin/users?username=%25", &admin_at).await;
        assert_eq!(wild.body["users"].as_array().unwrap().len(), 0, "LIKE wildcards are escaped");
        app.get_as("/admin/users?cursor=garbage", &admin_at).await.assert_error(400, "invalid_request");
        app.get_as("/admin/users?limit=0", &admin_at).await.assert_error(400, "validation_failed");
        app.get_as("/admin/users?limit=abc", &admin_at).await.assert_error(400, "invalid_request");
    }
}
