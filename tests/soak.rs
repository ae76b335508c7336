//! The soak: many clients chat through the real server for a set time, over real sockets, while
//! some read slowly, some never read, some leave and come back (`/quit`, an abrupt close, a
//! half-close with an unterminated last line), some send over-long lines, binary junk or
//! bursts beyond their rate budget. Every message carries its sender and a sequence number.
//!
//! # What it proves
//!
//! The server's transcript (standard output) is the oracle: the server is one loop, and every
//! line it delivers to the room it also prints, in the order it queues it. From the transcript
//! the soak knows, for every connection, where it joined and where it left, and which
//! announcements were shown (room size against `--announce-limit`). Then:
//!
//! 1. **Acceptance.** Each client's lines appear in the transcript exactly as it sent them
//!    (after the documented cleaning), once, in its own order, and nothing appears under its
//!    name that it did not send. A client that was still connected at the end, or that left
//!    with `/quit` or a half-close, has every line accepted.
//! 2. **Delivery.** Every client that kept reading received exactly the transcript's broadcast
//!    lines from just after its own join to its leave (or the end), minus its own lines and
//!    the announcements not shown: nothing lost, nothing duplicated, nothing reordered, so all
//!    of them saw one global order. A client that closed abruptly received a prefix of that.
//!    "Accepted while connected" is thus exact, not a guess from the clients' clocks.
//! 3. **Drops.** Every client that never reads is dropped with `too slow`; no other client is
//!    dropped or disconnected by the server.
//! 4. **Memory.** The server's VmRSS, sampled every second, does not keep growing (see
//!    [`rss_verdict`] for the rule and its tolerance).
//!
//! The first violation found fails the test, after the summary is printed; the others are
//! listed too. A server that stops printing while lines wait to be accepted fails the run at
//! once (`SERVER STALLED`, with its CPU time: a busy loop shows as about 1 s per second).
//!
//! # Who does what (by slot, one in twenty of each special role)
//!
//! - **Steady** (half): talks (`m SLOT.INC SEQ padding`, some as `/me`), reads everything.
//! - **Slow**: 4 KiB receive buffer and a 536-byte MSS, reads at a capped byte rate with pauses
//!   that leave about 30% of `--max-pending` queued in the server; must never be dropped.
//! - **NeverRead**: same small socket; names itself, sends one message and ten `/who`, never
//!   reads; must be dropped as too slow (then comes back while a quarter of the run is left).
//! - **Churn**: lives 1.5 to 5 s, then leaves by `/quit` (must get `Bye` and everything before
//!   its leave), by an abrupt close (prefix only), or by a half-close; then reconnects.
//! - **HalfClose**: ends with an unterminated line and `shutdown(Write)`; that line must be
//!   accepted, and it must receive everything up to its leave.
//! - **Oversize**: every third line 201 to 700 bytes (one error each, connection stays), others
//!   exactly 200 bytes (with CRLF every other time; accepted).
//! - **Junk**: every other line is binary junk (controls, NUL, lone CR, invalid UTF-8, bidi
//!   overrides, emoji) after its id; the transcript must show exactly its cleaned form.
//! - **Flood**: bursts of 30 lines in one write, beyond the rate limit's burst of 20 at
//!   `--rate 10`, so the server must hold lines back without losing or splitting any.
//!
//! Clients are one mio loop on the test thread; every wait is bounded (`STALL`, `EXTEND`,
//! `DRAIN_LIMIT`), and the server is killed by its PID when the test ends.
//!
//! # Parameters (environment)
//!
//! `SOAK_SECS` (chat time, default 8), `SOAK_CLIENTS` (default 100), `SOAK_RATE` (`--rate`,
//! default 10, the server's default; 0 turns the limit off), `SOAK_MSGS` (messages per second
//! the talkers aim at in all, default `min(400, 4 * clients)` for runs under a minute and
//! `min(300, 3 * clients)` otherwise), `SOAK_MAX_PENDING` (default
//! 64 KiB for runs under a minute, the server's 256 KiB otherwise), `SOAK_SEED`.
//! The long run: `SOAK_SECS=300 SOAK_CLIENTS=1000 cargo test --release --test soak -- --nocapture`.

mod common;

use common::{Launch, Server, WELCOME};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::FromRawFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

const MAX_LINE: usize = 200;
const TOO_LONG: &str = "[SERVER] Error: message too long (max 200 bytes)";
const BYE: &str = "[SERVER] Bye!";
const ANNOUNCE_LIMIT: usize = 100;
/// Lines in one burst of a flooder; beyond the burst the rate limit allows (2 x 10).
const FLOOD_BURST: usize = 30;
/// How long the end of the run may take to settle before what is missing counts as lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How much longer the room may talk while a never-reader is still connected.
const EXTEND: Duration = Duration::from_secs(15);
/// A server that prints no transcript line this long while clients' lines wait to be accepted
/// has stopped serving; the run ends there instead of waiting out the drain.
const STALL: Duration = Duration::from_secs(5);
/// How long everything must stay settled before the final checks (late extra lines show up).
const SETTLED_FOR: Duration = Duration::from_millis(500);

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// xorshift64*: deterministic per seed, no dependency.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        Duration::from_secs_f64(lo + (hi - lo) * self.unit())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
enum Role {
    Steady,
    Slow,
    NeverRead,
    Churn,
    HalfClose,
    Oversize,
    Junk,
    Flood,
}

/// One in twenty of each special role, the rest steady (spread evenly over the slots).
fn role_of(slot: usize) -> Role {
    match slot % 20 {
        10 | 11 => Role::Slow,
        12 => Role::NeverRead,
        13 | 14 => Role::Churn,
        15 => Role::HalfClose,
        16 => Role::Oversize,
        17 => Role::Junk,
        18 => Role::Flood,
        _ => Role::Steady,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Waiting for the welcome and the intro.
    Greeting,
    /// Sent `/nick`, waiting for the confirmation.
    Naming,
    Active,
    /// Sent `/quit` or half-closed: reading until the server closes.
    Leaving,
    /// Socket gone.
    Ended,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ending {
    Quit,
    Abrupt,
    HalfClose,
}

/// How much of what a session received can be checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verify {
    /// Everything owed, to the end of its membership.
    Full,
    /// What it got must be in order, but it may stop anywhere (closed abruptly).
    Prefix,
    /// Never reads.
    None,
}

struct Session {
    slot: usize,
    role: Role,
    name: String,
    sock: Option<TcpStream>,
    phase: Phase,
    verify: Verify,
    started: Instant,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Half-close once `out` is written.
    shutdown_after_out: bool,
    readable: bool,
    writable: bool,
    greeting_lines: u32,
    /// The guest number the server gave this connection: its identity in the transcript.
    origin: Option<u64>,
    /// Lines sent, as the transcript must show them, not yet seen there.
    expect: VecDeque<String>,
    /// All sent lines must be accepted (false once it closed abruptly, or once its lines went
    /// wrong in the transcript and the rest cannot be followed).
    must_accept_all: bool,
    sent: u64,
    accepted: u64,
    seq: u64,
    next_talk: Instant,
    next_flood: Instant,
    ends_at: Option<Instant>,
    ending: Ending,
    /// Broadcast lines received and not yet matched against the transcript.
    pending: VecDeque<String>,
    cursor: Option<usize>,
    delivered: u64,
    failed: bool,
    too_long_sent: u64,
    too_long_got: u64,
    got_bye: bool,
    eof: bool,
    unexpected_close: Option<String>,
    /// The reason the transcript gave when it left, and when the soak read it.
    left: Option<String>,
    left_at: Option<Instant>,
    /// Checker self-test (`SOAK_INJECT`): tamper with this session's 50th broadcast line.
    inject: Option<String>,
    received: u64,
    held: Option<String>,
    // Slow readers: a byte budget refilled over time, and pauses.
    budget: f64,
    budget_at: Instant,
    pause_until: Instant,
    next_pause: Instant,
    rng: Rng,
}

impl Session {
    fn alive(&self) -> bool {
        self.sock.is_some()
    }

    fn label(&self) -> String {
        let origin = self.origin.map_or("?".into(), |o| format!("guest{o}"));
        format!("{} ({:?}, {origin})", self.name, self.role)
    }
}

#[derive(Debug)]
enum Kind {
    Msg { origin: u64 },
    Ann { about: u64, shown: bool },
}

struct Event {
    line: String,
    kind: Kind,
}

impl Event {
    fn visible_to(&self, me: u64) -> bool {
        match self.kind {
            Kind::Msg { origin } => origin != me,
            Kind::Ann { about, shown } => shown && about != me,
        }
    }
}

/// The global order, read from the transcript.
#[derive(Default)]
struct Oracle {
    events: Vec<Event>,
    members: usize,
    names: HashMap<String, u64>,
    join_idx: HashMap<u64, usize>,
    leave_idx: HashMap<u64, usize>,
    lines: u64,
    msgs: u64,
    last_line_at: Option<Instant>,
}

/// What a transcript line meant to the driver.
enum Seen {
    Msg { name: String },
    Rename { origin: u64, new: String },
    Leave { name: String, reason: String },
    Other,
}

impl Oracle {
    fn take(&mut self, line: String) -> Result<Seen, String> {
        self.lines += 1;
        self.last_line_at = Some(Instant::now());
        let idx = self.events.len();
        if let Some(rest) = line.strip_prefix("[SERVER] ") {
            if let Some(name) = rest
                .strip_prefix("Client: ")
                .and_then(|r| r.strip_suffix(" connected!"))
            {
                let origin: u64 = name
                    .strip_prefix("guest")
                    .and_then(|n| n.parse().ok())
                    .ok_or(format!("join of a non-guest name: {line:?}"))?;
                self.members += 1;
                let shown = self.members <= ANNOUNCE_LIMIT;
                self.names.insert(name.to_string(), origin);
                self.join_idx.insert(origin, idx);
                self.events.push(Event {
                    line,
                    kind: Kind::Ann {
                        about: origin,
                        shown,
                    },
                });
                return Ok(Seen::Other);
            }
            if let Some(r) = rest.strip_prefix("Client: ") {
                let (name, tail) = r.split_once(' ').ok_or(format!("odd line {line:?}"))?;
                let reason = tail
                    .strip_prefix("disconnected")
                    .ok_or(format!("odd line {line:?}"))?
                    .to_string();
                let origin = self
                    .names
                    .remove(name)
                    .ok_or(format!("leave of an unknown name: {line:?}"))?;
                let shown = self.members <= ANNOUNCE_LIMIT;
                self.members -= 1;
                self.leave_idx.insert(origin, idx);
                let name = name.to_string();
                self.events.push(Event {
                    line,
                    kind: Kind::Ann {
                        about: origin,
                        shown,
                    },
                });
                return Ok(Seen::Leave { name, reason });
            }
            if let Some((old, new)) = rest.split_once(" is now known as ")
                && !old.contains(' ')
                && !new.contains(' ')
            {
                let origin = self
                    .names
                    .remove(old)
                    .ok_or(format!("rename of an unknown name: {line:?}"))?;
                self.names.insert(new.to_string(), origin);
                let shown = self.members <= ANNOUNCE_LIMIT;
                let new = new.to_string();
                self.events.push(Event {
                    line,
                    kind: Kind::Ann {
                        about: origin,
                        shown,
                    },
                });
                return Ok(Seen::Rename { origin, new });
            }
            // Notes for the operator when the room holds input back: never sent to a client.
            if rest.starts_with("Flow control: ") {
                return Ok(Seen::Other);
            }
            return Err(format!("unexpected transcript line {line:?}"));
        }
        let name = if let Some(rest) = line.strip_prefix("* ") {
            rest.split_once(' ').map(|(n, _)| n)
        } else {
            line.split_once(": ").map(|(n, _)| n)
        }
        .ok_or(format!("unexpected transcript line {line:?}"))?
        .to_string();
        let origin = *self
            .names
            .get(&name)
            .ok_or(format!("message from nobody in the room: {line:?}"))?;
        self.msgs += 1;
        self.events.push(Event {
            line,
            kind: Kind::Msg { origin },
        });
        Ok(Seen::Msg { name })
    }
}

/// `sender c0012r3 seq 17`, read back from a line, for the failure messages.
fn ident(line: &str) -> String {
    let text = line
        .split_once(": ")
        .map(|(_, t)| t)
        .or_else(|| {
            line.strip_prefix("* ")
                .and_then(|r| r.split_once(' '))
                .map(|(_, t)| t)
        })
        .unwrap_or(line);
    let sender = line
        .strip_prefix("* ")
        .unwrap_or(line)
        .split([':', ' '])
        .next()
        .unwrap_or("?");
    let mut w = text.split(' ');
    match (w.next(), w.next(), w.next()) {
        (Some("m" | "j" | "o" | "f"), Some(_), Some(seq)) => format!("[sender {sender} seq {seq}]"),
        _ => "[announcement]".to_string(),
    }
}

fn short(line: &str) -> String {
    if line.chars().count() > 90 {
        format!("{:?}...", line.chars().take(90).collect::<String>())
    } else {
        format!("{line:?}")
    }
}

/// The server's cleaning of a received line (docs/protocol.md, "Text hygiene"): invalid UTF-8
/// to U+FFFD, control characters, bidi controls and line separators removed.
fn clean(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    String::from_utf8_lossy(raw)
        .chars()
        .filter(|&c| {
            c == '\t'
                || !(c.is_control()
                    || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}'
                        | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}'))
        })
        .collect()
}

fn pad(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| (b'a' + rng.below(26) as u8) as char)
        .collect()
}

/// Bytes for a junk line: controls, stray CRs, NULs, invalid UTF-8, real multibyte text, bidi
/// overrides. Never LF.
fn junk(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    while v.len() < n {
        match rng.below(8) {
            0 => v.push(rng.below(32) as u8),
            1 => v.push(0x80 + rng.below(128) as u8),
            2 => v.extend_from_slice("é€😀".as_bytes()),
            3 => v.extend_from_slice("\u{202e}\u{2066}".as_bytes()),
            4 => v.extend_from_slice(&[0xe2, 0x82]),
            5 => v.push(0x7f),
            _ => v.push(b' ' + rng.below(95) as u8),
        }
    }
    v.retain(|&b| b != b'\n');
    v
}

struct Plan {
    secs: f64,
    talk_mean: f64,
    flood_period: f64,
    slow_rate: f64,
    slow_pause: f64,
}

struct Stats {
    connects: u64,
    leaves: HashMap<String, u64>,
    violations: Vec<String>,
}

impl Stats {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 10_000 {
            self.violations.push(what);
        }
    }
}

struct Soak {
    plan: Plan,
    poll: Poll,
    addr: SocketAddr,
    sessions: Vec<Session>,
    by_name: HashMap<String, usize>,
    /// The current session of each slot, and when the slot connects next.
    slots: Vec<(Option<usize>, Option<Instant>, u32)>,
    oracle: Oracle,
    stats: Stats,
    t0: Instant,
    chat_end: Instant,
    rng: Rng,
}

impl Soak {
    fn connect(&mut self, slot: usize, now: Instant) {
        let role = role_of(slot);
        let inc = self.slots[slot].2;
        self.slots[slot].2 += 1;
        let name = format!("c{slot:04}r{inc}");
        let small = matches!(role, Role::Slow | Role::NeverRead);
        let stream =
            connect_small(self.addr, small).unwrap_or_else(|e| panic!("{name}: connect: {e}"));
        stream.set_nonblocking(true).unwrap();
        let mut sock = TcpStream::from_std(stream);
        let idx = self.sessions.len();
        self.poll
            .registry()
            .register(
                &mut sock,
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        self.stats.connects += 1;
        let mut rng = Rng::new(self.rng.next());
        let ending = match role {
            Role::Churn => [Ending::Quit, Ending::Abrupt, Ending::HalfClose][inc as usize % 3],
            Role::HalfClose => Ending::HalfClose,
            _ => Ending::Quit,
        };
        let verify = match role {
            Role::NeverRead => Verify::None,
            _ if ending == Ending::Abrupt && role == Role::Churn => Verify::Prefix,
            _ => Verify::Full,
        };
        let mut s = Session {
            slot,
            role,
            name: name.clone(),
            sock: Some(sock),
            phase: Phase::Greeting,
            verify,
            started: now,
            inbuf: Vec::new(),
            out: Vec::new(),
            shutdown_after_out: false,
            readable: true,
            writable: true,
            greeting_lines: 0,
            origin: None,
            expect: VecDeque::new(),
            must_accept_all: true,
            sent: 0,
            accepted: 0,
            seq: 0,
            next_talk: now,
            next_flood: now,
            ends_at: None,
            ending,
            pending: VecDeque::new(),
            cursor: None,
            delivered: 0,
            failed: false,
            too_long_sent: 0,
            too_long_got: 0,
            got_bye: false,
            eof: false,
            unexpected_close: None,
            left: None,
            left_at: None,
            inject: None,
            received: 0,
            held: None,
            budget: 0.0,
            budget_at: now,
            pause_until: now,
            next_pause: now + rng.secs(1.0, 3.0),
            rng,
        };
        if role == Role::NeverRead {
            // It never reads, so it cannot wait for anything: name and one message at once.
            s.out
                .extend_from_slice(format!("/nick {name}\n").as_bytes());
            s.phase = Phase::Active;
            let text = format!("m {slot}.{inc} 0 never reads");
            s.out.extend_from_slice(format!("{text}\n").as_bytes());
            s.expect.push_back(format!("{name}: {text}"));
            s.sent += 1;
            // And it asks for output it will never read: a long /who each time.
            for _ in 0..10 {
                s.out.extend_from_slice(b"/who\n");
            }
        }
        if slot == 0 {
            s.inject = std::env::var("SOAK_INJECT").ok();
        }
        self.by_name.insert(name, idx);
        self.sessions.push(s);
        self.slots[slot].0 = Some(idx);
        self.slots[slot].1 = None;
    }

    /// Schedules the slot's next connection, if there is time for one.
    fn reconnect_later(&mut self, slot: usize, now: Instant) {
        let delay = self.rng.secs(0.2, 1.0);
        let latest = match role_of(slot) {
            Role::NeverRead => self.t0 + Duration::from_secs_f64(self.plan.secs * 0.25),
            _ => self.chat_end - Duration::from_secs_f64(1.5f64.min(self.plan.secs * 0.2)),
        };
        if now + delay < latest {
            self.slots[slot].1 = Some(now + delay);
        }
    }

    fn talk(&mut self, idx: usize, now: Instant) {
        let plan_talk = self.plan.talk_mean;
        let s = &mut self.sessions[idx];
        let tag = format!("{}.{}", s.slot, &s.name[s.name.find('r').unwrap() + 1..]);
        let seq = s.seq;
        s.seq += 1;
        let name = s.name.clone();
        let line: Vec<u8>;
        let mut expect = None;
        match s.role {
            Role::Oversize if seq % 3 == 1 => {
                let n = 201 + s.rng.below(500) as usize;
                let head = format!("o {tag} {seq} ");
                line = format!("{head}{}", "x".repeat(n - head.len())).into_bytes();
                s.too_long_sent += 1;
            }
            Role::Oversize if seq % 3 == 2 => {
                // Exactly at the cap, with a CRLF every other time: accepted.
                let head = format!("m {tag} {seq} ");
                let text = format!("{head}{}", pad(&mut s.rng, MAX_LINE - head.len()));
                expect = Some(format!("{name}: {text}"));
                line = if seq.is_multiple_of(2) {
                    format!("{text}\r").into_bytes()
                } else {
                    text.into_bytes()
                };
            }
            Role::Junk if seq % 2 == 1 => {
                let mut raw = format!("j {tag} {seq} ").into_bytes();
                let n = 1 + s.rng.below(120) as usize;
                raw.extend(junk(&mut s.rng, n));
                raw.truncate(MAX_LINE);
                expect = Some(format!("{name}: {}", clean(&raw)));
                line = raw;
            }
            _ => {
                let n = 40 + s.rng.below(140) as usize;
                let text = format!("m {tag} {seq} {}", pad(&mut s.rng, n));
                if seq % 7 == 3 {
                    expect = Some(format!("* {name} {text}"));
                    line = format!("/me {text}").into_bytes();
                } else {
                    expect = Some(format!("{name}: {text}"));
                    line = text.into_bytes();
                }
            }
        }
        s.out.extend_from_slice(&line);
        s.out.push(b'\n');
        s.sent += 1;
        if let Some(e) = expect {
            s.expect.push_back(e);
        }
        let jitter = s.rng.secs(0.5, 1.5).as_secs_f64();
        // On schedule even if this loop was late (a busy machine): the room's traffic, which
        // fills the never-readers, must not depend on how fast the soak itself runs. At most
        // two seconds are made up, well within the rate limit's burst.
        s.next_talk = (s.next_talk + Duration::from_secs_f64(plan_talk * jitter))
            .max(now - Duration::from_secs(2));
    }

    fn flood(&mut self, idx: usize, now: Instant) {
        let period = self.plan.flood_period;
        let s = &mut self.sessions[idx];
        let tag = format!("{}.{}", s.slot, &s.name[s.name.find('r').unwrap() + 1..]);
        for _ in 0..FLOOD_BURST {
            let seq = s.seq;
            s.seq += 1;
            let text = format!("f {tag} {seq} {}", pad(&mut s.rng, 130));
            s.out.extend_from_slice(text.as_bytes());
            s.out.push(b'\n');
            s.expect.push_back(format!("{}: {text}", s.name));
            s.sent += 1;
        }
        let jitter = s.rng.secs(0.7, 1.3).as_secs_f64();
        s.next_flood = now + Duration::from_secs_f64(period * jitter);
    }

    /// Starts leaving: `/quit`, an abrupt close, or a half-close after an unterminated line.
    fn leave(&mut self, idx: usize, now: Instant) {
        let s = &mut self.sessions[idx];
        match s.ending {
            Ending::Quit => {
                s.out.extend_from_slice(b"/quit\n");
                s.phase = Phase::Leaving;
            }
            Ending::HalfClose => {
                let tag = format!("{}.{}", s.slot, &s.name[s.name.find('r').unwrap() + 1..]);
                let text = format!("m {tag} {} last words, no newline", s.seq);
                s.seq += 1;
                s.out.extend_from_slice(text.as_bytes());
                s.expect.push_back(format!("{}: {text}", s.name));
                s.sent += 1;
                s.shutdown_after_out = true;
                s.phase = Phase::Leaving;
            }
            Ending::Abrupt => {
                s.must_accept_all = false;
                self.close(idx);
                let slot = self.sessions[idx].slot;
                self.reconnect_later(slot, now);
            }
        }
    }

    fn close(&mut self, idx: usize) {
        let s = &mut self.sessions[idx];
        if let Some(mut sock) = s.sock.take() {
            let _ = self.poll.registry().deregister(&mut sock);
        }
        s.phase = Phase::Ended;
    }

    /// Reads what the session may read now and handles its lines.
    fn read(&mut self, idx: usize, now: Instant) {
        let plan_rate = self.plan.slow_rate;
        let plan_pause = self.plan.slow_pause;
        let s = &mut self.sessions[idx];
        if !s.readable || s.role == Role::NeverRead {
            return;
        }
        let Some(sock) = s.sock.as_mut() else { return };
        let mut limit = usize::MAX;
        if s.role == Role::Slow {
            if now < s.pause_until {
                return;
            }
            if now >= s.next_pause {
                s.pause_until = now + s.rng.secs(0.5 * plan_pause, plan_pause);
                s.next_pause = s.pause_until + s.rng.secs(2.0, 5.0);
                return;
            }
            let dt = now.saturating_duration_since(s.budget_at).as_secs_f64();
            s.budget = (s.budget + dt * plan_rate).min(plan_rate * 0.25);
            s.budget_at = now;
            limit = s.budget as usize;
            if limit < 256 {
                return;
            }
        }
        let mut chunk = [0u8; 65536];
        let mut got = 0usize;
        let mut closed = None;
        while got < limit {
            let want = (limit - got).min(chunk.len());
            match sock.read(&mut chunk[..want]) {
                Ok(0) => {
                    closed = Some(None);
                    break;
                }
                Ok(n) => {
                    got += n;
                    s.inbuf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    closed = Some(Some(e.to_string()));
                    break;
                }
            }
        }
        if s.role == Role::Slow {
            s.budget -= got as f64;
        }
        self.lines(idx);
        if let Some(err) = closed {
            let s = &mut self.sessions[idx];
            s.eof = true;
            if s.phase != Phase::Leaving {
                s.unexpected_close = Some(err.unwrap_or_else(|| "end of stream".into()));
            } else if s.ending == Ending::Quit && !s.got_bye {
                let what = format!("{}: closed after /quit without {BYE:?}", s.label());
                self.stats.violation(what);
            }
            if !s.inbuf.is_empty() {
                let what = format!(
                    "{}: stream ended inside a line: {:?}",
                    s.label(),
                    String::from_utf8_lossy(&s.inbuf)
                );
                self.stats.violation(what);
            }
            let slot = s.slot;
            self.close(idx);
            self.reconnect_later(slot, now);
        }
    }

    fn lines(&mut self, idx: usize) {
        let s = &mut self.sessions[idx];
        let mut start = 0;
        let mut lines = Vec::new();
        while let Some(i) = s.inbuf[start..].iter().position(|&b| b == b'\n') {
            lines.push(s.inbuf[start..start + i].to_vec());
            start += i + 1;
        }
        s.inbuf.drain(..start);
        for raw in lines {
            let Ok(line) = String::from_utf8(raw) else {
                let what = format!("{}: the server sent invalid UTF-8", s.label());
                self.stats.violation(what);
                continue;
            };
            if let Err(what) = on_line(s, line) {
                self.stats.violation(what);
            }
        }
    }

    fn write(&mut self, idx: usize) {
        let s = &mut self.sessions[idx];
        let Some(sock) = s.sock.as_mut() else { return };
        while s.writable && !s.out.is_empty() {
            match sock.write(&s.out) {
                Ok(n) => {
                    s.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if s.phase != Phase::Leaving && s.role != Role::NeverRead {
                        s.unexpected_close = Some(format!("write: {e}"));
                    }
                    s.out.clear();
                }
            }
        }
        if s.out.is_empty() && s.shutdown_after_out {
            s.shutdown_after_out = false;
            let _ = sock.shutdown(Shutdown::Write);
        }
    }

    fn drain_transcript(&mut self, server: &Server) {
        while let Some(line) = server.try_out_line(Duration::ZERO) {
            if line.contains("transcript lines dropped") {
                panic!("the server dropped transcript lines: the oracle is incomplete: {line}");
            }
            let seen = match self.oracle.take(line.clone()) {
                Ok(seen) => seen,
                Err(what) => {
                    self.stats.violation(format!("transcript: {what}"));
                    continue;
                }
            };
            match seen {
                Seen::Msg { name } => {
                    let Some(&idx) = self.by_name.get(&name) else {
                        self.stats.violation(format!(
                            "transcript: message from {name}, not ours: {line:?}"
                        ));
                        continue;
                    };
                    let s = &mut self.sessions[idx];
                    if let Err(what) = accept(s, &line) {
                        if !what.starts_with("SPLIT") {
                            s.must_accept_all = false;
                            s.expect.clear();
                        }
                        self.stats.violation(what);
                    }
                }
                Seen::Rename { origin, new } => {
                    if let Some(&idx) = self.by_name.get(&new) {
                        let s = &mut self.sessions[idx];
                        if s.origin.is_some_and(|o| o != origin) {
                            let what = format!("{}: renamed as guest{origin}", s.label());
                            self.stats.violation(what);
                        }
                        s.origin = Some(origin);
                    }
                }
                Seen::Leave { name, reason } => {
                    let kind = if reason.starts_with(" (too slow") {
                        "too slow".to_string()
                    } else if reason == "." {
                        "plain".to_string()
                    } else {
                        reason.clone()
                    };
                    let Some(&idx) = self.by_name.get(&name) else {
                        self.stats
                            .violation(format!("transcript: {name} left, not ours"));
                        continue;
                    };
                    let s = &mut self.sessions[idx];
                    s.left = Some(reason.clone());
                    s.left_at = Some(Instant::now());
                    let key = format!("{:?} {kind}", s.role);
                    *self.stats.leaves.entry(key).or_default() += 1;
                    let expected = if s.role == Role::NeverRead {
                        kind == "too slow"
                    } else {
                        kind == "plain" && (s.phase == Phase::Leaving || s.phase == Phase::Ended)
                    };
                    if !expected {
                        let what = format!(
                            "{}: the server disconnected it{reason} (phase {:?})",
                            s.label(),
                            s.phase
                        );
                        self.stats.violation(what);
                    }
                    if s.role == Role::NeverRead {
                        let now = Instant::now();
                        let slot = s.slot;
                        self.close(idx);
                        self.reconnect_later(slot, now);
                    }
                }
                Seen::Other => {}
            }
        }
    }

    /// Matches received lines against the global order.
    fn check_delivery(&mut self, idx: usize) {
        let s = &mut self.sessions[idx];
        if s.pending.is_empty() {
            return;
        }
        if s.failed || s.verify == Verify::None {
            s.pending.clear();
            return;
        }
        let Some(me) = s.origin else { return };
        let Some(&join) = self.oracle.join_idx.get(&me) else {
            return;
        };
        let events = &self.oracle.events;
        let mut c = s.cursor.unwrap_or(join + 1);
        while let Some(line) = s.pending.front() {
            while c < events.len() && !events[c].visible_to(me) {
                c += 1;
            }
            if c >= events.len() {
                break;
            }
            if let Some(&left) = self.oracle.leave_idx.get(&me)
                && c > left
            {
                let what = format!(
                    "{}: received {} {} after it left the room",
                    s.label(),
                    ident(line),
                    short(line)
                );
                s.failed = true;
                self.stats.violation(what);
                break;
            }
            if events[c].line == *line {
                c += 1;
                s.pending.pop_front();
                s.delivered += 1;
                continue;
            }
            let want = &events[c].line;
            let later = events[c + 1..]
                .iter()
                .position(|e| e.visible_to(me) && e.line == *line)
                .map(|k| k + c + 1);
            let earlier = events[join + 1..c].iter().any(|e| e.line == *line);
            let verdict = if earlier {
                "DUPLICATE (it had received that line already)".to_string()
            } else if let Some(k) = later {
                format!(
                    "LOST or REORDERED: it skipped global #{c} and {} more line(s) it was owed",
                    (c + 1..k).filter(|&i| events[i].visible_to(me)).count()
                )
            } else {
                "LOST, REORDERED or FORGED: the line owed next did not come first, and the line \
                 that came is not in the transcript after it (so far)"
                    .to_string()
            };
            let what = format!(
                "{verdict}: receiver {} expected global #{c} {} {} but got {} {}",
                s.label(),
                ident(want),
                short(want),
                ident(line),
                short(line)
            );
            s.failed = true;
            self.stats.violation(what);
            break;
        }
        s.cursor = Some(c);
    }

    /// The first line owed to `idx` that it has not received, up to its leave or the end.
    fn first_owed(&self, idx: usize) -> Option<usize> {
        let s = &self.sessions[idx];
        let me = s.origin?;
        let join = *self.oracle.join_idx.get(&me)?;
        let end = self
            .oracle
            .leave_idx
            .get(&me)
            .copied()
            .unwrap_or(self.oracle.events.len());
        let from = s.cursor.unwrap_or(join + 1);
        (from..end).find(|&i| self.oracle.events[i].visible_to(me))
    }

    /// Whether everything that should happen has: all lines accepted, all delivered.
    fn settled(&self) -> bool {
        self.sessions.iter().enumerate().all(|(idx, s)| {
            if s.role == Role::NeverRead || (!s.alive() && !s.must_accept_all) {
                return true;
            }
            if s.alive() && (s.phase != Phase::Active || !s.out.is_empty()) {
                return false;
            }
            if !s.expect.is_empty() {
                return false;
            }
            s.verify != Verify::Full
                || s.failed
                || (s.pending.is_empty() && self.first_owed(idx).is_none())
        })
    }
}

/// A line a session received.
fn on_line(s: &mut Session, line: String) -> Result<(), String> {
    if s.phase == Phase::Greeting {
        s.greeting_lines += 1;
        if s.greeting_lines == 1 {
            return if line == WELCOME {
                Ok(())
            } else {
                Err(format!("{}: first line {line:?}", s.label()))
            };
        }
        let guest = line
            .strip_prefix("[SERVER] You are guest")
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, _)| n.parse::<u64>().ok())
            .ok_or(format!("{}: no intro but {line:?}", s.label()))?;
        s.origin = Some(guest);
        s.out
            .extend_from_slice(format!("/nick {}\n", s.name).as_bytes());
        s.phase = Phase::Naming;
        return Ok(());
    }
    if let Some(name) = line.strip_prefix("[SERVER] You are now known as ") {
        if s.phase != Phase::Naming || name != s.name {
            return Err(format!("{}: unexpected {line:?}", s.label()));
        }
        s.phase = Phase::Active;
        return Ok(());
    }
    if line == TOO_LONG {
        s.too_long_got += 1;
        return Ok(());
    }
    if line == BYE {
        if s.phase != Phase::Leaving || s.ending != Ending::Quit {
            return Err(format!("{}: unexpected {line:?}", s.label()));
        }
        s.got_bye = true;
        return Ok(());
    }
    if s.got_bye {
        return Err(format!("{}: {line:?} after {BYE:?}", s.label()));
    }
    let broadcast = !line.starts_with("[SERVER] ")
        || line.starts_with("[SERVER] Client: ")
        || line.contains(" is now known as ");
    if !broadcast {
        return Err(format!("{}: unexpected reply {line:?}", s.label()));
    }
    s.received += 1;
    match (s.inject.as_deref(), s.received) {
        (Some("lose"), 50) => {}
        (Some("dup"), 50) => {
            s.pending.push_back(line.clone());
            s.pending.push_back(line);
        }
        (Some("swap"), 50) => s.held = Some(line),
        (Some("swap"), 51) => {
            s.pending.push_back(line);
            s.pending.extend(s.held.take());
        }
        _ => s.pending.push_back(line),
    }
    Ok(())
}

/// A message line in the transcript under `s`'s name: it must be the next line `s` sent.
fn accept(s: &mut Session, line: &str) -> Result<(), String> {
    s.accepted += 1;
    let Some(want) = s.expect.front() else {
        return Err(format!(
            "transcript shows {} {} from {}, which had no line waiting (sent {}, accepted {})",
            ident(line),
            short(line),
            s.label(),
            s.sent,
            s.accepted - 1
        ));
    };
    if want == line {
        s.expect.pop_front();
        return Ok(());
    }
    let want = want.clone();
    if let Some(rest) = want.strip_prefix(line) {
        // The server made two messages of one line: keep the rest, to stay in step.
        let front = s.expect.front_mut().unwrap();
        *front = format!("{}: {rest}", s.name);
        return Err(format!(
            "SPLIT LINE: {} sent {} {} as one line; the server delivered its first {} bytes as a \
             message of their own: {}",
            s.label(),
            ident(&want),
            short(&want),
            line.len(),
            short(line)
        ));
    }
    if let Some(pos) = s.expect.iter().position(|w| w == line) {
        let lost: Vec<String> = s.expect.drain(..=pos).take(pos).collect();
        return Err(format!(
            "LOST BEFORE ACCEPTANCE: the transcript shows {} of {} but never the {} line(s) it sent \
             before, first {} {}",
            ident(line),
            s.label(),
            lost.len(),
            ident(&lost[0]),
            short(&lost[0])
        ));
    }
    Err(format!(
        "NOT SENT: the transcript shows {} {} from {}, whose next line was {} {}",
        ident(line),
        short(line),
        s.label(),
        ident(&want),
        short(&want)
    ))
}

/// The RSS rule. Warm-up (connections, first buffers) is the first quarter of the chat. The rest
/// is split in halves A and B; the server "keeps growing" if even the lowest sample of B is
/// above the highest of A by more than max(4 MiB, 10% of A's peak). Comparing B's floor with
/// A's peak ignores the legitimate swings (each slow reader may hold up to --max-pending, and a
/// never-reader fills to it before it is dropped), yet a leak that adds up over the run lifts
/// the whole second half above the first. The 4 MiB / 10% margin covers allocator steps (glibc
/// arenas, a buffer kept at its 64 KiB high-water mark per client).
fn rss_verdict(curve: &[(f64, u64)], chat_from: f64, chat_to: f64) -> Result<String, String> {
    let warm = chat_from + (chat_to - chat_from) * 0.25;
    let mid = warm + (chat_to - warm) / 2.0;
    let a: Vec<u64> = curve
        .iter()
        .filter(|(t, _)| *t >= warm && *t < mid)
        .map(|s| s.1)
        .collect();
    let b: Vec<u64> = curve
        .iter()
        .filter(|(t, _)| *t >= mid && *t <= chat_to)
        .map(|s| s.1)
        .collect();
    if a.is_empty() || b.is_empty() {
        return Ok("too few samples to judge".into());
    }
    let a_max = *a.iter().max().unwrap();
    let b_min = *b.iter().min().unwrap();
    let tol = (4 * 1024).max(a_max / 10);
    let text = format!(
        "first half after warm-up peaks at {a_max} kB, second half never below {b_min} kB \
         (tolerance {tol} kB)"
    );
    if b_min > a_max + tol {
        Err(text)
    } else {
        Ok(text)
    }
}

/// A blocking connect; with `small`, a 4 KiB receive buffer and a 536-byte MSS are set first.
///
/// The MSS matters: on loopback (MSS 65483) the kernel grows the server's send buffer for a
/// connection to its 4 MiB maximum at once, so a client that never reads would pin about 3 MiB
/// in the kernel before the server's own queue (--max-pending) even starts to fill. With an
/// Internet-sized MSS the send buffer stays near 64 KiB, as on a real network.
fn connect_small(addr: SocketAddr, small: bool) -> io::Result<std::net::TcpStream> {
    if !small {
        return std::net::TcpStream::connect(addr);
    }
    let SocketAddr::V4(v4) = addr else {
        return std::net::TcpStream::connect(addr);
    };
    // SAFETY: plain socket calls on a descriptor owned by the TcpStream from the start.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let set = |level, opt, value: libc::c_int| {
            let rc = libc::setsockopt(
                fd,
                level,
                opt,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        set(libc::SOL_SOCKET, libc::SO_RCVBUF, 4096)?;
        set(libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536)?;
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = v4.port().to_be();
        sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Raises this process's soft descriptor limit (inherited by the server) if needed.
fn ensure_fd_limit(need: u64) {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < need {
            lim.rlim_cur = lim.rlim_max.min(need.max(lim.rlim_cur));
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn soak_loses_nothing_and_stays_flat() {
    let secs: f64 = env_or("SOAK_SECS", 8.0);
    let clients: usize = env_or("SOAK_CLIENTS", 100);
    let rate: u32 = env_or("SOAK_RATE", 10);
    // Short runs talk faster, so that never-readers fill up well before the end.
    let msgs: f64 = env_or(
        "SOAK_MSGS",
        if secs < 60.0 {
            (4 * clients).min(400) as f64
        } else {
            (3 * clients).min(300) as f64
        },
    );
    let max_pending: usize = env_or(
        "SOAK_MAX_PENDING",
        if secs < 60.0 { 64 * 1024 } else { 256 * 1024 },
    );
    let seed: u64 = env_or("SOAK_SEED", 1);
    assert!(
        clients >= 20,
        "SOAK_CLIENTS must be at least 20 (one of each role)"
    );
    ensure_fd_limit(2 * clients as u64 + 200);

    let talkers = (0..clients)
        .filter(|&i| !matches!(role_of(i), Role::NeverRead | Role::Flood))
        .count();
    let flooders = (0..clients).filter(|&i| role_of(i) == Role::Flood).count();
    // Flooders add about a quarter on top of the talkers, in bursts beyond the rate budget.
    let flood_period = (flooders * FLOOD_BURST) as f64 / (0.25 * msgs);
    let flood_period = flood_period.max(3.0);
    let talk_mean = talkers as f64 / msgs;
    if rate > 0 {
        assert!(
            1.5 / talk_mean < rate as f64,
            "talkers would exceed --rate {rate}: lower SOAK_MSGS or raise SOAK_RATE"
        );
    }
    let total = msgs + (flooders * FLOOD_BURST) as f64 / flood_period;
    let bytes_per_sec = total * 140.0;
    let plan = Plan {
        secs,
        talk_mean,
        flood_period,
        // Slow readers read 4 times faster than the room talks, with pauses that leave a
        // backlog of about 30% of --max-pending in the server.
        slow_rate: (4.0 * bytes_per_sec).max(16_384.0),
        slow_pause: (0.3 * max_pending as f64 / bytes_per_sec).clamp(0.2, 3.0),
    };

    let rate_s = rate.to_string();
    let pending_s = max_pending.to_string();
    let limit_s = ANNOUNCE_LIMIT.to_string();
    let flags = [
        "--rate",
        &rate_s,
        "--max-per-ip",
        "0",
        "--max-pending",
        &pending_s,
        "--announce-limit",
        &limit_s,
        "--idle-timeout",
        "0",
        "--max-clients",
        "20000",
    ];
    let server = Launch::new(&flags).start();
    let pid = server.pid();
    let cpu0 = server.cpu_time();
    // The server's CPU over a soak depends on how much CPU it can get, not only on its work
    // (docs/reliability.md): what the soak itself and the rest of the machine used is reported
    // beside it.
    let own_cpu0 = common::cpu_time(std::process::id());
    let machine0 = machine_busy();
    println!(
        "soak: {clients} clients for {secs} s, server pid {pid}, flags {}; ~{:.0} msg/s, \
         ~{:.0} B/s to each reader, talk every {:.2} s, flood {FLOOD_BURST} lines every {:.1} s, \
         slow readers {:.0} B/s with pauses up to {:.2} s",
        flags.join(" "),
        total,
        bytes_per_sec,
        talk_mean,
        flood_period,
        plan.slow_rate,
        plan.slow_pause
    );

    let t0 = Instant::now();
    let chat_end = t0 + Duration::from_secs_f64(secs);
    let mut soak = Soak {
        plan,
        poll: Poll::new().unwrap(),
        addr: server.addr,
        sessions: Vec::new(),
        by_name: HashMap::new(),
        slots: Vec::new(),
        oracle: Oracle::default(),
        stats: Stats {
            connects: 0,
            leaves: HashMap::new(),
            violations: Vec::new(),
        },
        t0,
        chat_end,
        rng: Rng::new(seed),
    };
    // Everyone connects over the first second or so; never-readers a little later, early
    // enough to be filled up and dropped well before the end.
    let ramp = (secs * 0.1).min(2.0);
    for slot in 0..clients {
        let at = if role_of(slot) == Role::NeverRead {
            t0 + soak.rng.secs(secs * 0.02, secs * 0.08)
        } else {
            t0 + Duration::from_secs_f64(ramp * slot as f64 / clients as f64)
        };
        soak.slots.push((None, Some(at), 0));
    }

    let mut events = Events::with_capacity(4096);
    let mut rss: Vec<(f64, u64)> = vec![(0.0, server.rss_kb())];
    let mut cpu_samples: Vec<Duration> = vec![cpu0];
    let mut next_sample = t0 + Duration::from_secs(1);
    let mut settled_since: Option<Instant> = None;
    let mut drain_took = None;
    let mut talk_end: Option<Instant> = None;
    loop {
        soak.poll
            .poll(&mut events, Some(Duration::from_millis(5)))
            .unwrap();
        for ev in events.iter() {
            let s = &mut soak.sessions[ev.token().0];
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                s.readable = true;
            }
            if ev.is_writable() || ev.is_write_closed() {
                s.writable = true;
            }
        }
        let now = Instant::now();
        // The room talks on (at most EXTEND longer) until every never-reader is dropped: on a
        // busy machine filling them may take longer, and without talk they never fill.
        let undropped = soak
            .sessions
            .iter()
            .any(|s| s.role == Role::NeverRead && s.alive());
        let chatting = now < chat_end || (undropped && now < chat_end + EXTEND);
        if !chatting && talk_end.is_none() {
            talk_end = Some(now);
        }
        if chatting {
            for slot in 0..soak.slots.len() {
                if soak.slots[slot].1.is_some_and(|at| at <= now) {
                    soak.connect(slot, now);
                }
            }
        }
        soak.drain_transcript(&server);
        for idx in 0..soak.sessions.len() {
            if !soak.sessions[idx].alive() {
                soak.check_delivery(idx);
                continue;
            }
            soak.read(idx, now);
            let s = &mut soak.sessions[idx];
            if s.phase == Phase::Active && s.role != Role::NeverRead {
                if s.ends_at.is_none() && matches!(s.role, Role::Churn | Role::HalfClose) {
                    let life = s.rng.secs(1.5, 5.0);
                    s.ends_at = Some(now + life);
                }
                if s.role == Role::Flood && s.seq == 0 && s.ends_at.is_none() {
                    // Each flooder starts at its own phase, so the bursts are spread out.
                    let first = s.rng.secs(0.0, soak.plan.flood_period);
                    s.next_flood = now + first;
                    s.ends_at = Some(chat_end + Duration::from_secs(3600));
                }
                if chatting {
                    if s.ends_at.is_some_and(|at| at <= now) {
                        soak.leave(idx, now);
                    } else if s.role == Role::Flood {
                        if now >= s.next_flood {
                            soak.flood(idx, now);
                        }
                    } else if now >= s.next_talk {
                        soak.talk(idx, now);
                    }
                }
            }
            soak.write(idx);
            if let Some(why) = soak.sessions[idx].unexpected_close.take() {
                let s = &soak.sessions[idx];
                let what = format!(
                    "{}: connection closed by the server ({why}); transcript reason: {:?}",
                    s.label(),
                    s.left
                );
                soak.stats.violation(what);
                soak.sessions[idx].must_accept_all = false;
                soak.sessions[idx].failed = true;
                soak.close(idx);
            }
            soak.check_delivery(idx);
        }
        if now >= next_sample {
            rss.push((now.duration_since(t0).as_secs_f64(), server.rss_kb()));
            cpu_samples.push(server.cpu_time());
            next_sample += Duration::from_secs(1);
        }
        let quiet = now.duration_since(soak.oracle.last_line_at.unwrap_or(t0));
        if quiet > STALL {
            let waiting: Vec<&Session> = soak
                .sessions
                .iter()
                .filter(|s| s.alive() && !s.expect.is_empty() && s.out.is_empty())
                .collect();
            if !waiting.is_empty() {
                let n = cpu_samples.len();
                let busy = cpu_samples[n - 1].saturating_sub(cpu_samples[n.saturating_sub(5)]);
                let what = format!(
                    "SERVER STALLED: no transcript line for {:.1} s while {} clients wait for {} written lines to be accepted (first: {} {}); the server used {:.2} s of CPU in the last {} s (a busy loop if near 1 s per second); last transcript line: {}",
                    quiet.as_secs_f64(),
                    waiting.len(),
                    waiting.iter().map(|s| s.expect.len()).sum::<usize>(),
                    waiting[0].label(),
                    short(&waiting[0].expect[0]),
                    busy.as_secs_f64(),
                    (n - 1).min(4),
                    soak.oracle
                        .events
                        .last()
                        .map_or("none".into(), |e| short(&e.line))
                );
                soak.stats.violation(what);
                break;
            }
        }
        if !chatting {
            if soak.settled() {
                let since = *settled_since.get_or_insert(now);
                if drain_took.is_none() {
                    drain_took = Some(now.duration_since(talk_end.unwrap_or(chat_end)));
                }
                if now.duration_since(since) >= SETTLED_FOR {
                    break;
                }
            } else {
                settled_since = None;
            }
            if now >= talk_end.unwrap_or(chat_end) + DRAIN_LIMIT {
                soak.stats.violation(format!(
                    "the run did not settle within {DRAIN_LIMIT:?} after the chat ended"
                ));
                break;
            }
        }
    }
    let end = Instant::now();
    rss.push((end.duration_since(t0).as_secs_f64(), server.rss_kb()));
    let cpu = server.cpu_time().saturating_sub(cpu0);
    let own_cpu = common::cpu_time(std::process::id()).saturating_sub(own_cpu0);
    let others = machine_busy()
        .saturating_sub(machine0)
        .saturating_sub(cpu)
        .saturating_sub(own_cpu);

    // Final checks (after a stall, everything would be missing: the stall is the finding).
    let stalled = soak
        .stats
        .violations
        .iter()
        .any(|v| v.starts_with("SERVER STALLED"));
    for idx in 0..soak.sessions.len() {
        if stalled {
            break;
        }
        let s = &soak.sessions[idx];
        if s.must_accept_all && !s.expect.is_empty() && s.role != Role::NeverRead {
            let what = format!(
                "LOST: {} sent {} {} but the transcript never showed it ({} line(s) missing)",
                s.label(),
                ident(&s.expect[0]),
                short(&s.expect[0]),
                s.expect.len()
            );
            soak.stats.violation(what);
        }
        if s.role == Role::NeverRead {
            if s.left.is_none() {
                let at = s.started.duration_since(t0).as_secs_f64();
                let what = format!(
                    "{}: never read, connected at +{at:.1} s, but was never dropped as too slow",
                    s.label()
                );
                soak.stats.violation(what);
            }
            if !s.expect.is_empty() {
                let what = format!("{}: its one message was never accepted", s.label());
                soak.stats.violation(what);
            }
        }
        if s.too_long_got != s.too_long_sent && (s.alive() || s.eof) {
            let what = format!(
                "{}: sent {} over-long lines, got {} errors",
                s.label(),
                s.too_long_sent,
                s.too_long_got
            );
            soak.stats.violation(what);
        }
        let complete = s.alive() || (s.eof && s.phase == Phase::Ended);
        if s.verify == Verify::Full
            && !s.failed
            && complete
            && let Some(i) = soak.first_owed(idx)
        {
            let e = &soak.oracle.events[i];
            let what = format!(
                "LOST: receiver {} never received global #{i} {} {} (it received {} lines; {} \
                 unmatched)",
                s.label(),
                ident(&e.line),
                short(&e.line),
                s.delivered,
                s.pending.len()
            );
            soak.stats.violation(what);
        }
    }

    // Summary.
    let mut by_role: HashMap<Role, (u64, u64, u64, u64)> = HashMap::new();
    for s in &soak.sessions {
        let e = by_role.entry(s.role).or_default();
        e.0 += 1;
        e.1 += s.sent;
        e.2 += s.accepted;
        e.3 += s.delivered;
    }
    let mut roles: Vec<_> = by_role.into_iter().collect();
    roles.sort();
    let sent: u64 = roles.iter().map(|r| r.1.1).sum();
    let accepted: u64 = roles.iter().map(|r| r.1.2).sum();
    let delivered: u64 = roles.iter().map(|r| r.1.3).sum();
    let full_checked = soak
        .sessions
        .iter()
        .filter(|s| s.verify == Verify::Full && (s.alive() || s.eof))
        .count();
    let chat_to = secs;
    let verdict = rss_verdict(&rss, 0.0, chat_to);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n===== soak summary =====\nclients {clients} (connections {}), chat {secs:.0} s \
         (talk extended {:.1} s for never-readers), settled {:.2} s after, run {:.1} s; \
         --rate {rate} --max-pending {max_pending}",
        soak.stats.connects,
        talk_end.map_or(0.0, |t| t.saturating_duration_since(chat_end).as_secs_f64()),
        drain_took.map_or(f64::NAN, |d| d.as_secs_f64()),
        end.duration_since(t0).as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "lines sent {sent} (incl. over-long), accepted {accepted} (transcript messages {}), \
         broadcast lines delivered and matched {delivered}; transcript lines {}",
        soak.oracle.msgs, soak.oracle.lines
    );
    let _ = writeln!(
        out,
        "fully verified receivers {full_checked}; per role (connections, sent, accepted, \
         delivered):"
    );
    for (role, (n, s, a, d)) in &roles {
        let _ = writeln!(out, "  {role:?}: {n} {s} {a} {d}");
    }
    let mut leaves: Vec<_> = soak.stats.leaves.iter().collect();
    leaves.sort();
    let _ = writeln!(out, "departures by role and kind: {leaves:?}");
    let waits: Vec<f64> = soak
        .sessions
        .iter()
        .filter(|s| s.role == Role::NeverRead)
        .filter_map(|s| Some(s.left_at?.duration_since(s.started).as_secs_f64()))
        .collect();
    let starts: Vec<String> = soak
        .sessions
        .iter()
        .filter(|s| s.role == Role::NeverRead)
        .map(|s| {
            let from = s.started.duration_since(t0).as_secs_f64();
            let to = s.left_at.map(|t| t.duration_since(t0).as_secs_f64());
            format!(
                "{from:.1}-{}",
                to.map_or("never".into(), |t| format!("{t:.1}"))
            )
        })
        .take(10)
        .collect();
    if !waits.is_empty() {
        let _ = writeln!(
            out,
            "never-readers dropped as too slow {:.1} to {:.1} s after connecting (connected-dropped \
             at, first ten: {})",
            waits.iter().cloned().fold(f64::INFINITY, f64::min),
            waits.iter().cloned().fold(0.0, f64::max),
            starts.join(" ")
        );
    }
    let rss_max = rss.iter().map(|r| r.1).max().unwrap();
    let _ = writeln!(
        out,
        "server VmRSS start {} kB, peak {rss_max} kB, end {} kB; server CPU {:.2} s over {:.1} s",
        rss[0].1,
        rss.last().unwrap().1,
        cpu.as_secs_f64(),
        end.duration_since(t0).as_secs_f64()
    );
    let _ = writeln!(
        out,
        "CPU: server {:.0} ns per delivered line; the soak's own process {:.2} s; everything else \
         on the machine {:.2} s ({} cores). The server turns as often as it can, so its CPU falls \
         when others take the cores: compare soaks only with the machine otherwise idle",
        cpu.as_secs_f64() * 1e9 / delivered.max(1) as f64,
        own_cpu.as_secs_f64(),
        others.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let curve: Vec<String> = rss.iter().map(|(t, kb)| format!("{t:.0}s:{kb}")).collect();
    let _ = writeln!(out, "VmRSS curve (kB): {}", curve.join(" "));
    let _ = writeln!(
        out,
        "RSS verdict: {}",
        match &verdict {
            Ok(t) => format!("flat: {t}"),
            Err(t) => format!("GROWING: {t}"),
        }
    );
    let _ = writeln!(out, "violations: {}", soak.stats.violations.len());
    for v in soak.stats.violations.iter().take(15) {
        let _ = writeln!(out, "  - {v}");
    }
    let violations = std::mem::take(&mut soak.stats.violations);
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for v in &violations {
        let kind: String = v
            .split(':')
            .next()
            .filter(|k| {
                k.chars()
                    .all(|c| c.is_ascii_uppercase() || " ,".contains(c))
            })
            .unwrap_or("other")
            .to_string();
        match kinds.iter_mut().find(|k| k.0 == kind) {
            Some(k) => k.1 += 1,
            None => kinds.push((kind, 1)),
        }
    }
    let _ = writeln!(out, "violations by kind: {kinds:?}");
    println!("{out}");
    drop(server);
    drop(soak);
    if let Some(first) = violations.first() {
        panic!(
            "soak failed with {} violation(s) {kinds:?}; the first: {first}",
            violations.len()
        );
    }
    if let Err(t) = verdict {
        panic!("server RSS keeps growing: {t}");
    }
}

/// CPU time the whole machine spent busy so far (user, nice, system, irq, softirq; not steal),
/// from /proc/stat.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .expect("malformed /proc/stat")
        .split_whitespace()
        .take(7)
        .enumerate()
        .filter(|&(i, _)| !matches!(i, 3 | 4)) // idle, iowait
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}
