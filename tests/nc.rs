//! The real `nc` (netcat-openbsd) as a client, the way the README tells people to connect.

mod common;

use common::{
    Client, Launch, Reaper, Server, WAIT, WELCOME, have, intro, lines_channel, run_bounded,
};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn nc_missing() -> bool {
    let missing = !have("nc");
    if missing {
        println!("skipping: nc (netcat-openbsd) is not installed");
    }
    missing
}

/// Runs `nc FLAGS 127.0.0.1 PORT` with `input` on its stdin; returns what nc printed.
fn nc(server: &Server, flags: &[&str], input: &[u8]) -> Vec<String> {
    let port = server.addr.port().to_string();
    let out = run_bounded(
        Command::new("nc").args(flags).args(["127.0.0.1", &port]),
        Some(input),
        Duration::from_secs(8),
    );
    assert!(
        out.status.success(),
        "nc failed: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("server sent invalid UTF-8 to nc")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The name of the next client that joins, as `watcher` hears it.
fn joined(watcher: &mut Client) -> String {
    let line = watcher.expect_prefix("[SERVER] Client: ");
    line.strip_prefix("[SERVER] Client: ")
        .and_then(|l| l.strip_suffix(" connected!"))
        .unwrap_or_else(|| panic!("not a join line: {line:?}"))
        .to_string()
}

#[test]
fn a_message_piped_through_nc_reaches_another_client() {
    if nc_missing() {
        return;
    }
    let server = Launch::new(&[]).web().start();
    let mut bob = server.named("bob");
    let shown = nc(&server, &["-q", "1"], b"hello from nc\n/who\n");
    let name = joined(&mut bob);
    bob.expect_line(&format!("{name}: hello from nc"));
    bob.expect_line(&format!("[SERVER] Client: {name} disconnected."));
    assert_eq!(
        shown,
        vec![
            WELCOME.to_string(),
            intro(&name),
            format!("[SERVER] 2 online: bob, {name}"),
        ],
        "what nc printed"
    );
}

#[test]
fn a_newline_less_message_from_nc_is_delivered_when_it_closes() {
    if nc_missing() {
        return;
    }
    let server = Launch::new(&["--flush-partial", "0"]).web().start();
    let mut bob = server.named("bob");
    // Like `printf 'typed without enter' | nc -N host port`: -N shuts the socket down at EOF.
    let shown = nc(&server, &["-N"], b"typed without enter");
    let name = joined(&mut bob);
    bob.expect_line(&format!("{name}: typed without enter"));
    bob.expect_line(&format!("[SERVER] Client: {name} disconnected."));
    assert_eq!(shown, vec![WELCOME.to_string(), intro(&name)]);
}

#[test]
fn an_interactive_nc_session_talks_both_ways() {
    if nc_missing() {
        return;
    }
    let server = Launch::new(&[]).web().start();
    let mut bob = server.named("bob");
    let port = server.addr.port().to_string();
    let mut nc = Reaper(
        Command::new("nc")
            .args(["-N", "127.0.0.1", &port])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nc"),
    );
    let shown = lines_channel(nc.0.stdout.take().unwrap());
    let next = || {
        shown
            .recv_timeout(WAIT)
            .expect("nc printed nothing in time")
    };
    assert_eq!(next(), WELCOME);
    // With the web door open, an nc user who has typed nothing yet is greeted but not yet
    // announced (a browser's spare connections are silent too): the room hears of it with
    // its first line.
    let intro_line = next();
    let name = intro_line
        .strip_prefix("[SERVER] You are ")
        .and_then(|rest| rest.split_once('.'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| panic!("not the intro: {intro_line:?}"));
    assert_eq!(intro_line, intro(&name));

    bob.send("hi nc user");
    assert_eq!(next(), "bob: hi nc user");
    let mut typed = nc.0.stdin.take().unwrap();
    typed.write_all(b"hello bob\n").unwrap();
    typed.flush().unwrap();
    assert_eq!(joined(&mut bob), name);
    bob.expect_line(&format!("{name}: hello bob"));

    // End of input: nc -N shuts its side down, the server closes, the others hear of it.
    drop(typed);
    bob.expect_line(&format!("[SERVER] Client: {name} disconnected."));
    let status = nc.wait_exit(WAIT);
    assert!(status.success(), "nc: {status:?}");
}
