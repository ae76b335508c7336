//! The room flood: an attack on flow control, as one workload for the benchmark and the tests.
//!
//! Readers that read everything join first (the first S of them also send sequence-checked
//! messages, at most W each in flight). Then, for the run's duration, alongside them:
//! - a flood of short-lived connections, from a few threads: each sends a burst of lines of
//!   random bytes (control bytes, invalid UTF-8, lines over the cap) in one write, half-closes,
//!   and reads until the server, having taken its lines, closes it;
//! - clients that never read, with a small receive window;
//! - clients that send 1 MiB lines, each without a newline until its end;
//! - clients that write half a line and reset the connection (SO_LINGER 0);
//! - slowloris clients: one byte every few hundred ms, never a newline;
//! - connect/disconnect churn: connect, read the welcome, close;
//! - a prober that times `/who` from a new client.
//!
//! The readers are the generator's mio loop on the calling thread; the attackers are plain
//! threads with blocking connects, as an attacker's scripts would be. Every attacker but the
//! never-readers reads what it is sent, so a server that drops anyone else as too slow is wrong.
//! Every loop is bounded in count and time, and the run stops by itself.

use crate::generator::{self, Ev, Gen, Report};
use crate::procfs;
use crate::stats::Histogram;
use crate::traffic::Traffic;
use crate::wire::{Proto, each_line};
use socket2::{Domain, SockRef, Socket, Type};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// The limits a server must keep under this attack.
pub const MAX_HWM_KIB: u64 = 64 * 1024;
pub const MAX_WHO: Duration = Duration::from_secs(1);

/// Blocking connects of attackers and prober; longer than one SYN retransmit (1 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a probe waits for its welcome and `/who` answer before it counts as failed.
const WHO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a flood connection may wait for the server to take its lines and close it: at
/// the default `--rate` (10 lines a second, bursts of 20) 50 lines take 3 s.
const FLOOD_HOLD: Duration = Duration::from_secs(5);
/// How long one 1 MiB line may take to be refused.
const HUGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Resetters and churners each do one cycle per this.
const CYCLE_EVERY: Duration = Duration::from_millis(100);
/// One slowloris byte per client per this: past `--flush-partial`, under `--rate`.
const SLOWLORIS_EVERY: Duration = Duration::from_millis(300);
/// How often an attacker's thread looks at the socket it is waiting on.
const POLL: Duration = Duration::from_millis(1);
/// How often the threads that hold many connections read them all: often enough to keep up,
/// rarely enough to leave the CPU to the readers.
const READ_EVERY: Duration = Duration::from_millis(10);
/// After the attack, how long a never-reader may read before the end of its stream shows
/// that the server dropped it.
const CHECK_DROPPED: Duration = Duration::from_secs(3);
/// A never-reader's receive buffer and MSS. The MSS matters: on loopback (MSS 65483) the
/// kernel grows the server's send buffer to its 4 MiB maximum at once, so a never-reader would
/// pin megabytes in the kernel before the server's own queue even starts to fill; with an
/// Internet-sized MSS it stays near 64 KiB, as on a real network.
const SMALL_RCVBUF: usize = 4096;
const SMALL_MSS: u32 = 536;

/// What to run against which server. [`FloodConfig::new`] is the full size.
#[derive(Clone, Debug)]
pub struct FloodConfig {
    /// The server. The readers connect from 127.0.0.2-254 (see [`Gen`]), the attackers from
    /// the default source address, as a local script's would.
    pub addr: SocketAddr,
    /// Where to read the server's peak RSS and CPU time (/proc/PID).
    pub server_pid: Option<u32>,
    /// Clients that read everything; the first `senders` of them also send.
    pub readers: usize,
    pub senders: usize,
    /// Messages each sender keeps in flight.
    pub window: usize,
    /// Bytes of each sender's message (at least [`crate::wire::MIN_SIZE`]).
    pub size: usize,
    /// How long the attack lasts.
    pub duration: Duration,
    /// Flood connections opened per second in all, by how many threads.
    pub flood_rate: f64,
    pub flood_threads: usize,
    /// Lines each flood connection sends, each of 1 to `flood_max_len` random bytes.
    pub flood_lines: usize,
    pub flood_max_len: usize,
    pub never_readers: usize,
    /// Clients sending `huge_size`-byte lines, one after the other.
    pub huge: usize,
    pub huge_size: usize,
    /// Clients that write half a line and reset, once per 100 ms each.
    pub resets: usize,
    pub slowloris: usize,
    /// Clients that connect, read the welcome and close, once per 100 ms each.
    pub churners: usize,
    /// A new client asks `/who` this often.
    pub who_every: Duration,
    /// Seeds the flood's random lines.
    pub seed: u64,
}

impl FloodConfig {
    /// The full attack: 500 readers (10 sending, 16 in flight) and for 15 s 250 flood
    /// connections a second from 3 threads, each 50 lines of 1 to 300 random bytes, with 50
    /// never-readers, 1 MiB lines, resets mid-line, slowloris and churn.
    pub fn new(addr: SocketAddr, server_pid: Option<u32>) -> FloodConfig {
        FloodConfig {
            addr,
            server_pid,
            readers: 500,
            senders: 10,
            window: 16,
            size: 64,
            duration: Duration::from_secs(15),
            flood_rate: 250.0,
            flood_threads: 3,
            flood_lines: 50,
            flood_max_len: 300,
            never_readers: 50,
            huge: 4,
            huge_size: 1 << 20,
            resets: 4,
            slowloris: 20,
            churners: 4,
            who_every: Duration::from_millis(500),
            seed: 1,
        }
    }
}

/// What a run saw. Counts of messages are over the readers; "dropped" means the connection
/// ended while the run went on, which the client cannot tell from a reason.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    /// The run could not be carried out (e.g. the readers could not join).
    pub error: Option<String>,
    pub readers: usize,
    pub senders: usize,
    pub never_readers: usize,
    pub join_s: f64,
    pub readers_dropped: usize,
    /// When the first reader was dropped, in seconds after the attack began.
    pub first_drop_s: Option<f64>,
    pub deliveries: u64,
    pub lost: u64,
    pub dup: u64,
    pub reordered: u64,
    /// Sent but never received by a reader still connected when the run ended.
    pub undelivered: u64,
    /// Messages a reader should never get: its own, or ones never sent.
    pub bogus: u64,
    /// `[SERVER] Error:` lines the readers got (they send nothing wrong).
    pub server_errors: u64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub never_readers_dropped: usize,
    pub flood_connections: u64,
    /// Flood connections that could not connect or write their lines.
    pub flood_failed: u64,
    pub flood_lines: u64,
    /// Flood connections the server had not closed after [`FLOOD_HOLD`].
    pub flood_unfinished: u64,
    /// Huge lines answered with the too-long error.
    pub huge_refused: u64,
    pub resets: u64,
    pub slowloris_bytes: u64,
    pub churn_cycles: u64,
    /// Connects of the other attackers that failed.
    pub connect_failed: u64,
    /// Huge-line, slowloris and churn clients whose connection the server ended.
    pub attackers_dropped: u64,
    pub who_probes: u64,
    pub who_failed: u64,
    /// From a probe's connect to its `[SERVER] N online:` line.
    pub who_p99_ms: f64,
    pub who_max_ms: f64,
    pub server_hwm_kib: Option<u64>,
    pub server_cpu_s: Option<f64>,
    /// CPU this process (readers and attackers) used: near 100 % per core it may have been
    /// what fell behind.
    pub gen_cpu_s: f64,
    /// From the attack's start until the readers had drained and every attacker had stopped.
    pub duration_s: f64,
    pub first_error: Option<String>,
}

impl FloodReport {
    /// The criteria this run missed, one short phrase each; empty when it passed.
    pub fn failures(&self) -> Vec<String> {
        if let Some(e) = &self.error {
            return vec![format!("error: {e}")];
        }
        let mut f = Vec::new();
        if self.readers_dropped > 0 {
            f.push(format!(
                "{} of {} readers dropped",
                self.readers_dropped, self.readers
            ));
        }
        for (what, n) in [
            ("lost", self.lost),
            ("duplicated", self.dup),
            ("reordered", self.reordered),
            ("undelivered", self.undelivered),
            ("bogus", self.bogus),
        ] {
            if n > 0 {
                f.push(format!("{n} {what}"));
            }
        }
        if self.deliveries == 0 {
            f.push("nothing delivered".into());
        }
        if self.never_readers_dropped < self.never_readers {
            f.push(format!(
                "{} of {} never-readers not dropped",
                self.never_readers - self.never_readers_dropped,
                self.never_readers
            ));
        }
        if self.attackers_dropped > 0 {
            f.push(format!(
                "{} attackers that read dropped",
                self.attackers_dropped
            ));
        }
        if let Some(kib) = self.server_hwm_kib.filter(|&k| k >= MAX_HWM_KIB) {
            f.push(format!(
                "peak RSS {} MiB >= {} MiB",
                kib / 1024,
                MAX_HWM_KIB / 1024
            ));
        }
        if self.who_failed > 0 {
            f.push(format!("{} /who probes unanswered", self.who_failed));
        }
        if self.who_max_ms >= MAX_WHO.as_secs_f64() * 1e3 {
            f.push(format!("/who took {:.0} ms", self.who_max_ms));
        }
        if self.who_probes == 0 {
            f.push("no /who probe".into());
        }
        f
    }

    /// The generator's `RESULT` pairs: `ok`, `workload`, the figures, and `failed` (the
    /// failures joined by `;`) when there are any.
    pub fn to_report(&self) -> Report {
        let failures = self.failures();
        let opt = |v: Option<f64>| v.map_or("none".into(), |v| format!("{v:.3}"));
        let mut r = Report::default();
        r.put("ok", failures.is_empty())
            .put("workload", "flood")
            .put("n", self.readers)
            .put("senders", self.senders)
            .put("join_s", format!("{:.3}", self.join_s))
            .put("readers_dropped", self.readers_dropped)
            .put("first_drop_s", opt(self.first_drop_s))
            .put("deliveries", self.deliveries)
            .put("lost", self.lost)
            .put("dup", self.dup)
            .put("reordered", self.reordered)
            .put("undelivered", self.undelivered)
            .put("bogus", self.bogus)
            .put("server_errors", self.server_errors)
            .put("p99_ms", format!("{:.1}", self.latency_p99_ms))
            .put("max_ms", format!("{:.1}", self.latency_max_ms))
            .put("never_readers", self.never_readers)
            .put("never_readers_dropped", self.never_readers_dropped)
            .put("flood_connections", self.flood_connections)
            .put("flood_failed", self.flood_failed)
            .put("flood_lines", self.flood_lines)
            .put("flood_unfinished", self.flood_unfinished)
            .put("huge_refused", self.huge_refused)
            .put("resets", self.resets)
            .put("slowloris_bytes", self.slowloris_bytes)
            .put("churn_cycles", self.churn_cycles)
            .put("connect_failed", self.connect_failed)
            .put("attackers_dropped", self.attackers_dropped)
            .put("who_probes", self.who_probes)
            .put("who_failed", self.who_failed)
            .put("who_p99_ms", format!("{:.1}", self.who_p99_ms))
            .put("who_max_ms", format!("{:.1}", self.who_max_ms))
            .put("duration_s", format!("{:.3}", self.duration_s));
        if let Some(kib) = self.server_hwm_kib {
            r.put("server_hwm_kib", kib);
        }
        if let Some(cpu) = self.server_cpu_s {
            r.put("server_cpu_s", format!("{cpu:.3}")).put(
                "server_cpu_pct",
                format!("{:.1}", 100.0 * cpu / self.duration_s),
            );
        }
        r.put(
            "gen_cpu_pct",
            format!("{:.1}", 100.0 * self.gen_cpu_s / self.duration_s),
        );
        if let Some(e) = &self.first_error {
            r.put("first_error", e);
        }
        if let Some(e) = &self.error {
            r.put("error", e);
        }
        if !failures.is_empty() {
            r.put("failed", failures.join(";"));
        }
        r
    }
}

/// Runs the flood against `cfg.addr`; bounded in time (joining, the attack, at most
/// [`generator::DRAIN`] of draining, a few seconds of checks).
pub fn run(cfg: &FloodConfig) -> FloodReport {
    let mut rep = FloodReport {
        readers: cfg.readers,
        senders: cfg.senders,
        never_readers: cfg.never_readers,
        ..FloodReport::default()
    };
    procfs::raise_nofile();
    if let Err(e) = run_into(cfg, &mut rep) {
        rep.error = Some(e);
    }
    rep
}

fn run_into(cfg: &FloodConfig, rep: &mut FloodReport) -> Result<(), String> {
    if cfg.readers < 2 || cfg.senders == 0 || cfg.senders > cfg.readers {
        return Err("need at least 2 readers and 1 to readers senders".into());
    }
    let mut g = Gen::new(cfg.addr, Proto::Line).map_err(|e| format!("poll: {e}"))?;
    let mut evs = Vec::new();
    let timeout = Duration::from_secs_f64(30.0 + cfg.readers as f64 / 500.0);
    rep.join_s = generator::join(&mut g, cfg.readers, timeout, &mut evs)?.as_secs_f64();
    let cpu_before = cfg.server_pid.and_then(|p| procfs::cpu_seconds(p).ok());
    let gen_cpu_before = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let start = Instant::now();
    let end = start + cfg.duration;
    let mut t = Traffic::new(cfg.readers, cfg.senders, cfg.window.max(1), cfg.size);
    let (tally, first_drop) = thread::scope(|scope| -> Result<_, String> {
        let mut attackers = Vec::new();
        for i in 0..cfg.flood_threads {
            attackers.push(scope.spawn(move || flooder(cfg, i, start, end)));
        }
        for _ in 0..cfg.huge {
            attackers.push(scope.spawn(move || huge(cfg, end)));
        }
        attackers.push(scope.spawn(move || never_readers(cfg, end)));
        attackers.push(scope.spawn(move || resets(cfg, end)));
        attackers.push(scope.spawn(move || slowloris(cfg, end)));
        attackers.push(scope.spawn(move || churn(cfg, end)));
        attackers.push(scope.spawn(move || prober(cfg, end)));
        let attacking = || attackers.iter().any(|a| !a.is_finished());
        let readers = read_through(&mut g, &mut t, &mut evs, start, end, attacking);
        let mut tally = Tally::default();
        for a in attackers {
            tally.add(
                a.join()
                    .map_err(|_| "an attacker thread panicked".to_string())?,
            );
        }
        Ok((tally, readers?))
    })?;
    rep.duration_s = start.elapsed().as_secs_f64();
    rep.gen_cpu_s = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0) - gen_cpu_before;
    if let Some(pid) = cfg.server_pid {
        rep.server_hwm_kib = procfs::mem(pid).ok().map(|m| m.hwm_kib);
        rep.server_cpu_s = cpu_before
            .zip(procfs::cpu_seconds(pid).ok())
            .map(|(a, b)| b - a);
    }
    rep.readers_dropped = t.gone();
    rep.first_drop_s = first_drop.map(|d| d.as_secs_f64());
    rep.deliveries = t.deliveries;
    rep.lost = t.lost() as u64;
    rep.dup = t.dup;
    rep.reordered = t.reordered;
    rep.undelivered = t.undelivered();
    rep.bogus = t.bogus + t.echoed;
    rep.server_errors = g.server_errors;
    rep.first_error = g.first_error.clone();
    let ms = |h: &Histogram, q: f64| h.quantile(q) as f64 / 1e6;
    rep.latency_p99_ms = ms(&t.hist, 0.99);
    rep.latency_max_ms = t.hist.max() as f64 / 1e6;
    rep.never_readers_dropped = tally.never_readers_dropped;
    rep.flood_connections = tally.flood_connections;
    rep.flood_failed = tally.flood_failed;
    rep.flood_lines = tally.flood_lines;
    rep.flood_unfinished = tally.flood_unfinished;
    rep.huge_refused = tally.huge_refused;
    rep.resets = tally.resets;
    rep.slowloris_bytes = tally.slowloris_bytes;
    rep.churn_cycles = tally.churn_cycles;
    rep.connect_failed = tally.connect_failed;
    rep.attackers_dropped = tally.attackers_dropped;
    rep.who_probes = tally.who.count() + tally.who_failed;
    rep.who_failed = tally.who_failed;
    rep.who_p99_ms = ms(&tally.who, 0.99);
    rep.who_max_ms = tally.who.max() as f64 / 1e6;
    Ok(())
}

/// The readers' loop: senders keep their windows full until `end`, then the messages in
/// flight drain (bounded), and the readers read on while the attackers are still `attacking`
/// (their last lines still reach the room). Returns when the first reader was dropped, if one
/// was.
fn read_through(
    g: &mut Gen,
    t: &mut Traffic,
    evs: &mut Vec<(usize, Ev)>,
    start: Instant,
    end: Instant,
    attacking: impl Fn() -> bool,
) -> Result<Option<Duration>, String> {
    let mut first_drop = None;
    loop {
        let now = Instant::now();
        if now < end {
            t.send(g);
        } else if (t.drained() || now >= end + generator::DRAIN) && !attacking() {
            return Ok(first_drop);
        }
        for r in t.turn(g, evs, true)? {
            first_drop.get_or_insert(start.elapsed());
            t.receiver_gone(r, true);
        }
    }
}

/// What the attackers' threads did, summed.
#[derive(Default)]
struct Tally {
    never_readers_dropped: usize,
    flood_connections: u64,
    flood_failed: u64,
    flood_lines: u64,
    flood_unfinished: u64,
    huge_refused: u64,
    resets: u64,
    slowloris_bytes: u64,
    churn_cycles: u64,
    connect_failed: u64,
    attackers_dropped: u64,
    /// Answered probes' times in ns.
    who: Histogram,
    who_failed: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.never_readers_dropped += o.never_readers_dropped;
        self.flood_connections += o.flood_connections;
        self.flood_failed += o.flood_failed;
        self.flood_lines += o.flood_lines;
        self.flood_unfinished += o.flood_unfinished;
        self.huge_refused += o.huge_refused;
        self.resets += o.resets;
        self.slowloris_bytes += o.slowloris_bytes;
        self.churn_cycles += o.churn_cycles;
        self.connect_failed += o.connect_failed;
        self.attackers_dropped += o.attackers_dropped;
        self.who.merge(&o.who);
        self.who_failed += o.who_failed;
    }
}

/// An attacker's or the prober's connection: a blocking connect, then non-blocking reads and
/// writes polled by its thread.
struct Peer {
    stream: TcpStream,
    partial: Vec<u8>,
}

impl Peer {
    /// With `small`, the never-readers' receive buffer and MSS are set before connecting.
    fn open(addr: SocketAddr, small: bool) -> io::Result<Peer> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if small {
            sock.set_recv_buffer_size(SMALL_RCVBUF)?;
            sock.set_tcp_mss(SMALL_MSS)?;
        }
        sock.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
        sock.set_nonblocking(true)?;
        Ok(Peer {
            stream: sock.into(),
            partial: Vec::new(),
        })
    }

    /// Reads all there is, handing each chunk to `got`; an error once the server ended the
    /// stream.
    fn pull(&mut self, mut got: impl FnMut(&mut Vec<u8>, &[u8])) -> io::Result<()> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => got(&mut self.partial, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and throws away all there is.
    fn discard(&mut self) -> io::Result<()> {
        self.pull(|_, _| {})
    }

    /// Reads all there is, calling `line` for each complete line.
    fn lines(&mut self, mut line: impl FnMut(&[u8])) -> io::Result<()> {
        self.pull(|partial, bytes| {
            partial.extend_from_slice(bytes);
            let used = each_line(partial, &mut line);
            partial.drain(..used);
        })
    }

    /// Writes what the socket takes of `out` now.
    fn write_some(&mut self, out: &mut &[u8]) -> io::Result<()> {
        while !out.is_empty() {
            match self.stream.write(out) {
                Ok(n) => *out = &out[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `out` without reading; false if `deadline` passed first.
    fn write_all(&mut self, mut out: &[u8], deadline: Instant) -> io::Result<bool> {
        loop {
            self.write_some(&mut out)?;
            if out.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            thread::sleep(POLL);
        }
    }

    /// Writes `out` while reading everything sent meanwhile, until `out` is written and a line
    /// `want` accepts has come. False if `deadline` passed first.
    fn exchange(
        &mut self,
        mut out: &[u8],
        want: &dyn Fn(&[u8]) -> bool,
        deadline: Instant,
    ) -> io::Result<bool> {
        let mut seen = false;
        loop {
            self.write_some(&mut out)?;
            self.lines(|l| seen |= want(l))?;
            if out.is_empty() && seen {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            thread::sleep(POLL);
        }
    }
}

fn any_line(_: &[u8]) -> bool {
    true
}

fn sleep_until(at: Instant) {
    thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// splitmix64: a fixed stream per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One flood connection's lines: 1 to `max_len` random bytes each, any byte but LF (which
/// would cut the line) and `@` (so that no line can pass for a measured message).
fn flood_batch(rng: &mut Rng, lines: usize, max_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines * (max_len / 2 + 2));
    for _ in 0..lines {
        let len = 1 + rng.next() as usize % max_len.max(1);
        out.extend((0..len).map(|_| match rng.next() as u8 {
            b'\n' => b' ',
            b'@' => b'#',
            b => b,
        }));
        out.push(b'\n');
    }
    out
}

/// Flood thread `index`: its share of the connections, evenly spaced and offset from the other
/// threads'. Each writes its lines at once and half-closes, then reads (and discards) what it
/// is sent until the server, having taken its last lines, closes it, or [`FLOOD_HOLD`] passes.
fn flooder(cfg: &FloodConfig, index: usize, start: Instant, end: Instant) -> Tally {
    let mut t = Tally::default();
    let threads = cfg.flood_threads as f64;
    let per_thread = cfg.flood_rate / threads;
    let mut rng = Rng(cfg.seed.wrapping_mul(1000).wrapping_add(index as u64));
    let mut held: Vec<(Instant, Peer)> = Vec::new();
    let next = |k: u64| {
        let at = (k as f64 + index as f64 / threads) / per_thread;
        Some(start + Duration::try_from_secs_f64(at).ok()?).filter(|&at| at < end)
    };
    let mut k = 0;
    let mut due = next(k);
    while due.is_some() || !held.is_empty() {
        held.retain_mut(|(until, p)| match p.discard() {
            Ok(()) if Instant::now() < *until => true,
            Ok(()) => {
                t.flood_unfinished += 1;
                false
            }
            Err(_) => false,
        });
        let Some(at) = due.filter(|&at| at <= Instant::now()) else {
            let until = due.unwrap_or(end).saturating_duration_since(Instant::now());
            thread::sleep(READ_EVERY.min(until));
            continue;
        };
        k += 1;
        due = next(k);
        let batch = flood_batch(&mut rng, cfg.flood_lines, cfg.flood_max_len);
        let sent = Peer::open(cfg.addr, false).and_then(|mut p| {
            t.flood_connections += 1;
            let done = p.write_all(&batch, at + CONNECT_TIMEOUT)?;
            p.stream.shutdown(Shutdown::Write)?;
            held.push((Instant::now() + FLOOD_HOLD, p));
            Ok(done)
        });
        match sent {
            Ok(true) => t.flood_lines += cfg.flood_lines as u64,
            Ok(false) | Err(_) => t.flood_failed += 1,
        }
    }
    t
}

/// Sends `huge_size`-byte lines one after the other, reading all the while, each until the
/// server refuses it; reconnects if the server ends the connection.
fn huge(cfg: &FloodConfig, end: Instant) -> Tally {
    let mut t = Tally::default();
    let mut line = vec![b'x'; cfg.huge_size];
    line.push(b'\n');
    let refused = |l: &[u8]| l.starts_with(b"[SERVER] Error: message too long");
    while Instant::now() < end {
        let Ok(mut p) = Peer::open(cfg.addr, false) else {
            t.connect_failed += 1;
            sleep_until(Instant::now() + CYCLE_EVERY);
            continue;
        };
        while Instant::now() < end {
            let deadline = end.min(Instant::now() + HUGE_TIMEOUT);
            match p.exchange(&line, &refused, deadline) {
                Ok(true) => t.huge_refused += 1,
                // Half a line may be out: start again on a new connection.
                Ok(false) => break,
                Err(_) => {
                    t.attackers_dropped += 1;
                    break;
                }
            }
        }
    }
    t
}

/// Connects the never-readers, holds them through the attack, then reads: a server that
/// dropped one has ended its stream.
fn never_readers(cfg: &FloodConfig, end: Instant) -> Tally {
    let mut t = Tally::default();
    let mut peers = Vec::new();
    for _ in 0..cfg.never_readers {
        match Peer::open(cfg.addr, true) {
            Ok(p) => peers.push(p),
            Err(_) => t.connect_failed += 1,
        }
    }
    sleep_until(end);
    let deadline = Instant::now() + CHECK_DROPPED;
    while !peers.is_empty() && Instant::now() < deadline {
        let before = peers.len();
        peers.retain_mut(|p| p.discard().is_ok());
        t.never_readers_dropped += before - peers.len();
        thread::sleep(READ_EVERY);
    }
    t
}

/// Writes half a line and resets the connection (SO_LINGER 0), each client once per cycle.
fn resets(cfg: &FloodConfig, end: Instant) -> Tally {
    let half = vec![b'r'; 100];
    cycles(cfg, cfg.resets, end, |p, t| {
        let _ = p.write_all(&half, Instant::now() + CONNECT_TIMEOUT);
        if SockRef::from(&p.stream)
            .set_linger(Some(Duration::ZERO))
            .is_ok()
        {
            t.resets += 1;
        }
    })
}

/// Every [`CYCLE_EVERY`] until `end`, `clients` new connections, each handed to `each` and
/// then closed.
fn cycles(
    cfg: &FloodConfig,
    clients: usize,
    end: Instant,
    mut each: impl FnMut(&mut Peer, &mut Tally),
) -> Tally {
    let mut t = Tally::default();
    let mut next = Instant::now();
    while next < end {
        sleep_until(next);
        next += CYCLE_EVERY;
        for _ in 0..clients {
            match Peer::open(cfg.addr, false) {
                Ok(mut p) => each(&mut p, &mut t),
                Err(_) => t.connect_failed += 1,
            }
        }
    }
    t
}

/// Slowloris: one byte per client every [`SLOWLORIS_EVERY`], never a newline; it reads what
/// it is sent.
fn slowloris(cfg: &FloodConfig, end: Instant) -> Tally {
    let mut t = Tally::default();
    let mut peers = Vec::new();
    for _ in 0..cfg.slowloris {
        match Peer::open(cfg.addr, false) {
            Ok(p) => peers.push(p),
            Err(_) => t.connect_failed += 1,
        }
    }
    let mut next = Instant::now();
    while next < end && !peers.is_empty() {
        // Reading in between keeps up with the room; bytes go out on the beat.
        while Instant::now() < next {
            let before = peers.len();
            peers.retain_mut(|p| p.discard().is_ok());
            t.attackers_dropped += (before - peers.len()) as u64;
            thread::sleep(READ_EVERY.min(next.saturating_duration_since(Instant::now())));
        }
        next += SLOWLORIS_EVERY;
        for (i, p) in peers.iter_mut().enumerate() {
            if let Ok(1) = p.stream.write(&[b'a' + (i % 26) as u8]) {
                t.slowloris_bytes += 1;
            }
        }
    }
    t
}

/// Connect, read the welcome, close; each churner once per cycle.
fn churn(cfg: &FloodConfig, end: Instant) -> Tally {
    cycles(cfg, cfg.churners, end, |p, t| {
        match p.exchange(&[], &any_line, Instant::now() + CONNECT_TIMEOUT) {
            Ok(true) => t.churn_cycles += 1,
            Ok(false) => {}
            Err(_) => t.attackers_dropped += 1,
        }
    })
}

/// Every `who_every`, a new client sends `/who` right after its welcome; the time from its
/// connect to the `[SERVER] N online:` line is what a user waits.
fn prober(cfg: &FloodConfig, end: Instant) -> Tally {
    let mut t = Tally::default();
    let is_who = |l: &[u8]| {
        l.strip_prefix(b"[SERVER] ")
            .is_some_and(|r| r.windows(9).any(|w| w == b" online: "))
    };
    let mut next = Instant::now();
    while next < end {
        sleep_until(next);
        next += cfg.who_every;
        let asked = Instant::now();
        let deadline = asked + WHO_TIMEOUT;
        let answered =
            Peer::open(cfg.addr, false).and_then(|mut p| {
                Ok(p.exchange(&[], &any_line, deadline)?
                    && p.exchange(b"/who\n", &is_who, deadline)?)
            });
        match answered {
            Ok(true) => t.who.record(asked.elapsed().as_nanos() as u64),
            Ok(false) | Err(_) => t.who_failed += 1,
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_lines_are_random_but_whole_lines() {
        let mut rng = Rng(7);
        let batch = flood_batch(&mut rng, 50, 300);
        let lines: Vec<&[u8]> = batch.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 51, "50 lines and nothing after the last LF");
        assert!(lines[50].is_empty());
        assert!(lines[..50].iter().all(|l| (1..=300).contains(&l.len())));
        assert!(!batch.contains(&b'@'));
        assert!(
            batch.iter().any(|&b| b < 0x20 && b != b'\n'),
            "control bytes"
        );
        assert!(batch.iter().any(|&b| b >= 0x80), "bytes that are not ASCII");
        assert!(lines.iter().any(|l| l.len() > 200), "lines over the cap");
    }

    #[test]
    fn failures_name_the_criteria_missed() {
        let good = FloodReport {
            readers: 10,
            never_readers: 2,
            never_readers_dropped: 2,
            deliveries: 100,
            who_probes: 3,
            who_max_ms: 20.0,
            server_hwm_kib: Some(10_000),
            ..FloodReport::default()
        };
        assert!(good.failures().is_empty(), "{:?}", good.failures());
        let bad = FloodReport {
            readers_dropped: 10,
            never_readers_dropped: 1,
            server_hwm_kib: Some(800 * 1024),
            who_max_ms: 1500.0,
            ..good.clone()
        };
        let f = bad.failures();
        assert_eq!(f.len(), 4, "{f:?}");
        assert_eq!(f[0], "10 of 10 readers dropped");
        let rep = bad.to_report();
        assert_eq!(rep.0[0], ("ok".to_string(), "false".to_string()));
        assert!(rep.0.iter().any(|(k, _)| k == "failed"));
    }
}
