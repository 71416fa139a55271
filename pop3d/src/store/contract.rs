//! The storage contract suite. Both backends run it: the embedded one in unit tests, the
//! Cassandra one against a real two-datacenter cluster (`pop3d/tests/cassandra_contract.rs`).
//! Each check uses fresh mailbox names, so it can run against a shared keyspace.

use bytes::Bytes;

use super::{delete_account_and_mail, deliver, expunge, read_message, Account, ListingEntry, MailStore, CHUNK_SIZE};
use crate::message_id::MessageId;

fn fresh_mailbox(tag: &str) -> String {
    format!("{tag}-{}@contract.test", MessageId::generate().uuid().simple())
}

/// Runs every check; panics with a message naming the broken rule.
pub async fn run_all(store: &dyn MailStore) {
    store.ping().await.expect("ping");
    accounts_are_upserts(store).await;
    delivery_is_visible_in_order_with_sizes(store).await;
    content_without_listing_row_is_invisible(store).await;
    expunge_removes_row_then_content_and_is_idempotent(store).await;
    large_message_round_trips_in_chunks(store).await;
    mailboxes_are_isolated(store).await;
    account_deletion_removes_mail(store).await;
    many_messages_list_completely(store, 2_500).await;
    repair_scans_find_content_and_mailboxes(store).await;
    server_secrets_are_made_once_and_kept(store).await;
    deliveries_are_remembered_per_mailbox_until_their_window_ends(store).await;
}

pub async fn deliveries_are_remembered_per_mailbox_until_their_window_ends(store: &dyn MailStore) {
    use crate::dedup::DeliveryKey;
    use std::time::Duration;
    let (mailbox, other) = (fresh_mailbox("dedup"), fresh_mailbox("dedup-other"));
    let key = DeliveryKey(rand::random());
    assert_eq!(store.recent_delivery(&mailbox, &key).await.unwrap(), None, "nothing remembered yet");
    let first = ListingEntry { id: MessageId::generate(), size: 3 };
    store.put_chunk(&mailbox, first.id, 0, Bytes::from_static(b"abc")).await.unwrap();
    store.link_remembered(&mailbox, first, &key, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(store.listing(&mailbox).await.unwrap(), vec![first], "link_remembered links the message");
    assert_eq!(store.recent_delivery(&mailbox, &key).await.unwrap(), Some(first.id));
    assert_eq!(store.recent_delivery(&other, &key).await.unwrap(), None, "records are per mailbox");
    assert_eq!(store.recent_delivery(&mailbox, &DeliveryKey(rand::random())).await.unwrap(), None);
    expunge(store, &mailbox, &[first.id]).await.unwrap();
    assert_eq!(
        store.recent_delivery(&mailbox, &key).await.unwrap(),
        Some(first.id),
        "a delivery read and deleted is still remembered: its retry must not bring it back"
    );

    let short = DeliveryKey(rand::random());
    let entry = ListingEntry { id: MessageId::generate(), size: 3 };
    store.put_chunk(&other, entry.id, 0, Bytes::from_static(b"xyz")).await.unwrap();
    store.link_remembered(&other, entry, &short, Duration::from_secs(1)).await.unwrap();
    assert_eq!(store.recent_delivery(&other, &short).await.unwrap(), Some(entry.id));
    // Whole seconds on both backends (Cassandra's TTL unit): past the next second boundary + 1.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.recent_delivery(&other, &short).await.unwrap(), None, "a record ends with its window");
    assert_eq!(store.listing(&other).await.unwrap(), vec![entry], "the message outlives its record");
}

pub async fn server_secrets_are_made_once_and_kept(store: &dyn MailStore) {
    let name = fresh_mailbox("secret");
    let first = store.server_secret(&name).await.unwrap();
    assert_ne!(first, [0u8; 32]);
    assert_eq!(store.server_secret(&name).await.unwrap(), first, "a secret, once made, is kept");
    assert_ne!(store.server_secret(&fresh_mailbox("other")).await.unwrap(), first, "each name has its own secret");
}

pub async fn accounts_are_upserts(store: &dyn MailStore) {
    let address = fresh_mailbox("acct");
    assert_eq!(store.get_account(&address).await.unwrap(), None, "unknown account must be None");
    let first = Account { address: address.clone(), password_hash: "hash-1".into(), scram_sha256: None, quota: None };
    store.put_account(&first).await.unwrap();
    assert_eq!(store.get_account(&address).await.unwrap(), Some(first.clone()));
    let second = Account {
        address: address.clone(),
        password_hash: "hash-2".into(),
        scram_sha256: Some("SCRAM-SHA-256$4096:c2FsdA==$a:b".into()),
        quota: Some(5 << 20),
    };
    store.put_account(&second).await.unwrap();
    store.put_account(&second).await.unwrap();
    assert_eq!(store.get_account(&address).await.unwrap(), Some(second), "a second put must replace the first");
    assert!(store.list_accounts().await.unwrap().contains(&address), "list_accounts must include the account");
    store.delete_account(&address).await.unwrap();
    store.delete_account(&address).await.unwrap();
    assert_eq!(store.get_account(&address).await.unwrap(), None, "deleted account must be gone");
    assert!(!store.list_accounts().await.unwrap().contains(&address));
}

pub async fn delivery_is_visible_in_order_with_sizes(store: &dyn MailStore) {
    let mailbox = fresh_mailbox("order");
    assert!(store.listing(&mailbox).await.unwrap().is_empty(), "new mailbox must be empty");
    let mut expected = Vec::new();
    for n in 0..20 {
        let body = format!("Subject: {n}\r\n\r\n{}\r\n", "x".repeat(n * 7));
        expected.push((deliver(store, &mailbox, MessageId::generate(), body.as_bytes()).await.unwrap(), body));
    }
    let listing = store.listing(&mailbox).await.unwrap();
    assert_eq!(listing, expected.iter().map(|(e, _)| *e).collect::<Vec<_>>(), "listing must be oldest first");
    for (entry, body) in &expected {
        assert_eq!(entry.size, body.len() as u64);
        let content = read_message(store, entry).await.unwrap().expect("content present");
        assert_eq!(content, body.as_bytes());
    }
}

pub async fn content_without_listing_row_is_invisible(store: &dyn MailStore) {
    let mailbox = fresh_mailbox("orphan");
    let id = MessageId::generate();
    store.put_chunk(&mailbox, id, 0, Bytes::from_static(b"Subject: x\r\n\r\nhi\r\n")).await.unwrap();
    assert!(store.listing(&mailbox).await.unwrap().is_empty(), "content alone must not be listed");
    assert!(!store.has_listing(&mailbox, id).await.unwrap());
    assert!(store.get_chunk(id, 0).await.unwrap().is_some());
    assert!(store.get_chunk(id, 1).await.unwrap().is_none(), "a missing chunk must be None");
    store.delete_content(&[id]).await.unwrap();
    assert!(store.get_chunk(id, 0).await.unwrap().is_none());
}

pub async fn expunge_removes_row_then_content_and_is_idempotent(store: &dyn MailStore) {
    let mailbox = fresh_mailbox("expunge");
    let a = deliver(store, &mailbox, MessageId::generate(), b"A\r\n").await.unwrap();
    let b = deliver(store, &mailbox, MessageId::generate(), b"B\r\n").await.unwrap();
    expunge(store, &mailbox, &[a.id]).await.unwrap();
    expunge(store, &mailbox, &[a.id]).await.unwrap();
    assert_eq!(store.listing(&mailbox).await.unwrap(), vec![b], "only the expunged row may go");
    assert!(store.get_chunk(a.id, 0).await.unwrap().is_none(), "expunged content must go");
    assert!(store.get_chunk(b.id, 0).await.unwrap().is_some(), "other content must stay");
    store.unlink(&mailbox, &[MessageId::generate()]).await.unwrap();
    store.delete_content(&[MessageId::generate()]).await.unwrap();
}

pub async fn large_message_round_trips_in_chunks(store: &dyn MailStore) {
    let mailbox = fresh_mailbox("large");
    let body: Vec<u8> = (0..(3 * CHUNK_SIZE + 123)).map(|i| b"abcdefghij\r\n"[i % 12]).collect();
    let entry = deliver(store, &mailbox, MessageId::generate(), &body).await.unwrap();
    for index in 0..4 {
        let chunk = store.get_chunk(entry.id, index).await.unwrap().expect("chunk present");
        assert!(chunk.len() <= CHUNK_SIZE, "chunks must stay small");
    }
    assert_eq!(read_message(store, &entry).await.unwrap().unwrap(), body);
}

pub async fn mailboxes_are_isolated(store: &dyn MailStore) {
    let (one, two) = (fresh_mailbox("iso1"), fresh_mailbox("iso2"));
    let a = deliver(store, &one, MessageId::generate(), b"1\r\n").await.unwrap();
    let b = deliver(store, &two, MessageId::generate(), b"2\r\n").await.unwrap();
    assert_eq!(store.listing(&one).await.unwrap(), vec![a]);
    assert_eq!(store.listing(&two).await.unwrap(), vec![b]);
    store.unlink(&one, &[b.id]).await.unwrap();
    assert_eq!(store.listing(&two).await.unwrap(), vec![b], "unlink in one mailbox must not touch another");
}

pub async fn account_deletion_removes_mail(store: &dyn MailStore) {
    let address = fresh_mailbox("delacct");
    store
        .put_account(&Account { address: address.clone(), password_hash: "h".into(), scram_sha256: None, quota: None })
        .await
        .unwrap();
    let entry = deliver(store, &address, MessageId::generate(), b"bye\r\n").await.unwrap();
    delete_account_and_mail(store, &address).await.unwrap();
    assert_eq!(store.get_account(&address).await.unwrap(), None);
    assert!(store.listing(&address).await.unwrap().is_empty());
    assert!(store.get_chunk(entry.id, 0).await.unwrap().is_none());
}

pub async fn many_messages_list_completely(store: &dyn MailStore, count: usize) {
    let mailbox = fresh_mailbox("many");
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = MessageId::generate();
        store.link(&mailbox, ListingEntry { id, size: 10 }).await.unwrap();
        ids.push(id);
    }
    let listing = store.listing(&mailbox).await.unwrap();
    assert_eq!(listing.len(), count, "a big mailbox must list completely (paging)");
    assert_eq!(listing.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    store.unlink(&mailbox, &ids).await.unwrap();
    assert!(store.listing(&mailbox).await.unwrap().is_empty());
}

pub async fn repair_scans_find_content_and_mailboxes(store: &dyn MailStore) {
    let mailbox = fresh_mailbox("scan");
    let entry = deliver(store, &mailbox, MessageId::generate(), b"scan me\r\n").await.unwrap();
    let mut found_content = false;
    let mut cursor = None;
    loop {
        let (page, next) = store.scan_content(cursor, 50).await.unwrap();
        found_content |= page.iter().any(|c| c.id == entry.id && c.mailbox == mailbox);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(found_content, "scan_content must return every content partition with its mailbox");
    assert!(store.has_listing(&mailbox, entry.id).await.unwrap());
    let mut found_mailbox = false;
    let mut cursor = None;
    loop {
        let (page, next) = store.scan_mailboxes(cursor, 7).await.unwrap();
        found_mailbox |= page.contains(&mailbox);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(found_mailbox, "scan_mailboxes must return every mailbox with listing rows");
    expunge(store, &mailbox, &[entry.id]).await.unwrap();
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_passes_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::embedded::EmbeddedStore::open(dir.path()).unwrap();
        super::run_all(&store).await;
    }
}
