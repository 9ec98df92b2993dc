//! The real binary killed (SIGKILL) while events flow, then started again on the same
//! database: every event it recorded reaches the stream (a repeat is recognised by its id).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use auth_service::config::{Settings, Sources};
use auth_service::storage::Database;

use crate::stream::*;
use crate::system_support::{Auth, TestDb, both_backends};

/// The test's own pool on the service's database.
fn pool(db_url: &str) -> Database {
    let settings = Settings::load(&Sources {
        file: None,
        env: HashMap::from([("AUTH__DATABASE__URL".to_string(), db_url.to_string())]),
    })
    .unwrap();
    Database::connect(&settings).unwrap()
}

/// Logs users in and out, and fails logins, until told to stop; errors (the service is
/// down) are ignored. Counts the requests that were answered.
fn steady_traffic(
    public: String,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> actix_web::rt::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut round = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let user = format!("user{}", round % 3);
            let password = if round % 4 == 3 {
                "not the password"
            } else {
                crate::system_support::PASSWORD
            };
            let sent = client
                .post(format!("{public}/login"))
                .json(&serde_json::json!({"username": user, "password": password}))
                .send()
                .await;
            if sent.is_ok() {
                answered.fetch_add(1, Ordering::Relaxed);
            } else {
                sleep_secs(0.02).await;
            }
            round += 1;
        }
    })
}

both_backends! {
    async fn a_killed_service_loses_no_event(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(b, dir.path());
        let url = shared_nats_url();
        let (stream_name, prefix) = unique_names();
        let _cleanup = StreamCleanup { url: url.clone(), stream: stream_name.clone() };
        let settings = events_env(&url, &stream_name, &prefix);
        let mut auth = Auth::start(dir.path(), &db.url, &as_pairs(&settings)).await;
        for i in 0..3 {
            let r = auth.register(&format!("user{i}")).await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
        let pool = pool(&db.url);

        let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let traffic = steady_traffic(auth.public.clone(), stop.clone(), answered.clone());
        // Killed while events are recorded and relayed.
        wait_until(Duration::from_secs(60), "events relayed before the kill", || async {
            read_stream(&url, &stream_name).await.len() >= 20
        })
        .await;
        auth.service.stop(); // SIGKILL
        let before_restart = audit_rows(&pool).await.len();
        auth.service.restart().await;
        wait_until(Duration::from_secs(60), "events after the restart", || async {
            audit_rows(&pool).await.len() >= before_restart + 20
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        traffic.await.unwrap();
        // Each login records one audit row and the traffic sends one at a time: of the rows
        // before the kill all were answered but the 3 registrations and the one in flight,
        // and every one of the 20 or more after the restart was answered.
        let answered = answered.load(Ordering::Relaxed);
        assert!(
            answered >= before_restart + 16,
            "{answered} answered, {before_restart} rows before the restart"
        );

        let published = wait_until_relayed(&pool, &url, &stream_name).await;
        let rows = audit_rows(&pool).await;
        check_messages(&published, &rows, &prefix);
        let on_stream: HashSet<&str> = published.iter().map(|p| p.id()).collect();
        let recorded: HashSet<&str> = rows.iter().filter_map(|r| r.event_id.as_deref()).collect();
        assert_eq!(on_stream, recorded);
        for (user, streamed, recorded) in per_user_orders(&published, &rows) {
            assert_eq!(streamed, recorded, "the order of user {user}'s events");
        }
        auth.service.assert_never_logged(&[crate::system_support::PASSWORD]);
        eprintln!(
            "{} events, {} published twice",
            rows.len(),
            published.len() - on_stream.len()
        );
    }
}
