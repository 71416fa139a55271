//! What the operator pulls from the apiserver for Secrets it does not use (issue 18, item 3): with
//! 1,000 unrelated 20 KiB Secrets in the namespace it watches, measured with the apiserver's own
//! metrics (response sizes of LIST/GET/WATCH replies, and watch events sent) at two moments:
//!
//! - start: from before the operator starts until it has reconciled a cluster (its initial LISTs);
//! - churn: 100 writes to unrelated Secrets. kube-controller-manager watches Secrets too (garbage
//!   collector, token controller), so the same churn is first measured with the operator stopped,
//!   and the operator's share is the difference.

use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::apply;
use crate::cluster;
use crate::common::*;
use crate::teardown;

const SECRETS: usize = 1000;
const SECRET_BYTES: usize = 20 * 1024;
const CHURN: usize = 100;

/// (bytes of Secret LIST/GET/WATCH replies and watch events, watch events) served so far.
async fn secret_traffic(client: &Client) -> (f64, f64) {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.expect("apiserver /metrics");
    let sum = |prefix: &str, reads_only: bool| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && l.contains("resource=\"secrets\""))
            // The test's own writes (APPLY/PATCH replies carry the 20 KiB) are not the operator's.
            .filter(|l| !reads_only || ["LIST", "GET", "WATCH"].iter().any(|v| l.contains(&format!("verb=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let bytes = sum("apiserver_response_sizes_sum{", true) + sum("apiserver_watch_events_sizes_sum{", false);
    (bytes, sum("apiserver_watch_events_total{", false))
}

async fn put(secrets: &Api<Secret>, names: impl Iterator<Item = usize>, tag: &str) {
    let filler = "x".repeat(SECRET_BYTES);
    stream::iter(names)
        .for_each_concurrent(16, |i| {
            let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("unrelated-{i}")},
                           "stringData": {"blob": filler, "tag": tag}});
            async move {
                let name = format!("unrelated-{i}");
                secrets.patch(&name, &PatchParams::apply(TEST_MANAGER), &Patch::Apply(&s)).await.unwrap();
            }
        })
        .await;
}

/// The operator's share of the churn's traffic: (bytes, events).
async fn churn(client: &Client, secrets: &Api<Secret>, tag: &str) -> (f64, f64) {
    let before = secret_traffic(client).await;
    put(secrets, 0..CHURN, tag).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = secret_traffic(client).await;
    (after.0 - before.0, after.1 - before.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs e2e/kube and e2e/cassandra; run with POPFLEET_KUBE=1"]
async fn unrelated_secrets_do_not_reach_the_operator() {
    let client = client().await;
    let ns = namespace(&client, "secrets").await;
    let ks = keyspace("secrets");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    put(&secrets, 0..SECRETS, "a").await;
    let without_operator = churn(&client, &secrets, "b").await;

    let before = secret_traffic(&client).await;
    let mut op = Operator::start(&ns, &[]).await;
    apply(&client, &ns, &cluster("mail", &ks, &[("dc1", 1)], &[("dc1", 1)])).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually("the operator reconciled (its Secret watches are running)", Duration::from_secs(60), || async {
        deployments.get_opt("mail-dc1").await.ok()?
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = secret_traffic(&client).await.0 - before.0;
    let with_operator = churn(&client, &secrets, "c").await;
    let (bytes, events) = (with_operator.0 - without_operator.0, with_operator.1 - without_operator.1);
    println!(
        "watch traffic: {SECRETS} unrelated Secrets of {} KiB: operator start {:.0} KiB of Secret reads; \
         {CHURN} writes to them sent the operator {events:.0} watch events, {:.0} KiB \
         (churn total {:.0} events with the operator, {:.0} without)",
        SECRET_BYTES / 1024,
        start / 1024.0,
        bytes / 1024.0,
        with_operator.1,
        without_operator.1,
    );
    // The operator reads its cluster's own Secret (the admin token, ~1 KiB) and nothing else;
    // metadata alone of 1,000 Secrets is several hundred KiB.
    assert!(start < 64.0 * 1024.0, "the operator read unrelated Secrets at start: {start} bytes");
    assert!(events < (CHURN / 10) as f64, "unrelated Secret writes reached the operator: {events} events");
    teardown(&client, &ns, &mut op, &[&ks]).await;
}
