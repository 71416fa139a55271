//! The trace headers prepended at final delivery (RFC 5321 §4.4, RFC 9228 Delivered-To).

use chrono::{DateTime, Utc};

pub struct TraceInfo<'a> {
    pub return_path: &'a str,
    pub delivered_to: &'a str,
    pub lhlo: &'a str,
    pub client_ip: &'a str,
    pub hostname: &'a str,
    pub id: &'a str,
    pub now: DateTime<Utc>,
}

/// `Return-Path`, `Delivered-To` and `Received`, each ending in CRLF.
pub fn trace_headers(t: &TraceInfo<'_>) -> Vec<u8> {
    let date = t.now.format("%a, %d %b %Y %H:%M:%S +0000");
    format!(
        "Return-Path: <{}>\r\nDelivered-To: {}\r\nReceived: from {} ([{}])\r\n\tby {} (popfleet) with LMTP id {}\r\n\tfor <{}>; {}\r\n",
        clean(t.return_path),
        clean(t.delivered_to),
        clean(t.lhlo),
        clean(t.client_ip),
        clean(t.hostname),
        t.id,
        clean(t.delivered_to),
        date
    )
    .into_bytes()
}

/// Header text must not break the header: keep printable characters, drop the rest.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn headers_are_well_formed() {
        let h = trace_headers(&TraceInfo {
            return_path: "a@b.c",
            delivered_to: "bob@d.e",
            lhlo: "mx.test",
            client_ip: "127.0.0.1",
            hostname: "pop.test",
            id: "ID",
            now: Utc.with_ymd_and_hms(2026, 11, 28, 17, 0, 0).unwrap(),
        });
        let text = String::from_utf8(h).unwrap();
        assert!(text
            .starts_with("Return-Path: <a@b.c>\r\nDelivered-To: bob@d.e\r\nReceived: from mx.test ([127.0.0.1])\r\n"));
        assert!(text.ends_with("for <bob@d.e>; Sat, 28 Nov 2026 17:00:00 +0000\r\n"));
        assert!(!text.replace("\r\n", "").contains(['\r', '\n']));
    }
}
