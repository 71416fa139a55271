//! The Cassandra backend: multi-datacenter, token-aware, pinned to the local datacenter, and
//! without a single lightweight transaction. See `docs/adr/` for why the tables look as they do.

/// Keyspace and migrations live in the `schema` crate, shared with the operator.
pub use schema::cassandra as migrate;
mod errors;
mod listing;
mod retry;
mod scan;
mod statements;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{future::try_join_all, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::client::PoolSize;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::Consistency;
use scylla::value::CqlTimeuuid;

use super::{Account, ContentRef, ListingEntry, MailStore, RepairProgress, Result, StoreError};
use crate::dedup::DeliveryKey;
use crate::message_id::MessageId;
use statements::Statements;

/// How to reach the cluster and at which consistency to work.
#[derive(Debug, Clone)]
pub struct CassandraConfig {
    pub contact_points: Vec<String>,
    pub local_dc: String,
    pub keyspace: String,
    pub read_consistency: Consistency,
    pub write_consistency: Consistency,
    pub request_timeout: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS on the native protocol (checked when the configuration was resolved).
    pub tls: Option<schema::tls::TlsMaterial>,
}

/// The driver's value of a configured level (the contract crate knows no driver).
pub fn consistency(level: pop3d_config::ConsistencyLevel) -> Consistency {
    use pop3d_config::ConsistencyLevel as L;
    match level {
        L::LocalQuorum => Consistency::LocalQuorum,
        L::LocalOne => Consistency::LocalOne,
        L::Quorum => Consistency::Quorum,
        L::EachQuorum => Consistency::EachQuorum,
        L::One => Consistency::One,
        L::Two => Consistency::Two,
        L::Three => Consistency::Three,
        L::All => Consistency::All,
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn timeuuid(id: MessageId) -> CqlTimeuuid {
    CqlTimeuuid::from(id.uuid())
}

fn message_id(t: CqlTimeuuid) -> Result<MessageId> {
    MessageId::from_uuid(t.into()).ok_or_else(|| StoreError::Corrupt("message_id is not a version-1 UUID".into()))
}

pub struct CassandraStore {
    session: Session,
    s: Statements,
}

/// Connections to each node. The driver's default for Cassandra is one, and then every content
/// chunk, listing write and read of the whole server shares one CQL stream per node.
const CONNECTIONS_PER_NODE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(4).unwrap();

/// Opens a driver session pinned to the local datacenter (no cross-DC request on any path).
pub async fn connect(config: &CassandraConfig) -> Result<Session> {
    let policy = DefaultPolicy::builder()
        .prefer_datacenter(config.local_dc.clone())
        .token_aware(true)
        .permit_dc_failover(false)
        .build();
    let profile = ExecutionProfile::builder()
        .consistency(config.read_consistency)
        .load_balancing_policy(policy)
        .request_timeout(Some(config.request_timeout))
        .retry_policy(std::sync::Arc::new(retry::RetryLostReplica))
        // Only conditional statements use a serial consistency and we issue none; unset it so no
        // request can ever carry SERIAL/LOCAL_SERIAL.
        .serial_consistency(None)
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .connection_timeout(Duration::from_secs(5))
        .pool_size(PoolSize::PerHost(CONNECTIONS_PER_NODE))
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user, password);
    }
    if let Some(tls) = &config.tls {
        let context = schema::tls::client_config(tls).map_err(|e| StoreError::Misconfigured(e.to_string()))?;
        builder = builder.tls_context(Some(context));
    }
    let session = builder
        .build()
        .await
        .map_err(|e| unavailable(format!("cannot connect to Cassandra at {:?}: {e}", config.contact_points)))?;
    check_local_dc(&session, &config.local_dc)?;
    Ok(session)
}

/// With DC failover off, a misspelt local DC makes every request fail with an opaque "empty plan";
/// say what is wrong at start-up instead.
fn check_local_dc(session: &Session, local_dc: &str) -> Result<()> {
    let state = session.get_cluster_state();
    let mut dcs: Vec<&str> = state.get_nodes_info().iter().filter_map(|n| n.datacenter.as_deref()).collect();
    if dcs.contains(&local_dc) {
        return Ok(());
    }
    dcs.sort_unstable();
    dcs.dedup();
    Err(StoreError::Misconfigured(format!(
        "no Cassandra node in local datacenter {local_dc:?}; the cluster has {dcs:?} (check --local-dc)"
    )))
}

impl CassandraStore {
    async fn read_secret(&self, name: &str) -> Result<Option<[u8; 32]>> {
        let result = self.session.execute_unpaged(&self.s.get_secret, (name,)).await.map_err(errors::execution)?;
        let rows = result.into_rows_result().map_err(errors::failed)?;
        let row = rows.maybe_first_row::<(Option<Vec<u8>>,)>().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        match row.and_then(|(v,)| v) {
            Some(v) => {
                v.try_into().map(Some).map_err(|_| StoreError::Corrupt(format!("server secret {name} is not 32 bytes")))
            }
            None => Ok(None),
        }
    }

    /// Connects and checks the schema is there and current; the server never creates it.
    pub async fn open(config: &CassandraConfig) -> Result<Self> {
        let session = connect(config).await?;
        let ks = &config.keyspace;
        let version = migrate::applied_versions(&session, ks).await.map_err(|e| match e {
            migrate::MigrateError::MissingKeyspace(_) => StoreError::Misconfigured(format!(
                "keyspace {ks} does not exist: create it with `pop3d migrate --keyspace {ks} ...`"
            )),
            other => unavailable(other),
        })?;
        let latest = schema::latest_version();
        if version.last().copied().unwrap_or(0) < latest {
            return Err(StoreError::Misconfigured(format!(
                "keyspace {ks} is at schema version {}, this server needs {latest}: run `pop3d migrate`",
                version.last().copied().unwrap_or(0)
            )));
        }
        let s = Statements::prepare(&session, ks, config.read_consistency, config.write_consistency)
            .await
            .map_err(unavailable)?;
        Ok(Self { session, s })
    }
}

#[async_trait]
impl MailStore for CassandraStore {
    fn backend(&self) -> &'static str {
        "cassandra"
    }

    async fn ping(&self) -> Result<()> {
        self.session
            .execute_unpaged(&self.s.get_account, ("ping@readiness.invalid",))
            .await
            .map_err(errors::execution)?;
        Ok(())
    }

    async fn put_account(&self, account: &Account) -> Result<()> {
        let values = (
            &account.address,
            &account.password_hash,
            &account.scram_sha256,
            account.quota.map(|q| i64::try_from(q).unwrap_or(i64::MAX)),
        );
        self.session.execute_unpaged(&self.s.put_account, values).await.map_err(errors::execution)?;
        Ok(())
    }

    async fn get_account(&self, address: &str) -> Result<Option<Account>> {
        let result = self.session.execute_unpaged(&self.s.get_account, (address,)).await.map_err(errors::execution)?;
        let rows = result.into_rows_result().map_err(errors::failed)?;
        let row = rows
            .maybe_first_row::<(String, Option<String>, Option<String>, Option<i64>)>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(row.map(|(address, hash, scram, quota)| Account {
            address,
            password_hash: hash.unwrap_or_default(),
            scram_sha256: scram,
            quota: quota.map(|q| q.max(0) as u64),
        }))
    }

    async fn delete_account(&self, address: &str) -> Result<()> {
        self.session.execute_unpaged(&self.s.delete_account, (address,)).await.map_err(errors::execution)?;
        Ok(())
    }

    async fn server_secret(&self, name: &str) -> Result<[u8; 32]> {
        if let Some(secret) = self.read_secret(name).await? {
            return Ok(secret);
        }
        let fresh: [u8; 32] = rand::random();
        self.session.execute_unpaged(&self.s.put_secret, (name, fresh.as_slice())).await.map_err(errors::execution)?;
        // Read back: another server may have written a greater value at the same moment.
        self.read_secret(name)
            .await?
            .ok_or_else(|| StoreError::Unavailable(format!("server secret {name} not readable after writing it")))
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        let pager = self.session.execute_iter(self.s.list_accounts.clone(), ()).await.map_err(errors::pager)?;
        let mut rows = pager.rows_stream::<(String,)>().map_err(errors::failed)?;
        let mut out = Vec::new();
        while let Some((address,)) = rows.try_next().await.map_err(errors::next_row)? {
            out.push(address);
        }
        Ok(out)
    }

    async fn put_chunk(&self, mailbox: &str, id: MessageId, index: u32, data: Bytes) -> Result<()> {
        let values = (timeuuid(id), index as i32, mailbox, data.as_ref());
        self.session.execute_unpaged(&self.s.put_chunk, values).await.map_err(errors::execution)?;
        Ok(())
    }

    async fn link(&self, mailbox: &str, entry: ListingEntry) -> Result<()> {
        let values = (mailbox, timeuuid(entry.id), entry.size as i64);
        self.session.execute_unpaged(&self.s.link, values).await.map_err(errors::execution)?;
        Ok(())
    }

    async fn link_remembered(
        &self,
        mailbox: &str,
        entry: ListingEntry,
        key: &DeliveryKey,
        window: Duration,
    ) -> Result<()> {
        // Both tables are partitioned by mailbox, so this unlogged batch is one mutation of one
        // partition key: each replica applies the row and its record together or not at all (no
        // batchlog, no LWT), in one request instead of two.
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.append_statement(self.s.link.clone());
        batch.append_statement(self.s.remember_delivery.clone());
        batch.set_consistency(self.s.link.get_consistency().unwrap_or(Consistency::LocalQuorum));
        batch.set_is_idempotent(true);
        // Cassandra refuses a TTL over 20 years.
        let ttl = window.as_secs().clamp(1, 630_720_000) as i32;
        let row = (mailbox, timeuuid(entry.id), entry.size as i64);
        let record = (mailbox, key.0.as_slice(), timeuuid(entry.id), ttl);
        self.session.batch(&batch, (row, record)).await.map_err(errors::execution)?;
        Ok(())
    }

    async fn recent_delivery(&self, mailbox: &str, key: &DeliveryKey) -> Result<Option<MessageId>> {
        let values = (mailbox, key.0.as_slice());
        let result = self.session.execute_unpaged(&self.s.recent_delivery, values).await.map_err(errors::execution)?;
        let rows = result.into_rows_result().map_err(errors::failed)?;
        match rows.maybe_first_row::<(CqlTimeuuid,)>().map_err(|e| StoreError::Corrupt(e.to_string()))? {
            Some((id,)) => Ok(Some(message_id(id)?)),
            None => Ok(None),
        }
    }

    async fn listing(&self, mailbox: &str) -> Result<Vec<ListingEntry>> {
        let floor = self.low_watermark(mailbox).await?;
        self.listing_from_floor(mailbox, floor).await
    }

    async fn get_chunk(&self, id: MessageId, index: u32) -> Result<Option<Bytes>> {
        let result = self
            .session
            .execute_unpaged(&self.s.get_chunk, (timeuuid(id), index as i32))
            .await
            .map_err(errors::execution)?;
        let rows = result.into_rows_result().map_err(errors::failed)?;
        let row = rows.maybe_first_row::<(Option<Vec<u8>>,)>().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(row.map(|(data,)| Bytes::from(data.unwrap_or_default())))
    }

    async fn unlink(&self, mailbox: &str, ids: &[MessageId]) -> Result<()> {
        // One unlogged batch per slice of rows: a single partition, so a single mutation.
        for slice in ids.chunks(500) {
            let mut batch = Batch::new(BatchType::Unlogged);
            let mut values = Vec::with_capacity(slice.len());
            for id in slice {
                batch.append_statement(self.s.unlink.clone());
                values.push((mailbox, timeuuid(*id)));
            }
            batch.set_consistency(self.s.unlink.get_consistency().unwrap_or(Consistency::LocalQuorum));
            batch.set_is_idempotent(true);
            self.session.batch(&batch, values).await.map_err(errors::execution)?;
        }
        Ok(())
    }

    async fn delete_content(&self, ids: &[MessageId]) -> Result<()> {
        // Different partitions: concurrent single deletes, a few at a time. The reaper calls this
        // behind QUIT replies; with 64 at a time its burst queued in front of the next sessions'
        // QUIT batches on the same nodes (QUIT p99 127-341 ms against 56-123 ms with 8, four
        // interleaved bench runs each), and 8 still delete thousands a second.
        for slice in ids.chunks(8) {
            try_join_all(slice.iter().map(|id| self.session.execute_unpaged(&self.s.delete_content, (timeuuid(*id),))))
                .await
                .map_err(errors::execution)?;
        }
        Ok(())
    }

    async fn scan_content(&self, cursor: Option<String>, limit: usize) -> Result<(Vec<ContentRef>, Option<String>)> {
        self.scan_content_by_token(cursor, limit).await
    }

    async fn has_listing(&self, mailbox: &str, id: MessageId) -> Result<bool> {
        let result = self
            .session
            .execute_unpaged(&self.s.has_listing, (mailbox, timeuuid(id)))
            .await
            .map_err(errors::execution)?;
        Ok(result.into_rows_result().map_err(errors::failed)?.rows_num() > 0)
    }

    async fn scan_mailboxes(&self, cursor: Option<String>, limit: usize) -> Result<(Vec<String>, Option<String>)> {
        self.scan_mailboxes_by_token(cursor, limit).await
    }

    async fn set_low_watermark(&self, mailbox: &str, floor: MessageId) -> Result<()> {
        self.session
            .execute_unpaged(&self.s.set_watermark, (timeuuid(floor), mailbox))
            .await
            .map_err(errors::execution)?;
        Ok(())
    }

    async fn live_row_below_watermark(&self, mailbox: &str) -> Result<Option<MessageId>> {
        let Some(floor) = self.low_watermark(mailbox).await? else {
            return Ok(None);
        };
        let result =
            self.session.execute_unpaged(&self.s.listing_below, (mailbox, floor)).await.map_err(errors::execution)?;
        let rows = result.into_rows_result().map_err(errors::failed)?;
        match rows.maybe_first_row::<(CqlTimeuuid,)>().map_err(|e| StoreError::Corrupt(e.to_string()))? {
            Some((id,)) => Ok(Some(message_id(id)?)),
            None => Ok(None),
        }
    }

    async fn load_progress(&self, task: &str) -> Result<Option<RepairProgress>> {
        let result = self.session.execute_unpaged(&self.s.get_progress, (task,)).await.map_err(errors::execution)?;
        let rows = result.into_rows_result().map_err(errors::failed)?;
        let row = rows
            .maybe_first_row::<(Option<String>, Option<String>, Option<i64>, Option<i64>)>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(row.map(|(phase, cursor, checked, fixed)| RepairProgress {
            phase: phase.unwrap_or_default(),
            cursor,
            checked: checked.unwrap_or(0) as u64,
            fixed: fixed.unwrap_or(0) as u64,
        }))
    }

    async fn save_progress(&self, task: &str, p: &RepairProgress) -> Result<()> {
        let values = (task, &p.phase, &p.cursor, p.checked as i64, p.fixed as i64);
        self.session.execute_unpaged(&self.s.put_progress, values).await.map_err(errors::execution)?;
        Ok(())
    }
}

impl CassandraStore {
    async fn low_watermark(&self, mailbox: &str) -> Result<Option<CqlTimeuuid>> {
        let result =
            self.session.execute_unpaged(&self.s.get_watermark, (mailbox,)).await.map_err(errors::execution)?;
        let rows = result.into_rows_result().map_err(errors::failed)?;
        let row = rows.maybe_first_row::<(Option<CqlTimeuuid>,)>().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(row.and_then(|(w,)| w))
    }
}
