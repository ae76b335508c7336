//! Black-box tests of the real `loopchat-client` binary: against the real server, against
//! small fake servers where the real one cannot produce the situation, and once on a
//! pseudo-terminal.
//!
//! Every wait is bounded, and every process a test starts is killed by its PID (or, for tmux,
//! by its private socket) when the test ends.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{
    CLIENT, ClientProcess, assert_greeted_as_guest, assert_usage_error, hello_both_ways,
};
use common::{Client, Server, WAIT, WELCOME, eventually};

/// Reads lines from `c` until one satisfies `pred` (skipping joins and the like).
fn expect_matching(c: &mut Client, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    while let Some(line) = c.try_line(deadline.saturating_duration_since(Instant::now())) {
        if pred(&line) {
            return line;
        }
    }
    panic!("never received {what}");
}

/// A file in the test scratch directory, unique to this test.
fn scratch_file(name: &str, contents: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("client-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// A port nothing listens on (as long as nobody grabs it in between).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn piped_client_talks_to_the_room() {
    let server = Server::start(&[]);
    let mut bob = server.named("bob");
    let mut alice = ClientProcess::to(&server, &["--nick", "alice"], Stdio::piped());
    alice.expect_line(WELCOME);
    alice.expect_line("[SERVER] You are now known as alice");
    expect_matching(&mut bob, "the rename to alice", |l| {
        l.starts_with("[SERVER] guest") && l.ends_with(" is now known as alice")
    });

    hello_both_ways(&mut alice, &mut bob);

    // End of stdin: the client half-closes, the server closes, the client exits 0.
    alice.close_stdin();
    alice.finish_cleanly();
    bob.expect_line("[SERVER] Client: alice disconnected.");
}

#[test]
fn stdin_from_a_file_is_sent_then_the_client_waits_for_the_server() {
    let server = Server::start(&[]);
    // The last line has no LF: the client terminates it.
    let file = scratch_file("cmds.txt", b"/nick carol\n/who");
    let client = ClientProcess::to(&server, &[], std::fs::File::open(&file).unwrap().into());
    let (status, lines, stderr) = client.finish(WAIT);
    std::fs::remove_file(&file).unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(
        lines.first().map(String::as_str),
        Some(WELCOME),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "[SERVER] You are now known as carol"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "[SERVER] 1 online: carol"),
        "{lines:?}"
    );
}

#[test]
fn dev_null_stdin_prints_the_welcome_and_exits_0() {
    let server = Server::start(&[]);
    let client = ClientProcess::to(&server, &[], Stdio::null());
    let (status, lines, stderr) = client.finish(WAIT);
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_greeted_as_guest(&lines);
}

#[test]
fn server_closing_first_ends_the_client_with_0() {
    let server = Server::start(&[]);
    let mut client = ClientProcess::to(&server, &[], Stdio::piped());
    client.expect_line(WELCOME);
    client.send("/quit");
    client.expect_line("[SERVER] Bye!");
    // stdin is still open: the server's close alone ends the client.
    client.finish_cleanly();
}

#[test]
fn a_partial_last_line_is_printed_at_close() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let fake = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"one\ntwo").unwrap();
        // Wait for the client's end of stream, so closing cannot reset unread data.
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    let client = ClientProcess::spawn(&["-H", "127.0.0.1", "-p", &port], Stdio::null());
    let (status, lines, stderr) = client.finish(WAIT);
    fake.join().unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(lines, ["one", "two"]);
}

/// More input than the socket buffers hold, to a server that reads late: the client must
/// queue what the socket refuses and deliver every byte before half-closing.
#[test]
fn a_slow_server_gets_every_byte_of_a_big_input() {
    let mut input = Vec::new();
    for i in 0..100_000 {
        writeln!(input, "line {i:06} of the big input, to fill buffers").unwrap();
    }
    input.extend(std::iter::repeat_n(b'x', 100_000)); // longer than the client's read chunk
    input.extend_from_slice(b"\nlast line without LF");
    let expected = input.len() + 1; // the client terminates the last line
    let file = scratch_file("big.txt", &input);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let fake = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        thread::sleep(Duration::from_millis(300));
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let last = got.rsplit(|&b| b == b'\n').nth(1).unwrap().to_vec();
        writeln!(
            s,
            "got {} bytes, last {}",
            got.len(),
            String::from_utf8_lossy(&last)
        )
        .unwrap();
    });
    let client = ClientProcess::spawn(
        &["-H", "127.0.0.1", "-p", &port],
        std::fs::File::open(&file).unwrap().into(),
    );
    let (status, lines, stderr) = client.finish(WAIT * 2);
    fake.join().unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(
        lines,
        [format!("got {expected} bytes, last last line without LF")]
    );
}

#[test]
fn connection_refused_is_one_clear_line_and_exit_1() {
    let port = closed_port().to_string();
    let client = ClientProcess::spawn(&["-H", "127.0.0.1", "-p", &port], Stdio::null());
    let (status, lines, stderr) = client.finish(WAIT);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr:?}");
    assert!(stderr.contains("make run-server"), "{stderr:?}");
}

#[test]
fn unknown_host_is_one_clear_line_and_exit_1() {
    // RFC 6761: .invalid never resolves. A resolver may still ask the network, hence the
    // longer bound.
    let client = ClientProcess::spawn(&["-H", "no-such-host.invalid"], Stdio::null());
    let (status, _, stderr) = client.finish(WAIT * 4);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("no-such-host.invalid:1234"), "{stderr:?}");
    assert!(stderr.contains("make run-server"), "{stderr:?}");
}

#[test]
fn usage_errors_exit_2_with_the_usage() {
    for args in [
        &["-p", "abc"][..],
        &["-p", "0"],
        &["--bogus"],
        &["extra"],
        &["--nick", ""],
        &["--udp", "--nick", "x"],
    ] {
        assert_usage_error(args);
    }
}

#[test]
fn help_and_version_exit_0() {
    let (status, lines, _) = ClientProcess::spawn(&["--help"], Stdio::null()).finish(WAIT);
    assert!(status.success());
    assert!(lines[0].starts_with("Usage: loopchat-client"), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("--host")), "{lines:?}");
    let (status, lines, _) = ClientProcess::spawn(&["-V"], Stdio::null()).finish(WAIT);
    assert!(status.success());
    assert_eq!(
        lines,
        [format!("loopchat-client {}", env!("CARGO_PKG_VERSION"))]
    );
}

/// A UDP echo in the test stands in for the server, so that only the client is under test
/// (the server's UDP is tested in tests/modes.rs).
#[test]
fn udp_sends_each_line_as_a_datagram_and_prints_each_reply() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    let echo = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0; 2048];
        while got.len() < 40 {
            let (n, from) = socket.recv_from(&mut buf).expect("a datagram in time");
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            socket
                .send_to(&[b"echo: ", &buf[..n]].concat(), from)
                .unwrap();
        }
        got
    });
    // More lines than the client reads ahead, so its queue fills and drains.
    let sent: Vec<String> = (0..40).map(|i| format!("hola {i}")).collect();
    let input = scratch_file("udp.txt", format!("{}\n", sent.join("\n")).as_bytes());
    let client = ClientProcess::spawn(
        &["--udp", "-H", "127.0.0.1", "-p", &port],
        std::fs::File::open(&input).unwrap().into(),
    );
    let (status, lines, stderr) = client.finish(WAIT);
    std::fs::remove_file(&input).unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    let echoed: Vec<String> = sent.iter().map(|s| format!("echo: {s}")).collect();
    assert_eq!(lines, echoed);
    assert_eq!(echo.join().unwrap(), sent);
}

#[test]
fn udp_to_a_closed_port_is_one_clear_line_and_exit_1() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut client =
        ClientProcess::spawn(&["--udp", "-H", "127.0.0.1", "-p", &port], Stdio::piped());
    client.send("anyone?");
    let (status, _, stderr) = client.finish(WAIT);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr:?}");
    assert!(stderr.contains("make run-server"), "{stderr:?}");
}

/// A pseudo-terminal around a command, via util-linux `script` or, failing that, tmux.
enum Pty {
    Script {
        child: Child,
        stdin: ChildStdin,
        screen: Arc<Mutex<Vec<u8>>>,
    },
    /// A tmux server on a private socket; the shell prints the command's status when done.
    Tmux { socket: PathBuf },
}

impl Pty {
    fn start(cmd: &str) -> Option<Pty> {
        if let Ok(mut child) = Command::new("script")
            .args(["-qec", cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            let screen = Arc::new(Mutex::new(Vec::new()));
            let mut out = child.stdout.take().unwrap();
            let sink = Arc::clone(&screen);
            thread::spawn(move || {
                let mut buf = [0; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            let stdin = child.stdin.take().unwrap();
            return Some(Pty::Script {
                child,
                stdin,
                screen,
            });
        }
        let socket = std::env::temp_dir().join(format!("loopchat-tmux-{}", std::process::id()));
        let shell = format!("{cmd}; echo \"[exit $?]\"; sleep 60");
        let started = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-s", "t", "-x", "150", "-y", "40"])
            .arg(shell)
            .status()
            .is_ok_and(|s| s.success());
        started.then_some(Pty::Tmux { socket })
    }

    fn tmux(socket: &Path, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(socket)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` and Enter.
    fn type_line(&mut self, text: &str) {
        match self {
            Pty::Script { stdin, .. } => {
                stdin.write_all(format!("{text}\n").as_bytes()).unwrap();
                stdin.flush().unwrap();
            }
            Pty::Tmux { socket } => {
                Pty::tmux(socket, &["send-keys", "-t", "t", "-l", text]);
                Pty::tmux(socket, &["send-keys", "-t", "t", "Enter"]);
            }
        }
    }

    /// Types Ctrl-D at the start of a line: end of input for the program on the terminal.
    fn ctrl_d(&mut self) {
        match self {
            Pty::Script { stdin, .. } => {
                stdin.write_all(b"\x04").unwrap();
                stdin.flush().unwrap();
            }
            Pty::Tmux { socket } => {
                Pty::tmux(socket, &["send-keys", "-t", "t", "C-d"]);
            }
        }
    }

    fn screen(&self) -> String {
        match self {
            Pty::Script { screen, .. } => String::from_utf8_lossy(&screen.lock().unwrap()).into(),
            Pty::Tmux { socket } => Pty::tmux(socket, &["capture-pane", "-p", "-N", "-t", "t"]),
        }
    }

    fn expect_screen(&self, want: &str) {
        eventually(&format!("{want:?} on the terminal"), || {
            self.screen().contains(want)
        });
    }

    /// Waits for the command on the terminal to exit, and asserts it exited 0.
    fn expect_exit_0(&mut self) {
        match self {
            Pty::Script { child, .. } => {
                let deadline = Instant::now() + WAIT;
                let status = loop {
                    if let Some(status) = child.try_wait().unwrap() {
                        break status;
                    }
                    assert!(Instant::now() < deadline, "script did not exit in time");
                    thread::sleep(Duration::from_millis(20));
                };
                assert!(status.success(), "{status}; screen: {}", self.screen());
            }
            Pty::Tmux { .. } => self.expect_screen("[exit 0]"),
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        match self {
            Pty::Script { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Pty::Tmux { socket } => {
                let _ = Command::new("tmux")
                    .arg("-S")
                    .arg(&*socket)
                    .arg("kill-server")
                    .status();
                // tmux may leave its socket behind.
                let _ = std::fs::remove_file(socket);
            }
        }
    }
}

#[test]
fn on_a_terminal_the_client_asks_for_a_nick() {
    let server = Server::start(&[]);
    let mut bob = server.named("bob");
    let cmd = format!("{CLIENT} -p {}", server.addr.port());
    let Some(mut pty) = Pty::start(&cmd) else {
        eprintln!("SKIPPED: neither `script` (util-linux) nor tmux can run here");
        return;
    };
    pty.expect_screen("Nick: ");
    pty.type_line("dave");
    pty.expect_screen("[SERVER] You are now known as dave");
    expect_matching(&mut bob, "the rename to dave", |l| {
        l.ends_with(" is now known as dave")
    });

    pty.type_line("hello from a terminal");
    bob.expect_line("dave: hello from a terminal");
    bob.send("hi dave");
    pty.expect_screen("bob: hi dave");

    pty.ctrl_d();
    pty.expect_exit_0();
    bob.expect_line("[SERVER] Client: dave disconnected.");
}
