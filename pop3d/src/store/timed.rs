//! A [`MailStore`] decorator that times every call and counts its errors by kind: one place for
//! the store's metrics, whatever the backend and whoever calls (sessions, deliveries, the reaper,
//! the admin API, repair), instead of timers at each call site.
//!
//! It also notes content it failed to delete: whoever asked (an expunge's reaper, an aborted or
//! partly failed delivery, an account deletion) leaves an orphan that only `pop3d repair`
//! removes, which is what the chart's "repair needed" alert reads.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Account, ContentRef, ListingEntry, MailStore, RepairProgress, Result};
use crate::dedup::DeliveryKey;
use crate::message_id::MessageId;
use crate::metrics::{unix_now, StoreErrorLabels, StoreLabels, StoreMetrics};

pub struct Timed {
    inner: Arc<dyn MailStore>,
    backend: &'static str,
    metrics: StoreMetrics,
}

impl Timed {
    pub fn new(inner: Arc<dyn MailStore>, metrics: StoreMetrics) -> Self {
        Self { backend: inner.backend(), inner, metrics }
    }

    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        let labels = StoreLabels { backend: self.backend, operation };
        self.metrics.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            let labels = StoreErrorLabels { backend: self.backend, operation, kind: e.kind() };
            self.metrics.errors.get_or_create(&labels).inc();
        }
        result
    }
}

#[async_trait]
impl MailStore for Timed {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn ping(&self) -> Result<()> {
        self.timed("ping", self.inner.ping()).await
    }

    // Not timed (no I/O worth a histogram), but forwarded: the trait's defaults say "room", and
    // a decorator that kept them would let mail fill the embedded store's disk.
    fn room_for_message(&self, size: u64) -> bool {
        self.inner.room_for_message(size)
    }

    fn room_for_content(&self, octets: u64) -> bool {
        self.inner.room_for_content(octets)
    }

    async fn put_account(&self, account: &Account) -> Result<()> {
        self.timed("put_account", self.inner.put_account(account)).await
    }

    async fn get_account(&self, address: &str) -> Result<Option<Account>> {
        self.timed("get_account", self.inner.get_account(address)).await
    }

    async fn delete_account(&self, address: &str) -> Result<()> {
        self.timed("delete_account", self.inner.delete_account(address)).await
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        self.timed("list_accounts", self.inner.list_accounts()).await
    }

    async fn put_chunk(&self, mailbox: &str, id: MessageId, index: u32, data: Bytes) -> Result<()> {
        self.timed("put_chunk", self.inner.put_chunk(mailbox, id, index, data)).await
    }

    async fn link(&self, mailbox: &str, entry: ListingEntry) -> Result<()> {
        self.timed("link", self.inner.link(mailbox, entry)).await
    }

    async fn link_remembered(
        &self,
        mailbox: &str,
        entry: ListingEntry,
        key: &DeliveryKey,
        window: Duration,
    ) -> Result<()> {
        self.timed("link_remembered", self.inner.link_remembered(mailbox, entry, key, window)).await
    }

    async fn recent_delivery(&self, mailbox: &str, key: &DeliveryKey) -> Result<Option<MessageId>> {
        self.timed("recent_delivery", self.inner.recent_delivery(mailbox, key)).await
    }

    async fn listing(&self, mailbox: &str) -> Result<Vec<ListingEntry>> {
        self.timed("listing", self.inner.listing(mailbox)).await
    }

    async fn get_chunk(&self, id: MessageId, index: u32) -> Result<Option<Bytes>> {
        self.timed("get_chunk", self.inner.get_chunk(id, index)).await
    }

    async fn unlink(&self, mailbox: &str, ids: &[MessageId]) -> Result<()> {
        self.timed("unlink", self.inner.unlink(mailbox, ids)).await
    }

    async fn delete_content(&self, ids: &[MessageId]) -> Result<()> {
        let result = self.timed("delete_content", self.inner.delete_content(ids)).await;
        if result.is_err() {
            self.metrics.orphans.inc_by(ids.len() as u64);
            self.metrics.orphan_last.set(unix_now());
        }
        result
    }

    async fn scan_content(&self, cursor: Option<String>, limit: usize) -> Result<(Vec<ContentRef>, Option<String>)> {
        self.timed("scan_content", self.inner.scan_content(cursor, limit)).await
    }

    async fn has_listing(&self, mailbox: &str, id: MessageId) -> Result<bool> {
        self.timed("has_listing", self.inner.has_listing(mailbox, id)).await
    }

    async fn scan_mailboxes(&self, cursor: Option<String>, limit: usize) -> Result<(Vec<String>, Option<String>)> {
        self.timed("scan_mailboxes", self.inner.scan_mailboxes(cursor, limit)).await
    }

    async fn set_low_watermark(&self, mailbox: &str, floor: MessageId) -> Result<()> {
        self.timed("set_low_watermark", self.inner.set_low_watermark(mailbox, floor)).await
    }

    async fn live_row_below_watermark(&self, mailbox: &str) -> Result<Option<MessageId>> {
        self.timed("live_row_below_watermark", self.inner.live_row_below_watermark(mailbox)).await
    }

    async fn server_secret(&self, name: &str) -> Result<[u8; 32]> {
        self.timed("server_secret", self.inner.server_secret(name)).await
    }

    async fn load_progress(&self, task: &str) -> Result<Option<RepairProgress>> {
        self.timed("load_progress", self.inner.load_progress(task)).await
    }

    async fn save_progress(&self, task: &str, progress: &RepairProgress) -> Result<()> {
        self.timed("save_progress", self.inner.save_progress(task, progress)).await
    }
}
