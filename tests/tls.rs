//! TLS on the chat port, against the real server: TLS and plain clients in one room, a real
//! TLS client (`openssl s_client`), the handshake deadline, bytes that are not TLS after a
//! ClientHello, the shutdown notice with close_notify, `--tls-only`, and a TLS client that
//! stops reading.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::{Certs, End, TlsClient};
use common::{Client, Launch, SHUTDOWN, Server, WAIT, WELCOME, lines_channel};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

/// The server's handshake deadline (`config::tls::HANDSHAKE`).
const HANDSHAKE: Duration = Duration::from_secs(5);

fn server(certs: &Certs, extra: &[&str]) -> Server {
    let mut args = certs.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Launch::new(&args).start()
}

/// The bytes of a real ClientHello, as rustls's client sends it first.
fn client_hello(certs: &Certs) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(certs.client_config(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Reads until the server closes the connection; how long that took from `since`.
fn closed_after(stream: &mut TcpStream, since: Instant, within: Duration) -> Duration {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut chunk = [0u8; 16384];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) if since.elapsed() < within => return since.elapsed(),
            Ok(0) | Err(_) => panic!("connection still open after {within:?}"),
            Ok(_) => {}
        }
    }
}

#[test]
fn tls_and_plain_clients_chat_in_one_room() {
    let certs = Certs::new();
    let server = server(&certs, &[]);
    let mut secure = TlsClient::connect(server.addr, &certs).greeted();
    let mut plain = server.client();
    secure.expect_eventually(&format!("[SERVER] Client: {} connected!", plain.name));

    secure.send("over TLS");
    plain.expect_line(&format!("{}: over TLS", secure.name));
    plain.send("in plain text");
    secure.expect_eventually(&format!("{}: in plain text", plain.name));
    secure.send("/nick alice");
    secure.expect_eventually("[SERVER] You are now known as alice");
    plain.expect_line(&format!("[SERVER] {} is now known as alice", secure.name));
    // The same commands and limits inside TLS: a line over the cap is refused.
    secure.send(&"x".repeat(201));
    secure.expect_eventually("[SERVER] Error: message too long (max 200 bytes)");
}

#[test]
fn openssl_s_client_is_a_chat_client() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is not installed (.ci/run installs it)");
        return;
    }
    let certs = Certs::new();
    let server = server(&certs, &[]);
    let mut plain = server.client();
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(&certs.cert)
        .args([
            "-connect",
            &server.addr.to_string(),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    let lines = lines_channel(s_client.stdout.take().unwrap());
    assert_eq!(lines.recv_timeout(WAIT).unwrap(), WELCOME);
    let intro = lines.recv_timeout(WAIT).unwrap();
    let name = intro
        .strip_prefix("[SERVER] You are ")
        .and_then(|r| r.split_once('.'))
        .map(|(n, _)| n.to_owned())
        .expect("an intro line");
    plain.expect_line(&format!("[SERVER] Client: {name} connected!"));

    let mut stdin = s_client.stdin.take().unwrap();
    stdin.write_all(b"hello from openssl\n").unwrap();
    plain.expect_line(&format!("{name}: hello from openssl"));
    plain.send("hello back");
    let want = format!("{}: hello back", plain.name);
    while lines.recv_timeout(WAIT).expect("the reply over TLS") != want {}

    stdin.write_all(b"/quit\n").unwrap();
    plain.expect_line(&format!("[SERVER] Client: {name} disconnected."));
    let status = wait_child(&mut s_client, WAIT);
    assert!(status.is_some(), "s_client still running after /quit");
}

fn wait_child(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_handshake_that_stops_halfway_is_dropped_at_the_deadline() {
    let certs = Certs::new();
    let server = server(&certs, &[]);
    let hello = client_hello(&certs);
    let start = Instant::now();
    // One sends half a ClientHello; the other a whole one, reads the server's flight, and
    // never sends its Finished.
    let mut half = TcpStream::connect(server.addr).unwrap();
    half.write_all(&hello[..hello.len() / 2]).unwrap();
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled.write_all(&hello).unwrap();
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    let mut flight = [0u8; 16384];
    assert!(stalled.read(&mut flight).unwrap() > 0, "no ServerHello");

    // Meanwhile the room goes on.
    let mut a = server.client();
    let mut b = server.client();
    a.send("still here");
    b.expect_eventually(&format!("{}: still here", a.name));

    for stream in [&mut half, &mut stalled] {
        let took = closed_after(stream, start, HANDSHAKE + WAIT);
        assert!(
            took >= HANDSHAKE - Duration::from_millis(100),
            "closed after {took:?}, before the deadline"
        );
    }
    a.assert_open();
}

#[test]
fn bytes_that_are_not_tls_after_a_client_hello_are_refused_without_harm() {
    let certs = Certs::new();
    let server = server(&certs, &[]);
    let mut a = server.client();
    let mut b = server.client();
    a.expect_line(&format!("[SERVER] Client: {} connected!", b.name));

    let mut garbage = client_hello(&certs);
    garbage.extend((0..4000u32).map(|i| (i * 7 + 3) as u8));
    // In the same write as the hello, and in a later one.
    let mut together = TcpStream::connect(server.addr).unwrap();
    together.write_all(&garbage).unwrap();
    let mut later = TcpStream::connect(server.addr).unwrap();
    let hello_len = client_hello(&certs).len();
    later.write_all(&garbage[..hello_len]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    later.write_all(&garbage[hello_len..]).unwrap();
    // A record header that claims TLS, then nonsense.
    let mut fake = TcpStream::connect(server.addr).unwrap();
    fake.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();

    let start = Instant::now();
    for stream in [&mut together, &mut later, &mut fake] {
        let took = closed_after(stream, start, WAIT);
        assert!(took < Duration::from_secs(2), "closed only after {took:?}");
    }
    // Nobody else noticed, and nothing reached the room.
    a.send("after the garbage");
    b.expect_line(&format!("{}: after the garbage", a.name));
    a.expect_silence(Duration::from_millis(200));
}

#[test]
fn sigterm_tells_tls_clients_and_ends_with_close_notify() {
    let certs = Certs::new();
    let server = server(&certs, &[]);
    let mut secure = TlsClient::connect(server.addr, &certs).greeted();
    secure.send("/nick before-shutdown");
    secure.expect_eventually("[SERVER] You are now known as before-shutdown");
    server.signal("TERM");
    let (lines, end) = secure.read_to_end(WAIT);
    assert_eq!(lines, [SHUTDOWN]);
    assert_eq!(
        end,
        End::CloseNotify,
        "the session ended without close_notify"
    );
}

#[test]
fn quit_ends_the_session_with_close_notify() {
    let certs = Certs::new();
    let server = server(&certs, &[]);
    let mut secure = TlsClient::connect(server.addr, &certs).greeted();
    secure.send("/quit");
    let (lines, end) = secure.read_to_end(WAIT);
    assert!(lines.iter().all(|l| l.starts_with("[SERVER]")), "{lines:?}");
    assert_eq!(end, End::CloseNotify);
}

#[test]
fn tls_only_refuses_plain_text_and_takes_tls() {
    let certs = Certs::new();
    let mut args = certs.args();
    args.push("--tls-only".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Launch::new(&args).web().start();

    let mut plain = Client::connect(server.addr);
    plain.send("hello?");
    assert_eq!(
        plain.read_to_close(),
        ["[SERVER] Error: this server takes TLS only: connect with loopchat-client --tls"]
    );
    let mut browser = Client::connect(server.addr);
    browser.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let answer = browser.read_to_close();
    assert_eq!(answer[0], "HTTP/1.1 400 Bad Request", "{answer:?}");
    assert!(
        answer.iter().any(|l| l.contains("https:// only")),
        "{answer:?}"
    );

    // A plain client that waits to be greeted is not: it is closed at the deadline.
    let mut silent = Client::connect(server.addr);
    assert_eq!(silent.try_line(Duration::from_millis(300)), None);
    let start = Instant::now();
    closed_after(&mut silent.stream, start, HANDSHAKE + WAIT);

    let mut secure = TlsClient::connect(server.addr, &certs).greeted();
    secure.send("/who");
    let want = format!("[SERVER] 1 online: {}", secure.name);
    secure.expect_eventually(&want);
}

#[test]
fn a_tls_client_that_stops_reading_is_dropped_and_the_room_goes_on() {
    let certs = Certs::new();
    let server = server(&certs, &["--max-pending", "65536", "--rate", "0"]);
    let secure = TlsClient::connect(server.addr, &certs).greeted();
    let stalled_name = secure.name.clone();
    let mut sender = server.client();
    let mut reader = server.client();
    // The stalled client reads nothing from here on; its socket and the server's queue fill.
    let line = "y".repeat(190);
    let deadline = Instant::now() + Duration::from_secs(20);
    let dropped = format!("[SERVER] Client: {stalled_name} disconnected (too slow");
    'flood: loop {
        assert!(
            Instant::now() < deadline,
            "the stalled TLS client was never dropped"
        );
        for _ in 0..200 {
            sender.send(&line);
        }
        while let Some(got) = reader.try_line(Duration::from_millis(50)) {
            if got.starts_with(&dropped) {
                break 'flood;
            }
        }
    }
    drop(secure);
    sender.send("after the drop");
    reader.expect_eventually(&format!("{}: after the drop", sender.name));
}

#[test]
fn the_page_and_metrics_over_https() {
    let certs = Certs::new();
    let server = Launch::new(&certs.args().iter().map(String::as_str).collect::<Vec<_>>())
        .web()
        .start();
    let get = |path: &str| {
        let mut c = TlsClient::connect(server.addr, &certs);
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        c.stream.write_all(request.as_bytes()).unwrap();
        c.stream.flush().unwrap();
        let (lines, end) = c.read_to_end(WAIT);
        assert_eq!(end, End::CloseNotify);
        lines
    };
    let page = get("/");
    assert_eq!(page[0], "HTTP/1.1 200 OK");
    assert!(
        page.iter().any(|l| l.contains("wss://")),
        "the page knows wss://"
    );
    let metrics = get("/metrics");
    assert!(
        metrics.iter().any(|l| l == "loopchat_tls_connections 1"),
        "{metrics:?}"
    );
}
