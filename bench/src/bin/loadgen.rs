//! loadgen: loopchat's load generator, one mio loop on one thread.
//!
//! Workloads (each bounded in time, loopback by default, one `RESULT key=value ...` line on
//! stdout, a human summary on stderr, exit 1 when the run failed):
//! - `throughput`: N clients join, a barrier proves every one receives broadcasts, then S of
//!   them send fixed-size messages, at most W each not yet received by every other client.
//!   Every receiver checks each sender's sequence (lost, duplicated, reordered).
//! - `idle`: N clients join and stay silent; the server's RSS growth per connection.
//! - `churn`: clients connect, send one message, wait until an observer sees it, half-close
//!   and wait for the server to close; cycles per second.
//! - `flood`: the room flood of [`loopchat_bench::flood`] (loopchat only): readers and senders
//!   as in `throughput` while short-lived connections flood the room with random lines, next
//!   to never-readers, 1 MiB lines, resets, slowloris and churn; readers dropped, loss, the
//!   server's peak RSS, `/who` latency.
//!
//! `--ws`: the throughput and idle workloads' clients are WebSocket clients of loopchat's web
//! door (handshake, masked text frames out, text frames in) instead of line clients.
//!
//! `--tls --ca FILE`: the throughput and idle workloads' line clients speak through TLS, each
//! with a full handshake of its own, verifying the server against the certificate in FILE.
//!
//! `--addr A --addr B` (or `--addr A,B`): the throughput, idle and churn workloads' clients are
//! spread round-robin over several servers, the nodes of a cluster (senders too), and each
//! receiver checks every sender, whichever node it is on. `--server-pid` then lists the nodes
//! and `--bus-pid` names the bus between them (nats-server): CPU and memory are summed over
//! them all.

use loopchat_bench::flood::{self, FloodConfig};
use loopchat_bench::generator::{Ev, Gen, Report, Watched, Window, join, put_latency};
use loopchat_bench::procfs;
use loopchat_bench::stats::Histogram;
use loopchat_bench::tls::Tls;
use loopchat_bench::traffic::Traffic;
use loopchat_bench::wire::{Kind, Msg, Proto};
use std::net::SocketAddr;
use std::process::exit;
use std::time::{Duration, Instant};

/// The flood's own flags (the other attackers' counts are per kind): name, help, value.
const FLOOD_FLAGS: [(&str, &str, &str); 12] = [
    ("flood-rate", "flood connections a second (250)", "R"),
    ("flood-threads", "threads opening them (3)", "T"),
    ("flood-lines", "lines per flood connection (50)", "L"),
    ("flood-max-len", "bytes per flood line, 1 to (300)", "B"),
    ("never-readers", "clients that never read (50)", "N"),
    ("huge", "clients sending huge lines (4)", "N"),
    ("huge-size", "bytes of a huge line (1048576)", "B"),
    ("resets", "clients resetting mid-line (4)", "N"),
    ("slowloris", "slowloris clients (20)", "N"),
    ("churners", "connect/close churners (4)", "N"),
    ("who-every", "seconds between /who probes (0.5)", "S"),
    ("seed", "seed of the flood's lines (1)", "N"),
];

/// With several servers (a cluster), seconds a message may stay in flight before it counts as
/// lost: far beyond any latency measured (the slowest, nats-server at N=5000, about 3.6 s), so
/// it is lost, not slow.
const GIVE_UP_CLUSTER: f64 = 5.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Throughput,
    Idle,
    Churn,
    Flood,
}

struct Opts {
    /// Where clients connect, in turn: one server, or a cluster's nodes.
    addrs: Vec<SocketAddr>,
    proto: Proto,
    /// `--tls`: the line clients' TLS, trusting `--ca`.
    tls: Option<Tls>,
    workload: Workload,
    clients: usize,
    senders: usize,
    window: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
    hold: Duration,
    concurrency: usize,
    /// Throughput: a message in flight this long counts as lost where it has not arrived.
    give_up: Option<Duration>,
    /// The server's processes, read from /proc.
    server: Watched,
    timeout: Duration,
    /// `--workload flood`, with defaults of its own: the full size (bench/README.md).
    flood: FloodConfig,
}

fn parse_opts() -> Opts {
    let mut o = getopts::Options::new();
    o.optopt("H", "host", "server address (127.0.0.1)", "ADDR");
    o.optopt("p", "port", "server port (or --addr)", "PORT");
    o.optmulti(
        "",
        "addr",
        "a server's HOST:PORT instead of -H/-p; several (repeated or comma-separated): clients \
         spread round-robin over them, the nodes of a cluster",
        "HOST:PORT",
    );
    o.optopt(
        "",
        "proto",
        "line (loopchat, baselines) or nats (line)",
        "PROTO",
    );
    o.optflag(
        "",
        "ws",
        "throughput and idle: WebSocket clients of loopchat's web door",
    );
    o.optflag(
        "",
        "tls",
        "throughput and idle: line clients through TLS (needs --ca)",
    );
    o.optopt(
        "",
        "ca",
        "the certificate (PEM) --tls trusts, the server's own or its issuer's",
        "FILE",
    );
    o.optopt(
        "",
        "workload",
        "throughput, idle, churn or flood (throughput)",
        "NAME",
    );
    o.optopt("n", "clients", "clients that join (100; flood: 500)", "N");
    o.optopt(
        "s",
        "senders",
        "clients that send, throughput and flood (10)",
        "S",
    );
    o.optopt(
        "w",
        "window",
        "messages in flight per sender (32; flood: 16)",
        "W",
    );
    o.optopt(
        "",
        "size",
        "message payload bytes, at least 35 (64)",
        "BYTES",
    );
    o.optopt("", "warmup", "seconds before measuring (1)", "SECS");
    o.optopt(
        "",
        "duration",
        "seconds measured (4; flood: the attack, 15)",
        "SECS",
    );
    o.optopt(
        "",
        "hold",
        "seconds idle clients are held before measuring RSS (1)",
        "SECS",
    );
    o.optopt("", "concurrency", "churn clients at once (16)", "C");
    o.optopt(
        "",
        "give-up",
        "throughput: seconds a message may stay in flight before it counts as lost where it \
         has not arrived, 0 = never (5 with several --addr: a cluster's bus may lose lines; \
         else 0)",
        "SECS",
    );
    o.optmulti(
        "",
        "server-pid",
        "read the server's CPU and memory from /proc/PID; several (repeated or \
         comma-separated): a cluster's nodes, summed",
        "PID",
    );
    o.optopt(
        "",
        "bus-pid",
        "the cluster's bus (nats-server): its CPU and memory count in the server's, and its \
         CPU on its own too",
        "PID",
    );
    o.optopt(
        "",
        "timeout",
        "seconds allowed to join (30 + N/500)",
        "SECS",
    );
    for (name, help, hint) in FLOOD_FLAGS {
        o.optopt("", name, help, hint);
    }
    o.optflag("h", "help", "print this help");
    let usage = |err: &dyn std::fmt::Display| -> ! {
        eprintln!(
            "loadgen: {err}\n{}",
            o.usage("Usage: loadgen -p PORT [options]")
        );
        exit(2)
    };
    if std::env::args().any(|a| a == "-h" || a == "--help") {
        println!("{}", o.usage("Usage: loadgen -p PORT [options]"));
        exit(0);
    }
    let m = o
        .parse(std::env::args().skip(1))
        .unwrap_or_else(|e| usage(&e));
    fn num<T: std::str::FromStr>(
        m: &getopts::Matches,
        name: &str,
        default: T,
    ) -> Result<T, String> {
        m.opt_str(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("bad --{name}: {v}"))
        })
    }
    let secs = |name: &str, default: f64| -> Duration {
        let v: f64 = num(&m, name, default).unwrap_or_else(|e| usage(&e));
        Duration::try_from_secs_f64(v).unwrap_or_else(|e| usage(&e))
    };
    let clients: usize = num(&m, "clients", 100).unwrap_or_else(|e| usage(&e));
    let listed = |name: &str| -> Vec<String> {
        m.opt_strs(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let addrs: Vec<SocketAddr> = match (listed("addr"), m.opt_str("port")) {
        (addrs, None) if !addrs.is_empty() => addrs
            .iter()
            .map(|a| a.parse().map_err(|_| format!("bad --addr {a} (HOST:PORT)")))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| usage(&e)),
        (addrs, Some(_)) if !addrs.is_empty() => usage(&"--addr or -p, not both"),
        _ => {
            let host = m.opt_str("H").unwrap_or_else(|| "127.0.0.1".into());
            let ip = host
                .trim_matches(['[', ']'])
                .parse()
                .unwrap_or_else(|e| usage(&e));
            let port: u16 = num(&m, "port", 0).unwrap_or_else(|e| usage(&e));
            if port == 0 {
                usage(&"-p PORT (or --addr HOST:PORT) is required");
            }
            vec![SocketAddr::new(ip, port)]
        }
    };
    let addr = addrs[0];
    let ip = addr.ip();
    let give_up = secs(
        "give-up",
        if addrs.len() > 1 {
            GIVE_UP_CLUSTER
        } else {
            0.0
        },
    );
    let pid = |p: &String| -> u32 { p.parse().unwrap_or_else(|e| usage(&e)) };
    let server = Watched {
        nodes: listed("server-pid").iter().map(pid).collect(),
        bus: m.opt_str("bus-pid").as_ref().map(pid),
    };
    let server_pid = server.nodes.first().copied();
    let size = num(&m, "size", 64usize).unwrap_or_else(|e| usage(&e));
    let d = FloodConfig::new(addr, server_pid);
    let count = |name: &str, default: usize| -> usize {
        num(&m, name, default).unwrap_or_else(|e| usage(&e))
    };
    let readers = count("clients", d.readers);
    let flood = FloodConfig {
        readers,
        senders: count("senders", d.senders).min(readers),
        window: count("window", d.window).max(1),
        size,
        duration: secs("duration", d.duration.as_secs_f64()),
        flood_rate: num(&m, "flood-rate", d.flood_rate).unwrap_or_else(|e| usage(&e)),
        flood_threads: count("flood-threads", d.flood_threads).max(1),
        flood_lines: count("flood-lines", d.flood_lines),
        flood_max_len: count("flood-max-len", d.flood_max_len).max(1),
        never_readers: count("never-readers", d.never_readers),
        huge: count("huge", d.huge),
        huge_size: count("huge-size", d.huge_size),
        resets: count("resets", d.resets),
        slowloris: count("slowloris", d.slowloris),
        churners: count("churners", d.churners),
        who_every: secs("who-every", d.who_every.as_secs_f64()).max(Duration::from_millis(10)),
        seed: num(&m, "seed", d.seed).unwrap_or_else(|e| usage(&e)),
        ..d
    };
    let tls = match (m.opt_present("tls"), m.opt_str("ca")) {
        (true, Some(ca)) => Some(Tls::load(ca.as_ref(), ip).unwrap_or_else(|e| usage(&e))),
        (true, None) => usage(&"--tls needs --ca"),
        (false, Some(_)) => usage(&"--ca is for --tls"),
        (false, None) => None,
    };
    let opts = Opts {
        addrs,
        proto: match (m.opt_str("proto").as_deref(), m.opt_present("ws")) {
            (None | Some("line"), true) => Proto::WebSocket,
            (None | Some("line"), false) => Proto::Line,
            (Some("nats"), false) => Proto::Nats,
            (Some("nats"), true) => usage(&"--ws speaks loopchat's line protocol, not NATS"),
            (Some(p), _) => usage(&format!("unknown --proto {p}")),
        },
        tls,
        workload: match m.opt_str("workload").as_deref() {
            None | Some("throughput") => Workload::Throughput,
            Some("idle") => Workload::Idle,
            Some("churn") => Workload::Churn,
            Some("flood") => Workload::Flood,
            Some(w) => usage(&format!("unknown --workload {w}")),
        },
        clients,
        senders: num(&m, "senders", 10usize)
            .unwrap_or_else(|e| usage(&e))
            .min(clients),
        window: num(&m, "window", 32usize)
            .unwrap_or_else(|e| usage(&e))
            .max(1),
        size,
        warmup: secs("warmup", 1.0),
        duration: secs("duration", 4.0),
        hold: secs("hold", 1.0),
        concurrency: num(&m, "concurrency", 16usize)
            .unwrap_or_else(|e| usage(&e))
            .max(1),
        give_up: Some(give_up).filter(|d| !d.is_zero()),
        server,
        timeout: secs("timeout", 30.0 + clients as f64 / 500.0),
        flood,
    };
    if opts.size < loopchat_bench::wire::MIN_SIZE {
        usage(&format!(
            "--size must be at least {}",
            loopchat_bench::wire::MIN_SIZE
        ));
    }
    if opts.clients < 2 {
        usage(&"--clients must be at least 2 (a broadcast needs a receiver)");
    }
    if opts.proto == Proto::WebSocket
        && !matches!(opts.workload, Workload::Throughput | Workload::Idle)
    {
        usage(&"--ws is for the throughput and idle workloads");
    }
    if opts.tls.is_some() {
        if opts.proto != Proto::Line {
            usage(&"--tls is for loopchat's line clients (not --ws, not NATS)");
        }
        if !matches!(opts.workload, Workload::Throughput | Workload::Idle) {
            usage(&"--tls is for the throughput and idle workloads");
        }
    }
    if opts.addrs.len() > 1 && opts.workload == Workload::Flood {
        usage(&"the flood attacks one server: one --addr");
    }
    if opts.addrs.len() > 63 {
        usage(&"at most 63 servers");
    }
    if opts.server.nodes.len() > 1 && opts.workload == Workload::Flood {
        usage(&"the flood reads one server: one --server-pid");
    }
    if opts.workload == Workload::Flood && opts.flood.senders == 0 {
        usage(&"--senders must be at least 1");
    }
    opts
}

fn throughput(o: &Opts, g: &mut Gen, evs: &mut Vec<(usize, Ev)>) -> Result<Report, String> {
    let (n, s, w) = (o.clients, o.senders, o.window);
    let join_time = join(g, n, o.timeout, evs)?;
    let mut t = Traffic::new(n, s, w, o.size);
    if let Some(limit) = o.give_up {
        t = t.give_up_after(limit);
    }
    let mut window = Window::new(o.warmup, o.duration, o.server.clone());
    let mut drained = false;
    loop {
        let measuring = window.tick();
        if !window.closed() {
            t.send(g);
        } else if t.drained() {
            drained = true;
            break;
        } else if window.drain_over() {
            break;
        }
        if let Some(r) = t.turn(g, evs, measuring)?.first() {
            return Err(format!("server closed client {r} ({:?})", g.first_error));
        }
    }
    let secs = window.secs();
    let lost = t.lost();
    let mut rep = Report::default();
    rep.put(
        "ok",
        lost == 0
            && t.dup == 0
            && t.reordered == 0
            && t.echoed == 0
            && t.bogus == 0
            && drained
            && t.deliveries > 0,
    )
    .put("workload", "throughput")
    .put("n", n)
    .put("servers", o.addrs.len())
    .put("senders", s)
    .put("window", w)
    .put("size", o.size)
    .put("join_s", format!("{:.3}", join_time.as_secs_f64()))
    .put("deliveries", t.deliveries)
    .put(
        "deliveries_per_s",
        format!("{:.0}", t.deliveries as f64 / secs),
    )
    .put("msgs_per_s", format!("{:.0}", t.completed as f64 / secs));
    put_latency(&mut rep, "", &t.hist);
    rep.put("lost", lost)
        .put("given_up", t.given_up)
        .put("dup", t.dup)
        .put("reordered", t.reordered)
        .put("undelivered", t.undelivered())
        .put("echoed", t.echoed)
        .put("bogus", t.bogus)
        .put("server_errors", g.server_errors);
    window.report(&mut rep, t.deliveries as f64);
    rep.server(&o.server);
    Ok(rep)
}

fn idle(o: &Opts, g: &mut Gen, evs: &mut Vec<(usize, Ev)>) -> Result<Report, String> {
    let before = o.server.mem();
    let join_time = join(g, o.clients, o.timeout, evs)?;
    // Keep serving (NATS pings) while the server settles.
    let until = Instant::now() + o.hold;
    while Instant::now() < until {
        evs.clear();
        g.turn(Duration::from_millis(50), evs)
            .map_err(|e| format!("poll: {e}"))?;
        if let Some((key, _)) = evs.iter().find(|(_, ev)| matches!(ev, Ev::Closed)) {
            return Err(format!(
                "server closed idle client {key} ({:?})",
                g.first_error
            ));
        }
    }
    let mut rep = Report::default();
    rep.put("ok", true)
        .put("workload", "idle")
        .put("n", o.clients);
    rep.put("join_s", format!("{:.3}", join_time.as_secs_f64()));
    if let (Some(b), Some(a)) = (before, o.server.mem()) {
        let per_conn = (a.rss_kib.saturating_sub(b.rss_kib) * 1024) as f64 / o.clients as f64;
        rep.put("server_rss_before_kib", b.rss_kib)
            .put("rss_per_conn_b", format!("{per_conn:.0}"));
    }
    rep.server(&o.server);
    Ok(rep)
}

#[derive(PartialEq, Eq)]
enum Stage {
    Connecting,
    Sent,
    Closing,
}

struct Churner {
    cycle: u32,
    started: u64,
    stage: Stage,
}

fn churn(o: &Opts, g: &mut Gen, evs: &mut Vec<(usize, Ev)>) -> Result<Report, String> {
    // Client 0 observes; client 1 only lets the barrier prove client 0.
    let join_time = join(g, 2, o.timeout, evs)?;
    let mut churners: Vec<Option<Churner>> = Vec::new();
    let (mut active, mut cycle, mut cycles, mut failures) = (0usize, 0u32, 0u64, 0u64);
    let mut hist = Histogram::default();
    let mut window = Window::new(o.warmup, o.duration, o.server.clone());
    loop {
        let measuring = window.tick();
        if window.closed() && (active == 0 || window.drain_over()) {
            break;
        }
        while !window.closed() && active < o.concurrency {
            match g.connect() {
                Ok(key) => {
                    if churners.len() <= key {
                        churners.resize_with(key + 1, || None);
                    }
                    churners[key] = Some(Churner {
                        cycle,
                        started: g.now_ns(),
                        stage: Stage::Connecting,
                    });
                    cycle += 1;
                    active += 1;
                }
                Err(e) => {
                    failures += 1;
                    g.first_error.get_or_insert_with(|| format!("connect: {e}"));
                    if failures > 100 {
                        return Err(format!("churn: too many connect failures ({e})"));
                    }
                    break;
                }
            }
        }
        evs.clear();
        g.turn(Duration::from_millis(5), evs)
            .map_err(|e| format!("poll: {e}"))?;
        for &(key, ev) in evs.iter() {
            match ev {
                Ev::Closed if key < 2 => {
                    return Err(format!("server closed the observer ({:?})", g.first_error));
                }
                Ev::Msg(m, _) if key == 0 && m.kind == Kind::Churn => {
                    let k = m.sender as usize;
                    if let Some(c) = churners.get_mut(k).and_then(Option::as_mut)
                        && c.cycle == m.seq
                        && c.stage == Stage::Sent
                    {
                        c.stage = Stage::Closing;
                        g.shutdown_write(k);
                    }
                }
                Ev::Connected if key >= 2 => {
                    if let Some(c) = churners[key].as_mut() {
                        c.stage = Stage::Sent;
                        let m = Msg {
                            kind: Kind::Churn,
                            sender: key as u32,
                            seq: c.cycle,
                            sent_ns: 0,
                        };
                        g.send(key, &m, o.size);
                    }
                }
                Ev::Closed => {
                    if let Some(c) = churners[key].take() {
                        if c.stage == Stage::Closing {
                            if measuring {
                                cycles += 1;
                                hist.record(g.now_ns() - c.started);
                            }
                        } else {
                            failures += 1;
                        }
                        g.close(key);
                        active -= 1;
                    }
                }
                Ev::Msg(..) | Ev::Connected => {}
            }
        }
    }
    let secs = window.secs();
    let mut rep = Report::default();
    rep.put("ok", failures == 0 && cycles > 0 && active == 0)
        .put("workload", "churn")
        .put("n", o.concurrency)
        .put("concurrency", o.concurrency)
        .put("join_s", format!("{:.3}", join_time.as_secs_f64()))
        .put("cycles", cycles)
        .put("cycles_per_s", format!("{:.0}", cycles as f64 / secs))
        .put("failures", failures)
        .put("unfinished", active);
    put_latency(&mut rep, "cycle_", &hist);
    window.report(&mut rep, cycles as f64);
    rep.server(&o.server);
    Ok(rep)
}

fn main() {
    let mut o = parse_opts();
    procfs::raise_nofile();
    let mut g = Gen::spread(o.addrs.clone(), o.proto).unwrap_or_else(|e| {
        eprintln!("loadgen: {e}");
        exit(1)
    });
    if let Some(tls) = o.tls.take() {
        g = g.with_tls(tls);
    }
    let mut evs = Vec::new();
    let result = match o.workload {
        Workload::Throughput => throughput(&o, &mut g, &mut evs),
        Workload::Idle => idle(&o, &mut g, &mut evs),
        Workload::Churn => churn(&o, &mut g, &mut evs),
        Workload::Flood => Ok(flood::run(&o.flood).to_report()),
    };
    let ok = match result {
        Ok(mut rep) => {
            if let Some(e) = &g.first_error {
                rep.put("first_error", e);
            }
            let ok = rep.0.first().is_some_and(|(_, v)| v == "true");
            rep.print();
            let summary: Vec<String> = rep.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!("loadgen: {}", summary.join(" "));
            ok
        }
        Err(e) => {
            let mut rep = Report::default();
            rep.put("ok", false).put("error", &e);
            rep.print();
            eprintln!("loadgen: failed: {e}");
            false
        }
    };
    exit(if ok { 0 } else { 1 })
}
