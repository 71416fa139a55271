//! Mail addresses as mailbox keys.
//!
//! Accounts, listings and deliveries are keyed by the normalised address, so every path that
//! takes an address from the outside world (the admin API and CLI, logins, LMTP) goes through
//! [`normalise`]: one rule everywhere.
//!
//! Addresses are ASCII. pop3d does not offer SMTPUTF8, so an MTA never hands it a UTF-8 address,
//! and allowing Unicode in account names let look-alike accounts be made (`bоb` with a Cyrillic
//! `о` next to `bob`) and let case folding map other characters onto ASCII (the Kelvin sign
//! lower-cases to `k`). Internationalised domains are written in their `xn--` form.

/// Lower-cases and validates an address used as an account name.
pub fn normalise(address: &str) -> Result<String, AddressError> {
    let address = address.trim();
    if address.is_empty() || address.len() > 254 {
        return Err(AddressError::Length);
    }
    let (local, domain) = address.rsplit_once('@').ok_or(AddressError::NoDomain)?;
    if local.is_empty() || domain.is_empty() {
        return Err(AddressError::NoDomain);
    }
    if !address.is_ascii() {
        return Err(AddressError::NotAscii);
    }
    let ok = |c: char| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '/' | '\\' | '"');
    if !address.chars().all(ok) || local.contains('@') {
        return Err(AddressError::Characters);
    }
    Ok(address.to_ascii_lowercase())
}

/// The mailbox a recipient address delivers to: normalised, with any `<delimiter>detail` removed
/// (`user+detail@domain` delivers to `user@domain`, as Postfix and Dovecot users expect).
pub fn mailbox_of_recipient(address: &str, delimiter: Option<char>) -> Result<String, AddressError> {
    let normal = normalise(address)?;
    let Some(delimiter) = delimiter else { return Ok(normal) };
    let (local, domain) = normal.rsplit_once('@').expect("normalise checked the @");
    let local = local.split(delimiter).next().unwrap_or(local);
    if local.is_empty() {
        return Err(AddressError::NoDomain);
    }
    Ok(format!("{local}@{domain}"))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("address must be 1 to 254 characters")]
    Length,
    #[error("address must look like user@domain")]
    NoDomain,
    #[error("address contains characters that are not allowed")]
    Characters,
    #[error("address must be ASCII (internationalised domains in their xn-- form)")]
    NotAscii,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_space() {
        assert_eq!(normalise(" Alice@Example.COM ").unwrap(), "alice@example.com");
    }

    #[test]
    fn strips_detail_for_delivery() {
        let plus = Some('+');
        assert_eq!(mailbox_of_recipient("Bob+lists@example.com", plus).unwrap(), "bob@example.com");
        assert_eq!(mailbox_of_recipient("bob@example.com", plus).unwrap(), "bob@example.com");
        assert!(mailbox_of_recipient("+x@example.com", plus).is_err());
        assert_eq!(mailbox_of_recipient("bob-x@example.com", Some('-')).unwrap(), "bob@example.com");
        assert_eq!(mailbox_of_recipient("bob+x@example.com", None).unwrap(), "bob+x@example.com");
    }

    #[test]
    fn look_alikes_and_case_folding_tricks_are_refused() {
        // Cyrillic о (U+043E), the Kelvin sign (U+212A, lower-cases to an ASCII k), a
        // full-width letter, a zero-width joiner.
        for bad in ["b\u{43e}b@example.com", "\u{212a}im@example.com", "\u{ff41}@example.com", "a\u{200d}b@example.com"]
        {
            assert_eq!(normalise(bad), Err(AddressError::NotAscii), "{bad:?}");
        }
        assert_eq!(normalise("bob@xn--bcher-kva.example").unwrap(), "bob@xn--bcher-kva.example");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "alice", "@example.com", "alice@", "a b@example.com", "a@b@c", "<a@b>", "a/b@c"] {
            assert!(normalise(bad).is_err(), "{bad:?} accepted");
        }
    }
}
