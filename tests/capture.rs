//! The packet-capture script against the real server: a student running
//! `scripts/intercept.sh PORT` sees each packet's direction and its payload as text.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::{Server, WAIT};

#[test]
fn intercept_shows_both_directions_and_the_payload() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("SKIPPED: tshark is not installed (apt-get install tshark); .ci/run installs it");
        return;
    }
    let server = Server::start(&["--udp"]);
    let port = server.addr.port().to_string();
    let mut capture = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/intercept.sh"))
        .args([port.as_str(), "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/intercept.sh");

    // Wait until tshark says the capture has started ("Capturing on" comes earlier, before the
    // capture is live); keep its other messages for a failure report.
    let (tx, rx) = mpsc::channel();
    let stderr = capture.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = Vec::new();
    while let Ok(line) = rx.recv_timeout(WAIT) {
        said.push(line);
        if said.last().unwrap().contains("Capture started") {
            break;
        }
    }
    if !said.iter().any(|l| l.contains("Capture started")) {
        let status = capture.wait().unwrap();
        let text = said.join("\n");
        if text.contains("may not capture") {
            eprintln!("SKIPPED: packet capture is not permitted here:\n{text}");
            return;
        }
        panic!("capture did not start ({status}):\n{text}");
    }

    let mut alice = server.named("alice");
    let mut bob = server.client();
    alice.send("hola por la red");
    bob.expect_line("alice: hola por la red");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"un datagrama\n", server.addr).unwrap();

    let mut out = String::new();
    capture
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        capture.wait().unwrap().success(),
        "intercept.sh failed:\n{out}"
    );
    let has = |needle: &str| out.lines().any(|l| l.contains(needle));
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
