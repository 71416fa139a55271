//! Prometheus metrics and the operator's own HTTP endpoints: `/metrics`, `/healthz` (the process
//! runs) and `/readyz` (the controller is running, or standing by for the lease).
//!
//! Labels are fixed strings (result, error kind, action), never object names: a fleet of
//! resources must not blow up the series count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    /// By result (`ok`, `error`): a failing reconcile often ends early, and would pull an
    /// unlabelled histogram down just when it matters.
    pub duration: Family<ResultLabels, Histogram, fn() -> Histogram>,
    /// Writes the operator made: server-side applies, deletions, status writes, keyspace DDL.
    pub writes: Family<ActionLabels, Counter>,
    pub leader: Gauge,
    /// Set once the controller (or the standby loop waiting for the lease) runs.
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("popfleet_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register("reconciles", "Reconciles of Pop3Clusters by result", reconciles.clone());
        let failures = Family::<ErrorLabels, Counter>::default();
        registry.register("reconcile_failures", "Failed reconciles by kind of error", failures.clone());
        // 10 ms .. 20 s: a settled cluster reconciles in a few API calls; keyspace DDL on a
        // cross-DC Cassandra waits for schema agreement, seconds.
        let duration: Family<ResultLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.01, 2.0, 12)));
        registry.register("reconcile_duration_seconds", "Duration of one reconcile by result", duration.clone());
        let writes = Family::<ActionLabels, Counter>::default();
        registry.register("writes", "Writes to the API server and Cassandra by action", writes.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this instance holds the lease (or runs without election)", leader.clone());
        Metrics { registry, reconciles, failures, duration, writes, leader, ready: AtomicBool::new(false) }
    }
}

impl Metrics {
    pub fn write(&self, action: &'static str) {
        self.writes.get_or_create(&ActionLabels { action }).inc();
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (StatusCode::OK, [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
}

async fn readyz(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(addr: SocketAddr, metrics_state: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(metrics_state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_fixed_labels() {
        let m = Metrics::default();
        m.reconciles.get_or_create(&ResultLabels { result: "ok" }).inc();
        m.failures.get_or_create(&ErrorLabels { error: "cassandra" }).inc();
        m.write("apply");
        m.duration.get_or_create(&ResultLabels { result: "error" }).observe(0.3);
        let text = m.encode();
        assert!(text.contains("# TYPE popfleet_operator_reconcile_duration_seconds histogram"), "{text}");
        assert!(
            text.contains("popfleet_operator_reconcile_duration_seconds_bucket{le=\"0.16\",result=\"error\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("popfleet_operator_reconcile_duration_seconds_bucket{le=\"0.32\",result=\"error\"} 1"),
            "{text}"
        );
        assert!(text.contains("popfleet_operator_reconcile_duration_seconds_count{result=\"error\"} 1"), "{text}");
        assert!(text.contains("popfleet_operator_reconciles_total{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("popfleet_operator_reconcile_failures_total{error=\"cassandra\"} 1"));
        assert!(text.contains("popfleet_operator_writes_total{action=\"apply\"} 1"));
    }
}
