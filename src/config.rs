//! Command-line flags to [`Config`]: every limit the server enforces, named, with its default
//! and the reason for it.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use getopts::{Matches, Options};

use crate::tls::Tls;

/// What the server does with the bytes a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The chat room: names, commands, broadcasts.
    Chat,
    /// RFC 862: every byte back as received. No banner, no framing, no cap.
    Echo,
    /// Every message answered with `received: <message>`.
    Ack,
}

/// Whether and where to answer UDP, beside TCP, in the same loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Udp {
    Off,
    /// The TCP port's number (also when `--port 0` picked it).
    SamePort,
    Port(u16),
}

/// The web door on the chat port (src/web.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Web {
    /// Origins besides this server's own whose pages may open a WebSocket (`*`: any).
    pub origins: Vec<String>,
    pub metrics: MetricsAccess,
}

/// Who may read `GET /metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Clients on this machine (127.0.0.1, ::1) only.
    Loopback,
    Anywhere,
    Off,
}

/// A node of a cluster: loopchat processes that share their rooms through nats-server
/// (src/cluster.rs; docs/protocol.md, "Several servers").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// This node's name: in its clients' names (`alice@NODE`) and its subjects.
    pub node: String,
    /// The NATS servers, tried in turn: each URL as given, and its address, resolved once at
    /// start-up (the loop never waits for a name server).
    pub buses: Vec<(String, SocketAddr)>,
}

/// Everything the server needs to know before it starts.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen. Loopback by default: a course server should not face the internet
    /// unless someone asks for it.
    pub listen: SocketAddr,
    /// Share the port with other processes that ask for it too (SO_REUSEPORT), one per core,
    /// the kernel spreading new connections among them. Off by default: it also lets an
    /// unrelated server started with it share the port without a word, where it would
    /// otherwise fail with the port in use.
    pub reuseport: bool,
    pub mode: Mode,
    pub udp: Udp,
    /// The longest line a client may send, in bytes without its LF or CRLF. 200 is the
    /// coursework's message size (`TAM_BUFFER = 200`).
    pub max_line: usize,
    /// Connections beyond this get a refusal line. Lowered at start-up if the process may not
    /// open that many descriptors.
    pub max_clients: usize,
    /// Connections the descriptor limit leaves room for, leaving ones included; set at
    /// start-up (not a flag): a client that has left but whose socket still drains takes no
    /// place under `max_clients`, only under this.
    pub max_sockets: usize,
    /// Connections allowed from one address (0 = no limit). 127.0.0.1 and ::1 are exempt so
    /// that local tools and load tests work, unless `limit_loopback`.
    pub max_per_ip: usize,
    /// New connections per second from one address, in bursts of twice that (0 = no limit).
    /// A flood of short connections otherwise brings a fresh `--rate` burst with each one.
    pub connect_rate: u32,
    /// 127.0.0.1 and ::1 count against `max_per_ip` and `connect_rate` like any address: for a
    /// server behind a local proxy, and for tests of the limits.
    pub limit_loopback: bool,
    /// TCP keepalive: the first probe after this much silence, so that a peer whose machine
    /// vanished (no FIN, no RST) loses its slot and its name; `None` turns it off.
    pub keepalive: Option<Duration>,
    /// Bytes the server will hold for one client that is not reading. Past this the client is
    /// dropped, so one stalled reader can never make the server grow without bound.
    pub max_pending: usize,
    /// Lines per second a client may send (bursts of twice that); 0 turns the limit off.
    pub rate: u32,
    /// Drop clients that send nothing for this long; `None` keeps them forever.
    pub idle_timeout: Option<Duration>,
    /// Quiet time after which a line without a newline is taken as complete; `None` waits for
    /// the newline (or the end of the stream).
    pub flush_partial: Option<Duration>,
    /// Join, leave and rename lines go to the clients only while the room holds at most this
    /// many members; the transcript always gets them.
    pub announce_limit: usize,
    /// Messages each room keeps for those who join it later (0 = none); bounded in bytes too
    /// ([`rooms::HISTORY_BYTES`]).
    pub history: usize,
    /// The web door (the chat page, WebSocket clients, `/metrics`) in chat mode; `None` with
    /// `--no-web`, or in echo and ack mode.
    pub web: Option<Web>,
    /// TLS on the chat port (`--tls-cert`, `--tls-key`), chat mode only: a client that opens
    /// with a ClientHello gets a TLS session.
    pub tls: Option<Tls>,
    /// A node of a cluster (`--nats`); `None` alone.
    pub cluster: Option<Cluster>,
    /// The first line every client receives.
    pub welcome: String,
    /// Read operator commands from standard input.
    pub console: bool,
    /// Print only the `Listening on` line on standard output.
    pub quiet: bool,
}

/// The defaults, chosen so that `loopchat-server` with no flags is a sensible course server.
pub mod defaults {
    pub const PORT: u16 = 1234;
    pub const MAX_LINE: usize = 200;
    /// Redis's default `maxclients`.
    pub const MAX_CLIENTS: usize = 10_000;
    /// ergo's default `max-concurrent-connections` per address.
    pub const MAX_PER_IP: usize = 16;
    /// 256 KiB is about 1,300 full-size lines on top of what the kernel already buffers for the
    /// socket: seconds of a busy room, and room for a long `/who`. 10,000 clients that all stall
    /// at once would hold 2.5 GiB in the server; the kernel's own buffers come on top (on
    /// loopback it grows a stalled socket's send buffer to about 4 MB), and a stalled client is
    /// dropped anyway.
    pub const MAX_PENDING: usize = 256 * 1024;
    /// Faster than anyone types, slower than any script that floods.
    pub const RATE: u32 = 10;
    /// A person reconnecting, or a handful of people behind one NAT, stay far below it; a
    /// script opening connections in a loop does not (ergo allows 32 per 10 minutes).
    pub const CONNECT_RATE: u32 = 10;
    /// Redis's `tcp-keepalive` is 300 s; a chat user expects a vanished peer's name back in a
    /// couple of minutes. Linux's own default (7,200 s) is far too long for a name.
    pub const KEEPALIVE_SECS: u64 = 60;
    /// Long enough for one `send()` of a line to arrive in pieces, short enough to feel instant.
    pub const FLUSH_PARTIAL_MS: u64 = 100;
    /// A room you can still follow join by join.
    pub const ANNOUNCE_LIMIT: usize = 100;
    /// A screenful and more: what someone walking into a room needs to follow it.
    pub const HISTORY: usize = 50;
    pub const WELCOME: &str = "Welcome to the best chat in the universe!";
}

/// Room-wide flow control (src/engine/flow.rs; docs/protocol.md, "Flow control"): the server
/// takes new input only while the output it owes to the clients that keep up is within these
/// marks. Not flags: they bound memory and fairness, not policy, and the reasons below hold for
/// any room.
pub mod flow {
    use std::time::Duration;

    /// Input stops when this much is owed, in all, to clients that keep up. It is the most a
    /// broadcast burst can hold in the server (plus one line per member), and it is still
    /// large enough that a turn's writes carry many lines each: at 1,000 members it is 16 KiB
    /// each, about 200 chat lines. The trade-off, measured: twice this let the room flood's 500
    /// readers take the server to 78 MB (16 MiB: 44 MB); with 320 lines in flight to 1,000
    /// members it splits a turn's writes in two, about a third more CPU per delivery.
    pub const ROOM_HIGH_WATER: usize = 16 << 20;
    /// Input resumes below this: half the high mark, so that a room at its limit takes input in
    /// batches, not a line at a time on every write.
    pub const ROOM_LOW_WATER: usize = 8 << 20;
    /// Input also stops while any client that keeps up is owed this much. A reader that keeps
    /// up therefore never gets near `--max-pending`: only one that stops reading does.
    pub const MEMBER_HIGH_WATER: usize = 64 << 10;
    /// A client whose socket has refused bytes for this long, its queue never emptying in
    /// between, is behind: the room stops waiting for it (it is dropped at `--max-pending` as
    /// before). A reader on loopback or a LAN empties its queue on every turn; this only has to
    /// be long next to a turn.
    pub const BEHIND_AFTER: Duration = Duration::from_millis(250);

    /// The member's mark, never more than half of `--max-pending`, so that a small
    /// `--max-pending` still leaves room between holding input and dropping a client.
    pub fn member_high_water(max_pending: usize) -> usize {
        MEMBER_HIGH_WATER.min(max_pending / 2).max(1)
    }
}

/// Rooms (src/chat.rs, src/room.rs; docs/protocol.md, "Rooms"). Not flags: they bound memory
/// and the length of lines such as `/rooms`, whatever the server is used for.
pub mod rooms {
    /// The room every client starts in. Its lines keep the form they had when it was the only
    /// room: the coursework clients, and the scripts that grade them, read them.
    pub const LOBBY: &str = "#lobby";
    /// Rooms one client may be in at once, the lobby included: enough to follow several
    /// conversations, few enough that joining them all replays a bounded amount of history.
    pub const PER_CLIENT: usize = 10;
    /// Rooms on the server at once: with [`HISTORY_BYTES`] each, at most 16 MiB of history.
    pub const MAX: usize = 1024;
    /// The longest room name after its `#` (IRC allows 50 with the `#`; 32 fits a line prefix).
    pub const MAX_NAME: usize = 32;
    /// The most a room's history holds, counted as each message's text and author plus
    /// [`HISTORY_ENTRY_OVERHEAD`]: 50 full-size lines fit. Also the most one join replays.
    pub const HISTORY_BYTES: usize = 16 << 10;
    /// What a message in the ring is counted as beyond its text and author: more than the rest
    /// of its replayed line (`[#room] `, `[history HH:MM:SS] `, `: `, the newline: 60 bytes at
    /// most) and than its fields and allocation headers in memory, so that the byte bound holds
    /// for the ring's memory and for what a replay sends, however short the messages.
    pub const HISTORY_ENTRY_OVERHEAD: usize = 64;
    /// The most `--history` may ask for; the byte bound is reached first with long lines.
    pub const MAX_HISTORY: usize = 1000;
    /// Rooms `/rooms` lists by name; more are counted.
    pub const LISTED: usize = 100;

    /// The most one join (or `/history`) replays, in bytes: [`HISTORY_BYTES`], but never more
    /// than a quarter of `--max-pending`. A joiner's queue is below the member's flow-control
    /// mark (half of `--max-pending`) whenever its next line is read, so replaying can never
    /// take a reading client past `--max-pending` and get it dropped as too slow.
    pub fn replay_bytes(max_pending: usize) -> usize {
        HISTORY_BYTES.min(max_pending / 4)
    }
}

/// The web door's timing (src/web.rs; docs/protocol.md, "The web door").
pub mod web {
    use std::time::Duration;

    /// With the web door open, how long a new connection that has sent nothing waits for its
    /// welcome: a browser sends its request at once, a chat client waits to be greeted, and the
    /// greeting cannot be taken back once sent. A browser's request arrives with the end of the
    /// TCP handshake, so this only has to be long next to a packet's delay on the same path.
    pub const GREET: Duration = Duration::from_millis(50);
    /// How long a request head may take to arrive, whole: a client that sends it a byte at a
    /// time (slowloris) loses its connection after this.
    pub const HANDSHAKE: Duration = Duration::from_secs(5);
}

/// TLS's timing (src/tls.rs; docs/protocol.md, "TLS").
pub mod tls {
    use std::time::Duration;

    /// How long a TLS handshake may take, from the ClientHello to the client's Finished (and,
    /// with the web door, its request head too): one round trip and a little crypto, so a
    /// client still in the middle of it after this is stalling on purpose. Also how long a
    /// silent connection waits for a ClientHello under `--tls-only`. nats-server allows 2 s;
    /// this is the web door's deadline, for one rule on the port.
    pub const HANDSHAKE: Duration = super::web::HANDSHAKE;
    /// With TLS on, how long a new connection that has sent nothing waits for its welcome
    /// (`web::GREET` without TLS): a greeting sent before a late ClientHello breaks that
    /// client's handshake for good, and a browser on a busy machine, or a client whose first
    /// flight crosses a slow link, can be later than 50 ms. A person with `nc` does not notice
    /// a quarter of a second.
    pub const GREET: Duration = Duration::from_millis(250);
}

impl Config {
    /// How long a new connection that has sent nothing waits for its welcome: no time alone,
    /// the web door's wait with it open, longer with TLS on.
    pub fn greet_wait(&self) -> Duration {
        match (&self.tls, &self.web) {
            (Some(_), _) => tls::GREET,
            (None, Some(_)) => web::GREET,
            (None, None) => Duration::ZERO,
        }
    }
}

/// The cluster's timing (src/cluster.rs, src/engine/bus.rs; docs/protocol.md, "Several
/// servers"). Not flags: every node of a cluster must agree on them.
pub mod cluster {
    use std::time::Duration;

    /// NATS's own port.
    pub const DEFAULT_PORT: u16 = 4222;
    /// A node publishes its presence this often even when nothing changed: the other nodes'
    /// sign that it is alive, and what repairs a dump that was lost.
    pub const HEARTBEAT: Duration = Duration::from_secs(2);
    /// A change of presence waits this long for more: a crowd joining at once is one dump.
    pub const PRESENCE_DELAY: Duration = Duration::from_millis(100);
    /// A node not heard from for this long (three heartbeats and a half) is gone: its clients
    /// leave `/who` and `/rooms`.
    pub const NODE_TIMEOUT: Duration = Duration::from_millis(7_000);
    /// The first wait before connecting to the bus again, doubled after each failure up to
    /// [`RECONNECT_MAX`], each wait with up to half of it again at random, so that the nodes
    /// of a cluster do not all knock at once when the bus returns.
    pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
    pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
    /// How long the bus has to answer a connection (INFO, then the PONG after CONNECT).
    pub const HANDSHAKE: Duration = Duration::from_secs(5);
    /// Bytes read from the bus per turn before clients get theirs: far more than any client's
    /// share, since nats-server cuts a subscriber that falls behind (its slow-consumer limit).
    pub const READ_SHARE: usize = 1 << 20;
    /// What may wait for the bus to take it. Past this, gossip is dropped and counted: a bus
    /// that cannot keep up must not grow the node's memory.
    pub const MAX_OWED: usize = 8 << 20;
}

/// Why the command line could not be used, printed above the usage text.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the command line asked for.
// Made once, at start-up: boxing the config would save nothing worth its indirection.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Run(Config),
    Help(String),
    Version,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optopt("H", "host", "address to listen on (IPv4 or IPv6)", "ADDR");
    o.optopt("p", "port", "TCP port, 0 for any free port", "PORT");
    o.optflag(
        "",
        "reuseport",
        "share the port (and --udp's) with other loopchat processes started with it, the \
         kernel spreading clients among them; any server started with it shares the port \
         silently, where it would fail with the port in use",
    );
    o.optopt(
        "m",
        "mode",
        "chat (default), echo (RFC 862) or ack (received: ...)",
        "MODE",
    );
    o.optflag("", "udp", "answer UDP too, on the TCP port's number");
    o.optopt(
        "",
        "udp-port",
        "answer UDP on this port (0 = any free one)",
        "PORT",
    );
    o.optopt("", "max-line", "longest line in bytes", "BYTES");
    o.optopt("", "max-clients", "most clients at once", "N");
    o.optopt(
        "",
        "max-per-ip",
        "most clients per address, 0 = no limit (127.0.0.1 and ::1 exempt)",
        "N",
    );
    o.optopt(
        "",
        "connect-rate",
        "new connections per second per address (bursts of 2N), 0 = no limit",
        "N",
    );
    o.optflag(
        "",
        "limit-loopback",
        "count 127.0.0.1 and ::1 against --max-per-ip and --connect-rate too",
    );
    o.optopt(
        "",
        "keepalive",
        "TCP keepalive: first probe after SECS of silence, 0 = off",
        "SECS",
    );
    o.optopt(
        "",
        "max-pending",
        "unread bytes held per client before it is dropped",
        "BYTES",
    );
    o.optopt(
        "",
        "rate",
        "lines per second per client (bursts of 2N), 0 = no limit",
        "N",
    );
    o.optopt(
        "",
        "idle-timeout",
        "drop clients silent this long, 0 = never",
        "SECS",
    );
    o.optopt(
        "",
        "flush-partial",
        "deliver a line without newline after this quiet, 0 = never",
        "MS",
    );
    o.optopt(
        "",
        "announce-limit",
        "announce joins and leaves only in rooms up to N",
        "N",
    );
    o.optopt(
        "",
        "history",
        "messages each room keeps for newcomers, 0 = none",
        "K",
    );
    o.optflag(
        "",
        "no-web",
        "no chat page, WebSocket clients or /metrics on the chat port",
    );
    o.optmulti(
        "",
        "ws-origin",
        "also let pages from ORIGIN (e.g. https://example.org, or *) open a chat",
        "ORIGIN",
    );
    o.optopt(
        "",
        "metrics",
        "who may GET /metrics: loopback (default), any, or off",
        "WHO",
    );
    o.optopt(
        "",
        "tls-cert",
        "TLS on the chat port with this certificate chain (PEM; `make cert`)",
        "FILE",
    );
    o.optopt("", "tls-key", "the private key of --tls-cert (PEM)", "FILE");
    o.optflag(
        "",
        "tls-only",
        "refuse clients that do not start TLS (needs --tls-cert)",
    );
    o.optmulti(
        "",
        "nats",
        "share rooms with other loopchat servers through this NATS server (repeatable)",
        "nats://HOST:PORT",
    );
    o.optopt(
        "",
        "node",
        "this server's name in a cluster (default: a random one)",
        "NAME",
    );
    o.optopt("", "welcome", "the first line each client receives", "TEXT");
    o.optflag("", "no-console", "do not read operator commands from stdin");
    o.optflag("q", "quiet", "print only the listening address on stdout");
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

/// The usage text, with every flag and its default.
pub fn usage(program: &str) -> String {
    let brief = format!(
        "Usage: {program} [options]\n\n\
         A chat server in one event loop. Talk to it with `nc localhost {}`.\n\
         Defaults: --max-line {} --max-clients {} --max-per-ip {} --connect-rate {} \
         --keepalive {} --max-pending {} --rate {} --flush-partial {} --announce-limit {} --history {}",
        defaults::PORT,
        defaults::MAX_LINE,
        defaults::MAX_CLIENTS,
        defaults::MAX_PER_IP,
        defaults::CONNECT_RATE,
        defaults::KEEPALIVE_SECS,
        defaults::MAX_PENDING,
        defaults::RATE,
        defaults::FLUSH_PARTIAL_MS,
        defaults::ANNOUNCE_LIMIT,
        defaults::HISTORY,
    );
    options().usage(&brief)
}

/// Parses the arguments after the program name.
pub fn parse<S: AsRef<str>>(program: &str, args: &[S]) -> Result<Parsed, UsageError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let m = options()
        .parse(&args)
        .map_err(|e| UsageError(e.to_string()))?;
    if m.opt_present("h") {
        return Ok(Parsed::Help(usage(program)));
    }
    if m.opt_present("V") {
        return Ok(Parsed::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(UsageError(format!("unexpected argument: {extra}")));
    }
    let host: IpAddr = match m.opt_str("H") {
        None => IpAddr::from([127, 0, 0, 1]),
        Some(h) if h == "localhost" => IpAddr::from([127, 0, 0, 1]),
        Some(h) => h
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| UsageError(format!("--host: not an IP address: {h}")))?,
    };
    let mode = match m.opt_str("m").as_deref() {
        None | Some("chat") => Mode::Chat,
        Some("echo") => Mode::Echo,
        Some("ack") => Mode::Ack,
        Some(other) => {
            return Err(UsageError(format!(
                "--mode: unknown mode {other} (chat, echo or ack)"
            )));
        }
    };
    let udp = match (m.opt_present("udp"), m.opt_str("udp-port")) {
        (_, Some(_)) => Udp::Port(number(&m, "udp-port", 0)?),
        (true, None) => Udp::SamePort,
        (false, None) => Udp::Off,
    };
    let max_line = number(&m, "max-line", defaults::MAX_LINE)?;
    if max_line == 0 {
        return Err(UsageError("--max-line: must be at least 1".into()));
    }
    let secs: u64 = number(&m, "idle-timeout", 0)?;
    let ms: u64 = number(&m, "flush-partial", defaults::FLUSH_PARTIAL_MS)?;
    let keepalive: u64 = number(&m, "keepalive", defaults::KEEPALIVE_SECS)?;
    let metrics = match m.opt_str("metrics").as_deref() {
        None | Some("loopback") => MetricsAccess::Loopback,
        Some("any") => MetricsAccess::Anywhere,
        Some("off") => MetricsAccess::Off,
        Some(other) => {
            return Err(UsageError(format!(
                "--metrics: {other}: use loopback, any or off"
            )));
        }
    };
    let web = (mode == Mode::Chat && !m.opt_present("no-web")).then(|| Web {
        origins: m.opt_strs("ws-origin"),
        metrics,
    });
    let tls = match (m.opt_str("tls-cert"), m.opt_str("tls-key")) {
        (None, None) if m.opt_present("tls-only") => {
            return Err(UsageError(
                "--tls-only needs --tls-cert and --tls-key".into(),
            ));
        }
        (None, None) => None,
        (Some(cert), Some(key)) if mode == Mode::Chat => Some(
            Tls::load(Path::new(&cert), Path::new(&key), m.opt_present("tls-only"))
                .map_err(UsageError)?,
        ),
        (Some(_), Some(_)) => {
            return Err(UsageError("--tls-cert: TLS is for chat mode".into()));
        }
        _ => {
            return Err(UsageError("--tls-cert and --tls-key go together".into()));
        }
    };
    let cluster = cluster(&m, mode)?;
    let history = number(&m, "history", defaults::HISTORY)?;
    if history > rooms::MAX_HISTORY {
        return Err(UsageError(format!(
            "--history: at most {}",
            rooms::MAX_HISTORY
        )));
    }
    Ok(Parsed::Run(Config {
        listen: SocketAddr::new(host, number(&m, "port", defaults::PORT)?),
        reuseport: m.opt_present("reuseport"),
        mode,
        udp,
        max_line,
        max_clients: number(&m, "max-clients", defaults::MAX_CLIENTS)?,
        max_sockets: usize::MAX,
        max_per_ip: number(&m, "max-per-ip", defaults::MAX_PER_IP)?,
        connect_rate: number(&m, "connect-rate", defaults::CONNECT_RATE)?,
        limit_loopback: m.opt_present("limit-loopback"),
        keepalive: (keepalive > 0).then(|| Duration::from_secs(keepalive)),
        max_pending: number(&m, "max-pending", defaults::MAX_PENDING)?,
        rate: number(&m, "rate", defaults::RATE)?,
        idle_timeout: (secs > 0).then(|| Duration::from_secs(secs)),
        flush_partial: (ms > 0).then(|| Duration::from_millis(ms)),
        announce_limit: number(&m, "announce-limit", defaults::ANNOUNCE_LIMIT)?,
        history,
        web,
        tls,
        cluster,
        welcome: m
            .opt_str("welcome")
            .unwrap_or_else(|| defaults::WELCOME.into()),
        console: !m.opt_present("no-console"),
        quiet: m.opt_present("q"),
    }))
}

/// `--nats` and `--node`.
fn cluster(m: &Matches, mode: Mode) -> Result<Option<Cluster>, UsageError> {
    let urls = m.opt_strs("nats");
    if urls.is_empty() {
        if m.opt_present("node") {
            return Err(UsageError("--node needs --nats".into()));
        }
        return Ok(None);
    }
    if mode != Mode::Chat {
        return Err(UsageError("--nats: a cluster is for chat mode".into()));
    }
    let node = match m.opt_str("node") {
        Some(node) if is_valid_node(&node) => node,
        Some(node) => {
            return Err(UsageError(format!(
                "--node: {node}: use 1 to 16 of a-z 0-9 _ -"
            )));
        }
        None => random_node(),
    };
    let mut buses = Vec::new();
    for url in urls {
        let host_port = url.strip_prefix("nats://").unwrap_or(&url);
        let target = if host_port
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host_port.to_owned()
        } else {
            format!("{host_port}:{}", cluster::DEFAULT_PORT)
        };
        let addr = target
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| UsageError(format!("--nats {url}: cannot find that host")))?;
        buses.push((url, addr));
    }
    Ok(Some(Cluster { node, buses }))
}

/// A node name: a NATS subject token and the end of every client name, so short and plain.
fn is_valid_node(node: &str) -> bool {
    (1..=16).contains(&node.len())
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Six hex digits from the process's random hasher keys: enough that two nodes started without
/// `--node` do not meet by chance (one in 16 million).
fn random_node() -> String {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::process::id());
    format!("{:06x}", bits & 0xff_ffff)
}

/// Reads a numeric option, naming the flag when the value is not a number.
fn number<T: std::str::FromStr>(m: &Matches, name: &str, default: T) -> Result<T, UsageError> {
    match m.opt_str(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            // Single-letter aliases appear in messages under their long name.
            UsageError(format!("--{name}: not a valid number: {v}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Config {
        match parse("loopchat-server", args) {
            Ok(Parsed::Run(c)) => c,
            _ => panic!("expected a config for {args:?}"),
        }
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = run(&[]);
        assert_eq!(c.listen, "127.0.0.1:1234".parse().unwrap());
        assert_eq!((c.max_line, c.max_clients, c.rate), (200, 10_000, 10));
        assert_eq!(c.flush_partial, Some(Duration::from_millis(100)));
        assert_eq!(c.idle_timeout, None);
        assert!(c.console && !c.quiet);
        assert_eq!((c.mode, c.udp), (Mode::Chat, Udp::Off));
        assert!(!c.reuseport);
        assert_eq!(c.welcome, "Welcome to the best chat in the universe!");
    }

    #[test]
    fn ipv6_and_zero_mean_what_they_say() {
        let c = run(&[
            "-H",
            "::1",
            "-p",
            "0",
            "--flush-partial",
            "0",
            "--rate",
            "0",
        ]);
        assert_eq!(c.listen, "[::1]:0".parse().unwrap());
        assert_eq!(c.flush_partial, None);
        assert_eq!(c.rate, 0);
    }

    #[test]
    fn modes_and_udp() {
        let c = run(&["-m", "echo", "--udp"]);
        assert_eq!((c.mode, c.udp), (Mode::Echo, Udp::SamePort));
        let c = run(&["--mode", "ack", "--udp-port", "5001"]);
        assert_eq!((c.mode, c.udp), (Mode::Ack, Udp::Port(5001)));
    }

    #[test]
    fn reuseport_is_asked_for_and_goes_with_udp() {
        let c = run(&["--reuseport", "--udp", "-H", "::1"]);
        assert!(c.reuseport);
        assert_eq!(c.udp, Udp::SamePort);
        assert!(matches!(parse("s", &["-h"]), Ok(Parsed::Help(u)) if u.contains("--reuseport")));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["-p", "abc"][..],
            &["--max-line", "x"],
            &["--max-line", "0"],
            &["-p", "70000"],
            &["--host", "nowhere"],
            &["--mode", "telepathy"],
            &["--udp-port", "x"],
            &["--history", "1001"],
            &["--metrics", "everyone"],
            &["--tls-only"],
            &["--node", "a"],
            &["--nats", "nats://127.0.0.1:4222", "--node", "Bad.Name"],
            &["--nats", "127.0.0.1:4222", "-m", "echo"],
            &["--tls-cert", "cert.pem"],
            &[
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                "/nonexistent/key.pem",
            ],
            &["--bogus"],
            &["stray"],
        ] {
            assert!(parse("s", args).is_err(), "{args:?} should be refused");
        }
    }

    #[test]
    fn a_node_of_a_cluster() {
        let c = run(&[
            "--nats",
            "nats://127.0.0.1:4333",
            "--nats",
            "127.0.0.1",
            "--node",
            "a-1",
        ]);
        let cluster = c.cluster.expect("a cluster");
        assert_eq!(cluster.node, "a-1");
        let addrs: Vec<String> = cluster.buses.iter().map(|(_, a)| a.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:4333", "127.0.0.1:4222"]);
        let random = run(&["--nats", "127.0.0.1:4222"]).cluster.unwrap().node;
        assert!(is_valid_node(&random), "{random}");
        assert!(run(&[]).cluster.is_none());
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(parse("s", &["-h"]), Ok(Parsed::Help(u)) if u.contains("--max-pending")));
        assert!(matches!(parse("s", &["--version"]), Ok(Parsed::Version)));
    }
}
