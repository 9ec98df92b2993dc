//! Roles: validated names, and a user's set of them.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Serialize, Serializer};

/// The role every user has.
pub const USER: &str = "user";
/// The role that may use `/admin/…`.
pub const ADMIN: &str = "admin";
/// Most roles one user may hold.
pub const MAX_ROLES: usize = 16;
const MAX_ROLE_CHARS: usize = 32;

/// A role name that breaks the naming rule, or too many roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error(
        "roles: {0:?} is not a valid role name (a-z, 0-9, '_', '-'; starting with a letter; at most 32)"
    )]
    InvalidName(String),
    #[error("roles: at most {MAX_ROLES}")]
    TooMany,
}

/// One role name: lower-case letters, digits, `_` and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role(String);

impl Role {
    pub fn parse(name: &str) -> Result<Role, RoleError> {
        let ok = (1..=MAX_ROLE_CHARS).contains(&name.len())
            && name.as_bytes()[0].is_ascii_lowercase()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Role(name.to_string()))
        } else {
            Err(RoleError::InvalidName(name.to_string()))
        }
    }

    pub fn user() -> Role {
        Role(USER.to_string())
    }

    pub fn admin() -> Role {
        Role(ADMIN.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A user's roles: a set (no duplicates), always listed in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    /// Parses a list of names, refusing any invalid name and more than [`MAX_ROLES`].
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Roles, RoleError> {
        let set = names
            .iter()
            .map(|n| Role::parse(n.as_ref()))
            .collect::<Result<BTreeSet<Role>, RoleError>>()?;
        if set.len() > MAX_ROLES {
            return Err(RoleError::TooMany);
        }
        Ok(Roles(set))
    }

    /// The roles a new account starts with.
    pub fn default_for_new_user() -> Roles {
        Roles(BTreeSet::from([Role::user()]))
    }

    pub fn contains(&self, role: &Role) -> bool {
        self.0.contains(role)
    }

    pub fn is_admin(&self) -> bool {
        self.0.iter().any(|r| r.as_str() == ADMIN)
    }

    pub fn insert(&mut self, role: Role) -> Result<(), RoleError> {
        if !self.0.contains(&role) && self.0.len() >= MAX_ROLES {
            return Err(RoleError::TooMany);
        }
        self.0.insert(role);
        Ok(())
    }

    pub fn remove(&mut self, role: &Role) {
        self.0.remove(role);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Role> {
        self.0.iter()
    }

    /// The roles in `self` that `other` lacks.
    pub fn missing_from<'a>(&'a self, other: &'a Roles) -> impl Iterator<Item = &'a Role> {
        self.0.difference(&other.0)
    }

    /// The names, for token claims and wire answers.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|r| r.0.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Roles {
    /// Comma-separated, for logs and the command line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Roles {
        Roles(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names() {
        assert!(Roles::parse(&["user", "admin", "ops-team_2"]).is_ok());
        for bad in ["", "Admin", "1st", "a b", "a,b", "a%", &"x".repeat(33)] {
            assert!(Role::parse(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("r{i}")).collect();
        assert_eq!(Roles::parse(&many), Err(RoleError::TooMany));
    }

    #[test]
    fn a_set_in_name_order() {
        let roles = Roles::parse(&["user", "admin", "user"]).unwrap();
        assert_eq!(roles.names(), ["admin", "user"]);
        assert!(roles.is_admin());
        assert_eq!(roles.to_string(), "admin,user");
        // "administrator" is not "admin": no substring matching anywhere.
        assert!(
            !Roles::parse(&["administrator", "badmin"])
                .unwrap()
                .is_admin()
        );
        let fewer = Roles::parse(&["user"]).unwrap();
        let removed: Vec<&Role> = roles.missing_from(&fewer).collect();
        assert_eq!(removed, [&Role::admin()]);
    }
}
