//! Test harness: the real `auth-service` and `resource-service-example` binaries as child
//! processes on free ports, over a fresh database of either backend.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

pub const RESOURCE_SERVICE_BIN: &str = env!("CARGO_BIN_EXE_resource-service-example");

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `auth-service` binary, built for the profile and target directory this test binary
/// was built with.
///
/// Cargo only exposes `CARGO_BIN_EXE_*` for a package's own binaries, so the test builds the
/// other package's binary itself: once per test process, with `cargo build -p auth-service
/// --bin auth-service --tests`. `--tests` makes cargo resolve features exactly as `cargo test
/// --workspace` does (dev-dependencies included), so after that command this is a no-op
/// that reuses the very binary it built; without it, cargo would build a second copy of half
/// the dependency tree with other features. From a clean clone, or after auth-service
/// changed, it (re)builds, so a stale binary is never tested. (Cargo releases its
/// build-directory lock before it runs tests, so this nested build does not wait on the outer
/// one.)
pub fn auth_service_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // <target-dir>/[<triple>/]<profile-dir>/deps/<this test binary>
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary is in <target>/<profile>/deps");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => panic!("cannot tell the profile from {}", exe.display()),
        };
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(workspace_root()).args([
            "build",
            "--quiet",
            "-p",
            "auth-service",
            "--bin",
            "auth-service",
            "--tests",
            "--profile",
            &profile,
        ]);
        let above = profile_dir.parent().expect("target dir");
        if above.join("CACHEDIR.TAG").exists() {
            cmd.arg("--target-dir").arg(above);
        } else {
            // Cross-compiled layout: <target-dir>/<triple>/<profile>.
            let triple = above.file_name().and_then(|n| n.to_str()).expect("triple");
            cmd.args(["--target", triple])
                .arg("--target-dir")
                .arg(above.parent().expect("target dir"));
        }
        let status = cmd.status().expect("run cargo build -p auth-service");
        assert!(status.success(), "cargo build -p auth-service failed");
        let bin = profile_dir.join(format!("auth-service{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, db: &str) -> String {
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
    pub fn new(backend: Backend, dir: &Path) -> TestDb {
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
                let name = format!("rs_test_{}", uuid::Uuid::new_v4().simple());
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

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub type Env = BTreeMap<String, String>;

pub fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One of the two binaries, running with exactly the environment it is given (nothing of the
/// test process's own environment leaks in). Its output is captured, printed if the test
/// fails, and can be searched (for instance for tokens, which must never appear).
pub struct Service {
    pub name: &'static str,
    bin: PathBuf,
    pub env: Env,
    cwd: PathBuf,
    /// `http://…/healthz` URLs that answer once the service is up.
    ready: Vec<String>,
    child: Option<Child>,
    output: Arc<Mutex<String>>,
}

impl Service {
    pub async fn start(
        name: &'static str,
        bin: &Path,
        env: Env,
        cwd: &Path,
        ready: Vec<String>,
    ) -> Service {
        let mut service = Service {
            name,
            bin: bin.to_path_buf(),
            env,
            cwd: cwd.to_path_buf(),
            ready,
            child: None,
            output: Arc::default(),
        };
        service.spawn().await;
        service
    }

    async fn spawn(&mut self) {
        let mut child = Command::new(&self.bin)
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for stream in [out, err] {
            let output = self.output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = output.lock().unwrap_or_else(|e| e.into_inner());
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in self.ready.clone() {
            loop {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!(
                        "{} exited during start-up ({status}):\n{}",
                        self.name,
                        self.output()
                    );
                }
                if let Ok(r) = client.get(&url).send().await
                    && r.status() == 200
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not answer {url}:\n{}",
                    self.name,
                    self.output()
                );
                sleep_secs(0.05).await;
            }
        }
    }

    /// Ends the process at once (as a crash or `docker kill` would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same environment, changed by `overrides`.
    pub async fn restart_with(&mut self, overrides: &[(&str, &str)]) {
        self.stop();
        for (k, v) in overrides {
            self.env.insert(k.to_string(), v.to_string());
        }
        self.spawn().await;
    }

    pub async fn restart(&mut self) {
        self.restart_with(&[]).await
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asserts that none of `secrets` ever reached the process's output.
    #[track_caller]
    pub fn assert_never_logged(&self, secrets: &[&str]) {
        let out = self.output();
        for secret in secrets {
            assert!(!secret.is_empty());
            assert!(
                !out.contains(secret),
                "{} logged a token or secret:\n{out}",
                self.name
            );
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("----- {} output -----\n{}", self.name, self.output());
        }
    }
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
        let mut auth_env = auth_env(dir.path(), &db.url, public_port, internal_port);
        auth_env.extend(env(auth_overrides));
        let auth = Service::start(
            "auth-service",
            auth_service_bin(),
            auth_env,
            dir.path(),
            vec![format!("{public}/healthz"), format!("{internal}/healthz")],
        )
        .await;
        let mut rs_env = resource_env(rs_port, &format!("{internal}/verify"));
        rs_env.extend(env(rs_overrides));
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
            client: reqwest::Client::new(),
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
        let keys: Vec<&String> = self.body.as_object().expect("object").keys().collect();
        assert_eq!(keys.len(), 2, "only error and message: {}", self.body);
    }

    /// Asserts a 401 carrying `code` in the body and in the Bearer challenge.
    #[track_caller]
    pub fn assert_unauthorized(&self, code: &str) {
        self.assert_error(401, code);
        assert_eq!(
            self.header("www-authenticate"),
            Some(format!("Bearer error=\"invalid_token\", error_description=\"{code}\"").as_str()),
            "body: {}",
            self.body
        );
    }

    /// Asserts the fail-closed answer: 503 with `Retry-After`, and no data.
    #[track_caller]
    pub fn assert_unavailable(&self) {
        self.assert_error(503, "service_unavailable");
        assert!(self.header("retry-after").is_some(), "no Retry-After");
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field} in {}", self.body))
            .to_string()
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
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

pub async fn sleep_secs(secs: f64) {
    actix_web::rt::time::sleep(Duration::from_secs_f64(secs)).await;
}

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

/// Decodes a JWT's payload without verifying it (tests only).
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}
