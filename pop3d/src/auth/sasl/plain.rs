//! SASL PLAIN (RFC 4616).

use crate::pop3::Credentials;

/// The response is not `[authzid] NUL authcid NUL passwd` with UTF-8 fields of at most 255 octets.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainError;

/// Decodes a PLAIN response (already base64-decoded).
pub fn decode_plain(raw: &[u8]) -> Result<Credentials, PlainError> {
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError);
    };
    if user.is_empty() || user.len() > 255 || authzid.len() > 255 || password.len() > 255 {
        return Err(PlainError);
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| PlainError);
    Ok(Credentials {
        authzid: if authzid.is_empty() { None } else { Some(text(authzid)?) },
        user: text(user)?,
        password: text(password)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_with_and_without_authzid() {
        let c = decode_plain(b"\0alice@example.com\0pass word").unwrap();
        assert_eq!((c.authzid, c.user.as_str(), c.password.as_str()), (None, "alice@example.com", "pass word"));
        let c = decode_plain(b"admin\0alice\0pw").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("admin"));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode_plain(b"alice\0pw").unwrap_err(), PlainError);
        assert_eq!(decode_plain(b"\0\0pw").unwrap_err(), PlainError);
        assert_eq!(decode_plain(b"\0a\0b\0c").unwrap_err(), PlainError);
        assert_eq!(decode_plain(b"").unwrap_err(), PlainError);
        assert_eq!(decode_plain(b"\0a\0\xff").unwrap_err(), PlainError);
    }
}
