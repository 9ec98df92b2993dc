//! The service's operations, independent of how they are reached (HTTP or the command line):
//! sessions and rotation ([`sessions`]), the caller's own account ([`accounts`]),
//! administration ([`admin`]), the audit trail ([`audit`]), housekeeping ([`maintenance`]),
//! and the rules they share (validation, the clock, the error type).
//!
//! Each area is its own type holding what it needs; [`Services`] builds them all from the
//! settings. Storage is reached through [`crate::storage`], keys, tokens, hashing and
//! throttles through [`crate::security`]; nothing here knows about HTTP.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod clients;
pub mod clock;
pub mod directory;
mod error;
pub(crate) mod limits;
pub mod maintenance;
pub mod sessions;
pub mod validation;

use std::sync::Arc;

pub use accounts::Accounts;
pub use admin::Admin;
pub use clients::Clients;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::Error;
pub use maintenance::Maintenance;
pub use sessions::Sessions;

use crate::config::{DatabaseUrl, Settings};
use crate::metrics::Metrics;
use crate::model::{ClientInfo, SessionId};
use crate::security::keys::Keys;
use crate::security::passwords::Passwords;
use crate::security::revocation::{RevokedSessions, RevokedTokens};
use crate::security::tokens::Tokens;
use crate::security::verify_cache::VerifiedTokens;
use crate::storage::Database;
use crate::storage::users::UserRecord;
use limits::{Limiter, Limits};

/// Every operation of the service, built once at start-up.
pub struct Services {
    pub sessions: Sessions,
    pub clients: Clients,
    pub accounts: Accounts,
    pub admin: Admin,
    pub maintenance: Maintenance,
}

impl Services {
    pub fn new(
        settings: &Settings,
        db: Database,
        keys: Keys,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Result<Services, Error> {
        let mut ctx = Context::new(settings, db, clock, metrics);
        ctx.users = directory::Directory::from_settings(settings)?;
        let passwords = Passwords::new(&settings.password)?;
        // One instance (SQLite) counts in memory; replicas on PostgreSQL count together in
        // the database.
        let shared = matches!(settings.database_url(), DatabaseUrl::Postgres(_));
        let limiter = |limits: Limits| {
            Arc::new(if shared {
                Limiter::shared(ctx.db.clone(), ctx.clock.clone(), limits)
            } else {
                Limiter::local(ctx.clock.clone(), limits)
            })
        };
        let login_throttle = limiter(Limits {
            scope: "login",
            window: settings.login.failure_window.as_secs_i64(),
            per_account: settings.login.max_failures,
            per_address: settings.login.max_failures_per_ip,
            max_wait: settings.login.max_wait.get(),
        });
        let register_throttle = (settings.register.max_per_ip > 0).then(|| {
            limiter(Limits {
                scope: "register",
                window: settings.register.window.as_secs_i64(),
                per_account: u32::MAX,
                per_address: settings.register.max_per_ip,
                max_wait: settings.login.max_wait.get(),
            })
        });
        let client_secrets = keys.client_secrets.clone();
        let tokens = Arc::new(Tokens::new(keys, &settings.tokens));
        Ok(Services {
            clients: Clients::new(ctx.clone(), client_secrets, tokens.clone()),
            sessions: Sessions::new(
                ctx.clone(),
                passwords.clone(),
                tokens,
                login_throttle.clone(),
                VerifiedTokens::new(
                    settings.verify.cache_size,
                    settings.tokens.leeway.as_secs_i64(),
                ),
            ),
            accounts: Accounts::new(
                ctx.clone(),
                passwords.clone(),
                login_throttle.clone(),
                register_throttle.clone(),
            ),
            admin: Admin::new(ctx.clone()),
            maintenance: Maintenance::new(
                ctx,
                settings,
                passwords,
                login_throttle,
                register_throttle,
            ),
        })
    }
}

impl Services {
    /// The user service, when users are remote (`users.source = "remote"`).
    pub fn remote_users(&self) -> Option<&crate::storage::user_service::UserService> {
        self.admin.directory().remote()
    }

    /// Revokes `token` (RFC 7009), whatever its kind: a machine client's access token by
    /// itself, for that client only (`caller`, authenticated); a user's refresh or access
    /// token ends its session. Anything else, an unknown or forged token included, is no
    /// error.
    pub async fn revoke_token(
        &self,
        token: &str,
        caller: Option<&clients::Client>,
        info: ClientInfo,
    ) -> Result<(), Error> {
        if !self
            .clients
            .revoke_token(token, caller, info.clone())
            .await?
        {
            self.sessions.revoke_token(token, info).await?;
        }
        Ok(())
    }

    /// Whether `token` is active (RFC 7662), whatever its kind: a user's access or refresh
    /// token, or a machine client's access token.
    pub async fn introspect(
        &self,
        token: &str,
        hint: Option<&str>,
    ) -> Result<sessions::Introspection, Error> {
        match self.sessions.introspect(token, hint).await? {
            sessions::Introspection::Inactive => {
                Ok(match self.clients.check_token(token).await? {
                    Some(claims) => sessions::Introspection::Client(claims),
                    None => sessions::Introspection::Inactive,
                })
            }
            found => Ok(found),
        }
    }
}

/// What every area shares: the database, the clock, the revocation index and the lifetimes.
#[derive(Clone)]
pub(crate) struct Context {
    pub db: Database,
    pub clock: SharedClock,
    pub revoked: Arc<RevokedSessions>,
    /// Machine clients' tokens revoked one by one (by `jti`).
    pub revoked_tokens: Arc<RevokedTokens>,
    pub lifetimes: Lifetimes,
    pub metrics: Arc<Metrics>,
    /// Whether audit events also go to the broker's outbox.
    pub outbox: audit::Outbox,
    /// Where users live (`users.source`).
    pub users: directory::Directory,
}

/// Session and token lifetimes from `tokens.*`, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    pub refresh_ttl: i64,
    pub session_ttl: Option<i64>,
    pub reuse_grace: i64,
}

impl Context {
    pub fn new(
        settings: &Settings,
        db: Database,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Context {
        let t = &settings.tokens;
        Context {
            db,
            clock,
            metrics,
            revoked: Arc::new(RevokedSessions::new(revocation_horizon(settings))),
            revoked_tokens: Arc::new(RevokedTokens::new(revocation_horizon(settings))),
            outbox: audit::Outbox::for_settings(settings),
            users: directory::Directory::Local,
            lifetimes: Lifetimes {
                refresh_ttl: t.refresh_ttl.as_secs_i64(),
                session_ttl: t.session_ttl.map(|s| s.as_secs_i64()),
                reuse_grace: t.reuse_grace.as_secs_i64(),
            },
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Tells the revocation index (and so `/verify`) that these sessions ended at `at`.
    pub fn record_revocations<'a>(
        &self,
        sessions: impl IntoIterator<Item = &'a SessionId>,
        at: i64,
    ) {
        for sid in sessions {
            self.revoked.record(*sid, at);
        }
    }
}

/// The domain's answer when a throttle refuses an attempt.
pub(crate) fn refused(r: crate::security::throttle::Refused) -> Error {
    use crate::security::throttle::Refused;
    match r {
        Refused::TooMany { retry_after } => Error::TooManyAttempts { retry_after },
        Refused::Busy => Error::Overloaded,
    }
}

/// How long after a revocation an access token of that session may still be presented: the
/// revocation index keeps entries this long, and pruning keeps revoked sessions this long.
pub fn revocation_horizon(settings: &Settings) -> i64 {
    settings.tokens.access_ttl.as_secs_i64() + settings.tokens.leeway.as_secs_i64() + 1
}

/// A user account as the operations hand it out (no password hash).
pub use crate::model::User;

impl From<UserRecord> for User {
    fn from(u: UserRecord) -> Self {
        User {
            id: u.id,
            username: u.username,
            email: u.email,
            roles: u.roles,
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}
