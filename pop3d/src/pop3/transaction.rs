//! TRANSACTION state: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, CAPA, QUIT.

use std::fmt::Write as _;

use super::maildrop::Lookup;
use super::session::{Pending, Session, State, Step};
use super::FetchRequest;
use crate::store::ListingEntry;

impl Session {
    pub(super) fn transaction(&mut self, verb: &str, args: &str) -> Option<Step> {
        let State::Transaction(drop) = &mut self.state else { return None };
        let argv: Vec<&str> = args.split(' ').filter(|s| !s.is_empty()).collect();
        match (verb, argv.as_slice()) {
            ("STAT", []) => {
                let (n, octets) = drop.stat();
                self.reply(&format!("+OK {n} {octets}"));
            }
            ("LIST", []) => {
                let (n, octets) = drop.stat();
                let mut text = format!("+OK {n} messages ({octets} octets)\r\n");
                for (number, entry) in drop.live() {
                    let _ = write!(text, "{number} {}\r\n", entry.size);
                }
                text.push_str(".\r\n");
                self.out.extend_from_slice(text.as_bytes());
            }
            ("UIDL", []) => {
                let mut text = String::from("+OK\r\n");
                for (number, entry) in drop.live() {
                    let _ = write!(text, "{number} {}\r\n", entry.id);
                }
                text.push_str(".\r\n");
                self.out.extend_from_slice(text.as_bytes());
            }
            ("LIST", [n]) => {
                if let Some((number, entry)) = self.message(n) {
                    self.reply(&format!("+OK {number} {}", entry.size));
                }
            }
            ("UIDL", [n]) => {
                if let Some((number, entry)) = self.message(n) {
                    self.reply(&format!("+OK {number} {}", entry.id));
                }
            }
            ("RETR", [n]) => return self.fetch(n, None),
            ("TOP", [n, lines]) => match parse_number(lines) {
                Some(lines) => return self.fetch(n, Some(lines)),
                None => self.bad_command("-ERR Invalid line count."),
            },
            ("DELE", [n]) => {
                let number = self.message_number(n)?;
                let State::Transaction(drop) = &mut self.state else { return None };
                match drop.delete(number) {
                    Lookup::Found(_) => self.reply("+OK Marked to be deleted."),
                    Lookup::Deleted => self.reply("-ERR Message is already deleted."),
                    Lookup::NoSuchMessage => self.reply(&format!("-ERR There's no message {number}.")),
                }
            }
            ("RSET", []) => {
                drop.reset();
                let (n, octets) = drop.stat();
                self.reply(&format!("+OK {n} messages ({octets} octets)"));
            }
            ("NOOP", []) => self.reply("+OK"),
            ("CAPA", []) => self.capabilities(),
            ("QUIT", []) => {
                let ids = drop.deleted_ids();
                if ids.is_empty() {
                    self.commit_done_inline();
                } else {
                    self.pending = Some(Pending::Commit);
                    return Some(Step::Commit { mailbox: drop.mailbox.clone(), ids, oldest_kept: drop.oldest_kept() });
                }
            }
            ("STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "RSET" | "NOOP" | "CAPA" | "QUIT", _) => {
                self.bad_command("-ERR Wrong number of arguments.")
            }
            ("USER" | "PASS" | "AUTH" | "APOP" | "STLS", _) => self.bad_command("-ERR Already logged in."),
            _ => self.bad_command("-ERR Unknown command."),
        }
        None
    }

    fn commit_done_inline(&mut self) {
        self.state = State::Done;
        self.reply("+OK Logging out.");
        self.closing = true;
    }

    fn message_number(&mut self, arg: &str) -> Option<usize> {
        match parse_number(arg) {
            Some(n) if n > 0 && n <= usize::MAX as u64 => Some(n as usize),
            Some(_) => {
                self.reply(&format!("-ERR There's no message {arg}."));
                None
            }
            None => {
                self.bad_command("-ERR Invalid message number.");
                None
            }
        }
    }

    /// Resolves a message-number argument to a live message, replying `-ERR` otherwise.
    fn message(&mut self, arg: &str) -> Option<(usize, ListingEntry)> {
        let number = self.message_number(arg)?;
        let State::Transaction(drop) = &self.state else { return None };
        match drop.get(number) {
            Lookup::Found(entry) => Some((number, entry)),
            Lookup::Deleted => {
                self.reply("-ERR Message is deleted.");
                None
            }
            Lookup::NoSuchMessage => {
                self.reply(&format!("-ERR There's no message {number}."));
                None
            }
        }
    }

    fn fetch(&mut self, arg: &str, top: Option<u64>) -> Option<Step> {
        let (number, entry) = self.message(arg)?;
        let State::Transaction(drop) = &self.state else { return None };
        let ok_line = match top {
            None => format!("+OK {} octets\r\n", entry.size),
            Some(_) => "+OK\r\n".to_owned(),
        };
        self.pending = Some(Pending::Fetch(number));
        Some(Step::Fetch(FetchRequest {
            number,
            mailbox: drop.mailbox.clone(),
            entry,
            top,
            ok_line: ok_line.into_bytes(),
        }))
    }
}

/// A decimal number as POP3 allows it: digits only, no sign, bounded length.
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
