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

/// Replicas on one PostgreSQL database hear of each other's revocations at once (LISTEN/
/// NOTIFY), not at the next poll: polling is an hour apart here.
#[actix_web::test]
async fn revocations_reach_other_replicas_at_once() {
    let quiet = [("AUTH__REVOCATION__POLL_INTERVAL", "1h")];
    let a = TestApp::spawn_with(Backend::Postgres, &quiet).await;
    let b = a.replica(&quiet).await;
    let (at, rt) = a.signed_in("alice").await;
    assert_eq!(a.verify_at(&b.internal, &at).await.status, 200);
    // Logged out on A: B refuses the access token within a second.
    assert_eq!(
        a.post("/logout", json!({"refresh_token": rt})).await.status,
        204
    );
    let mut seen = false;
    for _ in 0..20 {
        if a.verify_at(&b.internal, &at).await.body["error"] == "token_revoked" {
            seen = true;
            break;
        }
        sleep_secs(0.05).await;
    }
    assert!(seen, "replica B never heard of the logout on A");
    // Reuse detection travels the same way.
    let (at2, rt2) = a.signed_in("bob").await;
    assert_eq!(a.refresh(&rt2).await.status, 200);
    a.advance(11); // past tokens.reuse_grace: presenting the parent again is theft
    a.refresh(&rt2).await.assert_error(401, "token_reused");
    let mut seen = false;
    for _ in 0..20 {
        if a.verify_at(&b.internal, &at2).await.body["error"] == "token_revoked" {
            seen = true;
            break;
        }
        sleep_secs(0.05).await;
    }
    assert!(seen, "replica B never heard of the reuse detected on A");
}
