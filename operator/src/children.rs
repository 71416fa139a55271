//! Writing, observing and pruning a Pop3Cluster's child objects.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::resources::{self, Children, LABEL_DATACENTER};
use crate::status::{DcObservation, STUCK_ROLLOUT};
use crate::telemetry::Metrics;
use crate::{overlay, Result, FIELD_MANAGER};
use crds::{DatacenterRollout, DatacenterSpec, DatacenterStatus, Pop3Cluster};

/// Server-side apply with the operator's field manager. `force`: the operator is the authority
/// on the fields it sets, so a hand edit of one of them is taken back (drift correction); fields
/// it does not set stay with whoever set them.
async fn apply<K>(client: &Client, ns: &str, obj: &K, metrics: &Metrics) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Serialize + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    let applied = api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj)).await?;
    metrics.write("apply");
    Ok(applied)
}

/// Applies one datacenter's objects (ConfigMap first: the pods mount it), then the pod template
/// overlay, and returns the Deployment as the API server has it now, status included, with the
/// overlay's refusal if there was one.
pub async fn apply_datacenter(
    client: &Client,
    cluster: &Pop3Cluster,
    dc: &DatacenterSpec,
    c: &Children,
    metrics: &Metrics,
) -> Result<(Deployment, Option<(String, String)>)> {
    let ns = cluster.namespace().unwrap_or_default();
    apply(client, &ns, &c.config_map, metrics).await?;
    apply(client, &ns, &c.service_account, metrics).await?;
    apply(client, &ns, &c.service, metrics).await?;
    if let Some(pdb) = &c.pdb {
        apply(client, &ns, pdb, metrics).await?;
    }
    // Before the Deployment: new pods should not start without the fence around their admin port.
    if let Some(np) = &c.network_policy {
        apply(client, &ns, np, metrics).await?;
    }
    if dc.autoscaled {
        hand_over_replicas(client, &ns, &c.deployment, metrics).await?;
    }
    let deployment = apply(client, &ns, &c.deployment, metrics).await?;
    overlay::apply(client, cluster, dc, deployment, metrics).await
}

/// Field manager that keeps a Deployment's replica count when the operator lets go of it.
pub const REPLICAS_HANDOVER_MANAGER: &str = "popfleet-operator-replicas-handover";

/// When a datacenter becomes `autoscaled`, the operator's apply leaves `replicas` out. Were the
/// operator its only owner, server-side apply would remove the field and the Deployment would
/// fall back to 1 replica until the autoscaler acts. So the current count is first applied under
/// a manager of its own that nothing ever re-applies: it keeps the value until the autoscaler's
/// first write takes the field over (the handover Kubernetes documents for HPA migrations).
async fn hand_over_replicas(client: &Client, ns: &str, desired: &Deployment, metrics: &Metrics) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let Some(live) = api.get_opt(&desired.name_any()).await? else { return Ok(()) };
    let operator_owns_replicas = live.managed_fields().iter().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    });
    let Some(replicas) = live.spec.as_ref().and_then(|s| s.replicas).filter(|_| operator_owns_replicas) else {
        return Ok(());
    };
    let body = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": live.name_any(), "namespace": ns},
        "spec": {"replicas": replicas},
    });
    api.patch(&live.name_any(), &PatchParams::apply(REPLICAS_HANDOVER_MANAGER), &Patch::Apply(&body)).await?;
    metrics.write("apply");
    Ok(())
}

/// What a datacenter looks like from its Deployment (None: not there yet).
pub fn observe(dc: &DatacenterSpec, deployment: Option<&Deployment>) -> DcObservation {
    let status = deployment.and_then(|d| d.status.clone()).unwrap_or_default();
    let generation = deployment.and_then(|d| d.metadata.generation).unwrap_or(0);
    // Autoscaled: the count the autoscaler set is the one wanted.
    let desired = match deployment.and_then(|d| d.spec.as_ref()?.replicas) {
        Some(r) if dc.autoscaled => r,
        _ => dc.replicas,
    };
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let current = status.observed_generation.unwrap_or(0) >= generation;
    let rolled_out = deployment.is_some() && current && updated >= desired && ready >= desired && total == desired;
    // Only for the generation it is about: a new template starts a new deadline.
    let stalled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some(STUCK_ROLLOUT))
        .filter(|_| current && !rolled_out)
        .map(|c| {
            let name = deployment.map(|d| d.name_any()).unwrap_or_default();
            format!("Deployment {name}: {STUCK_ROLLOUT}: {}", c.message.as_deref().unwrap_or(""))
        });
    let image = deployment.and_then(pop3d_image).unwrap_or_default();
    let rollout = match (&stalled, rolled_out) {
        (Some(_), _) => DatacenterRollout::Stalled,
        (None, true) => DatacenterRollout::Complete,
        (None, false) => DatacenterRollout::RollingOut,
    };
    DcObservation {
        status: DatacenterStatus {
            name: dc.name.clone(),
            cassandra_datacenter: dc.cassandra_dc().to_owned(),
            replicas: desired,
            ready_replicas: ready,
            updated_replicas: updated,
            version: image_version(&image),
            image,
            rollout: Some(rollout),
        },
        rolled_out,
        stalled,
        waiting_for: None,
        awaiting_data: false,
    }
}

/// The image of the Deployment template's pop3d container.
fn pop3d_image(d: &Deployment) -> Option<String> {
    let pod = d.spec.as_ref()?.template.spec.as_ref()?;
    pod.containers.iter().find(|c| c.name == resources::CONTAINER).and_then(|c| c.image.clone())
}

/// The tag of an image reference (`registry:5000/pop3d:0.3.1@sha256:…` gives `0.3.1`), None
/// without one: a registry's port is not a tag, and a digest alone names no version.
pub fn image_version(image: &str) -> Option<String> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let (_, tag) = last.split_once(':')?;
    (!tag.is_empty()).then(|| tag.to_owned())
}

/// `OneDatacenterAtATime`: the live Deployment when it exists and lacks the template `desired`
/// carries (a datacenter not created yet, or only scaled, has nothing to wait for).
pub async fn pending_template(
    client: &Client,
    cluster: &Pop3Cluster,
    desired: &Deployment,
) -> Result<Option<Deployment>> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let Some(live) = api.get_opt(&desired.name_any()).await? else { return Ok(None) };
    let hash = |d: &Deployment| d.annotations().get(resources::TEMPLATE_HASH_ANNOTATION).cloned();
    Ok((hash(&live) != hash(desired)).then_some(live))
}

/// A datacenter whose new template waits for `previous`'s rollout: observed as it runs now.
pub fn observe_waiting(dc: &DatacenterSpec, live: &Deployment, previous: &str) -> DcObservation {
    let mut o = observe(dc, Some(live));
    o.rolled_out = false;
    o.waiting_for = Some(previous.to_owned());
    o.status.rollout = Some(DatacenterRollout::Waiting);
    o
}

/// Reads the Deployments without writing anything (paused clusters).
pub async fn observe_all(client: &Client, cluster: &Pop3Cluster) -> Result<Vec<DcObservation>> {
    let ns = cluster.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut out = Vec::new();
    for dc in &cluster.spec.datacenters {
        let deployment = api.get_opt(&resources::object_name(cluster, &dc.name)).await?;
        out.push(observe(dc, deployment.as_ref()));
    }
    Ok(out)
}

async fn prune_kind<K>(
    client: &Client,
    cluster: &Pop3Cluster,
    keep: &BTreeSet<&str>,
    metrics: &Metrics,
) -> Result<BTreeSet<String>>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let ns = cluster.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let uid = cluster.uid().unwrap_or_default();
    let mut removed = BTreeSet::new();
    for obj in api.list(&ListParams::default().labels(&resources::cluster_selector(cluster))).await? {
        let dc = obj.labels().get(LABEL_DATACENTER).cloned().unwrap_or_default();
        // Only objects this very resource owns: a label can be copied, an owner uid cannot.
        let owned = obj.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true));
        if owned && !keep.contains(dc.as_str()) {
            api.delete(&obj.name_any(), &DeleteParams::background()).await?;
            metrics.write("delete");
            removed.insert(dc);
        }
    }
    Ok(removed)
}

/// Deletes the objects of datacenters no longer in the spec, and the NetworkPolicies and
/// PodDisruptionBudgets when they are turned off; returns the names of the datacenters removed.
pub async fn prune(client: &Client, cluster: &Pop3Cluster, metrics: &Metrics) -> Result<BTreeSet<String>> {
    let keep: BTreeSet<&str> = cluster.spec.datacenters.iter().map(|d| d.name.as_str()).collect();
    let keep_policies = if cluster.spec.network_policy.enabled { keep.clone() } else { BTreeSet::new() };
    let policies = prune_kind::<NetworkPolicy>(client, cluster, &keep_policies, metrics).await?;
    let mut removed = prune_kind::<Deployment>(client, cluster, &keep, metrics).await?;
    removed.extend(prune_kind::<Service>(client, cluster, &keep, metrics).await?);
    let keep_pdbs = if cluster.spec.pod_disruption_budget.enabled { keep.clone() } else { BTreeSet::new() };
    let pdbs = prune_kind::<PodDisruptionBudget>(client, cluster, &keep_pdbs, metrics).await?;
    removed.extend(pdbs.into_iter().filter(|dc| !keep.contains(dc.as_str())));
    removed.extend(prune_kind::<ConfigMap>(client, cluster, &keep, metrics).await?);
    removed.extend(prune_kind::<ServiceAccount>(client, cluster, &keep, metrics).await?);
    removed.extend(policies.into_iter().filter(|dc| !keep.contains(dc.as_str())));
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dc() -> DatacenterSpec {
        serde_json::from_value(serde_json::json!({"name": "dc1", "replicas": 2})).unwrap()
    }

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m-dc1", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "other:1"},
                {"name": "pop3d", "image": "registry:5000/popfleet/pop3d:0.3.1"}
            ]}}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn image_and_version_come_from_the_pop3d_container() {
        let d = deployment(
            3,
            serde_json::json!({"observedGeneration": 3, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}),
        );
        let o = observe(&dc(), Some(&d));
        assert_eq!(o.status.image, "registry:5000/popfleet/pop3d:0.3.1");
        assert_eq!(o.status.version.as_deref(), Some("0.3.1"));
        assert_eq!(o.status.rollout, Some(DatacenterRollout::Complete));
        assert!(o.rolled_out && o.stalled.is_none());
        let missing = observe(&dc(), None);
        assert_eq!((missing.status.rollout, missing.status.image.as_str()), (Some(DatacenterRollout::RollingOut), ""));
    }

    #[test]
    fn versions_are_tags_only() {
        assert_eq!(image_version("pop3d:1.2").as_deref(), Some("1.2"));
        assert_eq!(image_version("reg:5000/pop3d").as_deref(), None, "a port is not a tag");
        assert_eq!(image_version("reg:5000/pop3d@sha256:abc").as_deref(), None, "a digest names no version");
        assert_eq!(image_version("reg/pop3d:2.0@sha256:abc").as_deref(), Some("2.0"));
        assert_eq!(image_version("pop3d").as_deref(), None);
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_is_stalled() {
        let stuck = serde_json::json!({"observedGeneration": 3, "replicas": 3, "readyReplicas": 2, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet \"m-dc1-7f\" has timed out progressing."}]});
        let o = observe(&dc(), Some(&deployment(3, stuck.clone())));
        assert_eq!(o.status.rollout, Some(DatacenterRollout::Stalled));
        assert_eq!(
            o.stalled.as_deref(),
            Some("Deployment m-dc1: ProgressDeadlineExceeded: ReplicaSet \"m-dc1-7f\" has timed out progressing.")
        );
        // A new template (generation 4) not yet seen by the Deployment controller: the old
        // deadline says nothing about it.
        let o = observe(&dc(), Some(&deployment(4, stuck)));
        assert_eq!((o.stalled, o.status.rollout), (None, Some(DatacenterRollout::RollingOut)));
    }
}
