//! What the operator pulls from the apiserver for Secrets it does not use (issue 18): it watches
//! Secrets only to learn *which* one changed, so it asks for their metadata and never their data.
//! Measured with the apiserver's own response-size metrics around the operator's start, with 4 MB
//! of unrelated Secrets in the namespace it watches.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::apply;
use crate::cluster;
use crate::common::*;
use crate::teardown;

const SECRETS: usize = 200;
const SECRET_BYTES: usize = 20 * 1024;

/// Sum of the apiserver's response sizes for Secrets (LIST replies and WATCH events), in bytes.
async fn secret_bytes_served(client: &Client) -> f64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.expect("apiserver /metrics");
    text.lines()
        .filter(|l| {
            (l.starts_with("apiserver_response_sizes_sum{") || l.starts_with("apiserver_watch_events_sizes_sum{"))
                && l.contains("resource=\"secrets\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn unrelated_secrets_reach_the_operator_as_metadata_only() {
    let client = client().await;
    let ns = namespace(&client, "secrets").await;
    let ks = keyspace("secrets");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let filler = "x".repeat(SECRET_BYTES);
    for i in 0..SECRETS {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("unrelated-{i}")},
                       "stringData": {"blob": filler}});
        secrets.patch(&format!("unrelated-{i}"), &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&s)).await.unwrap();
    }
    let before = secret_bytes_served(&client).await;
    let mut op = Operator::start(&ns, &[]).await;
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)])).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually("the operator reconciled (its Secret watch is running)", Duration::from_secs(60), || async {
        deployments.get_opt("mail-dc1").await.ok()?
    })
    .await;
    // Touch one unrelated Secret: a WATCH event, which must carry no data either.
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated-0"},
                   "stringData": {"blob": format!("{filler}y")}});
    secrets.patch("unrelated-0", &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&s)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = secret_bytes_served(&client).await - before;
    let data = (SECRETS * SECRET_BYTES) as f64;
    println!(
        "secrets: {:.0} KiB served while the operator started, with {:.0} KiB of Secret data in its namespace",
        served / 1024.0,
        data / 1024.0
    );
    // Other tests share the apiserver, so the delta is not only ours; the data would be 4 MB alone.
    assert!(served < data / 4.0, "the operator was sent Secret data: {served} bytes");
    teardown(&client, &ns, &mut op, &[&ks]).await;
}
