//! The vocabulary every layer shares: typed ids, roles, users, where a request came from.
//! Plain data with its own parsing rules; it depends on nothing else in the crate.

pub mod client;
pub mod ids;
pub mod roles;
pub mod user;

pub use client::ClientInfo;
pub use ids::{EventId, InvalidId, SessionId, TokenId, UserId};
pub use roles::{Role, RoleError, Roles};
pub use user::User;
