//! What the server does with its clients, by `--mode`, behind one seam: the chat, or the
//! acknowledgement service; echo takes bytes, not lines, and the engine hands them straight
//! back. Pure: like the chat, each call appends to `out` the events to deliver and to whom.

use std::net::SocketAddr;

use crate::ack::{self, Answer};
use crate::chat::{After, Chat, ClientId, ConsoleAfter};
use crate::command::ConsoleCommand;
use crate::config::Mode;
use crate::event::{Delivery, To, push_line};
use crate::notice;
use crate::room::RoomId;

pub struct Service {
    mode: Mode,
    /// The chat; in echo and ack mode it stays empty, and the console still works.
    chat: Chat,
}

impl Service {
    pub fn new(mode: Mode, chat: Chat) -> Service {
        Service { mode, chat }
    }

    /// Echo: every byte back as received. No framing, no cap, no commands.
    pub fn is_echo(&self) -> bool {
        self.mode == Mode::Echo
    }

    /// Who receives an event for a room, if it is still there.
    pub fn members(&self, room: RoomId) -> Option<impl Iterator<Item = ClientId> + '_> {
        self.chat.members(room)
    }

    /// Who receives an event for everyone.
    pub fn everyone(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.chat.everyone()
    }

    /// Rooms there are (none outside chat mode).
    pub fn rooms(&self) -> usize {
        self.chat.rooms()
    }

    /// A new connection: in chat a member with a name (heard of at once, or if `quiet` once
    /// it speaks); otherwise a line in the transcript.
    pub fn join(&mut self, id: ClientId, addr: SocketAddr, quiet: bool, out: &mut Vec<Delivery>) {
        match self.mode {
            Mode::Chat => self.chat.join(id, quiet, out),
            Mode::Echo | Mode::Ack => {
                push_line(out, To::Transcript, notice::connected(&addr.to_string()))
            }
        }
    }

    /// A connection leaves, on its own (`reason` is `None`) or dropped by the server.
    pub fn leave(
        &mut self,
        id: ClientId,
        addr: SocketAddr,
        reason: Option<&str>,
        out: &mut Vec<Delivery>,
    ) {
        match self.mode {
            Mode::Chat => self.chat.leave(id, reason, out),
            Mode::Echo | Mode::Ack => {
                let line = notice::disconnected(&addr.to_string(), reason);
                push_line(out, To::Transcript, line);
            }
        }
    }

    /// A line from a connection (never in echo mode, which does not frame). `at` is the time
    /// in seconds since the Unix epoch, for the rooms' history.
    pub fn line(
        &mut self,
        id: ClientId,
        addr: SocketAddr,
        raw: &[u8],
        at: u64,
        out: &mut Vec<Delivery>,
    ) -> After {
        if self.mode == Mode::Chat {
            return self.chat.receive(id, raw, at, out);
        }
        match ack::answer(raw) {
            Answer::Ignore => After::Stay,
            Answer::Received { reply, text } => {
                push_line(out, To::One(id), reply);
                push_line(out, To::Transcript, format!("{addr}: {text}"));
                After::Stay
            }
            Answer::Bye => {
                push_line(out, To::One(id), notice::BYE);
                After::Close
            }
        }
    }

    /// A message that came by UDP from `from`: the lobby sees it in chat, the transcript
    /// otherwise.
    pub fn relay(&mut self, from: SocketAddr, text: &str, at: u64, out: &mut Vec<Delivery>) {
        match self.mode {
            Mode::Chat => self.chat.relay(from, text, at, out),
            Mode::Echo | Mode::Ack => push_line(out, To::Transcript, format!("{from}: {text}")),
        }
    }

    /// The chat itself: on a node of a cluster, the gossip between nodes is the chat's.
    pub fn chat(&mut self) -> &mut Chat {
        &mut self.chat
    }

    /// A line from the operator console.
    pub fn console(
        &mut self,
        command: ConsoleCommand<'_>,
        at: u64,
        out: &mut Vec<Delivery>,
    ) -> ConsoleAfter {
        self.chat.console(command, at, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::chat::Limits;
    use crate::codec::line;

    fn service(mode: Mode) -> Service {
        let limits = Limits {
            announce: 100,
            history: 50,
            replay_bytes: 1 << 14,
            node: None,
        };
        Service::new(mode, Chat::new("Welcome!", limits))
    }

    fn lines(out: &[Delivery]) -> Vec<(To, String)> {
        out.iter().map(|o| (o.to, line::render(&o.event))).collect()
    }

    fn line(to: To, line: &str) -> (To, String) {
        (to, line.to_owned())
    }

    #[test]
    fn ack_answers_and_says_goodbye() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut s = service(Mode::Ack);
        let mut out = Vec::new();
        s.join(1, addr, false, &mut out);
        assert_eq!(s.line(1, addr, b"hola", 0, &mut out), After::Stay);
        assert_eq!(s.line(1, addr, b"exit", 0, &mut out), After::Close);
        s.leave(1, addr, None, &mut out);
        assert_eq!(
            lines(&out),
            [
                line(To::Transcript, "[SERVER] Client: 127.0.0.1:4000 connected!"),
                line(To::One(1), "received: hola"),
                line(To::Transcript, "127.0.0.1:4000: hola"),
                line(To::One(1), "[SERVER] Bye!"),
                line(
                    To::Transcript,
                    "[SERVER] Client: 127.0.0.1:4000 disconnected."
                ),
            ]
        );
        assert_eq!(s.everyone().count(), 0, "ack has no chat");
    }

    #[test]
    fn chat_is_the_room() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut s = service(Mode::Chat);
        let mut out = Vec::new();
        s.join(1, addr, false, &mut out);
        s.join(2, addr, false, &mut out);
        out.clear();
        s.line(1, addr, b"hi", 0, &mut out);
        s.relay("127.0.0.1:9".parse().unwrap(), "by udp", 0, &mut out);
        let lobby = |except| To::Room { room: 0, except };
        assert_eq!(
            lines(&out),
            [
                line(lobby(Some(1)), "guest1: hi"),
                line(lobby(None), "127.0.0.1:9: by udp")
            ]
        );
        assert_eq!(s.members(0).map_or(0, Iterator::count), 2);
    }
}
