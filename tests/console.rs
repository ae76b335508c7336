//! The operator console through a piped stdin, end of stdin, and shutting down by console
//! command and by signal.

mod common;

use common::{Client, Console, Launch, SHUTDOWN, Server, SockOpts, cpu_used_during, pump_batch};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const QUIET: Duration = Duration::from_millis(300);

#[test]
fn a_console_line_reaches_every_client_and_the_transcript() {
    let mut server = Server::start_with_console(&[]);
    let mut room = server.room(&["alice", "bob"]);
    server.console("hello from the operator");
    room[0].expect_line("SERVER: hello from the operator");
    room[1].expect_line("SERVER: hello from the operator");
    server.expect_out("SERVER: hello from the operator");
}

#[test]
fn console_who_and_help_answer_on_stdout_only() {
    let mut server = Server::start_with_console(&[]);
    let mut room = server.room(&["bob", "alice"]);
    server.console("/who");
    server.expect_out("[SERVER] 2 online: alice, bob");
    server.console("/help");
    server.expect_out_prefix("[SERVER] ");
    let mut help = Vec::new();
    while let Some(line) = server.try_out_line(QUIET) {
        help.push(line);
    }
    assert!(
        help.iter().any(|l| l.contains("/kick")),
        "console /help does not mention /kick: {help:?}"
    );
    for c in room.iter_mut() {
        c.expect_silence(Duration::from_millis(100));
    }
}

#[test]
fn console_kick_closes_the_client_and_announces_it() {
    let mut server = Server::start_with_console(&[]);
    let mut room = server.room(&["alice", "bob"]);
    server.console("/kick bob");
    assert_eq!(
        room[1].read_to_close(),
        vec!["[SERVER] You have been kicked by the operator.".to_string()]
    );
    room[0].expect_prefix("[SERVER] Client: bob disconnected");
    server.expect_out_prefix("[SERVER] Client: bob disconnected");
    room[0].send("/who");
    room[0].expect_line("[SERVER] 1 online: alice");
}

#[test]
fn console_shutdown_notifies_everyone_and_exits_0() {
    let mut server = Server::start_with_console(&[]);
    let mut room = server.crowd(3);
    server.console("/shutdown");
    for c in room.iter_mut() {
        assert_eq!(c.read_to_close(), vec![SHUTDOWN.to_string()]);
    }
    let status = server.wait_exit(Duration::from_secs(4));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// The server keeps working after its stdin ends, and does not spin.
fn keeps_serving_quietly(server: &mut Server) {
    std::thread::sleep(Duration::from_millis(200));
    let mut room = server.room(&["alice", "bob"]);
    room[0].send("still here");
    room[1].expect_line("alice: still here");
    let cpu = cpu_used_during(server, Duration::from_millis(1500));
    assert!(
        cpu < Duration::from_millis(150),
        "server used {cpu:?} CPU in 1.5 s while idle"
    );
    room[1].send("and still");
    room[0].expect_line("bob: and still");
    assert!(server.exited().is_none(), "the server exited");
}

#[test]
fn end_of_console_input_does_not_stop_the_server_or_spin() {
    let mut server = Server::start_with_console(&[]);
    server.console("before the end");
    server.expect_out("SERVER: before the end");
    server.close_console();
    keeps_serving_quietly(&mut server);
}

#[test]
fn console_on_dev_null_is_not_fatal_and_does_not_spin() {
    let mut server = Launch::new(&[]).console(Console::DevNull).start();
    keeps_serving_quietly(&mut server);
}

#[test]
fn console_reading_a_regular_file_works_and_then_idles() {
    // epoll cannot watch a regular file: the console must still read it, then stop at its end.
    let path = std::env::temp_dir().join(format!("loopchat-console-{}.txt", std::process::id()));
    std::fs::write(&path, "hello from a file\n/who\n").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut server = Launch::new(&[]).stdin(file).start();
    server.expect_out("SERVER: hello from a file");
    server.expect_out_prefix("[SERVER] 0 online");
    keeps_serving_quietly(&mut server);
}

#[test]
fn the_console_does_not_leave_stdin_non_blocking() {
    // O_NONBLOCK is a property of the open file description, which a shell shares with the
    // server: keep a second handle on the same description and look at its flags.
    let (reader, mut writer) = std::io::pipe().unwrap();
    let ours = reader.try_clone().unwrap();
    let mut server = Launch::new(&[]).stdin(reader).start();
    writer.write_all(b"are you there\n").unwrap();
    server.expect_out("SERVER: are you there");
    // SAFETY: F_GETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(ours.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0);
    assert_eq!(
        flags & libc::O_NONBLOCK,
        0,
        "the server set O_NONBLOCK on its stdin"
    );
    drop(writer);
    keeps_serving_quietly(&mut server);
}

/// Every client, reading or not, gets the shutdown notice or at least a close, and the server
/// exits with status 0 within the 2-second flush bound (plus slack).
fn signal_shuts_down_cleanly(sig: &str) {
    let mut server = Server::start(&["--rate", "0"]);
    let mut room = server.room(&["alice", "bob", "carol"]);
    // A client that never reads, with output queued for it.
    let opts = SockOpts {
        rcvbuf: Some(4096),
        ..SockOpts::default()
    };
    let stuck = Server::greet(Client::connect_with(server.addr, opts).expect("connect"));
    for c in room.iter_mut() {
        c.expect_line(&format!("[SERVER] Client: {} connected!", stuck.name));
    }
    let pad = "s".repeat(120);
    let text: String = (0..1500).map(|i| format!("{i:05} {pad}\n")).collect();
    room[0].send_raw(text.as_bytes());
    for i in 0..1500 {
        room[1].expect_line(&format!("alice: {i:05} {pad}"));
    }

    let asked = Instant::now();
    server.signal(sig);
    for c in room.iter_mut() {
        let lines = c.read_to_close();
        assert_eq!(
            lines.last().map(String::as_str),
            Some(SHUTDOWN),
            "{} got {:?}",
            c.name,
            &lines[lines.len().saturating_sub(3)..]
        );
        if c.name == "carol" {
            // carol had not read the burst yet: all of it was flushed before the notice.
            let burst = lines.iter().filter(|l| l.starts_with("alice: ")).count();
            assert_eq!(burst, 1500, "carol lost queued lines at shutdown");
        }
    }
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "after SIG{sig}: {status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        asked.elapsed()
    );
}

#[test]
fn shutdown_stops_flushing_to_a_client_that_never_reads_within_2_seconds() {
    let mut server = Server::start(&["--rate", "0", "--max-pending", "67108864"]);
    let mut room = server.room(&["talker", "listener"]);
    let opts = SockOpts {
        rcvbuf: Some(4096),
        ..SockOpts::default()
    };
    let stuck = Server::greet(Client::connect_with(server.addr, opts).expect("connect"));
    for c in room.iter_mut() {
        c.expect_line(&format!("[SERVER] Client: {} connected!", stuck.name));
    }
    // About 6 MB queued for the stuck client: more than any kernel buffer holds for it.
    let (talker, listener) = room.split_at_mut(1);
    for batch in 0..200 {
        let other = pump_batch(&mut talker[0], &mut listener[0], batch * 200, 200);
        assert!(other.is_empty(), "listener got {other:?}");
    }
    let asked = Instant::now();
    server.signal("TERM");
    assert_eq!(room[1].read_to_close(), vec![SHUTDOWN.to_string()]);
    let status = server.wait_exit(Duration::from_secs(5));
    let took = asked.elapsed();
    println!("exited {took:?} after SIGTERM with output still queued");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(took < Duration::from_millis(3500), "shutdown took {took:?}");
}

#[test]
fn sigterm_notifies_every_client_and_exits_0() {
    signal_shuts_down_cleanly("TERM");
}

#[test]
fn sigint_notifies_every_client_and_exits_0() {
    signal_shuts_down_cleanly("INT");
}

#[test]
fn a_stdout_nobody_reads_never_stops_the_server() {
    // `loopchat-server | less`, with less waiting for a key: the pipe fills and stays full.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loopchat-server"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-console",
            "--no-web",
            "--rate",
            "0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn loopchat-server");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let _reaper = common::Reaper(child);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let addr = first
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut alice = Server::greet(Client::connect(addr));
    alice.rename("alice");
    let mut bob = Server::greet(Client::connect(addr));
    alice.expect_prefix("[SERVER] Client: guest2 connected!");
    bob.rename("bob");
    alice.expect_prefix("[SERVER] guest2 is now known as bob");

    // About 1.4 MB of transcript: more than the pipe and the server's backlog together.
    for batch in 0..100 {
        pump_batch(&mut alice, &mut bob, batch * 100, 100);
    }
    // Bob got every line while nobody read the transcript: the server never waited for it.
    // Now read it: what fitted, then how many lines were dropped, then it goes on as before.
    let transcript = common::lines_channel(stdout);
    let is_note =
        |l: &String| l.contains("transcript lines dropped: standard output was not being read");
    let dropped = std::iter::from_fn(|| transcript.recv_timeout(common::WAIT).ok())
        .find(is_note)
        .expect("the transcript says how many lines it dropped");
    alice.send("back to normal");
    bob.expect_line("alice: back to normal");
    let next = transcript
        .recv_timeout(common::WAIT)
        .expect("the transcript goes on");
    assert_eq!(next, "alice: back to normal");
    let n: usize = dropped.split(' ').nth(1).unwrap().parse().unwrap();
    // 10,000 lines of 145 bytes: 1.45 MB, of which the pipe and the backlog hold about 1.1.
    assert!((1000..5000).contains(&n), "{dropped}");
    println!("{dropped}");
}
