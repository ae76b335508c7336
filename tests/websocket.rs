//! The web door over real sockets: HTTP requests on the chat port, the WebSocket handshake,
//! and WebSocket chat clients next to line clients (docs/protocol.md, "The web door").
//!
//! The WebSocket side is spoken by the benchmark crate's small client (`loopchat_bench::ws`),
//! the line side by the tests' `nc`-style [`Client`]. Every test asserts what a client sees, and
//! every wait has a deadline.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Launch, SHUTDOWN, Server, WAIT, WELCOME};
use loopchat_bench::generator::{Gen, join};
use loopchat_bench::traffic::Traffic;
use loopchat_bench::wire::Proto;
use loopchat_bench::ws::{
    self, Frame, HandshakeError, ResponseHead, WsClient, client_frame, encode_frame, op, status,
};

/// The line an over-long line or message gets.
const TOO_LONG: &str = "[SERVER] Error: message too long (max 200 bytes)";

/// How long a test waits to be sure nothing more comes.
const QUIET: Duration = Duration::from_millis(300);

/// The real server with its web door open.
fn web_server(args: &[&str]) -> Server {
    Launch::new(args).web().start()
}

// ---- Helpers ----------------------------------------------------------------------------------

/// A WebSocket chat client, greeted, with its name.
struct Ws {
    c: WsClient,
    name: String,
}

impl Ws {
    /// Opens a WebSocket to `server` and reads its welcome and intro.
    fn connect(server: &Server) -> Ws {
        let c = ws::connect_ws(server.addr).unwrap_or_else(|e| panic!("{e}"));
        Ws::greet(c)
    }

    fn greet(c: WsClient) -> Ws {
        let mut ws = Ws {
            c,
            name: "websocket client".into(),
        };
        ws.expect_line(WELCOME);
        let intro = ws.line();
        ws.name = intro
            .strip_prefix("[SERVER] You are ")
            .and_then(|rest| rest.split_once(". "))
            .map(|(name, _)| name.to_owned())
            .unwrap_or_else(|| panic!("unexpected intro line {intro:?}"));
        assert_eq!(intro, common::intro(&ws.name));
        ws
    }

    fn line(&mut self) -> String {
        self.c.read_text_line(WAIT)
    }

    fn expect_line(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "{}: unexpected line", self.name);
    }

    /// Skips lines until one starts with `prefix`; returns it.
    fn expect_prefix(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.c.try_text_line(left) {
                Some(line) if line.starts_with(prefix) => return line,
                Some(line) => seen.push(line),
                None => panic!(
                    "{}: never received a line starting with {prefix:?}; got {seen:?}",
                    self.name
                ),
            }
        }
    }

    fn expect_eventually(&mut self, want: &str) {
        let got = self.expect_prefix(want);
        assert_eq!(got, want, "{}: a longer line than wanted", self.name);
    }

    fn expect_silence(&mut self, quiet: Duration) {
        match self.c.read_frame(quiet) {
            Err(ws::ReadError::Timeout) => {}
            Ok(frame) => panic!(
                "{}: expected silence, got {}",
                self.name,
                ws::describe(&frame)
            ),
            Err(e) => panic!("{}: expected silence: {e}", self.name),
        }
    }

    fn send(&mut self, text: &str) {
        self.c.send_text(text).expect("send a text frame");
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.c.send_frame(bytes).expect("send frames");
    }

    /// The next frame, whatever it is.
    fn frame(&mut self) -> Frame {
        self.c
            .read_frame(WAIT)
            .unwrap_or_else(|e| panic!("{}: no frame: {e}", self.name))
    }

    /// The server's close with `code`, before it any lines (returned), then the end of TCP.
    fn expect_close(&mut self, code: u16) -> Vec<String> {
        self.c.expect_close(code, WAIT)
    }
}

/// A line client that connected after `web` says its first line: with the web door open, the
/// room hears of a client that was greeted before it said anything only then.
fn speak_up(nc: &mut Client, web: &mut Ws) {
    nc.send("here");
    web.expect_line(&format!("[SERVER] Client: {} connected!", nc.name));
    web.expect_line(&format!("{}: here", nc.name));
}

/// An HTTP answer: its head and body, the connection closed after it.
struct Answer {
    head: ResponseHead,
    body: String,
}

/// Sends `request` on a new connection and reads the answer until the server closes (it
/// closes after every answer but the upgrade).
fn http(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.write_all(request).expect("send the request");
    let got = read_to_close(&mut stream, WAIT);
    let head = ws::parse_response_head(&got)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&got)))
        .unwrap_or_else(|| panic!("no whole head in {:?}", String::from_utf8_lossy(&got)));
    let body = String::from_utf8(got[head.len..].to_vec()).expect("a UTF-8 body");
    if let Some(len) = head.header("content-length") {
        assert_eq!(
            len.parse::<usize>().unwrap(),
            body.len(),
            "{}: Content-Length says {len}, the body that came is {body:?}",
            head.status_line
        );
    }
    assert_eq!(
        head.header("connection"),
        Some("close"),
        "{}",
        head.status_line
    );
    Answer { head, body }
}

/// `GET path` with a Host header.
fn get(addr: SocketAddr, path: &str) -> Answer {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n").as_bytes(),
    )
}

/// Everything the server sends until it closes (a reset ends it too); panics after `within`.
fn read_to_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the server did not close; got {:?}",
            String::from_utf8_lossy(&got)
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return got,
        }
    }
}

/// A handshake request with these header lines (each without its CRLF).
fn request(addr: SocketAddr, lines: &[&str]) -> Vec<u8> {
    let mut req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n");
    for line in lines {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

const UPGRADE: &[&str] = &[
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];

/// Opens a WebSocket with an `Origin` header: the client, or the refusal's status.
fn with_origin(addr: SocketAddr, origin: &str) -> Result<WsClient, u16> {
    match ws::connect_ws_with(addr, Some(origin)) {
        Ok(c) => Ok(c),
        Err(HandshakeError::Refused { head, .. }) => Err(head.status),
        Err(e) => panic!("{e}"),
    }
}

// ---- The handshake ----------------------------------------------------------------------------

#[test]
fn the_handshake_makes_a_chat_client() {
    let server = web_server(&[]);
    let c = ws::connect_ws(server.addr).unwrap_or_else(|e| panic!("{e}"));
    // The client checked the accept key; the rest of what RFC 6455 asks of the answer:
    let r = &c.response;
    assert_eq!(r.status_line, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert!(r.has_token("connection", "upgrade"));
    let mut a = Ws::greet(c);
    assert_eq!(a.name, "guest1");
    let mut b = Ws::connect(&server);
    a.expect_line(&format!("[SERVER] Client: {} connected!", b.name));
    a.send("hello over a websocket");
    b.expect_line(&format!("{}: hello over a websocket", a.name));
    a.expect_silence(QUIET); // no echo to the sender
    let metrics = get(server.addr, "/metrics").body;
    assert!(
        metrics.contains("\nloopchat_websocket_clients 2\n"),
        "{metrics}"
    );
}

#[test]
fn the_rfc_example_key_gets_the_rfc_accept_key() {
    let server = web_server(&[]);
    let mut stream = TcpStream::connect_timeout(&server.addr, WAIT).unwrap();
    stream.write_all(&request(server.addr, UPGRADE)).unwrap();
    let c = WsClient::handshake_raw(stream, &[], "dGhlIHNhbXBsZSBub25jZQ==", WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    Ws::greet(c);
}

#[test]
fn frames_sent_with_the_handshake_are_read() {
    let server = web_server(&[]);
    let mut watcher = server.client();
    // A client may send right after its request, in the same write.
    let key = ws::random_key();
    let mut bytes = ws::handshake_request(&server.addr.to_string(), &key, None);
    bytes.extend(client_frame(true, op::TEXT, b"said at once"));
    let stream = TcpStream::connect_timeout(&server.addr, WAIT).unwrap();
    let c = WsClient::handshake_raw(stream, &bytes, &key, WAIT).unwrap_or_else(|e| panic!("{e}"));
    let ws = Ws::greet(c);
    watcher.expect_line(&format!("[SERVER] Client: {} connected!", ws.name));
    watcher.expect_line(&format!("{}: said at once", ws.name));
}

#[test]
fn another_websocket_version_is_426_with_the_version_spoken() {
    let server = web_server(&[]);
    let answer = http(
        server.addr,
        &request(
            server.addr,
            &[
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 8",
            ],
        ),
    );
    assert_eq!(answer.head.status_line, "HTTP/1.1 426 Upgrade Required");
    assert_eq!(answer.head.header("sec-websocket-version"), Some("13"));
    // No version at all is another version too.
    let answer = http(server.addr, &request(server.addr, &UPGRADE[..3]));
    assert_eq!(answer.head.status, 426);
    assert_eq!(answer.head.header("sec-websocket-version"), Some("13"));
}

#[test]
fn a_handshake_without_its_key_or_connection_token_is_400() {
    let server = web_server(&[]);
    let no_key = [UPGRADE[0], UPGRADE[1], UPGRADE[3]];
    let answer = http(server.addr, &request(server.addr, &no_key));
    assert_eq!(answer.head.status_line, "HTTP/1.1 400 Bad Request");
    let no_connection = [UPGRADE[0], UPGRADE[2], UPGRADE[3]];
    assert_eq!(
        http(server.addr, &request(server.addr, &no_connection))
            .head
            .status,
        400
    );
    let not_websocket = ["Upgrade: h2c", UPGRADE[1], UPGRADE[2], UPGRADE[3]];
    assert_eq!(
        http(server.addr, &request(server.addr, &not_websocket))
            .head
            .status,
        400
    );
    // A head httparse cannot read.
    let answer = http(server.addr, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n");
    assert_eq!(answer.head.status, 400);
}

#[test]
fn another_sites_page_is_403_unless_allowed() {
    let server = web_server(&[]);
    let addr = server.addr;
    assert_eq!(
        with_origin(addr, "https://evil.example").err(),
        Some(403),
        "a foreign Origin"
    );
    assert_eq!(
        with_origin(addr, &format!("http://{addr}.evil.example")).err(),
        Some(403)
    );
    // The server's own page, over http or https.
    for scheme in ["http", "https"] {
        let c = with_origin(addr, &format!("{scheme}://{addr}"))
            .unwrap_or_else(|s| panic!("own page over {scheme}: {s}"));
        Ws::greet(c);
    }
    let answer = http(
        addr,
        &request(addr, &[UPGRADE, &["Origin: https://evil.example"]].concat()),
    );
    assert_eq!(answer.head.status_line, "HTTP/1.1 403 Forbidden");

    let server = web_server(&[
        "--ws-origin",
        "https://evil.example",
        "--ws-origin",
        "https://friend.example",
    ]);
    for allowed in ["https://evil.example", "https://friend.example"] {
        let c = with_origin(server.addr, allowed).unwrap_or_else(|s| panic!("{allowed}: {s}"));
        Ws::greet(c);
    }
    assert_eq!(
        with_origin(server.addr, "https://other.example").err(),
        Some(403)
    );

    let server = web_server(&["--ws-origin", "*"]);
    let c = with_origin(server.addr, "https://anyone.example").unwrap_or_else(|s| panic!("{s}"));
    Ws::greet(c);
}

// ---- Plain HTTP -------------------------------------------------------------------------------

#[test]
fn get_root_is_the_chat_page() {
    let server = web_server(&[]);
    let mut watcher = server.client();
    for path in ["/", "/?room=x"] {
        let page = get(server.addr, path);
        assert_eq!(page.head.status_line, "HTTP/1.1 200 OK");
        let kind = page.head.header("content-type").unwrap_or("");
        assert!(kind.starts_with("text/html"), "Content-Type {kind:?}");
        assert!(page.body.contains("<html"), "{path}: no <html in the page");
        assert!(page.head.header("content-security-policy").is_some());
    }
    // Nobody joined the chat.
    watcher.expect_silence(QUIET);
}

#[test]
fn metrics_for_this_machine_and_off() {
    let server = web_server(&[]);
    let mut ws = Ws::connect(&server);
    ws.send("one line");
    let metrics = get(server.addr, "/metrics");
    assert_eq!(metrics.head.status_line, "HTTP/1.1 200 OK");
    assert!(
        metrics
            .head
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        metrics.head.header("content-type")
    );
    let body = metrics.body;
    assert!(body.contains("# TYPE loopchat_clients gauge\n"), "{body}");
    // Which connections count as clients is the console's /stats' business: only the
    // figures' presence is checked, and the one WebSocket client.
    for name in [
        "clients",
        "sockets",
        "rooms",
        "lines_in_total",
        "bytes_written_total",
    ] {
        assert!(
            body.contains(&format!("\nloopchat_{name} ")),
            "{name}: {body}"
        );
    }
    assert!(body.contains("\nloopchat_websocket_clients 1\n"), "{body}");

    let off = web_server(&["--metrics", "off"]);
    let answer = get(off.addr, "/metrics");
    assert_eq!(answer.head.status_line, "HTTP/1.1 403 Forbidden");
    assert!(!answer.body.contains("loopchat_clients"));

    let any = web_server(&["--metrics", "any"]);
    assert_eq!(get(any.addr, "/metrics").head.status, 200);
}

#[test]
fn other_paths_are_404_and_other_methods_405() {
    let server = web_server(&[]);
    let answer = get(server.addr, "/favicon.ico");
    assert_eq!(answer.head.status_line, "HTTP/1.1 404 Not Found");
    assert!(
        answer
            .head
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "small text answers"
    );
    let answer = http(
        server.addr,
        format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 2\r\n\r\nhi",
            server.addr
        )
        .as_bytes(),
    );
    assert_eq!(answer.head.status_line, "HTTP/1.1 405 Method Not Allowed");
}

#[test]
fn a_head_over_8_kib_is_431() {
    let server = web_server(&[]);
    // Headers that never end, past the bound.
    let mut big = format!("GET / HTTP/1.1\r\nHost: {}\r\nX-Big: ", server.addr).into_bytes();
    big.resize(9000, b'a');
    let answer = http(server.addr, &big);
    assert_eq!(
        answer.head.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // A whole head, but too large.
    let mut whole = format!("GET / HTTP/1.1\r\nHost: {}\r\n", server.addr);
    for i in 0..100 {
        whole.push_str(&format!("X-Cookie-{i}: {}\r\n", "c".repeat(90)));
    }
    whole.push_str("\r\n");
    assert!(whole.len() > 8 * 1024);
    assert_eq!(http(server.addr, whole.as_bytes()).head.status, 431);
}

#[test]
fn a_slowloris_head_is_closed_after_5_s() {
    let server = web_server(&[]);
    let mut stream = TcpStream::connect_timeout(&server.addr, WAIT).unwrap();
    // A whole request line: the connection is HTTP from now on.
    stream.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed_after = loop {
        let elapsed = start.elapsed();
        assert!(
            elapsed < Duration::from_secs(10),
            "still open after {elapsed:?} of a trickling head"
        );
        // A byte now and then, never the blank line.
        let _ = stream.write_all(b"a");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => break start.elapsed(),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break start.elapsed(), // reset
        }
    };
    eprintln!("slowloris closed after {closed_after:?}");
    assert!(
        closed_after >= Duration::from_millis(4700) && closed_after <= Duration::from_millis(6500),
        "closed after {closed_after:?}, not about 5 s"
    );
    assert!(
        got.is_empty(),
        "a slowloris gets nothing, got {:?}",
        String::from_utf8_lossy(&got)
    );
    // The server is fine.
    server.client();
}

// ---- WebSocket clients and line clients together -----------------------------------------------

#[test]
fn a_line_client_and_a_websocket_client_talk_in_the_lobby_and_a_room() {
    let server = web_server(&[]);
    let mut web = Ws::connect(&server);
    let mut nc = server.client();
    // The lobby, both ways. A line client greeted before it said anything is announced with
    // its first line.
    nc.send("hello from nc");
    web.expect_line(&format!("[SERVER] Client: {} connected!", nc.name));
    web.expect_line(&format!("{}: hello from nc", nc.name));
    web.send("hello from the browser");
    nc.expect_line(&format!("{}: hello from the browser", web.name));
    // Commands work over WebSocket, answers come as frames.
    web.send("/nick webby");
    web.expect_line("[SERVER] You are now known as webby");
    nc.expect_line(&format!("[SERVER] {} is now known as webby", web.name));
    web.name = "webby".into();

    // A room, both ways.
    web.send("/join #den");
    web.expect_line("[#den] [SERVER] You joined #den (1 here); what you type goes to #den");
    web.expect_prefix("[#den] [SERVER] End of history");
    nc.send("/join #den");
    nc.expect_prefix("[#den] [SERVER] End of history");
    web.expect_eventually(&format!("[#den] [SERVER] {} joined", nc.name));
    nc.send("in the den");
    web.expect_eventually(&format!("[#den] {}: in the den", nc.name));
    web.send("back at you");
    nc.expect_eventually("[#den] webby: back at you");
    // The lobby still reaches both.
    web.send("/join #lobby");
    web.expect_line("[SERVER] What you type goes to #lobby now");
    web.send("lobby again");
    nc.expect_eventually("webby: lobby again");

    // A WebSocket client's departure is announced like any other.
    drop(web);
    nc.expect_eventually("[SERVER] Client: webby disconnected.");
}

#[test]
fn a_fragmented_message_is_one_line_and_controls_may_come_between() {
    let server = web_server(&[]);
    let mut web = Ws::connect(&server);
    let mut nc = server.client();
    speak_up(&mut nc, &mut web);
    let mut bytes = client_frame(false, op::TEXT, b"hel");
    bytes.extend(client_frame(true, op::PING, b"between"));
    bytes.extend(client_frame(false, op::CONTINUATION, b"lo "));
    bytes.extend(client_frame(true, op::CONTINUATION, "wörld".as_bytes()));
    // Byte by byte, so the server sees every piece apart.
    for b in bytes {
        web.send_raw(&[b]);
    }
    let pong = web.frame();
    assert_eq!(
        (pong.opcode, &pong.payload[..]),
        (op::PONG, &b"between"[..])
    );
    nc.expect_line(&format!("{}: hello wörld", web.name));
    // A character split across two fragments is fine too.
    let e = "é".as_bytes();
    let mut bytes = client_frame(false, op::TEXT, &[b'c', b'a', b'f', e[0]]);
    bytes.extend(client_frame(true, op::CONTINUATION, &e[1..]));
    web.send_raw(&bytes);
    nc.expect_line(&format!("{}: café", web.name));
}

#[test]
fn a_message_begun_while_lines_wait_for_the_rate_stays_whole() {
    // --rate 1, bursts of 2: the third line waits, decoded, with the first fragment of the
    // next message read behind it (fuzz/regressions/websocket/keep-line-and-fragment-start).
    let server = web_server(&["--rate", "1"]);
    let mut web = Ws::connect(&server);
    let mut nc = server.client();
    speak_up(&mut nc, &mut web);
    let mut bytes = Vec::new();
    for line in ["one", "two", "three"] {
        bytes.extend(client_frame(true, op::TEXT, line.as_bytes()));
    }
    bytes.extend(client_frame(false, op::TEXT, b"ab"));
    web.send_raw(&bytes);
    for line in ["one", "two", "three"] {
        nc.expect_line(&format!("{}: {line}", web.name));
    }
    web.send_raw(&client_frame(true, op::CONTINUATION, b"cd"));
    nc.expect_line(&format!("{}: abcd", web.name));
}

#[test]
fn a_ping_gets_its_pong_and_a_pong_gets_nothing() {
    let server = web_server(&[]);
    let mut web = Ws::connect(&server);
    web.c.send_ping(b"are you there?").unwrap();
    let pong = web.frame();
    assert_eq!(
        (pong.opcode, pong.fin, &pong.payload[..]),
        (op::PONG, true, &b"are you there?"[..])
    );
    web.c.send_ping(b"").unwrap();
    let pong = web.frame();
    assert_eq!((pong.opcode, pong.payload.len()), (op::PONG, 0));
    let full = [b'p'; 125];
    web.c.send_ping(&full).unwrap();
    assert_eq!(web.frame().payload, full);
    // An unsolicited pong is ignored, and the client stays.
    web.send_raw(&client_frame(true, op::PONG, b"heartbeat"));
    web.expect_silence(QUIET);
    web.send("/nick still-here");
    web.expect_line("[SERVER] You are now known as still-here");
}

#[test]
fn a_close_is_answered_with_its_status_then_the_connection_ends() {
    let server = web_server(&[]);
    let mut nc = server.client();
    let mut web = Ws::connect(&server);
    nc.expect_line(&format!("[SERVER] Client: {} connected!", web.name));
    web.c.send_close(Some(4000), "done here").unwrap();
    assert_eq!(web.expect_close(4000), Vec::<String>::new());
    nc.expect_line(&format!("[SERVER] Client: {} disconnected.", web.name));

    let mut web = Ws::connect(&server);
    nc.expect_line(&format!("[SERVER] Client: {} connected!", web.name));
    web.c.send_close(Some(status::GOING_AWAY), "").unwrap();
    assert!(web.expect_close(status::GOING_AWAY).is_empty());

    // A close without a status is answered with 1000.
    let mut web = Ws::connect(&server);
    web.c.send_close(None, "").unwrap();
    assert!(web.expect_close(status::NORMAL).is_empty());

    // Nothing after a close is read.
    let mut web = Ws::connect(&server);
    let name = web.name.clone();
    let mut bytes = client_frame(true, op::CLOSE, &ws::close_payload(Some(1000), ""));
    bytes.extend(client_frame(true, op::TEXT, b"after the close"));
    web.send_raw(&bytes);
    web.expect_close(status::NORMAL);
    let seen = nc.lines_until_quiet(QUIET);
    assert!(
        !seen.iter().any(|l| l.contains("after the close")),
        "{name}'s line after its close was delivered: {seen:?}"
    );
}

#[test]
fn a_binary_frame_is_closed_with_1003() {
    let server = web_server(&[]);
    let mut web = Ws::connect(&server);
    web.send_raw(&client_frame(true, op::BINARY, &[0, 1, 2, 3]));
    assert!(web.expect_close(status::UNSUPPORTED_DATA).is_empty());
}

#[test]
fn a_text_message_that_is_not_utf8_is_closed_with_1007() {
    let server = web_server(&[]);
    let mut nc = server.client();
    let mut web = Ws::connect(&server);
    nc.expect_line(&format!("[SERVER] Client: {} connected!", web.name));
    web.send_raw(&client_frame(true, op::TEXT, b"bad \xff\xfe bytes"));
    assert!(web.expect_close(status::INVALID_DATA).is_empty());
    // Nothing of it reached the room.
    let seen = nc.lines_until_quiet(QUIET);
    assert!(!seen.iter().any(|l| l.contains("bad")), "{seen:?}");
    // Invalid across fragments too.
    let mut web = Ws::connect(&server);
    let mut bytes = client_frame(false, op::TEXT, b"ok so far \xe2\x82");
    bytes.extend(client_frame(true, op::CONTINUATION, b"x"));
    web.send_raw(&bytes);
    assert!(web.expect_close(status::INVALID_DATA).is_empty());
}

#[test]
fn what_breaks_the_protocol_is_closed_with_1002() {
    let server = web_server(&[]);
    let mut nc = server.client();
    let mut rsv1 = client_frame(true, op::TEXT, b"x");
    rsv1[0] |= 0x40;
    let mut rsv3 = client_frame(true, op::TEXT, b"x");
    rsv3[0] |= 0x10;
    let mut text_in_message = client_frame(false, op::TEXT, b"a");
    text_in_message.extend(client_frame(true, op::TEXT, b"b"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an unmasked frame",
            encode_frame(true, op::TEXT, None, b"hi"),
        ),
        ("reserved bit 1", rsv1),
        ("reserved bit 3", rsv3),
        ("reserved opcode 3", client_frame(true, 0x3, b"")),
        ("reserved control opcode 0xB", client_frame(true, 0xB, b"")),
        ("a fragmented ping", client_frame(false, op::PING, b"x")),
        ("a fragmented close", client_frame(false, op::CLOSE, b"")),
        (
            "a 126-byte ping",
            client_frame(true, op::PING, &[b'p'; 126]),
        ),
        (
            "a continuation with nothing to continue",
            client_frame(true, op::CONTINUATION, b"x"),
        ),
        ("a new text frame inside a message", text_in_message),
    ];
    for (what, bytes) in cases {
        let mut web = Ws::connect(&server);
        nc.expect_line(&format!("[SERVER] Client: {} connected!", web.name));
        web.send_raw(&bytes);
        let lines = web.c.expect_close(status::PROTOCOL_ERROR, WAIT);
        assert!(
            lines.is_empty(),
            "{what}: lines before the close: {lines:?}"
        );
        nc.expect_line(&format!("[SERVER] Client: {} disconnected.", web.name));
    }
    nc.send("the server is fine");
    Ws::connect(&server);
}

#[test]
fn a_message_over_the_cap_is_refused_and_the_client_stays() {
    let server = web_server(&[]);
    let mut web = Ws::connect(&server);
    let mut nc = server.client();
    speak_up(&mut nc, &mut web);
    web.send(&"y".repeat(201));
    web.expect_line(TOO_LONG);
    // Exactly the cap is a line.
    let max = "x".repeat(200);
    web.send(&max);
    nc.expect_line(&format!("{}: {max}", web.name));
    // Over the cap across fragments, with a ping in the middle: told once, pong still sent.
    let mut bytes = client_frame(false, op::TEXT, &[b'a'; 150]);
    bytes.extend(client_frame(true, op::PING, b"mid"));
    bytes.extend(client_frame(false, op::CONTINUATION, &[b'a'; 40]));
    bytes.extend(client_frame(true, op::CONTINUATION, &[b'a'; 11]));
    web.send_raw(&bytes);
    let pong = web.frame();
    assert_eq!((pong.opcode, &pong.payload[..]), (op::PONG, &b"mid"[..]));
    web.expect_line(TOO_LONG);
    web.send("still connected");
    nc.expect_line(&format!("{}: still connected", web.name));
    web.expect_silence(QUIET);
    // A line client's over-long line gets the same line.
    nc.send(&"z".repeat(201));
    nc.expect_line(TOO_LONG);
}

#[test]
fn a_mebibyte_frame_is_skipped_not_buffered() {
    const MIB: usize = 1 << 20;
    /// WebSocket clients each holding a 1 MiB frame unfinished: a server that buffered
    /// messages would hold CLIENTS MiB.
    const CLIENTS: usize = 8;
    /// "A few MB": what the server's RSS may grow by meanwhile.
    const SLACK_KB: u64 = 3 * 1024;

    let server = web_server(&["--rate", "0"]);
    let mut nc = server.client();
    let mut webs: Vec<Ws> = (0..CLIENTS).map(|_| Ws::connect(&server)).collect();
    // Warm up: every client has sent an over-long message and a line. (Each client sees the
    // others come and talk: lines are looked for among those.)
    for web in &mut webs {
        web.send(&"w".repeat(300));
        web.expect_eventually(TOO_LONG);
        web.send("warm");
    }
    for web in &webs {
        nc.expect_eventually(&format!("{}: warm", web.name));
    }
    let before = server.rss_kb();

    let payload: Vec<u8> = (0..MIB).map(|i| b'a' + (i % 26) as u8).collect();
    let frame = client_frame(true, op::TEXT, &payload);
    assert_eq!(frame[1] & 0x7F, 127, "a 64-bit length");
    // All but the last byte: every message is unfinished, as big as it gets.
    let writers: Vec<_> = webs
        .iter()
        .map(|web| {
            let mut stream = web.c.stream.try_clone().unwrap();
            let head = frame[..frame.len() - 1].to_vec();
            thread::spawn(move || stream.write_all(&head))
        })
        .collect();
    for w in writers {
        w.join().unwrap().expect("the server reads the whole frame");
    }
    // The kernel takes a mebibyte into socket buffers before the server reads it: wait until
    // the server has read every byte, watching RSS meanwhile.
    let ports: Vec<u16> = webs
        .iter()
        .map(|w| w.c.stream.local_addr().unwrap().port())
        .collect();
    let mut peak = server.rss_kb();
    let deadline = Instant::now() + WAIT;
    while ports
        .iter()
        .any(|&p| unread_by_server(server.addr.port(), p) != Some(0))
    {
        assert!(
            Instant::now() < deadline,
            "the server left the frames unread"
        );
        peak = peak.max(server.rss_kb());
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(100));
    peak = peak.max(server.rss_kb());
    assert!(
        peak <= before + SLACK_KB,
        "RSS grew from {before} kB to {peak} kB with {CLIENTS} unfinished 1 MiB messages"
    );
    for web in &mut webs {
        web.send_raw(&frame[frame.len() - 1..]);
        web.expect_eventually(TOO_LONG);
        web.send("after the mebibyte");
    }
    for web in &webs {
        nc.expect_eventually(&format!("{}: after the mebibyte", web.name));
    }
    // And a whole one in one go, with a line right behind it.
    let web = &mut webs[0];
    let mut bytes = frame.clone();
    bytes.extend(client_frame(true, op::TEXT, b"right behind"));
    web.send_raw(&bytes);
    web.expect_eventually(TOO_LONG);
    nc.expect_eventually(&format!("{}: right behind", web.name));
    let after = server.rss_kb();
    eprintln!("RSS: {before} kB before, {peak} kB peak mid-frame, {after} kB after");
    assert!(
        after <= before + SLACK_KB,
        "RSS grew from {before} kB to {after} kB"
    );
    // Nothing of the payloads reached anyone.
    let seen = nc.lines_until_quiet(QUIET);
    assert!(!seen.iter().any(|l| l.contains("abcdefghij")), "{seen:?}");
}

/// Bytes received on the server's end of the connection from `client_port` that the server
/// has not read yet (`rx_queue` of /proc/net/tcp); `None` if no such connection is listed.
fn unread_by_server(server_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        if port(local)? != server_port || port(remote)? != client_port {
            return None;
        }
        u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
    })
}

#[test]
fn shutdown_sends_the_line_then_a_close_1001() {
    let mut server = web_server(&[]);
    let mut web = Ws::connect(&server);
    let mut other = Ws::connect(&server);
    web.expect_line(&format!("[SERVER] Client: {} connected!", other.name));
    server.signal("INT");
    assert_eq!(web.expect_close(status::GOING_AWAY), vec![SHUTDOWN]);
    assert_eq!(other.expect_close(status::GOING_AWAY), vec![SHUTDOWN]);
    assert!(server.wait_exit(WAIT).success());
}

#[test]
fn quit_says_bye_then_a_close_1000() {
    let server = web_server(&[]);
    let mut nc = server.client();
    for word in ["/quit", "exit"] {
        let mut web = Ws::connect(&server);
        nc.expect_line(&format!("[SERVER] Client: {} connected!", web.name));
        web.send(word);
        assert_eq!(
            web.expect_close(status::NORMAL),
            vec!["[SERVER] Bye!"],
            "{word}"
        );
        nc.expect_line(&format!("[SERVER] Client: {} disconnected.", web.name));
    }
}

#[test]
fn websocket_clients_under_load_lose_nothing() {
    // The benchmark's generator with `--ws`: clients join, a barrier proves each receives
    // broadcasts, then senders keep messages in flight, every receiver sequence-checking them.
    const N: usize = 40;
    const SENDERS: usize = 4;
    let server = web_server(&["--rate", "0"]);
    let mut g = Gen::new(server.addr, Proto::WebSocket).expect("poll");
    let mut evs = Vec::new();
    join(&mut g, N, WAIT, &mut evs).unwrap_or_else(|e| panic!("{e}"));
    let mut t = Traffic::new(N, SENDERS, 8, 120);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        t.send(&mut g);
        let ended = t.turn(&mut g, &mut evs, true).unwrap();
        assert!(
            ended.is_empty(),
            "clients {ended:?} closed: {:?}",
            g.first_error
        );
    }
    let deadline = Instant::now() + WAIT;
    while !t.drained() {
        assert!(Instant::now() < deadline, "messages still in flight");
        let ended = t.turn(&mut g, &mut evs, true).unwrap();
        assert!(
            ended.is_empty(),
            "clients {ended:?} closed: {:?}",
            g.first_error
        );
    }
    assert!(t.deliveries > 0);
    assert_eq!(
        (t.lost(), t.dup, t.reordered, t.echoed, t.bogus),
        (0, 0, 0, 0, 0),
        "lost, duplicated, reordered, echoed, bogus"
    );
    assert_eq!(g.server_errors, 0, "{:?}", g.first_error);
    let metrics = get(server.addr, "/metrics").body;
    assert!(
        metrics.contains(&format!("\nloopchat_websocket_clients {N}\n")),
        "{metrics}"
    );
}

// ---- Line clients with the door open ----------------------------------------------------------

#[test]
fn a_line_client_is_still_greeted_at_once() {
    let server = web_server(&[]);
    let mut took = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut c = Client::connect(server.addr);
        c.expect_line(WELCOME);
        took.push(start.elapsed());
        c.read_intro();
    }
    took.sort();
    eprintln!("welcomes took {took:?}");
    let median = took[took.len() / 2];
    assert!(
        median <= Duration::from_millis(200) && took[took.len() - 1] <= Duration::from_secs(1),
        "welcomes took {took:?}"
    );
    // One that speaks first is greeted, and its line is a chat line.
    let mut watcher = server.client();
    let mut eager = Client::connect(server.addr);
    eager.send("hi before any greeting");
    eager.expect_line(WELCOME);
    eager.read_intro();
    watcher.expect_line(&format!("[SERVER] Client: {} connected!", eager.name));
    watcher.expect_line(&format!("{}: hi before any greeting", eager.name));
}

#[test]
fn without_the_door_an_http_request_gets_the_old_one_line_refusal() {
    let server = Server::start(&["--no-web"]);
    let mut probe = Client::connect(server.addr);
    probe.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let lines: Vec<String> = probe
        .read_to_close()
        .into_iter()
        .skip_while(|l| l == WELCOME || l.starts_with("[SERVER] You are "))
        .collect();
    assert_eq!(
        lines,
        [
            "[SERVER] Error: this is a chat server, not a web server: connect with nc or \
          loopchat-client"
        ]
    );
    // And a WebSocket handshake is refused the same way: no 101.
    match ws::connect_ws(server.addr) {
        Err(HandshakeError::Malformed(_) | HandshakeError::Closed { .. }) => {}
        Err(e) => panic!("unexpected: {e}"),
        Ok(_) => panic!("a WebSocket opened with --no-web"),
    }
}
