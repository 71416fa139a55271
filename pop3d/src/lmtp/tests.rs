//! Byte-level tests of the LMTP engine with an in-memory stand-in for the server loop.

use super::*;
use crate::store::CHUNK_SIZE;

mod parser;

/// Known mailboxes; `fail@example.com` exists but its storage fails at commit.
const KNOWN: [&str; 6] = [
    "alice@example.com",
    "bob@example.com",
    "fail@example.com",
    "carol@example.com",
    "dave@example.com",
    "erin@example.com",
];

#[derive(Default)]
struct Harness {
    session: Option<Session>,
    /// Bytes of the DATA currently being received.
    current: Option<(Envelope, Vec<u8>)>,
    delivered: Vec<(Envelope, Vec<u8>)>,
    aborted: usize,
    max_chunk: usize,
    closed: bool,
    /// Handshakes requested (the stand-in "succeeds" each at once).
    tls_starts: usize,
}

impl Harness {
    fn new(max_size: u64) -> Self {
        Self::with_tls(max_size, false)
    }

    fn with_tls(max_size: u64, starttls: bool) -> Self {
        let session = Session::new(LmtpConfig {
            hostname: "mx.test".into(),
            max_message_size: max_size,
            max_recipients: 3,
            max_bad_commands: 3,
            max_line_length: 998,
            recipient_delimiter: Some('+'),
            starttls,
            secure: false,
        });
        Self { session: Some(session), ..Default::default() }
    }

    fn run(&mut self, input: &[u8]) -> Vec<u8> {
        let s = self.session.as_mut().unwrap();
        s.feed(input);
        let mut out = Vec::new();
        loop {
            match s.poll() {
                Step::Write(b) => out.extend_from_slice(&b),
                Step::NeedInput => return out,
                Step::Close => {
                    self.closed = true;
                    return out;
                }
                Step::CheckRecipient { mailbox } => s.rcpt_done(if mailbox == "temp@example.com" {
                    RcptCheck::TempFail
                } else if mailbox == "full@example.com" {
                    RcptCheck::NoSpace
                } else if mailbox == "atquota@example.com" {
                    RcptCheck::OverQuota
                } else if KNOWN.contains(&mailbox.as_str()) {
                    RcptCheck::Exists
                } else {
                    RcptCheck::Unknown
                }),
                Step::DataStart(envelope) => self.current = Some((envelope, Vec::new())),
                Step::DataChunk(chunk) => {
                    self.max_chunk = self.max_chunk.max(chunk.len());
                    self.current.as_mut().unwrap().1.extend_from_slice(&chunk);
                }
                Step::DataEnd => {
                    let (envelope, content) = self.current.take().unwrap();
                    let results = envelope
                        .recipients
                        .iter()
                        .map(|r| match r.mailbox.as_str() {
                            "fail@example.com" => DeliveryResult::TempFail,
                            "carol@example.com" => DeliveryResult::OverQuota,
                            "dave@example.com" => DeliveryResult::NoSpace,
                            "erin@example.com" => DeliveryResult::Duplicate { id: "FIRST".into() },
                            _ => DeliveryResult::Delivered { id: "ID".into() },
                        })
                        .collect();
                    self.delivered.push((envelope, content));
                    s.data_done(results);
                }
                Step::DataAbort => {
                    self.current = None;
                    self.aborted += 1;
                }
                Step::StartTls => {
                    self.tls_starts += 1;
                    s.tls_started();
                }
            }
        }
    }

    fn text(&mut self, input: &str) -> String {
        String::from_utf8(self.run(input.as_bytes())).unwrap()
    }
}

const TRANSACTION: &str = "LHLO mx.test\r\nMAIL FROM:<sender@x.test> SIZE=100\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<Bob+lists@Example.com>\r\nDATA\r\nSubject: hi\r\n\r\n..dotted\r\nbody\r\n.\r\nQUIT\r\n";

const EXPECTED: &str = "220 mx.test LMTP popfleet ready\r\n\
250-mx.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE 100000\r\n\
250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n550 5.1.1 <nobody@example.com> User unknown\r\n250 2.1.5 Recipient OK\r\n\
354 Start mail input; end with <CRLF>.<CRLF>\r\n\
250 2.0.0 <alice@example.com> Delivered as ID\r\n250 2.0.0 <Bob+lists@Example.com> Delivered as ID\r\n\
221 2.0.0 Bye\r\n";

#[test]
fn pipelined_transaction_one_reply_per_recipient_in_order() {
    let mut h = Harness::new(100_000);
    let mut out = h.text("");
    out += &h.text(TRANSACTION);
    assert_eq!(out, EXPECTED);
    assert!(h.closed);
    let (envelope, content) = &h.delivered[0];
    assert_eq!(content, b"Subject: hi\r\n\r\n.dotted\r\nbody\r\n");
    assert_eq!(envelope.mail_from, "sender@x.test");
    let mailboxes: Vec<&str> = envelope.recipients.iter().map(|r| r.mailbox.as_str()).collect();
    assert_eq!(mailboxes, ["alice@example.com", "bob@example.com"]);
}

#[test]
fn any_chunking_gives_the_same_replies_and_content() {
    for size in 1..=TRANSACTION.len() {
        let mut h = Harness::new(100_000);
        let mut out = h.run(b"");
        for chunk in TRANSACTION.as_bytes().chunks(size) {
            out.extend(h.run(chunk));
        }
        assert_eq!(String::from_utf8(out).unwrap(), EXPECTED, "chunk size {size}");
        assert_eq!(h.delivered[0].1, b"Subject: hi\r\n\r\n.dotted\r\nbody\r\n");
    }
}

#[test]
fn bare_lf_is_refused_for_every_recipient_and_nothing_is_delivered() {
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n");
    let out = h.text("Subject: x\r\n\r\nsmuggled\n.\nMAIL FROM:<evil>\r\n.\r\n");
    let refusal = "554 5.6.0 Message contains bare CR or LF; lines must end in CRLF\r\n";
    assert_eq!(out, refusal.repeat(2));
    assert!(h.delivered.is_empty());
    assert_eq!(h.aborted, 1);
    assert_eq!(h.text("NOOP\r\n"), "250 2.0.0 OK\r\n", "session goes on");
}

#[test]
fn size_limits_at_mail_and_after_data() {
    let mut h = Harness::new(2048);
    h.text("LHLO mx\r\n");
    assert_eq!(h.text("MAIL FROM:<a@b> SIZE=4096\r\n"), "552 5.3.4 Message size exceeds the limit of 2048 octets\r\n");
    h.text("MAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    let big = format!("{}\r\n.\r\n", "x".repeat(3000));
    assert_eq!(h.text(&big), "552 5.3.4 Message exceeds the limit of 2048 octets\r\n");
    assert!(h.delivered.is_empty());
}

#[test]
fn large_message_comes_out_in_bounded_chunks() {
    let mut h = Harness::new(u64::MAX);
    h.text("LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    let line = "0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let body = line.repeat(200_000);
    for piece in body.as_bytes().chunks(100_000) {
        h.run(piece);
    }
    assert_eq!(h.text(".\r\n"), "250 2.0.0 <alice@example.com> Delivered as ID\r\n");
    assert_eq!(h.delivered[0].1.len(), body.len());
    assert!(h.max_chunk <= CHUNK_SIZE && h.max_chunk > 0);
}

#[test]
fn sequence_errors_and_bad_syntax() {
    let mut h = Harness::new(100_000);
    h.text("");
    assert_eq!(h.text("MAIL FROM:<a@b>\r\n"), "503 5.5.1 Send LHLO first\r\n");
    h.text("LHLO mx\r\n");
    assert_eq!(h.text("RCPT TO:<alice@example.com>\r\n"), "503 5.5.1 MAIL first\r\n");
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(h.text("DATA\r\n"), "503 5.5.1 No valid recipients\r\n");
    assert_eq!(
        h.text("RCPT TO:<temp@example.com>\r\n"),
        "451 4.3.0 Temporary failure looking up recipient, try again later\r\n"
    );
    assert_eq!(h.text("RCPT TO:<not an address>\r\n"), "550 5.1.1 <not an address> User unknown\r\n");
    assert_eq!(h.text("EHLO x\r\n"), "500 5.5.1 This is an LMTP server: use LHLO\r\n");
    assert_eq!(h.text("RSET\r\n"), "250 2.0.0 OK\r\n");
    assert_eq!(h.text("RCPT TO:<alice@example.com>\r\n"), "503 5.5.1 MAIL first\r\n");
    // DATA without a valid recipient is not counted (see below): this is the third bad command.
    assert_eq!(h.text("BOGUS\r\n"), "500 5.5.2 Unknown command\r\n");
    assert_eq!(h.text("BOGUS\r\n"), "421 4.7.0 Too many errors, closing connection\r\n");
    assert!(h.closed);
}

#[test]
fn too_many_recipients_and_long_lines() {
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\nMAIL FROM:<a@b>\r\n");
    for _ in 0..3 {
        assert_eq!(h.text("RCPT TO:<alice@example.com>\r\n"), "250 2.1.5 Recipient OK\r\n");
    }
    assert_eq!(h.text("RCPT TO:<alice@example.com>\r\n"), "452 4.5.3 Too many recipients\r\n");
    assert_eq!(h.text(&format!("NOOP {}\r\n", "x".repeat(600))), "500 5.5.2 Line too long\r\n");
    assert_eq!(h.text("NOOP\r\n"), "250 2.0.0 OK\r\n");
}

#[test]
fn storage_failure_is_a_temporary_error_for_that_recipient_only() {
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<fail@example.com>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    assert_eq!(
        h.text("hi\r\n.\r\n"),
        "451 4.3.0 <fail@example.com> Temporary storage failure, try again later\r\n250 2.0.0 <alice@example.com> Delivered as ID\r\n"
    );
}

#[test]
fn a_retried_delivery_gets_250_with_the_id_of_its_first_copy() {
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<erin@example.com>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    assert_eq!(
        h.text("hi\r\n.\r\n"),
        "250 2.0.0 <erin@example.com> Already delivered as FIRST\r\n250 2.0.0 <alice@example.com> Delivered as ID\r\n"
    );
}

#[test]
fn two_transactions_in_one_session() {
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\n");
    for n in 0..2 {
        let out = h.text(&format!("MAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nmsg {n}\r\n.\r\n"));
        assert!(out.ends_with("250 2.0.0 <alice@example.com> Delivered as ID\r\n"), "{out}");
    }
    assert_eq!(h.delivered.len(), 2);
    assert_eq!(h.delivered[1].1, b"msg 1\r\n");
}

#[test]
fn starttls_is_offered_once_and_drops_pipelined_plaintext() {
    let mut h = Harness::with_tls(100_000, true);
    h.text("");
    let lhlo = h.text("LHLO a.test\r\n");
    assert!(lhlo.contains("250-STARTTLS\r\n"), "{lhlo}");
    // The injection: commands pipelined behind STARTTLS in the same packet.
    let out = h.text("STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<alice@example.com>\r\n");
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(h.tls_starts, 1);
    // After the handshake the session starts over: MAIL needs a new LHLO.
    assert_eq!(h.text("MAIL FROM:<a@x.test>\r\n"), "503 5.5.1 Send LHLO first\r\n");
    let lhlo = h.text("LHLO a.test\r\n");
    assert!(!lhlo.contains("STARTTLS"), "not offered again: {lhlo}");
    assert_eq!(h.text("STARTTLS\r\n"), "503 5.5.1 TLS is already active\r\n");
    assert!(h.delivered.is_empty());
}

#[test]
fn starttls_where_not_configured_is_refused() {
    let mut h = Harness::new(100_000);
    h.text("");
    assert!(!h.text("LHLO a.test\r\n").contains("STARTTLS"));
    assert_eq!(h.text("STARTTLS\r\n"), "502 5.5.1 STARTTLS is not offered here\r\n");
    assert_eq!(h.tls_starts, 0);
}

#[test]
fn store_too_full_is_452_per_recipient() {
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(h.text("RCPT TO:<full@example.com>\r\n"), "452 4.3.1 Insufficient system storage, try again later\r\n");
    assert_eq!(h.text("RCPT TO:<alice@example.com>\r\n"), "250 2.1.5 Recipient OK\r\n");
}

#[test]
fn pipelined_data_after_refused_recipients_is_not_a_bad_command() {
    // max_bad_commands is 3: four transactions whose only RCPT fails temporarily, each followed by
    // the DATA a pipelining MTA has already sent, must not get the connection closed.
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\n");
    for _ in 0..4 {
        let out = h.text("MAIL FROM:<a@b>\r\nRCPT TO:<temp@example.com>\r\nDATA\r\nRSET\r\n");
        assert_eq!(
            out,
            "250 2.1.0 Sender OK\r\n451 4.3.0 Temporary failure looking up recipient, try again later\r\n\
             503 5.5.1 No valid recipients\r\n250 2.0.0 OK\r\n"
        );
    }
    assert!(!h.closed);
    assert_eq!(h.text("MAIL FROM:<a@b>\r\n"), "250 2.1.0 Sender OK\r\n");
}

#[test]
fn quota_and_room_answers_per_recipient() {
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(h.text("RCPT TO:<atquota@example.com>\r\n"), "552 5.2.2 <atquota@example.com> Mailbox full\r\n");
    h.text("RCPT TO:<alice@example.com>\r\nRCPT TO:<carol@example.com>\r\nRCPT TO:<dave@example.com>\r\nDATA\r\n");
    assert_eq!(
        h.text("hi\r\n.\r\n"),
        "250 2.0.0 <alice@example.com> Delivered as ID\r\n552 5.2.2 <carol@example.com> Mailbox full\r\n\
         452 4.3.1 <dave@example.com> Insufficient system storage, try again later\r\n"
    );
}

#[test]
fn a_line_over_the_limit_refuses_the_message_for_every_recipient() {
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n");
    let reply = h.text(&format!("Subject: {}\r\n\r\nbody\r\n.\r\n", "x".repeat(990)));
    assert_eq!(reply, "554 5.6.0 Message has a line longer than 998 octets\r\n".repeat(2));
    assert_eq!((h.aborted, h.delivered.len()), (1, 0));
    // 998 octets exactly is fine (RFC 5322 2.1.1), and the session goes on.
    h.text("MAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    let reply = h.text(&format!("{}\r\n.\r\n", "y".repeat(998)));
    assert_eq!(reply, "250 2.0.0 <alice@example.com> Delivered as ID\r\n");
}

#[test]
fn non_ascii_recipients_are_refused_and_the_delimiter_is_stripped() {
    let mut h = Harness::new(100_000);
    h.text("LHLO mx\r\nMAIL FROM:<a@b>\r\n");
    // Cyrillic о: a look-alike of bob@example.com.
    assert_eq!(
        h.text("RCPT TO:<b\u{43e}b@example.com>\r\n"),
        "553 5.1.3 Address must be ASCII (SMTPUTF8 is not offered)\r\n"
    );
    assert_eq!(h.text("RCPT TO:<bob+news@example.com>\r\n"), "250 2.1.5 Recipient OK\r\n");
}
