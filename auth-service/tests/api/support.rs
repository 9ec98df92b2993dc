//! Test harness: a real server on free ports over a fresh database of either backend.

use std::collections::HashMap;
use std::path::PathBuf;

use auth_service::server::RunningServer;
use auth_service::settings::{Settings, Sources};
use diesel::{Connection, PgConnection, RunQueryDsl};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `NAME::sqlite` and `NAME::postgres` tests from one body.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($b:ident: Backend) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($b: Backend) $body
                #[actix_web::test]
                async fn sqlite() {
                    run(Backend::Sqlite).await
                }
                #[actix_web::test]
                async fn postgres() {
                    run(Backend::Postgres).await
                }
            }
        )*
    };
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// A database that exists for one test: a SQLite file in a temporary directory, or a fresh
/// PostgreSQL database dropped afterwards.
pub struct TestDb {
    pub url: String,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub fn new(backend: Backend, dir: &std::path::Path) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.join("auth.db").display()),
                pg: None,
            },
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = PgConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for the postgres tests and is not reachable at \
                         TEST_POSTGRES_URL ({admin}): {e}"
                    )
                });
                let name = format!("auth_test_{}", uuid::Uuid::new_v4().simple());
                diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .expect("create test database");
                TestDb {
                    url: with_database(&admin, &name),
                    pg: Some((admin, name)),
                }
            }
        }
    }

    /// Runs SQL against the test database from outside the service (PostgreSQL only).
    pub fn pg_admin(&self, sql: &str) {
        let (admin, _) = self.pg.as_ref().expect("postgres only");
        let mut conn = PgConnection::establish(admin).expect("admin connection");
        diesel::sql_query(sql).execute(&mut conn).expect(sql);
    }

    pub fn pg_name(&self) -> &str {
        &self.pg.as_ref().expect("postgres only").1
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg
            && let Ok(mut conn) = PgConnection::establish(admin)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn);
        }
    }
}

/// Settings every test starts from: fast hashing, no leeway, ports chosen by the OS.
fn base_env(data_dir: &std::path::Path, db_url: &str) -> HashMap<String, String> {
    [
        ("AUTH__DATA_DIR", data_dir.display().to_string()),
        ("AUTH__DATABASE__URL", db_url.to_string()),
        ("AUTH__SERVER__PUBLIC_ADDR", "127.0.0.1:0".into()),
        ("AUTH__SERVER__INTERNAL_ADDR", "127.0.0.1:0".into()),
        ("AUTH__SERVER__WORKERS", "1".into()),
        ("AUTH__PASSWORD__MEMORY_KIB", "256".into()),
        ("AUTH__PASSWORD__ITERATIONS", "1".into()),
        ("AUTH__TOKENS__LEEWAY", "0s".into()),
        // Tests register many users from 127.0.0.1; register.rs tests the limit itself.
        ("AUTH__REGISTER__MAX_PER_IP", "10000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// Asserts the one error shape with the given status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.error(), code, "body: {}", self.body);
        assert!(self.body["message"].is_string(), "body: {}", self.body);
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field} in {}", self.body))
            .to_string()
    }
}

pub struct TestApp {
    pub db: TestDb,
    pub data_dir: tempfile::TempDir,
    pub server: ServerGuard,
    pub public: String,
    pub internal: String,
    pub client: reqwest::Client,
    env: HashMap<String, String>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, &[]).await
    }

    /// Starts a server with extra `AUTH__…` settings.
    pub async fn spawn_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let db = TestDb::new(backend, data_dir.path());
        let mut env = base_env(data_dir.path(), &db.url);
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        TestApp::start(db, data_dir, env).await
    }

    async fn start(
        db: TestDb,
        data_dir: tempfile::TempDir,
        env: HashMap<String, String>,
    ) -> TestApp {
        let settings = Settings::load(&Sources {
            file: env.get("TEST_CONFIG_FILE").map(PathBuf::from),
            env: env.clone(),
        })
        .expect("test settings");
        let server = auth_service::server::start(settings)
            .await
            .unwrap_or_else(|e| panic!("server start: {e:?}"));
        TestApp {
            public: format!("http://{}", server.public_addr),
            internal: format!("http://{}", server.internal_addr),
            client: reqwest::Client::new(),
            server: ServerGuard(server),
            db,
            data_dir,
            env,
        }
    }

    /// Stops the server and starts a new one on the same database and data directory,
    /// optionally with changed settings.
    pub async fn restart_with(self, overrides: &[(&str, &str)]) -> TestApp {
        self.server.stop(true).await;
        let TestApp {
            db,
            data_dir,
            mut env,
            ..
        } = self;
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        TestApp::start(db, data_dir, env).await
    }

    pub async fn restart(self) -> TestApp {
        self.restart_with(&[]).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body ({status}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            self.client
                .post(format!("{}{path}", self.public))
                .json(&body),
        )
        .await
    }

    pub async fn register(&self, username: &str, password: &str) -> Reply {
        self.post(
            "/register",
            json!({"username": username, "password": password}),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> Reply {
        self.post(
            "/login",
            json!({"username": username, "password": password}),
        )
        .await
    }

    /// Registers a user and logs in; returns (access token, refresh token).
    pub async fn signed_in(&self, username: &str) -> (String, String) {
        let r = self.register(username, "correct horse battery").await;
        assert_eq!(r.status, 201, "{}", r.body);
        let r = self.login(username, "correct horse battery").await;
        assert_eq!(r.status, 200, "{}", r.body);
        (r.str("access_token"), r.str("refresh_token"))
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post("/refresh", json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn verify(&self, access_token: &str) -> Reply {
        self.send(
            self.client
                .get(format!("{}/verify", self.internal))
                .bearer_auth(access_token),
        )
        .await
    }

    /// A request to the public listener with a bearer token.
    pub fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.public))
            .bearer_auth(token)
    }

    pub async fn get_as(&self, path: &str, token: &str) -> Reply {
        self.send(self.authed(reqwest::Method::GET, path, token))
            .await
    }

    /// Grants roles directly (the code path of `auth-service user grant-role`).
    pub async fn set_roles(&self, user_id: &str, roles: &[&str]) {
        let user_id = user_id.to_string();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        self.with_db(move |conn| {
            auth_service::admin::apply_roles(
                conn,
                &user_id,
                &roles,
                None,
                &Default::default(),
                auth_service::service::now(),
            )
            .map(|_| ())
        })
        .await
    }

    /// Registers `username` as an administrator and logs in: (user id, access, refresh).
    pub async fn admin(&self, username: &str) -> (String, String, String) {
        let r = self.register(username, "correct horse battery").await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.str("id");
        self.set_roles(&id, &["admin", "user"]).await;
        let r = self.login(username, "correct horse battery").await;
        assert_eq!(r.status, 200, "{}", r.body);
        (id, r.str("access_token"), r.str("refresh_token"))
    }

    /// Runs a closure against the service's own database connection.
    pub async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut auth_service::db::DbConn) -> Result<T, auth_service::error::Error>
        + Send
        + 'static,
    ) -> T {
        self.server.state.auth.db.run(f).await.expect("db access")
    }
}

/// Stops the listeners when a test ends, however it ends.
pub struct ServerGuard(pub RunningServer);

impl std::ops::Deref for ServerGuard {
    type Target = RunningServer;
    fn deref(&self) -> &RunningServer {
        &self.0
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.signal_stop();
    }
}

/// Decodes a JWT's payload without verifying it (tests only).
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

pub fn header(token: &str) -> Value {
    use base64::Engine;
    let h = token.split('.').next().expect("header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

/// The `sub` claim of an access token.
pub fn sub_of(token: &str) -> String {
    claims(token)["sub"].as_str().expect("sub").to_string()
}

pub fn sid_of(token: &str) -> String {
    claims(token)["sid"].as_str().expect("sid").to_string()
}

pub async fn sleep_secs(secs: f64) {
    actix_web::rt::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
}
