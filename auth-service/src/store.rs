//! Rows and queries: users, sessions (refresh-token families) and refresh tokens.
//!
//! Every function takes a connection and runs synchronously; callers run them through
//! [`crate::db::Database::run`]. Nothing here knows about HTTP.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::db::DbConn;
use crate::error::Error;
use crate::schema::{refresh_tokens, sessions, users};

/// `Debug` is written by hand so that the password hash never reaches a log line.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub username_key: String,
    pub email: Option<String>,
    pub password_hash: String,
    pub roles: String,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

impl UserRow {
    pub fn role_list(&self) -> Vec<String> {
        split_roles(&self.roles)
    }
}

pub fn split_roles(roles: &str) -> Vec<String> {
    roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshTokenRow {
    pub jti: String,
    pub session_id: String,
    pub parent_jti: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
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

pub const ADMIN_ROLE: &str = "admin";

/// The canonical stored form of a role set: sorted, without duplicates, comma-joined.
pub fn join_roles(roles: &[String]) -> String {
    let mut roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    roles.sort_unstable();
    roles.dedup();
    roles.join(",")
}

impl UserRow {
    pub fn is_admin(&self) -> bool {
        !self.disabled && self.role_list().iter().any(|r| r == ADMIN_ROLE)
    }
}

/// Serialises changes that can affect who is an administrator, so two of them can never
/// both pass the last-admin check. SQLite's `BEGIN IMMEDIATE` already serialises writers.
pub fn lock_admin_changes(conn: &mut DbConn) -> Result<(), Error> {
    if let DbConn::Pg(c) = conn {
        diesel::sql_query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE").execute(c)?;
    }
    Ok(())
}

/// Refuses a change that would leave no enabled administrator.
fn ensure_another_admin(conn: &mut DbConn, except: &str) -> Result<(), Error> {
    let candidates: Vec<UserRow> = users::table
        .filter(users::roles.like("%admin%"))
        .filter(users::disabled.eq(false))
        .filter(users::id.ne(except))
        .select(UserRow::as_select())
        .load(conn)?;
    if candidates.iter().any(UserRow::is_admin) {
        Ok(())
    } else {
        Err(Error::LastAdmin)
    }
}

/// Replaces a user's roles. Returns the user before and after.
pub fn set_roles(
    conn: &mut DbConn,
    user_id: &str,
    roles: &[String],
    now: i64,
) -> Result<(UserRow, UserRow), Error> {
    conn.write_transaction(|conn| {
        lock_admin_changes(conn)?;
        let before = find_user(conn, user_id)?.ok_or(Error::NotFound)?;
        let mut after = before.clone();
        after.roles = join_roles(roles);
        after.updated_at = now;
        if before.is_admin() && !after.is_admin() {
            ensure_another_admin(conn, user_id)?;
        }
        diesel::update(users::table.find(user_id))
            .set((users::roles.eq(&after.roles), users::updated_at.eq(now)))
            .execute(conn)?;
        Ok((before, after))
    })
}

/// Disables or enables a user. Returns the user before and after.
pub fn set_disabled(
    conn: &mut DbConn,
    user_id: &str,
    disabled: bool,
    now: i64,
) -> Result<(UserRow, UserRow), Error> {
    conn.write_transaction(|conn| {
        lock_admin_changes(conn)?;
        let before = find_user(conn, user_id)?.ok_or(Error::NotFound)?;
        let mut after = before.clone();
        after.disabled = disabled;
        after.updated_at = now;
        if before.is_admin() && !after.is_admin() {
            ensure_another_admin(conn, user_id)?;
        }
        diesel::update(users::table.find(user_id))
            .set((users::disabled.eq(disabled), users::updated_at.eq(now)))
            .execute(conn)?;
        Ok((before, after))
    })
}

/// Revokes every live session of a user, except `keep` if given. Returns the ids revoked.
pub fn revoke_user_sessions(
    conn: &mut DbConn,
    user_id: &str,
    reason: RevokeReason,
    keep: Option<&str>,
    now: i64,
) -> Result<Vec<String>, Error> {
    conn.write_transaction(|conn| {
        let ids: Vec<String> = sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::id.ne(keep.unwrap_or("")))
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
        Ok(ids)
    })
}

/// Revokes one session, only if it belongs to `user_id` and is still live.
pub fn revoke_own_session(
    conn: &mut DbConn,
    user_id: &str,
    sid: &str,
    reason: RevokeReason,
    now: i64,
) -> Result<bool, Error> {
    let n = diesel::update(
        sessions::table
            .find(sid)
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(now),
        sessions::revoked_reason.eq(reason.as_str()),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// A user's sessions that can still be refreshed.
pub fn live_sessions(
    conn: &mut DbConn,
    user_id: &str,
    now: i64,
    refresh_ttl: i64,
) -> Result<Vec<SessionRow>, Error> {
    let rows: Vec<SessionRow> = sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::last_used_at.gt(now - refresh_ttl))
        .order((sessions::created_at.desc(), sessions::id.asc()))
        .select(SessionRow::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|s| s.expires_at.is_none_or(|at| at > now))
        .collect())
}

/// One page of users in (created_at, id) order, after the given position.
pub fn list_users(
    conn: &mut DbConn,
    username_contains: Option<&str>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<UserRow>, Error> {
    let mut query = users::table.select(UserRow::as_select()).into_boxed();
    if let Some(fragment) = username_contains {
        let escaped = fragment
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query = query.filter(
            users::username_key
                .like(format!("%{escaped}%"))
                .escape('\\'),
        );
    }
    if let Some((created_at, id)) = after {
        query = query.filter(
            users::created_at
                .gt(created_at)
                .or(users::created_at.eq(created_at).and(users::id.gt(id))),
        );
    }
    Ok(query
        .order((users::created_at.asc(), users::id.asc()))
        .limit(limit)
        .load(conn)?)
}

/// How many rows one pruning pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub audit_events: usize,
    pub refresh_tokens: usize,
    pub sessions: usize,
}

/// Limits for [`prune`].
pub struct PruneRequest {
    pub now: i64,
    /// Audit rows at or before this time go.
    pub audit_before: i64,
    /// Revoked sessions are kept this long, for the revocation index to load.
    pub revoked_keep: i64,
    pub refresh_ttl: i64,
    pub batch_size: i64,
}

/// Deletes old audit rows, expired refresh-token rows (used or not: an expired token is
/// refused by its own `exp`) and sessions that can no longer be used, `batch_size` rows per
/// statement so no table is locked for long.
pub fn prune(conn: &mut DbConn, r: &PruneRequest) -> Result<Pruned, Error> {
    use crate::schema::audit_events;
    let mut pruned = Pruned::default();
    loop {
        let ids: Vec<i64> = audit_events::table
            .filter(audit_events::at.le(r.audit_before))
            .select(audit_events::id)
            .limit(r.batch_size)
            .load(conn)?;
        if ids.is_empty() {
            break;
        }
        pruned.audit_events +=
            diesel::delete(audit_events::table.filter(audit_events::id.eq_any(&ids)))
                .execute(conn)?;
    }
    loop {
        let ids: Vec<String> = refresh_tokens::table
            .filter(refresh_tokens::expires_at.lt(r.now))
            .select(refresh_tokens::jti)
            .limit(r.batch_size)
            .load(conn)?;
        if ids.is_empty() {
            break;
        }
        pruned.refresh_tokens +=
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::jti.eq_any(&ids)))
                .execute(conn)?;
    }
    loop {
        let ids: Vec<String> = sessions::table
            .filter(
                sessions::expires_at
                    .lt(r.now)
                    .or(sessions::last_used_at.lt(r.now - r.refresh_ttl))
                    .or(sessions::revoked_at.lt(r.now - r.revoked_keep)),
            )
            .select(sessions::id)
            .limit(r.batch_size)
            .load(conn)?;
        if ids.is_empty() {
            break;
        }
        // Their remaining (unexpired) refresh-token rows go with them.
        diesel::delete(refresh_tokens::table.filter(refresh_tokens::session_id.eq_any(&ids)))
            .execute(conn)?;
        pruned.sessions +=
            diesel::delete(sessions::table.filter(sessions::id.eq_any(&ids))).execute(conn)?;
    }
    Ok(pruned)
}

pub fn insert_user(conn: &mut DbConn, user: &UserRow) -> Result<(), Error> {
    // In its own (sub)transaction: after a failed statement PostgreSQL refuses further
    // queries in the same transaction until it is rolled back.
    let inserted =
        conn.write_transaction(|conn| diesel::insert_into(users::table).values(user).execute(conn));
    match inserted {
        Ok(_) => Ok(()),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            let name_taken = users::table
                .filter(users::username_key.eq(&user.username_key))
                .count()
                .get_result::<i64>(conn)?
                > 0;
            Err(if name_taken {
                Error::UsernameTaken
            } else {
                Error::EmailTaken
            })
        }
        Err(e) => Err(e.into()),
    }
}

pub fn find_user(conn: &mut DbConn, id: &str) -> Result<Option<UserRow>, Error> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

/// Finds the user a login names: an email address (contains `@`) or a username, both
/// case-insensitively.
pub fn find_user_for_login(conn: &mut DbConn, login: &str) -> Result<Option<UserRow>, Error> {
    let key = login.to_lowercase();
    let query = users::table.select(UserRow::as_select()).into_boxed();
    let query = if key.contains('@') {
        query.filter(users::email.eq(key))
    } else {
        query.filter(users::username_key.eq(key))
    };
    Ok(query.first(conn).optional()?)
}

pub fn update_password_hash(
    conn: &mut DbConn,
    user_id: &str,
    hash: &str,
    now: i64,
) -> Result<(), Error> {
    diesel::update(users::table.find(user_id))
        .set((users::password_hash.eq(hash), users::updated_at.eq(now)))
        .execute(conn)?;
    Ok(())
}

/// Opens a session and issues its first refresh token, atomically.
pub fn create_session(
    conn: &mut DbConn,
    session: &SessionRow,
    first: &RefreshTokenRow,
) -> Result<(), Error> {
    conn.write_transaction(|conn| {
        diesel::insert_into(sessions::table)
            .values(session)
            .execute(conn)?;
        diesel::insert_into(refresh_tokens::table)
            .values(first)
            .execute(conn)?;
        Ok(())
    })
}

/// Marks a session revoked. Returns the time it was revoked at (the earlier time if it was
/// already revoked), or `None` if there is no such session.
pub fn revoke_session(
    conn: &mut DbConn,
    sid: &str,
    reason: RevokeReason,
    now: i64,
) -> Result<Option<i64>, Error> {
    diesel::update(
        sessions::table
            .find(sid)
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(now),
        sessions::revoked_reason.eq(reason.as_str()),
    ))
    .execute(conn)?;
    Ok(sessions::table
        .find(sid)
        .select(sessions::revoked_at)
        .first::<Option<i64>>(conn)
        .optional()?
        .flatten())
}

/// Sessions revoked at or after `since`, with the time they were revoked.
pub fn revoked_since(conn: &mut DbConn, since: i64) -> Result<Vec<(String, i64)>, Error> {
    let rows: Vec<(String, Option<i64>)> = sessions::table
        .filter(sessions::revoked_at.ge(since))
        .select((sessions::id, sessions::revoked_at))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, at)| at.map(|at| (id, at)))
        .collect())
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// The token was unused: it is now used and `child` replaces it.
    Rotated {
        child: RefreshTokenRow,
        user: UserRow,
    },
    /// The token was rotated moments ago (within the grace interval) and its child is still
    /// unused: the same child is handed out again.
    Replayed {
        child: RefreshTokenRow,
        user: UserRow,
    },
    /// The token was used before, outside the grace interval: the session is now revoked.
    Reused { revoked_at: i64 },
}

/// Parameters of one rotation.
pub struct RotationRequest<'a> {
    pub jti: &'a str,
    pub sid: &'a str,
    pub user_id: &'a str,
    pub now: i64,
    pub refresh_ttl: i64,
    pub reuse_grace: i64,
}

/// Rotates a refresh token with reuse detection.
///
/// The first statement is a guarded `UPDATE … WHERE used_at IS NULL`, inside a transaction
/// that holds the write lock from its start (SQLite `BEGIN IMMEDIATE`) or that row's lock
/// (PostgreSQL), so of any number of concurrent requests exactly one rotates the token; the
/// others see it used, with its child already committed.
///
/// Errors roll everything back; a detected reuse commits the revocation and returns
/// [`Rotation::Reused`].
pub fn rotate_refresh_token(conn: &mut DbConn, r: &RotationRequest<'_>) -> Result<Rotation, Error> {
    conn.write_transaction(|conn| {
        let claimed = diesel::update(
            refresh_tokens::table
                .find(r.jti)
                .filter(refresh_tokens::used_at.is_null()),
        )
        .set(refresh_tokens::used_at.eq(r.now))
        .execute(conn)?;

        let token: RefreshTokenRow = refresh_tokens::table
            .find(r.jti)
            .select(RefreshTokenRow::as_select())
            .first(conn)
            .optional()?
            .ok_or(Error::InvalidToken("refresh token is unknown"))?;
        if token.session_id != r.sid {
            return Err(Error::InvalidToken("refresh token is unknown"));
        }
        let session: SessionRow = sessions::table
            .find(r.sid)
            .select(SessionRow::as_select())
            .first(conn)
            .optional()?
            .ok_or(Error::InvalidToken("refresh token is unknown"))?;
        if session.user_id != r.user_id {
            return Err(Error::InvalidToken("refresh token is unknown"));
        }
        if session.revoked_at.is_some() {
            return Err(Error::SessionRevoked);
        }
        if session.expires_at.is_some_and(|at| at <= r.now) || token.expires_at < r.now {
            return Err(Error::TokenExpired);
        }
        let user: UserRow = users::table
            .find(&session.user_id)
            .select(UserRow::as_select())
            .first(conn)
            .optional()?
            .ok_or(Error::SessionRevoked)?;
        if user.disabled {
            return Err(Error::SessionRevoked);
        }

        if claimed == 1 {
            let mut expires_at = r.now.saturating_add(r.refresh_ttl);
            if let Some(cap) = session.expires_at {
                expires_at = expires_at.min(cap);
            }
            let child = RefreshTokenRow {
                jti: uuid::Uuid::new_v4().to_string(),
                session_id: session.id.clone(),
                parent_jti: Some(token.jti.clone()),
                issued_at: r.now,
                expires_at,
                used_at: None,
            };
            diesel::insert_into(refresh_tokens::table)
                .values(&child)
                .execute(conn)?;
            diesel::update(sessions::table.find(&session.id))
                .set(sessions::last_used_at.eq(r.now))
                .execute(conn)?;
            return Ok(Rotation::Rotated { child, user });
        }

        // The token had been used already.
        let used_at = token.used_at.unwrap_or(r.now);
        let child: Option<RefreshTokenRow> = refresh_tokens::table
            .filter(refresh_tokens::parent_jti.eq(&token.jti))
            .select(RefreshTokenRow::as_select())
            .first(conn)
            .optional()?;
        if let Some(child) = child
            && child.used_at.is_none()
            // Whole seconds, strictly: a grace of N s accepts replays fewer than N clock
            // seconds after the rotation (so never longer than configured), and 0 s none.
            && r.now - used_at < r.reuse_grace
        {
            return Ok(Rotation::Replayed { child, user });
        }
        diesel::update(
            sessions::table
                .find(&session.id)
                .filter(sessions::revoked_at.is_null()),
        )
        .set((
            sessions::revoked_at.eq(r.now),
            sessions::revoked_reason.eq(RevokeReason::RefreshTokenReused.as_str()),
        ))
        .execute(conn)?;
        Ok(Rotation::Reused { revoked_at: r.now })
    })
}

/// Finds a session and its owner, for the refresh token it belongs to.
pub fn find_session(conn: &mut DbConn, sid: &str) -> Result<Option<SessionRow>, Error> {
    Ok(sessions::table
        .find(sid)
        .select(SessionRow::as_select())
        .first(conn)
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_debug_never_shows_the_hash() {
        let user = UserRow {
            id: "7".into(),
            username: "alice".into(),
            username_key: "alice".into(),
            email: None,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: "user".into(),
            disabled: false,
            created_at: 0,
            updated_at: 0,
        };
        let shown = format!("{user:?}");
        assert!(
            shown.contains("alice") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains("argon2"), "{shown}");
    }
}
