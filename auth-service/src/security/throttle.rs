//! Login throttling: after too many failed attempts for one account from one address (or from
//! one address overall) within a window, further attempts are refused with 429 before any
//! password is checked. Keyed by account *and* address, so nobody can lock a user out from
//! elsewhere; the per-address limit bounds spraying across many accounts.
//!
//! An attempt is counted when it *starts* (check and count under one lock), not when its
//! password check fails: otherwise a burst of parallel guesses would all pass the check
//! before the first failure was recorded, and the limit would only bound concurrency. The
//! [`Attempt`] guard hands the count back when the attempt succeeds or ends without a
//! verdict (a database error, say).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Entries kept at most; past this, ended windows are dropped, then the oldest ones.
const MAX_ENTRIES: usize = 100_000;

pub struct LoginThrottle {
    window: i64,
    per_account: u32,
    per_address: u32,
    max_entries: usize,
    /// key → (window start, attempts in it)
    failures: Mutex<HashMap<String, (i64, u32)>>,
}

fn account_key(ip: Option<IpAddr>, account: &str) -> String {
    format!("a:{}|{}", source(ip), account.to_lowercase())
}

fn address_key(ip: Option<IpAddr>) -> String {
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

/// One counted attempt. Dropped without a verdict, it gives its count back.
#[must_use = "an attempt that is dropped at once is not counted"]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    account: String,
    address: String,
    settled: bool,
}

impl Attempt<'_> {
    /// Wrong credentials: the attempt stays counted against the account and the address.
    pub fn failed(self) {
        self.keep();
    }

    /// The attempt stays counted (for limits on every attempt, not only failures).
    pub fn keep(mut self) {
        self.settled = true;
    }

    /// Right credentials: the account's count is cleared and this attempt no longer counts
    /// against the address.
    pub fn succeeded(mut self) {
        self.settled = true;
        let mut map = self.throttle.lock();
        map.remove(&self.account);
        give_back(&mut map, &self.address);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let mut map = self.throttle.lock();
            give_back(&mut map, &self.account);
            give_back(&mut map, &self.address);
        }
    }
}

fn give_back(map: &mut HashMap<String, (i64, u32)>, key: &str) {
    if let Some(slot) = map.get_mut(key) {
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 == 0 {
            map.remove(key);
        }
    }
}

impl LoginThrottle {
    pub fn new(window: i64, per_account: u32, per_address: u32) -> LoginThrottle {
        LoginThrottle {
            window: window.max(1),
            per_account,
            per_address,
            max_entries: MAX_ENTRIES,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, u32)>> {
        match self.failures.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Starts an attempt on `account` (any text naming what is guessed at, or `""` for limits
    /// per address only): `Err(seconds to wait)` if it must be refused, else the attempt,
    /// already counted.
    pub fn begin(&self, ip: Option<IpAddr>, account: &str, now: i64) -> Result<Attempt<'_>, i64> {
        let account = account_key(ip, account);
        let address = address_key(ip);
        let mut map = self.lock();
        for (key, limit) in [(&account, self.per_account), (&address, self.per_address)] {
            if let Some((start, count)) = map.get(key)
                && now - start < self.window
                && *count >= limit
            {
                return Err((start + self.window - now).max(1));
            }
        }
        self.make_room(&mut map, now);
        for key in [&account, &address] {
            let slot = map.entry(key.clone()).or_insert((now, 0));
            if now - slot.0 >= self.window {
                *slot = (now, 0);
            }
            slot.1 = slot.1.saturating_add(1);
        }
        Ok(Attempt {
            throttle: self,
            account,
            address,
            settled: false,
        })
    }

    /// Keeps the map bounded whatever the mix of addresses and logins: ended windows go
    /// first, then the oldest tenth.
    fn make_room(&self, map: &mut HashMap<String, (i64, u32)>, now: i64) {
        if map.len() + 2 <= self.max_entries {
            return;
        }
        let window = self.window;
        map.retain(|_, (start, _)| now - *start < window);
        if map.len() + 2 <= self.max_entries {
            return;
        }
        // Exactly the oldest tenth, whatever the ties (window starts are whole seconds).
        let mut by_age: Vec<(i64, String)> = map
            .iter()
            .map(|(key, (start, _))| (*start, key.clone()))
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
        self.lock().retain(|_, (start, _)| now - *start < window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn limits_per_account_and_address() {
        let t = LoginThrottle::new(60, 3, 5);
        for _ in 0..3 {
            t.begin(ip("1.1.1.1"), "Alice", 100).unwrap().failed();
        }
        assert_eq!(t.begin(ip("1.1.1.1"), "ALICE", 110).err(), Some(50));
        // Another address, or another account from this one, is unaffected…
        assert!(t.begin(ip("2.2.2.2"), "alice", 110).is_ok());
        t.begin(ip("1.1.1.1"), "bob", 110).unwrap().failed();
        t.begin(ip("1.1.1.1"), "carol", 110).unwrap().failed();
        // …until the address itself reaches its limit.
        assert!(t.begin(ip("1.1.1.1"), "dave", 111).is_err());
        // Windows end.
        assert!(t.begin(ip("1.1.1.1"), "alice", 161).is_ok());
        t.prune(200);
        assert!(t.lock().is_empty());
    }

    #[test]
    fn attempts_in_flight_count_before_their_verdict() {
        let t = LoginThrottle::new(60, 3, 100);
        let in_flight: Vec<_> = (0..3)
            .map(|_| t.begin(ip("1.1.1.1"), "alice", 0).unwrap())
            .collect();
        // A fourth parallel guess is refused although none has failed yet.
        assert!(t.begin(ip("1.1.1.1"), "alice", 0).is_err());
        drop(in_flight);
        // Attempts that ended without a verdict (an error) give their count back.
        assert!(t.lock().is_empty());
        assert!(t.begin(ip("1.1.1.1"), "alice", 0).is_ok());
    }

    #[test]
    fn success_clears_the_account() {
        let t = LoginThrottle::new(60, 2, 100);
        t.begin(ip("1.1.1.1"), "alice", 0).unwrap().failed();
        t.begin(ip("1.1.1.1"), "alice", 0).unwrap().succeeded();
        t.begin(ip("1.1.1.1"), "alice", 0).unwrap().failed();
        assert!(t.begin(ip("1.1.1.1"), "alice", 1).is_ok());
        // The address keeps only the failures.
        assert_eq!(t.lock().get("i:1.1.1.1").map(|s| s.1), Some(2));
    }

    #[test]
    fn an_ipv6_64_is_one_source() {
        let t = LoginThrottle::new(60, 2, 3);
        t.begin(ip("2001:db8:1:2::1"), "alice", 0).unwrap().failed();
        t.begin(ip("2001:db8:1:2:ffff::9"), "alice", 0)
            .unwrap()
            .failed();
        assert!(t.begin(ip("2001:db8:1:2:abcd::"), "alice", 0).is_err());
        t.begin(ip("2001:db8:1:2::7"), "bob", 0).unwrap().failed();
        assert!(t.begin(ip("2001:db8:1:2::8"), "carol", 0).is_err());
        // The neighbouring /64 and IPv4 addresses are their own sources.
        assert!(t.begin(ip("2001:db8:1:3::1"), "alice", 0).is_ok());
        assert!(t.begin(ip("192.0.2.1"), "alice", 0).is_ok());
        assert!(t.begin(ip("192.0.2.2"), "alice", 0).is_ok());
    }

    #[test]
    fn eviction_drops_only_the_oldest_even_with_ties() {
        let mut t = LoginThrottle::new(60, 3, 1000);
        t.max_entries = 50;
        // 48 entries all started in the same second, then more arrive.
        for i in 0..24 {
            t.begin(ip(&format!("10.0.0.{i}")), "x", 7)
                .unwrap()
                .failed();
        }
        t.begin(ip("10.0.1.1"), "x", 8).unwrap().failed();
        let left = t.lock().len();
        assert!((40..=50).contains(&left), "{left}");
        assert!(t.lock().contains_key("i:10.0.1.1"));
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut t = LoginThrottle::new(60, 3, 1000);
        t.max_entries = 50;
        for i in 0..500 {
            t.begin(ip(&format!("10.0.{}.{}", i / 256, i % 256)), "x", i)
                .unwrap()
                .failed();
            assert!(t.lock().len() <= 50);
        }
        // The newest entries survive eviction.
        t.begin(ip("10.0.1.243"), "x", 500).unwrap().failed();
        assert_eq!(t.lock().get("i:10.0.1.243").map(|s| s.1), Some(2));
    }
}
