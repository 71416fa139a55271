//! The LMTP session state machine.

use super::data::DataReceiver;
use super::envelope::{parse_mail_from, parse_rcpt_to, Envelope, Recipient};
use super::MAX_COMMAND_LINE;
use crate::address::mailbox_of_recipient;
use crate::lines::{Line, LineReader};
use crate::store::CHUNK_SIZE;

#[derive(Debug, Clone)]
pub struct LmtpConfig {
    pub hostname: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_bad_commands: u32,
    /// Longest line of a message, line ending excluded.
    pub max_line_length: usize,
    /// Sub-address delimiter (`user+tag@domain` goes to `user@domain`).
    pub recipient_delimiter: Option<char>,
    /// STARTTLS is offered (RFC 3207) while the connection is not yet secure.
    pub starttls: bool,
    /// The connection is already protected (after STARTTLS, or TLS ended at a trusted proxy).
    pub secure: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Write(Vec<u8>),
    /// Does this mailbox exist? Answer with [`Session::rcpt_done`].
    CheckRecipient {
        mailbox: String,
    },
    /// DATA accepted: a delivery for this envelope begins.
    DataStart(Envelope),
    /// Next piece of content (unstuffed, CRLF), at most [`CHUNK_SIZE`] octets.
    DataChunk(Vec<u8>),
    /// All content received and valid: commit it, then call [`Session::data_done`].
    DataEnd,
    /// The message was refused (replies are already queued): discard what was stored.
    DataAbort,
    /// Everything written so far must reach the client, then the TLS handshake runs; call
    /// [`Session::tls_started`] when it succeeded (close when it failed).
    StartTls,
    NeedInput,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptCheck {
    Exists,
    Unknown,
    TempFail,
    /// The store is too full to take mail now.
    NoSpace,
    /// The mailbox is at its quota.
    OverQuota,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    Delivered {
        id: String,
    },
    /// The account was deleted while the message was on its way.
    UnknownUser,
    /// The message would take the mailbox over its quota.
    OverQuota,
    /// The store ran low on room while the copies were written.
    NoSpace,
    TempFail,
}

#[derive(Debug)]
enum State {
    /// Before LHLO.
    Start,
    Ready {
        lhlo: String,
    },
    Mail {
        envelope: Envelope,
    },
    Data {
        envelope: Envelope,
        receiver: DataReceiver,
        ended: bool,
    },
    Done,
}

#[derive(Debug)]
enum Pending {
    Rcpt(Recipient),
    Data(Envelope),
}

pub struct Session {
    config: LmtpConfig,
    reader: LineReader,
    state: State,
    pending: Option<Pending>,
    chunk: Vec<u8>,
    out: Vec<u8>,
    bad_commands: u32,
    closing: bool,
    starting_tls: bool,
    commands: u64,
}

impl Session {
    pub fn new(config: LmtpConfig) -> Self {
        let mut s = Self {
            reader: LineReader::new(MAX_COMMAND_LINE),
            state: State::Start,
            pending: None,
            chunk: Vec::new(),
            out: Vec::new(),
            bad_commands: 0,
            closing: false,
            starting_tls: false,
            commands: 0,
            config,
        };
        let greeting = format!("220 {} LMTP popfleet ready", s.config.hostname);
        s.reply(&greeting);
        s
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.reader.push(bytes);
    }

    /// Whether a mail transaction is open (MAIL FROM given, its data not yet answered), for the
    /// whole-transaction deadline.
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Mail { .. } | State::Data { .. }) || matches!(self.pending, Some(Pending::Data(_)))
    }

    /// Whether message content is being received.
    pub fn in_data(&self) -> bool {
        matches!(self.state, State::Data { .. })
    }

    /// The reply when a transaction or its data took too long; the caller then closes.
    pub fn too_slow(&mut self, what: &str) -> Vec<u8> {
        self.state = State::Done;
        format!("421 4.4.2 {} {what}, closing connection\r\n", self.config.hostname).into_bytes()
    }

    /// Command lines handled so far, for the command-rate limit (DATA content is not counted).
    pub fn commands(&self) -> u64 {
        self.commands
    }

    /// The handshake after STARTTLS succeeded. RFC 3207 §4.2: the client starts over with LHLO,
    /// and nothing received before the handshake is kept (command injection).
    pub fn tls_started(&mut self) {
        self.reader.clear();
        self.config.secure = true;
        self.state = State::Start;
    }

    pub fn idle_timeout(&mut self) -> Vec<u8> {
        self.state = State::Done;
        format!("421 4.4.2 {} Timeout, closing connection\r\n", self.config.hostname).into_bytes()
    }

    pub fn poll(&mut self) -> Step {
        loop {
            if !self.out.is_empty() {
                return Step::Write(std::mem::take(&mut self.out));
            }
            if self.closing {
                return Step::Close;
            }
            if self.starting_tls {
                self.starting_tls = false;
                return Step::StartTls;
            }
            if self.pending.is_some() {
                return Step::NeedInput;
            }
            if let State::Data { .. } = self.state {
                match self.receive_data() {
                    Some(step) => return step,
                    None => continue,
                }
            }
            let line = match self.reader.next_line() {
                None => return Step::NeedInput,
                Some(Line::TooLong) => {
                    self.commands += 1;
                    self.bad_command("500 5.5.2 Line too long");
                    continue;
                }
                Some(Line::Complete(line)) => line,
            };
            self.commands += 1;
            if let Some(step) = self.handle_line(&line) {
                return step;
            }
        }
    }

    pub fn rcpt_done(&mut self, check: RcptCheck) {
        let Some(Pending::Rcpt(recipient)) = self.pending.take() else {
            debug_assert!(false, "rcpt_done without a pending RCPT");
            return;
        };
        match check {
            RcptCheck::Exists => {
                if let State::Mail { envelope } = &mut self.state {
                    envelope.recipients.push(recipient);
                }
                self.reply("250 2.1.5 Recipient OK");
            }
            RcptCheck::Unknown => self.reply(&format!("550 5.1.1 <{}> User unknown", recipient.address)),
            RcptCheck::TempFail => self.reply("451 4.3.0 Temporary failure looking up recipient, try again later"),
            RcptCheck::NoSpace => self.reply("452 4.3.1 Insufficient system storage, try again later"),
            RcptCheck::OverQuota => self.reply(&format!("552 5.2.2 <{}> Mailbox full", recipient.address)),
        }
    }

    /// One result per recipient of the envelope, in RCPT order.
    pub fn data_done(&mut self, results: Vec<DeliveryResult>) {
        let Some(Pending::Data(envelope)) = self.pending.take() else {
            debug_assert!(false, "data_done without a pending DATA");
            return;
        };
        debug_assert_eq!(results.len(), envelope.recipients.len());
        for (i, recipient) in envelope.recipients.iter().enumerate() {
            let line = match results.get(i) {
                Some(DeliveryResult::Delivered { id }) => {
                    format!("250 2.0.0 <{}> Delivered as {id}", recipient.address)
                }
                Some(DeliveryResult::UnknownUser) => format!("550 5.1.1 <{}> User unknown", recipient.address),
                Some(DeliveryResult::OverQuota) => format!("552 5.2.2 <{}> Mailbox full", recipient.address),
                Some(DeliveryResult::NoSpace) => {
                    format!("452 4.3.1 <{}> Insufficient system storage, try again later", recipient.address)
                }
                _ => format!("451 4.3.0 <{}> Temporary storage failure, try again later", recipient.address),
            };
            self.reply(&line);
        }
        self.state = State::Ready { lhlo: envelope.lhlo };
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn bad_command(&mut self, message: &str) {
        self.bad_commands += 1;
        if self.bad_commands > self.config.max_bad_commands {
            self.reply("421 4.7.0 Too many errors, closing connection");
            self.closing = true;
        } else {
            self.reply(message);
        }
    }

    fn handle_line(&mut self, line: &[u8]) -> Option<Step> {
        let Ok(line) = std::str::from_utf8(line) else {
            self.bad_command("500 5.5.2 Command is not valid UTF-8");
            return None;
        };
        let (verb, args) = line.split_once(' ').unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        match verb.as_str() {
            "LHLO" => {
                let name = args.trim();
                if name.is_empty() || name.contains(' ') {
                    self.bad_command("501 5.5.4 Syntax: LHLO hostname");
                } else {
                    self.state = State::Ready { lhlo: name.to_owned() };
                    let starttls = if self.config.starttls && !self.config.secure { "250-STARTTLS\r\n" } else { "" };
                    let text = format!(
                        "250-{}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n{starttls}250 SIZE {}\r\n",
                        self.config.hostname, self.config.max_message_size
                    );
                    self.out.extend_from_slice(text.as_bytes());
                }
            }
            "MAIL" => self.mail(args),
            "RCPT" => return self.rcpt(args),
            "DATA" => return self.data(args),
            "RSET" => {
                if let State::Mail { envelope } = &self.state {
                    self.state = State::Ready { lhlo: envelope.lhlo.clone() };
                }
                self.reply("250 2.0.0 OK");
            }
            "NOOP" => self.reply("250 2.0.0 OK"),
            "QUIT" => {
                self.reply("221 2.0.0 Bye");
                self.state = State::Done;
                self.closing = true;
            }
            "VRFY" => self.reply("252 2.5.2 Cannot VRFY user"),
            "STARTTLS" => self.starttls(args),
            "HELO" | "EHLO" => self.bad_command("500 5.5.1 This is an LMTP server: use LHLO"),
            _ => self.bad_command("500 5.5.2 Unknown command"),
        }
        None
    }

    fn starttls(&mut self, args: &str) {
        if !args.trim().is_empty() {
            self.bad_command("501 5.5.4 STARTTLS takes no arguments");
        } else if self.config.secure {
            self.bad_command("503 5.5.1 TLS is already active");
        } else if !self.config.starttls {
            self.bad_command("502 5.5.1 STARTTLS is not offered here");
        } else {
            self.reply("220 2.0.0 Ready to start TLS");
            // Pipelined plaintext after STARTTLS is dropped, never executed after the handshake.
            self.reader.clear();
            self.state = State::Start;
            self.starting_tls = true;
        }
    }

    fn mail(&mut self, args: &str) {
        let lhlo = match &self.state {
            State::Ready { lhlo } => lhlo.clone(),
            State::Start => return self.bad_command("503 5.5.1 Send LHLO first"),
            _ => return self.bad_command("503 5.5.1 Sender already given"),
        };
        match parse_mail_from(args) {
            Ok(from) if from.size.is_some_and(|s| s > self.config.max_message_size) => {
                self.reply(&format!(
                    "552 5.3.4 Message size exceeds the limit of {} octets",
                    self.config.max_message_size
                ));
            }
            Ok(from) => {
                self.state =
                    State::Mail { envelope: Envelope { lhlo, mail_from: from.address, recipients: Vec::new() } };
                self.reply("250 2.1.0 Sender OK");
            }
            Err(reply) => self.bad_command(reply),
        }
    }

    fn rcpt(&mut self, args: &str) -> Option<Step> {
        let State::Mail { envelope } = &self.state else {
            self.bad_command("503 5.5.1 MAIL first");
            return None;
        };
        if envelope.recipients.len() >= self.config.max_recipients {
            self.reply("452 4.5.3 Too many recipients");
            return None;
        }
        let address = match parse_rcpt_to(args) {
            Ok(a) => a,
            Err(reply) => {
                self.bad_command(reply);
                return None;
            }
        };
        match mailbox_of_recipient(&address, self.config.recipient_delimiter) {
            Ok(mailbox) => {
                self.pending = Some(Pending::Rcpt(Recipient { address, mailbox: mailbox.clone() }));
                Some(Step::CheckRecipient { mailbox })
            }
            Err(crate::address::AddressError::NotAscii) => {
                // No SMTPUTF8 here, so no UTF-8 address can name an account.
                self.reply("553 5.1.3 Address must be ASCII (SMTPUTF8 is not offered)");
                None
            }
            Err(_) => {
                self.reply(&format!("550 5.1.1 <{address}> User unknown"));
                None
            }
        }
    }

    fn data(&mut self, args: &str) -> Option<Step> {
        if !args.trim().is_empty() {
            self.bad_command("501 5.5.4 DATA takes no arguments");
            return None;
        }
        let envelope = match std::mem::replace(&mut self.state, State::Done) {
            State::Mail { envelope } if !envelope.recipients.is_empty() => envelope,
            other => {
                self.state = other;
                match self.state {
                    // A pipelining client sends DATA before it sees its RCPTs refused (say, 451
                    // while the store is down): a normal outcome, not abuse, so not counted
                    // towards the bad-command limit.
                    State::Mail { .. } => self.reply("503 5.5.1 No valid recipients"),
                    _ => self.bad_command("503 5.5.1 MAIL and RCPT first"),
                }
                return None;
            }
        };
        self.reply("354 Start mail input; end with <CRLF>.<CRLF>");
        self.chunk.clear();
        let receiver = DataReceiver::new(self.config.max_message_size, self.config.max_line_length);
        self.state = State::Data { envelope: envelope.clone(), receiver, ended: false };
        Some(Step::DataStart(envelope))
    }

    /// Runs buffered input through the DATA receiver.
    fn receive_data(&mut self) -> Option<Step> {
        let State::Data { receiver, ended, .. } = &mut self.state else { return None };
        if !*ended {
            let input = self.reader.take_buffered();
            let mut offset = 0;
            // Feed no more than fits in the chunk, so a chunk never exceeds CHUNK_SIZE.
            while offset < input.len() && !*ended && self.chunk.len() < CHUNK_SIZE {
                let end = (offset + CHUNK_SIZE - self.chunk.len()).min(input.len());
                let progress = receiver.feed(&input[offset..end], &mut self.chunk);
                offset += progress.consumed;
                *ended = progress.ended;
            }
            self.reader.push(&input[offset..]);
        }
        if self.chunk.len() >= CHUNK_SIZE {
            return Some(Step::DataChunk(std::mem::take(&mut self.chunk)));
        }
        if !*ended {
            return Some(Step::NeedInput);
        }
        let refusal = if receiver.has_bare_line_ending() {
            Some("554 5.6.0 Message contains bare CR or LF; lines must end in CRLF".to_owned())
        } else if receiver.too_big() {
            Some(format!("552 5.3.4 Message exceeds the limit of {} octets", self.config.max_message_size))
        } else if receiver.has_long_line() {
            Some(format!("554 5.6.0 Message has a line longer than {} octets", self.config.max_line_length))
        } else {
            None
        };
        if refusal.is_none() && !self.chunk.is_empty() {
            // The last chunk goes out first; DataEnd follows on the next poll.
            return Some(Step::DataChunk(std::mem::take(&mut self.chunk)));
        }
        let State::Data { envelope, .. } = std::mem::replace(&mut self.state, State::Done) else { return None };
        match refusal {
            Some(refusal) => {
                for _ in &envelope.recipients {
                    self.reply(&refusal);
                }
                self.chunk.clear();
                self.state = State::Ready { lhlo: envelope.lhlo };
                Some(Step::DataAbort)
            }
            None => {
                self.pending = Some(Pending::Data(envelope));
                Some(Step::DataEnd)
            }
        }
    }
}
