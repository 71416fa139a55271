//! Group commit for the embedded store. redb lets one write transaction run at a time and each
//! durable commit is an fsync, so a transaction per write made every delivery's chunks, every
//! listing row and every QUIT wait in line for the fsyncs of all the others (the flame graph put
//! 61 % of pop3d's CPU in those transactions, and an embedded QUIT p50 at four times Dovecot's).
//! Here one thread owns the writing: the writes queued while a commit runs go into the next
//! transaction together and share its one fsync.
//!
//! Each write keeps its own promise: its caller hears `Ok` only after the transaction holding it
//! committed, at `Durability::Immediate` when any write in it asked for that. A batch that fails is
//! not blamed on every write in it: each write is then tried again alone, so one bad write fails
//! only its own caller.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::unavailable;
use crate::store::Result;

/// A write, applied to the transaction of its batch. It may run a second time (alone, in a fresh
/// transaction) when its batch failed, so it must not consume what it captured.
pub(super) type Work = Box<dyn Fn(&WriteTransaction) -> Result<()> + Send>;

/// A batch stops growing at either bound, so no transaction holds an unbounded amount of data
/// in redb's dirty pages and no write waits behind an unbounded batch.
const MAX_BATCH_WRITES: usize = 256;
const MAX_BATCH_BYTES: usize = 16 << 20;

struct Job {
    /// The database the write is for: a reopened store (after an I/O error) is a new one, and
    /// writes for the old one never share its transactions.
    db: Arc<Database>,
    durable: bool,
    bytes: usize,
    work: Work,
    reply: oneshot::Sender<Result<()>>,
}

/// Counts for metrics and tests.
#[derive(Default)]
pub(super) struct Counts {
    pub transactions: AtomicU64,
    pub writes: AtomicU64,
    /// Writes sent and not yet taken into a batch.
    pub queued: AtomicUsize,
}

pub(super) struct GroupCommit {
    queue: mpsc::Sender<Job>,
    pub counts: Arc<Counts>,
}

impl GroupCommit {
    /// Starts the writer thread; it ends when this is dropped and the queue has drained.
    pub fn start() -> std::io::Result<Self> {
        let (queue, writes) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        std::thread::Builder::new().name("redb-writer".into()).spawn(move || writer(&writes, &shared))?;
        Ok(Self { queue, counts })
    }

    /// Applies `work` in the next transaction of `db` and waits for its commit. `bytes` is the
    /// size of what it writes, for the batch bound.
    pub async fn write(&self, db: Arc<Database>, durability: Durability, bytes: usize, work: Work) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let durable = matches!(durability, Durability::Immediate);
        self.counts.queued.fetch_add(1, Ordering::SeqCst);
        if self.queue.send(Job { db, durable, bytes, work, reply }).is_err() {
            self.counts.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(unavailable("the store's writer thread has stopped"));
        }
        answer.await.map_err(|_| unavailable("the store's writer thread stopped before committing"))?
    }
}

fn writer(writes: &mpsc::Receiver<Job>, counts: &Counts) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match writes.recv() {
                Ok(job) => taken(job, counts),
                Err(_) => return, // the store is gone and nothing is queued
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_WRITES && bytes < MAX_BATCH_BYTES {
            match writes.try_recv().map(|job| taken(job, counts)) {
                Ok(job) if Arc::ptr_eq(&job.db, &batch[0].db) => {
                    bytes += job.bytes;
                    batch.push(job);
                }
                Ok(job) => {
                    held = Some(job); // for a reopened database: it starts the next batch
                    break;
                }
                Err(_) => break,
            }
        }
        commit(batch, counts);
    }
}

fn taken(job: Job, counts: &Counts) -> Job {
    counts.queued.fetch_sub(1, Ordering::SeqCst);
    job
}

fn commit(batch: Vec<Job>, counts: &Counts) {
    let db = batch[0].db.clone();
    counts.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
    let together = guarded(|| apply(&db, &batch, counts));
    if together.is_ok() || batch.len() == 1 {
        for job in batch {
            let _ = job.reply.send(together.clone());
        }
        return;
    }
    for job in batch {
        let alone = guarded(|| apply(&db, std::slice::from_ref(&job), counts));
        let _ = job.reply.send(alone);
    }
}

/// Runs `f`, turning a panic into an error: the thread is every write's, so a panic in one
/// write (a bug) must fail that write, not stop the store. The transaction it was in is dropped
/// uncommitted, which aborts it.
fn guarded(f: impl FnOnce() -> Result<()>) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(unavailable("a store write panicked; see the log")))
}

/// One transaction with every write of `jobs`, durable if any of them asked for it.
fn apply(db: &Database, jobs: &[Job], counts: &Counts) -> Result<()> {
    let mut txn = db.begin_write().map_err(unavailable)?;
    let durable = jobs.iter().any(|j| j.durable);
    txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(unavailable)?;
    for job in jobs {
        (job.work)(&txn)?;
    }
    txn.commit().map_err(unavailable)?;
    counts.transactions.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use redb::{ReadableDatabase, TableDefinition};

    use super::*;
    use crate::store::StoreError;

    const T: TableDefinition<u32, u32> = TableDefinition::new("t");

    fn database() -> (tempfile::TempDir, Arc<Database>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        (dir, Arc::new(db))
    }

    fn put(key: u32) -> Work {
        Box::new(move |txn| {
            txn.open_table(T).map_err(unavailable)?.insert(key, key).map_err(unavailable)?;
            Ok(())
        })
    }

    fn stored(db: &Database) -> Vec<u32> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(T).unwrap();
        redb::ReadableTable::iter(&table).unwrap().map(|r| r.unwrap().0.value()).collect()
    }

    /// Starts a write that holds the writer until the returned sender is dropped, so the next
    /// writes queue up behind it; returns once it runs.
    async fn hold_writer(
        writer: &Arc<GroupCommit>,
        db: &Arc<Database>,
    ) -> (mpsc::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
        let (release, held) = mpsc::channel::<()>();
        let (running, started) = oneshot::channel();
        let running = Mutex::new(Some(running));
        let held = Mutex::new(held);
        let work: Work = Box::new(move |txn| {
            if let Some(tx) = running.lock().unwrap().take() {
                let _ = tx.send(());
            }
            let _ = held.lock().unwrap().recv();
            txn.open_table(T).map_err(unavailable)?.insert(0, 0).map_err(unavailable)?;
            Ok(())
        });
        let (w, d) = (writer.clone(), db.clone());
        let first = tokio::spawn(async move { w.write(d, Durability::Immediate, 0, work).await });
        started.await.unwrap();
        (release, first)
    }

    async fn queued(writer: &GroupCommit, n: usize) {
        while writer.counts.queued.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn writes_queued_during_a_commit_share_the_next_transaction() {
        let (_dir, db) = database();
        let writer = Arc::new(GroupCommit::start().unwrap());
        let (release, first) = hold_writer(&writer, &db).await;
        let rest: Vec<_> = (1..=20)
            .map(|k| {
                let (w, d) = (writer.clone(), db.clone());
                let durability = if k % 2 == 0 { Durability::Immediate } else { Durability::None };
                tokio::spawn(async move { w.write(d, durability, 4, put(k)).await })
            })
            .collect();
        queued(&writer, 20).await;
        drop(release);
        first.await.unwrap().unwrap();
        for write in rest {
            write.await.unwrap().unwrap();
        }
        assert_eq!(stored(&db), (0..=20).collect::<Vec<_>>());
        assert_eq!(writer.counts.writes.load(Ordering::Relaxed), 21);
        assert_eq!(writer.counts.transactions.load(Ordering::Relaxed), 2, "the held write, then all 20 together");
    }

    #[tokio::test]
    async fn a_failing_write_fails_alone_and_the_rest_of_its_batch_commits() {
        let (_dir, db) = database();
        let writer = Arc::new(GroupCommit::start().unwrap());
        let (release, first) = hold_writer(&writer, &db).await;
        let spawn = |work: Work| {
            let (w, d) = (writer.clone(), db.clone());
            tokio::spawn(async move { w.write(d, Durability::Immediate, 0, work).await })
        };
        let good_before = spawn(put(1));
        let bad = spawn(Box::new(|txn| {
            txn.open_table(T).map_err(unavailable)?.insert(99, 99).map_err(unavailable)?;
            Err(StoreError::Failed("refused on purpose".into()))
        }));
        let good_after = spawn(put(2));
        queued(&writer, 3).await;
        drop(release);
        first.await.unwrap().unwrap();
        good_before.await.unwrap().unwrap();
        good_after.await.unwrap().unwrap();
        let refused = bad.await.unwrap().unwrap_err();
        assert!(matches!(refused, StoreError::Failed(m) if m.contains("on purpose")));
        assert_eq!(stored(&db), vec![0, 1, 2], "the failed write left nothing, the others are all there");
        // The held write; the batch of three (rolled back); then each of the three alone.
        assert_eq!(writer.counts.transactions.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_alone_and_the_writer_lives_on() {
        let (_dir, db) = database();
        let writer = Arc::new(GroupCommit::start().unwrap());
        let panicking: Work = Box::new(|_| panic!("a bug in one write"));
        let refused = writer.write(db.clone(), Durability::Immediate, 0, panicking).await.unwrap_err();
        assert!(matches!(refused, StoreError::Unavailable(m) if m.contains("panicked")));
        writer.write(db.clone(), Durability::Immediate, 0, put(7)).await.unwrap();
        assert_eq!(stored(&db), vec![7]);
    }
}
