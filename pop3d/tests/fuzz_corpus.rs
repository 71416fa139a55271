//! The stable-toolchain fuzz runner (the nightly one is cargo-fuzz in `fuzz/`).
//!
//! For each target of `pop3d::fuzz`: replays the checked-in corpus (`fuzz/corpus/<target>/`,
//! shared with cargo-fuzz) and the built-in seeds, then mutates them for a bounded time.
//!
//!   cargo test --release -p pop3d --test fuzz_corpus                        # 2 s per target
//!   POPFLEET_FUZZ_SECS=600 cargo test --release -p pop3d --test fuzz_corpus -- --nocapture
//!   POPFLEET_FUZZ_SEED=1234 ...                                             # replay a run
//!
//! A failing input is written to `$CARGO_TARGET_TMPDIR/fuzz-failures/` and printed in hex; copy
//! it into the corpus once fixed, so it stays a regression test.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

fn load_corpus(target: &str) -> Vec<Vec<u8>> {
    let mut out = pop3d::fuzz::seeds(target);
    if let Ok(entries) = std::fs::read_dir(corpus_dir(target)) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if let Ok(bytes) = std::fs::read(&p) {
                out.push(bytes);
            }
        }
    }
    out
}

/// Words the engines care about, so mutations reach deep states quickly.
const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\xff",
    b".",
    b"..",
    b"\r\n.\r\n",
    b" ",
    b"=",
    b"*",
    b"USER ",
    b"PASS ",
    b"APOP ",
    b"AUTH ",
    b"PLAIN",
    b"SCRAM-SHA-256",
    b"OAUTHBEARER",
    b"XOAUTH2",
    b"STLS",
    b"CAPA",
    b"STAT",
    b"LIST",
    b"UIDL",
    b"RETR 1",
    b"TOP 1 0",
    b"DELE 1",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"LHLO a",
    b"MAIL FROM:<a@b>",
    b"RCPT TO:<alice@example.com>",
    b"DATA",
    b"STARTTLS",
    b"SIZE=99999999999",
    b"BODY=8BITMIME",
    b"alice@example.com",
    b"AQ==",
    b"biws",
    b"PROXY TCP4 ",
    b"PROXY TCP6 ",
    b"PROXY UNKNOWN",
    b"\r\n\r\n\x00\r\nQUIT\n",
    b"\x21\x11\x00\x0c",
    b"\x20\x00\x05",
    b"4294967295",
    b"18446744073709551616",
    b"-1",
    b"0",
];

fn mutate(rng: &mut StdRng, parent: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut data = parent.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let len = data.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                data[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let word = DICTIONARY[rng.random_range(0..DICTIONARY.len())];
                data.splice(i..i, word.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=64)).min(len);
                data.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.random_range(0..len);
                let b = (a + rng.random_range(1..=256)).min(len);
                let copy = data[a..b].to_vec();
                let at = rng.random_range(0..=data.len());
                data.splice(at..at, copy);
            }
            5 => {
                let other = &pool[rng.random_range(0..pool.len())];
                if !other.is_empty() {
                    let a = rng.random_range(0..other.len());
                    let at = rng.random_range(0..=len);
                    data.truncate(at);
                    data.extend_from_slice(&other[a..]);
                }
            }
            6 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..=32);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(i..i, junk);
            }
            _ if len > 0 => {
                // control octets live at the front: shake them more often
                let i = rng.random_range(0..len.min(6));
                data[i] = rng.random();
            }
            _ => {}
        }
    }
    data.truncate(64 * 1024);
    data
}

fn fail(target: &str, input: &[u8], why: String) -> ! {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{:016x}", fxhash(input)));
    let _ = std::fs::write(&path, input);
    panic!("{target}: {why}\ninput saved to {}\nhex: {}", path.display(), hex::encode(input));
}

fn fxhash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

type Target = fn(&[u8]) -> pop3d::fuzz::Reached;

fn run_one(target: &str, f: Target, input: &[u8]) {
    if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(input))) {
        let why = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
        fail(target, input, why.unwrap_or_else(|| "panic".into()));
    }
}

fn budget() -> Duration {
    let secs: f64 = std::env::var("POPFLEET_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

fn fuzz(target: &str) {
    let f = pop3d::fuzz::TARGETS.iter().find(|(name, _)| *name == target).expect("known target").1;
    let corpus = load_corpus(target);
    assert!(!corpus.is_empty());
    for input in &corpus {
        run_one(target, f, input);
    }
    let seed: u64 = std::env::var("POPFLEET_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + budget();
    let mut pool = corpus.clone();
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let parent = &pool[rng.random_range(0..pool.len())];
        let child = mutate(&mut rng, parent, &pool);
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(&child))) {
            let why = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            fail(target, &child, format!("{} (seed {seed})", why.unwrap_or_else(|| "panic".into())));
        }
        // Keep some children as parents: without coverage feedback this still walks away
        // from the seeds, in bounded memory.
        if rng.random_range(0..16) == 0 {
            if pool.len() < 4096 {
                pool.push(child);
            } else {
                let i = rng.random_range(corpus.len()..pool.len());
                pool[i] = child;
            }
        }
        runs += 1;
    }
    eprintln!("fuzz {target}: {} corpus inputs, {runs} mutated runs, seed {seed}", corpus.len());
}

#[test]
fn pop3_session() {
    fuzz("pop3_session");
}

#[test]
fn lmtp_session() {
    fuzz("lmtp_session");
}

#[test]
fn pop3_command() {
    fuzz("pop3_command");
}

#[test]
fn lmtp_command() {
    fuzz("lmtp_command");
}

#[test]
fn proxy_header() {
    fuzz("proxy_header");
}

/// Writes the built-in seeds into `fuzz/corpus/` (run once when seeds change):
/// `POPFLEET_FUZZ_WRITE_SEEDS=1 cargo test -p pop3d --test fuzz_corpus write_seeds`
#[test]
fn write_seeds() {
    if std::env::var("POPFLEET_FUZZ_WRITE_SEEDS").is_err() {
        return;
    }
    for (target, _) in pop3d::fuzz::TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in pop3d::fuzz::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
        }
    }
}
