//! Open-loop arrivals, shared by the LMTP deliveries and the LWT baseline so that both targets
//! are offered exactly the same load.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One arrival: its number, when it was due, and its slot among the `concurrency` in flight,
/// which the task drops as soon as its work is done (before any bookkeeping).
pub struct Arrival {
    pub index: u64,
    pub due: Instant,
    pub permit: OwnedSemaphorePermit,
}

/// Starts `total` arrivals at `rate` per second from `start` with at most `concurrency` in
/// flight; `arrive` builds each one's task in order (so a seeded generator stays reproducible).
/// Returns the time from `start` until the last task finished.
pub async fn open_loop<F, Fut>(
    start: Instant,
    rate: f64,
    total: u64,
    concurrency: usize,
    mut arrive: F,
) -> Result<Duration>
where
    F: FnMut(Arrival) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(total as usize);
    for index in 0..total {
        // Open loop: arrival i is due at start + i/rate whatever happened before. If all permits
        // are busy we fall behind, and the latency of the late arrivals counts from when they
        // were due, so a slow server cannot hide its queueing (no coordinated omission).
        let due = start + Duration::from_secs_f64(index as f64 / rate);
        tokio::time::sleep_until(due).await;
        let permit = permits.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(arrive(Arrival { index, due, permit })));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn paced_and_bounded() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut dues = Vec::new();
        let elapsed = open_loop(start, 10.0, 20, 3, |a| {
            dues.push(a.due - start);
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            async move {
                let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                // Slower than the arrivals, so the permits are what limits concurrency.
                tokio::time::sleep(Duration::from_millis(500)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                drop(a.permit);
            }
        })
        .await
        .unwrap();
        assert_eq!(dues.len(), 20);
        assert_eq!(dues[10], Duration::from_secs(1), "due times follow the rate, not the completions");
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        // 20 tasks of 0.5 s, 3 at a time: 7 waves.
        assert!(elapsed >= Duration::from_millis(3500), "{elapsed:?}");
    }
}
