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
    let ch = build(&c, &c.spec.datacenters[1], &SecretFacts::default()).unwrap();
    let m = &ch.deployment.metadata;
    assert_eq!(m.name.as_deref(), Some("mail-west"));
    assert_eq!(m.namespace.as_deref(), Some("ns"));
    let owner = &m.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()), ("Pop3Cluster", "mail", "1234-5678"));
    assert_eq!(owner.controller, Some(true));
    let labels = m.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_DATACENTER], "west");
    assert_eq!(labels[LABEL_MANAGED_BY], "popfleet-operator");
    for meta in [
        &ch.config_map.metadata,
        &ch.service.metadata,
        &ch.pdb.as_ref().unwrap().metadata,
        &ch.service_account.metadata,
        &ch.network_policy.as_ref().unwrap().metadata,
    ] {
        assert_eq!(meta.name.as_deref(), Some("mail-west"));
        assert!(meta.owner_references.is_some());
    }
}

#[test]
fn pod_is_locked_down_and_probed() {
    let c = cluster(serde_json::json!({}));
    let d = build(&c, &c.spec.datacenters[0], &SecretFacts::default()).unwrap().deployment;
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
    assert_eq!(ctr.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    assert_eq!(ctr.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/healthz"));
    assert_eq!(ctr.command.as_ref().unwrap(), &command());
    let env: Vec<_> = ctr.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
    assert!(env.contains(&"POP3D_CASSANDRA_PASSWORD"), "{env:?}");
    let mounts: Vec<_> = ctr.volume_mounts.as_ref().unwrap().iter().map(|m| m.mount_path.as_str()).collect();
    assert!(mounts.contains(&"/tmp") && mounts.contains(&CONFIG_DIR), "{mounts:?}");
    assert!(pod.volumes.unwrap().iter().any(|v| v.empty_dir.is_some()));
}

#[test]
fn scheduling_and_service_settings_are_per_datacenter() {
    let c = cluster(serde_json::json!({}));
    let ch = build(&c, &c.spec.datacenters[1], &SecretFacts::default()).unwrap();
    let pod = ch.deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["zone"], "w");
    let svc = ch.service.spec.unwrap();
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(ch.service.metadata.annotations.unwrap()["lb"], "nlb");
    let ports: Vec<_> = svc.ports.unwrap().iter().map(|p| (p.name.clone().unwrap(), p.port)).collect();
    assert_eq!(ports, vec![("pop3".into(), 110), ("lmtp".into(), 24)]);
    let toml = &ch.config_map.data.unwrap()[CONFIG_FILE];
    assert!(toml.contains("local_dc = \"dc2\""), "{toml}");
}

#[test]
fn config_and_tls_changes_roll_the_pods() {
    let c = cluster(serde_json::json!({}));
    let annotations = |c: &Pop3Cluster, tls: Option<&str>| {
        let facts = SecretFacts { pop3_tls_hash: tls.map(str::to_owned), ..Default::default() };
        build(c, &c.spec.datacenters[0], &facts)
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
    assert_ne!(base[CONFIG_HASH_ANNOTATION], annotations(&changed, None)[CONFIG_HASH_ANNOTATION]);
    let tls = cluster(serde_json::json!({"pop3": {"tls": {"secretName": "t"}}}));
    assert_ne!(annotations(&tls, Some("a"))[TLS_HASH_ANNOTATION], annotations(&tls, Some("b"))[TLS_HASH_ANNOTATION]);
    let ch =
        build(&tls, &tls.spec.datacenters[0], &SecretFacts { pop3_tls_hash: Some("a".into()), ..Default::default() })
            .unwrap();
    let ports: Vec<_> = ch.service.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, vec![110, 995, 24]);
}

/// Cassandra TLS: the Secret is mounted, pop3d's config points at its files (the client
/// certificate only when the Secret has one) and at the name to check, and a renewal rolls the pods.
#[test]
fn cassandra_tls_mounts_the_secret_and_configures_pop3d() {
    let c = cluster(serde_json::json!({"cassandra": {
        "contactPoints": {"dc1": ["10.0.0.1:9042"]}, "replication": {"dc1": 3},
        "tls": {"secretName": "cass-tls", "serverName": "cassandra.example.internal"}}}));
    let facts = |hash: &str, client_cert: bool| SecretFacts {
        cassandra_tls_hash: Some(hash.into()),
        cassandra_client_cert: client_cert,
        ..Default::default()
    };
    let ch = build(&c, &c.spec.datacenters[0], &facts("a", true)).unwrap();
    let toml = pop3d_config::parse(&ch.config_map.data.unwrap()[CONFIG_FILE]);
    assert_eq!(toml["cassandra_tls_ca"].as_str(), Some("/etc/pop3d/cassandra-tls/ca.crt"));
    assert_eq!(toml["cassandra_tls_cert"].as_str(), Some("/etc/pop3d/cassandra-tls/tls.crt"));
    assert_eq!(toml["cassandra_tls_key"].as_str(), Some("/etc/pop3d/cassandra-tls/tls.key"));
    assert_eq!(toml["cassandra_tls_server_name"].as_str(), Some("cassandra.example.internal"));
    let template = ch.deployment.spec.unwrap().template;
    let pod = template.spec.unwrap();
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "cassandra-tls").expect("volume");
    assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some("cass-tls"));
    let mount =
        pod.containers[0].volume_mounts.clone().unwrap().into_iter().find(|m| m.name == "cassandra-tls").unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/pop3d/cassandra-tls", Some(true)));
    let rolled = |hash: &str| {
        build(&c, &c.spec.datacenters[0], &facts(hash, true))
            .unwrap()
            .deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CASSANDRA_TLS_HASH_ANNOTATION]
            .clone()
    };
    assert_ne!(rolled("a"), rolled("b"));
    let no_cert = build(&c, &c.spec.datacenters[0], &facts("a", false)).unwrap();
    let toml = pop3d_config::parse(&no_cert.config_map.data.unwrap()[CONFIG_FILE]);
    assert!(toml.contains_key("cassandra_tls_ca") && !toml.contains_key("cassandra_tls_cert"));
}

/// Probes and Prometheus reach the ops listener; the admin port (accounts, repair) is declared
/// but used by nothing in the pod spec.
#[test]
fn probes_use_the_ops_port() {
    let c = cluster(serde_json::json!({}));
    let pod = build(&c, &c.spec.datacenters[0], &SecretFacts::default())
        .unwrap()
        .deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let ctr = &pod.containers[0];
    for probe in [&ctr.startup_probe, &ctr.liveness_probe, &ctr.readiness_probe] {
        let port = &probe.as_ref().unwrap().http_get.as_ref().unwrap().port;
        assert_eq!(port, &IntOrString::String("ops".into()));
    }
    let ports: Vec<_> =
        ctr.ports.as_ref().unwrap().iter().map(|p| (p.name.clone().unwrap(), p.container_port)).collect();
    assert!(ports.contains(&("ops".into(), 9090)) && ports.contains(&("admin".into(), 8080)), "{ports:?}");
}

/// Termination: a pause before SIGTERM while kube-proxy drops the pod, inside the grace period
/// that pop3d's own drain (sessions, then background deletes) also needs.
#[test]
fn pods_pause_before_sigterm_within_the_grace_period() {
    let c = cluster(serde_json::json!({}));
    let pod = build(&c, &c.spec.datacenters[0], &SecretFacts::default())
        .unwrap()
        .deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let pre_stop = pod.containers[0].lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    let pause = pre_stop.sleep.as_ref().unwrap().seconds;
    assert!(pre_stop.exec.is_none(), "the image has no shell");
    assert!(pause > 0 && pause + 20 <= pod.termination_grace_period_seconds.unwrap_or(30), "{pause}");
}

/// The Cassandra credentials hash goes into the pod template (a new password rolls the pods) and
/// only when the spec names a credentials Secret.
#[test]
fn cassandra_credentials_hash_rolls_the_pods() {
    let c = cluster(serde_json::json!({}));
    let annotation = |hash: Option<&str>| {
        let facts = SecretFacts { cassandra_credentials_hash: hash.map(str::to_owned), ..Default::default() };
        let template = build(&c, &c.spec.datacenters[0], &facts).unwrap().deployment.spec.unwrap().template;
        template.metadata.unwrap().annotations.unwrap().get(CASSANDRA_CREDENTIALS_HASH_ANNOTATION).cloned()
    };
    assert_eq!(annotation(Some("a")).as_deref(), Some("a"));
    assert_ne!(annotation(Some("a")), annotation(Some("b")));
    assert_eq!(annotation(None), None);
}

/// The admin token Secret is mounted read-only where the config points, with only its `token`
/// key, and a new token rolls the pods.
#[test]
fn admin_token_is_mounted_and_rolls_the_pods() {
    let c = cluster(serde_json::json!({"admin": {"tokenSecretName": "ops-token"}}));
    let facts = |hash: &str| SecretFacts { admin_token_hash: Some(hash.into()), ..Default::default() };
    let ch = build(&c, &c.spec.datacenters[0], &facts("a")).unwrap();
    let toml = pop3d_config::parse(&ch.config_map.data.unwrap()[CONFIG_FILE]);
    assert_eq!(toml["admin_token_file"].as_str(), Some("/etc/pop3d/admin/token"));
    let template = ch.deployment.spec.unwrap().template;
    let pod = template.spec.unwrap();
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "admin-token").expect("volume");
    let source = volume.secret.unwrap();
    assert_eq!(source.secret_name.as_deref(), Some("ops-token"));
    let items = source.items.unwrap();
    assert_eq!((items.len(), items[0].key.as_str(), items[0].path.as_str()), (1, "token", "token"));
    let mount = pod.containers[0].volume_mounts.clone().unwrap().into_iter().find(|m| m.name == "admin-token").unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/pop3d/admin", Some(true)));
    let hash = |h: &str| {
        build(&c, &c.spec.datacenters[0], &facts(h))
            .unwrap()
            .deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[ADMIN_TOKEN_HASH_ANNOTATION]
            .clone()
    };
    assert_eq!(hash("a"), "a");
    assert_ne!(hash("a"), hash("b"));
    let generated = cluster(serde_json::json!({}));
    let pod = build(&generated, &generated.spec.datacenters[0], &facts("a"))
        .unwrap()
        .deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "admin-token").unwrap();
    assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some("mail-admin-token"));
}

#[test]
fn hashes_are_stable() {
    assert_eq!(sha256_hex(&[b"a", b"bc"]), sha256_hex(&[b"a", b"bc"]));
    assert_ne!(sha256_hex(&[b"a", b"bc"]), sha256_hex(&[b"ab", b"c"]), "length-prefixed: no ambiguity");
}

#[test]
fn pod_knobs_reach_the_template_and_the_operator_keeps_its_own_keys() {
    let c = cluster(serde_json::json!({"pod": {
        "labels": {"team": "mail"},
        "annotations": {"prometheus.io/scrape": "true"},
        "priorityClassName": "mail-critical",
        "imagePullSecrets": [{"name": "registry"}]
    }}));
    let mut c2 = c.clone();
    // The CRD refuses these keys; the operator's values win even if they got through.
    c2.spec.pod.labels.insert(LABEL_DATACENTER.into(), "evil".into());
    c2.spec.pod.annotations.insert(CONFIG_HASH_ANNOTATION.into(), "evil".into());
    for (c, dc) in [(&c, "dc1"), (&c2, "dc1")] {
        let d = build(c, &c.spec.datacenters[0], &SecretFacts::default()).unwrap().deployment;
        let t = d.spec.unwrap().template;
        let (labels, annotations) = {
            let m = t.metadata.unwrap();
            (m.labels.unwrap(), m.annotations.unwrap())
        };
        assert_eq!(labels["team"], "mail");
        assert_eq!(labels[LABEL_DATACENTER], dc);
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_ne!(annotations[CONFIG_HASH_ANNOTATION], "evil");
        let pod = t.spec.unwrap();
        assert_eq!(pod.priority_class_name.as_deref(), Some("mail-critical"));
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
    }
    // Not set: the fields stay out of the apply (nothing to own).
    let plain = cluster(serde_json::json!({}));
    let pod = build(&plain, &plain.spec.datacenters[0], &SecretFacts::default()).unwrap().deployment;
    let pod = pod.spec.unwrap().template.spec.unwrap();
    assert_eq!((pod.priority_class_name, pod.image_pull_secrets), (None, None));
}

#[test]
fn service_traffic_policy_and_source_ranges() {
    let c = cluster(serde_json::json!({"datacenters": [
        {"name": "dc1", "replicas": 1, "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
          "loadBalancerSourceRanges": ["203.0.113.0/24"]}}
    ]}));
    let s = build(&c, &c.spec.datacenters[0], &SecretFacts::default()).unwrap().service.spec.unwrap();
    assert_eq!(s.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(s.load_balancer_source_ranges, Some(vec!["203.0.113.0/24".to_owned()]));
    let plain = cluster(serde_json::json!({}));
    let s = build(&plain, &plain.spec.datacenters[1], &SecretFacts::default()).unwrap().service.spec.unwrap();
    assert_eq!((s.external_traffic_policy, s.load_balancer_source_ranges), (None, None));
}

#[test]
fn pod_disruption_budget_is_configurable_or_off() {
    let pdb = |extra| {
        let c = cluster(extra);
        build(&c, &c.spec.datacenters[0], &SecretFacts::default()).unwrap().pdb.map(|p| p.spec.unwrap())
    };
    let default = pdb(serde_json::json!({})).unwrap();
    assert_eq!((default.max_unavailable, default.min_available), (Some(IntOrString::Int(1)), None));
    let min = pdb(serde_json::json!({"podDisruptionBudget": {"minAvailable": "50%"}})).unwrap();
    assert_eq!((min.max_unavailable, min.min_available), (None, Some(IntOrString::String("50%".into()))));
    let max = pdb(serde_json::json!({"podDisruptionBudget": {"maxUnavailable": 2}})).unwrap();
    assert_eq!((max.max_unavailable, max.min_available), (Some(IntOrString::Int(2)), None));
    assert!(pdb(serde_json::json!({"podDisruptionBudget": {"enabled": false}})).is_none());
}

#[test]
fn autoscaled_datacenter_leaves_replicas_out() {
    let c = cluster(serde_json::json!({"datacenters": [{"name": "dc1", "replicas": 2, "autoscaled": true}]}));
    let d = build(&c, &c.spec.datacenters[0], &SecretFacts::default()).unwrap().deployment;
    assert_eq!(d.spec.as_ref().unwrap().replicas, None);
    // Serialised for server-side apply: the field is absent, not null (null would be an error).
    assert!(serde_json::to_value(&d).unwrap()["spec"].get("replicas").is_none());
}

#[test]
fn template_overlay_is_the_deployments_pod_template() {
    let overlay = serde_json::json!({"spec": {"containers": [{"name": "sidecar", "image": "busybox"}]}});
    let c = cluster(serde_json::json!({"pod": {"templateOverlay": overlay}}));
    let body = crate::overlay::body(&c, &c.spec.datacenters[1]);
    assert_eq!(body["metadata"]["name"], "mail-west");
    assert_eq!(body["metadata"]["namespace"], "ns");
    assert_eq!(body["spec"]["template"], overlay);
    // No overlay: an empty apply, which releases what an earlier overlay set.
    let plain = cluster(serde_json::json!({}));
    assert!(crate::overlay::body(&plain, &plain.spec.datacenters[0]).get("spec").is_none());
}

fn template_hash_of(extra: serde_json::Value) -> String {
    let c = cluster(extra);
    let d = build(&c, &c.spec.datacenters[0], &SecretFacts::default()).unwrap().deployment;
    d.metadata.annotations.unwrap()[TEMPLATE_HASH_ANNOTATION].clone()
}

#[test]
fn template_hash_follows_the_pod_template_and_overlay_only() {
    let base = template_hash_of(serde_json::json!({}));
    assert_eq!(base, template_hash_of(serde_json::json!({})), "stable");
    assert_ne!(base, template_hash_of(serde_json::json!({"image": "pop3d:2"})));
    assert_ne!(
        base,
        template_hash_of(serde_json::json!({"config": {"idle_timeout": "30"}})),
        "config hash is in the template"
    );
    assert_ne!(
        base,
        template_hash_of(serde_json::json!({"pod": {"templateOverlay": {"metadata": {"labels": {"a": "b"}}}}}))
    );
    assert_eq!(
        base,
        template_hash_of(serde_json::json!({"datacenters": [{"name": "dc1", "replicas": 5}]})),
        "scaling is no template change"
    );
    // On the Deployment, never on its pods: adding it must not roll anything.
    let c = cluster(serde_json::json!({}));
    let d = build(&c, &c.spec.datacenters[0], &SecretFacts::default()).unwrap().deployment;
    let pod_annotations = d.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert!(!pod_annotations.contains_key(TEMPLATE_HASH_ANNOTATION));
}

#[test]
fn progress_deadline_is_set_only_when_asked() {
    let deadline = |extra| {
        let c = cluster(extra);
        build(&c, &c.spec.datacenters[0], &SecretFacts::default())
            .unwrap()
            .deployment
            .spec
            .unwrap()
            .progress_deadline_seconds
    };
    assert_eq!(deadline(serde_json::json!({})), None, "Kubernetes' default, and no write on upgrade");
    assert_eq!(deadline(serde_json::json!({"rolloutStrategy": {"progressDeadlineSeconds": 120}})), Some(120));
}
