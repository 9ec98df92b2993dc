//! The relay's heartbeat (core NATS, on `<prefix>-heartbeat`, outside the stream): sent only
//! while events flow, so that consumers can tell a working publisher from a silent one; and
//! the limits of the stream the relay creates.

use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use futures_util::StreamExt;
use serde_json::Value;

use crate::stream::*;
use crate::support::*;

/// The next heartbeat within `within`, as (when it arrived, its body); `None` if none came.
async fn next_heartbeat(
    heartbeats: &mut async_nats::Subscriber,
    within: Duration,
) -> Option<(Instant, Value)> {
    let message = tokio::time::timeout(within, heartbeats.next())
        .await
        .ok()??;
    let body = serde_json::from_slice(&message.payload).expect("a JSON heartbeat");
    Some((Instant::now(), body))
}

/// Discards what arrived already (a heartbeat sent just before a change of state).
async fn drain(heartbeats: &mut async_nats::Subscriber) {
    while next_heartbeat(heartbeats, Duration::from_millis(300))
        .await
        .is_some()
    {}
}

async fn relay_errors(app: &TestApp, stage: &str) -> f64 {
    let text = scrape(&app.internal).await;
    sample(
        &text,
        &format!("auth_events_relay_errors_total{{stage=\"{stage}\"}}"),
    )
}

both_backends! {
    async fn heartbeats_only_while_events_flow(b: Backend) {
        let url = shared_nats_url();
        let (stream_name, prefix) = unique_names();
        let _cleanup = StreamCleanup { url: url.clone(), stream: stream_name.clone() };
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let mut heartbeats = client.subscribe(format!("{prefix}-heartbeat")).await.unwrap();
        // The stream exists but takes other subjects: every event would be refused.
        let js = async_nats::jetstream::new(client.clone());
        let wrong = stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{prefix}-elsewhere.>")],
            ..Default::default()
        };
        js.create_stream(wrong.clone()).await.unwrap();
        let app = TestApp::spawn_with(b, &as_pairs(&events_env(&url, &stream_name, &prefix))).await;
        app.signed_in("ivan").await;
        wait_until(Duration::from_secs(30), "stream errors counted", || async {
            relay_errors(&app, "stream").await > 0.0
        })
        .await;
        assert!(
            next_heartbeat(&mut heartbeats, Duration::from_secs(5)).await.is_none(),
            "a heartbeat while no event can be published"
        );
        assert_eq!(outbox_depth(&app.pool).await, 2);

        // The operator fixes the stream: the events go out, and the heartbeats start.
        js.update_stream(stream::Config {
            subjects: vec![format!("{prefix}.>")],
            ..wrong
        })
        .await
        .unwrap();
        let (first, body) = next_heartbeat(&mut heartbeats, Duration::from_secs(15))
            .await
            .expect("a heartbeat once events flow");
        assert_eq!(body["stream"], stream_name.as_str(), "{body}");
        let at = body["at"].as_i64().expect("at: Unix seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((at - now).abs() <= 5, "{body}");
        let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["at", "stream"]);
        // Every few seconds, for as long as events flow. Read as they arrive (a heartbeat's
        // time is when it is read, so nothing may hold up the reads), and spaced over the
        // two intervals: a late read of the second one cannot make either look short.
        let (second, _) = next_heartbeat(&mut heartbeats, Duration::from_secs(5))
            .await
            .expect("a second heartbeat");
        let (third, _) = next_heartbeat(&mut heartbeats, Duration::from_secs(5))
            .await
            .expect("a third heartbeat");
        assert!(
            third - first >= Duration::from_secs(3),
            "{:?} then {:?}",
            second - first,
            third - second
        );
        wait_until_relayed(&app.pool, &url, &stream_name).await;
        // Outside the stream: it holds the events and nothing else.
        let published = read_stream(&url, &stream_name).await;
        assert_eq!(published.len(), audit_rows(&app.pool).await.len());

        // The service stops: so do the heartbeats.
        app.server.stop(true).await;
        drain(&mut heartbeats).await;
        assert!(
            next_heartbeat(&mut heartbeats, Duration::from_secs(5)).await.is_none(),
            "a heartbeat after the relay stopped"
        );
    }

    async fn the_stream_created_is_bounded_and_an_existing_ones_limits_are_kept(b: Backend) {
        let url = shared_nats_url();
        let (stream_name, prefix) = unique_names();
        let _cleanup = StreamCleanup { url: url.clone(), stream: stream_name.clone() };
        let mut settings = events_env(&url, &stream_name, &prefix);
        settings.push(("AUTH__EVENTS__MAX_AGE".into(), "1d".into()));
        settings.push(("AUTH__EVENTS__MAX_BYTES".into(), "8388608".into()));
        let app = TestApp::spawn_with(b, &as_pairs(&settings)).await;
        // Created by the relay on its first pass, before any event.
        let js = connect(&url).await;
        wait_until(Duration::from_secs(30), "the stream created", || {
            let js = js.clone();
            let name = stream_name.clone();
            async move { js.get_stream(&name).await.is_ok() }
        })
        .await;
        let config = js.get_stream(&stream_name).await.unwrap().info().await.unwrap().config.clone();
        assert_eq!(config.max_age, Duration::from_secs(86_400));
        assert_eq!(config.max_bytes, 8 << 20);
        assert_eq!(config.discard, stream::DiscardPolicy::Old);
        assert_eq!(config.duplicate_window, Duration::from_secs(120));
        assert_eq!(config.subjects, [format!("{prefix}.>")]);
        app.signed_in("judy").await;
        wait_until_relayed(&app.pool, &url, &stream_name).await;

        // Restarted with other limits, it publishes into the stream as it is: its limits are
        // the operator's.
        let app = app
            .restart_with(&[("AUTH__EVENTS__MAX_AGE", "30d"), ("AUTH__EVENTS__MAX_BYTES", "1048576")])
            .await;
        app.login("judy", "correct horse battery").await;
        wait_until_relayed(&app.pool, &url, &stream_name).await;
        let kept = js.get_stream(&stream_name).await.unwrap().info().await.unwrap().config.clone();
        assert_eq!(kept.max_age, Duration::from_secs(86_400));
        assert_eq!(kept.max_bytes, 8 << 20);
    }
}
