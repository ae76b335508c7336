//! What the chat says, as data: who said what, in which room. Pure.
//!
//! The chat produces events; how they look on the wire is a codec's business. Today's one
//! rendering is the text line ([`Event::write_line`]), byte for byte what loopchat has always
//! sent, so that `nc` users and the coursework clients see no change. A room other than the
//! lobby shows as a `[#room] ` in front of the line; the lobby shows as nothing, since its lines
//! keep the form they had when it was the only room.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::config::rooms::LOBBY;
use crate::directory::ClientId;
use crate::room::RoomId;

/// A room's name as events carry it: shared, so that a message costs no copy of it.
pub type RoomName = Rc<str>;

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// A client, by the name it had then.
    Client(String),
    /// A UDP datagram, by its sender's address (which no name can look like).
    Datagram(SocketAddr),
    /// The operator at the server's console.
    Operator,
}

/// A message said in a room: what a room's history keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub author: Author,
    pub text: String,
    /// `/me`: shown as `* alice waves`.
    pub action: bool,
}

impl Message {
    pub fn say(author: Author, text: &str) -> Message {
        Message {
            author,
            text: text.to_owned(),
            action: false,
        }
    }

    pub fn act(author: Author, text: &str) -> Message {
        Message {
            action: true,
            ..Message::say(author, text)
        }
    }

    /// The most bytes its author and text take in a rendered line. A history counts messages by
    /// this (plus a fixed overhead that covers the rest of the line), so that a replay of so
    /// many bytes of history sends no more than that.
    pub fn rendered_len(&self) -> usize {
        let author = match &self.author {
            Author::Client(name) => name.len(),
            // The longest address: `[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535`.
            Author::Datagram(_) => 58,
            Author::Operator => "SERVER".len(),
        };
        author + self.text.len()
    }
}

/// One thing for a client, or for the transcript, to be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A line in the server's voice that belongs to no room (replies, private messages,
    /// server-wide notices), already worded by `notice.rs`.
    Line(String),
    /// A message said in a room.
    Said { room: RoomName, message: Message },
    /// The server's voice about a room: joins, leaves, its topic, the end of a replay.
    Notice { room: RoomName, line: String },
    /// A message from a room's history, replayed to someone who joined: `at` is when it was
    /// said, in seconds since the Unix epoch.
    Replayed {
        room: RoomName,
        message: Message,
        at: u64,
    },
}

impl Event {
    /// A server line about no room.
    pub fn line(line: impl Into<String>) -> Event {
        Event::Line(line.into())
    }

    /// The event as a text line, with its newline, appended to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let mut s = String::new();
        match self {
            Event::Line(line) => s.push_str(line),
            Event::Said { room, message } => {
                prefix(&mut s, room);
                write_message(&mut s, message);
            }
            Event::Notice { room, line } => {
                prefix(&mut s, room);
                s.push_str(line);
            }
            Event::Replayed { room, message, at } => {
                prefix(&mut s, room);
                let secs = at % 86_400;
                let (h, m, sec) = (secs / 3600, secs / 60 % 60, secs % 60);
                let _ = write!(s, "[history {h:02}:{m:02}:{sec:02}] ");
                write_message(&mut s, message);
            }
        }
        out.extend_from_slice(s.as_bytes());
        out.push(b'\n');
    }

    /// The event as a text line without its newline: for tests and the transcript's readers.
    pub fn to_line(&self) -> String {
        let mut out = Vec::new();
        self.write_line(&mut out);
        out.pop();
        String::from_utf8(out).expect("events are text")
    }
}

/// Who receives an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// One client.
    One(ClientId),
    /// The members of a room but `except` (the sender, say), and the transcript.
    Room {
        room: RoomId,
        except: Option<ClientId>,
    },
    /// Every client, whatever its rooms, and the transcript.
    All,
    /// The transcript only: standard output, which the operator reads. (The console is the
    /// operator's input; the transcript is the server's output.)
    Transcript,
}

/// One event to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub to: To,
    pub event: Event,
}

/// Appends one event to deliver.
pub fn push(out: &mut Vec<Delivery>, to: To, event: Event) {
    out.push(Delivery { to, event });
}

/// Appends a line about no room, for `to`.
pub fn push_line(out: &mut Vec<Delivery>, to: To, line: impl Into<String>) {
    push(out, to, Event::line(line));
}

/// `[#room] ` for every room but the lobby.
fn prefix(s: &mut String, room: &str) {
    if room != LOBBY {
        s.push('[');
        s.push_str(room);
        s.push_str("] ");
    }
}

/// `alice: text`, `* alice text`, `127.0.0.1:9: text`, `SERVER: text`.
fn write_message(s: &mut String, message: &Message) {
    let author: &dyn std::fmt::Display = match &message.author {
        Author::Client(name) => name,
        Author::Datagram(addr) => addr,
        Author::Operator => &"SERVER",
    };
    let _ = if message.action {
        write!(s, "* {author} {}", message.text)
    } else {
        write!(s, "{author}: {}", message.text)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(room: &str, message: Message) -> String {
        Event::Said {
            room: room.into(),
            message,
        }
        .to_line()
    }

    #[test]
    fn the_lobby_keeps_the_old_lines_and_other_rooms_are_named() {
        let alice = || Author::Client("alice".into());
        assert_eq!(said("#lobby", Message::say(alice(), "hi")), "alice: hi");
        assert_eq!(
            said("#lobby", Message::act(alice(), "waves")),
            "* alice waves"
        );
        assert_eq!(
            said("#lobby", Message::say(Author::Operator, "hola")),
            "SERVER: hola"
        );
        let udp = Author::Datagram("127.0.0.1:9".parse().unwrap());
        assert_eq!(said("#lobby", Message::say(udp, "x")), "127.0.0.1:9: x");
        assert_eq!(
            said("#Rust", Message::say(alice(), "hi")),
            "[#Rust] alice: hi"
        );
        let notice = Event::Notice {
            room: "#Rust".into(),
            line: "[SERVER] bob joined".into(),
        };
        assert_eq!(notice.to_line(), "[#Rust] [SERVER] bob joined");
    }

    #[test]
    fn history_shows_its_time_of_day_in_utc() {
        let replayed = |room: &str| Event::Replayed {
            room: room.into(),
            message: Message::say(Author::Client("bob".into()), "earlier"),
            // 2026-11-28 20:05:09 UTC
            at: 1_795_896_309,
        };
        assert_eq!(
            replayed("#lobby").to_line(),
            "[history 20:05:09] bob: earlier"
        );
        assert_eq!(
            replayed("#rust").to_line(),
            "[#rust] [history 20:05:09] bob: earlier"
        );
        let mut out = Vec::new();
        replayed("#rust").write_line(&mut out);
        assert!(out.ends_with(b"earlier\n"));
    }
}
