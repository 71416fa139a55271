//! The parser's bad-input table, asserted byte for byte through the session: the reply each line
//! gets in each state, and whether it counts towards the bad-command limit (5 in the harness).

use super::{Harness, USER};

#[derive(Debug, Clone, Copy)]
enum At {
    /// AUTHORIZATION, cleartext logins allowed, no TLS on the listener.
    Login,
    /// AUTHORIZATION on a plaintext connection: USER/PASS and PLAIN refused.
    Insecure,
    Transaction,
}

/// Whether a `-ERR` counts as a bad command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Counted,
    NotCounted,
}
use At::{Insecure, Login, Transaction};
use Bad::{Counted, NotCounted};

const UNKNOWN: &str = "-ERR Unknown command.\r\n";
const COUNT: &str = "-ERR Wrong number of arguments.\r\n";
const NUMBER: &str = "-ERR Invalid message number.\r\n";
const LINE_COUNT: &str = "-ERR Invalid line count.\r\n";
const UTF8: &str = "-ERR Command is not valid UTF-8.\r\n";
const TOO_LONG: &str = "-ERR Line too long.\r\n";
const LOGGED_IN: &str = "-ERR Already logged in.\r\n";
const REFUSED: &str = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
const CAPA_LOGIN: &str = concat!(
    "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nUSER\r\n",
    "SASL SCRAM-SHA-256 PLAIN\r\nIMPLEMENTATION popfleet ",
    env!("CARGO_PKG_VERSION"),
    "\r\n.\r\n"
);

const ROWS: &[(At, &[u8], &str, Bad)] = &[
    // Keyword: empty, blank, unknown, wrong separator, bytes that are no keyword.
    (Login, b"", UNKNOWN, Counted),
    (Login, b"   ", UNKNOWN, Counted),
    (Login, b" NOOP", UNKNOWN, Counted),
    (Login, b"BOGUS", UNKNOWN, Counted),
    (Login, b"USER\tbob", UNKNOWN, Counted),
    (Login, b"CAPA\0", UNKNOWN, Counted),
    (Login, b"\xff", UNKNOWN, Counted),
    (Transaction, b"", UNKNOWN, Counted),
    (Transaction, b"   ", UNKNOWN, Counted),
    (Transaction, b"STAT\t", UNKNOWN, Counted),
    (Transaction, b"RETR\t1", UNKNOWN, Counted),
    (Transaction, b"\0", UNKNOWN, Counted),
    (Transaction, b"XTND XMIT", UNKNOWN, Counted),
    // Arguments that are not UTF-8, on known and unknown keywords alike.
    (Login, b"NOOP \xff", UTF8, Counted),
    (Login, b"USER b\xc3", UTF8, Counted),
    (Transaction, b"USER \xff", UTF8, Counted),
    (Transaction, b"RETR \xc0\xaf", UTF8, Counted),
    // TRANSACTION commands before login are unknown, whatever their arguments.
    (Login, b"STAT", UNKNOWN, Counted),
    (Login, b"noop", UNKNOWN, Counted),
    (Login, b"RETR 1", UNKNOWN, Counted),
    (Login, b"RETR -1", UNKNOWN, Counted),
    (Login, b"TOP 1", UNKNOWN, Counted),
    // Before login CAPA and QUIT ignore arguments.
    (Login, b"capa", CAPA_LOGIN, NotCounted),
    (Login, b"CAPA extra words", CAPA_LOGIN, NotCounted),
    (Login, b"QUIT now", "+OK Logging out.\r\n", NotCounted),
    // USER, PASS, APOP, STLS, AUTH.
    (Login, b"USER", "-ERR USER needs a name.\r\n", Counted),
    (Login, b"USER   ", "-ERR USER needs a name.\r\n", Counted),
    (Login, b"USER \t", "-ERR USER needs a name.\r\n", Counted),
    (Login, b"user bob", "+OK\r\n", NotCounted),
    (Login, b"USER  bob ", "+OK\r\n", NotCounted),
    (Login, b"PASS", "-ERR No username given.\r\n", Counted),
    (Login, b"pass x y", "-ERR No username given.\r\n", Counted),
    (Login, b"APOP", "-ERR APOP is not supported; use USER/PASS or AUTH.\r\n", NotCounted),
    (Login, b"STLS x", "-ERR STLS takes no arguments.\r\n", Counted),
    (Login, b"STLS  ", "-ERR STLS takes no arguments.\r\n", Counted),
    (Login, b"STLS", "-ERR TLS is not configured on this listener.\r\n", Counted),
    (Login, b"stls ", "-ERR TLS is not configured on this listener.\r\n", Counted),
    (Login, b"AUTH", "+OK\r\nSCRAM-SHA-256\r\nPLAIN\r\n.\r\n", NotCounted),
    (Login, b"AUTH   ", "+OK\r\nSCRAM-SHA-256\r\nPLAIN\r\n.\r\n", NotCounted),
    (Login, b"AUTH BOGUS", "-ERR Unsupported authentication mechanism.\r\n", Counted),
    (Login, b"AUTH XOAUTH2", "-ERR Unsupported authentication mechanism.\r\n", Counted),
    (Login, b"auth  plain ", "+ \r\n", NotCounted),
    (Login, b"AUTH PLAIN !!!", "-ERR Invalid base64 data.\r\n", Counted),
    (Insecure, b"USER bob", REFUSED, NotCounted),
    (Insecure, b"USER", REFUSED, NotCounted),
    (Insecure, b"PASS x", REFUSED, NotCounted),
    (Insecure, b"AUTH PLAIN", REFUSED, NotCounted),
    (Insecure, b"AUTH scram-sha-256", "+ \r\n", NotCounted),
    // Login commands after login, whatever their arguments (AUTH's length too).
    (Transaction, b"USER bob", LOGGED_IN, Counted),
    (Transaction, b"USER", LOGGED_IN, Counted),
    (Transaction, b"pass", LOGGED_IN, Counted),
    (Transaction, b"STLS x", LOGGED_IN, Counted),
    (Transaction, b"APOP a b", LOGGED_IN, Counted),
    (Transaction, b"AUTH", LOGGED_IN, Counted),
    // Argument counts; runs of spaces separate, a trailing space is no argument.
    (Transaction, b"NOOP ", "+OK\r\n", NotCounted),
    (Transaction, b"nOoP   ", "+OK\r\n", NotCounted),
    (Transaction, b"NOOP x", COUNT, Counted),
    (Transaction, b"NOOP \0", COUNT, Counted),
    (Transaction, b"STAT 1", COUNT, Counted),
    (Transaction, b"RSET x", COUNT, Counted),
    (Transaction, b"CAPA x", COUNT, Counted),
    (Transaction, b"QUIT x", COUNT, Counted),
    (Transaction, b"RETR", COUNT, Counted),
    (Transaction, b"RETR ", COUNT, Counted),
    (Transaction, b"RETR 1 2", COUNT, Counted),
    (Transaction, b"DELE", COUNT, Counted),
    (Transaction, b"LIST 1 2", COUNT, Counted),
    (Transaction, b"UIDL 1 2", COUNT, Counted),
    (Transaction, b"TOP", COUNT, Counted),
    (Transaction, b"TOP 1", COUNT, Counted),
    (Transaction, b"TOP 1 1 1", COUNT, Counted),
    // Message numbers: positive decimal, digits only, at most ten of them.
    (Transaction, b"RETR 0", "-ERR There's no message 0.\r\n", NotCounted),
    (Transaction, b"RETR 00", "-ERR There's no message 00.\r\n", NotCounted),
    (Transaction, b"LIST 0", "-ERR There's no message 0.\r\n", NotCounted),
    (Transaction, b"DELE 0", "-ERR There's no message 0.\r\n", NotCounted),
    (Transaction, b"RETR 4", "-ERR There's no message 4.\r\n", NotCounted),
    (Transaction, b"retr  004 ", "-ERR There's no message 4.\r\n", NotCounted),
    (Transaction, b"UIDL 4", "-ERR There's no message 4.\r\n", NotCounted),
    (Transaction, b"DELE 4", "-ERR There's no message 4.\r\n", NotCounted),
    (Transaction, b"RETR 9999999999", "-ERR There's no message 9999999999.\r\n", NotCounted),
    (Transaction, b"RETR 99999999999999999999", NUMBER, Counted),
    (Transaction, b"RETR 18446744073709551616", NUMBER, Counted),
    (Transaction, b"RETR 00000000001", NUMBER, Counted),
    (Transaction, b"RETR -1", NUMBER, Counted),
    (Transaction, b"RETR +1", NUMBER, Counted),
    (Transaction, b"RETR 1x", NUMBER, Counted),
    (Transaction, b"RETR 0x1", NUMBER, Counted),
    (Transaction, b"RETR 1.0", NUMBER, Counted),
    (Transaction, b"RETR 1\t", NUMBER, Counted),
    (Transaction, b"RETR 1\0", NUMBER, Counted),
    (Transaction, "RETR \u{ff11}".as_bytes(), NUMBER, Counted),
    (Transaction, b"LIST x", NUMBER, Counted),
    (Transaction, b"UIDL -1", NUMBER, Counted),
    (Transaction, b"DELE one", NUMBER, Counted),
    // TOP: the line count is checked before the message number.
    (Transaction, b"TOP 1 x", LINE_COUNT, Counted),
    (Transaction, b"TOP 1 -1", LINE_COUNT, Counted),
    (Transaction, b"TOP x y", LINE_COUNT, Counted),
    (Transaction, b"TOP 0 x", LINE_COUNT, Counted),
    (Transaction, b"TOP 1 99999999999", LINE_COUNT, Counted),
    (Transaction, b"TOP x 1", NUMBER, Counted),
    (Transaction, b"TOP 0 1", "-ERR There's no message 0.\r\n", NotCounted),
    (Transaction, b"TOP 4 0", "-ERR There's no message 4.\r\n", NotCounted),
    (Transaction, b"QUIT ", "+OK Logging out.\r\n", NotCounted),
];

/// The rows, and lines around the length limit, which are easier made than written out.
fn table() -> Vec<(At, Vec<u8>, &'static str, Bad)> {
    let long = |prefix: &str, total: usize| [prefix.as_bytes(), &vec![b'a'; total - prefix.len()]].concat();
    let mut rows: Vec<_> = ROWS.iter().map(|&(at, line, reply, bad)| (at, line.to_vec(), reply, bad)).collect();
    rows.extend([
        (Login, long("USER ", 253), "+OK\r\n", NotCounted),
        (Login, long("USER ", 254), TOO_LONG, Counted),
        (Login, long("BOGUS ", 300), TOO_LONG, Counted),
        (Login, [b"NOOP \xff".as_slice(), &[b'a'; 300]].concat(), TOO_LONG, Counted),
        (Login, long("AUTH PLAIN ", 300), "-ERR Invalid base64 data.\r\n", Counted),
        (Transaction, long("NOOP ", 254), TOO_LONG, Counted),
        (Transaction, [b"LIST".as_slice(), &[b' '; 260]].concat(), TOO_LONG, Counted),
        (Transaction, long("AUTH PLAIN ", 300), LOGGED_IN, Counted),
    ]);
    rows
}

fn harness(at: At) -> Harness {
    let mut h = match at {
        At::Login => Harness::new(true),
        At::Insecure => Harness::new(false),
        At::Transaction => return Harness::logged_in(),
    };
    h.run(b"");
    h
}

#[test]
fn bad_and_odd_lines_get_their_exact_reply() {
    let rows = table();
    assert!(rows.len() >= 100, "{} rows", rows.len());
    for (at, line, expected, bad) in rows {
        let input = [line.as_slice(), b"\r\n"].concat();
        let shown = String::from_utf8_lossy(&line).into_owned();
        let mut h = harness(at);
        let reply = String::from_utf8(h.run(&input)).unwrap();
        assert_eq!(reply, expected, "{at:?} {shown:?}");
        if !expected.starts_with("-ERR") {
            continue;
        }
        // The harness allows 5 bad commands: the 6th closes the session if this one counts.
        for _ in 0..4 {
            h.run(&input);
        }
        let sixth = String::from_utf8(h.run(&input)).unwrap();
        let expected = if bad == Bad::Counted { "-ERR Too many bad commands.\r\n" } else { expected };
        assert_eq!(sixth, expected, "{at:?} {shown:?} repeated");
    }
}

#[test]
fn a_password_keeps_its_spaces_and_the_user_name_is_trimmed() {
    let mut h = harness(At::Login);
    assert_eq!(h.cmd(&format!("USER  {USER}  ")), "+OK\r\n");
    assert_eq!(h.cmd(" PASS pass word"), UNKNOWN, "the keyword starts the line");
    assert_eq!(
        h.cmd("PASS pass word "),
        "-ERR [AUTH] Authentication failed.\r\n",
        "the trailing space is the password's"
    );
    h.cmd(&format!("user {USER}"));
    assert_eq!(h.cmd("PASS pass word"), "+OK Logged in.\r\n");
}
