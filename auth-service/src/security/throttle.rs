//! Login and registration throttling: after too many failed attempts on one account from
//! one address (or from one address overall) within a window, further attempts are refused
//! with 429 before any password is checked. Keyed by account *and* address, so nobody can
//! lock a user out from elsewhere; the per-address limit bounds spraying across accounts.
//!
//! Parallel guessing cannot outrun the limit, and a correct login is never refused because
//! other attempts are in flight: an attempt may start only while the failures so far plus
//! the attempts still running stay under the limit. Past that it *waits* for a running one
//! to end (a failure uses up budget, a success or an abandoned attempt gives it back), for
//! at most `max_wait`; then it is answered "busy" (503), never "too many" (429). Only
//! failures that happened refuse with 429.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Entries kept at most; past this, ended windows are dropped, then the oldest idle ones.
const MAX_ENTRIES: usize = 100_000;

/// Why an attempt may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The limit is used up: retry after this many seconds (429).
    TooMany { retry_after: i64 },
    /// Earlier attempts were still running when `max_wait` ran out (503).
    Busy,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When the window of `failures` began.
    start: i64,
    failures: u32,
    in_flight: u32,
}

pub struct LoginThrottle {
    pub(crate) window: i64,
    pub(crate) per_account: u32,
    pub(crate) per_address: u32,
    pub(crate) max_wait: Duration,
    max_entries: usize,
    slots: Mutex<HashMap<String, Slot>>,
    /// Woken whenever an attempt ends.
    ended: Notify,
}

/// The bucket of one account (as named) from one source.
pub fn account_key(ip: Option<IpAddr>, account: &str) -> String {
    format!("a:{}|{}", source(ip), account.to_lowercase())
}

/// The bucket of one source, whatever the account.
pub fn address_key(ip: Option<IpAddr>) -> String {
    format!("i:{}", source(ip))
}

/// What one client controls: an IPv4 address, or an IPv6 /64 (a single host is routinely
/// given a whole /64, so per-address limits on full IPv6 addresses would be no limit).
/// Requests without an address (the command line) share one source.
fn source(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(v6)) => match ipnet::Ipv6Net::new(v6, 64) {
            Ok(net) => net.trunc().to_string(),
            Err(_) => v6.to_string(),
        },
        Some(IpAddr::V4(v4)) => v4.to_string(),
        None => "-".to_string(),
    }
}

/// One running attempt. Dropped without a verdict, it gives its place back.
#[must_use = "an attempt that is dropped at once is not counted"]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    account: String,
    address: String,
    settled: bool,
}

impl Attempt<'_> {
    /// Wrong credentials: counted against the account and the address.
    pub fn failed(mut self) {
        self.settle(Verdict::Failed);
    }

    /// Counted like a failure (for limits on every attempt, such as registrations).
    pub fn keep(mut self) {
        self.settle(Verdict::Failed);
    }

    /// Right credentials: the account's failures are forgotten, and this attempt does not
    /// count against the address.
    pub fn succeeded(mut self) {
        self.settle(Verdict::Succeeded);
    }

    fn settle(&mut self, verdict: Verdict) {
        self.settled = true;
        self.throttle.end(&self.account, &self.address, verdict);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle
                .end(&self.account, &self.address, Verdict::Abandoned);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Failed,
    Succeeded,
    Abandoned,
}

enum Check {
    Go,
    Wait,
    Refuse(i64),
}

impl LoginThrottle {
    pub fn new(
        window: i64,
        per_account: u32,
        per_address: u32,
        max_wait: Duration,
    ) -> LoginThrottle {
        LoginThrottle {
            window: window.max(1),
            per_account,
            per_address,
            max_wait,
            max_entries: MAX_ENTRIES,
            slots: Mutex::new(HashMap::new()),
            ended: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        match self.slots.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Starts an attempt on `account` (any text naming what is guessed at, or `""` for limits
    /// per address only) from `ip`, at time `now`: the attempt, already running, or why not.
    pub async fn begin(
        &self,
        ip: Option<IpAddr>,
        account: &str,
        now: i64,
    ) -> Result<Attempt<'_>, Refused> {
        let account = account_key(ip, account);
        let address = address_key(ip);
        let deadline = tokio::time::Instant::now() + self.max_wait;
        loop {
            // Registered before the check, so an attempt ending in between still wakes us.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match self.try_start(&account, &address, now) {
                Check::Go => {
                    return Ok(Attempt {
                        throttle: self,
                        account,
                        address,
                        settled: false,
                    });
                }
                Check::Refuse(retry_after) => return Err(Refused::TooMany { retry_after }),
                Check::Wait => {
                    if tokio::time::timeout_at(deadline, ended).await.is_err() {
                        return Err(Refused::Busy);
                    }
                }
            }
        }
    }

    fn try_start(&self, account: &str, address: &str, now: i64) -> Check {
        let mut map = self.lock();
        let mut wait = false;
        for (key, limit) in [(account, self.per_account), (address, self.per_address)] {
            if let Some(slot) = map.get_mut(key) {
                if now - slot.start >= self.window {
                    slot.start = now;
                    slot.failures = 0;
                }
                if slot.failures >= limit {
                    return Check::Refuse((slot.start + self.window - now).max(1));
                }
                if slot.failures.saturating_add(slot.in_flight) >= limit {
                    wait = true;
                }
            }
        }
        if wait {
            return Check::Wait;
        }
        self.make_room(&mut map, now);
        for key in [account, address] {
            let slot = map.entry(key.to_string()).or_insert(Slot {
                start: now,
                failures: 0,
                in_flight: 0,
            });
            slot.in_flight = slot.in_flight.saturating_add(1);
        }
        Check::Go
    }

    fn end(&self, account: &str, address: &str, verdict: Verdict) {
        {
            let mut map = self.lock();
            for key in [account, address] {
                let Some(slot) = map.get_mut(key) else {
                    continue;
                };
                slot.in_flight = slot.in_flight.saturating_sub(1);
                match verdict {
                    Verdict::Failed => slot.failures = slot.failures.saturating_add(1),
                    Verdict::Succeeded if key == account => slot.failures = 0,
                    Verdict::Succeeded | Verdict::Abandoned => {}
                }
                if slot.failures == 0 && slot.in_flight == 0 {
                    map.remove(key);
                }
            }
        }
        self.ended.notify_waiters();
    }

    /// Keeps the map bounded whatever the mix of addresses and logins: ended windows go
    /// first, then the oldest tenth of the entries with no attempt running.
    fn make_room(&self, map: &mut HashMap<String, Slot>, now: i64) {
        if map.len() + 2 <= self.max_entries {
            return;
        }
        let window = self.window;
        map.retain(|_, s| s.in_flight > 0 || now - s.start < window);
        if map.len() + 2 <= self.max_entries {
            return;
        }
        // Exactly the oldest tenth, whatever the ties (window starts are whole seconds).
        let mut by_age: Vec<(i64, String)> = map
            .iter()
            .filter(|(_, s)| s.in_flight == 0)
            .map(|(key, s)| (s.start, key.clone()))
            .collect();
        by_age.sort_unstable();
        let cut = (self.max_entries / 10).max(2);
        for (_, key) in by_age.into_iter().take(cut) {
            map.remove(&key);
        }
    }

    /// Forgets windows that have ended.
    pub fn prune(&self, now: i64) {
        let window = self.window;
        self.lock()
            .retain(|_, s| s.in_flight > 0 || now - s.start < window);
    }
}

#[cfg(test)]
mod tests;
