//! Issue 18, item 4: `spec.rolloutStrategy: {type: OneDatacenterAtATime}` on a two-DC cluster.
//! Every change of the Deployments, as the apiserver's watch delivers them in order, is checked:
//! dc2 never has the new template before dc1 has rolled it out with all pods ready; and a bad
//! image stops at dc1.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::common::*;
use crate::rollout::{kubectl_wait, wait_for};
use crate::{apply, cluster, condition, teardown, wait_condition, AbortOnDrop, IMAGE};
use crds::{DatacenterRollout, Pop3Cluster};

const WAIT: Duration = Duration::from_secs(120);

fn image(d: &Deployment) -> String {
    let pod = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    pod.and_then(|p| p.containers.iter().find(|c| c.name == "pop3d")?.image.clone()).unwrap_or_default()
}

/// Rolled out as the Deployment controller reports it: the current template on every pod, all ready.
fn complete(d: &Deployment) -> bool {
    let (spec, st) = (d.spec.as_ref().unwrap(), d.status.clone().unwrap_or_default());
    let want = spec.replicas.unwrap_or(1);
    st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && st.updated_replicas.unwrap_or(0) == want
        && st.ready_replicas.unwrap_or(0) == want
        && st.replicas.unwrap_or(0) == want
}

/// What the watches saw: ordering violations, Deployment events, and (rolling, dc2 rollout) pairs
/// of every status the operator wrote.
#[derive(Default)]
struct Seen {
    violations: Vec<String>,
    deployment_events: usize,
    statuses: Vec<(String, Option<DatacenterRollout>)>,
}

/// Watches the namespace's Deployments and checks, after every event, that dc2 runs `new_image`
/// only once dc1 has rolled it out.
fn watch_order(client: &Client, ns: &str, new_image: String, seen: Arc<Mutex<Seen>>) -> AbortOnDrop {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    AbortOnDrop(tokio::spawn(async move {
        let mut state: BTreeMap<String, Deployment> = BTreeMap::new();
        let mut events = watcher(api, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(d)) = events.next().await {
            state.insert(d.name_any(), d);
            let (Some(dc1), Some(dc2)) = (state.get("mail-dc1"), state.get("mail-dc2")) else { continue };
            let mut s = seen.lock().unwrap();
            s.deployment_events += 1;
            if image(dc2) == new_image && !(image(dc1) == new_image && complete(dc1)) {
                s.violations.push(format!(
                    "dc2 has {} while dc1 has {} (complete: {}, status {:?})",
                    image(dc2),
                    image(dc1),
                    complete(dc1),
                    dc1.status
                ));
            }
        }
    }))
}

fn watch_status(client: &Client, ns: &str, seen: Arc<Mutex<Seen>>) -> AbortOnDrop {
    let api: Api<Pop3Cluster> = Api::namespaced(client.clone(), ns);
    AbortOnDrop(tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(c)) = events.next().await {
            let Some(st) = c.status else { continue };
            let dc2 = st.datacenters.iter().find(|d| d.name == "dc2").and_then(|d| d.rollout);
            seen.lock().unwrap().statuses.push((st.rolling.clone(), dc2));
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn one_datacenter_at_a_time_rolls_dc1_then_dc2_and_a_bad_image_stops_at_dc1() {
    let client = client().await;
    let ns = namespace(&client, "order").await;
    let ks = keyspace("order");
    let (next, broken) = (format!("{IMAGE}-next"), format!("{IMAGE}-broken"));
    let mut op = Operator::start(&ns, &[]).await;
    let _kubelet = AbortOnDrop(fake_kubelet_except(client.clone(), ns.clone(), Some(broken.clone())));
    let mut obj = cluster("mail", &ks, &[("dc1", 2), ("dc2", 2)], &[("dc1", 1), ("dc2", 1)]);
    obj["spec"]["rolloutStrategy"] = json!({"type": "OneDatacenterAtATime", "progressDeadlineSeconds": 3});
    apply(&client, &ns, &obj).await;
    kubectl_wait(&ns, "mail", "Ready");

    // 1. A new image: dc1 first, dc2 only after dc1 is done, both in the end.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let _order = watch_order(&client, &ns, next.clone(), seen.clone());
    let _status = watch_status(&client, &ns, seen.clone());
    eventually("the watches delivered the current state", WAIT, || async {
        let s = seen.lock().unwrap();
        (s.deployment_events > 0 && !s.statuses.is_empty()).then_some(())
    })
    .await;
    obj["spec"]["image"] = json!(next);
    apply(&client, &ns, &obj).await;
    let done = wait_condition(&client, &ns, "mail", "Ready", "True", WAIT).await;
    kubectl_wait(&ns, "mail", "Ready");
    for dc in &done.status.as_ref().unwrap().datacenters {
        assert_eq!((dc.image.as_str(), dc.rollout), (next.as_str(), Some(DatacenterRollout::Complete)), "{dc:?}");
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for name in ["mail-dc1", "mail-dc2"] {
        assert_eq!(image(&deployments.get(name).await.unwrap()), next, "{name}");
    }
    {
        let s = seen.lock().unwrap();
        assert!(s.violations.is_empty(), "dc2 got the new template before dc1 was done: {:#?}", s.violations);
        println!("one at a time: {} Deployment changes checked, no overlap", s.deployment_events);
        let waited =
            s.statuses.iter().any(|(rolling, dc2)| rolling == "dc1" && *dc2 == Some(DatacenterRollout::Waiting));
        assert!(waited, "the status showed dc1 rolling and dc2 waiting: {:?}", s.statuses);
        assert!(s.statuses.iter().any(|(rolling, _)| rolling == "dc2"), "then dc2 rolling: {:?}", s.statuses);
    }

    // 2. An image whose pods never get ready: dc1 stalls past its deadline, dc2 keeps the good one.
    obj["spec"]["image"] = json!(broken);
    apply(&client, &ns, &obj).await;
    let stuck = wait_for(&client, &ns, "Stalled").await;
    assert_eq!(condition(&stuck, "Degraded").unwrap(), ("True".into(), "ProgressDeadlineExceeded".into()));
    let st = stuck.status.as_ref().unwrap();
    let rollouts: Vec<_> = st.datacenters.iter().map(|d| (d.name.as_str(), d.rollout)).collect();
    assert_eq!(rollouts, [("dc1", Some(DatacenterRollout::Stalled)), ("dc2", Some(DatacenterRollout::Waiting))]);
    assert_eq!(image(&deployments.get("mail-dc2").await.unwrap()), next, "the bad image stopped at dc1");

    // 3. Rolled back: dc1 returns to the good image, which dc2 already runs; Ready again.
    obj["spec"]["image"] = json!(next);
    apply(&client, &ns, &obj).await;
    kubectl_wait(&ns, "mail", "Ready");
    teardown(&client, &ns, &mut op, &[&ks]).await;
}
