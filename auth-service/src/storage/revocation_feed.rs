//! The revocation feed between replicas (PostgreSQL only): every revocation (of a session,
//! or of a machine client's token) is announced on a LISTEN/NOTIFY channel inside the
//! transaction that makes it (so it goes out exactly when, and only if, it commits), and each
//! replica listens on a connection of its own. SQLite serves one instance, which needs no
//! feed.

use std::str::FromStr;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::ManageConnection;
use diesel::sql_types::Text;

use crate::config::{DatabaseUrl, Settings};
use crate::model::{SessionId, TokenId};
use crate::storage::connection::ConnectionManager;
use crate::storage::{DbConn, StorageError};

pub const CHANNEL: &str = "auth_session_revoked";
/// Machine clients' access tokens revoked one by one (they have no session), by `jti`.
pub const CLIENT_TOKEN_CHANNEL: &str = "auth_client_token_revoked";
/// NOTIFY payloads must stay under 8000 bytes: a few dozen ids per message.
const IDS_PER_MESSAGE: usize = 100;

/// Announces that `sessions` were revoked at `at`, in the caller's transaction.
pub fn announce(conn: &mut DbConn, sessions: &[SessionId], at: i64) -> Result<(), StorageError> {
    send(conn, CHANNEL, sessions, at)
}

/// Announces that the client tokens `jtis` were revoked, in the caller's transaction; `at` is
/// the time each one's horizon counts from (`storage::clients::counted_from`).
pub fn announce_client_tokens(
    conn: &mut DbConn,
    jtis: &[TokenId],
    at: i64,
) -> Result<(), StorageError> {
    send(conn, CLIENT_TOKEN_CHANNEL, jtis, at)
}

fn send<T: std::fmt::Display>(
    conn: &mut DbConn,
    channel: &str,
    ids: &[T],
    at: i64,
) -> Result<(), StorageError> {
    let DbConn::Pg(pg) = conn else {
        return Ok(());
    };
    let sent_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for chunk in ids.chunks(IDS_PER_MESSAGE) {
        let ids: Vec<String> = chunk.iter().map(|s| s.to_string()).collect();
        let payload = format!("{at} {sent_ms} {}", ids.join(","));
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(channel)
            .bind::<Text, _>(payload)
            .execute(pg)?;
    }
    Ok(())
}

/// Reads a message: `<revoked_at> <sent_unix_ms> <id>,<id>,…` into (id, revoked at, sent at
/// in milliseconds). Anything else is ignored.
pub fn parse<T: FromStr>(payload: &str) -> Vec<(T, i64, i64)> {
    let mut parts = payload.splitn(3, ' ');
    let (Some(at), Some(sent), Some(ids)) = (parts.next(), parts.next(), parts.next()) else {
        return Vec::new();
    };
    let (Ok(at), Ok(sent)) = (at.parse::<i64>(), sent.parse::<i64>()) else {
        return Vec::new();
    };
    ids.split(',')
        .filter_map(|id| id.parse::<T>().ok())
        .map(|id| (id, at, sent))
        .collect()
}

/// What the feed announced since the last look: (id, revoked at, sent at in milliseconds).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Announced {
    pub sessions: Vec<(SessionId, i64, i64)>,
    pub client_tokens: Vec<(TokenId, i64, i64)>,
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
        conn.batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {CLIENT_TOKEN_CHANNEL}"))?;
        Ok(Some(Listener { conn }))
    }

    /// The revocations announced since the last call, without waiting.
    pub fn poll(&mut self) -> Result<Announced, StorageError> {
        let mut announced = Announced::default();
        for notification in self.conn.notifications_iter() {
            let notification = notification?;
            match notification.channel.as_str() {
                CHANNEL => announced.sessions.extend(parse(&notification.payload)),
                CLIENT_TOKEN_CHANNEL => {
                    announced.client_tokens.extend(parse(&notification.payload))
                }
                _ => {}
            }
        }
        Ok(announced)
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
            assert!(parse::<SessionId>(junk).is_empty(), "{junk}");
        }
        let jti = TokenId::random();
        assert_eq!(
            parse(&format!("1700 1700123 {jti},junk")),
            vec![(jti, 1700, 1700123)]
        );
    }
}
