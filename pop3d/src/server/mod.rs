//! The I/O shell: listeners, per-connection tasks and shutdown around the protocol engines.

pub mod conn;
mod delivery;
pub mod front;
mod io;
pub mod limits;
mod lmtp;
mod pop3;
mod reaper;
mod recipients;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::Authenticator;
use crate::config::{Config, Listener};
use crate::metrics::Metrics;
use crate::oauth::BearerValidator;
use crate::reload::{watch_files, Reloadable};
use crate::store::MailStore;
use crate::tls::ReloadingCert;
use front::{accept_loop, ListenerSpec, Protocol};
use limits::ConnectionLimiter;

/// What every connection task shares.
pub struct ServerContext {
    pub config: Config,
    pub store: Arc<dyn MailStore>,
    pub auth: Authenticator,
    /// Recipients known to be accounts (LMTP), shared by every delivery.
    pub accounts: Arc<recipients::KnownAccounts>,
    /// Deletes expunged content after the QUIT reply.
    pub reaper: reaper::Reaper,
    pub metrics: Metrics,
    pub registry: Registry,
    pub repair: std::sync::Mutex<crate::repair::RepairStatus>,
    /// Set when a certificate is configured: STLS, POP3S, LMTP STARTTLS.
    pub tls: Option<TlsAcceptor>,
    /// OAUTHBEARER and XOAUTH2 are offered.
    pub oauth: bool,
    /// Shutdown began: /readyz says so, so that no new traffic is sent here.
    pub draining: std::sync::atomic::AtomicBool,
}

impl ServerContext {
    pub fn new(config: Config, store: Arc<dyn MailStore>) -> Arc<Self> {
        Self::with_security(config, store, None, None)
    }

    pub fn with_security(
        config: Config,
        store: Arc<dyn MailStore>,
        tls: Option<TlsAcceptor>,
        bearer: Option<Arc<BearerValidator>>,
    ) -> Arc<Self> {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        // Every store call of the server goes through the timing decorator, the authenticator's too.
        let store: Arc<dyn MailStore> = Arc::new(crate::store::timed::Timed::new(store, metrics.store.clone()));
        let mut auth = Authenticator::new(store.clone(), config.auth_fail_delay, config.scram_iterations)
            .with_failure_metrics(metrics.auth_failures.clone());
        let oauth = bearer.is_some();
        if let Some(validator) = bearer {
            auth = auth.with_bearer(validator);
        }
        let accounts = Arc::new(recipients::KnownAccounts::new(config.account_cache_ttl));
        Arc::new(Self {
            config,
            store,
            auth,
            accounts,
            reaper: Default::default(),
            metrics,
            registry,
            repair: Default::default(),
            tls,
            oauth,
            draining: Default::default(),
        })
    }
}

/// Loads the certificate and the JWKS (a broken one stops the start) and starts their reloaders.
fn load_security(
    config: &Config,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(Option<TlsAcceptor>, Option<Arc<BearerValidator>>)> {
    let interval = config.tls_reload_interval;
    let tls = match &config.tls {
        Some(files) => {
            let cert = ReloadingCert::load(files.clone())?;
            tokio::spawn(watch_files(cert.clone() as Arc<dyn Reloadable>, interval, stop.clone()));
            Some(crate::tls::acceptor(cert)?)
        }
        None => None,
    };
    let bearer = match &config.oauth {
        Some(oauth) => {
            let validator = BearerValidator::load(oauth.clone())?;
            tokio::spawn(watch_files(validator.clone() as Arc<dyn Reloadable>, interval, stop.clone()));
            Some(validator)
        }
        None => None,
    };
    Ok((tls, bearer))
}

/// Runs the server until `shutdown` resolves, then drains sessions for up to 10 s.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tls, bearer) = load_security(&config, &stop_rx)?;
    let store = crate::store::open(config.store, &config.data_dir, config.min_free_space, config.cassandra.as_ref())
        .await
        .context("opening the store")?;
    let ctx = ServerContext::with_security(config.clone(), store, tls, bearer);
    let pop3 = bind(config.pop3, "POP3").await?;
    let pop3s = match config.pop3s {
        Some(addr) => Some(bind(addr, "POP3S").await?),
        None => None,
    };
    let lmtp = bind(config.lmtp, "LMTP").await?;
    let admin = bind(config.admin, "admin").await?;
    let ops = match config.ops {
        Some(addr) => Some(bind(addr, "ops").await?),
        None => None,
    };

    let limit = |c: &Config| ConnectionLimiter::new(c.max_connections, c.max_connections_per_ip);
    let spec = |name, protocol, implicit_tls, listener| ListenerSpec {
        name,
        protocol,
        implicit_tls,
        proxy: config.proxy_protocol.contains(&listener),
    };
    let pop3_spec = spec("pop3", Protocol::Pop3, false, Listener::Pop3);
    tokio::spawn(accept_loop(pop3, pop3_spec, ctx.clone(), limit(&config), stop_rx.clone(), pop3::handle));
    if let Some(pop3s) = pop3s {
        let pop3s_spec = spec("pop3s", Protocol::Pop3, true, Listener::Pop3s);
        tokio::spawn(accept_loop(pop3s, pop3s_spec, ctx.clone(), limit(&config), stop_rx.clone(), pop3::handle));
    }
    let lmtp_spec = spec("lmtp", Protocol::Lmtp, false, Listener::Lmtp);
    tokio::spawn(accept_loop(lmtp, lmtp_spec, ctx.clone(), limit(&config), stop_rx.clone(), lmtp::handle));
    let admin_task = tokio::spawn(crate::admin::serve(admin, crate::admin::router(ctx.clone()), stop_rx.clone()));
    // The ops listener outlives the drain: its /readyz says "draining" (so no new traffic comes) and
    // /healthz stays fine (so the drain is not taken for a hung process) until the process exits.
    let (_ops_stop, ops_stop_rx) = watch::channel(false);
    let ops_task =
        ops.map(|ops| tokio::spawn(crate::admin::serve(ops, crate::admin::ops_router(ctx.clone()), ops_stop_rx)));
    tracing::info!(
        store = ctx.store.backend(),
        pop3 = %config.pop3,
        pop3s = ?config.pop3s,
        lmtp = %config.lmtp,
        admin = %config.admin,
        ops = ?config.ops,
        admin_token = config.admin_token.is_some(),
        tls = ctx.tls.is_some(),
        oauth = ctx.oauth,
        proxy_protocol = ?config.proxy_protocol,
        "pop3d started"
    );

    shutdown.await;
    tracing::info!("shutting down: no new connections, draining sessions");
    ctx.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let drain = async {
        loop {
            let open: i64 = ["pop3", "pop3s", "lmtp"]
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
    ctx.reaper.drain(Duration::from_secs(10)).await;
    let _ = admin_task.await;
    if let Some(task) = ops_task {
        task.abort();
    }
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding the {what} listener on {addr}"))
}
