//! The tokio wrapper around the POP3 engine: reads, writes, and performs storage requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::watch;

use super::front::Client;
use super::io::{pace, read_until, upgrade_to_tls, Drain, IdleClock};
use super::limits::CommandRate;
use crate::auth::sasl::encode_base64;
use crate::auth::AuthOutcome;
use crate::context::ServerContext;
use crate::message_id::MessageId;
use crate::metrics::{LoginLabels, ResultLabel};
use crate::pop3::encode::{Reply, RespCode};
use crate::pop3::{
    CommitOutcome, FetchOutcome, FetchRequest, LoginOutcome, LoginRequest, MessageEncoder, ScramKeysOutcome, Session,
    SessionConfig, Step,
};
use crate::store::CHUNK_SIZE;

/// Content younger than this that is missing may still be replicating (another datacenter wrote
/// the listing row first); only older rows are dropped as broken.
const MISSING_CONTENT_GRACE: Duration = Duration::from_secs(3600);

pub async fn handle(client: Client, ctx: Arc<ServerContext>, stop: watch::Receiver<bool>) {
    let peer = client.peer;
    if let Err(e) = session(client, &ctx, stop).await {
        tracing::debug!(%peer, error = %e, "pop3 connection ended with an error");
    }
}

async fn session(client: Client, ctx: &ServerContext, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let Client { conn, peer, secure } = client;
    let mut out = BufWriter::with_capacity(CHUNK_SIZE + 1024, conn);
    let mut session = Session::new(session_config(ctx, peer, secure));
    // Slowloris: a client gets this long from connect to login, however it trickles its bytes.
    let login_deadline = Instant::now() + ctx.config.login_timeout;
    let mut rate = CommandRate::new(ctx.config.max_commands_per_second, Instant::now());
    let mut counted = 0;
    let mut buf = vec![0u8; 8192];
    let mut login_ticks = 0;
    let mut idle = IdleClock::new(ctx.config.idle_timeout);
    let mut drain = Drain::default();
    loop {
        pace(&mut rate, &mut counted, session.commands(), &mut out).await?;
        idle.commands(session.commands());
        match session.poll() {
            Step::Write(bytes) => out.write_all(&bytes).await?,
            Step::NeedInput => {
                out.flush().await?;
                idle.commands(session.commands());
                let logged_in = session.is_authenticated();
                let deadline = if logged_in { idle.deadline() } else { login_deadline.min(idle.deadline()) };
                let read = tokio::select! {
                    r = read_until(drain.deadline(deadline), out.get_mut(), &mut buf) => r,
                    _ = stop.changed(), if !drain.is_draining() => {
                        drain.begin();
                        continue;
                    }
                };
                match read {
                    None if drain.is_draining() && Instant::now() < deadline => {
                        // Shutting down and the client went quiet: nothing is deleted, it reconnects elsewhere.
                        out.write_all(&Reply::err_code(RespCode::SysTemp, "Server shutting down.").to_bytes()).await?;
                        return out.flush().await;
                    }
                    None => {
                        let reply = if !logged_in && Instant::now() >= login_deadline {
                            session.login_timeout()
                        } else {
                            session.idle_timeout()
                        };
                        out.write_all(&reply).await?;
                        return out.flush().await;
                    }
                    Some(Ok(0)) => return Ok(()),
                    Some(Ok(n)) => session.feed(&buf[..n]),
                    Some(Err(e)) => return Err(e),
                }
            }
            Step::StartTls => {
                if !upgrade_to_tls(&mut out, ctx, "pop3").await? {
                    return Ok(());
                }
                session.tls_started();
            }
            Step::Login(request) => {
                let outcome = login(ctx, peer, &request).await;
                if let LoginOutcome::Ok { mailbox, .. } = &outcome {
                    login_ticks = MessageId::now_ticks();
                    tracing::info!(%peer, %mailbox, tls = session.is_secure(), "pop3 login");
                }
                session.login_done(outcome);
            }
            Step::ScramKeys { user } => session.scram_keys_done(scram_keys(ctx, &user).await),
            Step::Fetch(request) => {
                let outcome = fetch(ctx, &request, &mut out).await?;
                session.fetch_done(outcome);
            }
            Step::Commit { mailbox, ids, oldest_kept } => {
                session.commit_done(commit(ctx, peer, &mailbox, ids, oldest_kept, login_ticks).await);
            }
            Step::Close => {
                out.flush().await?;
                let _ = out.shutdown().await;
                return Ok(());
            }
        }
    }
}

fn session_config(ctx: &ServerContext, peer: SocketAddr, secure: bool) -> SessionConfig {
    SessionConfig {
        cleartext_auth_allowed: peer.ip().is_loopback() || ctx.config.allow_insecure_auth,
        max_bad_commands: ctx.config.max_bad_commands,
        max_auth_failures: ctx.config.max_auth_failures,
        tls_available: ctx.tls.is_some(),
        secure,
        oauth: ctx.oauth,
    }
}

async fn scram_keys(ctx: &ServerContext, user: &str) -> ScramKeysOutcome {
    match ctx.auth.scram_keys(user).await {
        Ok(keys) => ScramKeysOutcome::Keys { keys, server_nonce: encode_base64(&rand::random::<[u8; 18]>()) },
        Err(()) => ScramKeysOutcome::TempFail,
    }
}

/// QUIT in the TRANSACTION state: the listing rows go first and are the commit point (see
/// `store::expunge`); the content is deleted by the reaper after the reply.
async fn commit(
    ctx: &ServerContext,
    peer: SocketAddr,
    mailbox: &str,
    ids: Vec<MessageId>,
    oldest_kept: Option<MessageId>,
    login_ticks: u64,
) -> CommitOutcome {
    let committing = Instant::now();
    let unlinked = if ids.is_empty() { Ok(()) } else { ctx.store.unlink(mailbox, &ids).await };
    let outcome = match unlinked {
        Ok(()) => {
            ctx.metrics.expunged_messages.inc_by(ids.len() as u64);
            raise_watermark(ctx, mailbox, login_ticks, oldest_kept);
            tracing::info!(%peer, %mailbox, deleted = ids.len(), "pop3 expunge");
            ctx.reaper.delete(&ctx.store, ids).await;
            CommitOutcome::Ok
        }
        Err(e) => {
            tracing::warn!(%peer, %mailbox, error = %e, "expunge failed");
            CommitOutcome::Failed
        }
    };
    ctx.metrics.quit_commit_duration.observe(committing.elapsed().as_secs_f64());
    outcome
}

/// After an expunge, lets later reads of the mailbox start past the deleted rows. Every message
/// this session did not see was linked after login, and its id is younger than the login time
/// minus the margin (deliveries older than half the margin are refused), so the floor below
/// cannot hide a live message; `pop3d repair` lowers it again if replication lag ever did.
///
/// The write runs beside the QUIT reply, not before it: the unlinked rows are the commit point and
/// the floor only saves later reads some tombstones, so the client need not wait a second write
/// (a Cassandra round trip at the write consistency). A floor that is lost, or lands after a later
/// session's higher one, is safe: every floor computed this way is.
fn raise_watermark(ctx: &ServerContext, mailbox: &str, login_ticks: u64, oldest_kept: Option<MessageId>) {
    let margin_ticks = ctx.config.watermark_margin.as_nanos() as u64 / 100;
    let mut floor = login_ticks.saturating_sub(margin_ticks);
    if let Some(kept) = oldest_kept {
        floor = floor.min(kept.ticks());
    }
    let floor = MessageId::floor_at_ticks(floor.saturating_sub(1));
    let (store, mailbox) = (ctx.store.clone(), mailbox.to_owned());
    tokio::spawn(async move {
        if let Err(e) = store.set_low_watermark(&mailbox, floor).await {
            tracing::debug!(%mailbox, error = %e, "watermark not raised; reads just scan more");
        }
    });
}

async fn login(ctx: &ServerContext, peer: SocketAddr, request: &LoginRequest) -> LoginOutcome {
    let started = Instant::now();
    let ip = peer.ip();
    let (user, outcome) = match request {
        LoginRequest::Password(c) => {
            (c.user.as_str(), ctx.auth.authenticate(ip, c.authzid.as_deref(), &c.user, &c.password).await)
        }
        LoginRequest::Scram { user, proven } => (user.as_str(), ctx.auth.finish_scram(ip, user, *proven).await),
        LoginRequest::Bearer { user, token } => {
            (user.as_deref().unwrap_or(""), ctx.auth.authenticate_bearer(ip, user.as_deref(), token).await)
        }
    };
    let (label, result) = match outcome {
        AuthOutcome::Ok(mailbox) => match ctx.store.listing(&mailbox).await {
            Ok(listing) => ("ok", LoginOutcome::Ok { mailbox, listing }),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "listing failed at login");
                ("tempfail", LoginOutcome::TempFail)
            }
        },
        AuthOutcome::BadCredentials => ("bad_credentials", LoginOutcome::BadCredentials),
        AuthOutcome::TempFail => ("tempfail", LoginOutcome::TempFail),
    };
    ctx.metrics.logins.get_or_create(&ResultLabel { result: label }).inc();
    let labels = LoginLabels { mechanism: mechanism(request), result: label };
    ctx.metrics.login_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    if label != "ok" {
        tracing::info!(%peer, user = %crate::logsafe::Untrusted(user), result = label, "pop3 login refused");
    }
    result
}

/// The metrics label of a login's mechanism.
pub fn mechanism(request: &LoginRequest) -> &'static str {
    match request {
        LoginRequest::Password(_) => "password",
        LoginRequest::Scram { .. } => "scram",
        LoginRequest::Bearer { .. } => "bearer",
    }
}

/// Streams a message chunk by chunk through the encoder. An error after the `+OK` line has been
/// sent can only be reported by closing the connection, which is what the `Err` does.
async fn fetch<W: AsyncWrite + Unpin>(
    ctx: &ServerContext,
    request: &FetchRequest,
    out: &mut BufWriter<W>,
) -> std::io::Result<FetchOutcome> {
    let entry = request.entry;
    let first = match ctx.store.get_chunk(entry.id, 0).await {
        Ok(Some(chunk)) => chunk,
        Ok(None) if entry.size == 0 => bytes::Bytes::new(),
        Ok(None) => return Ok(missing_content(ctx, request).await),
        Err(e) => {
            tracing::warn!(id = %entry.id, error = %e, "content read failed");
            return Ok(FetchOutcome::TempFail);
        }
    };
    out.write_all(&request.ok_line).await?;
    let mut encoder = match request.top {
        Some(lines) => MessageEncoder::top(lines),
        None => MessageEncoder::whole(),
    };
    let mut encoded = Vec::with_capacity(CHUNK_SIZE + CHUNK_SIZE / 8);
    let mut sent = first.len() as u64;
    encoder.push(&first, &mut encoded);
    let mut index = 1;
    // Read the next chunk while the current one is written.
    while sent < entry.size && !encoder.is_done() {
        let next = ctx.store.get_chunk(entry.id, index);
        let (written, chunk) = tokio::join!(out.write_all(&encoded), next);
        written?;
        encoded.clear();
        let chunk = chunk
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other(format!("chunk {index} of {} is missing", entry.id)))?;
        sent += chunk.len() as u64;
        encoder.push(&chunk, &mut encoded);
        index += 1;
    }
    encoder.finish(&mut encoded);
    out.write_all(&encoded).await?;
    ctx.metrics.retrieved_octets.inc_by(sent);
    Ok(FetchOutcome::Sent)
}

/// The listing row points at content that is not there. Either another session expunged the
/// message (its row is gone too), or the row arrived before the content (replication between
/// datacenters), or the content was lost. Only a row old enough to rule out lag is dropped.
async fn missing_content(ctx: &ServerContext, request: &FetchRequest) -> FetchOutcome {
    let (mailbox, id) = (&request.mailbox, request.entry.id);
    match ctx.store.has_listing(mailbox, id).await {
        Ok(false) => return FetchOutcome::Missing,
        Ok(true) => {}
        Err(e) => {
            tracing::warn!(%mailbox, %id, error = %e, "listing check failed");
            return FetchOutcome::TempFail;
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    if Duration::from_millis(now.saturating_sub(id.unix_millis())) < MISSING_CONTENT_GRACE {
        // The client's -ERR [SYS/TEMP] should be explainable from the log: most often mail
        // delivered in another DC whose content has not replicated yet.
        tracing::info!(%mailbox, %id, "content not here yet for a listed message: try again later");
        return FetchOutcome::TempFail;
    }
    match ctx.store.unlink(mailbox, &[id]).await {
        Ok(()) => {
            tracing::warn!(%mailbox, %id, "dropped a listing row without content");
            FetchOutcome::Missing
        }
        Err(e) => {
            tracing::warn!(%mailbox, %id, error = %e, "dropping a listing row without content failed");
            FetchOutcome::TempFail
        }
    }
}
