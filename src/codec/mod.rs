//! Codecs: what a connection's bytes mean, and how events are written to it, with no I/O.
//!
//! A codec is handed the bytes that arrived and hands back what they mean (lines, or news that
//! the client speaks another protocol); it is handed events and appends their bytes to what the
//! connection is owed. It never reads or writes a socket (h11's shape: data in, events out;
//! events in, data out), so the engine moves bytes and the chat decides, whatever the wire
//! format: lines of text ([`line`](mod@line)), WebSocket messages ([`websocket`]), and the
//! HTTP request that may come first ([`http`]). TLS is not a codec but a layer below them all
//! ([`crate::tls`]): a codec sees the same bytes whether or not they were encrypted.

pub mod http;
pub mod line;
pub mod websocket;

use http::{Head, HeadReader, Request};
use line::{Foreign, LineCodec};
use websocket::Decoder;

/// A connection's wire format, as far as it is known.
#[derive(Debug)]
pub enum Codec {
    /// The web door is open and the client has sent nothing yet: its first bytes, or a short
    /// wait, tell a chat client from a web request (see `config::web::GREET`).
    Unsure,
    /// The text line protocol: `nc`, the bundled client, the coursework clients.
    Line(LineCodec),
    /// An HTTP request head, being read.
    Http(HeadReader),
    /// A WebSocket chat client, after its handshake. Boxed: the decoder's state is several
    /// times a line codec's, and every connection's slot in the table would otherwise pay
    /// for it (measured: 140 more bytes for each of 10,000 idle line clients).
    WebSocket(Box<Decoder>),
}

/// What a connection's input means, whatever its codec.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A chat line.
    Line(&'a [u8]),
    /// A line over the cap: the client is told, once per line.
    TooLong,
    /// The client speaks another protocol: it gets a line of explanation and is closed.
    Foreign(Foreign),
    /// An HTTP request, whole.
    Request(Request),
    /// An HTTP request the door refuses, with this status.
    BadRequest(u16),
    /// Bytes to send the client now (a WebSocket pong).
    Reply(Vec<u8>),
    /// Send these bytes (a WebSocket close frame), then close.
    Close(Vec<u8>),
}

impl Codec {
    /// The next input from what is held plus `input`, advancing `input` past what was used.
    pub fn next<'s, 'a: 's>(&'s mut self, input: &mut &'a [u8]) -> Option<Input<'s>> {
        match self {
            Codec::Unsure => None,
            Codec::Line(c) => c.next(input).map(|i| match i {
                line::Input::Line(l) => Input::Line(l),
                line::Input::TooLong => Input::TooLong,
                line::Input::Foreign(f) => Input::Foreign(f),
            }),
            Codec::Http(r) => match r.feed(input) {
                Head::Incomplete => None,
                Head::Request(request) => Some(Input::Request(request)),
                Head::Bad(status) => Some(Input::BadRequest(status)),
            },
            Codec::WebSocket(d) => d.next(input).map(|i| match i {
                websocket::Input::Line(l) => Input::Line(l),
                websocket::Input::TooLong => Input::TooLong,
                websocket::Input::Reply(r) => Input::Reply(r),
                websocket::Input::Close(c) => Input::Close(c),
            }),
        }
    }

    /// Hands back bytes the caller read but may not act on yet (rate, flow control); chat
    /// codecs only.
    pub fn keep(&mut self, rest: &[u8]) {
        match self {
            Codec::Line(c) => c.keep(rest),
            Codec::WebSocket(d) => d.keep(rest),
            Codec::Unsure | Codec::Http(_) => debug_assert!(rest.is_empty(), "nothing to keep"),
        }
    }

    /// Ends an unfinished line (a quiet, or the end of the stream); only lines have them.
    pub fn end_line(&mut self) {
        if let Codec::Line(c) = self {
            c.end_line();
        }
    }

    /// Whether bytes are held: an unfinished line, frame or request.
    pub fn is_empty(&self) -> bool {
        match self {
            Codec::Unsure => true,
            Codec::Line(c) => c.is_empty(),
            Codec::Http(r) => r.held() == 0,
            Codec::WebSocket(d) => d.is_empty(),
        }
    }

    /// Whether a whole input waits for its turn.
    pub fn has_line(&self) -> bool {
        match self {
            Codec::Line(c) => c.has_line(),
            Codec::WebSocket(d) => d.has_line(),
            Codec::Unsure | Codec::Http(_) => false,
        }
    }

    /// Bytes held for this client.
    pub fn held(&self) -> usize {
        match self {
            Codec::Unsure => 0,
            Codec::Line(c) => c.held(),
            Codec::Http(r) => r.held(),
            Codec::WebSocket(d) => d.held(),
        }
    }

    /// Whether what it sends is chat (lines, or WebSocket messages), under the chat's limits.
    pub fn is_chat(&self) -> bool {
        matches!(self, Codec::Line(_) | Codec::WebSocket(_))
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self, Codec::WebSocket(_))
    }
}
