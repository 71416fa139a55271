//! Test messages: sizes drawn from a mix, a unique token per message, already dot-stuffed for DATA.

use anyhow::{bail, Result};
use rand::Rng;

/// How message sizes are drawn.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub enum SizeMix {
    /// The reference mix: 99 % between 10 and 100 KiB, 1 % between 2 and 5 MiB.
    Default,
    /// 1-4 KiB: notifications, device reports.
    Small,
    Fixed(usize),
}

impl std::str::FromStr for SizeMix {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "default" => SizeMix::Default,
            "small" => SizeMix::Small,
            other => match other.strip_prefix("fixed:").map(parse_size) {
                Some(Ok(n)) => SizeMix::Fixed(n),
                _ => bail!("size mix must be default, small or fixed:N[k|m]"),
            },
        })
    }
}

fn parse_size(s: &str) -> Result<usize> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    Ok(num.parse::<usize>()? * mult)
}

impl SizeMix {
    pub fn draw(&self, rng: &mut impl Rng) -> usize {
        match *self {
            SizeMix::Default if rng.random_bool(0.01) => rng.random_range(2 << 20..=5 << 20),
            SizeMix::Default => rng.random_range(10 << 10..=100 << 10),
            SizeMix::Small => rng.random_range(1 << 10..=4 << 10),
            SizeMix::Fixed(n) => n,
        }
    }
}

/// One body line of 76 characters + CRLF; lines start with a letter so no stuffing is needed, and
/// the generator never has to scan the body.
const LINE: &[u8] = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempo\r\n";

/// A message of about `size` octets (CRLF counted) carrying `token`, terminated for DATA.
pub fn build(token: &str, rcpt: &str, size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size + 512);
    m.extend_from_slice(
        format!(
            "From: <load@popfleet.test>\r\nTo: <{rcpt}>\r\nSubject: load {token}\r\n\
             Message-ID: <{token}@popfleet.test>\r\nX-Load-Token: {token}\r\n\r\n"
        )
        .as_bytes(),
    );
    while m.len() < size {
        m.extend_from_slice(LINE);
    }
    m.extend_from_slice(b".\r\n");
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_termination() {
        let m = build("t1", "a@b", 10_000);
        assert!(m.ends_with(b"\r\n.\r\n"));
        assert!((10_000..10_000 + LINE.len() + 3).contains(&m.len()), "{}", m.len());
        assert_eq!(m.windows(3).filter(|w| *w == b"\n.\r").count(), 1, "only the terminator starts with a dot");
        assert!(matches!("fixed:4k".parse::<SizeMix>().unwrap(), SizeMix::Fixed(4096)));
        assert!("huge".parse::<SizeMix>().is_err());
    }
}
