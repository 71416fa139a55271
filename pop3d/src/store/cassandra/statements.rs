//! Every CQL statement the server runs, prepared once at start-up. None is conditional (no `IF`)
//! and none uses serial consistency: the storage contract forbids lightweight transactions.

use scylla::client::session::Session;
use scylla::errors::PrepareError;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;

pub struct Statements {
    pub get_account: PreparedStatement,
    pub put_account: PreparedStatement,
    pub delete_account: PreparedStatement,
    pub list_accounts: PreparedStatement,
    pub put_chunk: PreparedStatement,
    pub link: PreparedStatement,
    pub get_watermark: PreparedStatement,
    pub set_watermark: PreparedStatement,
    pub listing_from: PreparedStatement,
    pub listing_between: PreparedStatement,
    pub listing_below: PreparedStatement,
    pub has_listing: PreparedStatement,
    pub get_chunk: PreparedStatement,
    pub unlink: PreparedStatement,
    pub delete_content: PreparedStatement,
    pub scan_content: PreparedStatement,
    pub scan_mailboxes: PreparedStatement,
    pub accounts_in_range: PreparedStatement,
    pub mailbox_states_in_range: PreparedStatement,
    pub get_secret: PreparedStatement,
    pub put_secret: PreparedStatement,
    pub get_progress: PreparedStatement,
    pub put_progress: PreparedStatement,
    pub remember_delivery: PreparedStatement,
    pub recent_delivery: PreparedStatement,
}

/// Page size of listing reads: one round trip for typical mailboxes, bounded memory for huge ones.
pub const LISTING_PAGE: i32 = 5000;

impl Statements {
    pub async fn prepare(
        session: &Session,
        ks: &str,
        read: Consistency,
        write: Consistency,
    ) -> Result<Self, PrepareError> {
        let prep = |cql: String, consistency: Consistency, idempotent: bool| async move {
            let mut p = session.prepare(cql).await?;
            p.set_consistency(consistency);
            // Every statement here is idempotent (upserts, deletes, reads), so retries are safe.
            p.set_is_idempotent(idempotent);
            Ok::<_, PrepareError>(p)
        };
        let r = |cql: String| prep(cql, read, true);
        let w = |cql: String| prep(cql, write, true);
        let mut listing_from =
            r(format!("SELECT message_id, size FROM {ks}.listing WHERE mailbox = ? AND message_id >= ?")).await?;
        listing_from.set_page_size(LISTING_PAGE);
        let mut listing_between = r(format!(
            "SELECT message_id, size FROM {ks}.listing WHERE mailbox = ? AND message_id >= ? AND message_id < ?"
        ))
        .await?;
        listing_between.set_page_size(LISTING_PAGE);
        let mut list_accounts = r(format!("SELECT address FROM {ks}.accounts")).await?;
        list_accounts.set_page_size(LISTING_PAGE);
        Ok(Self {
            get_account: r(format!(
                "SELECT address, password_hash, scram_sha256, quota_octets FROM {ks}.accounts WHERE address = ?"
            ))
            .await?,
            put_account: w(format!(
                "INSERT INTO {ks}.accounts (address, password_hash, scram_sha256, quota_octets) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            delete_account: w(format!("DELETE FROM {ks}.accounts WHERE address = ?")).await?,
            list_accounts,
            put_chunk: w(format!("INSERT INTO {ks}.content (message_id, chunk, mailbox, data) VALUES (?, ?, ?, ?)")).await?,
            link: w(format!("INSERT INTO {ks}.listing (mailbox, message_id, size) VALUES (?, ?, ?)")).await?,
            get_watermark: r(format!("SELECT low_watermark FROM {ks}.mailbox_state WHERE mailbox = ?")).await?,
            set_watermark: w(format!("UPDATE {ks}.mailbox_state SET low_watermark = ? WHERE mailbox = ?")).await?,
            listing_from,
            listing_between,
            listing_below: r(format!(
                "SELECT message_id FROM {ks}.listing WHERE mailbox = ? AND message_id < ? LIMIT 1"
            ))
            .await?,
            has_listing: r(format!("SELECT message_id FROM {ks}.listing WHERE mailbox = ? AND message_id = ?")).await?,
            get_chunk: r(format!("SELECT data FROM {ks}.content WHERE message_id = ? AND chunk = ?")).await?,
            unlink: w(format!("DELETE FROM {ks}.listing WHERE mailbox = ? AND message_id = ?")).await?,
            delete_content: w(format!("DELETE FROM {ks}.content WHERE message_id = ?")).await?,
            // Repair's scans walk the ring by token range (see scan.rs): lo, hi, limit.
            scan_content: r(format!(
                "SELECT DISTINCT message_id, mailbox, token(message_id) FROM {ks}.content \
                 WHERE token(message_id) > ? AND token(message_id) <= ? LIMIT ?"
            ))
            .await?,
            scan_mailboxes: r(format!(
                "SELECT DISTINCT mailbox, token(mailbox) FROM {ks}.listing \
                 WHERE token(mailbox) > ? AND token(mailbox) <= ? LIMIT ?"
            ))
            .await?,
            accounts_in_range: r(format!(
                "SELECT address, token(address) FROM {ks}.accounts \
                 WHERE token(address) > ? AND token(address) <= ? LIMIT ?"
            ))
            .await?,
            mailbox_states_in_range: r(format!(
                "SELECT mailbox, token(mailbox) FROM {ks}.mailbox_state \
                 WHERE token(mailbox) > ? AND token(mailbox) <= ? LIMIT ?"
            ))
            .await?,
            get_secret: r(format!("SELECT value FROM {ks}.server_secrets WHERE name = ?")).await?,
            // A fixed timestamp: concurrent first writers tie, and a tie keeps the greater value on
            // every replica, so all servers end up with one secret without a conditional write.
            put_secret: w(format!("INSERT INTO {ks}.server_secrets (name, value) VALUES (?, ?) USING TIMESTAMP 1")).await?,
            get_progress: r(format!("SELECT phase, cursor, checked, fixed FROM {ks}.repair_progress WHERE task = ?")).await?,
            put_progress: w(format!(
                "INSERT INTO {ks}.repair_progress (task, phase, cursor, checked, fixed, updated_at) VALUES (?, ?, ?, ?, ?, toTimestamp(now()))"
            ))
            .await?,
            remember_delivery: w(format!(
                "INSERT INTO {ks}.recent_deliveries (mailbox, delivery_key, message_id) VALUES (?, ?, ?) USING TTL ?"
            ))
            .await?,
            recent_delivery: r(format!(
                "SELECT message_id FROM {ks}.recent_deliveries WHERE mailbox = ? AND delivery_key = ?"
            ))
            .await?,
        })
    }
}
