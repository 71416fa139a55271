//! Issue 18, item 3 (RBAC): with the chart's `rbac.secretNames`, the operator runs on a Role that
//! lets it read and watch only the Secrets named there, and still works: Kubernetes authorizes its
//! per-Secret list/watch (`fieldSelector=metadata.name=...`) against `resourceNames`. The Role is
//! the chart's own (`helm template`, namespaced mode), the operator runs with a token of its own
//! ServiceAccount, and the test checks both sides: the cluster reconciles and a rotated Cassandra
//! password rolls the pods (the watch works), while a plain list of Secrets and a get of an
//! unlisted one are forbidden to that ServiceAccount; a cluster naming an unlisted Secret is
//! Stalled with reason `SecretForbidden`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::common::*;
use crate::{apply, cluster, kubectl_status, teardown, wait_condition};

const SA: &str = "popfleet-operator";

/// The Helm e2e/kube built: `POPFLEET_HELM`, or `helm` in the bin directory `e2e/kube env` names.
fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("POPFLEET_HELM") {
        return p.into();
    }
    let out =
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/kube")).arg("env").output().expect("e2e/kube env");
    let env = String::from_utf8_lossy(&out.stdout);
    let bin =
        env.lines().find_map(|l| l.strip_prefix("export PATH=\"")?.split(':').next()).expect("e2e/kube env: PATH");
    PathBuf::from(bin).join("helm")
}

/// The chart's Role and RoleBinding for `ns`, limited to `names`, applied there.
fn apply_chart_rbac(ns: &str, names: &[&str]) {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/popfleet");
    let out = Command::new(helm())
        .args(["template", "popfleet", chart, "-n", ns, "--show-only", "templates/rbac.yaml"])
        .args(["--set", &format!("watchNamespace={ns}"), "--set", "leaderElection.enabled=false"])
        .args(["--set", "serviceAccount.create=false", "--set", &format!("serviceAccount.name={SA}")])
        .args(["--set", &format!("rbac.secretNames={{{}}}", names.join(","))])
        .output()
        .expect("helm (e2e/kube builds it)");
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    assert!(yaml.contains("resourceNames"), "the chart limits the Secret rule:\n{yaml}");
    let mut kubectl = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/kube"))
        .args(["kubectl", "apply", "-n", ns, "-f", "-"])
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    kubectl.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    assert!(kubectl.wait().unwrap().success(), "kubectl apply of the chart's RBAC");
}

/// A kubeconfig for the same apiserver that authenticates as `ns`'s ServiceAccount `SA`.
fn service_account_kubeconfig(ns: &str, dir: &Path) -> PathBuf {
    let (ok, token) = kubectl_status(&["create", "token", SA, "-n", ns, "--duration=1h"]);
    assert!(ok, "kubectl create token: {token}");
    let admin = std::fs::read_to_string(kubeconfig_path()).unwrap();
    let field =
        |key: &str| admin.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned())).expect(key);
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "e2e", "cluster": {"server": field("server:"),
                      "certificate-authority-data": field("certificate-authority-data:")}}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": "sa", "namespace": ns}}],
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube (with helm) and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn the_operator_works_with_secrets_limited_to_the_named_ones() {
    let client = client().await;
    let ns = namespace(&client, "secretrbac").await;
    let ks = keyspace("secretrbac");
    let (ok, out) = kubectl_status(&["create", "serviceaccount", SA, "-n", &ns]);
    assert!(ok, "{out}");
    apply_chart_rbac(&ns, &["mail-admin-token", "cass"]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = |name: &str, password: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
               "stringData": {"username": "popfleet", "password": password}})
    };
    for (name, password) in [("cass", "first-password"), ("unlisted", "x")] {
        secrets.patch(name, &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&secret(name, password))).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut op = Operator::start_as(&ns, &[], service_account_kubeconfig(&ns, dir.path())).await;

    let mut obj = cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)]);
    obj["spec"]["cassandra"]["credentialsSecret"] = json!({"name": "cass"});
    apply(&client, &ns, &obj).await;
    wait_condition(&client, &ns, "mail", "KeyspaceReady", "True", Duration::from_secs(60)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let hash = || async {
        let a = deployments.get_opt("mail-dc1").await.ok()??.spec?.template.metadata?.annotations?;
        a.get(operator::resources::CASSANDRA_CREDENTIALS_HASH_ANNOTATION).cloned()
    };
    let first = eventually("the pod template carries the credentials hash", Duration::from_secs(60), hash).await;
    secrets.patch("cass", &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&secret("cass", "second"))).await.unwrap();
    eventually("a rotated password rolls the pods (the named watch works)", Duration::from_secs(30), || async {
        hash().await.filter(|h| *h != first)
    })
    .await;
    let log = std::fs::read_to_string(&op.log).unwrap();
    assert!(!log.to_lowercase().contains("forbidden"), "the operator was refused:\n{log}");

    // The limit is real: the same ServiceAccount may not list Secrets or read an unlisted one.
    let who = format!("--as=system:serviceaccount:{ns}:{SA}");
    for (args, allowed) in [
        (vec!["get", "secrets", "-n", &ns], false),
        (vec!["get", "secret", "unlisted", "-n", &ns], false),
        (vec!["get", "secrets", "-n", &ns, "--field-selector", "metadata.name=unlisted"], false),
        (vec!["get", "secrets", "-n", &ns, "--field-selector", "metadata.name=cass"], true),
    ] {
        let (ok, out) = kubectl_status(&[args.as_slice(), &[who.as_str(), "-o", "name"]].concat());
        assert_eq!(ok, allowed, "kubectl {args:?} as the operator: {out}");
        assert!(allowed || out.contains("forbidden"), "{out}");
        println!("kubectl {} as the operator: {}", args.join(" "), out.trim());
    }

    // A Secret left out of the list: the status says which and what to do.
    let mut other = cluster("other", &ks, &[("dc1", 1)], &[("dc1", 1)]);
    other["spec"]["pop3"]["tls"] = json!({"secretName": "unlisted"});
    apply(&client, &ns, &other).await;
    let c = wait_condition(&client, &ns, "other", "Stalled", "True", Duration::from_secs(60)).await;
    let stalled = c.status.unwrap().conditions.into_iter().find(|x| x.type_ == "Stalled").unwrap();
    println!("Stalled {}: {}", stalled.reason, stalled.message);
    assert_eq!(stalled.reason, "SecretForbidden");
    assert!(stalled.message.contains("\"unlisted\"") && stalled.message.contains("rbac.secretNames"));
    teardown(&client, &ns, &mut op, &[&ks]).await;
}
