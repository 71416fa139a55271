//! Status: conditions in the Kubernetes convention (Scylla-style Available / Progressing /
//! Degraded, plus KeyspaceReady and ReconciliationPaused, and kstatus' Ready / Reconciling /
//! Stalled for GitOps tools), computed from what was observed.
//!
//! A condition's `lastTransitionTime` only moves when its status flips, and the status is only
//! written when it differs from the stored one, so a settled cluster sees no writes at all.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crds::{DatacenterRollout, DatacenterStatus, KeyspaceStatus, Pop3Cluster, Pop3ClusterStatus};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const KEYSPACE_READY: &str = "KeyspaceReady";
pub const PAUSED: &str = "ReconciliationPaused";
/// kstatus (sigs.k8s.io/cli-utils), read by Flux and Argo CD: `Ready` True with a current
/// `observedGeneration` is Current, `Reconciling` True is InProgress, `Stalled` True is Failed.
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
/// True while a datacenter added to the replication is kept at 0 pods until its data is there.
pub const DATACENTER_ADDING: &str = "DatacenterAdding";
pub const AWAITING_REPAIR: &str = "AwaitingRepair";
/// True while part of the spec's replication is not written to Cassandra: refused (a factor over
/// the node count), a decrease not allowed yet, or an increase going in safe steps (ADR 10).
pub const REPLICATION_HELD: &str = "ReplicationHeld";
/// The reason a Deployment gives when its rollout made no progress within its deadline.
pub const STUCK_ROLLOUT: &str = "ProgressDeadlineExceeded";

/// One datacenter as observed from its Deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DcObservation {
    pub status: DatacenterStatus,
    /// The Deployment controller has seen the latest template and finished rolling it out.
    pub rolled_out: bool,
    /// The Deployment's message when it reports `ProgressDeadlineExceeded`.
    pub stalled: Option<String>,
    /// `OneDatacenterAtATime`: the earlier datacenter whose rollout this one's new template waits for.
    pub waiting_for: Option<String>,
    /// Kept at 0 pods: its Cassandra datacenter has no data yet.
    pub awaiting_data: bool,
}

/// The keyspace step's outcome for this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyspaceOutcome {
    Ready(KeyspaceStatus),
    Failed(String),
    /// Not contacted (paused): keep what the status said before.
    NotChecked,
    /// The keyspace does not exist and creating it was refused (see `Observation::holds`).
    Refused(String),
}

/// A part of the spec's replication the keyspace step did not write (`replication::Hold`).
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub reason: String,
    pub message: String,
    /// Needs the user (Degraded, Stalled), or a documented step under way (Reconciling).
    pub blocking: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub paused: bool,
    pub datacenters: Vec<DcObservation>,
    pub keyspace: KeyspaceOutcome,
    /// (reason, message) of everything wrong that is not the keyspace: missing secrets, ...
    pub problems: Vec<(String, String)>,
    /// What the keyspace step held back of the spec's replication.
    pub holds: Vec<Held>,
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

    let keyspace_cond = keyspace_condition(&obs.keyspace, &old, &c);
    let available = available_condition(keyspace_cond.status == "True", &dcs, &summary, &c);

    let rolling = rolling_messages(obs);
    let progressing = if obs.paused {
        c(PROGRESSING, false, "Paused", "reconciliation is paused".into())
    } else if !rolling.is_empty() {
        c(PROGRESSING, true, "RollingOut", rolling.join("; "))
    } else {
        c(PROGRESSING, false, "RolloutComplete", "every datacenter runs the latest spec".into())
    };

    let problems = problems(obs);
    let degraded = match problems.first() {
        Some((reason, _)) => c(DEGRADED, true, reason, join_messages(&problems)),
        None => c(DEGRADED, false, "AsExpected", "no problem observed".into()),
    };

    let paused = if obs.paused {
        c(PAUSED, true, "Paused", "spec.paused is true: the operator writes nothing until it is false".into())
    } else {
        c(PAUSED, false, "Reconciling", "changes are applied".into())
    };
    let adding = adding_condition(obs, keyspace.as_ref(), &c);
    let held = held_condition(&obs.holds, &c);
    let in_progress = awaiting_user_step(&adding, &obs.holds);
    let [ready, reconciling, stalled] = kstatus(obs, &problems, &keyspace_cond, in_progress, &rolling, &summary, &c);

    Pop3ClusterStatus {
        observed_generation: generation,
        conditions: vec![
            ready,
            reconciling,
            stalled,
            available,
            progressing,
            degraded,
            keyspace_cond,
            adding,
            held,
            paused,
        ],
        ready: format!("{ready_replicas}/{replicas}"),
        replicas,
        ready_replicas,
        datacenter_summary: summary,
        rolling: obs
            .datacenters
            .iter()
            .filter(|d| d.status.rollout == Some(DatacenterRollout::RollingOut))
            .map(|d| d.status.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        datacenters: dcs,
        keyspace,
    }
}

fn available_condition(
    keyspace_ok: bool,
    dcs: &[DatacenterStatus],
    summary: &str,
    c: &impl Fn(&str, bool, &str, String) -> Condition,
) -> Condition {
    let not_serving: Vec<&str> =
        dcs.iter().filter(|d| d.replicas > 0 && d.ready_replicas == 0).map(|d| d.name.as_str()).collect();
    if !keyspace_ok {
        c(AVAILABLE, false, "KeyspaceNotReady", "pop3d cannot serve before the keyspace is ready".into())
    } else if !not_serving.is_empty() {
        c(AVAILABLE, false, "NoReadyPods", format!("no ready pop3d pod in {}", not_serving.join(", ")))
    } else {
        c(AVAILABLE, true, "Serving", format!("ready pods: {summary}"))
    }
}

/// A documented step under way that waits for the user's repair (Reconciling, not Stalled): a
/// datacenter awaiting its data, or an increase between its safe steps.
fn awaiting_user_step<'a>(adding: &'a Condition, holds: &'a [Held]) -> Option<(&'a str, String)> {
    if adding.status == "True" {
        return Some((AWAITING_REPAIR, adding.message.clone()));
    }
    holds.iter().find(|h| !h.blocking).map(|h| (h.reason.as_str(), h.message.clone()))
}

fn keyspace_condition(
    outcome: &KeyspaceOutcome,
    old: &Pop3ClusterStatus,
    c: &impl Fn(&str, bool, &str, String) -> Condition,
) -> Condition {
    match outcome {
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
        KeyspaceOutcome::Refused(e) => c(KEYSPACE_READY, false, crate::replication::EXCEEDS_NODES, e.clone()),
        KeyspaceOutcome::NotChecked => old
            .conditions
            .iter()
            .find(|c| c.type_ == KEYSPACE_READY)
            .cloned()
            .unwrap_or_else(|| c(KEYSPACE_READY, false, "NotChecked", "the keyspace has not been checked yet".into())),
    }
}

/// DatacenterAdding: which datacenters are held at 0 pods and the exact steps that release them.
fn adding_condition(
    obs: &Observation,
    keyspace: Option<&KeyspaceStatus>,
    c: &impl Fn(&str, bool, &str, String) -> Condition,
) -> Condition {
    let held: Vec<&str> = obs.datacenters.iter().filter(|d| d.awaiting_data).map(|d| d.status.name.as_str()).collect();
    if held.is_empty() {
        return c(DATACENTER_ADDING, false, "NoDatacenterAwaitingData", "no datacenter is kept from serving".into());
    }
    let (ks, at) =
        keyspace.map_or(("?", "?"), |k| (k.name.as_str(), k.replication_changed_at.as_deref().unwrap_or("?")));
    let sources: Vec<&str> =
        obs.datacenters.iter().filter(|d| !d.awaiting_data).map(|d| d.status.cassandra_datacenter.as_str()).collect();
    let source = sources.first().copied().unwrap_or("<a datacenter with the data>");
    let message = format!(
        "{} kept at 0 pods: its Cassandra datacenter has none of the older mail yet. On every node of it run `nodetool rebuild -ks {ks} -- {source}` (or `nodetool repair -full {ks}` on every node), then `kubectl annotate p3c NAME {}={at}`",
        held.join(", "),
        crds::REPAIRED_ANNOTATION
    );
    c(DATACENTER_ADDING, true, AWAITING_REPAIR, message)
}

/// ReplicationHeld: what of the spec's replication is not in Cassandra, and why.
fn held_condition(holds: &[Held], c: &impl Fn(&str, bool, &str, String) -> Condition) -> Condition {
    match holds.first() {
        None => c(REPLICATION_HELD, false, "AsSpecified", "the replication is written as the spec asks".into()),
        Some(first) => {
            let message = holds.iter().map(|h| h.message.as_str()).collect::<Vec<_>>().join("; ");
            c(REPLICATION_HELD, true, &first.reason, message)
        }
    }
}

/// One line per datacenter whose rollout is not complete.
fn rolling_messages(obs: &Observation) -> Vec<String> {
    obs.datacenters
        .iter()
        .filter(|d| !d.rolled_out)
        .map(|d| match &d.waiting_for {
            Some(previous) => format!("{} waits for {previous} to finish (OneDatacenterAtATime)", d.status.name),
            None => format!(
                "{} {}/{} ready, {} updated",
                d.status.name, d.status.ready_replicas, d.status.replicas, d.status.updated_replicas
            ),
        })
        .collect()
}

/// (reason, message) of everything wrong: the keyspace, the reconcile's problems, stuck rollouts.
fn problems(obs: &Observation) -> Vec<(String, String)> {
    let mut problems: Vec<(String, String)> =
        obs.holds.iter().filter(|h| h.blocking).map(|h| (h.reason.clone(), h.message.clone())).collect();
    problems.extend(obs.problems.iter().cloned());
    if let KeyspaceOutcome::Failed(e) = &obs.keyspace {
        problems.insert(0, ("CassandraError".into(), e.clone()));
    }
    for d in &obs.datacenters {
        if let Some(message) = &d.stalled {
            problems.push((STUCK_ROLLOUT.into(), format!("datacenter {}: {message}", d.status.name)));
        }
    }
    problems
}

fn join_messages(problems: &[(String, String)]) -> String {
    problems.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ")
}

/// Ready, Reconciling and Stalled as kstatus reads them: exactly one of them is True, so a
/// GitOps tool never takes an unfinished cluster for Current (Ready=False with neither of the
/// other two True would read as Current).
fn kstatus(
    obs: &Observation,
    problems: &[(String, String)],
    keyspace: &Condition,
    awaiting: Option<(&str, String)>,
    rolling: &[String],
    summary: &str,
    c: &impl Fn(&str, bool, &str, String) -> Condition,
) -> [Condition; 3] {
    let stalled: Option<(&str, String)> = if obs.paused {
        Some(("Paused", "spec.paused is true: the spec is not being applied".into()))
    } else {
        problems.first().map(|(reason, _)| (reason.as_str(), join_messages(problems)))
    };
    let in_progress: Option<(&str, String)> = if keyspace.status != "True" {
        Some(("KeyspaceNotReady", format!("keyspace: {}", keyspace.message)))
    } else if !rolling.is_empty() {
        Some(("RollingOut", rolling.join("; ")))
    } else {
        awaiting
    };
    match (stalled, in_progress) {
        (Some((reason, message)), _) => [
            c(READY, false, reason, message.clone()),
            c(RECONCILING, false, "Stalled", "the operator cannot make progress: see Stalled".into()),
            c(STALLED, true, reason, message),
        ],
        (None, Some((reason, message))) => [
            c(READY, false, reason, message.clone()),
            c(RECONCILING, true, reason, message),
            c(STALLED, false, "AsExpected", "no problem observed".into()),
        ],
        (None, None) => [
            c(READY, true, "Current", format!("every datacenter runs the current spec, all pods ready: {summary}")),
            c(RECONCILING, false, "Current", "nothing left to do".into()),
            c(STALLED, false, "AsExpected", "no problem observed".into()),
        ],
    }
}

/// Whether a condition of that type is currently True.
pub fn is_true(status: Option<&Pop3ClusterStatus>, type_: &str) -> bool {
    status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
