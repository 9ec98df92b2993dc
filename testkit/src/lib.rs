//! The workspace's one test harness, shared by every member's black-box tests:
//!
//! * [`both_backends!`] and [`TestDb`]: each test on SQLite and on PostgreSQL, each with a
//!   database of its own (a fresh file, or a fresh PostgreSQL database dropped afterwards);
//! * [`Reply`] and [`send`]: an HTTP answer with the one error shape's assertions;
//! * [`claims`] and friends: peeking into a JWT without verifying it;
//! * [`Service`] and [`workspace_bin`]: a workspace binary as a child process, with its
//!   output captured (and searched for secrets);
//! * [`PgCluster`]: a PostgreSQL server of the test's own, to stop, freeze and restart;
//! * [`NatsServer`]: a NATS server with JetStream of the test's own, to stop, kill and restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod db;
mod jwt;
mod nats;
mod pg_cluster;
mod process;
mod reply;

pub use actix_web;
pub use db::{Backend, TestDb, postgres_admin_url, with_database};
pub use jwt::{claims, header, sid_of, sub_of};
pub use nats::NatsServer;
pub use pg_cluster::PgCluster;
pub use process::{Env, Service, env, free_port, workspace_bin, workspace_root};
pub use reply::{Reply, send, try_send};

/// Generates `NAME::sqlite` and `NAME::postgres` tests from one body.
#[macro_export]
macro_rules! both_backends {
    ($($(#[doc = $doc:expr])* async fn $name:ident($b:ident: Backend) $body:block)*) => {
        $(
            $(#[doc = $doc])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($b: $crate::Backend) $body
                #[$crate::actix_web::test]
                async fn sqlite() {
                    run($crate::Backend::Sqlite).await
                }
                #[$crate::actix_web::test]
                async fn postgres() {
                    run($crate::Backend::Postgres).await
                }
            }
        )*
    };
}

/// Sleeps without blocking the test's runtime. Only for waiting on real processes and
/// networks; times inside the service are moved with its test clock instead.
pub async fn sleep_secs(secs: f64) {
    actix_web::rt::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
}
