//! The NATS decoder (`nats::Decoder`) fed a server's bytes however they are cut, against the
//! same bytes decoded in one piece, and every op it hands out against its own reading of the op
//! written back the way nats-server writes it.

use loopchat::nats::{self, Decoder, MAX_CONTROL, MAX_INFO, Msg, Op, ProtocolError, SLACK};

use crate::Input;

type Got = Result<Op, ProtocolError>;

/// The bytes decoded in one piece; and the messages skipped.
fn whole(max_payload: usize, stream: &[u8]) -> (Vec<Got>, u64) {
    let mut d = Decoder::new(max_payload);
    let mut input = stream;
    let mut got = Vec::new();
    while let Some(op) = d.next(&mut input) {
        got.push(op);
    }
    assert!(input.is_empty(), "next() returned None with input left");
    (got, d.skipped())
}

/// An op as nats-server writes it; `None` when that form's line is over a limit the original's
/// was not (quotes added around an error's text, a header block written longer).
fn written(op: &Op) -> Option<Vec<u8>> {
    let out = match op {
        Op::Info(json) => format!("INFO {json}\r\n").into_bytes(),
        Op::Ping => b"PING\r\n".to_vec(),
        Op::Pong => b"PONG\r\n".to_vec(),
        Op::Ok => b"+OK\r\n".to_vec(),
        Op::Err(text) => format!("-ERR '{text}'\r\n").into_bytes(),
        Op::Msg(msg) => delivered(msg),
    };
    let line = out.iter().position(|&b| b == b'\n').unwrap();
    let limit = if matches!(op, Op::Info(_)) {
        MAX_INFO
    } else {
        MAX_CONTROL
    };
    (line <= limit).then_some(out)
}

/// A message as nats-server delivers it: the header block as `nats::publish` writes it, under
/// the message's own subject, sid and reply.
fn delivered(msg: &Msg) -> Vec<u8> {
    let mut published = Vec::new();
    nats::publish(
        &mut published,
        "x",
        None,
        msg.headers.as_ref(),
        &msg.payload,
    );
    let lf = published.iter().position(|&b| b == b'\n').unwrap();
    // `PUB x <sizes>` or `HPUB x <sizes>`.
    let line = std::str::from_utf8(&published[..lf - 1]).unwrap();
    let (op, sizes) = line.split_once(" x ").unwrap();
    let op = if op == "PUB" { "MSG" } else { "HMSG" };
    let mut out = format!("{op} {} {}", msg.subject, msg.sid).into_bytes();
    if let Some(reply) = &msg.reply {
        out.push(b' ');
        out.extend_from_slice(reply.as_bytes());
    }
    out.extend_from_slice(format!(" {sizes}").as_bytes());
    out.extend_from_slice(&published[lf - 1..]);
    out
}

/// Input: a byte of `max_payload` (0 to 255, in units of 8 bytes); a byte `n`, then `n % 8 + 1`
/// bytes of schedule; the rest is the server's stream, cut into reads by the schedule, used in
/// a cycle: each byte `b` a read of `b % 64 + 1` bytes, times 16 if `b & 0x40`.
///
/// Checked: no panic; the ops and errors, and the messages skipped, are those of the stream in
/// one piece; `next()` uses up its input whenever it returns `None`, and holds nothing when it
/// hands out an op, and otherwise at most the bytes it consumed since (and the protocol's
/// bound); nothing comes out after an error; a message is at most `max_payload` plus the slack;
/// and every op, written back as nats-server writes it, reads back as itself.
pub fn nats(data: &[u8]) {
    let mut input = Input::new(data);
    let max_payload = usize::from(input.byte()) * 8;
    let n = usize::from(input.byte() % 8) + 1;
    let schedule = input.take(n).to_vec();
    let stream = input.take(data.len());

    let (want, skipped) = whole(max_payload, stream);
    let bound = MAX_INFO.max(MAX_CONTROL + max_payload + SLACK + 2);

    let mut d = Decoder::new(max_payload);
    let mut got = Vec::new();
    // Bytes consumed since the last op was handed out.
    let mut since = 0;
    let mut rest = stream;
    for &entry in schedule.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let len = usize::from(entry % 64) + 1;
        let len = if entry & 0x40 != 0 { 16 * len } else { len };
        let (mut read, after) = rest.split_at(len.min(rest.len()));
        rest = after;
        loop {
            let before = read.len();
            let op = d.next(&mut read);
            since += before - read.len();
            let Some(op) = op else {
                assert!(read.is_empty(), "next() returned None with input left");
                assert!(
                    d.held() <= since.min(bound),
                    "holds {} bytes after consuming {since} since the last op",
                    d.held()
                );
                break;
            };
            assert_eq!(d.held(), 0, "holds bytes after handing out {op:?}");
            got.push(op);
            since = 0;
        }
    }
    assert_eq!(
        got, want,
        "max_payload {max_payload}, schedule {schedule:?}: cut against one piece"
    );
    assert_eq!(
        d.skipped(),
        skipped,
        "messages skipped, cut against one piece"
    );

    if let Some(at) = got.iter().position(Result::is_err) {
        assert_eq!(at, got.len() - 1, "ops after an error: {got:?}");
        let mut more: &[u8] = b"PING\r\n";
        assert_eq!(d.next(&mut more), None, "an op after an error");
        assert!(more.is_empty() && d.held() == 0);
    }
    for op in got.iter().filter_map(|g| g.as_ref().ok()) {
        if let Op::Msg(msg) = op {
            assert!(
                msg.payload.len() <= max_payload + SLACK,
                "a payload of {} bytes with max_payload {max_payload}",
                msg.payload.len()
            );
        }
        let Some(bytes) = written(op) else { continue };
        let (again, skipped) = whole(usize::MAX, &bytes);
        assert_eq!(
            (again, skipped),
            (vec![Ok(op.clone())], 0),
            "{op:?} written back as {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}
