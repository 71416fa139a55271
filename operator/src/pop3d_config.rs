//! The pop3d configuration file a datacenter's ConfigMap carries.
//!
//! The operator fills in pop3d's own file type (`pop3d_config::FileConfig`, which refuses unknown
//! keys) and serialises it, so a key it writes cannot be misspelt; the keys it writes are the
//! contract's `MANAGED_KEYS` (a test holds it to that), and user overrides never replace them.
//! Secrets (the Cassandra password) never go into the ConfigMap; they reach the pod as
//! environment variables from the Secret.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ::pop3d_config::{FileConfig, StoreKind, MANAGED_KEYS};
use crds::{DatacenterSpec, Pop3Cluster};

/// Ports pop3d listens on inside the pod. Unprivileged, so the container runs as non-root
/// without NET_BIND_SERVICE; the Service maps the well-known ports (110, 995, 24) onto them.
pub const POP3_PORT: i32 = 1110;
pub const POP3S_PORT: i32 = 1995;
pub const LMTP_PORT: i32 = 2424;
pub const ADMIN_PORT: i32 = 8080;
/// Health, readiness and metrics only: safe to open to the kubelet and Prometheus, unlike the
/// admin port, which also serves the account and repair API.
pub const OPS_PORT: i32 = 9090;

/// Where the ConfigMap is mounted and the file in it. Not /etc/pop3d itself: the TLS Secret is
/// mounted beside it, and a volume cannot be mounted inside a read-only ConfigMap volume.
pub const CONFIG_DIR: &str = "/etc/pop3d/config";
pub const CONFIG_FILE: &str = "pop3d.toml";
/// Where the TLS Secret is mounted (`tls.crt`, `tls.key`).
pub const TLS_DIR: &str = "/etc/pop3d/tls";
pub const CASSANDRA_TLS_DIR: &str = "/etc/pop3d/cassandra-tls";
/// Where the admin token Secret is mounted; pop3d reads the key `token` from it.
pub const ADMIN_TOKEN_DIR: &str = "/etc/pop3d/admin";
pub const ADMIN_TOKEN_KEY: &str = "token";
/// Writable scratch directory (an emptyDir); the root filesystem is read-only.
pub const DATA_DIR: &str = "/var/lib/pop3d";

/// pop3d's configuration file for one datacenter; `cassandra_client_cert`: the Cassandra TLS
/// Secret holds a client certificate, so pop3d is pointed at it.
pub fn render(cluster: &Pop3Cluster, dc: &DatacenterSpec, cassandra_client_cert: bool) -> String {
    let spec = &cluster.spec;
    let mut table = managed(cluster, dc, cassandra_client_cert).to_table();
    // The CRD refuses managed keys in `config`; skipping them here too keeps the operator's
    // values even for a resource stored before a key became managed.
    for (key, value) in spec.config.iter().chain(dc.config.iter()) {
        if !MANAGED_KEYS.contains(&key.as_str()) {
            table.insert(key.clone(), typed(value));
        }
    }
    let mut out = format!(
        "# pop3d configuration of {}/{} datacenter {}; written by popfleet-operator, edits are overwritten.\n",
        cluster.metadata.namespace.as_deref().unwrap_or_default(),
        cluster.metadata.name.as_deref().unwrap_or_default(),
        dc.name
    );
    out.push_str(&toml::to_string(&table).expect("a flat table of scalars always serialises"));
    out
}

/// A listener on every address of the pod.
fn any(port: i32) -> Option<SocketAddr> {
    Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, u16::try_from(port).expect("a port constant"))))
}

/// The settings the operator owns: what the spec and the pod's layout decide.
fn managed(cluster: &Pop3Cluster, dc: &DatacenterSpec, cassandra_client_cert: bool) -> FileConfig {
    let spec = &cluster.spec;
    let cassandra_dc = dc.cassandra_dc();
    let contact_points = spec.cassandra.contact_points.get(cassandra_dc).map(|v| v.join(","));
    let cassandra_tls = |file: &str| Some(format!("{CASSANDRA_TLS_DIR}/{file}").into());
    let tls = spec.cassandra.tls.as_ref();
    let client_cert = tls.is_some() && cassandra_client_cert;
    let pop3_tls = spec.pop3.tls.is_some();
    FileConfig {
        store: Some(StoreKind::Cassandra),
        data_dir: Some(DATA_DIR.into()),
        pop3: any(POP3_PORT),
        lmtp: any(LMTP_PORT),
        // The admin API is reachable from other pods (an operator's tooling, `pop3d user` in a
        // Job), so it needs the token: pop3d refuses to start with a non-loopback admin bind
        // without one. Probes and Prometheus use the ops listener, which has no account routes.
        admin: any(ADMIN_PORT),
        admin_token_file: Some(format!("{ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_KEY}").into()),
        ops: any(OPS_PORT),
        cassandra: Some(contact_points.unwrap_or_default()),
        local_dc: Some(cassandra_dc.to_owned()),
        keyspace: Some(spec.cassandra.keyspace.clone()),
        read_consistency: spec.cassandra.read_consistency,
        write_consistency: spec.cassandra.write_consistency,
        cassandra_tls_ca: tls.and_then(|_| cassandra_tls("ca.crt")),
        cassandra_tls_cert: client_cert.then(|| cassandra_tls("tls.crt")).flatten(),
        cassandra_tls_key: client_cert.then(|| cassandra_tls("tls.key")).flatten(),
        cassandra_tls_server_name: tls.and_then(|t| t.server_name.clone()),
        allow_insecure_auth: Some(spec.auth.allow_insecure_auth),
        pop3s: if pop3_tls { any(POP3S_PORT) } else { None },
        tls_cert: pop3_tls.then(|| format!("{TLS_DIR}/tls.crt").into()),
        tls_key: pop3_tls.then(|| format!("{TLS_DIR}/tls.key").into()),
        ..FileConfig::default()
    }
}

/// Override values arrive as strings (the CRD keeps them simple); pop3d wants integers and
/// booleans typed, so values that read as such are written as such.
fn typed(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match value {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(value.to_owned()),
    }
}

/// Parses a rendered file back into key → value (tests and the e2e check use it).
pub fn parse(text: &str) -> BTreeMap<String, toml::Value> {
    toml::from_str::<toml::Table>(text).map(|t| t.into_iter().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Pop3Cluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "popfleet.io/v1alpha1", "kind": "Pop3Cluster",
            "metadata": {"name": "mail", "namespace": "ns"},
            "spec": {
                "image": "pop3d:1",
                "datacenters": [{"name": "east", "replicas": 2, "cassandraDatacenter": "dc1", "config": {"idle_timeout": "60"}}],
                "cassandra": {
                    "contactPoints": {"dc1": ["10.0.0.1:9042", "10.0.0.2:9042"], "dc2": ["10.1.0.1:9042"]},
                    "keyspace": "mail", "replication": {"dc1": 3}, "readConsistency": "local_one"
                },
                "config": {"idle_timeout": "300", "hostname": "pop.example.com", "lmtp_starttls": "true"}
            }
        }))
        .unwrap()
    }

    #[test]
    fn renders_the_keys_pop3d_reads() {
        let c = cluster();
        let text = render(&c, &c.spec.datacenters[0], false);
        let kv = parse(&text);
        assert_eq!(kv["store"].as_str(), Some("cassandra"));
        assert_eq!(kv["cassandra"].as_str(), Some("10.0.0.1:9042,10.0.0.2:9042"), "only the local DC's contact points");
        assert_eq!(kv["local_dc"].as_str(), Some("dc1"));
        assert_eq!(kv["keyspace"].as_str(), Some("mail"));
        assert_eq!(kv["read_consistency"].as_str(), Some("local_one"));
        assert!(!kv.contains_key("write_consistency"), "pop3d's default applies");
        assert_eq!(kv["pop3"].as_str(), Some("0.0.0.0:1110"));
        assert_eq!(kv["allow_insecure_auth"].as_bool(), Some(false));
        assert!(!kv.contains_key("tls_cert") && !kv.contains_key("pop3s"));
        assert_eq!(kv["idle_timeout"].as_integer(), Some(60), "the DC override wins and is an integer");
        assert_eq!(kv["hostname"].as_str(), Some("pop.example.com"));
        assert_eq!(kv["lmtp_starttls"].as_bool(), Some(true));
        assert!(text.starts_with("# pop3d configuration of ns/mail datacenter east"));
    }

    #[test]
    fn tls_adds_the_certificate_and_pop3s() {
        let mut c = cluster();
        c.spec.pop3.tls = Some(crds::SecretRef { secret_name: "pop-tls".into() });
        let kv = parse(&render(&c, &c.spec.datacenters[0], false));
        assert_eq!(kv["tls_cert"].as_str(), Some("/etc/pop3d/tls/tls.crt"));
        assert_eq!(kv["pop3s"].as_str(), Some("0.0.0.0:1995"));
    }

    #[test]
    fn the_admin_api_needs_the_token_and_probes_have_their_own_listener() {
        let c = cluster();
        let kv = parse(&render(&c, &c.spec.datacenters[0], false));
        assert_eq!(kv["admin"].as_str(), Some("0.0.0.0:8080"));
        assert_eq!(kv["admin_token_file"].as_str(), Some("/etc/pop3d/admin/token"));
        assert_eq!(kv["ops"].as_str(), Some("0.0.0.0:9090"));
        assert!(!kv.contains_key("admin_token"), "the token itself never goes in the ConfigMap");
    }

    /// Every key the operator writes, with every feature that adds keys turned on, is one the
    /// CRD refuses in `config`: otherwise an override could silently replace it.
    #[test]
    fn every_key_the_operator_writes_is_managed() {
        let mut c = cluster();
        c.spec.config.clear();
        c.spec.datacenters[0].config.clear();
        c.spec.pop3.tls = Some(crds::SecretRef { secret_name: "pop-tls".into() });
        c.spec.auth.allow_insecure_auth = true;
        c.spec.cassandra.write_consistency = Some(crds::ConsistencyLevel::EachQuorum);
        c.spec.cassandra.tls = Some(crds::CassandraTlsSpec {
            secret_name: "cass-tls".into(),
            server_name: Some("cassandra.example".into()),
        });
        let kv = parse(&render(&c, &c.spec.datacenters[0], true));
        for key in ["pop3s", "tls_cert", "cassandra_tls_cert", "cassandra_tls_server_name", "ops", "admin_token_file"] {
            assert!(kv.contains_key(key), "{key} not rendered: the test no longer turns every feature on");
        }
        let unmanaged: Vec<&String> = kv.keys().filter(|k| !MANAGED_KEYS.contains(&k.as_str())).collect();
        assert!(unmanaged.is_empty(), "written by the operator but overridable through spec.config: {unmanaged:?}");
    }

    /// A user override of a managed key that reached the operator (a resource stored before the
    /// key became managed; the CRD refuses it today) never replaces the operator's value.
    #[test]
    fn overrides_never_replace_a_managed_key() {
        let mut c = cluster();
        c.spec.config.insert("keyspace".into(), "other".into());
        c.spec.datacenters[0].config.insert("admin".into(), "0.0.0.0:1".into());
        let kv = parse(&render(&c, &c.spec.datacenters[0], false));
        assert_eq!(kv["keyspace"].as_str(), Some("mail"));
        assert_eq!(kv["admin"].as_str(), Some("0.0.0.0:8080"));
        assert_eq!(kv["hostname"].as_str(), Some("pop.example.com"), "other overrides still apply");
    }

    /// The text is pop3d's file format (it refuses unknown keys and wrong types), and it is the
    /// same, byte for byte, as the operator wrote before it rendered a typed value: the config
    /// hash in the pod template did not move, so an operator upgrade rolls no pod.
    #[test]
    fn the_file_is_one_pop3d_reads_and_unchanged_by_the_typed_rendering() {
        let mut c = cluster();
        c.spec.cassandra.write_consistency = Some(crds::ConsistencyLevel::EachQuorum);
        c.spec.auth.allow_insecure_auth = true;
        let plain = render(&c, &c.spec.datacenters[0], false);
        c.spec.pop3.tls = Some(crds::SecretRef { secret_name: "pop-tls".into() });
        c.spec.cassandra.tls = Some(crds::CassandraTlsSpec {
            secret_name: "cass-tls".into(),
            server_name: Some("cassandra.example".into()),
        });
        let tls = render(&c, &c.spec.datacenters[0], true);
        for text in [&plain, &tls] {
            FileConfig::from_toml(text).unwrap_or_else(|e| panic!("pop3d would refuse it: {e}\n{text}"));
        }
        let header =
            "# pop3d configuration of ns/mail datacenter east; written by popfleet-operator, edits are overwritten.\n";
        let common =
            "admin = \"0.0.0.0:8080\"\nadmin_token_file = \"/etc/pop3d/admin/token\"\nallow_insecure_auth = true\n\
                      cassandra = \"10.0.0.1:9042,10.0.0.2:9042\"\n";
        let middle = "data_dir = \"/var/lib/pop3d\"\nhostname = \"pop.example.com\"\nidle_timeout = 60\nkeyspace = \"mail\"\n\
                      lmtp = \"0.0.0.0:2424\"\nlmtp_starttls = true\nlocal_dc = \"dc1\"\nops = \"0.0.0.0:9090\"\npop3 = \"0.0.0.0:1110\"\n";
        assert_eq!(
            plain,
            format!("{header}{common}{middle}read_consistency = \"local_one\"\nstore = \"cassandra\"\nwrite_consistency = \"each_quorum\"\n")
        );
        let cassandra_tls = "cassandra_tls_ca = \"/etc/pop3d/cassandra-tls/ca.crt\"\ncassandra_tls_cert = \"/etc/pop3d/cassandra-tls/tls.crt\"\n\
                             cassandra_tls_key = \"/etc/pop3d/cassandra-tls/tls.key\"\ncassandra_tls_server_name = \"cassandra.example\"\n";
        let pop3s = "pop3s = \"0.0.0.0:1995\"\nread_consistency = \"local_one\"\nstore = \"cassandra\"\n\
                     tls_cert = \"/etc/pop3d/tls/tls.crt\"\ntls_key = \"/etc/pop3d/tls/tls.key\"\nwrite_consistency = \"each_quorum\"\n";
        assert_eq!(tls, format!("{header}{common}{cassandra_tls}{middle}{pop3s}"));
    }

    #[test]
    fn rendering_is_deterministic() {
        let c = cluster();
        assert_eq!(render(&c, &c.spec.datacenters[0], false), render(&c, &c.spec.datacenters[0], false));
    }
}
