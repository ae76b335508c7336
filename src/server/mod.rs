//! The mio shell: one event loop that owns every socket and moves bytes between them and the
//! [`Engine`], which decides everything else. No other thread touches a client.
//!
//! # One turn of the loop
//!
//! 1. `poll` sleeps until a socket is ready, the console or a signal wakes it, or the engine's
//!    nearest deadline comes.
//! 2. Each event is handed to the engine: accept, read, writable, console line, datagram.
//! 3. Due timers fire, and clients left with input on purpose (rate budget, fair share of the
//!    turn) are read again: mio is edge-triggered, so no new event would come for them.
//! 4. Everything owed is written, closed sockets are dropped, the transcript is printed, all
//!    before the next `poll` and never in the middle of a batch of events.

mod console;
mod listener;
mod transcript;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::{Config, Udp};
use crate::engine::{Engine, SCRATCH, Socket};
use crate::notice;
use console::{Console, Input};
use listener::{Acceptor, Next};
use transcript::Stdout;

// Tokens of the fixed sources, above any slab key.
const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const UDP: Token = Token(usize::MAX - 3);
/// The bus of a cluster (`--nats`).
const BUS: Token = Token(usize::MAX - 4);

/// New connections accepted per turn, so that a flood of connects cannot starve the room.
const ACCEPTS_PER_TURN: usize = 256;
/// Datagrams handled per turn, for the same reason.
const DATAGRAMS_PER_TURN: usize = 256;
/// Events taken from the kernel per poll; more simply wait for the next turn.
const EVENTS: usize = 1024;
/// Extra non-blocking polls before writing, to gather input that arrived meanwhile.
const GATHER: usize = 2;
/// How soon to try again to write transcript lines that standard output would not take.
const STDOUT_RETRY: Duration = Duration::from_millis(50);

/// Why the server could not run.
#[derive(Debug)]
pub enum Error {
    /// The address is taken by another program.
    PortInUse(SocketAddr),
    Listen(SocketAddr, io::Error),
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
        config.max_sockets = allowed;
        if allowed < config.max_clients {
            log::warn!(
                "only {limit} file descriptors allowed: serving at most {allowed} clients, not {}",
                config.max_clients
            );
            config.max_clients = allowed;
        }
    }
    let poll = Poll::new()?;
    let reuse_port = config.reuseport;
    let mut tcp = listener::bind(config.listen, reuse_port).map_err(listen_error(config.listen))?;
    let local = tcp.local_addr()?;
    poll.registry()
        .register(&mut tcp, LISTENER, Interest::READABLE)?;
    let udp = match config.udp {
        Udp::Off => None,
        Udp::SamePort => Some(bind_udp(&poll, local, reuse_port)?),
        Udp::Port(port) => Some(bind_udp(
            &poll,
            SocketAddr::new(local.ip(), port),
            reuse_port,
        )?),
    };
    // How long a new connection waits for its welcome.
    let greet = config.greet_wait();
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
    // The address lines are printed even with -q: scripts and tests read the port from them.
    let mut stdout = Stdout::open();
    stdout.write(format!("{}\n", notice::listening(local)).as_bytes());
    if let Some(socket) = &udp {
        stdout.write(format!("{}\n", notice::listening_udp(socket.local_addr()?)).as_bytes());
    }
    if let Some(tls) = &config.tls {
        stdout.write(format!("{}\n", notice::listening_tls(tls.only)).as_bytes());
    }
    log::info!(
        "listening on {local}, at most {} clients",
        config.max_clients
    );

    let now = Instant::now();
    let mut server = Server {
        keepalive: config.keepalive,
        engine: Engine::new(config, now),
        acceptor: Some(Acceptor::new(tcp)),
        accept_again: false,
        accept_paused_until: None,
        reuse_port,
        greet,
        stop_at: None,
        udp,
        udp_again: false,
        poll,
        signals,
        console,
        stdout,
        scratch: vec![0; SCRATCH],
        now,
    };
    server.run()
}

/// The engine's view of a client's socket.
impl Socket for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        Write::write(self, bytes)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Write::write_vectored(self, bufs)
    }

    fn shutdown_write(&mut self) {
        // Fails only if the peer is already gone, which the next read will tell.
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Turns a failure to bind into an error that names the address.
fn listen_error(addr: SocketAddr) -> impl FnOnce(io::Error) -> Error {
    move |e| match e.kind() {
        io::ErrorKind::AddrInUse => Error::PortInUse(addr),
        _ => Error::Listen(addr, e),
    }
}

fn bind_udp(poll: &Poll, addr: SocketAddr, reuse_port: bool) -> Result<UdpSocket, Error> {
    let mut socket = listener::bind_udp(addr, reuse_port).map_err(listen_error(addr))?;
    poll.registry()
        .register(&mut socket, UDP, Interest::READABLE)?;
    Ok(socket)
}

struct Server {
    engine: Engine<TcpStream>,
    poll: Poll,
    /// `None` once shutting down: the listening socket is closed so new connects fail fast.
    acceptor: Option<Acceptor>,
    /// The listener may still have connections waiting (the per-turn cap stopped us).
    accept_again: bool,
    /// Out of descriptors and unable to shed: accept again at this time.
    accept_paused_until: Option<Instant>,
    /// `--reuseport`: at shutdown the listener's queue is taken before it is closed.
    reuse_port: bool,
    /// How long a new connection waits for its welcome: nothing, or the web door's wait.
    greet: Duration,
    /// A `--reuseport` shutdown whose listener is closed: the engine is told to stop at this
    /// time, once the connections taken from the queue have been greeted.
    stop_at: Option<Instant>,
    udp: Option<UdpSocket>,
    /// The UDP socket may still have datagrams waiting (the per-turn cap stopped us).
    udp_again: bool,
    signals: Signals,
    console: Option<Console>,
    stdout: Stdout,
    /// `--keepalive`: set on every client socket.
    keepalive: Option<Duration>,
    /// The UDP receive buffer (the engine has its own for TCP).
    scratch: Vec<u8>,
    /// The time of this turn: read once after `poll`.
    now: Instant,
}

impl Server {
    fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            self.poll(&mut events, self.poll_timeout())?;
            self.dispatch(&events);
            // Input that arrived while this batch was handled goes out in the same writes:
            // with many clients, each write then carries more lines, and the system calls per
            // line (the main cost of a broadcast) go down.
            for _ in 0..GATHER {
                self.poll(&mut events, Some(Duration::ZERO))?;
                if events.is_empty() {
                    break;
                }
                self.dispatch(&events);
            }
            self.engine.tick(self.now);
            self.connect_bus();
            // After the timers: the connections taken at a `--reuseport` shutdown are greeted
            // by now, so they are told along with everyone else.
            if self.stop_at.is_some_and(|at| at <= self.now) {
                self.stop_at = None;
                self.engine.begin_shutdown(self.now);
            }
            if std::mem::take(&mut self.accept_again)
                || self.accept_paused_until.is_some_and(|at| at <= self.now)
            {
                self.accept();
            }
            if std::mem::take(&mut self.udp_again) {
                self.receive_datagrams();
            }
            for mut peer in self.engine.end_turn(self.now) {
                let _ = self.poll.registry().deregister(&mut peer.socket);
                log::debug!("{} closed", peer.addr);
            }
            self.stdout.write_transcript(self.engine.transcript());
            if self.engine.is_stopping()
                && let Some(mut acceptor) = self.acceptor.take()
            {
                let _ = self.poll.registry().deregister(&mut acceptor.listener);
            }
            if self.engine.is_finished(self.now) {
                return Ok(());
            }
        }
    }

    fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> Result<(), Error> {
        match self.poll.poll(events, timeout) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e.into()),
            _ => {
                self.now = Instant::now();
                Ok(())
            }
        }
    }

    /// Hands each event to the engine (or the listener, console, signals, UDP).
    fn dispatch(&mut self, events: &Events) {
        // The bus before any client: nats-server cuts a node that falls behind.
        if events.iter().any(|e| e.token() == BUS) {
            self.engine.bus_ready(self.now);
        }
        for event in events.iter() {
            match event.token() {
                BUS => {}
                LISTENER => self.accept(),
                WAKER => self.console_input(),
                SIGNALS => self.signalled(),
                UDP => self.receive_datagrams(),
                Token(key) => {
                    if event.is_writable() {
                        self.engine.writable(key);
                    }
                    // Errors and hang-ups are hints: a read tells what really happened.
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.engine.read(key, self.now);
                    }
                }
            }
        }
    }

    /// Connects to the bus when the engine's link wants a connection (at start, and after a
    /// failure once its backoff is over). The connect does not wait: the socket says when it
    /// is connected, or why not, through the loop like any other.
    fn connect_bus(&mut self) {
        let Some(addr) = self.engine.bus_wants_connection(self.now) else {
            return;
        };
        let registered = TcpStream::connect(addr).and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream,
                BUS,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match registered {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                self.engine.bus_attach(stream, self.now);
            }
            Err(e) => self.engine.bus_connect_failed(&e, self.now),
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if self.accept_again || self.udp_again || self.engine.has_ready() {
            return Some(Duration::ZERO);
        }
        let stdout = self.stdout.is_backlogged().then_some(STDOUT_RETRY);
        let accept = self
            .accept_paused_until
            .map(|at| at.saturating_duration_since(self.now));
        let stop = self
            .stop_at
            .map(|at| at.saturating_duration_since(self.now));
        [self.engine.next_deadline(self.now), accept, stop, stdout]
            .into_iter()
            .flatten()
            .min()
    }

    fn accept(&mut self) {
        self.accept_paused_until = None;
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(acceptor) = self.acceptor.as_mut() else {
                return;
            };
            match acceptor.next(self.now) {
                Next::Client(stream, addr) => self.admit(stream, addr),
                Next::Drained => return,
                Next::PauseUntil(at) => {
                    self.accept_paused_until = Some(at);
                    return;
                }
            }
        }
        self.accept_again = true;
    }

    fn admit(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        // Chat lines are small and wanted now: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let key = self.engine.next_key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("cannot register {addr}: {e}");
            return;
        }
        match self.engine.join(stream, addr, self.now) {
            Ok(_) => {
                log::debug!("{addr} connected as client {key}");
                // Only on admitted clients: a connection refused is closed at once.
                if let (Some(idle), Some(stream)) = (self.keepalive, self.engine.socket_mut(key))
                    && let Err(e) = listener::keepalive(stream, idle)
                {
                    log::debug!("keepalive for {addr}: {e}");
                }
            }
            Err((mut stream, refusal)) => {
                log::info!("refused {addr}: {refusal}");
                let _ = self.poll.registry().deregister(&mut stream);
                listener::refuse(&stream, refusal);
            }
        }
    }

    /// Reads datagrams until none are left, or this turn's share is used, and answers each.
    fn receive_datagrams(&mut self) {
        self.udp_again = true;
        for _ in 0..DATAGRAMS_PER_TURN {
            let Some(socket) = self.udp.as_ref() else {
                break;
            };
            let (n, from) = match socket.recv_from(&mut self.scratch) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_again = false;
                    break;
                }
                // An ICMP error about an earlier reply (the peer's port is closed): not ours to fix.
                Err(e) => {
                    log::debug!("udp: {e}");
                    continue;
                }
            };
            if let Some(reply) = self.engine.datagram(&self.scratch[..n], from, self.now)
                && let Err(e) = socket.send_to(&reply, from)
            {
                // UDP promises nothing: a reply the socket cannot take now is lost, as it
                // could be anywhere on the way.
                log::debug!("udp reply to {from} lost: {e}");
            }
        }
    }

    fn console_input(&mut self) {
        while let Some(input) = self.console.as_ref().and_then(Console::try_next) {
            match input {
                Input::Line(line) => {
                    if self.engine.console(&line, self.now) {
                        self.shut_down();
                    }
                }
                Input::Closed => {
                    log::debug!("console closed: standard input ended");
                    self.console = None;
                }
            }
        }
    }

    fn signalled(&mut self) {
        if self.signals.pending().count() > 0 {
            self.shut_down();
        }
    }

    /// A signal, or `/shutdown`: everyone is told and their queues flushed
    /// (a second one while flushing stops at once). With `--reuseport` the listener's queue is
    /// taken and the listener closed first: the kernel resets the connections still queued to
    /// a listener that closes (it hands them to no other process of the group), so they are
    /// accepted and greeted, and the engine begins the shutdown only once they have been.
    fn shut_down(&mut self) {
        if self.reuse_port
            && let Some(acceptor) = self.acceptor.take()
        {
            self.close_listener(acceptor);
            self.stop_at = Some(self.now + self.greet);
        } else {
            self.stop_at = None;
            self.engine.begin_shutdown(self.now);
        }
    }

    /// Accepts every connection queued to the listener, then closes it: from then on the
    /// kernel sends new connections to the other processes on the port. The queue holds at
    /// most [`listener::BACKLOG`]; as many again may arrive while it is emptied, and a flood
    /// of connects must not hold off the shutdown.
    fn close_listener(&mut self, mut acceptor: Acceptor) {
        let _ = self.poll.registry().deregister(&mut acceptor.listener);
        let mut taken = 0;
        for _ in 0..2 * listener::BACKLOG {
            match acceptor.next(self.now) {
                Next::Client(stream, addr) => {
                    self.admit(stream, addr);
                    taken += 1;
                }
                Next::Drained | Next::PauseUntil(_) => break,
            }
        }
        drop(acceptor);
        self.accept_again = false;
        self.accept_paused_until = None;
        log::info!("listener closed after taking {taken} queued connections");
    }
}
