//! The line codec: loopchat's text protocol, both ways. Pure: no sockets, no clocks.
//!
//! In: TCP delivers a stream of bytes, not messages: one `read` may return half a line, or ten
//! lines and the start of an eleventh. [`Framer`] turns whatever the reads return into whole
//! lines, while holding at most about one line of a client's input, whatever it sends; the
//! length cap applies there. [`LineCodec`] adds what a connection's first bytes say: a client
//! that speaks HTTP or TLS to the chat port is recognised, not broadcast.
//!
//! Out: [`encode`] writes an event as one text line. A room other than the lobby shows as a
//! `[#room] ` in front of the line; the lobby shows as nothing, since its lines keep the form
//! they had when it was the only room.

use std::io::Write as _;

use crate::config::rooms::LOBBY;
use crate::event::{Author, Event, Message};

/// What the framer found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A line without its LF (and without the CR of a CRLF).
    Line(&'a [u8]),
    /// A line longer than the cap. Reported once per line; the rest of it is discarded.
    TooLong,
}

/// Splits a client's byte stream into lines of at most `max_line` bytes.
///
/// Feed it with [`Framer::next`] straight from the read buffer: complete lines are handed out
/// without copying, and only an unfinished line is kept. A reader that stops taking lines
/// early (its rate budget is spent) hands the rest back with [`Framer::keep`].
#[derive(Debug)]
pub struct Framer {
    max_line: usize,
    /// Bytes received but not yet handed out: normally at most an unfinished line; after
    /// [`Framer::keep`], also complete lines waiting for their turn.
    pending: Vec<u8>,
    /// Where the unconsumed part of `pending` starts. Lines are handed out as slices of
    /// `pending`, so it is compacted on the next call, not while a slice may be alive.
    start: usize,
    /// Inside an over-long line: drop bytes until the next LF (or [`Framer::flush`]).
    discarding: bool,
}

impl Framer {
    pub fn new(max_line: usize) -> Framer {
        Framer {
            max_line,
            pending: Vec::new(),
            start: 0,
            discarding: false,
        }
    }

    /// Takes the next frame from the bytes held back plus `input`, advancing `input` past what
    /// it consumed. `None` means `input` is used up and no complete line is left; any
    /// unfinished line is kept for the next call.
    pub fn next<'s, 'a: 's>(&'s mut self, input: &mut &'a [u8]) -> Option<Frame<'s>> {
        if self.start == self.pending.len() {
            self.pending.clear();
            self.start = 0;
        }
        loop {
            // Complete lines held back by `keep` go first, in order.
            if let Some(i) = find_lf(&self.pending[self.start..]) {
                let (from, to) = (self.start, self.start + i);
                self.start = to + 1;
                if self.discarding {
                    self.end_discarding();
                    continue;
                }
                return Some(judge(self.max_line, &self.pending[from..to]));
            }
            // What is held back now is one unfinished line, possibly empty.
            let Some(j) = find_lf(input) else {
                self.hold(std::mem::take(input));
                return self.check_unfinished();
            };
            let line = &input[..j];
            *input = &input[j + 1..];
            if self.start == self.pending.len() && !self.discarding {
                // The common case: the whole line is in this read. No copy.
                return Some(judge(self.max_line, line));
            }
            if self.discarding {
                self.end_discarding();
                continue;
            }
            let held = self.pending.len() - self.start;
            if held + line.len() > self.max_line + 1 {
                // Longer than any line with a CR could be: refuse without copying it.
                self.pending.clear();
                self.start = 0;
                return Some(Frame::TooLong);
            }
            self.pending.extend_from_slice(line);
            let (from, to) = (self.start, self.pending.len());
            self.start = to;
            return self.classify(from, to);
        }
    }

    /// Hands back bytes the caller read but chose not to frame yet. They are framed, in
    /// order, by the next calls to [`Framer::next`]. The caller bounds how much it reads
    /// while it does this, so the buffer stays small.
    pub fn keep(&mut self, rest: &[u8]) {
        let rest = if self.discarding {
            // Still inside an over-long line: its end is the next LF.
            let Some(lf) = find_lf(rest) else { return };
            self.end_discarding();
            &rest[lf + 1..]
        } else {
            rest
        };
        self.pending.extend_from_slice(rest);
    }

    /// Ends the unfinished line (after a quiet period, or at the end of the stream): it becomes
    /// a complete line, handed out by [`Framer::next`] like any other. Ends the discarding of
    /// an over-long line too.
    pub fn end_line(&mut self) {
        if self.discarding {
            self.end_discarding();
        } else if self.pending.len() > self.start && self.pending.last() != Some(&b'\n') {
            self.pending.push(b'\n');
        }
    }

    /// Whether bytes are held: an unfinished line or lines waiting for their turn.
    pub fn is_empty(&self) -> bool {
        self.start == self.pending.len() && !self.discarding
    }

    /// Whether a complete line is held back (by [`Framer::keep`]) and waiting for its turn.
    pub fn has_line(&self) -> bool {
        find_lf(&self.pending[self.start..]).is_some()
    }

    /// Bytes held for this client, for tests of the memory bound.
    pub fn held(&self) -> usize {
        self.pending.len() - self.start
    }

    fn classify(&mut self, from: usize, to: usize) -> Option<Frame<'_>> {
        if self.discarding {
            self.end_discarding();
            return None;
        }
        let max_line = self.max_line;
        Some(judge(max_line, &self.pending[from..to]))
    }

    fn hold(&mut self, bytes: &[u8]) {
        if !self.discarding {
            self.pending.extend_from_slice(bytes);
        }
    }

    /// An unfinished line that is already too long is refused now, not when its LF comes:
    /// the client hears about it at once and the server stops storing it.
    fn check_unfinished(&mut self) -> Option<Frame<'static>> {
        let unfinished = &self.pending[self.start..];
        let too_long = unfinished.len() > self.max_line + 1
            || (unfinished.len() == self.max_line + 1 && unfinished.last() != Some(&b'\r'));
        if !too_long {
            return None;
        }
        self.pending.clear();
        self.start = 0;
        self.discarding = true;
        Some(Frame::TooLong)
    }

    fn end_discarding(&mut self) {
        self.discarding = false;
        self.pending.drain(..self.start);
        self.start = 0;
        if self.pending.capacity() > 4 * self.max_line {
            // An over-long line may have grown the buffer; give the memory back.
            self.pending.shrink_to_fit();
        }
    }
}

/// Drops the CR of a CRLF and applies the cap, which counts neither.
fn judge(max_line: usize, line: &[u8]) -> Frame<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max_line {
        Frame::TooLong
    } else {
        Frame::Line(line)
    }
}

fn find_lf(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// One connection's side of the line protocol: its framer, and whether its first bytes and
/// first line are still to come (they are looked at for another protocol).
#[derive(Debug)]
pub struct LineCodec {
    framer: Framer,
    first_bytes: bool,
    first_line: bool,
}

/// What a connection's input means.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    Line(&'a [u8]),
    /// A line over the cap: the client is told, once per line.
    TooLong,
    /// The client speaks another protocol: it gets a line of explanation and is closed.
    Foreign(Foreign),
}

impl LineCodec {
    pub fn new(max_line: usize) -> LineCodec {
        LineCodec {
            framer: Framer::new(max_line),
            first_bytes: true,
            first_line: true,
        }
    }

    /// Bytes as they were read, before they are framed: the first ones may be a TLS handshake,
    /// which has no line in it to look at.
    pub fn received(&mut self, bytes: &[u8]) -> Option<Foreign> {
        if bytes.is_empty() || !std::mem::take(&mut self.first_bytes) {
            return None;
        }
        is_tls_hello(bytes).then_some(Foreign::Tls)
    }

    /// The next input from the bytes held back plus `input` (see [`Framer::next`]). The first
    /// line may be an HTTP request.
    pub fn next<'s, 'a: 's>(&'s mut self, input: &mut &'a [u8]) -> Option<Input<'s>> {
        let frame = self.framer.next(input)?;
        let first = std::mem::take(&mut self.first_line);
        Some(match frame {
            Frame::Line(raw) if first && is_http_request(raw) => Input::Foreign(Foreign::Http),
            Frame::Line(raw) => Input::Line(raw),
            Frame::TooLong => Input::TooLong,
        })
    }

    /// See [`Framer::keep`].
    pub fn keep(&mut self, rest: &[u8]) {
        self.framer.keep(rest);
    }

    /// See [`Framer::end_line`].
    pub fn end_line(&mut self) {
        self.framer.end_line();
    }

    /// See [`Framer::is_empty`].
    pub fn is_empty(&self) -> bool {
        self.framer.is_empty()
    }

    /// See [`Framer::has_line`].
    pub fn has_line(&self) -> bool {
        self.framer.has_line()
    }

    /// See [`Framer::held`].
    pub fn held(&self) -> usize {
        self.framer.held()
    }
}

/// An event as a text line, with its newline, appended to `out`.
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Line(line) => out.extend_from_slice(line.as_bytes()),
        Event::Said { room, message } => {
            prefix(out, room);
            write_message(out, message);
        }
        Event::Notice { room, line } => {
            prefix(out, room);
            out.extend_from_slice(line.as_bytes());
        }
        Event::Replayed { room, message, at } => {
            prefix(out, room);
            let secs = at % 86_400;
            let (h, m, sec) = (secs / 3600, secs / 60 % 60, secs % 60);
            let _ = write!(out, "[history {h:02}:{m:02}:{sec:02}] ");
            write_message(out, message);
        }
    }
    out.push(b'\n');
}

/// An event as a text line without its newline: for tests, and readers of the transcript.
pub fn render(event: &Event) -> String {
    let mut out = Vec::new();
    encode(event, &mut out);
    out.pop();
    String::from_utf8(out).expect("events are text")
}

/// `[#room] ` for every room but the lobby.
fn prefix(out: &mut Vec<u8>, room: &str) {
    if room != LOBBY {
        out.push(b'[');
        out.extend_from_slice(room.as_bytes());
        out.extend_from_slice(b"] ");
    }
}

/// `alice: text`, `* alice text`, `127.0.0.1:9: text`, `SERVER: text`.
fn write_message(out: &mut Vec<u8>, message: &Message) {
    let author: &dyn std::fmt::Display = match &message.author {
        Author::Client(name) => name,
        Author::Datagram(addr) => addr,
        Author::Operator => &"SERVER",
    };
    // Writing to a Vec cannot fail.
    let _ = if message.action {
        write!(out, "* {author} {}", message.text)
    } else {
        write!(out, "{author}: {}", message.text)
    };
}

/// A datagram is one message: a trailing LF or CRLF (as `nc -u` sends) is dropped, and the
/// cap applies as to a line.
pub fn datagram(bytes: &[u8], max_line: usize) -> Frame<'_> {
    let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    judge(max_line, line)
}

/// A protocol that is not ours, recognised from what a client sends first.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Foreign {
    Http,
    Tls,
}

/// Recognises a TLS handshake from the first bytes of a connection: a record of type 22
/// (handshake) with major version 3.
pub fn is_tls_hello(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, ..])
}

/// Recognises an HTTP request line (`GET /path HTTP/1.1`), so that a browser pointed at the
/// chat port gets an explanation instead of its request broadcast as a message.
pub fn is_http_request(first_line: &[u8]) -> bool {
    let mut words = first_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(u8::is_ascii_uppercase)
        && !target.is_empty()
        && version.starts_with(b"HTTP/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Owned frames, so a test can collect them across calls.
    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Got {
        Line(Vec<u8>),
        TooLong,
    }

    fn own(f: Frame<'_>) -> Got {
        match f {
            Frame::Line(l) => Got::Line(l.to_vec()),
            Frame::TooLong => Got::TooLong,
        }
    }

    /// Feeds `chunks` one read at a time, then ends the stream.
    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Got> {
        let mut f = Framer::new(max);
        let mut got = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while let Some(frame) = f.next(&mut input) {
                got.push(own(frame));
            }
            assert!(input.is_empty());
            assert!(f.held() <= max + 1, "held {} bytes", f.held());
        }
        got.extend(drain(&mut f));
        got
    }

    /// Ends the stream: the unfinished line, if any, is a line.
    fn drain(f: &mut Framer) -> Vec<Got> {
        f.end_line();
        let mut rest = Vec::new();
        let mut none: &[u8] = &[];
        while let Some(frame) = f.next(&mut none) {
            rest.push(own(frame));
        }
        rest
    }

    /// The specification, written the slow and obvious way.
    fn model(max: usize, stream: &[u8]) -> Vec<Got> {
        let mut parts: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
        let last = parts.pop().unwrap();
        let mut got: Vec<Got> = parts.into_iter().map(|l| own(judge(max, l))).collect();
        if !last.is_empty() {
            got.push(own(judge(max, last)));
        }
        got
    }

    fn line(s: &str) -> Got {
        Got::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn lines_crlf_and_partial_reads() {
        let got = frames(200, &[b"hel", b"lo\r\nwor", b"ld\n\nlast"]);
        assert_eq!(got, [line("hello"), line("world"), line(""), line("last")]);
    }

    #[test]
    fn the_cap_counts_bytes_without_the_line_end() {
        let ok = "a".repeat(200);
        let long = "a".repeat(201);
        let got = frames(200, &[format!("{ok}\r\n{long}\n{ok}\n").as_bytes()]);
        assert_eq!(got, [line(&ok), Got::TooLong, line(&ok)]);
    }

    #[test]
    fn an_endless_line_is_refused_once_and_not_stored() {
        let mut f = Framer::new(200);
        let junk = vec![b'x'; 64 * 1024];
        let mut got = Vec::new();
        for _ in 0..16 {
            let mut input = &junk[..];
            while let Some(frame) = f.next(&mut input) {
                got.push(own(frame));
            }
            assert_eq!(f.held(), 0);
        }
        let mut input = &b"tail\nnext\n"[..];
        while let Some(frame) = f.next(&mut input) {
            got.push(own(frame));
        }
        assert_eq!(got, [Got::TooLong, line("next")]);
    }

    #[test]
    fn ending_the_line_completes_it_and_ends_discarding() {
        let mut f = Framer::new(5);
        let mut input = &b"Hola"[..];
        assert_eq!(f.next(&mut input), None);
        f.end_line();
        assert_eq!(drain(&mut f), [line("Hola")]);
        assert_eq!(drain(&mut f), []);
        let mut input = &b"too long"[..];
        assert_eq!(f.next(&mut input), Some(Frame::TooLong));
        assert_eq!(drain(&mut f), []);
        let mut input = &b"ok\n"[..];
        assert_eq!(f.next(&mut input), Some(Frame::Line(b"ok")));
    }

    #[test]
    fn kept_lines_come_back_in_order_before_new_input() {
        let mut f = Framer::new(200);
        let mut input = &b"one\ntwo\nthr"[..];
        assert_eq!(f.next(&mut input), Some(Frame::Line(b"one")));
        f.keep(input);
        assert!(f.has_line());
        let mut input = &b"ee\n"[..];
        assert_eq!(f.next(&mut input), Some(Frame::Line(b"two")));
        assert_eq!(f.next(&mut input), Some(Frame::Line(b"three")));
        assert_eq!(f.next(&mut input), None);
        assert!(f.is_empty());
    }

    #[test]
    fn a_datagram_is_one_message() {
        assert_eq!(datagram(b"hi\r\n", 200), Frame::Line(b"hi"));
        assert_eq!(datagram(b"a\nb", 200), Frame::Line(b"a\nb"));
        assert_eq!(datagram(b"abcdef\n", 5), Frame::TooLong);
    }

    #[test]
    fn recognises_http_and_tls() {
        assert!(is_http_request(b"GET / HTTP/1.1"));
        assert!(is_http_request(b"POST /api HTTP/2"));
        assert!(!is_http_request(b"GET me a coffee"));
        assert!(!is_http_request(b"get / HTTP/1.1 extra"));
        assert!(is_tls_hello(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!is_tls_hello(b"hello"));
    }

    proptest! {
        /// However the stream is cut into reads, the same frames come out, and they are the
        /// ones the specification gives.
        #[test]
        fn every_split_gives_the_same_frames(
            stream in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..12),
            max in 1usize..40,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                chunks.push(&stream[from..c]);
                from = c;
            }
            prop_assert_eq!(frames(max, &chunks), model(max, &stream));
        }

        /// Stopping early and keeping the rest loses and reorders nothing.
        #[test]
        fn keep_preserves_the_stream(
            stream in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'a'), Just(b'b')], 0..300),
            take in 0usize..5,
        ) {
            let mut f = Framer::new(50);
            let mut got = Vec::new();
            let mut input = &stream[..];
            for _ in 0..take {
                match f.next(&mut input) {
                    Some(frame) => got.push(own(frame)),
                    None => break,
                }
            }
            f.keep(input);
            let mut empty: &[u8] = &[];
            while let Some(frame) = f.next(&mut empty) {
                got.push(own(frame));
            }
                        got.extend(drain(&mut f));
            prop_assert_eq!(got, model(50, &stream));
        }
    }

    // ----- out: events as lines -----

    fn said(room: &str, message: Message) -> String {
        render(&Event::Said {
            room: room.into(),
            message,
        })
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
        assert_eq!(render(&notice), "[#Rust] [SERVER] bob joined");
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
            render(&replayed("#lobby")),
            "[history 20:05:09] bob: earlier"
        );
        assert_eq!(
            render(&replayed("#rust")),
            "[#rust] [history 20:05:09] bob: earlier"
        );
        let mut out = Vec::new();
        encode(&replayed("#rust"), &mut out);
        assert!(out.ends_with(b"earlier\n"));
    }
}
