//! The `event_outbox` table (auth events waiting for the broker, written in the transaction
//! of the change they describe) and the `event_relay_lease` row (which replica relays them).

use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::model::UserId;
use crate::storage::schema::{event_outbox, event_relay_lease};
use crate::storage::{DbConn, StorageError};

/// An event about to be queued; `subject` is the part below `events.subject_prefix`.
#[derive(Insertable)]
#[diesel(table_name = event_outbox)]
pub struct NewOutboxRow<'a> {
    pub event_id: String,
    pub subject: &'a str,
    pub payload: &'a str,
    pub created_at: i64,
}

/// A queued event, as the relay reads it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = event_outbox)]
pub struct OutboxRow {
    pub seq: i64,
    pub event_id: String,
    pub subject: String,
    pub payload: String,
    pub created_at: i64,
}

/// On PostgreSQL, waits for (and holds until the transaction ends) the lock that orders one
/// user's events: the next transaction queueing an event for this user takes its `seq` only
/// after this one committed, so for one user `seq` order is commit order. SQLite has one
/// writer at a time, so nothing is needed there. Call inside the transaction, before
/// [`insert`].
pub fn lock_user(conn: &mut DbConn, user_id: &UserId) -> Result<(), StorageError> {
    if let DbConn::Pg(c) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind::<Text, _>(format!("auth-events:{user_id}"))
            .execute(c)?;
    }
    Ok(())
}

pub fn insert(conn: &mut DbConn, row: &NewOutboxRow<'_>) -> Result<(), StorageError> {
    diesel::insert_into(event_outbox::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// The oldest `limit` queued events, in `seq` order.
pub fn oldest(conn: &mut DbConn, limit: u32) -> Result<Vec<OutboxRow>, StorageError> {
    Ok(event_outbox::table
        .select(OutboxRow::as_select())
        .order(event_outbox::seq.asc())
        .limit(i64::from(limit))
        .load(conn)?)
}

/// Deletes exactly these rows (the events the broker acknowledged). Never a range: on
/// PostgreSQL a lower `seq` may commit after a higher one was read.
pub fn delete(conn: &mut DbConn, seqs: &[i64]) -> Result<usize, StorageError> {
    if seqs.is_empty() {
        return Ok(0);
    }
    Ok(diesel::delete(event_outbox::table.filter(event_outbox::seq.eq_any(seqs))).execute(conn)?)
}

/// How many events wait.
pub fn depth(conn: &mut DbConn) -> Result<i64, StorageError> {
    Ok(event_outbox::table.count().get_result(conn)?)
}

/// Takes or renews the relay lease for `holder` until `until` (Unix seconds), if it is free,
/// expired (`expires_at <= now`) or already `holder`'s. Returns whether `holder` has it.
pub fn take_lease(
    conn: &mut DbConn,
    holder: &str,
    now: i64,
    until: i64,
) -> Result<bool, StorageError> {
    let taken = diesel::update(
        event_relay_lease::table
            .filter(event_relay_lease::id.eq(1))
            .filter(
                event_relay_lease::holder
                    .eq(holder)
                    .or(event_relay_lease::holder.is_null())
                    .or(event_relay_lease::expires_at.le(now)),
            ),
    )
    .set((
        event_relay_lease::holder.eq(holder),
        event_relay_lease::expires_at.eq(until),
    ))
    .execute(conn)?;
    Ok(taken == 1)
}

/// Gives the lease up (on shutdown), so another replica can take it at once.
pub fn release_lease(conn: &mut DbConn, holder: &str) -> Result<(), StorageError> {
    diesel::update(
        event_relay_lease::table
            .filter(event_relay_lease::id.eq(1))
            .filter(event_relay_lease::holder.eq(holder)),
    )
    .set((
        event_relay_lease::holder.eq(None::<String>),
        event_relay_lease::expires_at.eq(0),
    ))
    .execute(conn)?;
    Ok(())
}
