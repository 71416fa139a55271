use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use pop3d::config::{Config, ServeArgs};

/// popfleet POP3 + LMTP server.
#[derive(Parser, Debug)]
#[command(name = "pop3d", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage accounts through the admin API.
    User(pop3d::cli::UserArgs),
    /// Create the Cassandra keyspace or align its replication, and apply schema migrations.
    Migrate(MigrateArgs),
    /// Find and fix orphan content, rows without content and late rows (resumable).
    Repair(RepairArgs),
}

#[derive(clap::Args, Debug)]
struct MigrateArgs {
    #[command(flatten)]
    cassandra: pop3d::config::CassandraArgs,
    /// Replication per datacenter, DC:RF[,DC:RF...]; DCs not named are left as they are.
    #[arg(long, env = "POP3D_REPLICATION")]
    replication: String,
}

#[derive(clap::Args, Debug)]
struct RepairArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Only touch items older than this many seconds (younger ones may be in flight).
    #[arg(long, default_value_t = 3600)]
    grace_secs: u64,
    /// Most checks per second.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Start over instead of resuming an interrupted run.
    #[arg(long)]
    reset: bool,
}

fn main() -> std::process::ExitCode {
    schema::tls::install_default_provider();
    // glibc raises its mmap threshold after the first large free, after which argon2's 19 MiB
    // blocks come from per-thread arenas and stay resident; a fixed threshold returns them.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env(pop3d_config::env::LOG).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::User(args) => pop3d::cli::run(args),
        Command::Migrate(args) => runtime().and_then(|rt| rt.block_on(migrate(args))),
        Command::Repair(args) => runtime().and_then(|rt| rt.block_on(repair(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pop3d: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    runtime()?.block_on(pop3d::daemon::run(config, shutdown_signal()))
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    use pop3d::store::cassandra::{connect, migrate};
    let replication = migrate::parse_replication(&args.replication)?;
    let settings = args.cassandra.resolve()?;
    let session = connect(&settings).await?;
    let report = migrate::migrate(&session, &settings.keyspace, &replication).await?;
    let ks = &settings.keyspace;
    if report.keyspace_created {
        println!("created keyspace {ks}");
    }
    if let Some((before, after)) = &report.replication_changed {
        println!("changed replication of {ks}: {before:?} -> {after:?}");
        println!("run a full repair of {ks} (nodetool repair -full {ks}) on every node so new replicas get the data");
    }
    match report.applied.as_slice() {
        [] => println!("schema of {ks} is up to date (version {})", pop3d_schema_latest()),
        applied => println!("applied migrations {applied:?} to {ks}"),
    }
    Ok(())
}

fn pop3d_schema_latest() -> u32 {
    schema::latest_version()
}

async fn repair(args: RepairArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.serve)?;
    let store =
        pop3d::store::open(config.store, &config.data_dir, config.min_free_space, config.cassandra.as_ref()).await?;
    let options = pop3d::repair::RepairOptions {
        grace: std::time::Duration::from_secs(args.grace_secs),
        rate: args.rate,
        reset: args.reset,
    };
    let done = pop3d::repair::run(store.as_ref(), options, |p| {
        eprintln!("repair: phase={} checked={} fixed={}", p.phase, p.checked, p.fixed);
    })
    .await?;
    println!("repair finished: checked {} items, fixed {}", done.checked, done.fixed);
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
