//! The POP3 session state machine: types, the input loop and the answers to storage requests.
//! Lines are parsed in `command.rs`; the commands are carried out in `authorization.rs` (before
//! login, incl. STLS and SASL) and `transaction.rs` (after login); every reply is framed by
//! `encode.rs`.

use super::command::{self, ParseError};
use super::encode::{Reply, RespCode};
use super::maildrop::Maildrop;
use super::MAX_AUTH_LINE;
use crate::auth::sasl::scram::ScramServer;
use crate::auth::sasl::OAuthMechanism;
use crate::lines::{Line, LineReader};
use crate::message_id::MessageId;
use crate::store::ListingEntry;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Whether USER/PASS and the SASL mechanisms that send a secret (PLAIN, OAUTHBEARER,
    /// XOAUTH2) may be used before TLS: a loopback client, or `allow_insecure_auth`.
    pub cleartext_auth_allowed: bool,
    /// More bad commands than this closes the session.
    pub max_bad_commands: u32,
    /// This many failed logins close the session.
    pub max_auth_failures: u32,
    /// The listener can start TLS (STLS is offered while the session is not yet secure).
    pub tls_available: bool,
    /// The connection is already protected: implicit TLS, or TLS ended at a trusted proxy.
    pub secure: bool,
    /// Bearer-token validation is configured (OAUTHBEARER, XOAUTH2).
    pub oauth: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cleartext_auth_allowed: false,
            max_bad_commands: 20,
            max_auth_failures: 3,
            tls_available: false,
            secure: false,
            oauth: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub authzid: Option<String>,
    pub user: String,
    pub password: String,
}

/// What the caller must check before the maildrop is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRequest {
    /// USER/PASS or SASL PLAIN: verify the password.
    Password(Credentials),
    /// SCRAM-SHA-256 finished here; `proven` says whether the client proof was right. A failed
    /// proof still goes through the caller so it pays the same failure delay as a bad password.
    Scram { user: String, proven: bool },
    /// OAUTHBEARER / XOAUTH2: validate the token; `user` is the name the client claimed, if any.
    Bearer { user: Option<String>, token: String },
}

/// What the caller must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes.
    Write(Vec<u8>),
    /// Check the login and load the maildrop, then call [`Session::login_done`].
    Login(LoginRequest),
    /// Look up the SCRAM-SHA-256 keys of `user` (a decoy for unknown users), then call
    /// [`Session::scram_keys_done`].
    ScramKeys { user: String },
    /// Stream a message (see [`FetchRequest`]), then call [`Session::fetch_done`].
    Fetch(FetchRequest),
    /// Expunge these messages (QUIT in TRANSACTION), then call [`Session::commit_done`].
    /// `oldest_kept` is the oldest message of the snapshot left in place, if any.
    Commit { mailbox: String, ids: Vec<MessageId>, oldest_kept: Option<MessageId> },
    /// Everything written so far must reach the client, then the TLS handshake runs on the
    /// connection; call [`Session::tls_started`] when it succeeded (close when it failed).
    StartTls,
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

/// The answer to [`Step::ScramKeys`].
#[derive(Debug, Clone)]
pub enum ScramKeysOutcome {
    /// Real keys, or decoy keys for an unknown user (the exchange then fails at the proof, like
    /// a wrong password, so the salt does not reveal which accounts exist).
    Keys {
        keys: crate::auth::sasl::scram::ScramKeys,
        server_nonce: String,
    },
    TempFail,
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
pub(super) enum State {
    Authorization {
        user: Option<String>,
    },
    /// `AUTH mech` without initial response: the next line is the client's first response.
    SaslInitial(Mechanism),
    /// SCRAM server-first sent; the next line is the client-final message.
    ScramFinal(Box<ScramServer>),
    /// SCRAM server-final sent as a challenge; the client answers with an empty line.
    ScramAck {
        user: String,
    },
    /// An OAuth error challenge was sent; whatever the client answers, the exchange fails.
    OAuthFailed,
    Transaction(Maildrop),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mechanism {
    Plain,
    ScramSha256,
    OAuth(OAuthMechanism),
}

#[derive(Debug)]
pub(super) enum Pending {
    Login(LoginKind),
    ScramKeys(crate::auth::sasl::scram::ClientFirst),
    Fetch(usize),
    Commit,
    Tls,
}

/// How a failed login is answered: OAuth mechanisms first send an error challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoginKind {
    Password,
    Scram,
    OAuth(OAuthMechanism),
}

pub struct Session {
    pub(super) config: SessionConfig,
    pub(super) reader: LineReader,
    pub(super) state: State,
    pub(super) pending: Option<Pending>,
    pub(super) out: Vec<u8>,
    bad_commands: u32,
    auth_failures: u32,
    pub(super) closing: bool,
    /// Set by STLS: after the `+OK` is written the next step is [`Step::StartTls`].
    pub(super) starting_tls: bool,
    commands: u64,
}

pub(super) fn temp_fail() -> Reply {
    Reply::err_code(RespCode::SysTemp, "Temporary server failure, try again later.")
}

impl Session {
    pub fn new(config: SessionConfig) -> Self {
        let mut session = Self {
            config,
            reader: LineReader::new(MAX_AUTH_LINE),
            state: State::Authorization { user: None },
            pending: None,
            out: Vec::new(),
            bad_commands: 0,
            auth_failures: 0,
            closing: false,
            starting_tls: false,
            commands: 0,
        };
        session.reply(Reply::ok("popfleet ready."));
        session
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.reader.push(bytes);
    }

    /// Whether the user has logged in (for idle timers and metrics).
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// Whether the connection is protected by TLS (here or at a trusted proxy).
    pub fn is_secure(&self) -> bool {
        self.config.secure
    }

    /// Lines handled so far (commands and SASL responses), for the command-rate limit.
    pub fn commands(&self) -> u64 {
        self.commands
    }

    /// The reply for an idle timeout; the caller then closes without any deletion.
    pub fn idle_timeout(&mut self) -> Vec<u8> {
        self.state = State::Done;
        Reply::err("Disconnected for inactivity.").to_bytes()
    }

    /// The reply when the login deadline passes; the caller then closes.
    pub fn login_timeout(&mut self) -> Vec<u8> {
        self.state = State::Done;
        Reply::err("Disconnected: no login in time.").to_bytes()
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
            if self.starting_tls {
                self.starting_tls = false;
                self.pending = Some(Pending::Tls);
                return Step::StartTls;
            }
            if self.pending.is_some() {
                return Step::NeedInput;
            }
            let line = match self.reader.next_line() {
                None => return Step::NeedInput,
                Some(Line::TooLong) => {
                    self.commands += 1;
                    if self.in_sasl_exchange() {
                        // The overlong line was the client's SASL answer: the exchange ends here, or
                        // the next command would be read as the answer (a desync).
                        self.state = State::Authorization { user: None };
                        self.bad_command(Reply::err("Authentication cancelled: line too long."));
                    } else {
                        self.bad_command(ParseError::LineTooLong.reply());
                    }
                    continue;
                }
                Some(Line::Complete(line)) => line,
            };
            self.commands += 1;
            if let Some(step) = self.handle_line(line) {
                return step;
            }
        }
    }

    /// Whether the next line is a SASL answer rather than a command.
    fn in_sasl_exchange(&self) -> bool {
        matches!(self.state, State::SaslInitial(_) | State::ScramFinal(_) | State::ScramAck { .. } | State::OAuthFailed)
    }

    /// The TLS handshake after STLS succeeded: the session is secure, and nothing the client
    /// sent before the handshake is kept (RFC 2595 §4, the STARTTLS command-injection class).
    pub fn tls_started(&mut self) {
        let pending = self.pending.take();
        debug_assert!(matches!(pending, Some(Pending::Tls)));
        self.reader.clear();
        self.config.secure = true;
        self.state = State::Authorization { user: None };
    }

    pub fn login_done(&mut self, outcome: LoginOutcome) {
        let Some(Pending::Login(kind)) = self.pending.take() else {
            debug_assert!(false, "login_done without a login");
            return;
        };
        self.state = State::Authorization { user: None };
        match outcome {
            LoginOutcome::Ok { mailbox, listing } => {
                self.state = State::Transaction(Maildrop::new(mailbox, listing));
                self.reply(Reply::ok("Logged in."));
            }
            LoginOutcome::BadCredentials => match kind {
                // RFC 7628 §3.2.2: an error challenge first; the client's answer ends it.
                LoginKind::OAuth(mechanism) => {
                    self.reply(Reply::challenge(crate::auth::sasl::oauth::error_challenge(mechanism)));
                    self.state = State::OAuthFailed;
                }
                LoginKind::Password | LoginKind::Scram => self.auth_failed(),
            },
            LoginOutcome::TempFail => self.reply(temp_fail()),
            LoginOutcome::InUse => {
                self.reply(Reply::err_code(RespCode::InUse, "Mailbox is in use by another session."))
            }
        }
    }

    /// Answers a failed authentication; the last allowed failure also closes the session.
    pub(super) fn auth_failed(&mut self) {
        self.state = State::Authorization { user: None };
        self.reply(Reply::err_code(RespCode::Auth, "Authentication failed."));
        self.auth_failures += 1;
        if self.auth_failures >= self.config.max_auth_failures {
            self.state = State::Done;
            self.closing = true;
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
                self.reply(Reply::err("Message was deleted by another session."));
            }
            FetchOutcome::TempFail => self.reply(temp_fail()),
        }
    }

    pub fn commit_done(&mut self, outcome: CommitOutcome) {
        let pending = self.pending.take();
        debug_assert!(matches!(pending, Some(Pending::Commit)));
        self.state = State::Done;
        match outcome {
            CommitOutcome::Ok => self.reply(Reply::ok("Logging out, messages deleted.")),
            CommitOutcome::Failed => {
                self.reply(Reply::err_code(RespCode::SysTemp, "Some deleted messages were not removed."))
            }
        }
        self.closing = true;
    }

    pub(super) fn reply(&mut self, reply: Reply) {
        reply.encode(&mut self.out);
    }

    pub(super) fn bad_command(&mut self, reply: Reply) {
        self.bad_commands += 1;
        if self.bad_commands > self.config.max_bad_commands {
            self.reply(Reply::err("Too many bad commands."));
            self.closing = true;
        } else {
            self.reply(reply);
        }
    }

    /// Answers a line that is not a command, counting it when it is malformed.
    pub(super) fn refuse(&mut self, error: &ParseError) {
        if error.is_bad_command() {
            self.bad_command(error.reply());
        } else {
            self.reply(error.reply());
        }
    }

    pub(super) fn request_login(&mut self, kind: LoginKind, request: LoginRequest) -> Step {
        self.pending = Some(Pending::Login(kind));
        Step::Login(request)
    }

    fn handle_line(&mut self, line: Vec<u8>) -> Option<Step> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::SaslInitial(mechanism) => {
                self.state = State::Authorization { user: None };
                return self.sasl_response(mechanism, &line);
            }
            State::ScramFinal(server) => {
                self.state = State::Authorization { user: None };
                return self.scram_final(*server, &line);
            }
            State::ScramAck { user } => {
                self.state = State::Authorization { user: None };
                return self.scram_ack(user, &line);
            }
            State::OAuthFailed => {
                self.auth_failed();
                return None;
            }
            other => self.state = other,
        }
        let parsed = command::parse(&line);
        match self.state {
            State::Authorization { .. } => self.authorization(parsed),
            State::Transaction(_) => self.transaction(parsed),
            _ => None,
        }
    }
}
