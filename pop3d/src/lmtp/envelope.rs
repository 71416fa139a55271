//! Envelope parsing: `MAIL FROM:<...> params` and `RCPT TO:<...> params`.

/// A recipient accepted at RCPT time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given in RCPT TO (used for `Delivered-To`).
    pub address: String,
    /// The mailbox it delivers to (normalised, `+detail` removed).
    pub mailbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub lhlo: String,
    pub mail_from: String,
    pub recipients: Vec<Recipient>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct MailFrom {
    pub address: String,
    pub size: Option<u64>,
}

/// Parses the argument of MAIL (after the verb): `FROM:<addr> [SIZE=n] [BODY=...]`.
pub fn parse_mail_from(args: &str) -> Result<MailFrom, &'static str> {
    let (address, params) = parse_path(args, "FROM:")?;
    let mut size = None;
    for param in params.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => size = Some(value.parse::<u64>().map_err(|_| "501 5.5.4 Invalid SIZE parameter")?),
            "BODY" if value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME") => {}
            "BODY" => return Err("501 5.5.4 Unsupported BODY type"),
            _ => return Err("555 5.5.4 Unsupported MAIL parameter"),
        }
    }
    Ok(MailFrom { address, size })
}

/// Parses the argument of RCPT (after the verb): `TO:<addr> [params]`.
pub fn parse_rcpt_to(args: &str) -> Result<String, &'static str> {
    let (address, params) = parse_path(args, "TO:")?;
    if !params.trim().is_empty() {
        return Err("555 5.5.4 Unsupported RCPT parameter");
    }
    if address.is_empty() {
        return Err("501 5.1.3 Bad recipient address syntax");
    }
    Ok(address)
}

/// The longest address accepted in MAIL FROM or RCPT TO.
pub const MAX_ADDRESS: usize = 254;

/// `PREFIX<addr> rest` with the prefix matched case-insensitively and a space tolerated after it.
fn parse_path<'a>(args: &'a str, prefix: &str) -> Result<(String, &'a str), &'static str> {
    let syntax = "501 5.5.4 Syntax: MAIL FROM:<address> or RCPT TO:<address>";
    // `get`, not slicing: a multi-byte character across the prefix length must be a syntax
    // error, not a panic (found by the lmtp_session fuzz target).
    if !args.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix)) {
        return Err(syntax);
    }
    let rest = args[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<').ok_or(syntax)?;
    let end = rest.find('>').ok_or(syntax)?;
    let address = &rest[..end];
    // Source routes (`@a,@b:user@c`) are obsolete; keep the mailbox part.
    let address = address.rsplit_once(':').map_or(address, |(_, a)| a);
    if address.chars().any(|c| c.is_control() || c == '<') {
        return Err(syntax);
    }
    // RFC 5321 4.5.3.1.3: a path is at most 256 octets with its brackets. Longer ones are
    // refused so that a reply echoing the address stays within the 512-octet reply line
    // (found by the lmtp_session fuzz target).
    if address.len() > MAX_ADDRESS {
        return Err("501 5.1.3 Address too long (254 octets at most)");
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
        assert_eq!(parse_rcpt_to(&too_long).unwrap_err(), "501 5.1.3 Address too long (254 octets at most)");
        assert!(parse_mail_from(&format!("FROM:<a{longest}>")).is_err());
    }
}
