//! Micro-benchmarks of the work behind each request: checking an access token (what
//! `/verify` does, per algorithm), the revocation-index lookup, issuing a token pair's
//! signatures, and one Argon2id hash at the default (OWASP) parameters.
//!
//! Run: `cargo bench -p auth-service --bench hot_path`. Figures: BENCHMARKS.md.

#![allow(clippy::expect_used)] // benchmark set-up: a failure is a broken benchmark

use std::collections::HashMap;
use std::hint::black_box;

use auth_service::config::{Settings, Sources};
use auth_service::domain::{Clock, SystemClock};
use auth_service::model::{SessionId, TokenId, UserId};
use auth_service::security::keys::Keys;
use auth_service::security::passwords::Passwords;
use auth_service::security::revocation::RevokedSessions;
use auth_service::security::tokens::{AccessGrant, Expiry, RefreshGrant, Tokens};
use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::SecretString;

fn settings(dir: &std::path::Path, alg: &str) -> Settings {
    let env: HashMap<String, String> = [
        ("AUTH__DATA_DIR", dir.display().to_string()),
        ("AUTH__KEYS__ALGORITHM", alg.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Settings::load(&Sources { file: None, env }).expect("settings")
}

fn now() -> i64 {
    SystemClock.now()
}

fn grant(sub: UserId, sid: SessionId) -> AccessGrant<'static> {
    AccessGrant {
        user_id: sub,
        username: "alice",
        roles: vec!["user".to_string(), "admin".to_string()],
        session_id: sid,
    }
}

fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = UserId::random();
    let sid = SessionId::random();
    for alg in ["EdDSA", "ES256", "HS256"] {
        let s = settings(&dir.path().join(alg), alg);
        let t = Tokens::new(Keys::load(&s).expect("keys"), &s.tokens);
        let at = t.issue_access(grant(sub, sid), now()).expect("issue");
        c.bench_function(&format!("check_access/{alg}"), |b| {
            b.iter(|| {
                t.check_access(black_box(&at), Expiry::Enforce, now())
                    .expect("valid")
            })
        });
        c.bench_function(&format!("issue_access/{alg}"), |b| {
            b.iter(|| t.issue_access(grant(sub, sid), now()).expect("issue"))
        });
    }
    let s = settings(&dir.path().join("rt"), "EdDSA");
    let t = Tokens::new(Keys::load(&s).expect("keys"), &s.tokens);
    let jti = TokenId::random();
    c.bench_function("sign_refresh/HS256", |b| {
        b.iter(|| {
            t.sign_refresh(&RefreshGrant {
                jti,
                session_id: sid,
                user_id: sub,
                issued_at: now(),
                expires_at: now() + 60,
            })
            .expect("sign")
        })
    });
}

fn revocation_index(c: &mut Criterion) {
    let index = RevokedSessions::new(i64::MAX / 4);
    for _ in 0..100_000 {
        index.record(SessionId::random(), now());
    }
    let absent = SessionId::random();
    c.bench_function("revocation_lookup/100k_entries", |b| {
        b.iter(|| index.is_revoked(black_box(&absent)))
    });
}

fn password_hash(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), "EdDSA");
    let passwords = Passwords::new(&s.password).expect("params");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("argon2id_default_params");
    group.sample_size(10);
    group.bench_function("hash", |b| {
        b.iter(|| {
            runtime
                .block_on(passwords.hash(SecretString::from("correct horse battery".to_string())))
                .expect("hash")
        })
    });
    group.finish();
}

criterion_group!(benches, tokens, revocation_index, password_hash);
criterion_main!(benches);
