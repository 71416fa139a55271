//! The tokio wrapper around the LMTP engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::watch;

use super::conn::Conn;
use super::delivery::{Delivery, Policy, Quota};
use super::front::Client;
use super::io::{pace, read_until, upgrade_to_tls, DataPace, Drain, IdleClock};
use super::limits::CommandRate;
use crate::context::ServerContext;
use crate::lmtp::reply::Reply;
use crate::lmtp::{DeliveryResult, Envelope, LmtpConfig, RcptCheck, Session, Step};
use crate::metrics::ResultLabel;
use crate::store::CHUNK_SIZE;

/// Most recipients of one transaction (RFC 5321 4.5.3.1.8 asks for at least 100).
const MAX_RECIPIENTS: usize = 1000;

pub async fn handle(client: Client, ctx: Arc<ServerContext>, stop: watch::Receiver<bool>) {
    let mut delivery = None;
    let peer = client.peer;
    if let Err(e) = session(client, &ctx, stop, &mut delivery).await {
        tracing::debug!(%peer, error = %e, "lmtp connection ended with an error");
    }
    // A connection lost in the middle of DATA leaves content nobody will link.
    if let Some(d) = delivery.take() {
        Delivery::abort(d).await;
    }
}

/// The clocks that bound a connection: idle (from the last complete command), the whole
/// transaction, and the pace of its data.
struct Deadlines {
    idle: IdleClock,
    transaction: Option<Instant>,
    data: Option<DataPace>,
}

impl Deadlines {
    /// Follows the session's commands and transaction; false while no transaction is open.
    fn follow(&mut self, session: &Session, transaction_timeout: std::time::Duration) -> bool {
        self.idle.commands(session.commands());
        if !session.in_transaction() {
            self.transaction = None;
            return false;
        }
        self.transaction.get_or_insert_with(|| Instant::now() + transaction_timeout);
        true
    }

    /// The next deadline and the reply for it, or `None` for the plain idle timeout.
    fn next(&self) -> (Instant, Option<&'static str>) {
        let mut next = (self.idle.deadline(), None);
        if let Some(t) = self.transaction.filter(|t| *t < next.0) {
            next = (t, Some("Transaction timeout"));
        }
        if let Some(d) = self.data.as_ref().and_then(DataPace::deadline).filter(|d| *d < next.0) {
            next = (d, Some("Data too slow"));
        }
        next
    }
}

async fn session(
    client: Client,
    ctx: &ServerContext,
    mut stop: watch::Receiver<bool>,
    delivery: &mut Option<Delivery>,
) -> std::io::Result<()> {
    let Client { conn, peer, secure } = client;
    let config = &ctx.config;
    let mut out = BufWriter::new(conn);
    let mut session = Session::new(session_config(ctx, secure));
    let mut rate = CommandRate::new(config.max_commands_per_second, Instant::now());
    let mut counted = 0;
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut clocks = Deadlines { idle: IdleClock::new(config.idle_timeout), transaction: None, data: None };
    // Quotas of this transaction's recipients, read at RCPT.
    let mut quotas: HashMap<String, Quota> = HashMap::new();
    let mut drain = Drain::default();
    loop {
        pace(&mut rate, &mut counted, session.commands(), &mut out).await?;
        if !clocks.follow(&session, config.lmtp_transaction_timeout) {
            quotas.clear();
        }
        match session.poll() {
            Step::Write(bytes) => out.write_all(&bytes).await?,
            Step::NeedInput => {
                let waits = Waits { stop: &mut stop, may_stop: delivery.is_none(), drain: &mut drain };
                if !read_input(&mut out, &mut buf, waits, &mut clocks, &mut session, peer).await? {
                    return Ok(());
                }
            }
            Step::StartTls => {
                if !upgrade_to_tls(&mut out, ctx, "lmtp").await? {
                    return Ok(());
                }
                session.tls_started();
            }
            Step::CheckRecipient { mailbox } => {
                let check = check_recipient(ctx, &mailbox, &mut quotas).await;
                session.rcpt_done(check);
            }
            Step::DataStart(envelope) => {
                *delivery = Some(start_delivery(ctx, &envelope, peer, &quotas).await);
                clocks.data = Some(DataPace::new(config.min_data_rate));
            }
            Step::DataChunk(chunk) => {
                if let Some(d) = delivery.as_mut() {
                    if ctx.store.room_for_content(d.copies_of(chunk.len())) {
                        d.push(chunk).await;
                    } else {
                        d.out_of_room();
                    }
                }
            }
            Step::DataEnd => {
                clocks.data = None;
                let Some(d) = delivery.take() else { return Ok(()) };
                let committing = Instant::now();
                let results = finish(ctx, d).await;
                ctx.metrics.lmtp_transaction_duration.observe(committing.elapsed().as_secs_f64());
                tracing::info!(%peer, recipients = results.len(), "lmtp delivery");
                session.data_done(results);
                drain.transaction_ended();
            }
            Step::DataAbort => {
                clocks.data = None;
                ctx.metrics.deliveries.get_or_create(&ResultLabel { result: "refused" }).inc();
                if let Some(d) = delivery.take() {
                    d.abort().await;
                }
            }
            Step::Close => {
                out.flush().await?;
                let _ = out.shutdown().await;
                return Ok(());
            }
        }
    }
}

fn session_config(ctx: &ServerContext, secure: bool) -> LmtpConfig {
    let config = &ctx.config;
    LmtpConfig {
        hostname: config.hostname.clone(),
        max_message_size: config.max_message_size,
        max_recipients: MAX_RECIPIENTS,
        max_bad_commands: config.max_bad_commands,
        max_line_length: config.max_line_length,
        recipient_delimiter: config.recipient_delimiter,
        starttls: config.lmtp_starttls && ctx.tls.is_some(),
        secure,
    }
}

/// DATA began: the delivery starts streaming content to the store with this transaction's quotas.
async fn start_delivery(
    ctx: &ServerContext,
    envelope: &Envelope,
    peer: SocketAddr,
    quotas: &HashMap<String, Quota>,
) -> Delivery {
    let config = &ctx.config;
    // Deliveries older than half the watermark margin are refused (see `raise_watermark`).
    let policy = Policy {
        max_age: (config.watermark_margin / 2).min(std::time::Duration::from_secs(600)),
        dedup_window: config.dedup_window,
    };
    let (store, accounts) = (ctx.store.clone(), ctx.accounts.clone());
    Delivery::start(store, accounts, envelope, peer.ip(), &config.hostname, policy, quotas).await
}

/// What shutdown means for the next read: it is not heard while a delivery is open.
struct Waits<'a> {
    stop: &'a mut watch::Receiver<bool>,
    may_stop: bool,
    drain: &'a mut Drain,
}

/// Waits for input and feeds it to the session; false when the connection is over (EOF, or a
/// deadline whose reply has been sent, or shutdown and a quiet client).
async fn read_input(
    out: &mut BufWriter<Conn>,
    buf: &mut [u8],
    waits: Waits<'_>,
    clocks: &mut Deadlines,
    session: &mut Session,
    peer: SocketAddr,
) -> std::io::Result<bool> {
    out.flush().await?;
    clocks.idle.commands(session.commands());
    let (deadline, cut) = clocks.next();
    let Waits { stop, may_stop, drain } = waits;
    if may_stop && drain.at_transaction_boundary() {
        out.write_all(&shutting_down()).await?;
        out.flush().await?;
        return Ok(false);
    }
    let read_by = if may_stop { drain.deadline(deadline) } else { deadline };
    let read = tokio::select! {
        r = read_until(read_by, out.get_mut(), buf) => r,
        _ = stop.changed(), if may_stop && !drain.is_draining() => {
            drain.begin();
            return Ok(true); // read again, with the drain deadline
        }
    };
    match read {
        None if may_stop && drain.is_draining() && Instant::now() < deadline => {
            out.write_all(&shutting_down()).await?;
            out.flush().await?;
            Ok(false)
        }
        None => {
            let reply = match cut {
                Some(what) => {
                    tracing::info!(%peer, reason = what, "lmtp connection cut");
                    session.too_slow(what)
                }
                None => session.idle_timeout(),
            };
            out.write_all(&reply).await?;
            out.flush().await?;
            Ok(false)
        }
        Some(Ok(0)) => Ok(false),
        Some(Ok(n)) => {
            if let Some(data) = clocks.data.as_mut() {
                data.received(n);
                clocks.idle.progress();
            }
            session.feed(&buf[..n]);
            Ok(true)
        }
        Some(Err(e)) => Err(e),
    }
}

/// Whether `mailbox` may receive: an account, with room in the store and under its quota.
async fn check_recipient(ctx: &ServerContext, mailbox: &str, quotas: &mut HashMap<String, Quota>) -> RcptCheck {
    // Room for one more message of the largest size (capped at 64 MiB): what a transaction really
    // writes is checked again as each chunk's copies are written.
    if !ctx.store.room_for_message(ctx.config.max_message_size.min(64 << 20)) {
        tracing::warn!(%mailbox, "refusing mail: the data directory is low on free space");
        return RcptCheck::NoSpace;
    }
    let account = match ctx.accounts.lookup(ctx.store.as_ref(), mailbox).await {
        Ok(Some(account)) => account,
        Ok(None) => return RcptCheck::Unknown,
        Err(e) => {
            tracing::warn!(%mailbox, error = %e, "recipient lookup failed");
            return RcptCheck::TempFail;
        }
    };
    let Some(limit) = account.quota.or(ctx.config.mailbox_quota).filter(|q| *q > 0) else {
        return RcptCheck::Exists;
    };
    // A quota costs a listing read per recipient; mailboxes without one never pay it.
    let used = match ctx.store.listing(mailbox).await {
        Ok(listing) => listing.iter().map(|e| e.size).sum(),
        Err(e) => {
            tracing::warn!(%mailbox, error = %e, "reading the mailbox size for its quota failed");
            return RcptCheck::TempFail;
        }
    };
    let quota = Quota { used, limit };
    if quota.full() {
        tracing::info!(%mailbox, used, limit, "refusing mail: mailbox over quota");
        return RcptCheck::OverQuota;
    }
    quotas.insert(mailbox.to_owned(), quota);
    RcptCheck::Exists
}

/// Commits the delivery and counts each recipient's result.
async fn finish(ctx: &ServerContext, delivery: Delivery) -> Vec<DeliveryResult> {
    let sizes: Vec<u64> = delivery.sizes().collect();
    let results = delivery.finish().await;
    for (result, size) in results.iter().zip(sizes) {
        let label = match result {
            DeliveryResult::Delivered { .. } => {
                ctx.metrics.delivered_octets.inc_by(size);
                "delivered"
            }
            DeliveryResult::Duplicate { .. } => "duplicate",
            DeliveryResult::UnknownUser => "unknown_user",
            DeliveryResult::OverQuota => "over_quota",
            DeliveryResult::NoSpace => "no_space",
            DeliveryResult::TempFail => "tempfail",
        };
        ctx.metrics.deliveries.get_or_create(&ResultLabel { result: label }).inc();
    }
    results
}

fn shutting_down() -> Vec<u8> {
    Reply::new(421, [4, 3, 2], "Server shutting down").to_bytes()
}
