//! Which addresses are accounts (and their quota overrides), remembered for a few seconds.
//!
//! Every delivery asks twice (at RCPT, and again before the commit in case the account was
//! deleted meanwhile); on Cassandra those two reads cost about as much as the message's own
//! writes. A "yes" is kept for `ttl`; a "no" is never kept, so a new account receives mail at
//! once. An account deleted through this server is forgotten at once. One deleted through another
//! server may still receive mail here for up to `ttl` (as it could before, between the check and
//! the commit): nobody can read it, and creating the address again clears it (see `put_user`).
//! Repair does not delete it: an account missing from one datacenter's replica after a partition
//! would look the same, and repair never deletes mail on a read that may be stale.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{MailStore, Result};

/// Bounds memory under a flood of distinct recipients; past it, expired entries go first.
const MAX_ENTRIES: usize = 100_000;

/// What a delivery needs to know of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account's own quota in octets, if it has one.
    pub quota: Option<u64>,
}

pub struct KnownAccounts {
    ttl: Duration,
    seen: Mutex<HashMap<String, (Instant, AccountInfo)>>,
}

impl KnownAccounts {
    /// `ttl` zero: every question goes to the store.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, seen: Mutex::new(HashMap::new()) }
    }

    /// Whether `mailbox` is an account, from memory when it was one less than `ttl` ago.
    pub async fn exists(&self, store: &dyn MailStore, mailbox: &str) -> Result<bool> {
        Ok(self.lookup(store, mailbox).await?.is_some())
    }

    /// The account `mailbox`, if it is one, from memory when it was one less than `ttl` ago.
    pub async fn lookup(&self, store: &dyn MailStore, mailbox: &str) -> Result<Option<AccountInfo>> {
        if let Some(info) = self.fresh(mailbox) {
            return Ok(Some(info));
        }
        let found = store.get_account(mailbox).await?.map(|a| AccountInfo { quota: a.quota });
        let mut seen = self.seen.lock().expect("cache lock");
        match found {
            None => {
                seen.remove(mailbox);
            }
            Some(info) if !self.ttl.is_zero() => {
                if seen.len() >= MAX_ENTRIES {
                    let ttl = self.ttl;
                    seen.retain(|_, (at, _)| at.elapsed() < ttl);
                    if seen.len() >= MAX_ENTRIES {
                        seen.clear();
                    }
                }
                seen.insert(mailbox.to_owned(), (Instant::now(), info));
            }
            Some(_) => {}
        }
        Ok(found)
    }

    /// Drops what is known of `mailbox` (its account is being deleted).
    pub fn forget(&self, mailbox: &str) {
        self.seen.lock().expect("cache lock").remove(mailbox);
    }

    fn fresh(&self, mailbox: &str) -> Option<AccountInfo> {
        let seen = self.seen.lock().expect("cache lock");
        seen.get(mailbox).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, info)| *info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::Account;

    fn account(address: &str) -> Account {
        Account { address: address.into(), password_hash: "x".into(), scram_sha256: None, quota: None }
    }

    #[tokio::test]
    async fn remembers_yes_for_ttl_never_no_and_forgets_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let known = KnownAccounts::new(Duration::from_secs(3600));
        assert!(!known.exists(&store, "a@x").await.unwrap());
        store.put_account(&account("a@x")).await.unwrap();
        assert!(known.exists(&store, "a@x").await.unwrap(), "a no is not remembered");
        store.delete_account("a@x").await.unwrap();
        assert!(known.exists(&store, "a@x").await.unwrap(), "a yes is remembered");
        known.forget("a@x");
        assert!(!known.exists(&store, "a@x").await.unwrap());
    }

    #[tokio::test]
    async fn zero_ttl_always_asks_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let known = KnownAccounts::new(Duration::ZERO);
        store.put_account(&account("a@x")).await.unwrap();
        assert!(known.exists(&store, "a@x").await.unwrap());
        store.delete_account("a@x").await.unwrap();
        assert!(!known.exists(&store, "a@x").await.unwrap());
    }
}
