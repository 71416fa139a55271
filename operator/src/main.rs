//! `popfleet-operator`: runs the Pop3Cluster controller, its metrics/health endpoints and,
//! with `--leader-election`, a Lease so only one of several replicas writes at a time.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kube::Client;
use tracing_subscriber::EnvFilter;

use operator::controller::{self, Context};
use operator::telemetry::{self, Metrics};

#[derive(Parser, Debug)]
#[command(name = "popfleet-operator", version, about)]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "POPFLEET_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "POPFLEET_HTTP", default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// Take a coordination.k8s.io Lease before reconciling (needed with more than one replica).
    #[arg(long, env = "POPFLEET_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "POPFLEET_LEASE_NAME", default_value = "popfleet-operator")]
    lease_name: String,
    /// Namespace of the Lease [default: the pod's namespace, else `default`].
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This instance's identity in the Lease and in Events [default: the pod (host) name].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds between full reconciles of a settled resource (catches drift in Cassandra).
    #[arg(long, env = "POPFLEET_RESYNC_SECS", default_value_t = 300)]
    resync_secs: u64,
    /// Log lines as JSON objects instead of text.
    #[arg(long, env = "POPFLEET_LOG_JSON")]
    log_json: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    schema::tls::install_default_provider();
    let filter = EnvFilter::try_from_env("POPFLEET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if args.log_json {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let http = tokio::spawn(telemetry::serve(args.http, metrics.clone()));
    let identity = args.identity.clone().unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        identity.clone(),
        Duration::from_secs(args.resync_secs),
    ));

    // Stops the controller on SIGTERM/SIGINT, or when the lease is lost.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        }
    });
    let mut stop = stop_rx.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };

    let lease = if args.leader_election {
        let namespace = args.lease_namespace.clone().unwrap_or_else(|| "default".into());
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&namespace)
            .with_identity(&identity)
            .with_duration(15)
            .with_grace(5)
            .build()
            .await?;
        let (mut leader, task) = manager.watch().await;
        metrics.ready.store(true, Ordering::Relaxed);
        tracing::info!(lease = %args.lease_name, %namespace, %identity, "waiting for the lease");
        let mut stopped = stop_rx.clone();
        tokio::select! {
            r = leader.wait_for(|l| *l) => { r?; }
            _ = stopped.wait_for(|s| *s) => { return Ok(()); }
        }
        tracing::info!(%identity, "holding the lease: reconciling");
        // Losing the lease stops the controller: another replica is writing now.
        let stop_tx = stop_tx.clone();
        let mut watch = leader.clone();
        tokio::spawn(async move {
            if watch.wait_for(|l| !*l).await.is_ok() {
                tracing::error!("lost the lease: stopping");
                let _ = stop_tx.send(true);
            }
        });
        Some((leader, task))
    } else {
        None
    };
    metrics.leader.set(1);
    metrics.ready.store(true, Ordering::Relaxed);

    let result = controller::run(ctx, args.namespace.clone(), shutdown).await;
    metrics.leader.set(0);
    if let Some((leader, task)) = lease {
        let lost = !*leader.borrow();
        // Dropping the receiver makes the lease manager release the Lease for the next replica.
        drop(leader);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        if lost {
            http.abort();
            anyhow::bail!("lost the lease");
        }
    }
    http.abort();
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
