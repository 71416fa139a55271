//! Password checks: argon2id hashes, an in-memory cache so polling clients do not pay the KDF on
//! every login, and a per-IP failure delay that grows.
//!
//! Unknown users and wrong passwords take the same path (a dummy hash is verified for unknown
//! users) and produce the same reply, so neither the text nor the timing tells them apart.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

use crate::address::normalise;
use crate::store::MailStore;

/// Longest accepted password, to bound hashing work.
pub const MAX_PASSWORD_LEN: usize = 1024;
const CACHE_TTL: Duration = Duration::from_secs(300);
const MAX_DELAY: Duration = Duration::from_secs(15);
/// Penalties older than this are forgotten.
const PENALTY_MEMORY: Duration = Duration::from_secs(900);

#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The normalised mailbox address.
    Ok(String),
    BadCredentials,
    TempFail,
}

/// Hashes a password for storage (argon2id, default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified for unknown users so they cost the same as known ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&hex::encode(rand::random::<[u8; 16]>())).expect("argon2 hashes"))
}

struct CacheEntry {
    password_hash: String,
    digest: [u8; 32],
    expires: Instant,
}

struct Penalty {
    failures: u32,
    last: Instant,
}

pub struct Authenticator {
    store: Arc<dyn MailStore>,
    base_delay: Duration,
    /// Keys the cache digests so a memory dump does not give a fast password oracle.
    cache_key: [u8; 32],
    cache: Mutex<HashMap<String, CacheEntry>>,
    penalties: Mutex<HashMap<IpAddr, Penalty>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn MailStore>, base_delay: Duration) -> Self {
        Self {
            store,
            base_delay,
            cache_key: rand::random(),
            cache: Mutex::new(HashMap::new()),
            penalties: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Checks credentials; on failure sleeps for the current per-IP penalty before returning.
    pub async fn authenticate(&self, ip: IpAddr, authzid: Option<&str>, user: &str, password: &str) -> AuthOutcome {
        let outcome = self.check(authzid, user, password).await;
        match outcome {
            AuthOutcome::Ok(_) => {
                self.penalties.lock().unwrap().remove(&ip);
            }
            AuthOutcome::BadCredentials => tokio::time::sleep(self.record_failure(ip)).await,
            AuthOutcome::TempFail => {}
        }
        outcome
    }

    async fn check(&self, authzid: Option<&str>, user: &str, password: &str) -> AuthOutcome {
        let address = normalise(user).ok();
        let authz_ok = match (authzid, &address) {
            (None, _) => true,
            (Some(z), Some(a)) => normalise(z).ok().as_ref() == Some(a),
            (Some(_), None) => false,
        };
        let account = match &address {
            Some(a) if authz_ok && password.len() <= MAX_PASSWORD_LEN => match self.store.get_account(a).await {
                Ok(account) => account,
                Err(e) => {
                    tracing::warn!(error = %e, "account lookup failed");
                    return AuthOutcome::TempFail;
                }
            },
            _ => None,
        };
        let digest = self.digest(password);
        if let Some(account) = &account {
            let cache = self.cache.lock().unwrap();
            if let Some(hit) = cache.get(&account.address) {
                // A password change alters the stored hash and so misses the cache.
                if hit.password_hash == account.password_hash && hit.digest == digest && hit.expires > Instant::now() {
                    return AuthOutcome::Ok(account.address.clone());
                }
            }
        }
        let phc = account.as_ref().map_or_else(|| dummy_hash().to_owned(), |a| a.password_hash.clone());
        let candidate = password.to_owned();
        let verified = tokio::task::spawn_blocking(move || verify_password(&candidate, &phc)).await.unwrap_or(false);
        match account {
            Some(account) if verified => {
                let mut cache = self.cache.lock().unwrap();
                if cache.len() > 100_000 {
                    let now = Instant::now();
                    cache.retain(|_, e| e.expires > now);
                }
                cache.insert(
                    account.address.clone(),
                    CacheEntry { password_hash: account.password_hash, digest, expires: Instant::now() + CACHE_TTL },
                );
                AuthOutcome::Ok(account.address)
            }
            _ => AuthOutcome::BadCredentials,
        }
    }

    /// Counts a failure and returns the delay to apply: base, doubling per failure, capped at 15 s.
    fn record_failure(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let mut penalties = self.penalties.lock().unwrap();
        if penalties.len() > 100_000 {
            penalties.retain(|_, p| now.duration_since(p.last) < PENALTY_MEMORY);
        }
        let penalty = penalties.entry(ip).or_insert(Penalty { failures: 0, last: now });
        if now.duration_since(penalty.last) > PENALTY_MEMORY {
            penalty.failures = 0;
        }
        penalty.failures += 1;
        penalty.last = now;
        let factor = 1u32 << (penalty.failures - 1).min(16);
        self.base_delay.saturating_mul(factor).min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{embedded::EmbeddedStore, Account};

    async fn setup() -> (tempfile::TempDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let account = Account { address: "alice@example.com".into(), password_hash: hash_password("s3cret pw").unwrap() };
        store.put_account(&account).await.unwrap();
        (dir, Authenticator::new(store, Duration::from_millis(1)))
    }

    #[tokio::test]
    async fn accepts_right_password_in_any_case_of_address() {
        let (_dir, auth) = setup().await;
        let ip = IpAddr::from([127, 0, 0, 1]);
        for _ in 0..2 {
            assert_eq!(
                auth.authenticate(ip, None, "Alice@Example.com", "s3cret pw").await,
                AuthOutcome::Ok("alice@example.com".into())
            );
        }
    }

    #[tokio::test]
    async fn rejects_wrong_password_unknown_user_and_foreign_authzid() {
        let (_dir, auth) = setup().await;
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(auth.authenticate(ip, None, "alice@example.com", "s3cret").await, AuthOutcome::BadCredentials);
        assert_eq!(auth.authenticate(ip, None, "bob@example.com", "s3cret pw").await, AuthOutcome::BadCredentials);
        assert_eq!(auth.authenticate(ip, None, "not an address", "x").await, AuthOutcome::BadCredentials);
        assert_eq!(
            auth.authenticate(ip, Some("bob@example.com"), "alice@example.com", "s3cret pw").await,
            AuthOutcome::BadCredentials
        );
    }

    #[tokio::test]
    async fn cache_does_not_accept_an_old_password_after_a_change() {
        let (_dir, auth) = setup().await;
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert!(matches!(auth.authenticate(ip, None, "alice@example.com", "s3cret pw").await, AuthOutcome::Ok(_)));
        let account = Account { address: "alice@example.com".into(), password_hash: hash_password("new").unwrap() };
        auth.store.put_account(&account).await.unwrap();
        assert_eq!(auth.authenticate(ip, None, "alice@example.com", "s3cret pw").await, AuthOutcome::BadCredentials);
        assert!(matches!(auth.authenticate(ip, None, "alice@example.com", "new").await, AuthOutcome::Ok(_)));
    }

    #[test]
    fn failure_delay_doubles_and_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let auth = Authenticator::new(store, Duration::from_secs(1));
        let ip = IpAddr::from([10, 0, 0, 1]);
        let delays: Vec<u64> = (0..6).map(|_| auth.record_failure(ip).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 15, 15]);
        assert_eq!(auth.record_failure(IpAddr::from([10, 0, 0, 2])).as_secs(), 1, "penalties are per IP");
    }
}
