//! `Pop3Cluster` (`popfleet.io/v1alpha1`): one resource describes a whole multi-datacenter
//! POP3 fleet, its Cassandra keyspace and how pop3d is configured.
//!
//! The CRD YAML in `crds/pop3cluster.yaml` is generated from these types (`cargo run -p crds
//! --bin crdgen`); a test fails when the checked-in file is out of date. Validation lives in the
//! schema (OpenAPI bounds and CEL rules) so the apiserver refuses a bad resource outright rather
//! than the operator half-applying it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod schemas;
mod status;

pub use status::{DatacenterRollout, DatacenterStatus, KeyspaceStatus, Pop3ClusterStatus};

/// The value types of pop3d's settings the spec carries, from pop3d's configuration contract.
pub use pop3d_config::ConsistencyLevel;

/// The spec of a Pop3Cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "popfleet.io",
    version = "v1alpha1",
    kind = "Pop3Cluster",
    plural = "pop3clusters",
    shortname = "p3c",
    category = "popfleet",
    namespaced,
    status = "Pop3ClusterStatus",
    derive = "PartialEq",
    doc = "A multi-datacenter fleet of pop3d servers sharing one Cassandra keyspace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "every datacenter runs the current spec with all pods ready"
    ),
    printcolumn(name = "Pods", type_ = "string", json_path = ".status.ready", description = "ready/desired pods, all datacenters"),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(
        name = "Keyspace",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"KeyspaceReady\")].status"
    ),
    printcolumn(
        name = "Adding",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"DatacenterAdding\")].reason",
        description = "AwaitingRepair while a new datacenter is kept at 0 pods until its data is there"
    ),
    printcolumn(name = "Repair", type_ = "boolean", json_path = ".status.keyspace.repairNeeded", description = "a replication change needs nodetool repair"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Rolling", type_ = "string", json_path = ".status.rolling", priority = 1, description = "datacenters whose rollout is under way"),
    printcolumn(name = "Datacenters", type_ = "string", json_path = ".status.datacenterSummary", priority = 1, description = "ready/desired per datacenter"),
    printcolumn(name = "KeyspaceName", type_ = "string", json_path = ".spec.cassandra.keyspace", priority = 1),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self.metadata.name.size() <= 42")
        .message("metadata.name must be a DNS label of at most 42 characters starting with a letter: child objects are named <name>-<datacenter> and Services need a DNS-1035 label")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.datacenters.all(d, (has(d.cassandraDatacenter) ? d.cassandraDatacenter : d.name) in self.cassandra.contactPoints)")
        .message("every datacenter needs contact points for its Cassandra datacenter in spec.cassandra.contactPoints")
        .field_path(".cassandra.contactPoints"),
    validation = Rule::new("self.datacenters.all(d, (has(d.cassandraDatacenter) ? d.cassandraDatacenter : d.name) in self.cassandra.replication)")
        .message("every datacenter's Cassandra datacenter must be in spec.cassandra.replication: pop3d reads and writes at LOCAL_QUORUM there")
        .field_path(".cassandra.replication"),
)]
pub struct Pop3ClusterSpec {
    /// Container image of pop3d, e.g. `registry.example/popfleet/pop3d:0.1.0`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Image pull policy of the pop3d container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// The datacenters pop3d runs in; one Deployment, Service, ConfigMap, PodDisruptionBudget and
    /// ServiceAccount each. Keyed by name, so server-side apply merges per datacenter.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(d, self.exists_one(e, e.name == d.name))").message("datacenter names must be unique")
    )]
    pub datacenters: Vec<DatacenterSpec>,

    /// The Cassandra cluster, keyspace and replication.
    pub cassandra: CassandraSpec,

    /// POP3 listeners.
    #[serde(default)]
    pub pop3: Pop3Spec,

    /// LMTP listener (mail comes in from the MTA).
    #[serde(default)]
    pub lmtp: LmtpSpec,

    /// Authentication policy.
    #[serde(default)]
    pub auth: AuthSpec,

    /// pop3d's admin API (accounts, repair): the bearer token its clients need.
    #[serde(default)]
    pub admin: AdminSpec,

    /// The NetworkPolicy the operator puts in front of each datacenter's pods.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Extra pop3d settings (keys of pop3d's TOML config, e.g. `idle_timeout: "300"`). Values that
    /// look like integers or true/false are written as such. Keys the operator manages are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schemas::config_overrides")]
    pub config: BTreeMap<String, String>,

    /// The pop3d pods of every datacenter: extra labels and annotations, priority, registry
    /// credentials and an overlay of the pod template.
    #[serde(default)]
    pub pod: PodOptions,

    /// The PodDisruptionBudget of each datacenter's pods.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,

    /// How a change of the pods (image, config, Secrets they use) reaches the datacenters.
    #[serde(default)]
    pub rollout_strategy: RolloutStrategy,

    /// While true the operator writes nothing (no child object, no Cassandra DDL) and only
    /// reports `ReconciliationPaused=True`; changes are applied when it is set back to false.
    #[serde(default)]
    pub paused: bool,

    /// What happens to the keyspace when the Pop3Cluster is deleted. `Retain` (the default) keeps
    /// it and all mail; `Delete` drops it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One datacenter of pop3d servers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatacenterSpec {
    /// Name of the datacenter; part of the child objects' names.
    #[schemars(length(min = 1, max = 20), regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Number of pop3d pods in this datacenter (0 stops it); ignored while `autoscaled`.
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// Leave the Deployment's `replicas` to a HorizontalPodAutoscaler (or anything else that
    /// scales it): the operator stops setting it and never reverts a change. Switching an existing
    /// datacenter to true keeps its current count until the autoscaler changes it.
    #[serde(default)]
    pub autoscaled: bool,

    /// The Cassandra datacenter these pods are local to (default: the same name). pop3d sends
    /// every request to this datacenter only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub cassandra_datacenter: Option<String>,

    /// The Service in front of this datacenter's pods.
    #[serde(default)]
    pub service: ServiceSpec,

    /// Resources of the pop3d container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    /// pop3d settings for this datacenter only, over the cluster-wide `config`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schemas::config_overrides")]
    pub config: BTreeMap<String, String>,
}

impl DatacenterSpec {
    /// The Cassandra datacenter pop3d pins its requests to.
    pub fn cassandra_dc(&self) -> &str {
        self.cassandra_datacenter.as_deref().unwrap_or(&self.name)
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.externalTrafficPolicy) || (has(self.type) && self.type != 'ClusterIP')")
        .message("externalTrafficPolicy needs type NodePort or LoadBalancer"),
    validation = Rule::new("!has(self.loadBalancerSourceRanges) || (has(self.type) && self.type == 'LoadBalancer')")
        .message("loadBalancerSourceRanges needs type LoadBalancer"),
)]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations of the Service (load balancer settings and the like).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `Local` keeps the client's address (pop3d's per-IP authentication penalty needs it) and
    /// sends traffic only to nodes with a ready pop3d pod; the Kubernetes default `Cluster` hides
    /// the client behind the node's address. NodePort and LoadBalancer only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// Client CIDRs the cloud load balancer admits (LoadBalancer only; empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("loadBalancerSourceRanges are CIDRs, e.g. 203.0.113.0/24"))]
    pub load_balancer_source_ranges: Vec<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

/// What the pop3d pods carry besides what the operator sets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOptions {
    /// Extra labels of the pods. Keys the operator sets (`popfleet.io/*`, `app.kubernetes.io/name`,
    /// `instance`, `managed-by`) are refused: the Services and PDBs select pods by them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schemas::pod_labels")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the pods. `popfleet.io/*` keys are refused: the operator's hashes
    /// that roll the pods live there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schemas::pod_annotations")]
    pub annotations: BTreeMap<String, String>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// Secrets (in the Pop3Cluster's namespace) with credentials for the image's registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// A partial pod template (`metadata`, `spec`) merged into every datacenter's Deployment by
    /// the API server (server-side apply, under its own field manager `popfleet-operator-overlay`):
    /// lists merge by their keys (containers, env and volumes by name), so a sidecar or an extra
    /// env var of the `pop3d` container is added, not replaced. A field the operator sets can only
    /// be given the value the operator gives it: the apiserver reports the conflict, the overlay
    /// is not applied and the status says why (Degraded, reason PodTemplateOverlayConflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schemas::template_overlay")]
    pub template_overlay: Option<serde_json::Value>,
}

/// The PodDisruptionBudget of each datacenter. Neither bound set: `maxUnavailable: 1`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.maxUnavailable) && has(self.minAvailable))").message("set maxUnavailable or minAvailable, not both"))]
pub struct PodDisruptionBudgetSpec {
    /// false: no PodDisruptionBudget (the operator deletes the one it made).
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        PodDisruptionBudgetSpec { enabled: true, max_unavailable: None, min_available: None }
    }
}

/// How a change of the pod template reaches the datacenters.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// `AllAtOnce` (default): every datacenter's Deployment gets the new template at once.
    /// `OneDatacenterAtATime`: in the order of `datacenters`, a datacenter gets it only once
    /// every datacenter before it has rolled out with all pods ready; a bad image then stops at
    /// the first datacenter.
    #[serde(default, rename = "type")]
    pub type_: RolloutType,
    /// Seconds a datacenter's rollout may make no progress before its Deployment reports
    /// ProgressDeadlineExceeded, which makes the Pop3Cluster Degraded and Stalled (the
    /// Deployment's `progressDeadlineSeconds`; unset: Kubernetes' default, 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub progress_deadline_seconds: Option<i32>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RolloutType {
    #[default]
    AllAtOnce,
    OneDatacenterAtATime,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the keyspace (and the mail in it) when the Pop3Cluster is deleted.
    #[default]
    Retain,
    /// Drop the keyspace when the Pop3Cluster is deleted.
    Delete,
}

/// Where Cassandra is and what the keyspace looks like.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CassandraSpec {
    /// Contact points (`host:port`) per Cassandra datacenter. pop3d in a datacenter gets the
    /// contact points of its Cassandra datacenter; the operator uses all of them.
    #[schemars(schema_with = "schemas::contact_points")]
    pub contact_points: BTreeMap<String, Vec<String>>,

    /// Keyspace name. Immutable: renaming would silently point the fleet at an empty keyspace.
    #[serde(default = "default_keyspace")]
    #[schemars(length(min = 1, max = 48), regex(pattern = r"^[A-Za-z][A-Za-z0-9_]*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("keyspace is immutable: create a new Pop3Cluster to use another keyspace"))]
    pub keyspace: String,

    /// Replication factor per Cassandra datacenter (NetworkTopologyStrategy). Datacenters not
    /// listed keep whatever replication they have: the operator never removes a replica.
    #[schemars(schema_with = "schemas::replication")]
    pub replication: BTreeMap<String, i32>,

    /// Secret with the Cassandra user name and password (PasswordAuthenticator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<CredentialsSecretRef>,

    /// TLS to Cassandra's native port, for pop3d and for the operator's own keyspace work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<CassandraTlsSpec>,

    /// Read consistency of pop3d (default local_quorum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_consistency: Option<ConsistencyLevel>,

    /// Write consistency of pop3d (default local_quorum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_consistency: Option<ConsistencyLevel>,
}

fn default_keyspace() -> String {
    "popfleet".into()
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Secret in the Pop3Cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "default_username_key")]
    pub username_key: String,
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// A Secret in the Pop3Cluster's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// How to reach Cassandra over TLS.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CassandraTlsSpec {
    /// Secret in the Pop3Cluster's namespace with `ca.crt` (the CA that signs the nodes'
    /// certificates; nothing else is trusted) and, when Cassandra requires client certificates,
    /// `tls.crt` and `tls.key` (a cert-manager Certificate's Secret has all three). Its content
    /// is hashed into the pod template, so a renewal rolls the pods.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// DNS name every node's certificate must carry. Unset: each node's certificate must carry
    /// that node's IP address (the driver reaches nodes by address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
}

/// POP3 listeners.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pop3Spec {
    /// Service port of plain POP3 (STLS when TLS is configured).
    #[serde(default = "default_pop3_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Service port of POP3 over implicit TLS (only with `tls`).
    #[serde(default = "default_pop3s_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub tls_port: i32,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`). Its content is hashed into the pod
    /// template, so a renewed certificate rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SecretRef>,
}

impl Default for Pop3Spec {
    fn default() -> Self {
        Pop3Spec { port: default_pop3_port(), tls_port: default_pop3s_port(), tls: None }
    }
}

fn default_pop3_port() -> i32 {
    110
}
fn default_pop3s_port() -> i32 {
    995
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LmtpSpec {
    /// Service port of LMTP.
    #[serde(default = "default_lmtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for LmtpSpec {
    fn default() -> Self {
        LmtpSpec { port: default_lmtp_port() }
    }
}

fn default_lmtp_port() -> i32 {
    24
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Allow USER/PASS and AUTH PLAIN on cleartext connections from non-loopback addresses.
    /// Off by default: passwords would cross the network in clear.
    #[serde(default)]
    pub allow_insecure_auth: bool,
}

/// The admin API's bearer token.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AdminSpec {
    /// Secret in the Pop3Cluster's namespace whose key `token` is the admin API's bearer token.
    /// Unset: the operator creates `<name>-admin-token` once (32 random bytes, hex) and never
    /// rewrites it. Either way it is mounted in every pop3d pod and its content is hashed into the
    /// pod template, so a rotation rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub token_secret_name: Option<String>,
}

/// Who may reach which port of the pop3d pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// One NetworkPolicy per datacenter (default true): POP3/POP3S and the ops port (health,
    /// readiness, metrics) from anywhere, LMTP from `lmtpFrom` (default: pods of this namespace), the admin API only from pods
    /// labelled `popfleet.io/admin-client: "true"` in this namespace and from `adminFrom`.
    /// Needs a network plugin that enforces NetworkPolicies.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may deliver over LMTP (your MTA): LMTP authenticates nobody, so anyone who reaches it can
    /// deliver to any mailbox. Empty: pods of this namespace only; `[{ipBlock: {cidr: 0.0.0.0/0}}]`
    /// opens it to every IPv4 source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub lmtp_from: Vec<NetworkPolicyPeer>,
    /// Who else may reach the admin API, besides pods labelled `popfleet.io/admin-client: "true"`
    /// in this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub admin_from: Vec<NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec { enabled: true, lmtp_from: vec![], admin_from: vec![] }
    }
}

fn default_true() -> bool {
    true
}

/// Label of the pods the NetworkPolicy lets reach the admin API (value `"true"`).
pub const ADMIN_CLIENT_LABEL: &str = "popfleet.io/admin-client";

/// Annotation with which a user acknowledges the repair after a replication change.
pub const REPAIRED_ANNOTATION: &str = "popfleet.io/repaired";

/// Annotation with which a user allows replication decreases, `dc1=2[,dc2=1]`: each listed
/// datacenter may be lowered to exactly that factor (after a full repair; ADR 10).
pub const ALLOW_DECREASE_ANNOTATION: &str = "popfleet.io/allow-replication-decrease";

/// The CRD as YAML, exactly as checked in at `crds/pop3cluster.yaml`.
pub fn crd_yaml() -> String {
    let crd = Pop3Cluster::crd();
    let body = serde_saphyr::to_string(&crd).expect("a CRD always serialises");
    format!("# Generated by `cargo run -p crds --bin crdgen`; do not edit.\n---\n{body}")
}

#[cfg(test)]
mod tests;
