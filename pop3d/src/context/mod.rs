//! What every connection task and the admin API share: the configuration, the store behind its
//! timing decorator, the authenticator, the caches and the metrics. Its own module so that the
//! protocol shell (`server`) and the admin API (`admin`) both depend on it and not on each other;
//! `daemon` wires all three.

pub mod accounts;
pub mod reaper;

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio_rustls::TlsAcceptor;

use crate::auth::bearer::BearerValidator;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::MailStore;

/// What every connection task shares.
pub struct ServerContext {
    pub config: Config,
    pub store: Arc<dyn MailStore>,
    pub auth: Authenticator,
    /// Recipients known to be accounts (LMTP), shared by every delivery.
    pub accounts: Arc<accounts::KnownAccounts>,
    /// Deletes expunged content after the QUIT reply.
    pub reaper: reaper::Reaper,
    pub metrics: Metrics,
    pub registry: Registry,
    pub repair: std::sync::Mutex<crate::repair::RepairStatus>,
    /// Set when a certificate is configured: STLS, POP3S, LMTP STARTTLS.
    pub tls: Option<TlsAcceptor>,
    /// OAUTHBEARER and XOAUTH2 are offered.
    pub oauth: bool,
    /// Shutdown began: /readyz says so, so that no new traffic is sent here.
    pub draining: std::sync::atomic::AtomicBool,
}

impl ServerContext {
    pub fn new(config: Config, store: Arc<dyn MailStore>) -> Arc<Self> {
        Self::with_security(config, store, None, None)
    }

    pub fn with_security(
        config: Config,
        store: Arc<dyn MailStore>,
        tls: Option<TlsAcceptor>,
        bearer: Option<Arc<BearerValidator>>,
    ) -> Arc<Self> {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        // Every store call of the server goes through the timing decorator, the authenticator's too.
        let store: Arc<dyn MailStore> = Arc::new(crate::store::timed::Timed::new(store, metrics.store.clone()));
        let mut auth = Authenticator::new(store.clone(), config.auth_fail_delay, config.scram_iterations)
            .with_failure_metrics(metrics.auth_failures.clone());
        let oauth = bearer.is_some();
        if let Some(validator) = bearer {
            auth = auth.with_bearer(validator);
        }
        let accounts = Arc::new(accounts::KnownAccounts::new(config.account_cache_ttl));
        Arc::new(Self {
            config,
            store,
            auth,
            accounts,
            reaper: Default::default(),
            metrics,
            registry,
            repair: Default::default(),
            tls,
            oauth,
            draining: Default::default(),
        })
    }
}
