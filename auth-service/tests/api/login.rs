use crate::support::*;
use serde_json::json;

async fn hash_of(app: &TestApp) -> String {
    app.with_db(|conn| {
        use auth_service::storage::schema::users;
        use diesel::prelude::*;
        Ok(users::table
            .filter(users::username_key.eq("alice"))
            .select(users::password_hash)
            .first::<String>(conn)?)
    })
    .await
}

async fn session_ips(app: &TestApp, access_token: &str) -> Vec<String> {
    let r = app.get_as("/me/sessions", access_token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut ips: Vec<String> = r.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ip"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    ips
}

both_backends! {
    async fn returns_token_pair(b: Backend) {
        let app = TestApp::spawn(b).await;
        app.register("alice", "correct horse").await;
        let r = app.login("alice", "correct horse").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["token_type"], "Bearer");
        assert_eq!(r.body["expires_in"], 300);
        assert_eq!(r.body["refresh_expires_in"], 90 * 86_400);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let at = r.str("access_token");
        let rt = r.str("refresh_token");
        let h = header(&at);
        assert_eq!(h["typ"], "at+jwt");
        assert_eq!(h["alg"], "EdDSA");
        assert!(h["kid"].is_string());
        assert_eq!(header(&rt)["typ"], "rt+jwt");
        let c = claims(&at);
        assert_eq!(c["username"], "alice");
        assert_eq!(c["roles"], json!(["user"]));
        assert_eq!(c["iss"], "auth-service");
        assert_eq!(c["aud"], "resource-servers");
        for k in ["sub", "jti", "sid"] {
            assert!(c[k].is_string(), "{k}");
        }
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
        assert_eq!(claims(&rt)["sid"], c["sid"]);
        assert_ne!(claims(&rt)["jti"], c["jti"]);
    }

    async fn by_email_and_any_case(b: Backend) {
        let app = TestApp::spawn(b).await;
        app.post("/register", json!({"username": "Alice", "password": "correct horse", "email": "alice@example.com"})).await;
        assert_eq!(app.login("ALICE", "correct horse").await.status, 200);
        assert_eq!(app.login("Alice@Example.COM", "correct horse").await.status, 200);
    }

    async fn same_answer_for_every_failure(b: Backend) {
        let app = TestApp::spawn(b).await;
        app.register("alice", "correct horse").await;
        app.register("mallory", "correct horse").await;
        let mallory_id = app.login("mallory", "correct horse").await;
        let mallory_id = claims(&mallory_id.str("access_token"))["sub"].as_str().unwrap().to_string();
        app.with_db(move |conn| {
            use diesel::prelude::*;
            use auth_service::storage::schema::users;
            diesel::update(users::table.find(mallory_id)).set(users::disabled.eq(true)).execute(conn)?;
            Ok(())
        })
        .await;
        let wrong = app.login("alice", "wrong horse").await;
        let unknown = app.login("nobody", "correct horse").await;
        let disabled = app.login("mallory", "correct horse").await;
        let empty = app.login("", "").await;
        for r in [&wrong, &unknown, &disabled, &empty] {
            r.assert_error(401, "invalid_credentials");
        }
        assert_eq!(wrong.body, unknown.body);
        assert_eq!(wrong.body, disabled.body);
        assert_eq!(wrong.body, empty.body);
    }

    async fn outdated_hashes_are_upgraded(b: Backend) {
        let app = TestApp::spawn(b).await;
        app.register("alice", "correct horse").await;
        let before = hash_of(&app).await;
        assert!(before.contains("m=256,t=1,p=1"), "{before}");
        let app = app.restart_with(&[("AUTH__PASSWORD__MEMORY_KIB", "512"), ("AUTH__PASSWORD__ITERATIONS", "2")]).await;
        // A failed login leaves the hash alone.
        app.login("alice", "wrong horse").await.assert_error(401, "invalid_credentials");
        assert_eq!(hash_of(&app).await, before);
        assert_eq!(app.login("alice", "correct horse").await.status, 200);
        let after = hash_of(&app).await;
        assert!(after.contains("m=512,t=2,p=1"), "{after}");
        assert_eq!(app.login("alice", "correct horse").await.status, 200);
    }

    async fn repeated_failures_are_throttled(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__LOGIN__MAX_FAILURES", "3"), ("AUTH__LOGIN__FAILURE_WINDOW", "2s")]).await;
        app.register("alice", "correct horse").await;
        app.register("bob", "correct horse").await;
        for _ in 0..3 {
            app.login("alice", "wrong guess").await.assert_error(401, "invalid_credentials");
        }
        // Now even the right password is not checked.
        let r = app.login("ALICE", "correct horse").await;
        r.assert_error(429, "too_many_attempts");
        let wait: i64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&wait), "{wait}");
        // Other accounts are unaffected.
        assert_eq!(app.login("bob", "correct horse").await.status, 200);
        app.advance(2);
        assert_eq!(app.login("alice", "correct horse").await.status, 200);
    }

    async fn parallel_guesses_cannot_outrun_the_throttle(b: Backend) {
        // (Waiting attempts get 10 s, not the default 2 s, before 503 overloaded: this counts
        // checks and refusals, not how fast a loaded machine runs them.)
        let app = TestApp::spawn_with(b, &[("AUTH__LOGIN__MAX_FAILURES", "3"), ("AUTH__LOGIN__MAX_WAIT", "10s")]).await;
        app.register("alice", "correct horse").await;
        // 12 guesses at once: no more than the limit get their password checked, however the
        // requests interleave (an attempt starts only while failures plus attempts running
        // stay under the limit; the others wait, then are refused).
        let guesses = (0..12).map(|_| app.login("alice", "wrong guess"));
        let statuses: Vec<u16> = futures_util::future::join_all(guesses).await.iter().map(|r| r.status.as_u16()).collect();
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!(checked + refused, 12, "{statuses:?}");
        assert_eq!(checked, 3, "{statuses:?}");
        app.login("alice", "correct horse").await.assert_error(429, "too_many_attempts");
    }

    async fn a_burst_of_correct_logins_is_never_throttled(b: Backend) {
        // A script or a NAT'ed office: 20 correct logins of one account at once, with a limit
        // of 10 failures. Attempts in flight are not failures. (Waiting ones get 10 s, not
        // the default 2 s, before 503 overloaded: this is about the answers, not the speed.)
        let app = TestApp::spawn_with(b, &[("AUTH__LOGIN__MAX_WAIT", "10s")]).await;
        app.register("alice", "correct horse").await;
        let logins = (0..20).map(|_| app.login("alice", "correct horse"));
        let statuses: Vec<u16> = futures_util::future::join_all(logins).await.iter().map(|r| r.status.as_u16()).collect();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }

    async fn username_and_email_share_one_bucket(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__LOGIN__MAX_FAILURES", "4")]).await;
        let r = app.post("/register", json!({"username": "alice", "password": "correct horse", "email": "alice@example.com"})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        for login in ["alice", "ALICE@example.com", "Alice", "alice@example.com"] {
            app.login(login, "wrong guess").await.assert_error(401, "invalid_credentials");
        }
        // Four failures, whichever name was typed: both names are now refused.
        app.login("alice", "correct horse").await.assert_error(429, "too_many_attempts");
        app.login("alice@example.com", "correct horse").await.assert_error(429, "too_many_attempts");
    }

    async fn a_full_hashing_queue_answers_overloaded(b: Backend) {
        // One hashing worker, room for one waiting hash, slow hashes: of a burst of logins,
        // some are answered 503 overloaded at once, with Retry-After, and change nothing.
        let app = TestApp::spawn_with(b, &[
            ("AUTH__PASSWORD__MAX_CONCURRENT", "1"),
            ("AUTH__PASSWORD__QUEUE_SIZE", "1"),
            ("AUTH__PASSWORD__MEMORY_KIB", "16384"),
            ("AUTH__PASSWORD__ITERATIONS", "3"),
        ]).await;
        app.register("alice", "correct horse").await;
        let replies = futures_util::future::join_all((0..12).map(|_| app.login("alice", "correct horse"))).await;
        let overloaded: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
        assert!(!overloaded.is_empty(), "no login was refused");
        for r in &overloaded {
            r.assert_error(503, "overloaded");
            assert_eq!(r.header("retry-after"), Some("1"));
        }
        let ok = replies.iter().filter(|r| r.status == 200).count();
        assert_eq!(ok + overloaded.len(), replies.len());
        // Refused logins opened no session; the others did.
        let (_, admin_at, _) = app.admin("root").await;
        let alice = app.get_as("/admin/users?username=alice", &admin_at).await.body["users"][0]["id"].as_str().unwrap().to_string();
        let events = app.get_as(&format!("/admin/audit?user_id={alice}&kind=login_succeeded"), &admin_at).await;
        assert_eq!(events.body["events"].as_array().unwrap().len(), ok);
    }

    async fn forwarded_for_is_believed_only_from_trusted_proxies(b: Backend) {
        // The test client connects from 127.0.0.1; first it is nobody's proxy.
        let app = TestApp::spawn(b).await;
        app.register("alice", "correct horse").await;
        let login_via = |xff: &'static str| {
            app.send(app.client.post(format!("{}/login", app.public)).header("x-forwarded-for", xff).json(&json!({"username": "alice", "password": "correct horse"})))
        };
        let r = login_via("203.0.113.7").await;
        assert_eq!(session_ips(&app, &r.str("access_token")).await, ["127.0.0.1"]);

        // Behind a trusted proxy, the rightmost untrusted hop is the client; what the client
        // wrote further left (a spoofed address, garbage) is ignored.
        let app = app.restart_with(&[("AUTH__SERVER__TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")]).await;
        let login_via = |xff: &'static str| {
            app.send(app.client.post(format!("{}/login", app.public)).header("x-forwarded-for", xff).json(&json!({"username": "alice", "password": "correct horse"})))
        };
        login_via("6.6.6.6, not-an-ip, 198.51.100.9").await;
        // A byte that is not ASCII, written by the client, does not hide what the proxy appended.
        let r = app.send(app.client.post(format!("{}/login", app.public)).header("x-forwarded-for", reqwest::header::HeaderValue::from_bytes(b"6.6.6.\xff, 198.51.100.9").unwrap()).json(&json!({"username": "alice", "password": "correct horse"}))).await;
        assert_eq!(session_ips(&app, &r.str("access_token")).await.iter().filter(|ip| *ip == "198.51.100.9").count(), 2);
        let r = login_via("1.1.1.1, 203.0.113.7, 10.1.2.3").await;
        assert_eq!(session_ips(&app, &r.str("access_token")).await, ["127.0.0.1", "198.51.100.9", "198.51.100.9", "203.0.113.7"]);

        // So a spoofed leftmost address cannot dodge the per-address limit.
        let app = app.restart_with(&[("AUTH__LOGIN__MAX_FAILURES_PER_IP", "2")]).await;
        for (i, spoof) in ["1.1.1.1", "2.2.2.2", "3.3.3.3"].iter().enumerate() {
            let r = app.send(app.client.post(format!("{}/login", app.public)).header("x-forwarded-for", format!("{spoof}, 198.51.100.9")).json(&json!({"username": format!("nobody{i}"), "password": "wrong guess"}))).await;
            assert_eq!(r.status, if i < 2 { 401 } else { 429 }, "{}", r.body);
        }
    }

    async fn a_session_opened_after_a_concurrent_change_sees_it(b: Backend) {
        // Login reads the account, hashes (slow), then opens the session. Whatever changed in
        // between is seen by the transaction that opens it: open_session is that last step.
        use auth_service::model::{ClientInfo, UserId};
        let app = TestApp::spawn(b).await;
        let (admin_id, admin_at, _) = app.admin("root").await;
        let alice = app.register("alice", "correct horse").await.str("id");
        app.set_roles(&alice, &["editor", "user"]).await;
        let alice_id = UserId::parse(&alice).unwrap();
        let sessions = &app.server.state.services.sessions;
        let client = ClientInfo::default();

        // A role removed meanwhile: the new tokens carry the roles as they are now.
        let r = app.send(app.authed(reqwest::Method::PUT, &format!("/admin/users/{alice}/roles"), &admin_at).json(&json!({"roles": ["user"]}))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let tokens = sessions.open_session(alice_id, &client).await.unwrap();
        assert_eq!(claims(&tokens.access_token)["roles"], json!(["user"]));

        // Disabled meanwhile: no session, the same answer as any failed login.
        let r = app.send(app.authed(reqwest::Method::POST, &format!("/admin/users/{alice}/disable"), &admin_at)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let count_sessions = || {
            let id = alice.clone();
            app.with_db(move |conn| {
                use auth_service::storage::schema::sessions;
                use diesel::prelude::*;
                Ok(sessions::table.filter(sessions::user_id.eq(id)).count().get_result::<i64>(conn)?)
            })
        };
        let before = count_sessions().await;
        let refused = sessions.open_session(alice_id, &client).await;
        assert!(matches!(refused, Err(auth_service::domain::Error::InvalidCredentials)), "{refused:?}");
        assert_eq!(count_sessions().await, before, "a session was opened for a disabled user");
        assert_ne!(admin_id, alice);
    }
}

/// Replicas on one PostgreSQL database count failures together: the limit is the limit,
/// however the guesses are spread over them.
#[actix_web::test]
async fn the_login_limit_holds_across_replicas() {
    let limits = [
        ("AUTH__LOGIN__MAX_FAILURES", "4"),
        ("AUTH__LOGIN__MAX_FAILURES_PER_IP", "6"),
    ];
    let a = TestApp::spawn_with(Backend::Postgres, &limits).await;
    let b = a.replica(&limits).await;
    a.register("alice", "correct horse").await;
    let login_at = |base: &str, user: &str, password: &str| {
        a.send(
            a.client
                .post(format!("{base}/login"))
                .json(&json!({"username": user, "password": password})),
        )
    };
    let mut statuses = Vec::new();
    for i in 0..8 {
        let base = if i % 2 == 0 {
            a.public.clone()
        } else {
            b.public.clone()
        };
        statuses.push(
            login_at(&base, "alice", "wrong guess")
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429, 429, 429]);
    // The right password is refused on both replicas too, for the rest of the window.
    login_at(&a.public, "alice", "correct horse")
        .await
        .assert_error(429, "too_many_attempts");
    login_at(&b.public, "alice", "correct horse")
        .await
        .assert_error(429, "too_many_attempts");
    // The per-address budget is shared as well: 4 + 2 failures from this address in all.
    login_at(&b.public, "nobody1", "wrong guess")
        .await
        .assert_error(401, "invalid_credentials");
    login_at(&a.public, "nobody2", "wrong guess")
        .await
        .assert_error(401, "invalid_credentials");
    login_at(&b.public, "nobody3", "wrong guess")
        .await
        .assert_error(429, "too_many_attempts");
    // Parallel guesses over both replicas cannot outrun it either. (Waiting attempts get 10 s,
    // not the default 2 s, before 503 overloaded: this counts answers, not speed.)
    let parallel_limits = [
        ("AUTH__LOGIN__MAX_FAILURES", "3"),
        ("AUTH__LOGIN__MAX_WAIT", "10s"),
    ];
    let c = TestApp::spawn_with(Backend::Postgres, &parallel_limits).await;
    let d = c.replica(&parallel_limits).await;
    c.register("carol", "correct horse").await;
    let c = &c;
    let guesses = (0..12).map(|i| {
        let base = if i % 2 == 0 {
            c.public.clone()
        } else {
            d.public.clone()
        };
        async move {
            c.send(
                c.client
                    .post(format!("{base}/login"))
                    .json(&json!({"username": "carol", "password": "wrong guess"})),
            )
            .await
            .status
            .as_u16()
        }
    });
    let statuses: Vec<u16> = futures_util::future::join_all(guesses).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        9,
        "{statuses:?}"
    );
}
