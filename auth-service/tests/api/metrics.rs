//! `GET /metrics` on the internal listener counts what operators watch.

use crate::support::*;

/// The value of one sample line (`name{labels} value`), or 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(app: &TestApp) -> String {
    let r = app
        .client
        .get(format!("{}/metrics", app.internal))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    r.text().await.unwrap()
}

both_backends! {
    async fn counts_logins_refreshes_verifications_and_requests(b: Backend) {
        let app = TestApp::spawn_with(b, &[("AUTH__TOKENS__REUSE_GRACE", "0s")]).await;
        let (at, rt) = app.signed_in("alice").await;
        app.login("alice", "wrong guess").await.assert_error(401, "invalid_credentials");
        for _ in 0..3 {
            assert_eq!(app.verify(&at).await.status, 200);
        }
        let r = app.refresh(&rt).await;
        assert_eq!(r.status, 200);
        app.refresh(&rt).await.assert_error(401, "token_reused");
        assert_eq!(app.verify(&at).await.body["error"], "token_revoked");
        let (_, admin_at, _) = app.admin("root").await;
        let user = uuid::Uuid::new_v4();
        assert_eq!(app.get_as(&format!("/admin/users/{user}"), &admin_at).await.status, 404);

        let text = scrape(&app).await;
        assert_eq!(sample(&text, "auth_logins_total{outcome=\"ok\"}"), 2.0, "{text}");
        assert_eq!(sample(&text, "auth_logins_total{outcome=\"failed\"}"), 1.0);
        assert_eq!(sample(&text, "auth_refreshes_total{outcome=\"rotated\"}"), 1.0);
        assert_eq!(sample(&text, "auth_refreshes_total{outcome=\"reused\"}"), 1.0);
        // Three /verify calls, and the administrator's bearer token checked once.
        assert_eq!(sample(&text, "auth_verify_total{outcome=\"active\"}"), 4.0);
        assert_eq!(sample(&text, "auth_verify_total{outcome=\"revoked\"}"), 1.0);
        assert!(sample(&text, "auth_verify_cache_total{result=\"hit\"}") >= 2.0, "{text}");
        // Routes are counted by pattern, never by the id in the path.
        let pattern = "auth_http_requests_total{listener=\"public\",method=\"GET\",route=\"/admin/users/{id}\",status=\"404\"}";
        assert_eq!(sample(&text, pattern), 1.0, "{text}");
        assert!(!text.contains(&user.to_string()));
        assert_eq!(sample(&scrape(&app).await, "auth_http_requests_total{listener=\"internal\",method=\"other\",route=\"/verify\",status=\"405\"}"), 0.0);
        // Methods a client invents are one label, not one each: the label set stays bounded.
        for invented in ["BREW", "WHEN", "PROPFIND"] {
            let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
            let r = app.client.request(method, format!("{}/verify", app.internal)).send().await.unwrap();
            assert_eq!(r.status(), 405);
        }
        let text = scrape(&app).await;
        let invented = "auth_http_requests_total{listener=\"internal\",method=\"other\",route=\"/verify\",status=\"405\"}";
        assert_eq!(sample(&text, invented), 3.0, "{text}");
        assert!(!text.contains("BREW") && !text.contains("PROPFIND"), "{text}");
        assert!(sample(&text, "auth_state{of=\"revocation_index_size\"}") >= 1.0, "{text}");
        assert!(sample(&text, "auth_state{of=\"db_pool_connections\"}") >= 1.0, "{text}");
        assert!(text.contains("auth_state{of=\"hash_queue_depth\"} 0"), "{text}");
        assert!(text.contains("auth_http_request_duration_seconds_bucket"), "{text}");
        // Nothing secret in it.
        for secret in [at.as_str(), rt.as_str(), "correct horse battery"] {
            assert!(!text.contains(secret));
        }
    }
}
