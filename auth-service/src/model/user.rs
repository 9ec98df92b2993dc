//! A user account as every layer may hand it out: never with a password hash. The user
//! service's answers (remote users) and the local tables (through the domain) both come to
//! this.

use crate::model::{Roles, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub roles: Roles,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}
