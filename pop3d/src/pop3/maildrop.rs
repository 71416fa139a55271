//! The maildrop snapshot taken at login: message numbers are fixed for the session, deleted
//! messages keep their number but vanish from STAT/LIST/UIDL.

use crate::message_id::MessageId;
use crate::store::ListingEntry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Live,
    /// DELE'd in this session; removed at QUIT.
    Deleted,
    /// Its content was found missing; the row was already dropped by the caller.
    Gone,
}

#[derive(Debug)]
pub struct Maildrop {
    pub mailbox: String,
    messages: Vec<ListingEntry>,
    marks: Vec<Mark>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(ListingEntry),
    Deleted,
    NoSuchMessage,
}

impl Maildrop {
    pub fn new(mailbox: String, messages: Vec<ListingEntry>) -> Self {
        let marks = vec![Mark::Live; messages.len()];
        Self { mailbox, messages, marks }
    }

    /// Looks up a 1-based message number.
    pub fn get(&self, number: usize) -> Lookup {
        match number.checked_sub(1).and_then(|i| self.messages.get(i).map(|m| (i, m))) {
            Some((i, entry)) if self.marks[i] == Mark::Live => Lookup::Found(*entry),
            Some(_) => Lookup::Deleted,
            None => Lookup::NoSuchMessage,
        }
    }

    /// Live messages with their numbers.
    pub fn live(&self) -> impl Iterator<Item = (usize, &ListingEntry)> {
        self.messages.iter().enumerate().filter(|(i, _)| self.marks[*i] == Mark::Live).map(|(i, m)| (i + 1, m))
    }

    pub fn stat(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(n, octets), (_, m)| (n + 1, octets + m.size))
    }

    pub fn delete(&mut self, number: usize) -> Lookup {
        let found = self.get(number);
        if let Lookup::Found(_) = found {
            self.marks[number - 1] = Mark::Deleted;
        }
        found
    }

    pub fn mark_gone(&mut self, number: usize) {
        if let Some(mark) = self.marks.get_mut(number.wrapping_sub(1)) {
            *mark = Mark::Gone;
        }
    }

    pub fn reset(&mut self) {
        for mark in &mut self.marks {
            if *mark == Mark::Deleted {
                *mark = Mark::Live;
            }
        }
    }

    /// The oldest message this session leaves in place (neither deleted nor gone).
    pub fn oldest_kept(&self) -> Option<MessageId> {
        self.live().next().map(|(_, m)| m.id)
    }

    pub fn deleted_ids(&self) -> Vec<MessageId> {
        self.messages.iter().zip(&self.marks).filter(|(_, m)| **m == Mark::Deleted).map(|(e, _)| e.id).collect()
    }
}
