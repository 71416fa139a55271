//! Per-object exponential backoff: kube-runtime requeues with whatever `error_policy` returns
//! and has no per-key backoff of its own, so a flat delay either hammers a broken Cassandra or
//! makes a transient error heal slowly. Failures are counted per object and reset on success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, failures: Mutex::new(HashMap::new()) }
    }

    /// Records a failure of `key` and returns how long to wait before the next attempt:
    /// base, 2×base, 4×base, ... capped at max.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 1u32.checked_shl(n.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }

    pub fn failures(&self, key: &str) -> u32 {
        self.failures.lock().expect("backoff lock").get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets_per_key() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let delays: Vec<u64> = (0..7).map(|_| b.failed("a").as_secs()).collect();
        assert_eq!(delays, vec![2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.failed("b").as_secs(), 2, "keys are independent");
        b.succeeded("a");
        assert_eq!(b.failed("a").as_secs(), 2);
        for _ in 0..100 {
            b.failed("c");
        }
        assert_eq!(b.failed("c").as_secs(), 60, "no overflow");
    }
}
