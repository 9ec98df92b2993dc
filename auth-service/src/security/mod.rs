//! Cryptography and abuse limits, with no storage and no HTTP: signing keys, the two token
//! kinds, Argon2id password hashing on a bounded pool, login and registration throttles, the
//! in-memory index of revoked sessions, and the cache of verified access tokens. The domain composes these; each takes the time
//! as an argument where time matters.

pub mod client_secrets;
pub mod keys;
pub mod passwords;
pub mod revocation;
pub mod throttle;
pub mod tokens;
pub mod verify_cache;
