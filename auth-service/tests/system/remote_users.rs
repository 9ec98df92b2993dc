//! Users kept in a user service (`users.source = "remote"`): the three services of the
//! production shape as processes — `user-service-example` on its own database, this auth
//! service in remote mode, and `resource-service-example` — on each backend.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};

use crate::support::*;
use testkit::Backend;

/// What the auth service presents to the user service.
const SERVICE_SECRET: &str = "auth-to-users-0123456789abcdef0123456789";
/// What the user service presents to the auth service (a client with `--user-events`).
const REPORT_SECRET: &str = "users-to-auth-0123456789abcdef0123456789";
const ADMIN_TOKEN: &str = "user-service-admin-0123456789abcdef012345";
/// Reports reach the auth service within this (they are sent right after the change).
const REPORT_WITHIN: Duration = Duration::from_secs(10);

struct Trio {
    users: Service,
    users_url: String,
    auth: Auth,
    resource: Service,
    rs_url: String,
    client: reqwest::Client,
    auth_dir: tempfile::TempDir,
    auth_db: TestDb,
    _users_dir: tempfile::TempDir,
    _users_db: TestDb,
}

fn user_service_bin() -> std::path::PathBuf {
    testkit::workspace_bin("user-service-example", "user-service")
}

fn resource_service_bin() -> std::path::PathBuf {
    testkit::workspace_bin("resource-service-example", "resource-service-example")
}

/// Registers the user service at the auth service as a client that may report user changes.
fn register_reporting_client(dir: &Path, db_url: &str) {
    let out = Command::new(BIN)
        .args([
            "client",
            "create",
            "--client-id",
            "user-service",
            "--user-events",
            "--secret-env",
            "REPORT_SECRET",
        ])
        .env_clear()
        .env("AUTH__DATA_DIR", dir)
        .env("AUTH__DATABASE__URL", db_url)
        .env("REPORT_SECRET", REPORT_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Trio {
    async fn start(backend: Backend) -> Trio {
        let auth_dir = tempfile::tempdir().unwrap();
        let users_dir = tempfile::tempdir().unwrap();
        let auth_db = TestDb::new(backend, auth_dir.path());
        let users_db = TestDb::new(backend, users_dir.path());

        let (auth_public, auth_internal, users_port, rs_port) =
            (free_port(), free_port(), free_port(), free_port());
        let users_url = format!("http://127.0.0.1:{users_port}");
        let auth_internal_url = format!("http://127.0.0.1:{auth_internal}");

        // The auth service's database exists (and holds the reporting client) before anyone
        // reports to it.
        let migrate = Command::new(BIN)
            .arg("migrate")
            .env_clear()
            .env("AUTH__DATA_DIR", auth_dir.path())
            .env("AUTH__DATABASE__URL", &auth_db.url)
            .output()
            .unwrap();
        assert!(migrate.status.success(), "{migrate:?}");
        register_reporting_client(auth_dir.path(), &auth_db.url);

        let users = Service::start(
            "user-service",
            &user_service_bin(),
            env(&[
                ("USERS__DATA_DIR", &users_dir.path().display().to_string()),
                ("USERS__DATABASE__URL", &users_db.url),
                ("USERS__SERVER__ADDR", &format!("127.0.0.1:{users_port}")),
                ("USERS__SERVICE__CLIENT_ID", "auth-service"),
                ("USERS__SERVICE__CLIENT_SECRET", SERVICE_SECRET),
                ("USERS__ADMIN__TOKEN", ADMIN_TOKEN),
                ("USERS__AUTH__URL", &auth_internal_url),
                ("USERS__AUTH__CLIENT_ID", "user-service"),
                ("USERS__AUTH__CLIENT_SECRET", REPORT_SECRET),
                ("USERS__AUTH__POLL_INTERVAL", "1s"),
                ("USERS__PASSWORD__MEMORY_KIB", "256"),
                ("USERS__PASSWORD__ITERATIONS", "1"),
                ("RUST_LOG", "info"),
            ]),
            users_dir.path(),
            vec![format!("{users_url}/healthz")],
        )
        .await;

        let auth = Auth::start_on(
            auth_dir.path(),
            &auth_db.url,
            (auth_public, auth_internal),
            &[
                ("AUTH__USERS__SOURCE", "remote"),
                ("AUTH__USERS__REMOTE_URL", &users_url),
                ("AUTH__USERS__REMOTE_SECRET", SERVICE_SECRET),
                ("AUTH__USERS__REMOTE_TIMEOUT", "2s"),
            ],
        )
        .await;

        let rs_url = format!("http://127.0.0.1:{rs_port}");
        let resource = Service::start(
            "resource-service",
            &resource_service_bin(),
            env(&[
                ("RS__SERVER__ADDR", &format!("127.0.0.1:{rs_port}")),
                ("RS__SERVER__WORKERS", "1"),
                (
                    "RS__AUTH__VERIFY_URL",
                    &format!("{auth_internal_url}/verify"),
                ),
                ("RS__AUTH__TIMEOUT", "2s"),
                ("RUST_LOG", "info"),
            ]),
            users_dir.path(),
            vec![format!("{rs_url}/healthz")],
        )
        .await;

        Trio {
            users,
            users_url,
            auth,
            resource,
            rs_url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            auth_dir,
            auth_db,
            _users_dir: users_dir,
            _users_db: users_db,
        }
    }

    async fn register(&self, username: &str, password: &str) -> Reply {
        self.auth
            .post(
                "/register",
                json!({"username": username, "password": password}),
            )
            .await
    }

    async fn login(&self, username: &str, password: &str) -> Reply {
        self.auth
            .post(
                "/login",
                json!({"username": username, "password": password}),
            )
            .await
    }

    async fn posts(&self, at: &str) -> Reply {
        send(
            self.client
                .get(format!("{}/posts", self.rs_url))
                .bearer_auth(at),
        )
        .await
    }

    async fn user_admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.users_url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    /// Waits until `/verify` refuses `at` as revoked.
    async fn until_revoked(&self, at: &str) -> bool {
        eventually(REPORT_WITHIN, || async {
            let v = self.auth.verify(at).await;
            (v.status == 401 && v.error() == "token_revoked").then_some(())
        })
        .await
        .is_some()
    }

    /// Counts rows of `sql` (`SELECT count(*) AS n …`) in the auth service's database.
    fn count(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = connect(self.auth_dir.path(), &self.auth_db.url);
        diesel::sql_query(sql).get_result::<N>(&mut conn).unwrap().n
    }

    fn assert_no_secret_logged(&self, secrets: &[&str]) {
        for service in [&self.auth.service, &self.users, &self.resource] {
            service.assert_never_logged(secrets);
        }
    }
}

both_backends! {
    /// Register, login, verify (at the auth service and through the resource service),
    /// refresh, disable at the user service (live tokens die at once, refresh and login are
    /// refused), logout; and the auth service's database never holds a user's name, email
    /// or hash.
    async fn register_login_refresh_disable_logout(backend: Backend) {
        let trio = Trio::start(backend).await;
        let password = "correct horse battery";

        let r = trio.register("alice", password).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let alice = r.str("id");
        assert_eq!(r.body["username"], "alice");
        trio.register("ALICE", password).await.assert_error(409, "username_taken");
        trio.register("bob", "short").await.assert_error(400, "validation_failed");

        // The same refusal for a wrong password and for nobody.
        let wrong = trio.login("alice", "not the password").await;
        wrong.assert_error(401, "invalid_credentials");
        let nobody = trio.login("nobody", password).await;
        nobody.assert_error(401, "invalid_credentials");
        assert_eq!(wrong.body, nobody.body);

        let r = trio.login("alice", password).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (at, rt) = (r.str("access_token"), r.str("refresh_token"));
        let claims = testkit::claims(&at);
        assert_eq!(claims["sub"], alice.as_str());
        assert_eq!(claims["username"], "alice");
        assert_eq!(claims["roles"], json!(["user"]));
        assert_eq!(trio.auth.verify(&at).await.status, 200);
        let p = trio.posts(&at).await;
        assert_eq!(p.status, 200, "{}", p.body);
        let me = send(
            trio.client
                .get(format!("{}/me", trio.auth.public))
                .bearer_auth(&at),
        )
        .await;
        assert_eq!(me.status, 200, "{}", me.body);
        assert_eq!(me.body["username"], "alice");

        let r = trio.auth.refresh(&rt).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (at2, rt2) = (r.str("access_token"), r.str("refresh_token"));
        assert_eq!(trio.auth.verify(&at2).await.status, 200);

        // A second session, ended by logout; the first stays.
        let r = trio.login("alice", password).await;
        let (at3, rt3) = (r.str("access_token"), r.str("refresh_token"));
        let out = trio.auth.post("/logout", json!({"refresh_token": rt3})).await;
        assert_eq!(out.status, 204, "{}", out.body);
        trio.auth.verify(&at3).await.assert_unauthorized("token_revoked");
        trio.posts(&at3).await.assert_error(401, "token_revoked");
        assert_eq!(trio.auth.verify(&at2).await.status, 200);

        // Disabled at the user service: it reports, and the live token dies at once.
        let d = trio
            .user_admin(reqwest::Method::POST, &format!("/admin/users/{alice}/disable"), None)
            .await;
        assert!(d.status.is_success(), "{} {}", d.status, d.body);
        assert!(trio.until_revoked(&at2).await, "the disable was not reported in time");
        trio.posts(&at2).await.assert_error(401, "token_revoked");
        trio.auth.refresh(&rt2).await.assert_error(401, "session_revoked");
        trio.login("alice", password).await.assert_error(401, "invalid_credentials");

        // Enabled again: a fresh login works.
        let e = trio
            .user_admin(reqwest::Method::POST, &format!("/admin/users/{alice}/enable"), None)
            .await;
        assert!(e.status.is_success(), "{} {}", e.status, e.body);
        assert_eq!(trio.login("alice", password).await.status, 200);

        // Only sessions, tokens and the trail live here: no names, emails or hashes.
        assert_eq!(trio.count("SELECT count(*) AS n FROM users"), 0);
        assert_eq!(trio.count("SELECT count(*) AS n FROM user_roles"), 0);
        assert!(trio.count("SELECT count(*) AS n FROM sessions") >= 3);
        assert_eq!(
            trio.count("SELECT count(*) AS n FROM audit_events WHERE detail LIKE '%alice%' OR detail LIKE '%nobody%'"),
            0
        );
        assert_eq!(
            trio.count("SELECT count(*) AS n FROM audit_events WHERE kind = 'user_disabled'"),
            1
        );
        trio.assert_no_secret_logged(&[password, SERVICE_SECRET, REPORT_SECRET, ADMIN_TOKEN, &at, &rt]);
    }

    /// Roles come from the user service: at refresh, and for administrator checks. Removing
    /// a role there ends the user's sessions here.
    async fn roles_follow_the_user_service(backend: Backend) {
        let trio = Trio::start(backend).await;
        let password = "correct horse battery";
        let carol = trio.register("carol", password).await.str("id");
        let dave = trio.register("dave", password).await.str("id");

        let r = trio.login("carol", password).await;
        let at = r.str("access_token");
        // Not an administrator: refused, whatever the token says.
        let refused = send(
            trio.client
                .get(format!("{}/admin/users/{dave}", trio.auth.public))
                .bearer_auth(&at),
        )
        .await;
        refused.assert_error(403, "forbidden");

        let g = trio
            .user_admin(
                reqwest::Method::PUT,
                &format!("/admin/users/{carol}/roles"),
                Some(json!({"roles": ["user", "admin"]})),
            )
            .await;
        assert!(g.status.is_success(), "{} {}", g.status, g.body);
        // The old token says "user" only, but the check asks the user service.
        let allowed = send(
            trio.client
                .get(format!("{}/admin/users/{dave}", trio.auth.public))
                .bearer_auth(&at),
        )
        .await;
        assert_eq!(allowed.status, 200, "{}", allowed.body);
        assert_eq!(allowed.body["username"], "dave");
        // A refresh carries the new role.
        let r = trio.auth.refresh(&r.str("refresh_token")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let admin_at = r.str("access_token");
        assert_eq!(testkit::claims(&admin_at)["roles"], json!(["admin", "user"]));
        // Changing users is the user service's job here.
        let list = send(
            trio.client
                .get(format!("{}/admin/users", trio.auth.public))
                .bearer_auth(&admin_at),
        )
        .await;
        list.assert_error(409, "managed_by_user_service");
        let disable = send(
            trio.client
                .post(format!("{}/admin/users/{dave}/disable", trio.auth.public))
                .bearer_auth(&admin_at),
        )
        .await;
        disable.assert_error(409, "managed_by_user_service");

        // The role removed at the user service: every session of carol ends.
        let g = trio
            .user_admin(
                reqwest::Method::PUT,
                &format!("/admin/users/{carol}/roles"),
                Some(json!({"roles": ["user"]})),
            )
            .await;
        assert!(g.status.is_success(), "{} {}", g.status, g.body);
        assert!(trio.until_revoked(&admin_at).await, "the role removal was not reported in time");
        let r = trio.login("carol", password).await;
        assert_eq!(testkit::claims(&r.str("access_token"))["roles"], json!(["user"]));
    }

    /// A password change goes through the user service: the old password stops working,
    /// the caller's other sessions end and the current one goes on.
    async fn password_change_through_the_user_service(backend: Backend) {
        let trio = Trio::start(backend).await;
        let (old, new) = ("correct horse battery", "another horse battery");
        trio.register("erin", old).await;
        let other = trio.login("erin", old).await.str("access_token");
        let r = trio.login("erin", old).await;
        let at = r.str("access_token");
        let change = |current: &str, next: &str| {
            send(
                trio.client
                    .put(format!("{}/me/password", trio.auth.public))
                    .bearer_auth(&at)
                    .json(&json!({"current_password": current, "new_password": next})),
            )
        };
        change("wrong password!", new).await.assert_error(401, "invalid_credentials");
        change(old, "short").await.assert_error(400, "validation_failed");
        let ok = change(old, new).await;
        assert_eq!(ok.status, 204, "{}", ok.body);
        trio.auth.verify(&other).await.assert_unauthorized("token_revoked");
        trio.login("erin", old).await.assert_error(401, "invalid_credentials");
        assert_eq!(trio.login("erin", new).await.status, 200);
        // Still live, also after anything the user service reports about the change.
        sleep_secs(1.5).await;
        assert_eq!(trio.auth.verify(&at).await.status, 200);
        trio.assert_no_secret_logged(&[old, new]);
    }

    /// The user service down: login, registration and refresh answer 503 with Retry-After
    /// within the timeout; `/verify` is unaffected; all works again once it is back.
    async fn user_service_outage(backend: Backend) {
        let mut trio = Trio::start(backend).await;
        let password = "correct horse battery";
        trio.register("frank", password).await;
        let r = trio.login("frank", password).await;
        let (at, rt) = (r.str("access_token"), r.str("refresh_token"));

        trio.users.stop();
        let (login, took) = timed(trio.login("frank", password)).await;
        login.assert_unavailable();
        assert!(took < Duration::from_secs(5), "login took {took:?}");
        trio.register("grace", password).await.assert_unavailable();
        trio.auth.refresh(&rt).await.assert_unavailable();
        assert_eq!(trio.auth.verify(&at).await.status, 200);
        assert_eq!(trio.posts(&at).await.status, 200);

        trio.users.restart().await;
        let r = trio.auth.refresh(&rt).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(trio.login("frank", password).await.status, 200);
    }
}

/// Reports are authenticated, checked and applied once per id.
#[actix_web::test]
async fn user_event_reports_are_authenticated_and_idempotent() {
    let trio = Trio::start(Backend::Sqlite).await;
    let password = "correct horse battery";
    let id = trio.register("heidi", password).await.str("id");
    let at = trio.login("heidi", password).await.str("access_token");
    let url = format!("{}/internal/user-events", trio.auth.internal);
    let report = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "kind": "user_disabled",
        "user_id": id,
        "at": 1,
    });

    // No credentials, and wrong ones.
    send(trio.client.post(&url).json(&report))
        .await
        .assert_error(401, "invalid_client");
    send(
        trio.client
            .post(&url)
            .basic_auth("user-service", Some("wrong-secret-0123456789abcdef012345"))
            .json(&report),
    )
    .await
    .assert_error(401, "invalid_client");
    assert_eq!(
        trio.auth.verify(&at).await.status,
        200,
        "a refused report changed something"
    );

    // Malformed reports change nothing.
    for bad in [
        json!({"id": "7", "kind": "user_disabled", "user_id": id}),
        json!({"id": uuid::Uuid::new_v4().to_string(), "kind": "user_enabled", "user_id": id}),
        json!({"id": uuid::Uuid::new_v4().to_string(), "kind": "role_revoked", "user_id": id}),
        json!({"id": uuid::Uuid::new_v4().to_string(), "kind": "user_disabled", "user_id": "x"}),
        json!({"id": uuid::Uuid::new_v4().to_string(), "kind": "user_disabled", "user_id": id, "extra": 1}),
    ] {
        let r = send(
            trio.client
                .post(&url)
                .basic_auth("user-service", Some(REPORT_SECRET))
                .json(&bad),
        )
        .await;
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(
        trio.auth.verify(&at).await.status,
        200,
        "a malformed report changed something"
    );

    let apply = || {
        send(
            trio.client
                .post(&url)
                .basic_auth("user-service", Some(REPORT_SECRET))
                .json(&report),
        )
    };
    assert_eq!(apply().await.status, 204);
    trio.auth
        .verify(&at)
        .await
        .assert_unauthorized("token_revoked");
    // The user service still has heidi enabled, so she may log in again; repeating the
    // same report id must not end the new session.
    let at2 = trio.login("heidi", password).await.str("access_token");
    assert_eq!(apply().await.status, 204);
    assert_eq!(
        trio.auth.verify(&at2).await.status,
        200,
        "a repeated report was applied again"
    );
    assert_eq!(
        trio.count("SELECT count(*) AS n FROM audit_events WHERE kind = 'user_disabled'"),
        1
    );
}
