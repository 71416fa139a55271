//! Status: conditions in the Kubernetes convention (Scylla-style Available / Progressing /
//! Degraded, plus KeyspaceReady and ReconciliationPaused), computed from what was observed.
//!
//! A condition's `lastTransitionTime` only moves when its status flips, and the status is only
//! written when it differs from the stored one, so a settled cluster sees no writes at all.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crds::{DatacenterStatus, KeyspaceStatus, Pop3Cluster, Pop3ClusterStatus};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const KEYSPACE_READY: &str = "KeyspaceReady";
pub const PAUSED: &str = "ReconciliationPaused";

/// One datacenter as observed from its Deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DcObservation {
    pub status: DatacenterStatus,
    /// The Deployment controller has seen the latest template and finished rolling it out.
    pub rolled_out: bool,
}

/// The keyspace step's outcome for this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyspaceOutcome {
    Ready(KeyspaceStatus),
    Failed(String),
    /// Not contacted (paused): keep what the status said before.
    NotChecked,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub paused: bool,
    pub datacenters: Vec<DcObservation>,
    pub keyspace: KeyspaceOutcome,
    /// (reason, message) of everything wrong that is not the keyspace: missing secrets, ...
    pub problems: Vec<(String, String)>,
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    old: &[Condition],
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status to store for `cluster` given `obs`; `now` stamps conditions that flip.
pub fn compute(cluster: &Pop3Cluster, obs: &Observation, now: &Time) -> Pop3ClusterStatus {
    let old = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let dcs: Vec<DatacenterStatus> = obs.datacenters.iter().map(|d| d.status.clone()).collect();
    let replicas: i32 = dcs.iter().map(|d| d.replicas).sum();
    let ready_replicas: i32 = dcs.iter().map(|d| d.ready_replicas.min(d.replicas)).sum();
    let summary =
        dcs.iter().map(|d| format!("{} {}/{}", d.name, d.ready_replicas, d.replicas)).collect::<Vec<_>>().join(", ");

    let keyspace = match &obs.keyspace {
        KeyspaceOutcome::Ready(k) => Some(k.clone()),
        _ => old.keyspace.clone(),
    };
    let c = |t: &str, ok: bool, reason: &str, message: String| {
        condition(t, ok, reason, message, generation, &old.conditions, now)
    };

    let keyspace_cond = match &obs.keyspace {
        KeyspaceOutcome::Ready(k) if k.repair_needed => c(
            KEYSPACE_READY,
            true,
            "RepairNeeded",
            format!(
                "keyspace {} is at schema version {}; its replication changed ({}): run `nodetool repair -full {}` on every node, then annotate {}={}",
                k.name,
                k.schema_version,
                k.repair_reason.as_deref().unwrap_or("?"),
                k.name,
                crds::REPAIRED_ANNOTATION,
                k.replication_changed_at.as_deref().unwrap_or("?")
            ),
        ),
        KeyspaceOutcome::Ready(k) => c(
            KEYSPACE_READY,
            true,
            "Ready",
            format!("keyspace {} is at schema version {} with replication {:?}", k.name, k.schema_version, k.replication),
        ),
        KeyspaceOutcome::Failed(e) => c(KEYSPACE_READY, false, "CassandraError", e.clone()),
        KeyspaceOutcome::NotChecked => old
            .conditions
            .iter()
            .find(|c| c.type_ == KEYSPACE_READY)
            .cloned()
            .unwrap_or_else(|| c(KEYSPACE_READY, false, "NotChecked", "the keyspace has not been checked yet".into())),
    };
    let keyspace_ok = keyspace_cond.status == "True";

    let not_serving: Vec<&str> =
        dcs.iter().filter(|d| d.replicas > 0 && d.ready_replicas == 0).map(|d| d.name.as_str()).collect();
    let available = if !keyspace_ok {
        c(AVAILABLE, false, "KeyspaceNotReady", "pop3d cannot serve before the keyspace is ready".into())
    } else if !not_serving.is_empty() {
        c(AVAILABLE, false, "NoReadyPods", format!("no ready pop3d pod in {}", not_serving.join(", ")))
    } else {
        c(AVAILABLE, true, "Serving", format!("ready pods: {summary}"))
    };

    let rolling: Vec<String> = obs
        .datacenters
        .iter()
        .filter(|d| !d.rolled_out)
        .map(|d| {
            format!(
                "{} {}/{} ready, {} updated",
                d.status.name, d.status.ready_replicas, d.status.replicas, d.status.updated_replicas
            )
        })
        .collect();
    let progressing = if obs.paused {
        c(PROGRESSING, false, "Paused", "reconciliation is paused".into())
    } else if !rolling.is_empty() {
        c(PROGRESSING, true, "RollingOut", rolling.join("; "))
    } else {
        c(PROGRESSING, false, "RolloutComplete", "every datacenter runs the latest spec".into())
    };

    let mut problems = obs.problems.clone();
    if let KeyspaceOutcome::Failed(e) = &obs.keyspace {
        problems.insert(0, ("CassandraError".into(), e.clone()));
    }
    let degraded = match problems.first() {
        Some((reason, _)) => {
            let message = problems.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ");
            c(DEGRADED, true, reason, message)
        }
        None => c(DEGRADED, false, "AsExpected", "no problem observed".into()),
    };

    let paused = if obs.paused {
        c(PAUSED, true, "Paused", "spec.paused is true: the operator writes nothing until it is false".into())
    } else {
        c(PAUSED, false, "Reconciling", "changes are applied".into())
    };

    Pop3ClusterStatus {
        observed_generation: generation,
        conditions: vec![available, progressing, degraded, keyspace_cond, paused],
        ready: format!("{ready_replicas}/{replicas}"),
        replicas,
        ready_replicas,
        datacenter_summary: summary,
        datacenters: dcs,
        keyspace,
    }
}

/// Whether a condition of that type is currently True.
pub fn is_true(status: Option<&Pop3ClusterStatus>, type_: &str) -> bool {
    status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(status: Option<Pop3ClusterStatus>) -> Pop3Cluster {
        let mut c: Pop3Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "popfleet.io/v1alpha1", "kind": "Pop3Cluster",
            "metadata": {"name": "m", "generation": 4},
            "spec": {"image": "i", "datacenters": [{"name": "dc1", "replicas": 2}],
                     "cassandra": {"contactPoints": {"dc1": ["a:1"]}, "replication": {"dc1": 1}}}
        }))
        .unwrap();
        c.status = status;
        c
    }

    fn obs(ready: i32, keyspace: KeyspaceOutcome) -> Observation {
        Observation {
            paused: false,
            datacenters: vec![DcObservation {
                status: DatacenterStatus {
                    name: "dc1".into(),
                    cassandra_datacenter: "dc1".into(),
                    replicas: 2,
                    ready_replicas: ready,
                    updated_replicas: ready,
                },
                rolled_out: ready == 2,
            }],
            keyspace,
            problems: vec![],
        }
    }

    fn ks() -> KeyspaceOutcome {
        KeyspaceOutcome::Ready(KeyspaceStatus { name: "popfleet".into(), schema_version: 1, ..Default::default() })
    }

    fn get<'a>(s: &'a Pop3ClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn rollout_then_available() {
        let s = compute(&cluster(None), &obs(0, ks()), &t("2026-01-01T00:00:00Z"));
        assert_eq!(get(&s, AVAILABLE).status, "False");
        assert_eq!(get(&s, PROGRESSING).status, "True");
        assert_eq!(get(&s, KEYSPACE_READY).status, "True");
        assert_eq!(s.ready, "0/2");
        assert_eq!(s.observed_generation, Some(4));
        let s2 = compute(&cluster(Some(s.clone())), &obs(2, ks()), &t("2026-01-01T00:01:00Z"));
        assert_eq!(get(&s2, AVAILABLE).status, "True");
        assert_eq!(get(&s2, PROGRESSING).status, "False");
        assert_eq!(get(&s2, AVAILABLE).last_transition_time, t("2026-01-01T00:01:00Z"));
        assert_eq!(get(&s2, KEYSPACE_READY).last_transition_time, t("2026-01-01T00:00:00Z"), "unchanged: time kept");
        assert_eq!(s2.datacenter_summary, "dc1 2/2");
    }

    #[test]
    fn same_observation_gives_the_same_status() {
        let s = compute(&cluster(None), &obs(2, ks()), &t("2026-01-01T00:00:00Z"));
        let again = compute(&cluster(Some(s.clone())), &obs(2, ks()), &t("2026-01-02T00:00:00Z"));
        assert_eq!(s, again, "a settled cluster needs no status write");
    }

    #[test]
    fn cassandra_failure_degrades_and_keeps_the_last_keyspace() {
        let s = compute(&cluster(None), &obs(2, ks()), &t("2026-01-01T00:00:00Z"));
        let f =
            compute(&cluster(Some(s)), &obs(2, KeyspaceOutcome::Failed("no host".into())), &t("2026-01-01T00:01:00Z"));
        assert_eq!(get(&f, DEGRADED).status, "True");
        assert_eq!(get(&f, DEGRADED).reason, "CassandraError");
        assert_eq!(get(&f, AVAILABLE).status, "False");
        assert_eq!(f.keyspace.unwrap().name, "popfleet");
    }

    #[test]
    fn paused_keeps_the_keyspace_condition() {
        let s = compute(&cluster(None), &obs(2, ks()), &t("2026-01-01T00:00:00Z"));
        let mut o = obs(2, KeyspaceOutcome::NotChecked);
        o.paused = true;
        let p = compute(&cluster(Some(s.clone())), &o, &t("2026-01-01T00:01:00Z"));
        assert_eq!(get(&p, PAUSED).status, "True");
        assert_eq!(get(&p, PROGRESSING).reason, "Paused");
        assert_eq!(get(&p, KEYSPACE_READY), get(&s, KEYSPACE_READY));
    }
}
