//! The POP3 session state machine.

use std::fmt::Write as _;

use super::maildrop::{Lookup, Maildrop};
use super::sasl::{decode_plain, SaslError};
use super::{MAX_AUTH_LINE, MAX_COMMAND_LINE};
use crate::lines::{Line, LineReader};
use crate::message_id::MessageId;
use crate::store::ListingEntry;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Whether USER/PASS and SASL PLAIN may be used on this connection (loopback, TLS, or
    /// `allow_insecure_auth`).
    pub cleartext_auth_allowed: bool,
    /// More bad commands than this closes the session.
    pub max_bad_commands: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub authzid: Option<String>,
    pub user: String,
    pub password: String,
}

/// What the caller must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes.
    Write(Vec<u8>),
    /// Check credentials and load the maildrop, then call [`Session::login_done`].
    Login(Credentials),
    /// Stream a message (see [`FetchRequest`]), then call [`Session::fetch_done`].
    Fetch(FetchRequest),
    /// Expunge these messages (QUIT in TRANSACTION), then call [`Session::commit_done`].
    /// `oldest_kept` is the oldest message of the snapshot left in place, if any.
    Commit { mailbox: String, ids: Vec<MessageId>, oldest_kept: Option<MessageId> },
    /// Read more input and [`Session::feed`] it.
    NeedInput,
    /// Flush and close the connection.
    Close,
}

#[derive(Debug, PartialEq, Eq)]
pub struct FetchRequest {
    pub number: usize,
    pub mailbox: String,
    pub entry: ListingEntry,
    /// `Some(n)` for `TOP msg n`.
    pub top: Option<u64>,
    /// The `+OK` line to send before the content, once the content is known to exist.
    pub ok_line: Vec<u8>,
}

#[derive(Debug)]
pub enum LoginOutcome {
    Ok { mailbox: String, listing: Vec<ListingEntry> },
    BadCredentials,
    TempFail,
    InUse,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The caller wrote the `+OK` line, the encoded content and the terminator.
    Sent,
    /// The content is gone (another session deleted it, or repair is due); nothing was sent.
    Missing,
    /// The store failed before anything was sent.
    TempFail,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    Ok,
    Failed,
}

#[derive(Debug)]
enum State {
    Authorization { user: Option<String> },
    /// `AUTH PLAIN` without initial response: the next line is the SASL response.
    SaslPlain,
    Transaction(Maildrop),
    Done,
}

#[derive(Debug, PartialEq, Eq)]
enum Pending {
    Login,
    Fetch(usize),
    Commit,
}

pub struct Session {
    config: SessionConfig,
    reader: LineReader,
    state: State,
    pending: Option<Pending>,
    out: Vec<u8>,
    bad_commands: u32,
    closing: bool,
}

const AUTH_FAILED: &str = "-ERR [AUTH] Authentication failed.";
const TEMP_FAIL: &str = "-ERR [SYS/TEMP] Temporary server failure, try again later.";
const CLEARTEXT_REFUSED: &str = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";

impl Session {
    pub fn new(config: SessionConfig) -> Self {
        let mut session = Self {
            config,
            reader: LineReader::new(MAX_AUTH_LINE),
            state: State::Authorization { user: None },
            pending: None,
            out: Vec::new(),
            bad_commands: 0,
            closing: false,
        };
        session.reply("+OK popfleet ready.");
        session
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.reader.push(bytes);
    }

    /// Whether the user has logged in (for idle timers and metrics).
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// The reply for an idle timeout; the caller then closes without any deletion.
    pub fn idle_timeout(&mut self) -> Vec<u8> {
        self.state = State::Done;
        b"-ERR Disconnected for inactivity.\r\n".to_vec()
    }

    pub fn poll(&mut self) -> Step {
        debug_assert!(self.pending.is_none(), "poll called with a request outstanding");
        loop {
            if !self.out.is_empty() {
                return Step::Write(std::mem::take(&mut self.out));
            }
            if self.closing {
                return Step::Close;
            }
            if self.pending.is_some() {
                return Step::NeedInput;
            }
            let line = match self.reader.next_line() {
                None => return Step::NeedInput,
                Some(Line::TooLong) => {
                    self.bad_command("-ERR Line too long.");
                    continue;
                }
                Some(Line::Complete(line)) => line,
            };
            if let Some(step) = self.handle_line(line) {
                return step;
            }
        }
    }

    pub fn login_done(&mut self, outcome: LoginOutcome) {
        self.take_pending(Pending::Login);
        match outcome {
            LoginOutcome::Ok { mailbox, listing } => {
                self.state = State::Transaction(Maildrop::new(mailbox, listing));
                self.reply("+OK Logged in.");
            }
            LoginOutcome::BadCredentials => {
                self.state = State::Authorization { user: None };
                self.reply(AUTH_FAILED);
            }
            LoginOutcome::TempFail => {
                self.state = State::Authorization { user: None };
                self.reply(TEMP_FAIL);
            }
            LoginOutcome::InUse => {
                self.state = State::Authorization { user: None };
                self.reply("-ERR [IN-USE] Mailbox is in use by another session.");
            }
        }
    }

    pub fn fetch_done(&mut self, outcome: FetchOutcome) {
        let Some(Pending::Fetch(number)) = self.pending.take() else {
            debug_assert!(false, "fetch_done without a fetch");
            return;
        };
        match outcome {
            FetchOutcome::Sent => {}
            FetchOutcome::Missing => {
                if let State::Transaction(drop) = &mut self.state {
                    drop.mark_gone(number);
                }
                self.reply("-ERR Message was deleted by another session.");
            }
            FetchOutcome::TempFail => self.reply(TEMP_FAIL),
        }
    }

    pub fn commit_done(&mut self, outcome: CommitOutcome) {
        self.take_pending(Pending::Commit);
        self.state = State::Done;
        match outcome {
            CommitOutcome::Ok => self.reply("+OK Logging out, messages deleted."),
            CommitOutcome::Failed => self.reply("-ERR [SYS/TEMP] Some deleted messages were not removed."),
        }
        self.closing = true;
    }

    fn take_pending(&mut self, expected: Pending) {
        let pending = self.pending.take();
        debug_assert_eq!(pending, Some(expected));
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn bad_command(&mut self, message: &str) {
        self.bad_commands += 1;
        if self.bad_commands > self.config.max_bad_commands {
            self.reply("-ERR Too many bad commands.");
            self.closing = true;
        } else {
            self.reply(message);
        }
    }

    fn handle_line(&mut self, line: Vec<u8>) -> Option<Step> {
        if matches!(self.state, State::SaslPlain) {
            return self.sasl_plain_response(&line);
        }
        let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        let verb = String::from_utf8_lossy(&line[..verb_end]).to_ascii_uppercase();
        if line.len() + 2 > MAX_COMMAND_LINE && verb != "AUTH" {
            self.bad_command("-ERR Line too long.");
            return None;
        }
        let Ok(args) = std::str::from_utf8(line.get(verb_end + 1..).unwrap_or(&[])) else {
            self.bad_command("-ERR Command is not valid UTF-8.");
            return None;
        };
        let args = args.to_owned();
        match self.state {
            State::Authorization { .. } => self.authorization(&verb, args),
            State::Transaction(_) => self.transaction(&verb, &args),
            State::SaslPlain | State::Done => None,
        }
    }

    fn capabilities(&mut self) {
        let mut caps = String::from("+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        if matches!(self.state, State::Authorization { .. }) && self.config.cleartext_auth_allowed {
            caps.push_str("USER\r\nSASL PLAIN\r\n");
        }
        caps.push_str(concat!("IMPLEMENTATION popfleet ", env!("CARGO_PKG_VERSION"), "\r\n.\r\n"));
        self.out.extend_from_slice(caps.as_bytes());
    }

    fn authorization(&mut self, verb: &str, args: String) -> Option<Step> {
        match verb {
            "CAPA" => self.capabilities(),
            "QUIT" => {
                self.reply("+OK Logging out.");
                self.state = State::Done;
                self.closing = true;
            }
            "USER" if !self.config.cleartext_auth_allowed => self.reply(CLEARTEXT_REFUSED),
            "USER" => {
                let user = args.trim();
                if user.is_empty() {
                    self.bad_command("-ERR USER needs a name.");
                } else {
                    self.state = State::Authorization { user: Some(user.to_owned()) };
                    self.reply("+OK");
                }
            }
            "PASS" if !self.config.cleartext_auth_allowed => self.reply(CLEARTEXT_REFUSED),
            "PASS" => {
                let State::Authorization { user } = &mut self.state else { return None };
                match user.take() {
                    // The whole rest of the line is the password, spaces included.
                    Some(user) => return Some(self.request_login(Credentials { authzid: None, user, password: args })),
                    None => self.bad_command("-ERR No username given."),
                }
            }
            "AUTH" => return self.auth(&args),
            "APOP" => self.reply("-ERR APOP is not supported; use USER/PASS or AUTH."),
            "STLS" => self.bad_command("-ERR TLS is not configured on this listener."),
            _ => self.bad_command("-ERR Unknown command."),
        }
        None
    }

    fn auth(&mut self, args: &str) -> Option<Step> {
        let mut parts = args.split(' ').filter(|s| !s.is_empty());
        let Some(mechanism) = parts.next() else {
            // Outlook's RFC 1734-era discovery: list the mechanisms.
            let list = if self.config.cleartext_auth_allowed { "PLAIN\r\n" } else { "" };
            self.out.extend_from_slice(format!("+OK\r\n{list}.\r\n").as_bytes());
            return None;
        };
        if !mechanism.eq_ignore_ascii_case("PLAIN") {
            self.bad_command("-ERR Unsupported authentication mechanism.");
            return None;
        }
        if !self.config.cleartext_auth_allowed {
            self.reply(CLEARTEXT_REFUSED);
            return None;
        }
        match parts.next() {
            Some(initial) => self.sasl_plain_response(initial.as_bytes()),
            None => {
                self.state = State::SaslPlain;
                self.reply("+ ");
                None
            }
        }
    }

    fn sasl_plain_response(&mut self, response: &[u8]) -> Option<Step> {
        self.state = State::Authorization { user: None };
        if response == b"*" {
            self.reply("-ERR Authentication cancelled.");
            return None;
        }
        match decode_plain(response) {
            Ok(credentials) => Some(self.request_login(credentials)),
            Err(SaslError::Base64) => {
                self.bad_command("-ERR Invalid base64 data.");
                None
            }
            Err(SaslError::Malformed) => {
                self.reply(AUTH_FAILED);
                None
            }
        }
    }

    fn request_login(&mut self, credentials: Credentials) -> Step {
        self.pending = Some(Pending::Login);
        Step::Login(credentials)
    }

    fn transaction(&mut self, verb: &str, args: &str) -> Option<Step> {
        let State::Transaction(drop) = &mut self.state else { return None };
        let argv: Vec<&str> = args.split(' ').filter(|s| !s.is_empty()).collect();
        match (verb, argv.as_slice()) {
            ("STAT", []) => {
                let (n, octets) = drop.stat();
                self.reply(&format!("+OK {n} {octets}"));
            }
            ("LIST", []) => {
                let (n, octets) = drop.stat();
                let mut text = format!("+OK {n} messages ({octets} octets)\r\n");
                for (number, entry) in drop.live() {
                    let _ = write!(text, "{number} {}\r\n", entry.size);
                }
                text.push_str(".\r\n");
                self.out.extend_from_slice(text.as_bytes());
            }
            ("UIDL", []) => {
                let mut text = String::from("+OK\r\n");
                for (number, entry) in drop.live() {
                    let _ = write!(text, "{number} {}\r\n", entry.id);
                }
                text.push_str(".\r\n");
                self.out.extend_from_slice(text.as_bytes());
            }
            ("LIST", [n]) => {
                if let Some((number, entry)) = self.message(n) {
                    self.reply(&format!("+OK {number} {}", entry.size));
                }
            }
            ("UIDL", [n]) => {
                if let Some((number, entry)) = self.message(n) {
                    self.reply(&format!("+OK {number} {}", entry.id));
                }
            }
            ("RETR", [n]) => return self.fetch(n, None),
            ("TOP", [n, lines]) => match parse_number(lines) {
                Some(lines) => return self.fetch(n, Some(lines)),
                None => self.bad_command("-ERR Invalid line count."),
            },
            ("DELE", [n]) => {
                let Some(number) = self.message_number(n) else { return None };
                let State::Transaction(drop) = &mut self.state else { return None };
                match drop.delete(number) {
                    Lookup::Found(_) => self.reply("+OK Marked to be deleted."),
                    Lookup::Deleted => self.reply("-ERR Message is already deleted."),
                    Lookup::NoSuchMessage => self.reply(&format!("-ERR There's no message {number}.")),
                }
            }
            ("RSET", []) => {
                drop.reset();
                let (n, octets) = drop.stat();
                self.reply(&format!("+OK {n} messages ({octets} octets)"));
            }
            ("NOOP", []) => self.reply("+OK"),
            ("CAPA", []) => self.capabilities(),
            ("QUIT", []) => {
                let ids = drop.deleted_ids();
                if ids.is_empty() {
                    self.commit_done_inline();
                } else {
                    self.pending = Some(Pending::Commit);
                    return Some(Step::Commit { mailbox: drop.mailbox.clone(), ids, oldest_kept: drop.oldest_kept() });
                }
            }
            ("STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "RSET" | "NOOP" | "CAPA" | "QUIT", _) => {
                self.bad_command("-ERR Wrong number of arguments.")
            }
            ("USER" | "PASS" | "AUTH" | "APOP" | "STLS", _) => self.bad_command("-ERR Already logged in."),
            _ => self.bad_command("-ERR Unknown command."),
        }
        None
    }

    fn commit_done_inline(&mut self) {
        self.state = State::Done;
        self.reply("+OK Logging out.");
        self.closing = true;
    }

    fn message_number(&mut self, arg: &str) -> Option<usize> {
        match parse_number(arg) {
            Some(n) if n > 0 && n <= usize::MAX as u64 => Some(n as usize),
            Some(_) => {
                self.reply(&format!("-ERR There's no message {arg}."));
                None
            }
            None => {
                self.bad_command("-ERR Invalid message number.");
                None
            }
        }
    }

    /// Resolves a message-number argument to a live message, replying `-ERR` otherwise.
    fn message(&mut self, arg: &str) -> Option<(usize, ListingEntry)> {
        let number = self.message_number(arg)?;
        let State::Transaction(drop) = &self.state else { return None };
        match drop.get(number) {
            Lookup::Found(entry) => Some((number, entry)),
            Lookup::Deleted => {
                self.reply("-ERR Message is deleted.");
                None
            }
            Lookup::NoSuchMessage => {
                self.reply(&format!("-ERR There's no message {number}."));
                None
            }
        }
    }

    fn fetch(&mut self, arg: &str, top: Option<u64>) -> Option<Step> {
        let (number, entry) = self.message(arg)?;
        let State::Transaction(drop) = &self.state else { return None };
        let ok_line = match top {
            None => format!("+OK {} octets\r\n", entry.size),
            Some(_) => "+OK\r\n".to_owned(),
        };
        self.pending = Some(Pending::Fetch(number));
        Some(Step::Fetch(FetchRequest {
            number,
            mailbox: drop.mailbox.clone(),
            entry,
            top,
            ok_line: ok_line.into_bytes(),
        }))
    }
}

/// A decimal number as POP3 allows it: digits only, no sign, bounded length.
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
