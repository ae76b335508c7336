//! The directory of names: who is called what, server-wide. Pure.
//!
//! Names are what `/nick`, `/msg` and `/who` speak of, and they are unique across the whole
//! server whatever room a client is in, so they live apart from any room's membership: a room
//! says who hears a line, the directory says who someone is.

use std::collections::HashMap;

use crate::notice;

/// A client, as the event loop knows it (its connection's slab key).
pub type ClientId = usize;

/// The longest name, in bytes (all name characters are ASCII).
pub const MAX_NAME: usize = 16;

/// A name nobody may take: lines from the server start with it.
const RESERVED: &str = "SERVER";

#[derive(Default)]
pub struct Directory {
    names: HashMap<ClientId, String>,
    /// Lowercased name to client: names are unique regardless of case.
    by_name: HashMap<String, ClientId>,
    /// The number in the next `guest<N>`; never goes back, so a name is never reused.
    next_guest: u64,
    /// What guest names end with on a node of a cluster (`@node`), nothing alone; and, while
    /// `qualify` (a cluster whose bus cannot claim names), what every name ends with
    /// (docs/protocol.md, "Several servers").
    suffix: String,
    qualify: bool,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::qualified("")
    }

    /// A directory whose names all end with `suffix` (`@node`): unique across a cluster,
    /// since each node's are unique on it.
    pub fn qualified(suffix: &str) -> Directory {
        Directory {
            next_guest: 1,
            suffix: suffix.to_owned(),
            qualify: true,
            ..Directory::default()
        }
    }

    /// Whether names picked with `/nick` end with the suffix too (guest names always do).
    pub fn qualify_names(&mut self, qualify: bool) {
        self.qualify = qualify;
    }

    /// Gives a new client the next free `guest<N>` name, and returns it.
    pub fn register(&mut self, id: ClientId) -> &str {
        let name = self.next_guest_name();
        self.by_name.insert(name.clone(), id);
        self.names.entry(id).or_insert(name)
    }

    /// Gives a client a new guest name (its own was lost); returns its old name.
    pub fn to_guest(&mut self, id: ClientId) -> Option<String> {
        let new = self.next_guest_name();
        self.set_name(id, new)
    }

    fn next_guest_name(&mut self) -> String {
        loop {
            let candidate = format!("guest{}{}", self.next_guest, self.suffix);
            self.next_guest += 1;
            // Someone may have picked this name with /nick; skip it rather than share it.
            if !self.by_name.contains_key(&candidate) {
                break candidate;
            }
        }
    }

    /// A client is gone: its name is free again. Returns the name it had.
    pub fn release(&mut self, id: ClientId) -> Option<String> {
        let name = self.names.remove(&id)?;
        self.by_name.remove(&name.to_ascii_lowercase());
        Some(name)
    }

    /// The name `/nick new` would give a client, or why it may not have it (the line to
    /// send it).
    pub fn check(&self, id: ClientId, new: &str) -> Result<String, String> {
        let old = self.names.get(&id).ok_or(notice::NAME_INVALID.to_owned())?;
        if !is_valid_name(new) {
            return Err(notice::NAME_INVALID.to_owned());
        }
        if new.eq_ignore_ascii_case(RESERVED) {
            return Err(notice::name_reserved(new));
        }
        let new = if self.qualify {
            format!("{new}{}", self.suffix)
        } else {
            new.to_owned()
        };
        if *old == new {
            return Err(notice::already_named(&new));
        }
        if self.find(&new).is_some_and(|owner| owner != id) {
            return Err(notice::name_taken(&new));
        }
        Ok(new)
    }

    /// Renames a client (`new`, and the suffix if names are qualified), or says why not (the
    /// line to send it). Returns the old name.
    pub fn rename(&mut self, id: ClientId, new: &str) -> Result<String, String> {
        let new = self.check(id, new)?;
        // The new name is reserved before anyone hears of it.
        Ok(self.set_name(id, new).expect("checked above"))
    }

    /// Gives a client with a name another one; returns the old.
    fn set_name(&mut self, id: ClientId, new: String) -> Option<String> {
        let name = self.names.get_mut(&id)?;
        self.by_name.remove(&name.to_ascii_lowercase());
        self.by_name.insert(new.to_ascii_lowercase(), id);
        Some(std::mem::replace(name, new))
    }

    pub fn name(&self, id: ClientId) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// The client with this name, regardless of case.
    pub fn find(&self, name: &str) -> Option<ClientId> {
        if name.len() > MAX_NAME + self.suffix.len() {
            return None;
        }
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    /// Clients with a name, in no particular order.
    pub fn clients(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.names.keys().copied()
    }

    pub fn contains(&self, id: ClientId) -> bool {
        self.names.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// At most [`notice::WHO_MAX_NAMES`] of these names, sorted regardless of case, and how many
/// there are.
pub fn listing(mut names: Vec<&str>) -> (Vec<&str>, usize) {
    let total = names.len();
    let by_name = |a: &&str, b: &&str| a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase());
    if names.len() > notice::WHO_MAX_NAMES {
        // Sorting ten thousand names for a line that shows a hundred would be wasted work.
        names.select_nth_unstable_by(notice::WHO_MAX_NAMES, by_name);
        names.truncate(notice::WHO_MAX_NAMES);
    }
    names.sort_unstable_by(by_name);
    (names, total)
}

/// 1 to 16 of `A-Z a-z 0-9 _ -`: safe in any terminal, easy to type, impossible to mistake
/// for a server line.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_are_numbered_and_never_reuse_a_name() {
        let mut d = Directory::new();
        assert_eq!(d.register(1), "guest1");
        assert_eq!(d.rename(1, "guest2"), Ok("guest1".to_owned()));
        assert_eq!(d.register(2), "guest3", "guest2 is taken by /nick");
        assert_eq!(d.release(2).as_deref(), Some("guest3"));
        assert_eq!(
            d.register(3),
            "guest4",
            "a freed guest name is not handed out again"
        );
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn renames_are_checked_and_names_unique_regardless_of_case() {
        let mut d = Directory::new();
        d.register(1);
        d.register(2);
        assert_eq!(d.rename(1, "alice"), Ok("guest1".to_owned()));
        assert_eq!(d.rename(2, "ALICE"), Err(notice::name_taken("ALICE")));
        assert_eq!(d.rename(2, "server"), Err(notice::name_reserved("server")));
        assert_eq!(d.rename(2, "a b"), Err(notice::NAME_INVALID.to_owned()));
        assert_eq!(d.rename(1, "alice"), Err(notice::already_named("alice")));
        assert_eq!(
            d.rename(1, "Alice"),
            Ok("alice".to_owned()),
            "a change of case"
        );
        assert_eq!(d.find("ALICE"), Some(1));
        assert_eq!(d.find(&"x".repeat(MAX_NAME + 1)), None);
        d.release(1);
        assert_eq!(d.find("alice"), None, "the name is free again");
        assert_eq!(d.rename(2, "alice"), Ok("guest2".to_owned()));
    }

    #[test]
    fn a_node_of_a_cluster_qualifies_every_name() {
        let mut d = Directory::qualified("@a");
        assert_eq!(d.register(1), "guest1@a");
        assert_eq!(d.rename(1, "alice"), Ok("guest1@a".to_owned()));
        assert_eq!(d.name(1), Some("alice@a"));
        assert_eq!(d.find("Alice@A"), Some(1));
        assert_eq!(d.find("alice"), None, "the name is the qualified one");
        assert_eq!(d.rename(1, "alice@b"), Err(notice::NAME_INVALID.to_owned()));
        assert_eq!(d.rename(1, "alice"), Err(notice::already_named("alice@a")));
    }

    #[test]
    fn lists_sort_regardless_of_case_and_count() {
        let mut d = Directory::new();
        for id in 1..=3 {
            d.register(id);
        }
        d.rename(3, "Bob").unwrap();
        let names = d.clients().filter_map(|id| d.name(id)).collect();
        assert_eq!(listing(names), (vec!["Bob", "guest1", "guest2"], 3));
    }
}
