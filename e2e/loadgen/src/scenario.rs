//! The reference scenario: open-loop LMTP deliveries at a fixed rate to N users for a duration,
//! then one POP3 session per user: login, STAT, (RETR each), DELE all, QUIT.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use rand::{rngs::StdRng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::lmtp::{LmtpClient, Outcome};
use crate::message::{self, SizeMix};
use crate::netns::Endpoint;
use crate::pacing::{self, Arrival};
use crate::pop3::Pop3Client;
use crate::procstat;
use crate::stats::{Errors, Latency, Report, Timeline};

#[derive(Debug, Clone)]
pub struct Scenario {
    pub label: String,
    pub lmtp: Vec<String>,
    pub pop3: Vec<Endpoint>,
    pub users: usize,
    pub user_format: String,
    pub password: String,
    pub rate: f64,
    pub duration: Duration,
    pub sizes: SizeMix,
    pub concurrency: usize,
    pub pop3_concurrency: usize,
    pub retr: bool,
    pub skip_pop3: bool,
    pub settle: Duration,
    pub pids: Vec<u32>,
    pub ledger: Option<PathBuf>,
    /// Tries after the first for a delivery that failed temporarily, `retry_delay` apart.
    pub retries: u32,
    pub retry_delay: Duration,
    pub seed: u64,
    /// Width of the timeline's intervals.
    pub interval: Duration,
    /// How often to print a progress line to stderr; None: never.
    pub progress: Option<Duration>,
}

impl Scenario {
    pub fn user(&self, i: usize) -> String {
        self.user_format.replace("{}", &i.to_string())
    }
}

#[derive(Default)]
struct Tally {
    lmtp: Latency,
    /// The same, for messages of at most [`SMALL_MESSAGE`] octets only.
    lmtp_small: Latency,
    errors: Errors,
    timeline: Timeline,
    delivered: u64,
    octets: u64,
    reconnects: u64,
    /// Deliveries sent again after a temporary failure (an MTA's retries).
    retried: u64,
    /// Retries the server answered as already delivered (not stored again).
    absorbed: u64,
}

/// In the default mix 1 % of the messages are 2-5 MiB: in a run of N deliveries they are the
/// slowest 1 %, so they alone make the LMTP p99. The report gives the p99 without them too, so a
/// reader can tell a slow path for big messages from a slow server.
pub const SMALL_MESSAGE: usize = 1 << 20;

/// Errors are grouped by the first words of their text, so "451 4.3.0 <x> ..." groups by code.
fn kind(prefix: &str, text: &str) -> String {
    let short: String = text.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    format!("{prefix}: {}", short.chars().take(48).collect::<String>())
}

type Pool = Arc<Mutex<Vec<LmtpClient>>>;

/// Whether an MTA would try the delivery again: a 4xx, or a connection that failed or closed.
fn temporary(result: &Result<(Outcome, bool)>) -> bool {
    match result {
        Ok((Outcome::Accepted { .. }, _)) => false,
        Ok((Outcome::Refused(code, _), _)) => (400..500).contains(code),
        Ok((Outcome::Closed(_), _)) | Err(_) => true,
    }
}

/// One delivery on a pooled connection; true when it took a second connection. As an MTA with a
/// connection cache does: a reused connection that the server closed before taking anything
/// (idle timeout, a pod shutting down) is dropped and the message goes out on a new one at once.
async fn deliver_one(addr: &str, pool: &Pool, rcpt: &str, msg: &[u8]) -> Result<(Outcome, bool)> {
    let pooled = pool.lock().unwrap().pop();
    let mut reconnected = false;
    let mut outcome = match pooled {
        Some(mut conn) => match conn.deliver("load@popfleet.test", rcpt, msg).await? {
            Outcome::Closed(_) => {
                reconnected = true;
                None
            }
            done => Some((conn, done)),
        },
        None => None,
    };
    if outcome.is_none() {
        let mut conn = LmtpClient::connect(addr).await?;
        let done = conn.deliver("load@popfleet.test", rcpt, msg).await?;
        outcome = Some((conn, done));
    }
    let (conn, done) = outcome.expect("set above");
    if !matches!(done, Outcome::Closed(_)) {
        pool.lock().unwrap().push(conn);
    }
    Ok((done, reconnected))
}

/// Samples the server's process tree every 100 ms for peak RSS; CPU is the difference of totals.
struct Sampler {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<u64>,
    cpu0: f64,
    pids: Vec<u32>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Option<Self> {
        if pids.is_empty() {
            return None;
        }
        let stop = Arc::new(tokio::sync::Notify::new());
        let (cpu0, _) = procstat::sample(&pids);
        let (s, p) = (stop.clone(), pids.clone());
        let task = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                peak = peak.max(procstat::sample(&p).1);
                tokio::select! {
                    _ = s.notified() => return peak,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        Some(Self { stop, task, cpu0, pids })
    }

    async fn finish(self) -> (f64, f64) {
        self.stop.notify_one();
        let peak_kib = self.task.await.unwrap_or(0);
        let (cpu1, _) = procstat::sample(&self.pids);
        (peak_kib as f64 / 1024.0, cpu1 - self.cpu0)
    }
}

/// The delivery half; returns the tally and how long it took until the last reply.
async fn deliveries(sc: &Scenario) -> Result<(Tally, Duration, u64)> {
    let total = (sc.rate * sc.duration.as_secs_f64()).round() as u64;
    let tally = Arc::new(Mutex::new(Tally { timeline: Timeline::new(sc.interval), ..Tally::default() }));
    let pools: Vec<Pool> = sc.lmtp.iter().map(|_| Pool::default()).collect();
    let ledger = match &sc.ledger {
        Some(p) => Some(Arc::new(Mutex::new(BufWriter::new(File::create(p)?)))),
        None => None,
    };
    let mut rng = StdRng::seed_from_u64(sc.seed);
    let run = format!("{:x}", sc.seed);
    let (retries, retry_delay) = (sc.retries, sc.retry_delay);
    let start = Instant::now();
    let progress = sc.progress.map(|every| {
        let (label, tally) = (sc.label.clone(), tally.clone());
        tokio::spawn(delivery_progress(label, tally, start, every, total))
    });
    let elapsed = pacing::open_loop(start, sc.rate, total, sc.concurrency, |Arrival { index: i, due, permit }| {
        let user_no = i as usize % sc.users;
        let rcpt = sc.user(user_no);
        let token = format!("{run}-{i}");
        let size = sc.sizes.draw(&mut rng);
        let msg = message::build(&token, &rcpt, size);
        let addr = sc.lmtp[user_no % sc.lmtp.len()].clone();
        let pool = pools[user_no % pools.len()].clone();
        let (tally, ledger) = (tally.clone(), ledger.clone());
        async move {
            let mut tries = 0;
            let result = loop {
                let result = deliver_one(&addr, &pool, &rcpt, &msg).await;
                tally.lock().unwrap().reconnects += u64::from(matches!(result, Ok((_, true))));
                if tries == retries || !temporary(&result) {
                    break result;
                }
                tokio::time::sleep(retry_delay).await;
                tries += 1;
            };
            let latency = due.elapsed();
            drop(permit);
            let at = due.duration_since(start) + latency;
            let mut t = tally.lock().unwrap();
            t.retried += u64::from(tries);
            let failure = match result.map(|(outcome, _)| outcome) {
                Ok(Outcome::Accepted { again }) => {
                    t.absorbed += u64::from(again);
                    t.lmtp.record(latency);
                    if msg.len() <= SMALL_MESSAGE {
                        t.lmtp_small.record(latency);
                    }
                    t.timeline.delivered(at, latency);
                    t.delivered += 1;
                    t.octets += msg.len() as u64;
                    if let Some(l) = &ledger {
                        let _ = writeln!(l.lock().unwrap(), "{rcpt} {token}");
                    }
                    None
                }
                Ok(Outcome::Refused(code, text)) => Some(kind(&format!("lmtp {code}"), &text)),
                Ok(Outcome::Closed(text)) => Some(kind("lmtp closed", &text)),
                Err(e) => Some(kind("lmtp io", &format!("{e:#}"))),
            };
            if let Some(k) = failure {
                t.errors.add(k);
                t.timeline.failed(at);
            }
        }
    })
    .await;
    if let Some(p) = progress {
        p.abort();
        let _ = p.await; // the task holds a clone of the tally until it is gone
    }
    let elapsed = elapsed?;
    if let Some(l) = ledger {
        l.lock().unwrap().flush()?;
    }
    let tally = Arc::try_unwrap(tally).map_err(|_| anyhow::anyhow!("tally still shared"))?.into_inner().unwrap();
    Ok((tally, elapsed, total))
}

/// Every `every`, one line to stderr: how far the delivery phase is, the rate over the last
/// `every`, the LMTP p99 of everything so far and the errors, so a long run shows it is alive
/// (and how it is doing) before its report. Runs until aborted.
async fn delivery_progress(label: String, tally: Arc<Mutex<Tally>>, start: Instant, every: Duration, total: u64) {
    let mut last = 0;
    let mut tick = tokio::time::interval_at(start + every, every);
    loop {
        tick.tick().await;
        let (delivered, p99, errors) = {
            let t = tally.lock().unwrap();
            (t.delivered, t.lmtp.summary().map(|l| l.p99_ms), t.errors.total())
        };
        let rate = (delivered - last) as f64 / every.as_secs_f64();
        last = delivered;
        let p99 = p99.map_or("-".into(), |p| format!("{p:.1} ms"));
        eprintln!(
            "[{label}] {:>5.0} s: {delivered} of {total} delivered, {rate:.1} mail/s, LMTP p99 so far {p99}, errors {errors}",
            start.elapsed().as_secs_f64()
        );
    }
}

/// The same for the read half: sessions done out of the users, and errors.
async fn read_progress(label: String, tally: Arc<Mutex<ReadTally>>, users: usize, every: Duration) {
    let start = Instant::now();
    let mut tick = tokio::time::interval_at(start + every, every);
    loop {
        tick.tick().await;
        let (done, p99, errors) = {
            let t = tally.lock().unwrap();
            (t.session.summary().map_or(0, |l| l.count), t.session.summary().map(|l| l.p99_ms), t.errors.total())
        };
        let p99 = p99.map_or("-".into(), |p| format!("{p:.1} ms"));
        eprintln!(
            "[{label}] reads {:>5.0} s: {done} of {users} sessions, session p99 so far {p99}, errors {errors}",
            start.elapsed().as_secs_f64()
        );
    }
}

#[derive(Default)]
struct ReadTally {
    login: Latency,
    stat: Latency,
    retr: Latency,
    quit: Latency,
    session: Latency,
    found: u64,
    deleted: u64,
    errors: Errors,
}

async fn read_one(sc: &Scenario, user_no: usize, t: &Mutex<ReadTally>) -> Result<()> {
    let addr = &sc.pop3[user_no % sc.pop3.len()].addr;
    let user = sc.user(user_no);
    let t0 = Instant::now();
    let mut c = Pop3Client::connect(addr).await?;
    c.login(&user, &sc.password).await?;
    t.lock().unwrap().login.record(t0.elapsed());
    let t1 = Instant::now();
    let (count, _) = c.stat().await?;
    t.lock().unwrap().stat.record(t1.elapsed());
    if sc.retr {
        for n in 1..=count {
            let tr = Instant::now();
            c.retr(n).await?;
            t.lock().unwrap().retr.record(tr.elapsed());
        }
    }
    c.dele_all(count).await?;
    let tq = Instant::now();
    c.quit().await?;
    let mut t = t.lock().unwrap();
    t.quit.record(tq.elapsed());
    t.session.record(t0.elapsed());
    t.found += count;
    t.deleted += count;
    Ok(())
}

async fn reads(sc: &Scenario) -> ReadTally {
    let tally = Arc::new(Mutex::new(ReadTally::default()));
    let permits = Arc::new(Semaphore::new(sc.pop3_concurrency));
    let progress =
        sc.progress.map(|every| tokio::spawn(read_progress(sc.label.clone(), tally.clone(), sc.users, every)));
    let mut tasks = Vec::new();
    for user_no in 0..sc.users {
        let (sc, tally, permits) = (sc.clone(), tally.clone(), permits.clone());
        let endpoint = sc.pop3[user_no % sc.pop3.len()].clone();
        tasks.push(endpoint.spawn(async move {
            let _permit = permits.acquire_owned().await;
            if let Err(e) = read_one(&sc, user_no, &tally).await {
                tally.lock().unwrap().errors.add(kind("pop3", &format!("{e:#}")));
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(p) = progress {
        p.abort();
        let _ = p.await; // the task holds a clone of the tally until it is gone
    }
    Arc::try_unwrap(tally).ok().expect("all readers finished").into_inner().unwrap()
}

pub async fn run(sc: &Scenario) -> Result<Report> {
    let sampler = Sampler::start(sc.pids.clone());
    let (tally, elapsed, attempted) = deliveries(sc).await?;
    let mut errors = tally.errors.clone();
    let read = if sc.skip_pop3 {
        None
    } else {
        tokio::time::sleep(sc.settle).await;
        let r = reads(sc).await;
        errors.merge(&r.errors);
        Some(r)
    };
    let (peak, cpu) = match sampler {
        Some(s) => {
            let (p, c) = s.finish().await;
            (Some(p), Some(c))
        }
        None => (None, None),
    };
    let secs = elapsed.as_secs_f64();
    let r = read.as_ref();
    Ok(Report {
        label: sc.label.clone(),
        target_rate: sc.rate,
        duration_s: sc.duration.as_secs_f64(),
        users: sc.users,
        size_mix: format!("{:?}", sc.sizes).to_lowercase(),
        attempted,
        delivered: tally.delivered,
        delivered_per_s: tally.delivered as f64 / secs,
        delivered_mib_per_s: tally.octets as f64 / secs / (1024.0 * 1024.0),
        lmtp: tally.lmtp.summary(),
        lmtp_up_to_1mib: tally.lmtp_small.summary(),
        pop3_login: r.and_then(|r| r.login.summary()),
        pop3_stat: r.and_then(|r| r.stat.summary()),
        pop3_retr: r.and_then(|r| r.retr.summary()),
        pop3_quit: r.and_then(|r| r.quit.summary()),
        pop3_session: r.and_then(|r| r.session.summary()),
        messages_found: r.map_or(0, |r| r.found),
        messages_deleted: r.map_or(0, |r| r.deleted),
        errors,
        reconnects: tally.reconnects,
        mta_retries: tally.retried,
        retries_absorbed: tally.absorbed,
        server_peak_rss_mib: peak,
        server_cpu_s: cpu,
        timeline: tally.timeline.intervals(elapsed),
        search_trials: None,
        lwt_retries: None,
        serial_timeouts: None,
    })
}
