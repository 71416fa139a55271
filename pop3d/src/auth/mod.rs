//! Logins: argon2id password hashes with an in-memory cache so polling clients do not pay the
//! KDF on every login, SCRAM-SHA-256 keys, OAuth bearer tokens, and a failure delay that grows
//! per client IP and per account.
//!
//! Unknown users and wrong passwords take the same path (a dummy hash is verified, decoy SCRAM
//! keys are served for unknown users) and produce the same reply, so neither the text nor the
//! timing tells them apart. Decoy salts derive from a secret kept in the store, so an unknown
//! user's salt is the same on every replica and across restarts, like a real one. The delay
//! ([`penalty`]) is applied only to failures, so an attacker hammering an account slows
//! themselves down but never locks the owner out: the right password still works at once.
//!
//! Everything about who a client is lives in this folder:
//! - this file: [`Authenticator`], the one entry point (password, SCRAM keys, bearer token) with
//!   its login cache and decoys;
//! - [`password`](hash_password): argon2id hashing and verification, the KDF semaphore;
//! - [`penalty`]: the failure delay per IP and per account;
//! - [`bearer`]: JWT validation against the JWKS file (OAUTHBEARER, XOAUTH2);
//! - [`sasl`]: the mechanisms' wire formats (PLAIN, SCRAM-SHA-256, OAUTHBEARER, XOAUTH2), pure
//!   and I/O-free, so the POP3 engine (`pop3::authorization`) may use them.

pub mod bearer;
mod password;
mod penalty;
pub mod sasl;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::address::normalise;
use crate::auth::bearer::BearerValidator;
use crate::auth::sasl::scram::ScramKeys;
use crate::metrics::AuthFailureLabels;
use crate::store::MailStore;
use password::{dummy_hash, verify_password};
pub use password::{hash_password, new_account, run_kdf, MAX_PASSWORD_LEN};
use penalty::Penalties;

const CACHE_TTL: Duration = Duration::from_secs(300);
/// The store's name of the decoy-salt key.
const DECOY_SECRET: &str = "scram_decoy";
/// How long the decoy key is used before it is read again: the first servers of a new cluster
/// may each have made their own for a moment (see [`MailStore::server_secret`]).
const DECOY_SECRET_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The normalised mailbox address.
    Ok(String),
    BadCredentials,
    TempFail,
}

struct CacheEntry {
    password_hash: String,
    digest: [u8; 32],
    expires: Instant,
}

pub struct Authenticator {
    store: Arc<dyn MailStore>,
    /// Keys the cache digests, so the digests without this key (say, in a log or a partial dump)
    /// are no fast password oracle. A dump of the whole process holds the key too and is one, for
    /// accounts that logged in within the cache's lifetime (docs/security.md, residual risk 17).
    cache_key: [u8; 32],
    /// The store's decoy-salt key and when it was read.
    decoy_key: Mutex<Option<([u8; 32], Instant)>>,
    /// PBKDF2 iterations announced for decoys: those of new accounts.
    scram_iterations: u32,
    cache: Mutex<HashMap<String, CacheEntry>>,
    penalties: Penalties,
    bearer: Option<Arc<BearerValidator>>,
    /// `pop3d_auth_failures_total`: why logins were refused, which the reply never says.
    failures: Family<AuthFailureLabels, Counter>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn MailStore>, base_delay: Duration, scram_iterations: u32) -> Self {
        Self {
            store,
            cache_key: rand::random(),
            decoy_key: Mutex::new(None),
            scram_iterations,
            cache: Mutex::new(HashMap::new()),
            penalties: Penalties::new(base_delay),
            bearer: None,
            failures: Family::default(),
        }
    }

    /// Counts refusals by mechanism and reason in `failures` (the server's registered family).
    pub fn with_failure_metrics(mut self, failures: Family<AuthFailureLabels, Counter>) -> Self {
        self.failures = failures;
        self
    }

    /// A refusal, counted with its reason. The client sees the same reply and delay for each.
    fn refused(&self, mechanism: &'static str, reason: &'static str) -> AuthOutcome {
        self.failures.get_or_create(&AuthFailureLabels { mechanism, reason }).inc();
        AuthOutcome::BadCredentials
    }

    /// The store could not be asked: counted as the reason `store_error`.
    fn store_failed(&self, mechanism: &'static str, e: &crate::store::StoreError) -> AuthOutcome {
        tracing::warn!(error = %e, "account lookup failed");
        self.failures.get_or_create(&AuthFailureLabels { mechanism, reason: "store_error" }).inc();
        AuthOutcome::TempFail
    }

    /// Enables OAUTHBEARER/XOAUTH2 with this token validator.
    pub fn with_bearer(mut self, validator: Arc<BearerValidator>) -> Self {
        self.bearer = Some(validator);
        self
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
        self.settle(ip, user, outcome).await
    }

    /// Applies the failure delay, or on success forgets that IP's failures on that account.
    async fn settle(&self, ip: IpAddr, user: &str, outcome: AuthOutcome) -> AuthOutcome {
        match &outcome {
            AuthOutcome::Ok(address) => self.penalties.success(ip, address),
            AuthOutcome::BadCredentials => tokio::time::sleep(self.record_failure(ip, user)).await,
            AuthOutcome::TempFail => {}
        }
        outcome
    }

    /// The SCRAM-SHA-256 keys to run an exchange with: the account's, or decoys (unknown user,
    /// or an account whose password predates SCRAM) that no password matches.
    pub async fn scram_keys(&self, user: &str) -> Result<ScramKeys, ()> {
        let real = match normalise(user) {
            Ok(address) => match self.store.get_account(&address).await {
                Ok(account) => {
                    account.and_then(|a| a.scram_sha256).and_then(|text| ScramKeys::parse(&text)).ok_or(address)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "account lookup failed");
                    return Err(());
                }
            },
            Err(_) => Err(user.to_owned()),
        };
        // The decoy secret is read only for a decoy, so real logins never depend on it.
        let name = match real {
            Ok(keys) => return Ok(keys),
            Err(name) => name,
        };
        let key = self.decoy_key().await.map_err(|e| tracing::warn!(error = %e, "reading the decoy secret failed"))?;
        Ok(ScramKeys::decoy(&key, &name, self.scram_iterations))
    }

    /// The store's decoy-salt key, read again every [`DECOY_SECRET_TTL`].
    async fn decoy_key(&self) -> crate::store::Result<[u8; 32]> {
        if let Some((key, read)) = *self.decoy_key.lock().unwrap() {
            if read.elapsed() < DECOY_SECRET_TTL {
                return Ok(key);
            }
        }
        let key = self.store.server_secret(DECOY_SECRET).await?;
        *self.decoy_key.lock().unwrap() = Some((key, Instant::now()));
        Ok(key)
    }

    /// Ends a SCRAM exchange the engine has checked: success, or a failure that pays the delay.
    pub async fn finish_scram(&self, ip: IpAddr, user: &str, proven: bool) -> AuthOutcome {
        let outcome = match normalise(user) {
            // Decoy keys cannot be proven, so a proof means the account had real keys.
            Ok(address) if proven => AuthOutcome::Ok(address),
            // An unknown user and a wrong password fail the same proof: one reason.
            Ok(_) => self.refused("scram", "bad_proof"),
            Err(_) => self.refused("scram", "invalid_user"),
        };
        self.settle(ip, user, outcome).await
    }

    /// Validates a bearer token; `user` is the identity the client named, which must match the
    /// token's user claim when given. The account must exist.
    pub async fn authenticate_bearer(&self, ip: IpAddr, user: Option<&str>, token: &str) -> AuthOutcome {
        const M: &str = "bearer";
        let claimed = match self.bearer.as_ref().map(|v| v.validate(token)) {
            Some(Ok(claimed)) => normalise(&claimed).ok(),
            Some(Err(e)) => {
                tracing::info!(%ip, error = %e, "bearer token refused");
                None
            }
            None => None,
        };
        let named_ok = match (user, &claimed) {
            (None, _) => true,
            (Some(u), Some(c)) => normalise(u).ok().as_ref() == Some(c),
            (Some(_), None) => false,
        };
        let outcome = match claimed {
            Some(address) if named_ok => match self.store.get_account(&address).await {
                Ok(Some(account)) => AuthOutcome::Ok(account.address),
                Ok(None) => self.refused(M, "unknown_user"),
                Err(e) => self.store_failed(M, &e),
            },
            Some(_) => self.refused(M, "token_user_mismatch"),
            None => self.refused(M, "invalid_token"),
        };
        self.settle(ip, user.unwrap_or(""), outcome).await
    }

    async fn check(&self, authzid: Option<&str>, user: &str, password: &str) -> AuthOutcome {
        const M: &str = "password";
        let address = normalise(user).ok();
        let authz_ok = match (authzid, &address) {
            (None, _) => true,
            (Some(z), Some(a)) => normalise(z).ok().as_ref() == Some(a),
            (Some(_), None) => false,
        };
        // Refused before the store is asked; the dummy hash below still costs the same time.
        let early = match &address {
            None => Some("invalid_user"),
            Some(_) if !authz_ok => Some("authzid_mismatch"),
            Some(_) if password.len() > MAX_PASSWORD_LEN => Some("password_too_long"),
            Some(_) => None,
        };
        let account = match &address {
            Some(a) if early.is_none() => match self.store.get_account(a).await {
                Ok(account) => account,
                Err(e) => return self.store_failed(M, &e),
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
        let verified = run_kdf(move || verify_password(&candidate, &phc)).await.unwrap_or(false);
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
            Some(_) => self.refused(M, "wrong_password"),
            None => self.refused(M, early.unwrap_or("unknown_user")),
        }
    }

    /// Counts a failure for the IP and the account name; returns the delay to apply.
    fn record_failure(&self, ip: IpAddr, user: &str) -> Duration {
        let account = normalise(user).unwrap_or_else(|_| user.to_ascii_lowercase());
        self.penalties.failure(ip, &account, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    async fn setup() -> (tempfile::TempDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        store.put_account(&new_account("alice@example.com", "s3cret pw", 4096).unwrap()).await.unwrap();
        (dir, Authenticator::new(store, Duration::from_millis(1), 4096))
    }

    /// e2e/bench gives Dovecot hashes of exactly this scheme and cost (POP3D_ARGON2 in bench.py),
    /// so the login figures compare like for like: a change here must be made there too.
    #[test]
    fn hashes_are_argon2id_19_mib_2_passes_1_lane() {
        let phc = hash_password("s3cret pw").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("s3cret pw", &phc) && !verify_password("s3cret", &phc));
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
    async fn refusals_are_counted_by_mechanism_and_reason() {
        let (_dir, auth) = setup().await;
        let failures = Family::<AuthFailureLabels, Counter>::default();
        let auth = auth.with_failure_metrics(failures.clone());
        let ip = IpAddr::from([127, 0, 0, 1]);
        auth.authenticate(ip, None, "alice@example.com", "wrong").await;
        auth.authenticate(ip, None, "bob@example.com", "s3cret pw").await;
        auth.authenticate(ip, None, "not an address", "x").await;
        auth.authenticate(ip, Some("bob@example.com"), "alice@example.com", "s3cret pw").await;
        auth.authenticate(ip, None, "alice@example.com", &"x".repeat(MAX_PASSWORD_LEN + 1)).await;
        auth.finish_scram(ip, "alice@example.com", false).await;
        auth.authenticate_bearer(ip, None, "not a token").await;
        assert!(matches!(auth.authenticate(ip, None, "alice@example.com", "s3cret pw").await, AuthOutcome::Ok(_)));
        let count = |mechanism, reason| failures.get_or_create(&AuthFailureLabels { mechanism, reason }).get();
        for reason in ["wrong_password", "unknown_user", "invalid_user", "authzid_mismatch", "password_too_long"] {
            assert_eq!(count("password", reason), 1, "{reason}");
        }
        assert_eq!(count("scram", "bad_proof"), 1);
        assert_eq!(count("bearer", "invalid_token"), 1);
        assert_eq!(count("password", "store_error"), 0, "a success counts nothing");
    }

    #[tokio::test]
    async fn cache_does_not_accept_an_old_password_after_a_change() {
        let (_dir, auth) = setup().await;
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert!(matches!(auth.authenticate(ip, None, "alice@example.com", "s3cret pw").await, AuthOutcome::Ok(_)));
        auth.store.put_account(&new_account("alice@example.com", "new", 4096).unwrap()).await.unwrap();
        assert_eq!(auth.authenticate(ip, None, "alice@example.com", "s3cret pw").await, AuthOutcome::BadCredentials);
        assert!(matches!(auth.authenticate(ip, None, "alice@example.com", "new").await, AuthOutcome::Ok(_)));
    }

    #[tokio::test]
    async fn right_password_works_at_once_after_many_failures() {
        let (_dir, auth) = setup().await;
        for i in 0..5 {
            let ip = IpAddr::from([10, 2, 0, i]);
            assert_eq!(auth.authenticate(ip, None, "alice@example.com", "guess").await, AuthOutcome::BadCredentials);
        }
        let start = Instant::now();
        let ip = IpAddr::from([10, 3, 0, 1]);
        assert!(matches!(auth.authenticate(ip, None, "alice@example.com", "s3cret pw").await, AuthOutcome::Ok(_)));
        assert!(start.elapsed() < Duration::from_secs(1), "no lockout of the owner");
    }

    #[tokio::test]
    async fn scram_keys_are_real_for_accounts_and_decoys_otherwise() {
        let (_dir, auth) = setup().await;
        let real = auth.scram_keys("Alice@Example.com").await.unwrap();
        assert_eq!(real.stored_key, ScramKeys::derive("s3cret pw", &real.salt, real.iterations).stored_key);
        let decoy = auth.scram_keys("bob@example.com").await.unwrap();
        assert_eq!(decoy, auth.scram_keys("bob@example.com").await.unwrap(), "stable salt for unknown users");
        assert_eq!(decoy.iterations, real.iterations);
        // Another server on the same store (a replica, or this one restarted) offers the same salt.
        let other = Authenticator::new(auth.store.clone(), Duration::from_millis(1), 4096);
        assert_eq!(
            other.scram_keys("bob@example.com").await.unwrap().salt,
            decoy.salt,
            "decoy salts come from the store"
        );
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(auth.finish_scram(ip, "Alice@Example.com", true).await, AuthOutcome::Ok("alice@example.com".into()));
        assert_eq!(auth.finish_scram(ip, "alice@example.com", false).await, AuthOutcome::BadCredentials);
    }
}
