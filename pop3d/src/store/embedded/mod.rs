//! The embedded backend: one redb file, for single-node installs and the zero-setup quick start.
//!
//! redb is a copy-on-write B-tree with ACID transactions. Content chunks are written without
//! fsync; the listing row is written with `Durability::Immediate`, which also makes every earlier
//! non-durable commit durable, and a `250` is only sent after it. Writes go through one writer
//! thread that commits whatever is queued in one transaction ([`commit`]): concurrent deliveries
//! and QUITs share an fsync instead of queueing for one each.

mod commit;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Account, ContentRef, ListingEntry, MailStore, RepairProgress, Result, StoreError};
use crate::dedup::DeliveryKey;
use crate::message_id::MessageId;

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// (mailbox, id sort key) -> size in octets.
const LISTING: TableDefinition<(&str, u128), u64> = TableDefinition::new("listing");
/// (id sort key, chunk index) -> bytes.
const CONTENT: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("content");
/// id sort key -> mailbox the content was written for (lets repair find orphans).
const CONTENT_OWNER: TableDefinition<u128, &str> = TableDefinition::new("content_owner");
/// task -> JSON RepairProgress.
const PROGRESS: TableDefinition<&str, &[u8]> = TableDefinition::new("repair_progress");
/// name -> 32 random bytes (see [`MailStore::server_secret`]).
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("server_secrets");
/// (mailbox, delivery key) -> (id sort key, expiry in Unix seconds): deliveries remembered so an
/// MTA's retry is recognised (see [`MailStore::link_remembered`]).
const DELIVERIES: TableDefinition<(&str, &[u8]), (u128, u64)> = TableDefinition::new("recent_deliveries");
/// (expiry, mailbox, delivery key): the same records by expiry, so expired ones are found
/// without a scan of all of them.
const DELIVERIES_BY_EXPIRY: TableDefinition<(u64, &str, &[u8]), ()> = TableDefinition::new("recent_deliveries_expiry");
/// Expired records removed by each new one: deliveries clean up after themselves, no timer needed,
/// and a burst after a quiet day does not pay for the whole backlog at once.
const EXPIRED_PER_WRITE: usize = 16;
/// Messages whose content one write deletes (see `delete_content`).
const DELETES_PER_WRITE: usize = 32;

pub struct EmbeddedStore {
    path: PathBuf,
    /// None while the database is closed after an I/O error (see `recover`).
    db: std::sync::Mutex<Option<Arc<Database>>>,
    /// Serialises closing and reopening; also spaces out reopen attempts.
    reopen: tokio::sync::Mutex<Option<Instant>>,
    /// The free space new mail must leave on the disk.
    reserve: super::room::Reserve,
    writer: commit::GroupCommit,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// redb's page cache (1 GiB by default) grows with the bytes passing through, so a few big
/// messages took RSS to hundreds of MiB; mail is read once, so a small cache loses little.
const CACHE_BYTES: usize = 32 << 20;

fn open_database(path: &Path) -> Result<Database> {
    let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(unavailable)?;
    // Create every table up front so readers never see "table does not exist".
    let txn = db.begin_write().map_err(unavailable)?;
    txn.open_table(ACCOUNTS).map_err(unavailable)?;
    txn.open_table(LISTING).map_err(unavailable)?;
    txn.open_table(CONTENT).map_err(unavailable)?;
    txn.open_table(CONTENT_OWNER).map_err(unavailable)?;
    txn.open_table(PROGRESS).map_err(unavailable)?;
    txn.open_table(SECRETS).map_err(unavailable)?;
    txn.open_table(DELIVERIES).map_err(unavailable)?;
    txn.open_table(DELIVERIES_BY_EXPIRY).map_err(unavailable)?;
    txn.commit().map_err(unavailable)?;
    Ok(db)
}

/// After one failed write (disk full, read-only file system, EIO) redb refuses every later call
/// with "previous I/O error" until the database is closed and opened again.
fn poisoned(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.contains(&redb::Error::PreviousIo.to_string()))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("mail.redb");
        let db = open_database(&path)?;
        let reserve = super::room::Reserve { dir: dir.to_owned(), reserve: 0 };
        let writer = commit::GroupCommit::start().map_err(|e| unavailable(format!("cannot start the writer: {e}")))?;
        let db = std::sync::Mutex::new(Some(Arc::new(db)));
        Ok(Self { path, db, reopen: tokio::sync::Mutex::new(None), reserve, writer })
    }

    /// Keeps `octets` free on the store's file system: mail that would leave less is refused.
    pub fn keeping_free(mut self, octets: u64) -> Self {
        self.reserve.reserve = octets;
        self
    }

    /// The open database, reopening it (at most once a second) if an I/O error closed it.
    async fn handle(&self) -> Result<Arc<Database>> {
        if let Some(db) = self.db.lock().expect("db lock").clone() {
            return Ok(db);
        }
        let mut last_try = self.reopen.lock().await;
        if let Some(db) = self.db.lock().expect("db lock").clone() {
            return Ok(db);
        }
        if last_try.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Err(unavailable("the store is closed after an I/O error; reopening"));
        }
        *last_try = Some(Instant::now());
        let path = self.path.clone();
        let db = Arc::new(tokio::task::spawn_blocking(move || open_database(&path)).await.map_err(unavailable)??);
        tracing::info!(path = %self.path.display(), "store reopened after an I/O error");
        *self.db.lock().expect("db lock") = Some(db.clone());
        Ok(db)
    }

    /// Closes the poisoned database: waits for in-flight transactions (each short) to drop their
    /// handles, so the file lock is released and the next `handle` can open it again.
    async fn recover(&self, failed: Arc<Database>) {
        let _guard = self.reopen.lock().await;
        {
            let mut current = self.db.lock().expect("db lock");
            match current.as_ref() {
                Some(db) if Arc::ptr_eq(db, &failed) => *current = None,
                _ => return, // someone else already closed it
            }
        }
        tracing::warn!(path = %self.path.display(), "closing the store after an I/O error");
        let _ = tokio::task::spawn_blocking(move || {
            let mut db = failed;
            let deadline = Instant::now() + Duration::from_secs(30);
            while let Err(shared) = Arc::try_unwrap(db) {
                if Instant::now() > deadline {
                    return; // leaked: reopening will fail until they finish; retried later
                }
                db = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .await;
    }

    /// Runs blocking redb work off the async runtime.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        self.with_handle(|db| async move { tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)? })
            .await
    }

    /// Applies `f` in the writer's next transaction (shared with the other writes queued by
    /// then) and returns once it is committed at `durability` or stronger. `bytes`: about how much
    /// it writes.
    async fn write<F>(&self, durability: Durability, bytes: usize, f: F) -> Result<()>
    where
        F: Fn(&redb::WriteTransaction) -> Result<()> + Send + 'static,
    {
        self.with_handle(|db| self.writer.write(db, durability, bytes, Box::new(f))).await
    }

    /// Runs `work` on the open database, and closes it for reopening when the work met an I/O
    /// error that poisoned it.
    async fn with_handle<T, Fut>(&self, work: impl FnOnce(Arc<Database>) -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let db = self.handle().await?;
        let result = work(db.clone()).await;
        if let Err(e) = &result {
            if poisoned(e) {
                self.recover(db).await;
            }
        }
        result
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Removes up to [`EXPIRED_PER_WRITE`] records whose window ended before `now`.
fn forget_expired(
    records: &mut redb::Table<(&str, &[u8]), (u128, u64)>,
    by_expiry: &mut redb::Table<(u64, &str, &[u8]), ()>,
    now: u64,
) -> Result<()> {
    let expired: Vec<(u64, String, Vec<u8>)> = by_expiry
        .range::<(u64, &str, &[u8])>(..(now, "", &[][..]))
        .map_err(unavailable)?
        .take(EXPIRED_PER_WRITE)
        .map(|item| item.map(|(k, _)| (k.value().0, k.value().1.to_owned(), k.value().2.to_vec())))
        .collect::<std::result::Result<_, _>>()
        .map_err(unavailable)?;
    for (expiry, mailbox, key) in expired {
        by_expiry.remove((expiry, mailbox.as_str(), key.as_slice())).map_err(unavailable)?;
        // A record written again since has a later expiry under the same key: keep it.
        let current = records.get((mailbox.as_str(), key.as_slice())).map_err(unavailable)?.map(|v| v.value().1);
        if current == Some(expiry) {
            records.remove((mailbox.as_str(), key.as_slice())).map_err(unavailable)?;
        }
    }
    Ok(())
}

#[async_trait]
impl MailStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<()> {
        self.blocking(|db| db.begin_read().map(|_| ()).map_err(unavailable)).await
    }

    fn room_for_message(&self, size: u64) -> bool {
        self.reserve.leaves_room_after(size)
    }

    /// redb is a copy-on-write B-tree: pages a transaction replaces stay allocated until a later
    /// durable commit frees them, so content takes up to about twice its size on disk for a while
    /// (a 60-copy delivery on a small file system ran out of room at half the reserve without
    /// this factor).
    fn room_for_content(&self, octets: u64) -> bool {
        self.reserve.leaves_room_after(octets.saturating_mul(2))
    }

    async fn put_account(&self, account: &Account) -> Result<()> {
        let account = account.clone();
        let value = serde_json::to_vec(&account).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(Durability::Immediate, value.len(), move |txn| {
            let mut table = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            table.insert(account.address.as_str(), value.as_slice()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn get_account(&self, address: &str) -> Result<Option<Account>> {
        let address = address.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            match table.get(address.as_str()).map_err(unavailable)? {
                Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(|e| StoreError::Corrupt(e.to_string())),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delete_account(&self, address: &str) -> Result<()> {
        let address = address.to_owned();
        self.write(Durability::Immediate, 0, move |txn| {
            let mut table = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            table.remove(address.as_str()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ACCOUNTS).map_err(unavailable)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(unavailable)? {
                out.push(item.map_err(unavailable)?.0.value().to_owned());
            }
            Ok(out)
        })
        .await
    }

    async fn put_chunk(&self, mailbox: &str, id: MessageId, index: u32, data: Bytes) -> Result<()> {
        let mailbox = mailbox.to_owned();
        self.write(Durability::None, data.len(), move |txn| {
            let key = id.sort_key();
            txn.open_table(CONTENT).map_err(unavailable)?.insert((key, index), data.as_ref()).map_err(unavailable)?;
            if index == 0 {
                txn.open_table(CONTENT_OWNER)
                    .map_err(unavailable)?
                    .insert(key, mailbox.as_str())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn link(&self, mailbox: &str, entry: ListingEntry) -> Result<()> {
        let mailbox = mailbox.to_owned();
        self.write(Durability::Immediate, 0, move |txn| {
            let mut table = txn.open_table(LISTING).map_err(unavailable)?;
            table.insert((mailbox.as_str(), entry.id.sort_key()), entry.size).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn link_remembered(
        &self,
        mailbox: &str,
        entry: ListingEntry,
        key: &DeliveryKey,
        window: Duration,
    ) -> Result<()> {
        let (mailbox, key) = (mailbox.to_owned(), key.0);
        let expires = unix_now().saturating_add(window.as_secs());
        // One transaction: the row and its record are durable together, so no crash between them
        // can leave a stored message that a retry would store again.
        self.write(Durability::Immediate, 0, move |txn| {
            let mut listing = txn.open_table(LISTING).map_err(unavailable)?;
            listing.insert((mailbox.as_str(), entry.id.sort_key()), entry.size).map_err(unavailable)?;
            let mut records = txn.open_table(DELIVERIES).map_err(unavailable)?;
            let mut by_expiry = txn.open_table(DELIVERIES_BY_EXPIRY).map_err(unavailable)?;
            forget_expired(&mut records, &mut by_expiry, unix_now())?;
            let old = records
                .insert((mailbox.as_str(), key.as_slice()), (entry.id.sort_key(), expires))
                .map_err(unavailable)?
                .map(|v| v.value().1);
            if let Some(old_expiry) = old {
                by_expiry.remove((old_expiry, mailbox.as_str(), key.as_slice())).map_err(unavailable)?;
            }
            by_expiry.insert((expires, mailbox.as_str(), key.as_slice()), ()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn recent_delivery(&self, mailbox: &str, key: &DeliveryKey) -> Result<Option<MessageId>> {
        let (mailbox, key) = (mailbox.to_owned(), key.0);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(DELIVERIES).map_err(unavailable)?;
            let found = table.get((mailbox.as_str(), key.as_slice())).map_err(unavailable)?.map(|v| v.value());
            Ok(found.filter(|(_, expires)| *expires > unix_now()).map(|(id, _)| MessageId::from_sort_key(id)))
        })
        .await
    }

    async fn listing(&self, mailbox: &str) -> Result<Vec<ListingEntry>> {
        let mailbox = mailbox.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(LISTING).map_err(unavailable)?;
            let mut out = Vec::new();
            for item in table.range((mailbox.as_str(), 0u128)..=(mailbox.as_str(), u128::MAX)).map_err(unavailable)? {
                let (k, v) = item.map_err(unavailable)?;
                out.push(ListingEntry { id: MessageId::from_sort_key(k.value().1), size: v.value() });
            }
            Ok(out)
        })
        .await
    }

    async fn get_chunk(&self, id: MessageId, index: u32) -> Result<Option<Bytes>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(CONTENT).map_err(unavailable)?;
            Ok(table.get((id.sort_key(), index)).map_err(unavailable)?.map(|v| Bytes::copy_from_slice(v.value())))
        })
        .await
    }

    async fn unlink(&self, mailbox: &str, ids: &[MessageId]) -> Result<()> {
        let mailbox = mailbox.to_owned();
        let ids = ids.to_vec();
        self.write(Durability::Immediate, 0, move |txn| {
            let mut table = txn.open_table(LISTING).map_err(unavailable)?;
            for id in &ids {
                table.remove((mailbox.as_str(), id.sort_key())).map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_content(&self, ids: &[MessageId]) -> Result<()> {
        // Not fsynced: if lost in a crash the content is an orphan that repair removes. A few
        // messages per write: freeing a thousand messages' pages in one transaction held the
        // writer while QUITs (durable unlinks) queued behind it.
        for slice in ids.chunks(DELETES_PER_WRITE) {
            let ids = slice.to_vec();
            self.write(Durability::None, 0, move |txn| {
                let mut content = txn.open_table(CONTENT).map_err(unavailable)?;
                let mut owner = txn.open_table(CONTENT_OWNER).map_err(unavailable)?;
                for id in &ids {
                    let key = id.sort_key();
                    content.retain_in((key, 0)..=(key, u32::MAX), |_, _| false).map_err(unavailable)?;
                    owner.remove(key).map_err(unavailable)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    async fn scan_content(&self, cursor: Option<String>, limit: usize) -> Result<(Vec<ContentRef>, Option<String>)> {
        let start = match cursor {
            Some(c) => Bound::Excluded(c.parse::<u128>().map_err(|e| StoreError::Corrupt(format!("bad cursor: {e}")))?),
            None => Bound::Unbounded,
        };
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(CONTENT_OWNER).map_err(unavailable)?;
            let mut out = Vec::new();
            let mut last = None;
            for item in table.range::<u128>((start, Bound::Unbounded)).map_err(unavailable)?.take(limit) {
                let (k, v) = item.map_err(unavailable)?;
                last = Some(k.value());
                out.push(ContentRef { id: MessageId::from_sort_key(k.value()), mailbox: v.value().to_owned() });
            }
            let next = if out.len() == limit { last.map(|k| k.to_string()) } else { None };
            Ok((out, next))
        })
        .await
    }

    async fn has_listing(&self, mailbox: &str, id: MessageId) -> Result<bool> {
        let mailbox = mailbox.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(LISTING).map_err(unavailable)?;
            Ok(table.get((mailbox.as_str(), id.sort_key())).map_err(unavailable)?.is_some())
        })
        .await
    }

    async fn scan_mailboxes(&self, cursor: Option<String>, limit: usize) -> Result<(Vec<String>, Option<String>)> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(LISTING).map_err(unavailable)?;
            let mut out: Vec<String> = Vec::new();
            let mut after = cursor;
            // Skip from one mailbox to the next instead of walking every row.
            while out.len() < limit {
                let next = match &after {
                    Some(m) => {
                        let lower = (m.as_str(), u128::MAX);
                        let mut range = table.range((Bound::Excluded(lower), Bound::Unbounded)).map_err(unavailable)?;
                        range.next().transpose().map_err(unavailable)?.map(|(k, _)| k.value().0.to_owned())
                    }
                    None => table.first().map_err(unavailable)?.map(|(k, _)| k.value().0.to_owned()),
                };
                match next {
                    Some(m) => {
                        out.push(m.clone());
                        after = Some(m);
                    }
                    None => return Ok((out, None)),
                }
            }
            Ok((out, after))
        })
        .await
    }

    async fn load_progress(&self, task: &str) -> Result<Option<RepairProgress>> {
        let task = task.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(PROGRESS).map_err(unavailable)?;
            match table.get(task.as_str()).map_err(unavailable)? {
                Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(|e| StoreError::Corrupt(e.to_string())),
                None => Ok(None),
            }
        })
        .await
    }

    async fn save_progress(&self, task: &str, progress: &RepairProgress) -> Result<()> {
        let task = task.to_owned();
        let value = serde_json::to_vec(progress).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(Durability::Immediate, value.len(), move |txn| {
            let mut table = txn.open_table(PROGRESS).map_err(unavailable)?;
            table.insert(task.as_str(), value.as_slice()).map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn server_secret(&self, name: &str) -> Result<[u8; 32]> {
        let name = name.to_owned();
        // One write transaction reads and, the first time, creates: a single writer, so no race.
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(unavailable)?;
            txn.set_durability(Durability::Immediate).map_err(unavailable)?;
            let secret = {
                let mut table = txn.open_table(SECRETS).map_err(unavailable)?;
                let existing = table.get(name.as_str()).map_err(unavailable)?.map(|v| v.value().to_vec());
                match existing {
                    Some(v) => v
                        .try_into()
                        .map_err(|_| StoreError::Corrupt(format!("server secret {name} is not 32 bytes")))?,
                    None => {
                        let fresh: [u8; 32] = rand::random();
                        table.insert(name.as_str(), fresh.as_slice()).map_err(unavailable)?;
                        fresh
                    }
                }
            };
            txn.commit().map_err(unavailable)?;
            Ok(secret)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(store: &EmbeddedStore) -> (u64, u64) {
        let db = store.db.lock().unwrap().clone().unwrap();
        let txn = db.begin_read().unwrap();
        use redb::ReadableTableMetadata as _;
        (
            txn.open_table(DELIVERIES).unwrap().len().unwrap(),
            txn.open_table(DELIVERIES_BY_EXPIRY).unwrap().len().unwrap(),
        )
    }

    #[tokio::test]
    async fn expired_delivery_records_are_removed_by_later_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let link = |window: u64| {
            let store = &store;
            async move {
                let entry = ListingEntry { id: MessageId::generate(), size: 1 };
                let key = DeliveryKey(rand::random());
                store.link_remembered("m@x", entry, &key, Duration::from_secs(window)).await.unwrap();
            }
        };
        for _ in 0..EXPIRED_PER_WRITE + 4 {
            link(1).await;
        }
        assert_eq!(records(&store), (EXPIRED_PER_WRITE as u64 + 4, EXPIRED_PER_WRITE as u64 + 4));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        link(3600).await;
        assert_eq!(records(&store), (5, 5), "one write removes at most EXPIRED_PER_WRITE expired records");
        link(3600).await;
        assert_eq!(records(&store), (2, 2), "the next one removes the rest, and never a live record");
    }
}
