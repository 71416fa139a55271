//! The popfleet operator: turns a `Pop3Cluster` into per-datacenter pop3d deployments and keeps
//! the Cassandra keyspace's replication and schema in line with it.
//!
//! Layout (after kube-rs/controller-rs):
//! - `controller`: the reconcile loop (finalizer, pause, apply, cleanup, status, events);
//! - `resources`: the child objects, pure functions of the spec (unit tested);
//! - `network_policy`: who may reach which port of the pop3d pods;
//! - `overlay`: the user's pod template overlay, merged by the apiserver;
//! - `admin_token`: the admin API's per-cluster token Secret;
//! - `secret_facts`: what the objects depend on in the Secrets a cluster names;
//! - `secret_watch`: one metadata-only watch per Secret a cluster uses;
//! - `pop3d_config`: the pop3d TOML the ConfigMap carries;
//! - `keyspace`: Cassandra sessions, node counts and the keyspace step (shared code in `schema::cassandra`);
//! - `replication`: which replication change is written and which is held (ADR 10);
//! - `status`: conditions and their transitions;
//! - `backoff`: per-object exponential backoff on errors;
//! - `telemetry`: Prometheus metrics and the health endpoints.

pub mod admin_token;
pub mod backoff;
pub mod children;
pub mod controller;
pub mod keyspace;
pub(crate) mod keyspace_step;
pub mod network_policy;
pub mod overlay;
pub mod pop3d_config;
pub mod replication;
pub mod resources;
pub mod secret_facts;
pub mod secret_watch;
pub mod status;
pub mod telemetry;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "popfleet-operator";

/// Finalizer that lets the operator apply the keyspace deletion policy before the resource goes.
pub const FINALIZER: &str = "popfleet.io/keyspace";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Cassandra: {0}")]
    Cassandra(String),
    #[error("keyspace: {0}")]
    Keyspace(#[from] schema::cassandra::MigrateError),
    #[error("secret {name}: {problem}")]
    Secret { name: String, problem: String },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
}

impl Error {
    /// A fixed, low-cardinality label for the failure metric (never object names or messages).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Cassandra(_) => "cassandra",
            Error::Keyspace(_) => "keyspace",
            Error::Secret { .. } => "secret",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.metric_label()
                }
                _ => "finalizer",
            },
            Error::Serialization(_) => "serialization",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
