//! Issue 18, item 1: a datacenter added to a running cluster serves nothing until its Cassandra
//! datacenter has the older mail. Mail is delivered over LMTP by a real pop3d in dc1 before dc2
//! exists. pop3d in dc2 runs as the pods would (`pop3d_session::spawn_like_the_pod`: the
//! Deployment's command line, the generated ConfigMap with `local_dc = "dc2"`, the mounted
//! Secrets) but as a process on loopback: there is no kubelet here. From the moment dc2 is added
//! to the end it reads the maildrop every 200 ms, and every read made while mail-dc2's Deployment
//! asks for a pod returns the complete maildrop (STAT and UIDL = every id dc1 lists). The reads
//! before the documented `nodetool rebuild` are the control: dc2 lacks the mail then, so a pod
//! serving there would show an incomplete maildrop. The watch sees 0 replicas in every state of
//! the Deployment until the rebuild is acknowledged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::common::*;
use crate::mail;
use crate::pop3d_session::{spawn_like_the_pod, start_like_the_pod, Pop3d};
use crate::rollout::kubectl_wait;
use crate::{apply, cluster, condition, get, teardown, wait_condition, AbortOnDrop};
use crds::{DatacenterRollout, Pop3Cluster};

const WAIT: Duration = Duration::from_secs(120);
const MAILS: usize = 5;
const PASSWORD: &str = "correct horse";

fn e2e_cassandra(args: &[&str]) -> String {
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/cassandra"))
        .args(args)
        .output()
        .expect("e2e/cassandra");
    assert!(out.status.success(), "e2e/cassandra {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One read of the dc2 maildrop, with the replicas mail-dc2's Deployment asked for just before.
#[derive(Debug)]
struct Read {
    replicas: i32,
    maildrop: Result<(usize, Vec<String>), String>,
}

async fn dc2_replicas(deployments: &Api<Deployment>) -> i32 {
    let d = deployments.get("mail-dc2").await.expect("mail-dc2 exists");
    d.spec.and_then(|s| s.replicas).unwrap_or(1)
}

/// dc2's pod, as a kubelet would run it, from the moment dc2 is added: pop3d started from
/// mail-dc2's Deployment and ConfigMap (started again when it exits, as a crash-looping pod is),
/// reading the maildrop every 200 ms. Each read (or failed start) is recorded with the replicas
/// mail-dc2 asked for just before it began; they never go back to 0 in this test, so a read with
/// replicas > 0 was made entirely while dc2 was meant to serve.
fn run_dc2(client: Client, ns: String, root: PathBuf, user: String, reads: Arc<Mutex<Vec<Read>>>) -> AbortOnDrop {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    AbortOnDrop(tokio::spawn(async move {
        for attempt in 0.. {
            let replicas = dc2_replicas(&deployments).await;
            let mut dc2 = spawn_like_the_pod(&client, &ns, "mail-dc2", &root.join(format!("dc2-{attempt}"))).await;
            if let Err(e) = dc2.wait_ready(Duration::from_secs(10)).await {
                let why = e.lines().last().unwrap_or_default().to_owned();
                reads.lock().unwrap().push(Read { replicas, maildrop: Err(format!("pop3d did not start: {why}")) });
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            loop {
                let replicas = dc2_replicas(&deployments).await;
                let maildrop = mail::maildrop(dc2.pop3, &user, PASSWORD).await;
                reads.lock().unwrap().push(Read { replicas, maildrop });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }))
}

/// Records every mail-dc2 state the watch sees with replicas > 0 before the acknowledgement.
fn watch_dc2(
    deployments: Api<Deployment>,
    acknowledged: Arc<AtomicBool>,
    early: Arc<Mutex<Vec<String>>>,
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut events = watcher(deployments, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(d)) = events.next().await {
            let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            if d.name_any() == "mail-dc2" && replicas > 0 && !acknowledged.load(Ordering::SeqCst) {
                early.lock().unwrap().push(format!("mail-dc2 with {replicas} replicas before the acknowledgement"));
            }
        }
    }))
}

/// What the status says while dc2 waits for its data: the stage, the column, the exact command.
async fn check_adding_status(client: &Client, ns: &str, ks: &str, c: &Pop3Cluster) {
    let st = c.status.as_ref().unwrap();
    assert_eq!(condition(c, "DatacenterAdding").unwrap().1, "AwaitingRepair");
    assert_eq!(st.keyspace.as_ref().unwrap().awaiting_data, ["dc2"]);
    assert_eq!(st.datacenters[1].rollout, Some(DatacenterRollout::AwaitingData));
    assert_eq!(condition(c, "Ready").unwrap().0, "False");
    // Once dc2's empty Deployment has been seen by its controller, what is left is the repair.
    eventually("Reconciling for AwaitingRepair", WAIT, || async {
        let fresh = get(client, ns, "mail").await?;
        (condition(&fresh, "Reconciling")? == ("True".into(), "AwaitingRepair".into())).then_some(())
    })
    .await;
    let message =
        c.status.as_ref().unwrap().conditions.iter().find(|x| x.type_ == "DatacenterAdding").unwrap().message.clone();
    assert!(message.contains(&format!("nodetool rebuild -ks {ks} -- dc1")), "{message}");
}

/// The maildrop as dc1 listed it: STAT's count and every id, in order.
fn complete(read: &Read, delivered: &[String]) -> bool {
    read.maildrop.as_ref().is_ok_and(|(n, uids)| *n == MAILS && uids == delivered)
}

/// The reads made while mail-dc2 asked for a pod that did not return the whole maildrop.
fn served_incomplete(reads: &[Read], delivered: &[String]) -> Vec<String> {
    reads.iter().filter(|r| r.replicas > 0 && !complete(r, delivered)).map(|r| format!("{r:?}")).collect()
}

/// Mail before dc2 exists: an account and `MAILS` messages delivered over LMTP by a pop3d started
/// as dc1's pod. Returns that pop3d, the address and the ids dc1 lists (every one delivered).
async fn deliver_in_dc1(client: &Client, ns: &str, root: &Path) -> (Pop3d, String, Vec<String>) {
    let dc1 = start_like_the_pod(client, ns, "mail-dc1", &root.join("dc1")).await;
    let secret = Api::<Secret>::namespaced(client.clone(), ns).get("mail-admin-token").await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let user = format!("adddc-{}@example.com", &uuid_hex()[..10]);
    mail::create_account(dc1.admin, &token, &user, PASSWORD).await.unwrap();
    for i in 0..MAILS {
        mail::deliver(dc1.lmtp, &user, &format!("before dc2 #{i}")).await.unwrap();
    }
    let (count, delivered) = mail::maildrop(dc1.pop3, &user, PASSWORD).await.unwrap();
    assert_eq!((count, delivered.len()), (MAILS, MAILS), "dc1 lists every delivered mail");
    (dc1, user, delivered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube, e2e/cassandra and a release pop3d; run with POPFLEET_KUBE=1"]
async fn an_added_datacenter_serves_nothing_until_its_data_is_rebuilt() {
    let client = client().await;
    let ns = namespace(&client, "adddc").await;
    let ks = keyspace("adddc");
    let mut op = Operator::start(&ns, &[]).await;
    let _kubelet = AbortOnDrop(fake_kubelet(client.clone(), ns.clone()));
    let mut obj = cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)]);
    // Failed logins in dc2 before the rebuild are expected; keep pop3d's back-off short.
    obj["spec"]["config"] = json!({"auth_fail_delay_ms": "50"});
    apply(&client, &ns, &obj).await;
    kubectl_wait(&ns, "mail", "Ready");

    let root = tempfile::tempdir().unwrap();
    let (dc1, user, delivered) = deliver_in_dc1(&client, &ns, root.path()).await;

    let acknowledged = Arc::new(AtomicBool::new(false));
    let early: Arc<Mutex<Vec<String>>> = Arc::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let _watch = watch_dc2(deployments.clone(), acknowledged.clone(), early.clone());

    // Add dc2: the keyspace gets dc2 replicas at once, the pods do not.
    obj["spec"]["datacenters"] = json!([{"name": "dc1", "replicas": 1}, {"name": "dc2", "replicas": 1}]);
    obj["spec"]["cassandra"]["replication"] = json!({"dc1": 1, "dc2": 1});
    apply(&client, &ns, &obj).await;
    let c = wait_condition(&client, &ns, "mail", "DatacenterAdding", "True", WAIT).await;
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
    let _dc2 = run_dc2(client.clone(), ns.clone(), root.path().to_owned(), user.clone(), reads.clone());
    // The test, checked before the rebuild and again at the end: no read made while
    // mail-dc2 asked for a pod was incomplete.
    eventually("dc2 read before the rebuild", WAIT, || async { (!reads.lock().unwrap().is_empty()).then_some(()) })
        .await;
    let served = served_incomplete(&reads.lock().unwrap(), &delivered);
    assert!(served.is_empty(), "dc2 served an incomplete maildrop before the rebuild: {served:?}");
    check_adding_status(&client, &ns, &ks, &c).await;
    assert_eq!(dc2_replicas(&deployments).await, 0);
    assert_eq!(replication(&cassandra().await, &ks).await.unwrap(), factors(&[("dc1", "1"), ("dc2", "1")]));
    // The control: dc2 really lacks the older mail, so its pods would have served it incomplete.
    let complete = |r: &Read| complete(r, &delivered);
    let before: Vec<String> = reads.lock().unwrap().iter().map(|r| format!("{:?}", r.maildrop)).collect();
    println!("dc2 before the rebuild: {}", before.last().unwrap());
    assert!(!reads.lock().unwrap().iter().any(complete), "dc2 had the old mail before the rebuild: {before:?}");

    // The documented steps: rebuild dc2's node from dc1, then acknowledge.
    e2e_cassandra(&["nodetool", "n2", "rebuild", "-ks", &ks, "--", "dc1"]);
    let at = get(&client, &ns, "mail").await.unwrap().status.unwrap().keyspace.unwrap().replication_changed_at.unwrap();
    acknowledged.store(true, Ordering::SeqCst);
    let api: Api<Pop3Cluster> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"metadata": {"annotations": {crds::REPAIRED_ANNOTATION: at}}});
    api.patch("mail", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let done = wait_condition(&client, &ns, "mail", "DatacenterAdding", "False", WAIT).await;
    assert!(done.status.as_ref().unwrap().keyspace.as_ref().unwrap().awaiting_data.is_empty());
    kubectl_wait(&ns, "mail", "Ready");
    assert_eq!(dc2_replicas(&deployments).await, 1);
    eventually("ten dc2 reads while mail-dc2 asks for a pod", WAIT, || async {
        (reads.lock().unwrap().iter().filter(|r| r.replicas > 0).count() >= 10).then_some(())
    })
    .await;
    drop(_dc2);

    let reads = std::mem::take(&mut *reads.lock().unwrap());
    let served = served_incomplete(&reads, &delivered);
    println!(
        "dc2 reads: {} in all, {} while mail-dc2 had replicas ({} of them incomplete), {} incomplete while it had none",
        reads.len(),
        reads.iter().filter(|r| r.replicas > 0).count(),
        served.len(),
        reads.iter().filter(|r| r.replicas == 0 && !complete(r)).count()
    );
    assert!(served.is_empty(), "dc2 served an incomplete maildrop: {served:?}");
    assert!(early.lock().unwrap().is_empty(), "{:?}", early.lock().unwrap());
    drop(dc1);
    teardown(&client, &ns, &mut op, &[&ks]).await;
}
