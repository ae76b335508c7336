//! A small WebSocket client (RFC 6455) for loopchat's tests and load generator: the opening
//! handshake (request bytes, and the check of the server's `101` with its accept key), masked
//! client frames of any opcode, a decoder of server frames that takes its input in pieces of any
//! size, and a blocking client over [`std::net::TcpStream`] whose every wait has a deadline.
//!
//! Strict about what a server may send, so that tests catch a server that breaks the RFC: a
//! server frame that is masked, sets a reserved bit, has an unknown opcode, a length not in its
//! shortest form, or is a fragmented or over-long control frame is an error ([`FrameError`]).
//! No extension and no subprotocol is ever offered.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// RFC 6455, section 1.3: what the accept key is made with.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The most a control frame may carry (section 5.5).
pub const MAX_CONTROL: usize = 125;

/// The largest server frame a [`FrameDecoder`] takes by default: loopchat's lines are at most a
/// few KiB, so anything near this is a broken length.
pub const MAX_FRAME: u64 = 16 << 20;

/// How long [`connect_ws`] waits for the connection and for the handshake's answer.
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

/// Opcodes (section 5.2).
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Close status codes (section 7.4.1) that loopchat uses.
pub mod status {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
}

// ---- Randomness -------------------------------------------------------------------------------

thread_local! {
    /// xorshift64* state, seeded from the standard library's per-process random keys.
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(Instant::now()) | 1);
}

/// A random number: not for cryptography, only for keys and masks that must not be constant
/// (section 10.3 asks for unpredictable masks; a test client only needs them to vary).
pub fn random_u64() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A fresh masking key.
pub fn random_mask() -> [u8; 4] {
    (random_u64() as u32).to_ne_bytes()
}

// ---- The handshake ----------------------------------------------------------------------------

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (section 4.1).
pub fn random_key() -> String {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&random_u64().to_ne_bytes());
    nonce[8..].copy_from_slice(&random_u64().to_ne_bytes());
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with (section 4.2.2).
pub fn accept_key(key: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{key}{GUID}")).digest();
    base64::engine::general_purpose::STANDARD.encode(digest.bytes())
}

/// The opening handshake's request for `GET /` on `host` (`127.0.0.1:1234`), with an
/// `Origin` header if one is given (as a browser sends).
pub fn handshake_request(host: &str, key: &str, origin: Option<&str>) -> Vec<u8> {
    let mut request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// An HTTP response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// The status line, without its CRLF.
    pub status_line: String,
    /// Names lowercased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// Bytes of the head, its blank line included: what follows is the body, or frames.
    pub len: usize,
}

impl ResponseHead {
    /// The first header of this name (any case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header holds this token, regardless of case.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    /// No whole answer in time.
    Timeout {
        got: Vec<u8>,
    },
    /// The server closed before its answer was whole.
    Closed {
        got: Vec<u8>,
    },
    /// The answer is not an HTTP response.
    Malformed(String),
    /// An answer other than `101 Switching Protocols`: the head, and the body that came with it
    /// before the server closed (or the wait ran out).
    Refused {
        head: ResponseHead,
        body: Vec<u8>,
    },
    /// A `101` that does not complete the handshake (wrong accept key, missing headers, an
    /// extension or subprotocol that was not asked for).
    BadUpgrade(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "handshake: {e}"),
            HandshakeError::Timeout { got } => write!(
                f,
                "handshake: no whole answer in time, got {:?}",
                String::from_utf8_lossy(got)
            ),
            HandshakeError::Closed { got } => write!(
                f,
                "handshake: closed before a whole answer, got {:?}",
                String::from_utf8_lossy(got)
            ),
            HandshakeError::Malformed(why) => write!(f, "handshake: malformed answer: {why}"),
            HandshakeError::Refused { head, body } => write!(
                f,
                "handshake refused: {} {:?}",
                head.status_line,
                String::from_utf8_lossy(body)
            ),
            HandshakeError::BadUpgrade(why) => write!(f, "handshake: bad upgrade: {why}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> HandshakeError {
        HandshakeError::Io(e)
    }
}

/// Parses a response head at the start of `buf`: `None` until its blank line is in.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, HandshakeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end])
        .map_err(|_| HandshakeError::Malformed("head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(HandshakeError::Malformed(format!(
            "status line {status_line:?}"
        )));
    }
    let status = code
        .parse()
        .map_err(|_| HandshakeError::Malformed(format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HandshakeError::Malformed(format!("header line {line:?}")));
        };
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(HandshakeError::Malformed(format!("header name {name:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Some(ResponseHead {
        status,
        status_line: status_line.to_owned(),
        headers,
        len: end + 4,
    }))
}

/// Checks that a `101` completes the handshake opened with `key` (section 4.1, the client's
/// checks of the server's answer).
pub fn check_upgrade(head: &ResponseHead, key: &str) -> Result<(), HandshakeError> {
    let bad = |why: String| Err(HandshakeError::BadUpgrade(why));
    if head.status != 101 {
        return bad(format!("status {}", head.status_line));
    }
    if !head
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    {
        return bad(format!("Upgrade: {:?}", head.header("upgrade")));
    }
    if !head.has_token("connection", "upgrade") {
        return bad(format!("Connection: {:?}", head.header("connection")));
    }
    let want = accept_key(key);
    match head.header("sec-websocket-accept") {
        Some(got) if got == want => {}
        got => return bad(format!("Sec-WebSocket-Accept {got:?}, want {want:?}")),
    }
    for unasked in ["sec-websocket-extensions", "sec-websocket-protocol"] {
        if let Some(v) = head.header(unasked) {
            return bad(format!("{unasked}: {v:?} was not asked for"));
        }
    }
    Ok(())
}

// ---- Frames -----------------------------------------------------------------------------------

/// Appends a frame header: `mask` is `Some` for a client's frame (section 5.3), `len` the
/// payload's length, written in its shortest form.
pub fn encode_header(fin: bool, opcode: u8, mask: Option<[u8; 4]>, len: u64, out: &mut Vec<u8>) {
    out.push((u8::from(fin) << 7) | (opcode & 0x0F));
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(masked | len as u8),
        126..=0xFFFF => {
            out.push(masked | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(masked | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// XORs `bytes` with the mask, as if they started `offset` bytes into the payload (masking and
/// unmasking are the same operation).
pub fn apply_mask(bytes: &mut [u8], mask: [u8; 4], offset: u64) {
    let at = (offset % 4) as usize;
    for (i, b) in bytes.iter_mut().enumerate() {
        *b ^= mask[(at + i) % 4];
    }
}

/// Appends a whole frame; masked with `mask` if one is given.
pub fn encode_frame_into(
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    encode_header(fin, opcode, mask, payload.len() as u64, out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask, 0);
    }
}

/// A whole frame; masked with `mask` if one is given.
pub fn encode_frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    encode_frame_into(fin, opcode, mask, payload, &mut out);
    out
}

/// A client's frame as a client must send it: masked with a fresh random key.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, opcode, Some(random_mask()), payload)
}

/// A close frame's payload: the status (if any) and a reason.
pub fn close_payload(code: Option<u16>, reason: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
    }
    payload
}

/// A frame from the server, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The payload as text, if this is a text frame and it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        (self.opcode == op::TEXT)
            .then(|| std::str::from_utf8(&self.payload).ok())
            .flatten()
    }

    /// A close frame's status; `None` for a close without one, or another frame.
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload.get(..2)) {
            (op::CLOSE, Some(&[a, b])) => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }

    /// A close frame's reason (empty if none).
    pub fn close_reason(&self) -> String {
        match self.payload.get(2..) {
            Some(reason) if self.opcode == op::CLOSE => String::from_utf8_lossy(reason).into(),
            _ => String::new(),
        }
    }
}

/// A frame at the start of a buffer, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    pub fin: bool,
    pub opcode: u8,
    /// Unmasked (a server's frames are never masked).
    pub payload: &'a [u8],
}

impl FrameRef<'_> {
    pub fn to_frame(&self) -> Frame {
        Frame {
            fin: self.fin,
            opcode: self.opcode,
            payload: self.payload.to_vec(),
        }
    }
}

/// How a server's frame breaks the RFC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A server must not mask (section 5.1).
    Masked,
    /// A reserved bit is set with no extension agreed (section 5.2).
    Reserved(u8),
    UnknownOpcode(u8),
    /// The length is not in its shortest form (section 5.2), or its top bit is set.
    BadLength(u64),
    /// Longer than the decoder takes.
    TooLong(u64),
    /// A control frame that is fragmented or carries more than 125 bytes (section 5.5).
    BadControl {
        opcode: u8,
        fin: bool,
        len: u64,
    },
    /// A close payload of one byte, or with a reason that is not UTF-8 (section 5.5.1).
    BadClose(Vec<u8>),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server frame breaks RFC 6455: {self:?}")
    }
}

impl std::error::Error for FrameError {}

/// Parses the frame at the start of `buf` if it is whole: the frame and the bytes it takes.
/// `Ok(None)` means more bytes are needed; a header that breaks the RFC is an error as soon as
/// it is whole, before its payload has come. `max` bounds the payload's length.
pub fn parse_frame(buf: &[u8], max: u64) -> Result<Option<(FrameRef<'_>, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let (fin, rsv, opcode) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0F);
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    if rsv != 0 {
        return Err(FrameError::Reserved(rsv >> 4));
    }
    if !matches!(
        opcode,
        op::CONTINUATION | op::TEXT | op::BINARY | op::CLOSE | op::PING | op::PONG
    ) {
        return Err(FrameError::UnknownOpcode(opcode));
    }
    let (len, at) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes([b[0], b[1]]));
            if len < 126 {
                return Err(FrameError::BadLength(len));
            }
            (len, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
            if len <= 0xFFFF || len >> 63 != 0 {
                return Err(FrameError::BadLength(len));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode >= op::CLOSE && (!fin || len > MAX_CONTROL as u64) {
        return Err(FrameError::BadControl { opcode, fin, len });
    }
    if len > max {
        return Err(FrameError::TooLong(len));
    }
    let end = at + len as usize;
    let Some(payload) = buf.get(at..end) else {
        return Ok(None);
    };
    if opcode == op::CLOSE
        && (payload.len() == 1 || std::str::from_utf8(payload.get(2..).unwrap_or(&[])).is_err())
    {
        return Err(FrameError::BadClose(payload.to_vec()));
    }
    Ok(Some((
        FrameRef {
            fin,
            opcode,
            payload,
        },
        end,
    )))
}

/// Decodes a server's frames from input that comes in pieces of any size.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    start: usize,
    max: u64,
}

impl Default for FrameDecoder {
    fn default() -> FrameDecoder {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_max(MAX_FRAME)
    }

    /// A decoder that refuses frames over `max` bytes of payload.
    pub fn with_max(max: u64) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Hands the decoder bytes that arrived.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, or `None` until more bytes come. After an error the decoder is
    /// stuck at the bad frame: the stream cannot be trusted any more.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        Ok(self.next_ref()?.map(|f| f.to_frame()))
    }

    /// Like [`FrameDecoder::next_frame`], without copying the payload.
    pub fn next_ref(&mut self) -> Result<Option<FrameRef<'_>>, FrameError> {
        match parse_frame(&self.buf[self.start..], self.max)? {
            None => Ok(None),
            Some((_, used)) => {
                let at = self.start;
                self.start += used;
                // Parsed again to lend it out past the update of `start` (a few comparisons).
                let (frame, _) = parse_frame(&self.buf[at..], self.max)?.expect("whole frame");
                Ok(Some(frame))
            }
        }
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

// ---- A blocking client ------------------------------------------------------------------------

/// Why no frame could be read.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing whole arrived in time; what is buffered stays for the next read.
    Timeout,
    /// The server closed the TCP connection (end of stream).
    Closed,
    /// The connection failed (a reset, for one).
    Io(io::Error),
    /// The server sent a frame that breaks the RFC.
    Protocol(FrameError),
}

impl ReadError {
    /// Whether the connection is over: closed, reset, or otherwise failed.
    pub fn is_closed(&self) -> bool {
        matches!(self, ReadError::Closed | ReadError::Io(_))
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Timeout => write!(f, "no frame in time"),
            ReadError::Closed => write!(f, "the server closed the connection"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// A WebSocket client over a blocking [`TcpStream`], after a successful handshake.
pub struct WsClient {
    pub stream: TcpStream,
    decoder: FrameDecoder,
    /// The server's `101` answer.
    pub response: ResponseHead,
}

/// Connects to a chat server and opens a WebSocket, with no `Origin` (as a non-browser client).
pub fn connect_ws(addr: SocketAddr) -> Result<WsClient, HandshakeError> {
    connect_ws_with(addr, None)
}

/// Connects and opens a WebSocket with this `Origin`, as a browser's page would.
pub fn connect_ws_with(addr: SocketAddr, origin: Option<&str>) -> Result<WsClient, HandshakeError> {
    let stream = TcpStream::connect_timeout(&addr, HANDSHAKE_WAIT)?;
    stream.set_nodelay(true)?;
    WsClient::handshake(stream, &addr.to_string(), origin, HANDSHAKE_WAIT)
}

impl WsClient {
    /// Sends the handshake for `host` on `stream` and waits at most `wait` for its answer.
    pub fn handshake(
        stream: TcpStream,
        host: &str,
        origin: Option<&str>,
        wait: Duration,
    ) -> Result<WsClient, HandshakeError> {
        let key = random_key();
        WsClient::handshake_raw(stream, &handshake_request(host, &key, origin), &key, wait)
    }

    /// Sends `request` (a handshake made with `key`, with anything after it: frames sent at
    /// once) and waits at most `wait` for the answer.
    pub fn handshake_raw(
        mut stream: TcpStream,
        request: &[u8],
        key: &str,
        wait: Duration,
    ) -> Result<WsClient, HandshakeError> {
        let deadline = Instant::now() + wait;
        stream.set_write_timeout(Some(wait))?;
        stream.write_all(request)?;
        let mut got = Vec::new();
        let head = loop {
            if let Some(head) = parse_response_head(&got)? {
                break head;
            }
            match read_some(&mut stream, deadline, &mut got) {
                Ok(()) => {}
                Err(ReadError::Timeout) => return Err(HandshakeError::Timeout { got }),
                Err(ReadError::Closed) => return Err(HandshakeError::Closed { got }),
                Err(ReadError::Io(e)) => return Err(HandshakeError::Io(e)),
                Err(ReadError::Protocol(_)) => unreachable!("no frames read yet"),
            }
        };
        if head.status != 101 {
            // The body comes with it and the server closes: collect what arrives in time.
            let mut body = got[head.len..].to_vec();
            while read_some(&mut stream, deadline, &mut body).is_ok() {}
            return Err(HandshakeError::Refused { head, body });
        }
        check_upgrade(&head, key)?;
        let mut decoder = FrameDecoder::new();
        decoder.feed(&got[head.len..]);
        Ok(WsClient {
            stream,
            decoder,
            response: head,
        })
    }

    /// Sends one text message, as one masked frame.
    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(&client_frame(true, op::TEXT, text.as_bytes()))
    }

    /// Sends bytes as they are: frames made with [`client_frame`] or [`encode_frame`], broken
    /// ones, pieces of one.
    pub fn send_frame(&mut self, raw: &[u8]) -> io::Result<()> {
        self.stream.write_all(raw)
    }

    /// Sends a ping with this payload.
    pub fn send_ping(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_frame(&client_frame(true, op::PING, payload))
    }

    /// Sends a close with this status (none if `None`) and reason.
    pub fn send_close(&mut self, code: Option<u16>, reason: &str) -> io::Result<()> {
        self.send_frame(&client_frame(true, op::CLOSE, &close_payload(code, reason)))
    }

    /// The next frame from the server, waiting at most `wait`.
    pub fn read_frame(&mut self, wait: Duration) -> Result<Frame, ReadError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(ReadError::Protocol)? {
                return Ok(frame);
            }
            let mut chunk = Vec::new();
            read_some(&mut self.stream, deadline, &mut chunk)?;
            self.decoder.feed(&chunk);
        }
    }

    /// The next text frame's payload: one line the server sent, without its newline. Panics
    /// (saying what came instead) on anything else within `wait`: another frame, a fragment,
    /// the end of the connection.
    pub fn read_text_line(&mut self, wait: Duration) -> String {
        match self.read_frame(wait) {
            Ok(frame) if frame.opcode == op::TEXT && frame.fin => frame
                .text()
                .unwrap_or_else(|| panic!("text frame is not UTF-8: {:?}", frame.payload))
                .to_owned(),
            Ok(frame) => panic!("wanted a whole text frame, got {}", describe(&frame)),
            Err(e) => panic!("wanted a text frame within {wait:?}: {e}"),
        }
    }

    /// The next text line, or `None` if no frame arrives within `wait`; panics on another frame
    /// or the end of the connection.
    pub fn try_text_line(&mut self, wait: Duration) -> Option<String> {
        match self.read_frame(wait) {
            Err(ReadError::Timeout) => None,
            Ok(frame) if frame.opcode == op::TEXT && frame.fin => frame.text().map(str::to_owned),
            Ok(frame) => panic!("wanted a whole text frame, got {}", describe(&frame)),
            Err(e) => panic!("wanted a text frame: {e}"),
        }
    }

    /// Reads text lines until the server's close frame, which must carry `code`, and then the
    /// end of the TCP connection, all within `wait`. Returns the lines read before the close.
    /// Panics if anything else comes, or the close does not.
    pub fn expect_close(&mut self, code: u16, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut lines = Vec::new();
        let close = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(frame) if frame.opcode == op::CLOSE => break frame,
                Ok(frame) if frame.opcode == op::TEXT && frame.fin => {
                    lines.push(String::from_utf8_lossy(&frame.payload).into_owned());
                }
                Ok(frame) => panic!(
                    "wanted a close {code}, got {} (after lines {lines:?})",
                    describe(&frame)
                ),
                Err(e) => panic!("wanted a close {code}: {e} (after lines {lines:?})"),
            }
        };
        assert_eq!(
            close.close_code(),
            Some(code),
            "close frame {:?} (reason {:?}) after lines {lines:?}",
            close.payload,
            close.close_reason()
        );
        let left = deadline.saturating_duration_since(Instant::now());
        match self.read_frame(left) {
            Err(e) if e.is_closed() => {}
            Ok(frame) => panic!("a frame after the close: {}", describe(&frame)),
            Err(e) => panic!("the server did not close the connection after its close: {e}"),
        }
        lines
    }

    /// Reads until the server closes the TCP connection (or it is reset), within `wait`;
    /// returns the frames read meanwhile. Panics if it stays open.
    pub fn read_to_close(&mut self, wait: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(frame) => frames.push(frame),
                Err(e) if e.is_closed() => return frames,
                Err(e) => panic!("the server did not close: {e}; frames {frames:?}"),
            }
        }
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }
}

/// A frame as a test failure shows it.
pub fn describe(frame: &Frame) -> String {
    let kind = match frame.opcode {
        op::CONTINUATION => "continuation",
        op::TEXT => "text",
        op::BINARY => "binary",
        op::CLOSE => "close",
        op::PING => "ping",
        op::PONG => "pong",
        _ => "unknown",
    };
    let fin = if frame.fin { "" } else { " (not final)" };
    match frame.opcode {
        op::CLOSE => format!(
            "close {:?} {:?}{fin}",
            frame.close_code(),
            frame.close_reason()
        ),
        _ => format!(
            "{kind} frame {:?}{fin}",
            String::from_utf8_lossy(&frame.payload)
        ),
    }
}

/// Reads once into `out`, waiting until `deadline` at most.
fn read_some(
    stream: &mut TcpStream,
    deadline: Instant,
    out: &mut Vec<u8>,
) -> Result<(), ReadError> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => {
                out.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A server's frame, as loopchat writes it: unmasked, final.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        encode_frame(true, opcode, None, payload)
    }

    /// Every frame decoded from `bytes` fed `step` bytes at a time.
    fn decode(bytes: &[u8], step: usize) -> Result<Vec<Frame>, FrameError> {
        let mut d = FrameDecoder::new();
        let mut frames = Vec::new();
        for chunk in bytes.chunks(step.max(1)) {
            d.feed(chunk);
            while let Some(f) = d.next_frame()? {
                frames.push(f);
            }
        }
        assert_eq!(d.buffered(), 0, "bytes left undecoded");
        Ok(frames)
    }

    #[test]
    fn the_accept_key_of_the_rfc() {
        // RFC 6455, section 1.3.
        assert_eq!(accept_key(RFC_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn keys_and_masks_are_random() {
        let (a, b) = (random_key(), random_key());
        assert_ne!(a, b);
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(nonce.len(), 16);
        assert_ne!(random_mask(), random_mask());
    }

    #[test]
    fn the_request_has_what_the_rfc_asks() {
        let req = String::from_utf8(handshake_request("127.0.0.1:1234", RFC_KEY, None)).unwrap();
        assert!(req.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1:1234\r\n"));
        for header in [
            "Upgrade: websocket\r\n",
            "Connection: Upgrade\r\n",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "Sec-WebSocket-Version: 13\r\n",
        ] {
            assert!(req.contains(header), "{header:?} missing from {req:?}");
        }
        assert!(req.ends_with("\r\n\r\n") && !req.contains("Origin"));
        let req = handshake_request("h", RFC_KEY, Some("https://x.example"));
        assert!(
            String::from_utf8(req)
                .unwrap()
                .contains("\r\nOrigin: https://x.example\r\n")
        );
    }

    #[test]
    fn the_answer_is_checked() {
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n\x01\x02hi",
            accept_key(RFC_KEY)
        );
        // Not whole until its blank line.
        for cut in 0..good.len() - 4 {
            assert_eq!(parse_response_head(&good.as_bytes()[..cut]).unwrap(), None);
        }
        let head = parse_response_head(good.as_bytes()).unwrap().unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(&good.as_bytes()[head.len..], b"\x01\x02hi");
        assert_eq!(
            head.header("SEC-WEBSOCKET-ACCEPT"),
            Some(accept_key(RFC_KEY).as_str())
        );
        check_upgrade(&head, RFC_KEY).unwrap();
        assert!(matches!(
            check_upgrade(&head, "AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(HandshakeError::BadUpgrade(_))
        ));
        let ext = good.replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        );
        let head = parse_response_head(ext.as_bytes()).unwrap().unwrap();
        assert!(
            check_upgrade(&head, RFC_KEY).is_err(),
            "an extension not asked for"
        );
        let refused = b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\r\nbody";
        let head = parse_response_head(refused).unwrap().unwrap();
        assert_eq!(
            (head.status, head.header("sec-websocket-version")),
            (426, Some("13"))
        );
        assert!(check_upgrade(&head, RFC_KEY).is_err());
        assert!(parse_response_head(b"[SERVER] Error: no\r\n\r\n").is_err());
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
    }

    #[test]
    fn client_frames_are_masked_with_the_shortest_length() {
        let mask = [1, 2, 3, 4];
        let f = encode_frame(true, op::TEXT, Some(mask), b"hi");
        assert_eq!(f, [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        for (len, header) in [(125, 2), (126, 4), (0xFFFF, 4), (0x10000, 10)] {
            let f = encode_frame(false, op::CONTINUATION, Some(mask), &vec![b'a'; len]);
            assert_eq!(f.len(), header + 4 + len, "length {len}");
            assert_eq!(f[0], 0x00, "not final, continuation");
            assert_eq!(f[1] & 0x80, 0x80, "masked");
            let mut payload = f[header + 4..].to_vec();
            apply_mask(&mut payload, mask, 0);
            assert!(payload.iter().all(|&b| b == b'a'));
        }
        // Masking in pieces is masking at once.
        let mut whole = b"hello world".to_vec();
        apply_mask(&mut whole, mask, 0);
        let mut pieces = b"hello world".to_vec();
        let (a, b) = pieces.split_at_mut(5);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 5);
        assert_eq!(whole, pieces);
        let f = client_frame(true, op::CLOSE, &close_payload(Some(1000), "bye"));
        assert_eq!((f[0], f[1]), (0x88, 0x80 | 5));
        assert_eq!(close_payload(None, "ignored"), b"");
    }

    #[test]
    fn server_frames_decode_however_the_bytes_come() {
        let mut bytes = server_frame(op::TEXT, "hola ñ".as_bytes());
        bytes.extend(server_frame(op::TEXT, b""));
        bytes.extend(server_frame(op::TEXT, &[b'x'; 300]));
        bytes.extend(server_frame(op::TEXT, &vec![b'y'; 70_000]));
        bytes.extend(server_frame(op::PONG, b"p"));
        bytes.extend(server_frame(op::PING, b""));
        bytes.extend(server_frame(
            op::CLOSE,
            &close_payload(Some(1001), "shutting down"),
        ));
        let whole = decode(&bytes, bytes.len()).unwrap();
        assert_eq!(whole.len(), 7);
        assert_eq!(whole[0].text(), Some("hola ñ"));
        assert_eq!(whole[1].text(), Some(""));
        assert_eq!(whole[2].payload.len(), 300);
        assert_eq!(whole[3].payload.len(), 70_000);
        assert_eq!(
            (whole[4].opcode, &whole[4].payload[..]),
            (op::PONG, &b"p"[..])
        );
        assert_eq!(whole[5].opcode, op::PING);
        assert_eq!(whole[6].close_code(), Some(1001));
        assert_eq!(whole[6].close_reason(), "shutting down");
        for step in [1, 2, 3, 7, 100, 4096] {
            assert_eq!(decode(&bytes, step).unwrap(), whole, "fed {step} at a time");
        }
        let close = decode(&server_frame(op::CLOSE, b""), 1).unwrap();
        assert_eq!(close[0].close_code(), None);
    }

    #[test]
    fn server_frames_that_break_the_rfc_are_errors() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (
                encode_frame(true, op::TEXT, Some([1, 2, 3, 4]), b"x"),
                FrameError::Masked,
            ),
            (vec![0xC1, 0x00], FrameError::Reserved(4)),
            (vec![0x83, 0x00], FrameError::UnknownOpcode(3)),
            (vec![0x81, 126, 0x00, 0x05], FrameError::BadLength(5)),
            (
                vec![0x81, 127, 0, 0, 0, 0, 0, 0, 0x01, 0x00],
                FrameError::BadLength(256),
            ),
            (
                vec![0x81, 127, 0x80, 0, 0, 0, 0, 1, 0, 0],
                FrameError::BadLength(0x8000_0000_0001_0000),
            ),
            (
                vec![0x81, 127, 0, 0, 0, 0, 0x10, 0, 0, 0],
                FrameError::TooLong(0x1000_0000),
            ),
            (
                vec![0x09, 0x00],
                FrameError::BadControl {
                    opcode: op::PING,
                    fin: false,
                    len: 0,
                },
            ),
            (
                vec![0x88, 126, 0x00, 126],
                FrameError::BadControl {
                    opcode: op::CLOSE,
                    fin: true,
                    len: 126,
                },
            ),
            (vec![0x88, 0x01, 0x03], FrameError::BadClose(vec![0x03])),
            (
                vec![0x88, 0x03, 0x03, 0xe8, 0xff],
                FrameError::BadClose(vec![0x03, 0xe8, 0xff]),
            ),
        ];
        for (bytes, want) in cases {
            for step in [1, bytes.len()] {
                assert_eq!(
                    decode(&bytes, step).map(|_| ()),
                    Err(want.clone()),
                    "{bytes:?}"
                );
            }
        }
        // The header alone is enough to tell.
        let mut d = FrameDecoder::with_max(10);
        d.feed(&[0x81, 126, 0x01, 0x00]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(256)));
    }

    #[test]
    fn the_decoder_lends_frames_and_keeps_only_what_is_undecoded() {
        let mut d = FrameDecoder::new();
        let one = server_frame(op::TEXT, b"one");
        let two = server_frame(op::TEXT, b"two");
        d.feed(&one);
        d.feed(&two[..3]);
        assert_eq!(d.next_ref().unwrap().unwrap().payload, b"one");
        assert_eq!(d.next_ref().unwrap(), None);
        assert_eq!(d.buffered(), 3);
        d.feed(&two[3..]);
        assert_eq!(d.next_ref().unwrap().unwrap().payload, b"two");
        assert_eq!(d.buffered(), 0);
        assert!(d.buf.len() <= one.len() + two.len());
    }

    /// A one-connection server on a thread that plays `script` with the client.
    fn serve(script: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(HANDSHAKE_WAIT)).unwrap();
            script(stream);
        });
        addr
    }

    /// Reads a request head; returns its key.
    fn read_request(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1);
            got.push(byte[0]);
        }
        let text = String::from_utf8(got).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn the_blocking_client_against_a_scripted_server() {
        let addr = serve(|mut s| {
            let key = read_request(&mut s);
            let mut answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(&key)
            )
            .into_bytes();
            // The first line in the same write as the answer.
            answer.extend(server_frame(op::TEXT, b"welcome"));
            s.write_all(&answer).unwrap();
            // Echo the client's text frame, then answer its close; a frame a byte at a time.
            let mut head = [0u8; 6];
            s.read_exact(&mut head).unwrap();
            assert_eq!(head[0], 0x81);
            assert_eq!(head[1] & 0x80, 0x80, "the client masks");
            let mut payload = vec![0u8; usize::from(head[1] & 0x7F)];
            s.read_exact(&mut payload).unwrap();
            apply_mask(&mut payload, head[2..6].try_into().unwrap(), 0);
            for b in server_frame(op::TEXT, &payload) {
                s.write_all(&[b]).unwrap();
            }
            let mut close = [0u8; 8];
            s.read_exact(&mut close).unwrap();
            s.write_all(&server_frame(op::CLOSE, &close_payload(Some(4000), "")))
                .unwrap();
        });
        let mut ws = connect_ws(addr).unwrap();
        assert_eq!(ws.response.status, 101);
        assert_eq!(ws.read_text_line(HANDSHAKE_WAIT), "welcome");
        ws.send_text("ping me").unwrap();
        assert_eq!(ws.read_text_line(HANDSHAKE_WAIT), "ping me");
        assert!(matches!(
            ws.read_frame(Duration::from_millis(50)),
            Err(ReadError::Timeout)
        ));
        ws.send_close(Some(4000), "").unwrap();
        assert_eq!(ws.expect_close(4000, HANDSHAKE_WAIT), Vec::<String>::new());
    }

    #[test]
    fn a_refusal_or_a_wrong_key_fails_the_handshake() {
        let addr = serve(|mut s| {
            read_request(&mut s);
            s.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n")
                .unwrap();
        });
        match connect_ws(addr) {
            Err(HandshakeError::Refused { head, body }) => {
                assert_eq!((head.status, &body[..]), (403, &b"no\n"[..]));
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        let addr = serve(|mut s| {
            read_request(&mut s);
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(RFC_KEY)
            );
            s.write_all(answer.as_bytes()).unwrap();
        });
        assert!(matches!(
            connect_ws(addr),
            Err(HandshakeError::BadUpgrade(_))
        ));
    }
}
