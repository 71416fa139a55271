//! `pop3d serve`'s flags. Every one is also a `POP3D_*` variable and a key in the config file
//! (`pop3d_config::FileConfig`); the two are merged and checked in [`super::Config::load`]. The
//! test below holds each flag to the contract: its key is a key of the file and its variable is
//! `pop3d_config::env::name(key)`.

use std::net::SocketAddr;
use std::path::PathBuf;

use pop3d_config::{env, ConsistencyLevel, StoreKind};

/// `pop3d serve` options. Every one is also a `POP3D_*` variable and a key in the config file.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = env::CONFIG)]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded store [default: ./pop3d-data].
    #[arg(long, env = "POP3D_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Storage backend: embedded or cassandra [default: embedded].
    #[arg(long, env = "POP3D_STORE")]
    pub store: Option<StoreKind>,
    /// POP3 listener address [default: 127.0.0.1:1110; production: 0.0.0.0:110].
    #[arg(long, env = "POP3D_POP3")]
    pub pop3: Option<SocketAddr>,
    /// LMTP listener address [default: 127.0.0.1:2424; production: 0.0.0.0:24].
    #[arg(long, env = "POP3D_LMTP")]
    pub lmtp: Option<SocketAddr>,
    /// Admin HTTP listener: accounts, repair, health, metrics [default: 127.0.0.1:8080]. A
    /// non-loopback address needs an admin token (start-up is refused without one).
    #[arg(long, env = "POP3D_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Operations HTTP listener serving only /healthz, /readyz and /metrics, safe to expose to
    /// probes and Prometheus [default: none].
    #[arg(long, env = "POP3D_OPS")]
    pub ops: Option<SocketAddr>,
    /// Host name used in greetings and Received headers [default: the system host name].
    #[arg(long, env = "POP3D_HOSTNAME")]
    pub hostname: Option<String>,
    /// Allow USER/PASS and AUTH PLAIN on cleartext non-loopback connections.
    #[arg(long, env = "POP3D_ALLOW_INSECURE_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub allow_insecure_auth: Option<bool>,
    /// Seconds of inactivity before a session is closed [default: 600].
    #[arg(long, env = "POP3D_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Most concurrent connections per listener [default: 1000].
    #[arg(long, env = "POP3D_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most concurrent connections per client IP and listener [default: 50].
    #[arg(long, env = "POP3D_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Bad commands tolerated per session before it is closed [default: 20].
    #[arg(long, env = "POP3D_MAX_BAD_COMMANDS")]
    pub max_bad_commands: Option<u32>,
    /// Largest accepted message in octets [default: 67108864].
    #[arg(long, env = "POP3D_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<u64>,
    /// Embedded store: refuse new mail (452 4.3.1) when the data directory's file system has less
    /// free space than this, in MiB, so a full disk never interrupts a write [default: 256].
    #[arg(long, env = "POP3D_MIN_FREE_SPACE_MB")]
    pub min_free_space_mb: Option<u64>,
    /// Delay after a failed login in ms, doubling per failure from the same IP up to 15 s [default: 1000].
    #[arg(long, env = "POP3D_AUTH_FAIL_DELAY_MS")]
    pub auth_fail_delay_ms: Option<u64>,
    /// Seconds a recipient found to be an account is remembered by LMTP; an account deleted through
    /// another server may receive mail here that long (unreadable; cleared if the address is created again);
    /// 0: always ask [default: 2].
    #[arg(long, env = "POP3D_ACCOUNT_CACHE_SECS")]
    pub account_cache_secs: Option<u64>,
    /// Seconds a delivered message (recipient, Message-ID and content digest) is remembered, so an
    /// MTA that retries it after a lost 250 gets 250 again without a second copy; messages without
    /// a Message-ID are never deduplicated; 0: off [default: 86400].
    #[arg(long, env = "POP3D_DEDUP_WINDOW_SECS")]
    pub dedup_window_secs: Option<u64>,
    /// File holding the bearer token the admin API's account and repair routes require (the token
    /// itself may come from POP3D_ADMIN_TOKEN instead; there is no flag, so it never shows in `ps`).
    /// Unset: those routes answer loopback clients only.
    #[arg(long, env = "POP3D_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Not a flag (it would show in `ps`): read from POP3D_ADMIN_TOKEN by `Config::load`.
    #[arg(skip)]
    pub admin_token: Option<String>,
    /// PBKDF2 iterations of new SCRAM-SHA-256 keys and of decoys; at least 4096 [default: 600000].
    #[arg(long, env = "POP3D_SCRAM_ITERATIONS")]
    pub scram_iterations: Option<u32>,
    /// Shortest password the admin API accepts [default: 8].
    #[arg(long, env = "POP3D_MIN_PASSWORD_LENGTH")]
    pub min_password_length: Option<usize>,
    /// Sub-address delimiter: LMTP delivers user+tag@domain to user@domain; "" turns it off [default: +].
    #[arg(long, env = "POP3D_RECIPIENT_DELIMITER")]
    pub recipient_delimiter: Option<String>,
    /// Default mailbox quota in MiB (the admin API sets per-account quotas); 0: none [default: 0].
    #[arg(long, env = "POP3D_MAILBOX_QUOTA_MB")]
    pub mailbox_quota_mb: Option<u64>,
    /// Longest line of a delivered message in octets, CRLF excluded (RFC 5322 2.1.1) [default: 998].
    #[arg(long, env = "POP3D_MAX_LINE_LENGTH")]
    pub max_line_length: Option<usize>,
    /// Seconds an LMTP transaction may take from MAIL FROM to the end of its data [default: 600].
    #[arg(long, env = "POP3D_LMTP_TRANSACTION_TIMEOUT")]
    pub lmtp_transaction_timeout: Option<u64>,
    /// Slowest accepted DATA in octets per second, after a 30 s grace; 0: no minimum [default: 1024].
    #[arg(long, env = "POP3D_MIN_DATA_RATE")]
    pub min_data_rate: Option<u64>,
    /// Implicit-TLS POP3 listener (RFC 8314) [default: none; production: 0.0.0.0:995]. Needs --tls-cert.
    #[arg(long, env = "POP3D_POP3S")]
    pub pop3s: Option<SocketAddr>,
    /// PEM certificate chain. With --tls-key it enables STLS on the POP3 listener and --pop3s.
    #[arg(long, env = "POP3D_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "POP3D_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Seconds between checks of the certificate files for a new pair [default: 10].
    #[arg(long, env = "POP3D_TLS_RELOAD_INTERVAL")]
    pub tls_reload_interval: Option<u64>,
    /// Offer STARTTLS on the LMTP listener (needs --tls-cert).
    #[arg(long, env = "POP3D_LMTP_STARTTLS", num_args = 0..=1, default_missing_value = "true")]
    pub lmtp_starttls: Option<bool>,
    /// Seconds a client has from connecting to logging in (POP3) [default: 60].
    #[arg(long, env = "POP3D_LOGIN_TIMEOUT")]
    pub login_timeout: Option<u64>,
    /// Commands per second per session before input is read more slowly; 0: no limit [default: 5000].
    #[arg(long, env = "POP3D_MAX_COMMANDS_PER_SECOND")]
    pub max_commands_per_second: Option<u32>,
    /// Failed logins in one POP3 session before it is closed [default: 3].
    #[arg(long, env = "POP3D_MAX_AUTH_FAILURES")]
    pub max_auth_failures: Option<u32>,
    /// Listeners that require a PROXY protocol v1/v2 header: pop3, pop3s, lmtp (comma-separated).
    #[arg(long, env = "POP3D_PROXY_PROTOCOL")]
    pub proxy_protocol: Option<String>,
    /// Networks allowed to send a PROXY header, CIDR[,CIDR...]; anyone else is refused on
    /// the listeners of --proxy-protocol.
    #[arg(long, env = "POP3D_PROXY_TRUSTED_NETWORKS")]
    pub proxy_trusted_networks: Option<String>,
    /// JWKS file (JSON) with the keys that sign OAuth bearer tokens; enables OAUTHBEARER and XOAUTH2.
    #[arg(long, env = "POP3D_OAUTH_JWKS")]
    pub oauth_jwks: Option<PathBuf>,
    /// Required `iss` of bearer tokens.
    #[arg(long, env = "POP3D_OAUTH_ISSUER")]
    pub oauth_issuer: Option<String>,
    /// Required `aud` of bearer tokens.
    #[arg(long, env = "POP3D_OAUTH_AUDIENCE")]
    pub oauth_audience: Option<String>,
    /// Token claim holding the mailbox address [default: email].
    #[arg(long, env = "POP3D_OAUTH_USER_CLAIM")]
    pub oauth_user_claim: Option<String>,
    #[command(flatten)]
    pub cassandra: CassandraArgs,
    /// Seconds of deleted history a mailbox read may still scan on Cassandra; must exceed the
    /// longest delivery, clock skew and usual cross-DC lag [default: 3600].
    #[arg(long, env = "POP3D_WATERMARK_MARGIN")]
    pub watermark_margin: Option<u64>,
}

/// Where the Cassandra cluster is and how to talk to it (`serve --store cassandra`, `migrate`).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct CassandraArgs {
    /// Cassandra contact points, HOST:PORT[,HOST:PORT...].
    #[arg(long = "cassandra", env = "POP3D_CASSANDRA")]
    pub cassandra: Option<String>,
    /// The local Cassandra datacenter; every request stays in it.
    #[arg(long, env = "POP3D_LOCAL_DC")]
    pub local_dc: Option<String>,
    /// Keyspace [default: popfleet].
    #[arg(long, env = "POP3D_KEYSPACE")]
    pub keyspace: Option<String>,
    /// Consistency of reads: local_quorum, local_one, quorum, each_quorum, one, two, three, all [default: local_quorum].
    #[arg(long, env = "POP3D_READ_CONSISTENCY")]
    pub read_consistency: Option<ConsistencyLevel>,
    /// Consistency of writes (same values) [default: local_quorum].
    #[arg(long, env = "POP3D_WRITE_CONSISTENCY")]
    pub write_consistency: Option<ConsistencyLevel>,
    /// Client-side timeout of one Cassandra request in ms, a retry included [default: 10000].
    #[arg(long, env = "POP3D_CASSANDRA_TIMEOUT_MS")]
    pub cassandra_timeout_ms: Option<u64>,
    /// Cassandra user name (PasswordAuthenticator).
    #[arg(long, env = env::CASSANDRA_USERNAME)]
    pub cassandra_username: Option<String>,
    /// Cassandra password (prefer the environment variable or the config file).
    #[arg(long, env = env::CASSANDRA_PASSWORD, hide_env_values = true)]
    pub cassandra_password: Option<String>,
    /// PEM file of the CA that signs the Cassandra nodes' certificates; setting it turns on TLS.
    #[arg(long, env = "POP3D_CASSANDRA_TLS_CA")]
    pub cassandra_tls_ca: Option<PathBuf>,
    /// PEM client certificate chain, for Cassandra's `require_client_auth`.
    #[arg(long, env = "POP3D_CASSANDRA_TLS_CERT", requires = "cassandra_tls_key")]
    pub cassandra_tls_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "POP3D_CASSANDRA_TLS_KEY", requires = "cassandra_tls_cert")]
    pub cassandra_tls_key: Option<PathBuf>,
    /// DNS name every node's certificate must carry [default: the node's IP address].
    #[arg(long, env = "POP3D_CASSANDRA_TLS_SERVER_NAME")]
    pub cassandra_tls_server_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args;
    use pop3d_config::FileConfig;

    /// A flag whose key the file lacks, or whose variable is spelt otherwise, is a setting with
    /// two names; a key without a flag is one only the file can set.
    #[test]
    fn every_flag_is_a_key_of_the_file_with_the_variable_of_its_key() {
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        let mut flags = vec![];
        for arg in command.get_arguments() {
            let key = arg.get_id().as_str();
            let var = arg.get_env().and_then(|v| v.to_str()).unwrap_or_default();
            assert_eq!(var, env::name(key), "the variable of --{key}");
            flags.push(key);
        }
        let keys = FileConfig::keys();
        let not_keys: Vec<_> = flags.iter().filter(|f| **f != "config" && !keys.contains(f)).collect();
        assert!(not_keys.is_empty(), "flags that are not keys of the file: {not_keys:?}");
        // admin_token has no flag on purpose: a flag would show the token in `ps`.
        let no_flag: Vec<_> = keys.iter().filter(|k| **k != "admin_token" && !flags.contains(k)).collect();
        assert!(no_flag.is_empty(), "keys of the file without a flag: {no_flag:?}");
    }
}
