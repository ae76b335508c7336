//! 10,000 concurrent idle clients on one server, with its resident memory per connection.
//!
//! In a test binary of its own, so that its 10,000 descriptors do not compete with other tests.

mod common;

use common::{Client, Server, WELCOME, cpu_used_during};
use std::time::{Duration, Instant};

const CLIENTS: usize = 10_000;

/// Raises this process's soft descriptor limit (inherited by the server) to what `need`s;
/// false if the hard limit does not allow it.
fn ensure_fd_limit(need: u64) -> bool {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_max < need {
            return false;
        }
        if lim.rlim_cur < need {
            lim.rlim_cur = lim.rlim_max;
            return libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0;
        }
    }
    true
}

#[test]
fn ten_thousand_idle_clients_stay_connected() {
    if !ensure_fd_limit(CLIENTS as u64 + 500) {
        println!(
            "skipping: the descriptor limit is below {} here",
            CLIENTS + 500
        );
        return;
    }
    // An idle timer per client must not cost wakeups while nothing is due.
    let server = Server::start(&["--idle-timeout", "3600"]);
    let rss_before = server.rss_kb();
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        // Each one must really be accepted: wait for its welcome before the next.
        let mut c = Client::connect(server.addr);
        c.expect_line(WELCOME);
        c.read_intro();
        clients.push(c);
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = server.rss_kb();
    let per_conn = (rss_after.saturating_sub(rss_before)) * 1024 / CLIENTS as u64;
    println!(
        "{CLIENTS} clients connected in {took:?}; server VmRSS {rss_before} kB -> {rss_after} kB \
         = {per_conn} bytes per idle connection (pid {}, /proc/PID/status)",
        server.pid()
    );

    // Idle with 10,000 clients and their timers: no busy loop.
    let cpu = cpu_used_during(&server, Duration::from_secs(1));
    println!("server CPU time in 1 s idle with {CLIENTS} clients: {cpu:?}");
    assert!(
        cpu < Duration::from_millis(100),
        "{cpu:?} CPU in 1 s while idle"
    );

    // All of them are still connected.
    for c in clients.iter_mut() {
        c.assert_open();
    }
    let last = clients.len() - 1;
    clients[last].send("/who");
    let who = clients[last].expect_prefix(&format!("[SERVER] {CLIENTS} online: "));
    assert!(who.ends_with(", and 9900 more"), "{who}");
    let first = clients[0].name.clone();
    clients[0].send("hello, ten thousand");
    clients[last].expect_line(&format!("{first}: hello, ten thousand"));
    clients[last / 2].expect_line(&format!("{first}: hello, ten thousand"));

    assert!(
        per_conn < 64 * 1024,
        "{per_conn} bytes of server memory per idle connection"
    );
    // Stop the server first, so the 10,000 client sockets do not linger in TIME_WAIT.
    drop(server);
}
