//! This suite's part of the harness: the auth service and the resource service as child
//! processes, wired together over a fresh database (`Stack`), and a stand-in `/verify` for
//! the failure modes a real auth service cannot be made to show. The generic parts (fresh
//! databases, replies, child processes, JWT peeking) are the workspace's `testkit`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub use testkit::{
    Backend, Env, NatsServer, Reply, Service, TestDb, both_backends, claims, env, free_port, send,
    sid_of, sleep_secs, sub_of, workspace_root,
};

pub const RESOURCE_SERVICE_BIN: &str = env!("CARGO_BIN_EXE_resource-service-example");

/// The `auth-service` binary of this workspace (see `testkit::workspace_bin`).
pub fn auth_service_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| testkit::workspace_bin("auth-service", "auth-service"))
}

/// Settings every auth-service in these tests starts from: fast hashing, no leeway.
pub fn auth_env(data_dir: &Path, db_url: &str, public: u16, internal: u16) -> Env {
    env(&[
        ("AUTH__DATA_DIR", &data_dir.display().to_string()),
        ("AUTH__DATABASE__URL", db_url),
        ("AUTH__SERVER__PUBLIC_ADDR", &format!("127.0.0.1:{public}")),
        (
            "AUTH__SERVER__INTERNAL_ADDR",
            &format!("127.0.0.1:{internal}"),
        ),
        ("AUTH__SERVER__WORKERS", "1"),
        ("AUTH__PASSWORD__MEMORY_KIB", "256"),
        ("AUTH__PASSWORD__ITERATIONS", "1"),
        ("AUTH__TOKENS__LEEWAY", "0s"),
        ("RUST_LOG", "info"),
    ])
}

pub fn resource_env(port: u16, verify_url: &str) -> Env {
    env(&[
        ("RS__SERVER__ADDR", &format!("127.0.0.1:{port}")),
        ("RS__SERVER__WORKERS", "1"),
        ("RS__AUTH__VERIFY_URL", verify_url),
        ("RS__AUTH__TIMEOUT", "2s"),
        ("RUST_LOG", "info"),
    ])
}

/// The auth service and the resource service, wired together, over a fresh database.
pub struct Stack {
    pub auth: Service,
    pub resource: Service,
    /// Public listener of the auth service, e.g. `http://127.0.0.1:41234`.
    pub public: String,
    /// Internal listener of the auth service (`/verify`).
    pub internal: String,
    /// The resource service.
    pub rs: String,
    pub client: reqwest::Client,
    /// Kept for its `Drop`: the database lives as long as the stack.
    _db: TestDb,
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts both services. In an override's value, `{public}` stands for the auth service's
    /// public URL and `{rs}` for the resource service's (their ports are chosen here).
    pub async fn start(
        backend: Backend,
        auth_overrides: &[(&str, &str)],
        rs_overrides: &[(&str, &str)],
    ) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = TestDb::new(backend, dir.path());
        let (public_port, internal_port, rs_port) = (free_port(), free_port(), free_port());
        let public = format!("http://127.0.0.1:{public_port}");
        let internal = format!("http://127.0.0.1:{internal_port}");
        let rs = format!("http://127.0.0.1:{rs_port}");
        let placeholders = |overrides: &[(&str, &str)]| -> Env {
            overrides
                .iter()
                .map(|(k, v)| {
                    let v = v.replace("{public}", &public).replace("{rs}", &rs);
                    (k.to_string(), v)
                })
                .collect()
        };
        let mut auth_env = auth_env(dir.path(), &db.url, public_port, internal_port);
        auth_env.extend(placeholders(auth_overrides));
        let auth = Service::start(
            "auth-service",
            auth_service_bin(),
            auth_env,
            dir.path(),
            vec![format!("{public}/healthz"), format!("{internal}/healthz")],
        )
        .await;
        let mut rs_env = resource_env(rs_port, &format!("{internal}/verify"));
        rs_env.extend(placeholders(rs_overrides));
        let resource = Service::start(
            "resource-service-example",
            Path::new(RESOURCE_SERVICE_BIN),
            rs_env,
            dir.path(),
            vec![format!("{rs}/healthz")],
        )
        .await;
        Stack {
            auth,
            resource,
            public,
            internal,
            rs,
            // Idle connections are dropped well before the server's keep-alive (5 s) closes
            // them, so a request never goes out on a connection the server is closing.
            client: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(1))
                .build()
                .expect("HTTP client"),
            _db: db,
            dir,
        }
    }

    pub async fn auth_post(&self, path: &str, body: Value) -> Reply {
        send(
            self.client
                .post(format!("{}{path}", self.public))
                .json(&body),
        )
        .await
    }

    pub async fn register(&self, username: &str) -> Reply {
        let r = self
            .auth_post(
                "/register",
                json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r
    }

    /// Logs in: (access token, refresh token).
    pub async fn login(&self, username: &str) -> (String, String) {
        let r = self
            .auth_post(
                "/login",
                json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        (r.str("access_token"), r.str("refresh_token"))
    }

    pub async fn signed_in(&self, username: &str) -> (String, String) {
        self.register(username).await;
        self.login(username).await
    }

    /// A request to the resource service.
    pub fn rs_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.rs))
    }

    pub async fn rs_get(&self, path: &str, token: &str) -> Reply {
        send(
            self.rs_request(reqwest::Method::GET, path)
                .bearer_auth(token),
        )
        .await
    }

    pub async fn rs_post(&self, text: &str, token: &str) -> Reply {
        send(
            self.rs_request(reqwest::Method::POST, "/posts")
                .bearer_auth(token)
                .json(&json!({ "text": text })),
        )
        .await
    }

    pub async fn rs_delete(&self, path: &str, token: &str) -> Reply {
        send(
            self.rs_request(reqwest::Method::DELETE, path)
                .bearer_auth(token),
        )
        .await
    }

    /// The events consumer's `GET /events/status`.
    pub async fn events_status(&self) -> Value {
        let r = send(self.rs_request(reqwest::Method::GET, "/events/status")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    /// Waits (20 s at most) until the events status satisfies `ok`; returns it.
    pub async fn wait_events(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.events_status().await;
            if ok(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "events status never showed {what}: {status}\n{}",
                self.resource.output()
            );
            sleep_secs(0.05).await;
        }
    }

    /// Runs an `auth-service` sub-command against this stack's database.
    pub fn auth_cli(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut child = Command::new(auth_service_bin())
            .env_clear()
            .envs(&self.auth.env)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn auth-service");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }
}

pub const PASSWORD: &str = "correct horse battery";

pub fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Sleeps until the wall clock has reached `unix_secs` (a JWT time, in whole seconds).
pub async fn sleep_until_unix(unix_secs: f64) {
    let left = unix_secs - unix_now_f64();
    assert!(left < 5.0, "would sleep {left:.1}s");
    if left > 0.0 {
        sleep_secs(left + 0.05).await;
    }
}

/// A stand-in for `/verify` that answers every request the same way, counting requests.
pub struct FakeVerify {
    pub url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

#[derive(Clone)]
pub enum FakeAnswer {
    /// A complete HTTP response: status and JSON (or other) body.
    Status(u16, &'static str),
    /// Accepts the connection and never answers (until the fake is dropped, at most 10 s).
    Hang,
    /// 200 with the request's headers as a JSON object (names in lower case): an upstream
    /// that shows what a proxy passed on.
    EchoHeaders,
}

impl FakeVerify {
    pub fn start(answer: FakeAnswer) -> FakeVerify {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}/verify", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (answer, count, halt) = (answer.clone(), count.clone(), halt.clone());
                        std::thread::spawn(move || serve_fake(stream, &answer, &count, &halt));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeVerify {
            url,
            requests,
            stop,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeVerify {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_fake(
    stream: std::net::TcpStream,
    answer: &FakeAnswer,
    count: &AtomicUsize,
    halt: &AtomicBool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        // One request: the request line and headers (no body is ever sent here).
        let mut seen_any = false;
        let mut headers = serde_json::Map::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" && seen_any => break,
                Ok(_) => {
                    if let Some((name, value)) = line.split_once(':')
                        && seen_any
                    {
                        headers.insert(name.to_ascii_lowercase(), json!(value.trim()));
                    }
                    seen_any = true;
                }
            }
        }
        count.fetch_add(1, Ordering::SeqCst);
        match answer {
            FakeAnswer::Status(..) | FakeAnswer::EchoHeaders => {
                let (status, body) = match answer {
                    FakeAnswer::Status(status, body) => (*status, body.to_string()),
                    _ => (200, Value::Object(headers).to_string()),
                };
                let response = format!(
                    "HTTP/1.1 {status} Whatever\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if writer.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
            FakeAnswer::Hang => {
                let until = Instant::now() + Duration::from_secs(10);
                while Instant::now() < until && !halt.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        }
    }
}

/// The resource service's settings for reading events from `nats_url`, with the cache at its
/// longest, so that only an event (never the TTL) can end a kept answer within a test.
pub fn rs_events_env(nats_url: &str, stream: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("RS__EVENTS__URL", nats_url),
        ("RS__EVENTS__STREAM", stream),
        ("RS__EVENTS__SUBJECT_PREFIX", prefix),
        ("RS__AUTH__CACHE_TTL", "5m"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `(key, value)` pairs as the `&[(&str, &str)]` that `Stack::start` takes.
pub fn pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A stream name and subject prefix no other test uses.
pub fn unique_stream() -> (String, String) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    (
        format!("AUTH_EVENTS_{tag}"),
        format!("test.{tag}.auth.events"),
    )
}

/// The publishing side of the auth events, as the auth service's relay does it: the stream
/// (subjects `<prefix>.>`, file storage, duplicate window 2 min) and one JSON event per
/// message under `<prefix>.<kind>` with a `Nats-Msg-Id`.
pub struct EventPublisher {
    js: async_nats::jetstream::Context,
    prefix: String,
}

impl EventPublisher {
    pub async fn connect(url: &str, stream: &str, prefix: &str) -> EventPublisher {
        use async_nats::jetstream::stream;
        let client = async_nats::connect(url).await.expect("connect to nats");
        let js = async_nats::jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: stream.to_string(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("create the stream");
        EventPublisher {
            js,
            prefix: prefix.to_string(),
        }
    }

    /// Publishes `event` with `msg_id` as its `Nats-Msg-Id`; true when the server dropped it
    /// as a repeat of that message id.
    pub async fn publish(&self, msg_id: &str, event: &Value) -> bool {
        let kind = event["kind"].as_str().expect("kind");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let ack = self
            .js
            .publish_with_headers(
                format!("{}.{kind}", self.prefix),
                headers,
                event.to_string().into(),
            )
            .await
            .expect("publish")
            .await
            .expect("publish ack");
        ack.duplicate
    }
}

/// An event in the wire format of the design (issue #13).
pub fn auth_event(id: &str, kind: &str, user_id: Option<&str>, session_id: Option<&str>) -> Value {
    json!({
        "id": id,
        "kind": kind,
        "at": unix_now_f64() as i64,
        "user_id": user_id,
        "session_id": session_id,
        "detail": {},
    })
}

pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
