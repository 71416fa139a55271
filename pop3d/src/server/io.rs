//! I/O helpers both protocol drivers use: bounded reads, command pacing, and the clock that
//! decides when a quiet or slow connection is cut.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

use super::conn::Conn;
use super::front::HANDSHAKE_TIMEOUT;
use super::limits::CommandRate;
use crate::context::ServerContext;

/// STLS / STARTTLS: flushes the plaintext reply, runs the handshake and counts it under
/// `protocol` (`pop3` or `lmtp`). False when no certificate is configured (the engines never ask
/// then; the caller closes).
pub async fn upgrade_to_tls(
    out: &mut BufWriter<Conn>,
    ctx: &ServerContext,
    protocol: &'static str,
) -> std::io::Result<bool> {
    out.flush().await?;
    let Some(acceptor) = ctx.tls.as_ref() else { return Ok(false) };
    let result = out.get_mut().start_tls(acceptor, HANDSHAKE_TIMEOUT).await;
    ctx.metrics.tls_handshake(protocol, &result);
    result.map(|()| true)
}

/// After shutdown begins, a session still answers a client that keeps talking (the command it was
/// sending, the rest of its transaction, its QUIT) and is closed once the client falls quiet this
/// long: a rollout then cuts almost nothing, while the server's own drain bound still caps it all.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Where a session stands with respect to shutdown.
#[derive(Default)]
pub struct Drain {
    draining: bool,
    /// An LMTP transaction ended since shutdown began.
    transaction_ended: bool,
}

impl Drain {
    /// The read deadline: `deadline`, or sooner while draining.
    pub fn deadline(&self, deadline: Instant) -> Instant {
        if self.draining {
            deadline.min(Instant::now() + DRAIN_IDLE)
        } else {
            deadline
        }
    }

    /// Shutdown began: from now on a quiet client is closed (true the first time only).
    pub fn begin(&mut self) -> bool {
        !std::mem::replace(&mut self.draining, true)
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    pub fn transaction_ended(&mut self) {
        self.transaction_ended |= self.draining;
    }

    /// LMTP: a transaction ended since shutdown began, so the session ends at this boundary
    /// rather than carry the MTA's next message (which it sends again on a new connection, to a
    /// server that is not going away: a client's cached connection is closed between
    /// transactions, never in the middle of one).
    pub fn at_transaction_boundary(&self) -> bool {
        self.draining && self.transaction_ended
    }
}

/// Reads what is there, or `None` once `deadline` passes.
pub async fn read_until<R: AsyncRead + Unpin>(
    deadline: Instant,
    reader: &mut R,
    buf: &mut [u8],
) -> Option<std::io::Result<usize>> {
    tokio::time::timeout_at(deadline.into(), reader.read(buf)).await.ok()
}

/// Slows a session down once it sends commands faster than its rate allows.
pub async fn pace<W: AsyncWrite + Unpin>(
    rate: &mut CommandRate,
    counted: &mut u64,
    commands: u64,
    out: &mut BufWriter<W>,
) -> std::io::Result<()> {
    if commands == *counted {
        return Ok(());
    }
    let pause = rate.take(commands - *counted, Instant::now());
    *counted = commands;
    if !pause.is_zero() {
        out.flush().await?;
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

/// The idle timer, counted from the last *complete* command line rather than the last byte: a
/// client trickling one byte a second used to keep a connection open for ever, each byte
/// resetting the timer.
pub struct IdleClock {
    timeout: Duration,
    last_progress: Instant,
    commands: u64,
}

impl IdleClock {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, last_progress: Instant::now(), commands: 0 }
    }

    /// Notes the session's command count; the clock restarts when it moved.
    pub fn commands(&mut self, commands: u64) {
        if commands != self.commands {
            self.commands = commands;
            self.last_progress = Instant::now();
        }
    }

    /// Restarts the clock for progress that is not a command (message content arriving).
    pub fn progress(&mut self) {
        self.last_progress = Instant::now();
    }

    pub fn deadline(&self) -> Instant {
        self.last_progress + self.timeout
    }
}

/// Message content must keep arriving at `rate` octets per second on average once `GRACE` has
/// passed: a client trickling DATA could otherwise hold a connection and a delivery open for as
/// long as each byte came before the idle timeout.
pub struct DataPace {
    started: Instant,
    received: u64,
    rate: u64,
}

impl DataPace {
    pub const GRACE: Duration = Duration::from_secs(30);

    /// `rate` 0: no minimum.
    pub fn new(rate: u64) -> Self {
        Self { started: Instant::now(), received: 0, rate }
    }

    pub fn received(&mut self, octets: usize) {
        self.received += octets as u64;
    }

    /// When the content received so far stops being enough.
    pub fn deadline(&self) -> Option<Instant> {
        (self.rate > 0)
            .then(|| self.started + Self::GRACE + Duration::from_secs_f64(self.received as f64 / self.rate as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_clock_moves_only_on_new_commands() {
        let mut clock = IdleClock::new(Duration::from_secs(10));
        let first = clock.deadline();
        std::thread::sleep(Duration::from_millis(5));
        clock.commands(0);
        assert_eq!(clock.deadline(), first, "no complete command: the clock does not move");
        clock.commands(1);
        assert!(clock.deadline() > first);
    }

    #[test]
    fn data_deadline_grows_with_what_arrived() {
        let mut pace = DataPace::new(1024);
        let start = pace.deadline().unwrap();
        pace.received(2048);
        assert_eq!(pace.deadline().unwrap() - start, Duration::from_secs(2));
        assert!(DataPace::new(0).deadline().is_none());
    }
}
