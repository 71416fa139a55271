//! `Pop3Cluster.status`: what the operator observed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
// Until the operator first writes the status, the API server serves this default, so kstatus
// (Flux's `wait`, `kubectl wait`, Argo CD) reads "generation 1, observed 0": in progress. Without it
// a new resource has no status at all, which kstatus takes for Current: Flux called a fleet healthy
// 40 ms after creating it, seconds before the operator had looked at it (operator/tests/flux_e2e.rs).
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct Pop3ClusterStatus {
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling and Stalled (kstatus: what Flux and Argo CD read), Available,
    /// Progressing, Degraded, KeyspaceReady, ReconciliationPaused.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Ready pods over desired pods, all datacenters (`3/4`).
    #[serde(default)]
    pub ready: String,

    #[serde(default)]
    pub replicas: i32,

    #[serde(default)]
    pub ready_replicas: i32,

    /// Ready/desired per datacenter, for `kubectl get -o wide` (`dc1 2/2, dc2 1/1`).
    #[serde(default)]
    pub datacenter_summary: String,

    /// The datacenters whose rollout is under way, in spec order (`dc1`; empty when none is).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rolling: String,

    /// Per datacenter.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub datacenters: Vec<DatacenterStatus>,

    /// The keyspace as last read from Cassandra.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<KeyspaceStatus>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatacenterStatus {
    pub name: String,
    pub cassandra_datacenter: String,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    /// The pop3d image of the datacenter's Deployment template: every pod runs it once `rollout`
    /// is `Complete` (`updatedReplicas` of them before that).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// The pop3d version, read from the image's tag (`…/pop3d:0.3.1` gives `0.3.1`); absent when
    /// the image has no tag (a bare digest). It is the tag as written, not asked of the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the datacenter's rollout stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<DatacenterRollout>,
}

/// A datacenter's rollout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatacenterRollout {
    /// Every pod runs the latest template and is ready.
    Complete,
    /// The Deployment is rolling out its template or scaling.
    RollingOut,
    /// A template change waits for an earlier datacenter's rollout (`OneDatacenterAtATime`).
    Waiting,
    /// The Deployment reports `ProgressDeadlineExceeded`.
    Stalled,
    /// Kept at 0 pods: its Cassandra datacenter was just added to the replication and has no
    /// data yet (see `keyspace.awaitingData`).
    AwaitingData,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeyspaceStatus {
    pub name: String,
    /// Replication factor per Cassandra datacenter, as Cassandra reports it (including
    /// datacenters this resource does not list).
    #[serde(default)]
    pub replication: BTreeMap<String, String>,
    /// Latest schema migration applied.
    pub schema_version: i32,
    /// True after the operator changed the replication: until a full repair runs
    /// (`nodetool repair -full <keyspace>` on every node), new replicas lack older mail.
    #[serde(default)]
    pub repair_needed: bool,
    /// When the replication last changed (RFC 3339). After the repair, acknowledge it with
    /// `kubectl annotate pop3cluster NAME popfleet.io/repaired=<this value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_changed_at: Option<String>,
    /// The replication change that needs the repair, `before -> after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_reason: Option<String>,
    /// Cassandra datacenters the operator added to the replication, which hold none of the
    /// older mail until they are rebuilt: the pop3d datacenters local to them are kept at 0 pods
    /// until the repair is acknowledged (`popfleet.io/repaired`). Always written, also empty: the
    /// operator's server-side apply of the status must take back what its early merge patch set.
    #[serde(default)]
    pub awaiting_data: Vec<String>,
}
