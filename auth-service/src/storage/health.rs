//! The `service_health` table: one row that readiness checks rewrite, so "ready" means the
//! database takes writes (a full disk or a read-only database fails it), not only reads.
//!
//! A one-row update can still fit where a request's writes no longer do (SQLite appends
//! every change to its WAL file, a page at a time), so the probe also writes and deletes a
//! row with more ballast than any request writes: if the probe succeeds, so would they.

use diesel::prelude::*;

use crate::storage::schema::service_health;
use crate::storage::{DbConn, StorageError};

/// Bytes of ballast: more than the rows, index entries and audit event of any request.
const BALLAST_BYTES: usize = 64 * 1024;

/// Writes and commits the readiness row, and a ballast row that it deletes again.
pub fn probe_write(conn: &mut DbConn, now: i64) -> Result<(), StorageError> {
    conn.write_transaction(|conn| {
        let n = diesel::update(service_health::table.find(1))
            .set(service_health::checked_at.eq(now))
            .execute(conn)?;
        if n != 1 {
            return Err(StorageError::Corrupt("service_health has no row 1".into()));
        }
        diesel::insert_into(service_health::table)
            .values((
                service_health::id.eq(2),
                service_health::checked_at.eq(now),
                service_health::ballast.eq(Some(vec![0x5au8; BALLAST_BYTES])),
            ))
            .execute(conn)?;
        diesel::delete(service_health::table.find(2)).execute(conn)?;
        Ok(())
    })
}
