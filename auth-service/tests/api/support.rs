//! The API suite's harness: the real server, in this process, on free ports, over a fresh
//! database of either backend, reading the time from a test clock that tests move forward
//! instead of sleeping. Everything backend- and HTTP-generic comes from `testkit`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use auth_service::config::{Settings, Sources};
use auth_service::domain::ManualClock;
use auth_service::server::RunningServer;
use auth_service::storage::{Database, DbConn, StorageError};
use serde_json::{Value, json};

pub use testkit::{
    Backend, Reply, TestDb, both_backends, claims, header, send, sid_of, sleep_secs, sub_of,
};

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

pub struct TestApp {
    pub db: TestDb,
    pub data_dir: tempfile::TempDir,
    pub server: ServerGuard,
    pub public: String,
    pub internal: String,
    pub client: reqwest::Client,
    /// The server's clock: `advance` moves the service's time.
    pub clock: ManualClock,
    /// A pool of the test's own on the service's database.
    pub pool: Database,
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
        TestApp::start(db, data_dir, env, ManualClock::starting_now()).await
    }

    async fn start(
        db: TestDb,
        data_dir: tempfile::TempDir,
        env: HashMap<String, String>,
        clock: ManualClock,
    ) -> TestApp {
        let settings = Settings::load(&Sources {
            file: env.get("TEST_CONFIG_FILE").map(PathBuf::from),
            env: env.clone(),
        })
        .expect("test settings");
        let server = auth_service::server::start_with_clock(settings.clone(), clock.shared())
            .await
            .unwrap_or_else(|e| panic!("server start: {e:?}"));
        let pool = Database::connect(&settings).expect("the test's own pool");
        TestApp {
            public: format!("http://{}", server.public_addr),
            internal: format!("http://{}", server.internal_addr),
            // Idle connections are dropped well before the server's keep-alive (5 s) closes
            // them, so a request never goes out on a connection the server is closing.
            client: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(1))
                .build()
                .expect("HTTP client"),
            server: ServerGuard(server),
            db,
            data_dir,
            clock,
            pool,
            env,
        }
    }

    /// Stops the server and starts a new one on the same database, data directory and
    /// clock, optionally with changed settings.
    pub async fn restart_with(self, overrides: &[(&str, &str)]) -> TestApp {
        self.server.stop(true).await;
        let TestApp {
            db,
            data_dir,
            mut env,
            clock,
            server,
            ..
        } = self;
        // Releases the SQLite instance lock before the next server takes it.
        drop(server);
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        TestApp::start(db, data_dir, env, clock).await
    }

    pub async fn restart(self) -> TestApp {
        self.restart_with(&[]).await
    }

    /// A second instance on the same database, data directory (so the same keys) and clock:
    /// a replica.
    pub async fn replica(&self, overrides: &[(&str, &str)]) -> Replica {
        let mut env = self.env.clone();
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = Settings::load(&Sources {
            file: env.get("TEST_CONFIG_FILE").map(PathBuf::from),
            env,
        })
        .expect("replica settings");
        let server = auth_service::server::start_with_clock(settings, self.clock.shared())
            .await
            .unwrap_or_else(|e| panic!("replica start: {e:?}"));
        Replica {
            public: format!("http://{}", server.public_addr),
            internal: format!("http://{}", server.internal_addr),
            _server: ServerGuard(server),
        }
    }

    /// `/verify` of another instance.
    pub async fn verify_at(&self, internal: &str, access_token: &str) -> Reply {
        self.send(
            self.client
                .get(format!("{internal}/verify"))
                .bearer_auth(access_token),
        )
        .await
    }

    /// Registers an OAuth client with a generated secret (what `auth-service client create`
    /// does); returns the secret.
    pub async fn create_client(
        &self,
        client_id: &str,
        permissions: auth_service::domain::clients::Permissions,
    ) -> String {
        self.create_client_with_scopes(client_id, permissions, &[])
            .await
    }

    /// [`TestApp::create_client`] with scopes for the client-credentials grant.
    pub async fn create_client_with_scopes(
        &self,
        client_id: &str,
        permissions: auth_service::domain::clients::Permissions,
        scopes: &[&str],
    ) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let settings = Settings::load(&Sources {
            file: self.env.get("TEST_CONFIG_FILE").map(PathBuf::from),
            env: self.env.clone(),
        })
        .expect("settings");
        let secrets = auth_service::security::keys::Keys::load(&settings)
            .expect("keys")
            .client_secrets;
        let (id, now) = (client_id.to_string(), self.now());
        let registered = self
            .pool
            .run(move |conn| {
                use auth_service::domain::clients::{NewClient, create_client};
                let new = NewClient {
                    client_id: &id,
                    secret: None,
                    permissions,
                    scopes: &scopes,
                    update_existing: false,
                };
                create_client(conn, &secrets, new, now)
            })
            .await
            .expect("client created");
        let secret = registered.generated.expect("a generated secret");
        secrecy::ExposeSecret::expose_secret(&secret).to_string()
    }

    /// Moves the service's time forward.
    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// The service's time now (Unix seconds).
    pub fn now(&self) -> i64 {
        use auth_service::domain::Clock;
        self.clock.now()
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        send(req).await
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

    /// Sets roles directly (the code path of `auth-service user grant-role`).
    pub async fn set_roles(&self, user_id: &str, roles: &[&str]) {
        let user_id = auth_service::model::UserId::parse(user_id).expect("a user id");
        let roles = auth_service::model::Roles::parse(roles).expect("role names");
        let now = self.now();
        self.pool
            .run(move |conn| {
                auth_service::domain::admin::apply_roles(
                    conn,
                    user_id,
                    &roles,
                    None,
                    &Default::default(),
                    now,
                    Default::default(),
                )
            })
            .await
            .expect("roles set");
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

    /// Runs a closure on a connection to the service's database.
    pub async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut DbConn) -> Result<T, StorageError> + Send + 'static,
    ) -> T {
        self.pool.run(f).await.expect("db access")
    }
}

/// Another instance of the service (see [`TestApp::replica`]).
pub struct Replica {
    pub public: String,
    pub internal: String,
    _server: ServerGuard,
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
