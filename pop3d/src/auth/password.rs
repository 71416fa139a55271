//! Password hashing: the argon2id hash stored per account, its verification, and the semaphore
//! that keeps the KDF off the event loop.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::sasl::scram::ScramKeys;
use crate::store::Account;

/// Longest accepted password, to bound hashing work.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Hashes a password for storage (argon2id, default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// The stored form of a new or changed password: the argon2id hash and the SCRAM-SHA-256 keys
/// (PBKDF2 with `scram_iterations`). No quota override.
pub fn new_account(address: &str, password: &str, scram_iterations: u32) -> Result<Account, String> {
    let scram = ScramKeys::derive(password, &rand::random::<[u8; 16]>(), scram_iterations);
    Ok(Account {
        address: address.to_owned(),
        password_hash: hash_password(password)?,
        scram_sha256: Some(scram.encode()),
        quota: None,
    })
}

/// Runs password hashing (argon2id: ~19 MiB and tens of ms of CPU each) off the event loop, at most
/// one per core at a time: a burst of logins or a brute-force run queues here instead of
/// multiplying memory (80 concurrent logins took pop3d to 1.6 GB RSS before) and starving the rest.
pub async fn run_kdf<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, tokio::task::JoinError> {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let permits = PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
    });
    let _permit = permits.acquire().await.expect("the KDF semaphore is never closed");
    tokio::task::spawn_blocking(f).await
}

pub(super) fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified for unknown users so they cost the same as known ones.
pub(super) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 16]>())).expect("argon2 hashes"))
}
