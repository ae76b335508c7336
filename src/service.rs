//! What the server does with its clients, by `--mode`, behind one seam: the chat room, or the
//! acknowledgement service; echo takes bytes, not lines, and the engine hands them straight
//! back. Pure: like the room, each call appends to `out` the lines to deliver and to whom.

use std::net::SocketAddr;

use crate::ack::{self, Answer};
use crate::command::ConsoleCommand;
use crate::config::Mode;
use crate::notice;
use crate::room::{After, ClientId, ConsoleAfter, Delivery, Room, To, push};

pub struct Service {
    mode: Mode,
    /// The chat room; in echo and ack mode it stays empty, and the console still works.
    room: Room,
}

impl Service {
    pub fn new(mode: Mode, room: Room) -> Service {
        Service { mode, room }
    }

    /// Echo: every byte back as received. No framing, no cap, no commands.
    pub fn is_echo(&self) -> bool {
        self.mode == Mode::Echo
    }

    /// Who receives a line for everyone.
    pub fn members(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.room.members()
    }

    /// A new connection: in chat a member with a name; otherwise a line in the transcript.
    pub fn join(&mut self, id: ClientId, addr: SocketAddr, out: &mut Vec<Delivery>) {
        match self.mode {
            Mode::Chat => self.room.join(id, out),
            Mode::Echo | Mode::Ack => {
                push(out, To::Transcript, notice::connected(&addr.to_string()))
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
            Mode::Chat => self.room.leave(id, reason, out),
            Mode::Echo | Mode::Ack => {
                let line = notice::disconnected(&addr.to_string(), reason);
                push(out, To::Transcript, line);
            }
        }
    }

    /// A line from a connection (never in echo mode, which does not frame).
    pub fn line(
        &mut self,
        id: ClientId,
        addr: SocketAddr,
        raw: &[u8],
        out: &mut Vec<Delivery>,
    ) -> After {
        if self.mode == Mode::Chat {
            return self.room.receive(id, raw, out);
        }
        match ack::answer(raw) {
            Answer::Ignore => After::Stay,
            Answer::Received { reply, text } => {
                push(out, To::One(id), reply);
                push(out, To::Transcript, format!("{addr}: {text}"));
                After::Stay
            }
            Answer::Bye => {
                push(out, To::One(id), notice::BYE.to_owned());
                After::Close
            }
        }
    }

    /// A message that came by UDP from `from`: the room sees it in chat, the transcript
    /// otherwise.
    pub fn relay(&mut self, from: SocketAddr, text: &str, out: &mut Vec<Delivery>) {
        match self.mode {
            Mode::Chat => self.room.relay(&from.to_string(), text, out),
            Mode::Echo | Mode::Ack => push(out, To::Transcript, format!("{from}: {text}")),
        }
    }

    /// A line from the operator console.
    pub fn console(
        &mut self,
        command: ConsoleCommand<'_>,
        out: &mut Vec<Delivery>,
    ) -> ConsoleAfter {
        self.room.console(command, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(mode: Mode) -> Service {
        Service::new(mode, Room::new("Welcome!", 100))
    }

    fn lines(out: &[Delivery]) -> Vec<(To, &str)> {
        out.iter().map(|o| (o.to, o.line.as_str())).collect()
    }

    #[test]
    fn ack_answers_and_says_goodbye() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut s = service(Mode::Ack);
        let mut out = Vec::new();
        s.join(1, addr, &mut out);
        assert_eq!(s.line(1, addr, b"hola", &mut out), After::Stay);
        assert_eq!(s.line(1, addr, b"exit", &mut out), After::Close);
        s.leave(1, addr, None, &mut out);
        assert_eq!(
            lines(&out),
            [
                (To::Transcript, "[SERVER] Client: 127.0.0.1:4000 connected!"),
                (To::One(1), "received: hola"),
                (To::Transcript, "127.0.0.1:4000: hola"),
                (To::One(1), "[SERVER] Bye!"),
                (
                    To::Transcript,
                    "[SERVER] Client: 127.0.0.1:4000 disconnected."
                ),
            ]
        );
        assert_eq!(s.members().count(), 0, "ack has no room");
    }

    #[test]
    fn chat_is_the_room() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut s = service(Mode::Chat);
        let mut out = Vec::new();
        s.join(1, addr, &mut out);
        s.join(2, addr, &mut out);
        out.clear();
        s.line(1, addr, b"hi", &mut out);
        s.relay("127.0.0.1:9".parse().unwrap(), "by udp", &mut out);
        assert_eq!(
            lines(&out),
            [
                (To::Others(1), "guest1: hi"),
                (To::All, "127.0.0.1:9: by udp")
            ]
        );
        assert_eq!(s.members().count(), 2);
    }
}
