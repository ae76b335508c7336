//! What the chat says, as data: who said what, in which room. Pure.
//!
//! The chat produces events; how they look on the wire is a codec's business (`codec/`).
//! Today's one rendering is the text line (`codec/line.rs`), byte for byte what loopchat has
//! always sent, so that `nc` users and the coursework clients see no change.

use std::net::SocketAddr;
use std::rc::Rc;

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
    /// The members of a room but `except`, and not the transcript (which had the line
    /// already: a quiet client's arrival, told to the room once it speaks).
    Members {
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
