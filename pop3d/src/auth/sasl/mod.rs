//! SASL mechanisms for POP3 AUTH, as pure functions and state machines (no I/O): PLAIN,
//! SCRAM-SHA-256 and the OAuth bearer-token mechanisms.

pub mod oauth;
pub mod plain;
pub mod scram;

use base64::Engine as _;

/// The two bearer-token mechanisms: OAUTHBEARER (RFC 7628) and Google's XOAUTH2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthMechanism {
    OAuthBearer,
    XOAuth2,
}

/// Decodes a SASL response line; `=` is the empty response (RFC 5034 §4).
pub fn decode_base64(line: &[u8]) -> Option<Vec<u8>> {
    if line == b"=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(line).ok()
}

pub fn encode_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}
