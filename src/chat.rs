//! The chat: who is here, in which rooms, and what every command means. Pure.
//!
//! The chat never touches a socket. Each call says what happened (a client came, sent a line,
//! left; the operator typed something) and appends to `out` the events to deliver and to whom;
//! the engine renders and moves the bytes. Names are the [`Directory`]'s and hold server-wide;
//! each [`Room`] holds its members, topic and history; this file holds the rules between them.
//!
//! Every client starts in `#lobby` and is always in at least one room. The room it joined (or
//! switched to) last is its current room: where what it types goes.

use std::collections::HashMap;
use std::net::SocketAddr;

use slab::Slab;

use crate::command::{self, Command, ConsoleCommand};
use crate::config::Config;
use crate::config::rooms::{self, LOBBY, PER_CLIENT};
pub use crate::directory::ClientId;
use crate::directory::Directory;
use crate::event::{Author, Delivery, Event, Message, To, push, push_line};
use crate::history::History;
use crate::notice;
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
}

impl Limits {
    pub fn new(config: &Config) -> Limits {
        Limits {
            announce: config.announce_limit,
            history: config.history,
            replay_bytes: rooms::replay_bytes(config.max_pending),
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
}

/// The lobby is the first room made and is never removed.
const LOBBY_ID: RoomId = 0;

impl Chat {
    pub fn new(welcome: impl Into<String>, limits: Limits) -> Chat {
        let mut chat = Chat {
            welcome: welcome.into(),
            limits,
            directory: Directory::new(),
            rooms: Slab::new(),
            by_name: HashMap::new(),
            places: Vec::new(),
            quiet: 0,
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
        if quiet == Some(true)
            && let Some(name) = self.directory.name(id)
            && self.rooms[LOBBY_ID].len() <= self.limits.announce
        {
            let line = notice::connected(name);
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
        self.directory.release(id);
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
                None => reply(out, notice::no_such_user(to)),
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

    /// `/who`: everyone heard of.
    fn who(&self) -> String {
        let (names, total) = self
            .directory
            .list(self.directory.clients().filter(|&id| !self.is_quiet(id)));
        notice::who(&names, total)
    }

    /// `/who #room`.
    fn who_in(&self, wanted: &str) -> String {
        match self.find(wanted) {
            Ok(room) => {
                let r = &self.rooms[room];
                let (names, total) = self.directory.list(r.members());
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

    /// A room's members as people see them: the quiet ones (all in the lobby) are nobody yet.
    fn people(&self, room: &Room) -> usize {
        if room.is_lobby() {
            room.len() - self.quiet
        } else {
            room.len()
        }
    }

    fn rename(&mut self, id: ClientId, new: &str, out: &mut Vec<Delivery>) {
        match self.directory.rename(id, new) {
            Ok(old) => {
                push_line(out, To::One(id), notice::you_are_now(new));
                let places = self.places.get(id).copied().unwrap_or_default();
                for room in places.iter() {
                    self.announce(room, id, notice::renamed(&old, new), out);
                }
            }
            Err(refusal) => push_line(out, To::One(id), refusal),
        }
    }

    /// Join, leave, rename and topic lines about `about`: to the room's other members while the
    /// room is of ordinary size, to the transcript alone in a big one.
    fn announce(&self, room: RoomId, about: ClientId, line: String, out: &mut Vec<Delivery>) {
        let to = if self.rooms[room].len() <= self.limits.announce {
            To::Room {
                room,
                except: Some(about),
            }
        } else {
            To::Transcript
        };
        self.notice(to, room, line, out);
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
