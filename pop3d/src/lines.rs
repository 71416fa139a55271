//! A bounded line splitter shared by the POP3 and LMTP engines.
//!
//! Input is appended as it arrives; complete lines come out without their line ending. A line
//! longer than the cap is reported once as [`Line::TooLong`] and its bytes are thrown away up to
//! the next LF, so a client cannot make the buffer grow without bound.

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line without its CRLF (or bare LF).
    Complete(Vec<u8>),
    /// A line went over the cap; its content was discarded.
    TooLong,
}

#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Where the LF search resumes, so a slowly arriving long line is not rescanned.
    scanned: usize,
    max: usize,
    discarding: bool,
}

impl LineReader {
    /// `max` counts the line ending too.
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), scanned: 0, max, discarding: false }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Takes every buffered byte (used when a session switches to another receiver).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// Drops all buffered input (STLS: nothing sent before the handshake may be executed after it).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.discarding = false;
    }

    pub fn next_line(&mut self) -> Option<Line> {
        loop {
            match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    let end = self.scanned + pos;
                    let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                    self.scanned = 0;
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if line.len() + 2 > self.max {
                        return Some(Line::TooLong);
                    }
                    return Some(Line::Complete(line));
                }
                None => {
                    self.scanned = self.buf.len();
                    if self.buf.len() + 1 > self.max {
                        self.buf.clear();
                        self.scanned = 0;
                        if !self.discarding {
                            self.discarding = true;
                            return Some(Line::TooLong);
                        }
                    }
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_crlf_and_lf_lines() {
        let mut r = LineReader::new(100);
        r.push(b"ONE\r\nTWO\nTHR");
        assert_eq!(r.next_line(), Some(Line::Complete(b"ONE".to_vec())));
        assert_eq!(r.next_line(), Some(Line::Complete(b"TWO".to_vec())));
        assert_eq!(r.next_line(), None);
        r.push(b"EE\r\n");
        assert_eq!(r.next_line(), Some(Line::Complete(b"THREE".to_vec())));
    }

    #[test]
    fn long_line_is_reported_once_and_skipped() {
        let mut r = LineReader::new(10);
        r.push(&[b'x'; 30]);
        assert_eq!(r.next_line(), Some(Line::TooLong));
        assert_eq!(r.next_line(), None);
        r.push(&[b'x'; 30]);
        assert_eq!(r.next_line(), None);
        assert!(r.buffered().len() <= 30);
        r.push(b"xx\r\nOK\r\n");
        assert_eq!(r.next_line(), Some(Line::Complete(b"OK".to_vec())));
    }

    #[test]
    fn line_exactly_at_cap_is_accepted() {
        let mut r = LineReader::new(10);
        r.push(b"12345678\r\n123456789\r\n");
        assert_eq!(r.next_line(), Some(Line::Complete(b"12345678".to_vec())));
        assert_eq!(r.next_line(), Some(Line::TooLong));
    }
}
