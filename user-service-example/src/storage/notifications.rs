//! The `notifications` outbox: rows written in the transaction of the change they report,
//! read in `seq` order by the sender, deleted one by one once the auth service took them.

use diesel::prelude::*;

use crate::error::Error;
use crate::model::{Notification, NotificationKind, UserId};
use crate::storage::schema::notifications;
use crate::storage::{DbConn, db_error};

/// Notes a notification; call inside the change's write transaction.
pub fn record(
    conn: &mut DbConn,
    kind: NotificationKind,
    user_id: UserId,
    role: Option<&str>,
    at: i64,
) -> Result<(), Error> {
    diesel::insert_into(notifications::table)
        .values((
            notifications::id.eq(uuid::Uuid::new_v4().to_string()),
            notifications::kind.eq(kind.as_str()),
            notifications::user_id.eq(user_id.to_string()),
            notifications::role.eq(role),
            notifications::at.eq(at),
        ))
        .execute(conn)
        .map_err(db_error)?;
    Ok(())
}

/// The oldest `limit` pending notifications, oldest first.
pub fn pending(conn: &mut DbConn, limit: i64) -> Result<Vec<Notification>, Error> {
    notifications::table
        .select((
            notifications::seq,
            notifications::id,
            notifications::kind,
            notifications::user_id,
            notifications::role,
            notifications::at,
        ))
        .order(notifications::seq.asc())
        .limit(limit)
        .load::<(i64, String, String, String, Option<String>, i64)>(conn)
        .map_err(db_error)
        .map(|rows| {
            rows.into_iter()
                .map(|(seq, id, kind, user_id, role, at)| Notification {
                    seq,
                    id,
                    kind,
                    user_id,
                    role,
                    at,
                })
                .collect()
        })
}

/// Removes exactly the delivered row (never `seq <= x`: on PostgreSQL a lower seq can
/// commit later).
pub fn delete(conn: &mut DbConn, seq: i64) -> Result<(), Error> {
    diesel::delete(notifications::table.find(seq))
        .execute(conn)
        .map_err(db_error)?;
    Ok(())
}

/// How many are waiting.
pub fn depth(conn: &mut DbConn) -> Result<i64, Error> {
    notifications::table
        .count()
        .get_result(conn)
        .map_err(db_error)
}
