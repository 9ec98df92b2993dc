//! Black-box tests of the resource service with the real auth service: both binaries run as
//! child processes on free ports. The end-to-end flow runs on SQLite and on PostgreSQL
//! (`TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`); the compose
//! checks run the binaries with the environment docker-compose.yml gives them; the replica
//! checks run three auth-service replicas on one PostgreSQL database behind nginx; the events
//! checks run a NATS server of their own and feed the resource service's cache session-ending
//! events.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

mod api;
mod browser;
mod compose;
mod end_to_end;
mod events;
mod nginx;
mod replicas;
