//! Deletes the content of expunged messages after the QUIT reply.
//!
//! The listing rows are the commit point: once they are gone the messages are gone for every
//! client, so the `+OK` does not have to wait for their content. One background task deletes
//! what every session queued, many sessions' messages per call: on the embedded store this turns
//! a burst of QUITs, each freeing its messages' pages in its own transaction on the single
//! writer, into a few transactions behind the replies. Content left behind by a crash or a failed
//! deletion is an orphan that repair removes. Past `MAX_QUEUED` messages waiting, a session
//! deletes its own before replying, so the queue cannot grow without bound.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::message_id::MessageId;
use crate::store::MailStore;

const MAX_QUEUED: usize = 100_000;
/// Messages per `delete_content` call: bounds one transaction (embedded) or burst (Cassandra).
const BATCH: usize = 1_000;

#[derive(Default)]
struct Queue {
    ids: Vec<MessageId>,
    /// A task is deleting (it takes the queue until it finds it empty).
    running: bool,
}

#[derive(Default)]
pub struct Reaper {
    queue: Arc<Mutex<Queue>>,
}

impl Reaper {
    /// Queues `ids`' content for deletion, or deletes it now when the queue is full.
    pub async fn delete(&self, store: &Arc<dyn MailStore>, ids: Vec<MessageId>) {
        if ids.is_empty() {
            return;
        }
        let start = {
            let mut q = self.queue.lock().expect("reaper lock");
            if q.ids.len() + ids.len() > MAX_QUEUED {
                None
            } else {
                q.ids.extend_from_slice(&ids);
                Some(!std::mem::replace(&mut q.running, true))
            }
        };
        match start {
            None => delete(store.as_ref(), &ids).await,
            Some(true) => {
                tokio::spawn(work(self.queue.clone(), store.clone()));
            }
            Some(false) => {}
        }
    }

    /// Waits up to `limit` for the queue to empty (shutdown).
    pub async fn drain(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.queue.lock().expect("reaper lock").running {
            if Instant::now() > deadline {
                tracing::info!("content deletions still queued at shutdown; repair will finish them");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn work(queue: Arc<Mutex<Queue>>, store: Arc<dyn MailStore>) {
    loop {
        let ids = {
            let mut q = queue.lock().expect("reaper lock");
            if q.ids.is_empty() {
                q.running = false;
                return;
            }
            std::mem::take(&mut q.ids)
        };
        for batch in ids.chunks(BATCH) {
            delete(store.as_ref(), batch).await;
        }
    }
}

async fn delete(store: &dyn MailStore, ids: &[MessageId]) {
    if let Err(e) = store.delete_content(ids).await {
        tracing::warn!(error = %e, messages = ids.len(), "deleting expunged content failed; repair will remove it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{deliver, embedded::EmbeddedStore};

    #[tokio::test]
    async fn deletes_in_the_background_and_drain_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MailStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let mut ids = Vec::new();
        for _ in 0..20 {
            let id = MessageId::generate();
            deliver(store.as_ref(), "r@x", id, b"hello\r\n").await.unwrap();
            ids.push(id);
        }
        let reaper = Reaper::default();
        for id in &ids {
            reaper.delete(&store, vec![*id]).await;
        }
        reaper.drain(Duration::from_secs(30)).await;
        for id in ids {
            assert!(store.get_chunk(id, 0).await.unwrap().is_none(), "content of {id} deleted");
        }
    }
}
