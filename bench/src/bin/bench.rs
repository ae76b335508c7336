//! bench: runs loopchat, the baselines and (when installed) nats-server under `loadgen`, each
//! server pinned to core 0 and the generator to core 1, and writes docs/bench/ (results.json,
//! SVG plots, README.md with the tables). Every run gets a fresh server, is bounded in time and
//! stops by itself; only processes this program started are signalled, by PID.
//!
//! `--quick` is the CI smoke test: small N, about a second per run, every server, exit 1 if
//! any run fails.
//!
//! The room flood (`loadgen --workload flood`) runs against loopchat only, with loopchat's own
//! defaults: it is an attack on the server's flow control, judged by its own criteria (flood.rs).
//!
//! `loopchat-ws` and `loopchat-tls` are the same loopchat under other clients, WebSocket
//! clients and line clients through TLS (with a certificate made for the run), measured where
//! they differ from plain line clients: fan-out and idle memory.
//!
//! `loopchat-1node` and `loopchat-2nodes` are loopchat as a cluster (`--nats`): one or two
//! nodes behind a nats-server of their own (started for each run, pinned with them to core 0),
//! the generator's clients spread over the nodes, the server's CPU and memory summed over the
//! nodes and nats-server. Measured in fan-out and idle memory; skipped without nats-server.

use loopchat_bench::json::Json;
use loopchat_bench::stats::fmt_num;
use loopchat_bench::svg::Plot;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio, exit};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// loopchat's flags for the benchmark: no rate limit, no per-address cap or connection rate
/// (churn reconnects thousands of times a second), no console, no transcript, no join/leave
/// lines, room for the 10k idle sweep. A server that rejects one runs without it.
const LOOPCHAT_FLAGS: &[(&str, Option<&str>)] = &[
    ("--rate", Some("0")),
    ("--max-per-ip", Some("0")),
    ("--connect-rate", Some("0")),
    ("--no-console", None),
    ("-q", None),
    ("--announce-limit", Some("0")),
    ("--max-clients", Some("20000")),
    ("--port", Some("0")),
];
/// nats-server's flags, as a baseline and as a cluster's bus: loopback, and a free port it
/// picks and logs (-1). No JetStream: a cluster's names are then qualified by their node.
const NATS_FLAGS: [&str; 4] = ["-a", "127.0.0.1", "-p", "-1"];
/// The nodes of a cluster, in order.
const NODE_NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
/// How long a cluster's nodes may take to link up through the bus.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
/// loopchat's flags for the room flood: its defaults, as a user runs it (no console: stdin is
/// not a terminal here).
const FLOOD_FLAGS: [&str; 3] = ["--port", "0", "--no-console"];
/// How to build what the driver runs.
const BUILD: &str = "cargo build --release -p loopchat-bench --bins";
const BASELINES: [&str; 3] = ["min-broadcaster", "threaded-server", "tokio-server"];
/// The comparison point of the benchmark's targets (see `verdicts`).
const TARGET_N: usize = 1000;

struct Cfg {
    quick: bool,
    /// `loopchat-tls`'s certificate, while it runs.
    cert: Option<Cert>,
    out: PathBuf,
    bin_dir: PathBuf,
    servers: Vec<Server>,
    pin: bool,
    ns: Vec<usize>,
    idle_ns: Vec<usize>,
    senders: usize,
    window: usize,
    size: usize,
    warmup: f64,
    duration: f64,
    concurrency: usize,
    /// Runs of the N=1000 throughput point and of churn, whose medians the verdicts use.
    reps: usize,
    flood: FloodSize,
}

/// The room flood's size: readers (senders among them, messages in flight each), seconds of
/// attack, flood connections a second from how many threads, never-readers.
#[derive(Clone, Copy)]
struct FloodSize {
    readers: usize,
    senders: usize,
    window: usize,
    secs: f64,
    rate: f64,
    threads: usize,
    never: usize,
}

/// The attack at full size, and a small one for the smoke test.
const FLOOD_FULL: FloodSize = FloodSize {
    readers: 500,
    senders: 10,
    window: 16,
    secs: 15.0,
    rate: 250.0,
    threads: 3,
    never: 50,
};
const FLOOD_QUICK: FloodSize = FloodSize {
    readers: 50,
    senders: 5,
    window: 16,
    secs: 3.0,
    rate: 50.0,
    threads: 3,
    never: 5,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Loopchat,
    Baseline,
    Nats,
}

/// The clients loopchat is measured with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clients {
    /// Its line protocol in plain text (and every other server's own protocol).
    Plain,
    /// WebSocket clients of its web door (`loopchat-ws`, `loadgen --ws`).
    Ws,
    /// Line clients through TLS (`loopchat-tls`, `loadgen --tls`).
    Tls,
}

struct Server {
    name: String,
    flavor: Flavor,
    clients: Clients,
    program: PathBuf,
    /// Settled on the first start: loopchat's flags minus any it rejected.
    args: Vec<String>,
    /// loopchat as a cluster: this many nodes behind the nats-server `bus` (0: alone).
    nodes: usize,
    bus: Option<PathBuf>,
}

/// The cluster entries: name and nodes.
const CLUSTERS: [(&str, usize); 2] = [("loopchat-1node", 1), ("loopchat-2nodes", 2)];

/// A self-signed certificate for 127.0.0.1 and localhost (rcgen: ECDSA P-256), in PEM files of
/// a directory of its own, removed when dropped.
struct Cert {
    dir: PathBuf,
    cert: String,
    key: String,
}

impl Cert {
    fn make() -> Result<Cert, String> {
        let names = ["127.0.0.1", "localhost"].map(String::from).to_vec();
        let made = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("loopchat-bench-tls-{}", std::process::id()));
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&cert, made.cert.pem()))
            .and_then(|_| std::fs::write(&key, made.signing_key.serialize_pem()))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Cert {
            dir,
            cert: cert.display().to_string(),
            key: key.display().to_string(),
        })
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn list(v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("bad number {x}")))
        .collect()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    // Debian installs nats-server in /usr/sbin, which a user's PATH may lack.
    path.split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn parse_cfg() -> Cfg {
    let mut o = getopts::Options::new();
    o.optflag(
        "",
        "quick",
        "CI smoke test: small N, short runs, every server; exit 1 on any failure",
    );
    o.optopt(
        "",
        "out",
        "output directory (docs/bench; quick: a temporary directory)",
        "DIR",
    );
    o.optopt("", "servers", "comma-separated subset of loopchat,loopchat-ws,loopchat-tls,loopchat-1node,loopchat-2nodes,min-broadcaster,threaded-server,tokio-server,nats-server", "LIST");
    o.optopt(
        "",
        "loopchat",
        "loopchat-server binary (next to this one)",
        "PATH",
    );
    o.optopt(
        "",
        "before",
        "an earlier loopchat-server, run beside the current one as loopchat-before (A/B)",
        "PATH",
    );
    o.optopt("", "nats", "nats-server binary (found in PATH)", "PATH");
    o.optopt(
        "",
        "bin-dir",
        "where loadgen and the baselines are (next to this one)",
        "DIR",
    );
    o.optflag("", "no-pin", "do not pin with taskset");
    o.optopt(
        "",
        "ns",
        "client counts of the throughput sweep (10,100,1000,5000)",
        "LIST",
    );
    o.optopt(
        "",
        "idle-ns",
        "client counts of the idle sweep (1000,2000,5000,10000)",
        "LIST",
    );
    o.optopt("", "senders", "senders per throughput run (10)", "S");
    o.optopt("", "window", "messages in flight per sender (32)", "W");
    o.optopt("", "size", "message payload bytes (64)", "BYTES");
    o.optopt("", "warmup", "seconds before measuring (1)", "SECS");
    o.optopt("", "duration", "seconds measured per run (4)", "SECS");
    o.optopt("", "concurrency", "churn clients at once (16)", "C");
    o.optopt(
        "",
        "reps",
        "runs of the N=1000 throughput point and of churn (3; quick: 1)",
        "K",
    );
    o.optflag("h", "help", "print this help");
    let usage = |err: &dyn std::fmt::Display| -> ! {
        eprintln!(
            "bench: {err}\n{}",
            o.usage("Usage: bench [--quick] [options]")
        );
        exit(2)
    };
    let m = o
        .parse(std::env::args().skip(1))
        .unwrap_or_else(|e| usage(&e));
    if m.opt_present("h") {
        println!("{}", o.usage("Usage: bench [--quick] [options]"));
        exit(0);
    }
    let quick = m.opt_present("quick");
    let num = |name: &str, default: f64| -> f64 {
        m.opt_str(name)
            .map_or(Ok(default), |v| v.parse())
            .unwrap_or_else(|e| usage(&e))
    };
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let bin_dir = m
        .opt_str("bin-dir")
        .map(PathBuf::from)
        .or(exe_dir)
        .unwrap_or_else(|| usage(&"use --bin-dir"));
    let loopchat = m
        .opt_str("loopchat")
        .map_or_else(|| bin_dir.join("loopchat-server"), PathBuf::from);
    let nats = m
        .opt_str("nats")
        .map(PathBuf::from)
        .or_else(|| find_in_path("nats-server"));
    let wanted: Vec<String> = match m.opt_str("servers") {
        Some(s) => s.split(',').map(str::to_string).collect(),
        None => ["loopchat", "loopchat-ws", "loopchat-tls"]
            .iter()
            .chain(&CLUSTERS.map(|(name, _)| name))
            .chain(&BASELINES)
            .chain(&["nats-server"])
            .map(|s| s.to_string())
            .collect(),
    };
    let mut servers = Vec::new();
    for name in wanted {
        let nodes = CLUSTERS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |&(_, nodes)| nodes);
        if nodes > 0 && nats.as_ref().is_none_or(|p| !p.is_file()) {
            eprintln!(
                "bench: skipping {name}: its bus is nats-server, not installed (Debian package nats-server)"
            );
            continue;
        }
        let (flavor, program) = match name.as_str() {
            "loopchat" | "loopchat-ws" | "loopchat-tls" => {
                (Flavor::Loopchat, Some(loopchat.clone()))
            }
            _ if nodes > 0 => (Flavor::Loopchat, Some(loopchat.clone())),
            "nats-server" => (Flavor::Nats, nats.clone()),
            b if BASELINES.contains(&b) => (Flavor::Baseline, Some(bin_dir.join(b))),
            other => usage(&format!("unknown server {other}")),
        };
        match program.filter(|p| p.is_file()) {
            Some(program) => servers.push(Server {
                clients: match name.as_str() {
                    "loopchat-ws" => Clients::Ws,
                    "loopchat-tls" => Clients::Tls,
                    _ => Clients::Plain,
                },
                name,
                flavor,
                program,
                args: Vec::new(),
                nodes,
                bus: (nodes > 0).then(|| nats.clone()).flatten(),
            }),
            // The baselines are part of this package: missing means not built, not optional.
            None if flavor == Flavor::Baseline => usage(&format!(
                "{name} not found in {}: {BUILD}",
                bin_dir.display()
            )),
            None if flavor == Flavor::Nats => {
                eprintln!("bench: skipping nats-server: not installed (Debian package nats-server)")
            }
            None => eprintln!(
                "bench: skipping {name}: loopchat-server not found (cargo build --release --bin loopchat-server)"
            ),
        }
    }
    // The earlier build goes right after the current one: each point measures both close
    // together in time, which is what makes their ratio worth reading on a busy machine.
    if let Some(before) = m.opt_str("before").map(PathBuf::from) {
        if !before.is_file() {
            usage(&format!("--before: not a file: {}", before.display()));
        }
        let at = servers
            .iter()
            .position(|s| s.name == "loopchat")
            .map_or(0, |i| i + 1);
        let server = Server {
            clients: Clients::Plain,
            name: "loopchat-before".into(),
            flavor: Flavor::Loopchat,
            program: before,
            args: Vec::new(),
            nodes: 0,
            bus: None,
        };
        servers.insert(at, server);
    }
    if !bin_dir.join("loadgen").is_file() {
        usage(&format!(
            "loadgen not found in {}: {BUILD}",
            bin_dir.display()
        ));
    }
    if servers.is_empty() {
        usage(&"no server to benchmark");
    }
    let out = m.opt_str("out").map(PathBuf::from).unwrap_or_else(|| {
        if quick {
            std::env::temp_dir().join("loopchat-bench-quick")
        } else {
            PathBuf::from("docs/bench")
        }
    });
    let (ns, idle_ns) = if quick {
        ("10,50", "200")
    } else {
        ("10,100,1000,5000", "1000,2000,5000,10000")
    };
    let cert = servers
        .iter()
        .any(|s| s.clients == Clients::Tls)
        .then(Cert::make)
        .transpose()
        .unwrap_or_else(|e| {
            eprintln!("bench: cannot make loopchat-tls's certificate: {e}");
            exit(1)
        });
    Cfg {
        quick,
        cert,
        out,
        bin_dir,
        servers,
        pin: !m.opt_present("no-pin") && can_pin(),
        ns: list(&m.opt_str("ns").unwrap_or(ns.into())).unwrap_or_else(|e| usage(&e)),
        idle_ns: list(&m.opt_str("idle-ns").unwrap_or(idle_ns.into()))
            .unwrap_or_else(|e| usage(&e)),
        senders: num("senders", 10.0) as usize,
        window: num("window", 32.0) as usize,
        size: num("size", 64.0) as usize,
        warmup: num("warmup", if quick { 0.3 } else { 1.0 }),
        duration: num("duration", if quick { 1.0 } else { 4.0 }),
        concurrency: num("concurrency", 16.0) as usize,
        reps: (num("reps", if quick { 1.0 } else { 3.0 }) as usize).max(1),
        flood: if quick { FLOOD_QUICK } else { FLOOD_FULL },
    }
}

/// Pinning needs taskset and two CPUs this process may use.
fn can_pin() -> bool {
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let ok = cpus >= 2
        && Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "bench: not pinning (needs taskset and 2 CPUs; have {cpus}): figures will be noisier"
        );
    }
    ok
}

fn command(pin: bool, core: u32, program: &Path, args: &[String]) -> Command {
    let mut c = if pin {
        // taskset execs the program, so the child's PID is the program's own.
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    };
    c.args(args).stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe. If this driver dies (even by SIGKILL), the kernel
    // kills the child too, so no server or generator outlives a run.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c
}

struct Running {
    child: Child,
    port: u16,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it now (as dropping it does, on every path out of a run).
    fn stop(mut self) {
        self.halt();
    }

    /// SIGTERM, then SIGKILL after 3 s; only ever this child, by PID.
    fn halt(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) on the PID of a child we have not reaped yet.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Where a started server says it listens: loopchat and the baselines on stdout, NATS in its
/// log on stderr.
fn listening_port(line: &str) -> Option<u16> {
    let rest = line
        .split_once("[SERVER] Listening on ")
        .or_else(|| line.split_once("Listening for client connections on "))?
        .1;
    rest.trim().rsplit(':').next()?.parse().ok()
}

/// Starts `program`, waits for its listening line; on failure returns the exit code (if it
/// exited) and its last stderr lines.
fn start(cfg: &Cfg, program: &Path, args: &[String]) -> Result<Running, (Option<i32>, String)> {
    let mut child = command(cfg.pin, 0, program, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| (None, format!("cannot start {}: {e}", program.display())))?;
    let (tx, rx) = mpsc::channel::<String>();
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    for (pipe, keep) in [(stdout, None), (stderr, Some(Arc::clone(&tail)))] {
        let Some(pipe) = pipe else { continue };
        let tx = tx.clone();
        // Drains the pipe until the server exits, so it never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(tail) = &keep {
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    t.push_back(line.clone());
                    // The first line stays: a usage error's names the option (getopts).
                    if t.len() > 20 {
                        t.remove(1);
                    }
                }
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(10);
    let failure = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(port) = listening_port(&line) {
                    return Ok(Running { child, port });
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break "exited before listening",
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                break "no listening line in 10 s";
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    let _ = child.kill();
    let code = child.wait().ok().and_then(|s| s.code());
    let tail: Vec<String> = tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    Err((code, format!("{failure}: {}", tail.join(" | "))))
}

/// What a run measures: a server alone, or a cluster's nodes and the bus between them. Every
/// process stops when this is dropped, the nodes first.
struct Started {
    nodes: Vec<Running>,
    bus: Option<Running>,
}

impl Started {
    fn stop(mut self) {
        for node in self.nodes.drain(..) {
            node.stop();
        }
        if let Some(bus) = self.bus.take() {
            bus.stop();
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // Nodes first: each says goodbye on the bus as it shuts down.
        self.nodes.clear();
        self.bus = None;
    }
}

/// Starts a server, or a cluster: its nats-server, then its nodes, and waits until every node
/// is linked through the bus.
fn start_server(cfg: &Cfg, s: &mut Server) -> Result<Started, String> {
    let Some(program) = s.bus.clone().filter(|_| s.nodes > 0) else {
        return start_one(cfg, s, &[]).map(|r| Started {
            nodes: vec![r],
            bus: None,
        });
    };
    let nats_args = NATS_FLAGS.map(String::from);
    let bus = start(cfg, &program, &nats_args).map_err(|(_, why)| format!("the bus: {why}"))?;
    let mut started = Started {
        nodes: Vec::new(),
        bus: Some(bus),
    };
    let port = started.bus.as_ref().map_or(0, |b| b.port);
    // Listening before any node starts, it hears each one's first presence.
    let mut watch = BusWatch::connect(port).map_err(|e| format!("the bus: {e}"))?;
    let names = &NODE_NAMES[..s.nodes.min(NODE_NAMES.len())];
    for node in names {
        let extra = [
            "--nats".to_string(),
            format!("nats://127.0.0.1:{port}"),
            "--node".into(),
            node.to_string(),
        ];
        let r = start_one(cfg, s, &extra).map_err(|e| format!("node {node}: {e}"))?;
        started.nodes.push(r);
    }
    watch
        .wait_for(names, Instant::now() + LINK_TIMEOUT)
        .map_err(|e| format!("the nodes did not link through the bus: {e}"))?;
    Ok(started)
}

/// A NATS client of a cluster's bus listening to the nodes' presence. A node publishes its
/// presence as soon as its link is up, after its subscriptions: once every node has been heard,
/// a line said on any node reaches the others. (The transcript's `[SERVER] Node a: rooms
/// shared through ...` says the same, but the benchmark's nodes run with `-q`: without it they
/// would print every chat line.)
struct BusWatch {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl BusWatch {
    fn connect(port: u16) -> Result<BusWatch, String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .and_then(|s| {
                s.set_read_timeout(Some(Duration::from_millis(50)))
                    .map(|_| s)
            })
            .map_err(|e| e.to_string())?;
        let mut w = BusWatch {
            stream,
            buf: Vec::new(),
        };
        w.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"bench\"}\r\nSUB loopchat.presence.> 1\r\nPING\r\n")?;
        // The PONG: the subscription is in place.
        let mut ponged = false;
        w.read_until(Instant::now() + Duration::from_secs(5), |op| {
            ponged |= op == BusOp::Pong;
            ponged
        })?;
        Ok(w)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        use std::io::Write;
        self.stream.write_all(bytes).map_err(|e| e.to_string())
    }

    /// Waits until every node in `nodes` has published its presence.
    fn wait_for(&mut self, nodes: &[&str], deadline: Instant) -> Result<(), String> {
        let mut heard = vec![false; nodes.len()];
        let done = self.read_until(deadline, |op| {
            if let BusOp::Msg(subject) = op
                && let Some(node) = subject.strip_prefix("loopchat.presence.")
                && let Some(i) = nodes.iter().position(|n| *n == node)
            {
                heard[i] = true;
            }
            heard.iter().all(|&h| h)
        });
        done.map_err(|e| {
            let missing: Vec<&str> = nodes
                .iter()
                .zip(&heard)
                .filter(|(_, h)| !**h)
                .map(|(n, _)| *n)
                .collect();
            format!("{e}; not heard from node {}", missing.join(", "))
        })
    }

    /// Reads operations (answering pings) until `f` is satisfied or the deadline passes.
    fn read_until(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(BusOp) -> bool,
    ) -> Result<(), String> {
        let mut chunk = [0u8; 16384];
        loop {
            while let Some((op, used)) = BusOp::parse(&self.buf)? {
                self.buf.drain(..used);
                if op == BusOp::Ping {
                    self.send(b"PONG\r\n")?;
                }
                if f(op) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("timed out".into());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the bus closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// What the bus says to [`BusWatch`], as far as it cares.
#[derive(Debug, PartialEq, Eq)]
enum BusOp {
    /// A message on this subject (its payload skipped).
    Msg(String),
    Ping,
    Pong,
    Other,
}

impl BusOp {
    /// The first complete operation in `buf` and the bytes it takes; `None` until one is.
    fn parse(buf: &[u8]) -> Result<Option<(BusOp, usize)>, String> {
        let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[..end]);
        let mut words = line.split_whitespace();
        let op = match words.next().unwrap_or("") {
            "MSG" => {
                let words: Vec<&str> = words.collect();
                let (Some(subject), Some(len)) = (words.first(), words.last()) else {
                    return Err(format!("bad MSG: {line}"));
                };
                let len: usize = len.parse().map_err(|_| format!("bad MSG: {line}"))?;
                let used = end + 2 + len + 2;
                if buf.len() < used {
                    return Ok(None);
                }
                return Ok(Some((BusOp::Msg(subject.to_string()), used)));
            }
            "PING" => BusOp::Ping,
            "PONG" => BusOp::Pong,
            "-ERR" => return Err(line.into_owned()),
            _ => BusOp::Other,
        };
        Ok(Some((op, end + 2)))
    }
}

/// Starts one loopchat (with `extra` flags after its own), or a baseline, or nats-server; the
/// first time, settles its arguments (dropping loopchat flags it rejects).
fn start_one(cfg: &Cfg, s: &mut Server, extra: &[String]) -> Result<Running, String> {
    if s.args.is_empty() {
        let mut flags: Vec<(&str, Option<&str>)> = match s.flavor {
            Flavor::Loopchat => LOOPCHAT_FLAGS.to_vec(),
            Flavor::Baseline => vec![("--port", Some("0"))],
            // -1: NATS picks a free port and logs it.
            Flavor::Nats => NATS_FLAGS.chunks(2).map(|f| (f[0], Some(f[1]))).collect(),
        };
        if s.clients == Clients::Tls {
            let cert = cfg.cert.as_ref().expect("made for loopchat-tls at start");
            flags.push(("--tls-cert", Some(cert.cert.as_str())));
            flags.push(("--tls-key", Some(cert.key.as_str())));
        }
        let args = |flags: &[(&str, Option<&str>)]| -> Vec<String> {
            flags
                .iter()
                .flat_map(|(f, v)| std::iter::once(f.to_string()).chain(v.map(str::to_string)))
                .collect()
        };
        loop {
            let all: Vec<String> = args(&flags).into_iter().chain(extra.to_vec()).collect();
            match start(cfg, &s.program, &all) {
                Ok(r) => {
                    s.args = args(&flags);
                    return Ok(r);
                }
                // A usage error naming one of our flags: drop that flag and try again.
                Err((Some(2), why)) if s.flavor == Flavor::Loopchat => {
                    // getopts quotes the option it refused; other messages name it plainly
                    // (the usage text after them names every flag, so quoted goes first).
                    let quoted =
                        |f: &str| why.contains(&format!("'{}'", f.trim_start_matches('-')));
                    let named =
                        |f: &str| why.contains(&format!("{f} ")) || why.contains(&format!("{f}:"));
                    // Without these it would measure something else.
                    let kept = ["--port", "--tls-cert", "--tls-key"];
                    let find = |by: &dyn Fn(&str) -> bool| {
                        flags.iter().position(|(f, _)| !kept.contains(f) && by(f))
                    };
                    let Some(i) = find(&quoted).or_else(|| find(&named)) else {
                        return Err(format!("{} refused its flags: {why}", s.name));
                    };
                    eprintln!(
                        "bench: {} rejects {} ({why}); continuing without it",
                        s.name, flags[i].0
                    );
                    flags.remove(i);
                }
                Err((_, why)) => return Err(why),
            }
        }
    }
    let all: Vec<String> = s.args.iter().chain(extra).cloned().collect();
    start(cfg, &s.program, &all).map_err(|(_, why)| why)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Throughput,
    Idle,
    Churn,
    Flood,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Throughput => "throughput",
            Workload::Idle => "idle",
            Workload::Churn => "churn",
            Workload::Flood => "flood",
        }
    }
}

struct Run {
    server: String,
    workload: Workload,
    n: usize,
    ok: bool,
    fields: Vec<(String, String)>,
}

impl Run {
    fn get(&self, key: &str) -> Option<f64> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs loadgen pinned to core 1, killing it if it overstays `limit`.
fn loadgen(cfg: &Cfg, args: &[String], limit: Duration) -> Result<Vec<(String, String)>, String> {
    let mut child = command(cfg.pin, 1, &cfg.bin_dir.join("loadgen"), args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start loadgen: {e}"))?;
    let mut pipes = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .map(|p| {
        thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = p {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    })
    .into_iter();
    let deadline = Instant::now() + limit;
    let timed_out = loop {
        match child.try_wait() {
            Ok(Some(_)) => break false,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break true;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("loadgen: {e}")),
        }
    };
    let stdout = pipes
        .next()
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = pipes
        .next()
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    if timed_out {
        return Err(format!(
            "loadgen overstayed {} s: {}",
            limit.as_secs(),
            stderr.trim()
        ));
    }
    stdout
        .lines()
        .find_map(loopchat_bench::parse_result)
        .ok_or_else(|| format!("loadgen printed no result: {}", stderr.trim()))
}

fn run_one(cfg: &Cfg, s: &mut Server, w: Workload, n: usize) -> Run {
    let mut run = Run {
        server: s.name.clone(),
        workload: w,
        n,
        ok: false,
        fields: Vec::new(),
    };
    let started = if w == Workload::Flood {
        start(cfg, &s.program, &FLOOD_FLAGS.map(String::from))
            .map(|r| Started {
                nodes: vec![r],
                bus: None,
            })
            .map_err(|(_, why)| why)
    } else {
        start_server(cfg, s)
    };
    let server = match started {
        Ok(r) => r,
        Err(e) => {
            run.fields
                .push(("error".into(), e.replace(char::is_whitespace, "_")));
            return run;
        }
    };
    let duration = if w == Workload::Flood {
        cfg.flood.secs
    } else {
        cfg.duration
    };
    let list = |v: Vec<String>| v.join(",");
    let mut args: Vec<String> = if s.nodes == 0 {
        let one = &server.nodes[0];
        vec![
            "--port".into(),
            one.port.to_string(),
            "--server-pid".into(),
            one.pid().to_string(),
        ]
    } else {
        // Clients spread over the nodes; CPU and memory summed over them and the bus.
        let nodes = &server.nodes;
        let mut args = vec![
            "--addr".into(),
            list(
                nodes
                    .iter()
                    .map(|r| format!("127.0.0.1:{}", r.port))
                    .collect(),
            ),
            "--server-pid".into(),
            list(nodes.iter().map(|r| r.pid().to_string()).collect()),
        ];
        if let Some(bus) = &server.bus {
            args.extend(["--bus-pid".into(), bus.pid().to_string()]);
        }
        args
    };
    args.extend([
        "--workload".into(),
        w.name().into(),
        "--proto".into(),
        (if s.flavor == Flavor::Nats {
            "nats"
        } else {
            "line"
        })
        .into(),
        "--size".into(),
        cfg.size.to_string(),
        "--warmup".into(),
        cfg.warmup.to_string(),
        "--duration".into(),
        duration.to_string(),
    ]);
    match s.clients {
        Clients::Plain => {}
        Clients::Ws => args.push("--ws".into()),
        Clients::Tls => {
            let cert = cfg.cert.as_ref().expect("made for loopchat-tls at start");
            args.extend(["--tls".into(), "--ca".into(), cert.cert.clone()]);
        }
    }
    match w {
        Workload::Throughput => args.extend([
            "--clients".into(),
            n.to_string(),
            "--senders".into(),
            cfg.senders.to_string(),
            "--window".into(),
            cfg.window.to_string(),
        ]),
        Workload::Idle => args.extend(["--clients".into(), n.to_string()]),
        Workload::Churn => args.extend(["--concurrency".into(), n.to_string()]),
        Workload::Flood => {
            let f = cfg.flood;
            args.extend(
                [
                    ("--clients", n.to_string()),
                    ("--senders", f.senders.to_string()),
                    ("--window", f.window.to_string()),
                    ("--flood-rate", f.rate.to_string()),
                    ("--flood-threads", f.threads.to_string()),
                    ("--never-readers", f.never.to_string()),
                ]
                .into_iter()
                .flat_map(|(k, v)| [k.to_string(), v]),
            )
        }
    }
    // Join allowance + warm-up + measurement + drain + slack: loadgen bounds itself well within.
    let limit =
        Duration::from_secs_f64(30.0 + n as f64 / 500.0 + cfg.warmup + duration + 10.0 + 20.0);
    match loadgen(cfg, &args, limit) {
        Ok(fields) => {
            run.ok = fields.iter().any(|(k, v)| k == "ok" && v == "true");
            run.fields = fields;
        }
        Err(e) => run
            .fields
            .push(("error".into(), e.replace(char::is_whitespace, "_"))),
    }
    server.stop();
    run
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> Vec<(String, String)> {
    let lscpu = sh("lscpu", &[]);
    let field = |name: &str| {
        lscpu
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim_start_matches(':').trim().to_string())
            .unwrap_or_default()
    };
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = mem
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(String::new(), |kib| format!("{:.1} GiB", kib / 1048576.0));
    vec![
        ("cpu".into(), field("Model name")),
        ("nproc".into(), sh("nproc", &[])),
        ("kernel".into(), sh("uname", &["-sr"])),
        ("memory".into(), mem_gib),
        ("hypervisor".into(), field("Hypervisor vendor")),
        ("rustc".into(), sh("rustc", &["--version"])),
        (
            "nats_server".into(),
            find_in_path("nats-server")
                .map_or(String::new(), |p| sh(&p.to_string_lossy(), &["--version"])),
        ),
    ]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The generator runs alone on its core: when it waited for that core more than this share
/// of a run, other load on the machine disturbed the run.
const DISTURBED_WAIT_PCT: f64 = 10.0;

fn disturbed(r: &Run) -> bool {
    r.get("gen_wait_pct")
        .is_some_and(|w| w > DISTURBED_WAIT_PCT)
}

fn status(r: &Run) -> String {
    if r.ok && disturbed(r) {
        "ok, disturbed".into()
    } else if r.ok {
        "ok".into()
    } else {
        // A flood's `failed` lists the criteria it missed, `;`-separated, spaces as `_`.
        let failed = r
            .text("failed")
            .map(|f| f.replace('_', " ").replace(';', "; "));
        format!(
            "FAILED: {}",
            r.text("error")
                .map(str::to_string)
                .or(failed)
                .or(r.text("first_error").map(str::to_string))
                .unwrap_or("see results.json".into())
        )
    }
}

fn tables(cfg: &Cfg, runs: &[Run]) -> String {
    let mut s = String::new();
    let of = |w: Workload| runs.iter().filter(move |r| r.workload == w);
    let _ = writeln!(
        s,
        "### Throughput and latency\n\n{} senders, at most {} messages in flight each (until every other client has it), {}-byte messages, {} s measured after {} s warm-up. \
         Deliveries are summed over receivers. Where the generator's CPU is near 100 %, the generator, not the server, set the pace: \
         compare servers there by server CPU per delivery.{}\n\n\
         | server | N | deliveries/s | p50 µs | p99 µs | max µs | lost/dup/reord | server CPU % | server ns/delivery | generator CPU % | server peak RSS MiB | CPU wait % (srv/gen) | status |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        cfg.senders,
        cfg.window,
        cfg.size,
        cfg.duration,
        cfg.warmup,
        if cfg.servers.iter().any(|s| s.nodes > 0) {
            " A cluster's server figures (CPU, RSS, CPU wait) are summed over its nodes and nats-server; \
             they share one core, so most of their wait is for each other."
        } else {
            ""
        }
    );
    for r in of(Workload::Throughput) {
        let g = |k| fmt_num(r.get(k));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {}/{}/{} | {} | {} | {} | {} | {}/{} | {} |",
            r.server,
            r.n,
            g("deliveries_per_s"),
            g("p50_us"),
            g("p99_us"),
            g("max_us"),
            g("lost"),
            g("dup"),
            g("reordered"),
            g("server_cpu_pct"),
            g("server_ns_per_op"),
            g("gen_cpu_pct"),
            fmt_num(r.get("server_hwm_kib").map(|k| k / 1024.0)),
            g("server_wait_pct"),
            g("gen_wait_pct"),
            status(r)
        );
    }
    let _ = writeln!(
        s,
        "\n### Idle connections\n\nN clients joined (proven by a broadcast), then held silent for 1 s; RSS growth over the server's RSS before any client.\n\n\
         | server | N | RSS per connection (bytes) | server RSS MiB | threads | status |\n|---|--:|--:|--:|--:|---|"
    );
    for r in of(Workload::Idle) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.server,
            r.n,
            fmt_num(r.get("rss_per_conn_b")),
            fmt_num(r.get("server_rss_kib").map(|k| k / 1024.0)),
            fmt_num(r.get("server_threads")),
            status(r)
        );
    }
    let _ = writeln!(
        s,
        "\n### Churn\n\n{} clients at a time each connect, send one message, wait until an observer has it, half-close and wait for the server to close.\n\n\
         | server | cycles/s | cycle p50 µs | cycle p99 µs | failures | server CPU % | status |\n|---|--:|--:|--:|--:|--:|---|",
        cfg.concurrency
    );
    for r in of(Workload::Churn) {
        let g = |k| fmt_num(r.get(k));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.server,
            g("cycles_per_s"),
            g("cycle_p50_us"),
            g("cycle_p99_us"),
            g("failures"),
            g("server_cpu_pct"),
            status(r)
        );
    }
    let f = cfg.flood;
    let _ = writeln!(
        s,
        "\n### Room flood\n\nloopchat with its default flags. {} readers read everything ({} of them sending, at most {} messages in flight each) \
         while for {} s {} short-lived connections a second, from {} threads, each send 50 lines of 1 to 300 random bytes and half-close, \
         next to {} clients that never read, 1 MiB lines, resets mid-line, slowloris and connect/close churn; every 0.5 s a new client asks `/who`. \
         It passes when no reader is dropped, nothing is lost, duplicated or reordered, the never-readers are dropped, the server's peak RSS \
         stays under 64 MiB and every `/who` is answered within 1 s.\n\n\
         | server | readers | readers dropped | lost/dup/reord | never-readers dropped | flood connections | /who p99 ms | /who max ms | server peak RSS MiB | server CPU % | status |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        f.readers, f.senders, f.window, f.secs, f.rate, f.threads, f.never
    );
    for r in of(Workload::Flood) {
        let g = |k| fmt_num(r.get(k));
        let cells = [
            r.server.clone(),
            r.n.to_string(),
            g("readers_dropped"),
            format!("{}/{}/{}", g("lost"), g("dup"), g("reordered")),
            format!("{} of {}", g("never_readers_dropped"), g("never_readers")),
            g("flood_connections"),
            g("who_p99_ms"),
            g("who_max_ms"),
            fmt_num(r.get("server_hwm_kib").map(|k| k / 1024.0)),
            g("server_cpu_pct"),
            status(r),
        ];
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}

/// loopchat's targets, judged against this run's baselines. Where a point ran
/// several times, medians are compared.
fn verdicts(runs: &[Run]) -> String {
    // loopchat's runs count even when they failed their checks (that is a verdict too);
    // a baseline's only when it worked.
    let at = |server: &str, w: Workload, n: Option<usize>, key: &str| {
        median(runs, server, w, n, key, server == "loopchat")
    };
    let tput = |server: &str, key: &str| at(server, Workload::Throughput, Some(TARGET_N), key);
    let mut s = String::from(
        "### loopchat against its targets\n\n| target | measured | verdict |\n|---|---|---|\n",
    );
    // A measurement without a verdict (None) is shown but not judged.
    let mut row = |what: &str, measured: Option<(String, Option<bool>)>| {
        let (m, v) = measured.map_or(("not measured".into(), "–"), |(m, ok)| {
            let v = match ok {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "–",
            };
            (m, v)
        });
        let _ = writeln!(s, "| {what} | {m} | {v} |");
    };
    let ratio = |k: &str| Some((tput("loopchat", k)?, tput("min-broadcaster", k)?));
    row(
        &format!("deliveries/s ≥ 0.7 × min-broadcaster's (N={TARGET_N}, 10 senders)"),
        ratio("deliveries_per_s").map(|(a, b)| {
            let text = format!(
                "{} vs {} = {:.2}×",
                fmt_num(Some(a)),
                fmt_num(Some(b)),
                a / b
            );
            (text, Some(a >= 0.7 * b))
        }),
    );
    let lc_runs: Vec<&Run> = runs
        .iter()
        .filter(|r| r.server == "loopchat" && r.workload == Workload::Throughput && r.n == TARGET_N)
        .collect();
    let bad: Vec<Option<f64>> = lc_runs
        .iter()
        .map(|r| ["lost", "dup", "reordered"].iter().map(|k| r.get(k)).sum())
        .collect();
    row(
        &format!("no lost, duplicated or reordered message (N={TARGET_N}, every run)"),
        (!lc_runs.is_empty()).then(|| match bad.iter().copied().sum::<Option<f64>>() {
            Some(b) => (format!("{b} in {} runs", lc_runs.len()), Some(b == 0.0)),
            // A run that ended in an error proved nothing about its messages.
            None => ("a run failed (see the table)".into(), Some(false)),
        }),
    );
    row(
        &format!("p99 ≤ 2 × min-broadcaster's (N={TARGET_N})"),
        ratio("p99_us").map(|(a, b)| {
            let text = format!("{a:.0} µs vs {b:.0} µs = {:.2}×", a / b);
            (text, Some(a <= 2.0 * b))
        }),
    );
    row(
        &format!(
            "(not a target) server CPU per delivery, loopchat vs min-broadcaster (N={TARGET_N})"
        ),
        ratio("server_ns_per_op")
            .map(|(a, b)| (format!("{a:.0} ns vs {b:.0} ns = {:.2}×", a / b), None)),
    );
    let idle_n = runs
        .iter()
        .filter(|r| r.server == "loopchat" && r.workload == Workload::Idle)
        .map(|r| r.n)
        .max();
    row(
        "≤ 1 KiB RSS per idle connection at 10,000",
        idle_n.and_then(|n| {
            let b = at("loopchat", Workload::Idle, Some(n), "rss_per_conn_b")?;
            Some((
                format!("{b:.0} B at N={n}"),
                (n >= 10_000).then_some(b <= 1024.0),
            ))
        }),
    );
    let churn = |name| at(name, Workload::Churn, None, "cycles_per_s");
    row(
        "churn ≥ tokio-server's cycles/s",
        churn("loopchat")
            .zip(churn("tokio-server"))
            .map(|(a, b)| (format!("{a:.0} vs {b:.0}"), Some(a >= b))),
    );
    if let Some(gen_cpu) = tput("min-broadcaster", "gen_cpu_pct").filter(|&g| g >= 90.0) {
        let _ = writeln!(
            s,
            "\nmin-broadcaster's N={TARGET_N} runs were generator-bound (generator CPU {gen_cpu:.0} %): \
             its deliveries/s are a lower bound of the ceiling."
        );
    }
    s
}

/// loopchat under WebSocket and TLS clients next to its plain line clients, with the ratios:
/// fan-out at N=1000 (else the largest N measured) and idle memory at the largest idle N.
fn clients_compared(runs: &[Run]) -> String {
    let largest = |w: Workload| {
        runs.iter()
            .filter(|r| r.server == "loopchat" && r.workload == w)
            .map(|r| r.n)
            .max()
    };
    let others: Vec<(&str, &str)> = [
        ("loopchat-ws", "WebSocket"),
        ("loopchat-tls", "line, through TLS"),
    ]
    .into_iter()
    .filter(|(name, _)| runs.iter().any(|r| r.server == *name))
    .collect();
    if others.is_empty() {
        return String::new();
    }
    let n = runs
        .iter()
        .any(|r| r.server == "loopchat" && r.workload == Workload::Throughput && r.n == TARGET_N)
        .then_some(TARGET_N)
        .or(largest(Workload::Throughput));
    let idle_n = largest(Workload::Idle);
    let names: Vec<&str> = std::iter::once("loopchat")
        .chain(others.iter().map(|(name, _)| *name))
        .collect();
    let counted = counted(runs, &names);
    let get = |server: &str, w: Workload, n: Option<usize>, key: &str| {
        n.and_then(|n| median(counted.iter().copied(), server, w, Some(n), key, false))
    };
    let cells = |server: &str| {
        [
            get(server, Workload::Throughput, n, "deliveries_per_s"),
            get(server, Workload::Throughput, n, "server_ns_per_op"),
            get(server, Workload::Idle, idle_n, "rss_per_conn_b"),
        ]
    };
    let plain = cells("loopchat");
    let at = |n: Option<usize>| n.map_or("–".into(), |n| n.to_string());
    let mut s = format!(
        "### loopchat's clients compared\n\n\
         The same loopchat measured with its plain line clients (`loopchat`) and with other clients; \
         medians (of the runs not disturbed, where every server has some at that point), and in \
         brackets the ratio to plain line clients.\n\n\
         | clients | deliveries/s (N={}) | server ns/delivery (N={}) | idle RSS per connection, bytes (N={}) |\n\
         |---|--:|--:|--:|\n\
         | line, plain (`loopchat`) | {} | {} | {} |\n",
        at(n),
        at(n),
        at(idle_n),
        fmt_num(plain[0]),
        fmt_num(plain[1]),
        fmt_num(plain[2]),
    );
    let mut bound = Vec::new();
    for (name, what) in others {
        let row: Vec<String> = cells(name)
            .iter()
            .zip(plain)
            .map(|(&v, p)| match (v, p) {
                (Some(v), Some(p)) => format!("{} ({:.2}×)", fmt_num(Some(v)), v / p),
                _ => fmt_num(v),
            })
            .collect();
        let _ = writeln!(s, "| {what} (`{name}`) | {} |", row.join(" | "));
        if get(name, Workload::Throughput, n, "gen_cpu_pct").is_some_and(|g| g >= 90.0) {
            bound.push(format!("`{name}`"));
        }
    }
    generator_bound(&mut s, &bound);
    // A blank line before the tables that follow.
    s.push('\n');
    s
}

/// The runs a comparison of `servers` counts. Disturbed runs understate a server, and not two
/// servers alike: where every server compared has runs of a point that were not disturbed,
/// only those count; where one of them has none, every run counts for all of them (a calm run
/// of one against disturbed runs of another would compare the machine's load, not the
/// servers).
fn counted<'a>(runs: &'a [Run], servers: &[&str]) -> Vec<&'a Run> {
    let calm = |server: &str, w: Workload, n: usize| {
        runs.iter()
            .any(|r| r.server == server && r.workload == w && r.n == n && r.ok && !disturbed(r))
    };
    runs.iter()
        .filter(|r| {
            !disturbed(r)
                || !servers
                    .iter()
                    .filter(|s| {
                        runs.iter()
                            .any(|q| q.server == **s && q.workload == r.workload)
                    })
                    .all(|s| calm(s, r.workload, r.n))
        })
        .collect()
}

/// loopchat alone next to loopchat as a cluster, one node and two behind nats-server: fan-out
/// at N=1000 (else the largest N the cluster was measured at), the CPU summed over the nodes
/// and the bus and the bus's share of it, and idle memory at the largest idle N.
fn cluster_compared(cfg: &Cfg, runs: &[Run]) -> String {
    let clusters: Vec<(&str, usize)> = CLUSTERS
        .into_iter()
        .filter(|(name, _)| runs.iter().any(|r| r.server == *name))
        .collect();
    if clusters.is_empty() {
        return String::new();
    }
    let names = &clusters;
    let of_clusters = |w: Workload| {
        runs.iter()
            .filter(move |r| r.workload == w && names.iter().any(|(c, _)| r.server == *c))
    };
    let n = of_clusters(Workload::Throughput)
        .any(|r| r.n == TARGET_N)
        .then_some(TARGET_N)
        .or(of_clusters(Workload::Throughput).map(|r| r.n).max());
    let idle_n = of_clusters(Workload::Idle).map(|r| r.n).max();
    let compared: Vec<&str> = std::iter::once("loopchat")
        .chain(clusters.iter().map(|(name, _)| *name))
        .collect();
    let counted = counted(runs, &compared);
    let get = |server: &str, w: Workload, n: Option<usize>, key: &str| {
        n.and_then(|n| median(counted.iter().copied(), server, w, Some(n), key, false))
    };
    let cells = |server: &str| {
        [
            get(server, Workload::Throughput, n, "deliveries_per_s"),
            get(server, Workload::Throughput, n, "p99_us"),
            get(server, Workload::Throughput, n, "server_ns_per_op"),
            get(server, Workload::Idle, idle_n, "rss_per_conn_b"),
        ]
    };
    // Every run of the point, not a median: one message lost is one too many.
    let bad = |server: &str| {
        let of: Vec<&Run> = runs
            .iter()
            .filter(|r| r.server == server && r.workload == Workload::Throughput)
            .filter(|r| Some(r.n) == n)
            .collect();
        let sum = |k: &str| of.iter().filter_map(|r| r.get(k)).sum::<f64>();
        let failed = of.iter().filter(|r| !r.ok).count();
        let mut cell = format!(
            "{}/{}/{}",
            fmt_num(Some(sum("lost"))),
            fmt_num(Some(sum("dup"))),
            fmt_num(Some(sum("reordered")))
        );
        if failed > 0 {
            let _ = write!(cell, " ({failed} of {} runs failed)", of.len());
        }
        cell
    };
    let alone = cells("loopchat");
    let at = |n: Option<usize>| n.map_or("–".into(), |n| n.to_string());
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let cores = if cfg.pin {
        format!(
            "The nodes and their nats-server share core 0, as one server would have it, and the \
             generator has core 1 (this machine has {cpus} CPU{}): two nodes here cannot add a \
             core, so what they show is the cost of the bus and of a second node, not the \
             capacity a second core would add.",
            if cpus == 1 { "" } else { "s" }
        )
    } else {
        "Nothing was pinned in this run: the nodes, nats-server and the generator shared the \
         machine's CPUs as the kernel chose."
            .to_string()
    };
    let mut s = format!(
        "### One node vs two nodes behind nats-server\n\n\
         loopchat alone (`loopchat`) and as a cluster (`--nats`): one node, then two, behind a \
         nats-server of their own (no JetStream), the generator's clients spread round-robin over \
         the nodes, senders too, so that a line said on one node reaches the other's members \
         through the bus (one copy per node). The server's CPU per delivery is the nodes' and \
         nats-server's summed, and nats-server's own is shown beside it; idle memory is summed \
         the same way. {cores} Medians (of the runs not disturbed, where every server has some at \
         that point), and in brackets the ratio to `loopchat` alone; lost/dup/reordered are summed over every run.\n\n\
         | server | deliveries/s (N={}) | p99 µs | server ns/delivery, summed | of which nats-server | lost/dup/reord | idle RSS per connection, bytes (N={}) |\n\
         |---|--:|--:|--:|--:|--:|--:|\n\
         | alone, no bus (`loopchat`) | {} | {} | {} | – | {} | {} |\n",
        at(n),
        at(idle_n),
        fmt_num(alone[0]),
        fmt_num(alone[1]),
        fmt_num(alone[2]),
        bad("loopchat"),
        fmt_num(alone[3]),
    );
    let mut bound = Vec::new();
    for &(name, nodes) in &clusters {
        let row: Vec<String> = cells(name)
            .iter()
            .zip(alone)
            .map(|(&v, a)| match (v, a) {
                (Some(v), Some(a)) if a > 0.0 => format!("{} ({:.2}×)", fmt_num(Some(v)), v / a),
                _ => fmt_num(v),
            })
            .collect();
        let bus = match (
            get(name, Workload::Throughput, n, "bus_ns_per_op"),
            get(name, Workload::Throughput, n, "bus_share_pct"),
        ) {
            (Some(ns), Some(pct)) => format!("{} ({pct:.0} %)", fmt_num(Some(ns))),
            (ns, _) => fmt_num(ns),
        };
        let what = match nodes {
            1 => "one node + nats-server".to_string(),
            2 => "two nodes + nats-server".to_string(),
            n => format!("{n} nodes + nats-server"),
        };
        let _ = writeln!(
            s,
            "| {what} (`{name}`) | {} | {} | {} | {bus} | {} | {} |",
            row[0],
            row[1],
            row[2],
            bad(name),
            row[3]
        );
        if get(name, Workload::Throughput, n, "gen_cpu_pct").is_some_and(|g| g >= 90.0) {
            bound.push(format!("`{name}`"));
        }
    }
    generator_bound(&mut s, &bound);
    s.push('\n');
    s
}

/// Median of `key` over a server's runs of one point (only the runs that worked, unless
/// `failed_too`).
fn median<'a>(
    runs: impl IntoIterator<Item = &'a Run>,
    server: &str,
    w: Workload,
    n: Option<usize>,
    key: &str,
    failed_too: bool,
) -> Option<f64> {
    let mut v: Vec<f64> = runs
        .into_iter()
        .filter(|r| r.server == server && r.workload == w && n.is_none_or(|n| r.n == n))
        .filter(|r| r.ok || failed_too)
        .filter_map(|r| r.get(key))
        .collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn plot(runs: &[Run], w: Workload, key: &str, title: &str, y_label: &str, log_y: bool) -> String {
    let mut names: Vec<&str> = Vec::new();
    let mut ns: Vec<usize> = Vec::new();
    for r in runs.iter().filter(|r| r.workload == w) {
        if !names.contains(&r.server.as_str()) {
            names.push(&r.server);
        }
        if !ns.contains(&r.n) {
            ns.push(r.n);
        }
    }
    let series = names
        .iter()
        .map(|name| {
            let pts = ns
                .iter()
                .filter_map(|&n| Some((n as f64, median(runs, name, w, Some(n), key, false)?)))
                .collect();
            (name.to_string(), pts)
        })
        .collect();
    Plot {
        title,
        x_label: "clients (N)",
        y_label,
        log_x: true,
        log_y,
        series,
    }
    .render()
}

fn run_json(r: &Run) -> Json {
    let mut f = vec![
        ("server".to_string(), Json::Str(r.server.clone())),
        ("workload".to_string(), Json::Str(r.workload.name().into())),
        ("n".to_string(), Json::Num(r.n as f64)),
    ];
    f.extend(
        r.fields
            .iter()
            .filter(|(k, _)| !["workload", "n"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), Json::guess(v))),
    );
    if !r.fields.iter().any(|(k, _)| k == "ok") {
        f.push(("ok".into(), Json::Bool(false)));
    }
    Json::Obj(f)
}

fn main() {
    let mut cfg = parse_cfg();
    let started = Instant::now();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let load_before = loadavg();
    let date = sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mut points: Vec<(Workload, usize)> = Vec::new();
    for &n in &cfg.ns {
        let reps = if n == TARGET_N { cfg.reps } else { 1 };
        points.extend(std::iter::repeat_n((Workload::Throughput, n), reps));
    }
    points.extend(cfg.idle_ns.iter().map(|&n| (Workload::Idle, n)));
    points.extend(std::iter::repeat_n(
        (Workload::Churn, cfg.concurrency),
        cfg.reps,
    ));
    points.push((Workload::Flood, cfg.flood.readers));
    let mut servers = std::mem::take(&mut cfg.servers);
    let mut runs = Vec::new();
    // Servers inner: each point compares servers measured close together in time.
    for &(w, n) in &points {
        for s in servers.iter_mut() {
            // The flood attacks loopchat's own flow control; the baselines have none. WebSocket
            // and TLS clients, and loopchat as a cluster, are measured where they differ from
            // plain line clients of one loopchat: fan-out and idle memory.
            if (w == Workload::Flood && s.flavor != Flavor::Loopchat)
                || ((s.clients != Clients::Plain || s.nodes > 0)
                    && !matches!(w, Workload::Throughput | Workload::Idle))
            {
                continue;
            }
            let t = Instant::now();
            let r = run_one(&cfg, s, w, n);
            eprintln!(
                "bench: {:<15} {:<10} n={:<6} {:>6.1}s  {}",
                r.server,
                w.name(),
                n,
                t.elapsed().as_secs_f64(),
                r.fields
                    .iter()
                    .filter(|(k, _)| k != "workload")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            runs.push(r);
        }
    }
    cfg.servers = servers;
    // No server needs the certificate any more.
    cfg.cert = None;
    let load_after = loadavg();
    let elapsed = started.elapsed().as_secs_f64();
    let machine = machine();
    let server_args = |s: &Server| {
        // The certificate's files are made for the run in a temporary directory: named by
        // what they are, not where they were.
        let mut shown = s.args.clone();
        for i in 1..shown.len() {
            match shown[i - 1].as_str() {
                "--tls-cert" => shown[i] = "CERT.pem".into(),
                "--tls-key" => shown[i] = "KEY.pem".into(),
                _ => {}
            }
        }
        format!(
            "{} {}",
            s.program
                .file_name()
                .map_or("?".into(), |n| n.to_string_lossy()),
            shown.join(" ")
        )
    };
    let config = vec![
        ("quick", Json::Bool(cfg.quick)),
        ("pinned", Json::Bool(cfg.pin)),
        ("senders", Json::Num(cfg.senders as f64)),
        ("window", Json::Num(cfg.window as f64)),
        ("size", Json::Num(cfg.size as f64)),
        ("warmup_s", Json::Num(cfg.warmup)),
        ("duration_s", Json::Num(cfg.duration)),
        ("churn_concurrency", Json::Num(cfg.concurrency as f64)),
        (
            "flood",
            Json::Obj(
                [
                    ("readers", cfg.flood.readers as f64),
                    ("senders", cfg.flood.senders as f64),
                    ("window", cfg.flood.window as f64),
                    ("duration_s", cfg.flood.secs),
                    ("connections_per_s", cfg.flood.rate),
                    ("threads", cfg.flood.threads as f64),
                    ("never_readers", cfg.flood.never as f64),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), Json::Num(v)))
                .collect(),
            ),
        ),
        (
            "servers",
            Json::Arr(
                cfg.servers
                    .iter()
                    .map(|s| Json::Str(server_args(s)))
                    .collect(),
            ),
        ),
    ];
    let json = Json::Obj(vec![
        ("date".into(), Json::Str(date.clone())),
        ("command".into(), Json::Str(command_line.clone())),
        ("elapsed_s".into(), Json::Num(elapsed.round())),
        ("loadavg_before".into(), Json::Str(load_before.clone())),
        ("loadavg_after".into(), Json::Str(load_after.clone())),
        (
            "machine".into(),
            Json::Obj(
                machine
                    .iter()
                    .map(|(k, v)| (k.clone(), Json::Str(v.clone())))
                    .collect(),
            ),
        ),
        (
            "config".into(),
            Json::Obj(
                config
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
        ),
        (
            "runs".into(),
            Json::Arr(runs.iter().map(run_json).collect()),
        ),
    ]);
    let tables = tables(&cfg, &runs);
    let mut verdicts = verdicts(&runs);
    let compared = clients_compared(&runs) + &cluster_compared(&cfg, &runs);
    let measured = runs
        .iter()
        .filter(|r| r.get("gen_wait_pct").is_some())
        .count();
    let noisy = runs.iter().filter(|r| disturbed(r)).count();
    if noisy > 0 {
        let _ = writeln!(
            verdicts,
            "\n{noisy} of {measured} timed runs were disturbed by other load on the machine (the generator \
             waited for its core more than {DISTURBED_WAIT_PCT} % of the time; status \"ok, disturbed\"): \
             their throughput and latency understate what the servers can do."
        );
    }
    let mut readme = format!(
        "# loopchat benchmark results\n\nGenerated by `bench` (bench/src/bin/bench.rs) on {date} in {elapsed:.0} s.\n\n\
         Command: `{command_line}`; `make bench` builds the workspace in release mode and runs it \
         (`bench --quick` is the CI smoke test and writes elsewhere).\n\n\
         Machine: {}.\n\nLoad average before/after: {load_before} / {load_after} (the machine is shared: \
         \"CPU wait %\" is the time the server's threads (summed) and the generator were runnable but waiting for their core).\n\n\
         Every server is pinned to core 0 and the generator (`loadgen`, one mio thread) to core 1 with taskset{}{}; \
         loopback only; a fresh server per run. The N={TARGET_N} throughput point and churn run {} times each, \
         interleaved across servers; plots and verdicts use medians. Servers:\n\n",
        machine
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        if cfg.pin {
            ""
        } else {
            " (NOT pinned in this run)"
        },
        if cfg.servers.iter().any(|s| s.nodes > 0) {
            ", a cluster's nodes and its nats-server all on core 0 together"
        } else {
            ""
        },
        cfg.reps
    );
    for s in &cfg.servers {
        let clients = match s.clients {
            Clients::Plain if s.nodes > 0 => &format!(
                " as `{}`: {} behind a nats-server of its own (`{}`, no JetStream, so names \
                 are qualified by their node: `guest7@a`), started for each run, every node \
                 with `--nats nats://127.0.0.1:PORT --node {}`; the generator's clients \
                 spread round-robin over the nodes, senders too; the server's CPU and memory \
                 are the nodes' and nats-server's summed",
                s.name,
                match s.nodes {
                    1 => "one node".to_string(),
                    2 => "two nodes".to_string(),
                    n => format!("{n} nodes"),
                },
                NATS_FLAGS.join(" "),
                NODE_NAMES[..s.nodes.min(NODE_NAMES.len())].join("|"),
            ),
            Clients::Plain => "",
            Clients::Ws => " as `loopchat-ws`: its clients are WebSocket clients (`loadgen --ws`)",
            Clients::Tls => {
                " as `loopchat-tls`: its clients are line clients through TLS (`loadgen --tls`), \
                 each with a full handshake, rustls (ring) on both sides, and a \
                 self-signed certificate (ECDSA P-256) made for the run"
            }
        };
        let _ = writeln!(readme, "- `{}`{clients}", server_args(s));
    }
    let _ = write!(
        readme,
        "\nPlots: [throughput](throughput.svg), [p99 latency](p99.svg), [server CPU per delivery](cpu_per_delivery.svg), [idle RSS per connection](idle_rss.svg). \
         Raw figures: [results.json](results.json).\n\n{verdicts}\n{compared}{tables}"
    );
    println!("\n{verdicts}\n{compared}{tables}");
    let files = [
        ("results.json", format!("{json}\n")),
        (
            "throughput.svg",
            plot(
                &runs,
                Workload::Throughput,
                "deliveries_per_s",
                "Deliveries per second",
                "deliveries/s",
                true,
            ),
        ),
        (
            "cpu_per_delivery.svg",
            plot(
                &runs,
                Workload::Throughput,
                "server_ns_per_op",
                "Server CPU per delivery",
                "ns",
                true,
            ),
        ),
        (
            "p99.svg",
            plot(
                &runs,
                Workload::Throughput,
                "p99_us",
                "p99 delivery latency",
                "µs",
                true,
            ),
        ),
        (
            "idle_rss.svg",
            plot(
                &runs,
                Workload::Idle,
                "rss_per_conn_b",
                "Server RSS per idle connection",
                "bytes",
                true,
            ),
        ),
        ("README.md", readme),
    ];
    let written = std::fs::create_dir_all(&cfg.out).and_then(|_| {
        files
            .iter()
            .try_for_each(|(name, body)| std::fs::write(cfg.out.join(name), body))
    });
    if let Err(e) = written {
        eprintln!("bench: cannot write {}: {e}", cfg.out.display());
        exit(1);
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} {} n={}", r.server, r.workload.name(), r.n))
        .collect();
    eprintln!(
        "bench: wrote {} in {elapsed:.0} s; {} of {} runs failed {:?}",
        cfg.out.display(),
        failed.len(),
        runs.len(),
        failed
    );
    if !failed.is_empty() {
        exit(1);
    }
}

/// Says which servers' fan-out ran with the generator near its limit, if any.
fn generator_bound(s: &mut String, bound: &[String]) {
    if !bound.is_empty() {
        let _ = writeln!(
            s,
            "\nThe generator's CPU was at 90 % or more in the fan-out of {}: its deliveries/s may \
             be a lower bound; server CPU per delivery still compares.",
            bound.join(" and ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::BusOp;

    #[test]
    fn the_bus_watch_reads_whole_operations() {
        let ops = b"INFO {\"a\":1}\r\nMSG loopchat.presence.a 1 5\r\nhe\r\nl\r\nPING\r\nMSG loopchat.presence.b 1 _INBOX.x 0\r\n\r\n";
        let mut buf = ops.to_vec();
        let mut seen = Vec::new();
        while let Some((op, used)) = BusOp::parse(&buf).unwrap() {
            buf.drain(..used);
            seen.push(op);
        }
        assert!(buf.is_empty());
        assert_eq!(
            seen,
            [
                BusOp::Other,
                BusOp::Msg("loopchat.presence.a".into()),
                BusOp::Ping,
                BusOp::Msg("loopchat.presence.b".into()),
            ]
        );
        // A payload not all there yet waits.
        assert_eq!(BusOp::parse(b"MSG s 1 10\r\n12345").unwrap(), None);
        assert_eq!(BusOp::parse(b"PON").unwrap(), None);
        assert!(BusOp::parse(b"-ERR 'Authorization Violation'\r\n").is_err());
    }
}
