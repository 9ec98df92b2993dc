use crate::support::*;
use serde_json::json;

both_backends! {
    async fn rotates_and_grace_returns_same_child(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, rt) = app.signed_in("alice").await;
        let first = app.refresh(&rt).await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.header("cache-control"), Some("no-store"));
        let child = first.str("refresh_token");
        assert_ne!(child, rt);
        assert_eq!(claims(&child)["sid"], claims(&rt)["sid"]);
        assert_ne!(first.str("access_token"), at);
        assert_eq!(app.verify(&first.str("access_token")).await.status, 200);
        // A second tab presents the same parent within the grace interval: same child back,
        // with a fresh access token.
        let again = app.refresh(&rt).await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(again.str("refresh_token"), child);
        assert_eq!(claims(&again.str("refresh_token"))["jti"], claims(&child)["jti"]);
        assert_eq!(app.verify(&again.str("access_token")).await.status, 200);
        // The child rotates normally.
        let next = app.refresh(&child).await;
        assert_eq!(next.status, 200, "{}", next.body);
        // Now the child's child exists, so the first parent is no longer "just rotated".
        app.refresh(&rt).await.assert_error(401, "token_reused");
    }

    async fn concurrent_refreshes_yield_one_child(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (_, rt) = app.signed_in("alice").await;
        let replies = futures_util::future::join_all((0..24).map(|_| app.refresh(&rt))).await;
        let mut children = std::collections::HashSet::new();
        for r in &replies {
            match r.status.as_u16() {
                200 => {
                    children.insert(r.str("refresh_token"));
                }
                // Rejections are allowed (e.g. a busy database), two different children are not.
                401 | 503 => assert_ne!(r.error(), "token_reused", "{}", r.body),
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
        assert_eq!(children.len(), 1, "children: {children:?}");
        // The session survived: the one child rotates.
        let child = children.into_iter().next().unwrap();
        assert_eq!(app.refresh(&child).await.status, 200);
    }

    async fn reuse_after_grace_revokes_the_family(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__REUSE_GRACE", "0s")]).await;
        let (at0, rt) = app.signed_in("alice").await;
        let r = app.refresh(&rt).await;
        assert_eq!(r.status, 200);
        let (at1, child) = (r.str("access_token"), r.str("refresh_token"));
        // No grace: even an immediate replay (same clock second) is reuse.
        app.refresh(&rt).await.assert_error(401, "token_reused");
        // Every access token of the session is now revoked at /verify, at once.
        for at in [&at0, &at1] {
            let v = app.verify(at).await;
            assert_eq!(v.status, 401);
            assert_eq!(v.body["error"], "token_revoked");
            assert_eq!(v.body["active"], false);
        }
        // And the legitimate child is dead too.
        app.refresh(&child).await.assert_error(401, "session_revoked");
        // Other sessions of the same user are untouched.
        let other = app.login("alice", "correct horse battery").await;
        assert_eq!(app.verify(&other.str("access_token")).await.status, 200);
        assert_eq!(app.refresh(&other.str("refresh_token")).await.status, 200);
    }

    async fn expired_tokens(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__ACCESS_TTL", "1s"), ("AUTH__TOKENS__REFRESH_TTL", "2s")]).await;
        let (at, rt) = app.signed_in("alice").await;
        assert_eq!(app.verify(&at).await.status, 200);
        app.advance(2);
        let v = app.verify(&at).await;
        assert_eq!(v.status, 401);
        assert_eq!(v.body["error"], "token_expired");
        assert!(v.header("www-authenticate").unwrap().contains("token_expired"));
        app.advance(1);
        app.refresh(&rt).await.assert_error(401, "token_expired");
    }

    async fn expired_access_token_may_accompany_refresh(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__ACCESS_TTL", "1s")]).await;
        let (at, rt) = app.signed_in("alice").await;
        let (other_at, _) = app.signed_in("bob").await;
        app.advance(2);
        assert_eq!(app.verify(&at).await.body["error"], "token_expired");
        // Someone else's access token: refused, and the refresh token is not consumed.
        app.post("/refresh", json!({"refresh_token": rt, "access_token": other_at}))
            .await
            .assert_error(401, "invalid_token");
        // A forged one: refused.
        let mut forged = at.clone();
        forged.push('x');
        app.post("/refresh", json!({"refresh_token": rt, "access_token": forged}))
            .await
            .assert_error(401, "invalid_token");
        // Its own expired access token: accepted.
        let r = app.post("/refresh", json!({"refresh_token": rt, "access_token": at})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(app.verify(&r.str("access_token")).await.status, 200);
    }

    async fn token_kinds_are_not_interchangeable(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, rt) = app.signed_in("alice").await;
        app.refresh(&at).await.assert_error(401, "invalid_token");
        let v = app.verify(&rt).await;
        assert_eq!(v.status, 401);
        assert_eq!(v.body["error"], "invalid_token");
        app.post("/logout", json!({"refresh_token": at})).await.assert_error(401, "invalid_token");
        // The refresh token still works after being shown to /verify.
        assert_eq!(app.refresh(&rt).await.status, 200);
    }

    async fn disabled_user_cannot_refresh(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, rt) = app.signed_in("alice").await;
        let sub = claims(&at)["sub"].as_str().unwrap().to_string();
        app.with_db(move |conn| {
            use diesel::prelude::*;
            use auth_service::storage::schema::users;
            diesel::update(users::table.find(sub)).set(users::disabled.eq(true)).execute(conn)?;
            Ok(())
        })
        .await;
        app.refresh(&rt).await.assert_error(401, "session_revoked");
    }

    async fn absolute_session_lifetime(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__ACCESS_TTL", "1s"), ("AUTH__TOKENS__SESSION_TTL", "2s")]).await;
        let (_, rt) = app.signed_in("alice").await;
        let r = app.refresh(&rt).await;
        assert_eq!(r.status, 200);
        assert!(r.body["refresh_expires_in"].as_i64().unwrap() <= 2, "{}", r.body);
        app.advance(3);
        app.refresh(&r.str("refresh_token")).await.assert_error(401, "token_expired");
    }

    async fn garbage_refresh_tokens(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (_, rt) = app.signed_in("alice").await;
        let big = "a".repeat(9000);
        for bad in ["", "garbage", "a.b.c", big.as_str()] {
            app.refresh(bad).await.assert_error(401, "invalid_token");
        }
        // Flip one character of the signature.
        let mut tampered = rt.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        app.refresh(&tampered).await.assert_error(401, "invalid_token");
        // Still usable afterwards.
        assert_eq!(app.refresh(&rt).await.status, 200);
    }
}
