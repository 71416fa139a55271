//! Keyspace creation, replication and schema migrations (`pop3d migrate`, and the operator).
//!
//! DDL is run by this one actor only, never by the serving path. `CREATE ... IF NOT EXISTS` is
//! schema DDL, not a lightweight transaction.

use std::collections::BTreeMap;

use scylla::client::session::Session;

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
        if dc.is_empty() || !dc.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || rf == 0 || rf > 9 {
            return Err(MigrateError::Invalid(format!("{part}: DC name and an RF of 1 to 9 expected")));
        }
        out.insert(dc.to_owned(), rf);
    }
    if out.is_empty() {
        return Err(MigrateError::Invalid("at least one DC:RF is needed".into()));
    }
    Ok(out)
}

/// The keyspace's replication options, or `None` when it does not exist.
pub async fn current_replication(session: &Session, ks: &str) -> Result<Option<BTreeMap<String, String>>, MigrateError> {
    let result = session
        .query_unpaged("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?", (ks,))
        .await
        .map_err(cass)?;
    let rows = result.into_rows_result().map_err(cass)?;
    Ok(rows.maybe_first_row::<(BTreeMap<String, String>,)>().map_err(cass)?.map(|(r,)| r))
}

/// Versions recorded in `schema_migrations`, ascending.
pub async fn applied_versions(session: &Session, ks: &str) -> Result<Vec<u32>, MigrateError> {
    if current_replication(session, ks).await?.is_none() {
        return Err(MigrateError::MissingKeyspace(ks.to_owned()));
    }
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
    if tables == 0 {
        return Ok(Vec::new());
    }
    let result = session.query_unpaged(format!("SELECT version FROM {ks}.schema_migrations"), ()).await.map_err(cass)?;
    let rows = result.into_rows_result().map_err(cass)?;
    let mut versions = Vec::new();
    for row in rows.rows::<(i32,)>().map_err(cass)? {
        versions.push(row.map_err(cass)?.0 as u32);
    }
    versions.sort_unstable();
    Ok(versions)
}

fn replication_literal(map: &BTreeMap<String, String>) -> String {
    let mut parts = vec!["'class': 'NetworkTopologyStrategy'".to_owned()];
    parts.extend(map.iter().filter(|(k, _)| k.as_str() != "class").map(|(dc, rf)| format!("'{dc}': '{rf}'")));
    format!("{{{}}}", parts.join(", "))
}

/// Creates the keyspace (NetworkTopologyStrategy) or aligns the replication of the DCs given,
/// leaving DCs not named untouched; then applies pending migrations, waiting for schema
/// agreement after each DDL statement. Safe to run again and from several places.
pub async fn migrate(session: &Session, ks: &str, replication: &BTreeMap<String, u32>) -> Result<MigrationReport, MigrateError> {
    if !schema::valid_keyspace(ks) {
        return Err(MigrateError::Invalid(format!("{ks} is not a valid keyspace name")));
    }
    let mut report = MigrationReport::default();
    let wanted: BTreeMap<String, String> = replication.iter().map(|(dc, rf)| (dc.clone(), rf.to_string())).collect();
    match current_replication(session, ks).await? {
        None => {
            let cql = format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}", replication_literal(&wanted));
            session.query_unpaged(cql, ()).await.map_err(cass)?;
            report.keyspace_created = true;
        }
        Some(current) => {
            if !current.get("class").is_some_and(|c| c.ends_with("NetworkTopologyStrategy")) {
                return Err(MigrateError::Invalid(format!("keyspace {ks} does not use NetworkTopologyStrategy")));
            }
            let mut merged: BTreeMap<String, String> =
                current.iter().filter(|(k, _)| k.as_str() != "class").map(|(k, v)| (k.clone(), v.clone())).collect();
            merged.extend(wanted.clone());
            let before: BTreeMap<String, String> =
                current.into_iter().filter(|(k, _)| k.as_str() != "class").collect();
            if merged != before {
                let cql = format!("ALTER KEYSPACE {ks} WITH replication = {}", replication_literal(&merged));
                session.query_unpaged(cql, ()).await.map_err(cass)?;
                report.replication_changed = Some((before, merged));
            }
        }
    }
    session.await_schema_agreement().await.map_err(cass)?;
    let table = schema::MIGRATIONS_TABLE.replacen("schema_migrations", &format!("{ks}.schema_migrations"), 1);
    session.query_unpaged(table, ()).await.map_err(cass)?;
    session.await_schema_agreement().await.map_err(cass)?;
    let applied = applied_versions(session, ks).await?;
    session.use_keyspace(ks, false).await.map_err(cass)?;
    for migration in schema::MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        for statement in migration.statements() {
            session.query_unpaged(statement, ()).await.map_err(cass)?;
            session.await_schema_agreement().await.map_err(cass)?;
        }
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.schema_migrations (version, name, applied_at) VALUES (?, ?, toTimestamp(now()))"),
                (migration.version as i32, migration.name),
            )
            .await
            .map_err(cass)?;
        report.applied.push(migration.version);
    }
    Ok(report)
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
}
