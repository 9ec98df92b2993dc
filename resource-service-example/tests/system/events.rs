//! The resource service as a consumer of the auth events (NATS JetStream): session-ending
//! events drop kept `/verify` answers at once, across a broker restart, applied once per
//! event id; the cache is used only while the auth service's relay sends heartbeats. Most
//! tests run a nats-server of their own (they stop and kill it) and publish the events (and
//! heartbeats) themselves, in the documented wire format, after really ending the session
//! at the auth service, so a refusal can only come from the event reaching the cache; the
//! last ones have the auth service publish its own.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// The relay's heartbeats as the auth service sends them (core NATS, on
/// `<prefix>-heartbeat`, naming the stream), every 200 ms until dropped.
struct Heartbeats(tokio::task::JoinHandle<()>);

impl Heartbeats {
    async fn start(url: &str, stream: &str, prefix: &str) -> Heartbeats {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let subject = format!("{prefix}-heartbeat");
        let body = json!({"at": unix_now_f64() as i64, "stream": stream}).to_string();
        Heartbeats(tokio::spawn(async move {
            loop {
                let _ = client.publish(subject.clone(), body.clone().into()).await;
                let _ = client.flush().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }))
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The resource service's events settings for these tests: the quiet period short, so a
/// test waits little before answers are kept again.
fn rs_env(url: &str, stream: &str, prefix: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut rs = rs_events_env(url, stream, prefix);
    rs.push(("RS__EVENTS__QUIET_PERIOD".into(), "1s".into()));
    rs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    rs
}

/// Waits until answers are kept: subscribed, a fresh heartbeat, and no quiet period.
async fn wait_caching(stack: &Stack) -> serde_json::Value {
    stack
        .wait_events("the cache in use", |s| {
            s["cache_in_use"] == true && s["quiet_all"] == false && s["quiet_ids"] == 0
        })
        .await
}

/// A nats-server, the stream, heartbeats, and the stack reading it, subscribed.
async fn start() -> (NatsServer, EventPublisher, Heartbeats, Stack) {
    let nats = NatsServer::start();
    let (stream, prefix) = unique_stream();
    let publisher = EventPublisher::connect(&nats.url(), &stream, &prefix).await;
    let heartbeats = Heartbeats::start(&nats.url(), &stream, &prefix).await;
    let rs = rs_env(&nats.url(), &stream, &prefix, &[]);
    let stack = Stack::start(Backend::Sqlite, &[], &pairs(&rs)).await;
    wait_caching(&stack).await;
    (nats, publisher, heartbeats, stack)
}

async fn logout(stack: &Stack, refresh_token: &str) {
    let r = stack
        .auth_post("/logout", json!({"refresh_token": refresh_token}))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
}

#[actix_web::test]
async fn session_ending_events_drop_the_right_cached_answers() {
    let (_nats, publisher, _heartbeats, mut stack) = start().await;
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
    let (_nats, publisher, _heartbeats, mut stack) = start().await;
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

    // Once the event's quiet period is over, a new session of Alice's is kept, and the auth
    // service goes away: from now on only a kept answer lets a request through.
    wait_caching(&stack).await;
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
    let (mut nats, _publisher, _heartbeats, stack) = start().await;
    for (round, crash) in [(2, true), (3, false)] {
        wait_caching(&stack).await;
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
                s["subscribed"] == true && s["subscriptions"].as_u64() >= Some(round)
            })
            .await;
        wait_caching(&stack).await;
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
        let rs = rs_env(&nats.url(), &stream, &prefix, &[]);
        let stack = Stack::start(b, &pairs(&auth), &pairs(&rs)).await;
        // The auth service creates the stream (on its relay's first pass); the resource
        // service subscribes once it exists, and uses its cache once the relay's heartbeats
        // arrive.
        stack.register("alice").await;
        wait_caching(&stack).await;
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

#[actix_web::test]
async fn the_cache_is_used_only_while_the_relays_heartbeats_arrive() {
    let nats = NatsServer::start();
    let (stream, prefix) = unique_stream();
    let _publisher = EventPublisher::connect(&nats.url(), &stream, &prefix).await;
    let rs = rs_env(
        &nats.url(),
        &stream,
        &prefix,
        &[("RS__EVENTS__HEARTBEAT_WINDOW", "3s")],
    );
    let stack = Stack::start(Backend::Sqlite, &[], &pairs(&rs)).await;
    let status = stack
        .wait_events("subscribed", |s| {
            s["subscribed"] == true && s["quiet_all"] == false
        })
        .await;
    // Subscribed, but no relay says it publishes: nothing is kept, a logout counts at once.
    assert_eq!(status["cache_in_use"], false);
    assert_eq!(status["heartbeat_fresh"], false);
    let (at, rt) = stack.signed_in("alice").await;
    assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
    assert_eq!(stack.events_status().await["cache_entries"], 0);
    logout(&stack, &rt).await;
    stack
        .rs_get("/posts", &at)
        .await
        .assert_unauthorized("token_revoked");

    // Heartbeats that name another stream (a relay publishing elsewhere) do not count.
    let foreign = Heartbeats::start(&nats.url(), "SOME_OTHER_STREAM", &prefix).await;
    stack
        .wait_events("foreign heartbeats", |s| {
            s["foreign_heartbeats"].as_u64() > Some(2)
        })
        .await;
    let (at, rt) = stack.login("alice").await;
    assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
    let status = stack.events_status().await;
    assert_eq!(
        (
            status["cache_entries"].clone(),
            status["cache_in_use"].clone()
        ),
        (json!(0), json!(false))
    );
    drop(foreign);

    // The relay's heartbeats: answers are kept.
    let heartbeats = Heartbeats::start(&nats.url(), &stream, &prefix).await;
    wait_caching(&stack).await;
    assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
    assert_eq!(stack.events_status().await["cache_entries"], 1);
    // (served from the cache: revoked at the auth service, no event)
    logout(&stack, &rt).await;
    assert_eq!(stack.rs_get("/posts", &at).await.status, 200);

    // They stop: within the window the cache is bypassed and emptied.
    drop(heartbeats);
    let stopped = Instant::now();
    let status = stack
        .wait_events("the cache bypassed", |s| s["cache_in_use"] == false)
        .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(3 + 5),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(status["subscribed"], true, "{status}");
    stack
        .rs_get("/posts", &at)
        .await
        .assert_unauthorized("token_revoked");
    assert_eq!(stack.events_status().await["cache_entries"], 0);
    // Said in the log, by a timer that a new heartbeat would cancel: before they come back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stack
        .resource
        .output()
        .contains("no heartbeat of the auth service's relay")
    {
        assert!(
            Instant::now() < deadline,
            "no warning about the missing heartbeats:\n{}",
            stack.resource.output()
        );
        sleep_secs(0.05).await;
    }

    // They come back: in use again, from an empty cache.
    let _heartbeats = Heartbeats::start(&nats.url(), &stream, &prefix).await;
    let status = wait_caching(&stack).await;
    assert_eq!(status["cache_entries"], 0);
    let (at, _) = stack.login("alice").await;
    assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
    assert_eq!(stack.events_status().await["cache_entries"], 1);
}

both_backends! {
    /// With the auth service's own relay: answers are kept while it publishes; stopped, or
    /// publishing under another prefix, the cache is bypassed within the window.
    async fn a_silent_relay_turns_the_cache_off(b: Backend) {
        let nats = NatsServer::start();
        let (stream, prefix) = unique_stream();
        let auth_env = |stream: &str, prefix: &str| -> Vec<(String, String)> {
            [
                ("AUTH__EVENTS__URL", nats.url()),
                ("AUTH__EVENTS__STREAM", stream.to_string()),
                ("AUTH__EVENTS__SUBJECT_PREFIX", prefix.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        };
        let window = Duration::from_secs(5);
        let rs = rs_env(&nats.url(), &stream, &prefix, &[("RS__EVENTS__HEARTBEAT_WINDOW", "5s")]);
        let mut stack = Stack::start(b, &pairs(&auth_env(&stream, &prefix)), &pairs(&rs)).await;
        wait_caching(&stack).await;
        let (at, _) = stack.signed_in("alice").await;
        assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
        assert_eq!(stack.events_status().await["cache_entries"], 1);

        // The auth service stops (its relay with it): bypassed within the window, though the
        // broker and the subscription are fine.
        stack.auth.stop();
        let stopped = Instant::now();
        let status = stack
            .wait_events("the cache bypassed", |s| s["cache_in_use"] == false)
            .await;
        assert!(stopped.elapsed() < window + Duration::from_secs(5), "{:?}", stopped.elapsed());
        assert_eq!(status["subscribed"], true, "{status}");
        // Not served from the cache any more (the auth service is away), and forgotten.
        stack.rs_get("/posts", &at).await.assert_unavailable();
        assert_eq!(stack.events_status().await["cache_entries"], 0);

        // Back, but publishing under another prefix and stream: its heartbeats are not heard.
        let (other_stream, other_prefix) = unique_stream();
        let wrong = auth_env(&other_stream, &other_prefix);
        stack.auth.restart_with(&pairs(&wrong)).await;
        let deadline = Instant::now() + window + Duration::from_secs(3);
        while Instant::now() < deadline {
            assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
            let status = stack.events_status().await;
            assert_eq!(status["cache_in_use"], false, "{status}");
            assert_eq!(status["cache_entries"], 0, "{status}");
            sleep_secs(0.5).await;
        }

        // Set right again: the cache is used again.
        stack.auth.restart_with(&pairs(&auth_env(&stream, &prefix))).await;
        wait_caching(&stack).await;
        assert_eq!(stack.rs_get("/posts", &at).await.status, 200);
        assert_eq!(stack.events_status().await["cache_entries"], 1);
    }
}
