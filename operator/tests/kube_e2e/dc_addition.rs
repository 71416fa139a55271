//! Issue 18, item 1 (first part): a datacenter added to a running cluster serves nothing until its
//! Cassandra datacenter has the older data. A row written before dc2 existed stands in for the
//! mail: read in dc2 at LOCAL_ONE it is missing right after the ALTER (so serving then would show
//! an incomplete maildrop), and it is there after the documented `nodetool rebuild`; dc2's
//! Deployment has 0 replicas at every observation until the rebuild is acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::Consistency;
use serde_json::json;

use crate::common::*;
use crate::rollout::kubectl_wait;
use crate::{apply, cluster, condition, get, teardown, wait_condition, AbortOnDrop};
use crds::{DatacenterRollout, Pop3Cluster};

const WAIT: Duration = Duration::from_secs(120);

/// A session that reads only in dc2, at LOCAL_ONE (what a dc2 pop3d would see at best).
async fn dc2_session() -> Session {
    let policy = DefaultPolicy::builder().prefer_datacenter("dc2".into()).permit_dc_failover(false).build();
    let profile = ExecutionProfile::builder().consistency(Consistency::LocalOne).load_balancing_policy(policy).build();
    SessionBuilder::new()
        .known_nodes(["127.0.0.2:9042"])
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .expect("dc2 session")
}

/// The probe row as dc2 returns it (a failing read fails the test: "no row" must mean no row).
async fn probe_in_dc2(session: &Session, ks: &str) -> Option<String> {
    let rows =
        session.query_unpaged(format!("SELECT v FROM {ks}.e2e_probe WHERE k = 1"), ()).await.expect("read in dc2");
    rows.into_rows_result().unwrap().maybe_first_row::<(String,)>().unwrap().map(|(v,)| v)
}

fn e2e_cassandra(args: &[&str]) -> String {
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/cassandra"))
        .args(args)
        .output()
        .expect("e2e/cassandra");
    assert!(out.status.success(), "e2e/cassandra {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn an_added_datacenter_serves_nothing_until_its_data_is_rebuilt() {
    let client = client().await;
    let ns = namespace(&client, "adddc").await;
    let ks = keyspace("adddc");
    let mut op = Operator::start(&ns, &[]).await;
    let _kubelet = AbortOnDrop(fake_kubelet(client.clone(), ns.clone()));
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)])).await;
    kubectl_wait(&ns, "mail", "Ready");

    // Mail before dc2 existed (a probe row, written in dc1).
    let session = cassandra().await;
    session
        .query_unpaged(format!("CREATE TABLE IF NOT EXISTS {ks}.e2e_probe (k int PRIMARY KEY, v text)"), ())
        .await
        .unwrap();
    session.await_schema_agreement().await.unwrap();
    session.query_unpaged(format!("INSERT INTO {ks}.e2e_probe (k, v) VALUES (1, 'old mail')"), ()).await.unwrap();

    // Every state of mail-dc2, in watch order: no replica before the acknowledgement.
    let acknowledged = Arc::new(AtomicBool::new(false));
    let early: Arc<Mutex<Vec<String>>> = Arc::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let (ack, seen) = (acknowledged.clone(), early.clone());
    let watch = deployments.clone();
    let _watch = AbortOnDrop(tokio::spawn(async move {
        let mut events = watcher(watch, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(d)) = events.next().await {
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            if d.name_any() == "mail-dc2" && replicas > 0 && !ack.load(Ordering::SeqCst) {
                seen.lock().unwrap().push(format!("mail-dc2 with {replicas} replicas before the acknowledgement"));
            }
        }
    }));

    // Add dc2: the keyspace gets dc2 replicas at once, the pods do not.
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 1), ("dc2", 1)], &[("dc1", 1), ("dc2", 1)])).await;
    let c = wait_condition(&client, &ns, "mail", "DatacenterAdding", "True", WAIT).await;
    let st = c.status.as_ref().unwrap();
    assert_eq!(condition(&c, "DatacenterAdding").unwrap().1, "AwaitingRepair");
    assert_eq!(st.keyspace.as_ref().unwrap().awaiting_data, ["dc2"]);
    assert_eq!(st.datacenters[1].rollout, Some(DatacenterRollout::AwaitingData));
    assert_eq!(condition(&c, "Ready").unwrap().0, "False");
    // Once dc2's empty Deployment has been seen by its controller, what is left is the repair.
    eventually("Reconciling for AwaitingRepair", WAIT, || async {
        let c = get(&client, &ns, "mail").await?;
        (condition(&c, "Reconciling")? == ("True".into(), "AwaitingRepair".into())).then_some(())
    })
    .await;
    let message =
        c.status.as_ref().unwrap().conditions.iter().find(|x| x.type_ == "DatacenterAdding").unwrap().message.clone();
    assert!(message.contains(&format!("nodetool rebuild -ks {ks} -- dc1")), "{message}");
    assert_eq!(deployments.get("mail-dc2").await.unwrap().spec.unwrap().replicas, Some(0));
    assert_eq!(replication(&session, &ks).await.unwrap(), factors(&[("dc1", "1"), ("dc2", "1")]));
    println!("{}", crate::kubectl(&["get", "p3c", "-n", &ns]));
    // What dc2 pods would have served now: the old mail is not there.
    let dc2 = dc2_session().await;
    assert_eq!(probe_in_dc2(&dc2, &ks).await, None, "dc2 holds no old data before the rebuild");

    // The documented steps: rebuild dc2's node from dc1, then acknowledge.
    e2e_cassandra(&["nodetool", "n2", "rebuild", "-ks", &ks, "--", "dc1"]);
    assert_eq!(probe_in_dc2(&dc2, &ks).await.as_deref(), Some("old mail"), "rebuilt: dc2 has the old mail");
    let at = get(&client, &ns, "mail").await.unwrap().status.unwrap().keyspace.unwrap().replication_changed_at.unwrap();
    acknowledged.store(true, Ordering::SeqCst);
    let api: Api<Pop3Cluster> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"metadata": {"annotations": {crds::REPAIRED_ANNOTATION: at}}});
    api.patch("mail", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let done = wait_condition(&client, &ns, "mail", "DatacenterAdding", "False", WAIT).await;
    assert!(done.status.as_ref().unwrap().keyspace.as_ref().unwrap().awaiting_data.is_empty());
    kubectl_wait(&ns, "mail", "Ready");
    assert_eq!(deployments.get("mail-dc2").await.unwrap().spec.unwrap().replicas, Some(1));
    assert!(early.lock().unwrap().is_empty(), "{:?}", early.lock().unwrap());
    teardown(&client, &ns, &mut op, &[&ks]).await;
}
