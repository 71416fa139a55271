//! Connection caps per listener (a total and a per-client-IP count, released on drop) and the
//! per-session command rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Held for the life of a connection.
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    /// None until the client address is known (behind a PROXY header).
    ip: Option<IpAddr>,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_ip, state: Mutex::new(Counts::default()) })
    }

    /// Checks and counts in one critical section, so two racing connections cannot both pass.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionPermit> {
        let mut s = self.state.lock().unwrap();
        let for_ip = s.per_ip.get(&ip).copied().unwrap_or(0);
        if s.total >= self.max_total || for_ip >= self.max_per_ip {
            return None;
        }
        s.total += 1;
        s.per_ip.insert(ip, for_ip + 1);
        Some(ConnectionPermit { limiter: self.clone(), ip: Some(ip) })
    }

    /// Counts toward the total only; the per-IP count follows with [`ConnectionPermit::bind_ip`]
    /// once a PROXY header has told the real client address.
    pub fn try_acquire_total(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let mut s = self.state.lock().unwrap();
        if s.total >= self.max_total {
            return None;
        }
        s.total += 1;
        Some(ConnectionPermit { limiter: self.clone(), ip: None })
    }
}

impl ConnectionPermit {
    /// Counts this connection for `ip`; false (and nothing counted) when that IP is at its cap.
    pub fn bind_ip(&mut self, ip: IpAddr) -> bool {
        debug_assert!(self.ip.is_none());
        let mut s = self.limiter.state.lock().unwrap();
        let for_ip = s.per_ip.entry(ip).or_insert(0);
        if *for_ip >= self.limiter.max_per_ip {
            return false;
        }
        *for_ip += 1;
        drop(s);
        self.ip = Some(ip);
        true
    }
}

/// A token bucket over commands. A session that sends more than the rate (after a burst of
/// `BURST_SECONDS` worth) is not cut off but slowed down: its input is read later. Pipelined
/// commands are counted after they ran, so the debt is paid before the next read.
pub struct CommandRate {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

const BURST_SECONDS: f64 = 10.0;

impl CommandRate {
    /// `per_second` 0 means no limit.
    pub fn new(per_second: u32, now: Instant) -> Self {
        let per_second = f64::from(per_second);
        let burst = per_second * BURST_SECONDS;
        Self { per_second, burst, tokens: burst, last: now }
    }

    /// Counts `commands` more and returns how long to wait before reading input again.
    pub fn take(&mut self, commands: u64, now: Instant) -> Duration {
        if self.per_second == 0.0 {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst) - commands as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut s = self.limiter.state.lock().unwrap();
        s.total -= 1;
        let Some(ip) = self.ip else { return };
        if let Some(n) = s.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_ip_and_total_and_releases_on_drop() {
        let l = ConnectionLimiter::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none(), "per-IP cap");
        let _p3 = l.try_acquire(b).unwrap();
        assert!(l.try_acquire(b).is_none(), "total cap");
        drop(p1);
        assert!(l.try_acquire(a).is_some());
    }

    #[test]
    fn proxied_connections_count_per_ip_once_known() {
        let l = ConnectionLimiter::new(3, 1);
        let a: IpAddr = [10, 0, 0, 1].into();
        let mut p1 = l.try_acquire_total().unwrap();
        assert!(p1.bind_ip(a));
        let mut p2 = l.try_acquire_total().unwrap();
        assert!(!p2.bind_ip(a), "per-IP cap applies to the address from the header");
        assert!(l.try_acquire(a).is_none());
        drop(p2);
        drop(p1);
        let _z = l.try_acquire(a).unwrap();
        let _x = l.try_acquire_total().unwrap();
        let _y = l.try_acquire_total().unwrap();
        assert!(l.try_acquire_total().is_none(), "total cap");
    }

    #[test]
    fn command_rate_allows_a_burst_then_paces() {
        let t0 = Instant::now();
        let mut r = CommandRate::new(10, t0);
        assert_eq!(r.take(100, t0), Duration::ZERO, "a burst of 10 s worth passes");
        assert_eq!(r.take(20, t0), Duration::from_secs(2));
        // after waiting the debt off, one second buys ten more
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(r.take(10, t1), Duration::ZERO);
        assert_eq!(r.take(1, t1), Duration::from_millis(100));
        let mut free = CommandRate::new(0, t0);
        assert_eq!(free.take(1_000_000, t0), Duration::ZERO);
    }
}
