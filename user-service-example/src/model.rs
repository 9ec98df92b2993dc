//! The service's nouns: user ids, roles, users as the contract shows them, notifications.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

/// A user's id (a UUID). Never confused with a notification's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct UserId(pub uuid::Uuid);

impl UserId {
    pub fn random() -> UserId {
        UserId(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The role every user has.
pub const USER_ROLE: &str = "user";
/// The role `user create --admin` grants.
pub const ADMIN_ROLE: &str = "admin";
/// Most roles one user may hold.
pub const MAX_ROLES: usize = 16;

/// A role name: a lower-case letter, then up to 31 of a-z, 0-9, '_' and '-' (the auth
/// service's rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role(String);

impl Role {
    pub fn parse(name: &str) -> Result<Role, String> {
        let ok = (1..=32).contains(&name.len())
            && name.as_bytes()[0].is_ascii_lowercase()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Role(name.to_string()))
        } else {
            Err(format!(
                "roles: {name:?} is not a valid role name (a-z, 0-9, '_', '-'; starting with a \
                 letter; at most 32)"
            ))
        }
    }

    pub fn user() -> Role {
        Role(USER_ROLE.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of roles that always holds `user`.
pub fn role_set(names: &[String]) -> Result<BTreeSet<Role>, String> {
    let mut set = names
        .iter()
        .map(|n| Role::parse(n))
        .collect::<Result<BTreeSet<Role>, String>>()?;
    set.insert(Role::user());
    if set.len() > MAX_ROLES {
        return Err(format!("roles: at most {MAX_ROLES}"));
    }
    Ok(set)
}

/// A user as every endpoint shows it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    /// In name order; always holds `user`.
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a notification reports to the auth service. (The contract also has
/// `password_changed`, for changes made other than through the auth service, such as a
/// reset flow; this example has none.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    UserDisabled,
    RoleRevoked,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::UserDisabled => "user_disabled",
            NotificationKind::RoleRevoked => "role_revoked",
        }
    }
}

/// One pending notification, as stored and as sent (`seq` stays here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub at: i64,
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        for ok in ["user", "admin", "a", "billing-ops_2", &"a".repeat(32)] {
            assert!(Role::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Admin", "1x", "-x", "a b", "é", &"a".repeat(33)] {
            assert!(Role::parse(bad).is_err(), "{bad}");
        }
        let set = role_set(&["admin".into()]).unwrap();
        let names: Vec<&str> = set.iter().map(Role::as_str).collect();
        assert_eq!(names, ["admin", "user"]);
        let many: Vec<String> = (0..16).map(|i| format!("r{i}")).collect();
        assert!(role_set(&many).is_err());
    }
}
