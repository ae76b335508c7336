//! A room's last messages, for those who join it later: a ring bounded in messages and in
//! bytes. Pure.
//!
//! Only messages are kept (joins, leaves and renames are not worth replaying). The byte bound
//! counts each message's text and author plus a fixed overhead, so that the ring's memory is
//! bounded whatever the messages' sizes: at most `max_bytes` plus one message's worth.

use std::collections::VecDeque;

use crate::config::rooms::HISTORY_ENTRY_OVERHEAD;
use crate::event::Message;

pub struct History {
    entries: VecDeque<Entry>,
    /// What the entries cost, as counted against `max_bytes`.
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

/// A message and when it was said, in seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub message: Message,
    pub at: u64,
}

impl Entry {
    fn cost(&self) -> usize {
        self.message.rendered_len() + HISTORY_ENTRY_OVERHEAD
    }
}

impl History {
    pub fn new(max_messages: usize, max_bytes: usize) -> History {
        History {
            entries: VecDeque::new(),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Keeps a message, forgetting the oldest ones beyond either bound.
    pub fn push(&mut self, message: &Message, at: u64) {
        if self.max_messages == 0 {
            return;
        }
        let entry = Entry {
            message: message.clone(),
            at,
        };
        self.bytes += entry.cost();
        self.entries.push_back(entry);
        while self.entries.len() > self.max_messages || self.bytes > self.max_bytes {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.cost(),
                None => break,
            }
        }
    }

    /// The newest messages whose cost fits in `budget` bytes, oldest first: what one replay
    /// sends.
    pub fn last(&self, budget: usize) -> impl Iterator<Item = &Entry> {
        let mut spent = 0;
        let newest = self
            .entries
            .iter()
            .rev()
            .take_while(|e| {
                spent += e.cost();
                spent <= budget
            })
            .count();
        self.entries.range(self.entries.len() - newest..)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the ring holds, as counted against its byte bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Author;

    fn message(text: &str) -> Message {
        Message::say(Author::Client("al".into()), text)
    }

    fn texts<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<&'a str> {
        entries.map(|e| e.message.text.as_str()).collect()
    }

    #[test]
    fn keeps_the_last_k_messages_in_order() {
        let mut h = History::new(3, usize::MAX);
        for (at, text) in ["a", "b", "c", "d"].iter().enumerate() {
            h.push(&message(text), at as u64);
        }
        assert_eq!(texts(h.last(usize::MAX)), ["b", "c", "d"]);
        assert_eq!(h.last(usize::MAX).next().unwrap().at, 1);
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut h = History::new(0, usize::MAX);
        h.push(&message("a"), 0);
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn bytes_bound_the_ring_whatever_the_count() {
        let cost = |len: usize| 2 + len + HISTORY_ENTRY_OVERHEAD;
        let max = 3 * cost(100);
        let mut h = History::new(1000, max);
        for _ in 0..10 {
            h.push(&message(&"x".repeat(100)), 0);
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.bytes(), max);
        // One long message pushes out as many short ones as it takes.
        h.push(&message(&"y".repeat(250)), 0);
        assert_eq!(h.len(), 2);
        assert_eq!(h.bytes(), cost(100) + cost(250));
    }

    #[test]
    fn a_replay_takes_the_newest_that_fit() {
        let mut h = History::new(10, usize::MAX);
        for text in ["a", "b", "c"] {
            h.push(&message(text), 0);
        }
        let one = 3 + HISTORY_ENTRY_OVERHEAD;
        assert_eq!(texts(h.last(2 * one)), ["b", "c"]);
        assert_eq!(texts(h.last(2 * one - 1)), ["c"]);
        assert_eq!(h.last(0).count(), 0);
    }
}
