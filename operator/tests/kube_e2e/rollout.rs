//! Issue 18, item 4: the status GitOps tools and humans read. `kubectl wait --for=condition=Ready`
//! on a real control plane, per-datacenter image and version, and a rollout stuck past its
//! deadline (the real Deployment controller decides that) reported as Degraded and Stalled.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use serde_json::json;

use crate::common::*;
use crate::{apply, cluster, condition, get, kubectl_status, teardown, AbortOnDrop, IMAGE};
use crds::{DatacenterRollout, Pop3Cluster};

const WAIT: Duration = Duration::from_secs(120);

/// `kubectl wait --for=condition=<cond> p3c/<name>`, which must succeed.
pub fn kubectl_wait(ns: &str, name: &str, cond: &str) -> String {
    let (ok, out) = kubectl_status(&[
        "wait",
        "-n",
        ns,
        &format!("--for=condition={cond}"),
        &format!("p3c/{name}"),
        "--timeout=120s",
    ]);
    assert!(ok && out.contains("condition met"), "kubectl wait --for=condition={cond}: {out}");
    out
}

/// (Ready, Reconciling, Stalled) statuses.
fn kstatus(c: &Pop3Cluster) -> [String; 3] {
    ["Ready", "Reconciling", "Stalled"].map(|t| condition(c, t).map(|(s, _)| s).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn kubectl_wait_ready_and_a_stuck_rollout_is_degraded_and_stalled() {
    let client = client().await;
    let ns = namespace(&client, "ready").await;
    let ks = keyspace("ready");
    let broken = format!("{IMAGE}-broken");
    let mut op = Operator::start(&ns, &[]).await;
    let _kubelet = AbortOnDrop(fake_kubelet_except(client.clone(), ns.clone(), Some(broken.clone())));
    let mut obj = cluster("mail", &ks, &[("dc1", 2), ("dc2", 1)], &[("dc1", 1), ("dc2", 1)]);
    apply(&client, &ns, &obj).await;

    // 1. kubectl wait returns once everything is up, and the status agrees with itself then.
    println!("{}", kubectl_wait(&ns, "mail", "Ready"));
    let c = get(&client, &ns, "mail").await.unwrap();
    let s = c.status.as_ref().unwrap();
    assert_eq!(s.observed_generation, c.metadata.generation, "kstatus needs the current generation");
    assert_eq!(kstatus(&c), ["True", "False", "False"]);
    assert_eq!(s.ready, "3/3");
    assert_eq!(condition(&c, "Available").unwrap().0, "True");
    for dc in &s.datacenters {
        assert_eq!((dc.image.as_str(), dc.version.as_deref()), (IMAGE, Some("e2e")), "{dc:?}");
        assert_eq!(dc.rollout, Some(DatacenterRollout::Complete));
    }
    println!("{}", crate::kubectl(&["get", "p3c", "-n", &ns, "-o", "wide"]));

    // 2. An image whose pods never get ready, with a short progress deadline.
    obj["spec"]["rolloutStrategy"] = json!({"progressDeadlineSeconds": 3});
    obj["spec"]["image"] = json!(broken);
    apply(&client, &ns, &obj).await;
    let stuck = wait_for(&client, &ns, "Stalled").await;
    let (status, reason) = condition(&stuck, "Degraded").unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ProgressDeadlineExceeded"));
    let message = message(&stuck, "Degraded");
    assert!(
        message.contains("datacenter dc1: Deployment mail-dc1") && message.contains("timed out progressing"),
        "{message}"
    );
    assert_eq!(kstatus(&stuck), ["False", "False", "True"]);
    let d1 = Api::<Deployment>::namespaced(client.clone(), &ns).get("mail-dc1").await.unwrap();
    assert_eq!(d1.spec.unwrap().progress_deadline_seconds, Some(3), "spec.rolloutStrategy reached the Deployment");
    let dc1 = &stuck.status.as_ref().unwrap().datacenters[0];
    assert_eq!((dc1.image.as_str(), dc1.version.as_deref()), (broken.as_str(), Some("e2e-broken")));
    assert_eq!(dc1.rollout, Some(DatacenterRollout::Stalled));
    // The old pods still serve: a stuck rollout with surge 1 / unavailable 0 takes none away.
    assert_eq!(condition(&stuck, "Available").unwrap().0, "True");
    kubectl_wait(&ns, "mail", "Stalled");

    // 3. Rolling back clears it: Ready again, once the old image runs everywhere.
    obj["spec"]["image"] = json!(IMAGE);
    apply(&client, &ns, &obj).await;
    kubectl_wait(&ns, "mail", "Ready");
    let back = get(&client, &ns, "mail").await.unwrap();
    assert_eq!(kstatus(&back), ["True", "False", "False"]);
    assert_eq!(condition(&back, "Degraded").unwrap().0, "False");
    teardown(&client, &ns, &mut op, &[&ks]).await;
}

pub async fn wait_for(client: &Client, ns: &str, type_: &str) -> Pop3Cluster {
    crate::wait_condition(client, ns, "mail", type_, "True", WAIT).await
}

fn message(c: &Pop3Cluster, type_: &str) -> String {
    let conditions = &c.status.as_ref().unwrap().conditions;
    conditions.iter().find(|x| x.type_ == type_).map(|x| x.message.clone()).unwrap_or_default()
}
