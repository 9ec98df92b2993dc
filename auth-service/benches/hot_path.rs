//! Micro-benchmarks of the work behind each request: checking an access token (what
//! `/verify` does, per algorithm), the revocation-index lookup, issuing a token pair's
//! signatures, and one Argon2id hash at the default (OWASP) parameters.
//!
//! Run: `cargo bench -p auth-service --bench hot_path`. Figures: BENCHMARKS.md.

#![allow(clippy::expect_used)] // benchmark set-up: a failure is a broken benchmark

use std::collections::HashMap;
use std::hint::black_box;

use auth_service::keys::Keys;
use auth_service::password::Passwords;
use auth_service::revocation::RevokedSessions;
use auth_service::settings::{Settings, Sources};
use auth_service::tokens::{Expiry, Tokens};
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
    auth_service::service::now()
}

fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = uuid::Uuid::new_v4().to_string();
    let sid = uuid::Uuid::new_v4().to_string();
    for alg in ["EdDSA", "ES256", "HS256"] {
        let s = settings(&dir.path().join(alg), alg);
        let t = Tokens::new(Keys::load(&s).expect("keys"), &s.tokens);
        let roles = vec!["user".to_string(), "admin".to_string()];
        let at = t
            .issue_access(&sub, "alice", roles.clone(), &sid, now())
            .expect("issue")
            .token;
        c.bench_function(&format!("check_access/{alg}"), |b| {
            b.iter(|| {
                t.check_access(black_box(&at), Expiry::Enforce)
                    .expect("valid")
            })
        });
        c.bench_function(&format!("issue_access/{alg}"), |b| {
            b.iter(|| {
                t.issue_access(&sub, "alice", roles.clone(), &sid, now())
                    .expect("issue")
            })
        });
    }
    let s = settings(&dir.path().join("rt"), "EdDSA");
    let t = Tokens::new(Keys::load(&s).expect("keys"), &s.tokens);
    let jti = uuid::Uuid::new_v4().to_string();
    c.bench_function("sign_refresh/HS256", |b| {
        b.iter(|| {
            t.sign_refresh(&jti, &sid, &sub, now(), now() + 60)
                .expect("sign")
        })
    });
}

fn revocation_index(c: &mut Criterion) {
    let index = RevokedSessions::new();
    for _ in 0..100_000 {
        index.revoke(&uuid::Uuid::new_v4().to_string(), i64::MAX);
    }
    let absent = uuid::Uuid::new_v4().to_string();
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
