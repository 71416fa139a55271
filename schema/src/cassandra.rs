//! Keyspace creation, replication and schema migrations against a live Cassandra cluster.
//!
//! One implementation shared by `pop3d migrate` and the operator, so both agree on what "the
//! keyspace is ready" means. DDL is run by these callers only, never by the serving path.
//! `CREATE ... IF NOT EXISTS` is schema DDL, not a lightweight transaction.
//!
//! Replication rules (the same for both callers):
//! - a missing keyspace is created with NetworkTopologyStrategy and the DCs asked for;
//! - an existing keyspace is read from `system_schema.keyspaces` and ALTERed only when a DC that
//!   was asked for has a different factor; DCs not asked for keep theirs (another team or a DC
//!   being decommissioned may still rely on them), so removing a DC's replicas is a manual step;
//! - every DDL statement is followed by a wait for schema agreement;
//! - a steady-state run issues reads only (no DDL), so it is cheap to repeat on every reconcile.

use std::collections::BTreeMap;

use scylla::client::session::Session;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("keyspace {0} does not exist")]
    MissingKeyspace(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("Cassandra error: {0}")]
    Cassandra(String),
}

fn cass(e: impl std::fmt::Display) -> MigrateError {
    MigrateError::Cassandra(e.to_string())
}

/// `schema_migrations` is read and written at ONE: it must keep working while a datacenter has
/// fewer live nodes than its replication factor (a factor raised before the nodes join, a node
/// down), which is exactly when the operator or `pop3d migrate` runs. A stale read only makes a
/// runner replay migrations, which are idempotent DDL.
fn at_one(cql: String) -> Statement {
    let mut statement = Statement::new(cql);
    statement.set_consistency(Consistency::One);
    statement
}

/// What a migration run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub keyspace_created: bool,
    /// Old and new replication when it was changed: a full repair of the keyspace is then due.
    pub replication_changed: Option<(BTreeMap<String, String>, BTreeMap<String, String>)>,
    pub applied: Vec<u32>,
}

/// Parses `dc1:3,dc2:3`.
pub fn parse_replication(text: &str) -> Result<BTreeMap<String, u32>, MigrateError> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (dc, rf) = part.split_once(':').ok_or_else(|| MigrateError::Invalid(format!("{part}: expected DC:RF")))?;
        let rf: u32 = rf.parse().map_err(|_| MigrateError::Invalid(format!("{part}: RF must be a number")))?;
        if !valid_dc(dc) || rf == 0 || rf > 9 {
            return Err(MigrateError::Invalid(format!("{part}: DC name and an RF of 1 to 9 expected")));
        }
        out.insert(dc.to_owned(), rf);
    }
    if out.is_empty() {
        return Err(MigrateError::Invalid("at least one DC:RF is needed".into()));
    }
    Ok(out)
}

/// DC names end up quoted inside a CQL map literal: allow only characters that cannot break it.
fn valid_dc(dc: &str) -> bool {
    !dc.is_empty() && dc.len() <= 64 && dc.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The keyspace's replication options, or `None` when it does not exist.
pub async fn current_replication(
    session: &Session,
    ks: &str,
) -> Result<Option<BTreeMap<String, String>>, MigrateError> {
    let result = session
        .query_unpaged("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?", (ks,))
        .await
        .map_err(cass)?;
    let rows = result.into_rows_result().map_err(cass)?;
    Ok(rows.maybe_first_row::<(BTreeMap<String, String>,)>().map_err(cass)?.map(|(r,)| r))
}

async fn migrations_table_exists(session: &Session, ks: &str) -> Result<bool, MigrateError> {
    let tables = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'schema_migrations'",
            (ks,),
        )
        .await
        .map_err(cass)?
        .into_rows_result()
        .map_err(cass)?
        .rows_num();
    Ok(tables > 0)
}

/// Versions recorded in `schema_migrations`, ascending.
pub async fn applied_versions(session: &Session, ks: &str) -> Result<Vec<u32>, MigrateError> {
    if current_replication(session, ks).await?.is_none() {
        return Err(MigrateError::MissingKeyspace(ks.to_owned()));
    }
    if !migrations_table_exists(session, ks).await? {
        return Ok(Vec::new());
    }
    let result =
        session.query_unpaged(at_one(format!("SELECT version FROM {ks}.schema_migrations")), ()).await.map_err(cass)?;
    let rows = result.into_rows_result().map_err(cass)?;
    let mut versions = Vec::new();
    for row in rows.rows::<(i32,)>().map_err(cass)? {
        versions.push(row.map_err(cass)?.0 as u32);
    }
    versions.sort_unstable();
    Ok(versions)
}

/// The per-DC factors of a replication map (the `class` entry removed).
pub fn factors(replication: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    replication.iter().filter(|(k, _)| k.as_str() != "class").map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn replication_literal(map: &BTreeMap<String, String>) -> String {
    let mut parts = vec!["'class': 'NetworkTopologyStrategy'".to_owned()];
    parts.extend(map.iter().filter(|(k, _)| k.as_str() != "class").map(|(dc, rf)| format!("'{dc}': '{rf}'")));
    format!("{{{}}}", parts.join(", "))
}

async fn ddl(session: &Session, cql: String) -> Result<(), MigrateError> {
    session.query_unpaged(cql, ()).await.map_err(cass)?;
    session.await_schema_agreement().await.map_err(cass)?;
    Ok(())
}

/// Creates the keyspace (NetworkTopologyStrategy) or aligns the replication of the DCs given,
/// leaving DCs not named untouched. Returns (created, Some((before, after)) when altered).
pub async fn ensure_keyspace(
    session: &Session,
    ks: &str,
    replication: &BTreeMap<String, u32>,
) -> Result<MigrationReport, MigrateError> {
    if !crate::valid_keyspace(ks) {
        return Err(MigrateError::Invalid(format!("{ks} is not a valid keyspace name")));
    }
    if let Some(dc) = replication.keys().find(|dc| !valid_dc(dc)) {
        return Err(MigrateError::Invalid(format!("{dc:?} is not a valid datacenter name")));
    }
    let mut report = MigrationReport::default();
    let wanted: BTreeMap<String, String> = replication.iter().map(|(dc, rf)| (dc.clone(), rf.to_string())).collect();
    match current_replication(session, ks).await? {
        None => {
            ddl(
                session,
                format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}", replication_literal(&wanted)),
            )
            .await?;
            report.keyspace_created = true;
        }
        Some(current) => {
            if !current.get("class").is_some_and(|c| c.ends_with("NetworkTopologyStrategy")) {
                return Err(MigrateError::Invalid(format!("keyspace {ks} does not use NetworkTopologyStrategy")));
            }
            let before = factors(&current);
            let mut merged = before.clone();
            merged.extend(wanted);
            if merged != before {
                ddl(session, format!("ALTER KEYSPACE {ks} WITH replication = {}", replication_literal(&merged)))
                    .await?;
                report.replication_changed = Some((before, merged));
            }
        }
    }
    Ok(report)
}

/// Applies the migrations not yet recorded in `schema_migrations`, each once, waiting for schema
/// agreement after every statement. Returns the versions applied (empty when up to date).
pub async fn apply_migrations(session: &Session, ks: &str) -> Result<Vec<u32>, MigrateError> {
    if !crate::valid_keyspace(ks) {
        return Err(MigrateError::Invalid(format!("{ks} is not a valid keyspace name")));
    }
    let applied = applied_versions(session, ks).await?;
    let pending: Vec<_> = crate::MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)).collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    if !migrations_table_exists(session, ks).await? {
        ddl(session, crate::MIGRATIONS_TABLE.replacen("schema_migrations", &format!("{ks}.schema_migrations"), 1))
            .await?;
    }
    let mut done = Vec::new();
    for migration in pending {
        for statement in migration.statements() {
            // Statements name tables without a keyspace: run them inside it.
            ddl(session, qualify(&statement, ks)).await?;
        }
        session
            .query_unpaged(
                at_one(format!(
                    "INSERT INTO {ks}.schema_migrations (version, name, applied_at) VALUES (?, ?, toTimestamp(now()))"
                )),
                (migration.version as i32, migration.name),
            )
            .await
            .map_err(cass)?;
        done.push(migration.version);
    }
    Ok(done)
}

/// Prefixes the table of `CREATE TABLE IF NOT EXISTS t` / `ALTER TABLE t` with the keyspace, so
/// migrations do not depend on the session's current keyspace (a shared session may have none).
fn qualify(statement: &str, ks: &str) -> String {
    for prefix in ["CREATE TABLE IF NOT EXISTS ", "ALTER TABLE "] {
        if statement.len() > prefix.len() && statement[..prefix.len()].eq_ignore_ascii_case(prefix) {
            let rest = statement[prefix.len()..].trim_start();
            if rest.split(|c: char| c.is_whitespace() || c == '(').next().is_some_and(|t| !t.contains('.')) {
                return format!("{}{ks}.{rest}", &statement[..prefix.len()]);
            }
        }
    }
    statement.to_owned()
}

/// `ensure_keyspace` then `apply_migrations`: what `pop3d migrate` does. Safe to run again and
/// from several places.
pub async fn migrate(
    session: &Session,
    ks: &str,
    replication: &BTreeMap<String, u32>,
) -> Result<MigrationReport, MigrateError> {
    let mut report = ensure_keyspace(session, ks, replication).await?;
    report.applied = apply_migrations(session, ks).await?;
    Ok(report)
}

/// Drops the keyspace and all mail in it. Only the operator's opt-in `Delete` policy calls this.
pub async fn drop_keyspace(session: &Session, ks: &str) -> Result<(), MigrateError> {
    if !crate::valid_keyspace(ks) {
        return Err(MigrateError::Invalid(format!("{ks} is not a valid keyspace name")));
    }
    ddl(session, format!("DROP KEYSPACE IF EXISTS {ks}")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replication() {
        let r = parse_replication("dc1:3, dc2:1").unwrap();
        assert_eq!(r.get("dc1"), Some(&3));
        assert_eq!(r.get("dc2"), Some(&1));
        for bad in ["", "dc1", "dc1:x", "dc1:0", "d'c:1"] {
            assert!(parse_replication(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replication_literal_is_nts() {
        let m: BTreeMap<String, String> = [("dc1".into(), "3".into())].into();
        assert_eq!(replication_literal(&m), "{'class': 'NetworkTopologyStrategy', 'dc1': '3'}");
    }

    #[test]
    fn statements_are_qualified_with_the_keyspace() {
        assert_eq!(
            qualify("CREATE TABLE IF NOT EXISTS t (a int PRIMARY KEY)", "ks"),
            "CREATE TABLE IF NOT EXISTS ks.t (a int PRIMARY KEY)"
        );
        assert_eq!(qualify("create table if not exists t(a int)", "ks"), "create table if not exists ks.t(a int)");
        assert_eq!(qualify("ALTER TABLE t ADD b int", "ks"), "ALTER TABLE ks.t ADD b int");
        assert_eq!(qualify("ALTER TABLE other.t ADD b int", "ks"), "ALTER TABLE other.t ADD b int");
        for m in crate::MIGRATIONS {
            for s in m.statements() {
                assert_ne!(qualify(&s, "ks"), s, "every migration statement must be qualified: {s}");
            }
        }
    }
}
