//! Scrapes the text exposition as Prometheus would and checks names, types and labels.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::context::ServerContext;
use crate::store::embedded::EmbeddedStore;
use crate::store::MailStore;

/// One sample line: name, labels, value.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').expect("label=value");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.push((name.to_owned(), labels, value.parse().expect("a number")));
    }
    out
}

/// The value of the one sample named `name` whose labels include `want`.
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = samples(text)
        .into_iter()
        .filter(|(n, labels, _)| n == name && want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .collect();
    assert!(found.len() <= 1, "{name} {want:?} matches {} samples", found.len());
    found.first().copied()
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[test]
fn histograms_are_typed_with_seconds_and_mail_buckets() {
    let m = Metrics::default();
    let mut registry = Registry::default();
    m.register(&mut registry);
    m.lmtp_transaction_duration.observe(0.003);
    m.quit_commit_duration.observe(0.2);
    m.login_duration.get_or_create(&LoginLabels { mechanism: "password", result: "ok" }).observe(0.05);
    // A family shows (with its TYPE line) once it has a series.
    let store = StoreLabels { backend: "cassandra", operation: "link" };
    m.store.duration.get_or_create(&store).observe(0.02);
    m.store.errors.get_or_create(&StoreErrorLabels { backend: "cassandra", operation: "link", kind: "timeout" }).inc();
    let text = encode(&registry);
    for name in [
        "pop3d_lmtp_transaction_duration_seconds",
        "pop3d_pop3_quit_commit_duration_seconds",
        "pop3d_pop3_login_duration_seconds",
        "pop3d_store_operation_duration_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {name} histogram\n")), "{name} missing:\n{text}");
    }
    let lmtp = "pop3d_lmtp_transaction_duration_seconds_bucket";
    assert_eq!(value(&text, lmtp, &[("le", "0.0025")]), Some(0.0));
    assert_eq!(value(&text, lmtp, &[("le", "0.005")]), Some(1.0));
    assert_eq!(value(&text, lmtp, &[("le", "30.0")]), Some(1.0), "the last bucket is 30 s:\n{text}");
    assert_eq!(value(&text, "pop3d_lmtp_transaction_duration_seconds_count", &[]), Some(1.0));
    let login = [("mechanism", "password"), ("result", "ok")];
    assert_eq!(value(&text, "pop3d_pop3_login_duration_seconds_count", &login), Some(1.0));
    // Counters are registered without the suffix and exposed with it, never twice.
    assert!(!text.contains("_total_total"), "{text}");
    assert!(text.contains("# TYPE pop3d_store_errors counter\n"), "{text}");
}

#[test]
fn tls_handshakes_are_counted_by_protocol_and_result() {
    let m = Metrics::default();
    let mut registry = Registry::default();
    m.register(&mut registry);
    m.tls_handshake("pop3s", &Ok(()));
    m.tls_handshake("lmtp", &Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow")));
    m.tls_handshake("pop3", &Err(std::io::Error::other("bad record")));
    let text = encode(&registry);
    let count =
        |protocol, result| value(&text, "pop3d_tls_handshakes_total", &[("protocol", protocol), ("result", result)]);
    assert_eq!(count("pop3s", "ok"), Some(1.0));
    assert_eq!(count("lmtp", "timeout"), Some(1.0));
    assert_eq!(count("pop3", "failed"), Some(1.0));
}

#[tokio::test]
async fn the_servers_store_calls_are_timed_and_their_errors_counted_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn MailStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let args = crate::config::ServeArgs { data_dir: Some(dir.path().into()), ..Default::default() };
    let config = crate::config::Config::load(&args).unwrap();
    let ctx = ServerContext::new(config, store);
    // Through the server's store handle, as every session and the admin API call it.
    assert_eq!(ctx.store.get_account("nobody@example.com").await.unwrap(), None);
    crate::store::deliver(ctx.store.as_ref(), "m@example.com", crate::message_id::MessageId::generate(), b"x\r\n")
        .await
        .unwrap();
    // A real error of the embedded store: a cursor it did not make.
    let e = ctx.store.scan_content(Some("not a cursor".into()), 10).await.unwrap_err();
    assert_eq!(e.kind(), "corrupt");
    let text = encode(&ctx.registry);
    let ops = "pop3d_store_operation_duration_seconds_count";
    for (operation, calls) in [("get_account", 1.0), ("put_chunk", 1.0), ("link", 1.0), ("scan_content", 1.0)] {
        let got = value(&text, ops, &[("backend", "embedded"), ("operation", operation)]);
        assert_eq!(got, Some(calls), "{operation}:\n{text}");
    }
    let errors = [("backend", "embedded"), ("operation", "scan_content"), ("kind", "corrupt")];
    assert_eq!(value(&text, "pop3d_store_errors_total", &errors), Some(1.0), "{text}");
    assert_eq!(value(&text, "pop3d_store_errors_total", &[("operation", "get_account")]), None);
    // The repair gauges are there from the start, so alert expressions always have a series.
    assert_eq!(value(&text, "pop3d_repair_orphan_last_timestamp_seconds", &[]), Some(0.0));
    assert_eq!(value(&text, "pop3d_repair_covered_until_timestamp_seconds", &[]), Some(0.0));
    assert_eq!(value(&text, "pop3d_repair_orphans_left_total", &[]), Some(0.0));
}

#[tokio::test]
async fn the_contract_holds_through_the_timing_decorator() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn MailStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let timed = crate::store::timed::Timed::new(inner, StoreMetrics::default());
    assert_eq!(timed.backend(), "embedded");
    crate::store::contract::run_all(&timed).await;
    // Methods with a default in the trait are the decorator's to forward, or the default wins.
    let full = EmbeddedStore::open(&dir.path().join("full")).unwrap().keeping_free(u64::MAX);
    let timed = crate::store::timed::Timed::new(Arc::new(full), StoreMetrics::default());
    assert!(!timed.room_for_message(1) && !timed.room_for_content(1), "the store's free-space rule is lost");
}
