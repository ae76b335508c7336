//! The room's flow control over real sockets: a burst far larger than `--max-pending` reaches
//! every reader that reads, the transcript says when input was held back, and `/stats` shows
//! the figures. (The full flood, with never-readers and hundreds of short connections, is
//! tests/flood.rs.)

mod common;

use common::{Client, Server};
use std::time::Duration;

#[test]
fn a_burst_far_over_max_pending_reaches_every_reader_and_drops_nobody() {
    const LINES: usize = 2000; // ~290 KB for each reader, in one write
    let mut server = Server::start_with_console(&["--rate", "0", "--max-pending", "16384"]);
    let mut room = server.room(&["talker", "r1", "r2", "r3"]);
    let pad = "p".repeat(130);
    let burst: String = (0..LINES).map(|i| format!("{i:06} {pad}\n")).collect();
    room[0].send_raw(burst.as_bytes());
    // Each reader reads in turn, the others meanwhile not at all: the room must wait for
    // them, not judge them slow for what one turn queued.
    for reader in &mut room[1..] {
        for i in 0..LINES {
            let line = reader.line();
            assert_eq!(line, format!("talker: {i:06} {pad}"), "{}", reader.name);
        }
    }
    server.expect_out_prefix("[SERVER] Flow control: holding input back (");
    server.expect_out_prefix("[SERVER] Flow control: input flowing again after ");
    for c in &mut room {
        c.expect_silence(Duration::from_millis(200));
    }
    server.console("/stats");
    let stats = server.expect_out_prefix("[SERVER] Stats: ");
    assert!(
        stats.starts_with("[SERVER] Stats: 4 clients, 4 sockets, up "),
        "{stats}"
    );
    let traffic = server.out_line();
    assert!(
        traffic.starts_with(&format!("[SERVER]   in {} lines (", LINES + 4)),
        "4 renames and the burst: {traffic}"
    );
    let flow = server.out_line();
    assert!(
        flow.starts_with(
            "[SERVER]   owed 0 bytes, largest queue 0; flow control flowing: 0 senders waiting, "
        ),
        "{flow}"
    );
    let drops = server.out_line();
    assert_eq!(
        drops,
        "[SERVER]   dropped 0 too slow, 0 idle, 0 on errors; refused 0 full, 0 per address, 0 connection rate"
    );
}

#[test]
fn stats_counts_drops_and_refusals_by_reason() {
    let mut server = Server::start_with_console(&["--max-clients", "1"]);
    let _one = server.client();
    let mut extra = Client::connect(server.addr);
    assert_eq!(
        extra.read_to_close(),
        vec!["[SERVER] Error: server full, try again later".to_string()]
    );
    server.console("/stats");
    server.expect_out_prefix("[SERVER] Stats: 1 clients, 1 sockets, up ");
    let drops = server.expect_out_prefix("[SERVER]   dropped ");
    assert!(
        drops.ends_with("refused 1 full, 0 per address, 0 connection rate"),
        "{drops}"
    );
}
