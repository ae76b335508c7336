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
//!
//! `--tls` puts a rustls session between the loop and the socket (`Tls`, a `Transport` beside
//! `Plain`): the loop reads and writes through it as it would the socket, so TLS needs no thread
//! and no second loop, and the plain path is still the socket itself.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::{self, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

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
/// Of the server's first bytes, this many are kept until the TLS handshake is done: enough to
/// quote the line a server that does not speak TLS answered with.
const FIRST_KEPT: usize = 256;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Sent as `/nick NICK` right after connecting (TCP only).
    pub nick: Option<String>,
    pub udp: bool,
    /// `--tls`, and how to verify the server; `None` speaks plain text.
    pub tls: Option<Verify>,
}

/// Whom `--tls` trusts to be the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// The system's root certificates (the default).
    System,
    /// `--ca FILE`: the certificates in this PEM file instead.
    Ca(PathBuf),
    /// `--insecure`: any certificate. The session is encrypted, but with whoever answered.
    Insecure,
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
    /// `--tls` could not be set up: the `--ca` file, the system's roots, or the host name.
    TlsSetup(String),
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
            Error::TlsSetup(msg) => write!(f, "{msg}"),
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
        return run_udp(&addrs);
    }
    // Before connecting: a bad --ca file is reported without bothering the server.
    let tls = match &config.tls {
        Some(verify) => Some(Tls::new(verify, &config.host)?),
        None => None,
    };
    let stream = connect(&target, &addrs)?;
    let nick = config.nick.as_deref();
    match tls {
        Some(tls) => run_tcp(stream, nick, tls),
        None => run_tcp(stream, nick, Plain),
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
/// server sends) and returns what to send first. Blocking here is fine: the loop has sent
/// nothing yet but the TLS handshake, and whatever the server sends meanwhile waits in the
/// socket.
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

/// The TCP side of the loop: the socket and what carries lines over it, what we still owe the
/// server, and the server's unfinished last line.
struct Conn<T> {
    stream: TcpStream,
    transport: T,
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

fn run_tcp<T: Transport>(
    stream: net::TcpStream,
    nick: Option<&str>,
    transport: T,
) -> Result<(), Error> {
    stream.set_nonblocking(true)?;
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), STDIN)?);
    let mut conn = Conn {
        stream: TcpStream::from_std(stream),
        transport,
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

    if let Some(nick) = nick {
        conn.send_nick(nick);
    }
    let mut ask = nick.is_none() && io::stdin().is_terminal();

    let mut events = Events::with_capacity(16);
    let mut scratch = vec![0; 64 * 1024];
    loop {
        // Until the nick is asked for, stdin's first line is the answer: leave it there.
        let more = !ask && conn.take_stdin(&stdin);
        conn.flush()?;
        // Over TLS, only once the handshake is done (and our half of it sent): a certificate
        // the client refuses is reported before the prompt, and no prompt holds the handshake
        // up past the server's deadline.
        if ask && !conn.transport.is_handshaking() {
            ask = false;
            if let Some(nick) = ask_nick(&stdin, &mut conn.stdin_done)? {
                conn.send_nick(&nick);
            }
            continue;
        }
        conn.end_output()?;
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

impl<T: Transport> Conn<T> {
    /// Asks the server for the name given on the command line or at the prompt.
    fn send_nick(&mut self, nick: &str) {
        self.out
            .extend_from_slice(format!("/nick {nick}\n").as_bytes());
    }

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

    /// Writes queued bytes (and, over TLS, the session's own) until none are left or the
    /// socket would block; a writable event then brings us back here.
    fn flush(&mut self) -> io::Result<()> {
        while !self.write_closed && (!self.out.is_empty() || self.transport.wants_write()) {
            match self.transport.write(&mut self.stream, &self.out) {
                Ok(0) if !self.out.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
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

    /// After the last line is written: half-close, so the server sees end of stream and still
    /// answers what we sent. Over TLS, close_notify goes first, and the half-close waits until
    /// it is written.
    fn end_output(&mut self) -> io::Result<()> {
        if !self.stdin_done || !self.out.is_empty() || self.write_closed || !self.transport.close()
        {
            return Ok(());
        }
        self.flush()?;
        if self.transport.wants_write() {
            return Ok(());
        }
        self.write_closed = true;
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            log::debug!("shutdown(write): {e}");
        }
        Ok(())
    }

    /// Reads until the socket would block, printing complete lines as they come.
    fn read(&mut self, scratch: &mut [u8]) -> Result<Flow, Error> {
        loop {
            let n = match self.transport.read(&mut self.stream, scratch) {
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

/// What carries the line protocol over the socket: the socket itself ([`Plain`]) or a TLS
/// session ([`Tls`]). Its errors are the socket's: `WouldBlock` only once the socket has nothing
/// more to give or take, as edge triggering requires.
trait Transport {
    /// Reads what the server sent into `buf`; `Ok(0)` at the end of its stream.
    fn read(&mut self, socket: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize>;

    /// Sends what it can of `bytes`, and returns how many it took.
    fn write(&mut self, socket: &mut TcpStream, bytes: &[u8]) -> io::Result<usize>;

    /// Bytes of the transport's own wait for the socket (TLS: handshake, alerts, records).
    fn wants_write(&self) -> bool {
        false
    }

    /// Lines cannot pass yet: the TLS handshake is under way.
    fn is_handshaking(&self) -> bool {
        false
    }

    /// After the last line, ends the output inside the transport (TLS: queues close_notify) if
    /// it can yet, and says whether it has; the socket may be half-closed once it has and
    /// [`Transport::wants_write`] is false.
    fn close(&mut self) -> bool {
        true
    }
}

/// The plain line protocol: the socket itself.
struct Plain;

impl Transport for Plain {
    fn read(&mut self, socket: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        socket.read(buf)
    }

    fn write(&mut self, socket: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
        socket.write(bytes)
    }
}

/// `--tls`: the line protocol inside a rustls session. rustls's buffered `ClientConnection`
/// does no I/O of its own: the loop hands it the socket when the socket is ready, as the
/// server does with its sessions (src/tls.rs).
struct Tls {
    conn: ClientConnection,
    /// The server's first bytes (at most [`FIRST_KEPT`]), kept while handshaking: if they are
    /// not TLS, the error quotes what the server said instead.
    first: Vec<u8>,
    /// `--ca FILE`, named when the server's certificate is not trusted.
    ca: Option<PathBuf>,
}

impl Tls {
    /// A session that verifies the server as `verify` says, under the name `host` (a DNS name
    /// or an IP address, as the certificate names it).
    fn new(verify: &Verify, host: &str) -> Result<Tls, Error> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            Error::TlsSetup(format!(
                "--host {host}: TLS cannot verify this name; use the DNS name or IP address \
                 that the server's certificate names"
            ))
        })?;
        let provider = crate::tls::provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::TlsSetup(e.to_string()))?;
        let config = match verify {
            Verify::System => builder.with_root_certificates(system_roots()?),
            Verify::Ca(path) => builder.with_root_certificates(ca_roots(path)?),
            Verify::Insecure => {
                warn(
                    "--insecure: the connection is encrypted, but the server is not verified \
                     (anyone in between could pose as it)",
                );
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                        provider.signature_verification_algorithms,
                    )))
            }
        }
        .with_no_client_auth();
        let conn = ClientConnection::new(Arc::new(config), name)
            .map_err(|e| Error::TlsSetup(e.to_string()))?;
        Ok(Tls {
            conn,
            first: Vec::new(),
            ca: match verify {
                Verify::Ca(path) => Some(path.clone()),
                _ => None,
            },
        })
    }

    /// The stream ended, or was reset, without close_notify.
    fn cut(&self) -> io::Result<usize> {
        if self.conn.is_handshaking() {
            return Err(io::Error::other(TlsError::new(
                None,
                &self.first,
                self.ca.as_deref(),
            )));
        }
        // The end all the same, as a plain server's close is; but TLS cannot tell it from an
        // attacker cutting the conversation short.
        warn(
            "the server ended the connection without TLS close_notify: its last lines may be \
             missing",
        );
        Ok(0)
    }
}

impl Transport for Tls {
    fn read(&mut self, socket: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return self.cut(),
                // Ok(0) is close_notify: the server's clean end.
                read => return read,
            }
            // Only with nothing decrypted left, so rustls's plaintext buffer never fills.
            let read = if self.conn.is_handshaking() {
                let mut tap = Tap {
                    socket: &mut *socket,
                    first: &mut self.first,
                };
                self.conn.read_tls(&mut tap)
            } else {
                self.conn.read_tls(socket)
            };
            match read {
                // At end of stream too: the reader then says whether close_notify came first.
                Ok(_) => {}
                Err(e) if is_gone(&e) => return self.cut(),
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued an alert that tells the server why: send it once, on our way out.
                let _ = self.conn.write_tls(socket);
                let ca = self.ca.as_deref();
                return Err(io::Error::other(TlsError::new(Some(e), &self.first, ca)));
            }
        }
    }

    fn write(&mut self, socket: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            // During the handshake rustls holds plaintext back, up to its buffer limit; after
            // it, up to that limit of records not yet written.
            taken += self.conn.writer().write(&bytes[taken..])?;
            if !self.conn.wants_write() {
                break;
            }
            match self.conn.write_tls(socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // What was taken is the session's now; the error comes again on the next call.
                Err(_) if taken > 0 => break,
                Err(e) => return Err(e),
            }
        }
        if taken == 0 && !bytes.is_empty() {
            // The handshake holds the buffer full; its next step is a readable event.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn close(&mut self) -> bool {
        // close_notify now would cut the handshake short, and the server would greet nobody.
        if self.conn.is_handshaking() {
            return false;
        }
        // rustls sends it once, however often it is asked.
        self.conn.send_close_notify();
        true
    }
}

/// The socket as rustls reads it during the handshake, keeping a copy of the server's first
/// [`FIRST_KEPT`] bytes.
struct Tap<'a> {
    socket: &'a mut TcpStream,
    first: &'a mut Vec<u8>,
}

impl Read for Tap<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        let room = FIRST_KEPT.saturating_sub(self.first.len());
        self.first.extend_from_slice(&buf[..n.min(room)]);
        Ok(n)
    }
}

/// The system's trusted roots, where rustls-native-certs finds them (e.g. /etc/ssl/certs).
fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        log::debug!("system roots: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    log::debug!("system roots: {added} trusted, {ignored} unusable");
    if added == 0 {
        return Err(Error::TlsSetup(
            "no trusted root certificates on this system (install ca-certificates): use \
             --ca FILE, or --insecure for a development certificate"
                .into(),
        ));
    }
    Ok(roots)
}

/// `--ca FILE`: every certificate in the PEM file is a root, and nothing else is.
fn ca_roots(path: &Path) -> Result<RootCertStore, Error> {
    let fail = |why: String| Error::TlsSetup(format!("--ca {}: {why}", path.display()));
    let certs = crate::tls::certificates(path).map_err(fail)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    Ok(roots)
}

/// `--insecure`: any certificate is accepted. The handshake's signatures are still checked, so
/// the session is at least with whoever holds the key of the certificate it presented.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Why a TLS session failed. It leaves [`Tls::read`] inside an `io::Error`, as the socket's
/// own errors do, and is printed as [`Error::Io`].
#[derive(Debug)]
enum TlsError {
    /// The server's certificate was refused; `ca` is `--ca FILE`, if given.
    Certificate {
        cause: CertificateError,
        ca: Option<PathBuf>,
    },
    /// The server answered in plain text; `said` is its first line.
    NotTls { said: String },
    /// The server closed the connection during the handshake.
    Closed,
    /// Anything else: an alert from the server, a protocol error.
    Protocol(rustls::Error),
}

impl TlsError {
    /// Names the failure from rustls's error (`None`: the stream ended during the handshake)
    /// and the first bytes the server sent.
    fn new(error: Option<rustls::Error>, first: &[u8], ca: Option<&Path>) -> TlsError {
        if !first.is_empty() && !is_tls_record(first) {
            return TlsError::NotTls {
                said: first_line(first),
            };
        }
        match error {
            None => TlsError::Closed,
            Some(rustls::Error::InvalidCertificate(cause)) => TlsError::Certificate {
                cause,
                ca: ca.map(Path::to_path_buf),
            },
            Some(e) => TlsError::Protocol(e),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const INSECURE: &str = "or --insecure for a development certificate";
        match self {
            TlsError::Certificate { cause, ca } => match cause {
                // No chain to a trusted root: no root of that name, or one whose key did not
                // sign it (a root that shares the name of a self-signed certificate).
                CertificateError::UnknownIssuer
                | CertificateError::BadSignature
                | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
                | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                    match ca {
                        None => write!(
                            f,
                            "certificate not trusted (no root certificate of this system \
                             signed it): use --ca FILE, {INSECURE}"
                        ),
                        Some(path) => write!(
                            f,
                            "certificate not trusted (nothing in --ca {} signed it): use --ca \
                             with the server's certificate or its CA, {INSECURE}",
                            path.display()
                        ),
                    }
                }
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => write!(
                    f,
                    "certificate not valid for {} (it names {}): use --host with one of those",
                    expected.to_str(),
                    presented
                        .iter()
                        .map(|name| bare_name(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                CertificateError::NotValidForName => write!(
                    f,
                    "certificate not valid for this host: use --host with a name it names"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => write!(
                    f,
                    "certificate expired: the server needs a new one (`make cert` writes a \
                     development one)"
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    write!(
                        f,
                        "certificate not valid yet: check the clocks of this machine and the \
                         server"
                    )
                }
                other => write!(
                    f,
                    "certificate refused ({other}): use --ca FILE with the server's \
                     certificate, {INSECURE}"
                ),
            },
            TlsError::NotTls { said } => write!(
                f,
                "the server does not speak TLS (it answered in plain text: \"{said}\"): \
                 connect without --tls, or start the server with --tls-cert and --tls-key"
            ),
            TlsError::Closed => write!(
                f,
                "the server closed the connection during the TLS handshake: does it have \
                 --tls-cert and --tls-key?"
            ),
            TlsError::Protocol(e) => write!(f, "TLS failed: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Whether the server's first bytes start like a TLS record: a content type from 20
/// (change_cipher_spec) to 24 (heartbeat), then major version 3.
fn is_tls_record(first: &[u8]) -> bool {
    matches!(first, [20..=24] | [20..=24, 3, ..])
}

/// The first line of what a server said, safe to print, and short enough for an error line.
fn first_line(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    crate::text::clean(line).chars().take(120).collect()
}

/// A name as rustls-webpki reports a certificate's names (`DnsName("localhost")`,
/// `IpAddress(127.0.0.1)`), without the wrapping.
fn bare_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

/// A warning on stderr; the conversation goes on, or ends as it would have.
fn warn(what: &str) {
    eprintln!("loopchat-client: warning: {what}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_plain_text() {
        assert!(is_tls_record(&[22, 3, 3, 0, 122])); // ServerHello
        assert!(is_tls_record(&[21, 3, 3, 0, 2])); // an alert
        assert!(is_tls_record(&[22]));
        assert!(!is_tls_record(b"Welcome to the best chat in the universe!"));
        assert!(!is_tls_record(
            b"[SERVER] Error: this is a plain-text chat server"
        ));
        assert!(!is_tls_record(&[22, b'x']));
        assert!(!is_tls_record(b""));
    }

    #[test]
    fn the_first_line_is_quoted_safely_and_briefly() {
        assert_eq!(first_line(b"Welcome!\n[SERVER] more"), "Welcome!");
        assert_eq!(first_line(b"no newline yet"), "no newline yet");
        assert_eq!(first_line(b"\x1b[2Jclear\r\n"), "[2Jclear");
        assert_eq!(first_line(b"caf\xc3\xa9 \xff"), "caf\u{e9} \u{fffd}");
        assert_eq!(first_line(&[b'x'; 500]).len(), 120);
    }

    #[test]
    fn certificate_names_lose_their_wrapping() {
        assert_eq!(bare_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(bare_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(bare_name("URI(x)"), "URI(x)");
    }

    #[test]
    fn a_failure_is_named_from_rustls_and_the_first_bytes() {
        let tls = [22, 3, 3, 0, 122];
        let bad = || Some(rustls::Error::General("bad".into()));
        let plain = TlsError::new(bad(), b"Welcome!\nmore", None);
        assert!(matches!(&plain, TlsError::NotTls { said } if said == "Welcome!"));
        // A plain-text answer too short for rustls to fail on, then the end of the stream.
        assert!(matches!(
            TlsError::new(None, b"Err", None),
            TlsError::NotTls { .. }
        ));
        assert!(matches!(TlsError::new(None, b"", None), TlsError::Closed));
        assert!(matches!(TlsError::new(None, &tls, None), TlsError::Closed));
        assert!(matches!(
            TlsError::new(bad(), &tls, None),
            TlsError::Protocol(_)
        ));
        let untrusted = Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(matches!(
            TlsError::new(untrusted, &tls, Some(Path::new("ca.pem"))),
            TlsError::Certificate { ca: Some(ca), .. } if ca == Path::new("ca.pem")
        ));
    }

    #[test]
    fn certificate_errors_name_the_cause_and_the_fix() {
        let say = |cause, ca: Option<&str>| {
            TlsError::Certificate {
                cause,
                ca: ca.map(PathBuf::from),
            }
            .to_string()
        };
        assert_eq!(
            say(CertificateError::UnknownIssuer, None),
            "certificate not trusted (no root certificate of this system signed it): use \
             --ca FILE, or --insecure for a development certificate"
        );
        let with_ca = say(CertificateError::BadSignature, Some("dev.pem"));
        assert!(with_ca.starts_with("certificate not trusted (nothing in --ca dev.pem"));
        assert!(with_ca.ends_with("or --insecure for a development certificate"));
        let name = say(
            CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("example.org").unwrap(),
                presented: vec!["DnsName(\"localhost\")".into(), "IpAddress(::1)".into()],
            },
            None,
        );
        assert_eq!(
            name,
            "certificate not valid for example.org (it names localhost, ::1): use --host with \
             one of those"
        );
        assert!(say(CertificateError::Expired, None).starts_with("certificate expired: "));
        for message in [
            say(CertificateError::Revoked, None),
            TlsError::NotTls { said: "hi".into() }.to_string(),
            TlsError::Closed.to_string(),
        ] {
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
