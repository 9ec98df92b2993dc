//! `/internal/user-events` with built-in users: callers authenticate before anything else,
//! and there is nothing for anyone to report (404), so no report can end a local user's
//! sessions.

use auth_service::domain::clients::Permissions;
use serde_json::json;

use crate::support::*;

both_backends! {
    async fn reports_need_a_permitted_client_and_remote_users(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (at, _) = app.signed_in("ivan").await;
        let ivan = sub_of(&at);
        let reporter = app
            .create_client("user-service", Permissions { user_events: true, ..Permissions::default() })
            .await;
        let other = app.create_client("resource-server", Permissions { introspect: true, ..Permissions::default() }).await;
        let url = format!("{}/internal/user-events", app.internal);
        let report = json!({"id": uuid::Uuid::new_v4().to_string(), "kind": "user_disabled", "user_id": ivan});

        // Unauthenticated: 401 before the body is even read, malformed or not.
        app.send(app.client.post(&url).json(&report)).await.assert_error(401, "invalid_client");
        app.send(app.client.post(&url).header("content-type", "application/json").body("{not json"))
            .await
            .assert_error(401, "invalid_client");
        // A client without the permission.
        app.send(app.client.post(&url).basic_auth("resource-server", Some(&other)).json(&report))
            .await
            .assert_error(403, "unauthorized_client");
        // Permitted, but users are local: nothing to report.
        app.send(app.client.post(&url).basic_auth("user-service", Some(&reporter)).json(&report))
            .await
            .assert_error(404, "not_found");
        assert_eq!(app.verify(&at).await.status, 200, "a report ended a local user's session");
    }
}
