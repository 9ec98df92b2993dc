//! Login and registration limits kept in PostgreSQL, so every replica on one database counts
//! the same failures and sees the same attempts in flight. The rules are
//! `security::throttle`'s; this module only stores them. PostgreSQL only: SQLite serves one
//! instance, which keeps its limits in memory.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text};

use crate::storage::{DbConn, StorageError};

/// What an attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// It holds a place now.
    Go,
    /// Failures plus attempts in flight reach a limit: try again shortly.
    Wait,
    /// Failures reach a limit: retry after this many seconds.
    Refuse(i64),
}

/// What to record for a bucket when an attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    CountFailure,
    ClearFailures,
    Nothing,
}

#[derive(QueryableByName)]
struct Bucket {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = BigInt)]
    window_start: i64,
    #[diesel(sql_type = Integer)]
    failures: i32,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn postgres(conn: &mut DbConn) -> Result<&mut diesel::PgConnection, StorageError> {
    match conn {
        DbConn::Pg(pg) => Ok(pg),
        DbConn::Sqlite(_) => Err(StorageError::Setup(
            "shared limits are kept in PostgreSQL only".into(),
        )),
    }
}

/// Takes a place for attempt `id` in every bucket of `limits` (key, limit), or says why not.
/// Buckets are locked in key order, so concurrent attempts never deadlock.
pub fn try_start(
    conn: &mut DbConn,
    id: &str,
    limits: &[(&str, u32)],
    window: i64,
    lease_until: i64,
    now: i64,
) -> Result<Start, StorageError> {
    let mut limits: Vec<(&str, u32)> = limits.to_vec();
    limits.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let keys: Vec<String> = limits.iter().map(|(k, _)| k.to_string()).collect();
    conn.write_transaction(|conn| {
        let pg = postgres(conn)?;
        diesel::sql_query(
            "INSERT INTO throttle_buckets (key, window_start, failures)
             SELECT k, $2, 0 FROM unnest($1) AS k ON CONFLICT (key) DO NOTHING",
        )
        .bind::<Array<Text>, _>(&keys)
        .bind::<BigInt, _>(now)
        .execute(pg)?;
        let buckets: Vec<Bucket> = diesel::sql_query(
            "SELECT key, window_start, failures FROM throttle_buckets
             WHERE key = ANY($1) ORDER BY key FOR UPDATE",
        )
        .bind::<Array<Text>, _>(&keys)
        .load(pg)?;
        let mut wait = false;
        for (key, limit) in &limits {
            let Some(bucket) = buckets.iter().find(|b| b.key == *key) else {
                continue;
            };
            let mut failures = u32::try_from(bucket.failures).unwrap_or(0);
            let mut start = bucket.window_start;
            if now - start >= window {
                diesel::sql_query(
                    "UPDATE throttle_buckets SET window_start = $2, failures = 0 WHERE key = $1",
                )
                .bind::<Text, _>(*key)
                .bind::<BigInt, _>(now)
                .execute(pg)?;
                failures = 0;
                start = now;
            }
            if failures >= *limit {
                return Ok(Start::Refuse((start + window - now).max(1)));
            }
            let running: Count = diesel::sql_query(
                "SELECT count(*) AS n FROM throttle_attempts WHERE key = $1 AND lease_until > $2",
            )
            .bind::<Text, _>(*key)
            .bind::<BigInt, _>(now)
            .get_result(pg)?;
            let running = u32::try_from(running.n).unwrap_or(u32::MAX);
            if failures.saturating_add(running) >= *limit {
                wait = true;
            }
        }
        if wait {
            return Ok(Start::Wait);
        }
        diesel::sql_query(
            "INSERT INTO throttle_attempts (id, key, lease_until)
             SELECT $1, k, $3 FROM unnest($2) AS k",
        )
        .bind::<Text, _>(id)
        .bind::<Array<Text>, _>(&keys)
        .bind::<BigInt, _>(lease_until)
        .execute(pg)?;
        Ok(Start::Go)
    })
}

/// Ends attempt `id`: gives its places back and records `outcomes` (key, outcome).
pub fn end(
    conn: &mut DbConn,
    id: &str,
    outcomes: &[(&str, Outcome)],
    window: i64,
    now: i64,
) -> Result<(), StorageError> {
    // Buckets in key order, as try_start locks them: two transactions never wait on each
    // other's locks in opposite orders.
    let mut outcomes: Vec<(&str, Outcome)> = outcomes.to_vec();
    outcomes.sort_unstable_by(|a, b| a.0.cmp(b.0));
    conn.write_transaction(|conn| {
        let pg = postgres(conn)?;
        diesel::sql_query("DELETE FROM throttle_attempts WHERE id = $1")
            .bind::<Text, _>(id)
            .execute(pg)?;
        for (key, outcome) in &outcomes {
            match outcome {
                Outcome::Nothing => {}
                // A failure in an ended window starts a new one.
                Outcome::CountFailure => {
                    diesel::sql_query(
                        "UPDATE throttle_buckets SET
                            failures = CASE WHEN $2 - window_start >= $3 THEN 1 ELSE failures + 1 END,
                            window_start = CASE WHEN $2 - window_start >= $3 THEN $2 ELSE window_start END
                         WHERE key = $1",
                    )
                    .bind::<Text, _>(*key)
                    .bind::<BigInt, _>(now)
                    .bind::<BigInt, _>(window)
                    .execute(pg)?;
                }
                Outcome::ClearFailures => {
                    diesel::sql_query("UPDATE throttle_buckets SET failures = 0 WHERE key = $1")
                        .bind::<Text, _>(*key)
                        .execute(pg)?;
                }
            }
        }
        Ok(())
    })
}

/// Forgets ended windows and lapsed attempts (of replicas that died mid-attempt).
pub fn prune(conn: &mut DbConn, window: i64, now: i64) -> Result<(), StorageError> {
    let pg = postgres(conn)?;
    pg.batch_execute(&format!(
        "DELETE FROM throttle_attempts WHERE lease_until <= {now};
         DELETE FROM throttle_buckets WHERE window_start <= {}
           AND NOT EXISTS (SELECT 1 FROM throttle_attempts a WHERE a.key = throttle_buckets.key);",
        now - window
    ))?;
    Ok(())
}
