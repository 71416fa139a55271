//! The reconcile loop of Pop3Cluster.
//!
//! One pass: (paused? report and stop) → read the Secrets it references → the keyspace step in
//! Cassandra → server-side apply of every datacenter's objects → prune removed datacenters →
//! status (written only when it changed) → Events for what changed. Errors requeue with a
//! per-object exponential backoff; success requeues after `resync` to catch drift made where no
//! watch can see it (a hand-made ALTER KEYSPACE).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::backoff::Backoff;
use crate::keyspace::{self, Sessions};
use crate::resources::{self, LABEL_MANAGED_BY};
use crate::secret_facts;
use crate::secret_watch::{self, SecretWatches};
use crate::status::{self, KeyspaceOutcome, Observation};
use crate::telemetry::{ErrorLabels, Metrics, ResultLabels};
use crate::{children, keyspace_step, Error, Result, FIELD_MANAGER, FINALIZER};

type SecretEvent = std::result::Result<PartialObjectMeta<Secret>, watcher::Error>;
use crds::{DatacenterSpec, DeletionPolicy, Pop3Cluster, Pop3ClusterStatus, RolloutType};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub sessions: Sessions,
    pub backoff: Backoff,
    pub resync: Duration,
    /// One watch per Secret a cluster uses (see `secret_watch`).
    pub secret_watches: SecretWatches,
    /// Their events, taken once by `run` for the controller.
    secret_events: std::sync::Mutex<Option<BoxStream<'static, SecretEvent>>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: String, resync: Duration) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(instance) };
        let (secret_watches, events) = SecretWatches::new(client.clone());
        Context {
            secret_watches,
            secret_events: std::sync::Mutex::new(Some(events.boxed())),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            sessions: Sessions::default(),
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            resync,
        }
    }

    pub(crate) async fn event(&self, cluster: &Pop3Cluster, type_: EventType, reason: &str, note: String) {
        let event =
            Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
        // An Event that cannot be written is not a reason to fail the reconcile.
        if let Err(e) = self.recorder.publish(&event, &cluster.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }
}

pub(crate) fn key(cluster: &Pop3Cluster) -> String {
    format!("{}/{}", cluster.namespace().unwrap_or_default(), cluster.name_any())
}

/// Reconciles are triggered by what the user changes, not by the operator's own status writes:
/// hash the spec generation, deletion, finalizers, the repair acknowledgement and allowed decreases.
fn trigger_hash(c: &Pop3Cluster) -> Option<u64> {
    let mut h = DefaultHasher::new();
    c.metadata.uid.hash(&mut h);
    c.metadata.generation.hash(&mut h);
    c.metadata.deletion_timestamp.is_some().hash(&mut h);
    c.metadata.finalizers.hash(&mut h);
    c.annotations().get(crds::REPAIRED_ANNOTATION).hash(&mut h);
    c.annotations().get(crds::ALLOW_DECREASE_ANNOTATION).hash(&mut h);
    Some(h.finish())
}

/// Runs the controller until `shutdown` resolves. `namespace`: watch only that namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let api = |c: &Client| -> Api<Pop3Cluster> {
        namespace.as_deref().map_or_else(|| Api::all(c.clone()), |ns| Api::namespaced(c.clone(), ns))
    };
    let clusters = api(&client);
    if let Err(e) = clusters.list(&ListParams::default().limit(1)).await {
        anyhow::bail!("cannot list Pop3Clusters ({e}); is the CRD installed? kubectl apply --server-side -f crds/pop3cluster.yaml");
    }
    fn scoped<K>(c: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        ns.as_deref().map_or_else(|| Api::all(c.clone()), |n| Api::namespaced(c.clone(), n))
    }
    let (reader, writer) = reflector::store();
    let trigger = watcher(clusters, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash, Default::default());
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}"));
    let controller = Controller::for_stream(trigger, reader);
    let store = controller.store();
    // A Secret change (renewed certificate, rotated password or admin token) reconciles the
    // clusters using it; only the Secrets some cluster uses are watched (see `secret_watch`).
    let secrets = ctx.secret_events.lock().expect("not poisoned").take().expect("run is called once per Context");
    let secret_mapper = move |secret: PartialObjectMeta<Secret>| {
        let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        store
            .state()
            .into_iter()
            .filter(|c| c.namespace().as_deref() == Some(ns.as_str()))
            .filter(|c| secret_watch::referenced(c).contains(&name))
            .map(|c| ObjectRef::from_obj(&*c))
            .collect::<Vec<_>>()
    };
    controller
        .owns(scoped::<Deployment>(&client, &namespace), owned.clone())
        .owns(scoped::<Service>(&client, &namespace), owned.clone())
        .owns(scoped::<ConfigMap>(&client, &namespace), owned.clone())
        .owns(scoped::<PodDisruptionBudget>(&client, &namespace), owned.clone())
        .owns(scoped::<ServiceAccount>(&client, &namespace), owned.clone())
        .owns(scoped::<NetworkPolicy>(&client, &namespace), owned)
        .watches_stream(secrets, secret_mapper)
        // A rollout moves a Deployment's status many times a second; one reconcile per burst is enough.
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
    Ok(())
}

async fn reconcile(cluster: Arc<Pop3Cluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = key(&cluster);
    let ns = cluster.namespace().unwrap_or_default();
    let api: Api<Pop3Cluster> = Api::namespaced(ctx.client.clone(), &ns);
    let span = tracing::info_span!("reconcile", cluster = %key, generation = cluster.metadata.generation);
    let result = tracing::Instrument::instrument(
        finalizer(&api, FINALIZER, cluster, |event| async {
            match event {
                Finalizer::Apply(c) => apply(c, ctx.clone()).await,
                Finalizer::Cleanup(c) => cleanup(c, ctx.clone()).await,
            }
        }),
        span,
    )
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    let label = ResultLabels { result: if result.is_ok() { "ok" } else { "error" } };
    ctx.metrics.duration.get_or_create(&label).observe(started.elapsed().as_secs_f64());
    ctx.metrics.reconciles.get_or_create(&label).inc();
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

fn error_policy(cluster: Arc<Pop3Cluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failures.get_or_create(&ErrorLabels { error: error.metric_label() }).inc();
    let delay = ctx.backoff.failed(&key(&cluster));
    tracing::warn!(cluster = %key(&cluster), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Whole seconds: the API server stores condition times at second precision, and a status
/// compared with sub-second times would never match what was stored (a write every reconcile).
pub(crate) fn now() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("now is a valid time"))
}

pub(crate) async fn secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>> {
    Ok(Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await?)
}

/// A Secret the spec names and the keyspace work cannot go on without.
pub(crate) async fn required_secret(client: &Client, ns: &str, name: &str) -> Result<Secret> {
    secret(client, ns, name).await?.ok_or_else(|| secret_problem(name, "not found"))
}

pub(crate) fn secret_problem(name: &str, what: &str) -> Error {
    Error::Secret { name: name.to_owned(), problem: what.to_owned() }
}

pub(crate) fn secret_bytes(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    Some(secret.data.as_ref()?.get(key)?.0.clone())
}

pub(crate) fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    String::from_utf8(secret_bytes(secret, key)?).ok()
}

async fn apply(cluster: Arc<Pop3Cluster>, ctx: Arc<Context>) -> Result<Action> {
    let spec = &cluster.spec;
    // Before any Secret is read: a change after the read is then seen by the watch.
    ctx.secret_watches.track(&cluster);
    let was_paused = status::is_true(cluster.status.as_ref(), status::PAUSED);
    if spec.paused {
        // Reads only: the Deployments' state goes into the status so `kubectl get` stays true.
        let obs = Observation {
            paused: true,
            datacenters: children::observe_all(&ctx.client, &cluster).await?,
            keyspace: KeyspaceOutcome::NotChecked,
            problems: vec![],
            holds: vec![],
        };
        write_status(&cluster, &ctx, status::compute(&cluster, &obs, &now())).await?;
        if !was_paused {
            ctx.event(&cluster, EventType::Normal, "Paused", "spec.paused is true: no changes are written".into())
                .await;
        }
        return Ok(Action::await_change());
    }
    if was_paused {
        ctx.event(&cluster, EventType::Normal, "Resumed", "spec.paused is false: applying the spec".into()).await;
    }
    let facts = match secret_facts::read(&ctx.client, &cluster, &ctx.metrics).await {
        Ok(facts) => facts,
        Err(e) => return Err(report_forbidden_secret(&cluster, &ctx, e).await),
    };
    let (secrets, mut problems) = (facts.secrets, facts.problems);
    if let Some(name) = facts.token_created {
        let note = format!("created Secret {name} with a new admin API token (key token)");
        ctx.event(&cluster, EventType::Normal, "AdminTokenCreated", note).await;
    }

    let (keyspace, holds) = keyspace_step::run(&cluster, &ctx).await;

    let (observed, refused) = apply_datacenters(&cluster, &ctx, &secrets, &awaiting_data(&cluster, &keyspace)).await?;
    problems.extend(refused);
    let removed = children::prune(&ctx.client, &cluster, &ctx.metrics).await?;
    for dc in &removed {
        ctx.event(
            &cluster,
            EventType::Normal,
            "DatacenterRemoved",
            format!("datacenter {dc} left the spec: its objects were deleted"),
        )
        .await;
    }

    let keyspace_error = match &keyspace {
        KeyspaceOutcome::Failed(e) => Some(e.clone()),
        _ => None,
    };
    let obs = Observation { paused: false, datacenters: observed, keyspace, problems, holds };
    let new_status = status::compute(&cluster, &obs, &now());
    let was_degraded = status::is_true(cluster.status.as_ref(), status::DEGRADED);
    let degraded = status::is_true(Some(&new_status), status::DEGRADED);
    let degraded_message = new_status
        .conditions
        .iter()
        .find(|c| c.type_ == status::DEGRADED)
        .map(|c| (c.reason.clone(), c.message.clone()));
    write_status(&cluster, &ctx, new_status).await?;
    match (was_degraded, degraded, degraded_message) {
        (false, true, Some((reason, message))) => ctx.event(&cluster, EventType::Warning, &reason, message).await,
        (true, false, _) => {
            ctx.event(&cluster, EventType::Normal, "Recovered", "no problem observed any more".into()).await
        }
        _ => {}
    }
    match keyspace_error {
        // The status already says what is wrong; failing here gets the backoff going.
        Some(e) => Err(Error::Cassandra(e)),
        None => Ok(Action::requeue(ctx.resync)),
    }
}

/// A Secret the operator may not read (the chart's `rbac.secretNames` does not list it) stops the
/// reconcile before anything is written; say so in the status (Degraded/Stalled, reason
/// `SecretForbidden`) rather than only in the operator's log. Returns the error for the backoff.
async fn report_forbidden_secret(cluster: &Pop3Cluster, ctx: &Context, e: Error) -> Error {
    let message = match &e {
        Error::Kube(kube::Error::Api(s)) if s.code == 403 => {
            format!("{}; list the Secret in the chart's rbac.secretNames (operator/README.md)", s.message)
        }
        _ => return e,
    };
    let datacenters = match children::observe_all(&ctx.client, cluster).await {
        Ok(d) => d,
        Err(_) => return e,
    };
    let obs = Observation {
        paused: false,
        datacenters,
        keyspace: KeyspaceOutcome::NotChecked,
        problems: vec![("SecretForbidden".into(), message)],
        holds: vec![],
    };
    if let Err(w) = write_status(cluster, ctx, status::compute(cluster, &obs, &now())).await {
        tracing::warn!(error = %w, "cannot report the forbidden Secret");
    }
    e
}

/// The Cassandra datacenters without their data yet. Fail safe: without a fresh keyspace status,
/// keep holding what was held.
fn awaiting_data(cluster: &Pop3Cluster, keyspace: &KeyspaceOutcome) -> Vec<String> {
    match keyspace {
        KeyspaceOutcome::Ready(k) => k.awaiting_data.clone(),
        _ => cluster
            .status
            .as_ref()
            .and_then(|s| s.keyspace.as_ref())
            .map(|k| k.awaiting_data.clone())
            .unwrap_or_default(),
    }
}

/// Writes every datacenter's objects, in spec order, and observes them. `OneDatacenterAtATime`:
/// once a datacenter is still rolling out, a later one whose template would change is left as it
/// is (none of its objects is written, so its ConfigMap does not change under its running pods
/// either) until a reconcile finds every datacenter before it rolled out; the Deployments' status
/// changes trigger those reconciles.
async fn apply_datacenters(
    cluster: &Pop3Cluster,
    ctx: &Context,
    secrets: &resources::SecretFacts,
    awaiting_data: &[String],
) -> Result<(Vec<status::DcObservation>, Vec<(String, String)>)> {
    let one_at_a_time = cluster.spec.rollout_strategy.type_ == RolloutType::OneDatacenterAtATime;
    let (mut observed, mut problems) = (Vec::new(), Vec::new());
    let mut rolling: Option<&str> = None;
    for spec_dc in &cluster.spec.datacenters {
        // A datacenter whose Cassandra datacenter has no data yet runs no pod (see ADR 0009).
        let held = awaiting_data.iter().any(|a| a == spec_dc.cassandra_dc());
        let gated = DatacenterSpec { replicas: 0, autoscaled: false, ..spec_dc.clone() };
        let dc = if held { &gated } else { spec_dc };
        let children = resources::build(cluster, dc, secrets)?;
        if let Some(previous) = rolling.filter(|_| one_at_a_time) {
            if let Some(live) = children::pending_template(&ctx.client, cluster, &children.deployment).await? {
                tracing::debug!(datacenter = %dc.name, waits_for = previous, "new template held");
                observed.push(children::observe_waiting(dc, &live, previous));
                continue;
            }
        }
        let (deployment, refused) =
            children::apply_datacenter(&ctx.client, cluster, dc, &children, &ctx.metrics).await?;
        problems.extend(refused);
        let mut o = children::observe(dc, Some(&deployment));
        if !o.rolled_out && rolling.is_none() {
            rolling = Some(&spec_dc.name);
        }
        if held {
            o.awaiting_data = true;
            o.status.rollout = Some(crds::DatacenterRollout::AwaitingData);
        }
        observed.push(o);
    }
    Ok((observed, problems))
}

async fn write_status(cluster: &Pop3Cluster, ctx: &Context, status: Pop3ClusterStatus) -> Result<()> {
    if cluster.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<Pop3Cluster> = Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": Pop3Cluster::api_version(&()),
        "kind": Pop3Cluster::kind(&()),
        "status": status,
    });
    api.patch_status(&cluster.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.metrics.write("status");
    Ok(())
}

/// Deletion: the children go with their owner (garbage collector); the keyspace follows the
/// deletion policy. `Retain` (default) keeps it: deleting a Kubernetes object must not delete
/// mail. `Delete` drops it, but not while paused (paused means no writes, also in Cassandra).
async fn cleanup(cluster: Arc<Pop3Cluster>, ctx: Arc<Context>) -> Result<Action> {
    let ks = &cluster.spec.cassandra.keyspace;
    match cluster.spec.deletion_policy {
        DeletionPolicy::Retain => {
            ctx.event(
                &cluster,
                EventType::Normal,
                "KeyspaceRetained",
                format!("keyspace {ks} kept (deletionPolicy Retain); drop it in CQL when the mail is no longer needed"),
            )
            .await;
        }
        DeletionPolicy::Delete if cluster.spec.paused => {
            return Err(Error::InvalidSpec(format!(
                "deletionPolicy Delete: keyspace {ks} is not dropped while paused; unpause to finish the deletion"
            )));
        }
        DeletionPolicy::Delete => {
            let session = ctx.sessions.get(&key(&cluster), &keyspace_step::target(&cluster, &ctx).await?).await?;
            keyspace::drop(&session, ks).await?;
            ctx.metrics.write("keyspace_drop");
            ctx.event(
                &cluster,
                EventType::Normal,
                "KeyspaceDropped",
                format!("keyspace {ks} dropped (deletionPolicy Delete)"),
            )
            .await;
        }
    }
    ctx.sessions.forget(&key(&cluster)).await;
    ctx.secret_watches.forget(&cluster);
    ctx.backoff.succeeded(&key(&cluster));
    Ok(Action::await_change())
}
