//! Times one Argon2id hash at the configured parameters (the defaults unless `AUTH__…`
//! settings say otherwise), on one thread, as the service's workers compute it. Used by
//! `bench/flood.sh` to compare login throughput with what the hashing allows.
//!
//! Run: `cargo run --release -p auth-service --example hash_time [ROUNDS]`.

use std::time::Instant;

use auth_service::config::{Settings, Sources};
use auth_service::security::passwords::Passwords;
use secrecy::SecretString;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(40);
    let settings = Settings::load(&Sources::process(None))?;
    let passwords = Passwords::new(&settings.password)?;
    let password = SecretString::from("correct horse battery".to_string());
    passwords.hash_here(&password)?; // warm-up
    let started = Instant::now();
    for _ in 0..rounds.max(1) {
        passwords.hash_here(&password)?;
    }
    let per_hash = started.elapsed().as_secs_f64() / f64::from(rounds.max(1));
    println!("{:.3}", per_hash * 1000.0);
    Ok(())
}
