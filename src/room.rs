//! One room: its name, its members, its topic and its history. Pure.
//!
//! A room knows who is in it, not who they are: names are the [`Directory`]'s, server-wide, and
//! what a command means is the chat's (`chat.rs`). Keeping membership this small keeps a
//! broadcast a walk over one set.
//!
//! [`Directory`]: crate::directory::Directory

use std::collections::HashSet;

use crate::config::rooms::{LOBBY, MAX_NAME};
use crate::directory::ClientId;
use crate::event::{Message, RoomName};
use crate::history::{Entry, History};

/// A room, as the chat knows it (its place in the chat's table). The lobby's never changes.
pub type RoomId = usize;

pub struct Room {
    name: RoomName,
    topic: Option<String>,
    members: HashSet<ClientId>,
    /// Members on other nodes of a cluster, as their presence says.
    remote: usize,
    history: History,
}

impl Room {
    pub fn new(name: &str, history: History) -> Room {
        Room {
            name: name.into(),
            topic: None,
            members: HashSet::new(),
            remote: 0,
            history,
        }
    }

    /// The name as it was first written (`#Rust`); rooms are found regardless of case.
    pub fn name(&self) -> &RoomName {
        &self.name
    }

    pub fn is_lobby(&self) -> bool {
        &*self.name == LOBBY
    }

    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    pub fn set_topic(&mut self, topic: &str) {
        self.topic = Some(topic.to_owned());
    }

    pub fn members(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.members.iter().copied()
    }

    pub fn contains(&self, id: ClientId) -> bool {
        self.members.contains(&id)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No member here, nor on another node: the room may go.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.remote == 0
    }

    pub fn remote(&self) -> usize {
        self.remote
    }

    pub fn set_remote(&mut self, members: usize) {
        self.remote = members;
    }

    pub fn add(&mut self, id: ClientId) {
        self.members.insert(id);
    }

    pub fn remove(&mut self, id: ClientId) {
        self.members.remove(&id);
    }

    /// Keeps a message said in the room for those who join later.
    pub fn record(&mut self, message: &Message, at: u64) {
        self.history.push(message, at);
    }

    /// The newest messages of the history that fit in `budget` bytes, oldest first.
    pub fn history(&self, budget: usize) -> impl Iterator<Item = &Entry> {
        self.history.last(budget)
    }
}

/// `#` and 1 to 32 of `A-Z a-z 0-9 _ -`: no spaces, commas or control characters, nothing a
/// terminal or the `[#room] ` prefix could misread.
pub fn is_valid_name(name: &str) -> bool {
    name.strip_prefix('#').is_some_and(|rest| {
        (1..=MAX_NAME).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Author;

    #[test]
    fn names_are_a_hash_and_up_to_32_safe_characters() {
        for good in [
            "#a",
            "#lobby",
            "#Rust-2024",
            "#under_score",
            &format!("#{}", "x".repeat(32)),
        ] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "#",
            "lobby",
            "##x",
            "#a b",
            "#a,b",
            "#é",
            "#\x1b[2J",
            &format!("#{}", "x".repeat(33)),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn members_topic_and_history() {
        let mut room = Room::new("#Rust", History::new(2, usize::MAX));
        assert!(!room.is_lobby() && room.is_empty());
        room.add(1);
        room.add(2);
        room.add(2);
        assert_eq!(room.len(), 2);
        room.remove(1);
        assert!(!room.contains(1) && room.contains(2));
        assert_eq!(room.topic(), None);
        room.set_topic("borrowing");
        assert_eq!(room.topic(), Some("borrowing"));
        for text in ["a", "b", "c"] {
            room.record(&Message::say(Author::Operator, text), 7);
        }
        let kept: Vec<&str> = room
            .history(usize::MAX)
            .map(|e| e.message.text.as_str())
            .collect();
        assert_eq!(kept, ["b", "c"]);
        assert!(Room::new(LOBBY, History::new(0, 0)).is_lobby());
    }
}
