//! A standalone token service: log-in, short-lived access tokens, rotating refresh tokens with
//! reuse detection, and a database-free `/verify` for resource servers.

pub mod account;
pub mod admin;
pub mod audit;
pub mod commands;
pub mod db;
pub mod error;
pub mod http;
pub mod keys;
pub mod password;
pub mod revocation;
pub mod schema;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;
pub mod throttle;
pub mod tokens;
