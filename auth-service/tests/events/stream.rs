//! Reading what reached the broker, and the service's database, from the test's side.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use auth_service::storage::audit::{AuditQuery, AuditRecord};
use auth_service::storage::{Database, outbox};
use serde_json::Value;

pub use testkit::sleep_secs;

/// The shared NATS server (`NATS_URL`, as tools/test.sh exports it).
pub fn shared_nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

/// A stream name and subject prefix no other test uses.
pub fn unique_names() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (format!("TEST_{id}"), format!("test.{id}.auth"))
}

/// The `AUTH__EVENTS__…` settings for a broker, stream and prefix. The publish timeout is
/// the default 5 s: on a busy machine a shorter one can give up on an acknowledgement that
/// is merely late, and the event is published again (counted a duplicate). A test that
/// stops the broker sets a short one itself.
pub fn events_env(url: &str, stream: &str, prefix: &str) -> Vec<(String, String)> {
    vec![
        ("AUTH__EVENTS__URL".into(), url.into()),
        ("AUTH__EVENTS__STREAM".into(), stream.into()),
        ("AUTH__EVENTS__SUBJECT_PREFIX".into(), prefix.into()),
    ]
}

pub fn as_pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// One message as the stream holds it.
#[derive(Debug, Clone)]
pub struct Published {
    pub subject: String,
    /// The `Nats-Msg-Id` header.
    pub msg_id: Option<String>,
    pub body: Value,
}

impl Published {
    pub fn id(&self) -> &str {
        self.body["id"].as_str().expect("an id in every message")
    }
}

pub async fn connect(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    jetstream::new(client)
}

/// Every message of `stream`, in stream order (empty if the stream does not exist yet).
pub async fn read_stream(url: &str, stream: &str) -> Vec<Published> {
    let js = connect(url).await;
    let Ok(mut handle) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let info = handle.info().await.expect("stream info").clone();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if info.state.messages == 0 {
            break;
        }
        let msg = handle
            .get_raw_message(seq)
            .await
            .expect("message by sequence");
        out.push(Published {
            subject: msg.subject.to_string(),
            msg_id: msg
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_string()),
            body: serde_json::from_slice(&msg.payload).expect("a JSON message"),
        });
    }
    out
}

/// Deletes the test's stream from the shared server when the test ends, however it ends.
pub struct StreamCleanup {
    pub url: String,
    pub stream: String,
}

impl Drop for StreamCleanup {
    fn drop(&mut self) {
        let (url, stream) = (self.url.clone(), self.stream.clone());
        // A runtime of its own: the test's may be gone or busy.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = async_nats::connect(url.as_str()).await {
                    let _ = jetstream::new(client).delete_stream(&stream).await;
                }
            });
        })
        .join();
    }
}

/// Every audit row, oldest first.
pub async fn audit_rows(db: &Database) -> Vec<AuditRecord> {
    let mut rows = db
        .run(|c| {
            auth_service::storage::audit::list(
                c,
                &AuditQuery {
                    limit: 100_000,
                    ..Default::default()
                },
            )
        })
        .await
        .expect("audit rows");
    rows.reverse();
    rows
}

pub async fn outbox_depth(db: &Database) -> i64 {
    db.run(outbox::depth).await.expect("outbox depth")
}

/// Waits until `check` holds, at most `within`; panics with `what` otherwise.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        sleep_secs(0.05).await;
    }
}

/// Waits until the outbox is empty and every audit row's event is on the stream.
pub async fn wait_until_relayed(db: &Database, url: &str, stream: &str) -> Vec<Published> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if outbox_depth(db).await == 0 {
            let published = read_stream(url, stream).await;
            let on_stream: std::collections::HashSet<String> =
                published.iter().map(|p| p.id().to_string()).collect();
            let rows = audit_rows(db).await;
            if rows
                .iter()
                .all(|r| r.event_id.as_ref().is_some_and(|id| on_stream.contains(id)))
            {
                return published;
            }
        }
        if Instant::now() > deadline {
            let on_stream: std::collections::HashSet<String> = read_stream(url, stream)
                .await
                .iter()
                .map(|p| p.id().to_string())
                .collect();
            let missing: Vec<(String, Option<String>)> = audit_rows(db)
                .await
                .into_iter()
                .filter(|r| !r.event_id.as_ref().is_some_and(|id| on_stream.contains(id)))
                .map(|r| (r.kind, r.event_id))
                .collect();
            panic!(
                "events still missing from the stream after 60 s (outbox depth {}): {missing:?}",
                outbox_depth(db).await
            );
        }
        sleep_secs(0.1).await;
    }
}

/// Checks what every message must be: the id in the header and the body agree, the subject
/// is `<prefix>.<kind>`, the body has exactly the documented fields, and it matches its
/// audit row (without the address and user agent). Returns the audit rows by event id.
pub fn check_messages<'a>(
    published: &[Published],
    rows: &'a [AuditRecord],
    prefix: &str,
) -> HashMap<String, &'a AuditRecord> {
    let by_id: HashMap<String, &AuditRecord> = rows
        .iter()
        .map(|r| (r.event_id.clone().expect("every row has an event id"), r))
        .collect();
    for p in published {
        let body = p.body.as_object().expect("a JSON object");
        let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["at", "detail", "id", "kind", "session_id", "user_id"],
            "{p:?}"
        );
        assert_eq!(
            p.msg_id.as_deref(),
            Some(p.id()),
            "Nats-Msg-Id is the id: {p:?}"
        );
        assert_eq!(
            uuid::Uuid::parse_str(p.id())
                .expect("a UUID")
                .get_version_num(),
            4
        );
        let row = by_id
            .get(p.id())
            .unwrap_or_else(|| panic!("a published event with no audit row: {p:?}"));
        assert_eq!(p.body["kind"], row.kind.as_str());
        assert_eq!(p.subject, format!("{prefix}.{}", row.kind));
        assert_eq!(p.body["at"], row.at);
        assert_eq!(p.body["user_id"].as_str(), row.user_id.as_deref());
        assert_eq!(p.body["session_id"].as_str(), row.session_id.as_deref());
        // The row's detail, except what was typed at a failed login (kept, not published).
        let mut detail: Value = serde_json::from_str(&row.detail).unwrap();
        if row.kind == "login_failed" {
            detail.as_object_mut().unwrap().remove("username");
        }
        assert_eq!(p.body["detail"], detail);
    }
    by_id
}

/// Per user, the event ids in the order the stream has them (first occurrence only; a
/// re-published event is recognised by its id), and in the order of the audit rows.
pub fn per_user_orders(
    published: &[Published],
    rows: &[AuditRecord],
) -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut seen = std::collections::HashSet::new();
    let mut on_stream: HashMap<String, Vec<String>> = HashMap::new();
    for p in published {
        if seen.insert(p.id().to_string())
            && let Some(user) = p.body["user_id"].as_str()
        {
            on_stream
                .entry(user.to_string())
                .or_default()
                .push(p.id().to_string());
        }
    }
    let mut recorded: HashMap<String, Vec<String>> = HashMap::new();
    for r in rows {
        if let (Some(user), Some(id)) = (&r.user_id, &r.event_id) {
            recorded.entry(user.clone()).or_default().push(id.clone());
        }
    }
    recorded
        .into_iter()
        .map(|(user, ids)| {
            let streamed = on_stream.remove(&user).unwrap_or_default();
            (user, streamed, ids)
        })
        .collect()
}

/// `GET /metrics` of an internal listener.
pub async fn scrape(internal: &str) -> String {
    let r = reqwest::get(format!("{internal}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The value of one sample line (`name{labels} value`), or 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
