//! The NATS client protocol, client side: what nats-server sends, decoded into [`Op`]s, and what
//! a client sends, appended to the connection's output buffer. Pure: no sockets, no clocks.
//!
//! loopchat speaks it to nats-server as one more connection of its event loop, so that several
//! loopchat processes share rooms. The protocol
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>) is control lines ending in
//! CRLF; a message's line gives the size of the payload after it and, for `HMSG`, the size of a
//! header block at the payload's start: `NATS/1.0[ <status>[ <description>]]`, `Key: Value`
//! lines, an empty line.
//!
//! In: [`Decoder`] holds at most one unfinished op, and a bounded one: a control line is refused
//! past [`MAX_CONTROL`] bytes ([`MAX_INFO`] for `INFO`) and a message past the server's
//! `max_payload` plus [`SLACK`], so a broken or hostile server cannot make it grow without end.
//! What breaks the framing is a [`ProtocolError`], and the connection must be closed. What a
//! publisher put in a message is not: nats-server relays a subject that is not UTF-8, or a header
//! block that is not headers, as it got them (seen with 2.9.10), so such a message is skipped
//! and counted ([`Decoder::skipped`]) rather than costing every room its connection.
//!
//! Out: [`connect`], [`publish`], [`subscribe`], [`unsubscribe`], [`ping`] and [`pong`] append an
//! op. JSON is `serde_json`'s both ways: CONNECT is written with it, and callers read the JSON of
//! [`Op::Info`] and of JetStream API replies as a `serde_json::Value`.

use std::fmt;
use std::io::Write as _;

/// The longest control line read, in bytes before its LF, but for `INFO`. nats-server refuses
/// a client's line over its `max_control_line` (4 KiB by default), and the `MSG` line it makes
/// of a `PUB` line adds a sid: twice that is room enough for any message it accepted.
pub const MAX_CONTROL: usize = 8 * 1024;

/// The longest `INFO` line: its JSON lists the cluster's servers (`connect_urls`), which grows
/// with the cluster.
pub const MAX_INFO: usize = 64 * 1024;

/// How far a message may exceed `max_payload`. nats-server holds what clients publish to it,
/// headers and payload together, but adds headers to messages that JetStream stored when it
/// delivers them (a direct get's `Nats-Stream`, `Nats-Subject`, `Nats-Sequence`, ...; a subject
/// alone may be most of a control line).
pub const SLACK: usize = 16 * 1024;

/// One operation from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The JSON after `INFO`, as sent: read it with `serde_json`.
    Info(String),
    Msg(Msg),
    Ping,
    Pong,
    /// `+OK`, only with `"verbose":true`, which [`connect`] does not ask for.
    Ok,
    /// `-ERR 'text'`: the text, without its quotes.
    Err(String),
}

/// A message delivered to a subscription (`MSG`, or `HMSG` with headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub subject: String,
    pub sid: u64,
    pub reply: Option<String>,
    pub headers: Option<Headers>,
    pub payload: Vec<u8>,
}

/// A message's header block: its status line, then its fields in order (a key may repeat).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers {
    /// The status the server puts on messages it makes: 503 when a request has no responders,
    /// 408 or 100 for JetStream's pulls and heartbeats. Three digits on the wire.
    pub status: Option<u16>,
    pub description: String,
    pub fields: Vec<(String, String)>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds a field. A key keeps its case, and nats-server matches the headers it acts on
    /// (`Nats-Expected-Last-Subject-Sequence`, ...) only as documented; a key holds no `:`, and
    /// neither part a CR or LF.
    pub fn with(mut self, key: &str, value: &str) -> Headers {
        self.fields.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The value of the first field named `key`, in any ASCII case.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The size of the block [`Headers::write`] writes: what HPUB counts.
    fn encoded_len(&self) -> usize {
        let status = match self.status {
            None => 0,
            Some(_) if self.description.is_empty() => 4,
            Some(_) => 5 + self.description.len(),
        };
        let fields: usize = self.fields.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        VERSION.len() + status + 2 + fields + 2
    }

    fn write(&self, out: &mut Vec<u8>) {
        debug_assert!(
            self.is_writable(),
            "headers that would not read back: {self:?}"
        );
        out.extend_from_slice(VERSION.as_bytes());
        if let Some(status) = self.status {
            // Writing to a Vec cannot fail.
            let _ = write!(out, " {status:03}");
            if !self.description.is_empty() {
                out.push(b' ');
                out.extend_from_slice(self.description.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
        for (key, value) in &self.fields {
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Whether every part stays in its line, so that the block reads back as these headers
    /// (but for blanks around a value or the description, which reading trims).
    fn is_writable(&self) -> bool {
        let no_line_end = |s: &str| !s.contains(['\r', '\n']);
        self.status.is_none_or(|s| s < 1000)
            && no_line_end(&self.description)
            && self
                .fields
                .iter()
                .all(|(k, v)| !k.is_empty() && !k.contains(':') && no_line_end(k) && no_line_end(v))
    }
}

/// The first line of every header block.
const VERSION: &str = "NATS/1.0";

/// What the server sent that is not the protocol: the stream can no longer be followed, and the
/// connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// A control line longer than its limit, in bytes before its LF.
    LineTooLong { limit: usize },
    /// A message larger than `max_payload` plus [`SLACK`], headers and payload together.
    PayloadTooLarge { size: u64, limit: usize },
    /// An op the server does not send (the start of its line).
    UnknownOp(String),
    /// A known op whose arguments do not parse (the start of its line).
    BadLine(String),
    /// The two bytes after a payload are not CRLF: the size and the bytes disagree.
    NoCrlfAfterPayload,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::LineTooLong { limit } => {
                write!(f, "a control line over {limit} bytes")
            }
            ProtocolError::PayloadTooLarge { size, limit } => {
                write!(f, "a message of {size} bytes, over the limit of {limit}")
            }
            ProtocolError::UnknownOp(op) => write!(f, "unknown operation {op:?}"),
            ProtocolError::BadLine(line) => write!(f, "malformed {line:?}"),
            ProtocolError::NoCrlfAfterPayload => write!(f, "no CRLF after a payload"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Decodes what nats-server sends. Feed it with [`Decoder::next`] straight from the read
/// buffer: an op wholly in the input is parsed in place, and only an unfinished one is kept.
#[derive(Debug)]
pub struct Decoder {
    max_payload: usize,
    /// An unfinished control line; or, once a message's line is read, its bytes so far
    /// (header block, payload, and the CRLF after them).
    buf: Vec<u8>,
    /// The message being read, once its line is.
    msg: Option<Head>,
    /// The server broke the protocol: nothing more is read.
    failed: bool,
    skipped: u64,
}

/// A message's control line, parsed; its subject and reply are checked once it is whole.
#[derive(Debug)]
struct Head {
    subject: Vec<u8>,
    sid: u64,
    reply: Option<Vec<u8>>,
    /// The header block's size (`HMSG`).
    header_len: Option<usize>,
    /// Header block and payload.
    total: usize,
}

/// A control line, parsed: an op, or the start of a message.
enum Line {
    Op(Op),
    Msg(Head),
}

impl Decoder {
    /// A decoder that refuses messages over `max_payload` (plus [`SLACK`]); until the server's
    /// INFO says its own, a guess (nats-server's default is 1 MiB).
    pub fn new(max_payload: usize) -> Decoder {
        Decoder {
            max_payload,
            buf: Vec::new(),
            msg: None,
            failed: false,
            skipped: 0,
        }
    }

    /// The `max_payload` of the server's INFO. The caller may cap it: a message of that size is
    /// held whole until its last byte.
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload;
    }

    /// The next op from what is held plus `input`, advancing `input` past what it used. `None`
    /// means `input` is used up without completing an op; what there was of one is kept. After
    /// an error, nothing more: every later call uses up its input and returns `None`.
    pub fn next(&mut self, input: &mut &[u8]) -> Option<Result<Op, ProtocolError>> {
        if self.failed {
            *input = &[];
            return None;
        }
        let result = self.step(input)?;
        if result.is_err() {
            self.failed = true;
            self.buf = Vec::new();
            self.msg = None;
            *input = &[];
        }
        Some(result)
    }

    /// Bytes held: an unfinished op.
    pub fn held(&self) -> usize {
        let head = self.msg.as_ref().map_or(0, |h| {
            h.subject.len() + h.reply.as_ref().map_or(0, Vec::len)
        });
        self.buf.len() + head
    }

    /// Messages read and not handed out: a subject or reply that is not UTF-8, or a header
    /// block that is not `NATS/1.0` headers. A publisher sent them; the connection is fine.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn step(&mut self, input: &mut &[u8]) -> Option<Result<Op, ProtocolError>> {
        loop {
            let head = match self.msg.take() {
                Some(head) => head,
                None => match self.line(input)? {
                    Ok(Line::Op(op)) => return Some(Ok(op)),
                    Ok(Line::Msg(head)) => head,
                    Err(e) => return Some(Err(e)),
                },
            };
            let need = head.total + 2;
            let bytes = if self.buf.is_empty() && input.len() >= need {
                // The common case: the whole message is in this read. One copy.
                let (whole, rest) = input.split_at(need);
                *input = rest;
                whole.to_vec()
            } else {
                let take = (need - self.buf.len()).min(input.len());
                self.buf.extend_from_slice(&input[..take]);
                *input = &input[take..];
                if self.buf.len() < need {
                    self.msg = Some(head);
                    return None; // the input is used up
                }
                std::mem::take(&mut self.buf)
            };
            match finish(head, bytes) {
                Ok(Some(msg)) => return Some(Ok(Op::Msg(msg))),
                Ok(None) => self.skipped += 1,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next control line, parsed; `None` until its LF comes.
    fn line(&mut self, input: &mut &[u8]) -> Option<Result<Line, ProtocolError>> {
        let data: &[u8] = input;
        let Some(lf) = data.iter().position(|&b| b == b'\n') else {
            self.buf.extend_from_slice(data);
            *input = &[];
            // Refused as soon as it is too long, not when its LF comes: it is not stored.
            let limit = line_limit(&self.buf);
            return (self.buf.len() > limit).then_some(Err(ProtocolError::LineTooLong { limit }));
        };
        *input = &data[lf + 1..];
        let line = if self.buf.is_empty() {
            &data[..lf]
        } else {
            self.buf.extend_from_slice(&data[..lf]);
            &self.buf[..]
        };
        let limit = line_limit(line);
        let parsed = if line.len() > limit {
            Err(ProtocolError::LineTooLong { limit })
        } else {
            parse_line(line, self.max_payload.saturating_add(SLACK))
        };
        self.buf.clear();
        Some(parsed)
    }
}

fn line_limit(line: &[u8]) -> usize {
    match line.get(..4) {
        Some(op) if op.eq_ignore_ascii_case(b"INFO") => MAX_INFO,
        _ => MAX_CONTROL,
    }
}

/// A line without its LF. Ops are case-insensitive and fields are separated by runs of spaces
/// and tabs (the protocol's conventions); one CR before the LF is dropped, and a bare LF is
/// taken as a line end too, as nats-server's own clients do.
fn parse_line(line: &[u8], max_size: usize) -> Result<Line, ProtocolError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let op_end = line.iter().position(|&b| is_blank(b)).unwrap_or(line.len());
    let (op, rest) = line.split_at(op_end);
    let rest = trim(rest);
    let bad = || ProtocolError::BadLine(snippet(line));
    let is = |name: &str| op.eq_ignore_ascii_case(name.as_bytes());
    let op = if is("MSG") || is("HMSG") {
        return parse_msg(rest, is("HMSG"), max_size)
            .ok_or_else(bad)?
            .map(Line::Msg);
    } else if is("INFO") {
        Op::Info(String::from_utf8(rest.to_vec()).map_err(|_| bad())?)
    } else if is("-ERR") {
        let text = match rest {
            [b'\'', text @ .., b'\''] => text,
            text => text,
        };
        Op::Err(String::from_utf8_lossy(text).into_owned())
    } else if !rest.is_empty() && (is("PING") || is("PONG") || is("+OK")) {
        return Err(bad());
    } else if is("PING") {
        Op::Ping
    } else if is("PONG") {
        Op::Pong
    } else if is("+OK") {
        Op::Ok
    } else {
        return Err(ProtocolError::UnknownOp(snippet(op)));
    };
    Ok(Line::Op(op))
}

/// `<subject> <sid> [reply] [<#header bytes>] <#total bytes>`: `None` when malformed, an error
/// when too large.
fn parse_msg(args: &[u8], headers: bool, max_size: usize) -> Option<Result<Head, ProtocolError>> {
    let mut words = [&[][..]; 5];
    let mut n = 0;
    for word in args.split(|&b| is_blank(b)).filter(|w| !w.is_empty()) {
        *words.get_mut(n)? = word;
        n += 1;
    }
    let sizes = if headers { 2 } else { 1 };
    let (reply, sizes_at) = match n.checked_sub(sizes)? {
        2 => (None, 2),
        3 => (Some(words[2].to_vec()), 3),
        _ => return None,
    };
    let total = number(words[sizes_at + sizes - 1])?;
    let header_len = match headers {
        true => Some(number(words[sizes_at]).filter(|&h| h <= total)?),
        false => None,
    };
    let sid = number(words[1])?;
    let too_large = ProtocolError::PayloadTooLarge {
        size: total,
        limit: max_size,
    };
    let Some(total) = usize::try_from(total).ok().filter(|&t| t <= max_size) else {
        return Some(Err(too_large));
    };
    Some(Ok(Head {
        subject: words[0].to_vec(),
        sid,
        reply,
        // Not over `total`, which fits.
        header_len: header_len.map(|h| h as usize),
        total,
    }))
}

/// A message's bytes, whole (header block, payload, CRLF), made a [`Msg`]; `None` for one to
/// skip.
fn finish(head: Head, mut bytes: Vec<u8>) -> Result<Option<Msg>, ProtocolError> {
    if !bytes.ends_with(b"\r\n") {
        return Err(ProtocolError::NoCrlfAfterPayload);
    }
    bytes.truncate(head.total);
    let headers = match head.header_len {
        None => None,
        Some(n) => {
            let Some(headers) = parse_headers(&bytes[..n]) else {
                return Ok(None);
            };
            bytes.drain(..n);
            Some(headers)
        }
    };
    let Ok(subject) = String::from_utf8(head.subject) else {
        return Ok(None);
    };
    let Ok(reply) = head.reply.map(String::from_utf8).transpose() else {
        return Ok(None);
    };
    Ok(Some(Msg {
        subject,
        sid: head.sid,
        reply,
        headers,
        payload: bytes,
    }))
}

/// `NATS/1.0[ <3-digit status>[ <description>]]\r\n`, `Key: Value\r\n` lines, `\r\n`; `None`
/// when the block is anything else. A value is trimmed of spaces and tabs.
fn parse_headers(block: &[u8]) -> Option<Headers> {
    let text = std::str::from_utf8(block).ok()?;
    let mut lines = text.strip_suffix("\r\n\r\n")?.split("\r\n");
    if lines.clone().any(|l| l.contains(['\r', '\n'])) {
        return None;
    }
    let mut headers = Headers::new();
    let status = lines.next()?.strip_prefix(VERSION)?;
    if !status.is_empty() {
        let status = status
            .strip_prefix([' ', '\t'])?
            .trim_start_matches([' ', '\t']);
        let (code, description) = status.split_at_checked(3)?;
        if !code.bytes().all(|b| b.is_ascii_digit())
            || !(description.is_empty() || description.starts_with([' ', '\t']))
        {
            return None;
        }
        headers.status = Some(code.parse().ok()?);
        headers.description = description.trim_matches([' ', '\t']).to_owned();
    }
    for line in lines {
        let (key, value) = line.split_once(':')?;
        if key.is_empty() {
            return None;
        }
        let value = value.trim_matches([' ', '\t']);
        headers.fields.push((key.to_owned(), value.to_owned()));
    }
    Some(headers)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b, rest @ ..] = s
        && is_blank(*b)
    {
        s = rest;
    }
    while let [rest @ .., b] = s
        && is_blank(*b)
    {
        s = rest;
    }
    s
}

/// Decimal digits only (`str::parse` would take a `+`), and no overflow.
fn number(word: &[u8]) -> Option<u64> {
    if word.is_empty() || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(word).ok()?.parse().ok()
}

/// The start of a line, for an error message: never the whole of a long line.
fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned()
}

// ----- out: client ops -----

/// `CONNECT {...}`: the first thing to send, after the server's INFO.
pub fn connect(out: &mut Vec<u8>, name: &str, version: &str) {
    let options = serde_json::json!({
        // No +OK after every op.
        "verbose": false,
        "pedantic": false,
        // This connection's own messages are not delivered back to it: each process gives its
        // own clients what they say itself.
        "echo": false,
        "headers": true,
        // A request nobody subscribes to is answered at once with a 503 status, not left to
        // time out.
        "no_responders": true,
        "lang": "rust",
        "version": version,
        "name": name,
        // INFO may come again at any time (a cluster's servers change).
        "protocol": 1,
    });
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(options.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `PUB`, or `HPUB` with headers. The subject and reply must pass [`is_valid_subject`]: a
/// blank in one would break the line, and nats-server closes the connection.
pub fn publish(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: Option<&Headers>,
    payload: &[u8],
) {
    debug_assert!(is_valid_subject(subject), "subject {subject:?}");
    debug_assert!(reply.is_none_or(is_valid_subject), "reply {reply:?}");
    out.extend_from_slice(if headers.is_some() { b"HPUB " } else { b"PUB " });
    out.extend_from_slice(subject.as_bytes());
    if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply.as_bytes());
    }
    // Writing to a Vec cannot fail.
    let _ = match headers {
        None => write!(out, " {}\r\n", payload.len()),
        Some(h) => {
            let len = h.encoded_len();
            write!(out, " {len} {}\r\n", len + payload.len())
        }
    };
    if let Some(h) = headers {
        h.write(out);
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `SUB`, to `subject` (wildcards allowed), in a queue group if one is given; the server's
/// `MSG`s for it carry `sid`.
pub fn subscribe(out: &mut Vec<u8>, subject: &str, queue: Option<&str>, sid: u64) {
    debug_assert!(is_valid_subject(subject), "subject {subject:?}");
    debug_assert!(queue.is_none_or(is_valid_subject), "queue {queue:?}");
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    if let Some(queue) = queue {
        out.push(b' ');
        out.extend_from_slice(queue.as_bytes());
    }
    // Writing to a Vec cannot fail.
    let _ = write!(out, " {sid}\r\n");
}

/// `UNSUB`: now, or after `max` more messages.
pub fn unsubscribe(out: &mut Vec<u8>, sid: u64, max: Option<u64>) {
    // Writing to a Vec cannot fail.
    let _ = match max {
        None => write!(out, "UNSUB {sid}\r\n"),
        Some(max) => write!(out, "UNSUB {sid} {max}\r\n"),
    };
}

pub fn ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

pub fn pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// A subject: tokens separated by dots, each a [token](is_valid_token), a `*` (any one token),
/// or, last, a `>` (one or more tokens). Wildcards are for subscriptions; a published subject
/// has none.
pub fn is_valid_subject(s: &str) -> bool {
    let mut tokens = s.split('.').peekable();
    while let Some(token) = tokens.next() {
        let last = tokens.peek().is_none();
        if !(is_valid_token(token) || token == "*" || (token == ">" && last)) {
            return false;
        }
    }
    true
}

/// One literal token of a subject: not empty, no dot, no wildcard character, no whitespace or
/// control character. Stricter than nats-server, which takes `a*b` as a literal and any
/// character but a few blanks.
pub fn is_valid_token(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Got = Vec<Result<Op, ProtocolError>>;

    /// The most a decoder may hold.
    fn bound(max_payload: usize) -> usize {
        MAX_INFO.max(MAX_CONTROL + max_payload + SLACK + 2)
    }

    /// Everything the reads decode to, with the bounds checked after every call.
    fn decode_reads(max_payload: usize, reads: &[&[u8]]) -> Got {
        let mut d = Decoder::new(max_payload);
        let mut got = Vec::new();
        for read in reads {
            let mut input = *read;
            while let Some(op) = d.next(&mut input) {
                got.push(op);
                assert!(d.held() <= bound(max_payload), "held {}", d.held());
            }
            assert!(input.is_empty(), "None with input left");
            assert!(d.held() <= bound(max_payload), "held {}", d.held());
        }
        got
    }

    /// What `bytes` decodes to in one piece, after checking that one byte at a time, and split
    /// in two at every place, decode to the same.
    fn decode(max_payload: usize, bytes: &[u8]) -> Got {
        let whole = decode_reads(max_payload, &[bytes]);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_reads(max_payload, &bytewise), whole, "byte by byte");
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(decode_reads(max_payload, &[a, b]), whole, "split at {at}");
        }
        whole
    }

    fn ops(bytes: &[u8]) -> Vec<Op> {
        decode(1024, bytes)
            .into_iter()
            .map(|r| r.expect("no error"))
            .collect()
    }

    fn msg(subject: &str, sid: u64, reply: Option<&str>, payload: &[u8]) -> Msg {
        Msg {
            subject: subject.into(),
            sid,
            reply: reply.map(Into::into),
            headers: None,
            payload: payload.to_vec(),
        }
    }

    /// What nats-server delivers for a `PUB` or `HPUB`: `MSG` or `HMSG`, with a sid.
    fn delivered(published: &[u8], sid: u64) -> Vec<u8> {
        let lf = published.iter().position(|&b| b == b'\n').unwrap();
        let line = std::str::from_utf8(&published[..lf - 1]).unwrap();
        let mut words = line.split(' ');
        let op = match words.next() {
            Some("PUB") => "MSG",
            Some("HPUB") => "HMSG",
            other => panic!("not a publish: {other:?}"),
        };
        let subject = words.next().unwrap();
        let rest: Vec<&str> = words.collect();
        let mut out = format!("{op} {subject} {sid} {}\r\n", rest.join(" ")).into_bytes();
        out.extend_from_slice(&published[lf + 1..]);
        out
    }

    #[test]
    fn every_server_op_however_the_bytes_come() {
        let stream = b"INFO {\"server_id\":\"N1\",\"max_payload\":1048576} \r\n\
            PING\r\nPONG\r\n+OK\r\n-ERR 'Stale Connection'\r\n\
            MSG FOO.BAR 9 11\r\nHello World\r\n\
            MSG FOO.BAR 9 INBOX.34 11\r\nHello World\r\n\
            MSG empty 1 0\r\n\r\n\
            HMSG FOO.BAR 9 INBOX.69 34 45\r\nNATS/1.0\r\nFoodGroup: vegetable\r\n\r\nHello World\r\n";
        let headers = Headers::new().with("FoodGroup", "vegetable");
        assert_eq!(
            ops(stream),
            [
                Op::Info("{\"server_id\":\"N1\",\"max_payload\":1048576}".into()),
                Op::Ping,
                Op::Pong,
                Op::Ok,
                Op::Err("Stale Connection".into()),
                Op::Msg(msg("FOO.BAR", 9, None, b"Hello World")),
                Op::Msg(msg("FOO.BAR", 9, Some("INBOX.34"), b"Hello World")),
                Op::Msg(msg("empty", 1, None, b"")),
                Op::Msg(Msg {
                    headers: Some(headers),
                    ..msg("FOO.BAR", 9, Some("INBOX.69"), b"Hello World")
                }),
            ]
        );
    }

    #[test]
    fn ops_are_case_insensitive_fields_any_blanks_and_the_cr_optional() {
        let stream = b"ping\npong \r\n-err  unquoted text \r\n\
            msg\tfoo  7 \t 2\r\nab\r\nHmsg foo 7 12 12\r\nNATS/1.0\r\n\r\n\r\n";
        assert_eq!(
            ops(stream),
            [
                Op::Ping,
                Op::Pong,
                Op::Err("unquoted text".into()),
                Op::Msg(msg("foo", 7, None, b"ab")),
                Op::Msg(Msg {
                    headers: Some(Headers::new()),
                    ..msg("foo", 7, None, b"")
                }),
            ]
        );
    }

    #[test]
    fn a_payload_may_hold_crlf_and_what_looks_like_ops() {
        let stream = b"MSG a 1 20\r\nhello\r\nPING\r\nworld\r\n\r\nPONG\r\n";
        assert_eq!(
            ops(stream),
            [
                Op::Msg(msg("a", 1, None, b"hello\r\nPING\r\nworld\r\n")),
                Op::Pong
            ]
        );
    }

    #[test]
    fn status_headers_no_responders_and_jetstream() {
        // A request nobody answers ("no_responders"): a status and nothing else.
        let stream = b"HMSG _INBOX.x 7 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
            HMSG _INBOX.y 8 58 58\r\nNATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\n\r\n\r\n";
        let no_responders = Headers {
            status: Some(503),
            ..Headers::new()
        };
        let timeout = Headers {
            status: Some(408),
            description: "Request Timeout".into(),
            ..Headers::new()
        }
        .with("Nats-Pending-Messages", "1");
        assert_eq!(
            ops(stream),
            [
                Op::Msg(Msg {
                    headers: Some(no_responders),
                    ..msg("_INBOX.x", 7, None, b"")
                }),
                Op::Msg(Msg {
                    headers: Some(timeout),
                    ..msg("_INBOX.y", 8, None, b"")
                }),
            ]
        );
    }

    #[test]
    fn header_values_are_trimmed_keys_repeat_and_get_ignores_case() {
        let block = "NATS/1.0\r\nA: 1\r\na:2 \r\nEmpty:\r\nB: x: y\r\n\r\n";
        let stream = format!("HMSG s 1 {0} {0}\r\n{block}\r\n", block.len());
        let [Op::Msg(m)] = &ops(stream.as_bytes())[..] else {
            panic!("one message")
        };
        let h = m.headers.as_ref().unwrap();
        assert_eq!(h.fields.len(), 4);
        assert_eq!(h.get("a"), Some("1"));
        assert_eq!(h.fields[1], ("a".into(), "2".into()));
        assert_eq!(h.get("EMPTY"), Some(""));
        assert_eq!(h.get("b"), Some("x: y"));
        assert_eq!(h.get("c"), None);
    }

    #[test]
    fn what_a_publisher_put_in_a_message_skips_it_and_nothing_else() {
        // Each of these reached a subscriber as shown from nats-server 2.9.10.
        let junk: [&[u8]; 5] = [
            b"MSG foo.\xff 1 0\r\n\r\n",
            b"HMSG foo 1 5 5\r\nxxxxx\r\n",
            b"HMSG foo 1 21 21\r\nNATS/1.0\r\nnocolon\r\n\r\n\r\n",
            b"HMSG foo 1 16 16\r\nNATS/1.0 5x3\r\n\r\n\r\n",
            b"MSG foo 1 r.\xc3 0\r\n\r\n",
        ];
        let stream: Vec<u8> = [&junk[..], &[b"PING\r\n"]].concat().concat();
        assert_eq!(ops(&stream), [Op::Ping]);
        let mut d = Decoder::new(1024);
        let mut input = &stream[..];
        assert_eq!(d.next(&mut input), Some(Ok(Op::Ping)));
        assert_eq!(d.skipped(), junk.len() as u64);
        // Not UTF-8 is not the same as not ASCII.
        assert_eq!(
            ops("MSG x.é 1 0\r\n\r\n".as_bytes()),
            [Op::Msg(msg("x.é", 1, None, b""))]
        );
    }

    #[test]
    fn what_breaks_the_framing_is_an_error_and_the_end() {
        let cases: [(&[u8], ProtocolError); 12] = [
            (b"PUB foo 1\r\n", ProtocolError::UnknownOp("PUB".into())),
            (b"\r\n", ProtocolError::UnknownOp("".into())),
            (b" PING\r\n", ProtocolError::UnknownOp("".into())),
            (b"PING PONG\r\n", ProtocolError::BadLine("PING PONG".into())),
            (b"MSG foo 1\r\n", ProtocolError::BadLine("MSG foo 1".into())),
            (
                b"MSG a 1 b c 2\r\n",
                ProtocolError::BadLine("MSG a 1 b c 2".into()),
            ),
            (
                b"MSG foo x 2\r\n",
                ProtocolError::BadLine("MSG foo x 2".into()),
            ),
            (
                b"MSG foo 1 +2\r\n",
                ProtocolError::BadLine("MSG foo 1 +2".into()),
            ),
            (
                b"HMSG foo 1 3 2\r\n",
                ProtocolError::BadLine("HMSG foo 1 3 2".into()),
            ),
            (
                b"INFO \xff\r\n",
                ProtocolError::BadLine("INFO \u{fffd}".into()),
            ),
            (b"MSG foo 1 2\r\nabc\r\n", ProtocolError::NoCrlfAfterPayload),
            (b"MSG foo 1 2\r\nab\n\n", ProtocolError::NoCrlfAfterPayload),
        ];
        for (bytes, error) in cases {
            let mut stream = bytes.to_vec();
            stream.extend_from_slice(b"PING\r\n");
            assert_eq!(decode(1024, &stream), [Err(error)], "{stream:?}");
        }
    }

    #[test]
    fn the_limits_hold_whatever_the_server_sends() {
        let max = 100;
        let sized = |size: usize| format!("MSG a 1 {size}\r\n").into_bytes();
        // Up to max_payload plus the slack is taken, one more byte is not, and a size that no
        // memory could hold is refused before a byte of it comes.
        let mut fits = sized(max + SLACK);
        fits.extend(vec![b'x'; max + SLACK]);
        fits.extend_from_slice(b"\r\n");
        assert!(matches!(&decode_reads(max, &[&fits])[..], [Ok(Op::Msg(_))]));
        let limit = max + SLACK;
        for size in [(max + SLACK + 1) as u64, u64::MAX] {
            let line = format!("MSG a 1 {size}\r\n");
            let too_large = ProtocolError::PayloadTooLarge { size, limit };
            assert_eq!(decode(max, line.as_bytes()), [Err(too_large)]);
        }
        assert_eq!(
            decode(max, b"MSG a 1 99999999999999999999999\r\n"),
            [Err(ProtocolError::BadLine(
                "MSG a 1 99999999999999999999999".into()
            ))]
        );

        // A control line of the limit is read; one byte more, with its LF or without, is not.
        let line = |op: &str, len: usize| {
            let mut l = format!("{op} ").into_bytes();
            l.resize(len, b'a');
            l
        };
        let mut ok = line("-ERR", MAX_CONTROL);
        ok.push(b'\n');
        assert!(matches!(&decode_reads(max, &[&ok])[..], [Ok(Op::Err(_))]));
        let long = line("-ERR", MAX_CONTROL + 1);
        let too_long = [Err(ProtocolError::LineTooLong { limit: MAX_CONTROL })];
        assert_eq!(decode_reads(max, &[&long]), too_long);
        assert_eq!(decode_reads(max, &[&long, b"\n"]), too_long);
        let bytewise: Vec<&[u8]> = long.chunks(1).collect();
        assert_eq!(decode_reads(max, &bytewise), too_long);
        // INFO may be longer.
        let mut info = line("INFO", MAX_INFO);
        info.extend_from_slice(b"\nPING\r\n");
        let got = decode_reads(max, &[&info]);
        assert!(matches!(&got[..], [Ok(Op::Info(_)), Ok(Op::Ping)]));
        let info = line("info", MAX_INFO + 1);
        let too_long = Err(ProtocolError::LineTooLong { limit: MAX_INFO });
        assert_eq!(decode_reads(max, &[&info]), [too_long]);
    }

    #[test]
    fn after_an_error_nothing_is_held_or_read() {
        let mut d = Decoder::new(1024);
        let mut input = &b"MSG a 1 3\r\nab"[..];
        assert_eq!(d.next(&mut input), None);
        assert_eq!(d.held(), 3); // the subject and the payload's start
        let mut input = &b"c!!PING\r\n"[..];
        assert_eq!(
            d.next(&mut input),
            Some(Err(ProtocolError::NoCrlfAfterPayload))
        );
        assert!(input.is_empty());
        assert_eq!(d.held(), 0);
        let mut input = &b"PING\r\n"[..];
        assert_eq!(d.next(&mut input), None);
        assert!(input.is_empty());
    }

    #[test]
    fn a_server_that_never_ends_a_line_is_refused_not_stored() {
        let mut d = Decoder::new(1024);
        let junk = vec![b'x'; 1000];
        let mut errors = 0;
        for _ in 0..100 {
            let mut input = &junk[..];
            while let Some(r) = d.next(&mut input) {
                assert!(r.is_err());
                errors += 1;
            }
            assert!(d.held() <= MAX_CONTROL);
        }
        assert_eq!(errors, 1);
    }

    // ----- out -----

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = b"before ".to_vec();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn client_ops_are_appended_as_the_protocol_writes_them() {
        let pubs = written(|o| publish(o, "FOO", None, None, b"Hello NATS!"));
        assert_eq!(pubs, "before PUB FOO 11\r\nHello NATS!\r\n");
        let knock = written(|o| publish(o, "FRONT.DOOR", Some("INBOX.22"), None, b"Knock Knock"));
        assert_eq!(
            knock,
            "before PUB FRONT.DOOR INBOX.22 11\r\nKnock Knock\r\n"
        );
        assert_eq!(
            written(|o| publish(o, "NOTIFY", None, None, b"")),
            "before PUB NOTIFY 0\r\n\r\n"
        );
        // The protocol page's HPUB examples, to the byte.
        let bar = Headers::new().with("Bar", "Baz");
        assert_eq!(
            written(|o| publish(o, "FOO", None, Some(&bar), b"Hello NATS!")),
            "before HPUB FOO 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n"
        );
        let meals = Headers::new()
            .with("BREAKFAST", "donut")
            .with("LUNCH", "burger");
        assert_eq!(
            written(|o| publish(
                o,
                "FRONT.DOOR",
                Some("INBOX.22"),
                Some(&meals),
                b"Knock Knock"
            )),
            "before HPUB FRONT.DOOR INBOX.22 45 56\r\n\
             NATS/1.0\r\nBREAKFAST: donut\r\nLUNCH: burger\r\n\r\nKnock Knock\r\n"
        );
        let status = Headers {
            status: Some(503),
            ..Headers::new()
        };
        assert_eq!(
            written(|o| publish(o, "s", None, Some(&status), b"")),
            "before HPUB s 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
        );
        assert_eq!(
            written(|o| subscribe(o, "FOO", None, 1)),
            "before SUB FOO 1\r\n"
        );
        assert_eq!(
            written(|o| subscribe(o, "BAR.>", Some("G1"), 44)),
            "before SUB BAR.> G1 44\r\n"
        );
        assert_eq!(written(|o| unsubscribe(o, 1, None)), "before UNSUB 1\r\n");
        assert_eq!(
            written(|o| unsubscribe(o, 1, Some(5))),
            "before UNSUB 1 5\r\n"
        );
        assert_eq!(written(ping), "before PING\r\n");
        assert_eq!(written(pong), "before PONG\r\n");
    }

    #[test]
    fn connect_is_one_line_of_json_whatever_the_name() {
        let name = "loop\"chat\"\n\\ é \u{1}";
        let line = written(|o| connect(o, name, "0.1.0"));
        let json = line
            .strip_prefix("before CONNECT ")
            .and_then(|l| l.strip_suffix("\r\n"))
            .unwrap();
        assert!(!json.contains(['\r', '\n']));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["name"], name);
        assert_eq!(v["version"], "0.1.0");
        assert_eq!(v["lang"], "rust");
        assert_eq!(v["protocol"], 1);
        for (key, on) in [
            ("verbose", false),
            ("pedantic", false),
            ("echo", false),
            ("headers", true),
            ("no_responders", true),
        ] {
            assert_eq!(v[key], on, "{key}");
        }
    }

    #[test]
    fn subjects_and_tokens() {
        for ok in [
            "a",
            "FOO.bar",
            "a.*.c",
            "a.>",
            ">",
            "*",
            "$JS.API.INFO",
            "é.x",
            "#rust",
        ] {
            assert!(is_valid_subject(ok), "{ok:?}");
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\r\nb", "a.>.b", "a>", "a*", "a.b*",
            "*a", "a\u{0}", "a\u{a0}b",
        ] {
            assert!(!is_valid_subject(bad), "{bad:?}");
        }
        assert!(is_valid_token("rust") && is_valid_token("#café"));
        for bad in ["", "a.b", "*", ">", "a b", "x\u{7f}"] {
            assert!(!is_valid_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_json_reply_is_read_with_serde_json() {
        let reply =
            r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}"#;
        let v: serde_json::Value = serde_json::from_str(reply).unwrap();
        assert_eq!(v["error"]["err_code"].as_u64(), Some(10071));
        assert_eq!(v["seq"].as_u64(), None);
    }

    // ----- properties -----

    fn subject() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-zA-Z0-9_$#é-]{1,6}", 1..4).prop_map(|t| t.join("."))
    }

    fn headers() -> impl Strategy<Value = Headers> {
        let text = "([!-~]{1,6}( [!-~]{1,6}){0,2})?";
        let field = ("[A-Za-z0-9_-][!-9;-~]{0,8}", text);
        (
            proptest::option::of(0u16..1000),
            text,
            proptest::collection::vec(field, 0..4),
        )
            .prop_map(|(status, description, fields)| Headers {
                description: if status.is_some() {
                    description
                } else {
                    String::new()
                },
                status,
                fields,
            })
    }

    /// One op as nats-server would send it, or a piece of junk.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        let published = (
            subject(),
            proptest::option::of(subject()),
            proptest::option::of(headers()),
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<u64>(),
        )
            .prop_map(|(s, r, h, p, sid)| {
                let mut out = Vec::new();
                publish(&mut out, &s, r.as_deref(), h.as_ref(), &p);
                delivered(&out, sid)
            });
        prop_oneof![
            4 => published,
            1 => Just(b"PING\r\n".to_vec()),
            1 => Just(b"INFO {\"max_payload\":64} \r\n".to_vec()),
            1 => Just(b"-ERR 'Slow Consumer'\r\n".to_vec()),
            1 => proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b' '), Just(b'1'), any::<u8>()],
                0..20),
        ]
    }

    proptest! {
        /// A message published with this module reads back, from the `MSG` or `HMSG` nats-server
        /// makes of it, as what was published.
        #[test]
        fn publish_round_trips_through_the_decoder(
            subject in subject(),
            reply in proptest::option::of(subject()),
            headers in proptest::option::of(headers()),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            sid in any::<u64>(),
        ) {
            let mut out = Vec::new();
            publish(&mut out, &subject, reply.as_deref(), headers.as_ref(), &payload);
            let mut d = Decoder::new(payload.len());
            let mut input = &delivered(&out, sid)[..];
            let want = Msg { subject, sid, reply, headers, payload };
            prop_assert_eq!(d.next(&mut input), Some(Ok(Op::Msg(want))));
            prop_assert!(input.is_empty());
            prop_assert_eq!(d.held(), 0);
        }

        /// However a stream is cut into reads, the same ops come out, and what is held stays
        /// bounded (checked in `decode_reads`).
        #[test]
        fn every_cut_gives_the_same_ops(
            pieces in proptest::collection::vec(piece(), 0..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            max in 0usize..64,
        ) {
            let stream = pieces.concat();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut reads = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                reads.push(&stream[from..c]);
                from = c;
            }
            prop_assert_eq!(decode_reads(max, &reads), decode_reads(max, &[&stream]));
        }

        /// Arbitrary bytes never panic, and never make it hold more than its bound.
        #[test]
        fn arbitrary_bytes_are_refused_not_held(
            reads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..300), 0..10),
            max in 0usize..64,
        ) {
            let reads: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
            decode_reads(max, &reads);
        }
    }
}
