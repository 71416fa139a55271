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
use scylla::cluster::Node;
use scylla::policies::load_balancing::{DefaultPolicy, NodeIdentifier, SingleTargetLoadBalancingPolicy};
use scylla::statement::unprepared::Statement;
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

fn factor(map: &BTreeMap<String, String>, dc: &str) -> u32 {
    map.get(dc).and_then(|f| f.trim().parse().ok()).unwrap_or(0)
}

/// The datacenters whose factor a replication change lowered: `nodetool cleanup` frees their
/// nodes of the ranges they no longer replicate.
pub fn lowered_datacenters(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    after.keys().filter(|dc| factor(after, dc) < factor(before, dc)).cloned().collect()
}

/// Whether a change raised some factor (or added a datacenter): new replicas lack older mail.
pub fn raised(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> bool {
    after.keys().any(|dc| factor(after, dc) > factor(before, dc))
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

/// The spec's factors as the schema code takes them (the CRD keeps them 1-9).
pub fn wanted(replication: &BTreeMap<String, i32>) -> Result<BTreeMap<String, u32>> {
    replication
        .iter()
        .map(|(dc, rf)| u32::try_from(*rf).map(|rf| (dc.clone(), rf)))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::InvalidSpec("replication factors must be positive".into()))
}

/// The keyspace's per-DC factors, or `None` when it does not exist.
pub async fn current(session: &Session, keyspace: &str) -> Result<Option<BTreeMap<String, String>>> {
    Ok(migrate::current_replication(session, keyspace).await?.map(|r| migrate::factors(&r)))
}

/// Creates the keyspace or aligns the replication of the DCs in `write` (never touching others),
/// waits for schema agreement, applies pending migrations once, and reads back the result.
pub async fn ensure(session: &Session, keyspace: &str, write: &BTreeMap<String, u32>) -> Result<Outcome> {
    let report = migrate::ensure_keyspace(session, keyspace, write).await?;
    let applied = migrate::apply_migrations(session, keyspace).await?;
    let mut outcome =
        read(session, keyspace).await?.ok_or_else(|| migrate::MigrateError::MissingKeyspace(keyspace.to_owned()))?;
    outcome.created = report.keyspace_created;
    outcome.replication_changed = report.replication_changed;
    outcome.applied = applied;
    Ok(outcome)
}

/// The keyspace as it is, without writing anything (a refused step); `None` when it is missing.
pub async fn read(session: &Session, keyspace: &str) -> Result<Option<Outcome>> {
    let Some(replication) = current(session, keyspace).await? else { return Ok(None) };
    let schema_version = migrate::applied_versions(session, keyspace).await?.last().copied().unwrap_or(0);
    Ok(Some(Outcome { created: false, replication_changed: None, applied: vec![], replication, schema_version }))
}

/// Cassandra nodes per datacenter, as one node sees the ring: its own row of `system.local` and
/// the rows of `system.peers_v2` (`system.peers` before Cassandra 4), both asked of the same node
/// (each node answers these tables about itself, so two nodes' answers would not add up). Nodes
/// that are down still count: they hold replicas. The first node that answers is used.
pub async fn node_counts(session: &Session) -> Result<BTreeMap<String, u32>> {
    let nodes = session.get_cluster_state().get_nodes_info().to_vec();
    let mut last_error = Error::Cassandra("no Cassandra node known".into());
    for node in nodes {
        match counts_seen_by(session, node).await {
            Ok(counts) => return Ok(counts),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

async fn counts_seen_by(session: &Session, node: Arc<Node>) -> Result<BTreeMap<String, u32>> {
    let policy = SingleTargetLoadBalancingPolicy::new(NodeIdentifier::Node(node), None);
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::One)
        .load_balancing_policy(policy)
        .request_timeout(Some(Duration::from_secs(10)))
        .build()
        .into_handle();
    let ask = |cql: &str| {
        let mut statement = Statement::new(cql);
        statement.set_execution_profile_handle(Some(profile.clone()));
        statement
    };
    let cass = |e: &dyn std::fmt::Display| Error::Cassandra(format!("counting nodes: {e}"));
    let mut dcs: Vec<Option<String>> = Vec::new();
    for cql in ["SELECT data_center FROM system.local", "SELECT data_center FROM system.peers_v2"] {
        let result = match session.query_unpaged(ask(cql), ()).await {
            Ok(r) => r,
            // Cassandra 3 has no peers_v2.
            Err(_) if cql.ends_with("peers_v2") => {
                session.query_unpaged(ask("SELECT data_center FROM system.peers"), ()).await.map_err(|e| cass(&e))?
            }
            Err(e) => return Err(cass(&e)),
        };
        let rows = result.into_rows_result().map_err(|e| cass(&e))?;
        for row in rows.rows::<(Option<String>,)>().map_err(|e| cass(&e))? {
            dcs.push(row.map_err(|e| cass(&e))?.0);
        }
    }
    let mut counts = BTreeMap::new();
    // A peer whose datacenter is not known yet (still joining) cannot hold replicas of any DC.
    for dc in dcs.into_iter().flatten() {
        *counts.entry(dc).or_insert(0) += 1;
    }
    Ok(counts)
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
    fn lowered_and_raised() {
        let m = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let before = m(&[("dc1", "3"), ("dc2", "2")]);
        assert_eq!(lowered_datacenters(&before, &m(&[("dc1", "2"), ("dc2", "2")])), ["dc1"]);
        assert!(!raised(&before, &m(&[("dc1", "2"), ("dc2", "2")])), "a decrease alone needs no repair");
        assert!(raised(&before, &m(&[("dc1", "2"), ("dc2", "3")])));
        assert!(raised(&before, &m(&[("dc1", "3"), ("dc2", "2"), ("dc3", "1")])));
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
