//! The identity of a delivery, for recognising an MTA's retry of a message already stored.
//!
//! When the connection dies between the commit (the listing row) and the MTA reading the `250`,
//! the MTA sends the same message again. Its identity is the recipient plus the message's
//! `Message-ID` plus a digest of its content as received: the header alone would merge two
//! different messages that reuse an id (broken generators, resent drafts), the digest alone would
//! merge a legitimate second copy of a body. A message without `Message-ID` has no identity and is
//! never deduplicated. The recipient is not part of the key: the store keys records by mailbox.
//!
//! I/O-free: [`KeyBuilder`] is fed the message as it streams in and hashes as it goes, so nothing
//! is buffered beyond the header block.

use sha2::{Digest, Sha256};

/// Header octets kept to look for `Message-ID`; a header block longer than this is cut there
/// (the field is almost always near the top, and a client must not make the server hold more).
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Tells keys of this scheme apart from any later one.
const DOMAIN: &[u8] = b"popfleet delivery key v1\0";

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryKey(pub [u8; 32]);

impl std::fmt::Debug for DeliveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeliveryKey({})", hex::encode(&self.0[..8]))
    }
}

/// Hashes a message while it streams in and finds its `Message-ID` in the header block.
pub struct KeyBuilder {
    content: Sha256,
    headers: Vec<u8>,
    /// The blank line ending the header block was seen (or the cap reached).
    headers_done: bool,
}

impl Default for KeyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyBuilder {
    pub fn new() -> Self {
        Self { content: Sha256::new(), headers: Vec::new(), headers_done: false }
    }

    /// The next octets of the message, in order, as stored (without pop3d's trace headers).
    pub fn update(&mut self, data: &[u8]) {
        self.content.update(data);
        if self.headers_done {
            return;
        }
        let room = MAX_HEADER_BLOCK - self.headers.len();
        let take = data.len().min(room);
        // Search from a little before the new data, so a CRLFCRLF split across chunks is found.
        let from = self.headers.len().saturating_sub(3);
        self.headers.extend_from_slice(&data[..take]);
        if let Some(end) = find(&self.headers[from..], b"\r\n\r\n") {
            self.headers.truncate(from + end + 2);
            self.headers_done = true;
        } else if self.headers.len() == MAX_HEADER_BLOCK {
            self.headers_done = true;
        }
    }

    /// The delivery's key, or `None` for a message without a `Message-ID`.
    pub fn finish(self) -> Option<DeliveryKey> {
        let id = message_id(&self.headers)?;
        let digest = self.content.finalize();
        let mut key = Sha256::new();
        key.update(DOMAIN);
        key.update((id.len() as u64).to_be_bytes());
        key.update(&id);
        key.update(digest);
        Some(DeliveryKey(key.finalize().into()))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of the first `Message-ID` field of a header block, unfolded (RFC 5322 2.2.3) and
/// trimmed; `None` when there is none or it is empty. Compared as octets: two retries of one
/// message carry the same field, so no normalisation beyond whitespace is needed.
pub fn message_id(headers: &[u8]) -> Option<Vec<u8>> {
    let mut lines = headers.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None; // end of the header block
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !name.trim_ascii_end().eq_ignore_ascii_case(b"message-id") {
            continue;
        }
        let mut unfolded = value.to_vec();
        while let Some(next) = lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t')) {
            unfolded.push(b' ');
            unfolded.extend_from_slice(next.trim_ascii());
        }
        let id = unfolded.trim_ascii();
        return (!id.is_empty()).then(|| id.to_vec());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(parts: &[&[u8]]) -> Option<DeliveryKey> {
        let mut b = KeyBuilder::new();
        for p in parts {
            b.update(p);
        }
        b.finish()
    }

    #[test]
    fn message_id_is_found_in_any_case_unfolded_and_only_in_the_header_block() {
        assert_eq!(message_id(b"From: a\r\nMessage-ID: <x@y>\r\n\r\n").unwrap(), b"<x@y>");
        assert_eq!(message_id(b"message-id:<x@y>\r\n").unwrap(), b"<x@y>");
        assert_eq!(message_id(b"MESSAGE-ID :  <x@y>  \r\n").unwrap(), b"<x@y>");
        assert_eq!(message_id(b"Message-ID:\r\n <x@y>\r\n\r\n").unwrap(), b"<x@y>");
        assert_eq!(message_id(b"Message-Id: <x@y>\nTo: b\n\n").unwrap(), b"<x@y>", "bare LF");
        assert_eq!(message_id(b"X-Message-ID: <x@y>\r\n\r\n"), None);
        assert_eq!(message_id(b"Message-ID:   \r\n\r\n"), None);
        assert_eq!(message_id(b"From: a\r\n\r\nMessage-ID: <in-body@y>\r\n"), None);
        assert_eq!(message_id(b""), None);
    }

    #[test]
    fn the_key_does_not_depend_on_how_the_message_was_chunked() {
        let msg: &[u8] = b"Subject: s\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n";
        let whole = key_of(&[msg]).unwrap();
        for cut in 1..msg.len() {
            assert_eq!(key_of(&[&msg[..cut], &msg[cut..]]).unwrap(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn same_id_other_content_and_same_content_other_id_are_different_deliveries() {
        let a = key_of(&[b"Message-ID: <a@b>\r\n\r\none\r\n"]).unwrap();
        assert_ne!(a, key_of(&[b"Message-ID: <a@b>\r\n\r\ntwo\r\n"]).unwrap());
        assert_ne!(a, key_of(&[b"Message-ID: <c@b>\r\n\r\none\r\n"]).unwrap());
        assert_eq!(a, key_of(&[b"Message-ID: <a@b>\r\n\r\none\r\n"]).unwrap());
    }

    #[test]
    fn no_message_id_no_key() {
        assert_eq!(key_of(&[b"Subject: s\r\n\r\nMessage-ID: <body@b>\r\n"]), None);
        assert_eq!(key_of(&[]), None);
    }

    #[test]
    fn a_header_block_over_the_cap_is_cut_and_still_searched() {
        let mut msg = b"Message-ID: <early@b>\r\n".to_vec();
        while msg.len() < MAX_HEADER_BLOCK * 2 {
            msg.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        let mut b = KeyBuilder::new();
        for chunk in msg.chunks(4096) {
            b.update(chunk);
        }
        assert!(b.headers.len() <= MAX_HEADER_BLOCK);
        assert!(b.finish().is_some());
    }
}
