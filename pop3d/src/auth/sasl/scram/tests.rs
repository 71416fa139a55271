use super::*;

const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

/// RFC 7677 §3's example exchange, byte for byte.
#[test]
fn rfc7677_test_vector() {
    let salt = decode_base64(b"W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let keys = ScramKeys::derive("pencil", &salt, 4096);
    let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
    assert_eq!((first.user.as_str(), first.authzid.as_deref()), ("user", None));
    let server = ScramServer::new(first, keys, SERVER_NONCE);
    assert_eq!(
        server.server_first(),
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let fin =
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert_eq!(server.verify_client_final(fin).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

fn server(password: &str, client_first: &str) -> ScramServer {
    let keys = ScramKeys::derive(password, b"salt-salt-salt!!", 4096);
    ScramServer::new(parse_client_first(client_first.as_bytes()).unwrap(), keys, "SRV")
}

#[test]
fn wrong_password_nonce_binding_or_proof_is_refused() {
    let s = server("right", &client::first("alice", "abc"));
    let (fin, _) = client::finish("alice", "abc", "wrong", s.server_first());
    assert_eq!(s.verify_client_final(fin.as_bytes()), Err(ScramError::Proof));
    let (fin, expected) = client::finish("alice", "abc", "right", s.server_first());
    assert_eq!(s.verify_client_final(fin.as_bytes()).unwrap(), expected);

    let tampered_nonce = fin.replace("r=abcSRV", "r=abcSRX");
    assert_eq!(s.verify_client_final(tampered_nonce.as_bytes()), Err(ScramError::Nonce));
    let tampered_binding = fin.replace("c=biws", "c=eSws"); // "y,,"
    assert_eq!(s.verify_client_final(tampered_binding.as_bytes()), Err(ScramError::ChannelBinding));
    for bad in ["", "c=biws", "c=biws,r=abcSRV,p=!!!", "c=biws,r=abcSRV,p=AAAA", "r=abcSRV,p=AAAA"] {
        assert!(s.verify_client_final(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn client_first_parsing() {
    let f = parse_client_first(b"y,a=bob=2Cx=3D,n=a=3Db=2Cc,r=xyz,ext=1").unwrap();
    assert_eq!((f.user.as_str(), f.authzid.as_deref()), ("a=b,c", Some("bob,x=")));
    assert_eq!(parse_client_first(b"p=tls-exporter,,n=a,r=x").unwrap_err(), ScramError::ChannelBinding);
    for bad in [
        &b""[..],
        b"n,,",
        b"n,,n=a",
        b"n,,r=x,n=a",
        b"n,,m=ext,n=a,r=x",
        b"x,,n=a,r=x",
        b"n,b=z,n=a,r=x",
        b"n,,n=,r=x",
        b"n,,n=a=2,r=x",
        b"n,,n=a,r=",
        b"n,,n=a,r=x y",
        b"n,,n=\xff,r=x",
    ] {
        assert!(parse_client_first(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn stored_form_round_trips_and_rejects_garbage() {
    let keys = ScramKeys::derive("pw", b"0123456789abcdef", 4096);
    let text = keys.encode();
    assert!(text.starts_with("SCRAM-SHA-256$4096:"));
    assert_eq!(ScramKeys::parse(&text), Some(keys));
    for bad in ["", "SCRAM-SHA-256$0:AA==$AA==:AA==", "SCRAM-SHA-1$4096:AA==$x:y", "SCRAM-SHA-256$4096:AA==$AA==:AA=="]
    {
        assert_eq!(ScramKeys::parse(bad), None, "{bad}");
    }
}

#[test]
fn decoys_are_stable_per_user_and_differ_between_users() {
    let secret = [7u8; 32];
    assert_eq!(ScramKeys::decoy(&secret, "a@x", 4096), ScramKeys::decoy(&secret, "a@x", 4096));
    assert_ne!(ScramKeys::decoy(&secret, "a@x", 4096).salt, ScramKeys::decoy(&secret, "b@x", 4096).salt);
    assert_ne!(ScramKeys::decoy(&[8u8; 32], "a@x", 4096).salt, ScramKeys::decoy(&secret, "a@x", 4096).salt);
}

#[test]
fn saslprep_applies_to_passwords() {
    // RFC 4013: U+00AD (soft hyphen) maps to nothing, U+00A0 to a space.
    let a = ScramKeys::derive("I\u{00AD}X", b"s", 4096);
    let b = ScramKeys::derive("IX", b"s", 4096);
    assert_eq!(a, b);
}
