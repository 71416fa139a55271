//! Mail addresses as mailbox keys.
//!
//! Accounts, listings and deliveries are keyed by the normalised address, so every path that
//! takes an address from the outside world goes through [`normalise`].

/// The recipient delimiter for sub-addressing (`user+detail@domain` delivers to `user@domain`).
pub const DETAIL_DELIMITER: char = '+';

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
    let ok = |c: char| !c.is_control() && !c.is_whitespace() && !matches!(c, '<' | '>' | '/' | '\\' | '"');
    if !address.chars().all(ok) || local.contains('@') {
        return Err(AddressError::Characters);
    }
    Ok(address.to_lowercase())
}

/// The mailbox a recipient address delivers to: normalised, with any `+detail` removed.
pub fn mailbox_of_recipient(address: &str) -> Result<String, AddressError> {
    let normal = normalise(address)?;
    let (local, domain) = normal.rsplit_once('@').expect("normalise checked the @");
    let local = local.split(DETAIL_DELIMITER).next().unwrap_or(local);
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
        assert_eq!(mailbox_of_recipient("Bob+lists@example.com").unwrap(), "bob@example.com");
        assert_eq!(mailbox_of_recipient("bob@example.com").unwrap(), "bob@example.com");
        assert!(mailbox_of_recipient("+x@example.com").is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "alice", "@example.com", "alice@", "a b@example.com", "a@b@c", "<a@b>", "a/b@c"] {
            assert!(normalise(bad).is_err(), "{bad:?} accepted");
        }
    }
}
