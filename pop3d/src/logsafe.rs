//! Client-supplied text in log lines.
//!
//! A POP3 `USER` name, a SASL identity or an LMTP `LHLO` name arrives before anyone is
//! authenticated. Written raw, an ESC or CR in it lets a client forge or hide log lines (and drive
//! the terminal of whoever reads the log), so every such field goes through [`Untrusted`].

use std::fmt;

/// Longest part of an untrusted field written to a log line.
const MAX_CHARS: usize = 256;

/// Displays client text with control characters escaped (`\u{1b}`, `\r`, `\n`) and long text cut.
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_CHARS {
                return f.write_str("...");
            }
            // Bidirectional overrides and line separators are not control characters but can
            // reorder or split what a reader sees.
            let hidden = matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || hidden {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        let shown = Untrusted("bob\u{1b}[31m\r\nINFO forged\u{202e}").to_string();
        assert_eq!(shown, "bob\\u{1b}[31m\\r\\nINFO forged\\u{202e}");
        assert!(!shown.chars().any(char::is_control));
        assert_eq!(Untrusted("alice@example.com").to_string(), "alice@example.com");
        assert_eq!(Untrusted(&"x".repeat(1000)).to_string().len(), MAX_CHARS + 3);
    }
}
