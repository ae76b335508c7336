//! The room: who is here under what name, and who receives what. Pure.
//!
//! The room never touches a socket. Each call says what happened (a client joined, sent a
//! command, left) and appends to `out` the lines to deliver and to whom; the event loop moves
//! the bytes. The server holds the room as a value, so that named rooms can be added by holding
//! several.

use std::collections::HashMap;

use crate::command::{self, Command, ConsoleCommand};
use crate::notice;
use crate::text;

/// A client, as the event loop knows it (its connection's slab key).
pub type ClientId = usize;

/// Who receives a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// One client.
    One(ClientId),
    /// Every member but this one (the sender), and the transcript.
    Others(ClientId),
    /// Every member and the transcript.
    All,
    /// The transcript only: standard output, which the operator reads.
    Console,
}

/// One line to deliver, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub to: To,
    pub line: String,
}

/// What a client's command means for its connection.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Stay,
    /// The client left the room (it asked to): deliver its last lines, then close.
    Close,
}

/// What an operator's command means for the server.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleAfter {
    Continue,
    /// The client was removed from the room: deliver its last lines, then close.
    Close(ClientId),
    /// The server's figures, which the room does not hold.
    Stats,
    Shutdown,
}

/// The longest name, in bytes (all name characters are ASCII).
pub const MAX_NAME: usize = 16;

/// A name nobody may take: lines from the server start with it.
const RESERVED: &str = "SERVER";

pub struct Room {
    welcome: String,
    /// Join, leave and rename lines reach clients only in rooms up to this size.
    announce_limit: usize,
    /// Members and their names.
    members: HashMap<ClientId, String>,
    /// Lowercased name to member: names are unique regardless of case.
    by_name: HashMap<String, ClientId>,
    /// The number in the next `guest<N>`; never goes back, so a name is never reused.
    next_guest: u64,
}

impl Room {
    pub fn new(welcome: impl Into<String>, announce_limit: usize) -> Room {
        Room {
            welcome: welcome.into(),
            announce_limit,
            members: HashMap::new(),
            by_name: HashMap::new(),
            next_guest: 1,
        }
    }

    pub fn contains(&self, id: ClientId) -> bool {
        self.members.contains_key(&id)
    }

    /// Everyone in the room, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.members.keys().copied()
    }

    pub fn name(&self, id: ClientId) -> Option<&str> {
        self.members.get(&id).map(String::as_str)
    }

    /// A new client: it gets a guest name, the welcome, and the room hears of it.
    pub fn join(&mut self, id: ClientId, out: &mut Vec<Out>) {
        let name = loop {
            let candidate = format!("guest{}", self.next_guest);
            self.next_guest += 1;
            // Someone may have picked this name with /nick; skip it rather than share it.
            if !self.by_name.contains_key(&candidate) {
                break candidate;
            }
        };
        self.by_name.insert(name.clone(), id);
        push(out, To::One(id), self.welcome.clone());
        push(out, To::One(id), notice::intro(&name));
        let line = notice::connected(&name);
        self.members.insert(id, name);
        self.announce(id, line, out);
    }

    /// A client leaves: on its own (`reason` is `None`) or dropped by the server.
    pub fn leave(&mut self, id: ClientId, reason: Option<&str>, out: &mut Vec<Out>) {
        if !self.members.contains_key(&id) {
            return;
        }
        // Announce while the leaver still counts, so the limit applies to joins and leaves alike.
        let line = notice::disconnected(&self.members[&id], reason);
        self.announce(id, line, out);
        let name = self.members.remove(&id).expect("member checked above");
        self.by_name.remove(&name.to_ascii_lowercase());
    }

    /// A raw line from a member: made safe, parsed and handled. Blank lines are ignored.
    pub fn receive(&mut self, id: ClientId, raw: &[u8], out: &mut Vec<Out>) -> After {
        let line = text::clean(raw);
        if text::is_blank(&line) {
            return After::Stay;
        }
        self.handle(id, command::parse(&line), out)
    }

    /// A line from a member, already parsed.
    pub fn handle(&mut self, id: ClientId, command: Command<'_>, out: &mut Vec<Out>) -> After {
        let Some(name) = self.members.get(&id) else {
            return After::Close;
        };
        let reply = |out: &mut Vec<Out>, line: String| push(out, To::One(id), line);
        match command {
            Command::Say(text) => push(out, To::Others(id), format!("{name}: {text}")),
            Command::Me(text) => push(out, To::Others(id), format!("* {name} {text}")),
            Command::Nick(new) => self.rename(id, new, out),
            Command::Who => reply(out, self.who()),
            Command::Msg { to, text } => match self.find(to) {
                Some(target) => {
                    let target_name = &self.members[&target];
                    push(out, To::One(target), notice::private_from(name, text));
                    reply(out, notice::private_to(target_name, text));
                }
                None => reply(out, notice::no_such_user(to)),
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

    /// A message from outside the room (a UDP datagram): everyone sees it under the sender's
    /// address, which no name can look like.
    pub fn relay(&self, from: &str, text: &str, out: &mut Vec<Out>) {
        push(out, To::All, format!("{from}: {text}"));
    }

    /// A line from the operator console.
    pub fn console(&mut self, command: ConsoleCommand<'_>, out: &mut Vec<Out>) -> ConsoleAfter {
        let reply = |out: &mut Vec<Out>, line: String| push(out, To::Console, line);
        match command {
            ConsoleCommand::Say(text) => push(out, To::All, notice::from_console(text)),
            ConsoleCommand::Who => reply(out, self.who()),
            ConsoleCommand::Kick(name) => match self.find(name) {
                Some(target) => {
                    push(out, To::One(target), notice::KICKED.to_owned());
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

    fn rename(&mut self, id: ClientId, new: &str, out: &mut Vec<Out>) {
        let old = &self.members[&id];
        let refusal = if !is_valid_name(new) {
            Some(notice::NAME_INVALID.to_owned())
        } else if new.eq_ignore_ascii_case(RESERVED) {
            Some(notice::name_reserved(new))
        } else if old == new {
            Some(notice::already_named(new))
        } else if self.find(new).is_some_and(|owner| owner != id) {
            Some(notice::name_taken(new))
        } else {
            None
        };
        if let Some(line) = refusal {
            return push(out, To::One(id), line);
        }
        // Reserve the new name before anyone hears of it.
        self.by_name.remove(&old.to_ascii_lowercase());
        self.by_name.insert(new.to_ascii_lowercase(), id);
        let old = std::mem::replace(self.members.get_mut(&id).expect("member"), new.to_owned());
        push(out, To::One(id), notice::you_are_now(new));
        self.announce(id, notice::renamed(&old, new), out);
    }

    /// The member with this name, regardless of case.
    fn find(&self, name: &str) -> Option<ClientId> {
        if name.len() > MAX_NAME {
            return None;
        }
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    /// The `/who` line: the first names in order, and how many more there are.
    fn who(&self) -> String {
        let mut names: Vec<&str> = self.members.values().map(String::as_str).collect();
        let by_name = |a: &&str, b: &&str| a.to_ascii_lowercase().cmp(&b.to_ascii_lowercase());
        if names.len() > notice::WHO_MAX_NAMES {
            // Sorting ten thousand names for a line that shows a hundred would be wasted work.
            names.select_nth_unstable_by(notice::WHO_MAX_NAMES, by_name);
            names.truncate(notice::WHO_MAX_NAMES);
        }
        names.sort_unstable_by(by_name);
        notice::who(&names, self.members.len())
    }

    /// Join, leave and rename lines: to everyone in a room of ordinary size, to the transcript
    /// alone in a big one.
    fn announce(&self, about: ClientId, line: String, out: &mut Vec<Out>) {
        let to = if self.members.len() <= self.announce_limit {
            To::Others(about)
        } else {
            To::Console
        };
        push(out, to, line);
    }
}

fn push(out: &mut Vec<Out>, to: To, line: String) {
    out.push(Out { to, line });
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
    use crate::command::parse;

    fn room() -> Room {
        Room::new("Welcome!", 100)
    }

    /// Joins clients 1..=n and forgets what that printed.
    fn with_members(n: usize) -> Room {
        let mut r = room();
        for id in 1..=n {
            r.join(id, &mut Vec::new());
        }
        r
    }

    fn say(r: &mut Room, id: ClientId, line: &str) -> Vec<Out> {
        let mut out = Vec::new();
        r.handle(id, parse(line), &mut out);
        out
    }

    fn out(to: To, line: &str) -> Out {
        Out {
            to,
            line: line.into(),
        }
    }

    #[test]
    fn join_welcomes_and_announces() {
        let mut r = with_members(1);
        let mut o = Vec::new();
        r.join(2, &mut o);
        assert_eq!(
            o,
            [
                out(To::One(2), "Welcome!"),
                out(To::One(2), &notice::intro("guest2")),
                out(To::Others(2), "[SERVER] Client: guest2 connected!"),
            ]
        );
    }

    #[test]
    fn messages_go_to_the_others() {
        let mut r = with_members(2);
        assert_eq!(say(&mut r, 1, "hi"), [out(To::Others(1), "guest1: hi")]);
        assert_eq!(
            say(&mut r, 2, "/me waves"),
            [out(To::Others(2), "* guest2 waves")]
        );
    }

    #[test]
    fn names_are_unique_regardless_of_case_and_checked_first() {
        let mut r = with_members(2);
        say(&mut r, 1, "/nick Alice");
        assert_eq!(
            say(&mut r, 2, "/nick alice"),
            [out(To::One(2), "[SERVER] Error: name alice is taken")]
        );
        assert_eq!(
            say(&mut r, 2, "/nick server"),
            [out(To::One(2), "[SERVER] Error: name server is reserved")]
        );
        assert_eq!(
            say(&mut r, 2, "/nick a.b"),
            [out(To::One(2), notice::NAME_INVALID)]
        );
        assert_eq!(
            say(&mut r, 2, &format!("/nick {}", "x".repeat(17))),
            [out(To::One(2), notice::NAME_INVALID)]
        );
        assert_eq!(
            say(&mut r, 1, "/nick Alice"),
            [out(To::One(1), "[SERVER] Error: you are already Alice")]
        );
        assert_eq!(
            say(&mut r, 1, "/nick ALICE"),
            [
                out(To::One(1), "[SERVER] You are now known as ALICE"),
                out(To::Others(1), "[SERVER] Alice is now known as ALICE"),
            ]
        );
        // The old name is free again, the new one is not.
        assert_eq!(say(&mut r, 2, "/nick guest1").len(), 2);
        assert_eq!(r.find("alice"), Some(1));
    }

    #[test]
    fn guest_numbers_skip_names_in_use_and_never_repeat() {
        let mut r = with_members(1);
        say(&mut r, 1, "/nick guest2");
        r.join(2, &mut Vec::new());
        assert_eq!(r.name(2), Some("guest3"));
        r.leave(2, None, &mut Vec::new());
        r.join(3, &mut Vec::new());
        assert_eq!(r.name(3), Some("guest4"));
    }

    #[test]
    fn private_messages_and_who() {
        let mut r = with_members(3);
        say(&mut r, 2, "/nick bob");
        assert_eq!(
            say(&mut r, 1, "/msg BOB psst"),
            [
                out(To::One(2), "[PM from guest1] psst"),
                out(To::One(1), "[PM to bob] psst")
            ]
        );
        assert_eq!(
            say(&mut r, 1, "/msg nobody x"),
            [out(
                To::One(1),
                "[SERVER] Error: no such user: nobody (try /who)"
            )]
        );
        assert_eq!(
            say(&mut r, 1, "/who"),
            [out(To::One(1), "[SERVER] 3 online: bob, guest1, guest3")]
        );
    }

    #[test]
    fn who_in_a_big_room_lists_a_hundred_names() {
        let r = with_members(250);
        let line = r.who();
        assert!(
            line.starts_with("[SERVER] 250 online: guest1, guest10, guest100, "),
            "{line}"
        );
        assert!(line.ends_with(", and 150 more"), "{line}");
        assert_eq!(line.matches(", ").count(), 100);
    }

    #[test]
    fn quit_says_bye_and_leaves() {
        let mut r = with_members(2);
        let mut o = Vec::new();
        assert_eq!(r.handle(1, parse("EXIT()"), &mut o), After::Close);
        assert_eq!(
            o,
            [
                out(To::One(1), notice::BYE),
                out(To::Others(1), "[SERVER] Client: guest1 disconnected.")
            ]
        );
        assert!(!r.contains(1));
        assert_eq!(r.find("guest1"), None);
    }

    #[test]
    fn big_rooms_announce_to_the_console_only() {
        let mut r = Room::new("hi", 2);
        let mut o = Vec::new();
        r.join(1, &mut o);
        r.join(2, &mut o);
        r.join(3, &mut o);
        r.leave(3, Some("idle for 5 s"), &mut o);
        r.leave(2, None, &mut o);
        let announcements: Vec<To> = o
            .iter()
            .filter(|o| o.line.starts_with("[SERVER] Client:"))
            .map(|o| o.to)
            .collect();
        assert_eq!(
            announcements,
            [
                To::Others(1),
                To::Others(2),
                To::Console,
                To::Console,
                To::Others(2)
            ]
        );
        assert_eq!(
            o.last().unwrap().line,
            "[SERVER] Client: guest2 disconnected."
        );
    }

    #[test]
    fn console_talks_kicks_and_shuts_down() {
        let mut r = with_members(2);
        let mut o = Vec::new();
        r.console(ConsoleCommand::Say("hola"), &mut o);
        assert_eq!(o, [out(To::All, "SERVER: hola")]);
        o.clear();
        assert_eq!(
            r.console(ConsoleCommand::Kick("GUEST2"), &mut o),
            ConsoleAfter::Close(2)
        );
        assert_eq!(
            o,
            [
                out(To::One(2), notice::KICKED),
                out(
                    To::Others(2),
                    "[SERVER] Client: guest2 disconnected (kicked by operator)"
                ),
            ]
        );
        assert_eq!(
            r.console(ConsoleCommand::Shutdown, &mut o),
            ConsoleAfter::Shutdown
        );
    }
}
