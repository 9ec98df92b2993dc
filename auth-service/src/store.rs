//! Rows and queries: users, sessions (refresh-token families) and refresh tokens.
//!
//! Every function takes a connection and runs synchronously; callers run them through
//! [`crate::db::Database::run`]. Nothing here knows about HTTP.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::db::DbConn;
use crate::error::Error;
use crate::schema::{refresh_tokens, sessions, users};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
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
    RefreshTokenReused,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::RefreshTokenReused => "refresh_token_reused",
        }
    }
}

pub fn insert_user(conn: &mut DbConn, user: &UserRow) -> Result<(), Error> {
    match diesel::insert_into(users::table).values(user).execute(conn) {
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
            && r.now - used_at <= r.reuse_grace
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
