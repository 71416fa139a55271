//! The Cassandra schema of popfleet as numbered CQL migrations.
//!
//! Applied by `pop3d migrate` and by the operator; the server itself never runs DDL. Each
//! migration is idempotent DDL, and the applied versions are recorded in `schema_migrations`.

#[cfg(feature = "cassandra")]
pub mod cassandra;
#[cfg(feature = "cassandra")]
pub mod tls;

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub cql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "mailstore", cql: include_str!("../migrations/0001_mailstore.cql") },
    Migration { version: 2, name: "scram_keys", cql: include_str!("../migrations/0002_scram_keys.cql") },
    Migration { version: 3, name: "quota_and_secrets", cql: include_str!("../migrations/0003_quota_and_secrets.cql") },
    Migration { version: 4, name: "recent_deliveries", cql: include_str!("../migrations/0004_recent_deliveries.cql") },
];

/// The latest schema version.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The table that records applied migrations (created before any migration runs).
pub const MIGRATIONS_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, applied_at timestamp)";

impl Migration {
    /// The migration's statements: `;`-separated, with `--` comments removed.
    pub fn statements(&self) -> Vec<String> {
        let without_comments: String = self
            .cql
            .lines()
            .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
            .collect::<Vec<_>>()
            .join("\n");
        without_comments.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }
}

/// Validates a keyspace name (CQL unquoted identifier, at most 48 characters).
pub fn valid_keyspace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
        }
    }

    #[test]
    fn statements_are_split_and_idempotent_ddl_only() {
        for m in MIGRATIONS {
            let statements = m.statements();
            assert!(!statements.is_empty());
            for s in statements {
                let upper = s.to_uppercase();
                assert!(upper.starts_with("CREATE TABLE IF NOT EXISTS") || upper.starts_with("ALTER TABLE"), "{s}");
                assert!(!upper.contains("--"));
            }
        }
    }

    #[test]
    fn keyspace_names() {
        assert!(valid_keyspace("popfleet_1"));
        assert!(!valid_keyspace("1abc"));
        assert!(!valid_keyspace("a-b"));
        assert!(!valid_keyspace(""));
    }
}
