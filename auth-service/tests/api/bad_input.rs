use crate::support::*;
use serde_json::json;

both_backends! {
    async fn nul_and_control_characters_never_reach_the_database(b: Backend) {
        // PostgreSQL refuses NUL in text; every field that could carry one is answered 4xx.
        let app = TestApp::spawn(b).await;
        let (_, admin_at, _) = app.admin("root").await;
        app.login("root\u{0}", "correct horse battery").await.assert_error(401, "invalid_credentials");
        app.login("ro\u{7}ot", "anything at all").await.assert_error(401, "invalid_credentials");
        app.post("/register", json!({"username": "ev\u{0}e", "password": "password1"})).await.assert_error(400, "validation_failed");
        app.post("/register", json!({"username": "eve", "password": "password1", "email": "e\u{0}@x.org"})).await.assert_error(400, "validation_failed");
        // A password may hold anything: it is only ever hashed.
        assert_eq!(app.register("eve", "pass\u{0}word").await.status, 201);
        assert_eq!(app.login("eve", "pass\u{0}word").await.status, 200);
        app.login("eve", "pass").await.assert_error(401, "invalid_credentials");
        app.get_as("/admin/users?username=%00", &admin_at).await.assert_error(400, "validation_failed");
        app.get_as("/admin/audit?user_id=%00", &admin_at).await.assert_error(400, "validation_failed");
        app.get_as("/admin/audit?user_id=nobody", &admin_at).await.assert_error(400, "validation_failed");
        app.get_as("/admin/users/%00", &admin_at).await.assert_error(404, "not_found");
        app.send(app.authed(reqwest::Method::DELETE, "/me/sessions/%00", &admin_at)).await.assert_error(404, "not_found");
        // The failed login is on record, with the control characters made visible.
        let r = app.get_as("/admin/audit?kind=login_failed", &admin_at).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let tried: Vec<&str> = r.body["events"].as_array().unwrap().iter().map(|e| e["detail"]["username"].as_str().unwrap()).collect();
        assert!(tried.contains(&"root\u{FFFD}") && tried.contains(&"ro\u{FFFD}ot"), "{tried:?}");
    }

    async fn malformed_bodies_get_clear_4xx(b: Backend) {
        let app = TestApp::spawn(b).await;
        let url = |p: &str| format!("{}{p}", app.public);
        let json_post = |p: &str, body: Vec<u8>| {
            app.client.post(url(p)).header("content-type", "application/json").body(body)
        };
        for path in ["/register", "/login", "/refresh", "/logout"] {
            app.send(json_post(path, b"{not json".to_vec())).await.assert_error(400, "invalid_request");
            app.send(json_post(path, b"".to_vec())).await.assert_error(400, "invalid_request");
            app.send(json_post(path, b"[]".to_vec())).await.assert_error(400, "invalid_request");
            app.send(json_post(path, b"{}".to_vec())).await.assert_error(400, "invalid_request");
            app.send(json_post(path, vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']))
                .await
                .assert_error(400, "invalid_request");
            app.send(app.client.post(url(path)).header("content-type", "text/plain").body("{}"))
                .await
                .assert_error(415, "unsupported_media_type");
            app.send(app.client.post(url(path)).body("{}")).await.assert_error(415, "unsupported_media_type");
            let big = format!("{{\"username\": \"{}\"}}", "a".repeat(20 * 1024));
            app.send(json_post(path, big.into_bytes())).await.assert_error(413, "payload_too_large");
            app.send(app.client.get(url(path))).await.assert_error(405, "method_not_allowed");
        }
        // Wrong types.
        app.post("/register", json!({"username": 5, "password": "password1"}))
            .await
            .assert_error(400, "invalid_request");
        app.post("/login", json!({"username": "a", "password": ["x"]}))
            .await
            .assert_error(400, "invalid_request");
        app.send(app.client.get(url("/nope"))).await.assert_error(404, "not_found");
        // Nothing was created by any of it.
        app.login("a", "password1").await.assert_error(401, "invalid_credentials");
        let r = app.register("aaa", "password1").await;
        assert_eq!(r.status, 201);
    }

    async fn oversized_chunked_body(b: Backend) {
        let app = TestApp::spawn(b).await;
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..40).map(|_| Ok(vec![b' '; 1024])).collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let r = app
            .send(app.client.post(format!("{}/login", app.public)).header("content-type", "application/json").body(body))
            .await;
        r.assert_error(413, "payload_too_large");
    }
}
