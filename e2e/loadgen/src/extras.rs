//! The further measurements: idle sessions, login throughput, a big RETR, and STAT/UIDL on a
//! mailbox before and after many deletions. Each reports figures; none asserts a timing.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::time::Instant;

use crate::lmtp::{LmtpClient, Outcome};
use crate::message;
use crate::pop3::Pop3Client;
use crate::procstat;
use crate::stats::{Latency, LatencySummary};

pub struct Target {
    pub lmtp: String,
    pub pop3: String,
    pub users: Vec<String>,
    pub password: String,
    pub pids: Vec<u32>,
}

#[derive(Debug, Serialize, Default)]
pub struct Extras {
    pub idle_sessions: usize,
    pub idle_rss_before_mib: f64,
    pub idle_rss_after_mib: f64,
    pub idle_rss_per_session_kib: f64,
    pub logins_cold_per_s: f64,
    pub logins_warm_per_s: f64,
    /// Latency of each of those logins (connect, USER, PASS).
    pub login_cold: Option<LatencySummary>,
    pub login_warm: Option<LatencySummary>,
    pub big_message_mib: f64,
    pub big_rss_before_mib: f64,
    pub big_rss_peak_deliver_mib: f64,
    pub big_rss_peak_retr_mib: f64,
    pub big_retr_s: f64,
    pub stat_mailbox_messages: u64,
    /// Login (USER/PASS, which takes the maildrop snapshot) on that mailbox: where a store pays
    /// for reading past deleted history, since STAT then answers from the snapshot.
    pub login_full: Option<LatencySummary>,
    pub login_after_deletions: Option<LatencySummary>,
    pub stat_full: Option<LatencySummary>,
    pub uidl_full: Option<LatencySummary>,
    pub stat_after_deletions: Option<LatencySummary>,
    pub uidl_after_deletions: Option<LatencySummary>,
}

fn rss_mib(pids: &[u32]) -> f64 {
    procstat::sample(pids).1 as f64 / 1024.0
}

/// Runs `fut` while sampling the servers' RSS every 20 ms; returns its output and the peak.
async fn with_peak<T>(pids: &[u32], fut: impl std::future::Future<Output = Result<T>>) -> Result<(T, f64)> {
    tokio::pin!(fut);
    let mut peak: f64 = rss_mib(pids);
    loop {
        tokio::select! {
            out = &mut fut => return Ok((out?, peak.max(rss_mib(pids)))),
            _ = tokio::time::sleep(Duration::from_millis(20)) => peak = peak.max(rss_mib(pids)),
        }
    }
}

async fn login(t: &Target, user: &str) -> Result<Pop3Client> {
    let mut c = Pop3Client::connect(&t.pop3).await?;
    c.login(user, &t.password).await?;
    Ok(c)
}

pub async fn idle(t: &Target, sessions: usize, ex: &mut Extras) -> Result<()> {
    ex.idle_sessions = sessions;
    ex.idle_rss_before_mib = rss_mib(&t.pids);
    let mut open = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let mut c = login(t, &t.users[i % t.users.len()]).await.with_context(|| format!("idle session {i}"))?;
        c.stat().await?;
        open.push(c);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    ex.idle_rss_after_mib = rss_mib(&t.pids);
    ex.idle_rss_per_session_kib = (ex.idle_rss_after_mib - ex.idle_rss_before_mib) * 1024.0 / sessions as f64;
    for mut c in open {
        c.quit().await?;
    }
    Ok(())
}

/// `rounds` logins of every user, `concurrency` at a time, each on its own connection (then QUIT);
/// returns logins per second and the latency of each login (connect to +OK after PASS).
async fn login_rate(t: &Target, rounds: usize, concurrency: usize) -> Result<(f64, Option<LatencySummary>)> {
    let users = &t.users;
    let latency = std::sync::Arc::new(std::sync::Mutex::new(Latency::default()));
    let start = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..rounds * users.len() {
        let permit = sem.clone().acquire_owned().await?;
        let (pop3, user, pw) = (t.pop3.clone(), users[i % users.len()].clone(), t.password.clone());
        let latency = latency.clone();
        tasks.push(tokio::spawn(async move {
            let _p = permit;
            let t0 = Instant::now();
            let mut c = Pop3Client::connect(&pop3).await?;
            c.login(&user, &pw).await?;
            latency.lock().unwrap().record(t0.elapsed());
            c.quit().await
        }));
    }
    for task in tasks {
        task.await??;
    }
    let rate = (rounds * users.len()) as f64 / start.elapsed().as_secs_f64();
    let summary = latency.lock().unwrap().summary();
    Ok((rate, summary))
}

/// Cold: the first login of each user since the server started (the password hash is paid on
/// every server); warm: the same users again, ten times each (pop3d's cache answers without the
/// hash; Dovecot's auth cache keeps the passdb entry but verifies the hash again).
pub async fn logins(t: &Target, concurrency: usize, ex: &mut Extras) -> Result<()> {
    (ex.logins_cold_per_s, ex.login_cold) = login_rate(t, 1, concurrency).await?;
    (ex.logins_warm_per_s, ex.login_warm) = login_rate(t, 10, concurrency).await?;
    Ok(())
}

pub async fn big_retr(t: &Target, size: usize, ex: &mut Extras) -> Result<()> {
    let user = &t.users[0];
    ex.big_message_mib = size as f64 / (1024.0 * 1024.0);
    ex.big_rss_before_mib = rss_mib(&t.pids);
    let msg = message::build("big-0", user, size);
    let (outcome, peak) = with_peak(&t.pids, async {
        let mut l = LmtpClient::connect(&t.lmtp).await?;
        l.deliver("load@popfleet.test", user, &msg).await
    })
    .await?;
    match outcome {
        Outcome::Accepted { .. } => {}
        Outcome::Refused(code, text) => bail!("big message refused: {code} {text}"),
        Outcome::Closed(text) => bail!("big message: connection closed ({text})"),
    }
    ex.big_rss_peak_deliver_mib = peak;
    let start = Instant::now();
    let (_, peak) = with_peak(&t.pids, async {
        let mut c = login(t, user).await?;
        let (n, _) = c.stat().await?;
        for i in 1..=n {
            c.retr(i).await?;
        }
        c.dele_all(n).await?;
        c.quit().await
    })
    .await?;
    ex.big_retr_s = start.elapsed().as_secs_f64();
    ex.big_rss_peak_retr_mib = peak;
    Ok(())
}

async fn stat_uidl(t: &Target, user: &str) -> Result<(Latency, Latency, Latency)> {
    let (mut logins, mut stat, mut uidl) = (Latency::default(), Latency::default(), Latency::default());
    for _ in 0..5 {
        let s = Instant::now();
        let mut c = login(t, user).await?;
        logins.record(s.elapsed());
        let s = Instant::now();
        c.stat().await?;
        stat.record(s.elapsed());
        let s = Instant::now();
        c.cmd_multi("UIDL").await?;
        uidl.record(s.elapsed());
        c.quit().await?;
    }
    Ok((logins, stat, uidl))
}

/// Fills one mailbox with `count` small messages (16 connections in parallel), measures STAT and
/// UIDL, deletes them all in one session, delivers 10 more and measures again: the second figure
/// is what tombstones (Cassandra) or expunged files (maildir) cost a later session.
pub async fn stat_after_deletions(t: &Target, count: u64, ex: &mut Extras) -> Result<()> {
    let user = t.users.last().expect("at least one user").clone();
    let fill = |n: u64, tag: &'static str| {
        let (lmtp, user) = (t.lmtp.clone(), user.clone());
        async move {
            let mut tasks = Vec::new();
            for w in 0..16u64 {
                let (lmtp, user) = (lmtp.clone(), user.clone());
                tasks.push(tokio::spawn(async move {
                    let mut l = LmtpClient::connect(&lmtp).await?;
                    for i in (w..n).step_by(16) {
                        let msg = message::build(&format!("{tag}-{i}"), &user, 1024);
                        match l.deliver("load@popfleet.test", &user, &msg).await? {
                            Outcome::Accepted { .. } => {}
                            Outcome::Refused(code, text) => bail!("fill refused: {code} {text}"),
                            Outcome::Closed(text) => bail!("fill: connection closed ({text})"),
                        }
                    }
                    anyhow::Ok(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            anyhow::Ok(())
        }
    };
    fill(count, "fill").await?;
    ex.stat_mailbox_messages = count;
    let (l, s, u) = stat_uidl(t, &user).await?;
    ex.login_full = l.summary();
    ex.stat_full = s.summary();
    ex.uidl_full = u.summary();
    let mut c = login(t, &user).await?;
    let (n, _) = c.stat().await?;
    c.dele_all(n).await?;
    c.quit().await?;
    fill(10, "after").await?;
    let (l, s, u) = stat_uidl(t, &user).await?;
    ex.login_after_deletions = l.summary();
    ex.stat_after_deletions = s.summary();
    ex.uidl_after_deletions = u.summary();
    // Leave the mailbox empty, so a scenario run afterwards finds exactly what it delivered.
    let mut c = login(t, &user).await?;
    let (n, _) = c.stat().await?;
    c.dele_all(n).await?;
    c.quit().await
}
