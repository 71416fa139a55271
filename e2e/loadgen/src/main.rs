//! popfleet-load: open-loop LMTP + POP3 load for benchmarks and fault tests.
//!
//!   popfleet-load run    --lmtp 127.0.0.1:2424 --pop3 127.0.0.1:1110 --rate 200 --duration 30
//!   popfleet-load search --lmtp 127.0.0.1:2424 --pop3 127.0.0.1:1110
//!   popfleet-load lwt-baseline --cassandra 10.0.0.1:9042 --dc dc1 --read-dc dc2 --reset
//!
//! Users `load0@example.com` .. must exist with the given password (the bench script creates them).

mod extras;
mod lmtp;
mod lwt_baseline;
mod message;
mod netns;
mod pacing;
mod pop3;
mod procstat;
mod scenario;
mod stats;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use scenario::Scenario;
use stats::{Report, Trial};

#[derive(Parser)]
#[command(name = "popfleet-load", version, about = "Open-loop LMTP/POP3 load generator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Deliver at a fixed rate for a duration, then read and delete every mailbox.
    Run(Common),
    /// Find the highest delivery rate with LMTP p99 under --p99-ms and no errors.
    Search {
        #[command(flatten)]
        common: Common,
        /// Latency bound for a rate to count as sustained.
        #[arg(long, default_value_t = 100.0)]
        p99_ms: f64,
        /// Highest rate to try.
        #[arg(long, default_value_t = 20000.0)]
        max_rate: f64,
        /// Bisection steps after the first failing rate.
        #[arg(long, default_value_t = 4)]
        steps: u32,
    },
    /// Idle sessions (RSS per session), login rate cold and warm, a big RETR (RSS), STAT/UIDL on a
    /// big mailbox and after deleting it all.
    Extras {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        idle_sessions: usize,
        /// Size of the big message, e.g. 50m.
        #[arg(long, default_value = "50m")]
        big: String,
        /// Messages in the mailbox for the STAT/UIDL measurement.
        #[arg(long, default_value_t = 100_000)]
        mailbox: u64,
    },
    /// The same load against a Cassandra mailbox that allocates UIDs and MODSEQs with lightweight
    /// transactions, written directly (no LMTP/POP3): the baseline popfleet is measured against.
    LwtBaseline {
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        target: lwt_baseline::Target,
    },
}

/// The offered load, shared by every target (the servers and the LWT baseline).
#[derive(Args, Clone)]
struct Load {
    /// Name of this run in the report.
    #[arg(long, default_value = "run")]
    label: String,
    #[arg(long, default_value_t = 80)]
    users: usize,
    /// Address pattern; {} is the user number.
    #[arg(long, default_value = "load{}@example.com")]
    user_format: String,
    /// Deliveries per second (search: the starting rate).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of deliveries (search: per trial).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Message sizes: default (10-100 KiB, 1 % 2-5 MiB), small (1-4 KiB), fixed:N[k|m].
    #[arg(long, default_value = "default")]
    sizes: message::SizeMix,
    /// Most deliveries in flight (LMTP: one connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 16)]
    pop3_concurrency: usize,
    /// Deliveries only: no read half (fault tests read with their own checks).
    #[arg(long)]
    no_read: bool,
    /// Seconds to wait between the two halves (replication to another datacenter).
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
    /// Times a delivery that failed temporarily (4xx, connection lost or refused) is sent again
    /// with the same bytes, as an MTA does; errors then count deliveries that failed every try.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Milliseconds between the tries of one delivery.
    #[arg(long, default_value_t = 1000)]
    retry_delay_ms: u64,
    /// Write "recipient token" for every delivery acknowledged.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Append the JSON report(s) to this file, one per line.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds per point of the report's timeline (delivered mail/s, p50 and p99 per interval).
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    /// Seconds between progress lines on stderr (elapsed, rate, p99 so far, errors); 0: none.
    /// `run` and `search` only: lwt-baseline prints none.
    #[arg(long, default_value_t = 5.0)]
    progress: f64,
}

impl Load {
    fn check(&self, rate: f64) -> Result<()> {
        // Written so that NaN is refused too.
        let positive = |x: f64| x > 0.0;
        if !positive(rate) || !positive(self.duration) || self.users == 0 || self.concurrency == 0 {
            bail!("rate, duration, users and concurrency must be positive");
        }
        // is_some_and(.. >= ..) so that NaN is refused too
        let at_least = |x: f64, min: f64| x.partial_cmp(&min).is_some_and(|o| o.is_ge());
        if !at_least(self.interval, 0.001) || !at_least(self.progress, 0.0) {
            bail!("--interval must be at least 0.001 and --progress at least 0");
        }
        Ok(())
    }

    fn emit(&self, report: &Report) -> Result<()> {
        println!("{}", report.table());
        if let Some(path) = &self.json {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            writeln!(f, "{}", serde_json::to_string(report)?)?;
        }
        Ok(())
    }
}

/// The load plus the LMTP/POP3 servers it goes to.
#[derive(Args, Clone)]
struct Common {
    #[command(flatten)]
    load: Load,
    /// LMTP server(s); users are spread over them.
    #[arg(long, required = true, value_delimiter = ',')]
    lmtp: Vec<String>,
    /// POP3 server(s) for the read half; user i reads from server i mod n. ADDR@NETNS connects
    /// from the network namespace NETNS (/var/run/netns/NETNS; root), e.g. the other datacenter.
    #[arg(long, value_delimiter = ',')]
    pop3: Vec<String>,
    #[arg(long, default_value = "load-password")]
    password: String,
    /// Also RETR every message before deleting it.
    #[arg(long)]
    retr: bool,
    /// Server process(es) whose tree's peak RSS and CPU time to report.
    #[arg(long = "pid", value_delimiter = ',')]
    pids: Vec<u32>,
}

impl Common {
    fn scenario(&self, rate: f64, skip_pop3: bool) -> Result<Scenario> {
        let l = &self.load;
        l.check(rate)?;
        if !skip_pop3 && self.pop3.is_empty() {
            bail!("--pop3 is required for the read half");
        }
        Ok(Scenario {
            label: l.label.clone(),
            lmtp: self.lmtp.clone(),
            pop3: self.pop3.iter().map(|s| netns::Endpoint::parse(s)).collect::<Result<_>>()?,
            users: l.users,
            user_format: l.user_format.clone(),
            password: self.password.clone(),
            rate,
            duration: Duration::from_secs_f64(l.duration),
            sizes: l.sizes,
            concurrency: l.concurrency,
            pop3_concurrency: l.pop3_concurrency.max(1),
            retr: self.retr,
            skip_pop3,
            settle: Duration::from_secs_f64(l.settle),
            pids: self.pids.clone(),
            ledger: l.ledger.clone(),
            retries: l.retries,
            retry_delay: Duration::from_millis(l.retry_delay_ms),
            seed: l.seed,
            interval: Duration::from_secs_f64(l.interval),
            progress: (l.progress > 0.0).then(|| Duration::from_secs_f64(l.progress)),
        })
    }
}

fn sustained(r: &Report, p99_ms: f64) -> bool {
    r.errors.total() == 0
        && r.delivered_per_s >= 0.95 * r.target_rate
        && r.lmtp.as_ref().is_some_and(|l| l.p99_ms <= p99_ms)
}

fn trial(r: &Report, p99_ms: f64) -> Trial {
    Trial {
        offered_per_s: r.target_rate,
        delivered_per_s: r.delivered_per_s,
        p50_ms: r.lmtp.as_ref().map(|l| l.p50_ms),
        p99_ms: r.lmtp.as_ref().map(|l| l.p99_ms),
        errors: r.errors.total(),
        sustained: sustained(r, p99_ms),
    }
}

async fn search(c: &Common, p99_ms: f64, max_rate: f64, steps: u32) -> Result<()> {
    let mut best: Option<Report> = None;
    let mut trials = Vec::new();
    let mut rate = c.load.rate;
    let mut bad = None;
    // Double until a rate fails, then bisect between the best good and the first bad rate.
    while rate <= max_rate {
        let r = scenario::run(&c.scenario(rate, true)?).await?;
        trials.push(trial(&r, p99_ms));
        eprintln!("search: {rate:.0} mail/s -> {}", if sustained(&r, p99_ms) { "sustained" } else { "not sustained" });
        if sustained(&r, p99_ms) {
            best = Some(r);
            rate *= 2.0;
        } else {
            bad = Some(rate);
            break;
        }
    }
    if let Some(mut hi) = bad {
        let mut lo = best.as_ref().map_or(0.0, |b| b.target_rate);
        for _ in 0..steps {
            let mid = (lo + hi) / 2.0;
            if mid < 1.0 {
                break;
            }
            let r = scenario::run(&c.scenario(mid, true)?).await?;
            trials.push(trial(&r, p99_ms));
            let ok = sustained(&r, p99_ms);
            eprintln!("search: {mid:.0} mail/s -> {}", if ok { "sustained" } else { "not sustained" });
            if ok {
                lo = mid;
                best = Some(r);
            } else {
                hi = mid;
            }
        }
    }
    match best {
        Some(mut b) => {
            b.label = format!("{} (search: highest sustained rate, p99 <= {p99_ms} ms, no errors)", c.load.label);
            b.search_trials = Some(trials);
            c.load.emit(&b)
        }
        None => bail!("not even {} mail/s was sustained (tried: {trials:?})", c.load.rate),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(c) => {
            let report = scenario::run(&c.scenario(c.load.rate, c.load.no_read)?).await?;
            c.load.emit(&report)
        }
        Cmd::Search { common, p99_ms, max_rate, steps } => search(&common, p99_ms, max_rate, steps).await,
        Cmd::LwtBaseline { load, target } => load.emit(&lwt_baseline::run(&load, &target).await?),
        Cmd::Extras { common, idle_sessions, big, mailbox } => {
            let size = match format!("fixed:{big}").parse::<message::SizeMix>()? {
                message::SizeMix::Fixed(n) => n,
                _ => bail!("--big must be a size like 50m"),
            };
            let t = extras::Target {
                lmtp: common.lmtp[0].clone(),
                pop3: match common.pop3.first() {
                    Some(p) if p.contains('@') => bail!("extras connect from this namespace only: no ADDR@NETNS"),
                    Some(p) => p.clone(),
                    None => bail!("--pop3 is required"),
                },
                users: (0..common.load.users).map(|i| common.load.user_format.replace("{}", &i.to_string())).collect(),
                password: common.password.clone(),
                pids: common.pids.clone(),
            };
            let mut ex = extras::Extras::default();
            extras::logins(&t, common.load.pop3_concurrency.max(1), &mut ex).await?;
            extras::idle(&t, idle_sessions, &mut ex).await?;
            extras::big_retr(&t, size, &mut ex).await?;
            extras::stat_after_deletions(&t, mailbox, &mut ex).await?;
            let json = serde_json::to_string(&ex)?;
            println!("{}", serde_json::to_string_pretty(&ex)?);
            if let Some(path) = &common.load.json {
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                writeln!(f, "{json}")?;
            }
            Ok(())
        }
    }
}
