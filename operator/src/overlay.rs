//! `spec.pod.templateOverlay`: the user's partial pod template, merged into each datacenter's
//! Deployment by the API server.
//!
//! Why server-side apply under a field manager of its own rather than merging in the operator
//! (a strategic merge patch or a typed subset of the pod spec): the apiserver merges lists by the
//! same keys a strategic merge uses (containers, env, volumes, ports by name), so nothing is
//! re-implemented here; and it knows which fields the operator owns. Applied without `force`, an
//! overlay that would change one of them (the image, the security context, a probe, the config
//! mount, ...) is refused as a conflict naming the field, instead of a hand-kept deny list that
//! drifts from what the operator sets. The overlay manager owns exactly what the overlay states,
//! so a field removed from the overlay is removed from the Deployment. The costs: the overlay is
//! untyped in the CRD (the apiserver checks the merged template when it is applied, and the
//! status reports a refusal), and an edit of both the spec and the overlay in one go rolls the
//! pods twice.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::resources;
use crate::telemetry::Metrics;
use crate::Result;
use crds::{DatacenterSpec, Pop3Cluster};

/// Field manager of the overlay's apply.
pub const OVERLAY_MANAGER: &str = "popfleet-operator-overlay";

/// The apply body: the Deployment's name and the overlay as its pod template. No overlay: an
/// empty body, which releases (and so removes) whatever an earlier overlay set.
pub fn body(cluster: &Pop3Cluster, dc: &DatacenterSpec) -> Value {
    let mut body = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": resources::object_name(cluster, &dc.name), "namespace": cluster.namespace()},
    });
    if let Some(overlay) = &cluster.spec.pod.template_overlay {
        body["spec"] = json!({ "template": overlay });
    }
    body
}

fn applied_before(live: &Deployment) -> bool {
    live.managed_fields().iter().any(|m| m.manager.as_deref() == Some(OVERLAY_MANAGER))
}

/// Applies the overlay to the Deployment just written. Ok(Err((reason, message))): the apiserver
/// refused it (a conflict with an operator-owned field, or an invalid template), for the status.
pub async fn apply(
    client: &Client,
    cluster: &Pop3Cluster,
    dc: &DatacenterSpec,
    live: Deployment,
    metrics: &Metrics,
) -> Result<(Deployment, Option<(String, String)>)> {
    if cluster.spec.pod.template_overlay.is_none() && !applied_before(&live) {
        return Ok((live, None));
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let params = PatchParams::apply(OVERLAY_MANAGER);
    match api.patch(&live.name_any(), &params, &Patch::Apply(&body(cluster, dc))).await {
        Ok(d) => {
            metrics.write("apply");
            Ok((d, None))
        }
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 422 || e.code == 400 => {
            let reason = if e.code == 409 { "PodTemplateOverlayConflict" } else { "PodTemplateOverlayInvalid" };
            let message = format!("spec.pod.templateOverlay not applied to {}: {}", live.name_any(), e.message);
            Ok((live, Some((reason.to_owned(), message))))
        }
        Err(e) => Err(e.into()),
    }
}
