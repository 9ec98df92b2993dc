//! The `refresh_tokens` table and rotation with reuse detection. Only ids and times are
//! stored, never a token.

use diesel::prelude::*;

use crate::model::{SessionId, TokenId, UserId};
use crate::storage::schema::refresh_tokens;
use crate::storage::sessions::{self, SessionRecord};
use crate::storage::users::{self, UserRecord};
use crate::storage::{DbConn, StorageError};

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
struct RefreshTokenRow {
    jti: String,
    session_id: String,
    parent_jti: Option<String>,
    issued_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub jti: TokenId,
    pub session_id: SessionId,
    pub parent_jti: Option<TokenId>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

impl RefreshTokenRecord {
    fn from_row(row: RefreshTokenRow) -> Result<RefreshTokenRecord, StorageError> {
        let corrupt = |what: &str, raw: &str| StorageError::Corrupt(format!("{what} {raw:?}"));
        Ok(RefreshTokenRecord {
            jti: TokenId::parse(&row.jti).map_err(|_| corrupt("refresh_tokens.jti", &row.jti))?,
            session_id: SessionId::parse(&row.session_id)
                .map_err(|_| corrupt("refresh_tokens.session_id", &row.session_id))?,
            parent_jti: row
                .parent_jti
                .as_deref()
                .map(|p| TokenId::parse(p).map_err(|_| corrupt("refresh_tokens.parent_jti", p)))
                .transpose()?,
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            used_at: row.used_at,
        })
    }

    fn row(&self) -> RefreshTokenRow {
        RefreshTokenRow {
            jti: self.jti.to_string(),
            session_id: self.session_id.to_string(),
            parent_jti: self.parent_jti.map(|p| p.to_string()),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            used_at: self.used_at,
        }
    }
}

/// Stores a refresh token's row (a session's first, or a rotation's child).
pub fn insert(conn: &mut DbConn, token: &RefreshTokenRecord) -> Result<(), StorageError> {
    diesel::insert_into(refresh_tokens::table)
        .values(token.row())
        .execute(conn)?;
    Ok(())
}

fn find(conn: &mut DbConn, jti: &TokenId) -> Result<Option<RefreshTokenRecord>, StorageError> {
    refresh_tokens::table
        .find(jti.to_string())
        .select(RefreshTokenRow::as_select())
        .first(conn)
        .optional()?
        .map(RefreshTokenRecord::from_row)
        .transpose()
}

fn child_of(conn: &mut DbConn, jti: &TokenId) -> Result<Option<RefreshTokenRecord>, StorageError> {
    refresh_tokens::table
        .filter(refresh_tokens::parent_jti.eq(jti.to_string()))
        .select(RefreshTokenRow::as_select())
        .first(conn)
        .optional()?
        .map(RefreshTokenRecord::from_row)
        .transpose()
}

/// Whether a refresh token would rotate now: its row exists in that session, unused and
/// unexpired, and the session is live for that user.
pub fn is_live(
    conn: &mut DbConn,
    jti: &TokenId,
    sid: &SessionId,
    user_id: &UserId,
    now: i64,
) -> Result<bool, StorageError> {
    let Some(token) = find(conn, jti)? else {
        return Ok(false);
    };
    let Some(session) = sessions::find(conn, sid)? else {
        return Ok(false);
    };
    Ok(token.session_id == *sid
        && token.used_at.is_none()
        && token.expires_at >= now
        && session.user_id == *user_id
        && session.revoked_at.is_none()
        && session.expires_at.is_none_or(|at| at > now))
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// The token was unused: it is now used and `child` replaces it.
    Rotated {
        child: RefreshTokenRecord,
        /// The user as stored here; `None` when the request said users live elsewhere.
        user: Option<UserRecord>,
    },
    /// The token was rotated moments ago (within the grace interval) and its child is still
    /// unused: the same child is handed out again.
    Replayed {
        child: RefreshTokenRecord,
        user: Option<UserRecord>,
    },
    /// The token was used before, outside the grace interval: the session is now revoked.
    Reused { revoked_at: i64 },
    /// No such token in that session for that user. Nothing changed.
    Unknown,
    /// The session was revoked, or its user is gone or disabled. Nothing changed.
    SessionRevoked,
    /// The token or its session has expired. Nothing changed.
    Expired,
}

/// Parameters of one rotation.
pub struct RotationRequest {
    pub jti: TokenId,
    pub sid: SessionId,
    pub user_id: UserId,
    pub now: i64,
    pub refresh_ttl: i64,
    pub reuse_grace: i64,
    /// Read the user from this database's `users` table (built-in users) and refuse a
    /// disabled or missing one; `false` when a user service vouched for them just before.
    pub read_user: bool,
}

/// Ends the transaction early: with an outcome (rolled back, nothing changed) or an error.
enum Stop {
    Outcome(Box<Rotation>),
    Failed(StorageError),
}

impl From<StorageError> for Stop {
    fn from(e: StorageError) -> Self {
        Stop::Failed(e)
    }
}

/// Rotates a refresh token with reuse detection.
///
/// The first statement is a guarded `UPDATE … WHERE used_at IS NULL`, inside a transaction
/// that holds the write lock from its start (SQLite `BEGIN IMMEDIATE`) or that row's lock
/// (PostgreSQL), so of any number of concurrent requests exactly one rotates the token; the
/// others see it used, with its child already committed.
///
/// `Unknown`, `SessionRevoked` and `Expired` roll everything back; a detected reuse commits
/// the revocation and returns [`Rotation::Reused`].
pub fn rotate(conn: &mut DbConn, r: &RotationRequest) -> Result<Rotation, StorageError> {
    let outcome = conn.write_transaction(|conn| -> Result<Rotation, Stop> {
        let stop = |outcome: Rotation| Err(Stop::Outcome(Box::new(outcome)));
        let claimed = diesel::update(
            refresh_tokens::table
                .find(r.jti.to_string())
                .filter(refresh_tokens::used_at.is_null()),
        )
        .set(refresh_tokens::used_at.eq(r.now))
        .execute(conn)
        .map_err(StorageError::from)?;

        let Some(token) = find(conn, &r.jti)? else {
            return stop(Rotation::Unknown);
        };
        if token.session_id != r.sid {
            return stop(Rotation::Unknown);
        }
        let Some(session): Option<SessionRecord> = sessions::find(conn, &r.sid)? else {
            return stop(Rotation::Unknown);
        };
        if session.user_id != r.user_id {
            return stop(Rotation::Unknown);
        }
        if session.revoked_at.is_some() {
            return stop(Rotation::SessionRevoked);
        }
        if session.expires_at.is_some_and(|at| at <= r.now) || token.expires_at < r.now {
            return stop(Rotation::Expired);
        }
        let user = if r.read_user {
            match users::find(conn, &session.user_id)? {
                Some(user) if !user.disabled => Some(user),
                _ => return stop(Rotation::SessionRevoked),
            }
        } else {
            None
        };

        if claimed == 1 {
            let mut expires_at = r.now.saturating_add(r.refresh_ttl);
            if let Some(cap) = session.expires_at {
                expires_at = expires_at.min(cap);
            }
            let child = RefreshTokenRecord {
                jti: TokenId::random(),
                session_id: session.id,
                parent_jti: Some(token.jti),
                issued_at: r.now,
                expires_at,
                used_at: None,
            };
            insert(conn, &child)?;
            sessions::touch(conn, &session.id, r.now)?;
            return Ok(Rotation::Rotated { child, user });
        }

        // The token had been used already.
        let used_at = token.used_at.unwrap_or(r.now);
        if let Some(child) = child_of(conn, &token.jti)?
            && child.used_at.is_none()
            // Whole seconds, strictly: a grace of N s accepts replays fewer than N clock
            // seconds after the rotation (so never longer than configured), and 0 s none.
            && r.now - used_at < r.reuse_grace
        {
            return Ok(Rotation::Replayed { child, user });
        }
        sessions::revoke_for_reuse(conn, &session.id, r.now)?;
        Ok(Rotation::Reused { revoked_at: r.now })
    });
    match outcome {
        Ok(rotation) => Ok(rotation),
        Err(Stop::Outcome(rotation)) => Ok(*rotation),
        Err(Stop::Failed(e)) => Err(e),
    }
}
