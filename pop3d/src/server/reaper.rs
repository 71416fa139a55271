//! Deletes the content of expunged messages after the QUIT reply.
//!
//! The listing rows are the commit point: once they are gone the messages are gone for every
//! client, so the `+OK` does not have to wait for their content (on the embedded store, freeing
//! the pages of big messages held the single writer for most of a QUIT). Content left behind by a
//! crash or a failed deletion is an orphan that repair removes. A few deletions run at a time;
//! past that a session deletes its own before replying, so a burst of QUITs cannot pile up
//! unbounded work.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::message_id::MessageId;
use crate::store::MailStore;

const IN_FLIGHT: u32 = 8;

pub struct Reaper {
    permits: Arc<Semaphore>,
}

impl Default for Reaper {
    fn default() -> Self {
        Self { permits: Arc::new(Semaphore::new(IN_FLIGHT as usize)) }
    }
}

impl Reaper {
    /// Deletes `ids`' content in the background, or now when enough deletions are running.
    pub async fn delete(&self, store: &Arc<dyn MailStore>, ids: Vec<MessageId>) {
        if ids.is_empty() {
            return;
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let store = store.clone();
                tokio::spawn(async move {
                    delete(store.as_ref(), &ids).await;
                    drop(permit);
                });
            }
            Err(_) => delete(store.as_ref(), &ids).await,
        }
    }

    /// Waits up to `limit` for the background deletions to finish (shutdown).
    pub async fn drain(&self, limit: Duration) {
        let all = self.permits.acquire_many(IN_FLIGHT);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::info!("content deletions still running at shutdown; repair will finish them");
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
        for _ in 0..(IN_FLIGHT + 3) {
            let id = MessageId::generate();
            deliver(store.as_ref(), "r@x", id, b"hello\r\n").await.unwrap();
            ids.push(id);
        }
        let reaper = Reaper::default();
        // More calls than permits: the last ones delete before returning.
        for id in &ids {
            reaper.delete(&store, vec![*id]).await;
        }
        reaper.drain(Duration::from_secs(30)).await;
        for id in ids {
            assert!(store.get_chunk(id, 0).await.unwrap().is_none(), "content of {id} deleted");
        }
    }
}
