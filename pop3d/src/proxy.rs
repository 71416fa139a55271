//! The HAProxy PROXY protocol header, versions 1 (text) and 2 (binary), parsed without I/O.
//!
//! A load balancer sends it before anything else, so the server learns the real client address
//! and, with the v2 SSL TLV, whether TLS already ended at the proxy. It is accepted only from
//! trusted networks (see `server::front`). The parser is fed the bytes read so far and says how
//! many it needs in total, so the caller never reads past the header: with implicit TLS the
//! ClientHello follows it directly and must stay in the socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// v2 signature (12 octets).
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (spec §2.1).
pub const V1_MAX: usize = 107;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`).
const MIN_HEADER: usize = 15;
/// Largest v2 payload accepted (addresses + TLVs); real proxies send a few hundred octets.
pub const V2_MAX_PAYLOAD: usize = 4096;

const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
const PP2_CLIENT_SSL: u8 = 0x01;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyHeader {
    /// v2 LOCAL, v1 UNKNOWN, or an address family without IPs: the proxy speaks for itself
    /// (health checks); the socket addresses apply.
    Local,
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
        /// From the v2 SSL TLV.
        tls: Option<ProxyTls>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTls {
    /// The client connected to the proxy over TLS (PP2_CLIENT_SSL).
    pub client_ssl: bool,
    /// The TLS version the proxy negotiated, e.g. `TLSv1.3`.
    pub version: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// Read until the buffer holds this many octets in total, then parse again.
    Need(usize),
    /// A complete header of `len` octets.
    Done {
        header: ProxyHeader,
        len: usize,
    },
    Invalid(&'static str),
}

/// Parses a header from the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    if buf.is_empty() {
        // One octet tells the version apart, or shows garbage without waiting for more.
        return Parse::Need(1);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if buf.len() < 16 {
            return Parse::Need(16);
        }
        return parse_v2(buf);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Parse::Invalid("not a PROXY protocol header");
    }
    if buf.len() < MIN_HEADER {
        return Parse::Need(MIN_HEADER);
    }
    match buf.iter().position(|&b| b == b'\n') {
        // The limit holds whether or not the line end is already in the buffer, so a header
        // parses the same however it arrives (found by the proxy_header fuzz target).
        Some(lf) if lf >= V1_MAX => Parse::Invalid("v1 header longer than 107 octets"),
        Some(lf) => parse_v1(&buf[..=lf]),
        None if buf.len() >= V1_MAX => Parse::Invalid("v1 header longer than 107 octets"),
        // One octet at a time: a v1 header has no length field, and reading past it would eat
        // what the client sends next.
        None => Parse::Need(buf.len() + 1),
    }
}

fn parse_v1(line: &[u8]) -> Parse {
    let len = line.len();
    let Some(text) = line.strip_suffix(b"\r\n") else { return Parse::Invalid("v1 header must end with CRLF") };
    let Ok(text) = std::str::from_utf8(text) else { return Parse::Invalid("v1 header is not ASCII") };
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parse::Done { header: ProxyHeader::Local, len },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v6 = *family == "TCP6";
            let (Some(src), Some(dst)) = (v1_ip(src, v6), v1_ip(dst, v6)) else {
                return Parse::Invalid("v1 address does not match its family");
            };
            let (Some(sport), Some(dport)) = (v1_port(sport), v1_port(dport)) else {
                return Parse::Invalid("v1 port is not a number 0-65535");
            };
            let header = ProxyHeader::Proxied {
                source: SocketAddr::new(src, sport),
                destination: SocketAddr::new(dst, dport),
                tls: None,
            };
            Parse::Done { header, len }
        }
        _ => Parse::Invalid("malformed v1 header"),
    }
}

fn v1_ip(s: &str, v6: bool) -> Option<IpAddr> {
    if v6 {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

fn v1_port(s: &str) -> Option<u16> {
    // Decimal without sign or leading zeros, as the spec writes it.
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Parse {
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Parse::Invalid("unsupported v2 version");
    }
    let payload_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if payload_len > V2_MAX_PAYLOAD {
        return Parse::Invalid("v2 header too long");
    }
    let len = 16 + payload_len;
    if buf.len() < len {
        return Parse::Need(len);
    }
    let payload = &buf[16..len];
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    let addresses = match family {
        0x0 => 0,
        0x1 => 12,
        0x2 => 36,
        0x3 => 216,
        _ => return Parse::Invalid("unknown v2 address family"),
    };
    if payload.len() < addresses {
        return Parse::Invalid("v2 address block truncated");
    }
    let tlvs = match parse_tlvs(&payload[addresses..]) {
        Ok(t) => t,
        Err(e) => return Parse::Invalid(e),
    };
    match command {
        0x0 => return Parse::Done { header: ProxyHeader::Local, len },
        0x1 => {}
        _ => return Parse::Invalid("unknown v2 command"),
    }
    // PROXY over UNSPEC or UNIX carries no IP: treat like LOCAL.
    if family == 0x0 || family == 0x3 {
        return Parse::Done { header: ProxyHeader::Local, len };
    }
    if transport != 0x1 {
        return Parse::Invalid("v2 transport is not STREAM");
    }
    let (source, destination) = if family == 0x1 {
        let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(payload[o], payload[o + 1], payload[o + 2], payload[o + 3]));
        let port = |o: usize| u16::from_be_bytes([payload[o], payload[o + 1]]);
        (SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))
    } else {
        let ip = |o: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&payload[o..o + 16]);
            IpAddr::V6(Ipv6Addr::from(a))
        };
        let port = |o: usize| u16::from_be_bytes([payload[o], payload[o + 1]]);
        (SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))
    };
    Parse::Done { header: ProxyHeader::Proxied { source, destination, tls: tlvs.tls }, len }
}

#[derive(Default)]
struct Tlvs {
    tls: Option<ProxyTls>,
}

/// Walks the TLV list; only the SSL TLV matters here, the rest (ALPN, authority, CRC32C,
/// cloud-specific ones) are skipped but must be well formed.
fn parse_tlvs(mut data: &[u8]) -> Result<Tlvs, &'static str> {
    let mut out = Tlvs::default();
    while !data.is_empty() {
        if data.len() < 3 {
            return Err("v2 TLV truncated");
        }
        let kind = data[0];
        let len = u16::from_be_bytes([data[1], data[2]]) as usize;
        let Some(value) = data.get(3..3 + len) else { return Err("v2 TLV longer than the header") };
        if kind == PP2_TYPE_SSL {
            if value.len() < 5 {
                return Err("v2 SSL TLV truncated");
            }
            let client = value[0];
            let mut version = None;
            let mut sub = &value[5..];
            while !sub.is_empty() {
                if sub.len() < 3 {
                    return Err("v2 SSL sub-TLV truncated");
                }
                let sub_len = u16::from_be_bytes([sub[1], sub[2]]) as usize;
                let Some(sub_value) = sub.get(3..3 + sub_len) else { return Err("v2 SSL sub-TLV too long") };
                if sub[0] == PP2_SUBTYPE_SSL_VERSION {
                    version = Some(String::from_utf8_lossy(sub_value).into_owned());
                }
                sub = &sub[3 + sub_len..];
            }
            out.tls = Some(ProxyTls { client_ssl: client & PP2_CLIENT_SSL != 0, version });
        }
        data = &data[3 + len..];
    }
    Ok(out)
}

/// Builds a v2 header (for tests and the fuzz seed corpus).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, tls_version: Option<&str>) -> Vec<u8> {
    let mut payload = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            payload.extend_from_slice(&s.octets());
            payload.extend_from_slice(&d.octets());
            0x11
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            payload.extend_from_slice(&v6(s));
            payload.extend_from_slice(&v6(d));
            0x21
        }
    };
    payload.extend_from_slice(&source.port().to_be_bytes());
    payload.extend_from_slice(&destination.port().to_be_bytes());
    if let Some(version) = tls_version {
        let mut ssl = vec![PP2_CLIENT_SSL, 0, 0, 0, 0];
        ssl.push(PP2_SUBTYPE_SSL_VERSION);
        ssl.extend_from_slice(&(version.len() as u16).to_be_bytes());
        ssl.extend_from_slice(version.as_bytes());
        payload.push(PP2_TYPE_SSL);
        payload.extend_from_slice(&(ssl.len() as u16).to_be_bytes());
        payload.extend_from_slice(&ssl);
    }
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    out.push(family);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
mod tests;
