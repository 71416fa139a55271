//! The value each setting has when neither a flag, the environment nor the file sets it. A
//! setting absent here has no default: unset means off (`ops`, `pop3s`, `tls_cert`, OAuth, ...),
//! or it is derived at start (`hostname`: the system's host name).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::{ConsistencyLevel, StoreKind};

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

pub const DATA_DIR: &str = "./pop3d-data";
pub const STORE: StoreKind = StoreKind::Embedded;
/// Unprivileged ports on loopback, so a first `pop3d serve` needs neither root nor a firewall.
pub const POP3: SocketAddr = loopback(1110);
pub const LMTP: SocketAddr = loopback(2424);
pub const ADMIN: SocketAddr = loopback(8080);
pub const ALLOW_INSECURE_AUTH: bool = false;
pub const IDLE_TIMEOUT_SECS: u64 = 600;
pub const MAX_CONNECTIONS: usize = 1000;
pub const MAX_CONNECTIONS_PER_IP: usize = 50;
pub const MAX_BAD_COMMANDS: u32 = 20;
pub const MAX_MESSAGE_SIZE: u64 = 64 * 1024 * 1024;
pub const MIN_FREE_SPACE_MB: u64 = 256;
pub const AUTH_FAIL_DELAY_MS: u64 = 1000;
pub const ACCOUNT_CACHE_SECS: u64 = 2;
/// A day: longer than the first retries of every common MTA (Postfix retries for 5 days, but
/// a message whose first copy is a day old is a fresh delivery to the reader), short enough that
/// the records of a busy server stay a small fraction of its mail.
pub const DEDUP_WINDOW_SECS: u64 = 86_400;
/// SCRAM-SHA-256 keys sit next to the argon2id hash, so a stolen store is attacked through the
/// cheaper of the two. OWASP's PBKDF2-HMAC-SHA256 figure (600,000) is its match for argon2id at
/// 19 MiB, t=2 (pop3d's hash); RFC 7677's minimum of 4096 was the weak link.
pub const SCRAM_ITERATIONS: u32 = 600_000;
pub const MIN_PASSWORD_LENGTH: usize = 8;
pub const RECIPIENT_DELIMITER: &str = "+";
/// 0: no quota.
pub const MAILBOX_QUOTA_MB: u64 = 0;
/// RFC 5322 2.1.1's limit, CRLF excluded.
pub const MAX_LINE_LENGTH: usize = 998;
pub const LMTP_TRANSACTION_TIMEOUT_SECS: u64 = 600;
pub const MIN_DATA_RATE: u64 = 1024;
pub const KEYSPACE: &str = "popfleet";
pub const READ_CONSISTENCY: ConsistencyLevel = ConsistencyLevel::LocalQuorum;
pub const WRITE_CONSISTENCY: ConsistencyLevel = ConsistencyLevel::LocalQuorum;
pub const CASSANDRA_TIMEOUT_MS: u64 = 10_000;
pub const WATERMARK_MARGIN_SECS: u64 = 3600;
pub const TLS_RELOAD_INTERVAL_SECS: u64 = 10;
pub const LMTP_STARTTLS: bool = false;
pub const LOGIN_TIMEOUT_SECS: u64 = 60;
/// Per-session command rate. A client that deletes a 100,000-message mailbox pipelines 100,000
/// DELEs (2 s at the default after the 10 s burst), and an MTA's LMTP connection sends about
/// four commands per mail; 100/s (the first default) throttled both to a crawl while a command
/// costs the engine microseconds. The cap is against runaway clients, not normal ones.
pub const MAX_COMMANDS_PER_SECOND: u32 = 5000;
pub const MAX_AUTH_FAILURES: u32 = 3;
pub const OAUTH_USER_CLAIM: &str = "email";
