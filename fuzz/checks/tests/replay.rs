//! Replays every saved fuzz input through the same checks libFuzzer runs: the minimized corpus
//! (`fuzz/corpus/<target>/`) and the inputs that once broke something (`fuzz/regressions/`).

use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Longer than any saved input takes (milliseconds each): past it, the input hangs the code.
const HANG: Duration = Duration::from_secs(20);

/// Runs one input on its own thread, so that one that panics or never returns fails alone.
fn passes(check: fn(&[u8]), data: Vec<u8>) -> bool {
    let (done, wait) = mpsc::channel();
    thread::spawn(move || {
        check(&data);
        let _ = done.send(());
    });
    match wait.recv_timeout(HANG) {
        Ok(()) => true,
        Err(mpsc::RecvTimeoutError::Disconnected) => false, // it panicked
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!("hangs: still running after {HANG:?}");
            false // the thread spins on; the test process ends it when it exits
        }
    }
}

fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut inputs = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        inputs.extend(entries.map(|e| e.expect("readable directory").path()));
    }
    inputs.sort();
    assert!(!inputs.is_empty(), "no saved inputs for {target}");
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| !passes(check, fs::read(path).expect("readable input")))
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs fail: {failed:#?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn framer_inputs() {
    replay("framer", loopchat_fuzz_checks::framer);
}

#[test]
fn command_inputs() {
    replay("command", loopchat_fuzz_checks::command);
}

#[test]
fn engine_inputs() {
    replay("engine", loopchat_fuzz_checks::engine);
}

#[test]
fn websocket_inputs() {
    replay("websocket", loopchat_fuzz_checks::websocket);
}

#[test]
fn nats_inputs() {
    replay("nats", loopchat_fuzz_checks::nats);
}
