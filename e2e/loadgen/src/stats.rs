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
    pub server_peak_rss_mib: Option<f64>,
    pub server_cpu_s: Option<f64>,
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
        row("LMTP latency", fmt_lat(&self.lmtp));
        row("POP3 login", fmt_lat(&self.pop3_login));
        row("POP3 STAT", fmt_lat(&self.pop3_stat));
        row("POP3 RETR", fmt_lat(&self.pop3_retr));
        row("POP3 QUIT (commit)", fmt_lat(&self.pop3_quit));
        row("POP3 whole session", fmt_lat(&self.pop3_session));
        row("found / deleted", format!("{} / {}", self.messages_found, self.messages_deleted));
        row("errors", if self.errors.0.is_empty() { "none".into() } else { format!("{:?}", self.errors.0) });
        row("reconnects", self.reconnects.to_string());
        row(
            "server",
            match (self.server_peak_rss_mib, self.server_cpu_s) {
                (Some(r), Some(c)) => format!("peak RSS {r:.1} MiB, CPU {c:.1} s"),
                _ => "-".into(),
            },
        );
        t
    }
}
