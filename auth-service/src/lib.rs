//! A standalone token service: log-in, short-lived access tokens, rotating refresh tokens with
//! reuse detection, and a database-free `/verify` for resource servers.
//!
//! The layers, top to bottom; each module imports only from those below it:
//!
//! * [`cli`], [`server`]: the entry points (the command line; assembling and running the
//!   listeners).
//! * [`http`]: routes, extractors, wire types, and the one error → status table.
//! * [`domain`]: the operations (sessions, accounts, administration, audit, maintenance)
//!   and their rules, the clock, the domain error.
//! * [`events`]: the relay that publishes audit events from the outbox table to the
//!   message broker (NATS JetStream), beside the domain (it uses storage only).
//! * [`storage`] (the database) and [`security`] (keys, tokens, password hashing,
//!   throttles, the revocation index), side by side.
//! * [`model`]: typed ids, roles, client info — the vocabulary all layers share; and
//!   [`metrics`], the counters every layer may add to.
//! * [`config`]: typed settings.

pub mod cli;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod metrics;
pub mod model;
pub mod security;
pub mod server;
pub mod storage;
