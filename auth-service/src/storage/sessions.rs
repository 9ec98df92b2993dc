//! The `sessions` table: one row per log-in, the family its refresh tokens belong to.

use diesel::prelude::*;

use crate::model::{ClientInfo, SessionId, UserId};
use crate::storage::schema::sessions;
use crate::storage::{DbConn, StorageError, revocation_feed};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
struct SessionRow {
    id: String,
    user_id: String,
    created_at: i64,
    last_used_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    revoked_reason: Option<String>,
    user_agent: Option<String>,
    ip: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: i64,
    pub last_used_at: i64,
    /// The absolute cap (`tokens.session_ttl`), if any.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub user_agent: Option<String>,
    /// As recorded: the client's address in text.
    pub ip: Option<String>,
}

impl SessionRecord {
    fn from_row(row: SessionRow) -> Result<SessionRecord, StorageError> {
        let corrupt = |what: &str, raw: &str| StorageError::Corrupt(format!("{what} {raw:?}"));
        Ok(SessionRecord {
            id: SessionId::parse(&row.id).map_err(|_| corrupt("sessions.id", &row.id))?,
            user_id: UserId::parse(&row.user_id)
                .map_err(|_| corrupt("sessions.user_id", &row.user_id))?,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            user_agent: row.user_agent,
            ip: row.ip,
        })
    }
}

/// Why a session ended; stored in `sessions.revoked_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    LogoutAll,
    RefreshTokenReused,
    /// The user ended one of their sessions from another.
    EndedByUser,
    PasswordChanged,
    RoleRevoked,
    UserDisabled,
    /// An administrator ended the user's sessions.
    EndedByAdmin,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::LogoutAll => "logout_all",
            RevokeReason::RefreshTokenReused => "refresh_token_reused",
            RevokeReason::EndedByUser => "ended_by_user",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::RoleRevoked => "role_revoked",
            RevokeReason::UserDisabled => "user_disabled",
            RevokeReason::EndedByAdmin => "ended_by_admin",
        }
    }
}

/// A session about to be opened.
pub struct NewSession<'a> {
    pub id: SessionId,
    pub user_id: UserId,
    pub now: i64,
    pub expires_at: Option<i64>,
    pub client: &'a ClientInfo,
}

/// Stores a new session. Its first refresh token goes in the same transaction (see
/// [`crate::storage::refresh_tokens::insert`]).
pub fn insert(conn: &mut DbConn, session: &NewSession<'_>) -> Result<(), StorageError> {
    diesel::insert_into(sessions::table)
        .values(SessionRow {
            id: session.id.to_string(),
            user_id: session.user_id.to_string(),
            created_at: session.now,
            last_used_at: session.now,
            expires_at: session.expires_at,
            revoked_at: None,
            revoked_reason: None,
            user_agent: session.client.user_agent.clone(),
            ip: session.client.ip_text(),
        })
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConn, id: &SessionId) -> Result<Option<SessionRecord>, StorageError> {
    sessions::table
        .find(id.to_string())
        .select(SessionRow::as_select())
        .first(conn)
        .optional()?
        .map(SessionRecord::from_row)
        .transpose()
}

/// Marks a session revoked. Returns the time it was revoked at (the earlier time if it was
/// already revoked), or `None` if there is no such session.
pub fn revoke(
    conn: &mut DbConn,
    id: &SessionId,
    reason: RevokeReason,
    now: i64,
) -> Result<Option<i64>, StorageError> {
    let sid = *id;
    let id = id.to_string();
    let n = diesel::update(
        sessions::table
            .find(&id)
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(now),
        sessions::revoked_reason.eq(reason.as_str()),
    ))
    .execute(conn)?;
    if n == 1 {
        revocation_feed::announce(conn, &[sid], now)?;
    }
    Ok(sessions::table
        .find(&id)
        .select(sessions::revoked_at)
        .first::<Option<i64>>(conn)
        .optional()?
        .flatten())
}

/// Revokes one session, only if it belongs to `user_id` and is still live.
pub fn revoke_own(
    conn: &mut DbConn,
    user_id: &UserId,
    id: &SessionId,
    reason: RevokeReason,
    now: i64,
) -> Result<bool, StorageError> {
    let n = diesel::update(
        sessions::table
            .find(id.to_string())
            .filter(sessions::user_id.eq(user_id.to_string()))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(now),
        sessions::revoked_reason.eq(reason.as_str()),
    ))
    .execute(conn)?;
    if n == 1 {
        revocation_feed::announce(conn, &[*id], now)?;
    }
    Ok(n == 1)
}

/// Revokes every live session of a user, except `keep` if given. Returns the ids revoked.
pub fn revoke_all_of_user(
    conn: &mut DbConn,
    user_id: &UserId,
    reason: RevokeReason,
    keep: Option<&SessionId>,
    now: i64,
) -> Result<Vec<SessionId>, StorageError> {
    conn.write_transaction(|conn| {
        let keep = keep.map(|k| k.to_string()).unwrap_or_default();
        let ids: Vec<String> = sessions::table
            .filter(sessions::user_id.eq(user_id.to_string()))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::id.ne(&keep))
            .select(sessions::id)
            .load(conn)?;
        if !ids.is_empty() {
            diesel::update(
                sessions::table
                    .filter(sessions::id.eq_any(&ids))
                    .filter(sessions::revoked_at.is_null()),
            )
            .set((
                sessions::revoked_at.eq(now),
                sessions::revoked_reason.eq(reason.as_str()),
            ))
            .execute(conn)?;
        }
        let ids = ids
            .iter()
            .map(|id| {
                SessionId::parse(id)
                    .map_err(|_| StorageError::Corrupt(format!("sessions.id {id:?}")))
            })
            .collect::<Result<Vec<SessionId>, StorageError>>()?;
        revocation_feed::announce(conn, &ids, now)?;
        Ok(ids)
    })
}

/// A user's sessions that can still be refreshed, newest first.
pub fn live_of_user(
    conn: &mut DbConn,
    user_id: &UserId,
    now: i64,
    refresh_ttl: i64,
) -> Result<Vec<SessionRecord>, StorageError> {
    let rows: Vec<SessionRow> = sessions::table
        .filter(sessions::user_id.eq(user_id.to_string()))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::last_used_at.gt(now - refresh_ttl))
        .order((sessions::created_at.desc(), sessions::id.asc()))
        .select(SessionRow::as_select())
        .load(conn)?;
    rows.into_iter()
        .filter(|s| s.expires_at.is_none_or(|at| at > now))
        .map(SessionRecord::from_row)
        .collect()
}

/// Sessions revoked at or after `since`, with the time they were revoked.
pub fn revoked_since(conn: &mut DbConn, since: i64) -> Result<Vec<(SessionId, i64)>, StorageError> {
    let rows: Vec<(String, Option<i64>)> = sessions::table
        .filter(sessions::revoked_at.ge(since))
        .select((sessions::id, sessions::revoked_at))
        .load(conn)?;
    rows.into_iter()
        .filter_map(|(id, at)| at.map(|at| (id, at)))
        .map(|(id, at)| {
            SessionId::parse(&id)
                .map(|id| (id, at))
                .map_err(|_| StorageError::Corrupt(format!("sessions.id {id:?}")))
        })
        .collect()
}

/// Marks a session used now (a refresh).
pub(crate) fn touch(conn: &mut DbConn, id: &SessionId, now: i64) -> Result<(), StorageError> {
    diesel::update(sessions::table.find(id.to_string()))
        .set(sessions::last_used_at.eq(now))
        .execute(conn)?;
    Ok(())
}

/// Revokes a session whose refresh token was reused, unless it is revoked already.
pub(crate) fn revoke_for_reuse(
    conn: &mut DbConn,
    id: &SessionId,
    now: i64,
) -> Result<(), StorageError> {
    diesel::update(
        sessions::table
            .find(id.to_string())
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(now),
        sessions::revoked_reason.eq(RevokeReason::RefreshTokenReused.as_str()),
    ))
    .execute(conn)?;
    revocation_feed::announce(conn, &[*id], now)
}
