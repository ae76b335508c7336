//! The WebSocket decoder (`codec::websocket::Decoder`) fed a client's bytes however they are
//! cut, with bytes handed back as a reader out of budget does, against the same bytes decoded
//! in one piece and against a slow model of the protocol (docs/protocol.md, "The web door").

use loopchat::codec::websocket::{Decoder, Input as WsInput};

use crate::Input;

/// The most a control frame carries (RFC 6455, section 5.5).
const MAX_CONTROL: usize = 125;
/// The longest frame header (2 + 8 bytes of length + 4 of mask).
const MAX_HEADER: usize = 14;
/// The longest close frame the decoder makes: header, status, and its longest reason.
const MAX_CLOSE: usize = 2 + 2 + 42;

/// What the decoder hands out, owned, comparable across decoders.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Line(Vec<u8>),
    TooLong,
    /// A pong's payload.
    Pong(Vec<u8>),
    /// A close's status.
    Close(u16),
}

/// Checks the bytes the decoder asks to send and owns what it handed out.
fn own(input: WsInput<'_>, max_line: usize) -> Got {
    match input {
        WsInput::Line(line) => {
            assert!(
                line.len() <= max_line,
                "a line of {} bytes with --max-line {max_line}",
                line.len()
            );
            assert!(
                std::str::from_utf8(line).is_ok(),
                "a line that is not UTF-8: {line:?}"
            );
            Got::Line(line.to_vec())
        }
        WsInput::TooLong => Got::TooLong,
        WsInput::Reply(bytes) => {
            let payload = server_frame(&bytes, 0xA);
            assert!(payload.len() <= MAX_CONTROL, "a pong of {}", payload.len());
            Got::Pong(payload.to_vec())
        }
        WsInput::Close(bytes) => {
            let payload = server_frame(&bytes, 0x8);
            assert!(payload.len() >= 2, "a close without its status: {bytes:?}");
            assert!(
                std::str::from_utf8(&payload[2..]).is_ok(),
                "a close reason that is not UTF-8: {bytes:?}"
            );
            Got::Close(u16::from_be_bytes([payload[0], payload[1]]))
        }
    }
}

/// The payload of a frame the server sends: final, unmasked, no reserved bit, this opcode, a
/// 7-bit length (control frames carry at most 125 bytes) that matches.
fn server_frame(bytes: &[u8], opcode: u8) -> &[u8] {
    assert!(bytes.len() >= 2, "a frame of {} bytes", bytes.len());
    assert_eq!(bytes[0], 0x80 | opcode, "first byte of {bytes:?}");
    assert_eq!(
        usize::from(bytes[1]),
        bytes.len() - 2,
        "length of {bytes:?}"
    );
    &bytes[2..]
}

/// The bytes decoded in one piece, as a reader with budget for all of them does.
fn whole(max_line: usize, stream: &[u8]) -> Vec<Got> {
    let mut d = Decoder::new(max_line);
    let mut input = stream;
    let mut got = Vec::new();
    while let Some(i) = d.next(&mut input) {
        got.push(own(i, max_line));
    }
    assert!(input.is_empty(), "next() returned None with input left");
    got
}

/// The specification, read slowly: frames parsed from the whole stream, one at a time, with no
/// state but the message being assembled.
fn model(max_line: usize, stream: &[u8]) -> Vec<Got> {
    let mut got = Vec::new();
    let mut at = 0;
    // The text message being assembled: its bytes so far (None once over the cap).
    let mut message: Option<Option<Vec<u8>>> = None;
    loop {
        let Some(&[b0, b1]) = stream.get(at..at + 2) else {
            return got;
        };
        let (fin, rsv, opcode, masked) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0F, b1 & 0x80 != 0);
        let (len, mut header) = match b1 & 0x7F {
            126 => match stream.get(at + 2..at + 4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return got,
            },
            127 => match stream.get(at + 2..at + 10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap()), 10),
                None => return got,
            },
            n => (u64::from(n), 2),
        };
        if masked {
            header += 4;
        }
        if stream.len() < at + header {
            return got;
        }
        // What breaks the protocol is known from the header.
        let control = opcode >= 0x8;
        let status = if !masked || rsv != 0 || len >> 63 != 0 {
            Some(1002)
        } else {
            match opcode {
                0x8..=0xA if !fin || len > MAX_CONTROL as u64 => Some(1002),
                0x8..=0xA => None,
                0x1 if message.is_some() => Some(1002),
                0x0 if message.is_none() => Some(1002),
                0x0 | 0x1 => None,
                0x2 => Some(1003),
                _ => Some(1002),
            }
        };
        if let Some(status) = status {
            got.push(Got::Close(status));
            return got;
        }
        let mask: [u8; 4] = stream[at + header - 4..at + header].try_into().unwrap();
        let start = at + header;
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= stream.len())
        else {
            return got; // the payload is still to come
        };
        let payload: Vec<u8> = stream[start..end]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        at = end;
        if control {
            match opcode {
                0x9 => got.push(Got::Pong(payload)),
                0xA => {}
                _ => {
                    // Echoed if it is a status an endpoint may send (RFC 6455, section
                    // 7.4); none is a normal close; anything else breaks the protocol.
                    let status = match payload.len() {
                        0 => 1000,
                        1 => 1002,
                        _ => match u16::from_be_bytes([payload[0], payload[1]]) {
                            code @ (1000..=1003 | 1007..=1014 | 3000..=4999) => code,
                            _ => 1002,
                        },
                    };
                    got.push(Got::Close(status));
                    return got;
                }
            }
            continue;
        }
        let assembled = message.get_or_insert_with(|| Some(Vec::new()));
        if let Some(bytes) = assembled {
            bytes.extend_from_slice(&payload);
            if bytes.len() > max_line {
                *assembled = None;
            }
        }
        if fin {
            match message.take().unwrap() {
                None => got.push(Got::TooLong),
                Some(bytes) if std::str::from_utf8(&bytes).is_err() => {
                    got.push(Got::Close(1007));
                    return got;
                }
                Some(bytes) => got.push(Got::Line(bytes)),
            }
        }
    }
}

/// Input: a byte of `--max-line` (1 to 32); a byte `n`, then `n % 8 + 1` bytes of schedule;
/// the rest is the client's stream, cut into reads by the schedule, used in a cycle. Each
/// schedule byte is `len | kind << 5`:
/// - kinds 0 to 3: a read of `len + 1` (1 to 32) bytes, decoded to the end;
/// - kind 4: a read of `len + 1` bytes, all handed back with `keep` (a reader with no budget);
/// - kinds 5, 6: a read of `len + 1` bytes of which 1 or 2 inputs are taken and the rest is
///   handed back with `keep`, as a reader whose budget runs out does;
/// - kind 7: a read of `8 * (len + 1)` bytes, decoded to the end.
///
/// At the end, what waits is taken. Checked: no panic; what comes out is what the same bytes
/// decoded in one piece give, and what the model gives; `next()` uses up its input whenever it
/// returns `None`; nothing comes out after a close; every line is UTF-8 and at most the cap;
/// pongs and closes are well-formed server frames; and the decoder holds at most an unfinished
/// header, a message, a control payload, and what was handed back to it (decoded).
pub fn websocket(data: &[u8]) {
    let mut input = Input::new(data);
    let max_line = usize::from(input.byte() % 32) + 1;
    let n = usize::from(input.byte() % 8) + 1;
    let schedule = input.take(n).to_vec();
    let stream = input.take(data.len());

    let want = whole(max_line, stream);
    assert_eq!(
        want,
        model(max_line, stream),
        "--max-line {max_line}: the decoder in one piece against the model"
    );

    let mut d = Decoder::new(max_line);
    let mut got = Vec::new();
    // Bytes handed back since nothing last waited: what the backlog is made of.
    let mut kept = 0usize;
    let mut kept_ever = false;
    let mut rest = stream;
    for &entry in schedule.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let len = usize::from(entry & 0x1F) + 1;
        let kind = entry >> 5;
        let len = if kind == 7 { 8 * len } else { len };
        let (mut read, after) = rest.split_at(len.min(rest.len()));
        rest = after;
        let takes = match kind {
            4 => Some(0),
            5 => Some(1),
            6 => Some(2),
            _ => None,
        };
        let mut taken = 0;
        while takes.is_none_or(|most| taken < most) {
            let Some(i) = d.next(&mut read) else {
                assert!(read.is_empty(), "next() returned None with input left");
                break;
            };
            got.push(own(i, max_line));
            taken += 1;
        }
        if !d.has_line() {
            kept = 0;
        }
        if takes.is_some() {
            kept += read.len();
            kept_ever |= !read.is_empty();
            d.keep(read);
        }
        check_held(&d, max_line, kept, kept_ever);
        if !d.has_line() {
            kept = 0;
        }
    }
    // What waits is taken, with no more input.
    let mut none: &[u8] = &[];
    while let Some(i) = d.next(&mut none) {
        got.push(own(i, max_line));
    }
    assert!(!d.has_line(), "an input waits after everything was taken");
    assert_eq!(
        got, want,
        "--max-line {max_line}, schedule {schedule:?}: cut and handed back against one piece"
    );
    // Nothing comes out after a close.
    if let Some(at) = got.iter().position(|g| matches!(g, Got::Close(_))) {
        assert_eq!(at, got.len() - 1, "inputs after a close: {got:?}");
        let mut more: &[u8] = b"\x81\x80\0\0\0\0\x89\x80\0\0\0\0";
        assert_eq!(d.next(&mut more), None, "an input after a close");
        d.keep(b"\x81\x80\0\0\0\0");
        assert!(!d.has_line(), "an input kept after a close");
    }
}

/// The decoder holds at most: an unfinished header, the message being assembled (or the last
/// line, lent out), a control frame's payload; once bytes were handed back, a line of them lent
/// out; and what waits, decoded. What waits comes from the `kept` bytes handed back since
/// nothing waited, each input no larger than its bytes, except a close (its reason), and one
/// line and one pong begun before the bytes were handed back, whose first bytes were held
/// already (such a line is then held twice: as the message, and waiting).
fn check_held(d: &Decoder, max_line: usize, kept: usize, kept_ever: bool) {
    let live = MAX_HEADER + max_line + MAX_CONTROL;
    let lent = if kept_ever { max_line } else { 0 };
    let waiting = if d.has_line() {
        kept + MAX_CLOSE + max_line + 2 + MAX_CONTROL
    } else {
        0
    };
    assert!(
        d.held() <= live + lent + waiting,
        "holds {} bytes with --max-line {max_line}, {kept} bytes handed back, {} waiting",
        d.held(),
        if d.has_line() { "inputs" } else { "nothing" },
    );
}
