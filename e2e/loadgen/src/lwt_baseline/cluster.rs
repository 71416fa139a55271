//! Where the baseline runs: the cluster, its sessions (one per local datacenter) and its schema.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::{Consistency, SerialConsistency};

use super::{Db, Levels, Remote};
use crate::netns;

/// The baseline's schema; DDL `IF NOT EXISTS` is no LWT.
const TABLES: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS mailbox_state (mailbox text PRIMARY KEY, next_uid bigint, highest_modseq bigint)",
    "CREATE TABLE IF NOT EXISTS messages (mailbox text, uid bigint, modseq bigint, size int, content blob, \
     PRIMARY KEY (mailbox, uid))",
];

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Serial {
    Serial,
    LocalSerial,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Level {
    LocalQuorum,
    Quorum,
    EachQuorum,
    LocalOne,
    One,
    All,
}

/// The Cassandra cluster the baseline writes to.
#[derive(Args, Clone)]
pub struct Target {
    /// Contact points, HOST:PORT[,..].
    #[arg(long, required = true, value_delimiter = ',')]
    cassandra: Vec<String>,
    /// Local datacenter of the delivering session (token-aware, DC-aware, as pop3d).
    #[arg(long, default_value = "dc1")]
    dc: String,
    #[arg(long, default_value = "popfleet_lwt_baseline")]
    keyspace: String,
    /// Replication of the keyspace when it is created: DC:RF[,..].
    #[arg(long, default_value = "dc1:3,dc2:3")]
    replication: String,
    /// Consistency of the Paxos phases (the reference's errors were at SERIAL).
    #[arg(long, value_enum, default_value = "serial")]
    serial: Serial,
    /// Consistency of the plain reads and writes and of each LWT's commit.
    #[arg(long, value_enum, default_value = "local-quorum")]
    consistency: Level,
    /// Datacenter from which odd users read (the reference had half the readers there).
    #[arg(long)]
    read_dc: Option<String>,
    /// Contact points for the --read-dc session (default: --cassandra).
    #[arg(long, value_delimiter = ',', requires = "read_dc")]
    read_cassandra: Vec<String>,
    /// Network namespace (/var/run/netns/NAME; root) the --read-dc session connects from, so
    /// those readers sit on their datacenter's side of the link, as the POP3 readers do.
    #[arg(long, requires = "read_dc")]
    read_netns: Option<String>,
    /// Drop the keyspace and create it again before the run.
    #[arg(long)]
    reset: bool,
}

impl Target {
    fn levels(&self) -> Levels {
        let regular = match self.consistency {
            Level::LocalQuorum => Consistency::LocalQuorum,
            Level::Quorum => Consistency::Quorum,
            Level::EachQuorum => Consistency::EachQuorum,
            Level::LocalOne => Consistency::LocalOne,
            Level::One => Consistency::One,
            Level::All => Consistency::All,
        };
        let serial = match self.serial {
            Serial::Serial => SerialConsistency::Serial,
            Serial::LocalSerial => SerialConsistency::LocalSerial,
        };
        Levels { regular, serial }
    }

    /// For the report's label: what the numbers were measured against.
    pub fn describe(&self) -> String {
        let l = self.levels();
        let reads = self.read_dc.as_deref().map_or(String::new(), |dc| format!(", odd users read in {dc}"));
        format!("{:?}/{:?} from {}{reads}", l.serial, l.regular, self.dc)
    }

    /// The delivering session's statements, and the remote readers' when --read-dc is given;
    /// creates the schema first (after dropping it with --reset).
    pub(super) async fn connect(&self) -> Result<(Arc<Db>, Option<Remote>)> {
        ensure!(identifier(&self.keyspace), "--keyspace must be a plain CQL identifier");
        let levels = self.levels();
        let session = connect(&self.cassandra, &self.dc, levels).await?;
        if self.reset {
            session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", self.keyspace), ()).await?;
        }
        session.query_unpaged(keyspace_ddl(&self.keyspace, &self.replication)?, ()).await?;
        session.use_keyspace(&self.keyspace, false).await?;
        for ddl in TABLES {
            session.query_unpaged(ddl, ()).await?;
        }
        let local = Arc::new(Db::prepare(session, levels).await?);
        let remote = match &self.read_dc {
            Some(dc) => {
                let points = if self.read_cassandra.is_empty() { &self.cassandra } else { &self.read_cassandra };
                let runtime = self.read_netns.as_deref().map(netns::runtime_in).transpose()?;
                // Built on that runtime: the driver opens its connections (and later
                // reconnections) from the tasks it spawns there, so all of them in that namespace.
                let (points, dc, keyspace) = (points.clone(), dc.clone(), self.keyspace.clone());
                let db = netns::spawn_on(runtime.as_ref(), async move {
                    let session = connect(&points, &dc, levels).await?;
                    session.use_keyspace(&keyspace, false).await?;
                    anyhow::Ok(Arc::new(Db::prepare(session, levels).await?))
                })
                .await??;
                Some(Remote { db, runtime })
            }
            None => None,
        };
        Ok((local, remote))
    }
}

/// A session pinned to `dc` and token-aware, built as pop3d builds its own, so that each request
/// goes to a replica in the local datacenter and only Paxos itself crosses to the other.
async fn connect(points: &[String], dc: &str, levels: Levels) -> Result<Session> {
    let policy =
        DefaultPolicy::builder().prefer_datacenter(dc.to_owned()).token_aware(true).permit_dc_failover(false).build();
    let profile = ExecutionProfile::builder()
        .consistency(levels.regular)
        .serial_consistency(Some(levels.serial))
        .load_balancing_policy(policy)
        .build();
    let session = SessionBuilder::new()
        .known_nodes(points)
        .connection_timeout(Duration::from_secs(5))
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .with_context(|| format!("cannot connect to Cassandra at {points:?}"))?;
    // With failover off, a misspelt DC would fail every request with an opaque "empty plan".
    let state = session.get_cluster_state();
    let mut dcs: Vec<&str> = state.get_nodes_info().iter().filter_map(|n| n.datacenter.as_deref()).collect();
    if !dcs.contains(&dc) {
        dcs.sort_unstable();
        dcs.dedup();
        bail!("no Cassandra node in datacenter {dc:?}; the cluster has {dcs:?}");
    }
    Ok(session)
}

fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 48
}

/// `CREATE KEYSPACE` with NetworkTopologyStrategy from "dc1:3,dc2:3".
fn keyspace_ddl(keyspace: &str, replication: &str) -> Result<String> {
    let mut factors = Vec::new();
    for part in replication.split(',') {
        let (dc, rf) = part.trim().split_once(':').context("--replication is DC:RF[,DC:RF..]")?;
        let rf: u32 = rf.trim().parse().ok().filter(|&n| n > 0).context("a replication factor is a positive number")?;
        let dc = dc.trim();
        ensure!(
            !dc.is_empty() && dc.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)),
            "bad datacenter name {dc:?}"
        );
        factors.push(format!("'{dc}': {rf}"));
    }
    Ok(format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{'class': 'NetworkTopologyStrategy', {}}}",
        factors.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_and_replication() {
        assert_eq!(
            keyspace_ddl("popfleet_lwt_baseline", "dc1:3, dc2:3").unwrap(),
            "CREATE KEYSPACE IF NOT EXISTS popfleet_lwt_baseline WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}"
        );
        for bad in ["dc1", "dc1:0", "dc1:x", "d'c:3", ":3"] {
            assert!(keyspace_ddl("ks", bad).is_err(), "{bad}");
        }
        assert!(identifier("popfleet_lwt_baseline"));
        assert!(!identifier("ks; DROP") && !identifier("1ks") && !identifier(""));
    }
}
