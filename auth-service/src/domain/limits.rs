//! Where the login and registration limits are counted: in this process
//! ([`security::throttle`](crate::security::throttle)) when the service is the only instance
//! (SQLite), or in PostgreSQL ([`storage::throttle`](crate::storage::throttle)) so that all
//! replicas on one database count together. The rules are the same either way: an attempt
//! starts only while failures plus attempts in flight stay under a limit, waits otherwise
//! (up to `login.max_wait`, then 503 `overloaded`), and only failures refuse (429).

use std::net::IpAddr;
use std::time::Duration;

use crate::domain::{Error, SharedClock, refused};
use crate::security::throttle::{self, LoginThrottle, account_key, address_key};
use crate::storage::Database;
use crate::storage::throttle::{self as store, Outcome, Start};

/// How long a shared attempt holds its place if its replica dies before ending it.
const LEASE_SECS: i64 = 60;
/// Pause between looks while a shared attempt waits for a place.
const WAIT_STEP: Duration = Duration::from_millis(25);

/// One limit: failures per window for an account from an address, and for an address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Keeps each limiter's buckets apart where they share a table ("login", "register").
    pub scope: &'static str,
    pub window: i64,
    /// `u32::MAX`: no per-account limit (registrations).
    pub per_account: u32,
    pub per_address: u32,
    pub max_wait: Duration,
}

pub(crate) enum Limiter {
    Local {
        throttle: LoginThrottle,
        clock: SharedClock,
    },
    Shared {
        db: Database,
        clock: SharedClock,
        limits: Limits,
    },
}

impl Limiter {
    pub fn local(clock: SharedClock, limits: Limits) -> Limiter {
        Limiter::Local {
            throttle: LoginThrottle::new(
                limits.window,
                limits.per_account,
                limits.per_address,
                limits.max_wait,
            ),
            clock,
        }
    }

    pub fn shared(db: Database, clock: SharedClock, limits: Limits) -> Limiter {
        Limiter::Shared { db, clock, limits }
    }

    /// Starts an attempt on `account` from `ip` (see the module's rules).
    pub async fn begin(&self, ip: Option<IpAddr>, account: &str) -> Result<Attempt<'_>, Error> {
        match self {
            Limiter::Local { throttle, clock } => throttle
                .begin(ip, account, clock.now())
                .await
                .map(Attempt::Local)
                .map_err(refused),
            Limiter::Shared { db, clock, limits } => {
                let scoped = |key: String| format!("{}/{key}", limits.scope);
                let mut buckets = vec![(scoped(address_key(ip)), limits.per_address)];
                if limits.per_account != u32::MAX {
                    buckets.push((scoped(account_key(ip, account)), limits.per_account));
                }
                let id = uuid::Uuid::new_v4().simple().to_string();
                let deadline = tokio::time::Instant::now() + limits.max_wait;
                loop {
                    let now = clock.now();
                    let (request, attempt, window) = (buckets.clone(), id.clone(), limits.window);
                    let start = db
                        .run(move |conn| {
                            let limits: Vec<(&str, u32)> =
                                request.iter().map(|(k, l)| (k.as_str(), *l)).collect();
                            store::try_start(conn, &attempt, &limits, window, now + LEASE_SECS, now)
                        })
                        .await?;
                    match start {
                        Start::Go => {
                            return Ok(Attempt::Shared(SharedAttempt {
                                db: db.clone(),
                                clock: clock.clone(),
                                window: limits.window,
                                id,
                                account: (limits.per_account != u32::MAX)
                                    .then(|| scoped(account_key(ip, account))),
                                address: scoped(address_key(ip)),
                                settled: false,
                            }));
                        }
                        Start::Refuse(retry_after) => {
                            return Err(Error::TooManyAttempts { retry_after });
                        }
                        Start::Wait if tokio::time::Instant::now() + WAIT_STEP > deadline => {
                            return Err(Error::Overloaded);
                        }
                        Start::Wait => tokio::time::sleep(WAIT_STEP).await,
                    }
                }
            }
        }
    }

    /// Forgets what no longer matters: ended windows (and, when shared, lapsed attempts).
    pub async fn prune(&self, now: i64) -> Result<(), Error> {
        match self {
            Limiter::Local { throttle, .. } => {
                throttle.prune(now);
                Ok(())
            }
            Limiter::Shared { db, limits, .. } => {
                let window = limits.window;
                Ok(db.run(move |conn| store::prune(conn, window, now)).await?)
            }
        }
    }
}

/// A running attempt; dropped without a verdict, it gives its place back.
pub(crate) enum Attempt<'a> {
    Local(throttle::Attempt<'a>),
    Shared(SharedAttempt),
}

impl Attempt<'_> {
    /// Wrong credentials: counted against the account and the address.
    pub fn failed(self) {
        match self {
            Attempt::Local(a) => a.failed(),
            Attempt::Shared(a) => a.settle(Outcome::CountFailure, Outcome::CountFailure),
        }
    }

    /// Counted like a failure (registrations count whatever their outcome).
    pub fn keep(self) {
        match self {
            Attempt::Local(a) => a.keep(),
            Attempt::Shared(a) => a.settle(Outcome::CountFailure, Outcome::CountFailure),
        }
    }

    /// Right credentials: the account's failures are forgotten.
    pub fn succeeded(self) {
        match self {
            Attempt::Local(a) => a.succeeded(),
            Attempt::Shared(a) => a.settle(Outcome::ClearFailures, Outcome::Nothing),
        }
    }
}

pub(crate) struct SharedAttempt {
    db: Database,
    clock: SharedClock,
    window: i64,
    id: String,
    account: Option<String>,
    address: String,
    settled: bool,
}

impl SharedAttempt {
    fn settle(mut self, account: Outcome, address: Outcome) {
        self.settled = true;
        self.end(account, address);
    }

    /// Records the end in the background: the attempt's rows keep its place until then, so
    /// nothing can start on the strength of a failure not yet counted.
    fn end(&self, account: Outcome, address: Outcome) {
        let mut outcomes = vec![(self.address.clone(), address)];
        if let Some(key) = &self.account {
            outcomes.push((key.clone(), account));
        }
        let (db, id, window, now) = (
            self.db.clone(),
            self.id.clone(),
            self.window,
            self.clock.now(),
        );
        let ending = async move {
            let result = db
                .run(move |conn| {
                    let outcomes: Vec<(&str, Outcome)> =
                        outcomes.iter().map(|(k, o)| (k.as_str(), *o)).collect();
                    store::end(conn, &id, &outcomes, window, now)
                })
                .await;
            if let Err(e) = result {
                log::warn!("ending a login attempt failed (its place lapses with its lease): {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(ending);
            }
            Err(_) => {
                log::warn!("no runtime to end a login attempt; its place lapses with its lease")
            }
        }
    }
}

impl Drop for SharedAttempt {
    fn drop(&mut self) {
        if !self.settled {
            self.end(Outcome::Nothing, Outcome::Nothing);
        }
    }
}
