//! The room flood against the real server with its default flags: readers that read everything
//! (some of them sending, every message sequence-checked) while short-lived connections flood
//! the room with random lines, next to never-readers, 1 MiB lines, resets mid-line, slowloris,
//! churn and a `/who` prober. The workload is the benchmark's (`loadgen --workload flood`,
//! bench/src/flood.rs), here at a size that fits `make test`; `make bench` runs it at full size.
//!
//! What a user must see: no reader dropped, nothing lost, duplicated or reordered; the
//! never-readers, and only they, dropped as too slow; the server's peak RSS under 64 MiB; a
//! new client's `/who` answered within a second all through.
//!
//! In a test binary of its own: its hundreds of sockets and threads would disturb other tests.

mod common;

use common::Server;
use loopchat_bench::flood::{self, FloodConfig};
use std::time::{Duration, Instant};

#[test]
fn room_flood_drops_only_the_never_readers() {
    // Before the server starts, so that it inherits the raised limit too.
    loopchat_bench::procfs::raise_nofile();
    let server = Server::start(&[]);
    let cfg = FloodConfig {
        readers: 150,
        senders: 5,
        duration: Duration::from_secs(6),
        flood_rate: 250.0,
        never_readers: 15,
        huge: 2,
        resets: 2,
        slowloris: 5,
        churners: 2,
        ..FloodConfig::new(server.addr, Some(server.pid()))
    };
    let report = flood::run(&cfg);

    // The transcript names every client dropped as too slow, whoever it was.
    let mut too_slow = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while let Some(line) = server.try_out_line(Duration::from_millis(300)) {
        if line.starts_with("[SERVER] Client: ") && line.contains(" disconnected (too slow") {
            too_slow.push(line);
        }
        if Instant::now() > until {
            break;
        }
    }
    let pairs: Vec<String> = report
        .to_report()
        .0
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "flood: {}; transcript: {} dropped as too slow",
        pairs.join(" "),
        too_slow.len()
    );

    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "the flood broke the room: {}",
        failures.join("; ")
    );
    assert_eq!(
        too_slow.len(),
        cfg.never_readers,
        "only the never-readers may be dropped as too slow; the transcript shows {} (first: {:?})",
        too_slow.len(),
        too_slow.first()
    );
}
