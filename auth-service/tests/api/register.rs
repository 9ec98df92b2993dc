use crate::support::*;
use serde_json::json;

both_backends! {
    async fn registrations_per_address_are_bounded(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__REGISTER__MAX_PER_IP", "3")]).await;
        // Invalid requests are refused before they cost a hash, and do not count.
        for _ in 0..5 {
            app.register("x", "password1").await.assert_error(400, "validation_failed");
        }
        assert_eq!(app.register("user1", "password1").await.status, 201);
        assert_eq!(app.register("user2", "password1").await.status, 201);
        // Probing a taken name counts like a registration.
        app.register("user1", "password1").await.assert_error(409, "username_taken");
        let r = app.register("user3", "password1").await;
        r.assert_error(429, "too_many_attempts");
        assert!(r.header("retry-after").is_some());
        // Logging in is a separate budget.
        assert_eq!(app.login("user1", "password1").await.status, 200);
        // Windows end (register.window, 1 hour).
        app.advance(3600);
        for name in ["user3", "user4", "user5"] {
            assert_eq!(app.register(name, "password1").await.status, 201);
        }
        app.register("user6", "password1").await.assert_error(429, "too_many_attempts");
        app.advance(3600);
        assert_eq!(app.register("user6", "password1").await.status, 201);
    }

    async fn creates_user(b: Backend) {
        let app = TestApp::spawn(b).await;
        let r = app
            .post("/register", json!({"username": "Alice", "password": "correct horse", "email": "Alice@Example.com"}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["username"], "Alice");
        assert_eq!(r.body["email"], "alice@example.com");
        assert_eq!(r.body["roles"], json!(["user"]));
        assert!(uuid::Uuid::parse_str(&r.str("id")).is_ok());
        assert!(time::OffsetDateTime::parse(&r.str("created_at"), &time::format_description::well_known::Rfc3339).is_ok());
        let text = r.body.to_string();
        assert!(!text.contains("password") && !text.contains("argon2"), "{text}");
    }

    async fn taken_username_and_email_conflict(b: Backend) {
        let app = TestApp::spawn(b).await;
        let r = app.post("/register", json!({"username": "bob", "password": "password1", "email": "bob@x.io"})).await;
        assert_eq!(r.status, 201);
        app.register("BOB", "password2").await.assert_error(409, "username_taken");
        app.post("/register", json!({"username": "bobby", "password": "password1", "email": "BOB@x.io"}))
            .await
            .assert_error(409, "email_taken");
        // The conflicting attempts changed nothing: the original password still works.
        assert_eq!(app.login("bob", "password1").await.status, 200);
        app.login("bob", "password2").await.assert_error(401, "invalid_credentials");
    }

    async fn validation_rules(b: Backend) {
        let app = TestApp::spawn(b).await;
        let long_pw = "p".repeat(257);
        let long_name = "u".repeat(65);
        for (username, password, email) in [
            ("ab", "password1", None),
            (long_name.as_str(), "password1", None),
            ("has space", "password1", None),
            ("üser", "password1", None),
            ("carol", "short", None),
            ("carol", long_pw.as_str(), None),
            ("carol", "password1", Some("not-an-email")),
        ] {
            let mut body = json!({"username": username, "password": password});
            if let Some(e) = email {
                body["email"] = json!(e);
            }
            app.post("/register", body).await.assert_error(400, "validation_failed");
        }
        // None of them created anything: the name is still free.
        assert_eq!(app.register("carol", "password1").await.status, 201);
        // Limits are inclusive and counted in characters.
        assert_eq!(app.register(&"d".repeat(64), &"é".repeat(256)).await.status, 201);
        assert_eq!(app.register("e.f_g-h", "12345678").await.status, 201);
    }
}
