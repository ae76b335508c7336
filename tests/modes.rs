//! Black-box tests of the non-chat modes (`-m echo`, `-m ack`) and of UDP, against the real
//! server over real sockets, with the real `nc -u`, the bundled client, and the course's own
//! clients unchanged (tests/seeds: the echo client of assignment 001, the TCP/UDP client of
//! assignment 004), and the 1:1 chat of assignment 000.
//!
//! Every wait is bounded and every process is killed by its PID (see `common`). All tests use
//! port 0 except `the_coursework_clients_work_unchanged`, whose clients have their ports written
//! in them.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Client, Console, Launch, Server, SockOpts, WAIT, have, proc_status_kb, run_bounded};

const BYE: &str = "[SERVER] Bye!";
const TOO_LONG: &str = "[SERVER] Error: message too long (max 200 bytes)";
const CLIENT: &str = env!("CARGO_BIN_EXE_loopchat-client");
const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/seeds");
const MB: usize = 1 << 20;

fn received(text: &str) -> String {
    format!("received: {text}")
}

/// A line as one datagram carries it, with its newline.
fn with_newline(line: &str) -> String {
    format!("{line}\n")
}

// ----- raw TCP bytes (echo) -----

/// A plain TCP connection to `addr`, for byte-level checks the line-based `Client` cannot make.
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to server");
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads exactly `n` bytes; panics if they have not all arrived within `within`.
fn read_exactly(stream: &mut TcpStream, n: usize, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = vec![0; n];
    let mut have = 0;
    while have < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {have} of {n} bytes came back within {within:?}"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut got[have..]) {
            Ok(0) => panic!("the server closed after {have} of {n} bytes"),
            Ok(k) => have += k,
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("read failed after {have} of {n} bytes: {e}"),
        }
    }
    got
}

/// Asserts that no byte arrives (and the connection stays open) for `quiet`.
fn expect_no_bytes(stream: &mut TcpStream, quiet: Duration) {
    stream.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = [0; 4096];
    match stream.read(&mut buf) {
        Err(e) if is_timeout(&e) => {}
        Ok(0) => panic!("the server closed the connection"),
        Ok(n) => panic!(
            "expected nothing, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("connection failed: {e}"),
    }
}

/// Expects the server to close the connection within [`WAIT`], sending nothing more.
fn expect_close(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0; 4096];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected the close, got {n} more bytes"),
        Err(e) => panic!("expected the close within {WAIT:?}: {e}"),
    }
}

/// A small deterministic xorshift generator: arbitrary but reproducible sizes and bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A size in `1..=max`.
    fn size(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }
}

/// The largest single write or read of the streaming tests.
const MAX_CHUNK: usize = 32 * 1024;
/// The stream is a pseudo-random cycle of this prime length, so a lost, repeated or reordered
/// piece (of any size that is not a multiple of it) shows as a mismatch.
const CYCLE: usize = 65_521;

/// `CYCLE` pseudo-random bytes followed by the first `MAX_CHUNK` again, so that the stream's
/// bytes at any offset, up to `MAX_CHUNK` of them, are one slice.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut bytes: Vec<u8> = (0..CYCLE).map(|_| (rng.next() >> 56) as u8).collect();
        bytes.extend_from_within(..MAX_CHUNK);
        bytes
    })
}

/// The stream's `len` bytes from `offset` (`len` at most [`MAX_CHUNK`]).
fn stream_at(offset: usize, len: usize) -> &'static [u8] {
    let start = offset % CYCLE;
    &pattern()[start..start + len]
}

/// Writes `total` bytes of the stream to `stream` on a thread, in writes of arbitrary sizes,
/// counting them in `sent`, then half-closes.
fn spawn_writer(
    mut stream: TcpStream,
    total: usize,
    seed: u64,
    sent: Arc<AtomicUsize>,
) -> JoinHandle<io::Result<()>> {
    thread::spawn(move || {
        let mut rng = Rng(seed);
        let mut offset = 0;
        while offset < total {
            let len = rng.size(MAX_CHUNK).min(total - offset);
            stream.write_all(stream_at(offset, len))?;
            offset += len;
            sent.store(offset, Ordering::SeqCst);
        }
        stream.shutdown(Shutdown::Write)
    })
}

/// Reads `total` bytes in reads of arbitrary sizes, checking each against the stream, within
/// `within`; then expects the server to close (the writer has half-closed by then).
fn expect_stream_back(stream: &mut TcpStream, total: usize, seed: u64, within: Duration) {
    let deadline = Instant::now() + within;
    let mut rng = Rng(seed);
    let mut buf = vec![0; MAX_CHUNK];
    let mut offset = 0;
    while offset < total {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {offset} of {total} bytes came back within {within:?}"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        let want = rng.size(MAX_CHUNK).min(total - offset);
        match stream.read(&mut buf[..want]) {
            Ok(0) => panic!("the server closed after {offset} of {total} bytes"),
            Ok(n) => {
                let expected = stream_at(offset, n);
                if let Some(i) = (0..n).find(|&i| buf[i] != expected[i]) {
                    panic!("the echo differs from what was sent at byte {}", offset + i);
                }
                offset += n;
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("read failed after {offset} of {total} bytes: {e}"),
        }
    }
    expect_close(stream);
}

// ----- UDP -----

/// A UDP socket on 127.0.0.1 talking to the server's UDP address.
struct Peer {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Peer {
    fn new(server: SocketAddr) -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        Peer { socket, server }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    fn send(&self, datagram: &[u8]) {
        let n = self.socket.send_to(datagram, self.server).unwrap();
        assert_eq!(n, datagram.len(), "datagram sent whole");
    }

    /// The next datagram from the server; panics after [`WAIT`].
    fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0; 65536];
        let (n, from) = self
            .socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no datagram from {} in time: {e}", self.server));
        assert_eq!(from, self.server, "the answer comes from the server's port");
        buf.truncate(n);
        buf
    }

    /// Sends `datagram` and returns the answer as text.
    fn ask(&self, datagram: &[u8]) -> String {
        self.send(datagram);
        String::from_utf8(self.recv()).expect("the server answered invalid UTF-8")
    }
}

/// What the real `nc -u` (netcat-openbsd) prints after sending `input` to `addr` and waiting a
/// second for answers; `None`, with the reason printed, when nc is not installed.
fn nc_udp(addr: SocketAddr, input: &[u8]) -> Option<Vec<u8>> {
    if !have("nc") {
        println!("skipping the nc -u part: nc (netcat-openbsd) is not installed");
        return None;
    }
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let out = run_bounded(
        Command::new("nc").args(["-u", "-w", "1", &host, &port]),
        Some(input),
        Duration::from_secs(8),
    );
    assert!(
        out.status.success(),
        "nc -u failed: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

// ----- echo -----

#[test]
fn echo_tcp_sends_every_byte_back_verbatim_and_no_banner() {
    let server = Server::start(&["-m", "echo"]);
    let mut s = connect(server.addr);
    expect_no_bytes(&mut s, Duration::from_millis(300));
    let every_byte: Vec<u8> = (0..=255).collect();
    let sends: [&[u8]; 5] = [
        b"Hola, servidor!",
        &every_byte,
        b"exit\n",
        b"/quit\r\n",
        b"\xff\xfe not UTF-8 \x1b[2J",
    ];
    for bytes in sends {
        s.write_all(bytes).unwrap();
        assert_eq!(
            read_exactly(&mut s, bytes.len(), WAIT),
            bytes,
            "echo of {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    // Nothing added: no newline, no notice, and exit words are just bytes.
    expect_no_bytes(&mut s, Duration::from_millis(200));
}

#[test]
fn echo_tcp_returns_a_1_mb_stream_split_arbitrarily_in_order() {
    let server = Server::start(&["-m", "echo"]);
    let mut s = connect(server.addr);
    let writer = spawn_writer(s.try_clone().unwrap(), MB, 1, Arc::default());
    expect_stream_back(&mut s, MB, 2, Duration::from_secs(10));
    writer.join().unwrap().expect("the whole stream written");
}

#[test]
fn echo_tcp_pauses_a_client_that_does_not_read_without_dropping_it_or_growing() {
    let server = Server::start(&["-m", "echo"]);
    let hwm_before = proc_status_kb(server.pid(), "VmHWM");
    // A small receive buffer on our side, so little of the echo hides in our kernel.
    let opts = SockOpts {
        rcvbuf: Some(64 * 1024),
        ..SockOpts::default()
    };
    let mut s = Client::connect_with(server.addr, opts).unwrap().stream;
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    // More than the kernel buffers on both sides can hold (tcp_rmem may reach 32 MiB).
    let total = 128 * MB;
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = spawn_writer(s.try_clone().unwrap(), total, 3, Arc::clone(&sent));

    // Send without reading until the writes stop going through.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut last, mut since) = (0, Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        assert!(
            Instant::now() < deadline,
            "writes never stalled: {} MiB sent",
            last / MB
        );
        thread::sleep(Duration::from_millis(50));
        let now = sent.load(Ordering::SeqCst);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    assert!(
        last < total,
        "the server took all {total} bytes while nobody read the echo: no backpressure"
    );
    // Stay stalled a while: the server must neither drop us nor keep reading.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sent.load(Ordering::SeqCst),
        last,
        "the server read on while its echo went unread"
    );
    let hwm = proc_status_kb(server.pid(), "VmHWM");
    let rss = proc_status_kb(server.pid(), "VmRSS");
    println!(
        "stalled after {} KiB sent; server VmHWM {hwm_before} -> {hwm} kB, VmRSS {rss} kB",
        last / 1024
    );
    assert!(
        hwm < hwm_before + 8 * 1024,
        "server memory grew from {hwm_before} to {hwm} kB (VmHWM) holding an unread echo"
    );

    // Once it reads, everything comes back, in order, and the stream ends cleanly.
    expect_stream_back(&mut s, total, 4, Duration::from_secs(20));
    writer.join().unwrap().expect("the whole stream written");
}

#[test]
fn echo_udp_sends_each_datagram_back_verbatim() {
    let server = Server::start(&["-m", "echo", "--udp"]);
    let udp = server.udp_addr();
    let peer = Peer::new(udp);
    let every_byte: Vec<u8> = (0..=255).collect();
    let datagrams: [&[u8]; 5] = [
        b"Hola, servidor!",
        b"con crlf\r\n",
        b"exit\n",
        &every_byte,
        &[b'x'; 60_000],
    ];
    for datagram in datagrams {
        peer.send(datagram);
        assert_eq!(
            peer.recv(),
            datagram,
            "echo of a {}-byte datagram",
            datagram.len()
        );
    }
    if let Some(shown) = nc_udp(udp, b"hola desde nc -u\n") {
        assert_eq!(String::from_utf8_lossy(&shown), "hola desde nc -u\n");
    }
}

// ----- ack -----

#[test]
fn ack_tcp_acknowledges_each_message_and_closes_on_an_exit_word() {
    let server = Server::start(&["-m", "ack", "--flush-partial", "50"]);
    let mut c = Client::connect(server.addr);
    let me = c.stream.local_addr().unwrap();
    server.expect_out(&format!("[SERVER] Client: {me} connected!"));
    // No banner: the first line is the acknowledgement.
    c.send("hola");
    c.expect_line(&received("hola"));
    c.send_raw(b"uno\r\ndos\n");
    c.expect_line(&received("uno"));
    c.expect_line(&received("dos"));
    // Without a newline: a message after --flush-partial of quiet.
    c.send_raw(b"Hola, servidor!");
    c.expect_line(&received("Hola, servidor!"));
    c.send(&"x".repeat(201));
    c.expect_line(TOO_LONG);
    let longest = "y".repeat(200);
    c.send(&longest);
    c.expect_line(&received(&longest));
    for text in ["hola", "uno", "dos", "Hola, servidor!", &longest] {
        server.expect_out(&format!("{me}: {text}"));
    }
    c.send("exit");
    c.expect_line(BYE);
    assert_eq!(c.read_to_close(), Vec::<String>::new(), "after the goodbye");

    // An exit word without a newline, as `sock.send(b"salir")` sends it.
    let mut c = Client::connect(server.addr);
    c.send_raw(b"salir");
    c.expect_line(BYE);
    assert_eq!(c.read_to_close(), Vec::<String>::new(), "after the goodbye");
}

#[test]
fn ack_udp_acknowledges_each_datagram_and_exit_only_says_goodbye() {
    let mut server = Server::start(&["-m", "ack", "--udp"]);
    let udp = server.udp_addr();
    let mut tcp = Client::connect(server.addr);
    tcp.send("antes");
    tcp.expect_line(&received("antes"));

    let peer = Peer::new(udp);
    let longest = "y".repeat(200);
    let longest_crlf = format!("{longest}\r\n");
    let answers: [(&[u8], String); 6] = [
        (b"hola udp", received("hola udp")),
        (b"con lf\n", received("con lf")),
        (b"con crlf\r\n", received("con crlf")),
        (longest_crlf.as_bytes(), received(&longest)),
        (&[b'z'; 201], TOO_LONG.to_string()),
        (&[b'z'; 202], TOO_LONG.to_string()),
    ];
    for (datagram, answer) in answers {
        assert_eq!(
            peer.ask(datagram),
            with_newline(&answer),
            "answer to {:?}",
            String::from_utf8_lossy(datagram)
        );
    }
    server.expect_out(&format!("{}: hola udp", peer.addr()));

    assert_eq!(peer.ask(b"exit"), with_newline(BYE));
    // One goodbye only (the next answer is the next message's), and the server serves on.
    assert_eq!(peer.ask(b"sigo aqui"), with_newline(&received("sigo aqui")));
    assert!(
        server.exited().is_none(),
        "an exit datagram stopped the server"
    );
    tcp.send("despues");
    tcp.expect_line(&received("despues"));

    if let Some(shown) = nc_udp(udp, b"hola desde nc -u\n") {
        assert_eq!(
            String::from_utf8_lossy(&shown),
            with_newline(&received("hola desde nc -u"))
        );
    }
}

// ----- chat over UDP, and the UDP port -----

#[test]
fn chat_udp_datagram_reaches_the_room_and_exit_words_never_stop_the_server() {
    let mut server = Server::start(&["--udp"]);
    let udp = server.udp_addr();
    assert_eq!(udp, server.addr, "--udp answers on the TCP port's number");
    let mut room = server.room(&["alice", "bob"]);
    let peer = Peer::new(udp);
    let from = peer.addr();

    assert_eq!(
        peer.ask(b"hola sala\n"),
        with_newline(&received("hola sala"))
    );
    for member in room.iter_mut() {
        member.expect_line(&format!("{from}: hola sala"));
    }
    server.expect_out(&format!("{from}: hola sala"));

    for word in [
        "exit",
        "exit()",
        "EXIT",
        "/quit",
        ":q",
        "#LOGOUT",
        "salir",
        " exit \r\n",
    ] {
        assert_eq!(
            peer.ask(word.as_bytes()),
            with_newline(BYE),
            "{word:?} over UDP"
        );
    }
    assert_eq!(peer.ask(b"sigo aqui"), with_newline(&received("sigo aqui")));
    assert!(
        server.exited().is_none(),
        "an exit datagram stopped the server"
    );
    // The exit words reached nobody; the room goes on over TCP.
    room[0].expect_line(&format!("{from}: sigo aqui"));
    room[1].expect_line(&format!("{from}: sigo aqui"));
    room[1].send("todavia aqui");
    room[0].expect_line("bob: todavia aqui");
}

#[test]
fn udp_port_0_picks_a_free_port_shown_on_the_second_line() {
    let server = Server::start(&["-m", "ack", "--udp-port", "0"]);
    let udp = server.udp_addr();
    assert_eq!(udp.ip(), server.addr.ip());
    assert_ne!(udp.port(), 0, "the real port is shown");
    assert_eq!(Peer::new(udp).ask(b"hola"), with_newline(&received("hola")));
}

// ----- the coursework programs -----

/// Assignment 000, the 1:1 chat: a client and the server's operator take turns; `exit()`
/// ends it.
#[test]
fn seed_000_one_to_one_chat_with_the_operator_ends_with_exit() {
    // As people run it: the web door open, the client greeted once it is known to be none.
    let mut server = Launch::new(&[]).console(Console::Piped).web().start();
    let mut client = server.client();
    let name = client.name.clone();
    server.expect_out(&format!("[SERVER] Client: {name} connected!"));
    client.send("Hola, servidor");
    server.expect_out(&format!("{name}: Hola, servidor"));
    server.console("Hola, cliente");
    client.expect_line("SERVER: Hola, cliente");
    client.send("exit()");
    client.expect_line(BYE);
    assert_eq!(
        client.read_to_close(),
        Vec::<String>::new(),
        "after the goodbye"
    );
    server.expect_out(&format!("[SERVER] Client: {name} disconnected."));
}

/// Whether the fixed ports a coursework client needs are free; prints why not.
fn ports_free(tcp: &[u16], udp: &[u16]) -> bool {
    let taken = tcp
        .iter()
        .find(|&&p| TcpListener::bind(("127.0.0.1", p)).is_err())
        .or_else(|| {
            udp.iter()
                .find(|&&p| UdpSocket::bind(("127.0.0.1", p)).is_err())
        });
    if let Some(port) = taken {
        println!("SKIPPED: port {port} in use");
    }
    taken.is_none()
}

/// Runs a coursework client from tests/seeds with `input` on its stdin; returns its stdout.
fn python(script: &str, input: &[u8]) -> String {
    let out = run_bounded(
        Command::new("python3")
            .arg(format!("{SEEDS}/{script}"))
            .env("PYTHONIOENCODING", "utf-8"),
        Some(input),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the client printed UTF-8")
}

/// Assignment 001 (tests/seeds/echo_client_001.py): the echo client sends `Hola, servidor!`
/// without a newline to localhost:1234.
fn seed_001_echo_client() {
    if !ports_free(&[1234], &[]) {
        return;
    }
    let _server = Server::start(&["-m", "echo", "-p", "1234"]);
    assert_eq!(
        python("echo_client_001.py", b""),
        "n[+] Mensaje recibido del servidor: Hola, servidor!\n"
    );
}

/// Assignment 004 (tests/seeds/ack_client_004.py): the TCP/UDP client, once per protocol,
/// against one ack server.
fn seed_004_ack_client() {
    if !ports_free(&[65432], &[65433]) {
        return;
    }
    let server = Server::start(&["-m", "ack", "-p", "65432", "--udp-port", "65433"]);
    assert_eq!(server.udp_addr(), "127.0.0.1:65433".parse().unwrap());
    let prompt = "¿Quieres usar TCP o UDP? (tcp/udp): ";
    for (proto, hola) in [("TCP", "Hola, Servidor TCP"), ("UDP", "Hola, Servidor UDP")] {
        let input = format!("{}\n{hola}\nexit\n", proto.to_lowercase());
        let ask = format!("Escribe un mensaje ({proto}): ");
        let said = format!("Servidor {proto} respondió: ");
        assert_eq!(
            python("ack_client_004.py", input.as_bytes()),
            format!(
                "{prompt}{ask}{said}{}\n\n{ask}{said}{BYE}\n\n",
                received(hola)
            ),
            "what the {proto} client printed"
        );
        let line = server.expect_out_prefix("127.0.0.1:");
        assert!(line.ends_with(&format!(": {hola}")), "transcript: {line:?}");
    }
}

#[test]
fn the_coursework_clients_work_unchanged() {
    if !have("python3") {
        println!("SKIPPED: python3 is not installed");
        return;
    }
    seed_001_echo_client();
    seed_004_ack_client();
}

#[test]
fn bundled_client_with_udp_prints_the_servers_answer() {
    let server = Server::start(&["--udp"]);
    server.udp_addr();
    let mut alice = server.named("alice");
    let port = server.addr.port().to_string();
    let out = run_bounded(
        Command::new(CLIENT).args(["-p", &port, "--udp"]),
        Some(b"hola desde loopchat-client\n"),
        Duration::from_secs(8),
    );
    assert!(
        out.status.success(),
        "loopchat-client --udp: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        with_newline(&received("hola desde loopchat-client"))
    );
    let line = alice.expect_prefix("127.0.0.1:");
    assert!(
        line.ends_with(": hola desde loopchat-client"),
        "alice saw {line:?}"
    );
}
