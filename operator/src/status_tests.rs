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
                ..Default::default()
            },
            rolled_out: ready == 2,
            stalled: None,
            waiting_for: None,
            awaiting_data: false,
        }],
        keyspace,
        problems: vec![],
        holds: vec![],
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
    let f = compute(&cluster(Some(s)), &obs(2, KeyspaceOutcome::Failed("no host".into())), &t("2026-01-01T00:01:00Z"));
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

/// (status, reason) of Ready, Reconciling and Stalled.
fn kstatus(s: &Pop3ClusterStatus) -> [(String, String); 3] {
    [READY, RECONCILING, STALLED].map(|t| (get(s, t).status.clone(), get(s, t).reason.clone()))
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

#[test]
fn ready_only_when_every_datacenter_is_rolled_out_and_the_keyspace_is_ready() {
    let rolling = compute(&cluster(None), &obs(1, ks()), &t("2026-01-01T00:00:00Z"));
    assert_eq!(
        kstatus(&rolling),
        [pair("False", "RollingOut"), pair("True", "RollingOut"), pair("False", "AsExpected")]
    );
    assert_eq!(rolling.rolling, "", "the rollout state comes from the observation");
    let done = compute(&cluster(Some(rolling)), &obs(2, ks()), &t("2026-01-01T00:01:00Z"));
    assert_eq!(kstatus(&done), [pair("True", "Current"), pair("False", "Current"), pair("False", "AsExpected")]);
    assert!(done.conditions.iter().all(|c| c.observed_generation == Some(4)), "kstatus compares generations");
    assert_eq!(get(&done, READY).last_transition_time, t("2026-01-01T00:01:00Z"));
    assert_eq!(get(&done, STALLED).last_transition_time, t("2026-01-01T00:00:00Z"), "no flip: time kept");

    let unchecked = compute(&cluster(None), &obs(2, KeyspaceOutcome::NotChecked), &t("2026-01-01T00:00:00Z"));
    assert_eq!(kstatus(&unchecked)[0], pair("False", "KeyspaceNotReady"));
    assert_eq!(kstatus(&unchecked)[1], pair("True", "KeyspaceNotReady"));
}

#[test]
fn a_problem_stalls_and_exactly_one_of_the_three_is_true() {
    let mut o = obs(2, ks());
    o.problems.push(("CassandraTlsSecretMissing".into(), "Secret ctls not found".into()));
    let s = compute(&cluster(None), &o, &t("2026-01-01T00:00:00Z"));
    assert_eq!(
        kstatus(&s),
        [
            pair("False", "CassandraTlsSecretMissing"),
            pair("False", "Stalled"),
            pair("True", "CassandraTlsSecretMissing")
        ]
    );
    let failed =
        compute(&cluster(None), &obs(1, KeyspaceOutcome::Failed("no host".into())), &t("2026-01-01T00:00:00Z"));
    assert_eq!(kstatus(&failed)[2], pair("True", "CassandraError"));
    let mut paused = obs(1, ks());
    paused.paused = true;
    let p = compute(&cluster(None), &paused, &t("2026-01-01T00:00:00Z"));
    assert_eq!(kstatus(&p), [pair("False", "Paused"), pair("False", "Stalled"), pair("True", "Paused")]);
    for s in [s, failed, p] {
        let trues = kstatus(&s).iter().filter(|(st, _)| st == "True").count();
        assert_eq!(trues, 1, "{:?}", kstatus(&s));
    }
}

#[test]
fn a_stuck_rollout_is_degraded_with_the_deployments_reason_and_stalled() {
    let mut o = obs(1, ks());
    o.datacenters[0].stalled =
        Some("Deployment m-dc1: ProgressDeadlineExceeded: ReplicaSet \"m-dc1-5\" has timed out progressing.".into());
    let s = compute(&cluster(None), &o, &t("2026-01-01T00:00:00Z"));
    assert_eq!(get(&s, DEGRADED).status, "True");
    assert_eq!(get(&s, DEGRADED).reason, "ProgressDeadlineExceeded");
    assert!(get(&s, DEGRADED).message.contains("datacenter dc1: Deployment m-dc1"), "{}", get(&s, DEGRADED).message);
    assert!(get(&s, DEGRADED).message.contains("has timed out progressing"));
    assert_eq!(kstatus(&s)[2], pair("True", "ProgressDeadlineExceeded"));
    assert_eq!(get(&s, READY).status, "False");
}

#[test]
fn a_waiting_datacenter_keeps_the_cluster_reconciling_and_is_not_rolling() {
    let mut o = obs(2, ks());
    let mut waiting = o.datacenters[0].clone();
    waiting.status.name = "dc2".into();
    waiting.status.rollout = Some(DatacenterRollout::Waiting);
    waiting.rolled_out = false;
    waiting.waiting_for = Some("dc1".into());
    o.datacenters[0].rolled_out = false;
    o.datacenters[0].status.rollout = Some(DatacenterRollout::RollingOut);
    o.datacenters.push(waiting);
    let s = compute(&cluster(None), &o, &t("2026-01-01T00:00:00Z"));
    assert_eq!(s.rolling, "dc1", "only the datacenter actually rolling");
    assert_eq!(kstatus(&s)[1], pair("True", "RollingOut"));
    assert!(get(&s, PROGRESSING).message.contains("dc2 waits for dc1 to finish"), "{}", get(&s, PROGRESSING).message);
}

#[test]
fn a_datacenter_awaiting_data_is_named_with_the_steps_and_keeps_the_cluster_reconciling() {
    let mut o = obs(2, ks());
    let mut held = o.datacenters[0].clone();
    held.status.name = "dc2".into();
    held.status.cassandra_datacenter = "dc2".into();
    held.status.replicas = 0;
    held.status.ready_replicas = 0;
    held.awaiting_data = true;
    o.datacenters.push(held);
    let s = compute(&cluster(None), &o, &t("2026-01-01T00:00:00Z"));
    let adding = get(&s, DATACENTER_ADDING);
    assert_eq!((adding.status.as_str(), adding.reason.as_str()), ("True", AWAITING_REPAIR));
    assert!(adding.message.contains("dc2 kept at 0 pods"), "{}", adding.message);
    assert!(adding.message.contains("nodetool rebuild -ks popfleet -- dc1"), "{}", adding.message);
    assert_eq!(
        kstatus(&s),
        [pair("False", AWAITING_REPAIR), pair("True", AWAITING_REPAIR), pair("False", "AsExpected")]
    );
    let settled = compute(&cluster(None), &obs(2, ks()), &t("2026-01-01T00:00:00Z"));
    assert_eq!(get(&settled, DATACENTER_ADDING).status, "False");
}

#[test]
fn held_replication_is_stalled_when_it_needs_the_user_and_reconciling_while_stepping() {
    let held =
        |reason: &str, blocking: bool| Held { reason: reason.into(), message: format!("{reason} msg"), blocking };
    let mut o = obs(2, ks());
    o.holds = vec![held(crate::replication::EXCEEDS_NODES, true)];
    let s = compute(&cluster(None), &o, &t("2026-01-01T00:00:00Z"));
    for type_ in [REPLICATION_HELD, DEGRADED, STALLED] {
        assert_eq!(
            (get(&s, type_).status.as_str(), get(&s, type_).reason.as_str()),
            ("True", "ReplicationExceedsNodes")
        );
    }
    assert_eq!(get(&s, AVAILABLE).status, "True", "the pods keep serving on the replication as it is");
    o.holds = vec![held(crate::replication::STEP_AWAITING_REPAIR, false)];
    let s = compute(&cluster(None), &o, &t("2026-01-01T00:00:00Z"));
    assert_eq!(get(&s, REPLICATION_HELD).reason, "ReplicationStepAwaitingRepair");
    assert_eq!(
        (get(&s, RECONCILING).status.as_str(), get(&s, RECONCILING).reason.as_str()),
        ("True", "ReplicationStepAwaitingRepair")
    );
    assert_eq!(get(&s, STALLED).status, "False");
    assert_eq!(get(&s, READY).status, "False", "not Ready before the spec's replication is in Cassandra");
    o.holds.clear();
    let s = compute(&cluster(None), &o, &t("2026-01-01T00:00:00Z"));
    assert_eq!(get(&s, REPLICATION_HELD).status, "False");
    // A keyspace whose creation was refused.
    let s =
        compute(&cluster(None), &obs(2, KeyspaceOutcome::Refused("dc1 has 1 node".into())), &t("2026-01-01T00:00:00Z"));
    assert_eq!(get(&s, KEYSPACE_READY).reason, "ReplicationExceedsNodes");
    assert_eq!(get(&s, AVAILABLE).status, "False");
}
