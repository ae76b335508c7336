//! The engine driven without a network: fake sockets, and time passed in by hand, so that
//! rates, quiet periods, timeouts and full sockets are tested exactly and at once.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{self, Parsed};

/// A socket as the engine sees it: input to hand out, what it was sent, and whether it is
/// full.
#[derive(Default)]
struct Fake {
    input: VecDeque<Vec<u8>>,
    eof: bool,
    sent: Vec<u8>,
    full: bool,
}

fn read(s: &mut Fake, buf: &mut [u8]) -> io::Result<usize> {
    let Some(chunk) = s.input.front_mut() else {
        return if s.eof {
            Ok(0)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        };
    };
    let n = chunk.len().min(buf.len());
    buf[..n].copy_from_slice(&chunk[..n]);
    chunk.drain(..n);
    if chunk.is_empty() {
        s.input.pop_front();
    }
    Ok(n)
}

fn write(s: &mut Fake, bytes: &[u8]) -> io::Result<usize> {
    if s.full {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    s.sent.extend_from_slice(bytes);
    Ok(bytes.len())
}

struct Harness {
    engine: Engine<Fake>,
    t0: Instant,
    now: Instant,
}

impl Harness {
    fn new(flags: &[&str]) -> Harness {
        let Ok(Parsed::Run(config)) = config::parse("test", flags) else {
            panic!("bad flags {flags:?}");
        };
        let t0 = Instant::now();
        Harness {
            engine: Engine::new(config, t0),
            t0,
            now: t0,
        }
    }

    fn connect(&mut self) -> usize {
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let key = self
            .engine
            .join(Fake::default(), addr, self.now)
            .ok()
            .expect("admitted");
        self.turn();
        self.take(key); // the welcome and intro
        key
    }

    /// Bytes arrive on a client's socket and the loop reads them.
    fn send(&mut self, key: usize, bytes: &[u8]) {
        self.engine
            .socket_mut(key)
            .unwrap()
            .input
            .push_back(bytes.to_vec());
        self.engine.read(key, self.now, read);
        self.turn();
    }

    /// The end of a loop turn: ready clients read, queues written, closed ones dropped.
    fn turn(&mut self) -> Vec<Peer<Fake>> {
        for key in self.engine.take_ready() {
            self.engine.read(key, self.now, read);
        }
        self.engine.flush(self.now, write);
        self.engine.take_closed()
    }

    /// Time passes; due timers fire.
    fn at(&mut self, since_start: Duration) {
        self.now = self.t0 + since_start;
        self.engine.tick(self.now);
    }

    /// Lines a client received since the last look.
    fn take(&mut self, key: usize) -> Vec<String> {
        let sent = std::mem::take(&mut self.engine.socket_mut(key).unwrap().sent);
        String::from_utf8(sent)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_message_reaches_the_others_and_not_the_sender() {
    let mut h = Harness::new(&[]);
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    h.take(a);
    h.take(b);
    h.send(a, b"hi all\n");
    assert_eq!(h.take(b), ["guest1: hi all"]);
    assert_eq!(h.take(c), ["guest1: hi all"]);
    assert!(h.take(a).is_empty());
}

#[test]
fn the_rate_limit_delays_lines_and_never_drops_them() {
    let mut h = Harness::new(&["--rate", "5", "--flush-partial", "0"]);
    let (a, b) = (h.connect(), h.connect());
    let burst: String = (1..=30).map(|i| format!("m{i}\n")).collect();
    h.send(a, burst.as_bytes());
    assert_eq!(h.take(b).len(), 10, "the burst is 2N");
    let mut got = 10;
    for second in 1..=4 {
        h.at(Duration::from_secs(second));
        h.turn();
        let now = h.take(b);
        assert_eq!(now.len(), 5, "N a second, at second {second}");
        assert_eq!(now[0], format!("guest1: m{}", got + 1), "in order");
        got += 5;
    }
    let held = h.engine.peer(a).unwrap().framer.held();
    assert!(
        held <= 2 * 202,
        "{held} bytes held back: about a line's worth"
    );
}

#[test]
fn a_line_without_newline_goes_out_after_the_quiet() {
    let mut h = Harness::new(&["--flush-partial", "100"]);
    let (a, b) = (h.connect(), h.connect());
    h.take(a);
    h.send(a, b"Hola, ");
    h.at(ms(60));
    h.send(a, b"servidor!");
    h.at(ms(120));
    assert!(
        h.take(b).is_empty(),
        "the quiet starts again with each byte"
    );
    h.at(ms(160));
    h.turn();
    assert_eq!(h.take(b), ["guest1: Hola, servidor!"]);
}

#[test]
fn a_reader_that_stalls_is_dropped_and_nobody_else_loses_anything() {
    let mut h = Harness::new(&["--max-pending", "1000", "--rate", "0"]);
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    h.take(a);
    h.take(b);
    h.engine.socket_mut(c).unwrap().full = true;
    for i in 0..40 {
        h.send(
            a,
            format!("message number {i:02} padded to about forty bytes\n").as_bytes(),
        );
    }
    let (messages, notices): (Vec<String>, Vec<String>) = h
        .take(b)
        .into_iter()
        .partition(|l| l.starts_with("guest1: "));
    assert_eq!(
        messages.len(),
        40,
        "every message, to the reader that reads"
    );
    assert!(
        messages
            .iter()
            .enumerate()
            .all(|(i, l)| l.contains(&format!("number {i:02}")))
    );
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].starts_with("[SERVER] Client: guest3 disconnected (too slow: "),
        "{}",
        notices[0]
    );
    assert!(h.engine.peer(c).is_none(), "closed and removed");
}

#[test]
fn a_leaving_client_that_never_reads_is_closed_after_the_linger() {
    let mut h = Harness::new(&[]);
    let a = h.connect();
    h.engine.socket_mut(a).unwrap().full = true;
    h.send(a, b"exit\n");
    assert_eq!(h.engine.peer(a).unwrap().state, State::Closing);
    h.at(LINGER - ms(10));
    assert!(h.turn().is_empty());
    h.at(LINGER);
    let closed = h.turn();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].out, b"", "its unsent goodbye is dropped with it");
}

#[test]
fn a_leaving_client_that_reads_slowly_is_not_cut_off() {
    let mut h = Harness::new(&["-m", "echo"]);
    let a = h.connect();
    h.engine.socket_mut(a).unwrap().full = true;
    h.send(a, &[b'x'; 1000]);
    h.engine.socket_mut(a).unwrap().eof = true;
    h.engine.read(a, h.now, read);
    for second in 1..=5 {
        // It reads a little every second, for longer than the linger.
        h.at(Duration::from_secs(second));
        let socket = h.engine.socket_mut(a).unwrap();
        socket.full = false;
        socket.sent.clear();
        h.engine.writable(a);
        h.engine.flush(h.now, |s, bytes| {
            write(s, &bytes[..bytes.len().min(150)]).inspect(|_| s.full = true)
        });
        assert!(
            h.engine.take_closed().is_empty(),
            "cut off at second {second}"
        );
    }
    h.at(Duration::from_secs(6));
    h.engine.socket_mut(a).unwrap().full = false;
    h.engine.writable(a);
    assert_eq!(h.turn().len(), 1, "closed once everything is read");
}

#[test]
fn a_leaving_client_that_reads_gets_its_goodbye_then_the_close() {
    let mut h = Harness::new(&[]);
    let a = h.connect();
    h.engine.socket_mut(a).unwrap().full = true;
    h.send(a, b"/quit\n");
    h.engine.socket_mut(a).unwrap().full = false;
    h.engine.writable(a);
    let closed = h.turn();
    assert_eq!(closed.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&closed[0].socket.sent),
        "[SERVER] Bye!\n"
    );
}

#[test]
fn idle_clients_are_dropped_and_talkers_kept() {
    let mut h = Harness::new(&["--idle-timeout", "10"]);
    let a = h.connect();
    h.connect(); // it will never say a thing
    h.take(a);
    h.at(Duration::from_secs(6));
    h.send(a, b"still here\n");
    h.at(Duration::from_secs(10));
    let closed = h.turn();
    assert_eq!(closed.len(), 1, "the silent one");
    assert_eq!(
        String::from_utf8_lossy(&closed[0].socket.sent),
        "guest1: still here\n[SERVER] Error: idle for 10 s, disconnecting\n"
    );
    assert_eq!(
        h.take(a),
        ["[SERVER] Client: guest2 disconnected (idle for 10 s)"]
    );
    h.at(Duration::from_secs(15));
    assert_eq!(
        h.engine.peer(a).unwrap().state,
        State::Open,
        "its time counts from its last line"
    );
    h.at(Duration::from_secs(16));
    assert_ne!(h.engine.peer(a).unwrap().state, State::Open);
}

#[test]
fn a_timer_set_for_a_closed_client_does_not_fire_for_the_next_one_in_its_slot() {
    let mut h = Harness::new(&["--idle-timeout", "10"]);
    let a = h.connect();
    h.at(Duration::from_secs(5));
    h.send(a, b"exit\n");
    h.turn();
    assert!(h.engine.peer(a).is_none());
    let b = h.connect();
    assert_eq!(a, b, "the slab gives the key again");
    h.at(Duration::from_secs(10));
    h.turn();
    assert_eq!(
        h.engine.peer(b).unwrap().state,
        State::Open,
        "the old timer was for the old client"
    );
}

#[test]
fn echo_stops_reading_a_client_that_does_not_read_and_resumes() {
    let mut h = Harness::new(&["-m", "echo", "--max-pending", "100"]);
    let a = h.connect();
    h.engine.socket_mut(a).unwrap().full = true;
    h.send(a, &[b'x'; 300]);
    let peer = h.engine.peer(a).unwrap();
    assert_eq!(
        (
            peer.out.len(),
            peer.socket.input.iter().map(Vec::len).sum::<usize>()
        ),
        (100, 200),
        "the rest waits in its socket"
    );
    h.engine.socket_mut(a).unwrap().full = false;
    h.engine.writable(a);
    // One queue's worth a turn: read, written, and read again on the next.
    for _ in 0..3 {
        h.turn();
    }
    assert_eq!(
        h.engine.peer(a).unwrap().socket.sent,
        [b'x'; 300],
        "everything came back"
    );
}

#[test]
fn shutdown_tells_everyone_and_waits_for_their_queues() {
    let mut h = Harness::new(&[]);
    let (a, b) = (h.connect(), h.connect());
    h.take(a);
    h.engine.socket_mut(b).unwrap().full = true;
    h.engine.begin_shutdown(h.now);
    let closed = h.turn();
    assert_eq!(closed.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&closed[0].socket.sent),
        "[SERVER] Server shutting down.\n"
    );
    assert!(!h.engine.is_finished(h.now), "b still has lines to read");
    assert!(h.engine.is_finished(h.now + LINGER), "but not forever");
}

#[test]
fn a_last_unterminated_exit_word_says_goodbye_once() {
    let mut h = Harness::new(&["-m", "ack"]);
    let a = h.connect();
    let socket = h.engine.socket_mut(a).unwrap();
    socket.input.push_back(b"exit".to_vec());
    socket.eof = true;
    h.engine.read(a, h.now, read);
    let closed = h.turn();
    assert_eq!(
        String::from_utf8_lossy(&closed[0].socket.sent),
        "[SERVER] Bye!\n"
    );
    let transcript = String::from_utf8_lossy(h.engine.transcript()).into_owned();
    assert_eq!(
        transcript.matches("disconnected").count(),
        1,
        "{transcript}"
    );
}

#[test]
fn udp_senders_keep_to_the_rate_and_the_excess_is_dropped() {
    let mut h = Harness::new(&["--rate", "2", "--udp"]);
    let a = h.connect();
    let flooder: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let other: SocketAddr = "127.0.0.1:50001".parse().unwrap();
    let replies = (0..10)
        .filter(|i| {
            h.engine
                .datagram(format!("flood {i}").as_bytes(), flooder, h.now)
                .is_some()
        })
        .count();
    assert_eq!(replies, 4, "a burst of 2N, then nothing");
    assert!(
        h.engine.datagram(b"hello", other, h.now).is_some(),
        "another sender has its own budget"
    );
    h.at(Duration::from_secs(1));
    assert!(
        h.engine.datagram(b"later", flooder, h.now).is_some(),
        "the budget refills"
    );
    h.turn();
    let got = h.take(a);
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[0], "127.0.0.1:50000: flood 0");
    assert_eq!(got[5], "127.0.0.1:50000: later");
}
