//! The LWT baseline: the mailbox popfleet is built not to be, measured under the same load.
//!
//! popfleet stores mail in Cassandra without a single lightweight transaction, and claims that this
//! is what lets it keep up across datacenters. This module is the other side of that comparison:
//! a Cassandra mailbox that allocates each message's UID and MODSEQ per mailbox with LWTs (a
//! SERIAL read of the mailbox state, then a conditional INSERT/UPDATE, retried when another Paxos
//! round won), the usual way to keep per-mailbox counters strictly increasing on Cassandra when
//! any node may deliver. The reference run of such a mailbox, on two datacenters of three nodes
//! ~1 ms apart, delivered 73 of 100 mail/s offered, with 476 "read timeout at consistency SERIAL".
//! `popfleet-load lwt-baseline` sets up that mailbox and offers it the same open-loop load as
//! `popfleet-load run` (same pacing, sizes, seed and report), so the saving is measured.
//!
//! It writes to Cassandra directly, with no LMTP or POP3 in front: no protocol parsing, no
//! connection per delivery, no server process in between. That overhead is all on popfleet's side,
//! which makes the comparison conservative. It is a test target only, in the load generator,
//! which no product crate imports (and `e2e/lint-no-lwt` keeps LWTs out of the product paths).

mod cluster;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use rand::{rngs::StdRng, SeedableRng};
use scylla::errors::{DbError, ExecutionError, RequestAttemptError, WriteType};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency, Statement};
use scylla::value::{CqlValue, Row};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::message;
use crate::netns;
use crate::pacing::{self, Arrival};
use crate::stats::{Errors, Latency, Report, Timeline};
use crate::Load;
pub use cluster::Target;

/// The mailbox's state, read at the serial consistency: a Paxos round of its own.
pub const READ_STATE: &str = "SELECT next_uid, highest_modseq FROM mailbox_state WHERE mailbox = ?";
/// The first delivery to a mailbox creates its state.
pub const CREATE_STATE: &str =
    "INSERT INTO mailbox_state (mailbox, next_uid, highest_modseq) VALUES (?, ?, ?) IF NOT EXISTS";
/// A delivery takes the next UID and a new MODSEQ, if nobody took them since the read.
pub const TAKE_UID: &str = "UPDATE mailbox_state SET next_uid = ?, highest_modseq = ? \
     WHERE mailbox = ? IF next_uid = ? AND highest_modseq = ?";
/// An expunge (DELE) takes a new MODSEQ, as a mailbox with CONDSTORE/QRESYNC semantics must.
pub const TAKE_MODSEQ: &str = "UPDATE mailbox_state SET highest_modseq = ? WHERE mailbox = ? IF highest_modseq = ?";
pub const PUT_MESSAGE: &str = "INSERT INTO messages (mailbox, uid, modseq, size, content) VALUES (?, ?, ?, ?, ?)";
pub const LIST: &str = "SELECT uid, size FROM messages WHERE mailbox = ?";
pub const DELETE_MESSAGE: &str = "DELETE FROM messages WHERE mailbox = ? AND uid = ?";

/// Beyond this many lost Paxos rounds in a row a transaction gives up ("lwt contention").
const MAX_RETRIES: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    SerialRead,
    Conditional,
    Regular,
}

/// Consistency levels: `regular` for plain reads and writes (and an LWT's commit), `serial` for
/// the Paxos phases.
#[derive(Debug, Clone, Copy)]
pub struct Levels {
    pub regular: Consistency,
    pub serial: SerialConsistency,
}

/// A statement with the levels its kind needs; prepared statements keep this configuration.
fn statement(cql: &str, kind: Kind, levels: Levels) -> Statement {
    let mut s = Statement::new(cql);
    match kind {
        Kind::SerialRead => {
            s.set_consistency(match levels.serial {
                SerialConsistency::Serial => Consistency::Serial,
                SerialConsistency::LocalSerial => Consistency::LocalSerial,
            });
            s.set_is_idempotent(true);
        }
        Kind::Conditional => {
            s.set_consistency(levels.regular);
            s.set_serial_consistency(Some(levels.serial));
            // A timed-out Paxos round may still have been applied: never resend it blindly.
            s.set_is_idempotent(false);
        }
        Kind::Regular => {
            s.set_consistency(levels.regular);
            s.set_serial_consistency(None);
            s.set_is_idempotent(true);
        }
    }
    s
}

/// The prepared statements of one session (one local datacenter).
pub struct Db {
    session: scylla::client::session::Session,
    read_state: PreparedStatement,
    create_state: PreparedStatement,
    take_uid: PreparedStatement,
    take_modseq: PreparedStatement,
    put_message: PreparedStatement,
    list: PreparedStatement,
    delete_message: PreparedStatement,
}

impl Db {
    async fn prepare(session: scylla::client::session::Session, levels: Levels) -> Result<Self> {
        let prep = |cql: &'static str, kind: Kind| {
            let session = &session;
            async move {
                let p = session.prepare(statement(cql, kind, levels)).await?;
                // The baseline is worthless if an allocation silently runs without Paxos.
                if kind == Kind::Conditional {
                    anyhow::ensure!(
                        p.get_serial_consistency() == Some(levels.serial),
                        "{cql}: serial consistency lost"
                    );
                }
                Ok::<_, anyhow::Error>(p)
            }
        };
        Ok(Self {
            read_state: prep(READ_STATE, Kind::SerialRead).await?,
            create_state: prep(CREATE_STATE, Kind::Conditional).await?,
            take_uid: prep(TAKE_UID, Kind::Conditional).await?,
            take_modseq: prep(TAKE_MODSEQ, Kind::Conditional).await?,
            put_message: prep(PUT_MESSAGE, Kind::Regular).await?,
            list: prep(LIST, Kind::Regular).await?,
            delete_message: prep(DELETE_MESSAGE, Kind::Regular).await?,
            session,
        })
    }

    async fn read_state(&self, mailbox: &str) -> Result<Option<State>, Failure> {
        let result = self.session.execute_unpaged(&self.read_state, (mailbox,)).await?;
        let rows = result.into_rows_result().map_err(other)?;
        let row = rows.maybe_first_row::<(i64, i64)>().map_err(other)?;
        Ok(row.map(|(next_uid, highest_modseq)| State { next_uid, highest_modseq }))
    }

    /// Runs a conditional statement; false when Cassandra answered `[applied] = false`.
    async fn conditional(&self, p: &PreparedStatement, values: impl SerializeRow) -> Result<bool, Failure> {
        let rows = self.session.execute_unpaged(p, values).await?.into_rows_result().map_err(other)?;
        // Not applied, the row also carries the current values; `[applied]` is always first.
        let row = rows.first_row::<Row>().map_err(other)?;
        Ok(matches!(row.columns.first(), Some(Some(CqlValue::Boolean(true)))))
    }
}

/// Why a transaction failed, as the report counts it.
#[derive(Debug)]
enum Failure {
    Contention,
    Db(Box<ExecutionError>),
    Other(String),
}

impl From<ExecutionError> for Failure {
    fn from(e: ExecutionError) -> Self {
        Failure::Db(Box::new(e))
    }
}

fn other(e: impl std::fmt::Display) -> Failure {
    Failure::Other(e.to_string())
}

fn is_serial(c: Consistency) -> bool {
    matches!(c, Consistency::Serial | Consistency::LocalSerial)
}

/// The first words of a message, so that kinds group and the report stays short.
fn words(text: &str, n: usize) -> String {
    text.split_whitespace().take(n).collect::<Vec<_>>().join(" ").chars().take(60).collect()
}

impl Failure {
    fn db_error(&self) -> Option<&DbError> {
        match self {
            Failure::Db(e) => match e.as_ref() {
                ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, _)) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    /// A Paxos phase that timed out. Cassandra reports a SERIAL read's timeout as a read timeout
    /// at SERIAL (the reference's error), and a conditional write's as a write timeout of type
    /// CAS at the serial level.
    fn serial_timeout(&self) -> Option<&'static str> {
        match self.db_error()? {
            DbError::ReadTimeout { consistency, .. } if is_serial(*consistency) => Some("serial read timeout"),
            DbError::WriteTimeout { consistency, write_type, .. }
                if is_serial(*consistency) || *write_type == WriteType::Cas =>
            {
                Some("serial write timeout")
            }
            _ => None,
        }
    }

    fn kind(&self) -> String {
        if let Some(k) = self.serial_timeout() {
            return k.into();
        }
        if let Some(e) = self.db_error() {
            return match e {
                DbError::ReadTimeout { consistency, .. } => format!("read timeout at {consistency}"),
                DbError::WriteTimeout { consistency, .. } => format!("write timeout at {consistency}"),
                DbError::Unavailable { consistency, .. } => format!("unavailable at {consistency}"),
                e => format!("cassandra: {}", words(&e.to_string(), 6)),
            };
        }
        match self {
            Failure::Contention => "lwt contention".into(),
            Failure::Db(e) if matches!(**e, ExecutionError::RequestTimeout(_)) => "client timeout".into(),
            Failure::Db(e) => format!("cassandra: {}", words(&e.to_string(), 6)),
            Failure::Other(e) => words(e, 6),
        }
    }
}

/// Errors, lost Paxos rounds and Paxos timeouts of one half.
#[derive(Default)]
struct Lwt {
    errors: Errors,
    retries: u64,
    serial_timeouts: u64,
}

impl Lwt {
    fn fail(&mut self, half: &str, f: &Failure) {
        if f.serial_timeout().is_some() {
            self.serial_timeouts += 1;
        }
        self.errors.add(format!("{half}: {}", f.kind()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    next_uid: i64,
    highest_modseq: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Take {
    /// A delivery: the next UID and a new MODSEQ.
    Uid,
    /// An expunge: a new MODSEQ.
    Modseq,
}

impl State {
    /// The state of a mailbox that has never had a message.
    const EMPTY: State = State { next_uid: 1, highest_modseq: 0 };

    fn after(self, take: Take) -> State {
        State { next_uid: self.next_uid + i64::from(take == Take::Uid), highest_modseq: self.highest_modseq + 1 }
    }
}

/// Allocates with LWTs and returns the state it wrote (a delivery's UID is `next_uid - 1`).
/// `known` is a state this session wrote itself, which saves the SERIAL read (a DELE after a
/// DELE); whenever a round is lost the state is read again at SERIAL.
async fn allocate(
    db: &Db,
    mailbox: &str,
    take: Take,
    mut known: Option<State>,
    retries: &mut u64,
) -> Result<State, Failure> {
    for attempt in 0..=MAX_RETRIES {
        if attempt > 0 {
            *retries += 1;
        }
        let current = match known.take() {
            Some(s) => Some(s),
            None => db.read_state(mailbox).await?,
        };
        let (next, applied) = match (current, take) {
            (None, Take::Uid) => {
                let n = State::EMPTY.after(take);
                (n, db.conditional(&db.create_state, (mailbox, n.next_uid, n.highest_modseq)).await?)
            }
            (None, Take::Modseq) => return Err(Failure::Other("no mailbox state to expunge from".into())),
            (Some(c), Take::Uid) => {
                let n = c.after(take);
                let values = (n.next_uid, n.highest_modseq, mailbox, c.next_uid, c.highest_modseq);
                (n, db.conditional(&db.take_uid, values).await?)
            }
            (Some(c), Take::Modseq) => {
                let n = c.after(take);
                (n, db.conditional(&db.take_modseq, (n.highest_modseq, mailbox, c.highest_modseq)).await?)
            }
        };
        if applied {
            return Ok(next);
        }
    }
    Err(Failure::Contention)
}

/// One delivery: allocate UID and MODSEQ, then write the message.
async fn deliver(db: &Db, mailbox: &str, content: &[u8], retries: &mut u64) -> Result<(), Failure> {
    let state = allocate(db, mailbox, Take::Uid, None, retries).await?;
    let size = i32::try_from(content.len()).map_err(other)?;
    let values = (mailbox, state.next_uid - 1, state.highest_modseq, size, content);
    db.session.execute_unpaged(&db.put_message, values).await?;
    Ok(())
}

#[derive(Default)]
struct Tally {
    latency: Latency,
    timeline: Timeline,
    lwt: Lwt,
    delivered: u64,
    octets: u64,
}

type Ledger = Option<Arc<Mutex<BufWriter<File>>>>;

/// The delivery half, paced exactly as `run`'s LMTP deliveries.
async fn deliveries(load: &Load, db: Arc<Db>, ledger: Ledger) -> Result<(Tally, Duration, u64)> {
    let total = (load.rate * load.duration).round() as u64;
    let timeline = Timeline::new(Duration::from_secs_f64(load.interval));
    let tally = Arc::new(Mutex::new(Tally { timeline, ..Tally::default() }));
    let mut rng = StdRng::seed_from_u64(load.seed);
    let run = format!("{:x}", load.seed);
    let start = Instant::now();
    let elapsed = pacing::open_loop(start, load.rate, total, load.concurrency, |Arrival { index: i, due, permit }| {
        let mailbox = user(load, i as usize % load.users);
        let token = format!("{run}-{i}");
        let msg = message::build(&token, &mailbox, load.sizes.draw(&mut rng));
        let (db, tally, ledger) = (db.clone(), tally.clone(), ledger.clone());
        async move {
            let mut retries = 0;
            let result = deliver(&db, &mailbox, &msg, &mut retries).await;
            let latency = due.elapsed();
            drop(permit);
            let at = due.duration_since(start) + latency;
            let mut t = tally.lock().unwrap();
            t.lwt.retries += retries;
            match result {
                Ok(()) => {
                    t.latency.record(latency);
                    t.timeline.delivered(at, latency);
                    t.delivered += 1;
                    t.octets += msg.len() as u64;
                    if let Some(l) = &ledger {
                        let _ = writeln!(l.lock().unwrap(), "{mailbox} {token}");
                    }
                }
                Err(f) => {
                    t.lwt.fail("deliver", &f);
                    t.timeline.failed(at);
                }
            }
        }
    })
    .await?;
    let tally = Arc::try_unwrap(tally).map_err(|_| anyhow::anyhow!("tally still shared"))?.into_inner().unwrap();
    Ok((tally, elapsed, total))
}

fn user(load: &Load, i: usize) -> String {
    load.user_format.replace("{}", &i.to_string())
}

#[derive(Default)]
struct ReadTally {
    stat: Latency,
    session: Latency,
    found: u64,
    deleted: u64,
    lwt: Lwt,
}

/// One session of the read half: STAT (the listing), DELE each message (a new MODSEQ by LWT,
/// then the row's deletion), QUIT (nothing left to commit).
async fn read_one(db: &Db, mailbox: &str, t: &Mutex<ReadTally>) -> Result<(), Failure> {
    let t0 = Instant::now();
    let rows = db.session.execute_unpaged(&db.list, (mailbox,)).await?.into_rows_result().map_err(other)?;
    let listing = rows.rows::<(i64, i32)>().map_err(other)?.collect::<Result<Vec<_>, _>>().map_err(other)?;
    {
        let mut t = t.lock().unwrap();
        t.stat.record(t0.elapsed());
        t.found += listing.len() as u64;
    }
    let mut known = None;
    for (uid, _size) in listing {
        let mut retries = 0;
        let allocated = allocate(db, mailbox, Take::Modseq, known, &mut retries).await;
        t.lock().unwrap().lwt.retries += retries;
        known = Some(allocated?);
        db.session.execute_unpaged(&db.delete_message, (mailbox, uid)).await?;
        t.lock().unwrap().deleted += 1;
    }
    t.lock().unwrap().session.record(t0.elapsed());
    Ok(())
}

/// The other datacenter's session, and the runtime its readers run on (in its namespace, with
/// --read-netns; None: the caller's).
pub struct Remote {
    db: Arc<Db>,
    runtime: Option<tokio::runtime::Handle>,
}

/// The read half; odd users read through `remote` when there is one (the other datacenter).
async fn reads(load: &Load, local: Arc<Db>, remote: Option<Remote>) -> ReadTally {
    let tally = Arc::new(Mutex::new(ReadTally::default()));
    let permits = Arc::new(Semaphore::new(load.pop3_concurrency.max(1)));
    let mut tasks = Vec::new();
    for user_no in 0..load.users {
        let (db, runtime) = match (&remote, user_no % 2) {
            (Some(r), 1) => (r.db.clone(), r.runtime.as_ref()),
            _ => (local.clone(), None),
        };
        let (mailbox, tally, permits) = (user(load, user_no), tally.clone(), permits.clone());
        let read = async move {
            let _permit = permits.acquire_owned().await;
            if let Err(f) = read_one(&db, &mailbox, &tally).await {
                tally.lock().unwrap().lwt.fail("read", &f);
            }
        };
        tasks.push(netns::spawn_on(runtime, read));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(tally).ok().expect("all readers finished").into_inner().unwrap()
}

pub async fn run(load: &Load, target: &Target) -> Result<Report> {
    load.check(load.rate)?;
    let (local, remote) = target.connect().await?;
    let ledger = match &load.ledger {
        Some(p) => Some(Arc::new(Mutex::new(BufWriter::new(File::create(p)?)))),
        None => None,
    };
    let (tally, elapsed, attempted) = deliveries(load, local.clone(), ledger.clone()).await?;
    if let Some(l) = ledger {
        l.lock().unwrap().flush()?;
    }
    let read = if load.no_read {
        None
    } else {
        tokio::time::sleep(Duration::from_secs_f64(load.settle)).await;
        Some(reads(load, local, remote).await)
    };
    let mut errors = tally.lwt.errors.clone();
    let (mut retries, mut serial_timeouts) = (tally.lwt.retries, tally.lwt.serial_timeouts);
    if let Some(r) = &read {
        errors.merge(&r.lwt.errors);
        retries += r.lwt.retries;
        serial_timeouts += r.lwt.serial_timeouts;
    }
    let secs = elapsed.as_secs_f64();
    let r = read.as_ref();
    Ok(Report {
        label: format!("{} (LWT baseline, {})", load.label, target.describe()),
        target_rate: load.rate,
        duration_s: load.duration,
        users: load.users,
        size_mix: format!("{:?}", load.sizes).to_lowercase(),
        attempted,
        delivered: tally.delivered,
        delivered_per_s: tally.delivered as f64 / secs,
        delivered_mib_per_s: tally.octets as f64 / secs / (1024.0 * 1024.0),
        lmtp: tally.latency.summary(),
        lmtp_up_to_1mib: None,
        pop3_login: None,
        pop3_stat: r.and_then(|r| r.stat.summary()),
        pop3_retr: None,
        pop3_quit: None,
        pop3_session: r.and_then(|r| r.session.summary()),
        messages_found: r.map_or(0, |r| r.found),
        messages_deleted: r.map_or(0, |r| r.deleted),
        errors,
        reconnects: 0,
        mta_retries: 0,
        retries_absorbed: 0,
        server_peak_rss_mib: None,
        server_cpu_s: None,
        timeline: tally.timeline.intervals(elapsed),
        search_trials: None,
        lwt_retries: Some(retries),
        serial_timeouts: Some(serial_timeouts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conditional statements: each is a Paxos round.
    const ALLOCATIONS: [&str; 3] = [CREATE_STATE, TAKE_UID, TAKE_MODSEQ];

    const LEVELS: [Levels; 2] = [
        Levels { regular: Consistency::LocalQuorum, serial: SerialConsistency::Serial },
        Levels { regular: Consistency::LocalQuorum, serial: SerialConsistency::LocalSerial },
    ];

    #[test]
    fn allocations_are_lwts_at_the_serial_level() {
        for levels in LEVELS {
            for cql in ALLOCATIONS {
                assert!(cql.contains(" IF "), "{cql} is not conditional");
                let s = statement(cql, Kind::Conditional, levels);
                assert_eq!(s.get_serial_consistency(), Some(levels.serial), "{cql}");
                assert_eq!(s.get_consistency(), Some(Consistency::LocalQuorum), "{cql}: the commit level");
            }
            let read = statement(READ_STATE, Kind::SerialRead, levels);
            assert!(read.get_consistency().is_some_and(is_serial), "the state is read through Paxos");
        }
        for cql in [PUT_MESSAGE, LIST, DELETE_MESSAGE, READ_STATE] {
            assert!(!cql.contains(" IF "), "{cql} must not be conditional");
        }
        assert_eq!(statement(PUT_MESSAGE, Kind::Regular, LEVELS[0]).get_serial_consistency(), None);
    }

    #[test]
    fn uid_and_modseq_allocation() {
        let first = State::EMPTY.after(Take::Uid);
        assert_eq!(first, State { next_uid: 2, highest_modseq: 1 }, "the first message is UID 1, MODSEQ 1");
        assert_eq!(first.after(Take::Uid), State { next_uid: 3, highest_modseq: 2 });
        assert_eq!(first.after(Take::Modseq), State { next_uid: 2, highest_modseq: 2 }, "DELE takes no UID");
    }

    fn db(e: DbError) -> Failure {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, "from the server".into())).into()
    }

    #[test]
    fn serial_timeouts_are_their_own_kind() {
        let read = |consistency| DbError::ReadTimeout { consistency, received: 1, required: 2, data_present: false };
        let write =
            |consistency, write_type| DbError::WriteTimeout { consistency, received: 1, required: 2, write_type };
        let cases = [
            (db(read(Consistency::Serial)), "serial read timeout", true),
            (db(read(Consistency::LocalSerial)), "serial read timeout", true),
            (db(write(Consistency::Serial, WriteType::Cas)), "serial write timeout", true),
            (db(write(Consistency::LocalQuorum, WriteType::Cas)), "serial write timeout", true),
            (db(read(Consistency::LocalQuorum)), "read timeout at LocalQuorum", false),
            (db(write(Consistency::LocalQuorum, WriteType::Simple)), "write timeout at LocalQuorum", false),
            (Failure::Contention, "lwt contention", false),
            (ExecutionError::RequestTimeout(Duration::from_secs(30)).into(), "client timeout", false),
        ];
        let mut lwt = Lwt::default();
        for (f, kind, serial) in &cases {
            assert_eq!(f.kind(), *kind);
            assert_eq!(f.serial_timeout().is_some(), *serial, "{kind}");
            lwt.fail("deliver", f);
        }
        assert_eq!(lwt.serial_timeouts, 4);
        assert_eq!(lwt.errors.0["deliver: serial read timeout"], 2);
    }
}
