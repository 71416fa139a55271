//! Message ids: version-1 TimeUUIDs made locally, with no coordination between servers.
//!
//! The id is the POP3 UIDL, so it must be unique forever and never reused. Uniqueness comes from a
//! random node id per process (48 bits, multicast bit set as RFC 4122 asks for random nodes) plus a
//! strictly increasing 100 ns timestamp inside the process. Cassandra `timeuuid` columns only
//! accept version 1, which is why this is not a v7 UUID.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::{Timestamp, Uuid};

/// 100 ns ticks between 1582-10-15 (the UUID epoch) and 1970-01-01.
const GREGORIAN_OFFSET: u64 = 0x01B2_1DD2_1381_4000;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new id, strictly later than every id this process made before.
    pub fn generate() -> Self {
        Generator::global().next()
    }

    /// Wraps an existing UUID; only version 1 is accepted.
    pub fn from_uuid(uuid: Uuid) -> Option<Self> {
        (uuid.get_version_num() == 1).then_some(Self(uuid))
    }

    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// 100 ns ticks since the UUID epoch.
    pub fn ticks(&self) -> u64 {
        self.0.get_timestamp().map(|t| t.to_gregorian().0).unwrap_or(0)
    }

    /// Milliseconds since the Unix epoch at which the id was made.
    pub fn unix_millis(&self) -> u64 {
        self.ticks().saturating_sub(GREGORIAN_OFFSET) / 10_000
    }

    /// The smallest id of the given tick (zero clock sequence and node): a floor for range reads.
    pub fn floor_at_ticks(ticks: u64) -> Self {
        Self(Uuid::new_v1(Timestamp::from_gregorian_time(ticks, 0), &[0; 6]))
    }

    /// The current time in 100 ns ticks since the UUID epoch.
    pub fn now_ticks() -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        GREGORIAN_OFFSET + (now.as_nanos() / 100) as u64
    }

    /// A key that sorts ids by creation time (the raw UUID bytes do not: time_low comes first).
    pub fn sort_key(&self) -> u128 {
        let b = self.0.as_bytes();
        let clock_and_node =
            u64::from_be_bytes([0, 0, b[8] & 0x3f, b[9], b[10], b[11], b[12], b[13]]) << 8 | b[14] as u64;
        let clock_and_node = clock_and_node << 8 | b[15] as u64;
        (self.ticks() as u128) << 64 | clock_and_node as u128
    }

    /// Inverse of [`MessageId::sort_key`].
    pub fn from_sort_key(key: u128) -> Self {
        let ticks = (key >> 64) as u64;
        let rest = key as u64;
        let clock = ((rest >> 48) & 0x3fff) as u16;
        let node: [u8; 6] = rest.to_be_bytes()[2..8].try_into().expect("six bytes");
        Self(Uuid::new_v1(Timestamp::from_gregorian_time(ticks, clock), &node))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0.hyphenated())
    }
}

impl FromStr for MessageId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let uuid = Uuid::parse_str(s).map_err(|e| e.to_string())?;
        Self::from_uuid(uuid).ok_or_else(|| format!("{s} is not a version-1 UUID"))
    }
}

struct Generator {
    node: [u8; 6],
    clock_seq: u16,
    last_ticks: AtomicU64,
}

impl Generator {
    fn global() -> &'static Generator {
        static GEN: OnceLock<Generator> = OnceLock::new();
        GEN.get_or_init(|| {
            let mut node: [u8; 6] = rand::random();
            node[0] |= 0x01; // RFC 4122 §4.5: random node ids set the multicast bit
            Generator { node, clock_seq: rand::random::<u16>() & 0x3fff, last_ticks: AtomicU64::new(0) }
        })
    }

    fn next(&self) -> MessageId {
        let now_ticks = MessageId::now_ticks();
        // Strictly increasing even when the wall clock stalls or steps back.
        let mut last = self.last_ticks.load(Ordering::Relaxed);
        let ticks = loop {
            let candidate = now_ticks.max(last + 1);
            match self.last_ticks.compare_exchange_weak(last, candidate, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break candidate,
                Err(actual) => last = actual,
            }
        };
        MessageId(Uuid::new_v1(Timestamp::from_gregorian_time(ticks, self.clock_seq), &self.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v1_unique_and_time_ordered() {
        let ids: Vec<MessageId> = (0..10_000).map(|_| MessageId::generate()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0].sort_key() < pair[1].sort_key());
        }
        assert!(ids.iter().all(|id| id.uuid().get_version_num() == 1));
        let text = ids[0].to_string();
        assert_eq!(text.len(), 36);
        assert!(text.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }

    #[test]
    fn sort_key_round_trips() {
        for _ in 0..100 {
            let id = MessageId::generate();
            assert_eq!(MessageId::from_sort_key(id.sort_key()), id);
            assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        }
    }

    #[test]
    fn rejects_other_versions() {
        assert!("00000000-0000-4000-8000-000000000000".parse::<MessageId>().is_err());
    }

    #[test]
    fn unix_time_is_now() {
        let id = MessageId::generate();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(now.abs_diff(id.unix_millis()) < 5_000);
    }
}
