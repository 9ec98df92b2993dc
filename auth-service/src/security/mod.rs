//! Cryptography and abuse limits, with no storage and no HTTP: signing keys, the two token
//! kinds, Argon2id password hashing on a bounded pool, login and registration throttles, and
//! the in-memory index of revoked sessions. The domain composes these; each takes the time
//! as an argument where time matters.

pub mod keys;
pub mod passwords;
pub mod revocation;
pub mod throttle;
pub mod tokens;
