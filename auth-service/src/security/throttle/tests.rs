//! Unit tests of the throttle: limits, windows, the rule for attempts in flight, bounds.

use super::*;

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn throttle(per_account: u32, per_address: u32) -> LoginThrottle {
    LoginThrottle::new(60, per_account, per_address, Duration::from_millis(200))
}

#[tokio::test]
async fn limits_per_account_and_address() {
    let t = throttle(3, 5);
    for _ in 0..3 {
        t.begin(ip("1.1.1.1"), "Alice", 100).await.unwrap().failed();
    }
    assert_eq!(
        t.begin(ip("1.1.1.1"), "ALICE", 110).await.err(),
        Some(Refused::TooMany { retry_after: 50 })
    );
    // Another address, or another account from this one, is unaffected…
    t.begin(ip("2.2.2.2"), "alice", 110).await.unwrap().failed();
    t.begin(ip("1.1.1.1"), "bob", 110).await.unwrap().failed();
    t.begin(ip("1.1.1.1"), "carol", 110).await.unwrap().failed();
    // …until the address itself reaches its limit.
    assert!(matches!(
        t.begin(ip("1.1.1.1"), "dave", 111).await,
        Err(Refused::TooMany { .. })
    ));
    // Windows end.
    assert!(t.begin(ip("1.1.1.1"), "alice", 161).await.is_ok());
    t.prune(200);
    assert!(t.lock().is_empty());
}

#[tokio::test]
async fn attempts_in_flight_make_others_wait_not_fail() {
    let t = throttle(3, 100);
    let in_flight = vec![
        t.begin(ip("1.1.1.1"), "alice", 0).await.unwrap(),
        t.begin(ip("1.1.1.1"), "alice", 0).await.unwrap(),
        t.begin(ip("1.1.1.1"), "alice", 0).await.unwrap(),
    ];
    // A fourth parallel attempt may not start before one of them ends; told "busy" when its
    // wait runs out, never "too many" (nothing has failed).
    assert_eq!(
        t.begin(ip("1.1.1.1"), "alice", 0).await.err(),
        Some(Refused::Busy)
    );
    // Attempts that end without a verdict give their place back.
    drop(in_flight);
    assert!(t.lock().is_empty());
    assert!(t.begin(ip("1.1.1.1"), "alice", 0).await.is_ok());
}

#[tokio::test]
async fn parallel_guesses_cannot_outrun_the_limit() {
    let t = throttle(10, 1000);
    let guesses = (0..30).map(|_| async {
        let attempt = t.begin(ip("1.1.1.1"), "alice", 0).await?;
        tokio::task::yield_now().await;
        attempt.failed();
        Ok::<_, Refused>(())
    });
    let results = futures_util::future::join_all(guesses).await;
    let ran = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Refused::TooMany { .. })))
        .count();
    assert_eq!((ran, refused), (10, 20), "{results:?}");
}

#[tokio::test]
async fn correct_logins_in_a_burst_are_never_refused() {
    // 20 at once on one account with a limit of 10, all with the right password.
    let t = throttle(10, 100);
    let logins = (0..20).map(|_| async {
        let attempt = t.begin(ip("1.1.1.1"), "alice", 0).await?;
        tokio::task::yield_now().await;
        attempt.succeeded();
        Ok::<_, Refused>(())
    });
    let results = futures_util::future::join_all(logins).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(t.lock().is_empty());
}

#[tokio::test]
async fn success_clears_the_account() {
    let t = throttle(2, 100);
    t.begin(ip("1.1.1.1"), "alice", 0).await.unwrap().failed();
    t.begin(ip("1.1.1.1"), "alice", 0)
        .await
        .unwrap()
        .succeeded();
    t.begin(ip("1.1.1.1"), "alice", 0).await.unwrap().failed();
    assert!(t.begin(ip("1.1.1.1"), "alice", 1).await.is_ok());
    // The address keeps only the failures.
    assert_eq!(t.lock().get("i:1.1.1.1").map(|s| s.failures), Some(2));
}

#[tokio::test]
async fn an_ipv6_64_is_one_source() {
    let t = throttle(2, 3);
    t.begin(ip("2001:db8:1:2::1"), "alice", 0)
        .await
        .unwrap()
        .failed();
    t.begin(ip("2001:db8:1:2:ffff::9"), "alice", 0)
        .await
        .unwrap()
        .failed();
    assert!(
        t.begin(ip("2001:db8:1:2:abcd::"), "alice", 0)
            .await
            .is_err()
    );
    t.begin(ip("2001:db8:1:2::7"), "bob", 0)
        .await
        .unwrap()
        .failed();
    assert!(t.begin(ip("2001:db8:1:2::8"), "carol", 0).await.is_err());
    // The neighbouring /64 and IPv4 addresses are their own sources.
    assert!(t.begin(ip("2001:db8:1:3::1"), "alice", 0).await.is_ok());
    assert!(t.begin(ip("192.0.2.1"), "alice", 0).await.is_ok());
    assert!(t.begin(ip("192.0.2.2"), "alice", 0).await.is_ok());
}

#[tokio::test]
async fn eviction_drops_only_the_oldest_even_with_ties() {
    let mut t = throttle(3, 1000);
    t.max_entries = 50;
    // 48 entries all started in the same second, then more arrive.
    for i in 0..24 {
        t.begin(ip(&format!("10.0.0.{i}")), "x", 7)
            .await
            .unwrap()
            .failed();
    }
    t.begin(ip("10.0.1.1"), "x", 8).await.unwrap().failed();
    let left = t.lock().len();
    assert!((40..=50).contains(&left), "{left}");
    assert!(t.lock().contains_key("i:10.0.1.1"));
}

#[tokio::test]
async fn the_map_stays_bounded_and_keeps_running_attempts() {
    let mut t = throttle(3, 1000);
    t.max_entries = 50;
    let running = t.begin(ip("10.9.9.9"), "x", 0).await.unwrap();
    for i in 0..500 {
        t.begin(ip(&format!("10.0.{}.{}", i / 256, i % 256)), "x", i)
            .await
            .unwrap()
            .failed();
        assert!(t.lock().len() <= 52);
    }
    // The newest entries survive eviction, and so does the one still running.
    t.begin(ip("10.0.1.243"), "x", 500).await.unwrap().failed();
    assert_eq!(t.lock().get("i:10.0.1.243").map(|s| s.failures), Some(2));
    assert_eq!(t.lock().get("i:10.9.9.9").map(|s| s.in_flight), Some(1));
    running.succeeded();
}
