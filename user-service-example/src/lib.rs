//! An example user service for the auth service's remote user store
//! (`users.source = "remote"` there): it owns users (argon2id credentials, roles, disabling)
//! in a database of its own and answers the auth service's calls (`/v1/…`, HTTP Basic with
//! the service credential). Operators manage users through `/admin/…` (a bearer token).
//! Disabling a user, taking a role away and changing a password are reported to the auth
//! service's `POST /internal/user-events` through an outbox written in the same transaction,
//! so an auth outage or a restart loses nothing.
//!
//! Layout: `http` (routes, extractors, handlers) → `domain` (the operations) → `storage`
//! (diesel over SQLite or PostgreSQL); `outbox` sends the notifications; `passwords` hashes.

pub mod domain;
pub mod error;
pub mod http;
pub mod model;
pub mod outbox;
pub mod passwords;
pub mod server;
pub mod settings;
pub mod storage;
