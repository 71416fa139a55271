//! Issue 18, item 5: the knobs platform teams expect, each seen in the objects the real apiserver
//! (and, for pods and the autoscaler, the real kube-controller-manager) made of them.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use crate::common::*;
use crate::{apply, cluster, condition, get, teardown};
use crds::Pop3Cluster;

const WAIT: Duration = Duration::from_secs(60);

/// Applies the Pop3Cluster and expects the apiserver to refuse it with a message containing `why`.
async fn refused(client: &Client, ns: &str, obj: &Value, why: &str) {
    let api: Api<Pop3Cluster> = Api::namespaced(client.clone(), ns);
    let name = obj["metadata"]["name"].as_str().unwrap();
    match api.patch(name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(obj)).await {
        Err(kube::Error::Api(e)) => assert!(e.message.contains(why), "refused for another reason: {}", e.message),
        other => panic!("accepted, expected a refusal for {why}: {other:?}"),
    }
}

async fn deployment(client: &Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client.clone(), ns).get_opt(name).await.ok()?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn pod_service_and_pdb_knobs_reach_the_objects() {
    let client = client().await;
    let ns = namespace(&client, "knobs").await;
    let ks = keyspace("knobs");
    let class = format!("{ns}-mail");
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": class}, "value": 4242});
    classes.patch(&class, &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&pc)).await.unwrap();
    let mut op = Operator::start(&ns, &[]).await;
    let mut obj = cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)]);
    obj["spec"]["pod"] = json!({
        "labels": {"team": "mail"}, "annotations": {"example.com/owner": "mail-team"},
        "priorityClassName": class, "imagePullSecrets": [{"name": "registry"}]
    });
    obj["spec"]["datacenters"][0]["service"] = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "loadBalancerSourceRanges": ["203.0.113.0/24"]});
    obj["spec"]["podDisruptionBudget"] = json!({"minAvailable": "50%"});
    apply(&client, &ns, &obj).await;

    // A pod the ReplicaSet controller made from the template: the priority admission plugin
    // resolved the class, so the class name reached a real pod.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = eventually("a pop3d pod exists", WAIT, || async {
        pods.list(&ListParams::default().labels("popfleet.io/cluster=mail")).await.ok()?.items.into_iter().next()
    })
    .await;
    assert_eq!(pod.metadata.labels.as_ref().unwrap()["team"], "mail");
    assert_eq!(pod.metadata.annotations.as_ref().unwrap()["example.com/owner"], "mail-team");
    let spec = pod.spec.unwrap();
    assert_eq!((spec.priority_class_name.as_deref(), spec.priority), (Some(class.as_str()), Some(4242)));
    assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "registry");

    let svc = Api::<Service>::namespaced(client.clone(), &ns).get("mail-dc1").await.unwrap().spec.unwrap();
    assert_eq!(svc.external_traffic_policy.as_deref(), Some("Local"));
    assert!(svc.health_check_node_port.is_some(), "the apiserver allocates a health check port for Local");
    assert_eq!(svc.load_balancer_source_ranges.unwrap(), vec!["203.0.113.0/24".to_owned()]);

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let pdb = pdbs.get("mail-dc1").await.unwrap().spec.unwrap();
    assert_eq!((pdb.min_available, pdb.max_unavailable), (Some(IntOrString::String("50%".into())), None));
    obj["spec"]["podDisruptionBudget"] = json!({"enabled": false});
    apply(&client, &ns, &obj).await;
    eventually("the PDB is deleted when disabled", WAIT, || async {
        pdbs.get_opt("mail-dc1").await.ok()?.is_none().then_some(())
    })
    .await;

    // The operator's own keys and nonsense combinations are refused by the apiserver.
    let mut bad = obj.clone();
    bad["spec"]["pod"]["labels"] = json!({"popfleet.io/datacenter": "x"});
    refused(&client, &ns, &bad, "pod labels cannot be popfleet.io/").await;
    let mut bad = obj.clone();
    bad["spec"]["datacenters"][0]["service"] = json!({"externalTrafficPolicy": "Local"});
    refused(&client, &ns, &bad, "externalTrafficPolicy needs type NodePort or LoadBalancer").await;
    let mut bad = obj.clone();
    bad["spec"]["podDisruptionBudget"] = json!({"minAvailable": 1, "maxUnavailable": 1});
    refused(&client, &ns, &bad, "not both").await;
    let _ = classes.delete(&class, &DeleteParams::default()).await;
    teardown(&client, &ns, &mut op, &[&ks]).await;
}

fn containers(d: &Deployment) -> Vec<String> {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers.iter().map(|c| c.name.clone()).collect()
}

fn pop3d_env(d: &Deployment) -> Vec<String> {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = pod.containers.iter().find(|c| c.name == "pop3d").unwrap();
    c.env.iter().flatten().map(|e| e.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn template_overlay_merges_and_cannot_override_the_operator() {
    let client = client().await;
    let ns = namespace(&client, "overlay").await;
    let ks = keyspace("overlay");
    let mut op = Operator::start(&ns, &[]).await;
    let mut obj = cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)]);
    obj["spec"]["pod"]["templateOverlay"] = json!({"spec": {"containers": [
        {"name": "pop3d", "env": [{"name": "EXTRA", "value": "1"}]},
        {"name": "sidecar", "image": "registry.example/sidecar:1"}
    ]}});
    apply(&client, &ns, &obj).await;
    let d = eventually("the overlay's sidecar and env var are in the Deployment", WAIT, || async {
        let d = deployment(&client, &ns, "mail-dc1").await?;
        (containers(&d).contains(&"sidecar".to_owned()) && pop3d_env(&d).contains(&"EXTRA".to_owned())).then_some(d)
    })
    .await;
    assert!(pop3d_env(&d).contains(&"POP3D_LOG".to_owned()), "the operator's env vars stay: {:?}", pop3d_env(&d));

    // An overlay that changes a field the operator sets is refused by the apiserver (conflict),
    // reported, and the Deployment keeps the operator's value.
    obj["spec"]["pod"]["templateOverlay"] =
        json!({"spec": {"containers": [{"name": "pop3d", "image": "registry.example/evil:1"}]}});
    apply(&client, &ns, &obj).await;
    let c = eventually("the conflict is reported", WAIT, || async {
        let c = get(&client, &ns, "mail").await?;
        (condition(&c, "Degraded")? == ("True".into(), "PodTemplateOverlayConflict".into())).then_some(c)
    })
    .await;
    let message = c.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Degraded").unwrap().message;
    assert!(message.contains("image"), "{message}");
    let d = deployment(&client, &ns, "mail-dc1").await.unwrap();
    let image = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some(crate::IMAGE));

    // Overlay removed: what it had added goes.
    obj["spec"]["pod"] = json!({});
    apply(&client, &ns, &obj).await;
    eventually("the overlay's additions are gone", WAIT, || async {
        let d = deployment(&client, &ns, "mail-dc1").await?;
        (!containers(&d).contains(&"sidecar".to_owned()) && !pop3d_env(&d).contains(&"EXTRA".to_owned())).then_some(())
    })
    .await;
    teardown(&client, &ns, &mut op, &[&ks]).await;
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref()?.replicas
}

/// A real autoscaling/v2 HorizontalPodAutoscaler scales the Deployment (kube-controller-manager
/// raises it to minReplicas without needing metrics) and the operator leaves its count alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn autoscaled_replicas_belong_to_the_hpa() {
    let client = client().await;
    let ns = namespace(&client, "hpa").await;
    let ks = keyspace("hpa");
    let mut op = Operator::start(&ns, &[]).await;
    let mut obj = cluster("mail", &ks, &[("dc1", 2)], &[("dc1", 1)]);
    apply(&client, &ns, &obj).await;
    eventually("2 replicas", WAIT, || async {
        (replicas(&deployment(&client, &ns, "mail-dc1").await?) == Some(2)).then_some(())
    })
    .await;

    // Handing replicas over keeps the count (no drop to the default of 1 while the HPA is not
    // there yet): the operator no longer owns the field, and it is still 2.
    obj["spec"]["datacenters"][0]["autoscaled"] = json!(true);
    apply(&client, &ns, &obj).await;
    eventually("the operator gave up spec.replicas", WAIT, || async {
        let d = deployment(&client, &ns, "mail-dc1").await?;
        let owned = d.metadata.managed_fields.iter().flatten().any(|m| {
            m.manager.as_deref() == Some("popfleet-operator")
                && m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        });
        (!owned).then_some(())
    })
    .await;
    assert_eq!(replicas(&deployment(&client, &ns, "mail-dc1").await.unwrap()), Some(2));

    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "mail-dc1"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mail-dc1"},
                 "minReplicas": 3, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}});
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    hpas.patch("mail-dc1", &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&hpa)).await.unwrap();
    eventually("the HPA scaled the Deployment to 3", Duration::from_secs(90), || async {
        (replicas(&deployment(&client, &ns, "mail-dc1").await?) == Some(3)).then_some(())
    })
    .await;

    // A spec change makes the operator re-apply the Deployment: the HPA's count stays.
    obj["spec"]["pod"] = json!({"annotations": {"example.com/touch": "1"}});
    apply(&client, &ns, &obj).await;
    let d = eventually("the operator applied the change", WAIT, || async {
        let d = deployment(&client, &ns, "mail-dc1").await?;
        let a = d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?;
        a.contains_key("example.com/touch").then_some(d)
    })
    .await;
    assert_eq!(replicas(&d), Some(3), "the operator reverted the HPA");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&deployment(&client, &ns, "mail-dc1").await.unwrap()), Some(3));
    let c = get(&client, &ns, "mail").await.unwrap();
    assert_eq!(c.status.unwrap().datacenters[0].replicas, 3, "the status follows the HPA's count");
    teardown(&client, &ns, &mut op, &[&ks]).await;
}
