//! Retention: deleting rows nobody can use any more, a batch at a time.

use diesel::prelude::*;

use crate::storage::schema::{audit_events, refresh_tokens, revoked_client_tokens, sessions};
use crate::storage::{DbConn, StorageError};

/// How many rows one pruning pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub audit_events: usize,
    pub refresh_tokens: usize,
    pub sessions: usize,
    /// Reports from the user service (remote users), kept as long as the audit trail.
    pub user_events: usize,
    /// Revocations of machine clients' tokens, kept as long as revoked sessions, counted
    /// from the token's `exp` when that is later.
    pub revoked_client_tokens: usize,
}

/// Limits for [`prune`].
pub struct PruneRequest {
    pub now: i64,
    /// Audit rows at or before this time go.
    pub audit_before: i64,
    /// Revoked sessions (and revoked client tokens) are kept this long, for the revocation
    /// index to load.
    pub revoked_keep: i64,
    pub refresh_ttl: i64,
    pub batch_size: i64,
}

/// Deletes old audit rows, expired refresh-token rows (used or not: an expired token is
/// refused by its own `exp`), sessions that can no longer be used and revocations of client
/// tokens no replica needs any more, `batch_size` rows per statement so no table is locked
/// for long.
pub fn prune(conn: &mut DbConn, r: &PruneRequest) -> Result<Pruned, StorageError> {
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
    loop {
        let ids: Vec<String> = revoked_client_tokens::table
            // Both before the horizon: see `clients::counted_from`.
            .filter(revoked_client_tokens::revoked_at.lt(r.now - r.revoked_keep))
            .filter(revoked_client_tokens::expires_at.lt(r.now - r.revoked_keep))
            .select(revoked_client_tokens::jti)
            .limit(r.batch_size)
            .load(conn)?;
        if ids.is_empty() {
            break;
        }
        pruned.revoked_client_tokens += diesel::delete(
            revoked_client_tokens::table.filter(revoked_client_tokens::jti.eq_any(&ids)),
        )
        .execute(conn)?;
    }
    loop {
        let n = crate::storage::user_events::prune(conn, r.audit_before + 1, r.batch_size)?;
        if n == 0 {
            break;
        }
        pruned.user_events += n;
    }
    Ok(pruned)
}
