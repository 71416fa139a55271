//! GitOps with a real Flux: source-controller and kustomize-controller (built from Go modules and run
//! as processes by `e2e/flux up`) reconcile a Git repository, served over git's smart HTTP on loopback,
//! that holds a Pop3Cluster. The operator and a stand-in kubelet run as in `kube_e2e`.
//!
//! `#[ignore]`d in a plain `cargo test`: it needs `e2e/kube up --with-controller-manager`,
//! `e2e/cassandra up` and `e2e/flux up`. Run it with
//!
//! ```sh
//! eval "$(e2e/flux env)"; POPFLEET_KUBE=1 cargo test --release -p operator --test flux_e2e -- --ignored --nocapture
//! ```
//!
//! What it proves: the Kustomization's health check (`wait: true`, Flux's kstatus) is not Ready while
//! the fleet's pods are not, and Ready at the commit once they are; a commit that changes replicas
//! rolls out and a revert restores it; once settled, `kubectl diff --server-side` of what Flux applies
//! is empty, re-applying it with Flux's field manager writes nothing, and further Flux reconciles leave
//! the Pop3Cluster's resourceVersion alone (no defaulted field flipping back and forth).

#[allow(dead_code)] // the kube_e2e harness; this test uses part of it
#[path = "kube_e2e/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use common::*;
use crds::Pop3Cluster;

const IMAGE: &str = "registry.example/popfleet/pop3d:e2e";
/// kustomize-controller's field manager, and the labels it adds to what it applies.
const FLUX_MANAGER: &str = "kustomize-controller";
const FLUX_LABEL: &str = "kustomize.toolkit.fluxcd.io";

/// A bare repository under the Git server's root and a work tree the test commits from.
struct Repo {
    url: String,
    work: tempfile::TempDir,
    bare: PathBuf,
}

impl Repo {
    fn new(name: &str) -> Repo {
        let root = std::env::var("POPFLEET_FLUX_GIT_ROOT").expect("POPFLEET_FLUX_GIT_ROOT: eval \"$(e2e/flux env)\"");
        let base = std::env::var("POPFLEET_FLUX_GIT_URL").expect("POPFLEET_FLUX_GIT_URL: eval \"$(e2e/flux env)\"");
        let bare = Path::new(&root).join(format!("{name}.git"));
        let work = tempfile::tempdir().unwrap();
        git(Path::new(&root), &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        git(work.path(), &["init", "-q", "-b", "main"]);
        git(work.path(), &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { url: format!("{base}/{name}.git"), work, bare }
    }

    /// Writes the files, commits, pushes; returns Flux's name for the revision (`main@sha1:...`).
    fn commit(&self, message: &str, files: &[(&str, String)]) -> String {
        for (name, text) in files {
            std::fs::write(self.work.path().join(name), text).unwrap();
        }
        git(self.work.path(), &["add", "-A"]);
        git(self.work.path(), &["commit", "-q", "-m", message]);
        self.push()
    }

    fn revert_last(&self) -> String {
        git(self.work.path(), &["revert", "--no-edit", "HEAD"]);
        self.push()
    }

    fn push(&self) -> String {
        git(self.work.path(), &["push", "-q", "origin", "main"]);
        format!("main@sha1:{}", git(self.work.path(), &["rev-parse", "HEAD"]).trim())
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bare);
    }
}

/// When the test fails: the Flux objects go (else the controllers would keep fetching a repository
/// that is gone, every interval, for as long as the control plane runs).
struct DeleteFluxObjects(String);

impl Drop for DeleteFluxObjects {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "kustomizations,gitrepositories", "--all", "-n", &self.0, "--wait=false"]);
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=popfleet e2e", "-c", "user.email=e2e@popfleet.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Pop3Cluster as it sits in Git: what a platform team would commit.
fn pop3cluster_yaml(keyspace: &str, dc1_replicas: i32) -> String {
    format!(
        r#"apiVersion: popfleet.io/v1alpha1
kind: Pop3Cluster
metadata:
  name: mail
spec:
  image: {IMAGE}
  datacenters:
    - name: dc1
      replicas: {dc1_replicas}
    - name: dc2
      replicas: 1
  cassandra:
    contactPoints:
      dc1: ["127.0.0.1:9042"]
      dc2: ["127.0.0.2:9042"]
    keyspace: {keyspace}
    replication:
      dc1: 1
      dc2: 1
"#
    )
}

const KUSTOMIZATION_YAML: &str =
    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - pop3cluster.yaml\n";

fn flux_api(client: &Client, ns: &str, group: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, "v1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

fn kustomizations(client: &Client, ns: &str) -> Api<DynamicObject> {
    flux_api(client, ns, "kustomize.toolkit.fluxcd.io", "Kustomization")
}

/// The GitRepository and the Kustomization that applies it into `ns`, waiting for health (kstatus).
async fn create_flux_objects(client: &Client, ns: &str, url: &str) {
    let pp = PatchParams::apply(TEST_MANAGER).force();
    let repo = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "fleet", "namespace": ns},
        "spec": {"url": url, "interval": "1m", "ref": {"branch": "main"}, "timeout": "20s"}
    });
    let ks = json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "fleet", "namespace": ns},
        "spec": {
            "sourceRef": {"kind": "GitRepository", "name": "fleet"},
            "path": "./", "interval": "1m", "retryInterval": "5s", "prune": true,
            "targetNamespace": ns, "wait": true, "timeout": "4m"
        }
    });
    let repos = flux_api(client, ns, "source.toolkit.fluxcd.io", "GitRepository");
    repos.patch("fleet", &pp, &Patch::Apply(&repo)).await.expect("apply GitRepository");
    kustomizations(client, ns).patch("fleet", &pp, &Patch::Apply(&ks)).await.expect("apply Kustomization");
}

/// `reconcile.fluxcd.io/requestedAt`, as `flux reconcile` asks for a reconcile now (the test does
/// not wait out intervals). Returns the token the controller echoes as `lastHandledReconcileAt`.
async fn request_reconcile(client: &Client, ns: &str, group: &str, kind: &str) -> String {
    let token = uuid_hex();
    let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}});
    flux_api(client, ns, group, kind)
        .patch("fleet", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("request a reconcile");
    token
}

/// (status, reason, message) of a condition of a Flux object.
fn flux_condition(o: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    let c = o.data["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// The Kustomization is Ready at `revision`: applied it and its health check passed.
async fn wait_ready_at(client: &Client, ns: &str, revision: &str) -> DynamicObject {
    eventually(&format!("Kustomization Ready at {revision}"), Duration::from_secs(240), || async {
        let k = kustomizations(client, ns).get("fleet").await.ok()?;
        let applied = k.data["status"]["lastAppliedRevision"] == revision;
        let fresh = k.data["status"]["observedGeneration"] == json!(k.metadata.generation);
        let ready = flux_condition(&k, "Ready").is_some_and(|(s, _, _)| s == "True");
        (applied && fresh && ready).then_some(k)
    })
    .await
}

async fn cluster(client: &Client, ns: &str) -> Option<Pop3Cluster> {
    Api::<Pop3Cluster>::namespaced(client.clone(), ns).get_opt("mail").await.ok().flatten()
}

fn pods_ready(c: &Pop3Cluster) -> String {
    c.status.as_ref().map(|s| s.ready.clone()).unwrap_or_default()
}

async fn deployment_replicas(client: &Client, ns: &str, name: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), ns).get_opt(name).await.ok()??.spec?.replicas
}

/// Before any pod is ready, Flux applies the Pop3Cluster and runs its health check, which must not
/// pass: from the Kustomization's creation on, every look finds it not Ready, until it has been seen
/// running health checks for this revision and then another 12 s (several of its 5 s polls) more.
async fn not_ready_without_pods(client: &Client, ns: &str, revision: &str) {
    let message = format!("Running health checks for revision {revision}");
    let start = std::time::Instant::now();
    let mut checking_since = None;
    while checking_since.is_none_or(|t: std::time::Instant| t.elapsed() < Duration::from_secs(12)) {
        assert!(start.elapsed() < Duration::from_secs(120), "the Kustomization never ran its health check");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(k) = kustomizations(client, ns).get("fleet").await else { continue };
        let ready = flux_condition(&k, "Ready");
        let pods = cluster(client, ns).await.map(|c| pods_ready(&c)).unwrap_or_default();
        assert!(
            ready.as_ref().is_none_or(|(s, _, _)| s != "True"),
            "the Kustomization is Ready while no pod of the fleet is (pods {pods:?}): {ready:?}"
        );
        assert!(pods.is_empty() || pods.starts_with("0/"), "no kubelet yet, yet pods are ready: {pods}");
        let healthy = flux_condition(&k, "Healthy");
        if checking_since.is_none() && healthy.is_some_and(|(s, _, m)| s == "Unknown" && m.starts_with(&message)) {
            println!("before the pods are ready: Kustomization Ready={ready:?}, pods {pods:?}");
            checking_since = Some(std::time::Instant::now());
        }
    }
    assert!(deployment_replicas(client, ns, "mail-dc1").await.is_some(), "the operator made the Deployments");
}

/// A changed replica count in Git reaches the Deployment, and Flux reports Ready at that commit
/// only once the fleet has all its pods ready again.
async fn rolls_out(client: &Client, ns: &str, revision: &str, dc1: i32) {
    request_reconcile(client, ns, "source.toolkit.fluxcd.io", "GitRepository").await;
    wait_ready_at(client, ns, revision).await;
    let c = cluster(client, ns).await.unwrap();
    let want = format!("{}/{}", dc1 + 1, dc1 + 1);
    assert_eq!(pods_ready(&c), want, "Flux is Ready at {revision} with the fleet not ready");
    assert_eq!(c.spec.datacenters[0].replicas, dc1);
    assert_eq!(deployment_replicas(client, ns, "mail-dc1").await, Some(dc1));
    println!("{revision}: Kustomization Ready, mail-dc1 replicas {dc1}, pods {want}");
}

/// What kustomize-controller applies: the file from Git in the target namespace, with its labels.
fn as_flux_applies(yaml: &str, ns: &str) -> String {
    let mut v: Value = serde_saphyr::from_str(yaml).unwrap();
    v["metadata"]["namespace"] = json!(ns);
    v["metadata"]["labels"] = json!({format!("{FLUX_LABEL}/name"): "fleet", format!("{FLUX_LABEL}/namespace"): ns});
    serde_json::to_string_pretty(&v).unwrap()
}

fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/kube"))
        .arg("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("e2e/kube kubectl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Settled: no diff against Git, a re-apply writes nothing, and Flux's own reconciles (which
/// re-apply everything) leave the Pop3Cluster and its Deployments alone.
async fn no_drift(client: &Client, ns: &str, manifest: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), as_flux_applies(manifest, ns)).unwrap();
    let path = file.path().to_str().unwrap();
    let rv = || async { cluster(client, ns).await.unwrap().resource_version().unwrap() };
    let before = rv().await;

    let (same, diff) = kubectl(&["diff", "--server-side", "--field-manager", FLUX_MANAGER, "-f", path]);
    assert!(same && diff.trim().is_empty(), "kubectl diff --server-side of the manifest from Git:\n{diff}");
    let (ok, out) = kubectl(&["apply", "--server-side", "--field-manager", FLUX_MANAGER, "-f", path]);
    assert!(ok, "kubectl apply --server-side: {out}");
    assert_eq!(rv().await, before, "re-applying the manifest from Git changed the Pop3Cluster");

    let generations = (
        Api::<Deployment>::namespaced(client.clone(), ns).get("mail-dc1").await.unwrap().metadata.generation,
        Api::<Deployment>::namespaced(client.clone(), ns).get("mail-dc2").await.unwrap().metadata.generation,
    );
    for round in 1..=2 {
        let token = request_reconcile(client, ns, "kustomize.toolkit.fluxcd.io", "Kustomization").await;
        eventually(&format!("Flux reconcile {round} handled"), Duration::from_secs(120), || async {
            let k = kustomizations(client, ns).get("fleet").await.ok()?;
            let ready = flux_condition(&k, "Ready").is_some_and(|(s, _, _)| s == "True");
            (k.data["status"]["lastHandledReconcileAt"] == token && ready).then_some(())
        })
        .await;
        assert_eq!(rv().await, before, "Flux reconcile {round} changed the Pop3Cluster (a field flipping?)");
    }
    let after = (
        Api::<Deployment>::namespaced(client.clone(), ns).get("mail-dc1").await.unwrap().metadata.generation,
        Api::<Deployment>::namespaced(client.clone(), ns).get("mail-dc2").await.unwrap().metadata.generation,
    );
    assert_eq!(after, generations, "Flux reconciles changed the Deployments' spec");
    println!("settled: kubectl diff empty, re-apply and two Flux reconciles left resourceVersion {before}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube, e2e/cassandra and e2e/flux; run with POPFLEET_KUBE=1"]
async fn flux_reconciles_a_pop3cluster_from_git() {
    let client = client().await;
    let ns = namespace(&client, "flux").await;
    let ks = keyspace("flux");
    let mut op = Operator::start(&ns, &[]).await;
    let repo = Repo::new(&ns);
    let _flux_objects = DeleteFluxObjects(ns.clone());

    let one = pop3cluster_yaml(&ks, 1);
    let first = repo.commit(
        "a two-DC fleet",
        &[("kustomization.yaml", KUSTOMIZATION_YAML.to_owned()), ("pop3cluster.yaml", one.clone())],
    );
    create_flux_objects(&client, &ns, &repo.url).await;
    not_ready_without_pods(&client, &ns, &first).await;

    // The stand-in kubelet marks the pods Ready: the fleet, then Flux, become Ready.
    let kubelet = fake_kubelet(client.clone(), ns.clone());
    wait_ready_at(&client, &ns, &first).await;
    let c = cluster(&client, &ns).await.unwrap();
    assert_eq!(pods_ready(&c), "2/2", "Flux is Ready with the fleet not ready");
    println!("{first}: Kustomization Ready once the fleet is (pods {})", pods_ready(&c));

    let scaled = repo.commit("dc1: 3 replicas", &[("pop3cluster.yaml", pop3cluster_yaml(&ks, 3))]);
    rolls_out(&client, &ns, &scaled, 3).await;
    let reverted = repo.revert_last();
    rolls_out(&client, &ns, &reverted, 1).await;

    no_drift(&client, &ns, &one).await;

    // Flux prunes what it applied when its Kustomization goes; the operator removes the fleet.
    kustomizations(&client, &ns).delete("fleet", &DeleteParams::default()).await.unwrap();
    eventually("Flux pruned the Pop3Cluster", Duration::from_secs(120), || async {
        cluster(&client, &ns).await.is_none().then_some(())
    })
    .await;
    // The namespace goes before the stand-in kubelet: its pods wait for a kubelet to confirm their
    // deletion, and without one the namespace would stay Terminating on the shared control plane.
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    eventually("the test's namespace is gone", Duration::from_secs(120), || async {
        namespaces.get_opt(&ns).await.ok()?.is_none().then_some(())
    })
    .await;
    kubelet.abort();
    op.stop();
    let _ = schema::cassandra::drop_keyspace(&cassandra().await, &ks).await;
}
