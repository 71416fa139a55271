//! The Cassandra side of a Pop3Cluster: one driver session per cluster (cached: connecting costs
//! a round of handshakes with every node), and the keyspace step, which runs the same code as
//! `pop3d migrate` (`schema::cassandra`).
//!
//! The step is cheap when nothing changed (two or three reads of `system_schema`, no DDL), so it
//! runs on every reconcile; that also corrects a replication someone changed by hand in CQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use schema::cassandra as migrate;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::Consistency;

use crate::{Error, Result};

/// User name and password for PasswordAuthenticator, read from the credentials Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// Where to connect: every contact point of the resource, preferring one datacenter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub contact_points: Vec<String>,
    pub preferred_dc: String,
    pub credentials: Option<Credentials>,
    /// TLS material from the Secret; a renewal changes the target, so the session is rebuilt.
    pub tls: Option<schema::tls::TlsMaterial>,
}

/// Sessions by cluster key (`namespace/name`), replaced when the target changes.
#[derive(Default)]
pub struct Sessions {
    inner: tokio::sync::Mutex<HashMap<String, (Target, Arc<Session>)>>,
}

impl Sessions {
    pub async fn get(&self, key: &str, target: &Target) -> Result<Arc<Session>> {
        let mut map = self.inner.lock().await;
        if let Some((t, s)) = map.get(key) {
            if t == target {
                return Ok(s.clone());
            }
        }
        let session = Arc::new(connect(target).await?);
        map.insert(key.to_owned(), (target.clone(), session.clone()));
        Ok(session)
    }

    /// Drops the session of a deleted (or failing) cluster.
    pub async fn forget(&self, key: &str) {
        self.inner.lock().await.remove(key);
    }
}

async fn connect(target: &Target) -> Result<Session> {
    // DDL and system_schema reads only: failing over to another DC is fine here (unlike pop3d,
    // which must never leave its own DC), and schema changes want a coordinator that is up.
    let policy =
        DefaultPolicy::builder().prefer_datacenter(target.preferred_dc.clone()).permit_dc_failover(true).build();
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(None)
        .load_balancing_policy(policy)
        .request_timeout(Some(Duration::from_secs(15)))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&target.contact_points)
        .connection_timeout(Duration::from_secs(5))
        .schema_agreement_timeout(Duration::from_secs(30))
        .default_execution_profile_handle(profile.into_handle());
    if let Some(c) = &target.credentials {
        builder = builder.user(&c.username, &c.password);
    }
    if let Some(tls) = &target.tls {
        let context = schema::tls::client_config(tls).map_err(|e| Error::Cassandra(e.to_string()))?;
        builder = builder.tls_context(Some(context));
    }
    match tokio::time::timeout(Duration::from_secs(30), builder.build()).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(Error::Cassandra(format!("cannot connect to {:?}: {e}", target.contact_points))),
        Err(_) => Err(Error::Cassandra(format!("connecting to {:?} timed out", target.contact_points))),
    }
}

/// The Cassandra datacenters a replication change gave replicas that had none: they hold none of
/// the older data until rebuilt or repaired.
pub fn added_datacenters(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let has_replicas = |f: Option<&String>| f.is_some_and(|f| f.trim() != "0");
    after.keys().filter(|dc| has_replicas(after.get(*dc)) && !has_replicas(before.get(*dc))).cloned().collect()
}

/// What the keyspace step found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub created: bool,
    /// (before, after) per-DC factors when the replication was altered.
    pub replication_changed: Option<(BTreeMap<String, String>, BTreeMap<String, String>)>,
    pub applied: Vec<u32>,
    /// Per-DC factors as Cassandra reports them afterwards (all DCs, listed or not).
    pub replication: BTreeMap<String, String>,
    pub schema_version: u32,
}

/// Creates the keyspace or aligns the listed DCs' replication (never touching others), waits
/// for schema agreement, applies pending migrations once, and reads back the result.
pub async fn ensure(session: &Session, keyspace: &str, replication: &BTreeMap<String, i32>) -> Result<Outcome> {
    let wanted: BTreeMap<String, u32> = replication
        .iter()
        .map(|(dc, rf)| u32::try_from(*rf).map(|rf| (dc.clone(), rf)))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::InvalidSpec("replication factors must be positive".into()))?;
    let report = migrate::ensure_keyspace(session, keyspace, &wanted).await?;
    let applied = migrate::apply_migrations(session, keyspace).await?;
    let replication = migrate::current_replication(session, keyspace)
        .await?
        .map(|r| migrate::factors(&r))
        .ok_or_else(|| migrate::MigrateError::MissingKeyspace(keyspace.to_owned()))?;
    let schema_version = migrate::applied_versions(session, keyspace).await?.last().copied().unwrap_or(0);
    Ok(Outcome {
        created: report.keyspace_created,
        replication_changed: report.replication_changed,
        applied,
        replication,
        schema_version,
    })
}

/// Drops the keyspace (deletion policy `Delete` only).
pub async fn drop(session: &Session, keyspace: &str) -> Result<()> {
    Ok(migrate::drop_keyspace(session, keyspace).await?)
}

/// `{dc1: 1} -> {dc1: 3, dc2: 1}` for messages and events.
pub fn describe_change(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let show = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
    format!("{{{}}} -> {{{}}}", show(before), show(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_datacenters_are_those_without_replicas_before() {
        let m = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(added_datacenters(&m(&[("dc1", "1")]), &m(&[("dc1", "1"), ("dc2", "1")])), ["dc2"]);
        assert_eq!(added_datacenters(&m(&[("dc1", "1"), ("dc2", "0")]), &m(&[("dc1", "1"), ("dc2", "2")])), ["dc2"]);
        assert!(
            added_datacenters(&m(&[("dc1", "1"), ("dc2", "1")]), &m(&[("dc1", "3"), ("dc2", "2")])).is_empty(),
            "a factor increase is a repair, not an addition"
        );
    }

    #[test]
    fn change_description_and_redacted_password() {
        let a: BTreeMap<String, String> = [("dc1".into(), "1".into())].into();
        let b: BTreeMap<String, String> = [("dc1".into(), "3".into()), ("dc2".into(), "1".into())].into();
        assert_eq!(describe_change(&a, &b), "{dc1: 1} -> {dc1: 3, dc2: 1}");
        let c = Credentials { username: "u".into(), password: "secret".into() };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
