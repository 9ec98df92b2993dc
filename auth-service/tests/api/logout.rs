use crate::support::*;
use serde_json::json;

both_backends! {
    async fn ends_session_and_its_access_tokens(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, rt) = app.signed_in("alice").await;
        let (other_at, other_rt) = app.signed_in("bob").await;
        let r = app.post("/logout", json!({"refresh_token": rt})).await;
        assert_eq!(r.status, 204);
        let v = app.verify(&at).await;
        assert_eq!(v.status, 401);
        assert_eq!(v.body["error"], "token_revoked");
        assert!(v.header("www-authenticate").unwrap().contains("token_revoked"));
        app.refresh(&rt).await.assert_error(401, "session_revoked");
        // Idempotent.
        assert_eq!(app.post("/logout", json!({"refresh_token": rt})).await.status, 204);
        // Nobody else was affected.
        assert_eq!(app.verify(&other_at).await.status, 200);
        assert_eq!(app.refresh(&other_rt).await.status, 200);
    }

    async fn an_expired_token_of_an_ended_session_is_reported_revoked(b: Backend) {
        // The index holds a revocation for an access-token lifetime (plus a second); no
        // periodic pruning may drop it while this test looks.
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__ACCESS_TTL", "1s"), ("AUTH__REVOCATION__POLL_INTERVAL", "1h")]).await;
        let (ended_at, rt) = app.signed_in("alice").await;
        let (live_at, _) = app.signed_in("bob").await;
        assert_eq!(app.post("/logout", json!({"refresh_token": rt})).await.status, 204);
        app.advance(2);
        // "expired" would send the client to /refresh, which can only fail: say "revoked".
        assert_eq!(app.verify(&ended_at).await.body["error"], "token_revoked");
        assert_eq!(app.verify(&live_at).await.body["error"], "token_expired");
    }

    async fn revocations_survive_a_restart(b: Backend) {
        let app = TestApp::spawn(b).await;
        let (at, rt) = app.signed_in("alice").await;
        let (live_at, _) = app.signed_in("bob").await;
        assert_eq!(app.post("/logout", json!({"refresh_token": rt})).await.status, 204);
        let app = app.restart().await;
        assert_eq!(app.verify(&at).await.body["error"], "token_revoked");
        assert_eq!(app.verify(&live_at).await.status, 200);
    }

    async fn refuses_bad_tokens(b: Backend) {
        let app = TestApp::spawn(b).await;
        app.post("/logout", json!({"refresh_token": "nope"})).await.assert_error(401, "invalid_token");
        app.post("/logout", json!({})).await.assert_error(400, "invalid_request");
    }
}
