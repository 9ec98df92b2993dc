//! Argon2id password hashing, off the async workers and bounded in how many run at once.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::config::PasswordSettings;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Hashing could not be done. Never caused by the password itself.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid Argon2 parameters (password.*)")]
    Parameters(#[source] argon2::Error),
    #[error("password hashing failed")]
    Hashing(#[source] argon2::password_hash::Error),
    #[error("the hashing task did not finish")]
    Task(#[source] tokio::task::JoinError),
    #[error("the hashing queue is closed")]
    Closed(#[source] tokio::sync::AcquireError),
}

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the user does not exist so
    /// that "no such user" costs as much as "wrong password".
    dummy_hash: Arc<str>,
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash uses other parameters than the configured ones.
    pub needs_rehash: bool,
}

impl Passwords {
    pub fn new(settings: &PasswordSettings) -> Result<Passwords, PasswordError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(PasswordError::Parameters)?;
        let permits = settings
            .max_concurrent
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let dummy_password = uuid::Uuid::new_v4().to_string();
        let dummy_hash = hash_with(&params, dummy_password.as_bytes())?;
        Ok(Passwords {
            params,
            permits: Arc::new(Semaphore::new(permits)),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Hashes a new password with the configured parameters.
    pub async fn hash(&self, password: SecretString) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.bounded(move || hash_with(&params, password.expose_secret().as_bytes()))
            .await
    }

    /// Hashes on the calling thread, for the command line (no runtime, no queue).
    pub fn hash_here(&self, password: &SecretString) -> Result<String, PasswordError> {
        hash_with(&self.params, password.expose_secret().as_bytes())
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verified, PasswordError> {
        let params = self.params.clone();
        let real = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        self.bounded(move || {
            let verified = verify_with(&params, password.expose_secret().as_bytes(), &hash);
            Ok(Verified {
                matches: real && verified.matches,
                needs_rehash: real && verified.needs_rehash,
            })
        })
        .await
    }

    async fn bounded<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(PasswordError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let result = f();
            drop(permit);
            result
        })
        .await
        .map_err(PasswordError::Task)?
    }
}

fn hasher(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_with(params: &Params, password: &[u8]) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher(params)
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(PasswordError::Hashing)
}

/// Verifies with the parameters recorded in the hash itself; reports whether they are stale.
fn verify_with(params: &Params, password: &[u8], stored: &str) -> Verified {
    let Ok(parsed) = PasswordHash::new(stored) else {
        log::error!("stored password hash is not a valid PHC string");
        return Verified {
            matches: false,
            needs_rehash: false,
        };
    };
    let matches = hasher(params).verify_password(password, &parsed).is_ok();
    Verified {
        matches,
        needs_rehash: matches && is_stale(params, &parsed),
    }
}

fn is_stale(params: &Params, parsed: &PasswordHash<'_>) -> bool {
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return true;
    }
    if parsed.version != Some(Version::V0x13.into()) {
        return true;
    }
    match Params::try_from(parsed) {
        Ok(p) => {
            p.m_cost() != params.m_cost()
                || p.t_cost() != params.t_cost()
                || p.p_cost() != params.p_cost()
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(m: u32, t: u32) -> PasswordSettings {
        PasswordSettings {
            memory_kib: m,
            iterations: t,
            parallelism: 1,
            max_concurrent: Some(2),
        }
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let p = Passwords::new(&settings(64, 1)).unwrap();
        let h = p.hash(secret("correct horse")).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        let ok = p
            .verify(secret("correct horse"), Some(h.clone()))
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verified {
                matches: true,
                needs_rehash: false
            }
        );
        let bad = p.verify(secret("correct horsE"), Some(h)).await.unwrap();
        assert!(!bad.matches);
    }

    #[tokio::test]
    async fn missing_user_never_matches() {
        let p = Passwords::new(&settings(64, 1)).unwrap();
        let v = p.verify(secret("anything"), None).await.unwrap();
        assert!(!v.matches && !v.needs_rehash);
    }

    #[tokio::test]
    async fn stale_parameters_are_reported() {
        let old = Passwords::new(&settings(64, 1)).unwrap();
        let new = Passwords::new(&settings(128, 2)).unwrap();
        let h = old.hash(secret("long enough")).await.unwrap();
        let v = new
            .verify(secret("long enough"), Some(h.clone()))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verified {
                matches: true,
                needs_rehash: true
            }
        );
        // A wrong password never triggers a rehash.
        let v = new.verify(secret("wrong one!"), Some(h)).await.unwrap();
        assert_eq!(
            v,
            Verified {
                matches: false,
                needs_rehash: false
            }
        );
    }

    #[tokio::test]
    async fn long_passwords_are_not_truncated() {
        let p = Passwords::new(&settings(64, 1)).unwrap();
        let base = "x".repeat(200);
        let h = p.hash(secret(&format!("{base}a"))).await.unwrap();
        let v = p
            .verify(secret(&format!("{base}b")), Some(h))
            .await
            .unwrap();
        assert!(!v.matches);
    }

    #[tokio::test]
    async fn garbage_hash_is_a_mismatch_not_a_panic() {
        let p = Passwords::new(&settings(64, 1)).unwrap();
        let v = p
            .verify(secret("whatever1"), Some("not-a-hash".into()))
            .await
            .unwrap();
        assert!(!v.matches);
    }
}
