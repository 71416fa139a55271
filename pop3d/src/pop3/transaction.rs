//! TRANSACTION state: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, CAPA, QUIT.

use super::command::{Command, MessageNumber, ParseError, Verb};
use super::encode::Reply;
use super::maildrop::Lookup;
use super::session::{Pending, Session, State, Step};
use super::FetchRequest;
use crate::store::ListingEntry;

fn already_logged_in() -> Reply {
    Reply::err("Already logged in.")
}

fn no_such_message(number: MessageNumber) -> Reply {
    Reply::err(format!("There's no message {number}."))
}

impl Session {
    pub(super) fn transaction(&mut self, parsed: Result<Command, ParseError>) -> Option<Step> {
        let command = match parsed {
            Ok(command) => command,
            // A login command is refused as such whatever its arguments.
            Err(error) if error.verb().is_some_and(Verb::is_login) => {
                self.bad_command(already_logged_in());
                return None;
            }
            Err(error) => {
                self.refuse(&error);
                return None;
            }
        };
        let State::Transaction(drop) = &mut self.state else { return None };
        match command {
            Command::Stat => {
                let (n, octets) = drop.stat();
                self.reply(Reply::ok(format!("{n} {octets}")));
            }
            Command::List(None) => {
                let (n, octets) = drop.stat();
                let lines: Vec<String> =
                    drop.live().map(|(number, entry)| format!("{number} {}", entry.size)).collect();
                self.reply(Reply::ok(format!("{n} messages ({octets} octets)")).lines(lines));
            }
            Command::Uidl(None) => {
                let lines: Vec<String> = drop.live().map(|(number, entry)| format!("{number} {}", entry.id)).collect();
                self.reply(Reply::ok("").lines(lines));
            }
            Command::List(Some(n)) => {
                if let Some(entry) = self.message(n) {
                    self.reply(Reply::ok(format!("{n} {}", entry.size)));
                }
            }
            Command::Uidl(Some(n)) => {
                if let Some(entry) = self.message(n) {
                    self.reply(Reply::ok(format!("{n} {}", entry.id)));
                }
            }
            Command::Retr(n) => return self.fetch(n, None),
            Command::Top(n, lines) => return self.fetch(n, Some(lines)),
            Command::Dele(n) => match drop.delete(n.get()) {
                Lookup::Found(_) => self.reply(Reply::ok("Marked to be deleted.")),
                Lookup::Deleted => self.reply(Reply::err("Message is already deleted.")),
                Lookup::NoSuchMessage => self.reply(no_such_message(n)),
            },
            Command::Rset => {
                drop.reset();
                let (n, octets) = drop.stat();
                self.reply(Reply::ok(format!("{n} messages ({octets} octets)")));
            }
            Command::Noop => self.reply(Reply::ok("")),
            Command::Capa => self.capabilities(),
            Command::Quit => {
                let ids = drop.deleted_ids();
                if ids.is_empty() {
                    self.log_out();
                } else {
                    self.pending = Some(Pending::Commit);
                    return Some(Step::Commit { mailbox: drop.mailbox.clone(), ids, oldest_kept: drop.oldest_kept() });
                }
            }
            Command::User(_) | Command::Pass(_) | Command::Apop | Command::Auth { .. } | Command::Stls => {
                self.bad_command(already_logged_in())
            }
        }
        None
    }

    /// Resolves a message number to a live message, replying `-ERR` otherwise.
    fn message(&mut self, number: MessageNumber) -> Option<ListingEntry> {
        let State::Transaction(drop) = &self.state else { return None };
        match drop.get(number.get()) {
            Lookup::Found(entry) => Some(entry),
            Lookup::Deleted => {
                self.reply(Reply::err("Message is deleted."));
                None
            }
            Lookup::NoSuchMessage => {
                self.reply(no_such_message(number));
                None
            }
        }
    }

    fn fetch(&mut self, number: MessageNumber, top: Option<u64>) -> Option<Step> {
        let entry = self.message(number)?;
        let State::Transaction(drop) = &self.state else { return None };
        let ok_line = match top {
            None => Reply::ok(format!("{} octets", entry.size)),
            Some(_) => Reply::ok(""),
        };
        self.pending = Some(Pending::Fetch(number.get()));
        Some(Step::Fetch(FetchRequest {
            number: number.get(),
            mailbox: drop.mailbox.clone(),
            entry,
            top,
            ok_line: ok_line.to_bytes(),
        }))
    }
}
