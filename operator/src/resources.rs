//! The objects the operator owns per datacenter, as pure functions of the spec.
//!
//! Everything here is applied with server-side apply: the operator states the fields it cares
//! about and owns exactly those. Defaults the apiserver fills in (protocols, clusterIP, nodePorts,
//! ...) are left out on purpose, so a re-apply of the same spec is a no-op and never bumps a
//! resourceVersion (no hot loop).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::pop3d_config::{
    self, ADMIN_PORT, ADMIN_TOKEN_DIR, ADMIN_TOKEN_KEY, CASSANDRA_TLS_DIR, CONFIG_DIR, CONFIG_FILE, DATA_DIR,
    LMTP_PORT, OPS_PORT, POP3S_PORT, POP3_PORT, TLS_DIR,
};
use crate::{admin_token, network_policy, Error, Result, FIELD_MANAGER};
use ::pop3d_config::env as pop3d_env;
use crds::{DatacenterSpec, Pop3Cluster, Pop3ClusterSpec, ServiceType};

pub const LABEL_CLUSTER: &str = "popfleet.io/cluster";
pub const LABEL_DATACENTER: &str = "popfleet.io/datacenter";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Pod template annotations whose change rolls the pods: pop3d reads its config at start, and a
/// renewed certificate should be in use everywhere without waiting for a reload.
pub const CONFIG_HASH_ANNOTATION: &str = "popfleet.io/config-hash";
pub const TLS_HASH_ANNOTATION: &str = "popfleet.io/tls-hash";
pub const CASSANDRA_TLS_HASH_ANNOTATION: &str = "popfleet.io/cassandra-tls-hash";
/// pop3d reads the admin token file at start, so a rotated token reaches it by a roll.
pub const ADMIN_TOKEN_HASH_ANNOTATION: &str = "popfleet.io/admin-token-hash";
/// The Cassandra credentials reach pop3d as environment variables, read once at start: a new
/// username or password reaches the pods only by a roll, which this hash makes happen.
pub const CASSANDRA_CREDENTIALS_HASH_ANNOTATION: &str = "popfleet.io/cassandra-credentials-hash";

/// On the Deployment (not its pods): a hash of the pod template the operator wants, overlay
/// included, so a later reconcile can tell whether a datacenter still waits for a new template
/// (`OneDatacenterAtATime`) without comparing against what the apiserver defaulted.
pub const TEMPLATE_HASH_ANNOTATION: &str = "popfleet.io/template-hash";

/// What the referenced Secrets hold, as far as the objects depend on it.
#[derive(Debug, Clone, Default)]
pub struct SecretFacts {
    /// Hash of the POP3 TLS Secret's content (None when the spec has no TLS).
    pub pop3_tls_hash: Option<String>,
    /// Hash of the Cassandra TLS Secret's content (None when the spec has no Cassandra TLS).
    pub cassandra_tls_hash: Option<String>,
    /// The Cassandra TLS Secret has a client certificate (`tls.crt` and `tls.key`).
    pub cassandra_client_cert: bool,
    /// Hash of the admin token (None only where no Secret was read, as in unit tests).
    pub admin_token_hash: Option<String>,
    /// Keyed hash of the Cassandra username and password (None when the spec names no Secret).
    pub cassandra_credentials_hash: Option<String>,
}

/// The name of the pop3d container in the pod template.
pub const CONTAINER: &str = "pop3d";

/// The uid/gid of distroless/chainguard "nonroot" images.
const NONROOT_ID: i64 = 65532;
/// The preStop pause before SIGTERM (see `container`).
const PRE_STOP_SECONDS: i64 = 5;

/// `<cluster>-<datacenter>`: the name of every object of that datacenter (the CRD bounds both
/// parts so it is a valid DNS-1035 label).
pub fn object_name(cluster: &Pop3Cluster, dc: &str) -> String {
    format!("{}-{dc}", cluster.metadata.name.as_deref().unwrap_or_default())
}

/// Selector of everything the operator made for a cluster (for listing stale objects).
pub fn cluster_selector(cluster: &Pop3Cluster) -> String {
    format!(
        "{LABEL_CLUSTER}={},{LABEL_MANAGED_BY}={FIELD_MANAGER}",
        cluster.metadata.name.as_deref().unwrap_or_default()
    )
}

pub(crate) fn selector_labels(cluster: &Pop3Cluster, dc: &str) -> BTreeMap<String, String> {
    [
        (LABEL_CLUSTER.to_owned(), cluster.metadata.name.clone().unwrap_or_default()),
        (LABEL_DATACENTER.to_owned(), dc.to_owned()),
    ]
    .into()
}

fn labels(cluster: &Pop3Cluster, dc: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster, dc);
    l.insert("app.kubernetes.io/name".into(), "pop3d".into());
    l.insert("app.kubernetes.io/instance".into(), cluster.metadata.name.clone().unwrap_or_default());
    l.insert(LABEL_MANAGED_BY.into(), FIELD_MANAGER.into());
    l
}

pub(crate) fn meta(cluster: &Pop3Cluster, dc: &str) -> Result<ObjectMeta> {
    let owner =
        cluster.controller_owner_ref(&()).ok_or_else(|| Error::InvalidSpec("the Pop3Cluster has no uid yet".into()))?;
    Ok(ObjectMeta {
        name: Some(object_name(cluster, dc)),
        namespace: cluster.metadata.namespace.clone(),
        labels: Some(labels(cluster, dc)),
        owner_references: Some(vec![owner]),
        ..Default::default()
    })
}

pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

/// The objects of one datacenter.
#[derive(Debug, Clone)]
pub struct Children {
    pub config_map: ConfigMap,
    pub service_account: ServiceAccount,
    pub service: Service,
    /// None when `spec.podDisruptionBudget.enabled` is false.
    pub pdb: Option<PodDisruptionBudget>,
    pub deployment: Deployment,
    /// None when `spec.networkPolicy.enabled` is false.
    pub network_policy: Option<NetworkPolicy>,
}

/// Builds a datacenter's objects.
pub fn build(cluster: &Pop3Cluster, dc: &DatacenterSpec, secrets: &SecretFacts) -> Result<Children> {
    let toml = pop3d_config::render(cluster, dc, secrets.cassandra_client_cert);
    let config_hash = sha256_hex(&[toml.as_bytes()]);
    let config_map = ConfigMap {
        metadata: meta(cluster, &dc.name)?,
        data: Some([(CONFIG_FILE.to_owned(), toml)].into()),
        ..Default::default()
    };
    let service_account = ServiceAccount {
        metadata: meta(cluster, &dc.name)?,
        // pop3d never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    Ok(Children {
        config_map,
        service_account,
        service: service(cluster, dc)?,
        pdb: pdb(cluster, dc)?,
        deployment: deployment(cluster, dc, &config_hash, secrets)?,
        network_policy: network_policy::build(cluster, dc)?,
    })
}

fn service(cluster: &Pop3Cluster, dc: &DatacenterSpec) -> Result<Service> {
    let spec = &cluster.spec;
    let mut metadata = meta(cluster, &dc.name)?;
    if !dc.service.annotations.is_empty() {
        metadata.annotations = Some(dc.service.annotations.clone());
    }
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        ..Default::default()
    };
    let mut ports = vec![port("pop3", spec.pop3.port), port("lmtp", spec.lmtp.port)];
    if spec.pop3.tls.is_some() {
        ports.insert(1, port("pop3s", spec.pop3.tls_port));
    }
    let type_ = match dc.service.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let ranges = &dc.service.load_balancer_source_ranges;
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector_labels(cluster, &dc.name)),
            ports: Some(ports),
            external_traffic_policy: dc.service.external_traffic_policy.map(|p| format!("{p:?}")),
            load_balancer_source_ranges: (!ranges.is_empty()).then(|| ranges.clone()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// None when `spec.podDisruptionBudget.enabled` is false (the prune then deletes it).
fn pdb(cluster: &Pop3Cluster, dc: &DatacenterSpec) -> Result<Option<PodDisruptionBudget>> {
    let spec = &cluster.spec.pod_disruption_budget;
    if !spec.enabled {
        return Ok(None);
    }
    // Default one pod at a time: POP3 sessions are short and clients retry, but a node drain must
    // not take a whole datacenter's pop3d away at once.
    let max_unavailable = match (&spec.max_unavailable, &spec.min_available) {
        (None, None) => Some(IntOrString::Int(1)),
        (m, _) => m.clone(),
    };
    Ok(Some(PodDisruptionBudget {
        metadata: meta(cluster, &dc.name)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable,
            min_available: spec.min_available.clone(),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster, &dc.name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// The pop3d command line; the e2e test runs exactly this (with the binary's local path).
pub fn command() -> Vec<String> {
    vec!["pop3d".into(), "serve".into(), "--config".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("ops".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Default::default()
    }
}

/// The user's annotations, then the operator's hashes (the CRD refuses `popfleet.io/*` keys
/// from the user; inserting ours last keeps them even if that rule were bypassed).
fn pod_annotations(spec: &Pop3ClusterSpec, config_hash: &str, secrets: &SecretFacts) -> BTreeMap<String, String> {
    let mut annotations = spec.pod.annotations.clone();
    annotations.extend(
        [
            (CONFIG_HASH_ANNOTATION, Some(config_hash)),
            (TLS_HASH_ANNOTATION, secrets.pop3_tls_hash.as_deref()),
            (CASSANDRA_TLS_HASH_ANNOTATION, secrets.cassandra_tls_hash.as_deref()),
            (ADMIN_TOKEN_HASH_ANNOTATION, secrets.admin_token_hash.as_deref()),
            (CASSANDRA_CREDENTIALS_HASH_ANNOTATION, secrets.cassandra_credentials_hash.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
    );
    annotations
}

/// The user's pod labels, then the operator's (which the Service and PDB select by).
fn pod_labels(cluster: &Pop3Cluster, dc: &str) -> BTreeMap<String, String> {
    let mut l = cluster.spec.pod.labels.clone();
    l.extend(labels(cluster, dc));
    l
}

fn container_ports(spec: &Pop3ClusterSpec) -> Vec<ContainerPort> {
    let container_port =
        |name: &str, port: i32| ContainerPort { name: Some(name.into()), container_port: port, ..Default::default() };
    let mut ports = vec![container_port("pop3", POP3_PORT)];
    if spec.pop3.tls.is_some() {
        ports.push(container_port("pop3s", POP3S_PORT));
    }
    ports.push(container_port("lmtp", LMTP_PORT));
    ports.push(container_port("admin", ADMIN_PORT));
    ports.push(container_port("ops", OPS_PORT));
    ports
}

fn env(spec: &Pop3ClusterSpec) -> Vec<EnvVar> {
    let mut env = vec![EnvVar { name: pop3d_env::LOG.into(), value: Some("info".into()), ..Default::default() }];
    if let Some(creds) = &spec.cassandra.credentials_secret {
        let from_secret = |var: &str, key: &str| EnvVar {
            name: var.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: creds.name.clone(),
                    key: key.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        env.push(from_secret(pop3d_env::CASSANDRA_USERNAME, &creds.username_key));
        env.push(from_secret(pop3d_env::CASSANDRA_PASSWORD, &creds.password_key));
    }
    env
}

/// The container's mounts and the pod's volumes: the ConfigMap, scratch space and the Secrets.
fn volumes(cluster: &Pop3Cluster, config_map: &str) -> (Vec<VolumeMount>, Vec<Volume>) {
    let spec = &cluster.spec;
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let secret_volume = |name: &str, secret_name: &str| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource { secret_name: Some(secret_name.into()), ..Default::default() }),
        ..Default::default()
    };
    let empty_dir = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("data", DATA_DIR, false),
        mount("tmp", "/tmp", false),
        mount("admin-token", ADMIN_TOKEN_DIR, true),
    ];
    let mut admin_token = secret_volume("admin-token", &admin_token::secret_name(cluster));
    // Only the token: a Secret the user names may hold other keys pop3d has no business seeing.
    admin_token.secret.as_mut().expect("a secret volume").items =
        Some(vec![KeyToPath { key: ADMIN_TOKEN_KEY.into(), path: ADMIN_TOKEN_KEY.into(), ..Default::default() }]);
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: config_map.into(), ..Default::default() }),
            ..Default::default()
        },
        empty_dir("data"),
        empty_dir("tmp"),
        admin_token,
    ];
    if let Some(tls) = &spec.pop3.tls {
        mounts.push(mount("tls", TLS_DIR, true));
        volumes.push(secret_volume("tls", &tls.secret_name));
    }
    if let Some(tls) = &spec.cassandra.tls {
        mounts.push(mount("cassandra-tls", CASSANDRA_TLS_DIR, true));
        volumes.push(secret_volume("cassandra-tls", &tls.secret_name));
    }
    (mounts, volumes)
}

fn container(spec: &Pop3ClusterSpec, dc: &DatacenterSpec, mounts: Vec<VolumeMount>) -> Container {
    Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| format!("{p:?}")),
        command: Some(command()),
        env: Some(env(spec)),
        ports: Some(container_ports(spec)),
        // Startup gives Cassandra time to answer; liveness only checks the process is serving;
        // readiness follows the store, so a pod cut off from its Cassandra DC gets no traffic.
        startup_probe: Some(http_probe("/healthz", 2, 30)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        // A terminating pod leaves its Service's endpoints at once, but kube-proxy on every node takes
        // a moment to hear it: pop3d keeps accepting for those seconds before SIGTERM makes it stop
        // (then it finishes its sessions: well inside the default 30 s grace period).
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: PRE_STOP_SECONDS }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: dc.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

fn deployment(
    cluster: &Pop3Cluster,
    dc: &DatacenterSpec,
    config_hash: &str,
    secrets: &SecretFacts,
) -> Result<Deployment> {
    let name = object_name(cluster, &dc.name);
    let (mounts, volumes) = volumes(cluster, &name);
    let pod = PodSpec {
        service_account_name: Some(name.clone()),
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NONROOT_ID),
            run_as_group: Some(NONROOT_ID),
            fs_group: Some(NONROOT_ID),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        containers: vec![container(&cluster.spec, dc, mounts)],
        volumes: Some(volumes),
        node_selector: dc.node_selector.clone(),
        tolerations: dc.tolerations.clone(),
        affinity: dc.affinity.clone(),
        topology_spread_constraints: dc.topology_spread_constraints.clone(),
        priority_class_name: cluster.spec.pod.priority_class_name.clone(),
        image_pull_secrets: Some(cluster.spec.pod.image_pull_secrets.clone()).filter(|s| !s.is_empty()),
        ..Default::default()
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels(cluster, &dc.name)),
            annotations: Some(pod_annotations(&cluster.spec, config_hash, secrets)),
            ..Default::default()
        }),
        spec: Some(pod),
    };
    let mut metadata = meta(cluster, &dc.name)?;
    metadata.annotations = Some([(TEMPLATE_HASH_ANNOTATION.to_owned(), template_hash(cluster, &template)?)].into());
    Ok(Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            // Left out when autoscaled: server-side apply then gives up the field, and whatever
            // the autoscaler writes stays (see `children::hand_over_replicas`).
            replicas: (!dc.autoscaled).then_some(dc.replicas),
            selector: LabelSelector { match_labels: Some(selector_labels(cluster, &dc.name)), ..Default::default() },
            // Surge first: a datacenter with one pod keeps serving while the new one starts.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            progress_deadline_seconds: cluster.spec.rollout_strategy.progress_deadline_seconds,
            template,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The hash `TEMPLATE_HASH_ANNOTATION` carries: the operator's template and the user's overlay.
fn template_hash(cluster: &Pop3Cluster, template: &PodTemplateSpec) -> Result<String> {
    let overlay = serde_json::to_vec(&cluster.spec.pod.template_overlay)?;
    Ok(sha256_hex(&[&serde_json::to_vec(template)?, &overlay]))
}

#[cfg(test)]
#[path = "resources_tests.rs"]
pub(crate) mod tests;
