//! The listing read, robust to a partition full of tombstones.
//!
//! Cassandra aborts a read that scans more than `tombstone_failure_threshold` tombstones (100,000
//! by default) with a read failure. The read watermark (ADR 5) skips deleted history older than
//! the margin, but a mailbox that deleted more than that within the margin (a device downloading
//! and deleting a flood) would fail every login until the margin passed. So when a read fails that
//! way, its id range is cut in two at a point in time and each half is read on its own, again and
//! again where needed: each query then scans only its share of the tombstones. A mailbox without
//! that history pays nothing: its first read succeeds.

use futures::TryStreamExt;
use scylla::errors::{DbError, NextPageError, NextRowError, PagerExecutionError, RequestAttemptError, RequestError};
use scylla::value::CqlTimeuuid;

use super::{errors, message_id, timeuuid, CassandraStore};
use crate::message_id::MessageId;
use crate::store::{ListingEntry, Result, StoreError};

/// Most queries one listing may take while splitting; past that the failure is reported.
const MAX_QUERIES: usize = 256;
/// Narrowest slice worth splitting further (1 ms of ids).
const MIN_SLICE_TICKS: u64 = 10_000;

/// How a read of one slice failed; the first two are reasons to read a narrower slice.
pub(super) enum SliceError {
    /// Cassandra refused the read (in practice: too many tombstones in the slice).
    ReadFailure(StoreError),
    /// The replicas did not finish in time: too much to scan, or a replica is slow.
    Timeout(StoreError),
    Other(StoreError),
}

/// Which [`SliceError`] a failed page is, the error itself sorted by [`errors`].
fn classify(e: &NextPageError, error: StoreError) -> SliceError {
    let db = match e {
        NextPageError::RequestFailure(RequestError::LastAttemptError(RequestAttemptError::DbError(db, _))) => Some(db),
        _ => None,
    };
    match db {
        Some(DbError::ReadFailure { .. }) => SliceError::ReadFailure(error),
        Some(DbError::ReadTimeout { .. }) => SliceError::Timeout(error),
        _ => SliceError::Other(error),
    }
}

pub(super) fn from_pager(e: PagerExecutionError) -> SliceError {
    match &e {
        PagerExecutionError::NextPageError(p) => {
            let page = p.clone();
            classify(&page, errors::pager(e))
        }
        _ => SliceError::Other(errors::pager(e)),
    }
}

pub(super) fn from_row(e: NextRowError) -> SliceError {
    match &e {
        NextRowError::NextPageError(p) => {
            let page = p.clone();
            classify(&page, errors::next_row(e))
        }
        _ => SliceError::Other(errors::next_row(e)),
    }
}

impl CassandraStore {
    /// Every live listing row of `mailbox` with an id at or above `floor`, oldest first.
    pub(super) async fn listing_from_floor(
        &self,
        mailbox: &str,
        floor: Option<CqlTimeuuid>,
    ) -> Result<Vec<ListingEntry>> {
        let start = match floor {
            Some(f) => message_id(f)?.ticks(),
            None => 0,
        };
        // Ranges still to read, as [lo, hi) in ticks (hi None: no upper bound); popped from the
        // end, so pushing the upper half first keeps the output in id order.
        let mut todo = vec![(start, None::<u64>)];
        let mut out = Vec::new();
        let mut queries = 0;
        while let Some((lo, hi)) = todo.pop() {
            queries += 1;
            match self.listing_slice(mailbox, lo, hi).await {
                Ok(mut rows) => out.append(&mut rows),
                // A timeout is a slow replica as often as a heavy slice: splitting would multiply
                // the wait at login, so it is reported at once.
                Err(SliceError::Other(e) | SliceError::Timeout(e)) => return Err(e),
                Err(SliceError::ReadFailure(e)) => {
                    // An open range ends, for splitting, a little past now: no id is made later.
                    let top = hi.unwrap_or_else(|| MessageId::now_ticks().max(lo) + 600 * 10_000_000);
                    if queries >= MAX_QUERIES || top.saturating_sub(lo) < 2 * MIN_SLICE_TICKS {
                        return Err(e);
                    }
                    let mid = lo + (top - lo) / 2;
                    tracing::debug!(%mailbox, lo, mid, "listing slice failed (tombstones?); splitting it");
                    todo.push((mid, hi));
                    todo.push((lo, Some(mid)));
                }
            }
        }
        if queries > 1 {
            tracing::info!(%mailbox, queries, rows = out.len(), "listing read in slices past a mass of tombstones");
        }
        Ok(out)
    }

    async fn listing_slice(&self, mailbox: &str, lo: u64, hi: Option<u64>) -> Result<Vec<ListingEntry>, SliceError> {
        let from = timeuuid(MessageId::floor_at_ticks(lo));
        let pager = match hi {
            None => self.session.execute_iter(self.s.listing_from.clone(), (mailbox, from)).await,
            Some(hi) => {
                let to = timeuuid(MessageId::floor_at_ticks(hi));
                self.session.execute_iter(self.s.listing_between.clone(), (mailbox, from, to)).await
            }
        }
        .map_err(from_pager)?;
        let mut rows = pager.rows_stream::<(CqlTimeuuid, i64)>().map_err(|e| SliceError::Other(errors::failed(e)))?;
        let mut out = Vec::new();
        while let Some((id, size)) = rows.try_next().await.map_err(from_row)? {
            let id = message_id(id).map_err(SliceError::Other)?;
            out.push(ListingEntry { id, size: size.max(0) as u64 });
        }
        Ok(out)
    }
}
