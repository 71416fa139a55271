//! Prometheus metrics (OpenMetrics text at the admin and ops listeners' `/metrics`).
//!
//! Names follow Prometheus conventions: the unit is in the name (`_seconds`, `_octets` for
//! message sizes as POP3 counts them), counters are registered without `_total` (the encoder
//! appends it). Labels are fixed strings, never an address or a mailbox, so the series count
//! does not grow with the user base.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets for mail work, in seconds: a cached login or an embedded-store read takes
/// about a millisecond, a cross-node Cassandra write tens of ms, a KDF login tens to hundreds, a
/// big message's commit or a store timeout (the driver's default is 12 s) seconds.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A labelled histogram family with [`LATENCY_BUCKETS`].
pub type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_family<L: Clone + std::hash::Hash + Eq>() -> LatencyFamily<L> {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: &'static str,
}

/// `protocol`: the listener or upgrade (`pop3` STLS, `pop3s` implicit, `lmtp` STARTTLS);
/// `result`: `ok`, `timeout` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    pub protocol: &'static str,
    pub result: &'static str,
}

/// `mechanism`: `password` (USER/PASS, AUTH PLAIN, AUTH LOGIN), `scram` or `bearer`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub mechanism: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    pub mechanism: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub backend: &'static str,
    pub operation: &'static str,
}

/// `kind`: `timeout`, `unavailable`, `overloaded`, `misconfigured`, `corrupt` or `other`
/// ([`crate::store::StoreError::kind`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreErrorLabels {
    pub backend: &'static str,
    pub operation: &'static str,
    pub kind: &'static str,
}

/// What the store decorator ([`crate::store::timed`]) records; shared by clones.
#[derive(Clone)]
pub struct StoreMetrics {
    pub duration: LatencyFamily<StoreLabels>,
    pub errors: Family<StoreErrorLabels, Counter>,
    /// Content whose deletion failed: an orphan only `pop3d repair` removes.
    pub orphans: Counter,
    /// When the last such orphan was left (Unix seconds; 0: none since start).
    pub orphan_last: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            duration: latency_family(),
            errors: Default::default(),
            orphans: Default::default(),
            orphan_last: Default::default(),
        }
    }
}

/// Repair runs started through the admin API on this server.
#[derive(Clone, Default)]
pub struct RepairMetrics {
    pub runs: Family<ResultLabel, Counter>,
    pub fixed: Counter,
    /// Every orphan older than this (Unix seconds) was removed by a completed run: the run's
    /// start minus its grace. 0: no run completed since start.
    pub covered_until: Gauge<f64, std::sync::atomic::AtomicU64>,
}

pub struct Metrics {
    pub connections: Family<ProtocolLabel, Counter>,
    pub connections_refused: Family<ProtocolLabel, Counter>,
    pub active_sessions: Family<ProtocolLabel, Gauge>,
    pub logins: Family<ResultLabel, Counter>,
    pub login_duration: LatencyFamily<LoginLabels>,
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    pub retrieved_octets: Counter,
    pub expunged_messages: Counter,
    pub quit_commit_duration: Histogram,
    pub deliveries: Family<ResultLabel, Counter>,
    pub delivered_octets: Counter,
    pub lmtp_transaction_duration: Histogram,
    pub tls_handshakes: Family<TlsLabels, Counter>,
    pub store: StoreMetrics,
    pub repair: RepairMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections: Default::default(),
            connections_refused: Default::default(),
            active_sessions: Default::default(),
            logins: Default::default(),
            login_duration: latency_family(),
            auth_failures: Default::default(),
            retrieved_octets: Default::default(),
            expunged_messages: Default::default(),
            quit_commit_duration: latency_histogram(),
            deliveries: Default::default(),
            delivered_octets: Default::default(),
            lmtp_transaction_duration: latency_histogram(),
            tls_handshakes: Default::default(),
            store: Default::default(),
            repair: Default::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("pop3d");
        r.register("connections", "Accepted connections", self.connections.clone());
        r.register(
            "connections_refused",
            "Connections refused by a connection cap or the PROXY protocol policy",
            self.connections_refused.clone(),
        );
        r.register("active_sessions", "Open sessions", self.active_sessions.clone());
        r.register("logins", "POP3 login attempts by result", self.logins.clone());
        r.register(
            "pop3_login_duration_seconds",
            "POP3 login from credentials to reply (store lookup, KDF, listing; failures include the failure delay)",
            self.login_duration.clone(),
        );
        r.register("auth_failures", "Refused POP3 logins by mechanism and reason", self.auth_failures.clone());
        r.register("retrieved_octets", "Message octets sent by RETR and TOP", self.retrieved_octets.clone());
        r.register("expunged_messages", "Messages removed at QUIT", self.expunged_messages.clone());
        r.register(
            "pop3_quit_commit_duration_seconds",
            "POP3 QUIT with deletions: removing the listing rows (the commit point) to the reply",
            self.quit_commit_duration.clone(),
        );
        r.register("deliveries", "LMTP per-recipient delivery outcomes", self.deliveries.clone());
        r.register("delivered_octets", "Octets stored by LMTP deliveries", self.delivered_octets.clone());
        r.register(
            "lmtp_transaction_duration_seconds",
            "LMTP transaction from the end of DATA to the per-recipient replies (the commit)",
            self.lmtp_transaction_duration.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes (pop3: STLS, pop3s: implicit, lmtp: STARTTLS) by result",
            self.tls_handshakes.clone(),
        );
        self.register_store(r);
    }

    fn register_store(&self, r: &mut Registry) {
        let s = &self.store;
        r.register("store_operation_duration_seconds", "Store calls by backend and operation", s.duration.clone());
        r.register("store_errors", "Failed store calls by backend, operation and kind", s.errors.clone());
        r.register(
            "repair_orphans_left",
            "Message contents whose deletion failed (repair removes them)",
            s.orphans.clone(),
        );
        r.register(
            "repair_orphan_last_timestamp_seconds",
            "When this server last left an orphan for repair (0: none since start)",
            s.orphan_last.clone(),
        );
        let p = &self.repair;
        r.register("repair_runs", "Repair runs through the admin API by result", p.runs.clone());
        r.register("repair_fixed", "Items fixed by repair runs through the admin API", p.fixed.clone());
        r.register(
            "repair_covered_until_timestamp_seconds",
            "Orphans older than this were removed by a completed repair run here (0: none since start)",
            p.covered_until.clone(),
        );
    }

    pub fn protocol(&self, protocol: &'static str) -> ProtocolLabel {
        ProtocolLabel { protocol }
    }

    pub fn tls_handshake(&self, protocol: &'static str, result: &std::io::Result<()>) {
        let result = match result {
            Ok(()) => "ok",
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "timeout",
            Err(_) => "failed",
        };
        self.tls_handshakes.get_or_create(&TlsLabels { protocol, result }).inc();
    }
}

/// Now as Unix seconds, for the timestamp gauges.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
