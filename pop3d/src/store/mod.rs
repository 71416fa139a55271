//! Mail storage: one trait, two backends (`embedded` on redb, `cassandra`).
//!
//! The trait is the storage contract of `DESIGN.md`. It is deliberately low level (chunks,
//! listing rows) so that the ordering rules live in one place above it ([`deliver`], [`expunge`])
//! and both backends are checked by one contract suite ([`contract`]).

pub mod cassandra;
pub mod contract;
pub mod embedded;
mod room;
pub mod timed;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::dedup::DeliveryKey;
use crate::message_id::MessageId;

/// Content is stored in chunks of at most this size, so no cell and no buffer is large.
pub const CHUNK_SIZE: usize = 64 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not answer now (too few live replicas, no connection, I/O error).
    /// Clients should retry.
    #[error("storage temporarily unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time (a replica slow or gone). Clients should retry.
    #[error("storage timed out: {0}")]
    Timeout(String),
    /// The store shed the request (a node overloaded or rate-limiting). Clients should retry.
    #[error("storage overloaded: {0}")]
    Overloaded(String),
    /// Any other failure of a request (refused by the store, unexpected answer). Clients should
    /// retry; a steady rate of these is a bug or a schema problem.
    #[error("storage request failed: {0}")]
    Failed(String),
    /// The store is set up wrongly (keyspace missing or behind, unknown datacenter): retrying
    /// will not help, an operator must act.
    #[error("storage misconfigured: {0}")]
    Misconfigured(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The metrics label: what the on-call engineer does differently for each.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Timeout(_) => "timeout",
            StoreError::Overloaded(_) => "overloaded",
            StoreError::Failed(_) => "other",
            StoreError::Misconfigured(_) => "misconfigured",
            StoreError::Corrupt(_) => "corrupt",
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One row of the POP3 projection: a message in a mailbox and its size in CRLF octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingEntry {
    pub id: MessageId,
    pub size: u64,
}

/// An account as stored. Keyed by the normalised address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub address: String,
    /// A PHC string (argon2id).
    pub password_hash: String,
    /// SCRAM-SHA-256 keys in PostgreSQL's form (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`),
    /// derived when the password is set. Accounts whose password was set before SCRAM support
    /// have none and cannot use SCRAM until the password is set again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha256: Option<String>,
    /// This mailbox's quota in octets; `None`: the server's default (`mailbox_quota_mb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
}

/// A content partition found by a repair scan, with the mailbox it was written for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRef {
    pub id: MessageId,
    pub mailbox: String,
}

/// Where a repair run stands, saved so an interrupted run resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairProgress {
    pub phase: String,
    pub cursor: Option<String>,
    pub checked: u64,
    pub fixed: u64,
}

/// The storage contract. Every method is idempotent: a retried call after a timeout is harmless.
#[async_trait]
pub trait MailStore: Send + Sync + 'static {
    /// Backend name for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<()>;

    /// Whether another message of up to `size` octets may be accepted (checked at LMTP RCPT). A
    /// store on a disk of its own refuses mail before a write could fill that disk; where the
    /// store's nodes manage their disks (Cassandra) there is nothing to check here.
    fn room_for_message(&self, _size: u64) -> bool {
        true
    }

    /// Whether `octets` more content can be written now (checked for each chunk's copies while a
    /// message is written, so many recipients cannot write past the reserve).
    fn room_for_content(&self, _octets: u64) -> bool {
        true
    }

    async fn put_account(&self, account: &Account) -> Result<()>;
    async fn get_account(&self, address: &str) -> Result<Option<Account>>;
    /// Removes the account row only; see [`delete_account_and_mail`].
    async fn delete_account(&self, address: &str) -> Result<()>;
    async fn list_accounts(&self) -> Result<Vec<String>>;

    /// Stores one chunk of a message's content. Invisible until [`MailStore::link`].
    async fn put_chunk(&self, mailbox: &str, id: MessageId, index: u32, data: Bytes) -> Result<()>;
    /// Makes a message visible in its mailbox: the commit point of a delivery. Once this returns
    /// the message is durable at the store's configured consistency.
    async fn link(&self, mailbox: &str, entry: ListingEntry) -> Result<()>;
    /// [`MailStore::link`], and the delivery remembered under `key` for `window` so that a
    /// retry of it is recognised ([`MailStore::recent_delivery`]). Atomic: the record is never
    /// visible without the row, and no crash leaves the row without its record.
    async fn link_remembered(
        &self,
        mailbox: &str,
        entry: ListingEntry,
        key: &DeliveryKey,
        window: Duration,
    ) -> Result<()>;
    /// The message a delivery with `key` was stored as in `mailbox`, if it was remembered less
    /// than its window ago. It may since have been deleted by its reader: a retry is still a retry.
    async fn recent_delivery(&self, mailbox: &str, key: &DeliveryKey) -> Result<Option<MessageId>>;
    /// The mailbox's listing, oldest first.
    async fn listing(&self, mailbox: &str) -> Result<Vec<ListingEntry>>;
    /// Chunk `index` of a message, or `None` when there is no such chunk.
    async fn get_chunk(&self, id: MessageId, index: u32) -> Result<Option<Bytes>>;
    /// Removes listing rows. Removing a row that is not there is not an error.
    async fn unlink(&self, mailbox: &str, ids: &[MessageId]) -> Result<()>;
    /// Removes content. Removing content that is not there is not an error.
    async fn delete_content(&self, ids: &[MessageId]) -> Result<()>;

    /// Repair: content partitions in storage order, from an opaque cursor; returns the next cursor.
    async fn scan_content(&self, cursor: Option<String>, limit: usize) -> Result<(Vec<ContentRef>, Option<String>)>;
    /// Repair: whether a listing row exists.
    async fn has_listing(&self, mailbox: &str, id: MessageId) -> Result<bool>;
    /// Repair: mailboxes with listing rows, from an opaque cursor; returns the next cursor.
    async fn scan_mailboxes(&self, cursor: Option<String>, limit: usize) -> Result<(Vec<String>, Option<String>)>;

    /// Promises that every live listing row of `mailbox` is at or after `floor`, so reads can
    /// start there and skip deleted history (Cassandra tombstones). A no-op where deletes leave
    /// nothing behind.
    async fn set_low_watermark(&self, _mailbox: &str, _floor: MessageId) -> Result<()> {
        Ok(())
    }

    /// Repair: a live listing row below the mailbox's watermark (one that arrived late, e.g.
    /// after a datacenter partition), if any.
    async fn live_row_below_watermark(&self, _mailbox: &str) -> Result<Option<MessageId>> {
        Ok(None)
    }

    /// A 32-byte secret shared by every server of this store, made by the first one that asks
    /// and the same ever after (across restarts and replicas). Without a lightweight transaction
    /// two servers asking at once for the very first time may each see their own value for a
    /// moment; the stores converge on one, and callers re-read it now and then.
    async fn server_secret(&self, name: &str) -> Result<[u8; 32]>;

    async fn load_progress(&self, task: &str) -> Result<Option<RepairProgress>>;
    async fn save_progress(&self, task: &str, progress: &RepairProgress) -> Result<()>;
}

/// Expunges messages at POP3 QUIT: listing rows first (the message disappears), then content.
/// A crash in between leaves orphan content, which repair removes; never a row without content.
pub async fn expunge(store: &dyn MailStore, mailbox: &str, ids: &[MessageId]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    store.unlink(mailbox, ids).await?;
    store.delete_content(ids).await
}

/// Removes an account and all of its mail.
pub async fn delete_account_and_mail(store: &dyn MailStore, address: &str) -> Result<()> {
    // The account goes first so no new delivery is accepted while the mail is removed.
    store.delete_account(address).await?;
    let ids: Vec<MessageId> = store.listing(address).await?.into_iter().map(|e| e.id).collect();
    for batch in ids.chunks(100) {
        expunge(store, address, batch).await?;
    }
    Ok(())
}

/// Reads a whole message. For tests and small tools only: the server streams chunk by chunk.
pub async fn read_message(store: &dyn MailStore, entry: &ListingEntry) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(entry.size as usize);
    let mut index = 0;
    while (out.len() as u64) < entry.size {
        match store.get_chunk(entry.id, index).await? {
            Some(chunk) => out.extend_from_slice(&chunk),
            None => return Ok(None),
        }
        index += 1;
    }
    Ok(Some(out))
}

/// Stores a whole message held in memory: content chunks, then the listing row.
pub async fn deliver(store: &dyn MailStore, mailbox: &str, id: MessageId, content: &[u8]) -> Result<ListingEntry> {
    for (index, chunk) in content.chunks(CHUNK_SIZE).enumerate() {
        store.put_chunk(mailbox, id, index as u32, Bytes::copy_from_slice(chunk)).await?;
    }
    let entry = ListingEntry { id, size: content.len() as u64 };
    store.link(mailbox, entry).await?;
    Ok(entry)
}

/// Opens the store a server is configured for: the embedded one in `data_dir`, keeping
/// `min_free_space` octets free on its disk, or the Cassandra cluster of `cassandra` (which
/// `store = cassandra` requires). `pop3d serve` and `pop3d repair` both start here.
pub async fn open(
    kind: pop3d_config::StoreKind,
    data_dir: &std::path::Path,
    min_free_space: u64,
    cassandra: Option<&cassandra::CassandraConfig>,
) -> anyhow::Result<std::sync::Arc<dyn MailStore>> {
    use anyhow::Context as _;
    match kind {
        pop3d_config::StoreKind::Embedded => {
            let dir = data_dir.to_owned();
            let store = tokio::task::spawn_blocking(move || embedded::EmbeddedStore::open(&dir)).await??;
            Ok(std::sync::Arc::new(store.keeping_free(min_free_space)))
        }
        pop3d_config::StoreKind::Cassandra => {
            let settings = cassandra.context("cassandra settings missing")?;
            Ok(std::sync::Arc::new(cassandra::CassandraStore::open(settings).await?))
        }
    }
}
