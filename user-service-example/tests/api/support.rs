//! The harness: the service as a child process with a database of its own, requests with
//! the service credential or the admin token, a recording notification receiver, and
//! condition waits with deadlines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use testkit::{Backend, Reply, Service, TestDb, env, free_port, send};

pub const CLIENT_ID: &str = "auth-service";
pub const SECRET: &str = "service-secret-0123456789-abcdefghij";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789-abcdefghijklmn";
/// The user service's credentials at the auth service: characters that must be
/// form-encoded before the Basic header is built.
pub const OUT_ID: &str = "user service";
pub const OUT_SECRET: &str = "out:secret/with+special é chars";

pub fn bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_user-service"))
}

/// Waits until `check` holds, polling; fails the test with `what` at the deadline.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        testkit::sleep_secs(0.05).await;
    }
}

/// A running user service with a fresh database.
pub struct UserService {
    pub service: Service,
    pub base: String,
    pub db: TestDb,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// The environment every test service gets; `extra` adds or overrides.
pub fn service_env(
    db: &TestDb,
    dir: &std::path::Path,
    port: u16,
    extra: &[(&str, &str)],
) -> testkit::Env {
    let addr = format!("127.0.0.1:{port}");
    let mut e = env(&[
        ("USERS__SERVER__ADDR", &addr),
        ("USERS__SERVER__WORKERS", "2"),
        ("USERS__DATA_DIR", &dir.display().to_string()),
        ("USERS__DATABASE__URL", &db.url),
        ("USERS__SERVICE__CLIENT_SECRET", SECRET),
        ("USERS__ADMIN__TOKEN", ADMIN_TOKEN),
        // Cheap hashing: many tests run at once on few cores.
        ("USERS__PASSWORD__MEMORY_KIB", "1024"),
        ("USERS__PASSWORD__ITERATIONS", "1"),
        ("RUST_LOG", "info"),
    ]);
    for (k, v) in extra {
        e.insert(k.to_string(), v.to_string());
    }
    e.retain(|_, v| !v.is_empty());
    e
}

impl UserService {
    pub async fn start(backend: Backend) -> UserService {
        UserService::start_with(backend, &[]).await
    }

    /// `extra` entries with an empty value remove a setting.
    pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> UserService {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(backend, dir.path());
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let service = Service::start(
            "user-service",
            bin(),
            service_env(&db, dir.path(), port, extra),
            dir.path(),
            vec![format!("{base}/healthz")],
        )
        .await;
        UserService {
            service,
            base,
            db,
            _dir: dir,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request without credentials.
    pub fn anonymous(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request with the service credential (what the auth service sends).
    pub fn call(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.anonymous(method, path)
            .basic_auth(CLIENT_ID, Some(SECRET))
    }

    /// A request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.anonymous(method, path).bearer_auth(ADMIN_TOKEN)
    }

    pub async fn register(&self, username: &str, password: &str, email: Option<&str>) -> Reply {
        let mut body = json!({"username": username, "password": password});
        if let Some(e) = email {
            body["email"] = json!(e);
        }
        send(self.call(reqwest::Method::POST, "/v1/users").json(&body)).await
    }

    /// Registers and returns the user's id.
    pub async fn user(&self, username: &str, password: &str) -> String {
        let r = self.register(username, password, None).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.str("id")
    }

    pub async fn verify(&self, login: &str, password: &str) -> Reply {
        send(
            self.call(reqwest::Method::POST, "/v1/credentials/verify")
                .json(&json!({"login": login, "password": password})),
        )
        .await
    }

    pub async fn change_password(&self, id: &str, current: &str, new: &str) -> Reply {
        send(
            self.call(reqwest::Method::POST, &format!("/v1/users/{id}/password"))
                .json(&json!({"current_password": current, "new_password": new})),
        )
        .await
    }

    pub async fn get_user(&self, id: &str) -> Reply {
        send(self.call(reqwest::Method::GET, &format!("/v1/users/{id}"))).await
    }

    pub async fn set_disabled(&self, id: &str, disabled: bool) -> Reply {
        let action = if disabled { "disable" } else { "enable" };
        let r = send(self.admin(
            reqwest::Method::POST,
            &format!("/admin/users/{id}/{action}"),
        ))
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r
    }

    pub async fn set_roles(&self, id: &str, roles: &[&str]) -> Reply {
        send(
            self.admin(reqwest::Method::PUT, &format!("/admin/users/{id}/roles"))
                .json(&json!({ "roles": roles })),
        )
        .await
    }

    /// Rows waiting in the outbox, read straight from the database.
    pub fn pending(&self) -> i64 {
        pending_rows(&self.db.url)
    }

    /// Asserts that no credential or password reached the output.
    #[track_caller]
    pub fn assert_no_secrets(&self, passwords: &[&str]) {
        let mut secrets = vec![SECRET, ADMIN_TOKEN, OUT_SECRET];
        secrets.extend_from_slice(passwords);
        self.service.assert_never_logged(&secrets);
    }
}

pub fn pending_rows(url: &str) -> i64 {
    use user_service_example::settings::{Settings, Sources};
    let settings = Settings::load(&Sources {
        file: None,
        env: HashMap::from([("USERS__DATABASE__URL".to_string(), url.to_string())]),
    })
    .unwrap();
    let mut conn = user_service_example::storage::open_connection(&settings).unwrap();
    user_service_example::storage::notifications::depth(&mut conn).unwrap()
}

/// What the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Unavailable,
    Unauthorized,
    /// 400: the notification itself is wrong (repeating it cannot help).
    BadRequest,
}

#[derive(Default)]
struct Recorded {
    /// Every request, accepted or not: (Authorization header, body).
    attempts: Vec<(Option<String>, Value)>,
    /// Bodies answered 204, in arrival order.
    accepted: Vec<Value>,
}

/// A stand-in for the auth service's `POST /internal/user-events`: records requests and
/// answers 204, 503 or 401 as told.
pub struct Receiver {
    pub port: u16,
    answer: Arc<Mutex<Answer>>,
    recorded: Arc<Mutex<Recorded>>,
    handle: Option<actix_web::dev::ServerHandle>,
}

async fn receive(
    req: HttpRequest,
    body: web::Json<Value>,
    answer: web::Data<Mutex<Answer>>,
    recorded: web::Data<Mutex<Recorded>>,
) -> HttpResponse {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let answer = *answer.lock().unwrap();
    let mut r = recorded.lock().unwrap();
    r.attempts.push((auth, body.0.clone()));
    match answer {
        Answer::Accept => {
            r.accepted.push(body.into_inner());
            HttpResponse::NoContent().finish()
        }
        Answer::Unavailable => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"error": "service_unavailable", "message": "down"})),
        Answer::BadRequest => {
            HttpResponse::BadRequest().json(json!({"error": "invalid_request", "message": "no"}))
        }
        Answer::Unauthorized => {
            HttpResponse::Unauthorized().json(json!({"error": "invalid_client", "message": "no"}))
        }
    }
}

impl Receiver {
    /// A receiver on a port of its own, not started yet.
    pub fn new(answer: Answer) -> Receiver {
        Receiver {
            port: free_port(),
            answer: Arc::new(Mutex::new(answer)),
            recorded: Arc::default(),
            handle: None,
        }
    }

    pub async fn started(answer: Answer) -> Receiver {
        let mut r = Receiver::new(answer);
        r.start();
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The settings that point the user service here.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("USERS__AUTH__URL", self.url()),
            ("USERS__AUTH__CLIENT_ID", OUT_ID.to_string()),
            ("USERS__AUTH__CLIENT_SECRET", OUT_SECRET.to_string()),
            ("USERS__AUTH__POLL_INTERVAL", "1h".to_string()),
        ]
    }

    pub fn start(&mut self) {
        let answer = web::Data::from(self.answer.clone());
        let recorded = web::Data::from(self.recorded.clone());
        let server = HttpServer::new(move || {
            actix_web::App::new()
                .app_data(answer.clone())
                .app_data(recorded.clone())
                .route("/internal/user-events", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", self.port))
        .unwrap()
        .run();
        self.handle = Some(server.handle());
        actix_web::rt::spawn(server);
    }

    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn attempts(&self) -> usize {
        self.recorded.lock().unwrap().attempts.len()
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.recorded.lock().unwrap().accepted.clone()
    }

    /// Every Authorization header received.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.recorded
            .lock()
            .unwrap()
            .attempts
            .iter()
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// The accepted events without repeats (delivery is at least once), in first-arrival
    /// order.
    pub fn distinct(&self) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.accepted()
            .into_iter()
            .filter(|e| seen.insert(e["id"].as_str().unwrap_or_default().to_string()))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            drop(h.stop(false));
        }
    }
}

/// The id and secret of a Basic header, form-decoded.
pub fn decode_basic(header: &str) -> (String, String) {
    use base64::Engine;
    let encoded = header.strip_prefix("Basic ").expect("a Basic header");
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    let (id, secret) = decoded.split_once(':').unwrap();
    let form = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .unwrap()
            .into_owned()
    };
    (form(id), form(secret))
}
