//! One LMTP transaction's delivery: content chunks streamed to every recipient's message as
//! they arrive, then the listing rows (the commit point), then the per-recipient results.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;

use crate::lmtp::trace::{trace_headers, TraceInfo};
use crate::lmtp::{DeliveryResult, Envelope};
use crate::message_id::MessageId;
use crate::store::{ListingEntry, MailStore};

struct Target {
    mailbox: String,
    id: MessageId,
    size: u64,
    failed: bool,
}

pub struct Delivery {
    store: Arc<dyn MailStore>,
    targets: Vec<Target>,
    /// Index of the next body chunk; chunk 0 holds each recipient's own trace headers.
    next_index: u32,
    /// A message whose id is older than this (in 100 ns ticks) at commit is refused with a 4xx:
    /// the read watermark relies on no row being linked long after its id was made.
    max_age_ticks: u64,
}

impl Delivery {
    /// Starts a delivery and stores each recipient's trace headers as chunk 0.
    pub async fn start(
        store: Arc<dyn MailStore>,
        envelope: &Envelope,
        client_ip: IpAddr,
        hostname: &str,
        max_age: std::time::Duration,
    ) -> Self {
        let now = chrono::Utc::now();
        let ip = client_ip.to_string();
        let mut targets = Vec::with_capacity(envelope.recipients.len());
        let mut prefixes = Vec::with_capacity(envelope.recipients.len());
        for rcpt in &envelope.recipients {
            let id = MessageId::generate();
            let prefix = trace_headers(&TraceInfo {
                return_path: &envelope.mail_from,
                delivered_to: &rcpt.address,
                lhlo: &envelope.lhlo,
                client_ip: &ip,
                hostname,
                id: &id.to_string(),
                now,
            });
            targets.push(Target { mailbox: rcpt.mailbox.clone(), id, size: prefix.len() as u64, failed: false });
            prefixes.push(Bytes::from(prefix));
        }
        let max_age_ticks = (max_age.as_nanos() / 100) as u64;
        let mut delivery = Self { store, targets, next_index: 0, max_age_ticks };
        delivery.write_each(|i| prefixes[i].clone()).await;
        delivery
    }

    /// Stores the next body chunk for every recipient still on track.
    pub async fn push(&mut self, chunk: Vec<u8>) {
        let chunk = Bytes::from(chunk);
        self.write_each(|_| chunk.clone()).await;
    }

    async fn write_each(&mut self, data: impl Fn(usize) -> Bytes) {
        let index = self.next_index;
        self.next_index += 1;
        let store = &self.store;
        let writes = self.targets.iter().enumerate().filter(|(_, t)| !t.failed).map(|(i, t)| {
            let bytes = data(i);
            let len = bytes.len() as u64;
            async move { (i, len, store.put_chunk(&t.mailbox, t.id, index, bytes).await) }
        });
        for (i, len, result) in join_all(writes).await {
            match result {
                Ok(()) => self.targets[i].size += if index == 0 { 0 } else { len },
                Err(e) => {
                    tracing::warn!(mailbox = %self.targets[i].mailbox, error = %e, "storing content failed");
                    self.targets[i].failed = true;
                }
            }
        }
    }

    /// Links every stored message into its mailbox; one result per recipient, in order.
    pub async fn finish(self) -> Vec<DeliveryResult> {
        let store = &self.store;
        let now = MessageId::now_ticks();
        let links = self.targets.iter().map(|t| async move {
            if t.failed {
                return DeliveryResult::TempFail;
            }
            if now.saturating_sub(t.id.ticks()) > self.max_age_ticks {
                tracing::warn!(mailbox = %t.mailbox, "delivery took too long to commit safely; refused with 4xx");
                return DeliveryResult::TempFail;
            }
            // The account may have been deleted since RCPT; its mail must not outlive it.
            match store.get_account(&t.mailbox).await {
                Ok(Some(_)) => {}
                Ok(None) => return DeliveryResult::UnknownUser,
                Err(_) => return DeliveryResult::TempFail,
            }
            match store.link(&t.mailbox, ListingEntry { id: t.id, size: t.size }).await {
                Ok(()) => DeliveryResult::Delivered { id: t.id.to_string() },
                Err(e) => {
                    tracing::warn!(mailbox = %t.mailbox, error = %e, "linking a delivery failed");
                    DeliveryResult::TempFail
                }
            }
        });
        let results = join_all(links).await;
        // Content of failed recipients is orphaned; remove it now rather than wait for repair.
        let failed: Vec<MessageId> = self
            .targets
            .iter()
            .zip(&results)
            .filter(|(_, r)| !matches!(r, DeliveryResult::Delivered { .. }))
            .map(|(t, _)| t.id)
            .collect();
        if !failed.is_empty() {
            let _ = self.store.delete_content(&failed).await;
        }
        results
    }

    /// Octets of each recipient's message (for metrics).
    pub fn sizes(&self) -> impl Iterator<Item = u64> + '_ {
        self.targets.iter().map(|t| t.size)
    }

    /// Drops what was stored (refused message, dropped connection). Best effort: repair removes
    /// anything left behind.
    pub async fn abort(self) {
        let ids: Vec<MessageId> = self.targets.iter().map(|t| t.id).collect();
        if let Err(e) = self.store.delete_content(&ids).await {
            tracing::debug!(error = %e, "cleanup of an aborted delivery failed; repair will do it");
        }
    }
}
