//! Where users live (`users.source`): this service's own tables (`local`, the default), or
//! a user service (`remote`) that checks credentials and owns names, emails, password
//! hashes, roles and status. With a user service this database keeps only sessions,
//! refresh tokens, the audit trail and the reports below — no user's name or hash.
//!
//! The operations ask the directory at the moments the issue of record names: credentials
//! at login, the user's current roles and status at refresh and for administrator checks.
//! The user service reports a disabled user, a removed role or a changed password on
//! `/internal/user-events` ([`UserReport`]); every session of that user ends at once, and a
//! login whose credentials were checked before the report arrived is checked again.

use crate::config::Settings;
use crate::domain::Error;
use crate::model::UserId;
use crate::storage::user_service::UserService;

/// Where users live.
#[derive(Clone, Debug)]
pub enum Directory {
    /// This service's `users` and `user_roles` tables.
    Local,
    /// A user service, through its HTTP contract.
    Remote(UserService),
}

impl Directory {
    pub fn from_settings(settings: &Settings) -> Result<Directory, Error> {
        match UserService::from_settings(settings) {
            Ok(Some(service)) => Ok(Directory::Remote(service)),
            Ok(None) => Ok(Directory::Local),
            Err(e) => Err(Error::Validation(e.0)),
        }
    }

    /// The user service, when users are remote.
    pub fn remote(&self) -> Option<&UserService> {
        match self {
            Directory::Local => None,
            Directory::Remote(service) => Some(service),
        }
    }
}

/// What the user service may report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    UserDisabled,
    RoleRevoked,
    PasswordChanged,
}

impl ReportKind {
    pub fn parse(s: &str) -> Option<ReportKind> {
        match s {
            "user_disabled" => Some(ReportKind::UserDisabled),
            "role_revoked" => Some(ReportKind::RoleRevoked),
            "password_changed" => Some(ReportKind::PasswordChanged),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::UserDisabled => "user_disabled",
            ReportKind::RoleRevoked => "role_revoked",
            ReportKind::PasswordChanged => "password_changed",
        }
    }
}

/// A change to a user that the user service reported. Each ends every session of the user.
#[derive(Debug, Clone)]
pub struct UserReport {
    /// The user service's id for this report: a repeat (a redelivery) changes nothing.
    pub event_id: uuid::Uuid,
    pub kind: ReportKind,
    pub user_id: UserId,
    /// The role removed, for `role_revoked`.
    pub role: Option<String>,
    /// When it happened at the user service, as it says (Unix seconds).
    pub reported_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_kinds_round_trip_and_unknown_ones_are_refused() {
        for k in [
            ReportKind::UserDisabled,
            ReportKind::RoleRevoked,
            ReportKind::PasswordChanged,
        ] {
            assert_eq!(ReportKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ReportKind::parse("user_enabled"), None);
        assert_eq!(ReportKind::parse(""), None);
    }

    #[test]
    fn local_is_the_default() {
        let d = Directory::from_settings(&Settings::default()).unwrap();
        assert!(d.remote().is_none());
    }
}
