//! Latency histograms, error counts and the run's report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, 1 µs .. 10 min, 3 significant digits.
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    /// Two significant digits: enough for a chart's p99 and a tenth of the memory, which matters
    /// with one histogram per timeline interval.
    pub fn coarse() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record(d.as_micros().max(1) as u64);
    }

    pub fn summary(&self) -> Option<LatencySummary> {
        if self.0.is_empty() {
            return None;
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Some(LatencySummary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Errors by kind ("lmtp 451", "pop3 connect", ...).
#[derive(Default, Debug, Clone, Serialize)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, kind: impl Into<String>) {
        *self.0.entry(kind.into()).or_default() += 1;
    }
    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Default width of one timeline interval (`--interval`).
pub const INTERVAL: Duration = Duration::from_secs(10);

struct Bucket {
    latency: Latency,
    errors: u64,
}

/// Deliveries by the interval in which they completed (not in which they were due), so a chart
/// of mail/s and p99 over time shows when the target fell behind and when it caught up.
pub struct Timeline {
    width: Duration,
    buckets: Vec<Bucket>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new(INTERVAL)
    }
}

impl Timeline {
    /// Intervals of `width` (at least 1 ms: a zero width would put everything in one bucket).
    pub fn new(width: Duration) -> Self {
        Self { width: width.max(Duration::from_millis(1)), buckets: Vec::new() }
    }

    fn bucket(&mut self, at: Duration) -> &mut Bucket {
        let i = (at.as_millis() / self.width.as_millis()) as usize;
        while self.buckets.len() <= i {
            self.buckets.push(Bucket { latency: Latency::coarse(), errors: 0 });
        }
        &mut self.buckets[i]
    }

    /// A delivery that completed `at` after the start of the phase and took `latency`.
    pub fn delivered(&mut self, at: Duration, latency: Duration) {
        self.bucket(at).latency.record(latency);
    }

    pub fn failed(&mut self, at: Duration) {
        self.bucket(at).errors += 1;
    }

    /// Every interval up to `elapsed`, empty ones included: a stall with no completion at all is
    /// exactly what the chart must show.
    pub fn intervals(&self, elapsed: Duration) -> Vec<Interval> {
        let width = self.width.as_secs_f64();
        let n = self.buckets.len().max((elapsed.as_secs_f64() / width).ceil() as usize);
        (0..n)
            .map(|i| {
                let t_s = i as f64 * width;
                // The last interval is usually partial; its rate is over the time it covered.
                let seconds = (elapsed.as_secs_f64() - t_s).clamp(1e-3, width);
                let (summary, errors) = match self.buckets.get(i) {
                    Some(b) => (b.latency.summary(), b.errors),
                    None => (None, 0),
                };
                let delivered = summary.as_ref().map_or(0, |l| l.count);
                Interval {
                    t_s,
                    seconds,
                    delivered,
                    delivered_per_s: delivered as f64 / seconds,
                    p50_ms: summary.as_ref().map(|l| l.p50_ms),
                    p99_ms: summary.map(|l| l.p99_ms),
                    errors,
                }
            })
            .collect()
    }
}

/// One point of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    /// Where the interval starts, in seconds into the delivery phase (the x of
    /// e2e/bench_reference.py's chart).
    pub t_s: f64,
    /// Its length: `INTERVAL`, except for the last one, cut where the phase ended.
    pub seconds: f64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    /// Of the deliveries completed in the interval; null when none did.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: u64,
}

/// One rate tried by `search`.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub offered_per_s: f64,
    pub delivered_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub errors: u64,
    pub sustained: bool,
}

/// Everything one run measured; printed as JSON and as a table.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub target_rate: f64,
    pub duration_s: f64,
    pub users: usize,
    pub size_mix: String,
    pub attempted: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub delivered_mib_per_s: f64,
    pub lmtp: Option<LatencySummary>,
    /// LMTP latency of the messages of at most 1 MiB (`scenario::SMALL_MESSAGE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lmtp_up_to_1mib: Option<LatencySummary>,
    pub pop3_login: Option<LatencySummary>,
    pub pop3_stat: Option<LatencySummary>,
    pub pop3_retr: Option<LatencySummary>,
    pub pop3_quit: Option<LatencySummary>,
    pub pop3_session: Option<LatencySummary>,
    pub messages_found: u64,
    pub messages_deleted: u64,
    pub errors: Errors,
    /// Deliveries sent again on a new connection because the server had closed a pooled one
    /// before taking them (not errors: nothing had been accepted).
    pub reconnects: u64,
    /// Deliveries sent again after a temporary failure (`--retries`), as an MTA does.
    pub mta_retries: u64,
    /// Of those, the ones the server recognised as stored already (answered 250, no second copy).
    pub retries_absorbed: u64,
    pub server_peak_rss_mib: Option<f64>,
    pub server_cpu_s: Option<f64>,
    /// Deliveries per interval of the delivery phase (`--interval`, 10 s unless set).
    pub timeline: Vec<Interval>,
    /// Search only: every rate tried, in the order tried (the rate-versus-p99 curve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_trials: Option<Vec<Trial>>,
    /// LWT baseline only: allocations tried again because another Paxos round won the mailbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lwt_retries: Option<u64>,
    /// LWT baseline only: Cassandra timeouts at SERIAL or LOCAL_SERIAL (also counted in errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_timeouts: Option<u64>,
}

fn fmt_lat(l: &Option<LatencySummary>) -> String {
    match l {
        Some(l) => {
            format!("p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  (n={})", l.p50_ms, l.p99_ms, l.max_ms, l.count)
        }
        None => "-".into(),
    }
}

impl Report {
    pub fn table(&self) -> String {
        // The baseline has no protocol: its rows are named for what was timed.
        let lwt = self.lwt_retries.is_some();
        let mut t = String::new();
        let mut row = |k: &str, v: String| t.push_str(&format!("  {k:<22} {v}\n"));
        row("run", self.label.clone());
        row(
            "target",
            format!(
                "{:.0} mail/s for {:.0} s to {} users, sizes {}",
                self.target_rate, self.duration_s, self.users, self.size_mix
            ),
        );
        row(
            "delivered",
            format!(
                "{} of {} ({:.1} mail/s, {:.2} MiB/s)",
                self.delivered, self.attempted, self.delivered_per_s, self.delivered_mib_per_s
            ),
        );
        row(if lwt { "delivery (LWT txn)" } else { "LMTP latency" }, fmt_lat(&self.lmtp));
        if self.lmtp_up_to_1mib.is_some() {
            row("  messages <= 1 MiB", fmt_lat(&self.lmtp_up_to_1mib));
        }
        row("POP3 login", fmt_lat(&self.pop3_login));
        row("POP3 STAT", fmt_lat(&self.pop3_stat));
        row("POP3 RETR", fmt_lat(&self.pop3_retr));
        row("POP3 QUIT (commit)", fmt_lat(&self.pop3_quit));
        row(if lwt { "read session (LWT)" } else { "POP3 whole session" }, fmt_lat(&self.pop3_session));
        row("found / deleted", format!("{} / {}", self.messages_found, self.messages_deleted));
        row("errors", if self.errors.0.is_empty() { "none".into() } else { format!("{:?}", self.errors.0) });
        if let (Some(retries), Some(timeouts)) = (self.lwt_retries, self.serial_timeouts) {
            // Only the LWT baseline (lwt_baseline.rs) reports these: counts of its own Paxos timeouts.
            row("LWT retries (baseline)", retries.to_string());
            row("serial-level timeouts (baseline)", timeouts.to_string());
        }
        row("reconnects", self.reconnects.to_string());
        if self.mta_retries > 0 {
            row("MTA retries", format!("{} ({} already stored: absorbed)", self.mta_retries, self.retries_absorbed));
        }
        row(
            "server",
            match (self.server_peak_rss_mib, self.server_cpu_s) {
                (Some(r), Some(c)) => format!("peak RSS {r:.1} MiB, CPU {c:.1} s"),
                _ => "-".into(),
            },
        );
        let per_interval = |f: &dyn Fn(&Interval) -> String| self.timeline.iter().map(f).collect::<Vec<_>>().join(" ");
        let width = self.timeline.first().map_or(0.0, |i| i.seconds);
        if self.timeline.len() > 1 {
            row(&format!("per {width} s: mail/s"), per_interval(&|i| format!("{:.0}", i.delivered_per_s)));
            row(
                &format!("per {width} s: p99 ms"),
                per_interval(&|i| i.p99_ms.map_or("-".into(), |p| format!("{p:.0}"))),
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_by_completion_with_empty_and_partial_intervals() {
        let mut t = Timeline::default();
        let ms = Duration::from_millis;
        for k in 0..100 {
            t.delivered(ms(k * 50), ms(5 + k % 10));
        }
        t.failed(ms(9_999));
        // Nothing completes between 10 and 20 s, then one slow delivery at 25 s.
        t.delivered(ms(25_000), ms(3_000));
        let iv = t.intervals(ms(25_500));
        assert_eq!(iv.len(), 3);
        assert_eq!((iv[0].delivered, iv[0].errors), (100, 1));
        assert_eq!(iv[0].delivered_per_s, 10.0);
        assert!((14.0..=15.0).contains(&iv[0].p99_ms.unwrap()), "{:?}", iv[0].p99_ms);
        assert_eq!((iv[1].delivered, iv[1].p99_ms), (0, None), "the stall shows as an empty interval");
        assert_eq!((iv[2].t_s, iv[2].seconds, iv[2].delivered), (20.0, 5.5, 1));
        assert!((iv[2].p99_ms.unwrap() - 3000.0).abs() < 60.0);
        // A phase longer than its last completion still gets its trailing intervals.
        assert_eq!(Timeline::default().intervals(ms(20_000)).len(), 2);
    }

    #[test]
    fn timeline_of_one_second_intervals() {
        let mut t = Timeline::new(Duration::from_secs(1));
        let ms = Duration::from_millis;
        // 1.5 s of completions, 10 ms each, then one of 200 ms in the second interval.
        for k in 0..15 {
            t.delivered(ms(k * 100), ms(10));
        }
        t.delivered(ms(1_950), ms(200));
        let iv = t.intervals(ms(2_000));
        assert_eq!(iv.len(), 2);
        assert_eq!((iv[0].t_s, iv[0].seconds, iv[0].delivered), (0.0, 1.0, 10));
        assert_eq!((iv[1].t_s, iv[1].delivered), (1.0, 6));
        assert!((iv[0].p50_ms.unwrap() - 10.0).abs() < 0.2, "{:?}", iv[0].p50_ms);
        assert!((iv[1].p99_ms.unwrap() - 200.0).abs() < 2.0, "{:?}", iv[1].p99_ms);
        assert!((iv[1].p50_ms.unwrap() - 10.0).abs() < 0.2, "the median of 6 is one of the five fast ones");
    }
}
