//! The configuration the operator generates really runs: pop3d is started exactly as the
//! Deployment's container would start it (command line, environment with Secret references
//! resolved, the ConfigMap and the TLS Secret as mounted files) against the real Cassandra, and a
//! mail goes in over LMTP in dc1 and is read and deleted over POP3S (Python's poplib, certificate
//! checked) in dc2. pop3d and the operator reach Cassandra over TLS with a client certificate.
//! The account API answers only with the token from the generated Secret; the ops listener,
//! where the probes go, serves health and metrics but no account route.
//!
//! The one change: the listen addresses. A pod has its own network namespace and binds
//! 0.0.0.0:1110; on the test host the servers get free loopback ports through pop3d's
//! environment variables, which take precedence over the file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use crate::common::*;
use crate::{apply, cluster, teardown, wait_condition};

fn pop3d_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("POP3D_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/pop3d")
}

pub struct Pop3d {
    child: Child,
    pub pop3: u16,
    pub pop3s: u16,
    pub lmtp: u16,
    pub admin: u16,
    pub ops: u16,
    log: PathBuf,
    /// The readiness probe's path (on `ops`).
    ready_path: String,
}

impl Pop3d {
    /// The Deployment's readiness probe, done by hand, until it passes, pop3d exits (its log is
    /// the error) or `timeout` ends.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "pop3d exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            if http_get(self.ops, &self.ready_path).await.is_some_and(|(s, _)| s == 200) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("pop3d not ready ({}) within {timeout:?}", self.ready_path));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Pop3d {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pop3d log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// Starts pop3d from the Deployment and ConfigMap of `name`, with volumes under `root`, and waits
/// until it is ready.
pub async fn start_like_the_pod(client: &Client, ns: &str, name: &str, root: &Path) -> Pop3d {
    let mut server = spawn_like_the_pod(client, ns, name, root).await;
    if let Err(e) = server.wait_ready(Duration::from_secs(60)).await {
        panic!("pop3d from {name}: {e}");
    }
    server
}

/// Starts pop3d from the Deployment and ConfigMap of `name`, with volumes under `root`.
pub async fn spawn_like_the_pod(client: &Client, ns: &str, name: &str, root: &Path) -> Pop3d {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns).get(name).await.unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let volumes = pod.volumes.unwrap_or_default();
    // Materialise the volumes: ConfigMaps and Secrets as files, emptyDirs as empty directories.
    let mut mounts = Vec::new();
    let mut config_files: Vec<PathBuf> = Vec::new();
    for m in container.volume_mounts.as_deref().unwrap_or_default() {
        let host = root.join(m.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&host).unwrap();
        let volume = volumes.iter().find(|v| v.name == m.name).expect("mounted volume exists");
        if let Some(cm) = &volume.config_map {
            let data = Api::<ConfigMap>::namespaced(client.clone(), ns).get(&cm.name).await.unwrap().data.unwrap();
            for (file, text) in data {
                config_files.push(host.join(&file));
                std::fs::write(host.join(file), text).unwrap();
            }
        }
        if let Some(sv) = &volume.secret {
            let name = sv.secret_name.as_deref().unwrap();
            let data = Api::<Secret>::namespaced(client.clone(), ns).get(name).await.unwrap().data.unwrap();
            for (file, bytes) in data {
                std::fs::write(host.join(file), bytes.0).unwrap();
            }
        }
        mounts.push((m.mount_path.clone(), host));
    }
    // What the container runtime's mounts do: a path into a volume, in the config file or on the
    // command line, reaches the volume's files.
    for file in &config_files {
        let mut text = std::fs::read_to_string(file).unwrap();
        for (path, host) in &mounts {
            text = text.replace(&format!("\"{path}/"), &format!("\"{}/", host.display()));
        }
        std::fs::write(file, text).unwrap();
    }
    let in_pod = |arg: &str| -> String {
        mounts
            .iter()
            .find(|(path, _)| arg.starts_with(path.as_str()))
            .map_or_else(|| arg.to_owned(), |(path, host)| format!("{}{}", host.display(), &arg[path.len()..]))
    };
    let argv: Vec<String> =
        container.command.iter().flatten().chain(container.args.iter().flatten()).map(|a| in_pod(a)).collect();
    assert_eq!(argv[0], "pop3d", "the image's binary is on PATH");
    let (pop3, pop3s, lmtp, admin, ops) = (free_port(), free_port(), free_port(), free_port(), free_port());
    let log = root.join("pop3d.log");
    let mut cmd = Command::new(pop3d_binary());
    cmd.args(&argv[1..]).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for e in container.env.as_deref().unwrap_or_default() {
        let value = match (&e.value, e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref())) {
            (Some(v), _) => v.clone(),
            (None, Some(r)) => {
                let s = Api::<Secret>::namespaced(client.clone(), ns).get(&r.name).await.unwrap();
                String::from_utf8(s.data.unwrap()[&r.key].0.clone()).unwrap()
            }
            (None, None) => panic!("env {} has a source this test does not resolve", e.name),
        };
        cmd.env(&e.name, value);
    }
    if container.ports.iter().flatten().any(|p| p.name.as_deref() == Some("pop3s")) {
        cmd.env("POP3D_POP3S", format!("127.0.0.1:{pop3s}"));
    }
    cmd.env("POP3D_POP3", format!("127.0.0.1:{pop3}"))
        .env("POP3D_LMTP", format!("127.0.0.1:{lmtp}"))
        .env("POP3D_ADMIN", format!("127.0.0.1:{admin}"))
        .env("POP3D_OPS", format!("127.0.0.1:{ops}"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("start {}: {e} (build it: cargo build --release -p pop3d)", pop3d_binary().display())
    });
    let probe = container.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(probe.port, IntOrString::String("ops".into()), "probes go to the ops listener");
    Pop3d { child, pop3, pop3s, lmtp, admin, ops, log, ready_path: probe.path.clone().unwrap() }
}

/// The account API wants the token (any case of the scheme); the ops listener has no account
/// route but serves what probes and Prometheus need.
async fn check_admin_access(server: &Pop3d, token: &str) {
    let bearer = format!("Authorization: Bearer {token}");
    let lower = format!("Authorization: bearer {token}");
    let cases: [(u16, &str, Vec<&str>, u16); 8] = [
        (server.admin, "/users", vec![], 401),
        (server.admin, "/users", vec!["Authorization: Bearer not-the-token"], 401),
        (server.admin, "/users", vec![bearer.as_str()], 200),
        (server.admin, "/users", vec![lower.as_str()], 200),
        (server.ops, "/healthz", vec![], 200),
        (server.ops, "/metrics", vec![], 200),
        (server.ops, "/users", vec![], 404),
        (server.ops, "/users", vec![bearer.as_str()], 404),
    ];
    for (port, path, headers, want) in cases {
        let listener = if port == server.ops { "ops" } else { "admin" };
        let (status, body) = http_get_with(port, path, &headers).await.expect("pop3d answers");
        let auth = match headers.first() {
            None => "no token",
            Some(h) if !h.contains(token) => "a wrong token",
            Some(h) if h.contains("bearer") => "the token, lower-case scheme",
            Some(_) => "the token",
        };
        assert_eq!(status, want, "{listener} GET {path} with {auth}: {body}");
        println!("{listener} GET {path} with {auth}: {status}");
    }
}

/// The test CA and certificates `e2e/cassandra up` made for TLS on the native port.
fn cassandra_tls_dir() -> PathBuf {
    std::env::var_os("POPFLEET_CASSANDRA_TLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir().join("cassandra-tls"))
}

const SESSION: &str = r#"
import json, poplib, smtplib, ssl, sys, time, urllib.request
admin, lmtp, pop3_dc1, pop3s_dc2, addr, pw, ca, token = sys.argv[1:]
tls = ssl.create_default_context(cafile=ca)  # verifies the chain and the name "localhost"
req = urllib.request.Request(f"http://127.0.0.1:{admin}/users/{addr}", data=json.dumps({"password": pw}).encode(),
                             method="PUT", headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
urllib.request.urlopen(req, timeout=30)
with smtplib.LMTP("127.0.0.1", int(lmtp), timeout=30) as l:
    l.sendmail("sender@example.org", [addr], b"Subject: operator e2e\r\n\r\nwritten by the operator's config\r\n")
# Read in the other datacenter, over POP3S with the certificate from the TLS Secret: the account
# and the mail reach dc2 by Cassandra's replication.
deadline = time.time() + 60
while True:
    try:
        p = poplib.POP3_SSL("localhost", int(pop3s_dc2), context=tls, timeout=30)
        p.user(addr); p.pass_(pw)
        count, size = p.stat()
        if count == 1:
            break
        p.quit()
    except poplib.error_proto as e:
        if time.time() > deadline: raise
    if time.time() > deadline: raise SystemExit(f"dc2 never saw the message (STAT {count})")
    time.sleep(0.5)
print("dc2 greeting over", p.sock.version(), ":", p.getwelcome().decode())
print("dc2 UIDL:", p.uidl(1).decode())
resp, lines, octets = p.retr(1)
message = b"\r\n".join(lines)
assert b"written by the operator's config" in message, lines
print("Received header:", [l.decode() for l in lines if l.startswith(b"\tby ")][0].strip())
p.dele(1)
p.quit()
p = poplib.POP3("127.0.0.1", int(pop3_dc1), timeout=30)
p.user(addr); p.pass_(pw)
for _ in range(120):
    if p.stat()[0] == 0: break
    p.quit(); time.sleep(0.5)
    p = poplib.POP3("127.0.0.1", int(pop3_dc1), timeout=30); p.user(addr); p.pass_(pw)
assert p.stat()[0] == 0, "deleted in dc2, still listed in dc1"
p.quit()
print("POP3 session complete: delivered in dc1, RETR+DELE over POP3S in dc2, gone in dc1")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube, e2e/cassandra and a release pop3d; run with POPFLEET_KUBE=1"]
async fn generated_config_and_command_line_serve_a_pop3_session() {
    let client = client().await;
    let ns = namespace(&client, "pop3d").await;
    let ks = keyspace("pop3d");
    let mut op = Operator::start(&ns, &[]).await;
    // The e2e Cassandra does not check passwords; the Secret still exercises the secretKeyRef path.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cassandra-login"},
        "stringData": {"username": "cassandra", "password": "cassandra"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();
    // A certificate for the POP3S listener, as cert-manager would leave it in a kubernetes.io/tls Secret.
    let root = tempfile::tempdir().unwrap();
    let (cert, key) = (root.path().join("ca.crt"), root.path().join("tls.key"));
    let openssl = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(openssl.status.success(), "{}", String::from_utf8_lossy(&openssl.stderr));
    let tls: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pop-tls"}, "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": std::fs::read_to_string(&cert).unwrap(), "tls.key": std::fs::read_to_string(&key).unwrap()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &tls).await.unwrap();
    // TLS to Cassandra with the CA and client certificate of the test cluster (e2e/cassandra
    // requires a client certificate of TLS clients), as a cert-manager Secret would hold them.
    let cassandra_tls = cassandra_tls_dir();
    let file = |f: &str| {
        std::fs::read_to_string(cassandra_tls.join(f)).unwrap_or_else(|e| panic!("{f}: {e} (e2e/cassandra up)"))
    };
    let tls_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cassandra-tls"}, "type": "kubernetes.io/tls",
        "stringData": {"ca.crt": file("ca.crt"), "tls.crt": file("client.crt"), "tls.key": file("client.key")}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &tls_secret).await.unwrap();
    let mut obj = cluster("mail", &ks, &[("dc1", 1), ("dc2", 1)], &[("dc1", 1), ("dc2", 1)]);
    obj["spec"]["pop3"]["tls"] = json!({"secretName": "pop-tls"});
    obj["spec"]["cassandra"]["credentialsSecret"] = json!({"name": "cassandra-login"});
    // First a name the nodes' certificates do not carry: the nodes also serve plaintext on the
    // same port, so refusing proves the operator's connection is TLS and checks the certificate.
    obj["spec"]["cassandra"]["tls"] = json!({"secretName": "cassandra-tls", "serverName": "wrong.popfleet.test"});
    obj["spec"]["config"] = json!({"auth_fail_delay_ms": "100", "idle_timeout": "120"});
    obj["spec"]["datacenters"][0]["config"] = json!({"hostname": "pop.dc1.e2e.example"});
    apply(&client, &ns, &obj).await;
    let refused = wait_condition(&client, &ns, "mail", "KeyspaceReady", "False", Duration::from_secs(90)).await;
    let message = refused.status.unwrap().conditions.into_iter().find(|c| c.type_ == "KeyspaceReady").unwrap().message;
    println!("KeyspaceReady with the wrong server name: {message}");
    assert!(message.contains("not valid for name"), "{message}");
    obj["spec"]["cassandra"]["tls"]["serverName"] = json!("cassandra.popfleet.test");
    apply(&client, &ns, &obj).await;
    wait_condition(&client, &ns, "mail", "KeyspaceReady", "True", Duration::from_secs(90)).await;

    let dc1 = start_like_the_pod(&client, &ns, "mail-dc1", &root.path().join("dc1")).await;
    let dc2 = start_like_the_pod(&client, &ns, "mail-dc2", &root.path().join("dc2")).await;
    let token = Api::<Secret>::namespaced(client.clone(), &ns).get("mail-admin-token").await.unwrap().data.unwrap()
        ["token"]
        .0
        .clone();
    let token = String::from_utf8(token).unwrap();
    check_admin_access(&dc1, &token).await;
    let address = format!("op-{}@example.com", &uuid_hex()[..10]);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", SESSION])
            .args([dc1.admin, dc1.lmtp, dc1.pop3, dc2.pop3s].map(|p| p.to_string()))
            .args([address.as_str(), "correct horse"])
            .arg(&cert)
            .arg(&token)
            .output()
            .map(|o| (o, dc1, dc2))
    })
    .await
    .unwrap()
    .expect("python3");
    let (out, dc1, dc2) = out;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success() && text.contains("POP3 session complete"), "the POP3 session failed:\n{text}");
    assert!(
        text.contains("by pop.dc1.e2e.example (popfleet)"),
        "dc1's Received header shows its per-DC hostname override"
    );
    drop((dc1, dc2));
    teardown(&client, &ns, &mut op, &[&ks]).await;
}
