//! The engine driven without a network: fake sockets, and time passed in by hand, so that
//! rates, quiet periods, timeouts and full sockets are tested exactly and at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::fake::FakeSocket as Fake;
use super::*;
use crate::config::{self, Parsed};

struct Harness {
    engine: Engine<Fake>,
    t0: Instant,
    now: Instant,
}

impl Harness {
    /// An engine with these flags; the web door is shut unless they open it with `--web`
    /// (most tests are about chat clients, greeted at once).
    fn new(flags: &[&str]) -> Harness {
        let web = flags.contains(&"--web");
        let mut flags: Vec<&str> = flags.iter().copied().filter(|&f| f != "--web").collect();
        if !web {
            flags.push("--no-web");
        }
        let Ok(Parsed::Run(config)) = config::parse("test", &flags) else {
            panic!("bad flags {flags:?}");
        };
        let t0 = Instant::now();
        Harness {
            engine: Engine::new(config, t0),
            t0,
            now: t0,
        }
    }

    /// A connection, admitted: its key. With the web door open it is not greeted yet.
    fn open(&mut self) -> usize {
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let key = self
            .engine
            .join(Fake::new(0), addr, self.now)
            .ok()
            .expect("admitted");
        self.turn();
        key
    }

    /// A chat client, greeted.
    fn connect(&mut self) -> usize {
        let key = self.open();
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
        self.engine.read(key, self.now);
        self.turn();
    }

    /// The end of a loop turn: ready clients read, queues written, closed ones dropped.
    fn turn(&mut self) -> Vec<Peer<Fake>> {
        self.engine.end_turn(self.now)
    }

    /// The client closes its side, having read what it was sent.
    fn hang_up(&mut self, key: usize) -> Vec<Peer<Fake>> {
        self.engine.socket_mut(key).unwrap().eof = true;
        self.engine.read(key, self.now);
        self.turn()
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
    let held = h.engine.peer(a).unwrap().codec.held();
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
    h.engine.socket_mut(c).unwrap().room = 0;
    for i in 0..40 {
        h.send(
            a,
            format!("message number {i:02} padded to about forty bytes\n").as_bytes(),
        );
    }
    // The room waits for a reader that does not take its lines (here from the tenth on, when
    // its queue reaches half of --max-pending), but not for long.
    assert_eq!(h.take(b).len(), 10, "held back while the room waits");
    assert!(h.engine.has_ready() || h.engine.next_deadline(h.now).is_some());
    h.at(config::flow::BEHIND_AFTER);
    while h.engine.has_ready() {
        h.turn();
    }
    let (messages, notices): (Vec<String>, Vec<String>) = h
        .take(b)
        .into_iter()
        .partition(|l| l.starts_with("guest1: "));
    assert_eq!(
        messages.len(),
        30,
        "every message, to the reader that reads"
    );
    assert!(
        messages
            .iter()
            .enumerate()
            .all(|(i, l)| l.contains(&format!("number {:02}", i + 10)))
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
    h.engine.socket_mut(a).unwrap().room = 0;
    h.send(a, b"exit\n");
    assert_eq!(h.engine.peer(a).unwrap().state, State::Closing);
    h.at(LINGER - ms(10));
    assert!(h.turn().is_empty());
    h.at(LINGER);
    let closed = h.turn();
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0].owed.bytes, b"",
        "its unsent goodbye is dropped with it"
    );
}

#[test]
fn a_leaving_client_that_reads_slowly_is_not_cut_off() {
    let mut h = Harness::new(&["-m", "echo"]);
    let a = h.connect();
    h.engine.socket_mut(a).unwrap().room = 0;
    h.send(a, &[b'x'; 1000]);
    h.engine.socket_mut(a).unwrap().eof = true;
    h.engine.read(a, h.now);
    for second in 1..=5 {
        // It reads a little every second, for longer than the linger.
        h.at(Duration::from_secs(second));
        h.engine.socket_mut(a).unwrap().room = 150;
        h.engine.writable(a);
        assert!(h.turn().is_empty(), "cut off at second {second}");
    }
    h.at(Duration::from_secs(6));
    h.engine.socket_mut(a).unwrap().room = usize::MAX;
    h.engine.writable(a);
    let closed = h.turn();
    assert_eq!(closed.len(), 1, "closed once everything is read");
    assert_eq!(closed[0].socket.sent, [b'x'; 1000]);
}

#[test]
fn a_leaving_client_that_reads_gets_its_goodbye_then_the_close() {
    let mut h = Harness::new(&[]);
    let a = h.connect();
    h.engine.socket_mut(a).unwrap().room = 0;
    h.send(a, b"/quit\n");
    // Lines it sends after quitting are read and thrown away: left unread, they would turn
    // the close into a reset that can destroy the goodbye on its way.
    h.engine
        .socket_mut(a)
        .unwrap()
        .input
        .push_back(b"more\nand more\n".to_vec());
    h.engine.socket_mut(a).unwrap().room = usize::MAX;
    h.engine.writable(a);
    assert!(
        h.turn().is_empty(),
        "not closed before the client has read its end"
    );
    assert!(
        h.turn().is_empty(),
        "the next turn reads what is left: still not closed"
    );
    let peer = h.engine.peer(a).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&peer.socket.sent),
        "[SERVER] Bye!\n"
    );
    assert!(
        peer.socket.fin && peer.socket.input.is_empty(),
        "its end sent, its input taken"
    );
    assert_eq!(h.hang_up(a).len(), 1, "closed when the client closes");
}

#[test]
fn idle_clients_are_dropped_and_talkers_kept() {
    let mut h = Harness::new(&["--idle-timeout", "10"]);
    let a = h.connect();
    let silent = h.connect();
    h.take(a);
    h.at(Duration::from_secs(6));
    h.send(a, b"still here\n");
    h.at(Duration::from_secs(10));
    h.turn();
    assert_eq!(
        h.take(silent),
        [
            "guest1: still here",
            "[SERVER] Error: idle for 10 s, disconnecting"
        ]
    );
    assert!(h.engine.peer(silent).unwrap().socket.fin);
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
    h.hang_up(a);
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
    h.engine.socket_mut(a).unwrap().room = 0;
    h.send(a, &[b'x'; 300]);
    let peer = h.engine.peer(a).unwrap();
    assert_eq!(
        (
            peer.owed.len(),
            peer.socket.input.iter().map(Vec::len).sum::<usize>()
        ),
        (100, 200),
        "the rest waits in its socket"
    );
    h.engine.socket_mut(a).unwrap().room = usize::MAX;
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
    h.engine.socket_mut(b).unwrap().room = 0;
    h.engine.begin_shutdown(h.now);
    h.turn();
    assert_eq!(h.take(a), ["[SERVER] Server shutting down."]);
    assert_eq!(h.hang_up(a).len(), 1);
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
    h.engine.read(a, h.now);
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

#[test]
fn a_line_held_back_by_the_rate_is_not_cut_by_the_flush_partial_quiet() {
    let mut h = Harness::new(&["--rate", "1", "--flush-partial", "100"]);
    let (a, b) = (h.connect(), h.connect());
    h.take(a);
    // Two lines use the burst; the third arrives in two pieces, the second still in the socket
    // when the server stops reading for the rate: the quiet that follows is the server's.
    let socket = h.engine.socket_mut(a).unwrap();
    socket.input.push_back(b"one\ntwo\nthr".to_vec());
    socket.input.push_back(b"ee\n".to_vec());
    h.engine.read(a, h.now);
    h.turn();
    assert_eq!(h.take(b), ["guest1: one", "guest1: two"]);
    h.at(ms(500));
    h.turn();
    assert!(h.take(b).is_empty(), "not cut at the flush-partial quiet");
    h.at(ms(1000));
    h.turn();
    h.turn();
    assert_eq!(h.take(b), ["guest1: three"]);
}

#[test]
fn a_rate_timer_due_within_the_millisecond_does_not_spin() {
    // 2,000 lines a second: the next token is half a millisecond away when the burst is spent.
    let mut h = Harness::new(&["--rate", "2000", "--flush-partial", "0"]);
    let (a, b) = (h.connect(), h.connect());
    let flood: String = (0..5000).map(|i| format!("{i}\n")).collect();
    h.engine
        .socket_mut(a)
        .unwrap()
        .input
        .push_back(flood.into_bytes());
    h.engine.read(a, h.now);
    h.at(ms(0)); // the same instant: must return, not loop
    h.turn();
    assert_eq!(h.take(b).len(), 4000, "the burst");
    h.at(ms(300));
    h.turn();
    h.turn();
    assert_eq!(h.take(b).len(), 600, "then N a second");
}

#[test]
fn a_room_line_reaches_its_members_and_the_transcript_only() {
    let mut h = Harness::new(&["--rate", "0"]);
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    h.send(a, b"/join #a\n");
    h.send(b, b"/join #a\n");
    for key in [a, b, c] {
        h.take(key);
    }
    h.engine.transcript().clear();
    h.send(a, b"in a\n");
    h.send(c, b"in the lobby\n");
    assert_eq!(h.take(b), ["[#a] guest1: in a", "guest3: in the lobby"]);
    assert_eq!(
        h.take(a),
        ["guest3: in the lobby"],
        "still in the lobby too"
    );
    assert!(h.take(c).is_empty(), "not in #a");
    let transcript = String::from_utf8(std::mem::take(h.engine.transcript())).unwrap();
    assert_eq!(transcript, "[#a] guest1: in a\nguest3: in the lobby\n");
}

/// The case: a client joins ten rooms of full history at once while it reads a little
/// at a time. Nine replays are more than `--max-pending` here, but they go through its queue
/// and the room's flow control: it is never dropped as too slow, gets every replay whole, and
/// its queue stays under `--max-pending`.
#[test]
fn joining_ten_rooms_of_full_history_is_never_too_slow() {
    let max_pending = 64 * 1024;
    let mut h = Harness::new(&["--rate", "0", "--max-pending", &max_pending.to_string()]);
    let (talker, joiner) = (h.connect(), h.connect());
    let line = format!("{}\n", "x".repeat(190));
    for room in 1..config::rooms::PER_CLIENT {
        h.send(talker, format!("/join #r{room}\n").as_bytes());
        h.send(talker, line.repeat(50).as_bytes());
    }
    h.take(talker);
    h.take(joiner);
    h.engine.socket_mut(joiner).unwrap().room = 0;
    let joins: String = (1..config::rooms::PER_CLIENT)
        .map(|room| format!("/join #r{room}\n"))
        .collect();
    h.send(joiner, joins.as_bytes());
    let mut most_owed = 0;
    let mut received = Vec::new();
    for step in 1..=400 {
        // It reads 4 KiB every 10 ms: far slower than the server could write.
        h.engine.socket_mut(joiner).unwrap().room = 4096;
        h.engine.writable(joiner);
        h.at(ms(10 * step));
        h.turn();
        let peer = h.engine.peer(joiner).expect("never dropped");
        most_owed = most_owed.max(peer.owed.len());
        received.extend(h.take(joiner));
    }
    let ends: Vec<&String> = received
        .iter()
        .filter(|l| l.contains("End of history"))
        .collect();
    assert_eq!(ends.len(), 9, "every replay, whole");
    assert!(
        ends.iter().all(|l| l.ends_with("(50 messages)")),
        "{ends:?}"
    );
    let replayed = received.iter().filter(|l| l.contains("[history ")).count();
    assert_eq!(replayed, 9 * 50);
    let replays: usize = received.iter().map(|l| l.len() + 1).sum();
    assert!(replays > max_pending, "{replays} bytes in all");
    assert!(most_owed < max_pending, "{most_owed} bytes owed at most");
}

// ----- the web door -----

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost:1234\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// A masked client text frame.
fn ws_text(text: &str) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut out = vec![0x81, 0x80 | text.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

impl Harness {
    fn sent(&mut self, key: usize) -> Vec<u8> {
        std::mem::take(&mut self.engine.socket_mut(key).unwrap().sent)
    }
}

#[test]
fn with_the_web_door_open_a_silent_client_is_greeted_after_a_moment() {
    let mut h = Harness::new(&["--web"]);
    let a = h.open();
    assert!(
        h.sent(a).is_empty(),
        "not greeted before it could be a browser"
    );
    h.at(config::web::GREET);
    h.turn();
    let lines = h.take(a);
    assert_eq!(lines[0], "Welcome to the best chat in the universe!");
    // One that speaks first is greeted at once, then heard.
    let b = h.open();
    h.send(b, b"hi\n");
    assert_eq!(h.take(b)[0], "Welcome to the best chat in the universe!");
    assert_eq!(
        h.take(a),
        ["[SERVER] Client: guest2 connected!", "guest2: hi"]
    );
    // The silent one is nobody yet (a browser opens spare connections that never speak)...
    h.send(b, b"/who\n");
    assert_eq!(h.take(b), ["[SERVER] 1 online: guest2"]);
    let spare = h.open();
    h.at(config::web::GREET * 2);
    h.turn();
    h.hang_up(spare);
    assert!(
        h.take(b).is_empty(),
        "a spare connection comes and goes unseen"
    );
    // ...until it speaks.
    h.send(a, b"hello\n");
    assert_eq!(
        h.take(b),
        ["[SERVER] Client: guest1 connected!", "guest1: hello"]
    );
}

#[test]
fn a_browser_gets_the_page_and_a_websocket_client_the_chat_in_frames() {
    let mut h = Harness::new(&["--web"]);
    let line_client = h.open();
    h.at(config::web::GREET);
    h.turn();
    h.take(line_client);

    let page = h.open();
    h.send(page, b"GET / HTTP/1.1\r\nHost: localhost:1234\r\n\r\n");
    let answer = String::from_utf8(h.sent(page)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Content-Type: text/html"));
    assert!(
        h.take(line_client).is_empty(),
        "a page view is no chat client"
    );

    let ws = h.open();
    h.send(ws, UPGRADE);
    let answer = h.sent(ws);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    // The welcome, as text frames after the handshake.
    let frames = &answer[text.find("\r\n\r\n").unwrap() + 4..];
    let welcome = b"Welcome to the best chat in the universe!";
    assert_eq!(&frames[..2], &[0x81, welcome.len() as u8]);
    assert_eq!(&frames[2..2 + welcome.len()], welcome);
    assert_eq!(h.take(line_client), ["[SERVER] Client: guest2 connected!"]);

    // Both ways, one line a frame.
    h.send(ws, &ws_text("from the browser"));
    assert_eq!(h.take(line_client), ["guest2: from the browser"]);
    h.send(line_client, b"from nc\n");
    let mut frames = Vec::new();
    // The line client was greeted before it said anything: it is heard of as it speaks.
    for line in ["[SERVER] Client: guest1 connected!", "guest1: from nc"] {
        frames.extend_from_slice(&[0x81, line.len() as u8]);
        frames.extend_from_slice(line.as_bytes());
    }
    assert_eq!(h.sent(ws), frames);
}

/// A certificate for `localhost` in PEM files, and a client configuration trusting it.
struct TestCert {
    dir: std::path::PathBuf,
    client: std::sync::Arc<rustls::ClientConfig>,
}

impl TestCert {
    fn new(name: &str) -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!("loopchat-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestCert {
            dir,
            client: std::sync::Arc::new(client),
        }
    }

    fn flags(&self) -> [String; 4] {
        let file = |f: &str| self.dir.join(f).display().to_string();
        [
            "--tls-cert".into(),
            file("cert.pem"),
            "--tls-key".into(),
            file("key.pem"),
        ]
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Moves bytes between a rustls client and its fake socket until neither has more: what the
/// client has for the server arrives (and is read), and what the server wrote is decrypted.
/// The socket takes only `room` bytes a turn, so the server's flight is written over several
/// writable events. Returns the plaintext the client received.
fn pump(h: &mut Harness, key: usize, client: &mut rustls::ClientConnection, room: usize) -> String {
    let mut plain = Vec::new();
    for _ in 0..1000 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        if !to_server.is_empty() {
            h.send(key, &to_server);
        }
        let Some(socket) = h.engine.socket_mut(key) else {
            break;
        };
        let from_server = std::mem::take(&mut socket.sent);
        // A writable event comes only for a socket that was full, as with edge triggering.
        let was_full = socket.room == 0;
        socket.room = room;
        if was_full {
            h.engine.writable(key);
        }
        h.turn();
        if from_server.is_empty() && to_server.is_empty() {
            break;
        }
        client.read_tls(&mut &from_server[..]).unwrap();
        client.process_new_packets().unwrap();
        let _ = std::io::Read::read_to_end(&mut client.reader(), &mut plain);
    }
    String::from_utf8(plain).unwrap()
}

#[test]
fn a_tls_client_is_driven_by_readiness_alone() {
    use std::io::{Read, Write};
    let cert = TestCert::new("engine-tls");
    let flags = cert.flags();
    let mut h = Harness::new(&flags.each_ref().map(String::as_str));
    let plain = h.open();
    h.at(config::tls::GREET);
    h.turn();
    assert_eq!(h.take(plain).len(), 2, "the plain client is greeted");

    let key = h.open();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(cert.client.clone(), name).unwrap();
    // The server's half of the handshake goes out with nothing owed to a chat client, 100
    // bytes per writable event.
    let greeting = pump(&mut h, key, &mut client, 100);
    assert!(!client.is_handshaking(), "the handshake completed");
    assert!(
        greeting.starts_with(config::defaults::WELCOME),
        "{greeting:?}"
    );
    assert_eq!(
        h.take(plain),
        ["[SERVER] Client: guest2 connected!"],
        "a TLS client joins like any other"
    );

    client.writer().write_all(b"hola, secreto\n").unwrap();
    pump(&mut h, key, &mut client, 100);
    assert_eq!(h.take(plain), ["guest2: hola, secreto"]);

    // Leaving: the goodbye, then close_notify, then the end of the stream.
    client.writer().write_all(b"/quit\n").unwrap();
    let bye = pump(&mut h, key, &mut client, 100);
    assert_eq!(bye, "[SERVER] Bye!\n");
    assert_eq!(
        client.reader().read(&mut [0; 8]).unwrap(),
        0,
        "close_notify after the last line"
    );
    let peer = h.engine.peer(key).expect("draining");
    assert!(peer.socket.fin, "the stream ended after close_notify");
}

#[test]
fn a_connection_not_yet_greeted_is_told_of_a_shutdown() {
    let mut h = Harness::new(&["--web"]);
    let early = h.open();
    assert!(h.take(early).is_empty(), "the web door's wait");
    h.engine.begin_shutdown(h.now);
    h.turn();
    let lines = h.take(early);
    assert_eq!(
        lines.last().map(String::as_str),
        Some(notice::SHUTTING_DOWN),
        "{lines:?}"
    );
    assert_eq!(lines[0], config::defaults::WELCOME);
}
