//! The load generator's client side: many connections in one mio loop on one thread, the join
//! barrier that proves each of them receives broadcasts, the measured window, and the
//! `RESULT key=value ...` line.
//!
//! Clients may be spread over several servers (the nodes of a cluster): connection `k` goes
//! to server `k % servers`, and the barrier then proves that each client receives broadcasts
//! from every node.

use crate::procfs;
use crate::stats::Histogram;
use crate::tls::{Session, Tls};
use crate::wire::{Incoming, Kind, Msg, Proto, each_line};
use crate::ws;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
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
pub const DRAIN: Duration = Duration::from_secs(10);

/// What the event loop reports to a workload.
#[derive(Clone, Copy)]
pub enum Ev {
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
    /// `Proto::WebSocket`: the handshake's progress, once established.
    ws: Option<WsState>,
    /// Over TLS ([`Gen::with_tls`]): the session its bytes pass through; `out` holds plaintext.
    tls: Option<Session>,
    /// The server it talks to (the WebSocket handshake's `Host`).
    addr: SocketAddr,
}

impl Conn {
    /// Writes what it can of `out` (through the TLS session, if any).
    fn write(&mut self) {
        // Errors as the plain socket's below.
        if let Some(tls) = &mut self.tls {
            let _ = tls.send(&mut self.out, &mut self.stream);
            return;
        }
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
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

/// A WebSocket connection's state ([`Proto::WebSocket`]).
enum WsState {
    /// The handshake went out with this key; the server's `101` is awaited.
    Handshaking(String),
    Open,
}

pub struct Gen {
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    scratch: Vec<u8>,
    /// Connections with queued output, flushed at the start of every turn.
    dirty: Vec<usize>,
    start: Instant,
    /// The servers clients connect to, in turn.
    addrs: Vec<SocketAddr>,
    proto: Proto,
    tls: Option<Tls>,
    connecting: usize,
    /// Connections opened so far (picks each one's source address).
    opened: usize,
    /// Connections started so far (picks each one's server).
    started: usize,
    /// Established but not heard from.
    unproven: usize,
    pub server_errors: u64,
    pub first_error: Option<String>,
}

impl Gen {
    pub fn new(addr: SocketAddr, proto: Proto) -> io::Result<Gen> {
        Gen::spread(vec![addr], proto)
    }

    /// Clients spread over several servers, round-robin: connection `k` (in the order they are
    /// opened) goes to `addrs[k % addrs.len()]`.
    pub fn spread(addrs: Vec<SocketAddr>, proto: Proto) -> io::Result<Gen> {
        assert!(!addrs.is_empty(), "a server to connect to");
        Ok(Gen {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Slab::new(),
            scratch: vec![0; 256 * 1024],
            dirty: Vec::new(),
            start: Instant::now(),
            addrs,
            proto,
            tls: None,
            connecting: 0,
            opened: 0,
            started: 0,
            unproven: 0,
            server_errors: 0,
            first_error: None,
        })
    }

    /// Clients speak through TLS: each one's handshake starts once it is connected, and what it
    /// sends waits until the handshake is done.
    pub fn with_tls(mut self, tls: Tls) -> Gen {
        self.tls = Some(tls);
        self
    }

    /// The servers clients are spread over.
    pub fn servers(&self) -> usize {
        self.addrs.len()
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn connect(&mut self) -> io::Result<usize> {
        let tls = self.tls.as_ref().map(Tls::session).transpose();
        let tls = tls.map_err(io::Error::other)?;
        let addr = self.addrs[self.started % self.addrs.len()];
        let mut stream = self.open(addr)?;
        self.started += 1;
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
            ws: None,
            tls,
            addr,
        });
        self.connecting += 1;
        Ok(key)
    }

    /// Starts a connection. To a loopback IPv4 server, clients spread over source addresses
    /// 127.0.0.2-254: churn and back-to-back runs leave tens of thousands of TIME_WAIT sockets,
    /// and with one source address the kernel's ephemeral-port search becomes the bottleneck.
    fn open(&mut self, addr: SocketAddr) -> io::Result<TcpStream> {
        use socket2::{Domain, Socket, Type};
        let SocketAddr::V4(dst) = addr else {
            return TcpStream::connect(addr);
        };
        if !dst.ip().is_loopback() {
            return TcpStream::connect(addr);
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
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(sock.into()))
    }

    pub fn send(&mut self, key: usize, msg: &Msg, size: usize) {
        let c = &mut self.conns[key];
        if c.out.is_empty() {
            self.dirty.push(key);
        }
        self.proto.frame(msg, size, &mut c.out);
    }

    pub fn shutdown_write(&mut self, key: usize) {
        let _ = self.conns[key].stream.shutdown(Shutdown::Write);
    }

    pub fn close(&mut self, key: usize) {
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
            if let Some(c) = self.conns.get_mut(key)
                && c.established
                && !c.closed
            {
                c.write();
            }
        }
    }

    /// Flushes, polls once, and appends what happened to `out`.
    pub fn turn(&mut self, timeout: Duration, out: &mut Vec<(usize, Ev)>) -> io::Result<()> {
        self.flush();
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            r => r?,
        }
        // New connections first, their first bytes written at once: with its web door open or
        // TLS, loopchat greets a connection silent for 50 ms as a line client, which a
        // WebSocket or TLS client then cannot stop being, and the rest of a turn can take that
        // long on a busy core (a TLS handshake's certificate check is the generator's slowest
        // work).
        for ev in self.events.iter() {
            let key = ev.token().0;
            if let Some(c) = self.conns.get_mut(key)
                && !c.established
                && !c.closed
            {
                match (c.stream.take_error(), c.stream.peer_addr()) {
                    (Ok(None), Ok(_)) => {
                        c.established = true;
                        self.connecting -= 1;
                        self.unproven += 1;
                        if self.proto == Proto::WebSocket {
                            // Ahead of anything queued already: the handshake comes first.
                            let key = ws::random_key();
                            let request = ws::handshake_request(&c.addr.to_string(), &key, None);
                            c.out.splice(0..0, request);
                            c.ws = Some(WsState::Handshaking(key));
                        }
                        self.proto.hello(&mut c.out);
                        c.write();
                        out.push((key, Ev::Connected));
                    }
                    // Spurious wake-up: the handshake is still under way.
                    (Ok(None), Err(e)) if e.kind() == ErrorKind::NotConnected => {}
                    (Ok(Some(e)) | Err(e), _) | (_, Err(e)) => {
                        self.server_errors += 1;
                        self.first_error
                            .get_or_insert_with(|| format!("connect: {e}"));
                        c.closed = true;
                        out.push((key, Ev::Closed));
                    }
                }
            }
        }
        for ev in self.events.iter() {
            let key = ev.token().0;
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.closed || !c.established {
                continue;
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
                        let mut failed = None;
                        if let Some(state) = c.ws.as_mut() {
                            c.partial.extend_from_slice(&self.scratch[..n]);
                            match ws_receive(state, &mut c.partial, &mut c.out, &mut on_line) {
                                Ok(true) => self.dirty.push(key),
                                Ok(false) => {}
                                Err(e) => failed = Some(e),
                            }
                        } else if let Some(tls) = c.tls.as_mut() {
                            let partial = &mut c.partial;
                            let mut on_plain = |p: &[u8]| lines(partial, p, &mut on_line);
                            match tls.receive(&self.scratch[..n], &mut on_plain) {
                                // The handshake's next flight, or what waited for its end.
                                Ok(()) if tls.wants_write() || !c.out.is_empty() => {
                                    self.dirty.push(key)
                                }
                                Ok(()) => {}
                                Err(e) => failed = Some(e),
                            }
                        } else {
                            lines(&mut c.partial, &self.scratch[..n], &mut on_line);
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
                        if let Some(e) = failed {
                            self.server_errors += 1;
                            self.first_error.get_or_insert(e);
                            c.closed = true;
                            out.push((key, Ev::Closed));
                            break;
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

/// Hands `on_line` every line that `data` completes; an unfinished one waits in `partial`.
fn lines(partial: &mut Vec<u8>, data: &[u8], on_line: &mut impl FnMut(&[u8])) {
    if partial.is_empty() {
        let used = each_line(data, &mut *on_line);
        partial.extend_from_slice(&data[used..]);
    } else {
        partial.extend_from_slice(data);
        let used = each_line(partial, on_line);
        partial.drain(..used);
    }
}

/// Decodes what a WebSocket connection received, held in `buf`: the handshake's answer, then
/// frames. Every text frame is a line for `on_line`; a ping is answered in `out` (then `true`:
/// there is output to flush). An unfinished head or frame stays in `buf`. An error ends the
/// connection: a refused or broken handshake, a frame that breaks the RFC or that loopchat
/// never sends (binary, fragmented), and the server's close.
fn ws_receive(
    state: &mut WsState,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    on_line: &mut impl FnMut(&[u8]),
) -> Result<bool, String> {
    let mut used = 0;
    if let WsState::Handshaking(key) = state {
        let Some(head) = ws::parse_response_head(buf).map_err(|e| e.to_string())? else {
            return Ok(false);
        };
        if head.status != 101 {
            return Err(format!("websocket handshake refused: {}", head.status_line));
        }
        ws::check_upgrade(&head, key).map_err(|e| e.to_string())?;
        used = head.len;
        *state = WsState::Open;
    }
    let mut answered = false;
    let result = loop {
        match ws::parse_frame(&buf[used..], ws::MAX_FRAME) {
            Ok(None) => break Ok(answered),
            Err(e) => break Err(e.to_string()),
            Ok(Some((frame, len))) => {
                used += len;
                match frame.opcode {
                    ws::op::TEXT if frame.fin => on_line(frame.payload),
                    ws::op::PING => {
                        let mask = Some(ws::random_mask());
                        ws::encode_frame_into(true, ws::op::PONG, mask, frame.payload, out);
                        answered = true;
                    }
                    ws::op::PONG => {}
                    _ => break Err(format!("websocket: {}", ws::describe(&frame.to_frame()))),
                }
            }
        }
    };
    buf.drain(..used);
    result
}

/// Key/value pairs of the RESULT line, in order.
#[derive(Default)]
pub struct Report(pub Vec<(String, String)>);

impl Report {
    pub fn put(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        // Values never contain spaces, so the line stays trivially parseable.
        self.0.push((
            k.to_string(),
            v.to_string().replace(char::is_whitespace, "_"),
        ));
        self
    }

    /// The server's memory and threads, summed over its processes (a cluster's nodes and bus:
    /// its peak is then the sum of each one's peak).
    pub fn server(&mut self, w: &Watched) -> &mut Self {
        if let Some(m) = w.mem() {
            self.put("server_rss_kib", m.rss_kib)
                .put("server_hwm_kib", m.hwm_kib)
                .put("server_threads", m.threads);
        }
        self
    }

    pub fn print(&self) {
        let mut line = String::from("RESULT");
        for (k, v) in &self.0 {
            let _ = write!(line, " {k}={v}");
        }
        println!("{line}");
    }
}

/// The processes that are the server, read from /proc: one, or a cluster's nodes and the bus
/// (nats-server) between them, whose CPU and memory are summed.
#[derive(Clone, Debug, Default)]
pub struct Watched {
    /// The server, or the cluster's nodes.
    pub nodes: Vec<u32>,
    /// The cluster's bus: counted in the server's totals, and reported on its own too.
    pub bus: Option<u32>,
}

impl Watched {
    pub fn one(pid: Option<u32>) -> Watched {
        Watched {
            nodes: pid.into_iter().collect(),
            bus: None,
        }
    }

    /// Every process, the bus last.
    pub fn all(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes.iter().copied().chain(self.bus)
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.bus.is_none()
    }

    /// Memory summed over the processes; `None` if one cannot be read.
    pub fn mem(&self) -> Option<procfs::Mem> {
        if self.is_empty() {
            return None;
        }
        self.all().try_fold(procfs::Mem::default(), |sum, pid| {
            let m = procfs::mem(pid).ok()?;
            Some(procfs::Mem {
                rss_kib: sum.rss_kib + m.rss_kib,
                hwm_kib: sum.hwm_kib + m.hwm_kib,
                threads: sum.threads + m.threads,
            })
        })
    }
}

/// CPU used by the server's processes (if known) and by this generator, and time their
/// threads spent runnable but waiting for a CPU (other load on the machine).
#[derive(Clone)]
struct Usage {
    /// Each process's CPU seconds, in [`Watched::all`]'s order.
    server_cpu: Option<Vec<f64>>,
    server_wait_ns: Option<u64>,
    gen_cpu: f64,
    gen_wait_ns: u64,
}

fn usage(server: &Watched) -> Usage {
    let me = std::process::id();
    let some = !server.is_empty();
    Usage {
        server_cpu: some
            .then(|| server.all().map(|p| procfs::cpu_seconds(p).ok()).collect())
            .flatten(),
        server_wait_ns: some
            .then(|| {
                server
                    .all()
                    .map(|p| procfs::sched_ns(p).ok().map(|s| s.1))
                    .sum()
            })
            .flatten(),
        gen_cpu: procfs::cpu_seconds(me).unwrap_or(0.0),
        gen_wait_ns: procfs::sched_ns(me).map_or(0, |s| s.1),
    }
}

/// The measured part of a run: after the warm-up, for the requested duration, with CPU
/// usage sampled where it starts and ends.
pub struct Window {
    from: Instant,
    to: Instant,
    server: Watched,
    start: Option<(Instant, Usage)>,
    end: Option<(Instant, Usage)>,
}

impl Window {
    pub fn new(warmup: Duration, duration: Duration, server: Watched) -> Window {
        let from = Instant::now() + warmup;
        Window {
            from,
            to: from + duration,
            server,
            start: None,
            end: None,
        }
    }

    /// Samples usage as the window opens and closes; true while it is open.
    pub fn tick(&mut self) -> bool {
        let now = Instant::now();
        if self.start.is_none() && now >= self.from {
            self.start = Some((now, usage(&self.server)));
        }
        if self.end.is_none() && now >= self.to {
            self.end = Some((now, usage(&self.server)));
        }
        self.start.is_some() && self.end.is_none()
    }

    pub fn closed(&self) -> bool {
        self.end.is_some()
    }

    /// Past the time allowed for in-flight work once the window closed.
    pub fn drain_over(&self) -> bool {
        Instant::now() >= self.to + DRAIN
    }

    /// Measured seconds.
    pub fn secs(&self) -> f64 {
        match (&self.start, &self.end) {
            (Some(a), Some(b)) => (b.0 - a.0).as_secs_f64(),
            _ => (self.to - self.from).as_secs_f64(),
        }
    }

    /// Utilisation over the window; `work` operations give the server's cost of one. A
    /// cluster's figures are its processes' summed; `procs_cpu_pct` then lists each one's (the
    /// nodes, then the bus), and `bus_*` the bus's own.
    pub fn report(&self, r: &mut Report, work: f64) {
        let (Some((_, a)), Some((_, b))) = (&self.start, &self.end) else {
            return;
        };
        let secs = self.secs();
        let pct = |v: f64| format!("{:.1}", 100.0 * v / secs);
        r.put("duration_s", format!("{secs:.3}"));
        if let (Some(x), Some(y)) = (&a.server_cpu, &b.server_cpu) {
            let each: Vec<f64> = x.iter().zip(y).map(|(x, y)| y - x).collect();
            let total: f64 = each.iter().sum();
            r.put("server_cpu_s", format!("{total:.3}"))
                .put("server_cpu_pct", pct(total));
            if work > 0.0 {
                r.put("server_ns_per_op", format!("{:.0}", total * 1e9 / work));
            }
            if each.len() > 1 {
                let list: Vec<String> = each.iter().map(|&c| pct(c)).collect();
                r.put("server_procs", each.len())
                    .put("procs_cpu_pct", list.join("/"));
            }
            if let (Some(_), Some(&bus)) = (self.server.bus, each.last()) {
                r.put("bus_cpu_pct", pct(bus));
                if work > 0.0 {
                    r.put("bus_ns_per_op", format!("{:.0}", bus * 1e9 / work));
                }
                if total > 0.0 {
                    r.put("bus_share_pct", format!("{:.1}", 100.0 * bus / total));
                }
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

pub fn put_latency(r: &mut Report, prefix: &str, h: &Histogram) {
    let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
    r.put(&format!("{prefix}p50_us"), us(h.quantile(0.5)))
        .put(&format!("{prefix}p99_us"), us(h.quantile(0.99)))
        .put(&format!("{prefix}p999_us"), us(h.quantile(0.999)))
        .put(&format!("{prefix}max_us"), us(h.max()));
}

/// Connects `n` clients and runs barrier rounds until every one has received a broadcast.
/// The joined clients get slab keys 0..n. Spread over several servers, the first client of
/// each server takes its turn to probe, and a client is ready once it has received the probe
/// of every server's prober but its own: every node's broadcasts reach it.
pub fn join(
    g: &mut Gen,
    n: usize,
    timeout: Duration,
    evs: &mut Vec<(usize, Ev)>,
) -> Result<Duration, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let (mut opened, mut established, mut ready_count) = (0, 0, 0);
    let mut ready = vec![false; n];
    let probers = g.servers().clamp(2, 63).min(n);
    // Probers each client still has to hear from (bit p: client p's probes); alone, any one.
    let everyone = if g.servers() > 1 {
        (1u64 << probers) - 1
    } else {
        0
    };
    let mut waiting: Vec<u64> = (0..n)
        .map(|c| everyone & !(1u64.checked_shl(c as u32).unwrap_or(0)))
        .collect();
    let mut round = 0u32;
    let mut next_probe = start;
    let mut last_batch = start;
    while ready_count < n {
        let now = Instant::now();
        if now > deadline {
            return Err(format!(
                "join timed out: {established} of {n} connected, {ready_count} received {}",
                if everyone == 0 {
                    "a broadcast"
                } else {
                    "a broadcast from every server"
                }
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
            // Probes alternate between clients so that each of them is proven too.
            let from = round as usize % probers;
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
                    waiting[key] &= !(1u64.checked_shl(m.sender).unwrap_or(0));
                    if waiting[key] == 0 {
                        ready[key] = true;
                        ready_count += 1;
                    }
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
