//! Audit events: the kinds of security-relevant event, and recording one in the transaction
//! of the change it describes.

use crate::domain::Error;
use crate::model::{ClientInfo, EventId, SessionId, UserId};
use crate::storage::DbConn;
use crate::storage::audit::{self as audit_table, AuditRecord, NewAuditRecord};
use crate::storage::outbox::{self as outbox_table, NewOutboxRow};

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
    /// A machine client's access token revoked before its expiry (`/oauth/revoke`).
    ClientTokenRevoked,
}

impl AuditKind {
    pub const ALL: [AuditKind; 14] = [
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
        AuditKind::ClientTokenRevoked,
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
            AuditKind::ClientTokenRevoked => "client_token_revoked",
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
    /// The outbox as `settings` configure it: on when `events.url` is set.
    pub fn for_settings(settings: &crate::config::Settings) -> Outbox {
        Outbox {
            enabled: settings.events.url.is_some(),
        }
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

    /// Stores the event, at time `at`, on `conn` (inside the caller's transaction), under a
    /// fresh event id, and queues it for the broker in the same transaction when `outbox` is
    /// on.
    pub fn record(&self, conn: &mut DbConn, at: i64, outbox: Outbox) -> Result<(), Error> {
        let event_id = EventId::random();
        let row = NewAuditRecord {
            event_id,
            at,
            kind: self.kind.as_str(),
            user_id: self.user_id,
            session_id: self.session_id,
            client: self.client,
            detail: &self.detail,
        };
        if !outbox.enabled {
            audit_table::insert(conn, &row)?;
            return Ok(());
        }
        let payload = self.message(event_id, at).to_string();
        // Both rows or neither: a savepoint inside the caller's transaction, or a transaction
        // of its own for a caller without one.
        conn.write_transaction(|conn| {
            // First, so that for one user the audit ids and the outbox seqs both follow
            // commit order. Events are recorded last in their transactions, after every row
            // lock, so this lock never waits on a transaction that waits on it.
            if let Some(user_id) = &self.user_id {
                outbox_table::lock_user(conn, user_id)?;
            }
            audit_table::insert(conn, &row)?;
            outbox_table::insert(
                conn,
                &NewOutboxRow {
                    event_id: event_id.to_string(),
                    subject: self.kind.as_str(),
                    payload: &payload,
                    created_at: at,
                },
            )?;
            Ok::<_, Error>(())
        })
    }

    /// The message published to the broker: the audit row without the client's address and
    /// user agent, and without the detail fields of [`AuditKind::unpublished_detail`], which
    /// all stay in the audit table.
    fn message(&self, event_id: EventId, at: i64) -> serde_json::Value {
        let mut detail = self.detail.clone();
        if let Some(fields) = detail.as_object_mut() {
            for key in self.kind.unpublished_detail() {
                fields.remove(*key);
            }
        }
        serde_json::json!({
            "id": event_id,
            "kind": self.kind.as_str(),
            "at": at,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "detail": detail,
        })
    }
}

impl AuditKind {
    /// Detail fields kept in the audit row but never published: a failed login's `username`
    /// is whatever was typed, sometimes a password typed into the wrong field.
    fn unpublished_detail(self) -> &'static [&'static str] {
        match self {
            AuditKind::LoginFailed => &["username"],
            _ => &[],
        }
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
    /// The id the event is published under; unset for events recorded before ids existed.
    pub event_id: Option<String>,
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
            event_id: r.event_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of(kind: AuditKind, detail: serde_json::Value) -> serde_json::Value {
        let client = ClientInfo::default();
        let event = AuditEvent::new(kind, &client).detail(detail);
        event.message(EventId::random(), 1_764_400_000)
    }

    #[test]
    fn a_failed_logins_typed_name_is_not_published() {
        let m = message_of(
            AuditKind::LoginFailed,
            serde_json::json!({"username": "hunter2-typed-as-a-name"}),
        );
        assert_eq!(m["detail"], serde_json::json!({}));
        assert!(!m.to_string().contains("hunter2"), "{m}");
        let m = message_of(
            AuditKind::LoginFailed,
            serde_json::json!({"via": "user_service"}),
        );
        assert_eq!(m["detail"], serde_json::json!({"via": "user_service"}));
        // Other kinds publish their detail as recorded.
        let m = message_of(
            AuditKind::SessionRevoked,
            serde_json::json!({"by": "admin", "username": "bob"}),
        );
        assert_eq!(
            m["detail"],
            serde_json::json!({"by": "admin", "username": "bob"})
        );
    }
}
