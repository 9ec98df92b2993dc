//! The revocation feed between replicas (PostgreSQL only): every revocation is announced on
//! a LISTEN/NOTIFY channel inside the transaction that makes it (so it goes out exactly
//! when, and only if, it commits), and each replica listens on a connection of its own.
//! SQLite serves one instance, which needs no feed.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::ManageConnection;
use diesel::sql_types::Text;

use crate::config::{DatabaseUrl, Settings};
use crate::model::SessionId;
use crate::storage::connection::ConnectionManager;
use crate::storage::{DbConn, StorageError};

pub const CHANNEL: &str = "auth_session_revoked";
/// NOTIFY payloads must stay under 8000 bytes: a few dozen ids per message.
const IDS_PER_MESSAGE: usize = 100;

/// Announces that `sessions` were revoked at `at`, in the caller's transaction.
pub fn announce(conn: &mut DbConn, sessions: &[SessionId], at: i64) -> Result<(), StorageError> {
    let DbConn::Pg(pg) = conn else {
        return Ok(());
    };
    let sent_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for chunk in sessions.chunks(IDS_PER_MESSAGE) {
        let ids: Vec<String> = chunk.iter().map(|s| s.to_string()).collect();
        let payload = format!("{at} {sent_ms} {}", ids.join(","));
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(CHANNEL)
            .bind::<Text, _>(payload)
            .execute(pg)?;
    }
    Ok(())
}

/// Reads a message: `<revoked_at> <sent_unix_ms> <sid>,<sid>,…` into (session, revoked at,
/// sent at in milliseconds). Anything else is ignored.
pub fn parse(payload: &str) -> Vec<(SessionId, i64, i64)> {
    let mut parts = payload.splitn(3, ' ');
    let (Some(at), Some(sent), Some(ids)) = (parts.next(), parts.next(), parts.next()) else {
        return Vec::new();
    };
    let (Ok(at), Ok(sent)) = (at.parse::<i64>(), sent.parse::<i64>()) else {
        return Vec::new();
    };
    ids.split(',')
        .filter_map(|id| SessionId::parse(id).ok())
        .map(|sid| (sid, at, sent))
        .collect()
}

/// A listening connection.
pub struct Listener {
    conn: diesel::PgConnection,
}

impl Listener {
    /// Connects and starts listening; `None` on SQLite.
    pub fn connect(settings: &Settings) -> Result<Option<Listener>, StorageError> {
        let url = settings.database_url();
        if !matches!(url, DatabaseUrl::Postgres(_)) {
            return Ok(None);
        }
        let conn = ConnectionManager::new(settings, url)
            .connect()
            .map_err(|e| StorageError::Unavailable(Box::new(e)))?;
        let DbConn::Pg(mut conn) = conn else {
            return Ok(None);
        };
        conn.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        Ok(Some(Listener { conn }))
    }

    /// The revocations announced since the last call, without waiting: (session, revoked
    /// at, sent at in milliseconds).
    pub fn poll(&mut self) -> Result<Vec<(SessionId, i64, i64)>, StorageError> {
        let mut revoked = Vec::new();
        for notification in self.conn.notifications_iter() {
            let notification = notification?;
            if notification.channel == CHANNEL {
                revoked.extend(parse(&notification.payload));
            }
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_ignored() {
        let (a, b) = (SessionId::random(), SessionId::random());
        assert_eq!(
            parse(&format!("1700 1700123 {a},{b}")),
            vec![(a, 1700, 1700123), (b, 1700, 1700123)]
        );
        for junk in ["", "1700", "x 1 {a}", "1700 nope", "1700 1 nope"] {
            assert!(parse(junk).is_empty(), "{junk}");
        }
    }
}
