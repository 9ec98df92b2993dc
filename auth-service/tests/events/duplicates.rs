//! An event published twice (a relay that crashed between the broker's acknowledgement and
//! deleting the outbox row does exactly that) is stored once: the stream recognises its
//! `Nats-Msg-Id`. And while another replica holds the relay lease, this one publishes nothing.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use auth_service::storage::outbox;
use diesel::RunQueryDsl;

use crate::stream::*;
use crate::support::*;

both_backends! {
    async fn an_event_published_twice_is_stored_once(b: Backend) {
        let url = shared_nats_url();
        let (stream_name, prefix) = unique_names();
        let _cleanup = StreamCleanup { url: url.clone(), stream: stream_name.clone() };
        let settings = events_env(&url, &stream_name, &prefix);
        // First without events, for the schema; then "another replica" holds the lease for
        // good, and the service starts with events on.
        let app = TestApp::spawn(b).await;
        app.with_db(|c| {
            diesel::sql_query(
                "UPDATE event_relay_lease SET holder = 'another-replica', expires_at = 99999999999",
            )
            .execute(c)?;
            Ok(())
        })
        .await;
        let app = app.restart_with(&as_pairs(&settings)).await;
        app.signed_in("heidi").await;
        let rows = app.with_db(|c| outbox::oldest(c, 100)).await;
        assert_eq!(rows.len(), 2);

        // What a relay that published the first event and then died left behind: the event
        // on the stream, its row still in the outbox.
        let js = connect(&url).await;
        js.get_or_create_stream(jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{prefix}.>")],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
        let first = &rows[0];
        let ack = js
            .send_publish(
                format!("{prefix}.{}", first.subject),
                PublishMessage::build()
                    .payload(first.payload.clone().into())
                    .message_id(&first.event_id),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(!ack.duplicate);
        // The service has not published while it did not hold the lease.
        assert_eq!(read_stream(&url, &stream_name).await.len(), 1);
        assert_eq!(outbox_depth(&app.pool).await, 2);

        // The lease expires; the service takes it and publishes both.
        app.with_db(|c| {
            diesel::sql_query("UPDATE event_relay_lease SET expires_at = 0").execute(c)?;
            Ok(())
        })
        .await;
        let published = wait_until_relayed(&app.pool, &url, &stream_name).await;
        let ids: Vec<&str> = published.iter().map(|p| p.id()).collect();
        assert_eq!(ids, [first.event_id.as_str(), rows[1].event_id.as_str()]);
        check_messages(&published, &audit_rows(&app.pool).await, &prefix);
        let text = scrape(&app.internal).await;
        assert_eq!(sample(&text, "auth_events_published_total{result=\"duplicate\"}"), 1.0, "{text}");
        assert_eq!(sample(&text, "auth_events_published_total{result=\"stored\"}"), 1.0, "{text}");
        // Beyond the stream's duplicate window a consumer recognises a repeat by the id in
        // the body, which is the Nats-Msg-Id.
        assert!(published.iter().all(|p| p.msg_id.as_deref() == Some(p.id())));
    }
}
