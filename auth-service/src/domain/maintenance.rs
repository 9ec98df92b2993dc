//! Housekeeping: keeping the revocation index in step with the database, forgetting what
//! no longer matters, retention, readiness, and the operator's commands that work on the
//! database directly (creating users, changing roles, pruning) without a running server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::SecretString;

use crate::config::Settings;
use crate::domain::accounts::{store_new_user, validate_registration};
use crate::domain::audit::Outbox;
use crate::domain::limits::Limiter;
use crate::domain::{Context, Error, User};
use crate::model::{ClientInfo, Role, Roles, SessionId, TokenId, UserId};
use crate::security::passwords::Passwords;
use crate::storage::clients as client_table;
use crate::storage::prune::{self, PruneRequest, Pruned};
use crate::storage::revocation_feed::Listener;
use crate::storage::sessions as session_table;
use crate::storage::users::{self, NewUser};
use crate::storage::{DbConn, StorageError, health};

/// The wall clock in milliseconds (the feed's timestamps are the sending replica's).
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The limits of one pruning pass under `settings`, at time `now`.
pub fn prune_request(settings: &Settings, now: i64) -> PruneRequest {
    PruneRequest {
        now,
        audit_before: now - settings.retention.audit_max_age.as_secs_i64(),
        revoked_keep: crate::domain::revocation_horizon(settings),
        refresh_ttl: settings.tokens.refresh_ttl.as_secs_i64(),
        batch_size: i64::from(settings.retention.batch_size),
    }
}

/// One pruning pass over `conn` (the command line's `prune`).
pub fn prune_now(conn: &mut DbConn, settings: &Settings, now: i64) -> Result<Pruned, Error> {
    Ok(prune::prune(conn, &prune_request(settings, now))?)
}

/// What the command line's `user create` was given.
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub password: &'a SecretString,
    pub extra_roles: &'a [String],
}

/// Creates a user over `conn` (the command line's `user create`), with `extra_roles` besides
/// `user`. The same rules and audit trail as registration; the hash is computed right here.
pub fn create_user(
    conn: &mut DbConn,
    passwords: &Passwords,
    account: &NewAccount<'_>,
    now: i64,
    outbox: Outbox,
) -> Result<User, Error> {
    let NewAccount {
        username,
        email,
        password,
        extra_roles,
    } = *account;
    let email = validate_registration(username, password, email)?;
    let mut roles = Roles::parse(extra_roles)?;
    roles.insert(Role::user())?;
    let hash = passwords.hash_here(password)?;
    let id = UserId::random();
    let new = NewUser {
        id,
        username,
        email: email.as_deref(),
        password_hash: &hash,
        roles: &roles,
        now,
    };
    store_new_user(
        conn,
        &new,
        &ClientInfo::default(),
        Some("command_line"),
        &roles,
        outbox,
    )?;
    let user = users::find(conn, &id)?.ok_or(Error::NotFound)?;
    log::info!("user created from the command line: user_id={id}");
    Ok(User::from(user))
}

/// Revoked sessions, each with the time of its revocation, and revoked client tokens, each
/// with the time its horizon counts from (`storage::clients::counted_from`).
type Revocations = (Vec<(SessionId, i64)>, Vec<(TokenId, i64)>);

/// Every revocation made at or after `since`.
fn revoked_since(conn: &mut DbConn, since: i64) -> Result<Revocations, StorageError> {
    Ok((
        session_table::revoked_since(conn, since)?,
        client_table::revoked_tokens_since(conn, since)?,
    ))
}

pub struct Maintenance {
    ctx: Context,
    settings: Settings,
    passwords: Passwords,
    login_throttle: Arc<Limiter>,
    register_throttle: Option<Arc<Limiter>>,
}

impl Maintenance {
    pub(crate) fn new(
        ctx: Context,
        settings: &Settings,
        passwords: Passwords,
        login_throttle: Arc<Limiter>,
        register_throttle: Option<Arc<Limiter>>,
    ) -> Maintenance {
        Maintenance {
            ctx,
            settings: settings.clone(),
            passwords,
            login_throttle,
            register_throttle,
        }
    }

    /// Brings the revocation indexes up to date with the database: at start-up, and
    /// periodically to pick up revocations made by other instances or the command line.
    /// Returns how many revocations the database listed.
    pub async fn sync_revocations(&self) -> Result<usize, Error> {
        let since = self.ctx.now() - self.ctx.revoked.horizon();
        let found = self
            .ctx
            .db
            .run(move |conn| revoked_since(conn, since))
            .await?;
        Ok(self.apply(found))
    }

    /// Follows the revocation feed of other replicas (PostgreSQL) until `stop` is set:
    /// applies each announced revocation to this replica's index as it arrives (checked
    /// every 50 ms), reconnects with a growing pause when the connection is lost, and
    /// after every (re)connect catches up from the database on what it may have missed.
    /// The periodic [`Maintenance::sync_revocations`] stays as a further fallback. Returns
    /// at once on SQLite (one instance, no feed). Blocking: run it on a thread of its own.
    pub fn follow_revocations(&self, stop: &AtomicBool) {
        let mut pause = Duration::from_millis(100);
        while !stop.load(Ordering::Relaxed) {
            match Listener::connect(&self.settings) {
                Ok(None) => return,
                Ok(Some(mut listener)) => {
                    pause = Duration::from_millis(100);
                    if let Err(e) = self.catch_up() {
                        log::warn!("revocation feed: catching up failed: {e}");
                    }
                    while !stop.load(Ordering::Relaxed) {
                        match listener.poll() {
                            Ok(announced) => {
                                let now_ms = unix_millis();
                                let lag = |sent_ms: i64| (now_ms - sent_ms).max(0) as f64 / 1000.0;
                                let lags = &self.ctx.metrics.revocation_feed_lag;
                                for (sid, at, sent_ms) in announced.sessions {
                                    self.ctx.record_revocations([&sid], at);
                                    lags.observe(lag(sent_ms));
                                }
                                for (jti, at, sent_ms) in announced.client_tokens {
                                    self.ctx.revoked_tokens.record(jti, at);
                                    lags.observe(lag(sent_ms));
                                }
                            }
                            Err(e) => {
                                log::warn!("revocation feed: connection lost: {e}");
                                break;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Err(e) => log::warn!("revocation feed: cannot listen: {e}"),
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Current state for the metrics: name and value.
    pub fn gauges(&self, sessions: &crate::domain::Sessions) -> Vec<(&'static str, i64)> {
        let pool = self.ctx.db.pool_state();
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let c = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        vec![
            ("db_pool_connections", i64::from(pool.connections)),
            ("db_pool_idle", i64::from(pool.idle)),
            (
                "db_pool_in_use",
                i64::from(pool.connections.saturating_sub(pool.idle)),
            ),
            ("db_connection_errors", c(pool.connection_errors)),
            ("db_timeouts", c(pool.timeouts)),
            ("hash_queue_depth", n(self.passwords.queue_depth())),
            (
                "revocation_index_size",
                n(self.ctx.revoked.len() + self.ctx.revoked_tokens.len()),
            ),
            ("verify_cache_entries", n(sessions.verified_cached())),
        ]
    }

    /// [`Maintenance::sync_revocations`] for a blocking thread.
    fn catch_up(&self) -> Result<usize, Error> {
        let since = self.ctx.now() - self.ctx.revoked.horizon();
        let found = self
            .ctx
            .db
            .run_blocking(move |conn| revoked_since(conn, since))?;
        Ok(self.apply(found))
    }

    /// Records revocations read from the database in the indexes; returns how many.
    fn apply(&self, (sessions, client_tokens): Revocations) -> usize {
        for (sid, at) in &sessions {
            self.ctx.record_revocations([sid], *at);
        }
        for (jti, at) in &client_tokens {
            self.ctx.revoked_tokens.record(*jti, *at);
        }
        sessions.len() + client_tokens.len()
    }

    /// Forgets revocations and throttle windows that no longer matter; returns how many
    /// revocations the index still holds.
    pub async fn forget_expired(&self) -> Result<usize, Error> {
        let now = self.ctx.now();
        self.login_throttle.prune(now).await?;
        if let Some(t) = &self.register_throttle {
            t.prune(now).await?;
        }
        Ok(self.ctx.revoked.prune(now) + self.ctx.revoked_tokens.prune(now))
    }

    /// Deletes old audit rows, expired refresh tokens and dead sessions.
    pub async fn prune(&self) -> Result<Pruned, Error> {
        let request = prune_request(&self.settings, self.ctx.now());
        Ok(self
            .ctx
            .db
            .write(move |conn| prune::prune(conn, &request))
            .await?)
    }

    /// Whether the database takes a write now (a full disk or a read-only database is not
    /// ready). Any failure counts as "not ready" (503), whatever its cause.
    pub async fn ready(&self) -> Result<(), Error> {
        let now = self.ctx.now();
        self.ctx
            .db
            .write(move |conn| health::probe_write(conn, now))
            .await
            .map_err(Error::Unavailable)
    }
}
