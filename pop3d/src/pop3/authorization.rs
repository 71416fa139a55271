//! AUTHORIZATION state: CAPA, STLS, USER/PASS and SASL AUTH (RFC 5034) with PLAIN,
//! SCRAM-SHA-256, OAUTHBEARER and XOAUTH2.

use super::command::{Command, ParseError, SaslMechanism, Secret, Verb};
use super::encode::{Reply, RespCode};
use super::session::{temp_fail, LoginKind, LoginRequest, Mechanism, Pending, ScramKeysOutcome, Session, State, Step};
use crate::auth::sasl::plain::{decode_plain, PlainError};
use crate::auth::sasl::scram::{self, ScramServer};
use crate::auth::sasl::{decode_base64, oauth, OAuthMechanism};

fn cleartext_refused() -> Reply {
    Reply::err_code(RespCode::Auth, "Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
}

fn cancelled() -> Reply {
    Reply::err("Authentication cancelled.")
}

fn invalid_base64() -> Reply {
    Reply::err("Invalid base64 data.")
}

fn same_address(a: &str, b: &str) -> bool {
    match (crate::address::normalise(a), crate::address::normalise(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

impl Session {
    /// Whether secrets may be sent now: over TLS, or where cleartext is allowed.
    fn secret_auth_allowed(&self) -> bool {
        self.config.secure || self.config.cleartext_auth_allowed
    }

    fn stls_offered(&self) -> bool {
        self.config.tls_available && !self.config.secure
    }

    /// The SASL mechanisms usable now, strongest first.
    fn mechanisms(&self) -> Vec<&'static str> {
        let mut list = vec!["SCRAM-SHA-256"];
        if self.secret_auth_allowed() {
            list.push("PLAIN");
            if self.config.oauth {
                list.extend(["OAUTHBEARER", "XOAUTH2"]);
            }
        }
        list
    }

    pub(super) fn capabilities(&mut self) {
        let mut caps: Vec<String> =
            ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"].map(String::from).into();
        if matches!(self.state, State::Authorization { .. }) {
            if self.stls_offered() {
                caps.push("STLS".into());
            }
            if self.secret_auth_allowed() {
                caps.push("USER".into());
            }
            caps.push(format!("SASL {}", self.mechanisms().join(" ")));
        }
        caps.push(concat!("IMPLEMENTATION popfleet ", env!("CARGO_PKG_VERSION")).into());
        self.reply(Reply::ok("Capability list follows").lines(caps));
    }

    pub(super) fn log_out(&mut self) {
        self.reply(Reply::ok("Logging out."));
        self.state = State::Done;
        self.closing = true;
    }

    pub(super) fn authorization(&mut self, parsed: Result<Command, ParseError>) -> Option<Step> {
        let command = match parsed {
            Ok(command) => command,
            Err(error) => {
                self.authorization_error(&error);
                return None;
            }
        };
        match command {
            Command::Capa => self.capabilities(),
            Command::Quit => self.log_out(),
            Command::User(_) | Command::Pass(_) if !self.secret_auth_allowed() => self.reply(cleartext_refused()),
            Command::User(user) => {
                self.state = State::Authorization { user: Some(user) };
                self.reply(Reply::ok(""));
            }
            Command::Pass(password) => {
                let State::Authorization { user } = &mut self.state else { return None };
                match user.take() {
                    Some(user) => {
                        let credentials = super::Credentials { authzid: None, user, password: password.into_inner() };
                        return Some(self.request_login(LoginKind::Password, LoginRequest::Password(credentials)));
                    }
                    None => self.bad_command(Reply::err("No username given.")),
                }
            }
            Command::Auth { mechanism, initial_response } => return self.auth(mechanism, initial_response),
            Command::Apop => self.reply(Reply::err("APOP is not supported; use USER/PASS or AUTH.")),
            Command::Stls => self.stls(),
            Command::Stat
            | Command::List(_)
            | Command::Uidl(_)
            | Command::Retr(_)
            | Command::Top(..)
            | Command::Dele(_)
            | Command::Rset
            | Command::Noop => self.bad_command(ParseError::Unknown.reply()),
        }
        None
    }

    /// A malformed command before login. The state's rules come first, as for well-formed ones.
    fn authorization_error(&mut self, error: &ParseError) {
        match error.verb() {
            // Before login CAPA and QUIT have always ignored arguments; a probing client still
            // gets its answer.
            Some(Verb::Capa) => self.capabilities(),
            Some(Verb::Quit) => self.log_out(),
            Some(Verb::User | Verb::Pass) if !self.secret_auth_allowed() => self.reply(cleartext_refused()),
            Some(verb) if verb.is_transaction() => self.bad_command(ParseError::Unknown.reply()),
            _ => self.refuse(error),
        }
    }

    /// RFC 2595 §4: `+OK`, then the handshake. Buffered input is dropped here and again once TLS
    /// is up, so plaintext pipelined after STLS is never executed.
    fn stls(&mut self) {
        if self.config.secure {
            self.bad_command(Reply::err("TLS is already active."));
        } else if !self.config.tls_available {
            self.bad_command(Reply::err("TLS is not configured on this listener."));
        } else {
            self.reply(Reply::ok("Begin TLS negotiation now."));
            self.reader.clear();
            self.state = State::Authorization { user: None };
            self.starting_tls = true;
        }
    }

    fn auth(&mut self, mechanism: Option<SaslMechanism>, initial_response: Option<Secret>) -> Option<Step> {
        let Some(mechanism) = mechanism else {
            // Outlook's RFC 1734-era discovery: list the mechanisms.
            let list = self.mechanisms();
            self.reply(Reply::ok("").lines(list));
            return None;
        };
        let mechanism = match mechanism {
            SaslMechanism::Plain => Mechanism::Plain,
            SaslMechanism::ScramSha256 => Mechanism::ScramSha256,
            SaslMechanism::OAuthBearer if self.config.oauth => Mechanism::OAuth(OAuthMechanism::OAuthBearer),
            SaslMechanism::XOAuth2 if self.config.oauth => Mechanism::OAuth(OAuthMechanism::XOAuth2),
            _ => {
                self.bad_command(Reply::err("Unsupported authentication mechanism."));
                return None;
            }
        };
        if mechanism != Mechanism::ScramSha256 && !self.secret_auth_allowed() {
            self.reply(cleartext_refused());
            return None;
        }
        match initial_response {
            Some(initial) => self.sasl_response(mechanism, initial.expose().as_bytes()),
            None => {
                self.state = State::SaslInitial(mechanism);
                self.reply(Reply::challenge(""));
                None
            }
        }
    }

    /// The client's first SASL response (initial response or first continuation line).
    pub(super) fn sasl_response(&mut self, mechanism: Mechanism, response: &[u8]) -> Option<Step> {
        if response == b"*" {
            self.reply(cancelled());
            return None;
        }
        let Some(decoded) = decode_base64(response) else {
            self.bad_command(invalid_base64());
            return None;
        };
        match mechanism {
            Mechanism::Plain => match decode_plain(&decoded) {
                Ok(credentials) => Some(self.request_login(LoginKind::Password, LoginRequest::Password(credentials))),
                Err(PlainError) => {
                    self.auth_failed();
                    None
                }
            },
            Mechanism::ScramSha256 => match scram::parse_client_first(&decoded) {
                // Acting for another user is not supported: authzid is empty or the user.
                Ok(first) if first.authzid.as_ref().is_some_and(|z| !same_address(z, &first.user)) => {
                    self.auth_failed();
                    None
                }
                Ok(first) => {
                    let user = first.user.clone();
                    self.pending = Some(Pending::ScramKeys(first));
                    Some(Step::ScramKeys { user })
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bad SCRAM client-first message");
                    self.auth_failed();
                    None
                }
            },
            Mechanism::OAuth(kind) => match oauth::parse(kind, &decoded) {
                Ok(bearer) => {
                    let request = LoginRequest::Bearer { user: bearer.user, token: bearer.token };
                    Some(self.request_login(LoginKind::OAuth(kind), request))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bad OAuth initial response");
                    self.auth_failed();
                    None
                }
            },
        }
    }

    /// The caller found the SCRAM keys: send server-first.
    pub fn scram_keys_done(&mut self, outcome: ScramKeysOutcome) {
        let Some(Pending::ScramKeys(first)) = self.pending.take() else {
            debug_assert!(false, "scram_keys_done without a lookup");
            return;
        };
        match outcome {
            ScramKeysOutcome::TempFail => self.reply(temp_fail()),
            ScramKeysOutcome::Keys { keys, server_nonce } => {
                let server = ScramServer::new(first, keys, &server_nonce);
                self.reply(Reply::challenge(crate::auth::sasl::encode_base64(server.server_first().as_bytes())));
                self.state = State::ScramFinal(Box::new(server));
            }
        }
    }

    pub(super) fn scram_final(&mut self, server: ScramServer, response: &[u8]) -> Option<Step> {
        if response == b"*" {
            self.reply(cancelled());
            return None;
        }
        let Some(decoded) = decode_base64(response) else {
            self.bad_command(invalid_base64());
            return None;
        };
        let user = server.user().to_owned();
        match server.verify_client_final(&decoded) {
            Ok(server_final) => {
                // RFC 5034 §4: success data goes out as a challenge, answered by an empty line.
                self.reply(Reply::challenge(crate::auth::sasl::encode_base64(server_final.as_bytes())));
                self.state = State::ScramAck { user };
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "SCRAM proof refused");
                Some(self.request_login(LoginKind::Scram, LoginRequest::Scram { user, proven: false }))
            }
        }
    }

    pub(super) fn scram_ack(&mut self, user: String, response: &[u8]) -> Option<Step> {
        if response == b"*" {
            self.reply(cancelled());
            return None;
        }
        if !response.is_empty() {
            self.auth_failed();
            return None;
        }
        Some(self.request_login(LoginKind::Scram, LoginRequest::Scram { user, proven: true }))
    }
}
