//! The bundled client, `loopchat-client`: connects to a loopchat server, prints every line the
//! server sends, and sends every line read from stdin.
//!
//! This module owns the client's whole life: resolving and connecting, the `Nick: ` prompt,
//! the `mio::Poll` loop that owns the socket, the stdin reader thread, end of stdin
//! (half-close) and end of the connection. Parsing the command line is the binary's job.
//!
//! stdin is not registered with `mio`: epoll refuses regular files and `/dev/null`, and setting
//! `O_NONBLOCK` on fd 0 would leak to the parent shell. One reader thread does blocking reads
//! instead and hands what it reads to the loop through a bounded channel plus a [`Waker`]. The socket
//! itself is only ever touched by the loop.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{self, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

const SOCKET: Token = Token(0);
const STDIN: Token = Token(1);

/// Pieces of stdin the reader thread may read ahead of the loop. When the loop stops taking
/// them (the server is not keeping up), the thread blocks on the channel and stdin is not read
/// further.
const STDIN_BACKLOG: usize = 16;
/// stdin is read in pieces of at most this many bytes, so a huge line (or a binary file
/// without newlines) never has to fit in memory at once.
const STDIN_CHUNK: usize = 16 * 1024;
/// Bytes queued for the server before the loop stops taking stdin lines.
const MAX_PENDING: usize = 64 * 1024;
/// A partial line from the server longer than this is printed without waiting for its LF.
const MAX_PARTIAL: usize = 64 * 1024;
/// Per resolved address; loopback answers at once, this only bounds a remote host that drops
/// packets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// UDP has no close: after end of stdin, `--udp` waits for this much quiet, then exits.
const UDP_LINGER: Duration = Duration::from_secs(1);

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Sent as `/nick NICK` right after connecting (TCP only).
    pub nick: Option<String>,
    pub udp: bool,
}

/// Why the client stopped early. Every variant means exit status 1.
#[derive(Debug)]
pub enum Error {
    /// The host name did not resolve.
    Resolve {
        target: String,
        source: io::Error,
    },
    /// No resolved address accepted a TCP connection.
    Connect {
        target: String,
        tried: Vec<(SocketAddr, io::Error)>,
    },
    /// The UDP server's host said that nothing listens on that port (ICMP port unreachable).
    UdpRefused {
        addr: SocketAddr,
    },
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Resolve { target, source } => write!(
                f,
                "cannot find host {target} ({source}); check --host, \
                 or start a local server with `make run-server`"
            ),
            Error::Connect { target, tried } => {
                write!(f, "cannot connect to {target} (")?;
                for (i, (addr, e)) in tried.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{addr}: {e}")?;
                }
                write!(
                    f,
                    "); is the server running? Start it with `make run-server`"
                )
            }
            Error::UdpRefused { addr } => write!(
                f,
                "nothing answers UDP at {addr} (port unreachable); is the server running \
                 with --udp? Start it with `make run-server`"
            ),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// Runs the client until the conversation is over: `Ok` when the server closed the connection
/// (TCP) or went quiet after end of stdin (UDP).
pub fn run(config: &Config) -> Result<(), Error> {
    let target = if config.host.contains(':') {
        format!("[{}]:{}", config.host, config.port)
    } else {
        format!("{}:{}", config.host, config.port)
    };
    let addrs = resolve(&config.host, config.port).map_err(|source| Error::Resolve {
        target: target.clone(),
        source,
    })?;
    if config.udp {
        run_udp(&addrs)
    } else {
        let stream = connect(&target, &addrs)?;
        run_tcp(stream, config.nick.as_deref())
    }
}

fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"));
    }
    Ok(addrs)
}

/// Tries every resolved address in turn, so `localhost` reaches a server listening on either
/// `::1` or `127.0.0.1`. The connect blocks: nothing else needs the thread yet.
fn connect(target: &str, addrs: &[SocketAddr]) -> Result<net::TcpStream, Error> {
    let mut tried = Vec::new();
    for &addr in addrs {
        match net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                log::debug!("connected to {addr}");
                return Ok(stream);
            }
            Err(e) => {
                log::debug!("connect to {addr}: {e}");
                tried.push((addr, e));
            }
        }
    }
    Err(Error::Connect {
        target: target.to_owned(),
        tried,
    })
}

/// How the reader thread cuts stdin into [`Input::Data`] pieces.
#[derive(Clone, Copy)]
enum Cut {
    /// Whatever one read returns: TCP is a byte stream, and big reads keep a large piped input
    /// from costing a wake-up per line. (A terminal returns one line per read anyway.)
    Reads,
    /// One line per piece, with its LF: each becomes one datagram.
    Lines,
}

/// A piece of stdin handed to the loop, at most [`STDIN_CHUNK`] bytes (a longer line comes in
/// several pieces).
enum Input {
    Data(Vec<u8>),
    Eof,
}

/// Starts the stdin reader thread. It ends after sending [`Input::Eof`] (end of input or a read
/// error) or when the loop is gone.
///
/// The caller keeps its own handle on `waker` for as long as it polls: if the thread dropped
/// the last one on exit, the eventfd would close and the wake announcing `Eof` could be lost.
fn spawn_stdin_reader(cut: Cut, waker: Arc<Waker>) -> io::Result<Receiver<Input>> {
    let (tx, rx) = mpsc::sync_channel(STDIN_BACKLOG);
    thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut stdin = io::stdin().lock();
        loop {
            let mut piece = Vec::new();
            let read = match cut {
                Cut::Reads => {
                    piece.resize(STDIN_CHUNK, 0);
                    stdin.read(&mut piece)
                }
                Cut::Lines => (&mut stdin)
                    .take(STDIN_CHUNK as u64)
                    .read_until(b'\n', &mut piece),
            };
            let input = match read {
                Ok(0) => Input::Eof,
                Ok(n) => {
                    piece.truncate(n);
                    Input::Data(piece)
                }
                Err(e) => {
                    log::warn!("reading stdin: {e}");
                    Input::Eof
                }
            };
            let eof = matches!(input, Input::Eof);
            // Wake after every send: wakes coalesce, and the loop drains the channel.
            if tx.send(input).is_err() || waker.wake().is_err() || eof {
                return;
            }
        }
    })?;
    Ok(rx)
}

/// On a terminal without `--nick`, asks for a name on stderr (stdout carries only what the
/// server sends) and returns what to send first. Blocking here is fine: the loop has not
/// started, and whatever the server sends meanwhile waits in the socket.
fn ask_nick(stdin: &Receiver<Input>, stdin_done: &mut bool) -> io::Result<Option<String>> {
    let mut stderr = io::stderr();
    write!(stderr, "Nick: ")?;
    stderr.flush()?;
    match stdin.recv() {
        Ok(Input::Data(line)) => {
            let nick = String::from_utf8_lossy(&line).trim().to_owned();
            // Enter alone keeps the guest name the server gave us.
            Ok((!nick.is_empty()).then_some(nick))
        }
        Ok(Input::Eof) | Err(_) => {
            *stdin_done = true;
            Ok(None)
        }
    }
}

/// Whether the loop should keep going.
#[derive(PartialEq)]
enum Flow {
    Continue,
    Done,
}

/// The TCP side of the loop: the socket, what we still owe the server, and the server's
/// unfinished last line.
struct Conn {
    stream: TcpStream,
    /// Bytes read from stdin and not yet accepted by the socket; at most about
    /// [`MAX_PENDING`] + [`STDIN_CHUNK`].
    out: Vec<u8>,
    /// Bytes from the server after its last LF.
    partial: Vec<u8>,
    /// The last byte taken from stdin was not a LF: at end of stdin the client adds one, so
    /// the server sees every line terminated.
    line_open: bool,
    stdin_done: bool,
    write_closed: bool,
}

fn run_tcp(stream: net::TcpStream, nick: Option<&str>) -> Result<(), Error> {
    stream.set_nonblocking(true)?;
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), STDIN)?);
    let mut conn = Conn {
        stream: TcpStream::from_std(stream),
        out: Vec::new(),
        partial: Vec::new(),
        line_open: false,
        stdin_done: false,
        write_closed: false,
    };
    poll.registry().register(
        &mut conn.stream,
        SOCKET,
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let stdin = spawn_stdin_reader(Cut::Reads, Arc::clone(&waker))?;

    let nick = match nick {
        Some(nick) => Some(nick.to_owned()),
        None if io::stdin().is_terminal() => ask_nick(&stdin, &mut conn.stdin_done)?,
        None => None,
    };
    if let Some(nick) = nick {
        conn.out
            .extend_from_slice(format!("/nick {nick}\n").as_bytes());
    }

    let mut events = Events::with_capacity(16);
    let mut scratch = vec![0; 64 * 1024];
    loop {
        let more = conn.take_stdin(&stdin);
        conn.flush()?;
        if conn.stdin_done && conn.out.is_empty() && !conn.write_closed {
            // Half-close: the server sees end of stream and still answers what we sent.
            conn.write_closed = true;
            if let Err(e) = conn.stream.shutdown(Shutdown::Write) {
                log::debug!("shutdown(write): {e}");
            }
        }
        // The socket took a full queue whole: no writable event will follow, and the reader's
        // wake may be spent while it waits on the full channel. Just look for events, then
        // take more.
        let timeout = (more && conn.out.is_empty()).then_some(Duration::ZERO);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in events.iter() {
            // The waker needs no handling here: the top of the loop drains the channel.
            if event.token() == SOCKET
                && (event.is_readable() || event.is_read_closed() || event.is_error())
                && conn.read(&mut scratch)? == Flow::Done
            {
                return Ok(());
            }
        }
    }
}

impl Conn {
    /// Moves stdin into the output queue while it has room. Called every turn, not only on
    /// wake events: a wake that came while the queue was full is not repeated. Returns whether
    /// it stopped for lack of room (more stdin may be waiting).
    fn take_stdin(&mut self, stdin: &Receiver<Input>) -> bool {
        while !self.stdin_done {
            if self.out.len() >= MAX_PENDING {
                return true;
            }
            match stdin.try_recv() {
                Ok(Input::Data(data)) => {
                    self.line_open = !data.ends_with(b"\n");
                    self.out.extend_from_slice(&data);
                }
                Ok(Input::Eof) | Err(TryRecvError::Disconnected) => {
                    if self.line_open {
                        self.out.push(b'\n');
                    }
                    self.stdin_done = true;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        false
    }

    /// Writes queued bytes until the queue is empty or the socket would block; a writable
    /// event then brings us back here.
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_gone(&e) => {
                    // The server stopped reading (e.g. after `/quit`); whatever it still sent
                    // us is read and printed, so only our side is over.
                    log::debug!("write: {e}; dropping {} unsent bytes", self.out.len());
                    self.out.clear();
                    self.stdin_done = true;
                    self.write_closed = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads until the socket would block, printing complete lines as they come.
    fn read(&mut self, scratch: &mut [u8]) -> Result<Flow, Error> {
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => return self.finish(),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flow::Continue),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_gone(&e) => {
                    log::debug!("read: {e}");
                    return self.finish();
                }
                Err(e) => return Err(e.into()),
            };
            self.partial.extend_from_slice(&scratch[..n]);
            let complete = match self.partial.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if self.partial.len() > MAX_PARTIAL => self.partial.len(),
                None => 0,
            };
            if complete > 0 {
                let result = print(&self.partial[..complete]);
                self.partial.drain(..complete);
                if stdout_done(result)? {
                    return Ok(Flow::Done);
                }
            }
        }
    }

    /// The server closed: print its unfinished last line, if any, as a line of its own.
    fn finish(&mut self) -> Result<Flow, Error> {
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            stdout_done(print(&self.partial))?;
        }
        Ok(Flow::Done)
    }
}

/// Errors that mean the server is gone, which ends the conversation normally.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Writes to stdout and flushes, so a pipe reader sees each line as it arrives.
fn print(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// Whether printing failed because nobody reads stdout any more (`| head`): then there is
/// nothing left to do, and it is not an error.
fn stdout_done(result: io::Result<()>) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// `--udp`: one stdin line is one datagram (without its line ending: the datagram is the
/// frame), and every datagram received is printed as one line.
fn run_udp(addrs: &[SocketAddr]) -> Result<(), Error> {
    // UDP cannot tell which address has a server before sending; the server listens on
    // 127.0.0.1 by default, so prefer IPv4.
    let addr = *addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0]);
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let mut socket = UdpSocket::bind(local)?;
    // Connected: only the server's datagrams arrive, and a port with no server is reported.
    socket.connect(addr)?;
    log::debug!("sending datagrams to {addr} from {}", socket.local_addr()?);

    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), STDIN)?);
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
    let stdin = spawn_stdin_reader(Cut::Lines, Arc::clone(&waker))?;

    let refused = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => Error::UdpRefused { addr },
        _ => Error::Io(e),
    };
    let mut out: VecDeque<Vec<u8>> = VecDeque::new();
    let mut stdin_done = false;
    let mut last_activity = Instant::now();
    let mut events = Events::with_capacity(16);
    // The largest possible UDP payload, so no datagram is truncated.
    let mut scratch = vec![0; 65536];
    loop {
        let mut more = false;
        while !stdin_done {
            if out.len() >= STDIN_BACKLOG {
                more = true;
                break;
            }
            match stdin.try_recv() {
                Ok(Input::Data(mut line)) => {
                    if line.ends_with(b"\n") {
                        line.pop();
                        if line.ends_with(b"\r") {
                            line.pop();
                        }
                    }
                    out.push_back(line);
                }
                Ok(Input::Eof) | Err(TryRecvError::Disconnected) => stdin_done = true,
                Err(TryRecvError::Empty) => break,
            }
        }
        while let Some(datagram) = out.front() {
            match socket.send(datagram) {
                Ok(_) => {
                    out.pop_front();
                    last_activity = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(refused(e)),
            }
        }
        // As in the TCP loop: after sending a full queue whole, come straight back for more.
        let timeout = if more && out.is_empty() {
            Some(Duration::ZERO)
        } else if stdin_done && out.is_empty() {
            let left = UDP_LINGER.saturating_sub(last_activity.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            Some(left)
        } else {
            None
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in events.iter() {
            if event.token() != SOCKET || !(event.is_readable() || event.is_error()) {
                continue;
            }
            loop {
                let n = match socket.recv(&mut scratch) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(refused(e)),
                };
                last_activity = Instant::now();
                let mut line = scratch[..n].to_vec();
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                if stdout_done(print(&line))? {
                    return Ok(());
                }
            }
        }
    }
}
