//! What crosses between loopchat nodes on the bus, with no I/O: the gossip a node publishes,
//! its wire form inside NATS messages, and the books a node keeps of what it received (which
//! origins it has heard, what came twice or never came).
//!
//! A node publishes what its own clients do in rooms and receives what other nodes publish;
//! it never forwards what it received (each node subscribes to everything, so one copy crosses
//! the bus and the fan-out to members stays local). Core NATS delivers at most once and keeps
//! each publisher's order, nothing more: every broadcast carries its origin (node and boot)
//! and a sequence number, so that a receiver counts what was lost (a gap) or came twice.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::nats::{self, Headers, Msg};

/// Every subject of the cluster starts with this.
pub const PREFIX: &str = "loopchat";
/// Room traffic: `loopchat.room.<room, lowercased, without #>`.
pub const ROOMS: &str = "loopchat.room.>";
/// Who is where, from each node: `loopchat.presence.<node>`.
pub const PRESENCE: &str = "loopchat.presence.>";

/// Header: the node a broadcast comes from, and its boot (`node/boot`): a node that restarts
/// starts its sequence again, as a new origin.
const ORIGIN: &str = "Loopchat-Origin";
/// Header: the broadcast's number among its origin's broadcasts, from 1.
const SEQ: &str = "Loopchat-Seq";

/// A presence dump is cut into parts of about this size: far below nats-server's default
/// `max_payload` (1 MiB), so that a node with thousands of clients never sends one message the
/// server refuses.
pub const PRESENCE_PART: usize = 32 * 1024;

/// The subject for a node's private messages.
pub fn node_subject(node: &str) -> String {
    format!("{PREFIX}.node.{node}")
}

fn room_subject(room: &str) -> String {
    let token = room.trim_start_matches('#').to_ascii_lowercase();
    format!("{PREFIX}.room.{token}")
}

/// Who wrote a message that crosses the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speaker {
    /// A client, by its name (cluster-wide: qualified by its node, or claimed).
    Client(String),
    /// The operator of the node that published it.
    Operator,
    /// A UDP datagram's sender, by its address.
    Datagram(String),
}

/// One piece of gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gossip {
    /// A message said in a room.
    Said {
        room: String,
        speaker: Speaker,
        action: bool,
        text: String,
    },
    /// A line in the server's voice about a room (a join, a leave, a rename, a topic), as the
    /// origin worded it.
    Notice { room: String, line: String },
    /// A room's topic was set.
    Topic { room: String, text: String },
    /// A private message for a client of `node`, the only node it is sent to.
    Private {
        node: String,
        to: String,
        from: String,
        text: String,
    },
    /// Part of a node's presence: its clients and their rooms. A dump is `parts` messages of
    /// one `generation`; the receiver replaces what it knew of the node once it has them all.
    Presence {
        generation: u64,
        part: u32,
        parts: u32,
        clients: Vec<(String, Vec<String>)>,
    },
    /// The node is shutting down: its clients are gone.
    Bye,
}

impl Gossip {
    /// The subject it is published on, from node `node`. Private messages go to the
    /// recipient's node; everything else to every node.
    fn subject(&self, node: &str) -> String {
        match self {
            Gossip::Said { room, .. }
            | Gossip::Notice { room, .. }
            | Gossip::Topic { room, .. } => room_subject(room),
            Gossip::Private { node: to, .. } => node_subject(to),
            Gossip::Presence { .. } | Gossip::Bye => format!("{PREFIX}.presence.{node}"),
        }
    }

    fn encode(&self, out: &mut String) {
        match self {
            Gossip::Said {
                room,
                speaker,
                action,
                text,
            } => {
                let who = match speaker {
                    Speaker::Client(name) => format!("c{name}"),
                    Speaker::Operator => "o".to_owned(),
                    Speaker::Datagram(addr) => format!("d{addr}"),
                };
                let _ = write!(out, "said\n{room}\n{who}\n{}\n{text}", u8::from(*action));
            }
            Gossip::Notice { room, line } => {
                let _ = write!(out, "notice\n{room}\n{line}");
            }
            Gossip::Topic { room, text } => {
                let _ = write!(out, "topic\n{room}\n{text}");
            }
            Gossip::Private {
                node,
                to,
                from,
                text,
            } => {
                let _ = write!(out, "private\n{node}\n{to}\n{from}\n{text}");
            }
            Gossip::Presence {
                generation,
                part,
                parts,
                clients,
            } => {
                let _ = write!(out, "presence\n{generation} {part} {parts}");
                for (name, rooms) in clients {
                    let _ = write!(out, "\n{name}");
                    for room in rooms {
                        let _ = write!(out, " {room}");
                    }
                }
            }
            Gossip::Bye => out.push_str("bye"),
        }
    }

    /// Gossip from a payload, or `None` for one this node does not understand (a newer node's,
    /// or garbage): it is skipped, never fatal.
    fn decode(payload: &[u8]) -> Option<Gossip> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut lines = text.split('\n');
        let kind = lines.next()?;
        let mut next = || lines.next().map(str::to_owned);
        Some(match kind {
            "said" => {
                let room = next()?;
                let who = next()?;
                let speaker = match who.split_at_checked(1)? {
                    ("c", name) => Speaker::Client(name.to_owned()),
                    ("o", _) => Speaker::Operator,
                    ("d", addr) => Speaker::Datagram(addr.to_owned()),
                    _ => return None,
                };
                let action = next()? == "1";
                Gossip::Said {
                    room,
                    speaker,
                    action,
                    text: next()?,
                }
            }
            "notice" => Gossip::Notice {
                room: next()?,
                line: next()?,
            },
            "topic" => Gossip::Topic {
                room: next()?,
                text: next()?,
            },
            "private" => Gossip::Private {
                node: next()?,
                to: next()?,
                from: next()?,
                text: next()?,
            },
            "presence" => {
                let head = next()?;
                let mut numbers = head.split(' ');
                let mut number = || numbers.next()?.parse::<u64>().ok();
                let (generation, part, parts) = (number()?, number()?, number()?);
                let clients = lines
                    .map(|line| {
                        let mut words = line.split(' ');
                        let name = words.next().unwrap_or_default().to_owned();
                        (name, words.map(str::to_owned).collect())
                    })
                    .collect();
                Gossip::Presence {
                    generation,
                    part: u32::try_from(part).ok()?,
                    parts: u32::try_from(parts).ok()?,
                    clients,
                }
            }
            "bye" => Gossip::Bye,
            _ => return None,
        })
    }
}

/// How a received broadcast stands against what its origin sent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next one, or the first heard from this origin.
    InOrder,
    /// Came after `missed` broadcasts that never arrived: they are lost (core NATS is
    /// at-most-once), the gossip itself is good.
    AfterGap { missed: u64 },
    /// Seen already (or older than what was seen): dropped.
    Duplicate,
}

/// What a node counts of the bus, for `/stats` and the closing notice of an outage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub received: u64,
    /// Broadcasts of other nodes that never arrived, as their sequence numbers tell.
    pub missed: u64,
    pub duplicates: u64,
    /// Messages that were not gossip this node understands.
    pub unreadable: u64,
    pub published: u64,
    /// Gossip of this node's that could not be published (the bus was down).
    pub unsent: u64,
}

/// One node's side of the bus: its name, what it has published, what it has heard.
pub struct Node {
    name: String,
    origin: String,
    next_seq: u64,
    /// The last sequence number heard from each origin.
    heard: HashMap<String, u64>,
    pub tally: Tally,
}

impl Node {
    /// `boot` tells this run of the node from earlier ones (random, or the start time).
    pub fn new(name: &str, boot: u64) -> Node {
        Node {
            name: name.to_owned(),
            origin: format!("{name}/{boot:x}"),
            next_seq: 1,
            heard: HashMap::new(),
            tally: Tally::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends the NATS message that carries `gossip` to `out` (the bus connection's output).
    pub fn publish(&mut self, gossip: &Gossip, out: &mut Vec<u8>) {
        let mut payload = String::new();
        gossip.encode(&mut payload);
        let mut headers = Headers::new().with(ORIGIN, &self.origin);
        if !matches!(gossip, Gossip::Private { .. }) {
            headers = headers.with(SEQ, &self.next_seq.to_string());
            self.next_seq += 1;
        }
        let subject = gossip.subject(&self.name);
        nats::publish(out, &subject, None, Some(&headers), payload.as_bytes());
        self.tally.published += 1;
    }

    /// Gossip that could not be published: counted, so that the node can say how much.
    pub fn unsent(&mut self) {
        self.tally.unsent += 1;
    }

    /// A message from the bus: its origin node and gossip, if it is gossip from another node
    /// that has not been seen before.
    pub fn receive(&mut self, msg: &Msg) -> Option<(String, Gossip, Arrival)> {
        self.tally.received += 1;
        let origin = msg.headers.as_ref().and_then(|h| h.get(ORIGIN));
        let (Some(origin), Some(gossip)) = (origin, Gossip::decode(&msg.payload)) else {
            self.tally.unreadable += 1;
            return None;
        };
        let node = origin.split_once('/').map_or(origin, |(node, _)| node);
        if node == self.name {
            return None; // our own, from an earlier connection's subscription
        }
        let seq = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(SEQ))
            .and_then(|s| s.parse::<u64>().ok());
        let arrival = match seq {
            None => Arrival::InOrder,
            Some(seq) => {
                // Looked up by `&str`: the origin is known for every message but its first,
                // and `entry` would copy its name each time.
                if !self.heard.contains_key(origin) {
                    self.heard.insert(origin.to_owned(), seq - 1);
                }
                let last = self.heard.get_mut(origin).expect("inserted above");
                let arrival = match seq.checked_sub(*last + 1) {
                    Some(0) => Arrival::InOrder,
                    Some(missed) => Arrival::AfterGap { missed },
                    None => Arrival::Duplicate,
                };
                *last = (*last).max(seq);
                arrival
            }
        };
        match arrival {
            Arrival::Duplicate => {
                self.tally.duplicates += 1;
                return None;
            }
            Arrival::AfterGap { missed } => self.tally.missed += missed,
            Arrival::InOrder => {}
        }
        Some((node.to_owned(), gossip, arrival))
    }

    /// Forgets the origins of a node that is gone: if it comes back, it is a new origin.
    pub fn forget(&mut self, node: &str) {
        self.heard
            .retain(|origin, _| origin.split_once('/').is_none_or(|(n, _)| n != node));
    }
}

/// A node's clients, cut into presence parts of at most [`PRESENCE_PART`] bytes each.
pub fn presence_parts(generation: u64, clients: Vec<(String, Vec<String>)>) -> Vec<Gossip> {
    let mut parts: Vec<Vec<(String, Vec<String>)>> = vec![Vec::new()];
    let mut size = 0;
    for client in clients {
        let len = client.0.len() + client.1.iter().map(|r| r.len() + 1).sum::<usize>() + 1;
        if size + len > PRESENCE_PART && !parts.last().is_some_and(Vec::is_empty) {
            parts.push(Vec::new());
            size = 0;
        }
        size += len;
        parts.last_mut().expect("one at least").push(client);
    }
    let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, clients)| Gossip::Presence {
            generation,
            part: u32::try_from(i).unwrap_or(u32::MAX),
            parts: count,
            clients,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a NATS server would hand another node for what was published to `out`: each
    /// HPUB as an HMSG with a subscription id.
    fn delivered(out: &[u8]) -> Vec<Msg> {
        let text = String::from_utf8(out.to_vec())
            .unwrap()
            .replace("HPUB ", "HMSG ");
        let input = relabel(&text).into_bytes();
        let mut rest: &[u8] = &input;
        let mut decoder = nats::Decoder::new(1 << 20);
        let mut msgs = Vec::new();
        while let Some(op) = decoder.next(&mut rest) {
            if let Ok(nats::Op::Msg(msg)) = op {
                msgs.push(msg);
            }
        }
        msgs
    }

    /// `HMSG subject hlen tlen` to `HMSG subject 1 hlen tlen`: a subscription id added.
    fn relabel(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("HMSG ") {
            out.push_str(&rest[..at]);
            let line_end = at + rest[at..].find("\r\n").unwrap();
            let words: Vec<&str> = rest[at..line_end].split(' ').collect();
            out.push_str(&format!("HMSG {} 1 {} {}", words[1], words[2], words[3]));
            rest = &rest[line_end..];
        }
        out.push_str(rest);
        out
    }

    fn said(text: &str) -> Gossip {
        Gossip::Said {
            room: "#rust".into(),
            speaker: Speaker::Client("alice@a".into()),
            action: false,
            text: text.into(),
        }
    }

    #[test]
    fn gossip_crosses_whole() {
        let all = [
            said("hola, mundo"),
            Gossip::Said {
                room: "#lobby".into(),
                speaker: Speaker::Operator,
                action: true,
                text: "waves".into(),
            },
            Gossip::Said {
                room: "#lobby".into(),
                speaker: Speaker::Datagram("127.0.0.1:5000".into()),
                action: false,
                text: "udp".into(),
            },
            Gossip::Notice {
                room: "#rust".into(),
                line: "[SERVER] alice@a joined #rust".into(),
            },
            Gossip::Topic {
                room: "#rust".into(),
                text: "borrowing".into(),
            },
            Gossip::Private {
                node: "b".into(),
                to: "bob@b".into(),
                from: "alice@a".into(),
                text: "psst".into(),
            },
            Gossip::Presence {
                generation: 3,
                part: 0,
                parts: 1,
                clients: vec![("alice@a".into(), vec!["#lobby".into(), "#rust".into()])],
            },
            Gossip::Bye,
        ];
        let mut a = Node::new("a", 1);
        let mut b = Node::new("b", 2);
        let mut out = Vec::new();
        for gossip in &all {
            a.publish(gossip, &mut out);
        }
        let got: Vec<Gossip> = delivered(&out)
            .iter()
            .filter_map(|m| b.receive(m))
            .map(|(node, gossip, arrival)| {
                assert_eq!((node.as_str(), arrival), ("a", Arrival::InOrder));
                gossip
            })
            .collect();
        assert_eq!(got, all);
    }

    #[test]
    fn subjects_say_what_and_where() {
        let mut a = Node::new("a", 1);
        let mut out = Vec::new();
        a.publish(&said("x"), &mut out);
        let private = Gossip::Private {
            node: "b".into(),
            to: "bob@b".into(),
            from: "alice@a".into(),
            text: "psst".into(),
        };
        a.publish(&private, &mut out);
        a.publish(&Gossip::Bye, &mut out);
        let subjects: Vec<String> = delivered(&out).into_iter().map(|m| m.subject).collect();
        assert_eq!(
            subjects,
            [
                "loopchat.room.rust",
                "loopchat.node.b",
                "loopchat.presence.a"
            ]
        );
    }

    #[test]
    fn gaps_and_duplicates_are_counted() {
        let mut a = Node::new("a", 1);
        let mut b = Node::new("b", 2);
        let mut out = Vec::new();
        for i in 0..5 {
            a.publish(&said(&i.to_string()), &mut out);
        }
        let msgs = delivered(&out);
        let arrivals: Vec<Option<Arrival>> = [0, 1, 3, 3, 2, 4]
            .iter()
            .map(|&i| b.receive(&msgs[i]).map(|(_, _, arrival)| arrival))
            .collect();
        assert_eq!(
            arrivals,
            [
                Some(Arrival::InOrder),
                Some(Arrival::InOrder),
                Some(Arrival::AfterGap { missed: 1 }),
                None,
                None,
                Some(Arrival::InOrder)
            ]
        );
        assert_eq!((b.tally.missed, b.tally.duplicates), (1, 2));
        // A restarted node is a new origin: its first broadcast is no duplicate.
        let mut again = Node::new("a", 9);
        let mut out = Vec::new();
        again.publish(&said("back"), &mut out);
        let msg = &delivered(&out)[0];
        assert!(matches!(b.receive(msg), Some((_, _, Arrival::InOrder))));
    }

    #[test]
    fn a_node_ignores_its_own_and_what_it_cannot_read() {
        let mut a = Node::new("a", 1);
        let mut out = Vec::new();
        a.publish(&said("mine"), &mut out);
        let msg = &delivered(&out)[0];
        assert_eq!(a.receive(msg), None);
        let mut garbage = msg.clone();
        garbage.payload = b"\xff\xfe what".to_vec();
        let mut b = Node::new("b", 2);
        assert_eq!(b.receive(&garbage), None);
        assert_eq!(b.tally.unreadable, 1);
    }

    #[test]
    fn presence_is_cut_into_parts_that_fit() {
        let clients: Vec<(String, Vec<String>)> = (0..5000)
            .map(|i| (format!("guest{i}@a"), vec!["#lobby".to_owned()]))
            .collect();
        let parts = presence_parts(7, clients.clone());
        assert!(parts.len() > 1);
        let mut back = Vec::new();
        for part in &parts {
            let mut text = String::new();
            part.encode(&mut text);
            assert!(text.len() <= PRESENCE_PART + 64, "{}", text.len());
            let Some(Gossip::Presence {
                clients, parts: n, ..
            }) = Gossip::decode(text.as_bytes())
            else {
                panic!("not presence")
            };
            assert_eq!(n as usize, parts.len());
            back.extend(clients);
        }
        assert_eq!(back, clients);
        assert_eq!(
            presence_parts(1, Vec::new()).len(),
            1,
            "an empty node says so"
        );
    }
}
