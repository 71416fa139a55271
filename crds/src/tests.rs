use super::*;

const CHECKED_IN: &str = include_str!("../pop3cluster.yaml");

/// The YAML users apply must be what the types say; regenerate with
/// `cargo run -p crds --bin crdgen -- --write`.
#[test]
fn checked_in_crd_yaml_is_up_to_date() {
    let generated = crd_yaml();
    if generated != CHECKED_IN {
        if std::env::var_os("POPFLEET_UPDATE_CRDS").is_some() {
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/pop3cluster.yaml"), &generated).unwrap();
        }
        panic!("crds/pop3cluster.yaml is out of date: run `cargo run -p crds --bin crdgen -- --write` and commit it");
    }
}

#[test]
fn the_yaml_parses_back_into_the_same_crd() {
    let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_saphyr::from_str(CHECKED_IN).expect("valid YAML");
    assert_eq!(serde_json::to_value(parsed).unwrap(), serde_json::to_value(Pop3Cluster::crd()).unwrap());
}

fn schema() -> serde_json::Value {
    let crd = serde_json::to_value(Pop3Cluster::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn names_scope_and_subresources() {
    let crd = Pop3Cluster::crd();
    assert_eq!(crd.spec.group, "popfleet.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["p3c".to_owned()][..]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> =
        version.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
    assert!(columns.starts_with(&["Ready", "Pods", "Available", "Keyspace"]), "{columns:?}");
}

#[test]
fn validation_rules_are_in_the_schema() {
    let s = schema();
    let text = s.to_string();
    let spec = &s["properties"]["spec"];
    assert_eq!(spec["properties"]["datacenters"]["x-kubernetes-list-type"], "map");
    assert_eq!(spec["properties"]["datacenters"]["maxItems"], 16);
    assert_eq!(spec["properties"]["datacenters"]["items"]["properties"]["replicas"]["maximum"], 100.0);
    assert!(text.contains("self == oldSelf"), "keyspace immutability");
    assert!(text.contains("datacenter names must be unique"));
    assert!(text.contains("self[dc] >= 1"));
    assert!(s["x-kubernetes-validations"].to_string().contains("metadata.name"));
}

#[test]
fn a_minimal_resource_gets_the_defaults() {
    let spec: Pop3ClusterSpec = serde_json::from_value(serde_json::json!({
        "image": "pop3d:1",
        "datacenters": [{"name": "dc1", "replicas": 2}],
        "cassandra": {"contactPoints": {"dc1": ["10.0.0.1:9042"]}, "replication": {"dc1": 3}}
    }))
    .unwrap();
    assert_eq!(spec.cassandra.keyspace, "popfleet");
    assert_eq!(spec.pop3.port, 110);
    assert_eq!(spec.lmtp.port, 24);
    assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
    assert!(!spec.paused && !spec.auth.allow_insecure_auth);
    assert_eq!(spec.datacenters[0].cassandra_dc(), "dc1");
    assert!(spec.network_policy.enabled, "the pods are fenced unless asked otherwise");
    assert!(spec.network_policy.lmtp_from.is_empty() && spec.network_policy.admin_from.is_empty());
    assert_eq!(spec.admin.token_secret_name, None);
}

/// Both override maps (the cluster's and each datacenter's) refuse every key the operator manages.
#[test]
fn settings_that_open_the_admin_api_or_swap_certificates_cannot_be_overridden() {
    let spec = &schema()["properties"]["spec"]["properties"];
    let rules = [
        spec["config"]["x-kubernetes-validations"].to_string(),
        spec["datacenters"]["items"]["properties"]["config"]["x-kubernetes-validations"].to_string(),
    ];
    for rule in rules {
        for key in
            pop3d_config::MANAGED_KEYS.iter().chain(&["admin", "ops", "cassandra_tls_ca", "cassandra_tls_server_name"])
        {
            assert!(rule.contains(&format!("'{key}'")), "{key} missing from the refused keys: {rule}");
        }
        assert!(rule.contains("cannot be overridden"), "{rule}");
    }
}

#[test]
fn network_policy_peers_have_the_kubernetes_schema() {
    let np = &schema()["properties"]["spec"]["properties"]["networkPolicy"];
    assert_eq!(np["properties"]["enabled"]["default"], true);
    let peer = &np["properties"]["lmtpFrom"]["items"]["properties"];
    assert!(
        peer["podSelector"].is_object() && peer["namespaceSelector"].is_object() && peer["ipBlock"].is_object(),
        "{np}"
    );
    assert_eq!(np["properties"]["adminFrom"]["maxItems"], 32);
}

/// kstatus takes a resource without a status for Current: the default status says "generation 0
/// observed", so GitOps health checks wait for the operator (operator/tests/flux_e2e.rs).
#[test]
fn a_new_resource_reads_as_not_yet_observed() {
    let status = &schema()["properties"]["status"];
    assert_eq!(status["default"], serde_json::json!({"observedGeneration": 0}));
    let parsed: Pop3ClusterStatus = serde_json::from_value(status["default"].clone()).unwrap();
    assert_eq!(parsed.observed_generation, Some(0));
}
