//! The LMTP session state machine. Lines are parsed in `command.rs` and every reply is framed by
//! `reply.rs`; what is left here is sequence: which command fits the transaction so far.

use super::command::{self, Command, MailFrom, ParseError, Verb};
use super::data::DataReceiver;
use super::envelope::{Envelope, Recipient};
use super::reply::Reply;
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
    /// An MTA's retry of a delivery stored before (as `id`): answered 250, not stored again.
    Duplicate {
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

/// A command that does not fit the session's state; `counted` ones count towards the
/// bad-command limit.
struct Refusal {
    reply: Reply,
    counted: bool,
}

impl Refusal {
    fn bad(code: u16, enhanced: [u16; 3], text: &str) -> Self {
        Self { reply: Reply::new(code, enhanced, text), counted: true }
    }
}

fn ok() -> Reply {
    Reply::new(250, [2, 0, 0], "OK")
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
        let greeting = Reply::plain(220, format!("{} LMTP popfleet ready", s.config.hostname));
        s.reply(greeting);
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
        Reply::new(421, [4, 4, 2], format!("{} {what}, closing connection", self.config.hostname)).to_bytes()
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
        Reply::new(421, [4, 4, 2], format!("{} Timeout, closing connection", self.config.hostname)).to_bytes()
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
                    self.bad_command(Reply::new(500, [5, 5, 2], "Line too long"));
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
                self.reply(Reply::new(250, [2, 1, 5], "Recipient OK"));
            }
            RcptCheck::Unknown => self.reply(unknown_user(&recipient.address)),
            RcptCheck::TempFail => {
                self.reply(Reply::new(451, [4, 3, 0], "Temporary failure looking up recipient, try again later"))
            }
            RcptCheck::NoSpace => {
                self.reply(Reply::new(452, [4, 3, 1], "Insufficient system storage, try again later"))
            }
            RcptCheck::OverQuota => self.reply(mailbox_full(&recipient.address)),
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
            let address = &recipient.address;
            let reply = match results.get(i) {
                Some(DeliveryResult::Delivered { id }) => {
                    Reply::new(250, [2, 0, 0], format!("<{address}> Delivered as {id}"))
                }
                Some(DeliveryResult::Duplicate { id }) => {
                    Reply::new(250, [2, 0, 0], format!("<{address}> Already delivered as {id}"))
                }
                Some(DeliveryResult::UnknownUser) => unknown_user(address),
                Some(DeliveryResult::OverQuota) => mailbox_full(address),
                Some(DeliveryResult::NoSpace) => {
                    Reply::new(452, [4, 3, 1], format!("<{address}> Insufficient system storage, try again later"))
                }
                _ => Reply::new(451, [4, 3, 0], format!("<{address}> Temporary storage failure, try again later")),
            };
            self.reply(reply);
        }
        self.state = State::Ready { lhlo: envelope.lhlo };
    }

    fn reply(&mut self, reply: Reply) {
        reply.encode(&mut self.out);
    }

    fn bad_command(&mut self, reply: Reply) {
        self.bad_commands += 1;
        if self.bad_commands > self.config.max_bad_commands {
            self.reply(Reply::new(421, [4, 7, 0], "Too many errors, closing connection"));
            self.closing = true;
        } else {
            self.reply(reply);
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        if refusal.counted {
            self.bad_command(refusal.reply);
        } else {
            self.reply(refusal.reply);
        }
    }

    fn handle_line(&mut self, line: &[u8]) -> Option<Step> {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(error) => {
                self.malformed(&error);
                return None;
            }
        };
        match command {
            Command::Lhlo(name) => self.lhlo(name),
            Command::MailFrom(from) => self.mail(from),
            Command::RcptTo(address) => return self.rcpt(address),
            Command::Data => return self.data(),
            Command::Rset => {
                if let State::Mail { envelope } = &self.state {
                    self.state = State::Ready { lhlo: envelope.lhlo.clone() };
                }
                self.reply(ok());
            }
            Command::Noop => self.reply(ok()),
            Command::Quit => {
                self.reply(Reply::new(221, [2, 0, 0], "Bye"));
                self.state = State::Done;
                self.closing = true;
            }
            Command::Vrfy => self.reply(Reply::new(252, [2, 5, 2], "Cannot VRFY user")),
            Command::StartTls => self.starttls(),
        }
        None
    }

    /// A malformed command. MAIL or RCPT out of sequence is answered as such whatever its
    /// arguments: the client's state is the more useful news.
    fn malformed(&mut self, error: &ParseError) {
        let sequence = match error.verb() {
            Some(Verb::Mail) => self.mail_sequence().err(),
            Some(Verb::Rcpt) => self.rcpt_sequence().err(),
            _ => None,
        };
        match sequence {
            Some(refusal) => self.refuse(refusal),
            None => self.bad_command(error.reply()),
        }
    }

    fn lhlo(&mut self, name: String) {
        self.state = State::Ready { lhlo: name };
        let mut lines = vec![self.config.hostname.clone()];
        lines.extend(["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"].map(String::from));
        if self.config.starttls && !self.config.secure {
            lines.push("STARTTLS".into());
        }
        lines.push(format!("SIZE {}", self.config.max_message_size));
        self.reply(Reply::multiline(250, lines));
    }

    fn starttls(&mut self) {
        if self.config.secure {
            self.bad_command(Reply::new(503, [5, 5, 1], "TLS is already active"));
        } else if !self.config.starttls {
            self.bad_command(Reply::new(502, [5, 5, 1], "STARTTLS is not offered here"));
        } else {
            self.reply(Reply::new(220, [2, 0, 0], "Ready to start TLS"));
            // Pipelined plaintext after STARTTLS is dropped, never executed after the handshake.
            self.reader.clear();
            self.state = State::Start;
            self.starting_tls = true;
        }
    }

    /// MAIL is allowed after LHLO, once per transaction; the LHLO name goes into the envelope.
    fn mail_sequence(&self) -> Result<String, Refusal> {
        match &self.state {
            State::Ready { lhlo } => Ok(lhlo.clone()),
            State::Start => Err(Refusal::bad(503, [5, 5, 1], "Send LHLO first")),
            _ => Err(Refusal::bad(503, [5, 5, 1], "Sender already given")),
        }
    }

    fn mail(&mut self, from: MailFrom) {
        let lhlo = match self.mail_sequence() {
            Ok(lhlo) => lhlo,
            Err(refusal) => return self.refuse(refusal),
        };
        let max = self.config.max_message_size;
        if from.size.is_some_and(|size| size > max) {
            self.reply(Reply::new(552, [5, 3, 4], format!("Message size exceeds the limit of {max} octets")));
        } else {
            self.state = State::Mail { envelope: Envelope { lhlo, mail_from: from.address, recipients: Vec::new() } };
            self.reply(Reply::new(250, [2, 1, 0], "Sender OK"));
        }
    }

    /// RCPT is allowed inside a transaction, up to the recipient limit (a temporary refusal: the
    /// client sends the rest in another transaction).
    fn rcpt_sequence(&self) -> Result<(), Refusal> {
        let State::Mail { envelope } = &self.state else {
            return Err(Refusal::bad(503, [5, 5, 1], "MAIL first"));
        };
        if envelope.recipients.len() >= self.config.max_recipients {
            return Err(Refusal { reply: Reply::new(452, [4, 5, 3], "Too many recipients"), counted: false });
        }
        Ok(())
    }

    fn rcpt(&mut self, address: String) -> Option<Step> {
        if let Err(refusal) = self.rcpt_sequence() {
            self.refuse(refusal);
            return None;
        }
        match mailbox_of_recipient(&address, self.config.recipient_delimiter) {
            Ok(mailbox) => {
                self.pending = Some(Pending::Rcpt(Recipient { address, mailbox: mailbox.clone() }));
                Some(Step::CheckRecipient { mailbox })
            }
            Err(crate::address::AddressError::NotAscii) => {
                // No SMTPUTF8 here, so no UTF-8 address can name an account.
                self.reply(Reply::new(553, [5, 1, 3], "Address must be ASCII (SMTPUTF8 is not offered)"));
                None
            }
            Err(_) => {
                self.reply(unknown_user(&address));
                None
            }
        }
    }

    fn data(&mut self) -> Option<Step> {
        let envelope = match std::mem::replace(&mut self.state, State::Done) {
            State::Mail { envelope } if !envelope.recipients.is_empty() => envelope,
            other => {
                self.state = other;
                match self.state {
                    // A pipelining client sends DATA before it sees its RCPTs refused (say, 451
                    // while the store is down): a normal outcome, not abuse, so not counted
                    // towards the bad-command limit.
                    State::Mail { .. } => self.reply(Reply::new(503, [5, 5, 1], "No valid recipients")),
                    _ => self.bad_command(Reply::new(503, [5, 5, 1], "MAIL and RCPT first")),
                }
                return None;
            }
        };
        self.reply(Reply::plain(354, "Start mail input; end with <CRLF>.<CRLF>"));
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
            Some(Reply::new(554, [5, 6, 0], "Message contains bare CR or LF; lines must end in CRLF"))
        } else if receiver.too_big() {
            let max = self.config.max_message_size;
            Some(Reply::new(552, [5, 3, 4], format!("Message exceeds the limit of {max} octets")))
        } else if receiver.has_long_line() {
            let max = self.config.max_line_length;
            Some(Reply::new(554, [5, 6, 0], format!("Message has a line longer than {max} octets")))
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
                    self.reply(refusal.clone());
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

fn unknown_user(address: &str) -> Reply {
    Reply::new(550, [5, 1, 1], format!("<{address}> User unknown"))
}

fn mailbox_full(address: &str) -> Reply {
    Reply::new(552, [5, 2, 2], format!("<{address}> Mailbox full"))
}
