//! The I/O shell: listeners, per-connection tasks and shutdown around the protocol engines.

pub mod conn;
mod delivery;
pub mod front;
mod io;
pub mod limits;
pub(crate) mod lmtp;
pub(crate) mod pop3;
