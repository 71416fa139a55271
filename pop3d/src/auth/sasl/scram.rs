//! SCRAM-SHA-256 (RFC 7677 over RFC 5802), server side, without channel binding.
//!
//! The server keeps only StoredKey and ServerKey (and the salt and iteration count), derived
//! when the password is set, so a stolen account table does not give the password or a
//! credential that logs in directly. The exchange here is pure: the caller looks the keys up
//! and supplies the server nonce.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{decode_base64, encode_base64};

type HmacSha256 = Hmac<Sha256>;

/// RFC 7677 §4 asks for at least 4096.
pub const MIN_ITERATIONS: u32 = 4096;
/// Upper bound accepted from storage and configuration, to bound the work of deriving keys.
pub const MAX_ITERATIONS: u32 = 10_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported (no -PLUS mechanism offered)")]
    ChannelBinding,
    #[error("nonce does not continue the exchange")]
    Nonce,
    #[error("wrong client proof")]
    Proof,
}

/// What the server stores for an account.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// RFC 4013 SASLprep of the password, as clients apply it; a password it refuses (unassigned
/// code points, prohibited output) is used as given, which only matters for odd passwords.
fn prepare(password: &str) -> std::borrow::Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(std::borrow::Cow::Borrowed(password))
}

impl ScramKeys {
    /// Derives the keys from a password (PBKDF2-HMAC-SHA-256).
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(prepare(password).as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Keys for a user that does not exist (or has no SCRAM keys): stable per user name, so
    /// repeated attempts see the same salt, and matching no password anyone knows.
    /// `iterations` is what new accounts get, so a decoy looks like a recently set password.
    pub fn decoy(secret: &[u8; 32], user: &str, iterations: u32) -> Self {
        let salt = hmac(secret, format!("salt\0{user}").as_bytes());
        Self {
            iterations,
            salt: salt[..16].to_vec(),
            stored_key: hmac(secret, format!("stored\0{user}").as_bytes()),
            server_key: hmac(secret, format!("server\0{user}").as_bytes()),
        }
    }

    /// The stored form, as PostgreSQL writes it: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn encode(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            encode_base64(&self.salt),
            encode_base64(&self.stored_key),
            encode_base64(&self.server_key)
        )
    }

    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok()?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return None;
        }
        Some(Self {
            iterations,
            salt: decode_base64(salt.as_bytes())?,
            stored_key: decode_base64(stored.as_bytes())?.try_into().ok()?,
            server_key: decode_base64(server.as_bytes())?.try_into().ok()?,
        })
    }
}

/// The parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// `n,,` or `y,a=...,` as sent: the client-final `c=` must repeat it.
    gs2_header: String,
    /// client-first-message-bare, part of the AuthMessage.
    bare: String,
    pub user: String,
    pub authzid: Option<String>,
    client_nonce: String,
}

/// RFC 5802 §5.1 saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in a name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed("empty name"));
    }
    Ok(out)
}

fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut fields = text.splitn(3, ',');
    let (Some(flag), Some(authzid), Some(bare)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(ScramError::Malformed("no GS2 header"));
    };
    match flag {
        // "y": the client could bind but thinks we cannot; true, we offer no -PLUS.
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad channel-binding flag")),
    }
    let authzid = match authzid {
        "" => None,
        a => Some(decode_saslname(a.strip_prefix("a=").ok_or(ScramError::Malformed("bad authzid"))?)?),
    };
    let mut attrs = bare.split(',');
    let user = match attrs.next() {
        Some(n) if n.starts_with("n=") => decode_saslname(&n[2..])?,
        Some(m) if m.starts_with("m=") => return Err(ScramError::Malformed("mandatory extension not supported")),
        _ => return Err(ScramError::Malformed("no user name")),
    };
    let client_nonce = match attrs.next() {
        Some(r) if r.starts_with("r=") && valid_nonce(&r[2..]) => r[2..].to_owned(),
        _ => return Err(ScramError::Malformed("no nonce")),
    };
    Ok(ClientFirst {
        gs2_header: text[..text.len() - bare.len()].to_owned(),
        bare: bare.to_owned(),
        user,
        authzid,
        client_nonce,
    })
}

/// The server side after client-first, holding what the rest of the exchange needs.
#[derive(Debug)]
pub struct ScramServer {
    first: ClientFirst,
    keys: ScramKeys,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    pub fn new(first: ClientFirst, keys: ScramKeys, server_nonce: &str) -> Self {
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!("r={nonce},s={},i={}", encode_base64(&keys.salt), keys.iterations);
        Self { first, keys, server_first, nonce }
    }

    pub fn user(&self) -> &str {
        &self.first.user
    }

    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final message; on success returns server-final (`v=...`).
    pub fn verify_client_final(&self, message: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs.next().and_then(|c| c.strip_prefix("c=")).ok_or(ScramError::Malformed("no binding"))?;
        if decode_base64(binding.as_bytes()).as_deref() != Some(self.first.gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        let nonce = attrs.next().and_then(|r| r.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Nonce);
        }
        let proof: [u8; 32] = decode_base64(proof.as_bytes())
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof is not 32 octets of base64"))?;
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let client_signature = hmac(&self.keys.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ client_signature[i];
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if !bool::from(stored.ct_eq(&self.keys.stored_key)) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac(&self.keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", encode_base64(&server_signature)))
    }
}

/// The client side, for tests and the fuzz corpus: returns (client-first, state for final).
#[cfg(test)]
pub mod client {
    use super::*;

    pub fn first(user: &str, nonce: &str) -> String {
        format!("n,,n={},r={nonce}", user.replace('=', "=3D").replace(',', "=2C"))
    }

    /// Builds client-final from server-first; returns it and the expected server-final.
    pub fn finish(user: &str, nonce: &str, password: &str, server_first: &str) -> (String, String) {
        let attrs: std::collections::HashMap<&str, &str> =
            server_first.split(',').filter_map(|a| a.split_once('=')).collect();
        let salt = decode_base64(attrs["s"].as_bytes()).unwrap();
        let iterations: u32 = attrs["i"].parse().unwrap();
        let keys = ScramKeys::derive(password, &salt, iterations);
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(prepare(password).as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={}", attrs["r"]);
        let auth_message = format!("{},{server_first},{without_proof}", &first(user, nonce)[3..]);
        let signature = hmac(&keys.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(signature).map(|(a, b)| a ^ b).collect();
        let server_signature = hmac(&keys.server_key, auth_message.as_bytes());
        (format!("{without_proof},p={}", encode_base64(&proof)), format!("v={}", encode_base64(&server_signature)))
    }
}

#[cfg(test)]
mod tests;
