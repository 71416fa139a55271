//! Changes over a resource's life: topology and replication, drift, pause, deletion, failover.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::common::*;
use crate::{apply, cluster, get, spec_snapshot, teardown, wait_condition};
use crds::Pop3Cluster;

/// Writes the operator made to child objects and Cassandra (status writes excluded).
async fn writes(op: &Operator) -> f64 {
    op.metric("popfleet_operator_writes_total", "action=\"apply\"").await
        + op.metric("popfleet_operator_writes_total", "action=\"delete\"").await
        + op.metric("popfleet_operator_writes_total", "action=\"keyspace").await
}

async fn replicas(api: &Api<Deployment>, name: &str) -> Option<i32> {
    api.get_opt(name).await.ok().flatten()?.spec?.replicas
}

/// Every kind of child object of `name` is gone.
async fn all_gone(client: &kube::Client, ns: &str, name: &str) -> Option<()> {
    let c = client.clone();
    let none = Api::<Deployment>::namespaced(c.clone(), ns).get_opt(name).await.ok()?.is_none()
        && Api::<Service>::namespaced(c.clone(), ns).get_opt(name).await.ok()?.is_none()
        && Api::<ConfigMap>::namespaced(c.clone(), ns).get_opt(name).await.ok()?.is_none()
        && Api::<PodDisruptionBudget>::namespaced(c.clone(), ns).get_opt(name).await.ok()?.is_none()
        && Api::<ServiceAccount>::namespaced(c.clone(), ns).get_opt(name).await.ok()?.is_none()
        && Api::<NetworkPolicy>::namespaced(c, ns).get_opt(name).await.ok()?.is_none();
    none.then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn scale_add_remove_datacenters_and_change_replication() {
    let client = client().await;
    let ns = namespace(&client, "topology").await;
    let ks = keyspace("topology");
    let session = cassandra().await;
    // Another team already replicates this keyspace to dc2, with a factor of 2 on its one node;
    // the resource lists dc1 only, so the operator must leave dc2's factor alone.
    session
        .query_unpaged(format!("CREATE KEYSPACE {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', 'dc1': '1', 'dc2': '2'}}"), ())
        .await
        .unwrap();
    session.await_schema_agreement().await.unwrap();
    let mut op = Operator::start(&ns, &[]).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)])).await;
    let c = wait_condition(&client, &ns, "mail", "KeyspaceReady", "True", Duration::from_secs(60)).await;
    assert!(!c.status.unwrap().keyspace.unwrap().repair_needed, "nothing changed: no repair");
    assert_eq!(replication(&session, &ks).await.unwrap(), factors(&[("dc1", "1"), ("dc2", "2")]));

    // A factor above dc1's node count (1, as Cassandra reports it) is refused: no ALTER.
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 2)])).await;
    let c = wait_condition(&client, &ns, "mail", "ReplicationHeld", "True", Duration::from_secs(30)).await;
    for type_ in ["ReplicationHeld", "Degraded", "Stalled"] {
        let (status, reason) = crate::condition(&c, type_).unwrap();
        assert_eq!((status.as_str(), reason.as_str()), ("True", "ReplicationExceedsNodes"), "{type_}");
    }
    let message = held_message(&c);
    assert!(message.contains("datacenter dc1 has 1 Cassandra node(s), fewer than its factor 2"), "{message}");
    wait_event(&client, &ns, "mail", "ReplicationExceedsNodes").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replication(&session, &ks).await.unwrap(), factors(&[("dc1", "1"), ("dc2", "2")]), "refused: no ALTER");

    // Scale a DC (and go back to a factor that fits).
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 3)], &[("dc1", 1)])).await;
    eventually("mail-dc1 scaled to 3", Duration::from_secs(30), || async {
        (replicas(&deployments, "mail-dc1").await? == 3).then_some(())
    })
    .await;
    wait_condition(&client, &ns, "mail", "ReplicationHeld", "False", Duration::from_secs(30)).await;

    // Add a DC whose replication the spec lowers (2 -> 1): the pods come, the decrease is held
    // until the annotation allows exactly that factor.
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 3), ("dc2", 1)], &[("dc1", 1), ("dc2", 1)])).await;
    eventually("mail-dc2 appears", Duration::from_secs(30), || async {
        (replicas(&deployments, "mail-dc2").await? == 1).then_some(())
    })
    .await;
    let c = wait_condition(&client, &ns, "mail", "ReplicationHeld", "True", Duration::from_secs(30)).await;
    assert_eq!(crate::condition(&c, "ReplicationHeld").unwrap().1, "ReplicationDecreaseHeld");
    assert_eq!(crate::condition(&c, "Stalled").unwrap().1, "ReplicationDecreaseHeld");
    assert!(held_message(&c).contains("dc2 2 -> 1 held"), "{}", held_message(&c));
    assert_eq!(c.status.as_ref().unwrap().datacenters.len(), 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replication(&session, &ks).await.unwrap(), factors(&[("dc1", "1"), ("dc2", "2")]), "held: no ALTER");
    let api: Api<Pop3Cluster> = Api::namespaced(client.clone(), &ns);
    let allow = |v: &str| json!({"metadata": {"annotations": {crds::ALLOW_DECREASE_ANNOTATION: v}}});
    api.patch("mail", &PatchParams::default(), &Patch::Merge(&allow("dc2=0"))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replication(&session, &ks).await.unwrap()["dc2"], "2", "another factor allows nothing");
    api.patch("mail", &PatchParams::default(), &Patch::Merge(&allow("dc2=1"))).await.unwrap();
    eventually("dc2 lowered to 1", Duration::from_secs(60), || async {
        (replication(&session, &ks).await? == factors(&[("dc1", "1"), ("dc2", "1")])).then_some(())
    })
    .await;
    wait_event(&client, &ns, "mail", "CleanupNeeded").await;
    let c = wait_condition(&client, &ns, "mail", "ReplicationHeld", "False", Duration::from_secs(30)).await;
    assert!(!c.status.unwrap().keyspace.unwrap().repair_needed, "a decrease alone needs no repair");

    // Remove a DC: its objects go; its replication stays (the operator never removes replicas).
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 3)], &[("dc1", 1)])).await;
    eventually("mail-dc2 objects are deleted", Duration::from_secs(60), || all_gone(&client, &ns, "mail-dc2")).await;
    assert!(replicas(&deployments, "mail-dc1").await == Some(3));
    wait_event(&client, &ns, "mail", "DatacenterRemoved").await;
    let c = wait_condition(&client, &ns, "mail", "KeyspaceReady", "True", Duration::from_secs(30)).await;
    assert_eq!(c.status.as_ref().unwrap().datacenters.len(), 1);
    assert_eq!(replication(&session, &ks).await.unwrap(), factors(&[("dc1", "1"), ("dc2", "1")]));

    teardown(&client, &ns, &mut op, &[&ks]).await;
}

fn held_message(c: &Pop3Cluster) -> String {
    let status = c.status.as_ref().unwrap();
    status.conditions.iter().find(|x| x.type_ == "ReplicationHeld").unwrap().message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn hand_edits_are_corrected_and_pause_stops_all_writes() {
    let client = client().await;
    let ns = namespace(&client, "drift").await;
    let ks = keyspace("drift");
    let session = cassandra().await;
    let mut op = Operator::start(&ns, &[]).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)])).await;
    wait_condition(&client, &ns, "mail", "KeyspaceReady", "True", Duration::from_secs(60)).await;

    // Someone edits the owned Deployment and ConfigMap by hand (an update, as `kubectl edit`).
    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    let hand =
        json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "pop3d", "image": "evil:1"}]}}}});
    deployments.patch("mail-dc1", &edit, &Patch::Strategic(&hand)).await.unwrap();
    configmaps
        .patch("mail-dc1", &edit, &Patch::Merge(&json!({"data": {"pop3d.toml": "store = \"embedded\"\n"}})))
        .await
        .unwrap();
    eventually("the Deployment edit is reverted", Duration::from_secs(30), || async {
        let d = deployments.get("mail-dc1").await.ok()?.spec?;
        let image = d.template.spec?.containers[0].image.clone()?;
        (d.replicas == Some(1) && image == crate::IMAGE).then_some(())
    })
    .await;
    eventually("the ConfigMap edit is reverted", Duration::from_secs(30), || async {
        configmaps.get("mail-dc1").await.ok()?.data?["pop3d.toml"].contains("store = \"cassandra\"").then_some(())
    })
    .await;

    // Pause, then change everything: nothing may be written until unpaused.
    let mut paused = cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)]);
    paused["spec"]["paused"] = json!(true);
    apply(&client, &ns, &paused).await;
    wait_condition(&client, &ns, "mail", "ReconciliationPaused", "True", Duration::from_secs(30)).await;
    wait_event(&client, &ns, "mail", "Paused").await;
    let writes_before = writes(&op).await;
    // dc2 added to the replication: the one change the two one-node datacenters can take.
    let mut changed = cluster("mail", &ks, &[("dc1", 4)], &[("dc1", 1), ("dc2", 1)]);
    changed["spec"]["paused"] = json!(true);
    changed["spec"]["config"] = json!({"idle_timeout": "123"});
    apply(&client, &ns, &changed).await;
    deployments.patch("mail-dc1", &edit, &Patch::Merge(&json!({"spec": {"replicas": 7}}))).await.unwrap();
    let before = spec_snapshot(&client, &ns).await;
    let c = wait_condition(&client, &ns, "mail", "ReconciliationPaused", "True", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut after = spec_snapshot(&client, &ns).await;
    // The resource's own status may be refreshed (observedGeneration); nothing else.
    after.remove("pop3cluster/mail");
    let mut before = before;
    before.remove("pop3cluster/mail");
    assert_eq!(after, before, "objects changed while paused");
    assert_eq!(replicas(&deployments, "mail-dc1").await, Some(7), "a hand edit is not corrected while paused");
    assert_eq!(replication(&session, &ks).await.unwrap(), factors(&[("dc1", "1")]), "no ALTER while paused");
    assert_eq!(writes(&op).await, writes_before, "the operator wrote while paused");
    assert_eq!(
        c.status.unwrap().observed_generation,
        c.metadata.generation,
        "the status still follows the spec's generation"
    );

    // Unpause: everything converges.
    changed["spec"]["paused"] = json!(false);
    apply(&client, &ns, &changed).await;
    eventually("scaled to 4 after unpause", Duration::from_secs(30), || async {
        (replicas(&deployments, "mail-dc1").await? == 4).then_some(())
    })
    .await;
    eventually("config override applied", Duration::from_secs(30), || async {
        configmaps.get("mail-dc1").await.ok()?.data?["pop3d.toml"].contains("idle_timeout = 123").then_some(())
    })
    .await;
    eventually("dc2 replication 1 after unpause", Duration::from_secs(60), || async {
        (replication(&session, &ks).await? == factors(&[("dc1", "1"), ("dc2", "1")])).then_some(())
    })
    .await;
    wait_condition(&client, &ns, "mail", "ReconciliationPaused", "False", Duration::from_secs(30)).await;

    teardown(&client, &ns, &mut op, &[&ks]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn a_renewed_tls_secret_rolls_the_pods() {
    let client = client().await;
    let ns = namespace(&client, "tls").await;
    let ks = keyspace("tls");
    let mut op = Operator::start(&ns, &[]).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let secret = |crt: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pop-tls"},
        "type": "kubernetes.io/tls", "stringData": {"tls.crt": crt, "tls.key": "key"}})
    };
    secrets.patch("pop-tls", &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&secret("first"))).await.unwrap();
    let mut obj = cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)]);
    obj["spec"]["pop3"] = json!({"tls": {"secretName": "pop-tls"}});
    apply(&client, &ns, &obj).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let hash = || async {
        let d = deployments.get_opt("mail-dc1").await.ok()??;
        let a = d.spec?.template.metadata?.annotations?;
        a.get(operator::resources::TLS_HASH_ANNOTATION).cloned()
    };
    let first = eventually("the pod template carries the TLS hash", Duration::from_secs(60), hash).await;
    let svc = Api::<Service>::namespaced(client.clone(), &ns).get("mail-dc1").await.unwrap();
    let ports: Vec<i32> = svc.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, vec![110, 995, 24], "POP3S on the Service");
    // cert-manager renews the certificate: the Secret changes, the pods roll.
    secrets.patch("pop-tls", &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&secret("renewed"))).await.unwrap();
    let second = eventually("the TLS hash follows the Secret", Duration::from_secs(30), || async {
        hash().await.filter(|h| *h != first)
    })
    .await;
    assert_ne!(first, second);
    teardown(&client, &ns, &mut op, &[&ks]).await;
}

/// A new Cassandra password reaches the pods (they read it from the environment at start) by a
/// roll; a write to the Secret that leaves the credentials as they were rolls nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn rotated_cassandra_credentials_roll_the_pods() {
    let client = client().await;
    let ns = namespace(&client, "creds").await;
    let ks = keyspace("creds");
    let mut op = Operator::start(&ns, &[]).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let secret = |password: &str, label: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cass", "labels": {"note": label}},
        "stringData": {"username": "popfleet", "password": password}})
    };
    let put = |s: serde_json::Value| {
        let secrets = secrets.clone();
        async move { secrets.patch("cass", &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&s)).await.unwrap() }
    };
    put(secret("first-password", "a")).await;
    let mut obj = cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)]);
    obj["spec"]["cassandra"]["credentialsSecret"] = json!({"name": "cass"});
    apply(&client, &ns, &obj).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let hash = || async {
        let d = deployments.get_opt("mail-dc1").await.ok()??;
        let a = d.spec?.template.metadata?.annotations?;
        a.get(operator::resources::CASSANDRA_CREDENTIALS_HASH_ANNOTATION).cloned()
    };
    let first = eventually("the pod template carries the credentials hash", Duration::from_secs(60), hash).await;
    // Keyed with the cluster's admin token: not a hash anyone can test password guesses against.
    let unkeyed = operator::resources::sha256_hex(&[b"", b"popfleet", b"first-password"]);
    assert_ne!(first, unkeyed);
    put(secret("first-password", "b")).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(hash().await.as_deref(), Some(first.as_str()), "a label change rolled the pods");
    put(secret("second-password", "b")).await;
    let second = eventually("the credentials hash follows the password", Duration::from_secs(30), || async {
        hash().await.filter(|h| *h != first)
    })
    .await;
    assert_ne!(first, second);
    teardown(&client, &ns, &mut op, &[&ks]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn delete_removes_owned_objects_and_keeps_the_keyspace_by_default() {
    let client = client().await;
    let ns = namespace(&client, "delete").await;
    let (kept, dropped) = (keyspace("kept"), keyspace("dropped"));
    let session = cassandra().await;
    let mut op = Operator::start(&ns, &[]).await;
    apply(&client, &ns, &cluster("keep", &kept, &[("dc1", 1)], &[("dc1", 1)])).await;
    let mut delete = cluster("drop", &dropped, &[("dc1", 1)], &[("dc1", 1)]);
    delete["spec"]["deletionPolicy"] = json!("Delete");
    apply(&client, &ns, &delete).await;
    for name in ["keep", "drop"] {
        let c = wait_condition(&client, &ns, name, "KeyspaceReady", "True", Duration::from_secs(60)).await;
        assert_eq!(c.metadata.finalizers.as_deref(), Some(&[operator::FINALIZER.to_owned()][..]));
    }
    let api: Api<Pop3Cluster> = Api::namespaced(client.clone(), &ns);

    api.delete("keep", &DeleteParams::default()).await.unwrap();
    eventually("Pop3Cluster keep is gone", Duration::from_secs(30), || async {
        get(&client, &ns, "keep").await.is_none().then_some(())
    })
    .await;
    // The garbage collector (kube-controller-manager) deletes what the resource owned.
    eventually("keep's objects are garbage-collected", Duration::from_secs(90), || all_gone(&client, &ns, "keep-dc1"))
        .await;
    eventually("keep's admin token Secret is garbage-collected", Duration::from_secs(90), || async {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        secrets.get_opt("keep-admin-token").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(replication(&session, &kept).await.is_some(), "deletionPolicy Retain keeps the keyspace");
    wait_event(&client, &ns, "keep", "KeyspaceRetained").await;
    assert!(schema::cassandra::applied_versions(&session, &kept).await.is_ok(), "and its tables");

    api.delete("drop", &DeleteParams::default()).await.unwrap();
    eventually("Pop3Cluster drop is gone", Duration::from_secs(60), || async {
        get(&client, &ns, "drop").await.is_none().then_some(())
    })
    .await;
    assert!(replication(&session, &dropped).await.is_none(), "deletionPolicy Delete drops the keyspace");
    eventually("drop's objects are garbage-collected", Duration::from_secs(90), || all_gone(&client, &ns, "drop-dc1"))
        .await;

    teardown(&client, &ns, &mut op, &[&kept, &dropped]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn with_two_replicas_one_leads_and_the_other_takes_over() {
    let client = client().await;
    let ns = namespace(&client, "lease").await;
    let ks = keyspace("lease");
    let args = |id: &'static str| ["--leader-election", "--lease-namespace", ns.as_str(), "--identity", id];
    let mut op_a = Operator::start(&ns, &args("op-a")).await;
    let mut op_b = Operator::start(&ns, &args("op-b")).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = || async { leases.get_opt("popfleet-operator").await.ok().flatten()?.spec?.holder_identity };
    let first = eventually("a replica holds the lease", Duration::from_secs(30), holder).await;
    let (leader, standby) = if first == "op-a" { (&mut op_a, &mut op_b) } else { (&mut op_b, &mut op_a) };
    assert_eq!(leader.metric("popfleet_operator_leader", "").await, 1.0);
    assert_eq!(standby.metric("popfleet_operator_leader", "").await, 0.0);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)])).await;
    eventually("the leader creates the Deployment", Duration::from_secs(60), || async {
        (replicas(&deployments, "mail-dc1").await? == 1).then_some(())
    })
    .await;
    assert_eq!(standby.metric("popfleet_operator_reconciles_total", "").await, 0.0, "the standby does not reconcile");

    // The leader crashes; after the lease expires the standby takes over and reconciles.
    leader.kill();
    let second = eventually("the other replica takes the lease", Duration::from_secs(60), || async {
        holder().await.filter(|h| *h != first)
    })
    .await;
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 2)], &[("dc1", 1)])).await;
    eventually("the new leader scales", Duration::from_secs(60), || async {
        (replicas(&deployments, "mail-dc1").await? == 2).then_some(())
    })
    .await;
    println!("lease: {first} -> {second}");
    teardown(&client, &ns, standby, &[&ks]).await;
}
