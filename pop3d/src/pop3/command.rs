//! POP3 command lines (RFC 1939, 2449, 2595, 5034), parsed in one place: the keyword (any case),
//! the number and syntax of arguments, message numbers and the line length. Which commands are
//! allowed in which state is the session's business, so errors say which command they were
//! found on: a TRANSACTION command sent before login is "unknown" whatever its arguments.

use std::fmt;
use std::num::NonZeroUsize;

use super::encode::Reply;
use super::MAX_COMMAND_LINE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    User,
    Pass,
    Apop,
    Auth,
    Stls,
    Capa,
    Quit,
    Stat,
    List,
    Uidl,
    Retr,
    Top,
    Dele,
    Rset,
    Noop,
}

const KEYWORDS: [(&str, Verb); 15] = [
    ("USER", Verb::User),
    ("PASS", Verb::Pass),
    ("APOP", Verb::Apop),
    ("AUTH", Verb::Auth),
    ("STLS", Verb::Stls),
    ("CAPA", Verb::Capa),
    ("QUIT", Verb::Quit),
    ("STAT", Verb::Stat),
    ("LIST", Verb::List),
    ("UIDL", Verb::Uidl),
    ("RETR", Verb::Retr),
    ("TOP", Verb::Top),
    ("DELE", Verb::Dele),
    ("RSET", Verb::Rset),
    ("NOOP", Verb::Noop),
];

impl Verb {
    fn from_keyword(keyword: &[u8]) -> Option<Self> {
        KEYWORDS.iter().find(|(name, _)| keyword.eq_ignore_ascii_case(name.as_bytes())).map(|&(_, verb)| verb)
    }

    /// Commands that only make sense before login (RFC 1939 §7, RFC 2595, RFC 5034).
    pub fn is_login(self) -> bool {
        matches!(self, Verb::User | Verb::Pass | Verb::Apop | Verb::Auth | Verb::Stls)
    }

    /// Commands that only make sense after login (RFC 1939 §5).
    pub fn is_transaction(self) -> bool {
        matches!(
            self,
            Verb::Stat | Verb::List | Verb::Uidl | Verb::Retr | Verb::Top | Verb::Dele | Verb::Rset | Verb::Noop
        )
    }
}

/// A message number as RFC 1939 §3 has it: positive decimal, numbering the snapshot from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageNumber(NonZeroUsize);

impl MessageNumber {
    pub fn get(self) -> usize {
        self.0.get()
    }
}

impl fmt::Display for MessageNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Text that may be a credential (a password, a SASL initial response): kept out of `Debug`, so
/// a logged command never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The SASL mechanisms this server knows by name; whether one is usable now is the session's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    OAuthBearer,
    XOAuth2,
    Other,
}

impl SaslMechanism {
    fn from_name(name: &str) -> Self {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Self::Plain,
            "SCRAM-SHA-256" => Self::ScramSha256,
            "OAUTHBEARER" => Self::OAuthBearer,
            "XOAUTH2" => Self::XOAuth2,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The name, trimmed, never empty.
    User(String),
    /// The whole rest of the line: passwords may hold spaces.
    Pass(Secret),
    /// Refused whatever its arguments (no stored plaintext passwords to compute a digest from).
    Apop,
    /// `AUTH` alone lists the mechanisms (the RFC 1734-era discovery Outlook still uses).
    Auth {
        mechanism: Option<SaslMechanism>,
        initial_response: Option<Secret>,
    },
    Stls,
    Capa,
    Quit,
    Stat,
    List(Option<MessageNumber>),
    Uidl(Option<MessageNumber>),
    Retr(MessageNumber),
    Top(MessageNumber, u64),
    Dele(MessageNumber),
    Rset,
    Noop,
}

impl Command {
    pub fn verb(&self) -> Verb {
        match self {
            Command::User(_) => Verb::User,
            Command::Pass(_) => Verb::Pass,
            Command::Apop => Verb::Apop,
            Command::Auth { .. } => Verb::Auth,
            Command::Stls => Verb::Stls,
            Command::Capa => Verb::Capa,
            Command::Quit => Verb::Quit,
            Command::Stat => Verb::Stat,
            Command::List(_) => Verb::List,
            Command::Uidl(_) => Verb::Uidl,
            Command::Retr(_) => Verb::Retr,
            Command::Top(..) => Verb::Top,
            Command::Dele(_) => Verb::Dele,
            Command::Rset => Verb::Rset,
            Command::Noop => Verb::Noop,
        }
    }
}

/// Why a line is not a command. The `Display` text is the `-ERR` reply's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Line too long.")]
    LineTooLong,
    #[error("Command is not valid UTF-8.")]
    NotUtf8,
    #[error("Unknown command.")]
    Unknown,
    #[error("{error}")]
    Arguments { verb: Verb, error: ArgumentError },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    #[error("Wrong number of arguments.")]
    Count,
    #[error("Invalid message number.")]
    MessageNumber,
    /// A well-formed number naming no message (0): echoed as typed.
    #[error("There's no message {0}.")]
    NoSuchMessage(String),
    #[error("Invalid line count.")]
    LineCount,
    #[error("USER needs a name.")]
    UserName,
    #[error("STLS takes no arguments.")]
    StlsArguments,
}

impl ParseError {
    /// The command the error was found on, once the keyword was known.
    pub fn verb(&self) -> Option<Verb> {
        match self {
            ParseError::Arguments { verb, .. } => Some(*verb),
            _ => None,
        }
    }

    /// Message 0 is an honest miss, answered like message 4 of 3, so it does not count towards
    /// the bad-command limit; everything else is a malformed command and does.
    pub fn is_bad_command(&self) -> bool {
        !matches!(self, ParseError::Arguments { error: ArgumentError::NoSuchMessage(_), .. })
    }

    pub fn reply(&self) -> Reply {
        Reply::err(self.to_string())
    }
}

/// Parses one command line (without its CRLF). The keyword ends at the first space; arguments
/// are separated by runs of spaces (never tabs), except where a command takes the rest of the line.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &[][..]),
    };
    let verb = Verb::from_keyword(keyword);
    // RFC 2449 §4 caps command lines at 255 octets; AUTH may carry a long initial response (an
    // OAuth token), bounded by the line reader's larger cap instead.
    if line.len() + 2 > MAX_COMMAND_LINE && verb != Some(Verb::Auth) {
        return Err(ParseError::LineTooLong);
    }
    let args = std::str::from_utf8(rest).map_err(|_| ParseError::NotUtf8)?;
    let verb = verb.ok_or(ParseError::Unknown)?;
    arguments(verb, args).map_err(|error| ParseError::Arguments { verb, error })
}

fn arguments(verb: Verb, args: &str) -> Result<Command, ArgumentError> {
    let words: Vec<&str> = args.split(' ').filter(|word| !word.is_empty()).collect();
    let command = match (verb, words.as_slice()) {
        (Verb::User, _) => match args.trim() {
            "" => return Err(ArgumentError::UserName),
            name => Command::User(name.to_owned()),
        },
        (Verb::Pass, _) => Command::Pass(Secret(args.to_owned())),
        (Verb::Apop, _) => Command::Apop,
        (Verb::Auth, _) => Command::Auth {
            mechanism: words.first().map(|name| SaslMechanism::from_name(name)),
            initial_response: words.get(1).map(|response| Secret((*response).to_owned())),
        },
        // Exactly `STLS` or `STLS `: what clients send, and nothing that could hide a payload.
        (Verb::Stls, _) if !args.is_empty() => return Err(ArgumentError::StlsArguments),
        (Verb::Stls, _) => Command::Stls,
        (Verb::Capa, []) => Command::Capa,
        (Verb::Quit, []) => Command::Quit,
        (Verb::Stat, []) => Command::Stat,
        (Verb::Rset, []) => Command::Rset,
        (Verb::Noop, []) => Command::Noop,
        (Verb::List, []) => Command::List(None),
        (Verb::List, [n]) => Command::List(Some(message_number(n)?)),
        (Verb::Uidl, []) => Command::Uidl(None),
        (Verb::Uidl, [n]) => Command::Uidl(Some(message_number(n)?)),
        (Verb::Retr, [n]) => Command::Retr(message_number(n)?),
        // The line count is checked first, as it always was.
        (Verb::Top, [n, lines]) => {
            let lines = number(lines).ok_or(ArgumentError::LineCount)?;
            Command::Top(message_number(n)?, lines)
        }
        (Verb::Dele, [n]) => Command::Dele(message_number(n)?),
        _ => return Err(ArgumentError::Count),
    };
    Ok(command)
}

fn message_number(arg: &str) -> Result<MessageNumber, ArgumentError> {
    let n = number(arg).ok_or(ArgumentError::MessageNumber)?;
    usize::try_from(n)
        .ok()
        .and_then(NonZeroUsize::new)
        .map(MessageNumber)
        .ok_or_else(|| ArgumentError::NoSuchMessage(arg.to_owned()))
}

/// A decimal number as POP3 allows it: ASCII digits only (no sign, no `+`, no spaces), and at most
/// ten of them, so it always fits a u64 and an echo of it stays short.
fn number(arg: &str) -> Option<u64> {
    if arg.is_empty() || arg.len() > 10 || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    arg.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(number: usize) -> MessageNumber {
        MessageNumber(NonZeroUsize::new(number).unwrap())
    }

    #[test]
    fn keywords_in_any_case_and_typed_arguments() {
        assert_eq!(parse(b"stat"), Ok(Command::Stat));
        assert_eq!(parse(b"LiSt  7 "), Ok(Command::List(Some(n(7)))));
        assert_eq!(parse(b"TOP 0012 0"), Ok(Command::Top(n(12), 0)));
        assert_eq!(parse(b"user  bob "), Ok(Command::User("bob".into())));
        assert_eq!(parse(b"PASS  two words "), Ok(Command::Pass(Secret(" two words ".into()))));
        assert_eq!(
            parse(b"auth scram-sha-256 abc= extra"),
            Ok(Command::Auth {
                mechanism: Some(SaslMechanism::ScramSha256),
                initial_response: Some(Secret("abc=".into()))
            })
        );
        assert_eq!(parse(b"RETR 9999999999"), Ok(Command::Retr(n(9_999_999_999))));
    }

    #[test]
    fn errors_name_their_command() {
        let count = |verb| Err(ParseError::Arguments { verb, error: ArgumentError::Count });
        assert_eq!(parse(b"RETR"), count(Verb::Retr));
        assert_eq!(parse(b"CAPA x"), count(Verb::Capa));
        assert_eq!(parse(b"RETR\t1"), Err(ParseError::Unknown));
        assert_eq!(parse(b"NOOP \xff"), Err(ParseError::NotUtf8));
        assert!(!parse(b"RETR 00").unwrap_err().is_bad_command());
        assert!(parse(b"RETR x").unwrap_err().is_bad_command());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let text = format!("{:?}", parse(b"PASS hunter2").unwrap());
        assert!(!text.contains("hunter2"), "{text}");
        let text = format!("{:?}", parse(b"AUTH PLAIN AGJvYgBodW50ZXIy").unwrap());
        assert!(!text.contains("AGJvYgBodW50ZXIy"), "{text}");
    }
}
