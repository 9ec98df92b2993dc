//! Black-box tests of the user service: the real binary over HTTP, on SQLite and on
//! PostgreSQL, with a real HTTP receiver standing in for the auth service.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod admin;
mod cli;
mod contract;
mod notifications;
mod support;
