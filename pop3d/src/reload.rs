//! Files reloaded while the server runs (TLS certificates, the OAuth JWKS): a poller that
//! rereads them and reports changes, keeping the previous version when a new one is broken.
//!
//! Polling the contents is cheaper than it sounds (a few small files every few seconds) and
//! more reliable than mtimes or inotify: Kubernetes updates Secret volumes by swapping a symlink,
//! and two writes within a second can share an mtime.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Loaded,
    /// The new contents were refused (or unreadable); the old version stays in use.
    Failed(String),
}

/// Something that can check its files again.
pub trait Reloadable: Send + Sync + 'static {
    /// For logs: what is reloaded (e.g. "TLS certificate").
    fn what(&self) -> &'static str;
    fn reload_if_changed(&self) -> Reload;
}

/// Polls `item` every `interval` until `stop` changes; logs a load once and a failure once per
/// distinct error, so a broken file does not flood the log.
pub async fn watch_files(item: Arc<dyn Reloadable>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let it = item.clone();
        match tokio::task::spawn_blocking(move || it.reload_if_changed()).await {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Loaded) => {
                last_error = None;
                tracing::info!(what = item.what(), "reloaded");
            }
            Ok(Reload::Failed(e)) => {
                if last_error.as_ref() != Some(&e) {
                    tracing::error!(what = item.what(), error = %e, "not reloaded; the previous version stays in use");
                    last_error = Some(e);
                }
            }
            Err(e) => tracing::error!(what = item.what(), error = %e, "reload task failed"),
        }
    }
}
