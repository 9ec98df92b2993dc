//! Black-box tests of the HTTP API. Every test runs twice: on SQLite and on PostgreSQL
//! (`TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod support;

mod account;
mod admin;
mod audit;
mod bad_input;
mod browser;
mod cli;
mod keys;
mod login;
mod logout;
mod metrics;
mod oauth;
mod openapi;
mod refresh;
mod register;
mod user_events;
mod verify;
