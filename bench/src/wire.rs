//! What the generator sends and how it recognises it in whatever a server relays.
//!
//! A payload is `@@` + kind + sender (8 hex) + sequence (8 hex) + send time in ns (16 hex),
//! padded with `.` to the requested size. Servers may prefix it (`alice: `) or frame it (NATS
//! `MSG`): receivers look for the marker anywhere in a line.

/// Smallest payload that holds the marker and the three fields.
pub const MIN_SIZE: usize = 35;
/// NATS subject every generator client publishes to and subscribes on.
const SUBJECT: &str = "loopchat.bench";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A measured message.
    Data,
    /// A join-barrier probe.
    Barrier,
    /// A churn client's single message.
    Churn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg {
    pub kind: Kind,
    pub sender: u32,
    pub seq: u32,
    pub sent_ns: u64,
}

impl Msg {
    /// Appends exactly `size` bytes (at least [`MIN_SIZE`]) without a line end.
    pub fn encode(&self, size: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(b"@@");
        out.push(match self.kind {
            Kind::Data => b'D',
            Kind::Barrier => b'B',
            Kind::Churn => b'C',
        });
        push_hex(out, u64::from(self.sender), 8);
        push_hex(out, u64::from(self.seq), 8);
        push_hex(out, self.sent_ns, 16);
        out.resize(out.len() + size.saturating_sub(MIN_SIZE), b'.');
    }

    /// Finds a payload inside a relayed line (the generator's hottest function).
    #[inline]
    pub fn find(line: &[u8]) -> Option<Msg> {
        let mut from = 0;
        loop {
            // The marker sits near the start of a line: a plain scan beats memchr's set-up.
            let at = from + line[from..].iter().position(|&b| b == b'@')?;
            from = at + 1;
            let f = line.get(at..at + MIN_SIZE)?;
            let kind = match f {
                [b'@', b'@', b'D', ..] => Kind::Data,
                [b'@', b'@', b'B', ..] => Kind::Barrier,
                [b'@', b'@', b'C', ..] => Kind::Churn,
                _ => continue,
            };
            // Not hex after all (some name or text that looks like a marker): look further.
            let (Some(sender), Some(seq), Some(sent_ns)) = (
                parse_hex(&f[3..11]),
                parse_hex(&f[11..19]),
                parse_hex(&f[19..35]),
            ) else {
                continue;
            };
            return Some(Msg {
                kind,
                sender: sender as u32,
                seq: seq as u32,
                sent_ns,
            });
        }
    }
}

fn push_hex(out: &mut Vec<u8>, v: u64, digits: u32) {
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// Eight lowercase hex digits to their value, eight bytes at a time (this parse is most of the
/// generator's per-delivery work). `None` unless every byte is in `0-9a-f`.
#[inline]
fn hex8(b: &[u8]) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let v = u64::from_be_bytes(b.try_into().ok()?);
    // Per byte: digits are 0x30..=0x39, letters 0x61..=0x66 (bit 6 tells which to expect).
    let letter = (v >> 6) & ONES;
    let low = v & (ONES * 0x0f);
    let nib = low + letter * 9;
    let bad_high = v & (ONES * 0xf0) != ONES * 0x30 + letter * 0x30;
    let too_big = (nib + (ONES - letter) * 6) & (ONES * 0xf0) != 0;
    let zero_letter = !((low + ONES * 0x0f) >> 4) & letter != 0;
    if bad_high || too_big || zero_letter {
        return None;
    }
    let v = (nib | (nib >> 4)) & 0x00ff_00ff_00ff_00ff;
    let v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    Some((v | (v >> 16)) & 0xffff_ffff)
}

#[inline]
fn parse_hex(s: &[u8]) -> Option<u64> {
    s.chunks(8)
        .try_fold(0u64, |acc, c| Some(acc << 32 | hex8(c)?))
}

/// The protocol the generator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// loopchat and the baselines: one message per LF-terminated line.
    Line,
    /// nats-server's client protocol.
    Nats,
    /// loopchat's web door: the line protocol's lines as WebSocket text messages, one masked
    /// frame per message out, one text frame per line in (the generator does the handshake).
    WebSocket,
}

/// What one received line means to the generator.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Msg(Msg),
    /// NATS keep-alive that must be answered.
    Ping,
    /// An error the server reported (printed once, counted).
    Error,
    Other,
}

impl Proto {
    /// Bytes a client sends right after connecting.
    pub fn hello(self, out: &mut Vec<u8>) {
        if self == Proto::Nats {
            // echo:false so that, like a chat room, a sender does not get its own messages.
            out.extend_from_slice(
                b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\n",
            );
            out.extend_from_slice(format!("SUB {SUBJECT} 1\r\n").as_bytes());
        }
    }

    /// Appends one message carrying `msg`.
    pub fn frame(self, msg: &Msg, size: usize, out: &mut Vec<u8>) {
        match self {
            Proto::Line => {
                msg.encode(size, out);
                out.push(b'\n');
            }
            Proto::Nats => {
                out.extend_from_slice(
                    format!("PUB {SUBJECT} {}\r\n", size.max(MIN_SIZE)).as_bytes(),
                );
                msg.encode(size, out);
                out.extend_from_slice(b"\r\n");
            }
            Proto::WebSocket => {
                let mask = crate::ws::random_mask();
                let len = size.max(MIN_SIZE);
                crate::ws::encode_header(true, crate::ws::op::TEXT, Some(mask), len as u64, out);
                let start = out.len();
                msg.encode(size, out);
                debug_assert_eq!(out.len() - start, len);
                crate::ws::apply_mask(&mut out[start..], mask, 0);
            }
        }
    }

    /// Answer to a [`Incoming::Ping`].
    pub fn pong(self) -> &'static [u8] {
        b"PONG\r\n"
    }

    /// Classifies one received line (without its LF).
    #[inline]
    pub fn classify(self, line: &[u8]) -> Incoming {
        if let Some(m) = Msg::find(line) {
            return Incoming::Msg(m);
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self {
            Proto::Nats if line == b"PING" => Incoming::Ping,
            Proto::Nats if line.starts_with(b"-ERR") => Incoming::Error,
            Proto::Line | Proto::WebSocket if line.starts_with(b"[SERVER] Error:") => {
                Incoming::Error
            }
            _ => Incoming::Other,
        }
    }
}

/// Calls `f` for every complete line in `data` (without its LF); returns the bytes consumed.
pub fn each_line(data: &[u8], mut f: impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', data) {
        f(&data[start..i]);
        start = i + 1;
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_prefixes_and_frames() {
        let m = Msg {
            kind: Kind::Data,
            sender: 7,
            seq: 0xdead_beef,
            sent_ns: 123_456_789,
        };
        for size in [MIN_SIZE, 64, 200] {
            let mut line = b"guest12: ".to_vec();
            m.encode(size, &mut line);
            assert_eq!(line.len(), 9 + size);
            assert_eq!(Msg::find(&line), Some(m));
        }
        let mut nats = Vec::new();
        Proto::Nats.frame(&m, 64, &mut nats);
        let mut seen = Vec::new();
        each_line(&nats, |l| seen.push(Proto::Nats.classify(l)));
        assert_eq!(seen, vec![Incoming::Other, Incoming::Msg(m)]);
        assert_eq!(Proto::Nats.classify(b"PING\r"), Incoming::Ping);
        assert_eq!(Proto::Line.classify(b"[SERVER] Error: x"), Incoming::Error);
        assert_eq!(Msg::find(b"@@Dzz"), None);
        assert_eq!(Msg::find(b"a@b@@D0000000g"), None);
        let mut odd = b"x@y@".to_vec();
        m.encode(40, &mut odd);
        assert_eq!(Msg::find(&odd), Some(m));
        // A false marker before the real one does not hide it.
        let mut fake = b"@@Dnot-hex-at-all-but-long-enough-to-parse ".to_vec();
        m.encode(40, &mut fake);
        assert_eq!(Msg::find(&fake), Some(m));
    }

    #[test]
    fn finds_payloads_of_authors_named_by_their_node() {
        // A cluster's nodes name clients `guest7@a` (no JetStream) or `alice@b`; in other rooms
        // lines start with the room; a history replay with its time.
        let m = Msg {
            kind: Kind::Data,
            sender: 4,
            seq: 17,
            sent_ns: 99,
        };
        for prefix in [
            "guest7@a: ",
            "alice@b: ",
            "[#lobby] guest12@node-2: ",
            "[history 12:00:00] guest3@d: ",
            "x@@D@: ",
        ] {
            let mut line = prefix.as_bytes().to_vec();
            m.encode(64, &mut line);
            assert_eq!(Proto::Line.classify(&line), Incoming::Msg(m), "{prefix}");
        }
        assert_eq!(
            Proto::Line.classify(b"[SERVER] Node a: rooms shared through nats://127.0.0.1:4222; guests here are guestN@a"),
            Incoming::Other
        );
        assert_eq!(
            Proto::Line.classify(b"[SERVER] 3 messages from node b were lost on the bus"),
            Incoming::Other
        );
    }

    #[test]
    fn hex8_matches_a_plain_parse() {
        let plain = |s: &[u8]| -> Option<u64> {
            let s = std::str::from_utf8(s).ok()?;
            let ok = s
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            ok.then(|| u64::from_str_radix(s, 16).ok()).flatten()
        };
        for pos in 0..8 {
            for c in 0..=255u8 {
                let mut s = *b"09afbe71";
                s[pos] = c;
                assert_eq!(hex8(&s), plain(&s), "{s:?}");
            }
        }
        assert_eq!(parse_hex(b"00000000deadbeef"), Some(0xdead_beef));
    }

    #[test]
    fn websocket_messages_are_masked_text_frames() {
        let m = Msg {
            kind: Kind::Data,
            sender: 3,
            seq: 9,
            sent_ns: 42,
        };
        for size in [MIN_SIZE, 64, 200] {
            let mut out = Vec::new();
            Proto::WebSocket.frame(&m, size, &mut out);
            let header = if size < 126 { 2 } else { 4 };
            assert_eq!(out.len(), header + 4 + size);
            assert_eq!((out[0], out[1] & 0x80), (0x81, 0x80), "final text, masked");
            let mask: [u8; 4] = out[header..header + 4].try_into().unwrap();
            let mut payload = out[header + 4..].to_vec();
            crate::ws::apply_mask(&mut payload, mask, 0);
            assert_eq!(Msg::find(&payload), Some(m));
        }
        assert_eq!(
            Proto::WebSocket.classify(b"[SERVER] Error: message too long (max 200 bytes)"),
            Incoming::Error
        );
    }

    #[test]
    fn each_line_keeps_partial_tail() {
        let mut n = 0;
        assert_eq!(each_line(b"a\nbb\ncc", |_| n += 1), 5);
        assert_eq!(n, 2);
    }
}
