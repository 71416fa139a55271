//! Every LMTP reply is framed here (RFC 5321 §4.2, RFC 2034 enhanced status codes): a three-digit
//! code, the enhanced code where the reply has one, the text, and `-` continuation lines.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    /// `class.subject.detail`, on every line of the reply.
    enhanced: Option<[u16; 3]>,
    lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: [u16; 3], text: impl Into<String>) -> Self {
        Self::build(code, Some(enhanced), vec![text.into()])
    }

    /// A reply without an enhanced code: the greeting, 354 and LHLO's extension list, which RFC
    /// 2034 §3 leaves without one.
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Self::build(code, None, vec![text.into()])
    }

    /// A multi-line reply (LHLO's capabilities): `code-line` for all lines but the last.
    pub fn multiline(code: u16, lines: Vec<String>) -> Self {
        Self::build(code, None, lines)
    }

    fn build(code: u16, enhanced: Option<[u16; 3]>, lines: Vec<String>) -> Self {
        debug_assert!((200..600).contains(&code), "reply code {code}");
        debug_assert!(!lines.is_empty());
        Self { code, enhanced, lines }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut text = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            // A line break in the text would let a client's input start a reply line of its own.
            debug_assert!(!line.contains(['\r', '\n']), "line break in reply text {line:?}");
            let separator = if i + 1 == self.lines.len() { ' ' } else { '-' };
            let _ = write!(text, "{}{separator}", self.code);
            if let Some([class, subject, detail]) = self.enhanced {
                let _ = write!(text, "{class}.{subject}.{detail} ");
            }
            text.push_str(line);
            text.push_str("\r\n");
        }
        out.extend_from_slice(text.as_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// The wire text without the final CRLF, for tests and logs.
impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.to_bytes();
        f.write_str(String::from_utf8_lossy(&bytes).trim_end_matches("\r\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_text_and_continuation_lines() {
        assert_eq!(Reply::new(250, [2, 1, 0], "Sender OK").to_bytes(), b"250 2.1.0 Sender OK\r\n");
        assert_eq!(Reply::plain(354, "Go ahead").to_bytes(), b"354 Go ahead\r\n");
        let lhlo = Reply::multiline(250, vec!["mx.test".into(), "PIPELINING".into(), "SIZE 10".into()]);
        assert_eq!(lhlo.to_bytes(), b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        assert_eq!(Reply::new(501, [5, 5, 4], "Syntax").to_string(), "501 5.5.4 Syntax");
    }
}
