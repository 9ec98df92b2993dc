//! The `audit_events` table: written in the same transaction as the change an event records,
//! read newest first with filters.

use diesel::prelude::*;

use crate::model::{ClientInfo, EventId, SessionId, UserId};
use crate::storage::schema::audit_events;
use crate::storage::{DbConn, StorageError};

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
struct NewAuditRow<'a> {
    at: i64,
    kind: &'a str,
    user_id: Option<String>,
    session_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<&'a str>,
    detail: String,
    event_id: String,
}

/// An event about to be stored; `kind` is the event's stable name.
pub struct NewAuditRecord<'a> {
    /// Also the id the event is published under when events are on.
    pub event_id: EventId,
    pub at: i64,
    pub kind: &'a str,
    pub user_id: Option<UserId>,
    pub session_id: Option<SessionId>,
    pub client: &'a ClientInfo,
    pub detail: &'a serde_json::Value,
}

/// A stored event. Ids are kept as recorded: the trail outlives users and sessions, and
/// failed logins name no user.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: String,
    /// Unset for events recorded before event ids existed.
    pub event_id: Option<String>,
}

pub fn insert(conn: &mut DbConn, event: &NewAuditRecord<'_>) -> Result<(), StorageError> {
    diesel::insert_into(audit_events::table)
        .values(NewAuditRow {
            at: event.at,
            kind: event.kind,
            user_id: event.user_id.map(|id| id.to_string()),
            session_id: event.session_id.map(|id| id.to_string()),
            ip: event.client.ip_text(),
            user_agent: event.client.user_agent.as_deref(),
            detail: event.detail.to_string(),
            event_id: event.event_id.to_string(),
        })
        .execute(conn)?;
    Ok(())
}

/// Filters for reading the trail. Results are newest first; `before_id` is the cursor.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub user_id: Option<UserId>,
    pub kind: Option<&'static str>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

pub fn list(conn: &mut DbConn, q: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError> {
    let mut query = audit_events::table
        .select(AuditRecord::as_select())
        .into_boxed();
    if let Some(u) = &q.user_id {
        query = query.filter(audit_events::user_id.eq(u.to_string()));
    }
    if let Some(k) = q.kind {
        query = query.filter(audit_events::kind.eq(k));
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
