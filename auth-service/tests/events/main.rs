//! Auth events on the message broker (NATS JetStream), black-box: the service over HTTP (in
//! this process, or the real binary when it is killed), the broker read back with a client of
//! the test's own. Every test runs on SQLite and on PostgreSQL. Tests that stop or kill the
//! broker run a NATS server of their own (testkit's `NatsServer`); the others use the shared
//! one at `NATS_URL` with a stream and subject prefix of their own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

#[allow(dead_code, unused_imports)] // the API suite's harness; this suite uses part of it
#[path = "../api/support.rs"]
mod support;
#[allow(dead_code, unused_imports)] // the system suite's harness (the binary as a child process)
#[path = "../system/support.rs"]
mod system_support;

mod stream;

mod broker_outage;
mod crash;
mod duplicates;
mod heartbeat;
mod publish;
