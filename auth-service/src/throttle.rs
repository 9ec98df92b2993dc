//! Login throttling: after too many failed attempts for one account from one address (or from
//! one address overall) within a window, further attempts are refused with 429 before any
//! password is checked. Keyed by account *and* address, so nobody can lock a user out from
//! elsewhere; the per-address limit bounds spraying across many accounts.

use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept at most; past this, the oldest windows are dropped first.
const MAX_ENTRIES: usize = 100_000;

pub struct LoginThrottle {
    window: i64,
    per_account: u32,
    per_address: u32,
    /// key → (window start, failures in it)
    failures: Mutex<HashMap<String, (i64, u32)>>,
}

fn account_key(ip: &str, login: &str) -> String {
    format!("a:{ip}|{}", login.to_lowercase())
}

fn address_key(ip: &str) -> String {
    format!("i:{ip}")
}

impl LoginThrottle {
    pub fn new(window: i64, per_account: u32, per_address: u32) -> LoginThrottle {
        LoginThrottle {
            window: window.max(1),
            per_account,
            per_address,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, u32)>> {
        match self.failures.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `Err(seconds to wait)` if this attempt must be refused.
    pub fn check(&self, ip: &str, login: &str, now: i64) -> Result<(), i64> {
        let map = self.lock();
        for (key, limit) in [
            (account_key(ip, login), self.per_account),
            (address_key(ip), self.per_address),
        ] {
            if let Some((start, count)) = map.get(&key)
                && now - start < self.window
                && *count >= limit
            {
                return Err((start + self.window - now).max(1));
            }
        }
        Ok(())
    }

    pub fn failed(&self, ip: &str, login: &str, now: i64) {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            let window = self.window;
            map.retain(|_, (start, _)| now - *start < window);
        }
        for key in [account_key(ip, login), address_key(ip)] {
            let slot = map.entry(key).or_insert((now, 0));
            if now - slot.0 >= self.window {
                *slot = (now, 0);
            }
            slot.1 = slot.1.saturating_add(1);
        }
    }

    /// A successful login clears the account's count (not the address's).
    pub fn succeeded(&self, ip: &str, login: &str) {
        self.lock().remove(&account_key(ip, login));
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

    #[test]
    fn limits_per_account_and_address() {
        let t = LoginThrottle::new(60, 3, 5);
        for _ in 0..3 {
            assert!(t.check("1.1.1.1", "Alice", 100).is_ok());
            t.failed("1.1.1.1", "alice", 100);
        }
        assert_eq!(t.check("1.1.1.1", "ALICE", 110), Err(50));
        // Another address, or another account from this one, is unaffected…
        assert!(t.check("2.2.2.2", "alice", 110).is_ok());
        assert!(t.check("1.1.1.1", "bob", 110).is_ok());
        // …until the address itself reaches its limit.
        t.failed("1.1.1.1", "bob", 110);
        t.failed("1.1.1.1", "carol", 110);
        assert!(t.check("1.1.1.1", "dave", 111).is_err());
        // Windows end.
        assert!(t.check("1.1.1.1", "alice", 161).is_ok());
        t.prune(200);
        assert!(t.lock().is_empty());
    }

    #[test]
    fn success_clears_the_account() {
        let t = LoginThrottle::new(60, 2, 100);
        t.failed("1.1.1.1", "alice", 0);
        t.succeeded("1.1.1.1", "alice");
        t.failed("1.1.1.1", "alice", 0);
        assert!(t.check("1.1.1.1", "alice", 1).is_ok());
    }
}
