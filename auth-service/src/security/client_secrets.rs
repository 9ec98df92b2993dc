//! Client secrets: generated with 256 bits of entropy (or given, at least 32 characters),
//! stored as a keyed hash — HMAC-SHA256 under a key derived from the refresh-token secret —
//! and compared in constant time. Checking one costs a microsecond, not an Argon2 hash: a
//! resource server authenticates on every introspection, and a high-entropy secret needs
//! no slow hash to resist guessing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The shortest secret accepted from an operator.
pub const MIN_SECRET_CHARS: usize = 32;

#[derive(Clone)]
pub struct ClientSecrets {
    /// HMAC-SHA256 with the key already absorbed: each check clones it and hashes only the
    /// message (two compressions instead of four).
    keyed: Hmac<Sha256>,
}

impl ClientSecrets {
    /// The hashing key is derived from `refresh_secret` (so it needs no key file of its
    /// own; changing the refresh secret means re-issuing client secrets too).
    pub fn new(refresh_secret: &[u8]) -> ClientSecrets {
        let key = mac(refresh_secret, b"auth-service client secrets v1");
        ClientSecrets { keyed: keyed(&key) }
    }

    /// A fresh secret: 32 random bytes, base64url (43 characters).
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The stored form of `secret` for `client_id` (bound to it, so hashes cannot be moved
    /// between clients).
    pub fn hash(&self, client_id: &str, secret: &str) -> String {
        let mut m = self.keyed.clone();
        m.update(client_id.as_bytes());
        m.update(&[0]);
        m.update(secret.as_bytes());
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    }

    /// Whether `secret` is the one whose hash is `stored`, in constant time.
    pub fn matches(&self, client_id: &str, secret: &str, stored: &str) -> bool {
        self.hash(client_id, secret)
            .as_bytes()
            .ct_eq(stored.as_bytes())
            .into()
    }
}

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail; the fallback (an
    // all-zero block key) only satisfies the type.
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()))
}

fn mac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut m = keyed(key);
    m.update(message);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_bound_to_the_client_and_checked() {
        let a = ClientSecrets::new(b"refresh secret one, long enough to be a key");
        let b = ClientSecrets::new(b"refresh secret two, long enough to be a key");
        let secret = ClientSecrets::generate();
        assert_eq!(secret.len(), 43);
        let stored = a.hash("rs1", &secret);
        assert!(a.matches("rs1", &secret, &stored));
        assert!(!a.matches("rs1", "wrong", &stored));
        assert!(
            !a.matches("rs2", &secret, &stored),
            "bound to the client id"
        );
        assert!(!b.matches("rs1", &secret, &stored), "keyed");
        assert!(!stored.contains(&secret));
        assert_ne!(ClientSecrets::generate(), ClientSecrets::generate());
    }

    #[test]
    fn stored_hashes_keep_their_format() {
        // Computed with Python's hmac: HMAC-SHA256(HMAC-SHA256(refresh secret, label),
        // id NUL secret), base64url without padding. Hashes already in databases must
        // still match after any change here.
        let secrets = ClientSecrets::new(b"refresh secret one, long enough to be a key");
        let secret = "a".repeat(43);
        assert_eq!(
            secrets.hash("rs1", &secret),
            "KhnxdR75ILRakuu9ceXlX_jrhA2iBkGuEfhfP6kpjQo"
        );
    }
}
