//! The chat: who is here, in which rooms, and what every command means. Pure.
//!
//! The chat never touches a socket. Each call says what happened (a client came, sent a line,
//! left; the operator typed something) and appends to `out` the events to deliver and to whom;
//! the engine renders and moves the bytes. Names are the [`Directory`]'s and hold server-wide;
//! each [`Room`] holds its members, topic and history; this file holds the rules between them.
//!
//! Every client starts in `#lobby` and is always in at least one room. The room it joined (or
//! switched to) last is its current room: where what it types goes.
//!
//! On a node of a cluster (`--nats`) the chat also says what its clients do in rooms as gossip
//! for the other nodes ([`Chat::take_gossip`]), hears theirs ([`Chat::gossip`]), and counts their
//! clients in `/who` and `/rooms` from the presence they publish ([`Remote`]).

use std::collections::HashMap;
use std::net::SocketAddr;

use slab::Slab;

use crate::claims::{Mode, Outcome};
use crate::cluster::{Gossip, Speaker};
use crate::command::{self, Command, ConsoleCommand};
use crate::config::Config;
use crate::config::rooms::{self, LOBBY, PER_CLIENT};
pub use crate::directory::ClientId;
use crate::directory::{Directory, listing};
use crate::event::{Author, Delivery, Event, Message, To, push, push_line};
use crate::history::History;
use crate::notice;
use crate::remote::{self, Remote};
use crate::room::{self as room_name, Room, RoomId};
use crate::text;

/// What a client's command means for its connection.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Stay,
    /// The client left (it asked to): deliver its last lines, then close.
    Close,
}

/// What an operator's command means for the server.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleAfter {
    Continue,
    /// The client was removed from the chat: deliver its last lines, then close.
    Close(ClientId),
    /// The server's figures, which the chat does not hold.
    Stats,
    Shutdown,
}

/// The chat's limits, from the command line.
pub struct Limits {
    /// Join, leave, rename and topic lines reach a room's members only while it holds at most
    /// this many; the transcript always gets them.
    pub announce: usize,
    /// Messages each room keeps.
    pub history: usize,
    /// The most one replay of a history sends, in bytes.
    pub replay_bytes: usize,
    /// This node's name, in a cluster.
    pub node: Option<String>,
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        Limits {
            announce: config.announce_limit,
            history: config.history,
            replay_bytes: rooms::replay_bytes(config.max_pending),
            node: config.cluster.as_ref().map(|c| c.node.clone()),
        }
    }
}

pub struct Chat {
    welcome: String,
    limits: Limits,
    directory: Directory,
    rooms: Slab<Room>,
    /// Lowercased name to room: names are unique regardless of case.
    by_name: HashMap<String, RoomId>,
    /// The rooms each client is in, by its id (a slab key, so the table is dense). Never empty
    /// for a client in the chat.
    places: Vec<Places>,
    /// Quiet clients (see [`Chat::join`]): members of the lobby, not counted where people are.
    quiet: usize,
    /// In a cluster: the gossip for the other nodes, and what they said of their clients.
    linked: Option<Linked>,
}

/// The chat's side of a cluster.
struct Linked {
    /// What this node's clients did, for the bus.
    outgoing: Vec<Gossip>,
    remote: Remote,
    /// This node's clients or their rooms changed since [`Chat::presence`] was last taken.
    changed: bool,
    /// How names are kept unique across the cluster, once the bus has said.
    naming: Mode,
    /// Names to claim for clients, and names to give back, for the bus.
    claims: Vec<(ClientId, String)>,
    releases: Vec<String>,
    /// Claims under way: the name asked for, and the name the client had then (a claim that
    /// comes back for a client that has since left, or been renamed, is given back).
    claiming: HashMap<ClientId, (String, String)>,
}

impl Linked {
    fn new() -> Linked {
        Linked {
            outgoing: Vec::new(),
            remote: Remote::default(),
            changed: false,
            naming: Mode::Unknown,
            claims: Vec::new(),
            releases: Vec::new(),
            claiming: HashMap::new(),
        }
    }
}

/// The lobby is the first room made and is never removed.
const LOBBY_ID: RoomId = 0;

impl Chat {
    pub fn new(welcome: impl Into<String>, limits: Limits) -> Chat {
        let directory = match &limits.node {
            Some(node) => Directory::qualified(&format!("@{node}")),
            None => Directory::new(),
        };
        let linked = limits.node.as_ref().map(|_| Linked::new());
        let mut chat = Chat {
            welcome: welcome.into(),
            limits,
            directory,
            rooms: Slab::new(),
            by_name: HashMap::new(),
            places: Vec::new(),
            quiet: 0,
            linked,
        };
        let lobby = chat.create(LOBBY);
        debug_assert_eq!(lobby, LOBBY_ID);
        chat
    }

    /// The members of a room, if it is still there, in no particular order: who receives an
    /// event for it.
    pub fn members(&self, room: RoomId) -> Option<impl Iterator<Item = ClientId> + '_> {
        self.rooms.get(room).map(Room::members)
    }

    /// Every client, whatever its rooms, in no particular order.
    pub fn everyone(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.directory.clients()
    }

    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    pub fn contains(&self, id: ClientId) -> bool {
        self.directory.contains(id)
    }

    pub fn name(&self, id: ClientId) -> Option<&str> {
        self.directory.name(id)
    }

    /// The rooms a client is in, its current one last.
    pub fn rooms_of(&self, id: ClientId) -> impl Iterator<Item = RoomId> + '_ {
        self.places.get(id).into_iter().flat_map(Places::iter)
    }

    pub fn room(&self, room: RoomId) -> Option<&Room> {
        self.rooms.get(room)
    }

    // ----- arriving and leaving -----

    /// A new client: it gets a guest name and the welcome, it is in the lobby, and the lobby
    /// hears of it. A `quiet` one (greeted before it said anything, on a server whose web door
    /// is open) is heard of, and listed by `/who`, only once it sends its first line: a
    /// browser opens spare connections that never say anything, and they are nobody.
    pub fn join(&mut self, id: ClientId, quiet: bool, out: &mut Vec<Delivery>) {
        let name = self.directory.register(id);
        let (intro, line) = (notice::intro(name), notice::connected(name));
        push_line(out, To::One(id), self.welcome.clone());
        push_line(out, To::One(id), intro);
        self.rooms[LOBBY_ID].add(id);
        let places = self.places_mut(id);
        places.push(LOBBY_ID);
        places.quiet = quiet;
        self.quiet += usize::from(quiet);
        if quiet {
            // The operator sees every connection.
            self.notice(To::Transcript, LOBBY_ID, line, out);
        } else {
            self.announce(LOBBY_ID, id, line, out);
            self.moved();
        }
    }

    /// A quiet client has said something: now the lobby hears of it (the transcript did at
    /// once).
    fn speaks(&mut self, id: ClientId, out: &mut Vec<Delivery>) {
        let quiet = self
            .places
            .get_mut(id)
            .map(|p| std::mem::take(&mut p.quiet));
        if quiet == Some(true) {
            self.quiet -= 1;
        }
        if quiet != Some(true) {
            return;
        }
        self.moved();
        let Some(name) = self.directory.name(id) else {
            return;
        };
        let line = notice::connected(name);
        self.tell_others(LOBBY_ID, &line);
        if self.audience(LOBBY_ID) <= self.limits.announce {
            let to = To::Members {
                room: LOBBY_ID,
                except: Some(id),
            };
            self.notice(to, LOBBY_ID, line, out);
        }
    }

    fn is_quiet(&self, id: ClientId) -> bool {
        self.places.get(id).is_some_and(|p| p.quiet)
    }

    /// A client leaves: on its own (`reason` is `None`) or dropped by the server. Each of its
    /// rooms hears of it.
    pub fn leave(&mut self, id: ClientId, reason: Option<&str>, out: &mut Vec<Delivery>) {
        let Some(name) = self.directory.name(id) else {
            return;
        };
        let line = notice::disconnected(name, reason);
        let places = self
            .places
            .get_mut(id)
            .map(std::mem::take)
            .unwrap_or_default();
        self.quiet -= usize::from(places.quiet);
        for room in places.iter() {
            // Announced while the leaver still counts, so the limit applies to joins and
            // leaves alike; to the transcript alone for one never heard of.
            if places.quiet {
                self.notice(To::Transcript, room, line.clone(), out);
            } else {
                self.announce(room, id, line.clone(), out);
            }
            self.remove_member(room, id);
        }
        if let Some(name) = self.directory.release(id) {
            self.give_back(&name);
        }
        if !places.quiet {
            self.moved();
        }
    }

    // ----- what clients say -----

    /// A raw line from a client: made safe, parsed and handled. Blank lines are ignored. `at`
    /// is the time, in seconds since the Unix epoch, for the history.
    pub fn receive(&mut self, id: ClientId, raw: &[u8], at: u64, out: &mut Vec<Delivery>) -> After {
        self.speaks(id, out);
        let line = text::clean(raw);
        if text::is_blank(&line) {
            return After::Stay;
        }
        self.handle(id, command::parse(&line), at, out)
    }

    /// A line from a client, already parsed.
    pub fn handle(
        &mut self,
        id: ClientId,
        command: Command<'_>,
        at: u64,
        out: &mut Vec<Delivery>,
    ) -> After {
        let Some(name) = self.directory.name(id).map(str::to_owned) else {
            return After::Close;
        };
        let reply = |out: &mut Vec<Delivery>, line: String| push_line(out, To::One(id), line);
        match command {
            Command::Say(text) => {
                let message = Message::say(Author::Client(name), text);
                self.say(self.current(id), Some(id), message, at, out);
            }
            Command::Me(text) => {
                let message = Message::act(Author::Client(name), text);
                self.say(self.current(id), Some(id), message, at, out);
            }
            Command::Nick(new) => self.rename(id, new, out),
            Command::Who(None) => reply(out, self.who()),
            Command::Who(Some(room)) => reply(out, self.who_in(room)),
            Command::Msg { to, text } => match self.directory.find(to) {
                Some(target) => {
                    let target_name = self.directory.name(target).expect("found by name");
                    push_line(out, To::One(target), notice::private_from(&name, text));
                    reply(out, notice::private_to(target_name, text));
                }
                None => match self.remote_private(to, &name, text) {
                    Some(target_name) => reply(out, notice::private_to(&target_name, text)),
                    None => reply(out, notice::no_such_user(to)),
                },
            },
            Command::Join(room) => self.join_room(id, &name, room, out),
            Command::Part(room) => self.part(id, &name, room, out),
            Command::Rooms => {
                for line in self.list_rooms() {
                    reply(out, line);
                }
            }
            Command::Topic { room, text } => self.topic(id, &name, room, text, out),
            Command::History(room) => match self.member_room(id, room) {
                Ok(room) => self.replay(id, room, out),
                Err(line) => reply(out, line),
            },
            Command::Help => {
                for line in notice::HELP {
                    reply(out, line.to_owned());
                }
            }
            Command::Unknown(cmd) => reply(out, notice::unknown_command(cmd)),
            Command::Usage(usage) => reply(out, notice::usage(usage)),
            Command::Quit => {
                reply(out, notice::BYE.to_owned());
                self.leave(id, None, out);
                return After::Close;
            }
        }
        After::Stay
    }

    /// A message from outside the rooms (a UDP datagram): the lobby sees it under the sender's
    /// address.
    pub fn relay(&mut self, from: SocketAddr, text: &str, at: u64, out: &mut Vec<Delivery>) {
        self.say(
            LOBBY_ID,
            None,
            Message::say(Author::Datagram(from), text),
            at,
            out,
        );
    }

    /// A line from the operator console.
    pub fn console(
        &mut self,
        command: ConsoleCommand<'_>,
        at: u64,
        out: &mut Vec<Delivery>,
    ) -> ConsoleAfter {
        let reply = |out: &mut Vec<Delivery>, line: String| push_line(out, To::Transcript, line);
        match command {
            ConsoleCommand::Say(text) => push_line(out, To::All, notice::from_console(text)),
            ConsoleCommand::SayIn { room, text } => match self.find(room) {
                Ok(room) => self.say(room, None, Message::say(Author::Operator, text), at, out),
                Err(line) => reply(out, line),
            },
            ConsoleCommand::Who(None) => reply(out, self.who()),
            ConsoleCommand::Who(Some(room)) => reply(out, self.who_in(room)),
            ConsoleCommand::Rooms => {
                for line in self.list_rooms() {
                    reply(out, line);
                }
            }
            ConsoleCommand::Kick(name) => match self.directory.find(name) {
                Some(target) => {
                    push_line(out, To::One(target), notice::KICKED);
                    self.leave(target, Some(notice::KICK_REASON), out);
                    return ConsoleAfter::Close(target);
                }
                None => reply(out, notice::no_such_user(name)),
            },
            ConsoleCommand::Shutdown => return ConsoleAfter::Shutdown,
            ConsoleCommand::Stats => return ConsoleAfter::Stats,
            ConsoleCommand::Help => {
                for line in notice::CONSOLE_HELP {
                    reply(out, line.to_owned());
                }
            }
            ConsoleCommand::Unknown(cmd) => reply(out, notice::unknown_command(cmd)),
            ConsoleCommand::Usage(usage) => reply(out, notice::usage(usage)),
        }
        ConsoleAfter::Continue
    }

    // ----- the cluster -----

    /// What this node's clients did in rooms since the last call, for the other nodes.
    pub fn take_gossip(&mut self) -> Vec<Gossip> {
        self.linked
            .as_mut()
            .map(|l| std::mem::take(&mut l.outgoing))
            .unwrap_or_default()
    }

    /// Names to claim for clients, and names given back, since the last call.
    pub fn take_claims(&mut self) -> (Vec<(ClientId, String)>, Vec<String>) {
        self.linked.as_mut().map_or_else(Default::default, |l| {
            (
                std::mem::take(&mut l.claims),
                std::mem::take(&mut l.releases),
            )
        })
    }

    /// What the bus said of names: how they are kept, a claim granted or refused, a name
    /// lost.
    pub fn names(&mut self, outcome: Outcome, out: &mut Vec<Delivery>) {
        let Some(linked) = self.linked.as_mut() else {
            return;
        };
        match outcome {
            Outcome::Mode(mode) => {
                linked.naming = mode;
                self.directory.qualify_names(mode == Mode::Qualified);
                let line = match mode {
                    Mode::Claimed => notice::NAMES_CLAIMED,
                    _ => notice::NAMES_QUALIFIED,
                };
                push_line(out, To::Transcript, line);
            }
            Outcome::Claimed { id, name } => {
                let asked = linked.claiming.remove(&id);
                let current = self.directory.name(id).unwrap_or_default();
                if asked
                    .as_ref()
                    .is_none_or(|(new, old)| *new != name || old != current)
                {
                    linked.releases.push(name);
                    return;
                }
                match self.directory.rename(id, &name) {
                    Ok(old) => self.renamed(id, old, out),
                    Err(refusal) => {
                        push_line(out, To::One(id), refusal);
                        self.give_back(&name);
                    }
                }
            }
            Outcome::Refused { id, name, taken } => {
                linked.claiming.remove(&id);
                let line = if taken {
                    notice::name_taken(&name)
                } else {
                    notice::NAMES_UNCHECKED.to_owned()
                };
                push_line(out, To::One(id), line);
            }
            Outcome::Lost { name } => {
                let Some(id) = self.directory.find(&name) else {
                    return;
                };
                push_line(out, To::One(id), notice::name_lost(&name));
                if let Some(old) = self.directory.to_guest(id) {
                    self.renamed(id, old, out);
                }
            }
        }
    }

    /// Whether this node's clients or their rooms changed since the last call.
    pub fn presence_changed(&mut self) -> bool {
        self.linked
            .as_mut()
            .is_some_and(|l| std::mem::take(&mut l.changed))
    }

    /// This node's clients heard of (not the quiet ones) and their rooms, for the other nodes.
    pub fn presence(&self) -> Vec<remote::Client> {
        self.directory
            .clients()
            .filter(|&id| !self.is_quiet(id))
            .filter_map(|id| {
                let name = self.directory.name(id)?.to_owned();
                let rooms = self.rooms_of(id).map(|r| self.rooms[r].name().to_string());
                Some((name, rooms.collect()))
            })
            .collect()
    }

    /// Gossip from another node: its messages and notices reach the members here, its
    /// presence is what `/who` and `/rooms` know of its clients.
    pub fn gossip(&mut self, node: &str, gossip: Gossip, at: u64, out: &mut Vec<Delivery>) {
        match gossip {
            Gossip::Said {
                room,
                speaker,
                action,
                text,
            } => {
                let Some(room) = self.find_or_make(&room) else {
                    return;
                };
                let author = match speaker {
                    Speaker::Client(name) => Author::Client(name),
                    Speaker::Operator => Author::Operator,
                    Speaker::Datagram(addr) => match addr.parse() {
                        Ok(addr) => Author::Datagram(addr),
                        Err(_) => Author::Client(addr),
                    },
                };
                let message = Message {
                    author,
                    text,
                    action,
                };
                self.deliver_said(room, None, message, at, out);
            }
            Gossip::Notice { room, line } => match self.find(&room) {
                Ok(room) if self.audience(room) <= self.limits.announce => {
                    let to = To::Room { room, except: None };
                    self.notice(to, room, line, out);
                }
                _ => push_line(out, To::Transcript, line),
            },
            Gossip::Topic { room, text } => {
                if let Some(room) = self.find_or_make(&room) {
                    self.rooms[room].set_topic(&text);
                }
            }
            Gossip::Private { to, from, text, .. } => {
                if let Some(target) = self.directory.find(&to) {
                    push_line(out, To::One(target), notice::private_from(&from, &text));
                }
            }
            Gossip::Presence {
                generation,
                part,
                parts,
                clients,
            } => {
                let Some(linked) = self.linked.as_mut() else {
                    return;
                };
                if let Some(clients) = linked.remote.part(node, generation, part, parts, clients) {
                    linked.remote.replace(node, clients);
                    self.recount();
                }
            }
            Gossip::Bye => self.forget_node(node),
        }
    }

    /// A node that is gone (it said goodbye, or has not been heard from for too long): its
    /// clients are no longer counted anywhere.
    pub fn forget_node(&mut self, node: &str) {
        if let Some(linked) = self.linked.as_mut() {
            linked.remote.replace(node, Vec::new());
            self.recount();
        }
    }

    /// How many other nodes' clients are known.
    pub fn nodes(&self) -> usize {
        self.linked.as_ref().map_or(0, |l| l.remote.nodes().count())
    }

    /// A private message for a client of another node, if one has this name: its name as its
    /// node spells it.
    fn remote_private(&mut self, to: &str, from: &str, text: &str) -> Option<String> {
        let linked = self.linked.as_mut()?;
        let node = linked.remote.node_of(to)?.to_owned();
        let to = linked.remote.spelling(to)?.to_owned();
        linked.outgoing.push(Gossip::Private {
            node,
            to: to.clone(),
            from: from.to_owned(),
            text: text.to_owned(),
        });
        Some(to)
    }

    /// Each room's members on other nodes counted again from their presence: rooms only they
    /// are in are made, rooms nobody is in any more are gone.
    fn recount(&mut self) {
        let Some(linked) = self.linked.take() else {
            return;
        };
        let mut counts: HashMap<RoomId, usize> = HashMap::new();
        for (_, rooms) in linked
            .remote
            .nodes()
            .flat_map(|n| linked.remote.clients_of(n))
        {
            for room in rooms {
                if let Some(room) = self.find_or_make(room) {
                    *counts.entry(room).or_default() += 1;
                }
            }
        }
        self.linked = Some(linked);
        let empty: Vec<RoomId> = self
            .rooms
            .iter_mut()
            .filter_map(|(id, r)| {
                r.set_remote(counts.get(&id).copied().unwrap_or(0));
                (r.is_empty() && id != LOBBY_ID).then_some(id)
            })
            .collect();
        for room in empty {
            let gone = self.rooms.remove(room);
            self.by_name.remove(&gone.name().to_ascii_lowercase());
        }
    }

    /// The room of that name, made if it is new and there is room for it: a room of another
    /// node's that this node had not heard of.
    fn find_or_make(&mut self, name: &str) -> Option<RoomId> {
        match self.find(name) {
            Ok(room) => Some(room),
            Err(_) if room_name::is_valid_name(name) && self.rooms.len() < rooms::MAX => {
                Some(self.create(name))
            }
            Err(_) => None,
        }
    }

    // ----- rooms -----

    /// A message for a room's members (but `except`, its sender), kept in its history.
    fn say(
        &mut self,
        room: RoomId,
        except: Option<ClientId>,
        message: Message,
        at: u64,
        out: &mut Vec<Delivery>,
    ) {
        if let Some(linked) = self.linked.as_mut() {
            let speaker = match &message.author {
                Author::Client(name) => Speaker::Client(name.clone()),
                Author::Operator => Speaker::Operator,
                Author::Datagram(addr) => Speaker::Datagram(addr.to_string()),
            };
            linked.outgoing.push(Gossip::Said {
                room: self.rooms[room].name().to_string(),
                speaker,
                action: message.action,
                text: message.text.clone(),
            });
        }
        self.deliver_said(room, except, message, at, out);
    }

    /// A message said in a room, here or on another node: kept, and delivered.
    fn deliver_said(
        &mut self,
        room: RoomId,
        except: Option<ClientId>,
        message: Message,
        at: u64,
        out: &mut Vec<Delivery>,
    ) {
        let r = &mut self.rooms[room];
        r.record(&message, at);
        let event = Event::Said {
            room: r.name().clone(),
            message,
        };
        push(out, To::Room { room, except }, event);
    }

    /// `/join`: into a room (made if new), with its topic and history; or, for a room the
    /// client is in already, a switch to it.
    fn join_room(&mut self, id: ClientId, name: &str, wanted: &str, out: &mut Vec<Delivery>) {
        let found = match self.find(wanted) {
            Ok(room) => Some(room),
            Err(_) if !room_name::is_valid_name(wanted) => {
                return push_line(out, To::One(id), notice::ROOM_NAME_INVALID);
            }
            Err(_) => None,
        };
        let places = self.places_mut(id);
        if let Some(room) = found
            && places.remove(room)
        {
            places.push(room);
            let line = notice::typing_in(self.rooms[room].name());
            return self.notice(To::One(id), room, line, out);
        }
        if places.len() >= PER_CLIENT {
            return push_line(out, To::One(id), notice::too_many_rooms(PER_CLIENT));
        }
        let room = match found {
            Some(room) => room,
            None if self.rooms.len() >= rooms::MAX => {
                return push_line(out, To::One(id), notice::SERVER_ROOMS_FULL);
            }
            None => self.create(wanted),
        };
        self.places_mut(id).push(room);
        self.rooms[room].add(id);
        let r = &self.rooms[room];
        let welcome = notice::you_joined(r.name(), self.people(r));
        let topic = r
            .topic()
            .map_or(notice::NO_TOPIC.to_owned(), notice::topic_is);
        self.notice(To::One(id), room, welcome, out);
        self.notice(To::One(id), room, topic, out);
        self.replay(id, room, out);
        self.announce(room, id, notice::joined(name), out);
        self.moved();
    }

    /// `/part`: out of a room (the current one if none is named), unless it is the client's
    /// last. A room left empty is gone, with its history; the lobby stays.
    fn part(&mut self, id: ClientId, name: &str, wanted: Option<&str>, out: &mut Vec<Delivery>) {
        let room = match self.member_room(id, wanted) {
            Ok(room) => room,
            Err(line) => return push_line(out, To::One(id), line),
        };
        let places = self.places_mut(id);
        if places.len() == 1 {
            return push_line(out, To::One(id), notice::LAST_ROOM);
        }
        places.remove(room);
        let now_in = self.rooms[self.current(id)].name().clone();
        let line = notice::you_left(self.rooms[room].name(), &now_in);
        self.notice(To::One(id), room, line, out);
        self.announce(room, id, notice::parted(name), out);
        self.remove_member(room, id);
        self.moved();
    }

    /// `/topic`: shows a room's topic to anyone, or sets it for a member.
    fn topic(
        &mut self,
        id: ClientId,
        name: &str,
        wanted: Option<&str>,
        text: Option<&str>,
        out: &mut Vec<Delivery>,
    ) {
        let found = match wanted {
            None => Ok(self.current(id)),
            Some(wanted) => self.find(wanted),
        };
        let room = match (found, text) {
            (Err(line), _) => return push_line(out, To::One(id), line),
            (Ok(room), None) => {
                let topic = self.rooms[room].topic();
                let line = topic.map_or(notice::NO_TOPIC.to_owned(), notice::topic_is);
                return self.notice(To::One(id), room, line, out);
            }
            (Ok(room), Some(_)) => room,
        };
        let text = text.expect("matched above");
        if !self.rooms[room].contains(id) {
            let line = notice::not_in_room(self.rooms[room].name());
            return push_line(out, To::One(id), line);
        }
        self.rooms[room].set_topic(text);
        if let Some(linked) = self.linked.as_mut() {
            linked.outgoing.push(Gossip::Topic {
                room: self.rooms[room].name().to_string(),
                text: text.to_owned(),
            });
        }
        let line = notice::topic_set(name, text);
        self.notice(To::One(id), room, line.clone(), out);
        self.announce(room, id, line, out);
    }

    /// A room's history, as much as one replay may send, then the line that ends it.
    fn replay(&self, id: ClientId, room: RoomId, out: &mut Vec<Delivery>) {
        let r = &self.rooms[room];
        let mut count = 0;
        for entry in r.history(self.limits.replay_bytes) {
            let event = Event::Replayed {
                room: r.name().clone(),
                message: entry.message.clone(),
                at: entry.at,
            };
            push(out, To::One(id), event);
            count += 1;
        }
        self.notice(To::One(id), room, notice::end_of_history(count), out);
    }

    /// `/who`: everyone heard of, here and on the other nodes.
    fn who(&self) -> String {
        let here = self.directory.clients().filter(|&id| !self.is_quiet(id));
        let mut names: Vec<&str> = here.filter_map(|id| self.directory.name(id)).collect();
        if let Some(linked) = &self.linked {
            names.extend(linked.remote.names());
        }
        let (names, total) = listing(names);
        notice::who(&names, total)
    }

    /// `/who #room`.
    fn who_in(&self, wanted: &str) -> String {
        match self.find(wanted) {
            Ok(room) => {
                let r = &self.rooms[room];
                let mut names: Vec<&str> = r
                    .members()
                    .filter_map(|id| self.directory.name(id))
                    .collect();
                if let Some(linked) = &self.linked {
                    names.extend(linked.remote.names_in(r.name()));
                }
                let (names, total) = listing(names);
                notice::who_in(r.name(), &names, total)
            }
            Err(line) => line,
        }
    }

    /// `/rooms`: the busiest first, at most [`rooms::LISTED`] of them by name.
    fn list_rooms(&self) -> Vec<String> {
        let mut all: Vec<&Room> = self.rooms.iter().map(|(_, r)| r).collect();
        all.sort_unstable_by(|a, b| {
            let by_name = || {
                a.name()
                    .to_ascii_lowercase()
                    .cmp(&b.name().to_ascii_lowercase())
            };
            self.people(b).cmp(&self.people(a)).then_with(by_name)
        });
        let mut lines = vec![notice::rooms(all.len())];
        for r in all.iter().take(rooms::LISTED) {
            lines.push(notice::room_entry(r.name(), self.people(r), r.topic()));
        }
        if all.len() > rooms::LISTED {
            lines.push(notice::more_rooms(all.len() - rooms::LISTED));
        }
        lines
    }

    /// A room's members as people see them: the quiet ones (all in the lobby) are nobody yet;
    /// those on other nodes count.
    fn people(&self, room: &Room) -> usize {
        let here = if room.is_lobby() {
            room.len() - self.quiet
        } else {
            room.len()
        };
        here + room.remote()
    }

    /// Who an announcement in a room would reach, on every node: what `--announce-limit` is
    /// held to.
    fn audience(&self, room: RoomId) -> usize {
        let r = &self.rooms[room];
        r.len() + r.remote()
    }

    /// `/nick`: at once alone, or on a cluster whose names are qualified by node; once the
    /// bus has granted the name, on a cluster that claims them.
    fn rename(&mut self, id: ClientId, new: &str, out: &mut Vec<Delivery>) {
        let checked = self.directory.check(id, new);
        let naming = self.linked.as_ref().map(|l| l.naming);
        match (checked, naming) {
            (Err(refusal), _) => push_line(out, To::One(id), refusal),
            (Ok(_), Some(Mode::Unknown)) => push_line(out, To::One(id), notice::NAMES_UNCHECKED),
            (Ok(new), Some(Mode::Claimed)) => {
                let linked = self.linked.as_mut().expect("matched");
                if linked.remote.node_of(&new).is_some() {
                    return push_line(out, To::One(id), notice::name_taken(&new));
                }
                let old = self.directory.name(id).unwrap_or_default().to_owned();
                linked.claims.push((id, new.clone()));
                linked.claiming.insert(id, (new, old));
            }
            (Ok(_), _) => {
                let old = self.directory.rename(id, new).expect("checked");
                self.renamed(id, old, out);
            }
        }
    }

    /// A client has its new name: it is told, and so is each of its rooms.
    fn renamed(&mut self, id: ClientId, old: String, out: &mut Vec<Delivery>) {
        let new = self.directory.name(id).expect("renamed").to_owned();
        push_line(out, To::One(id), notice::you_are_now(&new));
        let places = self.places.get(id).copied().unwrap_or_default();
        for room in places.iter() {
            self.announce(room, id, notice::renamed(&old, &new), out);
        }
        self.give_back(&old);
        self.moved();
    }

    /// A name this node no longer uses goes back to the cluster, if it was claimed there.
    fn give_back(&mut self, name: &str) {
        if let Some(linked) = self.linked.as_mut()
            && linked.naming == Mode::Claimed
            && !name.contains('@')
        {
            linked.releases.push(name.to_owned());
        }
    }

    /// Join, leave, rename and topic lines about `about`: to the room's other members while the
    /// room is of ordinary size, to the transcript alone in a big one; and to the other nodes,
    /// which apply the same rule to their members.
    fn announce(&mut self, room: RoomId, about: ClientId, line: String, out: &mut Vec<Delivery>) {
        self.tell_others(room, &line);
        let to = if self.audience(room) <= self.limits.announce {
            To::Room {
                room,
                except: Some(about),
            }
        } else {
            To::Transcript
        };
        self.notice(to, room, line, out);
    }

    /// A line about a room for the other nodes' members of it.
    fn tell_others(&mut self, room: RoomId, line: &str) {
        if let Some(linked) = self.linked.as_mut() {
            linked.outgoing.push(Gossip::Notice {
                room: self.rooms[room].name().to_string(),
                line: line.to_owned(),
            });
        }
    }

    /// This node's clients or their rooms changed: the other nodes must hear of it.
    fn moved(&mut self) {
        if let Some(linked) = self.linked.as_mut() {
            linked.changed = true;
        }
    }

    /// A line in the server's voice about a room.
    fn notice(&self, to: To, room: RoomId, line: String, out: &mut Vec<Delivery>) {
        let room = self.rooms[room].name().clone();
        push(out, to, Event::Notice { room, line });
    }

    /// Where what a client types goes.
    fn current(&self, id: ClientId) -> RoomId {
        self.rooms_of(id).last().unwrap_or(LOBBY_ID)
    }

    /// The room by that name, or the line that says why there is none.
    fn find(&self, wanted: &str) -> Result<RoomId, String> {
        if !room_name::is_valid_name(wanted) {
            return Err(notice::ROOM_NAME_INVALID.to_owned());
        }
        let key = wanted.to_ascii_lowercase();
        self.by_name
            .get(&key)
            .copied()
            .ok_or_else(|| notice::no_such_room(wanted))
    }

    /// The named room (the current one if none is named), if the client is in it.
    fn member_room(&self, id: ClientId, wanted: Option<&str>) -> Result<RoomId, String> {
        let Some(wanted) = wanted else {
            return Ok(self.current(id));
        };
        let room = self.find(wanted)?;
        if self.rooms[room].contains(id) {
            Ok(room)
        } else {
            Err(notice::not_in_room(self.rooms[room].name()))
        }
    }

    fn places_mut(&mut self, id: ClientId) -> &mut Places {
        if id >= self.places.len() {
            self.places.resize(id + 1, Places::default());
        }
        &mut self.places[id]
    }

    fn create(&mut self, name: &str) -> RoomId {
        let history = History::new(self.limits.history, rooms::HISTORY_BYTES);
        let room = self.rooms.insert(Room::new(name, history));
        self.by_name.insert(name.to_ascii_lowercase(), room);
        room
    }

    fn remove_member(&mut self, room: RoomId, id: ClientId) {
        let r = &mut self.rooms[room];
        r.remove(id);
        if r.is_empty() && room != LOBBY_ID {
            let gone = self.rooms.remove(room);
            self.by_name.remove(&gone.name().to_ascii_lowercase());
        }
    }
}

/// The rooms one client is in, in the order it joined (or switched to) them, its current one
/// last. Inline, with room ids as `u16` (a room's id is a slab key, below [`rooms::MAX`]): a
/// client costs the chat 22 bytes and no allocation of its own, which the 10,000-client memory
/// benchmark measures.
#[derive(Clone, Copy, Default)]
struct Places {
    ids: [u16; PER_CLIENT],
    len: u8,
    /// Greeted before it said anything, and still silent (see [`Chat::join`]).
    quiet: bool,
}

const _: () = assert!(rooms::MAX <= u16::MAX as usize && PER_CLIENT <= u8::MAX as usize);

impl Places {
    fn iter(&self) -> impl Iterator<Item = RoomId> + '_ {
        self.ids[..usize::from(self.len)]
            .iter()
            .map(|&r| usize::from(r))
    }

    fn len(&self) -> usize {
        usize::from(self.len)
    }

    fn push(&mut self, room: RoomId) {
        self.ids[self.len()] = u16::try_from(room).expect("room ids are below rooms::MAX");
        self.len += 1;
    }

    /// Takes a room out, keeping the others' order; whether it was there.
    fn remove(&mut self, room: RoomId) -> bool {
        let Some(at) = self.iter().position(|r| r == room) else {
            return false;
        };
        let len = self.len();
        self.ids.copy_within(at + 1..len, at);
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests;
