//! The in-memory index of revoked sessions that `/verify` consults instead of the database.
//!
//! An entry only has to live as long as an access token issued before the revocation could
//! still be accepted: `revoked_at + horizon`, where the horizon is the access-token lifetime
//! plus the leeway; after that the token's own `exp` rejects it. The domain fills the index
//! at start-up from the database, on every revocation it makes, and from the periodic sync.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::model::SessionId;

pub struct RevokedSessions {
    /// Seconds an entry is kept after its revocation.
    horizon: i64,
    /// Session id → Unix time after which the entry can be forgotten.
    entries: RwLock<HashMap<SessionId, i64>>,
}

impl RevokedSessions {
    pub fn new(horizon: i64) -> RevokedSessions {
        RevokedSessions {
            horizon,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// How long after a revocation an access token of that session may still be presented.
    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    /// Records that session `sid` was revoked at `revoked_at`.
    pub fn record(&self, sid: SessionId, revoked_at: i64) {
        let keep_until = revoked_at.saturating_add(self.horizon);
        let mut entries = match self.entries.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let slot = entries.entry(sid).or_insert(keep_until);
        *slot = (*slot).max(keep_until);
    }

    pub fn is_revoked(&self, sid: &SessionId) -> bool {
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
    fn record_check_prune() {
        let idx = RevokedSessions::new(50);
        let (s1, s2) = (SessionId::random(), SessionId::random());
        assert!(!idx.is_revoked(&s1));
        idx.record(s1, 50); // kept until 100
        idx.record(s2, 0); // kept until 50
        assert!(idx.is_revoked(&s1) && idx.is_revoked(&s2));
        assert_eq!(idx.prune(60), 1);
        assert!(idx.is_revoked(&s1));
        assert!(!idx.is_revoked(&s2));
        // An older report of the same revocation extends, never shortens, the entry.
        idx.record(s1, 10);
        assert_eq!(idx.prune(90), 1);
        assert_eq!(idx.prune(101), 0);
        assert!(idx.is_empty());
    }
}
