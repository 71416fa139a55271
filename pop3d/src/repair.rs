//! Repair: finds what an interrupted delivery or expunge left behind and fixes it.
//!
//! - content without a listing row (a delivery died before its commit point, or an expunge died
//!   between its two steps) older than the grace period: the content is deleted;
//! - listing rows without content older than the grace period: the row is dropped;
//! - live listing rows below a mailbox's read watermark (they arrived after a long datacenter
//!   partition): the watermark is lowered so they show again.
//!
//! Progress is saved after every page, so a stopped run resumes; checks are rate-limited so a
//! run does not compete with mail traffic.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::message_id::MessageId;
use crate::store::{expunge, MailStore, RepairProgress, Result};

pub const TASK: &str = "repair";
const PAGE: usize = 200;

#[derive(Debug, Clone, Copy)]
pub struct RepairOptions {
    /// Only items older than this are touched: younger ones may be deliveries in flight.
    pub grace: Duration,
    /// Most checks per second.
    pub rate: u32,
    /// Start from the beginning even if a previous run stopped half-way.
    pub reset: bool,
}

impl Default for RepairOptions {
    fn default() -> Self {
        Self { grace: Duration::from_secs(3600), rate: 500, reset: false }
    }
}

/// A run's outcome as the admin API reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairStatus {
    pub running: bool,
    pub phase: String,
    pub checked: u64,
    pub fixed: u64,
    pub error: Option<String>,
    pub runs: u64,
}

struct Throttle {
    rate: f64,
    start: Instant,
    count: u64,
}

impl Throttle {
    async fn tick(&mut self) {
        self.count += 1;
        let due = Duration::from_secs_f64(self.count as f64 / self.rate);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

fn older_than(id: MessageId, grace: Duration) -> bool {
    let age_ticks = MessageId::now_ticks().saturating_sub(id.ticks());
    Duration::from_nanos(age_ticks.saturating_mul(100)) >= grace
}

/// Runs (or resumes) a repair; `report` sees the progress after every page.
pub async fn run(
    store: &dyn MailStore,
    options: RepairOptions,
    mut report: impl FnMut(&RepairProgress),
) -> Result<RepairProgress> {
    let mut p = match store.load_progress(TASK).await? {
        Some(p) if !options.reset && p.phase != "done" => p,
        _ => RepairProgress { phase: "content".into(), ..Default::default() },
    };
    let mut throttle = Throttle { rate: options.rate.max(1) as f64, start: Instant::now(), count: 0 };
    if p.phase == "content" {
        loop {
            let (page, next) = store.scan_content(p.cursor.clone(), PAGE).await?;
            for item in page {
                throttle.tick().await;
                p.checked += 1;
                if older_than(item.id, options.grace) && !store.has_listing(&item.mailbox, item.id).await? {
                    store.delete_content(&[item.id]).await?;
                    tracing::info!(mailbox = %item.mailbox, id = %item.id, "repair: removed content without listing row");
                    p.fixed += 1;
                }
            }
            p.cursor = next;
            if p.cursor.is_none() {
                p.phase = "listing".into();
            }
            store.save_progress(TASK, &p).await?;
            report(&p);
            if p.phase != "content" {
                break;
            }
        }
    }
    if p.phase == "listing" {
        loop {
            let (mailboxes, next) = store.scan_mailboxes(p.cursor.clone(), PAGE).await?;
            for mailbox in mailboxes {
                throttle.tick().await;
                p.checked += 1;
                if let Some(late) = store.live_row_below_watermark(&mailbox).await? {
                    store
                        .set_low_watermark(&mailbox, MessageId::floor_at_ticks(late.ticks().saturating_sub(1)))
                        .await?;
                    tracing::info!(%mailbox, id = %late, "repair: lowered the read watermark for a late row");
                    p.fixed += 1;
                }
                for entry in store.listing(&mailbox).await? {
                    throttle.tick().await;
                    p.checked += 1;
                    if entry.size > 0
                        && older_than(entry.id, options.grace)
                        && store.get_chunk(entry.id, 0).await?.is_none()
                    {
                        expunge(store, &mailbox, &[entry.id]).await?;
                        tracing::info!(%mailbox, id = %entry.id, "repair: dropped listing row without content");
                        p.fixed += 1;
                    }
                }
            }
            p.cursor = next;
            if p.cursor.is_none() {
                p.phase = "done".into();
            }
            store.save_progress(TASK, &p).await?;
            report(&p);
            if p.phase != "listing" {
                break;
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{deliver, embedded::EmbeddedStore, ListingEntry};
    use bytes::Bytes;

    /// An id made `secs` seconds ago.
    fn old_id(secs: u64) -> MessageId {
        let id = MessageId::generate();
        let ticks = id.ticks() - secs * 10_000_000;
        MessageId::from_sort_key(((ticks as u128) << 64) | (id.sort_key() & u64::MAX as u128))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixes_orphans_older_than_grace_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mb = "repair@example.com";
        // Orphan content, old and young.
        let (old_orphan, young_orphan) = (old_id(7200), MessageId::generate());
        for id in [old_orphan, young_orphan] {
            store.put_chunk(mb, id, 0, Bytes::from_static(b"x\r\n")).await.unwrap();
        }
        // A row without content, old; and a healthy message.
        let dangling = old_id(7200);
        store.link(mb, ListingEntry { id: dangling, size: 10 }).await.unwrap();
        let healthy = deliver(&store, mb, old_id(7200), b"ok\r\n").await.unwrap();

        let options = RepairOptions { grace: Duration::from_secs(3600), rate: 10_000, reset: false };
        let mut pages = 0;
        let p = run(&store, options, |_| pages += 1).await.unwrap();
        assert_eq!(p.phase, "done");
        assert_eq!(p.fixed, 2);
        assert!(pages >= 2);
        assert!(store.get_chunk(old_orphan, 0).await.unwrap().is_none(), "old orphan removed");
        assert!(store.get_chunk(young_orphan, 0).await.unwrap().is_some(), "young orphan kept (in flight)");
        assert_eq!(store.listing(mb).await.unwrap(), vec![healthy], "dangling row dropped, healthy kept");

        // A finished run starts over; a half-done one resumes from its saved phase.
        store
            .save_progress(TASK, &RepairProgress { phase: "listing".into(), cursor: None, checked: 5, fixed: 1 })
            .await
            .unwrap();
        let p = run(&store, options, |_| {}).await.unwrap();
        assert_eq!((p.phase.as_str(), p.checked >= 5, p.fixed), ("done", true, 1));
    }
}
