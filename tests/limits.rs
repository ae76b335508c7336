//! Limits and faults over real sockets: the line cap, rate limiting by backpressure, slow
//! readers, --max-clients, --max-per-ip, --connect-rate, keepalive, running out of file
//! descriptors, HTTP and TLS clients, and the idle timeout.

mod common;

use common::{
    Client, Server, SockOpts, WAIT, WELCOME, cpu_used_during, fd_limited_server, have,
    proc_status_kb, pump_batch, server_out_of_descriptors, welcomed_within,
};
use std::net::{IpAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

const QUIET: Duration = Duration::from_millis(300);
const TOO_LONG: &str = "[SERVER] Error: message too long (max 200 bytes)";

#[test]
fn a_line_of_exactly_the_cap_is_delivered_and_one_byte_more_is_refused() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);

    let exact = "x".repeat(200);
    room[0].send(&exact);
    room[1].expect_line(&format!("alice: {exact}"));
    // The cap counts bytes without the CRLF, and bytes rather than characters.
    let exact_crlf = "y".repeat(200);
    room[0].send_raw(format!("{exact_crlf}\r\n").as_bytes());
    room[1].expect_line(&format!("alice: {exact_crlf}"));
    let accents = "é".repeat(100);
    room[0].send(&accents);
    room[1].expect_line(&format!("alice: {accents}"));

    room[0].send(&"z".repeat(201));
    room[0].expect_line(TOO_LONG);
    room[0].send(&"é".repeat(101));
    room[0].expect_line(TOO_LONG);
    // Sent once per line, never delivered, truncated or split.
    room[0].expect_silence(QUIET);
    room[1].expect_silence(Duration::from_millis(50));
    // The connection stays open.
    room[0].send("still here");
    room[1].expect_line("alice: still here");
}

#[test]
fn the_rest_of_an_overlong_line_is_discarded_up_to_the_newline() {
    let server = Server::start(&["--flush-partial", "0"]);
    let mut room = server.room(&["alice", "bob"]);
    let mut burst = Vec::new();
    burst.extend_from_slice("a".repeat(300).as_bytes());
    burst.extend_from_slice("b".repeat(5000).as_bytes());
    burst.extend_from_slice(b" tail of the long line\nafter\n");
    burst.extend_from_slice("c".repeat(250).as_bytes());
    burst.extend_from_slice(b"\nlast\n");
    room[0].send_raw(&burst);
    room[1].expect_line("alice: after");
    room[1].expect_line("alice: last");
    room[1].expect_silence(QUIET);
    // One error per over-long line, no more.
    room[0].expect_line(TOO_LONG);
    room[0].expect_line(TOO_LONG);
    room[0].expect_silence(QUIET);
}

#[test]
fn discarding_an_overlong_line_ends_at_a_flush_partial_quiet() {
    let server = Server::start(&["--flush-partial", "100"]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send_raw("q".repeat(300).as_bytes());
    room[0].expect_line(TOO_LONG);
    thread::sleep(Duration::from_millis(600));
    room[0].send("fresh start");
    room[1].expect_line("alice: fresh start");
    room[0].expect_silence(QUIET);
}

#[test]
fn a_megabyte_line_without_newline_does_not_grow_memory_and_yields_one_error() {
    let server = Server::start(&["--flush-partial", "0"]);
    let pid = server.pid();
    let mut room = server.room(&["alice", "bob"]);
    // Warm up the over-long path before measuring.
    room[0].send(&"w".repeat(300));
    room[0].expect_line(TOO_LONG);
    let hwm_before = proc_status_kb(pid, "VmHWM");
    let rss_before = proc_status_kb(pid, "VmRSS");

    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..32 {
        room[0].send_raw(&chunk); // 2 MiB in all, no newline
    }
    room[0].expect_line(TOO_LONG);
    // Everything sent has been consumed once the reply to /who arrives; no second error.
    room[0].send_raw(b"\n/who\n");
    room[0].expect_line("[SERVER] 2 online: alice, bob");
    let hwm_after = proc_status_kb(pid, "VmHWM");
    let rss_after = proc_status_kb(pid, "VmRSS");
    println!("VmRSS {rss_before} -> {rss_after} kB, VmHWM {hwm_before} -> {hwm_after} kB");
    assert!(
        hwm_after.saturating_sub(hwm_before) < 1024,
        "server memory peak grew by {} kB while a 2 MiB line streamed in",
        hwm_after - hwm_before
    );
    room[1].expect_silence(QUIET);
    room[0].send("and then a normal one");
    room[1].expect_line("alice: and then a normal one");
}

#[test]
fn max_line_sets_the_cap_and_the_number_in_the_error() {
    let server = Server::start(&["--max-line", "10"]);
    // Guests: "/nick alice" would be over the cap itself.
    let mut room = server.crowd(2);
    let a = room[0].name.clone();
    room[0].send("0123456789");
    room[1].expect_line(&format!("{a}: 0123456789"));
    room[0].send("0123456789A");
    room[0].expect_line("[SERVER] Error: message too long (max 10 bytes)");
    room[0].send("ééééé"); // 10 bytes
    room[1].expect_line(&format!("{a}: ééééé"));
    room[0].send("éééééé"); // 12 bytes
    room[0].expect_line("[SERVER] Error: message too long (max 10 bytes)");
    room[1].expect_silence(QUIET);
}

/// Sends `count` numbered lines in one write from a fresh guest (full token bucket) and
/// returns when each reached another client, relative to the write.
fn burst_arrivals(server: &Server, count: usize) -> Vec<Duration> {
    let mut room = server.crowd(2);
    let sender = room[0].name.clone();
    let burst: String = (0..count).map(|i| format!("m{i:03}\n")).collect();
    let sent = Instant::now();
    room[0].send_raw(burst.as_bytes());
    let arrivals = (0..count)
        .map(|i| {
            room[1].expect_line(&format!("{sender}: m{i:03}"));
            sent.elapsed()
        })
        .collect();
    room[1].expect_silence(Duration::from_millis(100));
    room[0].expect_silence(Duration::from_millis(50));
    arrivals
}

#[test]
fn rate_limit_paces_a_burst_without_dropping_anything() {
    let server = Server::start(&["--rate", "5"]);
    // 5 lines a second with a burst of 10: 30 lines take about 4 seconds, all delivered in
    // order (checked inside), although they all arrived in a single read.
    let t = burst_arrivals(&server, 30);
    println!(
        "arrivals: line 10 {:?}, line 20 {:?}, line 30 {:?}",
        t[9], t[19], t[29]
    );
    assert!(
        t[9] < Duration::from_secs(1),
        "the burst of 10 took {:?}",
        t[9]
    );
    assert!(
        t[19] >= Duration::from_millis(1500),
        "line 20 came after {:?}: not rate limited",
        t[19]
    );
    assert!(
        t[29] >= Duration::from_millis(3200),
        "line 30 came after {:?}: not rate limited",
        t[29]
    );
    assert!(
        t[29] < Duration::from_secs(8),
        "line 30 came after {:?}",
        t[29]
    );
}

#[test]
fn rate_limit_counts_commands_too() {
    let server = Server::start(&["--rate", "5"]);
    let mut room = server.crowd(2);
    let sender = room[0].name.clone();
    let burst = "/who\n".repeat(12) + "after the commands\n";
    let sent = Instant::now();
    room[0].send_raw(burst.as_bytes());
    // The 13th line of the burst is 3 past the bucket of 10: about 0.6 s at 5 a second.
    room[1].expect_line(&format!("{sender}: after the commands"));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "the message after 12 commands came after {took:?}: commands are not counted"
    );
    for _ in 0..12 {
        room[0].expect_prefix("[SERVER] 2 online: ");
    }
}

#[test]
fn rate_zero_turns_the_limit_off() {
    let server = Server::start(&["--rate", "0"]);
    let t = burst_arrivals(&server, 300);
    assert!(
        t[299] < Duration::from_secs(2),
        "300 lines took {:?} with --rate 0",
        t[299]
    );
}

#[test]
fn a_client_that_never_reads_is_dropped_and_nobody_else_loses_anything() {
    const CAP: u64 = 65536;
    const LINES: usize = 100_000; // ~14 MB: far more than the kernel buffers can hide
    const BATCH: usize = 200;
    let server = Server::start(&["--max-pending", "65536", "--rate", "0"]);
    let mut room = server.room(&["talker", "listener"]);
    // A tiny receive buffer, set before connecting, keeps the kernel from absorbing megabytes.
    let opts = SockOpts {
        rcvbuf: Some(4096),
        ..SockOpts::default()
    };
    let slow = Server::greet(Client::connect_with(server.addr, opts).expect("connect"));
    for c in room.iter_mut() {
        c.expect_line(&format!("[SERVER] Client: {} connected!", slow.name));
    }
    let dropped = format!("[SERVER] Client: {} disconnected (too slow: ", slow.name);

    // The talker sends batches the listener can always absorb (well under the cap, read in
    // lock-step), so only the client that never reads can fall behind.
    let (talker, listener) = room.split_at_mut(1);
    let (talker, listener) = (&mut talker[0], &mut listener[0]);
    let mut saw_drop = false;
    let mut batches_after_drop = 0;
    let mut next = 0;
    while batches_after_drop < 3 {
        assert!(
            next < LINES,
            "{} was never dropped after {LINES} lines",
            slow.name
        );
        for line in pump_batch(talker, listener, next, BATCH) {
            assert!(line.starts_with(&dropped), "listener got {line:?}");
            assert!(!saw_drop, "drop announced twice");
            saw_drop = true;
        }
        next += BATCH;
        if saw_drop {
            batches_after_drop += 1;
        }
    }
    println!("{} dropped after about {next} lines", slow.name);

    let line = server.expect_out_prefix(&dropped);
    let unread: u64 = line
        .strip_prefix(&dropped)
        .and_then(|rest| rest.strip_suffix(" bytes unread)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected drop line {line:?}"));
    assert!(
        (CAP - 512..=CAP + 512).contains(&unread),
        "queue should stop at --max-pending {CAP}, the drop line says {unread}"
    );
    // The slow client's connection is closed: reading what is left ends in end of stream.
    let mut slow = slow;
    slow.read_to_close_within(Duration::from_secs(10));
}

#[test]
fn max_clients_refuses_the_next_one_without_announcing_it() {
    let server = Server::start(&["--max-clients", "3"]);
    let mut room = server.crowd(3);
    server.expect_out(&format!("[SERVER] Client: {} connected!", room[2].name));
    let mut extra = Client::connect(server.addr);
    assert_eq!(
        extra.read_to_close(),
        vec!["[SERVER] Error: server full, try again later".to_string()]
    );
    for c in room.iter_mut() {
        c.expect_silence(Duration::from_millis(150));
    }
    // Not on the console either: no join, no leave.
    while let Some(line) = server.try_out_line(Duration::from_millis(150)) {
        assert!(
            !line.starts_with("[SERVER] Client: "),
            "refusal announced: {line:?}"
        );
    }
    // When someone leaves there is room again.
    let gone = room.pop().unwrap();
    let gone_name = gone.name.clone();
    drop(gone);
    room[0].expect_line(&format!("[SERVER] Client: {gone_name} disconnected."));
    let newcomer = server.client();
    room[0].expect_line(&format!("[SERVER] Client: {} connected!", newcomer.name));
}

#[test]
fn a_client_that_left_frees_its_place_at_once() {
    let server = Server::start(&["--max-clients", "3"]);
    let mut room = server.crowd(3);
    // It quits and gets its goodbye, but keeps its socket open: the server is still draining
    // that connection when the next client comes.
    room[0].send("/quit");
    room[0].expect_line("[SERVER] Bye!");
    let gone = room[0].name.clone();
    room[1].expect_line(&format!("[SERVER] Client: {gone} disconnected."));
    let mut newcomer = Client::connect(server.addr);
    assert_eq!(
        newcomer.line(),
        WELCOME,
        "a client that has left must not count against --max-clients"
    );
    newcomer.read_intro();
    room[1].expect_line(&format!("[SERVER] Client: {} connected!", newcomer.name));
    // And the place really was its: the next one is refused.
    let mut extra = Client::connect(server.addr);
    assert_eq!(extra.read_to_close(), vec![FULL.to_string()]);
}

#[test]
fn new_connections_from_one_address_are_paced_by_connect_rate() {
    const SLOW_DOWN: &str =
        "[SERVER] Error: too many new connections from your address, try again in a moment";
    let server = Server::start(&[
        "--connect-rate",
        "2",
        "--limit-loopback",
        "--max-per-ip",
        "0",
    ]);
    // A burst of twice the rate, each connection closed again: the rate counts connects, not
    // connections held.
    for _ in 0..4 {
        drop(server.client());
    }
    let mut refused = Client::connect(server.addr);
    assert_eq!(refused.read_to_close(), vec![SLOW_DOWN.to_string()]);
    // The budget refills at two a second.
    thread::sleep(Duration::from_millis(600));
    drop(server.client());

    // Without --limit-loopback, 127.0.0.1 is exempt; another loopback address is not.
    let server = Server::start(&["--connect-rate", "1", "--max-per-ip", "0"]);
    for _ in 0..6 {
        drop(server.client());
    }
    let _first = Server::greet(connect_from(&server, "127.0.0.2"));
    let _second = Server::greet(connect_from(&server, "127.0.0.2"));
    let mut third = connect_from(&server, "127.0.0.2");
    assert_eq!(third.read_to_close(), vec![SLOW_DOWN.to_string()]);
}

/// Drops every packet a client sends (by its source port) with an nftables rule, as if its
/// machine had vanished: no FIN, no reset, no answer to anything. Removed when dropped.
struct Vanished {
    table: String,
}

impl Vanished {
    fn port(port: u16) -> Result<Vanished, String> {
        let table = format!("loopchat_test_{port}");
        let script = format!(
            "add table inet {table}\n\
             add chain inet {table} input {{ type filter hook input priority -10 ; }}\n\
             add rule inet {table} input tcp sport {port} drop\n"
        );
        let out = common::run_bounded(
            std::process::Command::new("nft").args(["-f", "-"]),
            Some(script.as_bytes()),
            WAIT,
        );
        if out.status.success() {
            Ok(Vanished { table })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Vanished {
    fn drop(&mut self) {
        common::run_bounded(
            std::process::Command::new("nft").args(["delete", "table", "inet", &self.table]),
            None,
            WAIT,
        );
    }
}

#[test]
fn a_peer_that_vanishes_is_dropped_by_keepalive() {
    if !have("nft") {
        println!("skipping: nft (package nftables) is not installed");
        return;
    }
    let server = Server::start(&["--keepalive", "1"]);
    let mut room = server.room(&["watcher", "ghost"]);
    let port = room[1].stream.local_addr().unwrap().port();
    let _rule = match Vanished::port(port) {
        Ok(rule) => rule,
        Err(why) => {
            println!("skipping: cannot add an nftables rule here: {why}");
            return;
        }
    };
    // --keepalive 1: probes after 1 s of silence, 3 of them 1 s apart, then the peer is gone:
    // about 4 s, documented as "within about twice SECS" plus the probe interval.
    let start = Instant::now();
    let line = room[0]
        .try_line(Duration::from_secs(10))
        .expect("the vanished peer was never dropped");
    let took = start.elapsed();
    assert_eq!(line, "[SERVER] Client: ghost disconnected (timed out)");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "dropped after {took:?}"
    );
    println!("a vanished peer was dropped after {took:?} with --keepalive 1");
    // Its name is free again.
    room[0].rename("ghost");
}

fn connect_from(server: &Server, ip: &str) -> Client {
    let opts = SockOpts {
        from: Some(ip.parse().unwrap()),
        ..SockOpts::default()
    };
    Client::connect_with(server.addr, opts).unwrap_or_else(|e| panic!("connect from {ip}: {e}"))
}

#[test]
fn max_per_ip_refuses_more_from_one_address_but_not_loopback() {
    const REFUSED: &str = "[SERVER] Error: too many connections from your address, try again later";
    let server = Server::start(&["--max-per-ip", "2"]);
    let first = Server::greet(connect_from(&server, "127.0.0.2"));
    let _second = Server::greet(connect_from(&server, "127.0.0.2"));
    let mut third = connect_from(&server, "127.0.0.2");
    assert_eq!(third.read_to_close(), vec![REFUSED.to_string()]);

    // Another address has its own count; 127.0.0.1 is exempt.
    let _other = Server::greet(connect_from(&server, "127.0.0.3"));
    let _locals: Vec<Client> = (0..5).map(|_| server.client()).collect();

    // Once one of them leaves, that address may connect again.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = connect_from(&server, "127.0.0.2");
        match again.line().as_str() {
            WELCOME => break,
            REFUSED if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            other => panic!("after a client left, 127.0.0.2 got {other:?}"),
        }
    }
}

#[test]
fn max_per_ip_exempts_ipv6_loopback() {
    if TcpListener::bind("[::1]:0").is_err() {
        println!("skipping: IPv6 loopback is not available here");
        return;
    }
    let server = Server::start(&["--host", "::1", "--max-per-ip", "1"]);
    assert_eq!(server.addr.ip(), "::1".parse::<IpAddr>().unwrap());
    let clients: Vec<Client> = (0..4).map(|_| server.client()).collect();
    assert_eq!(clients.len(), 4);
}

const FULL: &str = "[SERVER] Error: server full, try again later";

fn prlimit_missing() -> bool {
    let missing = !have("prlimit");
    if missing {
        println!("skipping: prlimit (util-linux) is not installed");
    }
    missing
}

/// Opens far more connections than the server's 64 descriptors allow and checks that the
/// connected clients are still served, the server neither spins nor floods its log while
/// saturated (more connections keep arriving meanwhile), and new clients get in within about
/// a second once descriptors are free again.
fn saturate_and_recover(server: &Server) {
    let log_before = server.stderr_lines().len();
    let conns: Vec<Client> = (0..120).map(|_| Client::connect(server.addr)).collect();
    thread::sleep(Duration::from_millis(1000));
    let (mut served, mut rest) = (Vec::new(), Vec::new());
    for mut c in conns {
        match c.try_line(Duration::from_millis(20)).as_deref() {
            Some(WELCOME) => {
                c.read_intro();
                served.push(c);
            }
            Some(FULL) | None => rest.push(c),
            Some(other) => panic!("unexpected first line {other:?}"),
        }
    }
    println!("{} served, {} refused or waiting", served.len(), rest.len());
    assert!(
        served.len() >= 20,
        "only {} of 120 clients were served",
        served.len()
    );
    assert!(!rest.is_empty(), "the descriptor limit did not apply");

    // Connected clients are still served.
    served[0].send("still talking");
    let from = served[0].name.clone();
    served[1].expect_eventually(&format!("{from}: still talking"));

    // No busy loop while saturated, while still more connections knock.
    let addr = server.addr;
    let knocking = thread::spawn(move || {
        (0..20)
            .map(|_| {
                thread::sleep(Duration::from_millis(100));
                Client::connect(addr)
            })
            .collect::<Vec<_>>()
    });
    let cpu = cpu_used_during(server, Duration::from_secs(2));
    rest.extend(knocking.join().unwrap());
    assert!(
        cpu < Duration::from_millis(300),
        "server used {cpu:?} CPU in 2 s while saturated"
    );
    let log = server.stderr_lines();
    println!("logged while saturated: {:?}", &log[log_before..]);
    let logged = log.len() - log_before;
    assert!(
        logged < 20,
        "{logged} log lines while saturated: {:?}",
        server.stderr_lines()
    );

    // Free descriptors: new clients get in within about a second.
    drop(rest);
    served.truncate(2.max(served.len() - 20));
    let took = welcomed_within(server.addr, Duration::from_secs(2));
    println!("accepted again after {took:?}");
    served[0].send("/who");
    served[0].expect_prefix("[SERVER] ");
}

#[test]
fn started_with_64_descriptors_it_serves_what_it_can_and_recovers() {
    if prlimit_missing() {
        return;
    }
    // A low limit must not stop the server from starting.
    let server = fd_limited_server(&["prlimit", "--nofile=64:64"]);
    saturate_and_recover(&server);
}

#[test]
fn running_out_of_descriptors_on_accept_keeps_serving_without_spinning_and_recovers() {
    if prlimit_missing() {
        return;
    }
    saturate_and_recover(&server_out_of_descriptors());
}

fn probe(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let server = Server::start(&[]);
    let mut watcher = server.named("watcher");
    let mut probe = Client::connect(server.addr);
    probe.send_raw(bytes);
    let lines: Vec<String> = probe
        .read_to_close()
        .into_iter()
        .skip_while(|l| l == WELCOME || l.starts_with("[SERVER] You are "))
        .collect();
    (lines, watcher.lines_until_quiet(QUIET))
}

#[test]
fn an_http_request_gets_one_line_and_a_close() {
    let request = b"GET / HTTP/1.1\r\nHost: localhost:1234\r\nUser-Agent: curl/8.5.0\r\n\
                    Accept: */*\r\n\r\n";
    let (lines, watcher) = probe(request);
    assert_eq!(
        lines,
        vec![
            "[SERVER] Error: this is a chat server, not a web server: connect with nc or \
             loopchat-client"
                .to_string()
        ]
    );
    for line in watcher {
        assert!(
            !line.contains("GET /") && !line.contains("Host:") && !line.contains("Accept"),
            "request leaked: {line:?}"
        );
    }
}

#[test]
fn a_tls_client_hello_gets_one_line_and_a_close() {
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xc4, 0x01, 0x00, 0x00, 0xc0, 0x03, 0x03,
    ];
    hello.extend((0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11))); // random
    hello.push(0x20);
    hello.extend((0u8..32).map(|i| i.wrapping_mul(91).wrapping_add(200))); // session id
    hello.extend([0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2b, 0x01, 0x00]);
    // Extensions, including bytes that look like LF, CR and ESC.
    hello.extend([
        0x00, 0x0a, 0x00, 0x0d, 0x1b, 0xff, 0x00, 0x00, 0x0e, 0x00, 0x0c,
    ]);
    hello.extend(b"\x00\x00\x09localhost\n\x00\x17\x00\x00\xff\x01\x00\x01\x00");
    let (lines, watcher) = probe(&hello);
    assert_eq!(
        lines,
        vec![
            "[SERVER] Error: this is a plain-text chat server, not TLS: connect with nc or \
             loopchat-client"
                .to_string()
        ]
    );
    for line in watcher {
        assert!(
            !line.contains("localhost") && !line.contains('\u{FFFD}'),
            "handshake leaked: {line:?}"
        );
    }
}

#[test]
fn idle_timeout_drops_a_silent_client_and_announces_it() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let started = Instant::now();
    let mut sleeper = server.client();
    let mut talker = server.client();
    let announced = format!(
        "[SERVER] Client: {} disconnected (idle for 1 s)",
        sleeper.name
    );

    // The talker keeps talking (so it is not idle) until it hears the sleeper was dropped.
    let deadline = Instant::now() + WAIT;
    'outer: loop {
        assert!(Instant::now() < deadline, "never announced: {announced:?}");
        talker.send("/who");
        let until = Instant::now() + Duration::from_millis(250);
        while let Some(line) = talker.try_line(until.saturating_duration_since(Instant::now())) {
            if line == announced {
                break 'outer;
            }
        }
    }
    let lines = sleeper.read_to_close();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("[SERVER] Error: idle for 1 s, disconnecting"),
        "sleeper got {lines:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "dropped too early"
    );
    server.expect_out(&announced);

    // Someone who keeps talking is not dropped.
    thread::sleep(Duration::from_millis(500));
    talker.send("/who");
    talker.expect_prefix("[SERVER] 1 online: ");
    talker.assert_open();
}
