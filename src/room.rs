//! The room: who is here, and who receives what. Pure.
//!
//! The room never touches a socket. Each call says what happened (a client joined, sent a
//! command, left) and appends to `out` the lines to deliver and to whom; the event loop moves
//! the bytes. Who is called what is the [`Directory`]'s, server-wide; the room holds its
//! members.

use crate::command::{self, Command, ConsoleCommand};
pub use crate::directory::ClientId;
use crate::directory::Directory;
use crate::notice;
use crate::text;

/// Who receives a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// One client.
    One(ClientId),
    /// Every member but this one (the sender), and the transcript.
    Others(ClientId),
    /// Every member and the transcript.
    All,
    /// The transcript only: standard output, which the operator reads. (The console is the
    /// operator's input; the transcript is the server's output.)
    Transcript,
}

/// One line to deliver, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
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

pub struct Room {
    welcome: String,
    /// Join, leave and rename lines reach clients only in rooms up to this size.
    announce_limit: usize,
    /// Names, server-wide. With one room, its members are everyone named.
    directory: Directory,
}

impl Room {
    pub fn new(welcome: impl Into<String>, announce_limit: usize) -> Room {
        Room {
            welcome: welcome.into(),
            announce_limit,
            directory: Directory::new(),
        }
    }

    pub fn contains(&self, id: ClientId) -> bool {
        self.directory.contains(id)
    }

    /// Everyone in the room, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.directory.clients()
    }

    pub fn name(&self, id: ClientId) -> Option<&str> {
        self.directory.name(id)
    }

    /// A new client: it gets a guest name, the welcome, and the room hears of it.
    pub fn join(&mut self, id: ClientId, out: &mut Vec<Delivery>) {
        let name = self.directory.register(id);
        let (intro, line) = (notice::intro(name), notice::connected(name));
        push(out, To::One(id), self.welcome.clone());
        push(out, To::One(id), intro);
        self.announce(id, line, out);
    }

    /// A client leaves: on its own (`reason` is `None`) or dropped by the server.
    pub fn leave(&mut self, id: ClientId, reason: Option<&str>, out: &mut Vec<Delivery>) {
        let Some(name) = self.directory.name(id) else {
            return;
        };
        // Announce while the leaver still counts, so the limit applies to joins and leaves alike.
        let line = notice::disconnected(name, reason);
        self.announce(id, line, out);
        self.directory.release(id);
    }

    /// A raw line from a member: made safe, parsed and handled. Blank lines are ignored.
    pub fn receive(&mut self, id: ClientId, raw: &[u8], out: &mut Vec<Delivery>) -> After {
        let line = text::clean(raw);
        if text::is_blank(&line) {
            return After::Stay;
        }
        self.handle(id, command::parse(&line), out)
    }

    /// A line from a member, already parsed.
    pub fn handle(&mut self, id: ClientId, command: Command<'_>, out: &mut Vec<Delivery>) -> After {
        let Some(name) = self.directory.name(id) else {
            return After::Close;
        };
        let reply = |out: &mut Vec<Delivery>, line: String| push(out, To::One(id), line);
        match command {
            Command::Say(text) => push(out, To::Others(id), format!("{name}: {text}")),
            Command::Me(text) => push(out, To::Others(id), format!("* {name} {text}")),
            Command::Nick(new) => self.rename(id, new, out),
            Command::Who => reply(out, self.directory.who()),
            Command::Msg { to, text } => match self.directory.find(to) {
                Some(target) => {
                    let target_name = self.directory.name(target).expect("found by name");
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
    pub fn relay(&self, from: &str, text: &str, out: &mut Vec<Delivery>) {
        push(out, To::All, format!("{from}: {text}"));
    }

    /// A line from the operator console.
    pub fn console(
        &mut self,
        command: ConsoleCommand<'_>,
        out: &mut Vec<Delivery>,
    ) -> ConsoleAfter {
        let reply = |out: &mut Vec<Delivery>, line: String| push(out, To::Transcript, line);
        match command {
            ConsoleCommand::Say(text) => push(out, To::All, notice::from_console(text)),
            ConsoleCommand::Who => reply(out, self.directory.who()),
            ConsoleCommand::Kick(name) => match self.directory.find(name) {
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

    fn rename(&mut self, id: ClientId, new: &str, out: &mut Vec<Delivery>) {
        match self.directory.rename(id, new) {
            Ok(old) => {
                push(out, To::One(id), notice::you_are_now(new));
                self.announce(id, notice::renamed(&old, new), out);
            }
            Err(refusal) => push(out, To::One(id), refusal),
        }
    }

    /// Join, leave and rename lines: to everyone in a room of ordinary size, to the transcript
    /// alone in a big one.
    fn announce(&self, about: ClientId, line: String, out: &mut Vec<Delivery>) {
        let to = if self.directory.len() <= self.announce_limit {
            To::Others(about)
        } else {
            To::Transcript
        };
        push(out, to, line);
    }
}

/// Appends one line to deliver.
pub(crate) fn push(out: &mut Vec<Delivery>, to: To, line: String) {
    out.push(Delivery { to, line });
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

    fn say(r: &mut Room, id: ClientId, line: &str) -> Vec<Delivery> {
        let mut out = Vec::new();
        r.handle(id, parse(line), &mut out);
        out
    }

    fn out(to: To, line: &str) -> Delivery {
        Delivery {
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
        assert_eq!(r.directory.find("alice"), Some(1));
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
        let line = r.directory.who();
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
        assert_eq!(r.directory.find("guest1"), None);
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
                To::Transcript,
                To::Transcript,
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
