//! Server configuration: a TOML file, `POP3D_*` environment variables and command-line flags.
//! Flags win over the environment, the environment over the file, the file over defaults.
//!
//! The file format, the defaults and the variable names are the contract crate `pop3d-config`'s
//! (the operator writes the same file); this module holds the flags and the merge and checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::cassandra::{self, CassandraConfig};
use pop3d_config::{defaults, env, FileConfig};
use schema::tls::TlsMaterial;

mod args;
pub use args::{CassandraArgs, ServeArgs};
pub use pop3d_config::{ConsistencyLevel, Listener, StoreKind};

/// A token an attacker could guess online is no token; the operator makes 64 hex characters.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Bearer-token validation settings (OAUTHBEARER, XOAUTH2).
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub jwks: PathBuf,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub user_claim: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub pop3: SocketAddr,
    pub lmtp: SocketAddr,
    pub admin: SocketAddr,
    /// Health, readiness and metrics only.
    pub ops: Option<SocketAddr>,
    pub hostname: String,
    pub allow_insecure_auth: bool,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_bad_commands: u32,
    pub max_message_size: u64,
    /// In bytes.
    pub min_free_space: u64,
    pub auth_fail_delay: Duration,
    pub account_cache_ttl: Duration,
    /// How long a delivery is remembered to absorb an MTA's retry; `None`: never.
    pub dedup_window: Option<Duration>,
    /// Required by the admin API's account and repair routes; without one they answer loopback
    /// clients only, and the admin listener must be on loopback.
    pub admin_token: Option<String>,
    pub scram_iterations: u32,
    pub min_password_length: usize,
    /// `None`: no sub-addressing.
    pub recipient_delimiter: Option<char>,
    /// Default mailbox quota in octets; `None`: no quota.
    pub mailbox_quota: Option<u64>,
    /// Longest line of a delivered message, CRLF excluded.
    pub max_line_length: usize,
    pub lmtp_transaction_timeout: Duration,
    /// Octets per second; 0: no minimum.
    pub min_data_rate: u64,
    /// Set when `store = cassandra`.
    pub cassandra: Option<CassandraConfig>,
    pub watermark_margin: Duration,
    pub pop3s: Option<SocketAddr>,
    /// Set when a certificate is configured.
    pub tls: Option<crate::tls::TlsFiles>,
    pub tls_reload_interval: Duration,
    pub lmtp_starttls: bool,
    pub login_timeout: Duration,
    pub max_commands_per_second: u32,
    pub max_auth_failures: u32,
    pub proxy_protocol: Vec<Listener>,
    pub proxy_trusted_networks: Vec<ipnet::IpNet>,
    pub oauth: Option<OAuthConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// Resolves the configuration from flags/env (`args`, already merged by clap) and the file.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let admin_token = admin_token(args, &file)?;
        let settings = flags_over_file(args.clone(), file)?;
        let mut config = Self::resolve(&settings, admin_token)?;
        if config.store == StoreKind::Cassandra {
            config.cassandra = Some(cassandra_args(settings).resolve()?);
        }
        config.validate()?;
        Ok(config)
    }

    /// The merged settings, with the defaults where they are unset (Cassandra's apart).
    fn resolve(s: &FileConfig, admin_token: Option<String>) -> Result<Self, ConfigError> {
        let secs = Duration::from_secs;
        Ok(Config {
            data_dir: s.data_dir.clone().unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR)),
            store: s.store.unwrap_or(defaults::STORE),
            pop3: s.pop3.unwrap_or(defaults::POP3),
            lmtp: s.lmtp.unwrap_or(defaults::LMTP),
            admin: s.admin.unwrap_or(defaults::ADMIN),
            ops: s.ops,
            hostname: s.hostname.clone().unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
            allow_insecure_auth: s.allow_insecure_auth.unwrap_or(defaults::ALLOW_INSECURE_AUTH),
            idle_timeout: secs(s.idle_timeout.unwrap_or(defaults::IDLE_TIMEOUT_SECS)),
            max_connections: s.max_connections.unwrap_or(defaults::MAX_CONNECTIONS),
            max_connections_per_ip: s.max_connections_per_ip.unwrap_or(defaults::MAX_CONNECTIONS_PER_IP),
            max_bad_commands: s.max_bad_commands.unwrap_or(defaults::MAX_BAD_COMMANDS),
            max_message_size: s.max_message_size.unwrap_or(defaults::MAX_MESSAGE_SIZE),
            min_free_space: s.min_free_space_mb.unwrap_or(defaults::MIN_FREE_SPACE_MB) * 1024 * 1024,
            auth_fail_delay: Duration::from_millis(s.auth_fail_delay_ms.unwrap_or(defaults::AUTH_FAIL_DELAY_MS)),
            account_cache_ttl: secs(s.account_cache_secs.unwrap_or(defaults::ACCOUNT_CACHE_SECS)),
            dedup_window: Some(secs(s.dedup_window_secs.unwrap_or(defaults::DEDUP_WINDOW_SECS)))
                .filter(|w| !w.is_zero()),
            admin_token,
            scram_iterations: s.scram_iterations.unwrap_or(defaults::SCRAM_ITERATIONS),
            min_password_length: s.min_password_length.unwrap_or(defaults::MIN_PASSWORD_LENGTH),
            recipient_delimiter: delimiter(s.recipient_delimiter.clone())?,
            mailbox_quota: Some(s.mailbox_quota_mb.unwrap_or(defaults::MAILBOX_QUOTA_MB) << 20).filter(|q| *q > 0),
            max_line_length: s.max_line_length.unwrap_or(defaults::MAX_LINE_LENGTH),
            lmtp_transaction_timeout: secs(
                s.lmtp_transaction_timeout.unwrap_or(defaults::LMTP_TRANSACTION_TIMEOUT_SECS),
            ),
            min_data_rate: s.min_data_rate.unwrap_or(defaults::MIN_DATA_RATE),
            cassandra: None,
            watermark_margin: secs(s.watermark_margin.unwrap_or(defaults::WATERMARK_MARGIN_SECS)),
            pop3s: s.pop3s,
            tls: match (s.tls_cert.clone(), s.tls_key.clone()) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert, key }),
                (None, None) => None,
                _ => return Err(ConfigError::Invalid("tls_cert and tls_key go together".into())),
            },
            tls_reload_interval: secs(s.tls_reload_interval.unwrap_or(defaults::TLS_RELOAD_INTERVAL_SECS)),
            lmtp_starttls: s.lmtp_starttls.unwrap_or(defaults::LMTP_STARTTLS),
            login_timeout: secs(s.login_timeout.unwrap_or(defaults::LOGIN_TIMEOUT_SECS)),
            max_commands_per_second: s.max_commands_per_second.unwrap_or(defaults::MAX_COMMANDS_PER_SECOND),
            max_auth_failures: s.max_auth_failures.unwrap_or(defaults::MAX_AUTH_FAILURES),
            proxy_protocol: s.proxy_protocol.clone().unwrap_or_default(),
            proxy_trusted_networks: parse_networks(s.proxy_trusted_networks.iter().flatten().map(String::as_str))?,
            oauth: s.oauth_jwks.clone().map(|jwks| OAuthConfig {
                jwks,
                issuer: s.oauth_issuer.clone(),
                audience: s.oauth_audience.clone(),
                user_claim: s.oauth_user_claim.clone().unwrap_or_else(|| defaults::OAUTH_USER_CLAIM.into()),
            }),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.watermark_margin.as_secs() < 1 {
            return Err(ConfigError::Invalid("watermark_margin must be at least 1 second".into()));
        }
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.idle_timeout.is_zero() {
            return invalid("idle_timeout must be at least 1 second");
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return invalid("connection caps must be at least 1");
        }
        if self.max_message_size < 1024 {
            return invalid("max_message_size must be at least 1024 octets");
        }
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            return invalid("hostname must be a non-empty name without spaces");
        }
        if self.tls.is_none() && (self.pop3s.is_some() || self.lmtp_starttls) {
            return invalid("pop3s and lmtp_starttls need a certificate (tls_cert and tls_key)");
        }
        if self.tls_reload_interval.is_zero() || self.login_timeout.is_zero() {
            return invalid("tls_reload_interval and login_timeout must be at least 1 second");
        }
        if self.max_auth_failures == 0 {
            return invalid("max_auth_failures must be at least 1");
        }
        if !self.proxy_protocol.is_empty() && self.proxy_trusted_networks.is_empty() {
            return invalid("proxy_protocol needs proxy_trusted_networks (who may send the header)");
        }
        if self.proxy_protocol.contains(&Listener::Pop3s) && self.pop3s.is_none() {
            return invalid("proxy_protocol names pop3s but no pop3s listener is configured");
        }
        if self.oauth.as_ref().is_some_and(|o| o.user_claim.is_empty()) {
            return invalid("oauth_user_claim must not be empty");
        }
        self.validate_security()
    }

    /// The settings issue-14's outside probe showed must be enforced, not only documented.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.admin.ip().is_loopback() && self.admin_token.is_none() {
            return invalid(format!(
                "the admin listener {} is not on loopback, and its account routes would be open to anyone \
                 who can reach it: set admin_token_file (or POP3D_ADMIN_TOKEN) to require a token, or bind \
                 it to 127.0.0.1 (health and metrics can go on the ops listener)",
                self.admin
            ));
        }
        if self.admin_token.as_ref().is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_LEN) {
            return invalid(format!("the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters"));
        }
        use crate::auth::sasl::scram::{MAX_ITERATIONS, MIN_ITERATIONS};
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&self.scram_iterations) {
            return invalid(format!(
                "scram_iterations must be {MIN_ITERATIONS} (RFC 7677's minimum) to {MAX_ITERATIONS}"
            ));
        }
        if self.min_password_length == 0 || self.min_password_length > crate::auth::MAX_PASSWORD_LEN {
            return invalid(format!("min_password_length must be 1 to {}", crate::auth::MAX_PASSWORD_LEN));
        }
        if self.max_line_length < 78 {
            return invalid("max_line_length must be at least 78 octets (RFC 5322 2.1.1)".into());
        }
        if self.lmtp_transaction_timeout.is_zero() {
            return invalid("lmtp_transaction_timeout must be at least 1 second".into());
        }
        Ok(())
    }
}

/// Reads the PEM files now, so a wrong path stops start-up with its name rather than failing
/// every connection later.
fn resolve_tls(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
) -> Result<Option<TlsMaterial>, ConfigError> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|source| ConfigError::Read { path: p.clone(), source });
    let Some(ca) = ca else {
        if cert.is_some() || key.is_some() || server_name.is_some() {
            return Err(ConfigError::Invalid("the cassandra_tls_* settings need cassandra_tls_ca".into()));
        }
        return Ok(None);
    };
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((read(&c)?, read(&k)?)),
        (None, None) => None,
        _ => return Err(ConfigError::Invalid("cassandra_tls_cert and cassandra_tls_key go together".into())),
    };
    let material = TlsMaterial { ca_pem: read(&ca)?, identity, server_name };
    // Parse now: a CA file without a certificate is a configuration error, not an outage.
    schema::tls::client_config(&material).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(Some(material))
}

impl CassandraArgs {
    /// Checks and completes the Cassandra settings (flags and env only; `migrate` uses this).
    pub fn resolve(self) -> Result<CassandraConfig, ConfigError> {
        let invalid = |m: &str| ConfigError::Invalid(m.to_owned());
        let contact_points: Vec<String> = self
            .cassandra
            .ok_or_else(|| invalid("the cassandra store needs contact points (--cassandra HOST:PORT[,...])"))?
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if contact_points.is_empty() {
            return Err(invalid("--cassandra needs at least one HOST:PORT"));
        }
        let local_dc = self.local_dc.filter(|d| !d.is_empty()).ok_or_else(|| {
            invalid("the cassandra store needs --local-dc: requests never leave the local datacenter")
        })?;
        let keyspace = self.keyspace.unwrap_or_else(|| defaults::KEYSPACE.to_owned());
        if !schema::valid_keyspace(&keyspace) {
            return Err(invalid("keyspace must be letters, digits and _ (at most 48), starting with a letter"));
        }
        Ok(CassandraConfig {
            contact_points,
            local_dc,
            keyspace,
            read_consistency: cassandra::consistency(self.read_consistency.unwrap_or(defaults::READ_CONSISTENCY)),
            write_consistency: cassandra::consistency(self.write_consistency.unwrap_or(defaults::WRITE_CONSISTENCY)),
            request_timeout: Duration::from_millis(
                self.cassandra_timeout_ms.unwrap_or(defaults::CASSANDRA_TIMEOUT_MS).max(1),
            ),
            username: self.cassandra_username,
            password: self.cassandra_password,
            tls: resolve_tls(
                self.cassandra_tls_ca,
                self.cassandra_tls_cert,
                self.cassandra_tls_key,
                self.cassandra_tls_server_name,
            )?,
        })
    }
}

/// The flags (and their variables) over the file, key by key. The literal has no `..`, so a new
/// key of the file does not compile until it is merged here.
fn flags_over_file(a: ServeArgs, f: FileConfig) -> Result<FileConfig, ConfigError> {
    let c = a.cassandra;
    let proxy_protocol = match a.proxy_protocol.as_deref() {
        Some(list) => Some(
            split_list(list)
                .map(|l| l.parse().map_err(|e: pop3d_config::UnknownListener| ConfigError::Invalid(e.to_string())))
                .collect::<Result<_, _>>()?,
        ),
        None => f.proxy_protocol,
    };
    let proxy_trusted_networks = match a.proxy_trusted_networks.as_deref() {
        Some(list) => Some(split_list(list).map(str::to_owned).collect()),
        None => f.proxy_trusted_networks,
    };
    Ok(FileConfig {
        data_dir: a.data_dir.or(f.data_dir),
        store: a.store.or(f.store),
        pop3: a.pop3.or(f.pop3),
        lmtp: a.lmtp.or(f.lmtp),
        admin: a.admin.or(f.admin),
        ops: a.ops.or(f.ops),
        hostname: a.hostname.or(f.hostname),
        allow_insecure_auth: a.allow_insecure_auth.or(f.allow_insecure_auth),
        idle_timeout: a.idle_timeout.or(f.idle_timeout),
        max_connections: a.max_connections.or(f.max_connections),
        max_connections_per_ip: a.max_connections_per_ip.or(f.max_connections_per_ip),
        max_bad_commands: a.max_bad_commands.or(f.max_bad_commands),
        max_message_size: a.max_message_size.or(f.max_message_size),
        min_free_space_mb: a.min_free_space_mb.or(f.min_free_space_mb),
        auth_fail_delay_ms: a.auth_fail_delay_ms.or(f.auth_fail_delay_ms),
        account_cache_secs: a.account_cache_secs.or(f.account_cache_secs),
        dedup_window_secs: a.dedup_window_secs.or(f.dedup_window_secs),
        // Resolved apart (`admin_token`): it has no flag, and the token file wins over it.
        admin_token: f.admin_token,
        admin_token_file: a.admin_token_file.or(f.admin_token_file),
        scram_iterations: a.scram_iterations.or(f.scram_iterations),
        min_password_length: a.min_password_length.or(f.min_password_length),
        recipient_delimiter: a.recipient_delimiter.or(f.recipient_delimiter),
        mailbox_quota_mb: a.mailbox_quota_mb.or(f.mailbox_quota_mb),
        max_line_length: a.max_line_length.or(f.max_line_length),
        lmtp_transaction_timeout: a.lmtp_transaction_timeout.or(f.lmtp_transaction_timeout),
        min_data_rate: a.min_data_rate.or(f.min_data_rate),
        cassandra: c.cassandra.or(f.cassandra),
        local_dc: c.local_dc.or(f.local_dc),
        keyspace: c.keyspace.or(f.keyspace),
        read_consistency: c.read_consistency.or(f.read_consistency),
        write_consistency: c.write_consistency.or(f.write_consistency),
        cassandra_timeout_ms: c.cassandra_timeout_ms.or(f.cassandra_timeout_ms),
        cassandra_username: c.cassandra_username.or(f.cassandra_username),
        cassandra_password: c.cassandra_password.or(f.cassandra_password),
        cassandra_tls_ca: c.cassandra_tls_ca.or(f.cassandra_tls_ca),
        cassandra_tls_cert: c.cassandra_tls_cert.or(f.cassandra_tls_cert),
        cassandra_tls_key: c.cassandra_tls_key.or(f.cassandra_tls_key),
        cassandra_tls_server_name: c.cassandra_tls_server_name.or(f.cassandra_tls_server_name),
        watermark_margin: a.watermark_margin.or(f.watermark_margin),
        pop3s: a.pop3s.or(f.pop3s),
        tls_cert: a.tls_cert.or(f.tls_cert),
        tls_key: a.tls_key.or(f.tls_key),
        tls_reload_interval: a.tls_reload_interval.or(f.tls_reload_interval),
        lmtp_starttls: a.lmtp_starttls.or(f.lmtp_starttls),
        login_timeout: a.login_timeout.or(f.login_timeout),
        max_commands_per_second: a.max_commands_per_second.or(f.max_commands_per_second),
        max_auth_failures: a.max_auth_failures.or(f.max_auth_failures),
        proxy_protocol,
        proxy_trusted_networks,
        oauth_jwks: a.oauth_jwks.or(f.oauth_jwks),
        oauth_issuer: a.oauth_issuer.or(f.oauth_issuer),
        oauth_audience: a.oauth_audience.or(f.oauth_audience),
        oauth_user_claim: a.oauth_user_claim.or(f.oauth_user_claim),
    })
}

/// The merged Cassandra settings, in the form `migrate` takes from its flags.
fn cassandra_args(s: FileConfig) -> CassandraArgs {
    CassandraArgs {
        cassandra: s.cassandra,
        local_dc: s.local_dc,
        keyspace: s.keyspace,
        read_consistency: s.read_consistency,
        write_consistency: s.write_consistency,
        cassandra_timeout_ms: s.cassandra_timeout_ms,
        cassandra_username: s.cassandra_username,
        cassandra_password: s.cassandra_password,
        cassandra_tls_ca: s.cassandra_tls_ca,
        cassandra_tls_cert: s.cassandra_tls_cert,
        cassandra_tls_key: s.cassandra_tls_key,
        cassandra_tls_server_name: s.cassandra_tls_server_name,
    }
}

/// The admin token: from `admin_token_file`, else `POP3D_ADMIN_TOKEN` or the file's `admin_token`.
fn admin_token(a: &ServeArgs, file: &FileConfig) -> Result<Option<String>, ConfigError> {
    if let Some(path) = a.admin_token_file.as_ref().or(file.admin_token_file.as_ref()) {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let token = text.trim().to_owned();
        if token.is_empty() {
            return Err(ConfigError::Invalid(format!("the admin token file {} is empty", path.display())));
        }
        return Ok(Some(token));
    }
    let from_env = a.admin_token.clone().or_else(|| std::env::var(env::ADMIN_TOKEN).ok());
    Ok(from_env.or_else(|| file.admin_token.clone()).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// One character that cannot be part of an address's syntax, or none.
fn delimiter(value: Option<String>) -> Result<Option<char>, ConfigError> {
    let value = value.unwrap_or_else(|| defaults::RECIPIENT_DELIMITER.into());
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (None, _) => Ok(None),
        (Some(c), None) if c.is_ascii_graphic() && !matches!(c, '@' | '<' | '>' | '"' | '\\' | '/') => Ok(Some(c)),
        _ => Err(ConfigError::Invalid(format!(
            "recipient_delimiter must be one ASCII character other than @<>\"\\/, or empty; got {value:?}"
        ))),
    }
}

fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// CIDRs, or bare addresses meaning a single host.
fn parse_networks<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    items
        .map(|item| {
            let item = item.trim();
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::Invalid(format!("{item:?} is not a CIDR network")))
        })
        .collect()
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    FileConfig::from_toml(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pop3d.toml");
        std::fs::write(&path, "pop3 = \"127.0.0.1:1999\"\nlmtp = \"127.0.0.1:2999\"\nidle_timeout = 30\n").unwrap();
        let args =
            ServeArgs { config: Some(path), pop3: Some("127.0.0.1:1777".parse().unwrap()), ..Default::default() };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.pop3.port(), 1777);
        assert_eq!(c.lmtp.port(), 2999);
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.admin.port(), 8080);
        assert_eq!(c.store, StoreKind::Embedded);
    }

    #[test]
    fn cassandra_and_list_flags_win_over_the_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pop3d.toml");
        std::fs::write(
            &path,
            "store = \"cassandra\"\ncassandra = \"10.0.0.1:9042\"\nlocal_dc = \"dc1\"\nkeyspace = \"from_file\"\n\
             read_consistency = \"one\"\nproxy_protocol = [\"lmtp\"]\nproxy_trusted_networks = [\"192.0.2.0/24\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            cassandra: CassandraArgs { keyspace: Some("from_flag".into()), ..Default::default() },
            proxy_protocol: Some("pop3".into()),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        let cassandra = c.cassandra.unwrap();
        assert_eq!((cassandra.keyspace.as_str(), cassandra.local_dc.as_str()), ("from_flag", "dc1"));
        assert_eq!(cassandra.read_consistency, scylla::statement::Consistency::One);
        assert_eq!(cassandra.write_consistency, scylla::statement::Consistency::LocalQuorum, "the default");
        assert_eq!(c.proxy_protocol, vec![Listener::Pop3]);
        assert_eq!(c.proxy_trusted_networks, vec!["192.0.2.0/24".parse::<ipnet::IpNet>().unwrap()]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "pop4 = 1\n").unwrap();
        assert!(matches!(
            Config::load(&ServeArgs { config: Some(path), ..Default::default() }),
            Err(ConfigError::Parse { .. })
        ));
        let args = ServeArgs { idle_timeout: Some(0), ..Default::default() };
        assert!(matches!(Config::load(&args), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn tls_and_proxy_settings_are_checked_together() {
        let invalid = |args: ServeArgs| matches!(Config::load(&args), Err(ConfigError::Invalid(_)));
        assert!(invalid(ServeArgs { tls_cert: Some("c.pem".into()), ..Default::default() }));
        assert!(invalid(ServeArgs { pop3s: Some("127.0.0.1:995".parse().unwrap()), ..Default::default() }));
        assert!(invalid(ServeArgs { proxy_protocol: Some("pop3".into()), ..Default::default() }));
        assert!(invalid(ServeArgs { proxy_protocol: Some("imap".into()), ..Default::default() }));
        assert!(invalid(ServeArgs { proxy_trusted_networks: Some("10.0.0.0/33".into()), ..Default::default() }));
        let c = Config::load(&ServeArgs {
            proxy_protocol: Some("pop3, lmtp".into()),
            proxy_trusted_networks: Some("10.0.0.0/8,::1".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.proxy_protocol, vec![Listener::Pop3, Listener::Lmtp]);
        assert!(c.proxy_trusted_networks[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap()));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls.toml");
        std::fs::write(
            &path,
            "tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\npop3s = \"127.0.0.1:9995\"\nproxy_protocol = [\"pop3s\"]\nproxy_trusted_networks = [\"192.0.2.0/24\"]\n",
        )
        .unwrap();
        let c = Config::load(&ServeArgs { config: Some(path), ..Default::default() }).unwrap();
        assert_eq!(c.tls.unwrap().cert, PathBuf::from("/c.pem"));
        assert_eq!(c.proxy_protocol, vec![Listener::Pop3s]);
    }
}
