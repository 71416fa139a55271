//! The daemon: loads the certificate and the JWKS, opens the store, binds every listener and runs
//! the POP3/LMTP shell and the admin API around one shared context until shutdown, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::auth::bearer::BearerValidator;
use crate::config::{Config, Listener};
use crate::context::ServerContext;
use crate::reload::{watch_files, Reloadable};
use crate::server::front::{accept_loop, ListenerSpec, Protocol};
use crate::server::limits::ConnectionLimiter;
use crate::server::{lmtp, pop3};
use crate::tls::ReloadingCert;

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
