use super::*;

fn done(buf: &[u8]) -> (ProxyHeader, usize) {
    match parse(buf) {
        Parse::Done { header, len } => (header, len),
        other => panic!("{other:?} for {buf:?}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn v1_tcp4_tcp6_unknown() {
    let (h, len) = done(b"PROXY TCP4 203.0.113.9 192.0.2.1 5555 110\r\nUSER x\r\n");
    assert_eq!(len, 43);
    assert_eq!(
        h,
        ProxyHeader::Proxied { source: addr("203.0.113.9:5555"), destination: addr("192.0.2.1:110"), tls: None }
    );
    let (h, _) = done(b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 995\r\n");
    assert!(matches!(h, ProxyHeader::Proxied { source, .. } if source == addr("[2001:db8::1]:65535")));
    assert_eq!(done(b"PROXY UNKNOWN\r\n"), (ProxyHeader::Local, 15));
    assert_eq!(done(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").0, ProxyHeader::Local);
}

#[test]
fn v1_needs_one_octet_at_a_time_and_never_more() {
    let full = b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n";
    assert_eq!(parse(b""), Parse::Need(1));
    assert_eq!(parse(b"P"), Parse::Need(15));
    assert!(matches!(parse(b"C"), Parse::Invalid(_)), "garbage is known from the first octet");
    assert_eq!(parse(b"PRO"), Parse::Need(15));
    for n in 15..full.len() {
        assert_eq!(parse(&full[..n]), Parse::Need(n + 1), "at {n}");
    }
    assert!(matches!(parse(full), Parse::Done { len, .. } if len == full.len()));
}

#[test]
fn v1_rejects_malformed() {
    for bad in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"USER alice@example.com\r\n",
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        assert!(matches!(parse(bad), Parse::Invalid(_)), "{:?}", String::from_utf8_lossy(bad));
    }
    let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
    assert!(matches!(parse(&long), Parse::Invalid(_)));
    // Over 107 octets is invalid even when the CRLF arrives in the same read.
    let padded = |n: usize| [b"PROXY UNKNOWN ".as_slice(), &vec![b'x'; n - 16], b"\r\n"].concat();
    assert!(matches!(parse(&padded(V1_MAX)), Parse::Done { len: V1_MAX, .. }));
    assert!(matches!(parse(&padded(V1_MAX + 1)), Parse::Invalid(_)));
}

#[test]
fn v2_round_trip_with_and_without_tls() {
    for (src, dst) in [("203.0.113.9:5555", "192.0.2.1:995"), ("[2001:db8::9]:1", "[2001:db8::1]:110")] {
        for tls in [None, Some("TLSv1.3")] {
            let mut wire = encode_v2(addr(src), addr(dst), tls);
            let header_len = wire.len();
            assert_eq!(parse(&wire[..10]), Parse::Need(16));
            assert_eq!(parse(&wire[..16]), Parse::Need(header_len));
            wire.extend_from_slice(b"\x16\x03\x01 client hello follows");
            let (h, len) = done(&wire);
            assert_eq!(len, header_len);
            let want_tls = tls.map(|v| ProxyTls { client_ssl: true, version: Some(v.to_owned()) });
            assert_eq!(h, ProxyHeader::Proxied { source: addr(src), destination: addr(dst), tls: want_tls });
        }
    }
}

fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn v2_local_unspec_and_unix_use_the_socket_address() {
    assert_eq!(done(&v2(0, 0x00, b"")).0, ProxyHeader::Local);
    assert_eq!(done(&v2(0, 0x11, &[0; 12])).0, ProxyHeader::Local, "LOCAL with addresses");
    assert_eq!(done(&v2(1, 0x00, b"")).0, ProxyHeader::Local);
    assert_eq!(done(&v2(1, 0x31, &[0; 216])).0, ProxyHeader::Local);
}

#[test]
fn v2_skips_other_tlvs_and_reads_the_ssl_flag() {
    let mut payload = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2];
    payload.extend_from_slice(&[0x01, 0, 2, b'h', b'2']); // ALPN
    payload.extend_from_slice(&[0x20, 0, 5, 0, 0, 0, 0, 0]); // SSL, client flag clear
    payload.extend_from_slice(&[0xEA, 0, 3, 1, 2, 3]); // AWS VPC endpoint id
    let (h, _) = done(&v2(1, 0x11, &payload));
    assert!(matches!(h, ProxyHeader::Proxied { tls: Some(ProxyTls { client_ssl: false, version: None }), .. }));
}

#[test]
fn v2_rejects_malformed() {
    let ok_addr = [10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2];
    let mut bad_version = v2(1, 0x11, &ok_addr);
    bad_version[12] = 0x11;
    let cases = [
        bad_version,
        v2(2, 0x11, &ok_addr),                                      // unknown command
        v2(1, 0x41, &ok_addr),                                      // unknown family
        v2(1, 0x12, &ok_addr),                                      // DGRAM
        v2(1, 0x11, &ok_addr[..8]),                                 // truncated addresses
        v2(1, 0x11, &[&ok_addr[..], &[0x01, 0, 9, 1]].concat()),    // TLV past the end
        v2(1, 0x11, &[&ok_addr[..], &[0x01, 0]].concat()),          // TLV header truncated
        v2(1, 0x11, &[&ok_addr[..], &[0x20, 0, 2, 1, 0]].concat()), // SSL TLV too short
        v2(1, 0x11, &[&ok_addr[..], &[0x20, 0, 7, 1, 0, 0, 0, 0, 0x21, 0]].concat()),
    ];
    for (i, case) in cases.iter().enumerate() {
        assert!(matches!(parse(case), Parse::Invalid(_)), "case {i}: {:?}", parse(case));
    }
    let mut huge = V2_SIGNATURE.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    assert!(matches!(parse(&huge), Parse::Invalid(_)), "payload over the cap is refused before reading it");
}

proptest::proptest! {
    /// Whatever the input: no panic, `Need` always asks for more than it has (so a reader makes
    /// progress), never more than the largest header, and `Done` never claims more than it has.
    #[test]
    fn any_input_is_answered_sanely(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        match parse(&data) {
            Parse::Need(n) => {
                proptest::prop_assert!(n > data.len());
                proptest::prop_assert!(n <= 16 + V2_MAX_PAYLOAD);
            }
            Parse::Done { len, .. } => proptest::prop_assert!(len <= data.len()),
            Parse::Invalid(_) => {}
        }
    }
}
