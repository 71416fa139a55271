//! SASL PLAIN (RFC 4616) decoding.

use base64::Engine as _;

use super::session::Credentials;

#[derive(Debug, PartialEq, Eq)]
pub enum SaslError {
    Base64,
    Malformed,
}

/// Decodes a base64 PLAIN response: `[authzid] NUL authcid NUL passwd`.
pub fn decode_plain(response: &[u8]) -> Result<Credentials, SaslError> {
    let raw = if response == b"=" {
        Vec::new()
    } else {
        base64::engine::general_purpose::STANDARD.decode(response).map_err(|_| SaslError::Base64)?
    };
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if user.is_empty() || user.len() > 255 || authzid.len() > 255 || password.len() > 255 {
        return Err(SaslError::Malformed);
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    Ok(Credentials {
        authzid: if authzid.is_empty() { None } else { Some(text(authzid)?) },
        user: text(user)?,
        password: text(password)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.encode(s).into_bytes()
    }

    #[test]
    fn decodes_with_and_without_authzid() {
        let c = decode_plain(&b64(b"\0alice@example.com\0pass word")).unwrap();
        assert_eq!((c.authzid, c.user.as_str(), c.password.as_str()), (None, "alice@example.com", "pass word"));
        let c = decode_plain(&b64(b"admin\0alice\0pw")).unwrap();
        assert_eq!(c.authzid.as_deref(), Some("admin"));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode_plain(b"!!!").unwrap_err(), SaslError::Base64);
        assert_eq!(decode_plain(&b64(b"alice\0pw")).unwrap_err(), SaslError::Malformed);
        assert_eq!(decode_plain(&b64(b"\0\0pw")).unwrap_err(), SaslError::Malformed);
        assert_eq!(decode_plain(&b64(b"\0a\0b\0c")).unwrap_err(), SaslError::Malformed);
        assert_eq!(decode_plain(b"=").unwrap_err(), SaslError::Malformed);
    }
}
