//! The command line: help, version, usage errors (exit 2), runtime errors (exit 1), the
//! first transcript line, and -q.

mod common;

use common::{Client, Server, run_cli};
use std::net::TcpListener;
use std::process::Output;
use std::time::Duration;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[test]
fn help_prints_usage_and_exits_0() {
    for flag in ["-h", "--help"] {
        let out = run_cli(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", describe(&out));
        let stdout = text(&out.stdout);
        assert!(
            stdout.to_lowercase().contains("usage"),
            "{flag}: {}",
            describe(&out)
        );
        for option in [
            "--port",
            "--host",
            "--max-line",
            "--max-clients",
            "--rate",
            "--no-console",
        ] {
            assert!(
                stdout.contains(option),
                "{flag} does not mention {option}: {stdout}"
            );
        }
    }
}

#[test]
fn version_prints_the_version_and_exits_0() {
    for flag in ["-V", "--version"] {
        let out = run_cli(&[flag]);
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", describe(&out));
        assert!(
            text(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
            "{flag}: {}",
            describe(&out)
        );
    }
}

#[test]
fn bad_option_values_are_usage_errors_with_exit_2() {
    let cases: [(&[&str], &str); 6] = [
        (&["-p", "abc"], "abc"),
        (&["--port", "abc"], "abc"),
        (&["--port", "70000"], "70000"),
        (&["--max-line", "x"], "max-line"),
        (&["--rate", "fast"], "fast"),
        (&["--bogus-option"], "bogus-option"),
    ];
    for (args, mention) in cases {
        let mut all = vec!["--no-console"];
        all.extend_from_slice(args);
        let out = run_cli(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(mention),
            "{args:?}: error does not say what: {stderr}"
        );
        assert!(
            stderr.to_lowercase().contains("usage") && stderr.contains("--max-line"),
            "{args:?}: no usage on stderr: {stderr}"
        );
        assert!(
            !text(&out.stdout).contains("Listening"),
            "{args:?}: started anyway: {}",
            describe(&out)
        );
    }
}

#[test]
fn port_in_use_exits_1_with_one_line_suggesting_port() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run_cli(&["--no-console", "--host", "127.0.0.1", "--port", &port]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one clear line: {}", describe(&out));
    assert!(
        lines[0].contains("--port"),
        "does not suggest --port: {:?}",
        lines[0]
    );
}

#[test]
fn port_0_prints_the_real_port_first() {
    let server = Server::start(&["--port", "0"]);
    assert_ne!(server.addr.port(), 0);
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    let _ = server.client();
    server.expect_out_prefix("[SERVER] Client: guest1 connected!");
}

#[test]
fn quiet_keeps_only_the_first_line() {
    let server = Server::start(&["-q"]);
    let mut room = server.crowd(2);
    let sender = room[0].name.clone();
    room[0].send("hello");
    room[1].expect_line(&format!("{sender}: hello"));
    drop(room);
    server.expect_no_out(Duration::from_millis(500));
}

#[test]
fn transcript_has_no_colours_or_timestamps_when_piped() {
    let server = Server::start(&[]);
    let mut a = server.named("alice");
    let mut b = Client::connect(server.addr);
    b.line();
    b.read_intro();
    a.expect_prefix("[SERVER] Client: ");
    a.send("plain text");
    for want in [
        "[SERVER] Client: guest1 connected!",
        "[SERVER] guest1 is now known as alice",
        "[SERVER] Client: guest2 connected!",
        "alice: plain text",
    ] {
        // Exact lines: no escape sequences, no timestamp prefix.
        server.expect_out(want);
    }
}
