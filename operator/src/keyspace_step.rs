//! The keyspace step of a reconcile: connect, count the nodes of each Cassandra datacenter,
//! take a repair acknowledgement, decide what of the spec's replication may be written
//! (`replication::plan`), write it, and say what changed (Events) and what was held (status).

use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use crds::{KeyspaceStatus, Pop3Cluster};
use schema::tls::TlsMaterial;

use crate::controller::{key, required_secret, secret_bytes, secret_problem, secret_value, Context};
use crate::keyspace::{self, Credentials, Outcome, Target};
use crate::replication::{self, Hold};
use crate::status::{Held, KeyspaceOutcome};
use crate::{Result, FIELD_MANAGER};

/// The Cassandra part; never fails the reconcile by itself (the pods' objects are still written),
/// its failure is reported in the status and triggers the backoff afterwards.
pub(crate) async fn run(cluster: &Pop3Cluster, ctx: &Context) -> (KeyspaceOutcome, Vec<Held>) {
    match step(cluster, ctx).await {
        Ok((outcome, holds)) => {
            let ks = &cluster.spec.cassandra.keyspace;
            let held = holds
                .iter()
                .map(|h| Held { reason: h.reason().into(), message: h.message(ks), blocking: h.blocking() })
                .collect();
            (outcome, held)
        }
        // The session is kept: the driver reconnects to restarted nodes by itself, and a changed
        // target (contact points, credentials) makes `Sessions::get` build a new one.
        Err(e) => (KeyspaceOutcome::Failed(e.to_string()), vec![]),
    }
}

pub(crate) async fn target(cluster: &Pop3Cluster, ctx: &Context) -> Result<Target> {
    let spec = &cluster.spec.cassandra;
    let ns = cluster.namespace().unwrap_or_default();
    let credentials = match &spec.credentials_secret {
        None => None,
        Some(r) => {
            let s = required_secret(&ctx.client, &ns, &r.name).await?;
            let value =
                |key: &str| secret_value(&s, key).ok_or_else(|| secret_problem(&r.name, &format!("no key {key}")));
            Some(Credentials { username: value(&r.username_key)?, password: value(&r.password_key)? })
        }
    };
    let tls = match &spec.tls {
        None => None,
        Some(t) => {
            let s = required_secret(&ctx.client, &ns, &t.secret_name).await?;
            Some(TlsMaterial {
                ca_pem: secret_bytes(&s, "ca.crt").ok_or_else(|| secret_problem(&t.secret_name, "no key ca.crt"))?,
                identity: secret_bytes(&s, "tls.crt").zip(secret_bytes(&s, "tls.key")),
                server_name: t.server_name.clone(),
            })
        }
    };
    let preferred_dc = cluster.spec.datacenters.first().map(|d| d.cassandra_dc().to_owned()).unwrap_or_default();
    Ok(Target {
        contact_points: spec.contact_points.values().flatten().cloned().collect(),
        preferred_dc,
        credentials,
        tls,
    })
}

/// The keyspace status this resource had, for its keyspace.
fn previous(cluster: &Pop3Cluster) -> KeyspaceStatus {
    let spec = &cluster.spec.cassandra;
    let old = cluster.status.as_ref().and_then(|s| s.keyspace.clone()).filter(|k| k.name == spec.keyspace);
    old.unwrap_or_else(|| KeyspaceStatus { name: spec.keyspace.clone(), ..Default::default() })
}

async fn step(cluster: &Pop3Cluster, ctx: &Context) -> Result<(KeyspaceOutcome, Vec<Hold>)> {
    let spec = &cluster.spec.cassandra;
    let session = ctx.sessions.get(&key(cluster), &target(cluster, ctx).await?).await?;
    let mut k = previous(cluster);
    // First, so that the step the acknowledged repair was waiting for is taken in this reconcile.
    if k.repair_needed && cluster.annotations().get(crds::REPAIRED_ANNOTATION) == k.replication_changed_at.as_ref() {
        k.repair_needed = false;
        k.awaiting_data.clear();
        let note = format!("repair of {} acknowledged", spec.keyspace);
        ctx.event(cluster, EventType::Normal, "RepairAcknowledged", note).await;
    }
    // Both from Cassandra itself: the replication as it is, the nodes each datacenter has.
    let current = keyspace::current(&session, &spec.keyspace).await?;
    let nodes = keyspace::node_counts(&session).await?;
    let allowed = replication::parse_allowed(cluster.annotations().get(crds::ALLOW_DECREASE_ANNOTATION));
    let wanted = keyspace::wanted(&spec.replication)?;
    let plan = replication::plan(current.as_ref(), &wanted, &nodes, k.repair_needed, &allowed);
    let Some(write) = plan.write else {
        tracing::warn!(keyspace = %spec.keyspace, ?nodes, "replication refused: a factor exceeds its datacenter's nodes");
        return Ok(match keyspace::read(&session, &spec.keyspace).await? {
            Some(outcome) => (KeyspaceOutcome::Ready(fill(k, &outcome)), plan.holds),
            None => {
                let message = plan.holds.iter().map(|h| h.message(&spec.keyspace)).collect::<Vec<_>>().join("; ");
                (KeyspaceOutcome::Refused(message), plan.holds)
            }
        });
    };
    let outcome = keyspace::ensure(&session, &spec.keyspace, &write).await?;
    let k = record(cluster, ctx, fill(k, &outcome), &outcome).await;
    Ok((KeyspaceOutcome::Ready(k), plan.holds))
}

fn fill(k: KeyspaceStatus, outcome: &Outcome) -> KeyspaceStatus {
    KeyspaceStatus { replication: outcome.replication.clone(), schema_version: outcome.schema_version as i32, ..k }
}

/// Events and the repair bookkeeping for what `ensure` did.
async fn record(cluster: &Pop3Cluster, ctx: &Context, mut k: KeyspaceStatus, outcome: &Outcome) -> KeyspaceStatus {
    let ks = &cluster.spec.cassandra.keyspace;
    if outcome.created {
        ctx.metrics.write("keyspace_create");
        let note = format!("created keyspace {ks} with replication {:?}", outcome.replication);
        ctx.event(cluster, EventType::Normal, "KeyspaceCreated", note).await;
    }
    if let Some((before, after)) = &outcome.replication_changed {
        ctx.metrics.write("keyspace_alter");
        let change = keyspace::describe_change(before, after);
        let lowered = keyspace::lowered_datacenters(before, after);
        if !lowered.is_empty() {
            let note = format!(
                "replication of {ks} changed {change}: run `nodetool cleanup {ks}` on every node of {} to free the data they no longer own",
                lowered.join(", ")
            );
            ctx.event(cluster, EventType::Warning, "CleanupNeeded", note).await;
        }
        if keyspace::raised(before, after) {
            k = repair_needed(cluster, ctx, k, before, after, change).await;
        }
    }
    if !outcome.applied.is_empty() {
        ctx.metrics.write("keyspace_migrate");
        let note = format!("applied schema migrations {:?} to {ks}", outcome.applied);
        ctx.event(cluster, EventType::Normal, "MigrationsApplied", note).await;
    }
    k
}

/// A factor was raised or a datacenter added: new replicas lack the older mail until a repair.
async fn repair_needed(
    cluster: &Pop3Cluster,
    ctx: &Context,
    mut k: KeyspaceStatus,
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
    change: String,
) -> KeyspaceStatus {
    let ks = &cluster.spec.cassandra.keyspace;
    // Sub-second, so an acknowledgement of the previous change taken in this same second cannot
    // be read as the acknowledgement of this one.
    let at = jiff::Timestamp::now().to_string();
    let note = format!(
        "replication of {ks} changed {change}: run `nodetool repair -full {ks}` on every node, then `kubectl annotate pop3cluster {} {}={at}`",
        cluster.name_any(),
        crds::REPAIRED_ANNOTATION
    );
    ctx.event(cluster, EventType::Warning, "RepairNeeded", note).await;
    k.repair_needed = true;
    k.replication_changed_at = Some(at);
    k.repair_reason = Some(change);
    let added = keyspace::added_datacenters(before, after);
    if !added.is_empty() {
        for dc in added {
            if !k.awaiting_data.contains(&dc) {
                k.awaiting_data.push(dc);
            }
        }
        // Before any Deployment is written: were the status lost after the ALTER, the next
        // reconcile would see no change and let the new datacenter's pods serve empty mailboxes.
        // Failing that, this reconcile still holds it and the status write at its end retries.
        if let Err(e) = persist_keyspace(cluster, ctx, &k).await {
            tracing::warn!(error = %e, "cannot record the datacenters awaiting data yet");
        }
    }
    k
}

/// Writes `status.keyspace` alone, at once (a merge patch: the rest of the status is left as is).
async fn persist_keyspace(cluster: &Pop3Cluster, ctx: &Context, k: &KeyspaceStatus) -> Result<()> {
    let api: Api<Pop3Cluster> = Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = serde_json::json!({"status": {"keyspace": k}});
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch_status(&cluster.name_any(), &params, &Patch::Merge(&patch)).await?;
    ctx.metrics.write("status");
    Ok(())
}
