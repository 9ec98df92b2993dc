//! The `user_events` table: what the user service reported (remote users), once per event
//! id, and the per-user lock that orders those reports against logins.

use diesel::prelude::*;

use crate::model::UserId;
use crate::storage::schema::user_events;
use crate::storage::{DbConn, StorageError};

#[derive(Insertable)]
#[diesel(table_name = user_events)]
struct NewRow<'a> {
    event_id: &'a str,
    user_id: String,
    kind: &'a str,
    received_at: i64,
}

/// Stores a report; `false` if this event id was stored before (a repeat).
pub fn insert(
    conn: &mut DbConn,
    event_id: &str,
    user_id: &UserId,
    kind: &str,
    received_at: i64,
) -> Result<bool, StorageError> {
    conn.insert_unless_taken(|conn| {
        diesel::insert_into(user_events::table)
            .values(NewRow {
                event_id,
                user_id: user_id.to_string(),
                kind,
                received_at,
            })
            .execute(conn)?;
        Ok(())
    })
}

/// The position of the latest report about anyone (0 before the first): noted before the
/// user service checks a login's credentials.
pub fn watermark(conn: &mut DbConn) -> Result<i64, StorageError> {
    Ok(user_events::table
        .select(diesel::dsl::max(user_events::seq))
        .first::<Option<i64>>(conn)?
        .unwrap_or(0))
}

/// The kinds of the reports about this user stored after `watermark`.
pub fn kinds_after(
    conn: &mut DbConn,
    user_id: &UserId,
    watermark: i64,
) -> Result<Vec<String>, StorageError> {
    Ok(user_events::table
        .filter(user_events::user_id.eq(user_id.to_string()))
        .filter(user_events::seq.gt(watermark))
        .select(user_events::kind)
        .load(conn)?)
}

/// Orders a report about a user against sessions being opened for them, until the
/// transaction ends: reports take it exclusively, logins shared (PostgreSQL advisory
/// locks; SQLite's `BEGIN IMMEDIATE` already serialises writers).
pub fn lock_user(conn: &mut DbConn, user_id: &UserId, exclusive: bool) -> Result<(), StorageError> {
    if let DbConn::Pg(c) = conn {
        let function = if exclusive {
            "pg_advisory_xact_lock"
        } else {
            "pg_advisory_xact_lock_shared"
        };
        diesel::sql_query(format!(
            "SELECT {function}(hashtext('auth-user:' || $1)::bigint)"
        ))
        .bind::<diesel::sql_types::Text, _>(user_id.to_string())
        .execute(c)?;
    }
    Ok(())
}

/// Forgets reports received before `before` (they only need to outlive the logins and
/// redeliveries in flight when they came); at most `limit` rows.
pub fn prune(conn: &mut DbConn, before: i64, limit: i64) -> Result<usize, StorageError> {
    let old: Vec<i64> = user_events::table
        .filter(user_events::received_at.lt(before))
        .select(user_events::seq)
        .limit(limit)
        .load(conn)?;
    if old.is_empty() {
        return Ok(0);
    }
    Ok(diesel::delete(user_events::table.filter(user_events::seq.eq_any(old))).execute(conn)?)
}
