//! The resource service as a consumer of the auth events (NATS JetStream): session-ending
//! events drop kept `/verify` answers at once, across a broker restart, applied once per
//! event id. Each test runs a nats-server of its own (it stops and kills it) and publishes
//! the events itself, in the documented wire format, after really ending the session at the
//! auth service, so a refusal can only come from the event reaching the cache.

use serde_json::json;

use crate::support::*;

/// A nats-server, the stream, and the stack reading it, subscribed.
async fn start() -> (NatsServer, EventPublisher, Stack) {
    let nats = NatsServer::start();
    let (stream, prefix) = unique_stream();
    let publisher = EventPublisher::connect(&nats.url(), &stream, &prefix).await;
    let rs = rs_events_env(&nats.url(), &stream, &prefix);
    let stack = Stack::start(Backend::Sqlite, &[], &pairs(&rs)).await;
    stack
        .wait_events("subscribed", |s| s["subscribed"] == true)
        .await;
    (nats, publisher, stack)
}

async fn logout(stack: &Stack, refresh_token: &str) {
    let r = stack
        .auth_post("/logout", json!({"refresh_token": refresh_token}))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
}

#[actix_web::test]
async fn session_ending_events_drop_the_right_cached_answers() {
    let (_nats, publisher, mut stack) = start().await;
    let status = stack.events_status().await;
    assert_eq!(status["enabled"], true);
    assert_eq!(status["subscriptions"], 1);
    assert_eq!(status["cache_entries"], 0);
    // Alice with two sessions, Bob with one: all three answers are kept.
    let (a1, r1) = stack.signed_in("alice").await;
    let (a2, r2) = stack.login("alice").await;
    let (b1, _) = stack.signed_in("bob").await;
    for token in [&a1, &a2, &b1] {
        assert_eq!(stack.rs_get("/posts", token).await.status, 200);
    }
    assert_eq!(stack.events_status().await["cache_entries"], 3);

    // Alice's first session ends at the auth service. With no event yet, the kept answer is
    // still served (the TTL alone would keep it for 5 minutes): the cache is really in use.
    logout(&stack, &r1).await;
    assert_eq!(stack.rs_get("/posts", &a1).await.status, 200);

    // Its event names only the session: that session's answer goes, nothing else.
    let sid1 = sid_of(&a1);
    let event = auth_event(&new_event_id(), "logged_out", None, Some(&sid1));
    assert!(
        !publisher
            .publish(event["id"].as_str().unwrap(), &event)
            .await
    );
    let status = stack
        .wait_events("one event applied", |s| s["applied"] == 1)
        .await;
    assert_eq!(status["dropped_entries"], 1);
    assert_eq!(status["cache_entries"], 2);
    stack
        .rs_get("/posts", &a1)
        .await
        .assert_unauthorized("token_revoked");

    // An event with a user id drops every answer of that user, whatever its session.
    logout(&stack, &r2).await;
    assert_eq!(stack.rs_get("/posts", &a2).await.status, 200);
    let alice = sub_of(&a2);
    let event = auth_event(
        &new_event_id(),
        "session_revoked",
        Some(&alice),
        Some("another session of alice's"),
    );
    publisher
        .publish(event["id"].as_str().unwrap(), &event)
        .await;
    let status = stack
        .wait_events("two events applied", |s| s["applied"] == 2)
        .await;
    assert_eq!(status["cache_entries"], 1);
    stack
        .rs_get("/posts", &a2)
        .await
        .assert_unauthorized("token_revoked");

    // Bob's answer was never dropped: with the auth service gone it is still served from
    // the cache, while Alice's tokens, no longer kept, fail closed.
    stack.auth.stop();
    assert_eq!(stack.rs_get("/posts", &b1).await.status, 200);
    stack.rs_get("/posts", &a2).await.assert_unavailable();
    let status = stack.events_status().await;
    assert_eq!(status["duplicates"], 0);
    assert_eq!(status["unreadable"], 0);
    stack
        .resource
        .assert_never_logged(&[&a1, &a2, &b1, &r1, &r2]);
}

#[actix_web::test]
async fn the_same_event_id_is_applied_once() {
    let (_nats, publisher, mut stack) = start().await;
    let (a1, r1) = stack.signed_in("alice").await;
    assert_eq!(stack.rs_get("/posts", &a1).await.status, 200);
    logout(&stack, &r1).await;
    let alice = sub_of(&a1);
    let id = new_event_id();
    let event = auth_event(&id, "logged_out", Some(&alice), Some(&sid_of(&a1)));
    assert!(!publisher.publish(&id, &event).await);
    // Within its duplicate window the server itself drops a repeat of the message id.
    assert!(
        publisher.publish(&id, &event).await,
        "server-side de-duplication"
    );
    stack
        .wait_events("the event applied", |s| s["applied"] == 1)
        .await;
    stack
        .rs_get("/posts", &a1)
        .await
        .assert_unauthorized("token_revoked");

    // A new session of Alice's is kept, and the auth service goes away: from now on only a
    // kept answer lets a request through.
    let (a2, _) = stack.login("alice").await;
    assert_eq!(stack.rs_get("/posts", &a2).await.status, 200);
    stack.auth.stop();
    // The same event again under another message id (a relay retrying after the server's
    // window): the consumer recognises the event id, counts it, and drops nothing.
    assert!(!publisher.publish(&format!("{id}-late"), &event).await);
    let status = stack
        .wait_events("a duplicate", |s| s["duplicates"] == 1)
        .await;
    assert_eq!(status["applied"], 1);
    assert_eq!(status["cache_entries"], 1);
    assert_eq!(stack.rs_get("/posts", &a2).await.status, 200);
    // A new event id for the same user is applied: the answer goes, and with the auth
    // service down the request fails closed.
    let event = auth_event(&new_event_id(), "user_disabled", Some(&alice), None);
    publisher
        .publish(event["id"].as_str().unwrap(), &event)
        .await;
    stack
        .wait_events("two applied", |s| s["applied"] == 2)
        .await;
    stack.rs_get("/posts", &a2).await.assert_unavailable();
}

#[actix_web::test]
async fn the_cache_is_bypassed_while_the_broker_is_away_and_events_flow_after_it_returns() {
    let (mut nats, _publisher, stack) = start().await;
    for (round, crash) in [(2, true), (3, false)] {
        let (at, rt) = if round == 2 {
            stack.signed_in("alice").await
        } else {
            stack.login("alice").await
        };
        assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
        assert_eq!(stack.events_status().await["cache_entries"], 1);
        // The broker goes away (a crash, then an orderly stop): the consumer notices, forgets
        // what it kept and stops keeping answers.
        if crash {
            nats.kill();
        } else {
            nats.stop();
        }
        let status = stack
            .wait_events("not subscribed", |s| s["subscribed"] == false)
            .await;
        assert_eq!(status["cache_entries"], 0);
        // Meanwhile every request asks the auth service, so a logout (whose event cannot be
        // delivered now) takes effect at once.
        logout(&stack, &rt).await;
        stack
            .rs_get("/posts", &at)
            .await
            .assert_unauthorized("token_revoked");
        let (at, rt) = stack.login("alice").await;
        assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
        assert_eq!(stack.events_status().await["cache_entries"], 0);

        // The broker comes back with its store: the consumer subscribes again on its own.
        nats.restart();
        stack
            .wait_events("subscribed again", |s| {
                s["subscribed"] == true && s["subscriptions"] == round
            })
            .await;
        assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
        assert_eq!(stack.events_status().await["cache_entries"], 1);
        // Revoked at the auth service, still served from the cache until its event arrives,
        // and refused as soon as it has.
        logout(&stack, &rt).await;
        assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
        let publisher = EventPublisher::connect(
            &nats.url(),
            stack.events_status().await["stream"].as_str().unwrap(),
            &rs_prefix(&stack),
        )
        .await;
        let applied = stack.events_status().await["applied"].as_u64().unwrap();
        let event = auth_event(&new_event_id(), "logged_out", Some(&sub_of(&at)), None);
        publisher
            .publish(event["id"].as_str().unwrap(), &event)
            .await;
        stack
            .wait_events("the event applied", |s| s["applied"] == applied + 1)
            .await;
        stack
            .rs_get("/posts", &at)
            .await
            .assert_unauthorized("token_revoked");
    }
    let out = stack.resource.output();
    assert!(out.contains("auth events interrupted"), "{out}");
}

/// The subject prefix the stack's resource service was started with.
fn rs_prefix(stack: &Stack) -> String {
    stack.resource.env["RS__EVENTS__SUBJECT_PREFIX"].clone()
}

both_backends! {
    /// The whole chain, with nothing stood in: the auth service publishes its own events
    /// (outbox and relay), the resource service consumes them. A logout at the auth service
    /// ends the cached answer long before the cache's 5-minute TTL.
    async fn a_logout_at_the_auth_service_ends_the_cached_answer(b: Backend) {
        let nats = NatsServer::start();
        let (stream, prefix) = unique_stream();
        let auth: Vec<(String, String)> = [
            ("AUTH__EVENTS__URL", nats.url()),
            ("AUTH__EVENTS__STREAM", stream.clone()),
            ("AUTH__EVENTS__SUBJECT_PREFIX", prefix.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let rs = rs_events_env(&nats.url(), &stream, &prefix);
        let stack = Stack::start(b, &pairs(&auth), &pairs(&rs)).await;
        // The auth service creates the stream (at the latest with its first event); the
        // resource service subscribes once it exists.
        stack.register("alice").await;
        stack.wait_events("subscribed", |s| s["subscribed"] == true).await;
        let (at, rt) = stack.login("alice").await;
        assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
        assert_eq!(stack.events_status().await["cache_entries"], 1);

        let started = std::time::Instant::now();
        logout(&stack, &rt).await;
        // The logout's event reaches the cache and drops exactly that answer; the other
        // events (registered, login_succeeded) are not subscribed to.
        let status = stack
            .wait_events("the logout's event applied", |s| s["dropped_entries"] == 1)
            .await;
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(status["applied"], 1, "{status}");
        assert_eq!(status["unreadable"], 0, "{status}");
        assert_eq!(status["cache_entries"], 0, "{status}");
        stack
            .rs_get("/posts", &at)
            .await
            .assert_unauthorized("token_revoked");
        stack.resource.assert_never_logged(&[&at, &rt]);
    }
}
