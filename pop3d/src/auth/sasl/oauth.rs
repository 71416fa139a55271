//! The client messages of OAUTHBEARER (RFC 7628) and XOAUTH2 (Google), and the error
//! challenge the server sends when a token is refused.

use super::{encode_base64, OAuthMechanism};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OAuthError {
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("no Bearer token")]
    NoToken,
    #[error("channel binding is not supported")]
    ChannelBinding,
}

/// What the client presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    /// The authorization identity the client named (OAUTHBEARER `a=`, XOAUTH2 `user=`).
    pub user: Option<String>,
    pub token: String,
}

/// RFC 6750 b64token: the characters a bearer token may have.
fn valid_token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// `auth=Bearer <token>` among `\x01`-separated key=value pairs.
fn bearer_from_pairs<'a>(pairs: impl Iterator<Item = &'a str>) -> Result<Option<(String, Option<String>)>, OAuthError> {
    let mut token = None;
    let mut user = None;
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else { return Err(OAuthError::Malformed("key=value")) };
        match key {
            "auth" => {
                let (scheme, t) = value.split_once(' ').ok_or(OAuthError::NoToken)?;
                if !scheme.eq_ignore_ascii_case("bearer") || !valid_token(t) {
                    return Err(OAuthError::NoToken);
                }
                token = Some(t.to_owned());
            }
            "user" => user = Some(value.to_owned()),
            _ => {} // host, port, and anything a future client adds
        }
    }
    Ok(token.map(|t| (t, user)))
}

pub fn parse(kind: OAuthMechanism, raw: &[u8]) -> Result<Bearer, OAuthError> {
    let what = match kind {
        OAuthMechanism::OAuthBearer => "OAUTHBEARER",
        OAuthMechanism::XOAuth2 => "XOAUTH2",
    };
    let text = std::str::from_utf8(raw).map_err(|_| OAuthError::Malformed(what))?;
    match kind {
        OAuthMechanism::OAuthBearer => {
            // gs2-header "," then "\x01" kvpairs "\x01"
            let mut parts = text.splitn(3, ',');
            let (Some(flag), Some(authzid), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(OAuthError::Malformed(what));
            };
            match flag {
                "n" | "y" => {}
                f if f.starts_with("p=") => return Err(OAuthError::ChannelBinding),
                _ => return Err(OAuthError::Malformed(what)),
            }
            let user = match authzid {
                "" => None,
                a => Some(
                    a.strip_prefix("a=").ok_or(OAuthError::Malformed(what))?.replace("=2C", ",").replace("=3D", "="),
                ),
            };
            let pairs = rest
                .strip_prefix('\x01')
                .and_then(|r| r.strip_suffix("\x01\x01"))
                .ok_or(OAuthError::Malformed(what))?;
            let (token, _) = bearer_from_pairs(pairs.split('\x01'))?.ok_or(OAuthError::NoToken)?;
            Ok(Bearer { user: user.filter(|u| !u.is_empty()), token })
        }
        OAuthMechanism::XOAuth2 => {
            let pairs = text.strip_suffix("\x01\x01").ok_or(OAuthError::Malformed(what))?;
            let (token, user) = bearer_from_pairs(pairs.split('\x01'))?.ok_or(OAuthError::NoToken)?;
            Ok(Bearer { user: user.filter(|u| !u.is_empty()), token })
        }
    }
}

/// The base64 JSON error challenge: RFC 7628 §3.2.2 for OAUTHBEARER, Google's form for XOAUTH2.
pub fn error_challenge(kind: OAuthMechanism) -> String {
    let json = match kind {
        OAuthMechanism::OAuthBearer => r#"{"status":"invalid_token"}"#,
        OAuthMechanism::XOAuth2 => r#"{"status":"401","schemes":"bearer"}"#,
    };
    encode_base64(json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_";

    #[test]
    fn parses_oauthbearer_with_and_without_authzid() {
        let msg = format!("n,a=alice@example.com,\x01host=pop.example.com\x01port=995\x01auth=Bearer {TOKEN}\x01\x01");
        let b = parse(OAuthMechanism::OAuthBearer, msg.as_bytes()).unwrap();
        assert_eq!((b.user.as_deref(), b.token.as_str()), (Some("alice@example.com"), TOKEN));
        let msg = format!("n,,\x01auth=bearer {TOKEN}\x01\x01");
        assert_eq!(parse(OAuthMechanism::OAuthBearer, msg.as_bytes()).unwrap().user, None);
    }

    #[test]
    fn parses_xoauth2() {
        let msg = format!("user=alice@example.com\x01auth=Bearer {TOKEN}\x01\x01");
        let b = parse(OAuthMechanism::XOAuth2, msg.as_bytes()).unwrap();
        assert_eq!((b.user.as_deref(), b.token.as_str()), (Some("alice@example.com"), TOKEN));
    }

    #[test]
    fn rejects_malformed_messages() {
        let bearer = OAuthMechanism::OAuthBearer;
        for bad in [
            "".to_owned(),
            "n,,".to_owned(),
            format!("n,,auth=Bearer {TOKEN}\x01\x01"),
            format!("n,,\x01auth=Bearer {TOKEN}\x01"),
            "n,,\x01host=x\x01\x01".to_owned(),
            "n,,\x01auth=Basic dXNlcjpwdw==\x01\x01".to_owned(),
            "n,,\x01auth=Bearer bad token\x01\x01".to_owned(),
            "n,,\x01auth=Bearer \x01\x01".to_owned(),
            format!("n,b=x,\x01auth=Bearer {TOKEN}\x01\x01"),
            format!("q,,\x01auth=Bearer {TOKEN}\x01\x01"),
            format!("n,,\x01noequals\x01auth=Bearer {TOKEN}\x01\x01"),
        ] {
            assert!(parse(bearer, bad.as_bytes()).is_err(), "{bad:?}");
        }
        let cb = format!("p=tls-exporter,,\x01auth=Bearer {TOKEN}\x01\x01");
        assert_eq!(parse(bearer, cb.as_bytes()), Err(OAuthError::ChannelBinding));
        assert!(parse(OAuthMechanism::XOAuth2, b"user=a\x01\x01").is_err());
        assert!(parse(OAuthMechanism::XOAuth2, b"\xff").is_err());
    }

    #[test]
    fn error_challenges_are_the_documented_json() {
        use base64::Engine as _;
        let decode =
            |s: String| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap();
        assert_eq!(decode(error_challenge(OAuthMechanism::OAuthBearer)), r#"{"status":"invalid_token"}"#);
        assert!(decode(error_challenge(OAuthMechanism::XOAuth2)).contains("\"401\""));
    }
}
