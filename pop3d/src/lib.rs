//! popfleet's `pop3d`: a POP3 + LMTP mail delivery agent over a pluggable store.
//!
//! - [`pop3`], [`lmtp`]: I/O-free protocol engines (bytes in, replies and storage requests out).
//! - [`store`]: the storage trait, its backends and the shared contract suite.
//! - [`server`]: tokio listeners and the per-connection drivers around the engines.
//! - [`context`]: what the drivers and the admin API share (store, authenticator, caches, metrics).
//! - [`daemon`]: binds the listeners and runs the server and the admin API until shutdown.
//! - [`admin`], [`cli`]: the admin HTTP API and the `pop3d user` commands that call it.

pub mod address;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod context;
pub mod daemon;
pub mod dedup;
#[doc(hidden)]
pub mod fuzz;
pub mod lines;
pub mod lmtp;
pub mod logsafe;
pub mod message_id;
pub mod metrics;
pub mod pop3;
pub mod proxy;
pub mod reload;
pub mod repair;
pub mod server;
pub mod store;
pub mod tls;
