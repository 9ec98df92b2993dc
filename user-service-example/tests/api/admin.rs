//! The operators' API: `/admin/…` behind the admin token.

use reqwest::Method;
use serde_json::json;
use testkit::{both_backends, send};

use crate::support::*;

const PW: &str = "correct horse battery";

both_backends! {
    async fn admin_api_is_off_without_a_token(b: Backend) {
        let s = UserService::start_with(b, &[("USERS__ADMIN__TOKEN", "")]).await;
        let id = s.user("kim", PW).await;
        for (method, path) in [
            (Method::GET, "/admin/users".to_string()),
            (Method::POST, format!("/admin/users/{id}/disable")),
            (Method::PUT, format!("/admin/users/{id}/roles")),
        ] {
            send(s.admin(method.clone(), &path).json(&json!({"roles": []}))).await.assert_error(404, "not_found");
            send(s.anonymous(method, &path)).await.assert_error(404, "not_found");
        }
        assert_eq!(s.verify("kim", PW).await.status, 200);
    }

    async fn admin_api_needs_the_token(b: Backend) {
        let s = UserService::start(b).await;
        let id = s.user("lee", PW).await;
        let requests = |path: &str, method: Method| {
            [
                s.anonymous(method.clone(), path),
                s.anonymous(method.clone(), path).bearer_auth("wrong-token-0123456789-abcdefghijklmn"),
                s.anonymous(method.clone(), path).basic_auth(CLIENT_ID, Some(SECRET)),
                // The service credential is not an admin token.
                s.anonymous(method, path).bearer_auth(SECRET),
            ]
        };
        for (method, path) in [
            (Method::GET, "/admin/users".to_string()),
            (Method::GET, format!("/admin/users/{id}")),
            (Method::POST, format!("/admin/users/{id}/disable")),
            (Method::PUT, format!("/admin/users/{id}/roles")),
        ] {
            for req in requests(&path, method.clone()) {
                let r = send(req.json(&json!({"roles": ["admin"]}))).await;
                r.assert_error(401, "unauthorized");
                assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
            }
        }
        // Nothing changed.
        let u = s.get_user(&id).await;
        assert_eq!((u.body["disabled"].as_bool(), u.body["roles"].clone()), (Some(false), json!(["user"])));
        // Nor can the admin token call the contract.
        let r = send(s.anonymous(Method::GET, &format!("/v1/users/{id}")).bearer_auth(ADMIN_TOKEN)).await;
        r.assert_error(401, "unauthorized");
        s.assert_no_secrets(&[PW]);
    }

    async fn disable_enable_and_roles(b: Backend) {
        let s = UserService::start(b).await;
        let id = s.user("mia", PW).await;
        let r = s.set_disabled(&id, true).await;
        assert_eq!(r.body["disabled"], true);
        s.verify("mia", PW).await.assert_error(401, "invalid_credentials");
        // Repeating is harmless.
        assert_eq!(s.set_disabled(&id, true).await.body["disabled"], true);
        let r = s.set_disabled(&id, false).await;
        assert_eq!(r.body["disabled"], false);
        assert_eq!(s.verify("mia", PW).await.status, 200);

        let r = s.set_roles(&id, &["ops", "admin", "ops"]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["roles"], json!(["admin", "ops", "user"]));
        assert_eq!(s.verify("mia", PW).await.body["roles"], json!(["admin", "ops", "user"]));
        // `user` is always kept.
        let r = s.set_roles(&id, &["ops"]).await;
        assert_eq!(r.body["roles"], json!(["ops", "user"]));
        let r = s.set_roles(&id, &[]).await;
        assert_eq!(r.body["roles"], json!(["user"]));
        let got = send(s.admin(Method::GET, &format!("/admin/users/{id}"))).await;
        assert_eq!(got.body, s.get_user(&id).await.body);

        for bad in [json!({"roles": ["Admin"]}), json!({"roles": ["a b"]}), json!({"roles": "admin"}), json!({}), json!({"roles": (0..17).map(|i| format!("r{i}")).collect::<Vec<_>>()})] {
            send(s.admin(Method::PUT, &format!("/admin/users/{id}/roles")).json(&bad)).await.assert_error(400, "invalid_request");
        }
        assert_eq!(s.get_user(&id).await.body["roles"], json!(["user"]));
        let nobody = uuid::Uuid::new_v4();
        for (method, path) in [
            (Method::POST, format!("/admin/users/{nobody}/disable")),
            (Method::POST, format!("/admin/users/{nobody}/enable")),
            (Method::PUT, format!("/admin/users/{nobody}/roles")),
            (Method::GET, format!("/admin/users/{nobody}")),
            (Method::POST, "/admin/users/not-an-id/disable".to_string()),
        ] {
            send(s.admin(method, &path).json(&json!({"roles": []}))).await.assert_error(404, "not_found");
        }
    }

    async fn list_is_paged(b: Backend) {
        let s = UserService::start(b).await;
        let mut ids = Vec::new();
        for name in ["user1", "user2", "user3", "user4", "user5"] {
            ids.push(s.user(name, PW).await);
        }
        let mut seen = Vec::new();
        let mut offset = Some(0);
        while let Some(o) = offset {
            let r = send(s.admin(Method::GET, &format!("/admin/users?limit=2&offset={o}"))).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let users = r.body["users"].as_array().unwrap().clone();
            assert!(users.len() <= 2);
            for u in &users {
                assert!(u.get("password_hash").is_none());
                seen.push(u["id"].as_str().unwrap().to_string());
            }
            offset = r.body["next_offset"].as_u64();
        }
        seen.sort();
        ids.sort();
        assert_eq!(seen, ids);
        let all = send(s.admin(Method::GET, "/admin/users")).await;
        assert_eq!(all.body["users"].as_array().unwrap().len(), 5);
        assert!(all.body["next_offset"].is_null());
        for bad in ["limit=0", "limit=201", "limit=abc", "offset=-1", "color=blue"] {
            send(s.admin(Method::GET, &format!("/admin/users?{bad}"))).await.assert_error(400, "invalid_request");
        }
    }
}
