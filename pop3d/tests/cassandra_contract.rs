//! The storage contract and the multi-datacenter behaviour, against a real two-DC Cassandra
//! (127.0.0.1 = dc1, 127.0.0.2 = dc2; start it with `e2e/cassandra up`).
//!
//! These tests are `#[ignore]`d in a plain `cargo test` because they need that cluster; the
//! test command runs them with `--ignored` and `POPFLEET_CASSANDRA=1`, and they fail (not skip)
//! when the cluster is missing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use pop3d::message_id::MessageId;
use pop3d::store::cassandra::{connect, migrate, CassandraConfig, CassandraStore};
use pop3d::store::{contract, deliver, expunge, read_message, ListingEntry, MailStore};
use scylla::statement::Consistency;

const KEYSPACE: &str = "popfleet_test";

fn config(dc: &str) -> CassandraConfig {
    let host = if dc == "dc1" { "127.0.0.1:9042" } else { "127.0.0.2:9042" };
    CassandraConfig {
        contact_points: vec![host.to_owned()],
        local_dc: dc.to_owned(),
        keyspace: KEYSPACE.to_owned(),
        read_consistency: Consistency::LocalQuorum,
        write_consistency: Consistency::LocalQuorum,
        request_timeout: Duration::from_secs(10),
        username: None,
        password: None,
        tls: None,
    }
}

/// The tests run in parallel and share KEYSPACE. On a fresh cluster two of them migrating at once
/// raced: one saw `schema_migrations` in system_schema an instant before the node could serve it
/// ("table schema_migrations does not exist", a red CI run). One migration per test process.
static MIGRATED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

async fn store(dc: &str) -> CassandraStore {
    assert!(std::env::var("POPFLEET_CASSANDRA").is_ok(), "run `e2e/cassandra up` and set POPFLEET_CASSANDRA=1");
    MIGRATED
        .get_or_init(|| async {
            let session = connect(&config("dc1")).await.expect("Cassandra reachable");
            let replication: BTreeMap<String, u32> = [("dc1".to_owned(), 1), ("dc2".to_owned(), 1)].into();
            migrate::migrate(&session, KEYSPACE, &replication).await.expect("migrate");
        })
        .await;
    CassandraStore::open(&config(dc)).await.expect("open store")
}

/// Waits until `check` holds: cross-DC replication is asynchronous at LOCAL_QUORUM.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not happen within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the two-DC Cassandra of e2e/cassandra"]
async fn cassandra_store_passes_the_contract() {
    let store = store("dc1").await;
    contract::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the two-DC Cassandra of e2e/cassandra"]
async fn migrate_is_idempotent_and_never_touches_unlisted_dcs() {
    let session = connect(&config("dc1")).await.unwrap();
    let ks = "popfleet_migrate_test";
    let _ = session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ()).await;
    session.await_schema_agreement().await.unwrap();
    let dc1: BTreeMap<String, u32> = [("dc1".to_owned(), 1)].into();
    let first = migrate::migrate(&session, ks, &dc1).await.unwrap();
    assert!(first.keyspace_created);
    assert_eq!(first.applied, schema::MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());
    let again = migrate::migrate(&session, ks, &dc1).await.unwrap();
    assert_eq!(again, migrate::MigrationReport::default(), "a second run changes nothing");
    // Naming only dc2 adds dc2 and leaves dc1 as it was.
    let dc2: BTreeMap<String, u32> = [("dc2".to_owned(), 1)].into();
    let changed = migrate::migrate(&session, ks, &dc2).await.unwrap();
    let (before, after) = changed.replication_changed.expect("replication changed");
    assert_eq!(before.get("dc2"), None);
    assert_eq!(after.get("dc1").map(String::as_str), Some("1"), "dc1 untouched");
    assert_eq!(after.get("dc2").map(String::as_str), Some("1"));
    // schema_migrations is read at ONE on purpose (it must work while a new DC has no nodes yet,
    // see schema::cassandra), and dc2's fresh replica holds nothing until a repair, so this run
    // may replay migrations; they are idempotent DDL. What must hold: it succeeds, replays only
    // known versions, and the tables are all there (checked by the next run finding no error).
    let known: Vec<u32> = schema::MIGRATIONS.iter().map(|m| m.version).collect();
    assert!(changed.applied.iter().all(|v| known.contains(v)), "{:?}", changed.applied);
    migrate::migrate(&session, ks, &dc2).await.expect("a run after a replay still succeeds");
    let _ = session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the two-DC Cassandra of e2e/cassandra"]
async fn missing_keyspace_is_a_clear_error() {
    let mut cfg = config("dc1");
    cfg.keyspace = "popfleet_does_not_exist".into();
    let err = CassandraStore::open(&cfg).await.err().expect("must fail").to_string();
    assert!(err.contains("does not exist") && err.contains("pop3d migrate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the two-DC Cassandra of e2e/cassandra"]
async fn mail_delivered_in_dc1_is_read_and_deleted_from_dc2() {
    let (dc1, dc2) = (store("dc1").await, store("dc2").await);
    let mailbox = format!("xdc-{}@example.com", MessageId::generate().uuid().simple());
    let body: Vec<u8> = b"Subject: across\r\n\r\n".iter().copied().chain(std::iter::repeat_n(b'z', 200_000)).collect();
    let entry = deliver(&dc1, &mailbox, MessageId::generate(), &body).await.unwrap();
    eventually("dc2 sees the listing row", || async { dc2.listing(&mailbox).await.unwrap() == vec![entry] }).await;
    eventually("dc2 has the content", || async {
        read_message(&dc2, &entry).await.unwrap().as_deref() == Some(&body[..])
    })
    .await;
    expunge(&dc2, &mailbox, &[entry.id]).await.unwrap();
    eventually("dc1 sees the deletion", || async { dc1.listing(&mailbox).await.unwrap().is_empty() }).await;
    eventually("dc1 sees the content gone", || async { dc1.get_chunk(entry.id, 0).await.unwrap().is_none() }).await;
}

/// Links `count` new listing rows of `size` octets into `mailbox`, 500 at a time; their ids, oldest first.
async fn link_new_rows(store: &CassandraStore, mailbox: &str, count: usize, size: u64) -> Vec<MessageId> {
    let ids: Vec<MessageId> = (0..count).map(|_| MessageId::generate()).collect();
    for slice in ids.chunks(500) {
        futures::future::try_join_all(slice.iter().map(|id| store.link(mailbox, ListingEntry { id: *id, size })))
            .await
            .unwrap();
    }
    ids
}

/// Download-and-delete leaves tombstones in the listing partition. The read watermark lets the
/// listing slice start after them. Prints the figures; asserts only behaviour, not timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the two-DC Cassandra of e2e/cassandra"]
async fn stat_after_many_deletions_reads_past_the_tombstones() {
    let store = std::sync::Arc::new(store("dc1").await);
    let count: usize = std::env::var("POPFLEET_TOMBSTONE_COUNT").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let mailbox = format!("tomb-{}@example.com", MessageId::generate().uuid().simple());
    let ids = link_new_rows(store.as_ref(), &mailbox, count, 100).await;
    let time_stat = |label: &'static str| {
        let store = store.clone();
        let mailbox = mailbox.clone();
        async move {
            let mut samples = Vec::new();
            let mut n = 0;
            for _ in 0..5 {
                let start = Instant::now();
                n = store.listing(&mailbox).await.unwrap().len();
                samples.push(start.elapsed());
            }
            samples.sort();
            println!("TOMBSTONES {label}: {n} live rows, STAT median {:?}", samples[2]);
            n
        }
    };
    assert_eq!(time_stat("before deletion").await, count);
    // Delete all but the newest 10, as a QUIT would, then raise the watermark as the server does.
    let (gone, kept) = ids.split_at(count - 10);
    for slice in gone.chunks(500) {
        expunge(store.as_ref(), &mailbox, slice).await.unwrap();
    }
    assert_eq!(time_stat("after deleting, no watermark").await, 10);
    store.set_low_watermark(&mailbox, MessageId::floor_at_ticks(kept[0].ticks() - 1)).await.unwrap();
    assert_eq!(time_stat("after deleting, watermark").await, 10);
    assert_eq!(store.listing(&mailbox).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), kept);
    assert_eq!(store.live_row_below_watermark(&mailbox).await.unwrap(), None);
    // A late row below the watermark (a long partition) is found by repair's check.
    let late = ids[0];
    store.link(&mailbox, ListingEntry { id: late, size: 1 }).await.unwrap();
    assert_eq!(store.live_row_below_watermark(&mailbox).await.unwrap(), Some(late));
    expunge(store.as_ref(), &mailbox, &ids).await.unwrap();
    let _ = Bytes::new();
}

/// More deletions within the watermark margin than Cassandra scans in one read
/// (`tombstone_failure_threshold`, 100,000): the listing is read in slices rather than failing
/// every login of that mailbox until the margin has passed (found by the 100k-message benchmark),
/// and repair's full-table scans walk past that partition and past as many deleted content
/// partitions instead of failing on every run for gc_grace_seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the two-DC Cassandra of e2e/cassandra"]
async fn reads_and_scans_get_past_more_tombstones_than_one_read_may_scan() {
    // A keyspace of its own, dropped at the end: 100,000 tombstones would stay in the shared one
    // for gc_grace_seconds.
    let ks = "popfleet_flood_test";
    let session = connect(&config("dc1")).await.expect("Cassandra reachable");
    let _ = session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ()).await;
    let replication: BTreeMap<String, u32> = [("dc1".to_owned(), 1), ("dc2".to_owned(), 1)].into();
    migrate::migrate(&session, ks, &replication).await.expect("migrate");
    let store = std::sync::Arc::new(
        CassandraStore::open(&CassandraConfig { keyspace: ks.to_owned(), ..config("dc1") }).await.expect("open store"),
    );
    let count = 100_500;
    let mailbox = format!("flood-{}@example.com", MessageId::generate().uuid().simple());
    // Mail is only delivered to accounts; the scan names a mailbox it cannot read from there.
    store
        .put_account(&pop3d::store::Account {
            address: mailbox.clone(),
            password_hash: "x".into(),
            scram_sha256: None,
            quota: None,
        })
        .await
        .unwrap();
    let ids = link_new_rows(store.as_ref(), &mailbox, count, 1).await;
    let (gone, kept) = ids.split_at(count - 10);
    // The deleted messages had content too: as many content partition tombstones.
    for slice in gone.chunks(500) {
        futures::future::try_join_all(
            slice.iter().map(|id| store.put_chunk(&mailbox, *id, 0, Bytes::from_static(b"x"))),
        )
        .await
        .unwrap();
    }
    for slice in gone.chunks(500) {
        expunge(store.as_ref(), &mailbox, slice).await.unwrap();
    }
    let listed = |store: std::sync::Arc<CassandraStore>, mailbox: String| async move {
        let start = Instant::now();
        let ids: Vec<MessageId> =
            store.listing(&mailbox).await.expect("listing past 100,490 tombstones").iter().map(|e| e.id).collect();
        println!("TOMBSTONES listing past {} tombstones: {:?}", count - 10, start.elapsed());
        ids
    };
    assert_eq!(listed(store.clone(), mailbox.clone()).await, kept, "no watermark");
    // A watermark from an old session (below all of them) changes nothing.
    store.set_low_watermark(&mailbox, MessageId::floor_at_ticks(ids[0].ticks() - 1)).await.unwrap();
    assert_eq!(listed(store.clone(), mailbox.clone()).await, kept, "watermark below the tombstones");

    // Other mailboxes around the ring (no accounts: the scan must read them from the listing),
    // each with one live message.
    let others: Vec<String> = (0..40).map(|i| format!("neighbour-{i}@example.com")).collect();
    let mut live = Vec::new();
    for other in &others {
        live.push(deliver(store.as_ref(), other, MessageId::generate(), b"hi\r\n").await.unwrap().id);
    }
    let old_scan = session.query_iter(format!("SELECT DISTINCT mailbox FROM {ks}.listing"), ()).await;
    let old_scan = match old_scan {
        Ok(pager) => pager
            .rows_stream::<(String,)>()
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    println!("TOMBSTONES one driver-paged DISTINCT scan of the listing: {old_scan:?}");

    let start = Instant::now();
    let (mut found, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let (page, next) = store.scan_mailboxes(cursor, 200).await.expect("listing scan past the flooded mailbox");
        found.extend(page);
        pages += 1;
        cursor = next;
        if cursor.is_none() {
            break;
        }
    }
    println!("TOMBSTONES listing scan: {} mailboxes in {pages} pages, {:?}", found.len(), start.elapsed());
    for m in others.iter().chain([&mailbox]) {
        assert!(found.contains(m), "listing scan missed {m}");
    }
    assert_eq!(found.len(), others.len() + 1, "each mailbox once: {found:?}");

    let start = Instant::now();
    let (mut content, mut cursor) = (Vec::new(), None);
    loop {
        let (page, next) = store.scan_content(cursor, 200).await.expect("content scan past 100,490 deleted partitions");
        content.extend(page.into_iter().map(|c| c.id));
        cursor = next;
        if cursor.is_none() {
            break;
        }
    }
    println!("TOMBSTONES content scan past {} deleted partitions: {:?}", count - 10, start.elapsed());
    content.sort_by_key(|id| id.sort_key());
    live.sort_by_key(|id| id.sort_key());
    assert_eq!(content, live, "the content scan finds exactly the live content");
    let _ = session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ()).await;
}

/// The test CA and certificates `e2e/cassandra up` made for TLS on the native port.
fn tls_dir() -> std::path::PathBuf {
    std::env::var_os("POPFLEET_CASSANDRA_TLS_DIR").map(Into::into).unwrap_or_else(|| {
        // $POPFLEET_STATE/cassandra-tls, where e2e/cassandra writes them.
        std::env::var_os("POPFLEET_STATE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".local/state/popfleet")
            })
            .join("cassandra-tls")
    })
}

fn tls(ca: &str, client_cert: bool, server_name: Option<&str>) -> schema::tls::TlsMaterial {
    let read = |f: &str| std::fs::read(tls_dir().join(f)).unwrap_or_else(|e| panic!("{f}: {e} (run e2e/cassandra up)"));
    schema::tls::TlsMaterial {
        ca_pem: read(ca),
        identity: client_cert.then(|| (read("client.crt"), read("client.key"))),
        server_name: server_name.map(str::to_owned),
    }
}

/// TLS to the cluster: the chain is checked against the configured CA only, each node's
/// certificate against its address (or one configured name), and a client certificate is sent;
/// each way of getting it wrong is refused, and the connection really is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the two-DC Cassandra of e2e/cassandra"]
async fn tls_connections_check_the_cluster_and_show_a_client_certificate() {
    let _ = store("dc1").await; // keyspace in place
    let with = |dc: &str, tls: schema::tls::TlsMaterial| CassandraConfig { tls: Some(tls), ..config(dc) };
    for (dc, name) in [("dc1", None), ("dc2", None), ("dc1", Some("cassandra.popfleet.test"))] {
        let cfg = with(dc, tls("ca.crt", true, name));
        let store = CassandraStore::open(&cfg).await.unwrap_or_else(|e| panic!("TLS to {dc} (name {name:?}): {e}"));
        let mailbox = format!("tls-{}@example.com", MessageId::generate().uuid().simple());
        let entry = deliver(&store, &mailbox, MessageId::generate(), b"over TLS\r\n").await.unwrap();
        assert_eq!(store.listing(&mailbox).await.unwrap(), vec![entry]);
        expunge(&store, &mailbox, &[entry.id]).await.unwrap();
        // The node says this client's connections are TLS (the other tests' sessions are plaintext).
        let session = connect(&cfg).await.unwrap();
        let rows = session
            .query_unpaged("SELECT ssl_enabled, ssl_protocol FROM system_views.clients", ())
            .await
            .unwrap()
            .into_rows_result()
            .unwrap();
        let tls_rows: Vec<(Option<bool>, Option<String>)> = rows
            .rows::<(Option<bool>, Option<String>)>()
            .unwrap()
            .map(Result::unwrap)
            .filter(|(on, _)| *on == Some(true))
            .collect();
        assert!(!tls_rows.is_empty(), "no TLS client connection on the {dc} node");
        assert!(tls_rows.iter().all(|(_, p)| p.as_deref().is_some_and(|p| p.starts_with("TLSv1."))), "{tls_rows:?}");
    }
    for (what, material) in [
        ("a CA that did not sign the nodes", tls("other-ca.crt", true, None)),
        ("a name the certificates do not carry", tls("ca.crt", true, Some("other.popfleet.test"))),
        ("no client certificate", tls("ca.crt", false, None)),
    ] {
        let err = match CassandraStore::open(&with("dc1", material)).await {
            Ok(_) => panic!("connected with {what}"),
            Err(e) => e.to_string(),
        };
        println!("TLS refused with {what}: {err}");
        assert!(err.contains("cannot connect to Cassandra"), "{what}: {err}");
    }
}
