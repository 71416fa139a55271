//! Harness of the operator's end-to-end tests: the real kube-apiserver (and controller-manager)
//! of `e2e/kube`, the real two-DC Cassandra of `e2e/cassandra`, and the real operator binary,
//! one process per test, watching that test's own namespace.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TEST_MANAGER: &str = "e2e-test";
pub const FAKE_NODE: &str = "popfleet-fake-node";

/// These tests fail (not skip) without their environment, like pop3d's Cassandra tests.
pub fn require_env() {
    assert!(
        std::env::var("POPFLEET_KUBE").is_ok_and(|v| v == "1"),
        "run `e2e/kube up --with-controller-manager` and `e2e/cassandra up`, then set POPFLEET_KUBE=1"
    );
}

/// Where e2e/kube and e2e/cassandra keep their state: $POPFLEET_STATE, else ~/.local/state/popfleet.
pub fn state_dir() -> PathBuf {
    std::env::var_os("POPFLEET_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".local/state/popfleet"))
}

pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG").map(PathBuf::from).unwrap_or_else(|| state_dir().join("kube/kubeconfig"))
}

pub async fn client() -> Client {
    require_env();
    schema::tls::install_default_provider();
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig of e2e/kube");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube config");
    let client = Client::try_from(config).expect("kube client");
    install_crd(&client).await;
    client
}

/// Applies `crds/pop3cluster.yaml` (the checked-in file users apply) and waits until served.
async fn install_crd(client: &Client) {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/pop3cluster.yaml")).unwrap();
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(&crd.name_any(), &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&crd))
        .await
        .expect("install the CRD");
    eventually("the CRD is established", Duration::from_secs(30), || async {
        let crd = api.get(&crd.name_any()).await.ok()?;
        crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
    })
    .await;
}

/// A fresh namespace per test, so tests run in parallel without seeing each other.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("t-{prefix}-{}", &uuid_hex()[..8]);
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    name
}

pub fn uuid_hex() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:032x}", t ^ ((std::process::id() as u128) << 64)).chars().rev().collect()
}

/// Polls `f` until it returns Some, or panics after `timeout` saying what did not happen.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET over plain HTTP/1.0 (no client library needed for the operator's and pop3d's endpoints).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, &[]).await
}

/// GET with extra header lines (`Authorization: Bearer ...`).
pub async fn http_get_with(port: u16, path: &str, headers: &[&str]) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{extra}\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// The operator binary, started like a pod would start it.
pub struct Operator {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    namespace: String,
    extra: Vec<String>,
    /// Whose rights it runs with: the test's admin kubeconfig unless `start_as` gave another.
    kubeconfig: PathBuf,
}

impl Operator {
    pub async fn start(namespace: &str, extra: &[&str]) -> Operator {
        Self::start_as(namespace, extra, kubeconfig_path()).await
    }

    /// Started with `kubeconfig` (e.g. a ServiceAccount token and only its RBAC).
    pub async fn start_as(namespace: &str, extra: &[&str], kubeconfig: PathBuf) -> Operator {
        let mut op = Operator {
            kubeconfig,
            child: None,
            port: 0,
            log: std::env::temp_dir().join(format!("popfleet-operator-{namespace}-{}.log", &uuid_hex()[..6])),
            namespace: namespace.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        op.spawn().await;
        op
    }

    async fn spawn(&mut self) {
        self.port = free_port();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_popfleet-operator"))
            .args(["--namespace", &self.namespace, "--http", &format!("127.0.0.1:{}", self.port)])
            .args(&self.extra)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POPFLEET_LOG", "info,operator=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start popfleet-operator");
        self.child = Some(child);
        let port = self.port;
        eventually("the operator answers /healthz", Duration::from_secs(30), || async move {
            http_get(port, "/healthz").await.filter(|(s, _)| *s == 200)
        })
        .await;
    }

    /// SIGTERM and wait, as the kubelet stops a pod.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A hard crash (SIGKILL), as when a node dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub async fn metrics(&self) -> String {
        http_get(self.port, "/metrics").await.map(|(_, b)| b).unwrap_or_default()
    }

    /// Sum of a metric's series whose line contains `filter` (e.g. `action="apply"`).
    pub async fn metric(&self, name: &str, filter: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- operator log ({}):\n{}", self.log.display(), self.log_tail());
        } else {
            // Only worth keeping when the test failed.
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A driver session to the e2e Cassandra (for checking what the operator did there).
pub async fn cassandra() -> Session {
    SessionBuilder::new()
        .known_nodes(["127.0.0.1:9042", "127.0.0.2:9042"])
        .build()
        .await
        .expect("Cassandra of e2e/cassandra")
}

pub async fn replication(session: &Session, ks: &str) -> Option<BTreeMap<String, String>> {
    schema::cassandra::current_replication(session, ks)
        .await
        .expect("read system_schema")
        .map(|r| schema::cassandra::factors(&r))
}

pub fn factors(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A unique keyspace name for a test (dropped again by the test when it is done).
pub fn keyspace(prefix: &str) -> String {
    format!("op_{prefix}_{}", &uuid_hex()[..8])
}

/// Stands in for the kubelet, which this control plane does not run: binds the namespace's
/// pods to a fake Node and marks them Ready, and keeps that Node's heartbeat fresh so the node
/// lifecycle controller leaves them alone. Deployments then report ready replicas for real.
pub fn fake_kubelet(client: Client, namespace: String) -> tokio::task::JoinHandle<()> {
    fake_kubelet_except(client, namespace, None)
}

/// `fake_kubelet`, but pods whose containers run `broken_image` are bound and never made Ready,
/// like pods of an image that does not start.
pub fn fake_kubelet_except(
    client: Client,
    namespace: String,
    broken_image: Option<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = fake_kubelet_round(&client, &namespace, broken_image.as_deref()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

async fn fake_kubelet_round(client: &Client, namespace: &str, broken_image: Option<&str>) -> kube::Result<()> {
    let now = jiff::Timestamp::now();
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(FAKE_NODE).await?.is_none() {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": FAKE_NODE}})).unwrap();
        nodes.create(&PostParams::default(), &node).await?;
    }
    let heartbeat = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "FakeKubelet", "message": "e2e fake kubelet",
        "lastHeartbeatTime": now.to_string(), "lastTransitionTime": now.to_string()
    }]}});
    nodes.patch_status(FAKE_NODE, &PatchParams::default(), &Patch::Merge(&heartbeat)).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for pod in pods.list(&Default::default()).await? {
        if pod.metadata.deletion_timestamp.is_some() {
            // Without a kubelet nothing would ever confirm the termination.
            pods.delete(
                &pod.name_any(),
                &kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
            )
            .await?;
            continue;
        }
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.node_name.as_ref()).is_none() {
            let binding = serde_json::json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": pod.name_any()},
                "target": {"apiVersion": "v1", "kind": "Node", "name": FAKE_NODE}
            });
            let _: serde_json::Value =
                pods.create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding).await?;
        }
        let broken = spec.is_some_and(|s| s.containers.iter().any(|c| c.image.as_deref() == broken_image));
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready && !broken {
            let cond =
                |t: &str| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now.to_string()});
            let status = serde_json::json!({"status": {
                "phase": "Running", "podIP": "10.244.0.1", "startTime": now.to_string(),
                "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")]
            }});
            pods.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
        }
    }
    Ok(())
}

/// Reasons of the Events (events.k8s.io) the operator published about `name` in `namespace`.
pub async fn event_reasons(client: &Client, namespace: &str, name: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reporting_controller.as_deref() == Some("popfleet-operator"))
        .filter_map(|e| e.reason)
        .collect()
}

/// Waits until the operator published an Event with `reason` about `name`.
pub async fn wait_event(client: &Client, namespace: &str, name: &str, reason: &str) {
    eventually(&format!("Event {reason} about {name}"), Duration::from_secs(30), || async {
        event_reasons(client, namespace, name).await.iter().any(|r| r == reason).then_some(())
    })
    .await;
}
