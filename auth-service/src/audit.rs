//! The audit trail: one row per security-relevant event, written in the same transaction as
//! the change it records wherever there is one.

use diesel::prelude::*;
use serde::Serialize;

use crate::db::DbConn;
use crate::error::Error;
use crate::schema::audit_events;
use crate::service::ClientInfo;

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

/// An event about to be recorded.
pub struct AuditEvent {
    pub kind: AuditKind,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub client: ClientInfo,
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, client: &ClientInfo) -> AuditEvent {
        AuditEvent {
            kind,
            user_id: None,
            session_id: None,
            client: client.clone(),
            detail: serde_json::json!({}),
        }
    }

    pub fn user(mut self, user_id: &str) -> AuditEvent {
        self.user_id = Some(user_id.to_string());
        self
    }

    pub fn session(mut self, session_id: &str) -> AuditEvent {
        self.session_id = Some(session_id.to_string());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> AuditEvent {
        self.detail = detail;
        self
    }
}

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
struct NewAuditRow<'a> {
    at: i64,
    kind: &'a str,
    user_id: Option<&'a str>,
    session_id: Option<&'a str>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    detail: String,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: serde_json::Value,
}

impl From<AuditRow> for AuditView {
    fn from(r: AuditRow) -> Self {
        AuditView {
            id: r.id,
            at: crate::service::rfc3339(r.at),
            kind: r.kind,
            user_id: r.user_id,
            session_id: r.session_id,
            ip: r.ip,
            user_agent: r.user_agent,
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
        }
    }
}

pub fn record(conn: &mut DbConn, event: &AuditEvent, now: i64) -> Result<(), Error> {
    diesel::insert_into(audit_events::table)
        .values(NewAuditRow {
            at: now,
            kind: event.kind.as_str(),
            user_id: event.user_id.as_deref(),
            session_id: event.session_id.as_deref(),
            ip: event.client.ip.as_deref(),
            user_agent: event.client.user_agent.as_deref(),
            detail: event.detail.to_string(),
        })
        .execute(conn)?;
    Ok(())
}

/// Filters for reading the trail. Results are newest first; `before_id` is the cursor.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub user_id: Option<String>,
    pub kind: Option<AuditKind>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

pub fn list(conn: &mut DbConn, q: &AuditQuery) -> Result<Vec<AuditRow>, Error> {
    let mut query = audit_events::table
        .select(AuditRow::as_select())
        .into_boxed();
    if let Some(u) = &q.user_id {
        query = query.filter(audit_events::user_id.eq(u.clone()));
    }
    if let Some(k) = q.kind {
        query = query.filter(audit_events::kind.eq(k.as_str()));
    }
    if let Some(s) = q.since {
        query = query.filter(audit_events::at.ge(s));
    }
    if let Some(u) = q.until {
        query = query.filter(audit_events::at.le(u));
    }
    if let Some(b) = q.before_id {
        query = query.filter(audit_events::id.lt(b));
    }
    Ok(query
        .order(audit_events::id.desc())
        .limit(q.limit)
        .load(conn)?)
}
