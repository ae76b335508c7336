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

use loopchat_bench::procfs;
use loopchat_bench::stats::Histogram;
use loopchat_bench::wire::{Incoming, Kind, Msg, Proto, each_line};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::exit;
use std::time::{Duration, Instant};

/// Clients connecting, or connected but not yet heard from, while joining: a client is known
/// to be accepted once the server sends it something (welcome, NATS INFO), and an overflowing
/// accept backlog costs seconds of SYN-ACK retransmits.
const MAX_CONNECTING: usize = 64;
/// For servers that send nothing on connect: how long to wait before opening the next batch.
const SILENT_PACE: Duration = Duration::from_millis(20);
/// Interval between join-barrier probes.
const BARRIER_EVERY: Duration = Duration::from_millis(200);
/// How long in-flight messages may take to arrive once sending stops.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Throughput,
    Idle,
    Churn,
}

struct Opts {
    addr: SocketAddr,
    proto: Proto,
    workload: Workload,
    clients: usize,
    senders: usize,
    window: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
    hold: Duration,
    concurrency: usize,
    server_pid: Option<u32>,
    timeout: Duration,
}

fn parse_opts() -> Opts {
    let mut o = getopts::Options::new();
    o.optopt("H", "host", "server address (127.0.0.1)", "ADDR");
    o.reqopt("p", "port", "server port", "PORT");
    o.optopt(
        "",
        "proto",
        "line (loopchat, baselines) or nats (line)",
        "PROTO",
    );
    o.optopt(
        "",
        "workload",
        "throughput, idle or churn (throughput)",
        "NAME",
    );
    o.optopt("n", "clients", "clients that join (100)", "N");
    o.optopt("s", "senders", "clients that send, throughput (10)", "S");
    o.optopt("w", "window", "messages in flight per sender (32)", "W");
    o.optopt(
        "",
        "size",
        "message payload bytes, at least 35 (64)",
        "BYTES",
    );
    o.optopt("", "warmup", "seconds before measuring (1)", "SECS");
    o.optopt("", "duration", "seconds measured (4)", "SECS");
    o.optopt(
        "",
        "hold",
        "seconds idle clients are held before measuring RSS (1)",
        "SECS",
    );
    o.optopt("", "concurrency", "churn clients at once (16)", "C");
    o.optopt(
        "",
        "server-pid",
        "read the server's CPU and memory from /proc/PID",
        "PID",
    );
    o.optopt(
        "",
        "timeout",
        "seconds allowed to join (30 + N/500)",
        "SECS",
    );
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
    let host = m.opt_str("H").unwrap_or_else(|| "127.0.0.1".into());
    let ip = host
        .trim_matches(['[', ']'])
        .parse()
        .unwrap_or_else(|e| usage(&e));
    let port: u16 = num(&m, "port", 0).unwrap_or_else(|e| usage(&e));
    let clients: usize = num(&m, "clients", 100).unwrap_or_else(|e| usage(&e));
    let opts = Opts {
        addr: SocketAddr::new(ip, port),
        proto: match m.opt_str("proto").as_deref() {
            None | Some("line") => Proto::Line,
            Some("nats") => Proto::Nats,
            Some(p) => usage(&format!("unknown --proto {p}")),
        },
        workload: match m.opt_str("workload").as_deref() {
            None | Some("throughput") => Workload::Throughput,
            Some("idle") => Workload::Idle,
            Some("churn") => Workload::Churn,
            Some(w) => usage(&format!("unknown --workload {w}")),
        },
        clients,
        senders: num(&m, "senders", 10usize)
            .unwrap_or_else(|e| usage(&e))
            .min(clients),
        window: num(&m, "window", 32usize)
            .unwrap_or_else(|e| usage(&e))
            .max(1),
        size: num(&m, "size", 64usize).unwrap_or_else(|e| usage(&e)),
        warmup: secs("warmup", 1.0),
        duration: secs("duration", 4.0),
        hold: secs("hold", 1.0),
        concurrency: num(&m, "concurrency", 16usize)
            .unwrap_or_else(|e| usage(&e))
            .max(1),
        server_pid: m
            .opt_str("server-pid")
            .map(|p| p.parse().unwrap_or_else(|e| usage(&e))),
        timeout: secs("timeout", 30.0 + clients as f64 / 500.0),
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
    opts
}

/// What the event loop reports to a workload.
#[derive(Clone, Copy)]
enum Ev {
    Connected,
    Msg(Msg, u64),
    Closed,
}

struct Conn {
    stream: TcpStream,
    partial: Vec<u8>,
    out: Vec<u8>,
    established: bool,
    /// Has received a byte: proof that the server accepted it.
    heard: bool,
    closed: bool,
}

struct Gen {
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    scratch: Vec<u8>,
    /// Connections with queued output, flushed at the start of every turn.
    dirty: Vec<usize>,
    start: Instant,
    addr: SocketAddr,
    proto: Proto,
    connecting: usize,
    /// Connections opened so far (picks each one's source address).
    opened: usize,
    /// Established but not heard from.
    unproven: usize,
    server_errors: u64,
    first_error: Option<String>,
}

impl Gen {
    fn new(addr: SocketAddr, proto: Proto) -> io::Result<Gen> {
        Ok(Gen {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Slab::new(),
            scratch: vec![0; 256 * 1024],
            dirty: Vec::new(),
            start: Instant::now(),
            addr,
            proto,
            connecting: 0,
            opened: 0,
            unproven: 0,
            server_errors: 0,
            first_error: None,
        })
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn connect(&mut self) -> io::Result<usize> {
        let mut stream = self.open()?;
        stream.set_nodelay(true)?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Conn {
            stream,
            partial: Vec::new(),
            out: Vec::new(),
            established: false,
            heard: false,
            closed: false,
        });
        self.connecting += 1;
        Ok(key)
    }

    /// Starts a connection. To a loopback IPv4 server, clients spread over source addresses
    /// 127.0.0.2-254: churn and back-to-back runs leave tens of thousands of TIME_WAIT sockets,
    /// and with one source address the kernel's ephemeral-port search becomes the bottleneck.
    fn open(&mut self) -> io::Result<TcpStream> {
        use socket2::{Domain, Socket, Type};
        let SocketAddr::V4(dst) = self.addr else {
            return TcpStream::connect(self.addr);
        };
        if !dst.ip().is_loopback() {
            return TcpStream::connect(self.addr);
        }
        self.opened += 1;
        let src = SocketAddr::from(([127, 0, 0, 2 + (self.opened % 253) as u8], 0));
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        let one: libc::c_int = 1;
        // SAFETY: a valid descriptor and a c_int option value of the right size. Choosing the
        // port at connect() lets the kernel pick per destination instead of per source.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(&src.into())?;
        match sock.connect(&self.addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(sock.into()))
    }

    fn send(&mut self, key: usize, msg: &Msg, size: usize) {
        let c = &mut self.conns[key];
        if c.out.is_empty() {
            self.dirty.push(key);
        }
        self.proto.frame(msg, size, &mut c.out);
    }

    fn shutdown_write(&mut self, key: usize) {
        let _ = self.conns[key].stream.shutdown(Shutdown::Write);
    }

    fn close(&mut self, key: usize) {
        let mut c = self.conns.remove(key);
        if !c.established {
            self.connecting -= 1;
        } else if !c.heard {
            self.unproven -= 1;
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
    }

    fn flush(&mut self) {
        for key in self.dirty.drain(..) {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            while !c.out.is_empty() && c.established && !c.closed {
                match c.stream.write(&c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    // The writable edge puts it back on the dirty list.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // Reading reports the end of this connection.
                    Err(_) => break,
                }
            }
        }
    }

    /// Flushes, polls once, and appends what happened to `out`.
    fn turn(&mut self, timeout: Duration, out: &mut Vec<(usize, Ev)>) -> io::Result<()> {
        self.flush();
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            r => r?,
        }
        for ev in self.events.iter() {
            let key = ev.token().0;
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.closed {
                continue;
            }
            if !c.established {
                match (c.stream.take_error(), c.stream.peer_addr()) {
                    (Ok(None), Ok(_)) => {
                        c.established = true;
                        self.connecting -= 1;
                        self.unproven += 1;
                        self.proto.hello(&mut c.out);
                        self.dirty.push(key);
                        out.push((key, Ev::Connected));
                    }
                    // Spurious wake-up: the handshake is still under way.
                    (Ok(None), Err(e)) if e.kind() == ErrorKind::NotConnected => continue,
                    (Ok(Some(e)) | Err(e), _) | (_, Err(e)) => {
                        self.server_errors += 1;
                        self.first_error
                            .get_or_insert_with(|| format!("connect: {e}"));
                        c.closed = true;
                        out.push((key, Ev::Closed));
                        continue;
                    }
                }
            }
            if ev.is_writable() {
                self.dirty.push(key);
            }
            if !ev.is_readable() && !ev.is_read_closed() {
                continue;
            }
            loop {
                match c.stream.read(&mut self.scratch) {
                    Ok(0) => {
                        c.closed = true;
                        out.push((key, Ev::Closed));
                    }
                    Ok(n) => {
                        if !c.heard {
                            c.heard = true;
                            self.unproven -= 1;
                        }
                        // One clock reading per read: the messages in it arrived together.
                        let now = self.start.elapsed().as_nanos() as u64;
                        let (proto, mut pings, mut errors) = (self.proto, 0, Vec::new());
                        let mut on_line = |l: &[u8]| match proto.classify(l) {
                            Incoming::Msg(m) => out.push((key, Ev::Msg(m, now))),
                            Incoming::Ping => pings += 1,
                            Incoming::Error if errors.is_empty() => errors.push(l.to_vec()),
                            Incoming::Error => errors.push(Vec::new()),
                            Incoming::Other => {}
                        };
                        if c.partial.is_empty() {
                            let used = each_line(&self.scratch[..n], &mut on_line);
                            c.partial.extend_from_slice(&self.scratch[used..n]);
                        } else {
                            c.partial.extend_from_slice(&self.scratch[..n]);
                            let used = each_line(&c.partial, &mut on_line);
                            c.partial.drain(..used);
                        }
                        for _ in 0..pings {
                            c.out.extend_from_slice(proto.pong());
                            self.dirty.push(key);
                        }
                        if let Some(first) = errors.first() {
                            self.server_errors += errors.len() as u64;
                            self.first_error
                                .get_or_insert_with(|| String::from_utf8_lossy(first).into_owned());
                        }
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        c.closed = true;
                        out.push((key, Ev::Closed));
                    }
                }
                break;
            }
        }
        Ok(())
    }
}

/// Key/value pairs of the RESULT line, in order.
#[derive(Default)]
struct Report(Vec<(String, String)>);

impl Report {
    fn put(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        // Values never contain spaces, so the line stays trivially parseable.
        self.0.push((
            k.to_string(),
            v.to_string().replace(char::is_whitespace, "_"),
        ));
        self
    }

    fn server(&mut self, pid: Option<u32>) -> &mut Self {
        if let Some(m) = pid.and_then(|p| procfs::mem(p).ok()) {
            self.put("server_rss_kib", m.rss_kib)
                .put("server_hwm_kib", m.hwm_kib)
                .put("server_threads", m.threads);
        }
        self
    }

    fn print(&self) {
        let mut line = String::from("RESULT");
        for (k, v) in &self.0 {
            let _ = write!(line, " {k}={v}");
        }
        println!("{line}");
    }
}

/// CPU used by the server (if known) and by this generator, and time their threads spent
/// runnable but waiting for a CPU (other load on the machine).
#[derive(Clone, Copy)]
struct Usage {
    server_cpu: Option<f64>,
    server_wait_ns: Option<u64>,
    gen_cpu: f64,
    gen_wait_ns: u64,
}

fn usage(server: Option<u32>) -> Usage {
    let me = std::process::id();
    Usage {
        server_cpu: server.and_then(|p| procfs::cpu_seconds(p).ok()),
        server_wait_ns: server.and_then(|p| procfs::sched_ns(p).ok()).map(|s| s.1),
        gen_cpu: procfs::cpu_seconds(me).unwrap_or(0.0),
        gen_wait_ns: procfs::sched_ns(me).map_or(0, |s| s.1),
    }
}

/// The measured part of a run: after the warm-up, for the requested duration, with CPU
/// usage sampled where it starts and ends.
struct Window {
    from: Instant,
    to: Instant,
    pid: Option<u32>,
    start: Option<(Instant, Usage)>,
    end: Option<(Instant, Usage)>,
}

impl Window {
    fn new(o: &Opts) -> Window {
        let from = Instant::now() + o.warmup;
        Window {
            from,
            to: from + o.duration,
            pid: o.server_pid,
            start: None,
            end: None,
        }
    }

    /// Samples usage as the window opens and closes; true while it is open.
    fn tick(&mut self) -> bool {
        let now = Instant::now();
        if self.start.is_none() && now >= self.from {
            self.start = Some((now, usage(self.pid)));
        }
        if self.end.is_none() && now >= self.to {
            self.end = Some((now, usage(self.pid)));
        }
        self.start.is_some() && self.end.is_none()
    }

    fn closed(&self) -> bool {
        self.end.is_some()
    }

    /// Past the time allowed for in-flight work once the window closed.
    fn drain_over(&self) -> bool {
        Instant::now() >= self.to + DRAIN
    }

    /// Measured seconds.
    fn secs(&self) -> f64 {
        match (self.start, self.end) {
            (Some(a), Some(b)) => (b.0 - a.0).as_secs_f64(),
            _ => (self.to - self.from).as_secs_f64(),
        }
    }

    /// Utilisation over the window; `work` operations give the server's cost of one.
    fn report(&self, r: &mut Report, work: f64) {
        let (Some((_, a)), Some((_, b))) = (self.start, self.end) else {
            return;
        };
        let secs = self.secs();
        let pct = |v: f64| format!("{:.1}", 100.0 * v / secs);
        r.put("duration_s", format!("{secs:.3}"));
        if let (Some(x), Some(y)) = (a.server_cpu, b.server_cpu) {
            r.put("server_cpu_s", format!("{:.3}", y - x))
                .put("server_cpu_pct", pct(y - x));
            if work > 0.0 {
                r.put("server_ns_per_op", format!("{:.0}", (y - x) * 1e9 / work));
            }
        }
        if let (Some(x), Some(y)) = (a.server_wait_ns, b.server_wait_ns) {
            r.put("server_wait_pct", pct(y.saturating_sub(x) as f64 / 1e9));
        }
        r.put("gen_cpu_pct", pct(b.gen_cpu - a.gen_cpu));
        r.put(
            "gen_wait_pct",
            pct(b.gen_wait_ns.saturating_sub(a.gen_wait_ns) as f64 / 1e9),
        );
    }
}

fn put_latency(r: &mut Report, prefix: &str, h: &Histogram) {
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    r.put(&format!("{prefix}p50_us"), us(h.quantile(0.5)))
        .put(&format!("{prefix}p99_us"), us(h.quantile(0.99)))
        .put(&format!("{prefix}p999_us"), us(h.quantile(0.999)))
        .put(&format!("{prefix}max_us"), us(h.max()));
}

/// Connects `n` clients and runs barrier rounds until every one has received a broadcast.
/// The joined clients get slab keys 0..n.
fn join(
    g: &mut Gen,
    n: usize,
    timeout: Duration,
    evs: &mut Vec<(usize, Ev)>,
) -> Result<Duration, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let (mut opened, mut established, mut ready_count) = (0, 0, 0);
    let mut ready = vec![false; n];
    let mut round = 0u32;
    let mut next_probe = start;
    let mut last_batch = start;
    while ready_count < n {
        let now = Instant::now();
        if now > deadline {
            return Err(format!(
                "join timed out: {established} of {n} connected, {ready_count} received a broadcast"
            ));
        }
        let silent = now >= last_batch + SILENT_PACE;
        while opened < n && g.connecting + if silent { 0 } else { g.unproven } < MAX_CONNECTING {
            last_batch = now;
            let key = g.connect().map_err(|e| format!("connect #{opened}: {e}"))?;
            debug_assert_eq!(key, opened);
            opened += 1;
        }
        if established == n && now >= next_probe {
            // Probes alternate between two clients so that each of them is proven too.
            let from = (round % 2) as usize;
            g.send(
                from,
                &Msg {
                    kind: Kind::Barrier,
                    sender: from as u32,
                    seq: round,
                    sent_ns: 0,
                },
                64,
            );
            round += 1;
            next_probe = now + BARRIER_EVERY;
        }
        evs.clear();
        g.turn(Duration::from_millis(10), evs)
            .map_err(|e| format!("poll: {e}"))?;
        for &(key, ev) in evs.iter() {
            match ev {
                Ev::Connected => established += 1,
                Ev::Msg(m, _) if m.kind == Kind::Barrier && key < n && !ready[key] => {
                    ready[key] = true;
                    ready_count += 1;
                }
                Ev::Msg(..) => {}
                Ev::Closed => {
                    let why = g
                        .first_error
                        .clone()
                        .unwrap_or_else(|| "end of stream".into());
                    return Err(format!("server closed client {key} while joining ({why})"));
                }
            }
        }
    }
    Ok(start.elapsed())
}

/// One receiver's view of one sender's sequence.
#[derive(Clone, Default)]
struct Track {
    next: u32,
    /// Skipped sequence numbers: lost unless they turn up later (then: reordered).
    missing: Vec<u32>,
}

fn throughput(o: &Opts, g: &mut Gen, evs: &mut Vec<(usize, Ev)>) -> Result<Report, String> {
    let (n, s, w) = (o.clients, o.senders, o.window);
    let join_time = join(g, n, o.timeout, evs)?;
    let mut tracks = vec![Track::default(); n * s];
    // Per sender: next sequence to send, oldest not yet received by all, receipts per slot.
    let mut next_seq = vec![0u32; s];
    let mut acked = vec![0u32; s];
    let mut ring = vec![0u32; s * w];
    let (mut dup, mut reordered, mut echoed, mut bogus) = (0u64, 0u64, 0u64, 0u64);
    let (mut deliveries, mut completed) = (0u64, 0u64);
    let mut hist = Histogram::default();
    let mut window = Window::new(o);
    let mut drained = false;
    loop {
        let measuring = window.tick();
        if !window.closed() {
            let sent_ns = g.now_ns();
            for i in 0..s {
                while next_seq[i] - acked[i] < w as u32 {
                    g.send(
                        i,
                        &Msg {
                            kind: Kind::Data,
                            sender: i as u32,
                            seq: next_seq[i],
                            sent_ns,
                        },
                        o.size,
                    );
                    next_seq[i] += 1;
                }
            }
        } else if next_seq == acked {
            drained = true;
            break;
        } else if window.drain_over() {
            break;
        }
        evs.clear();
        g.turn(Duration::from_millis(5), evs)
            .map_err(|e| format!("poll: {e}"))?;
        for &(r, ev) in evs.iter() {
            let (m, at) = match ev {
                Ev::Msg(m, at) if m.kind == Kind::Data => (m, at),
                Ev::Msg(..) | Ev::Connected => continue,
                Ev::Closed => {
                    return Err(format!("server closed client {r} ({:?})", g.first_error));
                }
            };
            let si = m.sender as usize;
            if si >= s || r >= n || m.seq >= next_seq[si] {
                bogus += 1;
                continue;
            }
            if r == si {
                echoed += 1;
                continue;
            }
            let t = &mut tracks[r * s + si];
            if m.seq >= t.next {
                t.missing.extend(t.next..m.seq);
                t.next = m.seq + 1;
            } else if let Some(pos) = t.missing.iter().position(|&q| q == m.seq) {
                t.missing.swap_remove(pos);
                reordered += 1;
            } else {
                dup += 1;
                continue;
            }
            let slot = &mut ring[si * w + m.seq as usize % w];
            *slot += 1;
            if *slot == (n - 1) as u32 && m.seq == acked[si] {
                while acked[si] < next_seq[si]
                    && ring[si * w + acked[si] as usize % w] == (n - 1) as u32
                {
                    ring[si * w + acked[si] as usize % w] = 0;
                    acked[si] += 1;
                    completed += u64::from(measuring);
                }
            }
            if measuring {
                deliveries += 1;
                hist.record(at.saturating_sub(m.sent_ns));
            }
        }
    }
    let secs = window.secs();
    let lost: usize = tracks.iter().map(|t| t.missing.len()).sum();
    let undelivered: u64 = (0..n)
        .flat_map(|r| (0..s).filter(move |&si| si != r).map(move |si| (r, si)))
        .map(|(r, si)| u64::from(next_seq[si] - tracks[r * s + si].next))
        .sum();
    let mut rep = Report::default();
    rep.put(
        "ok",
        lost == 0
            && dup == 0
            && reordered == 0
            && echoed == 0
            && bogus == 0
            && drained
            && deliveries > 0,
    )
    .put("workload", "throughput")
    .put("n", n)
    .put("senders", s)
    .put("window", w)
    .put("size", o.size)
    .put("join_s", format!("{:.3}", join_time.as_secs_f64()))
    .put("deliveries", deliveries)
    .put(
        "deliveries_per_s",
        format!("{:.0}", deliveries as f64 / secs),
    )
    .put("msgs_per_s", format!("{:.0}", completed as f64 / secs));
    put_latency(&mut rep, "", &hist);
    rep.put("lost", lost)
        .put("dup", dup)
        .put("reordered", reordered)
        .put("undelivered", undelivered)
        .put("echoed", echoed)
        .put("bogus", bogus)
        .put("server_errors", g.server_errors);
    window.report(&mut rep, deliveries as f64);
    rep.server(o.server_pid);
    Ok(rep)
}

fn idle(o: &Opts, g: &mut Gen, evs: &mut Vec<(usize, Ev)>) -> Result<Report, String> {
    let before = o.server_pid.and_then(|p| procfs::mem(p).ok());
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
    if let (Some(b), Some(a)) = (before, o.server_pid.and_then(|p| procfs::mem(p).ok())) {
        let per_conn = (a.rss_kib.saturating_sub(b.rss_kib) * 1024) as f64 / o.clients as f64;
        rep.put("server_rss_before_kib", b.rss_kib)
            .put("rss_per_conn_b", format!("{per_conn:.0}"));
    }
    rep.server(o.server_pid);
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
    let mut window = Window::new(o);
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
    rep.server(o.server_pid);
    Ok(rep)
}

fn main() {
    let o = parse_opts();
    procfs::raise_nofile();
    let mut g = Gen::new(o.addr, o.proto).unwrap_or_else(|e| {
        eprintln!("loadgen: {e}");
        exit(1)
    });
    let mut evs = Vec::new();
    let result = match o.workload {
        Workload::Throughput => throughput(&o, &mut g, &mut evs),
        Workload::Idle => idle(&o, &mut g, &mut evs),
        Workload::Churn => churn(&o, &mut g, &mut evs),
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
