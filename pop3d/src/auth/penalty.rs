//! The failure back-off: a delay before a failed login's reply, growing per client IP and per
//! target account, never applied to a success (so an attacker slows only themselves and the
//! owner is never locked out).
//!
//! A success clears only what it disproves: the failures that IP made on *that* account (the
//! owner's own typos). It used to clear the IP's whole count, so an attacker who logged into an
//! account of their own between guesses kept every guess at the base delay.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_DELAY: Duration = Duration::from_secs(15);
/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(900);
/// Accounts remembered per IP (and IPs per account): bounded memory under a spray.
const TRACKED: usize = 64;
/// Entries per map before old ones are pruned.
const MAX_ENTRIES: usize = 100_000;

/// One client IP's recent failures.
#[derive(Default)]
struct IpFailures {
    total: u32,
    /// Failures per account name; those beyond [`TRACKED`] names count in `total` only, and so
    /// are never cleared by a success.
    by_account: HashMap<String, u32>,
    last: Option<Instant>,
}

/// Failures on one account, counted once per client IP: the per-IP count already slows a single
/// source down, this one slows guessing spread over many sources.
#[derive(Default)]
struct AccountFailures {
    ips: HashSet<IpAddr>,
    /// IPs beyond the remembered ones.
    more: u32,
    last: Option<Instant>,
}

pub struct Penalties {
    base: Duration,
    by_ip: Mutex<HashMap<IpAddr, IpFailures>>,
    by_account: Mutex<HashMap<String, AccountFailures>>,
}

fn stale(last: Option<Instant>, now: Instant) -> bool {
    last.is_some_and(|t| now.duration_since(t) > MEMORY)
}

impl Penalties {
    pub fn new(base: Duration) -> Self {
        Self { base, by_ip: Default::default(), by_account: Default::default() }
    }

    /// Counts a failure of `ip` on `account` (a normalised name, or the raw one lower-cased) and
    /// returns the delay to apply: the base, doubling per failure from the IP or per IP failing
    /// on the account, whichever is more, capped at 15 s.
    pub fn failure(&self, ip: IpAddr, account: &str, now: Instant) -> Duration {
        let by_ip = {
            let mut map = self.by_ip.lock().unwrap();
            if map.len() > MAX_ENTRIES {
                map.retain(|_, f| !stale(f.last, now));
            }
            let f = map.entry(ip).or_default();
            if stale(f.last, now) {
                *f = IpFailures::default();
            }
            f.last = Some(now);
            f.total += 1;
            if f.by_account.len() < TRACKED || f.by_account.contains_key(account) {
                *f.by_account.entry(account.to_owned()).or_default() += 1;
            }
            f.total
        };
        let by_account = if account.is_empty() {
            0
        } else {
            let mut map = self.by_account.lock().unwrap();
            if map.len() > MAX_ENTRIES {
                map.retain(|_, a| !stale(a.last, now));
            }
            let a = map.entry(account.to_owned()).or_default();
            if stale(a.last, now) {
                *a = AccountFailures::default();
            }
            a.last = Some(now);
            if !a.ips.contains(&ip) {
                if a.ips.len() < TRACKED {
                    a.ips.insert(ip);
                } else {
                    a.more += 1;
                }
            }
            a.ips.len() as u32 + a.more
        };
        let factor = 1u32 << (by_ip.max(by_account).max(1) - 1).min(16);
        self.base.saturating_mul(factor).min(MAX_DELAY)
    }

    /// `ip` logged into `account`: its earlier failures on that account were the owner's typos.
    pub fn success(&self, ip: IpAddr, account: &str) {
        let mut map = self.by_ip.lock().unwrap();
        if let Some(f) = map.get_mut(&ip) {
            if let Some(n) = f.by_account.remove(account) {
                f.total = f.total.saturating_sub(n);
            }
            if f.total == 0 {
                map.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    #[test]
    fn delay_doubles_per_ip_and_is_capped() {
        let p = Penalties::new(Duration::from_secs(1));
        let (ip, now) = (IpAddr::from([10, 0, 0, 1]), Instant::now());
        let delays: Vec<u64> = (0..6).map(|i| secs(p.failure(ip, &format!("u{i}@x.test"), now))).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 15, 15]);
        assert_eq!(secs(p.failure(IpAddr::from([10, 0, 0, 2]), "new@x.test", now)), 1, "penalties are per IP");
    }

    #[test]
    fn guessing_one_account_from_many_ips_grows_the_account_count() {
        let p = Penalties::new(Duration::from_secs(1));
        let now = Instant::now();
        let spread: Vec<u64> =
            (0..4).map(|i| secs(p.failure(IpAddr::from([10, 1, 0, i]), "victim@x.test", now))).collect();
        assert_eq!(spread, vec![1, 2, 4, 8]);
    }

    #[test]
    fn a_success_on_another_account_does_not_reset_the_guessing_delay() {
        let p = Penalties::new(Duration::from_secs(1));
        let (ip, now) = (IpAddr::from([10, 2, 0, 1]), Instant::now());
        let mut delays = Vec::new();
        for _ in 0..4 {
            delays.push(secs(p.failure(ip, &format!("victim{}@x.test", delays.len()), now)));
            p.success(ip, "attacker@x.test");
        }
        assert_eq!(delays, vec![1, 2, 4, 8], "the attacker's own logins must not clear the count");
    }

    #[test]
    fn a_success_clears_the_owners_own_typos_only() {
        let p = Penalties::new(Duration::from_secs(1));
        let (ip, now) = (IpAddr::from([10, 3, 0, 1]), Instant::now());
        p.failure(ip, "other@x.test", now);
        p.failure(ip, "alice@x.test", now);
        p.failure(ip, "alice@x.test", now);
        p.success(ip, "alice@x.test");
        // One failure (on other@) is left, so the next is the second.
        assert_eq!(secs(p.failure(ip, "bob@x.test", now)), 2);
    }

    #[test]
    fn old_failures_are_forgotten() {
        let p = Penalties::new(Duration::from_secs(1));
        let (ip, now) = (IpAddr::from([10, 4, 0, 1]), Instant::now());
        for _ in 0..5 {
            p.failure(ip, "a@x.test", now);
        }
        assert_eq!(secs(p.failure(ip, "b@x.test", now + MEMORY + Duration::from_secs(1))), 1);
    }
}
