//! The front door of every listener: accept, connection caps, the PROXY header (only from
//! trusted networks, required on listeners marked for it), and implicit TLS. What comes out is
//! a [`Client`]: a connection with the real client address and whether it is already secure.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::conn::Conn;
use super::limits::{ConnectionLimiter, ConnectionPermit};
use crate::context::ServerContext;
use crate::pop3::encode::RespCode;
use crate::proxy::{self, Parse, ProxyHeader};

/// How long a proxy has to send its header (Dovecot uses 3 s; load balancers send it at once).
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pop3,
    Lmtp,
}

/// One listener's behaviour.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSpec {
    /// Metrics label and log name: `pop3`, `pop3s` or `lmtp`.
    pub name: &'static str,
    pub protocol: Protocol,
    pub implicit_tls: bool,
    /// A PROXY header is required, from trusted networks only.
    pub proxy: bool,
}

pub struct Client {
    pub conn: Conn,
    /// The client's address: from the PROXY header when there is one, else the socket's.
    pub peer: SocketAddr,
    /// TLS is active on this connection, or ended at a trusted proxy (PROXY v2 SSL TLV).
    pub secure: bool,
}

pub type Handler<F> = fn(Client, Arc<ServerContext>, watch::Receiver<bool>) -> F;

pub async fn accept_loop<F>(
    listener: TcpListener,
    spec: ListenerSpec,
    ctx: Arc<ServerContext>,
    limiter: Arc<ConnectionLimiter>,
    mut stop: watch::Receiver<bool>,
    handler: Handler<F>,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let label = ctx.metrics.protocol(spec.name);
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => { backoff = Duration::from_millis(10); a }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, listener = spec.name, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Behind a proxy every connection comes from the proxy: the per-IP count waits for the header.
        let permit = if spec.proxy { limiter.try_acquire_total() } else { limiter.try_acquire(peer.ip()) };
        let Some(permit) = permit else {
            ctx.metrics.connections_refused.get_or_create(&label).inc();
            tokio::spawn(refuse(stream, spec));
            continue;
        };
        ctx.metrics.connections.get_or_create(&label).inc();
        let ctx = ctx.clone();
        let stop = stop.clone();
        let label = label.clone();
        tokio::spawn(async move {
            let gauge = ctx.metrics.active_sessions.get_or_create(&label).clone();
            gauge.inc();
            match front_door(stream, peer, spec, &ctx, permit).await {
                Ok((client, _permit)) => handler(client, ctx.clone(), stop).await,
                Err(reason) => {
                    ctx.metrics.connections_refused.get_or_create(&label).inc();
                    tracing::info!(%peer, listener = spec.name, %reason, "connection refused");
                }
            }
            gauge.dec();
        });
    }
}

/// Tells a refused client why, where the protocol allows it (not before an implicit-TLS handshake).
async fn refuse(mut stream: TcpStream, spec: ListenerSpec) {
    let refusal = match spec.protocol {
        _ if spec.implicit_tls => return,
        Protocol::Pop3 => {
            crate::pop3::encode::Reply::err_code(RespCode::SysTemp, "Too many connections, try again later.").to_bytes()
        }
        Protocol::Lmtp => {
            crate::lmtp::reply::Reply::new(421, [4, 3, 2], "Too many connections, try again later").to_bytes()
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&refusal)).await;
}

async fn front_door(
    mut stream: TcpStream,
    socket_peer: SocketAddr,
    spec: ListenerSpec,
    ctx: &ServerContext,
    mut permit: ConnectionPermit,
) -> Result<(Client, ConnectionPermit), String> {
    let mut peer = socket_peer;
    let mut secure = false;
    if spec.proxy {
        if !ctx.config.proxy_trusted_networks.iter().any(|net| net.contains(&socket_peer.ip())) {
            return Err("PROXY header required, and this address is not a trusted proxy".into());
        }
        let header = tokio::time::timeout(PROXY_HEADER_TIMEOUT, read_proxy_header(&mut stream))
            .await
            .map_err(|_| "no PROXY header in time".to_owned())??;
        if let ProxyHeader::Proxied { source, tls, .. } = header {
            peer = source;
            secure = tls.is_some_and(|t| t.client_ssl);
        }
        if !permit.bind_ip(peer.ip()) {
            refuse(stream, spec).await;
            return Err(format!("too many connections from {}", peer.ip()));
        }
    }
    let mut conn = Conn::new(stream, ctx.config.idle_timeout);
    if spec.implicit_tls {
        let acceptor = ctx.tls.as_ref().ok_or("implicit TLS without a certificate")?;
        let result = conn.start_tls(acceptor, HANDSHAKE_TIMEOUT).await;
        ctx.metrics.tls_handshake(spec.name, &result);
        result.map_err(|e| format!("TLS handshake failed: {e}"))?;
        secure = true;
    }
    Ok((Client { conn, peer, secure }, permit))
}

/// Reads exactly the header: with implicit TLS the ClientHello follows and must stay unread.
async fn read_proxy_header(stream: &mut TcpStream) -> Result<ProxyHeader, String> {
    let mut buf = Vec::with_capacity(108);
    loop {
        match proxy::parse(&buf) {
            Parse::Need(n) => {
                let have = buf.len();
                buf.resize(n, 0);
                stream.read_exact(&mut buf[have..]).await.map_err(|e| format!("reading the PROXY header: {e}"))?;
            }
            Parse::Done { header, .. } => return Ok(header),
            Parse::Invalid(why) => return Err(format!("invalid PROXY header: {why}")),
        }
    }
}
