//! Who may use pop3d's admin API: the per-cluster token Secret and the NetworkPolicy around the
//! pods, as the operator writes them to a real apiserver (issue 14).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::common::*;
use crate::{apply, cluster, condition, get, teardown, wait_condition};
use operator::resources::{sha256_hex, ADMIN_TOKEN_HASH_ANNOTATION};

/// (container ports, sources) of each ingress rule; None is "from anywhere".
pub fn ingress(np: &NetworkPolicy) -> Vec<(Vec<i32>, Option<Value>)> {
    let rules = np.spec.as_ref().unwrap().ingress.clone().unwrap_or_default();
    rules
        .into_iter()
        .map(|r| {
            let ports = r
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| {
                    assert_eq!(p.protocol.as_deref(), Some("TCP"), "defaulted by the apiserver");
                    match p.port {
                        Some(IntOrString::Int(i)) => i,
                        other => panic!("port {other:?}"),
                    }
                })
                .collect();
            (ports, r.from.map(|f| serde_json::to_value(f).unwrap()))
        })
        .collect()
}

fn admin_clients() -> Value {
    json!({"podSelector": {"matchLabels": {"popfleet.io/admin-client": "true"}}})
}

/// The default policy of datacenter `dc` of cluster `mail`: POP3, LMTP and ops open, the admin
/// port only for admin clients of the namespace.
pub fn assert_default_policy(np: &NetworkPolicy, dc: &str) {
    let spec = np.spec.as_ref().unwrap();
    let selector = spec.pod_selector.as_ref().unwrap().match_labels.clone().unwrap();
    assert_eq!(selector["popfleet.io/cluster"], "mail");
    assert_eq!(selector["popfleet.io/datacenter"], dc);
    assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]));
    assert_eq!(
        ingress(np),
        vec![
            (vec![1110], None),
            (vec![2424], Some(json!([{"podSelector": {}}]))),
            (vec![9090], None),
            (vec![8080], Some(json!([admin_clients()]))),
        ],
        "{}",
        np.name_any()
    );
    assert_eq!(np.owner_references()[0].kind, "Pop3Cluster");
}

/// The generated token Secret of `cluster` exists, is owned by it, and every Deployment mounts
/// it, carries its hash and probes the ops port; returns the token.
pub async fn assert_token_mounted(client: &Client, ns: &str, cluster: &str, deployments: &[&str]) -> String {
    let name = format!("{cluster}-admin-token");
    let secret = Api::<Secret>::namespaced(client.clone(), ns).get(&name).await.unwrap();
    let token = String::from_utf8(secret.data.as_ref().unwrap()["token"].0.clone()).unwrap();
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    let owner = &secret.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("Pop3Cluster", cluster, Some(true)));
    for d in deployments {
        let dep = Api::<Deployment>::namespaced(client.clone(), ns).get(d).await.unwrap();
        let template = dep.spec.unwrap().template;
        assert_eq!(
            template.metadata.unwrap().annotations.unwrap()[ADMIN_TOKEN_HASH_ANNOTATION],
            sha256_hex(&[token.as_bytes()]),
            "{d}"
        );
        let pod = template.spec.unwrap();
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "admin-token").unwrap();
        assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some(name.as_str()));
        let probe = pod.containers[0].readiness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(probe.port, IntOrString::String("ops".into()));
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns).get(d).await.unwrap();
        let toml = operator::pop3d_config::parse(&cm.data.unwrap()["pop3d.toml"]);
        assert_eq!(toml["admin_token_file"].as_str(), Some("/etc/pop3d/admin/token"));
        assert_eq!(toml["ops"].as_str(), Some("0.0.0.0:9090"));
    }
    token
}

async fn pod_token_hash(deployments: &Api<Deployment>, name: &str) -> Option<String> {
    let template = deployments.get(name).await.ok()?.spec?.template;
    template.metadata?.annotations?.get(ADMIN_TOKEN_HASH_ANNOTATION).cloned()
}

async fn degraded_message(client: &Client, ns: &str) -> Option<String> {
    let c = get(client, ns, "mail").await?;
    let cond = c.status?.conditions.into_iter().find(|c| c.type_ == "Degraded")?;
    Some(format!("{} {} {}", cond.status, cond.reason, cond.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn admin_token_secret_and_network_policy_follow_the_spec() {
    let client = client().await;
    let ns = namespace(&client, "admin").await;
    let ks = keyspace("admin");
    let mut op = Operator::start(&ns, &[]).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    let mut obj = cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)]);
    apply(&client, &ns, &obj).await;
    wait_condition(&client, &ns, "mail", "KeyspaceReady", "True", Duration::from_secs(60)).await;

    // 1. A token is generated once and mounted.
    assert_token_mounted(&client, &ns, "mail", &["mail-dc1"]).await;
    wait_event(&client, &ns, "mail", "AdminTokenCreated").await;
    assert_default_policy(&policies.get("mail-dc1").await.unwrap(), "dc1");

    // 2. Rotating it by hand rolls the pods; the operator never rewrites it, restarted or not.
    let rotate = |t: &str| json!({"stringData": {"token": t}});
    secrets
        .patch("mail-admin-token", &PatchParams::default(), &Patch::Merge(&rotate("rotated-by-hand-0123456789")))
        .await
        .unwrap();
    let rotated = sha256_hex(&[b"rotated-by-hand-0123456789"]);
    eventually("the rotated token's hash reaches the pods", Duration::from_secs(30), || async {
        (pod_token_hash(&deployments, "mail-dc1").await? == rotated).then_some(())
    })
    .await;
    op.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = secrets.get("mail-admin-token").await.unwrap().data.unwrap()["token"].0.clone();
    assert_eq!(kept, b"rotated-by-hand-0123456789", "the operator rewrote the token");

    // 3. A named Secret: missing, without the key, too short (Degraded says which), then good.
    obj["spec"]["admin"] = json!({"tokenSecretName": "ops-token"});
    apply(&client, &ns, &obj).await;
    let c = wait_condition(&client, &ns, "mail", "Degraded", "True", Duration::from_secs(30)).await;
    assert_eq!(condition(&c, "Degraded").unwrap().1, "AdminTokenSecretMissing");
    let message = degraded_message(&client, &ns).await.unwrap();
    assert!(message.contains("admin token Secret ops-token not found"), "{message}");
    let keyless: Secret =
        serde_json::from_value(json!({"metadata": {"name": "ops-token"}, "stringData": {"other": "x"}})).unwrap();
    secrets.create(&PostParams::default(), &keyless).await.unwrap();
    eventually("Degraded names the missing key", Duration::from_secs(30), || async {
        degraded_message(&client, &ns).await.filter(|m| m.contains("ops-token has no key token"))
    })
    .await;
    secrets.patch("ops-token", &PatchParams::default(), &Patch::Merge(&rotate("short"))).await.unwrap();
    eventually("Degraded says the token is too short", Duration::from_secs(30), || async {
        degraded_message(&client, &ns).await.filter(|m| m.contains("ops-token has a token shorter than 16 characters"))
    })
    .await;
    secrets
        .patch("ops-token", &PatchParams::default(), &Patch::Merge(&rotate("named-token-0123456789")))
        .await
        .unwrap();
    wait_condition(&client, &ns, "mail", "Degraded", "False", Duration::from_secs(30)).await;
    let named = sha256_hex(&[b"named-token-0123456789"]);
    eventually("the pods mount the named Secret", Duration::from_secs(30), || async {
        let pod = deployments.get("mail-dc1").await.ok()?.spec?.template.spec?;
        let volume = pod.volumes?.into_iter().find(|v| v.name == "admin-token")?;
        let mounted = volume.secret?.secret_name? == "ops-token";
        (mounted && pod_token_hash(&deployments, "mail-dc1").await? == named).then_some(())
    })
    .await;
    println!("admin token: generated, rotated by hand (pods rolled), named Secret missing/keyless/too short/good");

    // 4. The NetworkPolicy: LMTP sources from the spec; a hand edit opening the admin port is
    // taken back; disabling removes it (no datacenter is reported removed); enabling restores it.
    let mta = json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mta"}}});
    obj["spec"]["networkPolicy"] = json!({"lmtpFrom": [mta]});
    apply(&client, &ns, &obj).await;
    eventually("LMTP only from the MTA's namespace", Duration::from_secs(30), || async {
        let np = policies.get("mail-dc1").await.ok()?;
        (ingress(&np)[1] == (vec![2424], Some(json!([mta])))).then_some(())
    })
    .await;
    // The rule list is atomic: the edit replaces it with one rule opening the admin port to all.
    let open_admin = json!({"spec": {"ingress": [{"ports": [{"port": 8080}]}]}});
    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    policies.patch("mail-dc1", &edit, &Patch::Merge(&open_admin)).await.unwrap();
    eventually("the admin port is fenced again", Duration::from_secs(30), || async {
        let rules = ingress(&policies.get("mail-dc1").await.ok()?);
        (rules.len() == 4 && rules[3] == (vec![8080], Some(json!([admin_clients()])))).then_some(())
    })
    .await;
    obj["spec"]["networkPolicy"]["enabled"] = json!(false);
    apply(&client, &ns, &obj).await;
    eventually("the NetworkPolicy is deleted", Duration::from_secs(30), || async {
        policies.get_opt("mail-dc1").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(deployments.get_opt("mail-dc1").await.unwrap().is_some());
    assert!(!event_reasons(&client, &ns, "mail").await.iter().any(|r| r == "DatacenterRemoved"));
    obj["spec"]["networkPolicy"]["enabled"] = json!(true);
    apply(&client, &ns, &obj).await;
    eventually("the NetworkPolicy is back", Duration::from_secs(30), || async {
        policies.get_opt("mail-dc1").await.ok()?
    })
    .await;
    println!("network policy: lmtpFrom applied, hand edit reverted, disabled and re-enabled");

    teardown(&client, &ns, &mut op, &[&ks]).await;
}
