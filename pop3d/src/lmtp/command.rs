//! LMTP command lines (RFC 2033, RFC 5321 §4.1), parsed in one place: the keyword (any case), the
//! arguments, and the paths of MAIL FROM and RCPT TO with their ESMTP parameters. Whether a
//! command fits the transaction so far is the session's business; errors say which command they
//! were found on, so that MAIL before LHLO is a sequence error whatever its arguments.

use super::reply::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Lhlo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    StartTls,
}

const KEYWORDS: [(&str, Verb); 9] = [
    ("LHLO", Verb::Lhlo),
    ("MAIL", Verb::Mail),
    ("RCPT", Verb::Rcpt),
    ("DATA", Verb::Data),
    ("RSET", Verb::Rset),
    ("NOOP", Verb::Noop),
    ("QUIT", Verb::Quit),
    ("VRFY", Verb::Vrfy),
    ("STARTTLS", Verb::StartTls),
];

#[derive(Debug, PartialEq, Eq)]
pub struct MailFrom {
    /// Empty for the null reverse-path `<>` (bounces).
    pub address: String,
    /// The SIZE parameter (RFC 1870), if given.
    pub size: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// The client's name, trimmed: one word.
    Lhlo(String),
    MailFrom(MailFrom),
    /// The address as given, never empty.
    RcptTo(String),
    Data,
    /// RSET, NOOP, QUIT and VRFY ignore any arguments.
    Rset,
    Noop,
    Quit,
    Vrfy,
    StartTls,
}

/// Why a line is not a command. The `Display` text is the reply's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Command is not valid UTF-8")]
    NotUtf8,
    #[error("This is an LMTP server: use LHLO")]
    Smtp,
    #[error("Unknown command")]
    Unknown,
    #[error("{error}")]
    Arguments { verb: Verb, error: ArgumentError },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    #[error("Syntax: LHLO hostname")]
    LhloSyntax,
    #[error("Syntax: MAIL FROM:<address> or RCPT TO:<address>")]
    PathSyntax,
    #[error("Address too long (254 octets at most)")]
    AddressTooLong,
    #[error("Invalid SIZE parameter")]
    Size,
    #[error("Unsupported BODY type")]
    Body,
    #[error("Unsupported MAIL parameter")]
    MailParameter,
    #[error("Unsupported RCPT parameter")]
    RcptParameter,
    /// RCPT TO:<>: only a sender may be null.
    #[error("Bad recipient address syntax")]
    NullRecipient,
    #[error("DATA takes no arguments")]
    DataArguments,
    #[error("STARTTLS takes no arguments")]
    StartTlsArguments,
}

impl ArgumentError {
    fn code(&self) -> (u16, [u16; 3]) {
        match self {
            ArgumentError::AddressTooLong | ArgumentError::NullRecipient => (501, [5, 1, 3]),
            ArgumentError::MailParameter | ArgumentError::RcptParameter => (555, [5, 5, 4]),
            _ => (501, [5, 5, 4]),
        }
    }

    pub fn reply(&self) -> Reply {
        let (code, enhanced) = self.code();
        Reply::new(code, enhanced, self.to_string())
    }
}

impl ParseError {
    /// The command the error was found on, once the keyword was known.
    pub fn verb(&self) -> Option<Verb> {
        match self {
            ParseError::Arguments { verb, .. } => Some(*verb),
            _ => None,
        }
    }

    pub fn reply(&self) -> Reply {
        match self {
            ParseError::NotUtf8 | ParseError::Unknown => Reply::new(500, [5, 5, 2], self.to_string()),
            ParseError::Smtp => Reply::new(500, [5, 5, 1], self.to_string()),
            ParseError::Arguments { error, .. } => error.reply(),
        }
    }
}

/// Parses one command line (without its CRLF; the line reader enforces the length). The keyword
/// ends at the first space.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let (keyword, args) = line.split_once(' ').unwrap_or((line, ""));
    let Some(verb) = KEYWORDS.iter().find(|(name, _)| keyword.eq_ignore_ascii_case(name)).map(|&(_, v)| v) else {
        let smtp = keyword.eq_ignore_ascii_case("HELO") || keyword.eq_ignore_ascii_case("EHLO");
        return Err(if smtp { ParseError::Smtp } else { ParseError::Unknown });
    };
    arguments(verb, args).map_err(|error| ParseError::Arguments { verb, error })
}

fn arguments(verb: Verb, args: &str) -> Result<Command, ArgumentError> {
    let command = match verb {
        Verb::Lhlo => match args.trim() {
            name if name.is_empty() || name.contains(' ') => return Err(ArgumentError::LhloSyntax),
            name => Command::Lhlo(name.to_owned()),
        },
        Verb::Mail => Command::MailFrom(parse_mail_from(args)?),
        Verb::Rcpt => Command::RcptTo(parse_rcpt_to(args)?),
        Verb::Data if !args.trim().is_empty() => return Err(ArgumentError::DataArguments),
        Verb::Data => Command::Data,
        Verb::StartTls if !args.trim().is_empty() => return Err(ArgumentError::StartTlsArguments),
        Verb::StartTls => Command::StartTls,
        Verb::Rset => Command::Rset,
        Verb::Noop => Command::Noop,
        Verb::Quit => Command::Quit,
        Verb::Vrfy => Command::Vrfy,
    };
    Ok(command)
}

/// The argument of MAIL (after the verb): `FROM:<addr> [SIZE=n] [BODY=7BIT|8BITMIME]`.
pub fn parse_mail_from(args: &str) -> Result<MailFrom, ArgumentError> {
    let (address, params) = parse_path(args, "FROM:")?;
    let mut size = None;
    for param in params.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => size = Some(value.parse::<u64>().map_err(|_| ArgumentError::Size)?),
            "BODY" if value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME") => {}
            "BODY" => return Err(ArgumentError::Body),
            _ => return Err(ArgumentError::MailParameter),
        }
    }
    Ok(MailFrom { address, size })
}

/// The argument of RCPT (after the verb): `TO:<addr>`, no parameters (no DSN here).
pub fn parse_rcpt_to(args: &str) -> Result<String, ArgumentError> {
    let (address, params) = parse_path(args, "TO:")?;
    if !params.trim().is_empty() {
        return Err(ArgumentError::RcptParameter);
    }
    if address.is_empty() {
        return Err(ArgumentError::NullRecipient);
    }
    Ok(address)
}

/// The longest address accepted in MAIL FROM or RCPT TO.
pub const MAX_ADDRESS: usize = 254;

/// `PREFIX<addr> rest` with the prefix matched case-insensitively and a space tolerated after it.
fn parse_path<'a>(args: &'a str, prefix: &str) -> Result<(String, &'a str), ArgumentError> {
    // `get`, not slicing: a multi-byte character across the prefix length must be a syntax
    // error, not a panic (found by the lmtp_session fuzz target).
    if !args.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix)) {
        return Err(ArgumentError::PathSyntax);
    }
    let rest = args[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<').ok_or(ArgumentError::PathSyntax)?;
    let end = rest.find('>').ok_or(ArgumentError::PathSyntax)?;
    let address = &rest[..end];
    // Source routes (`@a,@b:user@c`) are obsolete; keep the mailbox part.
    let address = address.rsplit_once(':').map_or(address, |(_, a)| a);
    if address.chars().any(|c| c.is_control() || c == '<') {
        return Err(ArgumentError::PathSyntax);
    }
    // RFC 5321 4.5.3.1.3: a path is at most 256 octets with its brackets. Longer ones are
    // refused so that a reply echoing the address stays within the 512-octet reply line
    // (found by the lmtp_session fuzz target).
    if address.len() > MAX_ADDRESS {
        return Err(ArgumentError::AddressTooLong);
    }
    Ok((address.to_owned(), &rest[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_from_with_params() {
        assert_eq!(
            parse_mail_from("FROM:<a@b.c> SIZE=100 BODY=8BITMIME").unwrap(),
            MailFrom { address: "a@b.c".into(), size: Some(100) }
        );
        assert_eq!(parse_mail_from("from: <>").unwrap(), MailFrom { address: String::new(), size: None });
        assert!(parse_mail_from("FROM:a@b.c").is_err());
        assert!(parse_mail_from("FROM:<a@b.c> SIZE=x").is_err());
        assert!(parse_mail_from("FROM:<a@b.c> FOO=1").is_err());
        assert!(parse_mail_from("TO:<a@b.c>").is_err());
        assert!(parse_mail_from("FROM\u{f6}T").is_err(), "multi-byte character across the prefix");
        assert!(parse_rcpt_to("T\u{f6}").is_err());
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(parse_rcpt_to("TO:<Bob+x@b.c>").unwrap(), "Bob+x@b.c");
        assert_eq!(parse_rcpt_to("to:<@relay:bob@b.c>").unwrap(), "bob@b.c");
        assert!(parse_rcpt_to("TO:<>").is_err());
        assert!(parse_rcpt_to("TO:<a@b.c> NOTIFY=NEVER").is_err());
        let longest = format!("{}@b.c", "a".repeat(MAX_ADDRESS - 4));
        assert_eq!(parse_rcpt_to(&format!("TO:<{longest}>")).unwrap(), longest);
        let too_long = format!("TO:<a{longest}>");
        assert_eq!(
            parse_rcpt_to(&too_long).unwrap_err().reply().to_string(),
            "501 5.1.3 Address too long (254 octets at most)"
        );
        assert!(parse_mail_from(&format!("FROM:<a{longest}>")).is_err());
    }

    #[test]
    fn keywords_in_any_case_and_errors_name_their_command() {
        assert_eq!(parse(b"lhlo  mx.test "), Ok(Command::Lhlo("mx.test".into())));
        assert_eq!(parse(b"Rcpt TO:<a@b>"), Ok(Command::RcptTo("a@b".into())));
        assert_eq!(parse(b"VRFY anything at all"), Ok(Command::Vrfy));
        let error = parse(b"MAIL TO:<a@b>").unwrap_err();
        assert_eq!(error.verb(), Some(Verb::Mail));
        assert_eq!(error.reply().to_string(), "501 5.5.4 Syntax: MAIL FROM:<address> or RCPT TO:<address>");
        assert_eq!(parse(b"EHLO x").unwrap_err().reply().to_string(), "500 5.5.1 This is an LMTP server: use LHLO");
    }
}
