//! `--reuseport`: several servers on one port, the kernel spreading clients among them, and a
//! shutdown of one of them that loses none of the clients queued to it.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Launch, SHUTDOWN, Server, WAIT, WELCOME, run_cli};

/// Two servers on one port: `start` is given `0` for the first (any free port), then the port
/// the first got. (A port probed free and handed to both could be taken in between by a server
/// another test starts on port 0.)
fn on_one_port(start: impl Fn(&str) -> Server) -> (Server, Server) {
    let first = start("0");
    let second = start(&first.addr.port().to_string());
    (first, second)
}

fn reuseport(host: &str, port: &str) -> Server {
    Launch::new(&["--reuseport", "--host", host, "--port", port]).start()
}

/// The clients a server's transcript announced, until it has been quiet for a moment.
fn connected(server: &Server) -> usize {
    let mut n = 0;
    while let Some(line) = server.try_out_line(Duration::from_millis(300)) {
        n += usize::from(line.starts_with("[SERVER] Client: ") && line.ends_with(" connected!"));
    }
    n
}

#[test]
fn two_servers_share_a_port_and_both_get_clients() {
    let (a, b) = on_one_port(|port| reuseport("127.0.0.1", port));
    assert_eq!(a.addr, b.addr);
    // Each connection is hashed to one of the two: 40 all to one has odds of 2 in 2^40.
    let clients: Vec<Client> = (0..40).map(|_| a.client()).collect();
    let (on_a, on_b) = (connected(&a), connected(&b));
    assert_eq!(on_a + on_b, clients.len(), "a: {on_a}, b: {on_b}");
    assert!(
        on_a > 0 && on_b > 0,
        "one server got every client: a {on_a}, b {on_b}"
    );
}

#[test]
fn ipv6_too() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let (a, b) = on_one_port(|port| reuseport("::1", port));
    assert_eq!(a.addr, b.addr);
    let _clients: Vec<Client> = (0..20).map(|_| a.client()).collect();
    assert_eq!(connected(&a) + connected(&b), 20);
}

#[test]
fn without_the_flag_on_either_side_the_port_is_in_use() {
    fn flags(shared: bool, port: &str) -> Vec<&str> {
        let mut f = vec!["--host", "127.0.0.1", "--port", port];
        if shared {
            f.push("--reuseport");
        }
        f
    }
    for (first, second) in [(false, false), (true, false), (false, true)] {
        let running = Launch::new(&flags(first, "0")).start();
        let port = running.addr.port().to_string();
        let out = run_cli(&[&flags(second, &port)[..], &["--no-console"]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{first}/{second}: {stderr}");
        assert!(
            stderr.contains("already in use"),
            "{first}/{second}: {stderr}"
        );
    }
}

#[test]
fn udp_is_shared_too() {
    let (a, b) = on_one_port(|port| {
        Launch::new(&["--reuseport", "--udp", "-m", "ack", "--port", port]).start()
    });
    let udp = a.udp_addr();
    assert_eq!(udp, b.udp_addr());
    for i in 0..10 {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        socket.send_to(format!("hola {i}").as_bytes(), udp).unwrap();
        let mut reply = [0; 64];
        let n = socket.recv(&mut reply).expect("an answer");
        assert_eq!(&reply[..n], format!("received: hola {i}\n").as_bytes());
    }
}

/// What one client of the SIGTERM test saw.
struct Seen {
    /// Since the start of the test.
    connected_at: Duration,
    lines: Vec<String>,
}

/// SIGTERM to one of two servers on a port while clients keep connecting: each client is
/// greeted by one of them, and each that the stopping one took (before the signal, or from its
/// queue after it) is told of the shutdown before it is closed; none is reset without a line.
/// With the web door open, as by default: those taken from the queue must be greeted first.
#[test]
fn sigterm_to_one_of_two_loses_no_client() {
    let start = |name: &str, port: &str| {
        let welcome = format!("{WELCOME} ({name})");
        Launch::new(&["--reuseport", "--port", port, "--welcome", &welcome])
            .web()
            .start()
    };
    let mut stopping = start("stopping", "0");
    let survivor = start("survivor", &stopping.addr.port().to_string());
    let addr: SocketAddr = stopping.addr;

    let begin = Instant::now();
    let connector = thread::spawn(move || {
        let mut streams = Vec::new();
        while begin.elapsed() < Duration::from_millis(1200) && streams.len() < 400 {
            let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
            streams.push((begin.elapsed(), stream));
            thread::sleep(Duration::from_millis(3));
        }
        streams
    });
    thread::sleep(Duration::from_millis(500));
    let signalled_at = begin.elapsed();
    stopping.signal("TERM");
    let streams = connector.join().unwrap();
    assert!(
        stopping.wait_exit(WAIT).success(),
        "the stopping server failed"
    );

    // The stopping server is gone: its clients have all they will get, up to the close.
    let seen: Vec<Seen> = streams
        .into_iter()
        .map(|(connected_at, stream)| {
            let mut c = Client::from_stream(stream);
            let first = c.try_line(WAIT);
            let lines = match first.as_deref() {
                Some(l) if l.ends_with("(stopping)") => {
                    let mut lines = vec![l.to_owned()];
                    lines.extend(c.read_to_close());
                    lines
                }
                Some(l) => {
                    c.assert_open();
                    vec![l.to_owned()]
                }
                None => Vec::new(),
            };
            Seen {
                connected_at,
                lines,
            }
        })
        .collect();

    let (mut to_stopping, mut to_survivor, mut after) = (0, 0, 0);
    for s in &seen {
        let when = format!(
            "client connected at {:?} (signal at {signalled_at:?})",
            s.connected_at
        );
        let first = s.lines.first().unwrap_or_else(|| panic!("{when}: no line"));
        if first == &format!("{WELCOME} (survivor)") {
            to_survivor += 1;
            after += usize::from(s.connected_at > signalled_at);
        } else {
            assert_eq!(first, &format!("{WELCOME} (stopping)"), "{when}");
            assert!(
                s.lines.iter().any(|l| l == SHUTDOWN),
                "{when}: closed without the notice: {:?}",
                s.lines
            );
            to_stopping += 1;
        }
    }
    eprintln!(
        "{} clients: {to_stopping} to the stopping server, {to_survivor} to the survivor \
         ({after} after the signal)",
        seen.len()
    );
    assert!(to_stopping > 0 && after > 0, "the test did not test it");
    drop(survivor);
}
