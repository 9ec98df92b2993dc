//! The in-memory indexes of revoked sessions (which `/verify` and introspection consult
//! instead of the database) and of revoked machine-client tokens (by `jti`; they have no
//! session).
//!
//! An entry only has to live as long as an access token issued before the revocation could
//! still be accepted: `revoked_at + horizon`, where the horizon is the access-token lifetime
//! plus the leeway; after that the token's own `exp` rejects it. The domain fills the index
//! at start-up from the database, on every revocation it makes, and from the periodic sync.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

use crate::model::{SessionId, TokenId};

/// Revoked ids of one kind, each kept until no token it covers can still be accepted.
pub struct RevocationIndex<K> {
    /// Seconds an entry is kept after its revocation.
    horizon: i64,
    /// Id → Unix time after which the entry can be forgotten.
    entries: RwLock<HashMap<K, i64>>,
}

/// Sessions ended (logout, reuse detection, admin actions…): every token of theirs.
pub type RevokedSessions = RevocationIndex<SessionId>;
/// Machine clients' access tokens, one by one.
pub type RevokedTokens = RevocationIndex<TokenId>;

impl<K: Eq + Hash> RevocationIndex<K> {
    pub fn new(horizon: i64) -> RevocationIndex<K> {
        RevocationIndex {
            horizon,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// How long after a revocation a token it covers may still be presented.
    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    /// Records that `id` was revoked at `revoked_at`.
    pub fn record(&self, id: K, revoked_at: i64) {
        let keep_until = revoked_at.saturating_add(self.horizon);
        let mut entries = match self.entries.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let slot = entries.entry(id).or_insert(keep_until);
        *slot = (*slot).max(keep_until);
    }

    pub fn is_revoked(&self, id: &K) -> bool {
        let entries = match self.entries.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        entries.contains_key(id)
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
