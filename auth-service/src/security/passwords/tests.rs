//! Unit tests of password hashing and its bounded pool.

use super::*;

fn settings(m: u32, t: u32) -> PasswordSettings {
    PasswordSettings {
        memory_kib: m,
        iterations: t,
        parallelism: 1,
        max_concurrent: Some(2),
        ..PasswordSettings::default()
    }
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

#[tokio::test]
async fn hash_and_verify() {
    let p = Passwords::new(&settings(64, 1)).unwrap();
    let h = p.hash(secret("correct horse")).await.unwrap();
    assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
    let ok = p
        .verify(secret("correct horse"), Some(h.clone()))
        .await
        .unwrap();
    assert_eq!(
        ok,
        Verified {
            matches: true,
            needs_rehash: false
        }
    );
    let bad = p.verify(secret("correct horsE"), Some(h)).await.unwrap();
    assert!(!bad.matches);
}

#[tokio::test]
async fn missing_user_never_matches() {
    let p = Passwords::new(&settings(64, 1)).unwrap();
    let v = p.verify(secret("anything"), None).await.unwrap();
    assert!(!v.matches && !v.needs_rehash);
}

#[tokio::test]
async fn stale_parameters_are_reported() {
    let old = Passwords::new(&settings(64, 1)).unwrap();
    let new = Passwords::new(&settings(128, 2)).unwrap();
    let h = old.hash(secret("long enough")).await.unwrap();
    let v = new
        .verify(secret("long enough"), Some(h.clone()))
        .await
        .unwrap();
    assert_eq!(
        v,
        Verified {
            matches: true,
            needs_rehash: true
        }
    );
    // A wrong password never triggers a rehash.
    let v = new.verify(secret("wrong one!"), Some(h)).await.unwrap();
    assert_eq!(
        v,
        Verified {
            matches: false,
            needs_rehash: false
        }
    );
}

#[tokio::test]
async fn long_passwords_are_not_truncated() {
    let p = Passwords::new(&settings(64, 1)).unwrap();
    let base = "x".repeat(200);
    let h = p.hash(secret(&format!("{base}a"))).await.unwrap();
    let v = p
        .verify(secret(&format!("{base}b")), Some(h))
        .await
        .unwrap();
    assert!(!v.matches);
}

#[tokio::test]
async fn garbage_hash_is_a_mismatch_not_a_panic() {
    let p = Passwords::new(&settings(64, 1)).unwrap();
    let v = p
        .verify(secret("whatever1"), Some("not-a-hash".into()))
        .await
        .unwrap();
    assert!(!v.matches);
}

#[tokio::test]
async fn hashes_interoperate_with_the_argon2_crate() {
    let p = Passwords::new(&settings(64, 1)).unwrap();
    // Ours verify with the crate's own verifier…
    let ours = p.hash(secret("correct horse")).await.unwrap();
    let parsed = PasswordHash::new(&ours).unwrap();
    use argon2::password_hash::PasswordVerifier;
    assert!(
        Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok()
    );
    assert!(
        Argon2::default()
            .verify_password(b"correct horsE", &parsed)
            .is_err()
    );
    // …and the crate's hashes (as stored before the pool existed) verify with ours.
    let theirs = reference_hash(&p.params, "correct horse");
    let v = p
        .verify(secret("correct horse"), Some(theirs.clone()))
        .await
        .unwrap();
    assert!(v.matches && !v.needs_rehash, "{v:?}");
    assert!(
        !p.verify(secret("correct horsE"), Some(theirs))
            .await
            .unwrap()
            .matches
    );
}

#[tokio::test]
async fn a_full_queue_answers_overloaded_at_once() {
    // One worker with a slow hash and a queue of one: of many at once, some are refused
    // immediately, none waits forever, and the rest succeed.
    let slow = PasswordSettings {
        memory_kib: 8192,
        iterations: 3,
        parallelism: 1,
        max_concurrent: Some(1),
        queue_size: 1,
        ..PasswordSettings::default()
    };
    let p = Passwords::new(&slow).unwrap();
    let results =
        futures_util::future::join_all((0..8).map(|_| p.hash(secret("long enough")))).await;
    let overloaded = results
        .iter()
        .filter(|r| matches!(r, Err(PasswordError::Overloaded)))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(overloaded >= 1, "nothing was refused");
    assert!(ok >= 1, "nothing was hashed");
    assert_eq!(ok + overloaded, 8);
    assert_eq!(p.queue_depth(), 0);
}

#[tokio::test]
async fn a_request_that_waited_too_long_is_refused_not_hashed() {
    // One worker, hashes of about a tenth of a second, and 30 ms allowed in the queue: the
    // first request is hashed, those queued behind it are refused when their turn comes.
    let slow = PasswordSettings {
        memory_kib: 32768,
        iterations: 6,
        parallelism: 1,
        max_concurrent: Some(1),
        queue_size: 16,
        queue_timeout: crate::config::Span::millis(30),
    };
    let p = Passwords::new(&slow).unwrap();
    let results =
        futures_util::future::join_all((0..4).map(|_| p.hash(secret("long enough")))).await;
    // The first is normally hashed; on a loaded machine it may itself wait past 30 ms for
    // the worker to start, and is then refused the same way.
    assert!(
        matches!(results[0], Ok(_) | Err(PasswordError::Overloaded)),
        "{:?}",
        results[0].as_ref().err()
    );
    assert!(
        results[1..]
            .iter()
            .all(|r| matches!(r, Err(PasswordError::Overloaded))),
        "queued requests were hashed after their deadline"
    );
    assert_eq!(p.queue_depth(), 0);
}
