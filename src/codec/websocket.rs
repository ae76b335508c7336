//! The WebSocket codec (RFC 6455), server side: frames in to chat lines, lines out as text
//! frames. Pure: no sockets, no clocks.
//!
//! One text message in is one chat line, held to the same cap as a line and never buffered
//! past it: a message over the cap is skipped as it streams in, like an over-long line, and the
//! client is told. Control frames are answered here (a ping with its pong, a close with a
//! close); what breaks the protocol gets a close frame with the RFC's status code. A decoder
//! that is idle holds no allocation, only the few bytes of a frame header.
//!
//! Written here rather than taken from `tungstenite`: its context allocates a read buffer per
//! connection up front and frames every message for each connection, where a broadcast here
//! frames a line once for all its WebSocket recipients ([`encode_text`]) and an idle
//! connection costs a few bytes.

use std::collections::VecDeque;

/// Close status codes (RFC 6455, section 7.4.1).
pub mod status {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The most a control frame may carry (RFC 6455, section 5.5).
const MAX_CONTROL: usize = 125;

/// What a connection's frames mean.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A complete text message: one chat line.
    Line(&'a [u8]),
    /// A text message over the cap, skipped: the client is told, once per message.
    TooLong,
    /// Bytes to send the client now: a pong.
    Reply(Vec<u8>),
    /// The conversation is over: send these bytes (a close frame), then close.
    Close(Vec<u8>),
}

/// Decodes one client's frames. Feed it with [`Decoder::next`] straight from the read buffer;
/// it keeps only an unfinished header, the message being assembled (at most the cap), a
/// control frame's payload (at most 125 bytes), and what a reader out of budget handed back
/// ([`Decoder::keep`]), decoded.
#[derive(Debug)]
pub struct Decoder {
    max_line: usize,
    /// Inputs decoded from bytes handed back, waiting for their turn, in order.
    backlog: VecDeque<Step>,
    /// A line from the backlog, lent out: apart from `message`, which may hold the start of a
    /// message still arriving.
    lent: Vec<u8>,
    /// The header of the frame being read, until it is whole.
    header: [u8; 14],
    header_len: u8,
    /// The frame being read, once its header is whole.
    frame: Option<Frame>,
    /// The text message being assembled from its fragments.
    message: Vec<u8>,
    /// A text message has started and its last fragment is yet to come.
    in_message: bool,
    /// The message passed the cap: the rest of it is dropped.
    skipping: bool,
    /// A control frame's payload.
    control: Vec<u8>,
    /// A close was sent: nothing more is read.
    closed: bool,
}

/// One decoded input, owned: a line (when it waits in the backlog; otherwise it is in
/// `message`), or what to send.
#[derive(Debug)]
enum Step {
    Line(Vec<u8>),
    TooLong,
    Reply(Vec<u8>),
    Close(Vec<u8>),
}

impl Step {
    fn len(&self) -> usize {
        match self {
            Step::Line(b) | Step::Reply(b) | Step::Close(b) => b.len(),
            Step::TooLong => 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Payload bytes still to come.
    left: u64,
    /// Payload bytes seen so far (the mask's position).
    seen: u64,
}

impl Decoder {
    pub fn new(max_line: usize) -> Decoder {
        Decoder {
            max_line,
            backlog: VecDeque::new(),
            lent: Vec::new(),
            header: [0; 14],
            header_len: 0,
            frame: None,
            message: Vec::new(),
            in_message: false,
            skipping: false,
            control: Vec::new(),
            closed: false,
        }
    }

    /// The server is closing the conversation: whether a close frame is still to be sent (it
    /// is not if the client's close is being answered, or the protocol was broken).
    pub fn close(&mut self) -> bool {
        !std::mem::replace(&mut self.closed, true)
    }

    /// Whether nothing is held: no frame half received, nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.header_len == 0 && self.frame.is_none() && !self.in_message && self.backlog.is_empty()
    }

    /// Whether a whole input waits for its turn (see [`Decoder::keep`]).
    pub fn has_line(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Bytes held for this client.
    pub fn held(&self) -> usize {
        let backlog: usize = self.backlog.iter().map(Step::len).sum();
        let buffers = self.message.len() + self.control.len() + self.lent.len();
        usize::from(self.header_len) + buffers + backlog
    }

    /// The next input: what waits from [`Decoder::keep`] first, then from `input`, advancing it
    /// past what was consumed; `None` when `input` is used up without completing anything.
    pub fn next<'s>(&'s mut self, input: &mut &[u8]) -> Option<Input<'s>> {
        let step = match self.backlog.pop_front() {
            Some(Step::Line(line)) => {
                self.lent = line;
                return Some(Input::Line(&self.lent));
            }
            Some(step) => step,
            None => self.step(input)?,
        };
        Some(match step {
            // The line is in `message`, lent out until the next text message starts.
            Step::Line(_) => Input::Line(&self.message),
            Step::TooLong => Input::TooLong,
            Step::Reply(bytes) => Input::Reply(bytes),
            Step::Close(bytes) => Input::Close(bytes),
        })
    }

    /// Hands back bytes the caller read but may not act on yet: they are decoded now (so that
    /// only whole inputs wait, each at most a line) and handed out, in order, by the next calls
    /// to [`Decoder::next`].
    pub fn keep(&mut self, mut rest: &[u8]) {
        while let Some(step) = self.step(&mut rest) {
            let step = match step {
                Step::Line(_) => Step::Line(self.message.clone()),
                other => other,
            };
            self.backlog.push_back(step);
        }
    }

    /// Decodes up to one input from `input`; a line is left in `message`.
    fn step(&mut self, input: &mut &[u8]) -> Option<Step> {
        loop {
            if self.closed {
                *input = &[];
                return None;
            }
            let Some(mut frame) = self.frame else {
                match self.read_header(input)? {
                    Ok(frame) => {
                        if let Some(close) = self.start(&frame) {
                            return Some(close);
                        }
                        self.frame = Some(frame);
                        continue;
                    }
                    Err(code) => return Some(self.fail(code)),
                }
            };
            // Payload: unmask what has come into the message or the control buffer.
            let take = usize::try_from(frame.left).map_or(input.len(), |l| l.min(input.len()));
            let (chunk, rest) = input.split_at(take);
            *input = rest;
            let control = frame.opcode >= OP_CLOSE;
            if control {
                unmask_into(&mut self.control, chunk, frame.mask, frame.seen);
            } else if !self.skipping {
                if self.message.len() + chunk.len() > self.max_line {
                    self.skipping = true;
                    self.message = Vec::new();
                } else {
                    unmask_into(&mut self.message, chunk, frame.mask, frame.seen);
                }
            }
            frame.left -= take as u64;
            frame.seen += take as u64;
            if frame.left > 0 {
                self.frame = Some(frame);
                return None; // the input is used up
            }
            self.frame = None;
            if control {
                match self.control_frame(frame.opcode) {
                    Some(answer) => return Some(answer),
                    None => continue,
                }
            }
            if !frame.fin {
                continue;
            }
            self.in_message = false;
            if std::mem::take(&mut self.skipping) {
                return Some(Step::TooLong);
            }
            if std::str::from_utf8(&self.message).is_err() {
                return Some(self.fail(status::INVALID_DATA));
            }
            return Some(Step::Line(Vec::new()));
        }
    }

    /// Collects header bytes; a whole header gives a frame, or the status to close with.
    fn read_header(&mut self, input: &mut &[u8]) -> Option<Result<Frame, u16>> {
        loop {
            let have = usize::from(self.header_len);
            let need = header_len(&self.header[..have]);
            if have >= need {
                break;
            }
            let (&byte, rest) = input.split_first()?;
            *input = rest;
            self.header[have] = byte;
            self.header_len += 1;
        }
        let h = self.header;
        self.header_len = 0;
        let (fin, rsv, opcode) = (h[0] & 0x80 != 0, h[0] & 0x70, h[0] & 0x0F);
        let masked = h[1] & 0x80 != 0;
        let (len, at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
                10,
            ),
            n => (u64::from(n), 2),
        };
        // Clients must mask (section 5.1); no extension was agreed, so no reserved bit.
        if !masked || rsv != 0 || len >> 63 != 0 {
            return Some(Err(status::PROTOCOL_ERROR));
        }
        let mask = h[at..at + 4].try_into().expect("4 bytes");
        Some(Ok(Frame {
            fin,
            opcode,
            mask,
            left: len,
            seen: 0,
        }))
    }

    /// Checks a frame against the state of the message; returns the close to send if it
    /// breaks the protocol.
    fn start(&mut self, frame: &Frame) -> Option<Step> {
        let code = match frame.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !frame.fin || frame.left > MAX_CONTROL as u64 {
                    Some(status::PROTOCOL_ERROR)
                } else {
                    self.control.clear();
                    None
                }
            }
            OP_TEXT if self.in_message => Some(status::PROTOCOL_ERROR),
            OP_TEXT => {
                self.message.clear();
                self.in_message = true;
                None
            }
            OP_CONTINUATION if !self.in_message => Some(status::PROTOCOL_ERROR),
            OP_CONTINUATION => None,
            OP_BINARY => Some(status::UNSUPPORTED_DATA),
            _ => Some(status::PROTOCOL_ERROR),
        };
        code.map(|code| self.fail(code))
    }

    /// A whole control frame: a ping is answered, a pong needs nothing, a close ends it.
    fn control_frame(&mut self, opcode: u8) -> Option<Step> {
        let payload = std::mem::take(&mut self.control);
        Some(match opcode {
            OP_PING => Step::Reply(encode(OP_PONG, &payload)),
            OP_PONG => return None,
            _ => {
                // A close: answer with the same status, or a normal close if none came; a
                // status no endpoint may send (section 7.4) breaks the protocol.
                let code = match payload.len() {
                    0 => status::NORMAL,
                    1 => return Some(self.fail(status::PROTOCOL_ERROR)),
                    _ => u16::from_be_bytes([payload[0], payload[1]]),
                };
                let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                if !sendable {
                    return Some(self.fail(status::PROTOCOL_ERROR));
                }
                self.closed = true;
                Step::Close(encode_close(code, ""))
            }
        })
    }

    /// Ends the conversation with a status.
    fn fail(&mut self, code: u16) -> Step {
        self.closed = true;
        self.message = Vec::new();
        self.control = Vec::new();
        Step::Close(encode_close(code, reason(code)))
    }
}

/// The length of a frame header, as far as its first bytes tell (2 until they are in).
fn header_len(start: &[u8]) -> usize {
    let Some(&second) = start.get(1) else {
        return 2;
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    match second & 0x7F {
        126 => 4 + mask,
        127 => 10 + mask,
        _ => 2 + mask,
    }
}

fn unmask_into(out: &mut Vec<u8>, chunk: &[u8], mask: [u8; 4], seen: u64) {
    let offset = (seen % 4) as usize;
    out.extend(
        chunk
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[(offset + i) % 4]),
    );
}

/// Why the server closes with a status, in the close frame.
fn reason(code: u16) -> &'static str {
    match code {
        status::UNSUPPORTED_DATA => "binary frames are not supported: send text",
        status::INVALID_DATA => "a text message must be UTF-8",
        status::GOING_AWAY => "server shutting down",
        _ => "protocol error",
    }
}

/// A frame from the server: never masked (section 5.1), always final.
fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    encode_into(opcode, payload, &mut out);
    out
}

/// [`encode`], appended to `out`.
fn encode_into(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A line (without its newline) as one text frame, appended to `out`: a broadcast frames it
/// once for all its WebSocket recipients.
pub fn encode_text(line: &[u8], out: &mut Vec<u8>) {
    encode_into(OP_TEXT, line, out);
}

/// A close frame with a status and a reason.
pub fn encode_close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    encode(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's frame: masked, as clients must.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Everything the decoder makes of `bytes` fed `step` bytes at a time, owned.
    fn decode(max_line: usize, bytes: &[u8], step: usize) -> Vec<Owned> {
        let mut d = Decoder::new(max_line);
        let mut got = Vec::new();
        for chunk in bytes.chunks(step.max(1)) {
            let mut input = chunk;
            while let Some(i) = d.next(&mut input) {
                got.push(Owned::from(i));
            }
            assert!(input.is_empty());
        }
        got
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Line(String),
        TooLong,
        Reply(Vec<u8>),
        Close(u16),
    }

    impl From<Input<'_>> for Owned {
        fn from(i: Input<'_>) -> Owned {
            match i {
                Input::Line(l) => Owned::Line(String::from_utf8(l.to_vec()).unwrap()),
                Input::TooLong => Owned::TooLong,
                Input::Reply(r) => Owned::Reply(r),
                Input::Close(c) => Owned::Close(u16::from_be_bytes([c[2], c[3]])),
            }
        }
    }

    fn every_step(max_line: usize, bytes: &[u8]) -> Vec<Owned> {
        let whole = decode(max_line, bytes, bytes.len());
        for step in 1..8 {
            assert_eq!(decode(max_line, bytes, step), whole, "fed {step} at a time");
        }
        whole
    }

    #[test]
    fn text_messages_are_lines_however_the_bytes_come() {
        let mut bytes = client_frame(true, OP_TEXT, "hola ñ".as_bytes());
        bytes.extend(client_frame(true, OP_TEXT, b""));
        bytes.extend(client_frame(true, OP_TEXT, &[b'x'; 200]));
        assert_eq!(
            every_step(200, &bytes),
            [
                Owned::Line("hola ñ".into()),
                Owned::Line(String::new()),
                Owned::Line("x".repeat(200))
            ]
        );
    }

    #[test]
    fn fragments_make_one_message_and_controls_may_come_between() {
        let mut bytes = client_frame(false, OP_TEXT, b"hel");
        bytes.extend(client_frame(true, OP_PING, b"are you there"));
        bytes.extend(client_frame(false, OP_CONTINUATION, b"lo "));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"world"));
        assert_eq!(
            every_step(200, &bytes),
            [
                Owned::Reply(encode(OP_PONG, b"are you there")),
                Owned::Line("hello world".into())
            ]
        );
    }

    #[test]
    fn a_message_over_the_cap_is_skipped_without_being_kept() {
        let mut bytes = client_frame(true, OP_TEXT, &vec![b'a'; 70_000]);
        bytes.extend(client_frame(true, OP_TEXT, b"after"));
        let mut d = Decoder::new(200);
        let mut input = &bytes[..];
        assert_eq!(d.next(&mut input), Some(Input::TooLong));
        assert!(d.held() == 0);
        assert_eq!(d.next(&mut input), Some(Input::Line(b"after")));
        // Over the cap across fragments too.
        let mut bytes = client_frame(false, OP_TEXT, &[b'a'; 150]);
        bytes.extend(client_frame(true, OP_CONTINUATION, &[b'a'; 51]));
        assert_eq!(every_step(200, &bytes), [Owned::TooLong]);
    }

    #[test]
    fn close_is_answered_with_its_status() {
        let mut payload = 1001u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut bytes = client_frame(true, OP_CLOSE, &payload);
        bytes.extend(client_frame(true, OP_TEXT, b"never read"));
        assert_eq!(every_step(200, &bytes), [Owned::Close(1001)]);
        assert_eq!(
            every_step(200, &client_frame(true, OP_CLOSE, b"")),
            [Owned::Close(status::NORMAL)]
        );
        for forbidden in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
            let frame = client_frame(true, OP_CLOSE, &forbidden.to_be_bytes());
            assert_eq!(every_step(200, &frame), [Owned::Close(1002)], "{forbidden}");
        }
        assert_eq!(
            every_step(200, &client_frame(true, OP_CLOSE, b"x")),
            [Owned::Close(1002)],
            "a one-byte status"
        );
    }

    #[test]
    fn what_breaks_the_protocol_is_closed_with_the_rfc_status() {
        let unmasked = [0x81, 0x02, b'h', b'i'];
        assert_eq!(every_step(200, &unmasked), [Owned::Close(1002)]);
        assert_eq!(
            every_step(200, &client_frame(true, OP_BINARY, b"\x00\x01")),
            [Owned::Close(1003)]
        );
        assert_eq!(
            every_step(200, &client_frame(true, OP_TEXT, b"\xff\xfe")),
            [Owned::Close(1007)]
        );
        let mut rsv = client_frame(true, OP_TEXT, b"x");
        rsv[0] |= 0x40;
        assert_eq!(every_step(200, &rsv), [Owned::Close(1002)]);
        assert_eq!(
            every_step(200, &client_frame(true, OP_CONTINUATION, b"x")),
            [Owned::Close(1002)],
            "a continuation with nothing to continue"
        );
        let mut twice = client_frame(false, OP_TEXT, b"a");
        twice.extend(client_frame(true, OP_TEXT, b"b"));
        assert_eq!(every_step(200, &twice), [Owned::Close(1002)]);
        assert_eq!(
            every_step(200, &client_frame(false, OP_PING, b"x")),
            [Owned::Close(1002)],
            "a fragmented control frame"
        );
        assert_eq!(
            every_step(200, &client_frame(true, OP_PING, &[0; 126])),
            [Owned::Close(1002)],
            "a control frame over 125 bytes"
        );
        assert_eq!(
            every_step(200, &client_frame(true, 0x3, b"")),
            [Owned::Close(1002)],
            "a reserved opcode"
        );
    }

    #[test]
    fn bytes_handed_back_wait_decoded_and_come_first() {
        let mut d = Decoder::new(200);
        let mut bytes = client_frame(true, OP_TEXT, b"one");
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_TEXT, b"two"));
        let half = client_frame(true, OP_TEXT, b"three");
        bytes.extend(&half[..4]);
        d.keep(&bytes);
        assert!(d.has_line() && !d.is_empty());
        let mut rest = &half[4..];
        assert_eq!(d.next(&mut rest), Some(Input::Line(b"one")));
        assert_eq!(d.next(&mut rest), Some(Input::Reply(encode(OP_PONG, b"p"))));
        assert_eq!(d.next(&mut rest), Some(Input::Line(b"two")));
        assert!(!d.has_line());
        assert_eq!(d.next(&mut rest), Some(Input::Line(b"three")));
        assert!(d.is_empty() && rest.is_empty());
        let mut pong = &client_frame(true, OP_PONG, b"late")[..];
        assert_eq!(d.next(&mut pong), None, "a pong needs nothing");
    }

    /// Found by the engine fuzz target: a line waiting in the backlog was lent out in the
    /// buffer of a message still arriving, whose rest was then appended to it.
    #[test]
    fn a_waiting_line_does_not_disturb_a_message_half_received() {
        let mut d = Decoder::new(200);
        let next = client_frame(true, OP_TEXT, b"#105.");
        let mut bytes = client_frame(true, OP_TEXT, b"#104.");
        bytes.extend_from_slice(&next[..8]);
        d.keep(&bytes);
        let mut rest = &next[8..];
        assert_eq!(d.next(&mut rest), Some(Input::Line(b"#104.")));
        assert_eq!(d.next(&mut rest), Some(Input::Line(b"#105.")));
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        let mut out = Vec::new();
        encode_text(b"hi", &mut out);
        assert_eq!(out, [0x81, 0x02, b'h', b'i']);
        let mut out = Vec::new();
        encode_text(&[b'x'; 300], &mut out);
        assert_eq!(&out[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(out.len(), 304);
        assert_eq!(
            encode_close(1003, "no"),
            [0x88, 0x04, 0x03, 0xeb, b'n', b'o']
        );
    }
}
