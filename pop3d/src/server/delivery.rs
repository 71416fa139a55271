//! One LMTP transaction's delivery: content chunks streamed to every recipient's message as
//! they arrive, then the listing rows (the commit point), then the per-recipient results. A
//! delivery the store remembers (an MTA's retry after a lost 250) is answered without a second
//! copy: see `crate::dedup` and docs/adr/0008-exactly-once-delivery.md.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{join_all, BoxFuture};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::dedup::{DeliveryKey, KeyBuilder};
use crate::lmtp::trace::{trace_headers, TraceInfo};
use crate::lmtp::{DeliveryResult, Envelope};
use crate::message_id::MessageId;
use crate::store::{ListingEntry, MailStore};

use crate::context::accounts::KnownAccounts;

struct Target {
    mailbox: String,
    id: MessageId,
    size: u64,
    /// Trace headers, stored in front of the first body chunk.
    prefix: Vec<u8>,
    failed: bool,
    /// The mailbox's quota, if one applies.
    quota: Option<Quota>,
}

/// A mailbox's use and quota in octets, read at RCPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub used: u64,
    pub limit: u64,
}

impl Quota {
    pub fn full(&self) -> bool {
        self.used >= self.limit
    }

    fn exceeded_by(&self, size: u64) -> bool {
        self.used.saturating_add(size) > self.limit
    }
}

/// What a delivery is held to, from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// A message whose id is older than this at commit is refused with a 4xx: the read
    /// watermark relies on no row being linked long after its id was made.
    pub max_age: std::time::Duration,
    /// How long a delivery is remembered to absorb a retry; `None`: not at all.
    pub dedup_window: Option<std::time::Duration>,
}

/// The store's answer to "was this delivery stored before in this mailbox, and as which id".
type Earlier = crate::store::Result<Option<MessageId>>;

/// Asks, for each mailbox, whether the delivery `key` was stored there before; `None` for each
/// when there is no key (deduplication off, or a message without `Message-ID`).
async fn earlier_copies(
    store: Arc<dyn MailStore>,
    mailboxes: Vec<String>,
    key: Option<DeliveryKey>,
) -> Vec<Option<Earlier>> {
    match key {
        Some(key) => {
            join_all(mailboxes.iter().map(|m| store.recent_delivery(m, &key))).await.into_iter().map(Some).collect()
        }
        None => mailboxes.iter().map(|_| None).collect(),
    }
}

/// The commit step of one transaction, the same for each of its recipients.
struct Commit<'a> {
    store: &'a dyn MailStore,
    accounts: &'a KnownAccounts,
    max_age_ticks: u64,
    now: u64,
    /// The delivery's identity and how long to remember it, when it has one.
    remember: Option<(DeliveryKey, std::time::Duration)>,
}

impl Commit<'_> {
    /// Links one recipient's copy, unless it must not be (failed, over quota, too old, account
    /// gone) or was stored already (a retry of a remembered delivery): `earlier` is the store's
    /// answer to "was this delivery stored before", asked when deduplication is on.
    async fn one(&self, t: &Target, earlier: Option<Earlier>) -> DeliveryResult {
        if t.failed {
            return DeliveryResult::TempFail;
        }
        if self.now.saturating_sub(t.id.ticks()) > self.max_age_ticks {
            tracing::warn!(mailbox = %t.mailbox, "delivery took too long to commit safely; refused with 4xx");
            return DeliveryResult::TempFail;
        }
        // The account may have been deleted since RCPT; its mail must not outlive it.
        match self.accounts.exists(self.store, &t.mailbox).await {
            Ok(true) => {}
            Ok(false) => return DeliveryResult::UnknownUser,
            Err(_) => return DeliveryResult::TempFail,
        }
        // Before the quota: a retry of a message that filled the mailbox was delivered, and a
        // 552 would make the MTA bounce it.
        match earlier {
            Some(Ok(Some(first))) => {
                tracing::info!(mailbox = %t.mailbox, id = %first, "retried delivery absorbed: stored before as this id");
                return DeliveryResult::Duplicate { id: first.to_string() };
            }
            Some(Err(e)) => {
                // Storing it anyway could make the very duplicate this check exists for.
                tracing::warn!(mailbox = %t.mailbox, error = %e, "looking up a delivery's earlier copy failed");
                return DeliveryResult::TempFail;
            }
            Some(Ok(None)) | None => {}
        }
        if t.quota.is_some_and(|q| q.exceeded_by(t.size)) {
            return DeliveryResult::OverQuota;
        }
        let entry = ListingEntry { id: t.id, size: t.size };
        let linked = match &self.remember {
            Some((key, window)) => self.store.link_remembered(&t.mailbox, entry, key, *window).await,
            None => self.store.link(&t.mailbox, entry).await,
        };
        match linked {
            Ok(()) => DeliveryResult::Delivered { id: t.id.to_string() },
            Err(e) => {
                tracing::warn!(mailbox = %t.mailbox, error = %e, "linking a delivery failed");
                DeliveryResult::TempFail
            }
        }
    }
}

/// Chunk writes per recipient that may be unfinished while more of the message is read.
const CHUNKS_IN_FLIGHT: usize = 4;

pub struct Delivery {
    store: Arc<dyn MailStore>,
    in_flight: FuturesUnordered<BoxFuture<'static, (usize, u64, crate::store::Result<()>)>>,
    /// Octets of the writes in flight: not yet on disk, so not yet seen by a free-space check.
    unsettled: u64,
    accounts: Arc<KnownAccounts>,
    targets: Vec<Target>,
    /// Index of the next chunk to store; chunk 0 starts with each recipient's own trace headers.
    next_index: u32,
    /// A message whose id is older than this (in 100 ns ticks) at commit is refused with a 4xx:
    /// the read watermark relies on no row being linked long after its id was made.
    max_age_ticks: u64,
    /// The store ran low on room while the copies were written: nothing more is stored and
    /// every recipient gets a 452.
    out_of_room: bool,
    /// The message's identity, built as it streams in, and the window it is remembered for;
    /// `None`: deduplication is off.
    dedup: Option<(KeyBuilder, std::time::Duration)>,
}

impl Delivery {
    /// Starts a delivery. Each recipient's trace headers are held back and stored with the first
    /// body chunk, as chunk 0: one write fewer per message, which is most of a small message's
    /// cost on Cassandra.
    pub async fn start(
        store: Arc<dyn MailStore>,
        accounts: Arc<KnownAccounts>,
        envelope: &Envelope,
        client_ip: IpAddr,
        hostname: &str,
        policy: Policy,
        quotas: &HashMap<String, Quota>,
    ) -> Self {
        let now = chrono::Utc::now();
        let ip = client_ip.to_string();
        let mut targets = Vec::with_capacity(envelope.recipients.len());
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
            targets.push(Target {
                mailbox: rcpt.mailbox.clone(),
                id,
                size: prefix.len() as u64,
                prefix,
                failed: false,
                quota: quotas.get(&rcpt.mailbox).copied(),
            });
        }
        let max_age_ticks = (policy.max_age.as_nanos() / 100) as u64;
        let in_flight = FuturesUnordered::new();
        Self {
            store,
            in_flight,
            unsettled: 0,
            accounts,
            targets,
            next_index: 0,
            max_age_ticks,
            out_of_room: false,
            dedup: policy.dedup_window.map(|window| (KeyBuilder::new(), window)),
        }
    }

    /// Octets the next chunk of `len` octets will write (one copy per recipient still on track),
    /// plus the writes still in flight, which a free-space reading does not show yet.
    pub fn copies_of(&self, len: usize) -> u64 {
        len as u64 * self.targets.iter().filter(|t| !t.failed).count() as u64 + self.unsettled
    }

    /// Stops storing: the store is low on room. The message still has to be read to its end.
    pub fn out_of_room(&mut self) {
        if !self.out_of_room {
            tracing::warn!(
                recipients = self.targets.len(),
                "refusing a delivery: the store ran low on room while writing it"
            );
        }
        self.out_of_room = true;
    }

    /// Stores the next body chunk for every recipient still on track.
    pub async fn push(&mut self, chunk: Vec<u8>) {
        if self.out_of_room {
            return;
        }
        let len = chunk.len() as u64;
        if let Some((key, _)) = self.dedup.as_mut() {
            key.update(&chunk);
        }
        if self.next_index == 0 {
            let chunks: Vec<Bytes> =
                self.targets.iter().map(|t| Bytes::from([t.prefix.as_slice(), &chunk].concat())).collect();
            self.write_each(|i| chunks[i].clone(), len).await;
        } else {
            let chunk = Bytes::from(chunk);
            self.write_each(|_| chunk.clone(), len).await;
        }
    }

    /// Starts the chunk's writes and returns once at most [`CHUNKS_IN_FLIGHT`] per recipient are
    /// unfinished: a big message's chunks are written side by side, not one round trip each.
    async fn write_each(&mut self, data: impl Fn(usize) -> Bytes, body_len: u64) {
        let index = self.next_index;
        self.next_index += 1;
        for (i, t) in self.targets.iter_mut().enumerate().filter(|(_, t)| !t.failed) {
            t.size += body_len;
            let (store, mailbox, id, bytes) = (self.store.clone(), t.mailbox.clone(), t.id, data(i));
            let len = bytes.len() as u64;
            self.unsettled += len;
            self.in_flight.push(Box::pin(async move { (i, len, store.put_chunk(&mailbox, id, index, bytes).await) }));
        }
        while self.in_flight.len() > CHUNKS_IN_FLIGHT * self.targets.len() {
            self.settle_one().await;
        }
    }

    /// Waits for one unfinished write; false when none is left.
    async fn settle_one(&mut self) -> bool {
        let Some((i, len, result)) = self.in_flight.next().await else { return false };
        self.unsettled -= len;
        if let Err(e) = result {
            if !self.targets[i].failed {
                tracing::warn!(mailbox = %self.targets[i].mailbox, error = %e, "storing content failed");
            }
            self.targets[i].failed = true;
        }
        true
    }

    /// Links every stored message into its mailbox; one result per recipient, in order.
    pub async fn finish(mut self) -> Vec<DeliveryResult> {
        if self.next_index == 0 {
            // An empty body: the trace headers are the whole message.
            self.push(Vec::new()).await;
        }
        let remember = self.dedup.take().and_then(|(key, window)| Some((key.finish()?, window)));
        // The identity is whole once the last chunk is pushed, so the look-ups of an earlier copy
        // run while the last chunks are still being written: for a message of one chunk that is
        // one round trip to the store fewer before the 250.
        let mailboxes = self.targets.iter().map(|t| t.mailbox.clone()).collect();
        let lookups = earlier_copies(self.store.clone(), mailboxes, remember.as_ref().map(|(key, _)| *key));
        let (earlier, ()) = futures::join!(lookups, async { while self.settle_one().await {} });
        let commit = Commit {
            store: self.store.as_ref(),
            accounts: &self.accounts,
            max_age_ticks: self.max_age_ticks,
            now: MessageId::now_ticks(),
            remember,
        };
        let results = if self.out_of_room {
            vec![DeliveryResult::NoSpace; self.targets.len()]
        } else {
            join_all(self.targets.iter().zip(earlier).map(|(t, e)| commit.one(t, e))).await
        };
        // Content not linked (failed, refused, or a retry already stored) is orphaned; remove it
        // now rather than wait for repair.
        let unlinked: Vec<MessageId> = self
            .targets
            .iter()
            .zip(&results)
            .filter(|(_, r)| !matches!(r, DeliveryResult::Delivered { .. }))
            .map(|(t, _)| t.id)
            .collect();
        if !unlinked.is_empty() {
            let _ = self.store.delete_content(&unlinked).await;
        }
        results
    }

    /// Octets of each recipient's message (for metrics).
    pub fn sizes(&self) -> impl Iterator<Item = u64> + '_ {
        self.targets.iter().map(|t| t.size)
    }

    /// Drops what was stored (refused message, dropped connection). Best effort: repair removes
    /// anything left behind.
    pub async fn abort(mut self) {
        // Deleting under writes still in flight would leave what they write behind.
        while self.settle_one().await {}
        let ids: Vec<MessageId> = self.targets.iter().map(|t| t.id).collect();
        if let Err(e) = self.store.delete_content(&ids).await {
            tracing::debug!(error = %e, "cleanup of an aborted delivery failed; repair will do it");
        }
    }
}
