use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

both_backends! {
    async fn valid_token_get_and_post(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, _) = app.signed_in("alice").await;
        let c = claims(&at);
        let v = app.verify(&at).await;
        assert_eq!(v.status, 200, "{}", v.body);
        assert_eq!(v.body["active"], true);
        for k in ["sub", "username", "roles", "sid", "jti", "exp", "iat"] {
            assert_eq!(v.body[k], c[k], "{k}");
        }
        assert_eq!(v.header("x-auth-user-id"), c["sub"].as_str());
        assert_eq!(v.header("x-auth-user"), Some("alice"));
        assert_eq!(v.header("x-auth-roles"), Some("user"));
        let p = app
            .send(app.client.post(format!("{}/verify", app.internal)).json(&json!({"token": at})))
            .await;
        assert_eq!(p.status, 200);
        assert_eq!(p.body, v.body);
        // The scheme is case-insensitive.
        let lower = app
            .send(app.client.get(format!("{}/verify", app.internal)).header("authorization", format!("bearer {at}")))
            .await;
        assert_eq!(lower.status, 200);
    }

    async fn a_cached_token_is_still_checked_for_expiry_revocation_and_tampering(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__ACCESS_TTL", "60s")]).await;
        let (at, rt) = app.signed_in("alice").await;
        // Verified once: from now on it comes from the cache.
        for _ in 0..3 {
            assert_eq!(app.verify(&at).await.status, 200);
        }
        // One changed byte is another token: never the cached answer.
        let mut tampered = at.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(app.verify(&tampered).await.body["error"], "invalid_token");
        // Expiry is not cached: past exp it is refused, and a refresh gets a new one.
        app.advance(61);
        let v = app.verify(&at).await;
        assert_eq!(v.body["error"], "token_expired", "{}", v.body);
        let fresh = app.refresh(&rt).await;
        assert_eq!(fresh.status, 200, "{}", fresh.body);
        let fresh_at = fresh.str("access_token");
        assert_eq!(app.verify(&fresh_at).await.status, 200);
        // Revocation is not cached: logging out is seen at once.
        let r = app.post("/logout", serde_json::json!({"refresh_token": fresh.str("refresh_token")})).await;
        assert_eq!(r.status, 204);
        assert_eq!(app.verify(&fresh_at).await.body["error"], "token_revoked");
    }

    async fn refuses_forgeries(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, _) = app.signed_in("alice").await;
        let parts: Vec<&str> = at.split('.').collect();
        let h = header(&at);
        let mut c = claims(&at);
        c["roles"] = json!(["admin"]);

        let mut none_header = h.clone();
        none_header["alg"] = json!("none");
        let alg_none = format!("{}.{}.", b64(&none_header), b64(&c));

        let mut hs_header = h.clone();
        hs_header["alg"] = json!("HS256");
        let alg_swap = format!("{}.{}.{}", b64(&hs_header), parts[1], parts[2]);

        let tampered = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);

        let mut unknown_kid = h.clone();
        unknown_kid["kid"] = json!("not-a-key");
        let unknown = format!("{}.{}.{}", b64(&unknown_kid), parts[1], parts[2]);

        // Signed by another installation's key that happens to carry the same kid.
        let other = TestApp::spawn(Backend::Sqlite).await;
        let (foreign, _) = other.signed_in("alice").await;
        let foreign_parts: Vec<&str> = foreign.split('.').collect();
        let same_kid_foreign = format!("{}.{}.{}", parts[0], foreign_parts[1], foreign_parts[2]);

        let huge = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
        for (what, token) in [
            ("alg none", alg_none.as_str()),
            ("alg swap", alg_swap.as_str()),
            ("tampered payload", tampered.as_str()),
            ("unknown kid", unknown.as_str()),
            ("foreign key", foreign.as_str()),
            ("foreign signature", same_kid_foreign.as_str()),
            ("garbage", "garbage"),
            ("two parts", "a.b"),
            ("oversized", huge.as_str()),
        ] {
            let v = app.verify(token).await;
            assert_eq!(v.status, 401, "{what}: {}", v.body);
            assert_eq!(v.body["active"], false, "{what}");
            assert_eq!(v.body["error"], "invalid_token", "{what}: {}", v.body);
            assert!(
                v.header("www-authenticate").unwrap().starts_with("Bearer error=\"invalid_token\""),
                "{what}"
            );
        }
        // The genuine token still verifies.
        assert_eq!(app.verify(&at).await.status, 200);
    }

    async fn missing_or_malformed_authorization(b: Backend) {
        let app = TestApp::spawn(b).await;
        let url = format!("{}/verify", app.internal);
        let none = app.send(app.client.get(&url)).await;
        assert_eq!(none.status, 401);
        assert_eq!(none.body["active"], false);
        assert_eq!(none.body["error"], "invalid_token");
        assert!(none.header("www-authenticate").is_some());
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc"] {
            let r = app.send(app.client.get(&url).header("authorization", value)).await;
            assert_eq!(r.status, 401, "{value}");
            assert_eq!(r.body["error"], "invalid_token", "{value}");
        }
        let big = app
            .send(app.client.get(&url).header("authorization", format!("Bearer {}", "a".repeat(12_000))))
            .await;
        assert_eq!(big.status, 401);
        // Bytes beyond ASCII (obs-text, or UTF-8) around a good token: refused, never a 500.
        let (at, _) = app.signed_in("alice").await;
        for bytes in [format!("Bearer {at}\u{e9}").into_bytes(), [b"Bearer ".as_slice(), at.as_bytes(), &[0xff]].concat()] {
            let value = reqwest::header::HeaderValue::from_bytes(&bytes).unwrap();
            let r = app.send(app.client.get(&url).header("authorization", value)).await;
            assert_eq!(r.status, 401, "{}", r.body);
            assert_eq!(r.body["error"], "invalid_token");
        }
        // POST /verify with a bad body keeps the verify shape.
        let r = app.send(app.client.post(&url).header("content-type", "application/json").body("{")).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.body["active"], false);
        assert_eq!(r.body["error"], "invalid_request");
    }

    async fn keeps_answering_without_the_database(b: Backend) {
        if b == Backend::Sqlite {
            // An embedded file cannot go away underneath the process; the PostgreSQL run
            // covers the outage.
            return;
        }
        let app = TestApp::spawn(b).await;
        let (at, rt) = app.signed_in("alice").await;
        let name = app.db.pg_name().to_string();
        app.db.pg_admin(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"));
        app.db.pg_admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ));
        assert_eq!(app.verify(&at).await.status, 200);
        let ready = app.send(app.client.get(format!("{}/readyz", app.public))).await;
        ready.assert_error(503, "service_unavailable");
        assert_eq!(ready.header("retry-after"), Some("5"));
        let r = app.login("alice", "correct horse battery").await;
        r.assert_error(503, "service_unavailable");
        assert!(r.header("retry-after").is_some());
        app.refresh(&rt).await.assert_error(503, "service_unavailable");
        let health = app.send(app.client.get(format!("{}/healthz", app.internal))).await;
        assert_eq!(health.status, 200);
        app.db.pg_admin(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"));
        // Ready again once the pool has connected again (it retries with a backoff).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let ready = app.send(app.client.get(format!("{}/readyz", app.public))).await;
            if ready.status == 200 {
                break;
            }
            ready.assert_error(503, "service_unavailable");
            assert!(std::time::Instant::now() < deadline, "never ready again");
            sleep_secs(0.1).await;
        }
        assert_eq!(app.refresh(&rt).await.status, 200);
    }

    async fn health_on_both_listeners_and_route_separation(b: Backend) {
        let app = TestApp::spawn(b).await;
        for base in [&app.public, &app.internal] {
            for path in ["/healthz", "/readyz"] {
                let r = app.send(app.client.get(format!("{base}{path}"))).await;
                assert_eq!(r.status, 200, "{base}{path}");
            }
        }
        // /verify is not on the public listener, /login not on the internal one.
        app.send(app.client.get(format!("{}/verify", app.public))).await.assert_error(404, "not_found");
        app.send(app.client.post(format!("{}/login", app.internal)).json(&json!({})))
            .await
            .assert_error(404, "not_found");
    }
}

both_backends! {
    async fn require_client_answers_resource_servers_only(b: Backend) {
        use auth_service::domain::clients::Permissions;
        let app = TestApp::spawn_with(b, &[("AUTH__VERIFY__REQUIRE_CLIENT", "true")]).await;
        let (at, _) = app.signed_in("alice").await;
        let rs = app.create_client("posts-api", Permissions { introspect: true, ..Permissions::default() }).await;
        let other = app.create_client("web-app", Permissions::default()).await;
        let basic = |id: &str, secret: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
        };
        let get = |caller: Option<String>| {
            let r = app.client.get(format!("{}/verify", app.internal)).bearer_auth(&at);
            match caller {
                Some(c) => r.header("x-client-authorization", c),
                None => r,
            }
        };
        // No caller credentials, wrong ones, or not Basic: 401 invalid_client, in /verify's shape.
        for caller in [None, Some(basic("posts-api", "wrong-secret-wrong-secret-wrong-secret")), Some(basic("nobody", &rs)), Some(format!("Bearer {at}")), Some("Basic !!!".into())] {
            let r = app.send(get(caller.clone())).await;
            assert_eq!(r.status, 401, "{caller:?}: {}", r.body);
            assert_eq!((&r.body["active"], &r.body["error"]), (&json!(false), &json!("invalid_client")), "{caller:?}");
            assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Basic ")));
        }
        // A client not registered to check tokens: 403.
        let r = app.send(get(Some(basic("web-app", &other)))).await;
        assert_eq!((r.status, &r.body["error"]), (reqwest::StatusCode::FORBIDDEN, &json!("unauthorized_client")), "{}", r.body);
        // The resource server gets the usual answer, GET and POST alike.
        let r = app.send(get(Some(basic("posts-api", &rs)))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["username"], "alice");
        let p = app
            .send(
                app.client
                    .post(format!("{}/verify", app.internal))
                    .header("x-client-authorization", basic("posts-api", &rs))
                    .json(&json!({"token": at})),
            )
            .await;
        assert_eq!(p.body, r.body);
        let p = app.send(app.client.post(format!("{}/verify", app.internal)).json(&json!({"token": at}))).await;
        assert_eq!(p.status, 401, "{}", p.body);
        // A deleted client is refused once servers re-read it (records are kept 5 s).
        app.with_db(|conn| {
            use auth_service::storage::schema::clients;
            use diesel::prelude::*;
            diesel::delete(clients::table.find("posts-api")).execute(conn)?;
            Ok(())
        })
        .await;
        app.advance(6);
        assert_eq!(app.send(get(Some(basic("posts-api", &rs)))).await.status, 401);
    }

    async fn verify_answers_anyone_when_require_client_is_off(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, _) = app.signed_in("alice").await;
        // The default: no caller credentials needed, and a stray header changes nothing.
        let r = app
            .send(app.client.get(format!("{}/verify", app.internal)).bearer_auth(&at).header("x-client-authorization", "Basic !!!"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

both_backends! {
    async fn require_client_rides_out_a_database_outage(b: Backend) {
        use auth_service::domain::clients::Permissions;
        if b == Backend::Sqlite {
            // An embedded file cannot go away underneath the process.
            return;
        }
        let app = TestApp::spawn_with(b, &[("AUTH__VERIFY__REQUIRE_CLIENT", "true")]).await;
        let (at, _) = app.signed_in("alice").await;
        let rs = app.create_client("posts-api", Permissions { introspect: true, ..Permissions::default() }).await;
        let late = app.create_client("late-api", Permissions { introspect: true, ..Permissions::default() }).await;
        let ask = |id: &str, secret: &str| {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            app.client
                .get(format!("{}/verify", app.internal))
                .bearer_auth(&at)
                .header("x-client-authorization", format!("Basic {basic}"))
        };
        assert_eq!(app.send(ask("posts-api", &rs)).await.status, 200);
        let name = app.db.pg_name().to_string();
        app.db.pg_admin(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"));
        app.db.pg_admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ));
        // Past the 5 s the record is trusted for, the database cannot be asked: the record
        // read before the outage still authenticates the resource server.
        app.advance(6);
        let r = app.send(ask("posts-api", &rs)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // Introspection authenticates the same way, and answers access tokens from memory.
        let r = app
            .send(
                app.client
                    .post(format!("{}/oauth/introspect", app.internal))
                    .basic_auth("posts-api", Some(&rs))
                    .form(&[("token", at.as_str())]),
            )
            .await;
        assert_eq!(r.body["active"], true, "{}", r.body);
        // A client never read before cannot be checked: 503, not a refusal.
        let r = app.send(ask("late-api", &late)).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.body["error"], "service_unavailable");
        assert!(r.header("retry-after").is_some());
        app.db.pg_admin(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"));
        // Checked once the pool has connected again (it retries with a backoff).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = app.send(ask("late-api", &late)).await;
            if r.status == 200 {
                break;
            }
            assert_eq!(r.status, 503, "{}", r.body);
            assert_eq!(r.body["error"], "service_unavailable");
            assert!(std::time::Instant::now() < deadline, "never answered again");
            sleep_secs(0.1).await;
        }
    }
}
