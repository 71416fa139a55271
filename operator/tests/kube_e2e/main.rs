//! The operator against a real control plane and a real Cassandra (issue 5's test points).
//!
//! `#[ignore]`d in a plain `cargo test`: they need `e2e/kube up --with-controller-manager`
//! (kube-apiserver, etcd, kube-controller-manager for ReplicaSets and garbage collection) and
//! `e2e/cassandra up`. Run them with
//!
//! ```sh
//! POPFLEET_KUBE=1 cargo test --release -p operator --test kube_e2e -- --ignored --nocapture
//! ```
//!
//! Each test has its own namespace, keyspace and operator process. There is no kubelet: where
//! a test needs ready pods, `common::fake_kubelet` binds them to a fake Node and marks them Ready.

mod admin_access;
mod common;
mod dc_addition;
mod knobs;
mod lifecycle;
mod mail;
mod pop3d_session;
mod rollout;
mod rollout_order;
mod secret_rbac;
mod validation;
mod watch_traffic;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};

use common::*;
use crds::Pop3Cluster;

pub const IMAGE: &str = "registry.example/popfleet/pop3d:e2e";

/// A Pop3Cluster against the e2e Cassandra (127.0.0.1 = dc1, 127.0.0.2 = dc2).
pub fn cluster(name: &str, keyspace: &str, dcs: &[(&str, i32)], replication: &[(&str, i32)]) -> Value {
    let dcs: Vec<Value> = dcs.iter().map(|(n, r)| json!({"name": n, "replicas": r})).collect();
    let replication: BTreeMap<&str, i32> = replication.iter().copied().collect();
    json!({
        "apiVersion": "popfleet.io/v1alpha1", "kind": "Pop3Cluster",
        "metadata": {"name": name},
        "spec": {
            "image": IMAGE,
            "datacenters": dcs,
            "cassandra": {
                "contactPoints": {"dc1": ["127.0.0.1:9042"], "dc2": ["127.0.0.2:9042"]},
                "keyspace": keyspace,
                "replication": replication
            }
        }
    })
}

/// `kubectl apply --server-side` of the whole resource, as a user or a GitOps tool would.
pub async fn apply(client: &Client, ns: &str, obj: &Value) -> Pop3Cluster {
    let api: Api<Pop3Cluster> = Api::namespaced(client.clone(), ns);
    let name = obj["metadata"]["name"].as_str().unwrap();
    api.patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(obj)).await.expect("apply Pop3Cluster")
}

pub async fn get(client: &Client, ns: &str, name: &str) -> Option<Pop3Cluster> {
    Api::<Pop3Cluster>::namespaced(client.clone(), ns).get_opt(name).await.unwrap()
}

/// (status, reason) of a condition.
pub fn condition(c: &Pop3Cluster, type_: &str) -> Option<(String, String)> {
    c.status.as_ref()?.conditions.iter().find(|x| x.type_ == type_).map(|x| (x.status.clone(), x.reason.clone()))
}

pub async fn wait_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> Pop3Cluster {
    let what = format!("{ns}/{name} {type_}={status}");
    eventually(&what, timeout, || async {
        let c = get(client, ns, name).await?;
        let fresh = c.status.as_ref()?.observed_generation == c.metadata.generation;
        (fresh && condition(&c, type_).is_some_and(|(s, _)| s == status)).then_some(c)
    })
    .await
}

/// resourceVersion of the resource and of every object in the namespace the operator manages.
pub async fn snapshot(client: &Client, ns: &str) -> BTreeMap<String, String> {
    versions(client, ns, false).await
}

/// Like `snapshot`, but Deployments and PodDisruptionBudgets by generation: their status moves
/// with the pods (kube-controller-manager), their spec only when someone writes it.
pub async fn spec_snapshot(client: &Client, ns: &str) -> BTreeMap<String, String> {
    versions(client, ns, true).await
}

async fn versions(client: &Client, ns: &str, generation_for_workloads: bool) -> BTreeMap<String, String> {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=popfleet-operator");
    let mut out = BTreeMap::new();
    macro_rules! kind {
        ($t:ty, $label:expr, $lp:expr) => {
            for o in Api::<$t>::namespaced(client.clone(), ns).list($lp).await.unwrap() {
                let workload = $label == "deployment" || $label == "pdb";
                let v = if generation_for_workloads && workload {
                    format!("generation {}", o.meta().generation.unwrap_or_default())
                } else {
                    o.resource_version().unwrap_or_default()
                };
                out.insert(format!("{}/{}", $label, o.name_any()), v);
            }
        };
    }
    kind!(Pop3Cluster, "pop3cluster", &ListParams::default());
    kind!(Deployment, "deployment", &lp);
    kind!(Service, "service", &lp);
    kind!(ConfigMap, "configmap", &lp);
    kind!(PodDisruptionBudget, "pdb", &lp);
    kind!(ServiceAccount, "serviceaccount", &lp);
    kind!(NetworkPolicy, "networkpolicy", &lp);
    kind!(Secret, "secret", &lp);
    out
}

pub fn kubectl(args: &[&str]) -> String {
    kubectl_status(args).1
}

/// `kubectl` through e2e/kube: (exit status success, stdout + stderr).
pub fn kubectl_status(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/kube"))
        .arg("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("e2e/kube kubectl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Deletes the test's resources while the operator still runs (it removes the finalizers),
/// then the namespace and the keyspaces.
pub async fn teardown(client: &Client, ns: &str, op: &mut Operator, keyspaces: &[&str]) {
    let api: Api<Pop3Cluster> = Api::namespaced(client.clone(), ns);
    for c in api.list(&ListParams::default()).await.unwrap() {
        let _ = api.delete(&c.name_any(), &DeleteParams::default()).await;
    }
    eventually("the test's Pop3Clusters are gone", Duration::from_secs(60), || async {
        api.list(&ListParams::default()).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    op.stop();
    let _ =
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).delete(ns, &DeleteParams::default()).await;
    let session = cassandra().await;
    for ks in keyspaces {
        let _ = schema::cassandra::drop_keyspace(&session, ks).await;
    }
}

/// Aborts the fake kubelet when the test ends, pass or fail.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn two_dc_cluster_is_created_reports_status_and_stays_quiet() {
    let client = client().await;
    let ns = namespace(&client, "create").await;
    let ks = keyspace("create");
    let mut op = Operator::start(&ns, &[]).await;
    let _kubelet = AbortOnDrop(fake_kubelet(client.clone(), ns.clone()));
    let created =
        apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 2), ("dc2", 1)], &[("dc1", 1), ("dc2", 1)])).await;

    // 1. The per-DC objects, with the right spec.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d1 = eventually("Deployment mail-dc1", Duration::from_secs(60), || async {
        deployments.get_opt("mail-dc1").await.ok().flatten()
    })
    .await;
    let spec = d1.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let owner = &d1.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Pop3Cluster", created.uid().unwrap().as_str(), Some(true))
    );
    assert!(
        d1.managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("popfleet-operator") && m.operation.as_deref() == Some("Apply")),
        "written by server-side apply under its own field manager"
    );
    let pod = spec.template.spec.as_ref().unwrap();
    let ctr = &pod.containers[0];
    assert_eq!(ctr.image.as_deref(), Some(IMAGE));
    assert_eq!(ctr.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    assert_eq!(ctr.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    for (dc, replicas, local_contact) in [("dc1", 2, "127.0.0.1:9042"), ("dc2", 1, "127.0.0.2:9042")] {
        let name = format!("mail-{dc}");
        let d = eventually(&format!("Deployment {name}"), Duration::from_secs(30), || async {
            deployments.get_opt(&name).await.ok().flatten()
        })
        .await;
        assert_eq!(d.spec.unwrap().replicas, Some(replicas));
        let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns).get(&name).await.unwrap();
        let toml = operator::pop3d_config::parse(&cm.data.unwrap()["pop3d.toml"]);
        assert_eq!(toml["local_dc"].as_str(), Some(dc));
        assert_eq!(toml["cassandra"].as_str(), Some(local_contact));
        assert_eq!(toml["keyspace"].as_str(), Some(ks.as_str()));
        let svc = Api::<Service>::namespaced(client.clone(), &ns).get(&name).await.unwrap();
        let ports: Vec<i32> = svc.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, vec![110, 24]);
        let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns).get(&name).await.unwrap();
        assert!(pdb.spec.unwrap().max_unavailable.is_some());
        let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns).get(&name).await.unwrap();
        assert_eq!(sa.automount_service_account_token, Some(false));
        let np = Api::<NetworkPolicy>::namespaced(client.clone(), &ns).get(&name).await.unwrap();
        admin_access::assert_default_policy(&np, dc);
    }
    admin_access::assert_token_mounted(&client, &ns, "mail", &["mail-dc1", "mail-dc2"]).await;

    // 2. The keyspace, with the replication asked for and the schema applied.
    let session = cassandra().await;
    let repl = eventually("the keyspace exists", Duration::from_secs(60), || replication(&session, &ks)).await;
    assert_eq!(repl, factors(&[("dc1", "1"), ("dc2", "1")]));
    let versions = schema::cassandra::applied_versions(&session, &ks).await.unwrap();
    assert_eq!(versions.last().copied(), Some(schema::latest_version()));
    wait_event(&client, &ns, "mail", "KeyspaceCreated").await;
    wait_event(&client, &ns, "mail", "MigrationsApplied").await;

    // 3. Status and conditions say where things stand: pods become ready, the cluster available.
    wait_condition(&client, &ns, "mail", "Available", "True", Duration::from_secs(120)).await;
    // Available means each DC has its minimum ready (what its PDB allows), which can come a moment
    // before the last pod (seen in CI: "2/3" right after Available): all three are waited for.
    let c = eventually("all three pods ready", Duration::from_secs(60), || async {
        get(&client, &ns, "mail").await.filter(|c| c.status.as_ref().is_some_and(|s| s.ready == "3/3"))
    })
    .await;
    assert_eq!(condition(&c, "KeyspaceReady").unwrap().0, "True");
    assert_eq!(condition(&c, "Degraded").unwrap().0, "False");
    assert_eq!(condition(&c, "ReconciliationPaused").unwrap().0, "False");
    let c = wait_condition(&client, &ns, "mail", "Progressing", "False", Duration::from_secs(60)).await;
    assert_eq!(c.status.as_ref().unwrap().keyspace.as_ref().unwrap().schema_version as u32, schema::latest_version());
    println!("{}", kubectl(&["get", "pop3clusters", "-n", &ns]));
    println!("{}", kubectl(&["get", "pop3clusters", "-n", &ns, "-o", "wide"]));

    // 4. Settled: nothing is written any more (no hot loop), also across an operator restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = snapshot(&client, &ns).await;
    let reconciles = op.metric("popfleet_operator_reconciles_total", "").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(snapshot(&client, &ns).await, before, "resourceVersions moved while nothing changed");
    assert_eq!(
        op.metric("popfleet_operator_reconciles_total", "").await,
        reconciles,
        "reconciles while nothing changed"
    );
    op.restart().await;
    eventually("the restarted operator reconciled", Duration::from_secs(30), || async {
        (op.metric("popfleet_operator_reconciles_total", "").await >= 1.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(snapshot(&client, &ns).await, before, "an operator restart changed objects");
    assert_eq!(
        op.metric("popfleet_operator_writes_total", "action=\"status\"").await,
        0.0,
        "no status write after restart"
    );

    teardown(&client, &ns, &mut op, &[&ks]).await;
}
