//! The LMTP engine (RFC 2033 with PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME, SIZE), free of I/O.
//!
//! Like the POP3 engine it is fed bytes and answers with [`Step`]s. DATA content comes out as
//! chunks that the caller streams to storage while the message arrives, so memory stays bounded
//! by the chunk size whatever the message size.

pub mod command;
pub mod data;
mod envelope;
pub mod reply;
pub mod session;
pub mod trace;

pub use envelope::{Envelope, Recipient};
pub use session::{DeliveryResult, LmtpConfig, RcptCheck, Session, Step};

/// RFC 5321 §4.5.3.1.4: command lines are at most 512 octets including CRLF.
pub const MAX_COMMAND_LINE: usize = 512;

#[cfg(test)]
mod tests;
