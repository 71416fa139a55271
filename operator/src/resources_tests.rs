use super::*;

pub fn cluster(extra: serde_json::Value) -> Pop3Cluster {
    let mut base = serde_json::json!({
        "apiVersion": "popfleet.io/v1alpha1", "kind": "Pop3Cluster",
        "metadata": {"name": "mail", "namespace": "ns", "uid": "1234-5678", "generation": 3},
        "spec": {
            "image": "pop3d:1",
            "datacenters": [
                {"name": "dc1", "replicas": 2},
                {"name": "west", "replicas": 1, "cassandraDatacenter": "dc2",
                 "service": {"type": "LoadBalancer", "annotations": {"lb": "nlb"}},
                 "nodeSelector": {"zone": "w"}}
            ],
            "cassandra": {
                "contactPoints": {"dc1": ["127.0.0.1:9042"], "dc2": ["127.0.0.2:9042"]},
                "replication": {"dc1": 1, "dc2": 1},
                "credentialsSecret": {"name": "cass"}
            }
        }
    });
    merge(&mut base["spec"], extra);
    serde_json::from_value(base).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

#[test]
fn names_labels_and_owner() {
    let c = cluster(serde_json::json!({}));
    let ch = build(&c, &c.spec.datacenters[1], None).unwrap();
    let m = &ch.deployment.metadata;
    assert_eq!(m.name.as_deref(), Some("mail-west"));
    assert_eq!(m.namespace.as_deref(), Some("ns"));
    let owner = &m.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Pop3Cluster", "mail", "1234-5678")
    );
    assert_eq!(owner.controller, Some(true));
    let labels = m.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_DATACENTER], "west");
    assert_eq!(labels[LABEL_MANAGED_BY], "popfleet-operator");
    for meta in [
        &ch.config_map.metadata,
        &ch.service.metadata,
        &ch.pdb.metadata,
        &ch.service_account.metadata,
    ] {
        assert_eq!(meta.name.as_deref(), Some("mail-west"));
        assert!(meta.owner_references.is_some());
    }
}

#[test]
fn pod_is_locked_down_and_probed() {
    let c = cluster(serde_json::json!({}));
    let d = build(&c, &c.spec.datacenters[0], None).unwrap().deployment;
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let ctr = &pod.containers[0];
    let sc = ctr.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        ctr.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        ctr.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(ctr.command.as_ref().unwrap(), &command());
    let env: Vec<_> = ctr.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
    assert!(env.contains(&"POP3D_CASSANDRA_PASSWORD"), "{env:?}");
    let mounts: Vec<_> = ctr
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/tmp") && mounts.contains(&CONFIG_DIR), "{mounts:?}");
    assert!(pod.volumes.unwrap().iter().any(|v| v.empty_dir.is_some()));
}

#[test]
fn scheduling_and_service_settings_are_per_datacenter() {
    let c = cluster(serde_json::json!({}));
    let ch = build(&c, &c.spec.datacenters[1], None).unwrap();
    let pod = ch.deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["zone"], "w");
    let svc = ch.service.spec.unwrap();
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(ch.service.metadata.annotations.unwrap()["lb"], "nlb");
    let ports: Vec<_> = svc
        .ports
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port))
        .collect();
    assert_eq!(ports, vec![("pop3".into(), 110), ("lmtp".into(), 24)]);
    let toml = &ch.config_map.data.unwrap()[CONFIG_FILE];
    assert!(toml.contains("local_dc = \"dc2\""), "{toml}");
}

#[test]
fn config_and_tls_changes_roll_the_pods() {
    let c = cluster(serde_json::json!({}));
    let annotations = |c: &Pop3Cluster, tls: Option<&str>| {
        build(c, &c.spec.datacenters[0], tls)
            .unwrap()
            .deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
    };
    let base = annotations(&c, None);
    assert!(!base.contains_key(TLS_HASH_ANNOTATION));
    let changed = cluster(serde_json::json!({"config": {"idle_timeout": "30"}}));
    assert_ne!(
        base[CONFIG_HASH_ANNOTATION],
        annotations(&changed, None)[CONFIG_HASH_ANNOTATION]
    );
    let tls = cluster(serde_json::json!({"pop3": {"tls": {"secretName": "t"}}}));
    assert_ne!(
        annotations(&tls, Some("a"))[TLS_HASH_ANNOTATION],
        annotations(&tls, Some("b"))[TLS_HASH_ANNOTATION]
    );
    let ch = build(&tls, &tls.spec.datacenters[0], Some("a")).unwrap();
    let ports: Vec<_> = ch.service.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, vec![110, 995, 24]);
}

#[test]
fn hashes_are_stable() {
    assert_eq!(sha256_hex(&[b"a", b"bc"]), sha256_hex(&[b"a", b"bc"]));
    assert_ne!(
        sha256_hex(&[b"a", b"bc"]),
        sha256_hex(&[b"ab", b"c"]),
        "length-prefixed: no ambiguity"
    );
}
