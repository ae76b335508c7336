//! Shared helpers for the black-box tests: start the real `loopchat-server` on a free port,
//! talk to it over real sockets, and read what it prints.
//!
//! Every wait here has a deadline, so a broken server fails a test instead of hanging it, and
//! every process a test starts is killed by its PID when the test ends.
#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod client;
pub mod nats;
pub mod tls;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_loopchat-server");

/// The default `--welcome` text, the first line every client receives.
pub const WELCOME: &str = "Welcome to the best chat in the universe!";

/// The line every client gets when the server stops (signal or console `/shutdown`).
pub const SHUTDOWN: &str = "[SERVER] Server shutting down.";

/// The intro line that follows the welcome for a client named `name`.
pub fn intro(name: &str) -> String {
    format!("[SERVER] You are {name}. Change your name with /nick NAME; /help lists the commands.")
}

/// The name an intro line (see [`intro`]) gives its client; panics on any other line.
pub fn name_from_intro(line: &str) -> String {
    line.strip_prefix("[SERVER] You are ")
        .and_then(|rest| rest.split_once(". "))
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| panic!("unexpected intro line: {line:?}"))
}

/// What the server's standard input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// `--no-console`, stdin is /dev/null.
    Off,
    /// Console on, stdin is a pipe the test writes to ([`Server::console`]).
    Piped,
    /// Console on, stdin is /dev/null (end of input at once; epoll cannot watch it).
    DevNull,
    /// Console on, stdin is whatever [`Launch::stdin`] was given (a file, a pipe end).
    Given,
}

/// How to start a server: flags, console, an optional wrapper command (e.g. `prlimit`),
/// extra environment, and whether to capture stderr.
///
/// `--host 127.0.0.1` and `--port 0` are added unless the flags name a host or port themselves
/// (getopts refuses an option given twice).
pub struct Launch {
    args: Vec<String>,
    console: Console,
    wrapper: Vec<String>,
    env: Vec<(String, String)>,
    capture_stderr: bool,
    stdin: Option<Stdio>,
    web: bool,
}

impl Launch {
    pub fn new(args: &[&str]) -> Launch {
        Launch {
            args: args.iter().map(|s| s.to_string()).collect(),
            console: Console::Off,
            wrapper: Vec::new(),
            env: Vec::new(),
            capture_stderr: false,
            stdin: None,
            web: false,
        }
    }

    /// Leaves the web door open, as it is by default. Tests start servers with `--no-web`
    /// unless they ask for this: a server with the door open greets a client that has sent
    /// nothing only after `config::web::GREET` (50 ms), which adds up over the hundreds of
    /// clients the tests connect one after another. The tests of what people run as they run
    /// it (real `nc`, the coursework clients, the browser) and of the web door itself open it.
    pub fn web(mut self) -> Launch {
        self.web = true;
        self
    }

    pub fn console(mut self, console: Console) -> Launch {
        self.console = console;
        self
    }

    /// Turns the console on with `stdin` as the server's standard input.
    pub fn stdin(mut self, stdin: impl Into<Stdio>) -> Launch {
        self.console = Console::Given;
        self.stdin = Some(stdin.into());
        self
    }

    /// Runs the server as `wrapper... loopchat-server flags...`; the wrapper must exec the
    /// server (as `prlimit` does) so that the PID we hold is the server's.
    pub fn wrapper(mut self, cmd: &[&str]) -> Launch {
        self.wrapper = cmd.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Collects stderr lines (see [`Server::stderr_lines`]) instead of passing them through.
    pub fn capture_stderr(mut self) -> Launch {
        self.capture_stderr = true;
        self
    }

    pub fn start(mut self) -> Server {
        let has = |names: &[&str]| self.args.iter().any(|a| names.contains(&a.as_str()));
        let mut flags: Vec<String> = Vec::new();
        if !has(&["-H", "--host"]) {
            flags.extend(["--host".into(), "127.0.0.1".into()]);
        }
        if !has(&["-p", "--port"]) {
            flags.extend(["--port".into(), "0".into()]);
        }
        if self.console == Console::Off {
            flags.push("--no-console".into());
        }
        if !self.web && !has(&["--no-web"]) {
            flags.push("--no-web".into());
        }
        flags.extend(self.args.iter().cloned());

        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(&flags)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(match self.console {
                Console::Piped => Stdio::piped(),
                Console::Off | Console::DevNull => Stdio::null(),
                Console::Given => self.stdin.take().expect("Launch::stdin sets the input"),
            })
            .stdout(Stdio::piped())
            .stderr(if self.capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        let mut child = cmd.spawn().expect("spawn loopchat-server");
        let stdin = child.stdin.take();
        // Drain stdout on a thread: a full pipe would block the server's event loop.
        let stdout = lines_channel(child.stdout.take().unwrap());
        let stderr = child.stderr.take().map(|err| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&lines);
            thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        });
        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            stdout,
            stdin,
            stderr,
        };
        let first = server
            .stdout
            .recv_timeout(WAIT)
            .expect("server printed no first line");
        server.addr = first
            .strip_prefix("[SERVER] Listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("no address in the first line {first:?}: {e}"));
        server
    }
}

/// Sends every line read from `from` into a channel, on a thread.
pub fn lines_channel(from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running server, killed (by its PID, which we own) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The transcript: every stdout line after `[SERVER] Listening on ...`.
    stdout: Receiver<String>,
    pub stdin: Option<ChildStdin>,
    stderr: Option<Arc<Mutex<Vec<String>>>>,
}

impl Server {
    /// Starts the server on 127.0.0.1 with a free port, `--no-console` and the given flags.
    pub fn start(args: &[&str]) -> Server {
        Launch::new(args).start()
    }

    /// Starts the server with its console reading from a pipe the test writes to.
    pub fn start_with_console(args: &[&str]) -> Server {
        Launch::new(args).console(Console::Piped).start()
    }

    /// Reads the welcome and intro lines of a freshly connected client and records its name.
    pub fn greet(mut c: Client) -> Client {
        c.expect_line(WELCOME);
        c.read_intro();
        c
    }

    /// Connects a new client and reads its welcome lines.
    pub fn client(&self) -> Client {
        Server::greet(Client::connect(self.addr))
    }

    /// Connects a client and names it, waiting until the rename is confirmed.
    pub fn named(&self, name: &str) -> Client {
        let mut c = self.client();
        c.rename(name);
        c
    }

    /// Connects one client per name, in order, and renames each. Every client already in the
    /// room must see the newcomer's join and rename notices, which are consumed here, so the
    /// room is quiet when this returns.
    pub fn room(&self, names: &[&str]) -> Vec<Client> {
        let mut clients = Vec::new();
        for name in names {
            self.join(&mut clients, Some(name));
        }
        clients
    }

    /// Like [`Server::room`] but the clients keep their `guest<N>` names.
    pub fn crowd(&self, n: usize) -> Vec<Client> {
        let mut clients = Vec::new();
        for _ in 0..n {
            self.join(&mut clients, None);
        }
        clients
    }

    fn join(&self, clients: &mut Vec<Client>, name: Option<&str>) {
        let mut c = self.client();
        let guest = c.name.clone();
        for other in clients.iter_mut() {
            other.expect_line(&format!("[SERVER] Client: {guest} connected!"));
        }
        if let Some(name) = name {
            c.rename(name);
            for other in clients.iter_mut() {
                other.expect_line(&format!("[SERVER] {guest} is now known as {name}"));
            }
        }
        clients.push(c);
    }

    /// The UDP address of a server started with `--udp` or `--udp-port`, read from the second
    /// stdout line (`[SERVER] Listening on UDP ADDR:PORT`); call it before any other transcript
    /// read.
    pub fn udp_addr(&self) -> SocketAddr {
        let line = self.out_line();
        line.strip_prefix("[SERVER] Listening on UDP ")
            .unwrap_or_else(|| panic!("second line is not the UDP address: {line:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("no address in {line:?}: {e}"))
    }

    /// The next transcript line, or a panic after [`WAIT`].
    pub fn out_line(&self) -> String {
        self.try_out_line(WAIT).expect("no transcript line in time")
    }

    /// The next transcript line, or `None` after `wait`.
    pub fn try_out_line(&self, wait: Duration) -> Option<String> {
        self.stdout.recv_timeout(wait).ok()
    }

    /// Skips transcript lines until one equals `want`.
    pub fn expect_out(&self, want: &str) {
        self.expect_out_where(&format!("a line equal to {want:?}"), |l| l == want);
    }

    /// Skips transcript lines until one starts with `prefix`; returns it.
    pub fn expect_out_prefix(&self, prefix: &str) -> String {
        self.expect_out_where(&format!("a line starting with {prefix:?}"), |l| {
            l.starts_with(prefix)
        })
    }

    fn expect_out_where(&self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "transcript never showed {what}; last lines: {:?}",
                    tail(&seen)
                ),
            }
        }
    }

    /// Asserts that the transcript stays silent for `quiet`.
    pub fn expect_no_out(&self, quiet: Duration) {
        if let Some(line) = self.try_out_line(quiet) {
            panic!("expected no transcript line, got {line:?}");
        }
    }

    /// Writes one line to the server's console (stdin).
    pub fn console(&mut self, line: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .expect("server started without a console pipe");
        writeln!(stdin, "{line}").expect("write to console");
        stdin.flush().unwrap();
    }

    /// Closes the console pipe: the server sees end of input.
    pub fn close_console(&mut self) {
        drop(self.stdin.take());
    }

    /// Sends a signal to the server (by the PID we spawned).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -s {sig} failed");
    }

    /// Waits for the server to exit and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        wait_exit(&mut self.child, "server", within)
    }

    /// `None` while the server runs, its exit status once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// Resident memory of the server in kB.
    pub fn rss_kb(&self) -> u64 {
        proc_status_kb(self.pid(), "VmRSS")
    }

    /// What the server wrote on stderr so far (only with [`Launch::capture_stderr`]).
    pub fn stderr_lines(&self) -> Vec<String> {
        let lines = self.stderr.as_ref().expect("stderr was not captured");
        lines.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(lines: &[String]) -> &[String] {
    &lines[lines.len().saturating_sub(5)..]
}

/// Socket options for [`Client::connect_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SockOpts {
    /// Source address to bind before connecting (e.g. 127.0.0.2).
    pub from: Option<IpAddr>,
    /// SO_RCVBUF, set before connecting so the kernel cannot auto-tune a large window.
    pub rcvbuf: Option<i32>,
}

/// One TCP client with a line reader that never waits past [`WAIT`].
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The client's chat name, once known (see [`Server::greet`] and [`Client::rename`]).
    pub name: String,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to server");
        Client::from_stream(stream)
    }

    /// Connects with socket options std cannot set before `connect`.
    pub fn connect_with(addr: SocketAddr, opts: SockOpts) -> io::Result<Client> {
        raw_connect(addr, opts).map(Client::from_stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            name: String::new(),
        }
    }

    /// Reads the intro line that follows the welcome and records the client's name.
    pub fn read_intro(&mut self) {
        self.name = name_from_intro(&self.line());
    }

    /// Sends `/nick name` and waits for the confirmation.
    pub fn rename(&mut self, name: &str) {
        self.send(&format!("/nick {name}"));
        self.expect_line(&format!("[SERVER] You are now known as {name}"));
        self.name = name.to_string();
    }

    /// Sends `text` followed by a newline.
    pub fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to server");
    }

    /// The next line the server sent (without its newline); panics after [`WAIT`].
    pub fn line(&mut self) -> String {
        self.try_line(WAIT).unwrap_or_else(|| {
            panic!(
                "{}: no line from server in time (have {:?})",
                self.name,
                String::from_utf8_lossy(&self.buf)
            )
        })
    }

    /// The next line, or `None` if none arrives within `wait` or the server closed.
    /// Panics if the server sent bytes that are not UTF-8 (it never may).
    pub fn try_line(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(decode(&line[..i]));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return None;
            }
        }
    }

    /// Reads once, waiting at most `wait`; false on timeout, end of stream or error.
    fn fill(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Asserts that the next line is exactly `want`.
    pub fn expect_line(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "{}: unexpected line", self.name);
    }

    /// Skips lines until one equals `want` (for tests that do not care about what comes first).
    pub fn expect_eventually(&mut self, want: &str) {
        self.expect_where(&format!("{want:?}"), |l| l == want);
    }

    /// Skips lines until one starts with `prefix`; returns it.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        self.expect_where(&format!("a line starting with {prefix:?}"), |l| {
            l.starts_with(prefix)
        })
    }

    fn expect_where(&mut self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(line) = self.try_line(deadline.saturating_duration_since(Instant::now())) {
            if pred(&line) {
                return line;
            }
            seen.push(line);
        }
        panic!(
            "{}: never received {what}; got {:?}",
            self.name,
            tail(&seen)
        );
    }

    /// Asserts that nothing arrives for `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        if let Some(line) = self.try_line(quiet) {
            panic!("{}: expected silence, got {line:?}", self.name);
        }
    }

    /// Every line that arrives until `quiet` passes without one.
    pub fn lines_until_quiet(&mut self, quiet: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.try_line(quiet) {
            lines.push(line);
            assert!(
                lines.len() < 10_000,
                "{}: endless stream of lines",
                self.name
            );
        }
        lines
    }

    /// Reads until the server closes the connection; returns every remaining line.
    pub fn read_to_close(&mut self) -> Vec<String> {
        self.read_to_close_within(WAIT)
    }

    pub fn read_to_close_within(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: server did not close; got {:?}",
                self.name,
                String::from_utf8_lossy(&self.buf)
            );
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => continue,
                Err(_) => break, // a reset also ends the stream
            }
        }
        let rest = std::mem::take(&mut self.buf);
        decode(&rest).lines().map(str::to_owned).collect()
    }

    /// Asserts the server has not closed this connection (reads what is there, without waiting).
    pub fn assert_open(&mut self) {
        self.stream.set_nonblocking(true).unwrap();
        let mut chunk = [0u8; 65536];
        let result = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break Err("end of stream".to_string()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        };
        self.stream.set_nonblocking(false).unwrap();
        if let Err(e) = result {
            panic!("{}: connection closed by the server ({e})", self.name);
        }
    }

    /// Half-closes: the server sees end of stream, the client can still read.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }
}

/// Server output as text; the server must only ever send UTF-8.
fn decode(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec())
        .unwrap_or_else(|_| panic!("server sent invalid UTF-8: {bytes:?}"))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A blocking TCP connection made with libc, so that a source address or SO_RCVBUF can be set
/// before `connect` (std cannot; `socket2` is not a dependency).
fn raw_connect(addr: SocketAddr, opts: SockOpts) -> io::Result<TcpStream> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor we own; it is closed on every error path by
    // the TcpStream that takes it over right away.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        if let Some(size) = opts.rcvbuf {
            check(libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const i32).cast(),
                size_of::<i32>() as libc::socklen_t,
            ))?;
        }
        if let Some(ip) = opts.from {
            let (sa, len) = sockaddr(SocketAddr::new(ip, 0));
            check(libc::bind(
                fd,
                (&sa as *const libc::sockaddr_storage).cast(),
                len,
            ))?;
        }
        let (sa, len) = sockaddr(addr);
        check(libc::connect(
            fd,
            (&sa as *const libc::sockaddr_storage).cast(),
            len,
        ))?;
        Ok(stream)
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data, valid when zeroed, and large enough for
    // both sockaddr_in and sockaddr_in6.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin =
                    &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 =
                    &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    }
}

/// Sends `count` numbered lines (`NNNNNN ppp...`, about 140 bytes each, numbers from `first`)
/// from `talker` in one write and checks that `listener` receives each of them in order.
/// Returns any other lines the listener got meanwhile. Keeping batches small and in lock-step
/// means an attentive listener never has much unread, whatever the server's limits.
pub fn pump_batch(
    talker: &mut Client,
    listener: &mut Client,
    first: usize,
    count: usize,
) -> Vec<String> {
    let pad = "p".repeat(130);
    let text: String = (first..first + count)
        .map(|i| format!("{i:06} {pad}\n"))
        .collect();
    talker.send_raw(text.as_bytes());
    let mut other = Vec::new();
    let mut next = first;
    while next < first + count {
        let line = listener.line();
        let want = format!("{}: {next:06} {pad}", talker.name);
        if line == want {
            next += 1;
        } else if line.starts_with(&format!("{}: ", talker.name)) {
            panic!(
                "{} lost or garbled a line: wanted {want:?}, got {line:?}",
                listener.name
            );
        } else {
            other.push(line);
        }
    }
    other
}

/// A server (`--rate 0`, warnings captured from stderr) started with `wrapper` (e.g. `prlimit
/// --nofile=64:64`), or with none.
pub fn fd_limited_server(wrapper: &[&str]) -> Server {
    Launch::new(&["--rate", "0"])
        .wrapper(wrapper)
        .env("RUST_LOG", "warn")
        .capture_stderr()
        .start()
}

/// A server started with plenty of descriptors (so `--max-clients` stays as it is) whose limit
/// is then cut to 64 while it runs: `accept()` itself fails with EMFILE from then on.
pub fn server_out_of_descriptors() -> Server {
    let server = fd_limited_server(&[]);
    let pid = server.pid().to_string();
    let out = run_bounded(
        Command::new("prlimit").args(["--pid", &pid, "--nofile=64:64"]),
        None,
        WAIT,
    );
    assert!(out.status.success(), "prlimit --pid failed: {out:?}");
    server
}

/// Connects until a client is welcomed (a refusal is fair until the server has seen the
/// closes that free its descriptors; a user would retry) and returns how long that took.
/// Fails if it takes longer than `within`.
pub fn welcomed_within(addr: SocketAddr, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut late = Client::connect(addr);
        let first = late.try_line(Duration::from_secs(1));
        if first.as_deref() == Some(WELCOME) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "no welcome {:?} after freeing descriptors (got {first:?})",
            start.elapsed()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` (the `who` of the failure message) to exit and returns its status; fails
/// if it has not exited within `within`.
pub fn wait_exit(child: &mut Child, who: &str, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{who} did not exit in {within:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it holds or [`WAIT`] passes.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reads a field of `/proc/PID/status` in kB (e.g. "VmRSS").
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// CPU time (utime + stime from `/proc/PID/stat`) a process has used.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let after = &stat[stat.rfind(')').expect("malformed /proc stat") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// CPU time the server uses over `span` of wall time.
pub fn cpu_used_during(server: &Server, span: Duration) -> Duration {
    let before = server.cpu_time();
    thread::sleep(span);
    server.cpu_time().saturating_sub(before)
}

/// A child process killed by its PID if it is still running when dropped.
pub struct Reaper(pub Child);

impl Reaper {
    /// Sends a signal to the process (by the PID we spawned), as [`Server::signal`] does.
    pub fn signal(&self, sig: &str) {
        signal_pid(self.0.id(), sig);
    }

    /// Waits at most `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit within {within:?}",
                self.0.id()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs `cmd` with `input` on its stdin (or /dev/null), collecting stdout and stderr; kills it
/// and panics if it has not exited within `within`.
pub fn run_bounded(cmd: &mut Command, input: Option<&[u8]>, within: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = Reaper(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")));
    if let (Some(mut stdin), Some(input)) = (child.0.stdin.take(), input) {
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let collect = |mut from: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut all = Vec::new();
            let _ = from.read_to_end(&mut all);
            all
        })
    };
    let out = collect(Box::new(child.0.stdout.take().unwrap()));
    let err = collect(Box::new(child.0.stderr.take().unwrap()));
    let status = child.wait_exit(within);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs the server binary with `args` (stdin /dev/null, RUST_LOG unset) and waits for it to
/// exit; for command-line checks that end on their own.
pub fn run_cli(args: &[&str]) -> Output {
    run_bounded(
        Command::new(BIN).args(args).env_remove("RUST_LOG"),
        None,
        WAIT,
    )
}

/// True if `program` can be found on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Sends `sig` (a name such as "INT") to the process `pid`, which must be one the test started,
/// with `kill -s SIG PID`.
pub fn signal_pid(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -s {sig} {pid} failed");
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a program that must be told its
/// port. Another process may take it before the program binds it: callers that can, retry.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Reads everything from `from` on a thread, as text (invalid UTF-8 replaced); join the
/// handle once the writer has closed its end (e.g. after its process has exited).
pub fn read_all_text(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    })
}

/// Each client's thread joined: the client and the lines it read, once no client receives
/// anything more (in particular, no echo of its own lines).
pub fn joined_in_silence(
    handles: Vec<thread::JoinHandle<(Client, Vec<String>)>>,
) -> Vec<(Client, Vec<String>)> {
    let mut views: Vec<(Client, Vec<String>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (c, _) in views.iter_mut() {
        c.expect_silence(Duration::from_millis(100));
    }
    views
}
