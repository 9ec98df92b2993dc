//! The whole flow of the separated design: log in at the auth service, use the token at the
//! resource service, expiry, refresh, replay detection, logout, the wrong kind of token, and
//! an auth-service outage.

use reqwest::Method;
use serde_json::json;

use crate::support::*;

/// Access tokens live 5 s: long enough for a step's few requests on a busy machine, short
/// enough to wait out.
const ACCESS_TTL: &str = "5s";

both_backends! {
    async fn full_flow(b: Backend) {
        let mut stack = Stack::start(
            b,
            &[("AUTH__TOKENS__ACCESS_TTL", ACCESS_TTL), ("AUTH__TOKENS__REUSE_GRACE", "0s")],
            &[],
        )
        .await;
        let mut tokens: Vec<String> = Vec::new();

        // 1. Register and log in: an access and a refresh token.
        stack.register("alice").await;
        let (at, rt) = stack.login("alice").await;
        tokens.extend([at.clone(), rt.clone()]);
        let alice_id = claims(&at)["sub"].as_str().unwrap().to_string();

        // 2. The resource service serves the verified user.
        let r = stack.rs_get("/posts", &at).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, json!({"posts": []}));
        let r = stack.rs_post("hello from alice", &at).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["owner_id"], alice_id.as_str());
        assert_eq!(r.body["owner_username"], "alice");
        let post_id = r.str("id");
        assert_eq!(r.header("location"), Some(format!("/posts/{post_id}").as_str()));
        let r = stack.rs_get("/posts", &at).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["posts"][0]["id"], post_id.as_str());

        // 3. Once the access token has expired the resource service says so: refresh. (It
        // is expired a second after its `exp`; waited for in two steps of under 5 s each.)
        let exp = claims(&at)["exp"].as_f64().unwrap();
        sleep_until_unix(exp).await;
        sleep_until_unix(exp + 1.0).await;
        stack.rs_get("/posts", &at).await.assert_unauthorized("token_expired");

        // 4. Refresh with the refresh token (and the expired access token): a new pair works.
        let r = stack
            .auth_post("/refresh", json!({"refresh_token": rt, "access_token": at}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (at2, rt2) = (r.str("access_token"), r.str("refresh_token"));
        tokens.extend([at2.clone(), rt2.clone()]);
        let r = stack.rs_get("/posts", &at2).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["posts"][0]["id"], post_id.as_str());

        // 5. Replaying the old refresh token after the grace interval (0 s, counted in whole
        // seconds) is theft: the whole session is revoked, and so is its newest access token.
        sleep_until_unix(claims(&at2)["iat"].as_f64().unwrap() + 1.0).await;
        let r = stack.auth_post("/refresh", json!({"refresh_token": rt})).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.error(), "token_reused");
        stack.rs_get("/posts", &at2).await.assert_unauthorized("token_revoked");

        // 6. Log in again and log out: that access token is refused from then on.
        let (at3, rt3) = stack.login("alice").await;
        tokens.extend([at3.clone(), rt3.clone()]);
        assert_eq!(stack.rs_get("/posts", &at3).await.status, 200);
        let r = stack.auth_post("/logout", json!({"refresh_token": rt3})).await;
        assert_eq!(r.status, 204, "{}", r.body);
        stack.rs_get("/posts", &at3).await.assert_unauthorized("token_revoked");

        // 7. A refresh token is not an access token, however valid it is.
        let (at4, rt4) = stack.login("alice").await;
        tokens.extend([at4.clone(), rt4.clone()]);
        stack.rs_get("/posts", &rt4).await.assert_unauthorized("invalid_token");
        assert_eq!(stack.rs_get("/posts", &at4).await.status, 200);

        // 8. Auth service down: the resource service fails closed (503, no data, no writes);
        // back up: the same token works again. The auth service is first restarted with a
        // longer access-token lifetime, so that the token used here cannot expire during
        // the outage and turn a 200 into a 401 for the wrong reason.
        stack.auth.restart_with(&[("AUTH__TOKENS__ACCESS_TTL", "5m")]).await;
        let (at5, rt5) = stack.login("alice").await;
        tokens.extend([at5.clone(), rt5.clone()]);
        assert_eq!(stack.rs_get("/posts", &at5).await.status, 200);
        stack.auth.stop();
        stack.rs_get("/posts", &at5).await.assert_unavailable();
        stack.rs_get(&format!("/posts/{post_id}"), &at5).await.assert_unavailable();
        stack.rs_post("written during the outage", &at5).await.assert_unavailable();
        stack.rs_delete(&format!("/posts/{post_id}"), &at5).await.assert_unavailable();
        // The resource service itself is still up.
        let health = send(stack.rs_request(Method::GET, "/healthz")).await;
        assert_eq!(health.status, 200);
        stack.auth.restart().await;
        let r = stack.rs_get("/posts", &at5).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let posts = r.body["posts"].as_array().unwrap();
        assert_eq!(posts.len(), 1, "nothing was written or deleted during the outage: {}", r.body);
        assert_eq!(posts[0]["id"], post_id.as_str());

        // No token ever reached either service's log.
        let all: Vec<&str> = tokens.iter().map(String::as_str).collect();
        stack.auth.assert_never_logged(&all);
        stack.resource.assert_never_logged(&all);
    }
}
