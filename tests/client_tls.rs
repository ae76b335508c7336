//! Black-box tests of `loopchat-client --tls`: the real client against the real server with a
//! certificate made at test time, against a server without TLS, and against small rustls
//! servers in the test where the real one cannot produce the situation (a stream cut without
//! close_notify, a server that reads late).
//!
//! Every wait is bounded, and every process a test starts is killed by its PID when the test
//! ends.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::client::{ClientProcess, assert_greeted_as_guest, assert_usage_error, hello_both_ways};
use common::tls::Certs;
use common::{Launch, Server, WAIT, WELCOME};
use rustls::{ServerConnection, StreamOwned};

/// The real server with TLS on its port, beside plain text.
fn tls_server(certs: &Certs) -> Server {
    let args = certs.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

fn ca(certs: &Certs) -> String {
    certs.cert.display().to_string()
}

/// Asserts one line on stderr that holds every one of `parts`.
fn assert_one_line(stderr: &str, parts: &[&str]) {
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    for part in parts {
        assert!(stderr.contains(part), "no {part:?} in {stderr:?}");
    }
}

#[test]
fn a_tls_client_with_ca_chats_with_a_plain_client() {
    let certs = Certs::new();
    let server = tls_server(&certs);
    let mut bob = server.named("bob");
    let ca = ca(&certs);
    let mut alice = ClientProcess::tls(
        server.addr.port(),
        &["--ca", &ca, "--nick", "alice"],
        Stdio::piped(),
    );
    alice.expect_line(WELCOME);
    alice.expect_line("[SERVER] You are now known as alice");
    bob.expect_eventually("[SERVER] guest2 is now known as alice");

    hello_both_ways(&mut alice, &mut bob);

    // End of stdin: close_notify and a half-close; the server answers with close_notify, and
    // the client exits 0 without a word on stderr.
    alice.close_stdin();
    assert_eq!(alice.finish_cleanly(), "");
    bob.expect_line("[SERVER] Client: alice disconnected.");
}

#[test]
fn stdin_at_its_end_before_the_handshake_still_gets_the_greeting() {
    let certs = Certs::new();
    let server = tls_server(&certs);
    let client = ClientProcess::tls(server.addr.port(), &["--ca", &ca(&certs)], Stdio::null());
    let (status, lines, stderr) = client.finish(WAIT);
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(stderr, "");
    assert_greeted_as_guest(&lines);
}

#[test]
fn the_server_closing_with_close_notify_ends_the_client_with_0() {
    let certs = Certs::new();
    let server = tls_server(&certs);
    let mut client = ClientProcess::tls(server.addr.port(), &["--ca", &ca(&certs)], Stdio::piped());
    client.expect_line(WELCOME);
    client.send("/quit");
    client.expect_line("[SERVER] Bye!");
    // stdin is still open: the server's close alone ends the client.
    assert_eq!(client.finish_cleanly(), "");
}

#[test]
fn insecure_connects_and_warns_that_the_server_is_not_verified() {
    let certs = Certs::new();
    let server = tls_server(&certs);
    let client = ClientProcess::tls(server.addr.port(), &["--insecure"], Stdio::null());
    let (status, lines, stderr) = client.finish(WAIT);
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(
        lines.first().map(String::as_str),
        Some(WELCOME),
        "{lines:?}"
    );
    assert_one_line(&stderr, &["warning", "encrypted", "not verified"]);
}

/// The system's roots are set here, so the test does not depend on what this machine trusts:
/// one root, which did not sign the server's certificate.
#[test]
fn a_self_signed_certificate_without_ca_is_refused_with_the_fix() {
    let certs = Certs::new();
    let other = Certs::new();
    let server = tls_server(&certs);
    let port = server.addr.port().to_string();
    let client = ClientProcess::spawn_trusting(&["--tls", "-p", &port], &other.cert, Stdio::null());
    let (status, lines, stderr) = client.finish(WAIT);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(lines.is_empty(), "{lines:?}");
    assert_one_line(
        &stderr,
        &["certificate not trusted", "--ca FILE", "--insecure"],
    );
}

#[test]
fn no_system_roots_is_one_clear_line() {
    let certs = Certs::new();
    let empty = certs.dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let client = ClientProcess::spawn_trusting(&["--tls", "-p", "1"], &empty, Stdio::null());
    let (status, _, stderr) = client.finish(WAIT);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_one_line(&stderr, &["no trusted root certificates", "--ca FILE"]);
}

#[test]
fn a_certificate_for_another_name_is_refused_with_the_names_it_has() {
    let made = rcgen::generate_simple_self_signed(vec!["chat.example".to_string()]).unwrap();
    let certs = Certs::new(); // only for its directory, removed when dropped
    let (cert, key) = (certs.dir.join("other.pem"), certs.dir.join("other.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = Server::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let client = ClientProcess::tls(server.addr.port(), &["--ca", &cert], Stdio::null());
    let (status, _, stderr) = client.finish(WAIT);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_one_line(
        &stderr,
        &["not valid for localhost", "chat.example", "--host"],
    );
}

/// A server without TLS answers the ClientHello in plain text, with the web door open (the
/// default) or closed: the client says so at once, quoting the server, and does not hang.
#[test]
fn tls_to_a_server_without_tls_says_it_does_not_speak_tls() {
    for server in [Server::start(&[]), Launch::new(&[]).web().start()] {
        let certs = Certs::new();
        let client = ClientProcess::tls(server.addr.port(), &["--ca", &ca(&certs)], Stdio::piped());
        let (status, lines, stderr) = client.finish(WAIT);
        assert_eq!(status.code(), Some(1), "stderr: {stderr}");
        assert!(lines.is_empty(), "{lines:?}");
        assert_one_line(
            &stderr,
            &["does not speak TLS", "plain text", "without --tls"],
        );
    }
}

#[test]
fn a_missing_ca_file_is_one_clear_line() {
    let client = ClientProcess::tls(1, &["--ca", "/nonexistent/ca.pem"], Stdio::null());
    let (status, _, stderr) = client.finish(WAIT);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_one_line(&stderr, &["--ca /nonexistent/ca.pem"]);
}

#[test]
fn tls_usage_errors_exit_2_with_the_usage() {
    for args in [
        &["--tls", "--udp"][..],
        &["--ca", "cert.pem"],
        &["--insecure"],
        &["--tls", "--ca", "cert.pem", "--insecure"],
    ] {
        assert_usage_error(args);
    }
}

/// A rustls server in the test, on its own thread: accepts one client, completes the
/// handshake, and hands the session to `serve`.
fn fake_tls_server(
    certs: &Certs,
    serve: impl FnOnce(&mut StreamOwned<ServerConnection, TcpStream>) + Send + 'static,
) -> (u16, JoinHandle<()>) {
    let config = loopchat::tls::Tls::load(&certs.cert, &certs.key, false)
        .unwrap()
        .config;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        let mut tls = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("handshake");
        }
        serve(&mut tls);
    });
    (port, fake)
}

#[test]
fn a_stream_cut_without_close_notify_is_reported_but_ends_normally() {
    let certs = Certs::new();
    let (port, fake) = fake_tls_server(&certs, |tls| {
        tls.write_all(b"one\ntwo").unwrap();
        tls.flush().unwrap();
        // Wait for the client's close_notify and end of stream, so closing cannot reset
        // unread data; then close without a close_notify of our own.
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).unwrap();
    });
    let client = ClientProcess::tls(port, &["--ca", &ca(&certs)], Stdio::null());
    let (status, lines, stderr) = client.finish(WAIT);
    fake.join().unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(lines, ["one", "two"]);
    assert_one_line(&stderr, &["warning", "without TLS close_notify"]);
}

/// More input than the socket buffers and the session hold, to a server that reads late: the
/// client must keep what the socket refuses and deliver every byte before its close_notify.
#[test]
fn a_slow_tls_server_gets_every_byte_of_a_big_input() {
    let mut input = Vec::new();
    for i in 0..100_000 {
        writeln!(input, "line {i:06} of the big input, to fill buffers").unwrap();
    }
    input.extend_from_slice(b"last line without LF");
    let expected = input.len() + 1; // the client terminates the last line
    let certs = Certs::new();
    let file = certs.dir.join("big.txt");
    std::fs::write(&file, &input).unwrap();

    let (port, fake) = fake_tls_server(&certs, |tls| {
        thread::sleep(Duration::from_millis(300));
        // Ends at the client's close_notify: an end of stream without one is an error.
        let mut got = Vec::new();
        tls.read_to_end(&mut got).unwrap();
        let last = got.rsplit(|&b| b == b'\n').nth(1).unwrap().to_vec();
        let reply = format!(
            "got {} bytes, last {}\n",
            got.len(),
            String::from_utf8_lossy(&last)
        );
        tls.write_all(reply.as_bytes()).unwrap();
        tls.conn.send_close_notify();
        tls.flush().unwrap();
    });
    let client = ClientProcess::tls(
        port,
        &["--ca", &ca(&certs)],
        std::fs::File::open(&file).unwrap().into(),
    );
    let (status, lines, stderr) = client.finish(WAIT * 2);
    fake.join().unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(stderr, "");
    assert_eq!(
        lines,
        [format!("got {expected} bytes, last last line without LF")]
    );
}
