//! AUTHORIZATION state: CAPA, STLS, USER/PASS and SASL AUTH (RFC 5034) with PLAIN,
//! SCRAM-SHA-256, OAUTHBEARER and XOAUTH2.

use super::session::{LoginKind, LoginRequest, Mechanism, Pending, ScramKeysOutcome, Session, State, Step, TEMP_FAIL};
use crate::sasl::plain::{decode_plain, PlainError};
use crate::sasl::scram::{self, ScramServer};
use crate::sasl::{decode_base64, oauth, OAuthMechanism};

const CLEARTEXT_REFUSED: &str = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";

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
        let mut caps = String::from(
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n",
        );
        if matches!(self.state, State::Authorization { .. }) {
            if self.stls_offered() {
                caps.push_str("STLS\r\n");
            }
            if self.secret_auth_allowed() {
                caps.push_str("USER\r\n");
            }
            caps.push_str(&format!("SASL {}\r\n", self.mechanisms().join(" ")));
        }
        caps.push_str(concat!("IMPLEMENTATION popfleet ", env!("CARGO_PKG_VERSION"), "\r\n.\r\n"));
        self.out.extend_from_slice(caps.as_bytes());
    }

    pub(super) fn authorization(&mut self, verb: &str, args: String) -> Option<Step> {
        match verb {
            "CAPA" => self.capabilities(),
            "QUIT" => {
                self.reply("+OK Logging out.");
                self.state = State::Done;
                self.closing = true;
            }
            "USER" | "PASS" if !self.secret_auth_allowed() => self.reply(CLEARTEXT_REFUSED),
            "USER" => {
                let user = args.trim();
                if user.is_empty() {
                    self.bad_command("-ERR USER needs a name.");
                } else {
                    self.state = State::Authorization { user: Some(user.to_owned()) };
                    self.reply("+OK");
                }
            }
            "PASS" => {
                let State::Authorization { user } = &mut self.state else { return None };
                match user.take() {
                    // The whole rest of the line is the password, spaces included.
                    Some(user) => {
                        let credentials = super::Credentials { authzid: None, user, password: args };
                        return Some(self.request_login(LoginKind::Password, LoginRequest::Password(credentials)));
                    }
                    None => self.bad_command("-ERR No username given."),
                }
            }
            "AUTH" => return self.auth(&args),
            "APOP" => self.reply("-ERR APOP is not supported; use USER/PASS or AUTH."),
            "STLS" => self.stls(&args),
            _ => self.bad_command("-ERR Unknown command."),
        }
        None
    }

    /// RFC 2595 §4: `+OK`, then the handshake. Buffered input is dropped here and again once TLS
    /// is up, so plaintext pipelined after STLS is never executed.
    fn stls(&mut self, args: &str) {
        if !args.is_empty() {
            self.bad_command("-ERR STLS takes no arguments.");
        } else if self.config.secure {
            self.bad_command("-ERR TLS is already active.");
        } else if !self.config.tls_available {
            self.bad_command("-ERR TLS is not configured on this listener.");
        } else {
            self.reply("+OK Begin TLS negotiation now.");
            self.reader.clear();
            self.state = State::Authorization { user: None };
            self.starting_tls = true;
        }
    }

    fn auth(&mut self, args: &str) -> Option<Step> {
        let mut parts = args.split(' ').filter(|s| !s.is_empty());
        let Some(name) = parts.next() else {
            // Outlook's RFC 1734-era discovery: list the mechanisms.
            let list: String = self.mechanisms().iter().map(|m| format!("{m}\r\n")).collect();
            self.out.extend_from_slice(format!("+OK\r\n{list}.\r\n").as_bytes());
            return None;
        };
        let mechanism = match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Mechanism::Plain,
            "SCRAM-SHA-256" => Mechanism::ScramSha256,
            "OAUTHBEARER" if self.config.oauth => Mechanism::OAuth(OAuthMechanism::OAuthBearer),
            "XOAUTH2" if self.config.oauth => Mechanism::OAuth(OAuthMechanism::XOAuth2),
            _ => {
                self.bad_command("-ERR Unsupported authentication mechanism.");
                return None;
            }
        };
        if mechanism != Mechanism::ScramSha256 && !self.secret_auth_allowed() {
            self.reply(CLEARTEXT_REFUSED);
            return None;
        }
        match parts.next() {
            Some(initial) => self.sasl_response(mechanism, initial.as_bytes()),
            None => {
                self.state = State::SaslInitial(mechanism);
                self.reply("+ ");
                None
            }
        }
    }

    /// The client's first SASL response (initial response or first continuation line).
    pub(super) fn sasl_response(&mut self, mechanism: Mechanism, response: &[u8]) -> Option<Step> {
        if response == b"*" {
            self.reply("-ERR Authentication cancelled.");
            return None;
        }
        let Some(decoded) = decode_base64(response) else {
            self.bad_command("-ERR Invalid base64 data.");
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
            ScramKeysOutcome::TempFail => self.reply(TEMP_FAIL),
            ScramKeysOutcome::Keys { keys, server_nonce } => {
                let server = ScramServer::new(first, keys, &server_nonce);
                self.reply(&format!("+ {}", crate::sasl::encode_base64(server.server_first().as_bytes())));
                self.state = State::ScramFinal(Box::new(server));
            }
        }
    }

    pub(super) fn scram_final(&mut self, server: ScramServer, response: &[u8]) -> Option<Step> {
        if response == b"*" {
            self.reply("-ERR Authentication cancelled.");
            return None;
        }
        let Some(decoded) = decode_base64(response) else {
            self.bad_command("-ERR Invalid base64 data.");
            return None;
        };
        let user = server.user().to_owned();
        match server.verify_client_final(&decoded) {
            Ok(server_final) => {
                // RFC 5034 §4: success data goes out as a challenge, answered by an empty line.
                self.reply(&format!("+ {}", crate::sasl::encode_base64(server_final.as_bytes())));
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
            self.reply("-ERR Authentication cancelled.");
            return None;
        }
        if !response.is_empty() {
            self.auth_failed();
            return None;
        }
        Some(self.request_login(LoginKind::Scram, LoginRequest::Scram { user, proven: true }))
    }
}
