//! pop3d's configuration contract, shared by pop3d, the `Pop3Cluster` CRD and the operator.
//!
//! One source of truth for what the parts must agree on:
//! - [`FileConfig`]: the TOML file pop3d reads (`--config`) and the operator writes into each
//!   datacenter's ConfigMap; unknown keys are an error, so a misspelt key stops start-up;
//! - [`defaults`]: the value of each setting left unset;
//! - [`env`]: the `POP3D_*` environment variable of each setting;
//! - the value types ([`StoreKind`], [`Listener`], [`ConsistencyLevel`]);
//! - [`MANAGED_KEYS`]: the keys the operator sets itself and `spec.config` may not override.
//!
//! It must never import scylla, redb, tokio or kube (it describes the contract and implements
//! none of it), nor pop3d, `crds` or the operator (they import it).

pub mod defaults;
pub mod env;
mod file;
mod managed;
mod types;

pub use file::FileConfig;
pub use managed::MANAGED_KEYS;
pub use types::{ConsistencyLevel, Listener, StoreKind, UnknownListener};
