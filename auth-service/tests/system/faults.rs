//! Faults: the database stopped, frozen or out of disk; the service killed mid-stream.

use std::time::Duration;

use auth_service::storage::schema::{audit_events, refresh_tokens, sessions, user_roles, users};
use diesel::prelude::*;

use crate::support::*;

/// `database.timeout` in these tests is 1 s; an answer must come well within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The server is stopped (`pg_ctl stop -m immediate`): connections are refused.
    Outage,
    /// Every server process is SIGSTOPped: connections stay open and nothing answers.
    Freeze,
}

/// While the database is down or hung: `/verify` answers from memory, every request that
/// needs the database answers 503 with `Retry-After` within the deadline, and once the
/// database is back the service works again without a restart.
#[actix_web::test]
async fn database_outage_and_freeze() {
    let cluster = PgCluster::start();
    let url = cluster.create_database("auth");
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::start(dir.path(), &url, &[]).await;
    assert_eq!(auth.register("alice").await.status, 201);

    for fault in [Fault::Outage, Fault::Freeze] {
        let r = auth.login("alice").await;
        assert_eq!(r.status, 200, "{fault:?}: {}", r.body);
        let (at, rt) = (r.str("access_token"), r.str("refresh_token"));

        match fault {
            Fault::Outage => cluster.stop(),
            Fault::Freeze => cluster.freeze(),
        }
        for _ in 0..3 {
            let (v, took) = timed(auth.verify(&at)).await;
            assert_eq!(v.status, 200, "{fault:?}: /verify {}", v.body);
            assert!(took < ANSWER_WITHIN, "{fault:?}: /verify took {took:?}");
        }
        let asks = [
            (
                "login",
                auth.post(
                    "/login",
                    serde_json::json!({"username": "alice", "password": PASSWORD}),
                ),
            ),
            (
                "refresh",
                auth.post("/refresh", serde_json::json!({ "refresh_token": rt })),
            ),
            (
                "logout",
                auth.post("/logout", serde_json::json!({ "refresh_token": rt })),
            ),
            (
                "register",
                auth.post(
                    "/register",
                    serde_json::json!({"username": "bob", "password": PASSWORD}),
                ),
            ),
        ];
        for (what, ask) in asks {
            let (r, took) = timed(ask).await;
            r.assert_unavailable();
            assert!(took < ANSWER_WITHIN, "{fault:?}: {what} took {took:?}");
        }
        let (ready, took) = timed(auth.readyz()).await;
        ready.assert_unavailable();
        assert!(took < ANSWER_WITHIN, "{fault:?}: /readyz took {took:?}");

        match fault {
            Fault::Outage => cluster.restart(),
            Fault::Freeze => cluster.thaw(),
        }
        // Back without a restart of the service.
        let recovered = eventually(Duration::from_secs(20), || async {
            let r = auth.login("alice").await;
            (r.status == 200).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("{fault:?}: the service did not recover"));
        let r = auth.refresh(&recovered.str("refresh_token")).await;
        assert_eq!(r.status, 200, "{fault:?}: {}", r.body);
        assert_eq!(auth.readyz().await.status, 200, "{fault:?}");
    }
    auth.service.assert_never_logged(&[PASSWORD]);
}

both_backends! {
    /// kill -9 of the service while clients rotate refresh tokens as fast as they can, then
    /// a restart: every session has at most one unused refresh token, no token has two
    /// children, and the newest refresh token each client holds either works once or is
    /// refused cleanly.
    async fn kill_during_a_rotation_storm(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(b, dir.path());
        let overrides = [("AUTH__TOKENS__REUSE_GRACE", "0s"), ("AUTH__DATABASE__TIMEOUT", "5s")];
        let mut auth = Auth::start(dir.path(), &db.url, &overrides).await;
        let mut chains = Vec::new();
        for i in 0..8 {
            let name = format!("user{i}");
            assert_eq!(auth.register(&name).await.status, 201);
            chains.push(auth.login(&name).await.str("refresh_token"));
        }
        let pid = auth.service.pid().unwrap();
        let storm = chains.iter_mut().map(|rt| {
            let auth = &auth;
            async move {
                let mut rotations = 0;
                loop {
                    let request = auth.client.post(format!("{}/refresh", auth.public))
                        .json(&serde_json::json!({ "refresh_token": rt.as_str() }));
                    match testkit::try_send(request).await {
                        Ok(r) if r.status == 200 => {
                            *rt = r.str("refresh_token");
                            rotations += 1;
                        }
                        Ok(r) => panic!("refresh during the storm: {} {}", r.status, r.body),
                        Err(_) => return rotations, // the service is gone
                    }
                }
            }
        });
        let killer = async {
            sleep_secs(0.5).await;
            let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
            assert!(status.success());
        };
        let (rotations, ()) = futures_util::future::join(futures_util::future::join_all(storm), killer).await;
        assert!(rotations.iter().sum::<usize>() > 8, "the storm did not get going: {rotations:?}");
        auth.service.restart().await;

        let mut conn = connect(dir.path(), &db.url);
        let unused: Vec<(String, i64)> = refresh_tokens::table
            .filter(refresh_tokens::used_at.is_null())
            .group_by(refresh_tokens::session_id)
            .select((refresh_tokens::session_id, diesel::dsl::count_star()))
            .load(&mut conn)
            .unwrap();
        assert!(unused.iter().all(|(_, n)| *n <= 1), "sessions with several unused tokens: {unused:?}");
        let parents: Vec<(Option<String>, i64)> = refresh_tokens::table
            .filter(refresh_tokens::parent_jti.is_not_null())
            .group_by(refresh_tokens::parent_jti)
            .select((refresh_tokens::parent_jti, diesel::dsl::count_star()))
            .load(&mut conn)
            .unwrap();
        assert!(parents.iter().all(|(_, n)| *n == 1), "tokens with several children: {parents:?}");

        for rt in &chains {
            let first = auth.refresh(rt).await;
            match first.status.as_u16() {
                // Its rotation never committed: it works, once.
                200 => auth.refresh(rt).await.assert_error(401, "token_reused"),
                // Its rotation committed but the answer was lost in the kill: a clean refusal.
                401 => assert!(["token_reused", "session_revoked"].contains(&first.error()), "{}", first.body),
                other => panic!("after the restart: {other} {}", first.body),
            }
        }
    }
}

/// SQLite with a full disk (a file-size limit on the process): writes answer 503 with
/// `Retry-After`, `/readyz` says not ready, and nothing is half-written.
#[actix_web::test]
async fn sqlite_with_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("auth.db").display());
    // A first run creates the database, the keys and a few users.
    let mut auth = Auth::start(dir.path(), &url, &[]).await;
    for i in 0..3 {
        assert_eq!(auth.register(&format!("early{i}")).await.status, 201);
    }
    auth.service.stop();
    let largest = ["auth.db", "auth.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .max()
        .unwrap();
    // Again, allowed to grow no file past 64 KiB beyond what it has. Writes past the limit
    // fail with EFBIG (SIGXFSZ is ignored, as a full disk would give ENOSPC).
    let limit_kib = largest / 1024 + 64;
    let wrapper = format!("trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\"");
    let limited = Auth::start_via(dir.path(), &url, &[], Some(&wrapper)).await;
    let mut created = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let name = format!("user{i}");
        let r = limited.register(&name).await;
        match r.status.as_u16() {
            201 => created.push(name),
            _ => {
                r.assert_unavailable();
                refused = Some(name);
                break;
            }
        }
    }
    let refused = refused.expect("the disk never filled up");
    limited.readyz().await.assert_unavailable();
    drop(limited);

    // Room again: everything that was answered 201 is whole, the refused one is absent.
    let auth_again = Auth::start(dir.path(), &url, &[]).await;
    assert_eq!(auth_again.readyz().await.status, 200);
    for name in created.iter().chain(["early0".to_string()].iter()) {
        assert_eq!(auth_again.login(name).await.status, 200, "{name}");
    }
    let mut conn = connect(dir.path(), &url);
    let ids: Vec<String> = users::table.select(users::id).load(&mut conn).unwrap();
    assert_eq!(
        ids.len(),
        3 + created.len(),
        "a refused registration left a user behind"
    );
    for id in &ids {
        let roles: i64 = user_roles::table
            .filter(user_roles::user_id.eq(id))
            .count()
            .get_result(&mut conn)
            .unwrap();
        let registered: i64 = audit_events::table
            .filter(audit_events::user_id.eq(id))
            .filter(audit_events::kind.eq("registered"))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!((roles, registered), (1, 1), "user {id} is half-written");
    }
    let orphans: i64 = sessions::table
        .left_join(users::table)
        .filter(users::id.is_null())
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(orphans, 0);
    assert_eq!(
        auth_again.register(&refused).await.status,
        201,
        "the refused name was taken"
    );
    auth.service.stop();
}
