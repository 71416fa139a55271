//! Watches exactly the Secrets the Pop3Clusters use, one small watch per Secret, so a renewed
//! certificate, a rotated password or a rotated admin token reconciles the clusters using it.
//!
//! Why not one Secret watch for the whole cluster (or namespace): it sends the operator an event
//! for every write to every Secret there (metadata only, still several hundred bytes each, and the
//! initial LIST of all of them) only for the mapper to throw almost all of them away. A label
//! selector would need the user to label Secrets that cert-manager, Vault or a GitOps tool writes,
//! and a forgotten label would silently stop rotations from rolling the pods. A watch per
//! referenced name (`fieldSelector=metadata.name=<name>`) needs nothing from the user, sees a
//! Secret deleted and re-created under the same name, and costs one HTTP/2 stream per Secret on
//! the operator's one connection: the kubelet watches the Secrets its pods mount the same way
//! (its default `Watch` change-detection strategy). The watches are metadata-only: which Secret
//! changed is all the mapper needs, and the reconcile GETs the few it uses.
//!
//! The reconcile tells [`SecretWatches::track`] what a cluster uses (before it reads any of it,
//! so a change between that read and the watch's start is still seen: a new watch's initial
//! listing triggers one more reconcile) and [`SecretWatches::forget`] when the cluster goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

use crate::admin_token;
use crds::Pop3Cluster;

/// A Secret by namespace and name.
pub type SecretKey = (String, String);
type Event = Result<PartialObjectMeta<Secret>, watcher::Error>;

/// The names of the Secrets a cluster uses: its admin token, the TLS Secrets and the Cassandra
/// credentials. The controller's mapper and the watches both go by this list.
pub fn referenced(cluster: &Pop3Cluster) -> BTreeSet<String> {
    let spec = &cluster.spec;
    let mut names = BTreeSet::from([admin_token::secret_name(cluster)]);
    names.extend(spec.pop3.tls.as_ref().map(|t| t.secret_name.clone()));
    names.extend(spec.cassandra.tls.as_ref().map(|t| t.secret_name.clone()));
    names.extend(spec.cassandra.credentials_secret.as_ref().map(|s| s.name.clone()));
    names
}

#[derive(Default)]
struct State {
    /// Per cluster (`namespace/name`), the Secrets it uses.
    by_cluster: BTreeMap<String, BTreeSet<SecretKey>>,
    /// One running watch per Secret used by at least one cluster.
    watches: BTreeMap<SecretKey, tokio::task::JoinHandle<()>>,
}

pub struct SecretWatches {
    client: Client,
    tx: mpsc::UnboundedSender<Event>,
    state: Mutex<State>,
}

impl SecretWatches {
    /// The watches and the stream of their events, for `Controller::watches_stream`.
    pub fn new(client: Client) -> (Self, impl Stream<Item = Event> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded();
        (SecretWatches { client, tx, state: Mutex::default() }, rx)
    }

    /// Makes the watched Secrets of `cluster` what its spec references now: starts the watches
    /// of newly referenced Secrets, stops those no cluster uses any more.
    pub fn track(&self, cluster: &Pop3Cluster) {
        let ns = cluster.namespace().unwrap_or_default();
        let keys = referenced(cluster).into_iter().map(|n| (ns.clone(), n)).collect();
        self.set(format!("{ns}/{}", cluster.name_any()), keys);
    }

    /// The cluster is gone: stops the watches only it used.
    pub fn forget(&self, cluster: &Pop3Cluster) {
        self.set(format!("{}/{}", cluster.namespace().unwrap_or_default(), cluster.name_any()), BTreeSet::new());
    }

    /// The Secrets watched now (for tests and debugging).
    pub fn watched(&self) -> BTreeSet<SecretKey> {
        self.state.lock().expect("not poisoned").watches.keys().cloned().collect()
    }

    fn set(&self, cluster: String, keys: BTreeSet<SecretKey>) {
        let mut state = self.state.lock().expect("not poisoned");
        if keys.is_empty() {
            state.by_cluster.remove(&cluster);
        } else {
            state.by_cluster.insert(cluster, keys);
        }
        let wanted: BTreeSet<SecretKey> = state.by_cluster.values().flatten().cloned().collect();
        state.watches.retain(|key, task| {
            let keep = wanted.contains(key);
            if !keep {
                tracing::debug!(namespace = %key.0, secret = %key.1, "stop watching Secret");
                task.abort();
            }
            keep
        });
        for key in wanted {
            let (client, tx) = (&self.client, &self.tx);
            state
                .watches
                .entry(key.clone())
                .or_insert_with(|| tokio::spawn(watch_one(client.clone(), key, tx.clone())));
        }
    }
}

impl Drop for SecretWatches {
    fn drop(&mut self) {
        for task in self.state.lock().expect("not poisoned").watches.values() {
            task.abort();
        }
    }
}

/// Forwards every sighting of one Secret (initial listing, changes, deletion) to the controller.
async fn watch_one(client: Client, (ns, name): SecretKey, tx: mpsc::UnboundedSender<Event>) {
    tracing::debug!(namespace = %ns, secret = %name, "watching Secret");
    // An Api of PartialObjectMeta makes metadata-only requests.
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client, &ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().touched_objects().boxed();
    while let Some(event) = events.next().await {
        if tx.unbounded_send(event).is_err() {
            return; // the controller has stopped
        }
    }
}
