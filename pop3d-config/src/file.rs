//! The config file: every setting of `pop3d serve` under the name of its flag, in snake_case.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ConsistencyLevel, Listener, StoreKind};

/// pop3d's TOML configuration file. Every field is optional: unset, the flag, the environment
/// ([`crate::env`]) or the default ([`crate::defaults`]) decides. What each key means is the
/// help text of its flag (`pop3d serve --help`) and the README's configuration section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    // Storage and listeners.
    pub data_dir: Option<PathBuf>,
    pub store: Option<StoreKind>,
    pub pop3: Option<SocketAddr>,
    pub lmtp: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub ops: Option<SocketAddr>,
    pub hostname: Option<String>,
    // Sessions, limits and abuse.
    pub allow_insecure_auth: Option<bool>,
    pub idle_timeout: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_bad_commands: Option<u32>,
    pub max_message_size: Option<u64>,
    pub min_free_space_mb: Option<u64>,
    pub auth_fail_delay_ms: Option<u64>,
    pub account_cache_secs: Option<u64>,
    pub dedup_window_secs: Option<u64>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub scram_iterations: Option<u32>,
    pub min_password_length: Option<usize>,
    pub recipient_delimiter: Option<String>,
    pub mailbox_quota_mb: Option<u64>,
    pub max_line_length: Option<usize>,
    pub lmtp_transaction_timeout: Option<u64>,
    pub min_data_rate: Option<u64>,
    // Cassandra.
    pub cassandra: Option<String>,
    pub local_dc: Option<String>,
    pub keyspace: Option<String>,
    pub read_consistency: Option<ConsistencyLevel>,
    pub write_consistency: Option<ConsistencyLevel>,
    pub cassandra_timeout_ms: Option<u64>,
    pub cassandra_username: Option<String>,
    pub cassandra_password: Option<String>,
    pub cassandra_tls_ca: Option<PathBuf>,
    pub cassandra_tls_cert: Option<PathBuf>,
    pub cassandra_tls_key: Option<PathBuf>,
    pub cassandra_tls_server_name: Option<String>,
    pub watermark_margin: Option<u64>,
    // TLS, PROXY protocol and OAuth.
    pub pop3s: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_reload_interval: Option<u64>,
    pub lmtp_starttls: Option<bool>,
    pub login_timeout: Option<u64>,
    pub max_commands_per_second: Option<u32>,
    pub max_auth_failures: Option<u32>,
    pub proxy_protocol: Option<Vec<Listener>>,
    pub proxy_trusted_networks: Option<Vec<String>>,
    pub oauth_jwks: Option<PathBuf>,
    pub oauth_issuer: Option<String>,
    pub oauth_audience: Option<String>,
    pub oauth_user_claim: Option<String>,
}

impl FileConfig {
    /// Reads a config file's text; an unknown key or a value of the wrong type is an error.
    pub fn from_toml(text: &str) -> Result<Self, Box<toml::de::Error>> {
        toml::from_str(text).map_err(Box::new)
    }

    /// The file's text; unset settings are left out, keys come in alphabetical order.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.to_table()).expect("a table of scalars and arrays always serialises")
    }

    /// The set settings as a TOML table (to lay other keys over them).
    pub fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("every setting is a TOML value")
    }

    /// Every key the file may hold, as serde sees the struct (so it cannot drift from it).
    pub fn keys() -> &'static [&'static str] {
        field_names::of::<FileConfig>()
    }
}

/// The field names serde derives for a struct, read through a deserializer that only listens.
mod field_names {
    use serde::de::{self, Deserialize, Deserializer, Visitor};

    struct Listen(Option<&'static [&'static str]>);

    pub fn of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        let mut listen = Listen(None);
        let _ = T::deserialize(&mut listen);
        listen.0.expect("a struct with named fields")
    }

    impl<'de> Deserializer<'de> for &mut Listen {
        type Error = de::value::Error;

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("only the field names were wanted"))
        }

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_fields() {
        let keys = FileConfig::keys();
        assert_eq!(keys.first(), Some(&"data_dir"));
        assert!(keys.contains(&"cassandra_tls_server_name"));
        assert_eq!(keys.last(), Some(&"oauth_user_claim"));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        assert!(FileConfig::from_toml("pop4 = 1\n").is_err());
        assert!(FileConfig::from_toml("idle_timeout = \"soon\"\n").is_err());
        assert!(FileConfig::from_toml("read_consistency = \"serial\"\n").is_err());
    }

    #[test]
    fn a_file_reads_back_as_it_was_written_and_unset_keys_stay_out() {
        let config = FileConfig {
            store: Some(StoreKind::Cassandra),
            pop3: Some("0.0.0.0:1110".parse().unwrap()),
            data_dir: Some("/var/lib/pop3d".into()),
            read_consistency: Some(ConsistencyLevel::LocalOne),
            proxy_protocol: Some(vec![Listener::Pop3, Listener::Lmtp]),
            allow_insecure_auth: Some(false),
            idle_timeout: Some(30),
            ..Default::default()
        };
        let text = config.to_toml();
        assert_eq!(
            text,
            "allow_insecure_auth = false\ndata_dir = \"/var/lib/pop3d\"\nidle_timeout = 30\npop3 = \"0.0.0.0:1110\"\n\
             proxy_protocol = [\"pop3\", \"lmtp\"]\nread_consistency = \"local_one\"\nstore = \"cassandra\"\n"
        );
        assert_eq!(FileConfig::from_toml(&text).unwrap(), config);
        assert_eq!(FileConfig::default().to_toml(), "");
    }
}
