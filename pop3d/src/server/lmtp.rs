//! The tokio wrapper around the LMTP engine.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::watch;

use super::delivery::Delivery;
use super::front::{Client, HANDSHAKE_TIMEOUT};
use super::limits::CommandRate;
use super::pop3::{pace, read_until};
use super::ServerContext;
use crate::lmtp::{DeliveryResult, LmtpConfig, RcptCheck, Session, Step};
use crate::metrics::ResultLabel;
use crate::store::CHUNK_SIZE;

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

async fn session(
    client: Client,
    ctx: &ServerContext,
    mut stop: watch::Receiver<bool>,
    delivery: &mut Option<Delivery>,
) -> std::io::Result<()> {
    let Client { conn, peer, secure } = client;
    let mut out = BufWriter::new(conn);
    let mut session = Session::new(LmtpConfig {
        hostname: ctx.config.hostname.clone(),
        max_message_size: ctx.config.max_message_size,
        max_recipients: 1000,
        max_bad_commands: ctx.config.max_bad_commands,
        starttls: ctx.config.lmtp_starttls && ctx.tls.is_some(),
        secure,
    });
    let mut rate = CommandRate::new(ctx.config.max_commands_per_second, Instant::now());
    let mut counted = 0;
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        pace(&mut rate, &mut counted, session.commands(), &mut out).await?;
        match session.poll() {
            Step::Write(bytes) => out.write_all(&bytes).await?,
            Step::NeedInput => {
                out.flush().await?;
                let deadline = Instant::now() + ctx.config.idle_timeout;
                let read = tokio::select! {
                    r = read_until(deadline, out.get_mut(), &mut buf) => r,
                    _ = stop.changed(), if delivery.is_none() => {
                        out.write_all(b"421 4.3.2 Server shutting down\r\n").await?;
                        return out.flush().await;
                    }
                };
                match read {
                    None => {
                        out.write_all(&session.idle_timeout()).await?;
                        return out.flush().await;
                    }
                    Some(Ok(0)) => return Ok(()),
                    Some(Ok(n)) => session.feed(&buf[..n]),
                    Some(Err(e)) => return Err(e),
                }
            }
            Step::StartTls => {
                out.flush().await?;
                let Some(acceptor) = ctx.tls.as_ref() else { return Ok(()) };
                let result = out.get_mut().start_tls(acceptor, HANDSHAKE_TIMEOUT).await;
                let label = if result.is_ok() { "ok" } else { "failed" };
                ctx.metrics.tls_handshakes.get_or_create(&ResultLabel { result: label }).inc();
                result?;
                session.tls_started();
            }
            Step::CheckRecipient { mailbox } if !super::disk::room_for_mail(&ctx.config) => {
                tracing::warn!(%mailbox, "refusing mail: the data directory is low on free space");
                session.rcpt_done(RcptCheck::NoSpace);
            }
            Step::CheckRecipient { mailbox } => {
                let check = match ctx.accounts.exists(ctx.store.as_ref(), &mailbox).await {
                    Ok(true) => RcptCheck::Exists,
                    Ok(false) => RcptCheck::Unknown,
                    Err(e) => {
                        tracing::warn!(%mailbox, error = %e, "recipient lookup failed");
                        RcptCheck::TempFail
                    }
                };
                session.rcpt_done(check);
            }
            Step::DataStart(envelope) => {
                let max_age = (ctx.config.watermark_margin / 2).min(std::time::Duration::from_secs(600));
                *delivery = Some(Delivery::start(ctx.store.clone(), ctx.accounts.clone(), &envelope, peer.ip(), &ctx.config.hostname, max_age).await);
            }
            Step::DataChunk(chunk) => {
                if let Some(d) = delivery.as_mut() {
                    d.push(chunk).await;
                }
            }
            Step::DataEnd => {
                let Some(d) = delivery.take() else { return Ok(()) };
                let sizes: Vec<u64> = d.sizes().collect();
                let results = d.finish().await;
                for (result, size) in results.iter().zip(sizes) {
                    let label = match result {
                        DeliveryResult::Delivered { .. } => {
                            ctx.metrics.delivered_octets.inc_by(size);
                            "delivered"
                        }
                        DeliveryResult::UnknownUser => "unknown_user",
                        DeliveryResult::TempFail => "tempfail",
                    };
                    ctx.metrics.deliveries.get_or_create(&ResultLabel { result: label }).inc();
                }
                tracing::info!(%peer, recipients = results.len(), "lmtp delivery");
                session.data_done(results);
            }
            Step::DataAbort => {
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
