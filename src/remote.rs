//! The other nodes' clients, as their presence says: who is on which node, in which rooms.
//! Pure.
//!
//! Each node publishes its clients and their rooms, whole, when they change and every few
//! seconds (`cluster::Gossip::Presence`, cut into parts). This table keeps the last whole dump
//! of each node: what `/who`, `/rooms` and `/msg` know of the rest of the cluster. It is as
//! fresh as the last dump, so it is best-effort by design (docs/protocol.md, "Several servers").

use std::collections::HashMap;

/// A client of another node: its name and its rooms.
pub type Client = (String, Vec<String>);

#[derive(Default)]
pub struct Remote {
    nodes: HashMap<String, Vec<Client>>,
    /// A dump being received, by node: its generation and the parts so far.
    pending: HashMap<String, Pending>,
    /// Lowercased name to its node.
    by_name: HashMap<String, String>,
}

struct Pending {
    generation: u64,
    parts: Vec<Option<Vec<Client>>>,
}

impl Remote {
    /// One part of a node's dump; the whole dump once every part of one generation is in. A
    /// part of a newer generation starts over; one of an older is dropped.
    pub fn part(
        &mut self,
        node: &str,
        generation: u64,
        part: u32,
        parts: u32,
        clients: Vec<Client>,
    ) -> Option<Vec<Client>> {
        let (part, parts) = (part as usize, parts as usize);
        if part >= parts {
            return None;
        }
        let pending = self
            .pending
            .entry(node.to_owned())
            .or_insert_with(|| Pending {
                generation,
                parts: Vec::new(),
            });
        if generation < pending.generation {
            return None;
        }
        if generation > pending.generation || pending.parts.len() != parts {
            pending.generation = generation;
            pending.parts = vec![None; parts];
        }
        pending.parts[part] = Some(clients);
        if pending.parts.iter().any(Option::is_none) {
            return None;
        }
        let whole = std::mem::take(&mut pending.parts);
        Some(whole.into_iter().flatten().flatten().collect())
    }

    /// Replaces what was known of a node's clients; returns what was known before.
    pub fn replace(&mut self, node: &str, clients: Vec<Client>) -> Vec<Client> {
        let old = if clients.is_empty() {
            self.pending.remove(node);
            self.nodes.remove(node).unwrap_or_default()
        } else {
            self.nodes
                .insert(node.to_owned(), clients)
                .unwrap_or_default()
        };
        for (name, _) in &old {
            self.by_name.remove(&name.to_ascii_lowercase());
        }
        for (name, _) in self.nodes.get(node).into_iter().flatten() {
            self.by_name
                .insert(name.to_ascii_lowercase(), node.to_owned());
        }
        old
    }

    /// The node of the client with this name, regardless of case.
    pub fn node_of(&self, name: &str) -> Option<&str> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The name as its node spells it.
    pub fn spelling(&self, name: &str) -> Option<&str> {
        let node = self.node_of(name)?;
        self.nodes[node]
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| n.eq_ignore_ascii_case(name))
    }

    /// Every remote client's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.nodes.values().flatten().map(|(name, _)| name.as_str())
    }

    /// The names of remote members of a room, regardless of case.
    pub fn names_in<'a>(&'a self, room: &'a str) -> impl Iterator<Item = &'a str> {
        self.nodes
            .values()
            .flatten()
            .filter(|(_, rooms)| rooms.iter().any(|r| r.eq_ignore_ascii_case(room)))
            .map(|(name, _)| name.as_str())
    }

    /// A node's clients.
    pub fn clients_of(&self, node: &str) -> impl Iterator<Item = &Client> {
        self.nodes.get(node).into_iter().flatten()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, rooms: &[&str]) -> Client {
        (
            name.to_owned(),
            rooms.iter().map(|r| (*r).to_owned()).collect(),
        )
    }

    #[test]
    fn a_dump_counts_once_all_its_parts_are_in() {
        let mut r = Remote::default();
        assert_eq!(r.part("b", 1, 1, 2, vec![client("x@b", &["#lobby"])]), None);
        let whole = r.part("b", 1, 0, 2, vec![client("w@b", &["#lobby"])]);
        assert_eq!(
            whole,
            Some(vec![client("w@b", &["#lobby"]), client("x@b", &["#lobby"])])
        );
        // A newer generation starts over; an older one is too late.
        assert_eq!(r.part("b", 3, 0, 2, vec![]), None);
        assert_eq!(r.part("b", 2, 1, 2, vec![]), None);
        assert_eq!(r.part("b", 3, 1, 2, vec![]), Some(vec![]));
        assert_eq!(r.part("b", 3, 5, 2, vec![]), None, "a part past the end");
    }

    #[test]
    fn names_are_found_by_node_and_room() {
        let mut r = Remote::default();
        r.replace("b", vec![client("Bob@b", &["#lobby", "#Rust"])]);
        r.replace("c", vec![client("carol@c", &["#lobby"])]);
        assert_eq!(r.node_of("bob@B"), Some("b"));
        assert_eq!(r.spelling("BOB@b"), Some("Bob@b"));
        assert_eq!(r.names_in("#rust").collect::<Vec<_>>(), ["Bob@b"]);
        assert_eq!(r.clients_of("b").count() + r.clients_of("c").count(), 2);
        let old = r.replace("b", Vec::new());
        assert_eq!(old, vec![client("Bob@b", &["#lobby", "#Rust"])]);
        assert_eq!(r.node_of("bob@b"), None);
        assert_eq!(r.nodes().collect::<Vec<_>>(), ["c"]);
    }
}
