//! This suite's harness: one auth-service process and its client.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
pub use testkit::{
    Env, PgCluster, Reply, Service, TestDb, both_backends, env, free_port, send, sleep_secs,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_auth-service");
pub const PASSWORD: &str = "correct horse battery";

/// Settings every process here starts from: fast hashing, no leeway, short deadlines.
pub fn auth_env(data_dir: &Path, db_url: &str, public: u16, internal: u16) -> Env {
    env(&[
        ("AUTH__DATA_DIR", &data_dir.display().to_string()),
        ("AUTH__DATABASE__URL", db_url),
        ("AUTH__SERVER__PUBLIC_ADDR", &format!("127.0.0.1:{public}")),
        (
            "AUTH__SERVER__INTERNAL_ADDR",
            &format!("127.0.0.1:{internal}"),
        ),
        ("AUTH__SERVER__WORKERS", "2"),
        ("AUTH__PASSWORD__MEMORY_KIB", "256"),
        ("AUTH__PASSWORD__ITERATIONS", "1"),
        ("AUTH__TOKENS__LEEWAY", "0s"),
        ("AUTH__REGISTER__MAX_PER_IP", "0"),
        ("AUTH__DATABASE__TIMEOUT", "1s"),
        ("AUTH__DATABASE__CONNECT_TIMEOUT", "1s"),
        ("RUST_LOG", "info"),
    ])
}

/// A connection to a service's database from outside it, opened as the service opens its
/// own.
pub fn connect(data_dir: &Path, db_url: &str) -> auth_service::storage::DbConn {
    use auth_service::config::{Settings, Sources};
    let env = [
        ("AUTH__DATA_DIR", data_dir.display().to_string()),
        ("AUTH__DATABASE__URL", db_url.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = Settings::load(&Sources { file: None, env }).unwrap();
    auth_service::storage::open_connection(&settings).unwrap()
}

/// One auth-service process.
pub struct Auth {
    pub service: Service,
    pub public: String,
    pub internal: String,
    pub client: reqwest::Client,
}

impl Auth {
    pub async fn start(dir: &Path, db_url: &str, overrides: &[(&str, &str)]) -> Auth {
        Auth::start_via(dir, db_url, overrides, None).await
    }

    /// [`Auth::start`] on the given public and internal ports.
    pub async fn start_on(
        dir: &Path,
        db_url: &str,
        (public_port, internal_port): (u16, u16),
        overrides: &[(&str, &str)],
    ) -> Auth {
        Auth::spawn(dir, db_url, (public_port, internal_port), overrides, None).await
    }

    /// Starts the binary through `bash -c WRAPPER` (for `ulimit`), or directly.
    pub async fn start_via(
        dir: &Path,
        db_url: &str,
        overrides: &[(&str, &str)],
        wrapper: Option<&str>,
    ) -> Auth {
        let ports = (free_port(), free_port());
        Auth::spawn(dir, db_url, ports, overrides, wrapper).await
    }

    async fn spawn(
        dir: &Path,
        db_url: &str,
        (public_port, internal_port): (u16, u16),
        overrides: &[(&str, &str)],
        wrapper: Option<&str>,
    ) -> Auth {
        let public = format!("http://127.0.0.1:{public_port}");
        let internal = format!("http://127.0.0.1:{internal_port}");
        let mut e = auth_env(dir, db_url, public_port, internal_port);
        e.extend(env(overrides));
        let ready = vec![format!("{public}/healthz"), format!("{internal}/healthz")];
        let service = match wrapper {
            Some(script) => {
                Service::start_with_args(
                    "auth-service",
                    Path::new("/bin/bash"),
                    &["-c", script, BIN],
                    e,
                    dir,
                    ready,
                )
                .await
            }
            None => Service::start("auth-service", Path::new(BIN), e, dir, ready).await,
        };
        Auth {
            service,
            public,
            internal,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        send(
            self.client
                .post(format!("{}{path}", self.public))
                .json(&body),
        )
        .await
    }

    pub async fn register(&self, username: &str) -> Reply {
        self.post(
            "/register",
            json!({"username": username, "password": PASSWORD}),
        )
        .await
    }

    pub async fn login(&self, username: &str) -> Reply {
        self.post(
            "/login",
            json!({"username": username, "password": PASSWORD}),
        )
        .await
    }

    pub async fn refresh(&self, rt: &str) -> Reply {
        self.post("/refresh", json!({ "refresh_token": rt })).await
    }

    pub async fn verify(&self, at: &str) -> Reply {
        send(
            self.client
                .get(format!("{}/verify", self.internal))
                .bearer_auth(at),
        )
        .await
    }

    pub async fn readyz(&self) -> Reply {
        send(self.client.get(format!("{}/readyz", self.public))).await
    }
}

/// Sends `request` and returns its reply and how long it took.
pub async fn timed(request: impl std::future::Future<Output = Reply>) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = request.await;
    (reply, started.elapsed())
}

/// Retries `attempt` until it yields `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = attempt().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        sleep_secs(0.2).await;
    }
}
