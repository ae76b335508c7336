//! The whole server (the sans-IO engine) driven by an arbitrary sequence of events, with fake
//! sockets and a fake clock, checked after every call.
//!
//! Messages are tagged `#N.` (a number no other message has) so that the harness can find them
//! in the transcript, the server's record of what it accepted, in which room and in which order,
//! and in what each fake socket received. Other bytes the fuzzer sends never contain `#` and so
//! are never taken for a tag; room names (`#a`, `#b`) never have a digit and a dot after the `#`.
//!
//! Clients join and leave rooms: the harness follows each client's rooms in what the client
//! itself received (`You joined #a`, `You left #a`), so that it knows, for every message, which
//! clients were owed it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use loopchat::config::{self, Parsed};
use loopchat::engine::fake::FakeSocket as Fake;
use loopchat::engine::{Engine, Peer, Reading, SCRATCH, State, Writing};

use crate::Input;

/// What the harness knows about a client, beyond what the engine shows.
struct Client {
    key: usize,
    /// Bytes it has yet to send: they reach its socket in chunks.
    outbox: Vec<u8>,
    /// The engine call that admitted it.
    joined: usize,
    /// The call in which it stopped being surely in the room: it is owed what was accepted
    /// before.
    left: Option<usize>,
    /// The call after which it is surely out of the room: it may have had what was accepted
    /// up to then. The same as `left` but for a client made to close by the shutdown, which
    /// stays in the room (it hears the console and UDP) until it is kicked or closed.
    gone: Option<usize>,
    shutdown_member: bool,
    /// The server discarded or refused output for it (overflow, socket error, linger over).
    dropped: bool,
    /// Its state after the last engine call.
    state: State,
    /// What its socket took, once the engine handed it back.
    final_sent: Option<Vec<u8>>,
    /// Bytes and lines of its output (sent, then still owed) already looked at for joins and
    /// leaves.
    scanned: usize,
    lines_scanned: usize,
    /// Its time in each room, in the order they began.
    stays: Vec<Stay>,
}

/// A client's time in a room, by the engine calls and the lines of its own output that begin
/// and end it.
struct Stay {
    room: String,
    /// The call of the join: messages of the room accepted after it are owed.
    joined: usize,
    /// The line of its output that says it joined.
    first_line: usize,
    /// The call of `/part` and the line that says it, once it left the room that way.
    parted: Option<(usize, usize)>,
}

/// Where a message went: a room, or every client (the console's plain lines).
const EVERYONE: &str = "*";
const LOBBY: &str = "#lobby";

/// A message the server accepted: in the transcript, in this order.
struct Accepted {
    tag: u64,
    /// `None` for the console and UDP.
    sender: Option<usize>,
    /// Its room, lowercased, or [`EVERYONE`].
    room: String,
    call: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Flush,
    Other,
}

const MAX_LINE: usize = 16;
const MAX_CLIENTS: usize = 6;
const MAX_OPS: usize = 4096;
/// How far each step of the clock goes, in milliseconds: around the flush-partial quiet
/// (100 ms), the rate (2 a second), the idle timeout (3 s) and the linger (2 s).
const STEPS: [u64; 14] = [
    1, 20, 99, 100, 101, 250, 500, 999, 1000, 2000, 2001, 3000, 5000, 10_000,
];

/// Lines and pieces of lines a client may send: commands, exit words, other protocols, the
/// starts of commands that a tagged message can complete.
const CLIENT_WORDS: [&[u8]; 39] = [
    // The web door: a WebSocket handshake (its client then sends frames), a page view, and a
    // head that never ends.
    b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\n",
    b"/nick alice\n",
    b"/nick ALICE\n",
    b"/nick SERVER\n",
    b"/nick guest2\n",
    b"/who\n",
    b"/help\n",
    b"/quit\n",
    b"exit\n",
    b"#LOGOUT\r\n",
    b"/me waves\n",
    b"/me ",
    b"/msg guest1 ",
    b"/msg alice hi\n",
    b"/nick ",
    b"\r\n",
    b"\n",
    b"\r",
    b"  \t",
    b"GET / HTTP/1.1\r\n",
    b"\x16\x03\x01",
    b"0123456789abcdefghij\n",
    b"0123456789abcde",
    b"//x\n",
    b"\xff\xfe\xc2\x9b\n",
    b"\x1b[2Jhi\n",
    b"/dance\n",
    b"/join #a\n",
    b"/join #b\n",
    b"/join #lobby\n",
    b"/part\n",
    b"/part #a\n",
    b"/part #lobby\n",
    b"/topic #a ",
    b"/rooms\n",
    b"/history\n",
    b"/who #a\n",
];

const CONSOLE_WORDS: [&str; 12] = [
    "/who",
    "/stats",
    "/kick guest1",
    "/kick alice",
    "/shutdown",
    "/help",
    "/nope",
    "hello",
    "//x",
    " ",
    "/rooms",
    "/who #b",
];

struct Run {
    engine: Engine<Fake>,
    max_pending: usize,
    rate: u32,
    t0: Instant,
    now: Instant,
    clients: Vec<Client>,
    /// Engine key to client, for those still in the engine's table.
    by_key: HashMap<usize, usize>,
    /// The connections the last turn handed back, until they are looked at.
    handed_back: Vec<Peer<Fake>>,
    /// Every tag handed out, and who sent it.
    tags: HashMap<u64, Option<usize>>,
    accepted: Vec<Accepted>,
    /// Engine calls made so far; the current one's number.
    call: usize,
    /// The server still accepts connections (it stops in the turn it starts shutting down).
    accepting: bool,
    finished: bool,
    trace: bool,
}

/// `LOOPCHAT_FUZZ_TRACE=1` prints every event to stderr as it happens (off while fuzzing).
fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("LOOPCHAT_FUZZ_TRACE").is_some())
}

/// Input: a byte of configuration, then events (see [`Run::op`]).
///
/// Checked after every engine call: no panic; each client's unframed input at most about a
/// line's worth, its queued output at most `--max-pending`; no message accepted twice. After
/// every turn: nothing owed is left unwritten unless the socket is full. At the end: every
/// message accepted from a client (or the console, or UDP) was queued exactly once, in the
/// transcript's order, to every other client that was in the room at the time, and nothing
/// else was: a client the server dropped got a prefix of that. Then, given time and readers,
/// every client's input is read and its output written.
pub fn engine(data: &[u8]) {
    let mut input = Input::new(data);
    let mut run = Run::new(input.byte());
    let mut ops = 0;
    while !input.is_empty() && !run.finished && ops < MAX_OPS {
        run.op(&mut input);
        ops += 1;
    }
    run.settle();
    run.check_deliveries();
}

impl Run {
    fn new(flags: u8) -> Run {
        let mut args = vec![
            "--max-line".to_owned(),
            MAX_LINE.to_string(),
            "--max-clients".to_owned(),
            MAX_CLIENTS.to_string(),
        ];
        let mut flag = |bit: u8, name: &str, on: &str, off: &str| {
            args.push(name.to_owned());
            args.push(if flags & bit != 0 { on } else { off }.to_owned());
        };
        flag(1, "--rate", "2", "0");
        flag(2, "--flush-partial", "0", "100");
        flag(4, "--idle-timeout", "3", "0");
        flag(8, "--announce-limit", "2", "100");
        flag(16, "--max-per-ip", "1", "0");
        flag(32, "--max-pending", "1024", "256");
        let Ok(Parsed::Run(config)) = config::parse("fuzz", &args) else {
            panic!("bad flags {args:?}");
        };
        let t0 = Instant::now();
        let trace = tracing();
        if trace {
            eprintln!("flags {args:?}");
        }
        Run {
            max_pending: config.max_pending,
            rate: config.rate,
            engine: Engine::new(config, t0),
            t0,
            now: t0,
            clients: Vec::new(),
            by_key: HashMap::new(),
            handed_back: Vec::new(),
            tags: HashMap::new(),
            accepted: Vec::new(),
            call: 0,
            accepting: true,
            finished: false,
            trace,
        }
    }

    /// With tracing on, each event is printed as it happens: a hang shows where it hangs.
    fn note(&mut self, what: impl FnOnce() -> String) {
        if self.trace {
            let ms = self.now.duration_since(self.t0).as_millis();
            eprintln!("{ms:>6} ms  {}", what());
        }
    }

    fn fail(&self, what: String) -> ! {
        if self.trace {
            panic!("{what} (the events are above)");
        }
        panic!("{what} (LOOPCHAT_FUZZ_TRACE=1 shows the events)");
    }

    /// A client still in the engine's table, chosen by the next byte.
    fn pick(&mut self, input: &mut Input<'_>) -> Option<(usize, usize)> {
        let b = usize::from(input.byte());
        let mut live: Vec<(usize, usize)> = self.by_key.iter().map(|(&k, &c)| (c, k)).collect();
        live.sort_unstable();
        live.get(b % live.len().max(1)).copied()
    }

    fn tag(&mut self, sender: Option<usize>) -> String {
        let tag = self.tags.len() as u64;
        self.tags.insert(tag, sender);
        format!("#{tag}.")
    }

    fn socket(&mut self, key: usize) -> &mut Fake {
        self.engine.socket_mut(key).expect("a live client")
    }

    /// One event. The op byte's low four bits say which; the bytes after it, its arguments.
    fn op(&mut self, input: &mut Input<'_>) {
        let op = input.byte();
        match op & 15 {
            0 => {
                let last = input.byte() % 4;
                self.connect(last);
            }
            1..=7 | 13 | 14 => {
                let Some((c, key)) = self.pick(input) else {
                    return;
                };
                self.client_op(op & 15, c, key, input);
            }
            8 => {
                let step = STEPS[usize::from(input.byte()) % STEPS.len()];
                self.now += Duration::from_millis(step);
                self.note(|| format!("+{step} ms"));
                self.turn();
            }
            10 => {
                let b = input.byte();
                let line = match CONSOLE_WORDS.get(usize::from(b)) {
                    Some(word) => (*word).to_owned(),
                    // A line for one room (never the lobby, whose line looks like the one
                    // for everyone), or for everyone.
                    None if b.is_multiple_of(3) => format!("/say #a {}", self.tag(None)),
                    None if b % 3 == 1 => format!("/say #b {}", self.tag(None)),
                    None => self.tag(None),
                };
                self.note(|| format!("console {line:?}"));
                let was_stopping = self.engine.is_stopping();
                self.call += 1;
                // `/shutdown`: the engine says so, and the server begins it.
                if self.engine.console(line.as_bytes(), self.now) {
                    self.engine.begin_shutdown(self.now);
                }
                self.after(Call::Other, was_stopping);
            }
            11 => {
                let b = input.byte();
                let bytes = match b {
                    0..=7 => CLIENT_WORDS[usize::from(b) * 3].to_vec(),
                    8..=15 => junk(input.take(usize::from(b - 8) * 4)),
                    _ => format!("{}\n", self.tag(None)).into_bytes(),
                };
                let from = SocketAddr::from(([10, 0, 0, 9], 9));
                self.note(|| format!("datagram {:?}", String::from_utf8_lossy(&bytes)));
                self.call += 1;
                let reply = self.engine.datagram(&bytes, from, self.now);
                // Without --rate every datagram with text is answered.
                if reply.is_none()
                    && self.rate == 0
                    && !loopchat::text::is_blank(&loopchat::text::clean(&bytes))
                {
                    self.fail(format!("no answer to the datagram {bytes:?}"));
                }
                self.after(Call::Other, self.engine.is_stopping());
            }
            12 => {
                self.note(|| "shutdown signal".into());
                let was_stopping = self.engine.is_stopping();
                self.call += 1;
                self.engine.begin_shutdown(self.now);
                self.after(Call::Other, was_stopping);
            }
            _ => {
                self.note(|| "turn".into());
                self.turn();
            }
        }
    }

    fn connect(&mut self, last: u8) {
        if !self.accepting {
            return;
        }
        // 127.0.0.1 is exempt from --max-per-ip; 10.0.0.x are not.
        let addr = match last {
            0 => SocketAddr::from(([127, 0, 0, 1], 40000)),
            n => SocketAddr::from(([10, 0, 0, n], 40000)),
        };
        let id = self.clients.len();
        let fake = Fake::new(id);
        self.call += 1;
        let stopping = self.engine.is_stopping();
        match self.engine.join(fake, addr, self.now) {
            Ok(key) => {
                self.note(|| format!("connect {addr} as client {id} (key {key})"));
                if self.by_key.insert(key, id).is_some() {
                    self.fail(format!("key {key} given while still in use"));
                }
                self.clients.push(Client {
                    key,
                    outbox: Vec::new(),
                    joined: self.call,
                    left: None,
                    gone: None,
                    shutdown_member: false,
                    dropped: false,
                    state: State::Open,
                    final_sent: None,
                    scanned: 0,
                    lines_scanned: 0,
                    stays: Vec::new(),
                });
            }
            Err((_, refusal)) => {
                self.note(|| format!("connect {addr} refused: {refusal}"));
                if self.by_key.len() < MAX_CLIENTS && last == 0 {
                    self.fail(format!("refused with room to spare: {refusal}"));
                }
            }
        }
        self.after(Call::Other, stopping);
    }

    fn client_op(&mut self, op: u8, c: usize, key: usize, input: &mut Input<'_>) {
        match op {
            1 => {
                let tag = self.tag(Some(c));
                self.note(|| format!("client {c} will send {tag:?}"));
                let line = format!("{tag}\n");
                let bytes = self.as_client_sends(key, line.as_bytes());
                self.clients[c].outbox.extend_from_slice(&bytes);
            }
            2 => {
                let len = usize::from(input.byte() % 32);
                let bytes = junk(input.take(len));
                self.note(|| format!("client {c} will send {:?}", String::from_utf8_lossy(&bytes)));
                self.clients[c].outbox.extend_from_slice(&bytes);
            }
            3 => {
                let word = CLIENT_WORDS[usize::from(input.byte()) % CLIENT_WORDS.len()];
                self.note(|| format!("client {c} will send {:?}", String::from_utf8_lossy(word)));
                let bytes = self.as_client_sends(key, word);
                self.clients[c].outbox.extend_from_slice(&bytes);
            }
            4 => {
                // A read of n bytes of what it sent (0: all of it).
                let n = usize::from(input.byte());
                let outbox = &mut self.clients[c].outbox;
                let n = if n == 0 {
                    outbox.len()
                } else {
                    n.min(outbox.len())
                };
                let chunk: Vec<u8> = outbox.drain(..n).collect();
                self.note(|| format!("client {c} sends {:?}", String::from_utf8_lossy(&chunk)));
                if !chunk.is_empty() {
                    // An empty chunk would read as the end of the stream; an empty read
                    // event (a spurious wakeup) is still a read.
                    self.socket(key).input.push_back(chunk);
                }
                self.readable(key);
            }
            5 => {
                self.note(|| format!("client {c} ends its stream"));
                self.socket(key).eof = true;
                self.readable(key);
            }
            6 => {
                self.note(|| format!("client {c} stops reading"));
                self.socket(key).room = 0;
            }
            7 => {
                let n = usize::from(input.byte());
                self.note(|| format!("client {c} reads {n}x8 bytes (0: all)"));
                let socket = self.socket(key);
                socket.room = if n == 0 {
                    usize::MAX
                } else {
                    socket.room.saturating_add(n * 8)
                };
                self.call += 1;
                self.engine.writable(key);
                self.after(Call::Other, self.engine.is_stopping());
            }
            13 => {
                self.note(|| format!("client {c}: connection reset (read)"));
                self.socket(key).fail_read = true;
                self.readable(key);
            }
            _ => {
                self.note(|| format!("client {c}: broken pipe (write)"));
                self.socket(key).fail_write = true;
                self.call += 1;
                self.engine.writable(key);
                self.after(Call::Other, self.engine.is_stopping());
            }
        }
    }

    /// A line as the client sends it: as it is, or, once the server has made it a WebSocket
    /// client, as a masked text frame.
    fn as_client_sends(&self, key: usize, line: &[u8]) -> Vec<u8> {
        let peer = self.engine.peer(key).expect("a live client");
        let stream: Vec<u8> = peer.socket.sent.iter().take(16).copied().collect();
        if !stream.starts_with(b"HTTP/1.1 101 ") {
            return line.to_vec();
        }
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut frame = vec![0x81, 0x80 | text.len().min(125) as u8];
        frame.extend_from_slice(&mask);
        frame.extend(
            text.iter()
                .take(125)
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4]),
        );
        frame
    }

    fn readable(&mut self, key: usize) {
        self.call += 1;
        self.engine.read(key, self.now);
        self.after(Call::Other, self.engine.is_stopping());
    }

    /// The end of a turn of the event loop, in the server's order: timers, clients left with
    /// input, writes, closes.
    fn turn(&mut self) {
        let stopping = self.engine.is_stopping();
        self.call += 1;
        self.engine.tick(self.now);
        self.after(Call::Other, stopping);
        self.call += 1;
        self.handed_back = self.engine.end_turn(self.now);
        self.after(Call::Flush, stopping);
        for peer in std::mem::take(&mut self.handed_back) {
            let c = peer.socket.id;
            if peer.state != State::Closed {
                self.fail(format!("client {c} handed back while {:?}", peer.state));
            }
            let client = &mut self.clients[c];
            self.by_key.remove(&client.key);
            client.final_sent = Some(peer.socket.sent);
            self.note(|| format!("client {c} closed"));
        }
        // Nothing owed may wait for an event that will not come.
        for (&key, &c) in &self.by_key {
            let peer = self.engine.peer(key).expect("in the table");
            if peer.state == State::Closed {
                self.fail(format!("client {c} closed but not handed back"));
            }
            if !peer.owed.is_empty() && peer.writing != Writing::Blocked {
                self.fail(format!(
                    "client {c}: {} bytes owed, not written",
                    peer.owed.len()
                ));
            }
            if peer.state == State::Closing && peer.writing != Writing::Blocked {
                self.fail(format!("client {c}: closing, nothing to write, not closed"));
            }
        }
        if self.engine.is_stopping() {
            self.accepting = false;
        }
        self.finished = self.engine.is_finished(self.now);
    }

    /// After each engine call: what it accepted, and where each client stands.
    fn after(&mut self, call: Call, was_stopping: bool) {
        let shutdown_began = !was_stopping && self.engine.is_stopping();
        let transcript = std::mem::take(self.engine.transcript());
        for line in transcript.split(|&b| b == b'\n') {
            let Some((room, tag)) = room_line(line) else {
                continue;
            };
            let Some(&sender) = self.tags.get(&tag) else {
                self.fail(format!("accepted a message nobody sent: {line:?}"));
            };
            if self.accepted.iter().any(|a| a.tag == tag) {
                self.fail(format!(
                    "accepted twice: {:?}",
                    String::from_utf8_lossy(line)
                ));
            }
            self.note(|| format!("  accepted {:?}", String::from_utf8_lossy(line)));
            self.accepted.push(Accepted {
                tag,
                sender,
                room,
                call: self.call,
            });
        }
        let mut keys: Vec<(usize, usize)> = self.by_key.iter().map(|(&k, &c)| (k, c)).collect();
        keys.sort_unstable();
        let mut kept = 0;
        for (key, c) in keys {
            let peer = self.engine.peer(key).or_else(|| {
                let mut back = self.handed_back.iter();
                back.find(|p| p.socket.id == c)
            });
            let Some(peer) = peer else {
                self.fail(format!(
                    "client {c} left the table before it was handed back"
                ));
            };
            // Beyond a line or two (the rate limit's), only a client stopped in the middle of a
            // read, by the room's budget or by its own long queue, may hold input (lines
            // waiting for its turn, or what is left of an over-long one, discarded when it
            // next sends), and all of them together no more than a few turns' worth: each read
            // is a share of a turn. A client on its way out keeps what it held until it is
            // handed back.
            let held = peer.codec.held();
            if held > 2 * (MAX_LINE + 2) && peer.state == State::Open {
                // (Or one just resumed, which the loop reads again before it sleeps.)
                let stopped = matches!(peer.reading, Reading::Waiting | Reading::Paused);
                if !stopped && peer.codec.has_line() && !self.engine.has_ready() {
                    self.fail(format!(
                        "client {c}: {held} bytes of input held while {:?}",
                        peer.reading
                    ));
                }
                kept += held;
                if kept > 3 * SCRATCH {
                    self.fail(format!("{kept} bytes of input held by waiting clients"));
                }
            }
            // A queue may pass --max-pending in one call, before its first write; after a
            // write the kernel refused, or at the end of a turn, it may not.
            if peer.owed.len() > self.max_pending
                && (peer.writing == Writing::Blocked || call == Call::Flush)
            {
                self.fail(format!("client {c}: {} bytes queued", peer.owed.len()));
            }
            if let Some(misuse) = peer.socket.misuse {
                self.fail(format!("client {c}: {misuse}"));
            }
            let (scanned, lines) =
                new_lines(&peer.socket.sent, &peer.owed.bytes, self.clients[c].scanned);
            let (state, overflowed, failed) = (peer.state, peer.overflowed, peer.socket.failed);
            let client = &mut self.clients[c];
            client.scanned = scanned;
            for line in lines {
                let at = client.lines_scanned;
                client.lines_scanned += 1;
                // Greeted (at once, or once the web door knows it is no browser): in the lobby.
                let greeted = line.starts_with(b"[SERVER] You are ") && client.stays.is_empty();
                if let Some(room) =
                    said(&line, "You joined ", " (").or(greeted.then(|| LOBBY.to_owned()))
                {
                    client.stays.push(Stay {
                        room,
                        joined: self.call,
                        first_line: at,
                        parted: None,
                    });
                } else if let Some(room) = said(&line, "You left ", ";") {
                    let stay = client
                        .stays
                        .iter_mut()
                        .rfind(|s| s.room == room && s.parted.is_none());
                    match stay {
                        Some(stay) => stay.parted = Some((self.call, at)),
                        None => self.fail(format!("client {c} left {room} without joining it")),
                    }
                }
            }
            let client = &mut self.clients[c];
            if client.left.is_none() && state != State::Open {
                client.left = Some(self.call);
                client.shutdown_member = shutdown_began && state == State::Closing;
            }
            if client.gone.is_none()
                && client.left.is_some()
                && (!client.shutdown_member || state == State::Closed)
            {
                client.gone = Some(self.call);
            }
            client.dropped |= overflowed || failed;
            if state == State::Closed && client.state != State::Closed {
                // A clean close: after the end of the stream was sent (draining), or by the
                // flush that wrote the last byte. Any other drops what was still owed.
                let clean = client.state == State::Draining
                    || (client.state == State::Closing && call == Call::Flush);
                client.dropped |= !clean;
            }
            if client.state != state && self.trace {
                eprintln!("         client {c}: {:?} -> {state:?}", client.state);
            }
            client.state = state;
        }
    }

    /// The end: every client reads everything and time goes on, until all is quiet.
    fn settle(&mut self) {
        if self.finished {
            return;
        }
        self.note(|| "settle: everyone reads".into());
        let mut keys: Vec<usize> = self.by_key.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            self.socket(key).room = usize::MAX;
            self.call += 1;
            self.engine.writable(key);
            self.after(Call::Other, self.engine.is_stopping());
        }
        // Rate-limited input takes its time: go on while anything moves, and call it stuck
        // after 10 s of nothing (longer than every timer but the idle timeout's 3 s).
        let mut still = 0;
        let mut last = self.progress();
        while still < 20 {
            self.turn();
            if self.finished || self.is_quiet() {
                return;
            }
            self.now += Duration::from_millis(500);
            let now = self.progress();
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        let stuck: Vec<usize> = self.by_key.values().copied().collect();
        self.fail(format!(
            "never quiet: clients {stuck:?} still have input or output"
        ));
    }

    /// What settling changes: messages accepted, bytes still to read or write, clients.
    fn progress(&self) -> (usize, usize, usize) {
        let bytes = self
            .by_key
            .keys()
            .map(|&key| {
                let peer = self.engine.peer(key).expect("in the table");
                let unread: usize = peer.socket.input.iter().map(Vec::len).sum();
                unread + peer.codec.held() + peer.owed.len()
            })
            .sum();
        (self.accepted.len(), bytes, self.by_key.len())
    }

    /// Every client's output written; every client in the room has had all its input read.
    fn is_quiet(&self) -> bool {
        self.by_key.keys().all(|&key| {
            let peer = self.engine.peer(key).expect("in the table");
            peer.owed.is_empty()
                && (peer.state != State::Open
                    || (peer.socket.input.is_empty() && !peer.socket.eof && !peer.codec.has_line()))
        })
    }

    /// Every client got, of each room it was in (and of the console's lines for everyone),
    /// every message accepted while it was there, exactly once and in the order accepted, and
    /// nothing from a room it was not in; a client the server dropped got a prefix of that.
    fn check_deliveries(&self) {
        for (c, client) in self.clients.iter().enumerate() {
            let stream = match &client.final_sent {
                Some(sent) => sent.clone(),
                None => {
                    let peer = self.engine.peer(client.key).expect("in the table");
                    let mut queued = peer.socket.sent.clone();
                    queued.extend_from_slice(&peer.owed.bytes);
                    queued
                }
            };
            let who = format!(
                "client {c} (joined at call {}, left at {:?}, gone at {:?}{})",
                client.joined,
                client.left,
                client.gone,
                if client.dropped { ", dropped" } else { "" }
            );
            let mut got: Vec<Vec<u64>> = vec![Vec::new(); client.stays.len()];
            let mut got_everyone = Vec::new();
            let (_, lines) = new_lines(&stream, &[], 0);
            for (at, line) in lines.iter().enumerate() {
                let Some((room, tag)) = room_line(line) else {
                    continue;
                };
                if room == EVERYONE {
                    got_everyone.push(tag);
                    continue;
                }
                let stay = client.stays.iter().position(|s| {
                    s.room == room
                        && s.first_line < at
                        && s.parted.is_none_or(|(_, last)| at < last)
                });
                match stay {
                    Some(i) => got[i].push(tag),
                    None => self.fail(format!("{who} got #{tag}. of {room}, not being in it")),
                }
            }
            let left = client.left.unwrap_or(usize::MAX);
            let gone = client.gone.unwrap_or(usize::MAX);
            for (stay, got) in client.stays.iter().zip(&got) {
                let (must_end, may_end) = match stay.parted {
                    Some((call, _)) => (call, call),
                    None => (left, gone),
                };
                let window = Window {
                    room: &stay.room,
                    first: stay.joined,
                    must_end,
                    may_end,
                };
                self.check_run(c, &who, &window, got);
            }
            // The console's lines for everyone reach it from its greeting on.
            let greeted = client.stays.first().map_or(usize::MAX, |s| s.joined);
            let everyone = Window {
                room: EVERYONE,
                first: greeted,
                must_end: left,
                may_end: gone,
            };
            self.check_run(c, &who, &everyone, &got_everyone);
        }
    }

    /// What one client got of one room during one stay: a run of the messages accepted in the
    /// window, in order, missing none that it was surely owed (unless dropped). Those accepted
    /// in the very call that began the stay may have come just before the join, or just after.
    fn check_run(&self, c: usize, who: &str, window: &Window<'_>, got: &[u64]) {
        let in_room = |a: &&Accepted| a.room == window.room && a.sender != Some(c);
        let may: Vec<&Accepted> = self
            .accepted
            .iter()
            .filter(in_room)
            .filter(|a| a.call >= window.first && a.call <= window.may_end)
            .collect();
        let tags: Vec<u64> = may.iter().map(|a| a.tag).collect();
        let same_call = may.iter().take_while(|a| a.call == window.first).count();
        let Some(skip) = (0..=same_call).find(|&k| tags[k..].starts_with(got)) else {
            self.fail(format!(
                "{who} got {got:?} of {}: not in order, twice, or not for it; owed {tags:?}",
                window.room
            ));
        };
        let client = &self.clients[c];
        let must: Vec<u64> = may
            .iter()
            .filter(|a| a.call > window.first && a.call < window.must_end)
            .map(|a| a.tag)
            .collect();
        let reached = skip + got.len();
        let missing = tags[reached.min(tags.len())..]
            .iter()
            .any(|t| must.contains(t));
        if !client.dropped && missing {
            self.fail(format!(
                "{who} got {got:?} of {}, owed {must:?}",
                window.room
            ));
        }
    }
}

/// The calls between which a client was in a room: it is owed what was accepted after `first`
/// and before `must_end`, and may have had what was accepted from `first` to `may_end`.
struct Window<'a> {
    room: &'a str,
    first: usize,
    must_end: usize,
    may_end: usize,
}

/// Fuzzer bytes for a client or a datagram, without `#` so that they never make a tag.
fn junk(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b == b'#' { b'_' } else { b })
        .collect()
}

/// The room (lowercased, or [`EVERYONE`]) and tag of a message line: live, not replayed
/// history, not the server's own lines or private messages (they are no broadcast).
fn room_line(line: &[u8]) -> Option<(String, u64)> {
    let (room, rest) = match line.strip_prefix(b"[#") {
        Some(after) => {
            let end = after.iter().position(|&b| b == b']')?;
            let room = format!("#{}", String::from_utf8_lossy(&after[..end]));
            (
                room.to_ascii_lowercase(),
                after[end + 1..].strip_prefix(b" ")?,
            )
        }
        None if line.starts_with(b"SERVER: ") => (EVERYONE.to_owned(), line),
        None => (LOBBY.to_owned(), line),
    };
    if [&b"[SERVER]"[..], b"[PM ", b"[history "]
        .iter()
        .any(|p| rest.starts_with(p))
    {
        return None;
    }
    Some((room, tag_in(rest)?))
}

/// The first `#N.` in a line.
fn tag_in(line: &[u8]) -> Option<u64> {
    let mut rest = line;
    while let Some(at) = rest.iter().position(|&b| b == b'#') {
        rest = &rest[at + 1..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && rest.get(digits) == Some(&b'.') {
            return std::str::from_utf8(&rest[..digits]).ok()?.parse().ok();
        }
    }
    None
}

/// The whole lines of a client's output (what its socket took, then what it is still owed)
/// beyond the first `from` bytes, and how many bytes that makes. A dropped client's queue is
/// gone: nothing new then. A WebSocket client's lines are the text frames after the server's
/// `101` answer; a page view's answer has no lines.
fn new_lines(sent: &[u8], owed: &[u8], from: usize) -> (usize, Vec<Vec<u8>>) {
    let total = sent.len() + owed.len();
    if total <= from {
        return (from, Vec::new());
    }
    let mut tail = sent.get(from..).unwrap_or_default().to_vec();
    tail.extend_from_slice(&owed[from.saturating_sub(sent.len())..]);
    if from == 0 && tail.starts_with(b"HTTP/1.1 ") {
        if !tail.starts_with(b"HTTP/1.1 101 ") {
            return (total, Vec::new());
        }
        let Some(head) = tail.windows(4).position(|w| w == b"\r\n\r\n") else {
            return (0, Vec::new());
        };
        let (used, lines) = frames(&tail[head + 4..]);
        return (head + 4 + used, lines);
    }
    let start: Vec<u8> = sent.iter().chain(owed).take(13).copied().collect();
    if start.starts_with(b"HTTP/1.1 101 ") {
        let (used, lines) = frames(&tail);
        return (from + used, lines);
    }
    let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let lines = tail[..whole]
        .split(|&b| b == b'\n')
        .take(tail[..whole].iter().filter(|&&b| b == b'\n').count())
        .map(<[u8]>::to_vec)
        .collect();
    (from + whole, lines)
}

/// The payloads of the server's whole text frames in `bytes` (unmasked, as a server sends),
/// and how many bytes they take; other frames (a close) are skipped.
fn frames(bytes: &[u8]) -> (usize, Vec<Vec<u8>>) {
    let (mut at, mut lines) = (0, Vec::new());
    while bytes.len() >= at + 2 {
        let (op, len7) = (bytes[at] & 0x0F, usize::from(bytes[at + 1] & 0x7F));
        let (len, start) = match len7 {
            126 if bytes.len() >= at + 4 => (
                usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                at + 4,
            ),
            126 | 127 => break,
            n => (n, at + 2),
        };
        if bytes.len() < start + len {
            break;
        }
        if op == 0x1 {
            lines.push(bytes[start..start + len].to_vec());
        }
        at = start + len;
    }
    (at, lines)
}

/// The room in a server line about the client's own rooms, `[SERVER] {what}{room}{until}`,
/// after the room's prefix if it has one; lowercased.
fn said(line: &[u8], what: &str, until: &str) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = match line.strip_prefix("[#") {
        Some(after) => after.split_once("] ")?.1,
        None => line,
    };
    let room = rest.strip_prefix("[SERVER] ")?.strip_prefix(what)?;
    Some(room.split_once(until)?.0.to_ascii_lowercase())
}
