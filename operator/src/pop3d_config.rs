//! The pop3d configuration file a datacenter's ConfigMap carries.
//!
//! Keys are pop3d's own (`pop3d/src/config.rs`, `deny_unknown_fields`): a wrong key would make
//! every pod fail at start, so the managed keys are fixed here and user overrides are checked by
//! the CRD schema. Secrets (the Cassandra password) never go into the ConfigMap; they reach the
//! pod as environment variables from the Secret.

use std::collections::BTreeMap;

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
    let mut table = toml::Table::new();
    let mut set = |k: &str, v: toml::Value| {
        table.insert(k.to_owned(), v);
    };
    let s = |v: &str| toml::Value::String(v.to_owned());
    set("store", s("cassandra"));
    set("data_dir", s(DATA_DIR));
    set("pop3", s(&format!("0.0.0.0:{POP3_PORT}")));
    set("lmtp", s(&format!("0.0.0.0:{LMTP_PORT}")));
    // The admin API is reachable from other pods (an operator's tooling, `pop3d user` in a Job),
    // so it needs the token: pop3d refuses to start with a non-loopback admin bind without one.
    // Probes and Prometheus use the ops listener, which has no account routes.
    set("admin", s(&format!("0.0.0.0:{ADMIN_PORT}")));
    set("admin_token_file", s(&format!("{ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_KEY}")));
    set("ops", s(&format!("0.0.0.0:{OPS_PORT}")));
    let cassandra_dc = dc.cassandra_dc();
    let contact_points = spec
        .cassandra
        .contact_points
        .get(cassandra_dc)
        .map(|v| v.join(","))
        .unwrap_or_default();
    set("cassandra", s(&contact_points));
    set("local_dc", s(cassandra_dc));
    set("keyspace", s(&spec.cassandra.keyspace));
    if let Some(c) = spec.cassandra.read_consistency {
        set("read_consistency", s(c.as_str()));
    }
    if let Some(c) = spec.cassandra.write_consistency {
        set("write_consistency", s(c.as_str()));
    }
    if let Some(tls) = &spec.cassandra.tls {
        set("cassandra_tls_ca", s(&format!("{CASSANDRA_TLS_DIR}/ca.crt")));
        if cassandra_client_cert {
            set("cassandra_tls_cert", s(&format!("{CASSANDRA_TLS_DIR}/tls.crt")));
            set("cassandra_tls_key", s(&format!("{CASSANDRA_TLS_DIR}/tls.key")));
        }
        if let Some(name) = &tls.server_name {
            set("cassandra_tls_server_name", s(name));
        }
    }
    set(
        "allow_insecure_auth",
        toml::Value::Boolean(spec.auth.allow_insecure_auth),
    );
    if spec.pop3.tls.is_some() {
        set("pop3s", s(&format!("0.0.0.0:{POP3S_PORT}")));
        set("tls_cert", s(&format!("{TLS_DIR}/tls.crt")));
        set("tls_key", s(&format!("{TLS_DIR}/tls.key")));
    }
    for (key, value) in spec.config.iter().chain(dc.config.iter()) {
        set(key, typed(value));
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
    toml::from_str::<toml::Table>(text)
        .map(|t| t.into_iter().collect())
        .unwrap_or_default()
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
        assert_eq!(
            kv["cassandra"].as_str(),
            Some("10.0.0.1:9042,10.0.0.2:9042"),
            "only the local DC's contact points"
        );
        assert_eq!(kv["local_dc"].as_str(), Some("dc1"));
        assert_eq!(kv["keyspace"].as_str(), Some("mail"));
        assert_eq!(kv["read_consistency"].as_str(), Some("local_one"));
        assert!(!kv.contains_key("write_consistency"), "pop3d's default applies");
        assert_eq!(kv["pop3"].as_str(), Some("0.0.0.0:1110"));
        assert_eq!(kv["allow_insecure_auth"].as_bool(), Some(false));
        assert!(!kv.contains_key("tls_cert") && !kv.contains_key("pop3s"));
        assert_eq!(
            kv["idle_timeout"].as_integer(),
            Some(60),
            "the DC override wins and is an integer"
        );
        assert_eq!(kv["hostname"].as_str(), Some("pop.example.com"));
        assert_eq!(kv["lmtp_starttls"].as_bool(), Some(true));
        assert!(text.starts_with("# pop3d configuration of ns/mail datacenter east"));
    }

    #[test]
    fn tls_adds_the_certificate_and_pop3s() {
        let mut c = cluster();
        c.spec.pop3.tls = Some(crds::SecretRef {
            secret_name: "pop-tls".into(),
        });
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
        c.spec.cassandra.write_consistency = Some(crds::Consistency::EachQuorum);
        c.spec.cassandra.tls = Some(crds::CassandraTlsSpec {
            secret_name: "cass-tls".into(),
            server_name: Some("cassandra.example".into()),
        });
        let kv = parse(&render(&c, &c.spec.datacenters[0], true));
        for key in ["pop3s", "tls_cert", "cassandra_tls_cert", "cassandra_tls_server_name", "ops", "admin_token_file"] {
            assert!(kv.contains_key(key), "{key} not rendered: the test no longer turns every feature on");
        }
        let unmanaged: Vec<&String> = kv.keys().filter(|k| !crds::MANAGED_CONFIG_KEYS.contains(&k.as_str())).collect();
        assert!(unmanaged.is_empty(), "written by the operator but overridable through spec.config: {unmanaged:?}");
    }

    #[test]
    fn rendering_is_deterministic() {
        let c = cluster();
        assert_eq!(render(&c, &c.spec.datacenters[0], false), render(&c, &c.spec.datacenters[0], false));
    }
}
