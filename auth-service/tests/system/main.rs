//! The auth-service binary as a child process, under faults: its database stopped, frozen or
//! out of disk, and the service itself killed mid-stream. Tests that stop or freeze a
//! database run a PostgreSQL cluster of their own (testkit's `PgCluster`); the others use a
//! fresh database on either backend, like the API suite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod faults;
mod interop;
mod remote_users;
mod support;
