//! The typed values of settings that are not plain numbers, strings, paths or addresses.

use serde::{Deserialize, Serialize};

/// Where mail is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Embedded,
    Cassandra,
}

/// Consistency levels pop3d accepts; serial levels do not exist here on purpose (no LWT, ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyLevel {
    LocalQuorum,
    LocalOne,
    Quorum,
    EachQuorum,
    One,
    Two,
    Three,
    All,
}

/// The listeners, as named in `proxy_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    Pop3,
    Pop3s,
    Lmtp,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown listener {0:?} (pop3, pop3s, lmtp)")]
pub struct UnknownListener(pub String);

/// The flag and environment form (`--proxy-protocol pop3,lmtp`): case and spaces do not matter.
impl std::str::FromStr for Listener {
    type Err = UnknownListener;
    fn from_str(s: &str) -> Result<Self, UnknownListener> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pop3" => Ok(Self::Pop3),
            "pop3s" => Ok(Self::Pop3s),
            "lmtp" => Ok(Self::Lmtp),
            other => Err(UnknownListener(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse_in_any_case_and_unknown_ones_are_named() {
        assert_eq!(" POP3s ".parse::<Listener>().unwrap(), Listener::Pop3s);
        let err = "imap".parse::<Listener>().unwrap_err();
        assert_eq!(err.to_string(), "unknown listener \"imap\" (pop3, pop3s, lmtp)");
    }
}
