//! Byte-level tests of the POP3 engine, driven by a tiny in-memory stand-in for the server loop.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::auth::sasl::scram::ScramKeys;
use crate::message_id::MessageId;
use crate::store::ListingEntry;

const GOOD_TOKEN: &str = "good.token.sig";
const SERVER_NONCE: &str = "srvnonce";

const USER: &str = "alice@example.com";
const PASSWORD: &str = "pass word";

struct Harness {
    session: Session,
    messages: Vec<(ListingEntry, Vec<u8>)>,
    /// Content removed behind the session's back (another session's QUIT).
    gone: HashSet<MessageId>,
    expunged: Vec<MessageId>,
    closed: bool,
    /// Handshakes requested; the stand-in completes each at once.
    tls_starts: usize,
}

fn message(body: &str) -> (ListingEntry, Vec<u8>) {
    (ListingEntry { id: MessageId::generate(), size: body.len() as u64 }, body.as_bytes().to_vec())
}

fn mailbox() -> Vec<(ListingEntry, Vec<u8>)> {
    vec![
        message("Subject: one\r\nFrom: a@b\r\nTo: c@d\r\nX: 1\r\nY: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"),
        message("Subject: two\r\n\r\n.starts with dot\r\n..two dots\r\n.\r\nend"),
        message("Subject: three\r\n\r\nbody\r\n"),
    ]
}

impl Harness {
    fn new(cleartext: bool) -> Self {
        Self::with(cleartext, mailbox())
    }

    fn with(cleartext: bool, messages: Vec<(ListingEntry, Vec<u8>)>) -> Self {
        let config =
            SessionConfig { cleartext_auth_allowed: cleartext, max_bad_commands: 5, ..SessionConfig::default() };
        Self::configured(config, messages)
    }

    fn configured(config: SessionConfig, messages: Vec<(ListingEntry, Vec<u8>)>) -> Self {
        let session = Session::new(config);
        Self { session, messages, gone: HashSet::new(), expunged: Vec::new(), closed: false, tls_starts: 0 }
    }

    fn login_ok(&self) -> LoginOutcome {
        LoginOutcome::Ok { mailbox: USER.into(), listing: self.messages.iter().map(|m| m.0).collect() }
    }

    /// Feeds input (or nothing) and runs the session until it needs more input; returns output.
    fn run(&mut self, input: &[u8]) -> Vec<u8> {
        self.session.feed(input);
        let mut out = Vec::new();
        loop {
            match self.session.poll() {
                Step::Write(bytes) => out.extend_from_slice(&bytes),
                Step::NeedInput => return out,
                Step::Close => {
                    self.closed = true;
                    return out;
                }
                Step::Login(LoginRequest::Password(c)) => {
                    let outcome = if c.user == "temp@example.com" {
                        LoginOutcome::TempFail
                    } else if c.user == USER && c.password == PASSWORD && c.authzid.as_deref().is_none_or(|z| z == USER)
                    {
                        self.login_ok()
                    } else {
                        LoginOutcome::BadCredentials
                    };
                    self.session.login_done(outcome);
                }
                Step::Login(LoginRequest::Scram { user, proven }) => {
                    let outcome = if proven && user == USER { self.login_ok() } else { LoginOutcome::BadCredentials };
                    self.session.login_done(outcome);
                }
                Step::Login(LoginRequest::Bearer { user, token }) => {
                    let outcome = if token == GOOD_TOKEN && user.as_deref().is_none_or(|u| u == USER) {
                        self.login_ok()
                    } else {
                        LoginOutcome::BadCredentials
                    };
                    self.session.login_done(outcome);
                }
                Step::ScramKeys { user } => {
                    let outcome = if user == "temp@example.com" {
                        ScramKeysOutcome::TempFail
                    } else if user == USER {
                        let keys = ScramKeys::derive(PASSWORD, b"0123456789abcdef", 4096);
                        ScramKeysOutcome::Keys { keys, server_nonce: SERVER_NONCE.into() }
                    } else {
                        let keys = ScramKeys::decoy(&[1; 32], &user, 4096);
                        ScramKeysOutcome::Keys { keys, server_nonce: SERVER_NONCE.into() }
                    };
                    self.session.scram_keys_done(outcome);
                }
                Step::StartTls => {
                    self.tls_starts += 1;
                    self.session.tls_started();
                }
                Step::Fetch(request) => {
                    if self.gone.contains(&request.entry.id) {
                        self.session.fetch_done(FetchOutcome::Missing);
                        continue;
                    }
                    let content = &self.messages.iter().find(|m| m.0.id == request.entry.id).unwrap().1;
                    out.extend_from_slice(&request.ok_line);
                    let mut encoder = match request.top {
                        Some(n) => MessageEncoder::top(n),
                        None => MessageEncoder::whole(),
                    };
                    encoder.push(content, &mut out);
                    encoder.finish(&mut out);
                    self.session.fetch_done(FetchOutcome::Sent);
                }
                Step::Commit { mailbox, ids, .. } => {
                    assert_eq!(mailbox, USER);
                    self.expunged.extend(ids);
                    self.session.commit_done(CommitOutcome::Ok);
                }
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        String::from_utf8(self.run(format!("{line}\r\n").as_bytes())).unwrap()
    }

    fn logged_in() -> Self {
        let mut h = Self::new(true);
        h.run(b"");
        assert_eq!(h.cmd(&format!("USER {USER}")), "+OK\r\n");
        assert_eq!(h.cmd(&format!("PASS {PASSWORD}")), "+OK Logged in.\r\n");
        h
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn greeting_and_quit_before_login() {
    let mut h = Harness::new(true);
    assert_eq!(h.run(b""), b"+OK popfleet ready.\r\n");
    assert_eq!(h.cmd("QUIT"), "+OK Logging out.\r\n");
    assert!(h.closed);
    assert!(h.expunged.is_empty());
}

#[test]
fn stat_list_uidl_and_sizes() {
    let mut h = Harness::logged_in();
    let total: u64 = h.messages.iter().map(|m| m.0.size).sum();
    assert_eq!(h.cmd("STAT"), format!("+OK 3 {total}\r\n"));
    let list = h.cmd("LIST");
    assert!(list.starts_with(&format!("+OK 3 messages ({total} octets)\r\n1 {}\r\n", h.messages[0].0.size)));
    assert!(list.ends_with("\r\n.\r\n"));
    assert_eq!(h.cmd("LIST 2"), format!("+OK 2 {}\r\n", h.messages[1].0.size));
    assert_eq!(h.cmd("UIDL 3"), format!("+OK 3 {}\r\n", h.messages[2].0.id));
    let uidl = h.cmd("UIDL");
    for (i, m) in h.messages.iter().enumerate() {
        assert!(uidl.contains(&format!("{} {}\r\n", i + 1, m.0.id)));
    }
    assert_eq!(h.cmd("LIST 4"), "-ERR There's no message 4.\r\n");
    assert_eq!(h.cmd("LIST 0"), "-ERR There's no message 0.\r\n");
}

#[test]
fn retr_is_dot_stuffed_and_list_size_matches_unstuffed_octets() {
    let mut h = Harness::logged_in();
    let reply = h.cmd("RETR 2");
    let size = h.messages[1].0.size;
    let expected =
        format!("+OK {size} octets\r\nSubject: two\r\n\r\n..starts with dot\r\n...two dots\r\n..\r\nend\r\n.\r\n");
    assert_eq!(reply, expected);
    // What a client gets after un-stuffing, minus the CRLF added before the terminator.
    let body = reply.split_once("\r\n").unwrap().1.strip_suffix(".\r\n").unwrap();
    let unstuffed: String =
        body.split("\r\n").map(|l| l.strip_prefix('.').unwrap_or(l)).collect::<Vec<_>>().join("\r\n");
    assert_eq!(unstuffed.trim_end_matches("\r\n").len() as u64, size);
}

#[test]
fn top_sends_headers_blank_line_and_exact_body_lines() {
    let mut h = Harness::logged_in();
    let headers = "Subject: one\r\nFrom: a@b\r\nTo: c@d\r\nX: 1\r\nY: 2\r\n\r\n";
    assert_eq!(h.cmd("TOP 1 0"), format!("+OK\r\n{headers}.\r\n"));
    assert_eq!(h.cmd("TOP 1 2"), format!("+OK\r\n{headers}l1\r\nl2\r\n.\r\n"));
    assert_eq!(h.cmd("TOP 1 100"), format!("+OK\r\n{headers}l1\r\nl2\r\nl3\r\n.\r\n"));
    assert_eq!(h.cmd("TOP 1 x"), "-ERR Invalid line count.\r\n");
    assert_eq!(h.cmd("TOP 1"), "-ERR Wrong number of arguments.\r\n");
}

#[test]
fn deleted_messages_vanish_and_every_reference_is_an_error() {
    let mut h = Harness::logged_in();
    let (s2, s3) = (h.messages[1].0.size, h.messages[2].0.size);
    assert_eq!(h.cmd("DELE 1"), "+OK Marked to be deleted.\r\n");
    assert_eq!(h.cmd("DELE 1"), "-ERR Message is already deleted.\r\n");
    assert_eq!(h.cmd("STAT"), format!("+OK 2 {}\r\n", s2 + s3));
    let list = h.cmd("LIST");
    assert!(!list.contains("\r\n1 "), "{list}");
    assert!(!h.cmd("UIDL").contains("\r\n1 "));
    for c in ["LIST 1", "UIDL 1", "RETR 1", "TOP 1 0"] {
        assert_eq!(h.cmd(c), "-ERR Message is deleted.\r\n", "{c}");
    }
    assert_eq!(h.cmd("RSET"), format!("+OK 3 messages ({} octets)\r\n", h.messages[0].0.size + s2 + s3));
    assert!(h.cmd("RETR 1").starts_with("+OK"));
    h.cmd("DELE 3");
    assert_eq!(h.cmd("QUIT"), "+OK Logging out, messages deleted.\r\n");
    assert_eq!(h.expunged, vec![h.messages[2].0.id]);
}

#[test]
fn dropped_connection_or_quit_without_dele_deletes_nothing() {
    let mut h = Harness::logged_in();
    h.cmd("DELE 1");
    drop(h.session); // the connection dies: no Commit step was ever produced
    assert!(h.expunged.is_empty());
    let mut h = Harness::logged_in();
    assert_eq!(h.cmd("QUIT"), "+OK Logging out.\r\n");
    assert!(h.expunged.is_empty());
}

#[test]
fn password_is_the_rest_of_the_line_and_commands_are_case_insensitive() {
    let mut h = Harness::new(true);
    h.run(b"");
    assert_eq!(h.cmd(&format!("user {USER}")), "+OK\r\n");
    assert_eq!(h.cmd(&format!("pAsS {PASSWORD}")), "+OK Logged in.\r\n");
    assert!(h.cmd("Retr 1").starts_with("+OK"));
}

#[test]
fn bad_credentials_and_temp_failures_have_their_codes() {
    let mut h = Harness::new(true);
    h.run(b"");
    h.cmd(&format!("USER {USER}"));
    assert_eq!(h.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed.\r\n");
    h.cmd("USER nobody@example.com");
    assert_eq!(h.cmd(&format!("PASS {PASSWORD}")), "-ERR [AUTH] Authentication failed.\r\n");
    assert_eq!(h.cmd("PASS x"), "-ERR No username given.\r\n");
    h.cmd("USER temp@example.com");
    assert_eq!(h.cmd("PASS x"), "-ERR [SYS/TEMP] Temporary server failure, try again later.\r\n");
    assert_eq!(h.cmd("APOP alice 0123456789abcdef"), "-ERR APOP is not supported; use USER/PASS or AUTH.\r\n");
}

#[test]
fn auth_plain_initial_response_continuation_and_cancel() {
    let mut h = Harness::new(true);
    h.run(b"");
    assert_eq!(h.cmd("AUTH"), "+OK\r\nSCRAM-SHA-256\r\nPLAIN\r\n.\r\n");
    assert_eq!(h.cmd("AUTH PLAIN"), "+ \r\n");
    assert_eq!(h.cmd("*"), "-ERR Authentication cancelled.\r\n");
    assert_eq!(h.cmd("AUTH PLAIN"), "+ \r\n");
    assert_eq!(h.cmd("not base64!"), "-ERR Invalid base64 data.\r\n");
    assert_eq!(
        h.cmd(&format!("AUTH PLAIN {}", b64(&format!("\0{USER}\0wrong")))),
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    assert_eq!(h.cmd("auth plain"), "+ \r\n");
    assert_eq!(h.cmd(&b64(&format!("{USER}\0{USER}\0{PASSWORD}"))), "+OK Logged in.\r\n");
    assert_eq!(h.cmd("AUTH PLAIN x"), "-ERR Already logged in.\r\n");
}

#[test]
fn long_auth_lines_are_accepted_other_long_lines_are_not() {
    let mut h = Harness::new(true);
    h.run(b"");
    assert_eq!(h.cmd(&format!("NOOP {}", "x".repeat(300))), "-ERR Line too long.\r\n");
    let long_ir = b64(&format!("\0{USER}\0{}", "p".repeat(200))).repeat(10);
    assert!(long_ir.len() > 2000);
    let reply = h.cmd(&format!("AUTH PLAIN {long_ir}"));
    assert_ne!(reply, "-ERR Line too long.\r\n");
    assert!(reply.starts_with("-ERR"));
    assert_eq!(h.cmd(&format!("AUTH PLAIN {}", "A".repeat(20_000))), "-ERR Line too long.\r\n");
    assert_eq!(h.cmd("CAPA").lines().next(), Some("+OK Capability list follows"), "session still works");
}

#[test]
fn an_overlong_sasl_answer_ends_the_exchange() {
    // Issue 14: the next command used to be read as the SASL answer.
    for start in ["AUTH PLAIN", "AUTH SCRAM-SHA-256"] {
        let mut h = Harness::new(true);
        h.run(b"");
        assert_eq!(h.cmd(start), "+ \r\n");
        assert_eq!(h.cmd(&"A".repeat(17_000)), "-ERR Authentication cancelled: line too long.\r\n");
        assert_eq!(h.cmd("CAPA").lines().next(), Some("+OK Capability list follows"), "{start}: back in AUTHORIZATION");
        assert_eq!(h.cmd("QUIT"), "+OK Logging out.\r\n");
    }
}

#[test]
fn too_many_bad_commands_close_the_session() {
    let mut h = Harness::new(true);
    h.run(b"");
    for _ in 0..5 {
        assert_eq!(h.cmd("BOGUS"), "-ERR Unknown command.\r\n");
    }
    assert_eq!(h.cmd("BOGUS"), "-ERR Too many bad commands.\r\n");
    assert!(h.closed);
}

#[test]
fn capabilities_depend_on_state_and_on_cleartext_policy() {
    let mut h = Harness::new(true);
    h.run(b"");
    let before = h.cmd("CAPA");
    for cap in [
        "TOP",
        "UIDL",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "USER",
        "SASL SCRAM-SHA-256 PLAIN\r\n",
        "IMPLEMENTATION popfleet",
    ] {
        assert!(before.contains(&format!("\r\n{cap}")), "{cap} missing from {before}");
    }
    h.cmd(&format!("USER {USER}"));
    h.cmd(&format!("PASS {PASSWORD}"));
    let after = h.cmd("CAPA");
    assert!(!after.contains("USER") && !after.contains("SASL"), "{after}");

    let mut insecure = Harness::new(false);
    insecure.run(b"");
    let caps = insecure.cmd("CAPA");
    assert!(!caps.contains("USER") && !caps.contains("PLAIN") && !caps.contains("STLS"), "{caps}");
    assert!(caps.contains("\r\nSASL SCRAM-SHA-256\r\n"), "SCRAM sends no secret: offered on cleartext: {caps}");
    let refused = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
    assert_eq!(insecure.cmd(&format!("USER {USER}")), refused);
    assert_eq!(insecure.cmd("AUTH PLAIN"), refused);
    assert_eq!(insecure.cmd("AUTH"), "+OK\r\nSCRAM-SHA-256\r\n.\r\n");
}

mod parser;
mod security;

#[test]
fn message_deleted_by_another_session_answers_err_and_vanishes() {
    let mut h = Harness::logged_in();
    h.gone.insert(h.messages[0].0.id);
    assert_eq!(h.cmd("RETR 1"), "-ERR Message was deleted by another session.\r\n");
    assert_eq!(h.cmd("LIST 1"), "-ERR Message is deleted.\r\n");
    assert!(h.cmd("STAT").starts_with("+OK 2 "));
    assert_eq!(h.cmd("QUIT"), "+OK Logging out.\r\n");
    assert!(h.expunged.is_empty(), "a vanished message is not expunged again");
}

#[test]
fn idle_timeout_reply_and_no_deletion() {
    let mut h = Harness::logged_in();
    h.cmd("DELE 1");
    assert_eq!(h.session.idle_timeout(), b"-ERR Disconnected for inactivity.\r\n");
    assert!(h.expunged.is_empty());
}

const SCRIPT: &str = "CAPA\r\nUSER alice@example.com\r\nPASS pass word\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 2\r\nTOP 1 1\r\nDELE 3\r\nLIST 3\r\nNOOP\r\nQUIT\r\n";

fn transcript(chunks: &[&[u8]], messages: &[(ListingEntry, Vec<u8>)]) -> (Vec<u8>, Vec<MessageId>) {
    let mut h = Harness::with(true, messages.to_vec());
    let mut out = h.run(b"");
    for chunk in chunks {
        out.extend(h.run(chunk));
    }
    assert!(h.closed);
    (out, h.expunged)
}

#[test]
fn pipelined_script_gives_the_same_replies_whatever_the_chunking() {
    let messages = mailbox();
    let whole = transcript(&[SCRIPT.as_bytes()], &messages);
    assert!(String::from_utf8_lossy(&whole.0).ends_with("+OK Logging out, messages deleted.\r\n"));
    let bytes: Vec<&[u8]> = SCRIPT.as_bytes().chunks(1).collect();
    assert_eq!(transcript(&bytes, &messages), whole, "byte by byte");
    for size in 2..40 {
        let chunks: Vec<&[u8]> = SCRIPT.as_bytes().chunks(size).collect();
        assert_eq!(transcript(&chunks, &messages), whole, "chunks of {size}");
    }
}

proptest! {
    #[test]
    fn random_chunkings_give_the_same_replies(cuts in proptest::collection::vec(1usize..SCRIPT.len(), 0..12)) {
        let messages = mailbox();
        let whole = transcript(&[SCRIPT.as_bytes()], &messages);
        let mut cuts = cuts;
        cuts.sort();
        cuts.dedup();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&SCRIPT.as_bytes()[start..cut]);
            start = cut;
        }
        chunks.push(&SCRIPT.as_bytes()[start..]);
        prop_assert_eq!(transcript(&chunks, &messages), whole);
    }

    /// The session against a model: a set of deleted numbers over a fixed maildrop.
    #[test]
    fn session_matches_a_simple_model(ops in proptest::collection::vec((0u8..5, 0usize..6), 1..60)) {
        let mut h = Harness::logged_in();
        let sizes: Vec<u64> = h.messages.iter().map(|m| m.0.size).collect();
        let mut deleted = [false; 3];
        for (op, n) in ops {
            let exists = (1..=3).contains(&n);
            let live = exists && !deleted[n - 1];
            match op {
                0 => {
                    let reply = h.cmd(&format!("DELE {n}"));
                    prop_assert_eq!(reply.starts_with("+OK"), live);
                    if live { deleted[n - 1] = true; }
                }
                1 => { h.cmd("RSET"); deleted = [false; 3]; }
                2 => {
                    let count = deleted.iter().filter(|d| !**d).count();
                    let octets: u64 = sizes.iter().zip(deleted).filter(|(_, d)| !d).map(|(s, _)| s).sum();
                    prop_assert_eq!(h.cmd("STAT"), format!("+OK {count} {octets}\r\n"));
                }
                3 => prop_assert_eq!(h.cmd(&format!("RETR {n}")).starts_with("+OK"), live),
                _ => prop_assert_eq!(h.cmd(&format!("UIDL {n}")).starts_with("+OK"), live),
            }
        }
        h.cmd("QUIT");
        let expected: Vec<MessageId> = h.messages.iter().zip(deleted).filter(|(_, d)| *d).map(|(m, _)| m.0.id).collect();
        prop_assert_eq!(h.expunged, expected);
    }
}
