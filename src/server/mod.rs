//! The mio shell: one event loop that owns every socket and all state, and only moves bytes and
//! keeps time. What the bytes mean is decided by the pure modules ([`crate::framing`],
//! [`crate::room`], ...).
//!
//! # One turn of the loop
//!
//! 1. `poll` sleeps until a socket is ready, the console or a signal wakes it, or the nearest
//!    deadline comes.
//! 2. Each event is handled: accept, read and act on complete lines, note writability. Acting
//!    only *queues* output and *marks* connections for closing.
//! 3. Due deadlines fire (flush-partial, rate, idle, linger), and connections that were left
//!    with input on purpose (rate budget, fair share of the turn) are read again: mio is
//!    edge-triggered, so no new event would come for them.
//! 4. Every connection with queued output is written, as few times as possible, and closed
//!    connections are removed, before the next `poll` and never in the middle of a batch.

mod connection;
mod console;
mod deadlines;
mod listener;
mod transcript;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::ack::{self, Answer};
use crate::config::{Config, Mode, Udp};
use crate::framing::{self, Frame, Framer};
use crate::notice;
use crate::rate::Bucket;
use crate::room::{After, ConsoleAfter, Out, Room, To};
use crate::text;
use connection::{Clients, Connection, Flushed, State};
use console::{Console, Input};
use deadlines::{Deadlines, Timer};
use listener::{Acceptor, Admission, Next};

// Tokens of the fixed sources, above any slab key.
const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const UDP: Token = Token(usize::MAX - 3);

/// One read buffer for all clients: per-client memory holds only unfinished lines and output.
/// 64 KiB also holds the largest UDP datagram whole.
const SCRATCH: usize = 64 * 1024;
/// Bytes read from one client per turn before the others get their go.
const FAIR_SHARE: usize = 64 * 1024;
/// New connections accepted per turn, so that a flood of connects cannot starve the room.
const ACCEPTS_PER_TURN: usize = 256;
/// Datagrams handled per turn, for the same reason.
const DATAGRAMS_PER_TURN: usize = 256;
/// How long a leaving client has to read its last lines, and the server to flush at shutdown.
const LINGER: Duration = Duration::from_secs(2);
/// Events taken from the kernel per poll; more simply wait for the next turn.
const EVENTS: usize = 1024;

/// Why the server could not run.
#[derive(Debug)]
pub enum Error {
    /// The address is taken by another program.
    PortInUse(std::net::SocketAddr),
    Listen(std::net::SocketAddr, io::Error),
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::PortInUse(addr) => write!(
                f,
                "port {} on {} is already in use: choose another with --port (0 picks a free one)",
                addr.port(),
                addr.ip()
            ),
            Error::Listen(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// Runs the server until it is shut down (signal or console).
pub fn run(mut config: Config) -> Result<(), Error> {
    if let Some(limit) = listener::raise_fd_limit() {
        let allowed = listener::clients_allowed(limit);
        if allowed < config.max_clients {
            log::warn!(
                "only {limit} file descriptors allowed: serving at most {allowed} clients, not {}",
                config.max_clients
            );
            config.max_clients = allowed;
        }
    }
    let poll = Poll::new()?;
    let mut tcp = TcpListener::bind(config.listen).map_err(listen_error(config.listen))?;
    let local = tcp.local_addr()?;
    poll.registry()
        .register(&mut tcp, LISTENER, Interest::READABLE)?;
    let udp = match config.udp {
        Udp::Off => None,
        Udp::SamePort => Some(bind_udp(&poll, local)?),
        Udp::Port(port) => Some(bind_udp(&poll, SocketAddr::new(local.ip(), port))?),
    };
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let console = if config.console {
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Console::start(waker)
            .inspect_err(|e| log::debug!("console off: {e}"))
            .ok()
    } else {
        None
    };
    let mut transcript = transcript::Transcript::new(config.quiet);
    transcript.always(&notice::listening(local));
    if let Some(socket) = &udp {
        transcript.always(&notice::listening_udp(socket.local_addr()?));
    }
    log::info!(
        "listening on {local}, at most {} clients",
        config.max_clients
    );

    let mut server = Server {
        admission: Admission::new(config.max_clients, config.max_per_ip),
        clients: Clients::new(config.max_pending),
        room: Room::new(config.welcome.clone(), config.announce_limit),
        acceptor: Some(Acceptor::new(tcp)),
        accept_again: false,
        udp,
        udp_again: false,
        poll,
        signals,
        console,
        transcript,
        deadlines: Deadlines::default(),
        scratch: vec![0; SCRATCH],
        out: Vec::new(),
        ready: Vec::new(),
        next_generation: 0,
        shutdown_at: None,
        now: Instant::now(),
        config,
    };
    server.run()
}

/// Turns a failure to bind into an error that names the address.
fn listen_error(addr: SocketAddr) -> impl FnOnce(io::Error) -> Error {
    move |e| match e.kind() {
        io::ErrorKind::AddrInUse => Error::PortInUse(addr),
        _ => Error::Listen(addr, e),
    }
}

fn bind_udp(poll: &Poll, addr: SocketAddr) -> Result<UdpSocket, Error> {
    let mut socket = UdpSocket::bind(addr).map_err(listen_error(addr))?;
    poll.registry()
        .register(&mut socket, UDP, Interest::READABLE)?;
    Ok(socket)
}

struct Server {
    config: Config,
    poll: Poll,
    /// `None` once shutting down: the listening socket is closed so new connects fail fast.
    acceptor: Option<Acceptor>,
    /// The listener may still have connections waiting (the per-turn cap stopped us).
    accept_again: bool,
    udp: Option<UdpSocket>,
    /// The UDP socket may still have datagrams waiting (the per-turn cap stopped us).
    udp_again: bool,
    admission: Admission,
    clients: Clients,
    room: Room,
    deadlines: Deadlines,
    transcript: transcript::Transcript,
    console: Option<Console>,
    signals: Signals,
    scratch: Vec<u8>,
    /// Lines the room produced and [`Server::deliver`] has yet to route.
    out: Vec<Out>,
    /// Connections to read again this turn without waiting for an event.
    ready: Vec<usize>,
    next_generation: u64,
    shutdown_at: Option<Instant>,
    /// The time of this turn: read once after `poll`, used by everything in the turn.
    now: Instant,
}

impl Server {
    fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = if self.ready.is_empty() && !self.accept_again && !self.udp_again {
                self.poll_timeout()
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e.into());
            }
            self.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.console_input(),
                    SIGNALS => self.signalled(),
                    UDP => self.receive_datagrams(),
                    Token(key) => {
                        if event.is_writable() {
                            self.clients.writable(key);
                        }
                        // Errors and hang-ups are hints: a read tells what really happened.
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key);
                        }
                    }
                }
            }
            self.expire_deadlines();
            if std::mem::take(&mut self.accept_again) {
                self.accept();
            }
            if std::mem::take(&mut self.udp_again) {
                self.receive_datagrams();
            }
            for key in std::mem::take(&mut self.ready) {
                self.read(key);
            }
            self.flush_and_sweep();
            self.transcript.flush();
            if let Some(at) = self.shutdown_at
                && (self.clients.slab.is_empty() || self.now >= at)
            {
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let timer = self.deadlines.timeout(self.now);
        let shutdown = self
            .shutdown_at
            .map(|at| at.saturating_duration_since(self.now));
        match (timer, shutdown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- accepting -----

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(acceptor) = self.acceptor.as_mut() else {
                return;
            };
            match acceptor.next(self.now) {
                Next::Client(stream, addr) => self.admit(stream, addr),
                Next::Drained => return,
                Next::PauseUntil(at) => {
                    self.deadlines.set(at, LISTENER.0, 0, Timer::AcceptResume);
                    return;
                }
            }
        }
        self.accept_again = true;
    }

    fn admit(&mut self, mut stream: TcpStream, addr: std::net::SocketAddr) {
        if let Err(refusal) = self.admission.admit(addr.ip(), self.clients.slab.len()) {
            log::info!("refused {addr}: {refusal}");
            listener::refuse(&stream, refusal);
            return;
        }
        // Chat lines are small and wanted now: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let key = self.clients.slab.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("cannot register {addr}: {e}");
            self.admission.release(addr.ip());
            return;
        }
        self.next_generation += 1;
        let bucket = (self.config.rate > 0).then(|| Bucket::new(self.config.rate, self.now));
        let framer = Framer::new(self.config.max_line);
        let conn = Connection::new(stream, addr, self.next_generation, framer, bucket, self.now);
        self.clients.slab.insert(conn);
        log::debug!("{addr} connected as client {key}");
        if let Some(idle) = self.config.idle_timeout {
            self.arm(key, Timer::Idle, self.now + idle);
        }
        match self.config.mode {
            Mode::Chat => self.room.join(key, &mut self.out),
            Mode::Echo | Mode::Ack => {
                let line = notice::connected(&addr.to_string());
                self.out.push(Out {
                    to: To::Console,
                    line,
                });
            }
        }
        self.deliver();
    }

    // ----- reading -----

    /// Reads what a client sent and acts on its complete lines, within its rate budget and its
    /// fair share of the turn. Stops at WouldBlock, as edge triggering requires, or puts the
    /// client on the ready list when it stops early with input left.
    fn read(&mut self, key: usize) {
        let Some(conn) = self.clients.slab.get(key) else {
            return;
        };
        match conn.state {
            State::Open if self.config.mode == Mode::Echo => return self.echo(key),
            State::Open => {}
            State::Closing => return self.discard_input(key),
            State::Closed => return,
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        // Lines held back by the rate limit go before anything new is read.
        let mut open = self.take_lines(key, &[]);
        let mut share = FAIR_SHARE;
        while open {
            let max_line = self.config.max_line;
            let conn = &mut self.clients.slab[key];
            if conn.eof {
                break;
            }
            // Under a rate limit, read about a line at a time: lines beyond the budget must
            // wait in the server, and this keeps them to one line's worth.
            let want = if conn.lines.bucket.is_some() {
                max_line + 2
            } else {
                scratch.len()
            };
            match conn.read(&mut scratch[..want]) {
                Ok(0) => conn.eof = true,
                Ok(n) => {
                    conn.last_input = self.now;
                    let first_read = conn.bytes_in == 0;
                    conn.bytes_in += n as u64;
                    if first_read && framing::is_tls_hello(&scratch[..n]) {
                        self.reject_foreign(key, notice::NOT_TLS, "sent a TLS handshake");
                        break;
                    }
                    open = self.take_lines(key, &scratch[..n]);
                    share = share.saturating_sub(n);
                    if open && share == 0 {
                        self.ready.push(key);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.drop_client(key, &e);
                    break;
                }
            }
        }
        self.scratch = scratch;
        self.after_read(key);
    }

    /// After reading: finish a client whose stream ended, or time its unfinished line.
    fn after_read(&mut self, key: usize) {
        let Some(conn) = self.clients.slab.get(key) else {
            return;
        };
        if conn.state != State::Open || conn.framer.has_line() {
            return;
        }
        if conn.eof {
            // Its last words: an unterminated line counts, then it leaves.
            self.flush_partial_line(key);
            self.finish(key, None);
        } else if !conn.framer.is_empty()
            && let Some(quiet) = self.config.flush_partial
        {
            let at = conn.last_input + quiet;
            self.arm(key, Timer::FlushPartial, at);
        }
    }

    /// Frames `input` (after any lines held back) and acts on each line while the client's
    /// rate budget allows. Returns whether the client can take more input now.
    fn take_lines(&mut self, key: usize, mut input: &[u8]) -> bool {
        loop {
            let Some(conn) = self.clients.slab.get_mut(key) else {
                return false;
            };
            if conn.state != State::Open {
                return false;
            }
            if input.is_empty() && !conn.framer.has_line() {
                return true;
            }
            if let Some(bucket) = conn.lines.bucket.as_mut()
                && !bucket.allows(self.now)
            {
                let at = bucket.next_at(self.now);
                conn.framer.keep(input);
                self.arm(key, Timer::RateResume, at);
                return false;
            }
            let Some(frame) = conn.framer.next(&mut input) else {
                return true;
            };
            let first = conn.lines.record(self.now);
            let addr = conn.addr;
            let verdict = on_frame(
                &mut self.room,
                &mut self.out,
                &self.config,
                (key, addr),
                first,
                frame,
            );
            self.settle(key, verdict);
        }
    }

    /// The quiet after an unfinished line has passed (or the stream ended): the line is taken
    /// as complete.
    fn flush_partial_line(&mut self, key: usize) {
        let Some(conn) = self.clients.slab.get_mut(key) else {
            return;
        };
        let Some(frame) = conn.framer.flush() else {
            return;
        };
        // An unfinished line is a line: it counts against the rate like any other. The budget
        // may go below zero here, which only delays the client's next line.
        let first = conn.lines.record(self.now);
        let addr = conn.addr;
        let verdict = on_frame(
            &mut self.room,
            &mut self.out,
            &self.config,
            (key, addr),
            first,
            frame,
        );
        self.settle(key, verdict);
    }

    /// Delivers what a frame produced and carries out what it means for the connection.
    fn settle(&mut self, key: usize, verdict: Verdict) {
        self.deliver();
        match verdict {
            Verdict::Stay => {}
            Verdict::Close => {
                self.finish(key, None);
            }
            Verdict::Foreign => self.reject_foreign(key, notice::NOT_HTTP, "sent an HTTP request"),
        }
    }

    /// A client speaking another protocol gets one line of explanation and is closed.
    fn reject_foreign(&mut self, key: usize, line: &str, reason: &str) {
        self.clients.queue(key, line);
        self.finish(key, Some(reason));
    }

    /// Echo mode (RFC 862): every byte goes back as it came. A client that does not read is
    /// not read from either: its input waits in its socket until its output has room.
    fn echo(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut share = FAIR_SHARE;
        while let Some(conn) = self.clients.slab.get_mut(key) {
            let room = self
                .config
                .max_pending
                .saturating_sub(conn.unread())
                .min(scratch.len());
            if room == 0 {
                self.clients.pause_input(key);
                break;
            }
            match conn.read(&mut scratch[..room]) {
                Ok(0) => {
                    self.finish(key, None);
                    break;
                }
                Ok(n) => {
                    self.clients.queue_raw(key, &scratch[..n]);
                    share = share.saturating_sub(n);
                    if share == 0 {
                        self.ready.push(key);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.drop_client(key, &e);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    // ----- UDP -----

    /// Reads datagrams until none are left, or this turn's share is used, and answers each.
    fn receive_datagrams(&mut self) {
        let mut scratch = std::mem::take(&mut self.scratch);
        self.udp_again = true;
        for _ in 0..DATAGRAMS_PER_TURN {
            let Some(socket) = self.udp.as_ref() else {
                break;
            };
            match socket.recv_from(&mut scratch) {
                Ok((n, from)) => self.datagram(&scratch[..n], from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_again = false;
                    break;
                }
                // An ICMP error about an earlier reply (the peer's port is closed): not ours to fix.
                Err(e) => log::debug!("udp: {e}"),
            }
        }
        self.scratch = scratch;
    }

    /// One datagram is one message: echoed in echo mode, acknowledged otherwise, and in chat
    /// mode also shown to the room under the sender's address. An exit word gets a goodbye
    /// and nothing else: there is no connection to close.
    fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        if self.config.mode == Mode::Echo {
            return self.send_datagram(bytes, from);
        }
        let reply = match framing::datagram(bytes, self.config.max_line) {
            Frame::TooLong => notice::too_long(self.config.max_line),
            Frame::Line(raw) => match ack::answer(raw) {
                Answer::Ignore => return,
                Answer::Bye => notice::BYE.to_owned(),
                Answer::Received { reply, text } => {
                    match self.config.mode {
                        Mode::Chat => self.room.relay(&from.to_string(), &text, &mut self.out),
                        _ => self.out.push(Out {
                            to: To::Console,
                            line: format!("{from}: {text}"),
                        }),
                    }
                    self.deliver();
                    reply
                }
            },
        };
        self.send_datagram(format!("{reply}\n").as_bytes(), from);
    }

    /// Sends one datagram. UDP promises nothing: if the socket cannot take it now, it is lost,
    /// as it could be anywhere on the way.
    fn send_datagram(&self, bytes: &[u8], to: SocketAddr) {
        if let Some(socket) = &self.udp
            && let Err(e) = socket.send_to(bytes, to)
        {
            log::debug!("udp reply to {to} lost: {e}");
        }
    }

    /// A closing client's input is read and thrown away: closing a socket with unread input
    /// sends a reset, which could destroy the last lines on their way to the client.
    fn discard_input(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut share = FAIR_SHARE;
        while let Some(conn) = self.clients.slab.get_mut(key) {
            match conn.read(&mut scratch) {
                Ok(0) => break,
                Ok(n) if n < share => share -= n,
                Ok(_) => {
                    self.ready.push(key);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.clients.close(key);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    // ----- delivering -----

    /// Routes every line the room produced. A client whose queue overflows is dropped after the
    /// routing (never while the room's members are being walked) and its departure is routed
    /// in turn, until nothing is left.
    fn deliver(&mut self) {
        while !self.out.is_empty() {
            let mut batch = std::mem::take(&mut self.out);
            for Out { to, line } in batch.drain(..) {
                match to {
                    To::One(key) => self.clients.queue(key, &line),
                    To::Console => self.transcript.line(&line),
                    To::Others(except) => {
                        self.transcript.line(&line);
                        for key in self.room.members().filter(|&k| k != except) {
                            self.clients.queue(key, &line);
                        }
                    }
                    To::All => {
                        self.transcript.line(&line);
                        for key in self.room.members() {
                            self.clients.queue(key, &line);
                        }
                    }
                }
            }
            if self.out.is_empty() {
                self.out = batch; // keep the capacity
            }
            for key in self.clients.take_overflowed() {
                let unread = self.clients.slab.get(key).map_or(0, Connection::unread);
                log::warn!(
                    "dropping client {key}: {unread} bytes unread (--max-pending {})",
                    self.config.max_pending
                );
                self.leave(key, Some(&notice::too_slow(unread)));
                self.clients.close(key);
            }
        }
    }

    /// A socket error ends a client: it leaves the room and is closed without flushing.
    fn drop_client(&mut self, key: usize, error: &io::Error) {
        self.part(key, describe(error).as_deref());
        self.clients.close(key);
    }

    /// A client leaves: it is announced (with the reason, if the server is the one who ends
    /// it), and the announcement is delivered.
    fn part(&mut self, key: usize, reason: Option<&str>) {
        self.leave(key, reason);
        self.deliver();
    }

    /// The announcement of a departure: the room's rule in chat mode, the transcript otherwise.
    fn leave(&mut self, key: usize, reason: Option<&str>) {
        match self.config.mode {
            Mode::Chat => self.room.leave(key, reason, &mut self.out),
            Mode::Echo | Mode::Ack => {
                if let Some(conn) = self.clients.slab.get(key) {
                    let line = notice::disconnected(&conn.addr.to_string(), reason);
                    self.out.push(Out {
                        to: To::Console,
                        line,
                    });
                }
            }
        }
    }

    /// Writes every connection with queued output, then removes closed ones. Writing can fail
    /// and drop a client, whose departure is more output: repeat until all is written.
    fn flush_and_sweep(&mut self) {
        while self.clients.has_dirty() {
            for key in self.clients.take_dirty() {
                match self.clients.flush(key) {
                    Flushed::Failed(e) => self.drop_client(key, &e),
                    Flushed::Done if self.clients.resume_input(key) => self.ready.push(key),
                    Flushed::Done | Flushed::Blocked => {}
                }
            }
        }
        let registry = self.poll.registry();
        for mut conn in self.clients.sweep() {
            let _ = registry.deregister(&mut conn.stream);
            self.admission.release(conn.addr.ip());
            log::debug!("{} closed", conn.addr);
        }
    }

    // ----- timers -----

    /// Sets a timer for a connection unless one of that kind is already set: an entry that
    /// comes due too early is set again for the right time when it fires.
    fn arm(&mut self, key: usize, timer: Timer, at: Instant) {
        let Some(conn) = self.clients.slab.get_mut(key) else {
            return;
        };
        if conn.timers & timer.bit() == 0 {
            conn.timers |= timer.bit();
            self.deadlines.set(at, key, conn.generation, timer);
        }
    }

    /// A client leaves: announced (with the reason, if the server ends it), out of the room,
    /// not read any more, and closed once its last lines are written or [`LINGER`] is over.
    /// For a client already out of the room (it quit, or was kicked) only the closing is left.
    fn finish(&mut self, key: usize, reason: Option<&str>) {
        self.part(key, reason);
        self.clients.linger(key);
        self.arm(key, Timer::Linger, self.now + LINGER);
    }

    fn expire_deadlines(&mut self) {
        while let Some((key, generation, timer)) = self.deadlines.pop_due(self.now) {
            if timer == Timer::AcceptResume {
                self.accept();
                continue;
            }
            let Some(conn) = self.clients.slab.get_mut(key) else {
                continue;
            };
            if conn.generation != generation {
                continue; // set for an earlier connection with the same key
            }
            conn.timers &= !timer.bit();
            match timer {
                Timer::FlushPartial => self.quiet_passed(key),
                Timer::RateResume => self.ready.push(key),
                Timer::Idle => self.check_idle(key),
                Timer::Linger => {
                    if conn.state == State::Closing {
                        log::debug!("{} did not read its last lines in time", conn.addr);
                        self.clients.close(key);
                    }
                }
                Timer::AcceptResume => unreachable!("handled above"),
            }
        }
    }

    fn quiet_passed(&mut self, key: usize) {
        let (Some(quiet), Some(conn)) = (self.config.flush_partial, self.clients.slab.get(key))
        else {
            return;
        };
        if conn.state != State::Open || conn.framer.is_empty() || conn.framer.has_line() {
            return;
        }
        let due = conn.last_input + quiet;
        if due > self.now + Duration::from_millis(1) {
            // More bytes came since this was set: the quiet starts again from them.
            self.arm(key, Timer::FlushPartial, due);
        } else {
            self.flush_partial_line(key);
        }
    }

    fn check_idle(&mut self, key: usize) {
        let (Some(idle), Some(conn)) = (self.config.idle_timeout, self.clients.slab.get(key))
        else {
            return;
        };
        if conn.state != State::Open {
            return;
        }
        let due = conn.lines.last + idle;
        if due > self.now + Duration::from_millis(1) {
            self.arm(key, Timer::Idle, due);
            return;
        }
        let secs = idle.as_secs();
        self.clients.queue(key, &notice::idle(secs));
        self.finish(key, Some(&notice::idle_reason(secs)));
    }

    // ----- console and signals -----

    fn console_input(&mut self) {
        while let Some(input) = self.console.as_ref().and_then(Console::try_next) {
            let Input::Line(raw) = input else {
                log::debug!("console closed: standard input ended");
                self.console = None;
                return;
            };
            let line = text::clean(&raw);
            if text::is_blank(&line) {
                continue;
            }
            let after = self
                .room
                .console(crate::command::parse_console(&line), &mut self.out);
            self.deliver();
            match after {
                ConsoleAfter::Continue => {}
                ConsoleAfter::Close(key) => {
                    self.finish(key, None);
                }
                ConsoleAfter::Shutdown => self.begin_shutdown(),
            }
        }
    }

    fn signalled(&mut self) {
        if self.signals.pending().count() == 0 {
            return;
        }
        if self.shutdown_at.is_some() {
            // A second signal while flushing: stop now.
            self.shutdown_at = Some(self.now);
        } else {
            self.begin_shutdown();
        }
    }

    /// Stops accepting, tells everyone, and gives their queues [`LINGER`] to drain.
    fn begin_shutdown(&mut self) {
        if self.shutdown_at.is_some() {
            return;
        }
        log::info!("shutting down");
        self.shutdown_at = Some(self.now + LINGER);
        if let Some(mut acceptor) = self.acceptor.take() {
            let _ = self.poll.registry().deregister(&mut acceptor.listener);
        }
        self.accept_again = false;
        self.out.push(Out {
            to: To::All,
            line: notice::SHUTTING_DOWN.to_owned(),
        });
        self.deliver();
        let keys: Vec<usize> = self.clients.slab.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.clients.linger(key);
        }
    }
}

/// What a frame means for its connection.
enum Verdict {
    Stay,
    Close,
    /// The first line was an HTTP request.
    Foreign,
}

/// Acts on one frame from a client, by the server's mode. A free function over the parts it
/// needs, because the frame borrows the connection's framer while the room runs.
fn on_frame(
    room: &mut Room,
    out: &mut Vec<Out>,
    config: &Config,
    (key, addr): (usize, SocketAddr),
    first: bool,
    frame: Frame<'_>,
) -> Verdict {
    let raw = match frame {
        Frame::TooLong => {
            out.push(Out {
                to: To::One(key),
                line: notice::too_long(config.max_line),
            });
            return Verdict::Stay;
        }
        Frame::Line(raw) if first && framing::is_http_request(raw) => return Verdict::Foreign,
        Frame::Line(raw) => raw,
    };
    match config.mode {
        Mode::Chat => match room.receive(key, raw, out) {
            After::Stay => Verdict::Stay,
            After::Close => Verdict::Close,
        },
        // Echo never frames; this arm keeps the match whole.
        Mode::Ack | Mode::Echo => match ack::answer(raw) {
            Answer::Ignore => Verdict::Stay,
            Answer::Received { reply, text } => {
                out.push(Out {
                    to: To::One(key),
                    line: reply,
                });
                out.push(Out {
                    to: To::Console,
                    line: format!("{addr}: {text}"),
                });
                Verdict::Stay
            }
            Answer::Bye => {
                out.push(Out {
                    to: To::One(key),
                    line: notice::BYE.to_owned(),
                });
                Verdict::Close
            }
        },
    }
}

/// A socket error as the reason shown for a departure. A reset or a broken pipe is how many
/// clients close (any that exits with input unread), so it is an ordinary departure.
fn describe(e: &io::Error) -> Option<String> {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => None,
        io::ErrorKind::TimedOut => Some("timed out".into()),
        _ => Some(format!("error: {e}")),
    }
}
