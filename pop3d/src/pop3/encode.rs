//! Everything the server sends a POP3 client is encoded here: status replies ([`Reply`]) and the
//! streamed content of RETR and TOP ([`MessageEncoder`]: dot-stuffing, bare-LF repair and TOP's
//! line cut, applied chunk by chunk so no message is ever held whole in memory).

use std::borrow::Cow;

/// RFC 2449 §8 response codes, the ones clients act on (retry later, do not retry the password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    Auth,
    SysTemp,
    InUse,
}

impl RespCode {
    fn as_str(self) -> &'static str {
        match self {
            RespCode::Auth => "AUTH",
            RespCode::SysTemp => "SYS/TEMP",
            RespCode::InUse => "IN-USE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Ok,
    Err(Option<RespCode>),
    /// A SASL challenge (RFC 5034 §4): `+ ` and base64 data.
    Challenge,
}

/// One POP3 reply: a status line, and for multi-line replies the body lines and the `.` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    status: Status,
    text: Cow<'static, str>,
    body: Option<Vec<String>>,
}

impl Reply {
    /// `+OK`, followed by the text if there is one.
    pub fn ok(text: impl Into<Cow<'static, str>>) -> Self {
        Self { status: Status::Ok, text: text.into(), body: None }
    }

    pub fn err(text: impl Into<Cow<'static, str>>) -> Self {
        Self { status: Status::Err(None), text: text.into(), body: None }
    }

    /// `-ERR [CODE] text`.
    pub fn err_code(code: RespCode, text: impl Into<Cow<'static, str>>) -> Self {
        Self { status: Status::Err(Some(code)), text: text.into(), body: None }
    }

    /// `+ data`; the space is sent even when the data is empty, as RFC 5034 §4 asks.
    pub fn challenge(data: impl Into<Cow<'static, str>>) -> Self {
        Self { status: Status::Challenge, text: data.into(), body: None }
    }

    /// Makes this a multi-line reply with these body lines (dot-stuffed when encoded).
    pub fn lines<L: Into<String>>(mut self, lines: impl IntoIterator<Item = L>) -> Self {
        self.body = Some(lines.into_iter().map(Into::into).collect());
        self
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self.status {
            Status::Ok => out.extend_from_slice(b"+OK"),
            Status::Err(_) => out.extend_from_slice(b"-ERR"),
            Status::Challenge => out.extend_from_slice(b"+ "),
        }
        if let Status::Err(Some(code)) = self.status {
            out.extend_from_slice(format!(" [{}]", code.as_str()).as_bytes());
        }
        if !self.text.is_empty() && self.status != Status::Challenge {
            out.push(b' ');
        }
        push_line(out, &self.text);
        if let Some(body) = &self.body {
            for line in body {
                if line.starts_with('.') {
                    out.push(b'.');
                }
                push_line(out, line);
            }
            out.extend_from_slice(b".\r\n");
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Reply text never holds a line break: one would let a client's input start a reply line.
fn push_line(out: &mut Vec<u8>, text: &str) {
    debug_assert!(!text.contains(['\r', '\n']), "line break in reply text {text:?}");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Encodes message content into the body of a multi-line POP3 reply.
#[derive(Debug)]
pub struct MessageEncoder {
    at_line_start: bool,
    prev_cr: bool,
    /// Non-CR octets seen on the current line (an empty line ends the header).
    line_octets: u64,
    top: Option<TopCut>,
    done: bool,
}

#[derive(Debug)]
struct TopCut {
    in_body: bool,
    body_lines_left: u64,
}

impl MessageEncoder {
    /// For RETR: the whole message.
    pub fn whole() -> Self {
        Self::new(None)
    }

    /// For `TOP n`: the header, the blank line, then `n` body lines.
    pub fn top(body_lines: u64) -> Self {
        Self::new(Some(TopCut { in_body: false, body_lines_left: body_lines }))
    }

    fn new(top: Option<TopCut>) -> Self {
        Self { at_line_start: true, prev_cr: false, line_octets: 0, top, done: false }
    }

    /// True once TOP has sent all it should; further input would be ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Encodes one chunk of content, appending to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 2);
        for &b in chunk {
            if self.done {
                return;
            }
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            if b == b'\n' && !self.prev_cr {
                out.push(b'\r');
            }
            out.push(b);
            self.prev_cr = b == b'\r';
            if b == b'\n' {
                self.end_line();
            } else {
                self.at_line_start = false;
                if b != b'\r' {
                    self.line_octets += 1;
                }
            }
        }
    }

    fn end_line(&mut self) {
        let empty = self.line_octets == 0;
        self.at_line_start = true;
        self.line_octets = 0;
        if let Some(top) = &mut self.top {
            if top.in_body {
                top.body_lines_left = top.body_lines_left.saturating_sub(1);
            } else if empty {
                top.in_body = true;
            }
            if top.in_body && top.body_lines_left == 0 {
                self.done = true;
            }
        }
    }

    /// Ends the reply: a CRLF if the content did not end with one, then the `.` line.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            if self.prev_cr {
                out.push(b'\n');
            } else {
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_framed_in_one_place() {
        assert_eq!(Reply::ok("").to_bytes(), b"+OK\r\n");
        assert_eq!(Reply::ok("Logged in.").to_bytes(), b"+OK Logged in.\r\n");
        assert_eq!(Reply::err("Unknown command.").to_bytes(), b"-ERR Unknown command.\r\n");
        assert_eq!(Reply::err_code(RespCode::InUse, "x").to_bytes(), b"-ERR [IN-USE] x\r\n");
        assert_eq!(Reply::challenge("").to_bytes(), b"+ \r\n");
        assert_eq!(Reply::challenge("AQ==").to_bytes(), b"+ AQ==\r\n");
        let multi = Reply::ok("2 messages").lines(["1 10", ".hidden"]).to_bytes();
        assert_eq!(multi, b"+OK 2 messages\r\n1 10\r\n..hidden\r\n.\r\n");
        assert_eq!(Reply::ok("").lines(Vec::<String>::new()).to_bytes(), b"+OK\r\n.\r\n");
    }

    fn encode(mut enc: MessageEncoder, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            enc.push(c, &mut out);
        }
        enc.finish(&mut out);
        out
    }

    #[test]
    fn stuffs_leading_dots_at_every_line_start() {
        let got = encode(MessageEncoder::whole(), &[b".a\r\n..b\r\n.\r\nc.d\r\n"]);
        assert_eq!(got, b"..a\r\n...b\r\n..\r\nc.d\r\n.\r\n");
    }

    #[test]
    fn stuffs_after_bare_lf_and_repairs_it() {
        let got = encode(MessageEncoder::whole(), &[b"x\n.y\n"]);
        assert_eq!(got, b"x\r\n..y\r\n.\r\n");
    }

    #[test]
    fn adds_final_crlf_when_missing() {
        assert_eq!(encode(MessageEncoder::whole(), &[b"abc"]), b"abc\r\n.\r\n");
        assert_eq!(encode(MessageEncoder::whole(), &[b""]), b".\r\n");
    }

    #[test]
    fn dot_split_across_chunks_is_stuffed() {
        let got = encode(MessageEncoder::whole(), &[b"a\r", b"\n", b".", b"b\r\n"]);
        assert_eq!(got, b"a\r\n..b\r\n.\r\n");
    }

    #[test]
    fn top_zero_is_header_and_blank_line() {
        let msg: &[u8] = b"A: 1\r\nB: 2\r\n\r\nline1\r\nline2\r\n";
        assert_eq!(encode(MessageEncoder::top(0), &[msg]), b"A: 1\r\nB: 2\r\n\r\n.\r\n");
    }

    #[test]
    fn top_counts_body_lines_exactly() {
        let msg: &[u8] = b"A: 1\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        assert_eq!(encode(MessageEncoder::top(2), &[msg]), b"A: 1\r\n\r\nl1\r\n..l2\r\n.\r\n");
        assert_eq!(encode(MessageEncoder::top(99), &[msg]), b"A: 1\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
    }

    #[test]
    fn top_on_a_message_without_body_sends_it_all() {
        assert_eq!(encode(MessageEncoder::top(1), &[b"A: 1\r\nB: 2"]), b"A: 1\r\nB: 2\r\n.\r\n");
    }

    #[test]
    fn chunking_does_not_change_output() {
        let msg: &[u8] = b"H: v\r\n\r\n.one\r\n..two\nthree\r\n.\r\nend";
        for top in [None, Some(0), Some(1), Some(3)] {
            let make = || match top {
                Some(n) => MessageEncoder::top(n),
                None => MessageEncoder::whole(),
            };
            let whole = encode(make(), &[msg]);
            for split in 1..msg.len() {
                let parts: Vec<&[u8]> = msg.chunks(split).collect();
                assert_eq!(encode(make(), &parts), whole, "split {split} top {top:?}");
            }
        }
    }
}
