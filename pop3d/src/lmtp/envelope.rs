//! The envelope of a delivery, built from MAIL FROM and RCPT TO (parsed in `command.rs`).

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
