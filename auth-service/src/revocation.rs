//! The in-memory index of revoked sessions that `/verify` consults instead of the database.
//!
//! An entry only has to live as long as an access token issued before the revocation could
//! still be accepted (`revoked_at + access_ttl + leeway`); after that the token's own `exp`
//! rejects it. The index is filled at start-up from the database and on every revocation this
//! instance makes; a feed of other instances' revocations can call [`RevokedSessions::revoke`]
//! the same way.

use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Default)]
pub struct RevokedSessions {
    /// Session id → Unix time after which the entry can be forgotten.
    entries: RwLock<HashMap<String, i64>>,
}

impl RevokedSessions {
    pub fn new() -> RevokedSessions {
        RevokedSessions::default()
    }

    /// Records that session `sid` was revoked; remember it until `keep_until`.
    pub fn revoke(&self, sid: &str, keep_until: i64) {
        let mut entries = match self.entries.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let slot = entries.entry(sid.to_string()).or_insert(keep_until);
        *slot = (*slot).max(keep_until);
    }

    pub fn is_revoked(&self, sid: &str) -> bool {
        let entries = match self.entries.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries.contains_key(sid)
    }

    /// Drops entries no access token can need any more; returns how many remain.
    pub fn prune(&self, now: i64) -> usize {
        let mut entries = match self.entries.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries.retain(|_, keep_until| *keep_until >= now);
        entries.len()
    }

    pub fn len(&self) -> usize {
        match self.entries.read() {
            Ok(g) => g.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_check_prune() {
        let idx = RevokedSessions::new();
        assert!(!idx.is_revoked("s1"));
        idx.revoke("s1", 100);
        idx.revoke("s2", 50);
        assert!(idx.is_revoked("s1") && idx.is_revoked("s2"));
        assert_eq!(idx.prune(60), 1);
        assert!(idx.is_revoked("s1"));
        assert!(!idx.is_revoked("s2"));
        // A later revocation of the same session extends, never shortens, the entry.
        idx.revoke("s1", 10);
        assert_eq!(idx.prune(90), 1);
        assert_eq!(idx.prune(101), 0);
        assert!(idx.is_empty());
    }
}
