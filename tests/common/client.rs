//! The real `loopchat-client` binary for the black-box tests: started with its stdout and
//! stderr collected, fed line by line, and killed by its PID when dropped.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Client, Server, WAIT, WELCOME, lines_channel, wait_exit};

/// The client binary under test.
pub const CLIENT: &str = env!("CARGO_BIN_EXE_loopchat-client");

/// A running `loopchat-client`, killed when dropped.
pub struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl ClientProcess {
    /// Starts the client with `args` (and `RUST_LOG` unset), stdout and stderr collected.
    pub fn spawn(args: &[&str], stdin: Stdio) -> ClientProcess {
        ClientProcess::start(Command::new(CLIENT), args, stdin)
    }

    /// Like [`ClientProcess::spawn`], but the system's root certificates are those of the file
    /// `roots`, whatever the machine trusts (rustls-native-certs reads `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` first).
    pub fn spawn_trusting(args: &[&str], roots: &Path, stdin: Stdio) -> ClientProcess {
        let mut cmd = Command::new(CLIENT);
        cmd.env("SSL_CERT_FILE", roots).env_remove("SSL_CERT_DIR");
        ClientProcess::start(cmd, args, stdin)
    }

    /// Starts the client talking to `server`, with `localhost` as the host: the server
    /// listens on 127.0.0.1 only, so this also checks that each resolved address is tried.
    pub fn to(server: &Server, extra: &[&str], stdin: Stdio) -> ClientProcess {
        ClientProcess::on_port(&[], server.addr.port(), extra, stdin)
    }

    /// `--tls` to the server on `port` at `localhost`, with `extra` flags.
    pub fn tls(port: u16, extra: &[&str], stdin: Stdio) -> ClientProcess {
        ClientProcess::on_port(&["--tls"], port, extra, stdin)
    }

    /// `first`, `-p PORT`, then `extra`.
    fn on_port(first: &[&str], port: u16, extra: &[&str], stdin: Stdio) -> ClientProcess {
        let port = port.to_string();
        let mut args = first.to_vec();
        args.extend(["-p", &port]);
        args.extend_from_slice(extra);
        ClientProcess::spawn(&args, stdin)
    }

    fn start(mut cmd: Command, args: &[&str], stdin: Stdio) -> ClientProcess {
        let mut child = cmd
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn loopchat-client");
        let stdout = lines_channel(child.stdout.take().unwrap());
        let mut err = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        ClientProcess {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr: Some(stderr),
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin not piped or closed");
        writeln!(stdin, "{line}").expect("write to client stdin");
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Skips printed lines until one equals `want`.
    pub fn expect_line(&self, want: &str) {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match self
                .stdout
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line == want => return,
                Ok(line) => seen.push(line),
                Err(_) => panic!("client never printed {want:?}; printed {seen:?}"),
            }
        }
    }

    /// Waits (bounded) for the client to exit; returns its status, the lines it printed that
    /// were not consumed yet, and its stderr.
    pub fn finish(mut self, within: Duration) -> (ExitStatus, Vec<String>, String) {
        let status = wait_exit(&mut self.child, "client", within);
        // The process is gone, so its stdout ends soon: the reader thread then hangs up.
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(WAIT) {
            lines.push(line);
        }
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, lines, stderr)
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client with `args`, which are wrong: it must exit 2 with the usage on stderr and
/// print nothing.
pub fn assert_usage_error(args: &[&str]) {
    let (status, lines, stderr) = ClientProcess::spawn(args, Stdio::null()).finish(WAIT);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(lines.is_empty(), "{args:?}: {lines:?}");
    assert!(
        stderr.starts_with("loopchat-client: "),
        "{args:?}: {stderr}"
    );
    assert!(
        stderr.contains("Usage: loopchat-client"),
        "{args:?}: {stderr}"
    );
}

impl ClientProcess {
    /// Waits (bounded by [`WAIT`]) for the client to exit 0 with nothing more printed; returns
    /// its stderr.
    pub fn finish_cleanly(self) -> String {
        let (status, rest, stderr) = self.finish(WAIT);
        assert!(status.success(), "{status}; stderr: {stderr}");
        assert!(rest.is_empty(), "unexpected output: {rest:?}");
        stderr
    }
}

/// `alice` (the client binary, named alice) and `bob` (named bob) say hello to each other.
pub fn hello_both_ways(alice: &mut ClientProcess, bob: &mut Client) {
    alice.send("hello bob");
    bob.expect_line("alice: hello bob");
    bob.send("hi alice");
    alice.expect_line("bob: hi alice");
}

/// Asserts that `lines`, what a client printed, start with the welcome and a guest's intro.
pub fn assert_greeted_as_guest(lines: &[String]) {
    assert_eq!(
        lines.first().map(String::as_str),
        Some(WELCOME),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("[SERVER] You are guest"), "{lines:?}");
}
