//! Invalid resources are refused by the API server itself (OpenAPI bounds and CEL rules in the
//! CRD), with a message that says what is wrong, and nothing is created.

use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};

use crate::common::*;
use crate::{apply, cluster};
use crds::Pop3Cluster;

/// Creates `obj` as raw JSON (the typed struct could not even hold some of these values).
async fn refused(api: &Api<DynamicObject>, obj: &Value) -> String {
    let c: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    match api.create(&PostParams::default(), &c).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message.clone()
        }
        other => panic!("accepted: {obj}\n{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn invalid_resources_are_refused_with_a_clear_message() {
    let client = client().await;
    let ns = namespace(&client, "invalid").await;
    let api: Api<Pop3Cluster> = Api::namespaced(client.clone(), &ns);
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<Pop3Cluster>(&()));
    let base = cluster("bad", "popfleet_invalid", &[("dc1", 1)], &[("dc1", 1)]);
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "duplicate datacenter",
            |v| v["spec"]["datacenters"] = json!([{"name": "dc1", "replicas": 1}, {"name": "dc1", "replicas": 2}]),
            "Duplicate value",
        ),
        ("negative replicas", |v| v["spec"]["datacenters"][0]["replicas"] = json!(-1), "greater than or equal to 0"),
        ("too many replicas", |v| v["spec"]["datacenters"][0]["replicas"] = json!(1000), "less than or equal to 100"),
        ("no datacenter", |v| v["spec"]["datacenters"] = json!([]), "should have at least 1 items"),
        (
            "replication factor 0",
            |v| v["spec"]["cassandra"]["replication"]["dc1"] = json!(0),
            "replication factors are 1 to 9",
        ),
        (
            "DC without contact points",
            |v| v["spec"]["datacenters"][0]["cassandraDatacenter"] = json!("dc3"),
            "needs contact points",
        ),
        ("DC without replication", |v| v["spec"]["cassandra"]["contactPoints"]["dc3"] = json!(["10.0.0.3:9042"]), ""),
        (
            "contact point without port",
            |v| v["spec"]["cassandra"]["contactPoints"]["dc1"] = json!(["cassandra"]),
            "contact points are host:port",
        ),
        (
            "unknown rollout strategy",
            |v| v["spec"]["rolloutStrategy"] = json!({"type": "Canary"}),
            "supported values: \"AllAtOnce\", \"OneDatacenterAtATime\"",
        ),
        (
            "progress deadline 0",
            |v| v["spec"]["rolloutStrategy"] = json!({"progressDeadlineSeconds": 0}),
            "greater than or equal to 1",
        ),
        ("operator-managed config key", |v| v["spec"]["config"] = json!({"keyspace": "other"}), "cannot be overridden"),
        (
            "the admin token file in config",
            |v| v["spec"]["config"] = json!({"admin_token_file": "/tmp/mine"}),
            "cannot be overridden",
        ),
        (
            "the Cassandra CA in config",
            |v| v["spec"]["config"] = json!({"cassandra_tls_ca": "/tmp/ca.crt"}),
            "cannot be overridden",
        ),
        (
            "a datacenter's config setting a managed key",
            |v| v["spec"]["datacenters"][0]["config"] = json!({"cassandra_tls_server_name": "cassandra.evil"}),
            "cannot be overridden",
        ),
        (
            "too many admin API sources",
            |v| v["spec"]["networkPolicy"] = json!({"adminFrom": vec![json!({"podSelector": {}}); 33]}),
            "must have at most 32 items",
        ),
        ("config key not snake_case", |v| v["spec"]["config"] = json!({"Idle-Timeout": "1"}), "snake_case"),
        ("bad datacenter name", |v| v["spec"]["datacenters"][0]["name"] = json!("DC_1"), "should match"),
        ("bad keyspace name", |v| v["spec"]["cassandra"]["keyspace"] = json!("pop-fleet"), "should match"),
        ("bad resource name", |v| v["metadata"]["name"] = json!("1-mail"), "metadata.name must be a DNS label"),
        ("unknown consistency", |v| v["spec"]["cassandra"]["readConsistency"] = json!("serial"), "Unsupported value"),
        (
            "unknown service type",
            |v| v["spec"]["datacenters"][0]["service"] = json!({"type": "ExternalName"}),
            "Unsupported value",
        ),
        ("no image", |v| v["spec"]["image"] = json!(""), "at least 1 chars"),
    ];
    for (what, mutate, expected) in cases {
        let mut obj = base.clone();
        mutate(&mut obj);
        if what == "DC without replication" {
            obj["spec"]["datacenters"][0]["cassandraDatacenter"] = json!("dc3");
        }
        let message = refused(&raw, &obj).await;
        let expected = if expected.is_empty() { "must be in spec.cassandra.replication" } else { expected };
        assert!(message.contains(expected), "{what}: {message}");
        println!("refused ({what}): {message}");
    }
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty(), "nothing was created");

    // Updates are validated too: the keyspace is immutable.
    apply(&client, &ns, &base).await;
    let patch = json!({"spec": {"cassandra": {"keyspace": "popfleet_other"}}});
    match api.patch("bad", &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert!(status.message.contains("keyspace is immutable"), "{}", status.message);
            println!("refused (keyspace change): {}", status.message);
        }
        other => panic!("keyspace change accepted: {other:?}"),
    }
    // No operator runs here: remove the resource directly (it never got a finalizer).
    api.delete("bad", &Default::default()).await.unwrap();
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client).delete(&ns, &Default::default()).await;
}
