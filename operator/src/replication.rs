//! Which replication change the operator writes, and which it holds back (ADR 10).
//!
//! A pure function of what Cassandra reports (the keyspace's factors, the nodes of each
//! datacenter), the spec, whether a repair is still unacknowledged and the decreases the user
//! allowed, so every rule is unit tested here and the controller only carries it out.
//!
//! The rules, per datacenter the spec lists, wanted factor `w`, current factor `c`, `n` nodes:
//! - `w > n`: the whole keyspace step is refused (no DDL at all): Cassandra would place fewer
//!   replicas than the factor, and LOCAL_QUORUM counts the factor, so one node down fails writes;
//! - `c` absent or 0: a datacenter added, written (its pods wait for the data: `awaitingData`);
//! - `w < c`: a decrease, held until the annotation allows exactly that factor;
//! - `w > c`: an increase, written only as far as LOCAL_QUORUM reads stay complete without a
//!   repair ([`safe_increase`]), and not at all while an earlier change awaits its repair.

use std::collections::BTreeMap;

/// Condition reasons, also the `ReplicationHeld` condition's.
pub const EXCEEDS_NODES: &str = "ReplicationExceedsNodes";
pub const DECREASE_HELD: &str = "ReplicationDecreaseHeld";
pub const STEP_AWAITING_REPAIR: &str = "ReplicationStepAwaitingRepair";

/// `floor(rf / 2) + 1`: the replicas a LOCAL_QUORUM read or write needs in a datacenter.
pub fn quorum(rf: u32) -> u32 {
    rf / 2 + 1
}

/// Whether raising a datacenter's factor from `old` to `new` keeps LOCAL_QUORUM reads complete
/// before any repair: mail written at LOCAL_QUORUM of `old` sits on `quorum(old)` of the old
/// replicas, which stay replicas (NetworkTopologyStrategy extends each range's replica list),
/// and a read asks `quorum(new)` of the `new` replicas; the two sets must overlap.
/// 1->2, 2->3, 2->4 are safe; 1->3, 3->5 are not.
pub fn safe_increase(old: u32, new: u32) -> bool {
    quorum(old) + quorum(new) > new
}

/// The highest factor in `(old, wanted]` reachable in one safe step (always at least `old + 1`:
/// one more replica never breaks the overlap).
pub fn safe_step(old: u32, wanted: u32) -> u32 {
    (old + 1..=wanted).rev().find(|&s| safe_increase(old, s)).unwrap_or(wanted)
}

/// A part of the spec's replication not written to Cassandra, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The factor is larger than the Cassandra datacenter's node count.
    ExceedsNodes { dc: String, factor: u32, nodes: u32 },
    /// A decrease the user has not allowed yet.
    Decrease { dc: String, from: u32, to: u32 },
    /// An increase that waits for a repair: `step` was written (or nothing, when `step == from`
    /// because an earlier change still awaits its repair), `to` is what the spec asks.
    Increase { dc: String, from: u32, step: u32, to: u32 },
}

impl Hold {
    pub fn reason(&self) -> &'static str {
        match self {
            Hold::ExceedsNodes { .. } => EXCEEDS_NODES,
            Hold::Decrease { .. } => DECREASE_HELD,
            Hold::Increase { .. } => STEP_AWAITING_REPAIR,
        }
    }

    /// Needs the user before anything moves on (Stalled), as opposed to a documented step that
    /// is under way (Reconciling).
    pub fn blocking(&self) -> bool {
        !matches!(self, Hold::Increase { .. })
    }

    /// What is held and what the user does about it.
    pub fn message(&self, keyspace: &str) -> String {
        match self {
            Hold::ExceedsNodes { dc, factor, nodes } => format!(
                "replication refused: datacenter {dc} has {nodes} Cassandra node(s), fewer than its factor {factor}; \
                 nothing in keyspace {keyspace} was changed. Lower spec.cassandra.replication.{dc} to at most {nodes} \
                 or add nodes to {dc}"
            ),
            Hold::Decrease { dc, from, to } => format!(
                "replication decrease of {dc} {from} -> {to} held: run `nodetool repair -full {keyspace}` on every node \
                 of {dc}, then `kubectl annotate p3c NAME {}={dc}={to}`; after the operator's ALTER run `nodetool \
                 cleanup {keyspace}` on every node of {dc}",
                crds::ALLOW_DECREASE_ANNOTATION
            ),
            Hold::Increase { dc, from, step, to } if step == from => format!(
                "replication increase of {dc} {from} -> {to} waits for the repair of the previous change (see \
                 KeyspaceReady): run it and acknowledge it with {}",
                crds::REPAIRED_ANNOTATION
            ),
            Hold::Increase { dc, from, step, to } => format!(
                "replication increase of {dc} {from} -> {to} goes in safe steps: {from} -> {step} written (a LOCAL_QUORUM \
                 read of {to} replicas could miss mail written to {} of {from}); run the repair KeyspaceReady names and \
                 acknowledge it with {} to take the next step",
                quorum(*from),
                crds::REPAIRED_ANNOTATION
            ),
        }
    }
}

/// What to write: the factors of the listed datacenters to send to `ensure_keyspace` (a
/// datacenter left out keeps its factor), or `None` when the step is refused outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub write: Option<BTreeMap<String, u32>>,
    pub holds: Vec<Hold>,
}

/// `dc1=2,dc2=1` (the value of `popfleet.io/allow-replication-decrease`); a malformed entry is
/// ignored, which holds the decrease (the safe side).
pub fn parse_allowed(value: Option<&String>) -> BTreeMap<String, u32> {
    let Some(value) = value else { return BTreeMap::new() };
    value
        .split(',')
        .filter_map(|part| {
            let (dc, rf) = part.trim().split_once('=')?;
            Some((dc.trim().to_owned(), rf.trim().parse().ok()?))
        })
        .collect()
}

/// Decides the change. `current`: the keyspace's per-DC factors (`None`: it does not exist);
/// `nodes`: Cassandra nodes per datacenter; `repair_pending`: an earlier change awaits its repair.
pub fn plan(
    current: Option<&BTreeMap<String, String>>,
    wanted: &BTreeMap<String, u32>,
    nodes: &BTreeMap<String, u32>,
    repair_pending: bool,
    allowed: &BTreeMap<String, u32>,
) -> Plan {
    let exceeding: Vec<Hold> = wanted
        .iter()
        .filter_map(|(dc, &factor)| {
            let n = nodes.get(dc).copied().unwrap_or(0);
            (factor > n).then(|| Hold::ExceedsNodes { dc: dc.clone(), factor, nodes: n })
        })
        .collect();
    if !exceeding.is_empty() {
        return Plan { write: None, holds: exceeding };
    }
    let Some(current) = current else {
        return Plan { write: Some(wanted.clone()), holds: vec![] };
    };
    let (mut write, mut holds) = (BTreeMap::new(), Vec::new());
    for (dc, &to) in wanted {
        let from = current.get(dc).and_then(|f| f.trim().parse::<u32>().ok()).unwrap_or(0);
        let dc = dc.clone();
        if from == 0 || to == from {
            write.insert(dc, to);
        } else if to < from {
            if allowed.get(&dc) == Some(&to) {
                write.insert(dc, to);
            } else {
                holds.push(Hold::Decrease { dc, from, to });
            }
        } else if repair_pending {
            holds.push(Hold::Increase { dc, from, step: from, to });
        } else {
            let step = safe_step(from, to);
            write.insert(dc.clone(), step);
            if step < to {
                holds.push(Hold::Increase { dc, from, step, to });
            }
        }
    }
    Plan { write: Some(write), holds }
}

#[cfg(test)]
#[path = "replication_tests.rs"]
mod tests;
