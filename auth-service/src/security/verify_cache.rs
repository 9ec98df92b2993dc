//! Access tokens already verified, so a resource server presenting the same token again
//! does not pay for a signature check each time.
//!
//! Keyed by the token's SHA-256: any change to a token (a tampered byte, another signature)
//! is another key, and no token is kept in memory. An entry holds the checked claims and is
//! used only while the token has not expired; revocation is not cached (the caller checks
//! the revocation index on every call). Bounded to `verify.cache_size` entries.

use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use crate::security::tokens::AccessClaims;

/// A token that passed every check, and the answer made for it once.
pub struct Verified {
    pub claims: AccessClaims,
    /// Set by the first caller that renders an answer (the same bytes every time after):
    /// a repeated token costs a lookup, not a serialisation.
    pub answer: OnceLock<Answer>,
    /// The same, for introspection (RFC 7662's shape).
    pub introspection: OnceLock<bytes::Bytes>,
}

/// An answer about a verified token: the body and header values as shared bytes, so each
/// use is a reference count, not a copy.
pub struct Answer {
    pub body: bytes::Bytes,
    pub headers: Vec<(&'static str, bytes::Bytes)>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl Verified {
    pub fn new(claims: AccessClaims) -> Arc<Verified> {
        Arc::new(Verified {
            claims,
            answer: OnceLock::new(),
            introspection: OnceLock::new(),
        })
    }
}

/// Token key → the checked claims and the generation they were checked in.
type Entries = quick_cache::sync::Cache<[u8; 32], (Arc<Verified>, u64)>;

pub struct VerifiedTokens {
    /// `None` when `verify.cache_size` is 0.
    cache: Option<Entries>,
    leeway: i64,
    /// Bumped when the keys change: entries of an older generation are never used, so a
    /// token signed with a key that was removed is not answered from memory.
    generation: std::sync::atomic::AtomicU64,
}

/// The cache key of a token.
pub fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl VerifiedTokens {
    pub fn new(capacity: usize, leeway: i64) -> VerifiedTokens {
        VerifiedTokens {
            cache: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
            leeway,
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The current generation: read it before checking a token, and insert with it.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Forgets every entry (the keys changed), including any being inserted by a check
    /// that started before.
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// The claims of a token checked before, if it has not expired by `now`. An expired
    /// entry is dropped.
    pub fn get(&self, key: &[u8; 32], now: i64) -> Option<Arc<Verified>> {
        let cache = self.cache.as_ref()?;
        let (verified, generation) = cache.get(key)?;
        // The same rule as the full check: expired once exp < now - leeway.
        if verified.claims.exp < now - self.leeway || generation != self.generation() {
            cache.remove(key);
            return None;
        }
        Some(verified)
    }

    /// Remembers a token that passed every check, begun in `generation`.
    pub fn insert(&self, key: [u8; 32], claims: Arc<Verified>, generation: u64) {
        if let Some(cache) = &self.cache
            && generation == self.generation()
        {
            cache.insert(key, (claims, generation));
        }
    }

    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SessionId, TokenId, UserId};

    fn claims(exp: i64) -> Arc<Verified> {
        Verified::new(AccessClaims {
            iss: "i".into(),
            aud: "a".into(),
            sub: UserId::random(),
            exp,
            nbf: 0,
            iat: 0,
            jti: TokenId::random(),
            sid: SessionId::random(),
            roles: vec![],
            username: "u".into(),
        })
    }

    #[test]
    fn hits_until_expiry_then_never() {
        let cache = VerifiedTokens::new(10, 2);
        let k = key("a.b.c");
        cache.insert(k, claims(100), 0);
        assert!(cache.get(&k, 100).is_some());
        assert!(cache.get(&k, 102).is_some(), "within the leeway");
        assert!(cache.get(&k, 103).is_none(), "expired");
        assert!(
            cache.get(&k, 50).is_none(),
            "an expired entry is gone for good"
        );
    }

    #[test]
    fn another_token_is_another_key() {
        let cache = VerifiedTokens::new(10, 0);
        cache.insert(key("header.payload.signature"), claims(100), 0);
        for other in [
            "header.payload.signaturE",
            "header.payload.signature ",
            "Header.payload.signature",
        ] {
            assert!(cache.get(&key(other), 0).is_none(), "{other}");
        }
    }

    #[test]
    fn bounded_and_switchable_off() {
        let cache = VerifiedTokens::new(100, 0);
        for i in 0..10_000 {
            cache.insert(key(&i.to_string()), claims(100), 0);
        }
        assert!(cache.len() <= 100, "{}", cache.len());
        let off = VerifiedTokens::new(0, 0);
        off.insert(key("t"), claims(100), 0);
        assert!(off.get(&key("t"), 0).is_none());
    }

    #[test]
    fn a_key_change_forgets_every_entry_and_late_inserts() {
        let cache = VerifiedTokens::new(10, 0);
        let before = cache.generation();
        cache.insert(key("a"), claims(100), before);
        assert!(cache.get(&key("a"), 50).is_some());
        cache.invalidate();
        assert!(cache.get(&key("a"), 50).is_none());
        // A check that began before the change inserts nothing.
        cache.insert(key("b"), claims(100), before);
        assert!(cache.get(&key("b"), 50).is_none());
        cache.insert(key("b"), claims(100), cache.generation());
        assert!(cache.get(&key("b"), 50).is_some());
    }
}
