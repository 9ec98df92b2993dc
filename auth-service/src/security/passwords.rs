//! Argon2id password hashing on a fixed pool of worker threads.
//!
//! `password.max_concurrent` workers each own one Argon2 memory buffer, allocated once and
//! reused for every hash, so memory is the base plus `max_concurrent × memory_kib` however
//! many logins arrive (allocating 19 MiB per hash on whichever thread is free leaves the
//! allocator holding gigabytes under a flood). Requests wait in a bounded queue: when it is
//! full, or a request has waited longer than `password.queue_timeout`, the answer is
//! [`PasswordError::Overloaded`] at once, which the service turns into 503 with
//! `Retry-After`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};

use crate::config::PasswordSettings;

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Bytes of a hash output (Argon2's default).
const OUTPUT_BYTES: usize = 32;

/// Hashing could not be done. Never caused by the password itself.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid Argon2 parameters (password.*)")]
    Parameters(#[source] argon2::Error),
    #[error("password hashing failed")]
    Hashing(#[source] argon2::password_hash::Error),
    /// Too many hashes queued, or this one waited too long: try again shortly.
    #[error("the password hashing queue is full")]
    Overloaded,
    /// The workers are gone (only while shutting down).
    #[error("the password hashing workers have stopped")]
    Stopped,
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash uses other parameters than the configured ones.
    pub needs_rehash: bool,
}

enum Work {
    Hash(SecretString),
    Verify {
        password: SecretString,
        stored: Arc<str>,
    },
}

enum Done {
    Hashed(String),
    Verified(Verified),
}

struct Job {
    work: Work,
    queued_at: Instant,
    reply: tokio::sync::oneshot::Sender<Result<Done, PasswordError>>,
}

/// Hashes and verifies passwords. Cheap to clone: clones share the workers.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    queue: SyncSender<Job>,
    /// Jobs queued or being hashed right now.
    depth: Arc<AtomicUsize>,
    /// A real hash of a random password, verified against when the user does not exist so
    /// that "no such user" costs as much as "wrong password".
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// Starts `password.max_concurrent` workers (one per CPU if unset), each with its own
    /// Argon2 memory.
    pub fn new(settings: &PasswordSettings) -> Result<Passwords, PasswordError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            Some(OUTPUT_BYTES),
        )
        .map_err(PasswordError::Parameters)?;
        let workers = settings
            .max_concurrent
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let (queue, jobs) = mpsc::sync_channel::<Job>(settings.queue_size);
        let jobs = Arc::new(Mutex::new(jobs));
        let depth = Arc::new(AtomicUsize::new(0));
        let queue_timeout = settings.queue_timeout.get();
        for n in 0..workers {
            let (jobs, depth, params) = (jobs.clone(), depth.clone(), params.clone());
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || work(&jobs, &depth, &params, queue_timeout))
                .map_err(|_| PasswordError::Stopped)?;
        }
        let mut memory = vec![Block::new(); params.block_count()];
        let dummy_password = SecretString::from(uuid::Uuid::new_v4().to_string());
        let dummy_hash = hash_with(&params, &dummy_password, &mut memory)?;
        Ok(Passwords {
            params,
            queue,
            depth,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Hashes a new password with the configured parameters.
    pub async fn hash(&self, password: SecretString) -> Result<String, PasswordError> {
        match self.submit(Work::Hash(password)).await? {
            Done::Hashed(hash) => Ok(hash),
            Done::Verified(_) => Err(PasswordError::Stopped),
        }
    }

    /// Hashes on the calling thread, for the command line (no queue).
    pub fn hash_here(&self, password: &SecretString) -> Result<String, PasswordError> {
        let mut memory = vec![Block::new(); self.params.block_count()];
        hash_with(&self.params, password, &mut memory)
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verified, PasswordError> {
        let real = stored.is_some();
        let stored: Arc<str> = match stored {
            Some(s) => s.into(),
            None => self.dummy_hash.clone(),
        };
        match self.submit(Work::Verify { password, stored }).await? {
            Done::Verified(v) => Ok(Verified {
                matches: real && v.matches,
                needs_rehash: real && v.needs_rehash,
            }),
            Done::Hashed(_) => Err(PasswordError::Stopped),
        }
    }

    /// Hashes queued or in progress right now.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    async fn submit(&self, work: Work) -> Result<Done, PasswordError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            work,
            queued_at: Instant::now(),
            reply,
        };
        self.depth.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(PasswordError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(PasswordError::Stopped);
            }
        }
        answer.await.map_err(|_| PasswordError::Stopped)?
    }
}

/// Where the workers' scheduling priority sits on thread-priority's 0 (lowest) to 99 scale:
/// about nice 10 on Linux.
const WORKER_PRIORITY: u8 = 25;

/// One worker: takes jobs until the queue closes, hashing in its own memory.
///
/// Hashing runs at a lower scheduling priority than the request handlers: under a login
/// flood the cores are busy hashing, and `/verify` (and everything else that takes
/// microseconds) should not wait behind it for its turn on a core.
fn work(
    jobs: &Mutex<Receiver<Job>>,
    depth: &AtomicUsize,
    params: &Params,
    queue_timeout: Duration,
) {
    let lowered = thread_priority::ThreadPriorityValue::try_from(WORKER_PRIORITY)
        .map_err(|e| e.to_string())
        .and_then(|p| {
            thread_priority::set_current_thread_priority(
                thread_priority::ThreadPriority::Crossplatform(p),
            )
            .map_err(|e| format!("{e:?}"))
        });
    if let Err(e) = lowered {
        log::warn!("password hashing runs at normal priority: {e}");
    }
    let mut memory = vec![Block::new(); params.block_count()];
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = next else {
            return;
        };
        let result = if job.reply.is_closed() {
            // The request is gone (the client hung up): skip the work.
            Err(PasswordError::Stopped)
        } else if job.queued_at.elapsed() > queue_timeout {
            Err(PasswordError::Overloaded)
        } else {
            match job.work {
                Work::Hash(password) => hash_with(params, &password, &mut memory).map(Done::Hashed),
                Work::Verify { password, stored } => Ok(Done::Verified(verify_with(
                    params,
                    &password,
                    &stored,
                    &mut memory,
                ))),
            }
        };
        depth.fetch_sub(1, Ordering::Relaxed);
        let _ = job.reply.send(result);
    }
}

fn hasher(algorithm: Algorithm, version: Version, params: Params) -> Argon2<'static> {
    Argon2::new(algorithm, version, params)
}

/// `memory` grows if these parameters need more than it holds; it never shrinks.
fn fill<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::new());
    }
    memory.as_mut_slice()
}

fn hash_with(
    params: &Params,
    password: &SecretString,
    memory: &mut Vec<Block>,
) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(PasswordError::Hashing)?;
    let mut out = [0u8; OUTPUT_BYTES];
    hasher(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password.expose_secret().as_bytes(),
            salt_bytes,
            &mut out,
            fill(memory, params),
        )
        .map_err(|e| PasswordError::Hashing(e.into()))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: params.try_into().map_err(PasswordError::Hashing)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(PasswordError::Hashing)?),
    };
    Ok(hash.to_string())
}

/// Verifies with the parameters recorded in the hash itself; reports whether they are stale.
fn verify_with(
    params: &Params,
    password: &SecretString,
    stored: &str,
    memory: &mut Vec<Block>,
) -> Verified {
    let mismatch = Verified {
        matches: false,
        needs_rehash: false,
    };
    let Ok(parsed) = PasswordHash::new(stored) else {
        log::error!("stored password hash is not a valid PHC string");
        return mismatch;
    };
    let (Ok(algorithm), Ok(stored_params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        log::error!("stored password hash is not an Argon2 hash this service can check");
        return mismatch;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return mismatch,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return mismatch;
    };
    let mut out = vec![0u8; expected.len()];
    let computed = hasher(algorithm, version, stored_params.clone())
        .hash_password_into_with_memory(
            password.expose_secret().as_bytes(),
            salt_bytes,
            &mut out,
            fill(memory, &stored_params),
        );
    // `Output`'s equality is constant-time.
    let matches = computed.is_ok() && Output::new(&out).is_ok_and(|o| o == expected);
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

/// Hashes the way the argon2 crate's own `PasswordHasher` does (for tests: the pool's
/// hand-assembled PHC strings must verify there, and the reverse).
#[cfg(test)]
fn reference_hash(params: &Params, password: &str) -> String {
    use argon2::password_hash::PasswordHasher as _;
    hasher(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
