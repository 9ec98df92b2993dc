//! Three real auth-service replicas on one fresh PostgreSQL database behind the real nginx
//! running deploy/nginx/lb.conf (round robin, on loopback), as docker-compose.yml runs them:
//! a revocation made on one replica reaches every other within a second by the push alone
//! (polling is an hour apart), concurrent refreshes of one token spread over the replicas
//! make exactly one child, and the login limit is one limit however guesses are spread.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::nginx::{Nginx, render_lb};
use crate::support::*;

const REPLICAS: usize = 3;
/// The correctness bound on a revocation reaching every replica (not a benchmark).
const PUSH_BOUND: Duration = Duration::from_secs(1);

/// `POST base+path` with a JSON body.
async fn post(client: &reqwest::Client, base: &str, path: &str, body: serde_json::Value) -> Reply {
    send(client.post(format!("{base}{path}")).json(&body)).await
}

#[actix_web::test]
async fn three_replicas_behind_nginx_share_revocations_rotations_and_limits() {
    // Three replicas as compose runs them: one database, one key directory, the balancer
    // (127.0.0.1 here) as their trusted proxy; polling an hour apart, so only the push can
    // carry a revocation from one replica to another.
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path());
    let mut replicas = Vec::new();
    let (mut public_ports, mut internal_ports) = (Vec::new(), Vec::new());
    for _ in 0..REPLICAS {
        let (p, i) = (free_port(), free_port());
        let mut env = auth_env(dir.path(), &db.url, p, i);
        env.extend(crate::support::env(&[
            ("AUTH__SERVER__TRUSTED_PROXIES", "127.0.0.1"),
            ("AUTH__REVOCATION__POLL_INTERVAL", "1h"),
            ("AUTH__LOGIN__MAX_FAILURES", "4"),
        ]));
        let ready = vec![
            format!("http://127.0.0.1:{p}/readyz"),
            format!("http://127.0.0.1:{i}/healthz"),
        ];
        replicas
            .push(Service::start("auth-service", auth_service_bin(), env, dir.path(), ready).await);
        public_ports.push(p);
        internal_ports.push(i);
    }
    let public: Vec<String> = public_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let verify: Vec<String> = internal_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}/verify"))
        .collect();
    let (lb_public, lb_internal) = (free_port(), free_port());
    let conf = render_lb(
        &[
            ("auth-service:8080", &public_ports),
            ("auth-service:8081", &internal_ports),
        ],
        &[(8080, lb_public), (8081, lb_internal)],
    );
    let nginx_dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(nginx_dir.path(), &conf, &[lb_public, lb_internal]).await;
    let lb = nginx.url.clone();
    let client = reqwest::Client::new();
    let alice = json!({"username": "alice", "password": PASSWORD});
    let r = post(&client, &lb, "/register", alice.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Logged in through the balancer, refreshed on replica 0, logged out on replica 1:
    // every replica refuses the session's access tokens within the bound. Each replica has
    // verified them first, so its /verify cache holds them too.
    let r = post(&client, &lb, "/login", alice.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (at0, rt0) = (r.str("access_token"), r.str("refresh_token"));
    let r = post(
        &client,
        &public[0],
        "/refresh",
        json!({"refresh_token": rt0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (at1, rt1) = (r.str("access_token"), r.str("refresh_token"));
    for url in &verify {
        for at in [&at0, &at1] {
            let r = send(client.get(url).bearer_auth(at)).await;
            assert_eq!(r.status, 200, "{url}: {}", r.body);
        }
    }
    let r = post(
        &client,
        &public[1],
        "/logout",
        json!({"refresh_token": rt1}),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let logged_out = Instant::now();
    // Each (replica, token) pair is polled in a loop of its own, all at once from the
    // logout's answer on, so no replica's time includes requests to the others. Each loop
    // records when its replica first answered token_revoked; it keeps polling past the
    // bound (up to 5 s) only so that a failure says how late it was.
    let refused_after: Vec<(usize, usize, Option<Duration>)> = futures_util::future::join_all(
        (0..REPLICAS)
            .flat_map(|i| [(i, 0, &at0), (i, 1, &at1)])
            .map(|(i, n, at)| {
                let (client, url) = (&client, &verify[i]);
                async move {
                    loop {
                        let r = send(client.get(url).bearer_auth(at)).await;
                        let after = logged_out.elapsed();
                        if r.status != 200 {
                            r.assert_unauthorized("token_revoked");
                            return (i, n, Some(after));
                        }
                        if after > 5 * PUSH_BOUND {
                            return (i, n, None);
                        }
                        sleep_secs(0.02).await;
                    }
                }
            }),
    )
    .await;
    for (i, n, after) in &refused_after {
        assert!(
            after.is_some_and(|after| after <= PUSH_BOUND),
            "replica {i} refused at{n} only after {after:?} (None: still accepted after 5 s); \
             (replica, token, refused after): {refused_after:?}"
        );
    }

    // 20 concurrent refreshes of one refresh token, round robin over the replicas: one
    // child. Every 200 carries it; anything else is a clean 401, or a 503 with Retry-After
    // when the database is too busy for the burst (never another 5xx, and never a reuse,
    // which would have ended the session).
    let r = post(&client, &lb, "/login", alice.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rt = r.str("refresh_token");
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let (client, base, rt) = (client.clone(), public[n % REPLICAS].clone(), rt.clone());
            actix_web::rt::spawn(async move {
                post(&client, &base, "/refresh", json!({"refresh_token": rt})).await
            })
        })
        .collect();
    let mut children = BTreeSet::new();
    let mut statuses = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        statuses.push(r.status.as_u16());
        match r.status.as_u16() {
            200 => {
                children.insert(r.str("refresh_token"));
            }
            401 => {
                r.assert_error(401, r.error());
                assert_ne!(r.error(), "token_reused", "{}", r.body);
            }
            503 => r.assert_unavailable(),
            other => panic!("refresh answered {other}: {}", r.body),
        }
    }
    assert_eq!(children.len(), 1, "children: {children:?}; {statuses:?}");
    let child = children.into_iter().next().unwrap();
    assert_ne!(child, rt);
    // The session lives on: its one child rotates, on any replica.
    let r = post(&client, &lb, "/refresh", json!({"refresh_token": child})).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The login limit (4 failures) is counted in the database: 8 wrong passwords through
    // the balancer, spread over all three replicas, get exactly 4 × 401 then 4 × 429, and
    // then the right password is refused on every replica.
    let carol = |password: &str| json!({"username": "carol", "password": password});
    let r = post(&client, &lb, "/register", carol(PASSWORD)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = post(&client, &lb, "/login", carol("wrong guess")).await;
        match r.status.as_u16() {
            401 => r.assert_error(401, "invalid_credentials"),
            429 => r.assert_error(429, "too_many_attempts"),
            other => panic!("login answered {other}: {}", r.body),
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429, 429, 429]);
    let logins = nginx.logged("POST /login", 10).await;
    let guessed_at: BTreeSet<&str> = logins[logins.len() - 8..]
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(guessed_at.len(), REPLICAS, "not spread: {logins:?}");
    for base in &public {
        post(&client, base, "/login", carol(PASSWORD))
            .await
            .assert_error(429, "too_many_attempts");
    }
}
