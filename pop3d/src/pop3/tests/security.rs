//! Engine tests for STLS, state-dependent CAPA, SCRAM-SHA-256, OAUTHBEARER/XOAUTH2 and the
//! failed-login cap, byte by byte where it matters.

use super::*;
use crate::auth::sasl::scram::client;

fn config(cleartext: bool, tls: bool, secure: bool, oauth: bool) -> SessionConfig {
    SessionConfig {
        cleartext_auth_allowed: cleartext,
        tls_available: tls,
        secure,
        oauth,
        max_bad_commands: 5,
        ..SessionConfig::default()
    }
}

fn harness(config: SessionConfig) -> Harness {
    let mut h = Harness::configured(config, mailbox());
    assert_eq!(h.run(b""), b"+OK popfleet ready.\r\n");
    h
}

fn caps(h: &mut Harness) -> Vec<String> {
    let text = h.cmd("CAPA");
    assert!(text.starts_with("+OK") && text.ends_with("\r\n.\r\n"), "{text}");
    text.lines().skip(1).filter(|l| *l != ".").map(str::to_owned).collect()
}

const REFUSED: &str = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";

#[test]
fn stls_discards_pipelined_plaintext_in_one_write() {
    // Remote (not loopback) client on the plain listener of a TLS-capable server.
    let mut h = harness(config(false, true, false, false));
    let before = caps(&mut h);
    assert!(before.contains(&"STLS".to_owned()), "{before:?}");
    assert!(!before.contains(&"USER".to_owned()));
    // The injection: CAPA and a login pipelined behind STLS in the same packet.
    let out = h.run(format!("STLS\r\nCAPA\r\nUSER {USER}\r\nPASS {PASSWORD}\r\n").as_bytes());
    assert_eq!(String::from_utf8(out).unwrap(), "+OK Begin TLS negotiation now.\r\n");
    assert_eq!(h.tls_starts, 1);
    assert!(!h.session.is_authenticated());
    // Over TLS: no STLS, and cleartext mechanisms are now allowed.
    let after = caps(&mut h);
    assert!(!after.contains(&"STLS".to_owned()), "{after:?}");
    assert!(after.contains(&"USER".to_owned()));
    assert!(after.contains(&"SASL SCRAM-SHA-256 PLAIN".to_owned()), "{after:?}");
    assert_eq!(h.cmd("STLS"), "-ERR TLS is already active.\r\n");
    assert_eq!(h.cmd(&format!("USER {USER}")), "+OK\r\n");
    assert_eq!(h.cmd(&format!("PASS {PASSWORD}")), "+OK Logged in.\r\n");
}

#[test]
fn stls_drops_whatever_shares_its_read_and_forgets_user() {
    let script = b"STLS\r\nCAPA\r\n";
    // Every read that completes the STLS line, with any part of what follows in the same read.
    for end in 6..=script.len() {
        let mut h = harness(config(true, true, false, false));
        assert_eq!(h.cmd(&format!("USER {USER}")), "+OK\r\n");
        let mut out = Vec::new();
        for b in &script[..5] {
            out.extend(h.run(&[*b]));
        }
        out.extend(h.run(&script[5..end]));
        assert_eq!(out, b"+OK Begin TLS negotiation now.\r\n", "read ending at {end}");
        assert_eq!(h.tls_starts, 1);
        // A partial line from before the handshake does not glue onto the first line after it.
        assert!(h.cmd("CAPA").starts_with("+OK Capability list follows\r\n"));
        assert_eq!(
            h.cmd(&format!("PASS {PASSWORD}")),
            "-ERR No username given.\r\n",
            "USER from before TLS is forgotten"
        );
    }
}

#[test]
fn stls_refused_where_it_cannot_work() {
    let mut h = harness(config(true, false, false, false));
    assert!(!caps(&mut h).contains(&"STLS".to_owned()));
    assert_eq!(h.cmd("STLS"), "-ERR TLS is not configured on this listener.\r\n");
    let mut implicit = harness(config(false, true, true, false));
    let c = caps(&mut implicit);
    assert!(!c.contains(&"STLS".to_owned()) && c.contains(&"USER".to_owned()), "{c:?}");
    assert_eq!(implicit.cmd("STLS"), "-ERR TLS is already active.\r\n");
    assert_eq!(implicit.cmd("STLS now"), "-ERR STLS takes no arguments.\r\n");
    let mut h = Harness::logged_in();
    assert_eq!(h.cmd("STLS"), "-ERR Already logged in.\r\n");
    assert_eq!(h.tls_starts, 0);
}

#[test]
fn oauth_is_offered_only_when_configured_and_secure() {
    let mut h = harness(config(false, true, true, true));
    assert!(caps(&mut h).contains(&"SASL SCRAM-SHA-256 PLAIN OAUTHBEARER XOAUTH2".to_owned()));
    let mut plain = harness(config(false, true, false, true));
    assert_eq!(plain.cmd("AUTH OAUTHBEARER"), REFUSED);
    let mut off = harness(config(true, false, false, false));
    assert_eq!(off.cmd("AUTH XOAUTH2"), "-ERR Unsupported authentication mechanism.\r\n");
}

fn b64(s: &str) -> String {
    crate::auth::sasl::encode_base64(s.as_bytes())
}

fn unb64(s: &str) -> String {
    String::from_utf8(crate::auth::sasl::decode_base64(s.as_bytes()).unwrap()).unwrap()
}

/// Runs SCRAM up to server-first and returns it.
fn scram_start(h: &mut Harness, user: &str, nonce: &str, initial: bool) -> String {
    let first = client::first(user, nonce);
    let reply = if initial {
        h.cmd(&format!("AUTH SCRAM-SHA-256 {}", b64(&first)))
    } else {
        assert_eq!(h.cmd("AUTH scram-sha-256"), "+ \r\n");
        h.cmd(&b64(&first))
    };
    let server_first = unb64(reply.strip_prefix("+ ").unwrap().trim_end());
    assert!(server_first.starts_with(&format!("r={nonce}{SERVER_NONCE},s=")), "{server_first}");
    server_first
}

#[test]
fn scram_success_with_and_without_initial_response_even_on_cleartext() {
    for initial in [true, false] {
        let mut h = harness(config(false, false, false, false));
        let server_first = scram_start(&mut h, USER, "cnonce", initial);
        let (fin, expected_final) = client::finish(USER, "cnonce", PASSWORD, &server_first);
        let reply = h.cmd(&b64(&fin));
        assert_eq!(reply, format!("+ {}\r\n", b64(&expected_final)), "server signature proves the server");
        assert_eq!(h.cmd(""), "+OK Logged in.\r\n");
        assert!(h.cmd("STAT").starts_with("+OK 3 "));
    }
}

#[test]
fn scram_failures() {
    let mut h = harness(config(false, false, false, false));
    let failed = "-ERR [AUTH] Authentication failed.\r\n";
    // wrong password
    let sf = scram_start(&mut h, USER, "n1", true);
    assert_eq!(h.cmd(&b64(&client::finish(USER, "n1", "wrong", &sf).0)), failed);
    // unknown user: same path, same answer (decoy salt)
    let sf = scram_start(&mut h, "nobody@example.com", "n2", true);
    assert_eq!(h.cmd(&b64(&client::finish("nobody@example.com", "n2", PASSWORD, &sf).0)), failed);
    assert!(!h.closed);
    // cancel at server-first, and storage trouble
    let mut h = harness(config(false, false, false, false));
    scram_start(&mut h, USER, "n3", true);
    assert_eq!(h.cmd("*"), "-ERR Authentication cancelled.\r\n");
    assert_eq!(
        h.cmd(&format!("AUTH SCRAM-SHA-256 {}", b64(&client::first("temp@example.com", "n4")))),
        "-ERR [SYS/TEMP] Temporary server failure, try again later.\r\n"
    );
    // an ack that is not empty
    let sf = scram_start(&mut h, USER, "n5", true);
    h.cmd(&b64(&client::finish(USER, "n5", PASSWORD, &sf).0));
    assert_eq!(h.cmd("Zm9v"), failed);
    // malformed client-first, channel binding, authzid for someone else
    let mut h = harness(config(false, false, false, false));
    assert_eq!(h.cmd(&format!("AUTH SCRAM-SHA-256 {}", b64("n,,r=x"))), failed);
    assert_eq!(h.cmd(&format!("AUTH SCRAM-SHA-256 {}", b64(&format!("p=tls-exporter,,n={USER},r=x")))), failed);
    assert!(!h.closed);
    let other = format!("n,a=bob@example.com,n={USER},r=x");
    assert_eq!(h.cmd(&format!("AUTH SCRAM-SHA-256 {}", b64(&other))), failed);
    assert!(h.closed, "three failed logins close the session");
    let mut h = harness(config(false, false, false, false));
    assert_eq!(h.cmd("AUTH SCRAM-SHA-256 !!!"), "-ERR Invalid base64 data.\r\n");
}

fn oauthbearer(user: Option<&str>, token: &str) -> String {
    let a = user.map(|u| format!("a={u}")).unwrap_or_default();
    b64(&format!("n,{a},\x01host=pop.example.com\x01port=995\x01auth=Bearer {token}\x01\x01"))
}

#[test]
fn oauthbearer_success_and_rfc7628_failure_challenge() {
    let mut h = harness(config(false, true, true, true));
    let reply = h.cmd(&format!("AUTH OAUTHBEARER {}", oauthbearer(Some(USER), "bad.token.sig")));
    let challenge = reply.strip_prefix("+ ").expect("error challenge, not -ERR yet");
    assert_eq!(unb64(challenge.trim_end()), r#"{"status":"invalid_token"}"#);
    assert_eq!(h.cmd("AQ=="), "-ERR [AUTH] Authentication failed.\r\n", "client answers %x01, then -ERR");
    // a good token for another user than the one named
    assert!(h.cmd(&format!("AUTH OAUTHBEARER {}", oauthbearer(Some("bob@example.com"), GOOD_TOKEN))).starts_with("+ "));
    assert_eq!(h.cmd("AQ=="), "-ERR [AUTH] Authentication failed.\r\n");
    // long tokens (>2 KB) fit the AUTH line cap
    let long = format!("{GOOD_TOKEN}{}", "A".repeat(3000));
    assert!(h.cmd(&format!("AUTH OAUTHBEARER {}", oauthbearer(None, &long))).starts_with("+ "));
    assert!(!h.closed);
    assert_eq!(h.cmd("AQ=="), "-ERR [AUTH] Authentication failed.\r\n");
    assert!(h.closed, "third failure closes");

    let mut h = harness(config(false, true, true, true));
    assert_eq!(h.cmd("AUTH OAUTHBEARER"), "+ \r\n");
    assert_eq!(h.cmd(&oauthbearer(None, GOOD_TOKEN)), "+OK Logged in.\r\n");
}

#[test]
fn xoauth2_success_and_failure() {
    let mut h = harness(config(false, true, true, true));
    let bad = b64(&format!("user={USER}\x01auth=Bearer nope\x01\x01"));
    let reply = h.cmd(&format!("AUTH XOAUTH2 {bad}"));
    assert!(unb64(reply.strip_prefix("+ ").unwrap().trim_end()).contains("\"401\""));
    assert_eq!(h.cmd(""), "-ERR [AUTH] Authentication failed.\r\n", "XOAUTH2 clients answer an empty line");
    let good = b64(&format!("user={USER}\x01auth=Bearer {GOOD_TOKEN}\x01\x01"));
    assert_eq!(h.cmd(&format!("AUTH XOAUTH2 {good}")), "+OK Logged in.\r\n");
    // a malformed message is refused at once, without a challenge
    let mut h = harness(config(false, true, true, true));
    assert_eq!(h.cmd(&format!("AUTH XOAUTH2 {}", b64("user=x"))), "-ERR [AUTH] Authentication failed.\r\n");
}

#[test]
fn the_third_failed_login_closes_the_session() {
    let mut h = harness(config(true, false, false, false));
    for _ in 0..2 {
        h.cmd(&format!("USER {USER}"));
        assert_eq!(h.cmd("PASS nope"), "-ERR [AUTH] Authentication failed.\r\n");
        assert!(!h.closed);
    }
    h.cmd(&format!("USER {USER}"));
    assert_eq!(h.cmd("PASS nope"), "-ERR [AUTH] Authentication failed.\r\n");
    assert!(h.closed);
}

#[test]
fn commands_are_counted_for_the_rate_limit() {
    let mut h = harness(config(true, false, false, false));
    h.run(b"NOOP\r\nNOOP\r\nCAPA\r\n");
    assert_eq!(h.session.commands(), 3);
    h.run(format!("NOOP {}\r\n", "x".repeat(400)).as_bytes());
    assert_eq!(h.session.commands(), 4);
}
