//! Argon2id password hashing off the async workers, a bounded number at a time.
//!
//! At most `password.max_concurrent` hashes run at once (a semaphore); a request that does not
//! get a slot within `password.queue_timeout` is answered [`Error::Overloaded`] (503 with
//! `Retry-After`). A hash that has started finishes even if its request is gone, holding its
//! slot, so the bound holds for CPU time, not just for requests. Checking a password for a
//! user that does not exist runs against a dummy hash made with the same parameters, so it
//! costs what a wrong password costs.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::settings::PasswordSettings;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Hashes and checks passwords. Cheap to clone: clones share the slots.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

fn hasher(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_with(params: &Params, password: &SecretString) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    hasher(params.clone())
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
}

/// Checks with the parameters recorded in the hash itself.
fn verify_with(password: &SecretString, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        log::error!("a stored password hash is not a valid PHC string");
        return false;
    };
    // The algorithm, version and parameters come from the hash; the hasher's own are unused.
    Argon2::default()
        .verify_password(password.expose_secret().as_bytes(), &parsed)
        .is_ok()
}

impl Passwords {
    pub fn new(settings: &PasswordSettings) -> Result<Passwords, String> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| format!("password.*: invalid Argon2 parameters: {e}"))?;
        let slots = settings
            .max_concurrent
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let dummy = SecretString::from(uuid::Uuid::new_v4().to_string());
        let dummy_hash = hash_with(&params, &dummy).map_err(|e| e.to_string())?;
        Ok(Passwords {
            params,
            slots: Arc::new(Semaphore::new(slots)),
            queue_timeout: settings.queue_timeout,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Runs `work` on the blocking pool once a slot is free.
    async fn with_slot<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let permit = if self.queue_timeout.is_zero() {
            self.slots.clone().try_acquire_owned().ok()
        } else {
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        };
        let Some(permit) = permit else {
            return Err(Error::Overloaded);
        };
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(Error::internal)
    }

    /// Hashes a new password with the configured parameters.
    pub async fn hash(&self, password: SecretString) -> Result<String, Error> {
        let params = self.params.clone();
        self.with_slot(move || hash_with(&params, &password))
            .await?
    }

    /// Hashes on the calling thread, for the command line.
    pub fn hash_here(&self, password: &SecretString) -> Result<String, Error> {
        hash_with(&self.params, password)
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user
    /// (then the answer is always no, after the same work).
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<bool, Error> {
        let real = stored.is_some();
        let stored: Arc<str> = match stored {
            Some(s) => s.into(),
            None => self.dummy_hash.clone(),
        };
        let matches = self
            .with_slot(move || verify_with(&password, &stored))
            .await?;
        Ok(real && matches)
    }
}

/// Counted in characters, not bytes; never truncated.
pub fn check_strength(password: &SecretString) -> Result<(), Error> {
    let chars = password.expose_secret().chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(Error::WeakPassword(format!(
            "password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordSettings {
        PasswordSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            max_concurrent: Some(1),
            queue_timeout: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_and_verify() {
        let p = Passwords::new(&cheap()).unwrap();
        let pw = || SecretString::from("correct horse".to_string());
        let hash = p.hash(pw()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert!(p.verify(pw(), Some(hash.clone())).await.unwrap());
        let wrong = SecretString::from("wrong horse".to_string());
        assert!(!p.verify(wrong, Some(hash)).await.unwrap());
        // No user: never a match, not even with the dummy's own password.
        assert!(!p.verify(pw(), None).await.unwrap());
        assert!(!p.verify(pw(), Some("not a hash".into())).await.unwrap());
    }

    #[tokio::test]
    async fn no_free_slot_is_overloaded() {
        let p = Passwords::new(&cheap()).unwrap();
        let held = p.slots.clone().try_acquire_owned().unwrap();
        let r = p.hash(SecretString::from("password1".to_string())).await;
        assert!(matches!(r, Err(Error::Overloaded)));
        drop(held);
        assert!(
            p.hash(SecretString::from("password1".to_string()))
                .await
                .is_ok()
        );
    }

    #[test]
    fn strength_counts_characters() {
        let s = |x: &str| SecretString::from(x.to_string());
        assert!(check_strength(&s("1234567")).is_err());
        assert!(check_strength(&s("12345678")).is_ok());
        assert!(check_strength(&s(&"é".repeat(128))).is_ok());
        assert!(check_strength(&s(&"é".repeat(129))).is_err());
    }
}
