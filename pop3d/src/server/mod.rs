//! The I/O shell: listeners, per-connection tasks and shutdown around the protocol engines.

mod delivery;
pub mod limits;
mod lmtp;
mod pop3;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::config::{Config, StoreKind};
use crate::metrics::Metrics;
use crate::store::{cassandra::CassandraStore, embedded::EmbeddedStore, MailStore};
use limits::{ConnectionLimiter, ConnectionPermit};

/// What every connection task shares.
pub struct ServerContext {
    pub config: Config,
    pub store: Arc<dyn MailStore>,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub registry: Registry,
    pub repair: std::sync::Mutex<crate::repair::RepairStatus>,
}

impl ServerContext {
    pub fn new(config: Config, store: Arc<dyn MailStore>) -> Arc<Self> {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let auth = Authenticator::new(store.clone(), config.auth_fail_delay);
        Arc::new(Self { config, store, auth, metrics, registry, repair: Default::default() })
    }
}

/// Opens the configured store.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn MailStore>> {
    match config.store {
        StoreKind::Embedded => {
            let dir = config.data_dir.clone();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir)).await??;
            Ok(Arc::new(store))
        }
        StoreKind::Cassandra => {
            let settings = config.cassandra.as_ref().context("cassandra settings missing")?;
            Ok(Arc::new(CassandraStore::open(settings).await?))
        }
    }
}

/// Runs the server until `shutdown` resolves, then drains sessions for up to 10 s.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let store = open_store(&config).await.context("opening the store")?;
    let ctx = ServerContext::new(config.clone(), store);
    let pop3 = bind(config.pop3, "POP3").await?;
    let lmtp = bind(config.lmtp, "LMTP").await?;
    let admin = bind(config.admin, "admin").await?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let limit = |c: &Config| ConnectionLimiter::new(c.max_connections, c.max_connections_per_ip);
    tokio::spawn(accept_loop(pop3, ctx.clone(), "pop3", limit(&config), stop_rx.clone(), pop3::handle));
    tokio::spawn(accept_loop(lmtp, ctx.clone(), "lmtp", limit(&config), stop_rx.clone(), lmtp::handle));
    let admin_task = tokio::spawn(crate::admin::serve(admin, ctx.clone(), stop_rx.clone()));
    tracing::info!(store = ctx.store.backend(), pop3 = %config.pop3, lmtp = %config.lmtp, admin = %config.admin, "pop3d started");

    shutdown.await;
    tracing::info!("shutting down: no new connections, draining sessions");
    let _ = stop_tx.send(true);
    let drain = async {
        loop {
            let open: i64 = ["pop3", "lmtp"]
                .iter()
                .map(|p| ctx.metrics.active_sessions.get_or_create(&ctx.metrics.protocol(p)).get())
                .sum();
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    let _ = admin_task.await;
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding the {what} listener on {addr}"))
}

type Handler<F> = fn(TcpStream, SocketAddr, Arc<ServerContext>, watch::Receiver<bool>) -> F;

async fn accept_loop<F>(
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    protocol: &'static str,
    limiter: Arc<ConnectionLimiter>,
    mut stop: watch::Receiver<bool>,
    handler: Handler<F>,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let label = ctx.metrics.protocol(protocol);
    let mut backoff = Duration::from_millis(10);
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => { backoff = Duration::from_millis(10); a }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, protocol, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Some(permit) = limiter.try_acquire(peer.ip()) else {
            ctx.metrics.connections_refused.get_or_create(&label).inc();
            let refusal: &'static [u8] = match protocol {
                "pop3" => b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n",
                _ => b"421 4.3.2 Too many connections, try again later\r\n",
            };
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(refusal)).await;
            });
            continue;
        };
        ctx.metrics.connections.get_or_create(&label).inc();
        let session = handler(stream, peer, ctx.clone(), stop.clone());
        let ctx = ctx.clone();
        let label = label.clone();
        tokio::spawn(async move {
            let _permit: ConnectionPermit = permit;
            let gauge = ctx.metrics.active_sessions.get_or_create(&label).clone();
            gauge.inc();
            session.await;
            gauge.dec();
        });
    }
}
