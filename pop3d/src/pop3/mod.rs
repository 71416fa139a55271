//! The POP3 engine (RFC 1939, 2449, 2595, 3206, 5034, 4616, 7677, 7628), free of I/O.
//!
//! [`Session`] is fed bytes and answers with [`Step`]s: bytes to write, or a storage request the
//! caller performs and reports back. The tokio wrapper in `server::pop3` is the only place that
//! touches sockets; everything here is tested byte by byte.

mod authorization;
pub mod command;
pub mod encode;
mod maildrop;
pub mod session;
mod transaction;

pub use encode::MessageEncoder;
pub use session::{
    CommitOutcome, Credentials, FetchOutcome, FetchRequest, LoginOutcome, LoginRequest, ScramKeysOutcome, Session,
    SessionConfig, Step,
};

/// RFC 2449 §4: command lines are at most 255 octets including CRLF.
pub const MAX_COMMAND_LINE: usize = 255;
/// AUTH lines and SASL responses may be longer (OAuth tokens); this is the documented cap.
pub const MAX_AUTH_LINE: usize = 16 * 1024;

#[cfg(test)]
mod tests;
