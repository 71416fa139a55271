//! The parser's bad-input table, asserted byte for byte through the session: the reply each line
//! gets at each point of a transaction, and whether it counts towards the bad-command limit (3 in
//! the harness).

use super::Harness;

#[derive(Debug, Clone, Copy)]
enum At {
    /// Before LHLO.
    Start,
    /// After LHLO.
    Ready,
    /// After MAIL FROM.
    Mail,
    /// After MAIL FROM and as many recipients as the harness allows (3).
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Counted,
    NotCounted,
}
use At::{Full, Mail, Ready, Start};
use Bad::{Counted, NotCounted};

const UNKNOWN: &str = "500 5.5.2 Unknown command\r\n";
const UTF8: &str = "500 5.5.2 Command is not valid UTF-8\r\n";
const PATH: &str = "501 5.5.4 Syntax: MAIL FROM:<address> or RCPT TO:<address>\r\n";
const LHLO_SYNTAX: &str = "501 5.5.4 Syntax: LHLO hostname\r\n";
const LHLO_OK: &str = "250-mx.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE 100000\r\n";
const SENDER_OK: &str = "250 2.1.0 Sender OK\r\n";
const RECIPIENT_OK: &str = "250 2.1.5 Recipient OK\r\n";
const OK: &str = "250 2.0.0 OK\r\n";
const SIZE: &str = "501 5.5.4 Invalid SIZE parameter\r\n";
const MAIL_PARAMETER: &str = "555 5.5.4 Unsupported MAIL parameter\r\n";

const ROWS: &[(At, &[u8], &str, Bad)] = &[
    // Keyword: empty, blank, unknown, SMTP's greetings, wrong separator, bytes.
    (Start, b"", UNKNOWN, Counted),
    (Start, b"   ", UNKNOWN, Counted),
    (Start, b" NOOP", UNKNOWN, Counted),
    (Start, b"BOGUS", UNKNOWN, Counted),
    (Start, b"NOOP\t", UNKNOWN, Counted),
    (Start, b"NOOP\0", UNKNOWN, Counted),
    (Start, b"MAIL\tFROM:<a@b>", UNKNOWN, Counted),
    (Start, b"HELO mx", "500 5.5.1 This is an LMTP server: use LHLO\r\n", Counted),
    (Start, b"ehlo mx", "500 5.5.1 This is an LMTP server: use LHLO\r\n", Counted),
    (Start, b"NOOP \xff", UTF8, Counted),
    (Start, b"\xffNOOP", UTF8, Counted),
    (Ready, b"RCPT TO:<b\xc3@example.com>", UTF8, Counted),
    // LHLO: one name, trimmed.
    (Start, b"LHLO", LHLO_SYNTAX, Counted),
    (Start, b"LHLO ", LHLO_SYNTAX, Counted),
    (Start, b"LHLO \t ", LHLO_SYNTAX, Counted),
    (Start, b"LHLO two names", LHLO_SYNTAX, Counted),
    (Start, b"lhlo mx", LHLO_OK, NotCounted),
    (Start, b"LHLO  mx  ", LHLO_OK, NotCounted),
    // RSET, NOOP, QUIT and VRFY ignore arguments; DATA and STARTTLS take none.
    (Start, b"noop", OK, NotCounted),
    (Start, b"NOOP anything", OK, NotCounted),
    (Start, b"RSET junk", OK, NotCounted),
    (Start, b"VRFY", "252 2.5.2 Cannot VRFY user\r\n", NotCounted),
    (Start, b"vrfy alice", "252 2.5.2 Cannot VRFY user\r\n", NotCounted),
    (Start, b"QUIT now", "221 2.0.0 Bye\r\n", NotCounted),
    (Start, b"DATA x", "501 5.5.4 DATA takes no arguments\r\n", Counted),
    (Start, b"DATA", "503 5.5.1 MAIL and RCPT first\r\n", Counted),
    (Start, b"STARTTLS x", "501 5.5.4 STARTTLS takes no arguments\r\n", Counted),
    (Start, b"STARTTLS", "502 5.5.1 STARTTLS is not offered here\r\n", Counted),
    (Start, b"starttls \t", "502 5.5.1 STARTTLS is not offered here\r\n", Counted),
    // Sequence comes before syntax for MAIL and RCPT.
    (Start, b"MAIL FROM:<a@b>", "503 5.5.1 Send LHLO first\r\n", Counted),
    (Start, b"MAIL garbage", "503 5.5.1 Send LHLO first\r\n", Counted),
    (Start, b"RCPT garbage", "503 5.5.1 MAIL first\r\n", Counted),
    (Ready, b"RCPT TO:<alice@example.com>", "503 5.5.1 MAIL first\r\n", Counted),
    (Mail, b"MAIL FROM:<x@y>", "503 5.5.1 Sender already given\r\n", Counted),
    (Mail, b"MAIL garbage", "503 5.5.1 Sender already given\r\n", Counted),
    (Full, b"RCPT TO:<alice@example.com>", "452 4.5.3 Too many recipients\r\n", NotCounted),
    (Full, b"RCPT garbage", "452 4.5.3 Too many recipients\r\n", NotCounted),
    // MAIL FROM: the path.
    (Ready, b"MAIL FROM:<>", SENDER_OK, NotCounted),
    (Ready, b"mail from: <a@b>", SENDER_OK, NotCounted),
    (Ready, b"MAIL FROM:<@relay:a@b>", SENDER_OK, NotCounted),
    (Ready, b"MAIL", PATH, Counted),
    (Ready, b"MAIL FROM:", PATH, Counted),
    (Ready, b"MAIL FROM a@b", PATH, Counted),
    (Ready, b"MAIL FROM:a@b", PATH, Counted),
    (Ready, b"MAIL FROM:<a@b", PATH, Counted),
    (Ready, b"MAIL FROM:<<a@b>", PATH, Counted),
    (Ready, b"MAIL FROM:<a\tb@c>", PATH, Counted),
    (Ready, b"MAIL FROM:<a\0b@c>", PATH, Counted),
    (Ready, b"MAIL TO:<a@b>", PATH, Counted),
    (Ready, "MAIL FR\u{f6}M:<a@b>".as_bytes(), PATH, Counted),
    // MAIL FROM: ESMTP parameters.
    (Ready, b"MAIL FROM:<a@b> SIZE=100", SENDER_OK, NotCounted),
    (Ready, b"MAIL FROM:<a@b>  size=100  BODY=8BITMIME ", SENDER_OK, NotCounted),
    (Ready, b"MAIL FROM:<a@b> body=7bit", SENDER_OK, NotCounted),
    (
        Ready,
        b"MAIL FROM:<a@b> SIZE=100001",
        "552 5.3.4 Message size exceeds the limit of 100000 octets\r\n",
        NotCounted,
    ),
    (Ready, b"MAIL FROM:<a@b> SIZE=x", SIZE, Counted),
    (Ready, b"MAIL FROM:<a@b> SIZE=", SIZE, Counted),
    (Ready, b"MAIL FROM:<a@b> SIZE", SIZE, Counted),
    (Ready, b"MAIL FROM:<a@b> SIZE=-1", SIZE, Counted),
    (Ready, b"MAIL FROM:<a@b> SIZE=99999999999999999999", SIZE, Counted),
    (Ready, b"MAIL FROM:<a@b> BODY=BINARYMIME", "501 5.5.4 Unsupported BODY type\r\n", Counted),
    (Ready, b"MAIL FROM:<a@b> SMTPUTF8", MAIL_PARAMETER, Counted),
    (Ready, b"MAIL FROM:<a@b> RET=HDRS", MAIL_PARAMETER, Counted),
    (Ready, b"MAIL FROM:<a@b>\tSIZE=1", MAIL_PARAMETER, Counted),
    // RCPT TO.
    (Mail, b"RCPT TO:<alice@example.com>", RECIPIENT_OK, NotCounted),
    (Mail, b"rcpt to: <alice@example.com>  ", RECIPIENT_OK, NotCounted),
    (Mail, b"RCPT TO:<@relay:alice@example.com>", RECIPIENT_OK, NotCounted),
    (Mail, b"RCPT TO:<nobody@example.com>", "550 5.1.1 <nobody@example.com> User unknown\r\n", NotCounted),
    (Mail, b"RCPT TO:<>", "501 5.1.3 Bad recipient address syntax\r\n", Counted),
    (Mail, b"RCPT TO:<alice@example.com> NOTIFY=NEVER", "555 5.5.4 Unsupported RCPT parameter\r\n", Counted),
    (Mail, b"RCPT", PATH, Counted),
    (Mail, b"RCPT TO:alice@example.com", PATH, Counted),
    (Mail, b"RCPT TO:<alice@example.com", PATH, Counted),
    (Mail, b"RCPT TO:<a\0b@example.com>", PATH, Counted),
    (Mail, b"RCPT FROM:<alice@example.com>", PATH, Counted),
    // DATA without a recipient that was accepted.
    (Ready, b"DATA", "503 5.5.1 MAIL and RCPT first\r\n", Counted),
    (Mail, b"DATA", "503 5.5.1 No valid recipients\r\n", NotCounted),
    (Mail, b"data \t ", "503 5.5.1 No valid recipients\r\n", NotCounted),
    (Mail, b"RSET", OK, NotCounted),
];

/// The rows, and lines around the length limits, which are easier made than written out.
fn table() -> Vec<(At, Vec<u8>, &'static str, Bad)> {
    let mut rows: Vec<_> = ROWS.iter().map(|&(at, line, reply, bad)| (at, line.to_vec(), reply, bad)).collect();
    let address = |local: usize| format!("MAIL FROM:<{}@b.c>", "a".repeat(local)).into_bytes();
    let too_long = "501 5.1.3 Address too long (254 octets at most)\r\n";
    rows.extend([(Ready, address(250), SENDER_OK, NotCounted), (Ready, address(251), too_long, Counted)]);
    // RFC 5321 §4.5.3.1.4: 512 octets with the CRLF.
    let long = |total: usize| [b"NOOP ".as_slice(), &vec![b'x'; total - 5]].concat();
    rows.extend([(Start, long(510), OK, NotCounted), (Start, long(511), "500 5.5.2 Line too long\r\n", Counted)]);
    rows
}

fn harness(at: At) -> Harness {
    let mut h = Harness::new(100_000);
    h.run(b"");
    let setup = match at {
        At::Start => "",
        At::Ready => "LHLO mx\r\n",
        At::Mail => "LHLO mx\r\nMAIL FROM:<a@b>\r\n",
        At::Full => "LHLO mx\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\n",
    };
    h.run(setup.as_bytes());
    h
}

#[test]
fn bad_and_odd_lines_get_their_exact_reply() {
    let rows = table();
    assert!(rows.len() >= 80, "{} rows", rows.len());
    for (at, line, expected, bad) in rows {
        let input = [line.as_slice(), b"\r\n"].concat();
        let shown = String::from_utf8_lossy(&line).into_owned();
        let mut h = harness(at);
        let reply = String::from_utf8(h.run(&input)).unwrap();
        assert_eq!(reply, expected, "{at:?} {shown:?}");
        if !matches!(expected.as_bytes()[0], b'4' | b'5') {
            continue;
        }
        // The harness allows 3 bad commands: the 4th closes the session if this one counts.
        let mut h = harness(at);
        for _ in 0..3 {
            h.run(&input);
        }
        let fourth = String::from_utf8(h.run(&input)).unwrap();
        let expected = if bad == Bad::Counted { "421 4.7.0 Too many errors, closing connection\r\n" } else { expected };
        assert_eq!(fourth, expected, "{at:?} {shown:?} repeated");
    }
}
