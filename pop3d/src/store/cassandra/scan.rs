//! Repair's full-table scans, walked by token range so that tombstones cannot stop them.
//!
//! A driver-paged `SELECT DISTINCT` over a whole table fails for good when one page meets more
//! tombstones than Cassandra scans in one read (`tombstone_failure_threshold`): a mailbox that
//! downloaded and deleted 100,000 messages within gc_grace makes the listing scan fail at that
//! partition on every run, for ten days. So each page here reads an explicit token range, the
//! cursor is the last token done, and a range that fails is halved until it reads: the heavy
//! partition ends up alone in a sliver of the ring. Its name is then taken from tables without
//! those tombstones (`accounts`, `mailbox_state`: mail is only ever delivered to an account, and
//! every session that deleted mail wrote its watermark), and the walk goes on past it.
//! Many deleted content partitions make a range slow rather than refused; halving on a timeout
//! covers that, a few times only, since a timeout is just as often a slow replica.

use futures::TryStreamExt;
use scylla::deserialize::row::DeserializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimeuuid;

use super::listing::{from_pager, from_row, SliceError};
use super::{errors, message_id, CassandraStore};
use crate::store::{ContentRef, Result, StoreError};

/// Ranges narrower than this (out of 2^64 tokens) are not halved further.
const MIN_SPAN: u64 = 1 << 24;
/// Most halvings of one page after timeouts, before the timeout is reported.
const MAX_TIMEOUT_SPLITS: u32 = 8;

/// Cursor of a token walk: the last token done, in decimal. A cursor from an older release (a
/// driver paging state) does not parse and restarts the phase, which repair tolerates.
fn start_after(cursor: Option<String>) -> i64 {
    cursor.and_then(|c| c.parse().ok()).unwrap_or(i64::MIN)
}

/// Murmur3 never gives a key the token i64::MIN, so (i64::MIN, i64::MAX] is the whole ring.
fn next_cursor(done_through: i64) -> Option<String> {
    (done_through != i64::MAX).then(|| done_through.to_string())
}

fn span(lo: i64, hi: i64) -> u64 {
    (hi as i128 - lo as i128) as u64
}

/// What a page of a token walk found, in token order.
enum Piece<R> {
    Row(R),
    /// (lo, hi] is narrow and still cannot be read: the caller decides what it holds.
    Stuck {
        lo: i64,
        hi: i64,
        error: StoreError,
    },
}

impl CassandraStore {
    /// One page of a token walk with `statement` (binding lo, hi, limit; each row ending with
    /// the token of its partition): up to `limit` rows from the cursor on, reading a range that
    /// fails as its two halves, depth first so the pieces stay in token order.
    async fn token_page<R>(
        &self,
        statement: &PreparedStatement,
        cursor: Option<String>,
        limit: usize,
        token: impl Fn(&R) -> i64,
    ) -> Result<(Vec<Piece<R>>, Option<String>)>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let mut todo = vec![(start_after(cursor), i64::MAX)];
        let (mut out, mut rows) = (Vec::new(), 0);
        let (mut splits, mut timeouts) = (0u32, 0u32);
        while let Some((lo, hi)) = todo.pop() {
            let error = match self.token_slice::<R>(statement, lo, hi, limit - rows).await {
                Ok(slice) => {
                    rows += slice.len();
                    let last = slice.last().map(&token);
                    out.extend(slice.into_iter().map(Piece::Row));
                    match last {
                        // The page is full inside this range: the next one resumes after it.
                        Some(t) if rows >= limit => {
                            if splits > 0 {
                                tracing::info!(splits, "scan page read past a heavy token range");
                            }
                            return Ok((out, next_cursor(t)));
                        }
                        _ => continue,
                    }
                }
                Err(SliceError::Other(e)) => return Err(e),
                Err(SliceError::Timeout(e)) if timeouts >= MAX_TIMEOUT_SPLITS => return Err(e),
                Err(SliceError::Timeout(e)) => {
                    timeouts += 1;
                    e
                }
                Err(SliceError::ReadFailure(e)) => e,
            };
            if span(lo, hi) < 2 * MIN_SPAN {
                out.push(Piece::Stuck { lo, hi, error });
                continue;
            }
            splits += 1;
            let mid = (lo as i128 + (span(lo, hi) / 2) as i128) as i64;
            tracing::debug!(lo, mid, hi, %error, "scan of a token range failed; reading its halves");
            todo.push((mid, hi));
            todo.push((lo, mid));
        }
        if splits > 0 {
            tracing::info!(splits, "scan page read past a heavy token range");
        }
        Ok((out, None))
    }

    async fn token_slice<R>(
        &self,
        statement: &PreparedStatement,
        lo: i64,
        hi: i64,
        limit: usize,
    ) -> Result<Vec<R>, SliceError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let pager = self.session.execute_iter(statement.clone(), (lo, hi, limit as i32)).await.map_err(from_pager)?;
        let mut rows = pager.rows_stream::<R>().map_err(|e| SliceError::Other(errors::failed(e)))?;
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(from_row)? {
            out.push(row);
        }
        Ok(out)
    }

    pub(super) async fn scan_content_by_token(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<ContentRef>, Option<String>)> {
        let (pieces, next) =
            self.token_page::<(CqlTimeuuid, Option<String>, i64)>(&self.s.scan_content, cursor, limit, |r| r.2).await?;
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Row((id, mailbox, _)) => {
                    out.push(ContentRef { id: message_id(id)?, mailbox: mailbox.unwrap_or_default() })
                }
                // No partition of `content` holds many tombstones (a message has at most a few
                // hundred chunks), so a sliver that still fails is an outage, not a heavy key.
                Piece::Stuck { error, .. } => return Err(error),
            }
        }
        Ok((out, next))
    }

    pub(super) async fn scan_mailboxes_by_token(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>)> {
        let (pieces, next) = self.token_page::<(String, i64)>(&self.s.scan_mailboxes, cursor, limit, |r| r.1).await?;
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Row((mailbox, _)) => out.push(mailbox),
                Piece::Stuck { lo, hi, error } => {
                    let mut names = Vec::new();
                    for statement in [&self.s.accounts_in_range, &self.s.mailbox_states_in_range] {
                        let rows = self
                            .token_slice::<(String, i64)>(statement, lo, hi, 100_000)
                            .await
                            .map_err(|_| error.clone())?;
                        names.extend(rows.into_iter().map(|r| r.0));
                    }
                    names.sort();
                    names.dedup();
                    tracing::warn!(
                        lo, hi, mailboxes = ?names,
                        "listing scan cannot read this token range (a mailbox with mass deletions); \
                         took its mailboxes from accounts and mailbox_state"
                    );
                    out.extend(names);
                }
            }
        }
        Ok((out, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_cover_the_ring_once() {
        assert_eq!(start_after(None), i64::MIN);
        assert_eq!(start_after(Some("-42".into())), -42);
        // A paging state from an older release restarts the phase.
        assert_eq!(start_after(Some("0a1b2c".into())), i64::MIN);
        assert_eq!(next_cursor(i64::MAX), None);
        assert_eq!(next_cursor(7), Some("7".into()));
        assert_eq!(span(i64::MIN, i64::MAX), u64::MAX);
        assert_eq!(span(-5, 5), 10);
    }
}
