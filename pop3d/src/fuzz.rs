//! Fuzz harnesses: the POP3 engine, the LMTP engine, their command parsers and the PROXY header
//! parser driven by arbitrary bytes, with the invariants that must hold whatever a client sends.
//!
//! They live in the library so that two runners share them: cargo-fuzz/libFuzzer targets in
//! `fuzz/` (nightly, coverage-guided, long runs) and `tests/fuzz_corpus.rs` (stable, in every
//! `cargo test`: replays the checked-in corpus, then mutates it for a bounded time). A broken
//! invariant panics with a message; a panic inside an engine is a finding too.

use crate::auth::sasl::scram::ScramKeys;
use crate::lmtp::{self, DeliveryResult, LmtpConfig, RcptCheck, Step as Step2};
use crate::message_id::MessageId;
use crate::pop3::{
    CommitOutcome, FetchOutcome, FetchRequest, LoginOutcome, LoginRequest, MessageEncoder, ScramKeysOutcome, Session,
    SessionConfig, Step,
};
use crate::proxy::{self, Parse};
use crate::store::{ListingEntry, CHUNK_SIZE};

/// Splits fuzz input into decisions (a few control octets) and the client's byte stream cut
/// into reads. Reads end at a `0xff` octet or after the length the next control octet gives,
/// so the fuzzer can explore how input is split as well as what it says.
struct Input<'a> {
    control: &'a [u8],
    stream: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8], control_len: usize) -> Self {
        let n = control_len.min(data.len());
        Self { control: &data[..n], stream: &data[n..] }
    }

    fn flag(&self, i: usize, bit: u8) -> bool {
        self.control.get(i).is_some_and(|b| b & (1 << bit) != 0)
    }

    fn byte(&self, i: usize) -> u8 {
        self.control.get(i).copied().unwrap_or(0)
    }

    /// The reads, in order.
    fn reads(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = self.stream;
        let mut turn = 0usize;
        while !rest.is_empty() {
            let cut = match rest.iter().position(|&b| b == 0xff) {
                Some(i) => i + 1,
                None => (usize::from(self.byte(turn % self.control.len().max(1))) + 1).min(rest.len()).max(1),
            };
            out.push(&rest[..cut.min(rest.len())]);
            rest = &rest[cut.min(rest.len())..];
            turn += 1;
        }
        out
    }
}

fn check_pop3_write(bytes: &[u8]) {
    assert!(bytes.ends_with(b"\r\n"), "a reply must end with CRLF: {:?}", String::from_utf8_lossy(bytes));
    assert!(bytes.starts_with(b"+") || bytes.starts_with(b"-"), "a reply starts with +OK, -ERR or +: {bytes:?}");
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    assert!(first.len() < 512, "RFC 1939: a status line is at most 512 octets");
}

const USER: &str = "alice@example.com";
const PASSWORD: &str = "pass word";
const CONTENT: &[u8] = b"Subject: x\r\n\r\n.dot\r\nline\nbare\r\n..\r\nend";

/// What a run reached, so tests can check that the seeds drive the engines deep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub logins: u32,
    pub fetches: u32,
    pub commits: u32,
    pub tls: u32,
    pub scram: u32,
    pub deliveries: u32,
}

/// Drives a POP3 session. Control octets: 0 = config flags, 1 = how storage answers, then
/// read lengths.
pub fn pop3_session(data: &[u8]) -> Reached {
    let input = Input::new(data, 6);
    let config = SessionConfig {
        cleartext_auth_allowed: input.flag(0, 0),
        tls_available: input.flag(0, 1),
        secure: input.flag(0, 2),
        oauth: input.flag(0, 3),
        max_bad_commands: u32::from(input.byte(0) >> 4) + 1,
        max_auth_failures: 3,
    };
    let answers = input.byte(1);
    let mut store = FakeMaildrop {
        listing: (0..3).map(|_| ListingEntry { id: MessageId::generate(), size: CONTENT.len() as u64 }).collect(),
        logged_in: false,
        reached: Reached::default(),
    };
    let mut session = Session::new(config);
    let mut reads = input.reads().into_iter();
    let mut turn = 0u32;
    loop {
        turn += 1;
        let fail = answers.rotate_left(turn) & 1 == 1;
        match session.poll() {
            Step::Write(bytes) => check_pop3_write(&bytes),
            Step::NeedInput => match reads.next() {
                Some(read) => session.feed(read),
                None => return store.reached,
            },
            Step::Close => return store.reached,
            Step::Login(request) => store.login(&mut session, &request, fail),
            Step::ScramKeys { user } => store.scram_keys(&mut session, &user, fail),
            Step::Fetch(request) => store.fetch(&mut session, &request, fail),
            Step::Commit { ids, .. } => store.commit(&mut session, &ids, fail),
            Step::StartTls => {
                assert!(!store.logged_in, "STLS only before login");
                store.reached.tls += 1;
                session.tls_started();
                assert!(session.is_secure());
                // Nothing read before the handshake may be executed after it.
                assert_eq!(session.poll(), Step::NeedInput, "plaintext survived STLS");
            }
        }
        assert!(turn < 1_000_000, "the engine must make progress");
    }
}

/// The store and account side of a fuzzed POP3 session: answers each step the engine asks for,
/// failing where the input says, and checks the engine only asks what its state allows.
struct FakeMaildrop {
    listing: Vec<ListingEntry>,
    logged_in: bool,
    reached: Reached,
}

impl FakeMaildrop {
    fn login(&mut self, session: &mut Session, request: &LoginRequest, fail: bool) {
        assert!(!self.logged_in, "no second login");
        let ok = match request {
            LoginRequest::Password(c) => c.user == USER && c.password == PASSWORD,
            LoginRequest::Scram { proven, .. } => *proven,
            LoginRequest::Bearer { token, .. } => token == "good",
        };
        let outcome = match (ok, fail) {
            (true, false) => LoginOutcome::Ok { mailbox: USER.into(), listing: self.listing.clone() },
            (true, true) => LoginOutcome::TempFail,
            (false, _) => LoginOutcome::BadCredentials,
        };
        self.logged_in = matches!(outcome, LoginOutcome::Ok { .. });
        self.reached.logins += u32::from(self.logged_in);
        session.login_done(outcome);
        assert_eq!(session.is_authenticated(), self.logged_in);
    }

    fn scram_keys(&mut self, session: &mut Session, user: &str, fail: bool) {
        self.reached.scram += 1;
        let outcome = if fail {
            ScramKeysOutcome::TempFail
        } else {
            let keys = if user == USER {
                ScramKeys::derive(PASSWORD, b"salt", 4096)
            } else {
                ScramKeys::decoy(&[7; 32], user, 4096)
            };
            ScramKeysOutcome::Keys { keys, server_nonce: "srv".into() }
        };
        session.scram_keys_done(outcome);
    }

    fn fetch(&mut self, session: &mut Session, request: &FetchRequest, fail: bool) {
        assert!(self.logged_in, "no fetch before login");
        assert!(self.listing.iter().any(|e| e.id == request.entry.id));
        self.reached.fetches += 1;
        if fail {
            return session.fetch_done(FetchOutcome::Missing);
        }
        let mut out = request.ok_line.clone();
        let mut encoder = match request.top {
            Some(n) => MessageEncoder::top(n),
            None => MessageEncoder::whole(),
        };
        encoder.push(CONTENT, &mut out);
        encoder.finish(&mut out);
        assert!(out.ends_with(b"\r\n.\r\n"));
        session.fetch_done(FetchOutcome::Sent);
    }

    fn commit(&mut self, session: &mut Session, ids: &[MessageId], fail: bool) {
        assert!(self.logged_in, "no expunge before login");
        assert!(ids.iter().all(|id| self.listing.iter().any(|e| e.id == *id)), "expunge only listed messages");
        self.reached.commits += 1;
        session.commit_done(if fail { CommitOutcome::Failed } else { CommitOutcome::Ok });
    }
}

fn check_lmtp_write(bytes: &[u8]) {
    assert!(bytes.ends_with(b"\r\n"), "a reply must end with CRLF: {:?}", String::from_utf8_lossy(bytes));
    for line in bytes[..bytes.len() - 2].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit), "reply line {line:?}");
        assert!(line[3] == b' ' || line[3] == b'-');
        assert!(line.len() <= 512);
    }
}

/// Drives an LMTP session. Control octets: 0 = config flags and answers, then read lengths.
pub fn lmtp_session(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let input = Input::new(data, 6);
    let mut session = lmtp::Session::new(LmtpConfig {
        hostname: "mx.test".into(),
        max_message_size: 4096 << (input.byte(0) & 3),
        max_recipients: 5,
        max_bad_commands: 10,
        max_line_length: if input.flag(0, 4) { 998 } else { 100 },
        recipient_delimiter: input.flag(0, 5).then_some('+'),
        starttls: input.flag(0, 2),
        secure: input.flag(0, 3),
    });
    let answers = input.byte(1);
    let mut reads = input.reads().into_iter();
    let mut current: Option<(usize, Vec<u8>)> = None;
    let mut turn = 0u32;
    loop {
        turn += 1;
        match session.poll() {
            Step2::Write(bytes) => check_lmtp_write(&bytes),
            Step2::NeedInput => match reads.next() {
                Some(read) => session.feed(read),
                None => return reached,
            },
            Step2::Close => return reached,
            Step2::CheckRecipient { mailbox } => {
                assert!(!mailbox.is_empty());
                session.rcpt_done(match answers.rotate_left(turn) & 3 {
                    0 => RcptCheck::Unknown,
                    1 => RcptCheck::TempFail,
                    _ => RcptCheck::Exists,
                });
            }
            Step2::DataStart(envelope) => {
                assert!(current.is_none());
                assert!(!envelope.recipients.is_empty(), "DATA only with recipients");
                current = Some((envelope.recipients.len(), Vec::new()));
            }
            Step2::DataChunk(chunk) => {
                assert!(chunk.len() <= CHUNK_SIZE, "chunks are bounded");
                current.as_mut().expect("chunk inside DATA").1.extend_from_slice(&chunk);
            }
            Step2::DataEnd => {
                let (recipients, content) = current.take().expect("DataEnd inside DATA");
                // Accepted content has CRLF line ends only (SMTP smuggling is refused).
                for (i, &b) in content.iter().enumerate() {
                    if b == b'\n' {
                        assert!(i > 0 && content[i - 1] == b'\r', "bare LF in accepted content");
                    }
                    if b == b'\r' {
                        assert_eq!(content.get(i + 1), Some(&b'\n'), "bare CR in accepted content");
                    }
                }
                let results = (0..recipients)
                    .map(|i| {
                        if (answers >> (i % 8)) & 1 == 1 {
                            DeliveryResult::TempFail
                        } else {
                            DeliveryResult::Delivered { id: "x".into() }
                        }
                    })
                    .collect();
                reached.deliveries += 1;
                session.data_done(results);
            }
            Step2::DataAbort => {
                current.take().expect("abort inside DATA");
            }
            Step2::StartTls => {
                reached.tls += 1;
                session.tls_started();
                assert_eq!(session.poll(), Step2::NeedInput, "plaintext survived STARTTLS");
            }
        }
        assert!(turn < 1_000_000, "the engine must make progress");
    }
}

/// POP3 command lines through the parser alone: an accepted line parses again from its canonical
/// form to the same command, the keyword's case never matters, and every refusal is one short
/// `-ERR` line.
pub fn pop3_command(data: &[u8]) -> Reached {
    use crate::pop3::command::{self, ParseError};
    for line in command_lines(data) {
        let parsed = command::parse(line);
        assert_eq!(command::parse(&flip_keyword_case(line)), parsed, "the keyword's case changed the parse");
        match &parsed {
            Ok(cmd) => {
                let canonical = pop3_canonical(cmd);
                assert_eq!(command::parse(canonical.as_bytes()).as_ref(), Ok(cmd), "{canonical:?} parsed differently");
            }
            Err(error) => {
                let reply = error.reply().to_bytes();
                check_pop3_write(&reply);
                assert!(reply.starts_with(b"-ERR ") && reply.iter().filter(|&&b| b == b'\n').count() == 1);
                let too_long = line.len() + 2 > crate::pop3::MAX_COMMAND_LINE;
                assert_eq!(
                    *error == ParseError::LineTooLong,
                    too_long && !line.to_ascii_uppercase().starts_with(b"AUTH ")
                );
            }
        }
    }
    Reached::default()
}

/// LMTP command lines through the parser alone, with the same invariants as [`pop3_command`].
pub fn lmtp_command(data: &[u8]) -> Reached {
    use crate::lmtp::command;
    for line in command_lines(data) {
        let parsed = command::parse(line);
        assert_eq!(command::parse(&flip_keyword_case(line)), parsed, "the keyword's case changed the parse");
        match &parsed {
            Ok(cmd) => {
                let canonical = lmtp_canonical(cmd);
                assert_eq!(command::parse(canonical.as_bytes()).as_ref(), Ok(cmd), "{canonical:?} parsed differently");
            }
            Err(error) => {
                let reply = error.reply().to_bytes();
                check_lmtp_write(&reply);
                assert!(matches!(reply[0], b'5') && reply.iter().filter(|&&b| b == b'\n').count() == 1);
            }
        }
    }
    Reached::default()
}

/// The input's lines without their line endings, as the line reader hands them over.
fn command_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// The line with the ASCII letters of its keyword (up to the first space) in the other case.
fn flip_keyword_case(line: &[u8]) -> Vec<u8> {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let flip = |b: u8| if b.is_ascii_uppercase() { b.to_ascii_lowercase() } else { b.to_ascii_uppercase() };
    line[..end].iter().map(|&b| flip(b)).chain(line[end..].iter().copied()).collect()
}

fn pop3_canonical(cmd: &crate::pop3::command::Command) -> String {
    use crate::pop3::command::{Command, SaslMechanism};
    let with = |verb: &str, n: &Option<_>| match n {
        Some(n) => format!("{verb} {n}"),
        None => verb.to_owned(),
    };
    match cmd {
        Command::User(name) => format!("USER {name}"),
        Command::Pass(password) => format!("PASS {}", password.expose()),
        Command::Apop => "APOP".into(),
        Command::Auth { mechanism, initial_response } => {
            let name = mechanism.map(|m| match m {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::OAuthBearer => "OAUTHBEARER",
                SaslMechanism::XOAuth2 => "XOAUTH2",
                SaslMechanism::Other => "X-OTHER",
            });
            let words = ["AUTH"].into_iter().chain(name).chain(initial_response.as_ref().map(|r| r.expose()));
            words.collect::<Vec<_>>().join(" ")
        }
        Command::Stls => "STLS".into(),
        Command::Capa => "CAPA".into(),
        Command::Quit => "QUIT".into(),
        Command::Stat => "STAT".into(),
        Command::List(n) => with("LIST", n),
        Command::Uidl(n) => with("UIDL", n),
        Command::Retr(n) => format!("RETR {n}"),
        Command::Top(n, lines) => format!("TOP {n} {lines}"),
        Command::Dele(n) => format!("DELE {n}"),
        Command::Rset => "RSET".into(),
        Command::Noop => "NOOP".into(),
    }
}

fn lmtp_canonical(cmd: &crate::lmtp::command::Command) -> String {
    use crate::lmtp::command::Command;
    match cmd {
        Command::Lhlo(name) => format!("LHLO {name}"),
        Command::MailFrom(from) => match from.size {
            Some(size) => format!("MAIL FROM:<{}> SIZE={size}", from.address),
            None => format!("MAIL FROM:<{}>", from.address),
        },
        Command::RcptTo(address) => format!("RCPT TO:<{address}>"),
        Command::Data => "DATA".into(),
        Command::Rset => "RSET".into(),
        Command::Noop => "NOOP".into(),
        Command::Quit => "QUIT".into(),
        Command::Vrfy => "VRFY".into(),
        Command::StartTls => "STARTTLS".into(),
    }
}

/// Parses a PROXY header the way the server reads it (only as many octets as `parse` asks for)
/// and checks that this agrees with parsing everything at once.
pub fn proxy_header(data: &[u8]) -> Reached {
    let whole = proxy::parse(data);
    match &whole {
        Parse::Need(n) => assert!(*n > data.len() && *n <= 16 + proxy::V2_MAX_PAYLOAD),
        Parse::Done { len, .. } => {
            assert!(*len <= data.len() && *len >= 15);
            assert_eq!(proxy::parse(&data[..*len]), whole, "a header parses the same without what follows");
        }
        Parse::Invalid(_) => {}
    }
    // The incremental reader.
    let mut have = 0;
    loop {
        match proxy::parse(&data[..have]) {
            Parse::Need(n) => {
                assert!(n > have);
                if n > data.len() {
                    assert!(!matches!(whole, Parse::Done { .. }), "reader would wait past a complete header");
                    return Reached::default();
                }
                have = n;
            }
            Parse::Done { len, header } => {
                assert_eq!(len, have, "the reader consumed exactly the header");
                assert_eq!(whole, Parse::Done { len, header });
                return Reached { logins: 1, ..Reached::default() };
            }
            Parse::Invalid(_) => {
                assert!(!matches!(whole, Parse::Done { .. }), "a prefix of a valid header was called invalid");
                return Reached::default();
            }
        }
    }
}

/// Seeds for the corpus: realistic sessions the mutator starts from.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let ctl = |c: &[u8], s: &[u8]| [c, s].concat();
    match target {
        "pop3_session" => vec![
            ctl(&[0x0b, 0, 40, 40, 40, 40], b"CAPA\r\nUSER alice@example.com\r\nPASS pass word\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 3\r\nRSET\r\nDELE 1\r\nQUIT\r\n"),
            ctl(&[0x02, 0, 255, 255, 255, 255], b"STLS\r\nCAPA\r\nUSER alice@example.com\r\n\xffCAPA\r\nUSER alice@example.com\r\nPASS pass word\r\n"),
            ctl(&[0x01, 0, 8, 8, 8, 8], b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHBhc3Mgd29yZA==\r\nLIST 1\r\nQUIT\r\n"),
            ctl(&[0x01, 0, 200, 200, 200, 200], b"AUTH SCRAM-SHA-256 biwsbj1hbGljZUBleGFtcGxlLmNvbSxyPWFiYw==\r\n\xffYz1iaXdzLHI9YWJjc3J2LHA9QUFBQQ==\r\n*\r\nAUTH\r\n"),
            ctl(&[0x0d, 0, 200, 200, 200, 200], b"AUTH OAUTHBEARER bixhPWFsaWNlQGV4YW1wbGUuY29tLAFhdXRoPUJlYXJlciBnb29kAQE=\r\nAQ==\r\nAUTH XOAUTH2\r\n\r\n"),
        ],
        "lmtp_session" => vec![
            ctl(&[0x04, 0xff, 60, 60, 60, 60], b"LHLO a.test\r\nMAIL FROM:<s@x.test> SIZE=100\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n"),
            ctl(&[0x04, 0xff, 255, 255, 255, 255], b"LHLO a.test\r\nSTARTTLS\r\nMAIL FROM:<e@x.test>\r\n\xffLHLO a.test\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nbare\nlf\r\n.\r\n"),
            ctl(&[0x00, 0xfe, 3, 7, 11, 13], b"LHLO a.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nSubject: smuggle\r\n\r\nx\n.\r\nMAIL FROM:<evil@x.test>\r\n.\r\nRSET\r\nNOOP\r\nVRFY x\r\n"),
        ],
        "pop3_command" => vec![
            b"CAPA\r\nuser alice@example.com\r\nPASS  pass word \r\nLIST 1\r\nUIDL\r\nTOP 2 0\r\nRETR 0\r\nDELE +1\r\nQUIT\r\n"
                .to_vec(),
            b"AUTH\r\nAUTH scram-sha-256 biws\r\nSTLS \r\nAPOP a b\r\nRETR 99999999999999999999\r\nNOOP \xff\r\n\t\0\r\n"
                .to_vec(),
        ],
        "lmtp_command" => vec![
            b"LHLO a.test\r\nMAIL FROM:<s@x.test> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<@r:alice@example.com>\r\nDATA\r\n"
                .to_vec(),
            b"mail from: <>\r\nRCPT TO:<>\r\nMAIL FROM:<a SIZE=x\r\nEHLO x\r\nSTARTTLS now\r\nVRFY\r\n\xff\r\n".to_vec(),
        ],
        "proxy_header" => {
            let v4 = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
            vec![
                b"PROXY TCP4 203.0.113.9 192.0.2.1 5555 110\r\nCAPA\r\n".to_vec(),
                b"PROXY TCP6 2001:db8::1 2001:db8::2 1 995\r\n".to_vec(),
                b"PROXY UNKNOWN\r\n".to_vec(),
                proxy::encode_v2(v4("203.0.113.9:5555"), v4("192.0.2.1:995"), Some("TLSv1.3")),
                proxy::encode_v2(v4("[2001:db8::9]:1"), v4("[2001:db8::1]:110"), None),
                [proxy::V2_SIGNATURE.as_slice(), &[0x20, 0x00, 0x00, 0x00]].concat(),
            ]
        }
        _ => Vec::new(),
    }
}

/// A harness: one input in, what it reached out.
pub type Target = fn(&[u8]) -> Reached;

/// The targets by name, for the runners.
pub const TARGETS: &[(&str, Target)] = &[
    ("pop3_session", pop3_session),
    ("lmtp_session", lmtp_session),
    ("pop3_command", pop3_command),
    ("lmtp_command", lmtp_command),
    ("proxy_header", proxy_header),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds must reach the deep states, or mutating them explores little.
    #[test]
    fn seeds_reach_logins_fetches_commits_tls_scram_and_deliveries() {
        let sum = |target: &str, f: fn(&[u8]) -> Reached| {
            seeds(target).iter().map(|s| f(s)).fold(Reached::default(), |a, r| Reached {
                logins: a.logins + r.logins,
                fetches: a.fetches + r.fetches,
                commits: a.commits + r.commits,
                tls: a.tls + r.tls,
                scram: a.scram + r.scram,
                deliveries: a.deliveries + r.deliveries,
            })
        };
        let pop3 = sum("pop3_session", pop3_session);
        assert!(pop3.logins >= 3 && pop3.fetches >= 2 && pop3.commits >= 1, "{pop3:?}");
        assert!(pop3.tls >= 1 && pop3.scram >= 1, "{pop3:?}");
        let lmtp = sum("lmtp_session", lmtp_session);
        assert!(lmtp.deliveries >= 1 && lmtp.tls >= 1, "{lmtp:?}");
        assert_eq!(sum("proxy_header", proxy_header).logins, 6, "every PROXY seed parses");
    }

    #[test]
    fn parser_seeds_hold_commands_that_parse_and_lines_that_do_not() {
        for (target, f) in [("pop3_command", pop3_command as Target), ("lmtp_command", lmtp_command)] {
            let seeds = seeds(target);
            assert!(!seeds.is_empty());
            for seed in &seeds {
                f(seed);
            }
        }
        let pop3: Vec<bool> = seeds("pop3_command")
            .iter()
            .flat_map(|s| command_lines(s).map(|l| crate::pop3::command::parse(l).is_ok()).collect::<Vec<_>>())
            .collect();
        assert!(pop3.contains(&true) && pop3.contains(&false));
        let lmtp: Vec<bool> = seeds("lmtp_command")
            .iter()
            .flat_map(|s| command_lines(s).map(|l| crate::lmtp::command::parse(l).is_ok()).collect::<Vec<_>>())
            .collect();
        assert!(lmtp.contains(&true) && lmtp.contains(&false));
    }
}
