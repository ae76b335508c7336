//! The packet-capture script against the real server, driven the way a student runs it:
//! `scripts/intercept.sh PORT` in a terminal, each packet's direction and payload shown as it
//! happens, Ctrl-C to stop.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use common::tls::{Certs, TlsClient};
use common::{Reaper, Server, WAIT, have, lines_channel};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/intercept.sh");

/// The script running in a process group of its own, as a terminal runs a foreground job, so
/// that Ctrl-C can be sent as a terminal sends it: to every process of the group.
struct Capture {
    job: Reaper,
    pgid: i32,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Packet lines read so far.
    out: Vec<String>,
    /// stderr lines read so far.
    said: Vec<String>,
}

impl Capture {
    /// Starts `intercept.sh args...` and waits until tshark is capturing. `None` (with the
    /// reason printed) where tshark is missing or this user may not capture.
    fn start(args: &[&str]) -> Option<Capture> {
        if !have("tshark") {
            eprintln!(
                "SKIPPED: tshark is not installed (apt-get install tshark); .ci/run installs it"
            );
            return None;
        }
        let mut child = Command::new(SCRIPT);
        child
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut job = Reaper(child.spawn().expect("run scripts/intercept.sh"));
        let pgid = job.0.id() as i32;
        let stdout = lines_channel(job.0.stdout.take().unwrap());
        let stderr = lines_channel(job.0.stderr.take().unwrap());
        let mut capture = Capture {
            job,
            pgid,
            stdout,
            stderr,
            out: Vec::new(),
            said: Vec::new(),
        };

        // "Capturing on" comes earlier, before the capture is live. tshark loads every
        // dissector first, which takes a few seconds on a cold cache.
        let deadline = Instant::now() + 2 * WAIT;
        while !capture.said.iter().any(|l| l.contains("Capture started")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match capture.stderr.recv_timeout(left) {
                Ok(line) => capture.said.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("capture did not start:\n{}", capture.said.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = capture.job.wait_exit(WAIT);
                    let text = capture.said.join("\n");
                    if text.contains("may not capture") {
                        eprintln!("SKIPPED: packet capture is not permitted here:\n{text}");
                        return None;
                    }
                    panic!("capture did not start ({status}):\n{text}");
                }
            }
        }
        Some(capture)
    }

    /// Waits at most `within` for a packet line containing `text`, printed while the capture
    /// still runs.
    fn expect_live(&mut self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.out.iter().any(|l| l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.out.push(line),
                Err(_) => panic!(
                    "no packet line with {text:?} appeared within {within:?} of the packet \
                     being sent; printed so far: {:#?}",
                    self.out
                ),
            }
        }
        assert!(
            self.job.0.try_wait().unwrap().is_none(),
            "the capture ended on its own"
        );
    }

    /// Ctrl-C, as a terminal sends it: SIGINT to the whole foreground process group.
    fn interrupt(&self) {
        // SAFETY: kill has no memory preconditions; the group is the one we created.
        let rc = unsafe { libc::kill(-self.pgid, libc::SIGINT) };
        assert_eq!(rc, 0, "kill(-{}, SIGINT) failed", self.pgid);
    }

    /// Waits for the script to exit and for its output to end; returns its exit code.
    fn finish(&mut self, within: Duration) -> Option<i32> {
        let status = self.job.wait_exit(within);
        let deadline = Instant::now() + WAIT;
        for (from, into) in [
            (&self.stdout, &mut self.out),
            (&self.stderr, &mut self.said),
        ] {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match from.recv_timeout(left) {
                    Ok(line) => into.push(line),
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {
                        panic!("output still open after the script exited: a process was left")
                    }
                }
            }
        }
        status.code()
    }

    /// The processes still alive in the script's group ("PID (name)"); zombies have exited.
    fn left_over(&self) -> Vec<String> {
        let mut left = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The name is in parentheses and may hold spaces: fields counted after the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // fields[0] is the state, fields[2] the process group.
            if fields.len() > 2 && fields[2] == self.pgid.to_string() && fields[0] != "Z" {
                left.push(format!(
                    "{} ({})",
                    stat[..open].trim(),
                    &stat[open + 1..close]
                ));
            }
        }
        left
    }
}

impl Drop for Capture {
    /// Without SECONDS tshark captures until told to stop: a failed test must not leave it
    /// running. A group's id is not reused while any member lives, so these are ours.
    fn drop(&mut self) {
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            if self.left_over().is_empty() {
                return;
            }
            // SAFETY: as in interrupt.
            unsafe { libc::kill(-self.pgid, signal) };
            let deadline = Instant::now() + WAIT;
            while !self.left_over().is_empty() && Instant::now() < deadline {
                let _ = self.job.0.try_wait();
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// tshark's closing "N packets captured", as N.
fn packets_captured(line: &str) -> Option<usize> {
    let n = line
        .strip_suffix(" packets captured")
        .or_else(|| line.strip_suffix(" packet captured"))?;
    n.trim().parse().ok()
}

#[test]
fn packets_show_as_they_happen_and_ctrl_c_stops_cleanly() {
    let server = Server::start(&["--udp"]);
    let port = server.addr.port().to_string();
    let Some(mut capture) = Capture::start(&[&port]) else {
        return;
    };

    let mut alice = server.named("alice");
    let mut bob = server.client();
    alice.send("hola por la red");
    bob.expect_line("alice: hola por la red");
    capture.expect_live("hola por la red\\n", WAIT);
    capture.expect_live("alice: hola por la red\\n", WAIT);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"un datagrama\n", server.addr).unwrap();
    capture.expect_live("received: un datagrama\\n", WAIT);

    capture.interrupt();
    let code = capture.finish(WAIT);
    let out = capture.out.join("\n");
    let said = capture.said.join("\n");
    assert_eq!(
        code,
        Some(0),
        "Ctrl-C did not end it with status 0:\n{said}\n{out}"
    );
    let left = capture.left_over();
    assert!(left.is_empty(), "processes left after Ctrl-C: {left:?}");

    // Nothing after the capture started but tshark's count, which must match what was shown.
    let after: Vec<&String> = capture
        .said
        .iter()
        .skip_while(|l| !l.contains("Capture started"))
        .skip(1)
        .collect();
    assert!(
        matches!(after[..], [l] if packets_captured(l) == Some(capture.out.len())),
        "after Ctrl-C, stderr should only say the {} packets shown were captured:\n{said}",
        capture.out.len()
    );

    let has = |needle: &str| capture.out.iter().any(|l| l.contains(needle));
    assert!(
        has("> server") && has("server                >"),
        "no direction shown:\n{out}"
    );
    assert!(has("SYN"), "no handshake shown:\n{out}");
    assert!(
        has("TCP  ACK,PSH     hola por la red\\n"),
        "client payload missing:\n{out}"
    );
    assert!(
        has("alice: hola por la red\\n"),
        "broadcast missing:\n{out}"
    );
    assert!(
        has("UDP              un datagrama\\n"),
        "datagram missing:\n{out}"
    );
    assert!(
        has("received: un datagrama\\n"),
        "UDP answer missing:\n{out}"
    );
}

#[test]
fn seconds_ends_the_capture_by_itself() {
    let server = Server::start(&[]);
    let port = server.addr.port().to_string();
    let seconds = 4;
    let Some(mut capture) = Capture::start(&[&port, &seconds.to_string()]) else {
        return;
    };

    let mut alice = server.named("alice");
    let mut bob = server.client();
    alice.send("hasta pronto");
    bob.expect_line("alice: hasta pronto");
    // Well before the end, when a formatter that reads in blocks would print it all at once.
    capture.expect_live("alice: hasta pronto\\n", Duration::from_secs(seconds / 2));

    let code = capture.finish(Duration::from_secs(seconds) + WAIT);
    assert_eq!(
        code,
        Some(0),
        "intercept.sh failed:\n{}",
        capture.said.join("\n")
    );
    let left = capture.left_over();
    assert!(left.is_empty(), "processes left after SECONDS: {left:?}");
}

/// A TLS session on the wire: its lines appear nowhere in the capture, while a plain client's
/// line in the same capture does (so the capture did see the traffic).
#[test]
fn tls_sessions_are_unreadable_on_the_wire() {
    let certs = Certs::new();
    let args = certs.args();
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let port = server.addr.port().to_string();
    let Some(mut capture) = Capture::start(&[&port]) else {
        return;
    };

    let mut alice = TlsClient::connect(server.addr, &certs).greeted();
    let mut bob = TlsClient::connect(server.addr, &certs).greeted();
    alice.send("hola, secreto");
    bob.expect_eventually(&format!("{}: hola, secreto", alice.name));
    let mut carol = server.client();
    carol.send("esto se ve");
    bob.expect_eventually(&format!("{}: esto se ve", carol.name));
    capture.expect_live("esto se ve\\n", WAIT);

    capture.interrupt();
    assert_eq!(capture.finish(WAIT), Some(0));
    let out = capture.out.join("\n");
    assert!(!out.contains("secreto"), "a TLS line is readable:\n{out}");
    // The plain client's greeting, and only its.
    assert_eq!(
        out.matches("Welcome").count(),
        1,
        "a TLS greeting is readable:\n{out}"
    );
}
