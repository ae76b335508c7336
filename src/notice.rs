//! Every line the server says in its own voice, in one place. Pure.
//!
//! Clients and scripts read these lines, and docs/protocol.md quotes each of them: keeping them
//! together lets a test hold the two in agreement. Notices start with `[SERVER] `, errors with
//! `[SERVER] Error: `.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use crate::engine::stats::Counters;

/// The first line on standard output; tests and scripts read the port from it.
pub fn listening(addr: SocketAddr) -> String {
    format!("[SERVER] Listening on {addr}")
}

/// What a newcomer reads right after the welcome.
pub fn intro(name: &str) -> String {
    format!("[SERVER] You are {name}. Change your name with /nick NAME; /help lists the commands.")
}

pub fn connected(name: &str) -> String {
    format!("[SERVER] Client: {name} connected!")
}

/// A client left on its own (`None`) or was dropped by the server (the reason).
pub fn disconnected(name: &str, reason: Option<&str>) -> String {
    match reason {
        None => format!("[SERVER] Client: {name} disconnected."),
        Some(why) => format!("[SERVER] Client: {name} disconnected ({why})"),
    }
}

pub fn renamed(old: &str, new: &str) -> String {
    format!("[SERVER] {old} is now known as {new}")
}

pub fn you_are_now(name: &str) -> String {
    format!("[SERVER] You are now known as {name}")
}

/// At most this many names are listed by `/who`; a room of thousands gets a count instead of a
/// line of hundreds of kilobytes.
pub const WHO_MAX_NAMES: usize = 100;

/// `/who`: `names` holds at most [`WHO_MAX_NAMES`] of the `total` members, sorted.
pub fn who(names: &[&str], total: usize) -> String {
    let listed = names.join(", ");
    match total - names.len() {
        0 => format!("[SERVER] {total} online: {listed}"),
        more => format!("[SERVER] {total} online: {listed}, and {more} more"),
    }
}

/// `/who #room`, like [`who`].
pub fn who_in(room: &str, names: &[&str], total: usize) -> String {
    let listed = names.join(", ");
    match total - names.len() {
        0 => format!("[SERVER] {total} in {room}: {listed}"),
        more => format!("[SERVER] {total} in {room}: {listed}, and {more} more"),
    }
}

// Rooms. A line about a room is shown with `[#room] ` before it, except in the lobby (see
// `event.rs`): these are the words after that.

/// Someone joined the room.
pub fn joined(name: &str) -> String {
    format!("[SERVER] {name} joined")
}

/// Someone left the room with `/part`.
pub fn parted(name: &str) -> String {
    format!("[SERVER] {name} left")
}

/// The first line a joiner gets: then the topic, the history, and the end of the replay.
pub fn you_joined(room: &str, members: usize) -> String {
    format!("[SERVER] You joined {room} ({members} here); what you type goes to {room}")
}

/// `/join` of a room the client is in already.
pub fn typing_in(room: &str) -> String {
    format!("[SERVER] What you type goes to {room} now")
}

pub fn you_left(room: &str, now_in: &str) -> String {
    format!("[SERVER] You left {room}; what you type goes to {now_in} now")
}

pub fn topic_is(topic: &str) -> String {
    format!("[SERVER] Topic: {topic}")
}

pub const NO_TOPIC: &str = "[SERVER] No topic is set";

pub fn topic_set(name: &str, topic: &str) -> String {
    format!("[SERVER] {name} set the topic: {topic}")
}

/// After a replay of a room's history, whether or not it had anything to replay.
pub fn end_of_history(messages: usize) -> String {
    let s = plural(messages);
    format!("[SERVER] End of history ({messages} message{s})")
}

/// The first line of `/rooms`.
pub fn rooms(count: usize) -> String {
    let s = plural(count);
    format!("[SERVER] {count} room{s}:")
}

/// The `s` of a count that is not one.
fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// One room in `/rooms`.
pub fn room_entry(room: &str, members: usize, topic: Option<&str>) -> String {
    match topic {
        Some(topic) => format!("[SERVER]   {room} ({members}): {topic}"),
        None => format!("[SERVER]   {room} ({members})"),
    }
}

/// The last line of `/rooms` when there are more rooms than it lists.
pub fn more_rooms(more: usize) -> String {
    format!("[SERVER]   and {more} more")
}

pub const ROOM_NAME_INVALID: &str =
    "[SERVER] Error: invalid room name: use # and 1 to 32 of A-Z a-z 0-9 _ -";

pub fn too_many_rooms(most: usize) -> String {
    format!("[SERVER] Error: you are in {most} rooms, the most allowed: /part one first")
}

pub const SERVER_ROOMS_FULL: &str =
    "[SERVER] Error: the server has all the rooms it allows, join one of /rooms";

pub fn no_such_room(room: &str) -> String {
    format!("[SERVER] Error: no such room: {room} (try /rooms)")
}

pub fn not_in_room(room: &str) -> String {
    format!("[SERVER] Error: you are not in {room} (try /join {room})")
}

pub const LAST_ROOM: &str = "[SERVER] Error: you cannot leave your last room: /join another first";

pub fn private_from(sender: &str, text: &str) -> String {
    format!("[PM from {sender}] {text}")
}

pub fn private_to(recipient: &str, text: &str) -> String {
    format!("[PM to {recipient}] {text}")
}

pub const HELP: [&str; 14] = [
    "[SERVER] Commands:",
    "[SERVER]   /nick NAME          change your name (1 to 16 of A-Z a-z 0-9 _ -)",
    "[SERVER]   /who [#ROOM]        who is online, or in a room",
    "[SERVER]   /msg NAME TEXT      a private message",
    "[SERVER]   /me TEXT            an action: * you TEXT",
    "[SERVER]   /join #ROOM         join a room (or switch to it): what you type goes there",
    "[SERVER]   /part [#ROOM]       leave a room (the one you type in)",
    "[SERVER]   /rooms              the rooms, their members and topics",
    "[SERVER]   /topic [#ROOM] [TEXT]",
    "[SERVER]                       show a room's topic, or set it",
    "[SERVER]   /history [#ROOM]    a room's last messages again",
    "[SERVER]   /quit               leave (so do exit, exit(), :q, #LOGOUT and salir)",
    "[SERVER]   //TEXT              a message that starts with /",
    "[SERVER] You start in #lobby; lines from other rooms start with [#ROOM].",
];

pub const CONSOLE_HELP: [&str; 9] = [
    "[SERVER] Console: a line of text goes to every client as SERVER: TEXT",
    "[SERVER]   /say #ROOM TEXT     a line for one room",
    "[SERVER]   /who [#ROOM]        who is online, or in a room",
    "[SERVER]   /rooms              the rooms, their members and topics",
    "[SERVER]   /stats              clients, traffic, flow control, drops",
    "[SERVER]   /kick NAME          disconnect a client",
    "[SERVER]   /shutdown           notify everyone and stop",
    "[SERVER]   //TEXT              send a line that starts with /",
    "[SERVER] Lines of rooms other than #lobby start with [#ROOM].",
];

pub const BYE: &str = "[SERVER] Bye!";
pub const SHUTTING_DOWN: &str = "[SERVER] Server shutting down.";
pub const KICKED: &str = "[SERVER] You have been kicked by the operator.";
/// The reason shown when the operator kicks a client.
pub const KICK_REASON: &str = "kicked by operator";

pub const SERVER_FULL: &str = "[SERVER] Error: server full, try again later";
pub const TOO_MANY_FROM_ADDRESS: &str =
    "[SERVER] Error: too many connections from your address, try again later";
pub const TOO_MANY_NEW_CONNECTIONS: &str =
    "[SERVER] Error: too many new connections from your address, try again in a moment";
pub const NOT_HTTP: &str =
    "[SERVER] Error: this is a chat server, not a web server: connect with nc or loopchat-client";
pub const NOT_TLS: &str =
    "[SERVER] Error: this is a plain-text chat server, not TLS: connect with nc or loopchat-client";
/// To a plain-text client under `--tls-only`.
pub const TLS_ONLY: &str =
    "[SERVER] Error: this server takes TLS only: connect with loopchat-client --tls";
/// To a client that starts TLS after it was greeted in plain text.
pub const TLS_TOO_LATE: &str =
    "[SERVER] Error: TLS must start as soon as you connect, before the server's greeting";

pub fn too_long(max_line: usize) -> String {
    format!("[SERVER] Error: message too long (max {max_line} bytes)")
}

pub fn idle(secs: u64) -> String {
    format!("[SERVER] Error: idle for {secs} s, disconnecting")
}

/// The reason given when a client is dropped for not reading.
pub fn too_slow(unread: usize) -> String {
    format!("too slow: {unread} bytes unread")
}

/// The reason given when a client is dropped for silence.
pub fn idle_reason(secs: u64) -> String {
    format!("idle for {secs} s")
}

pub fn unknown_command(name: &str) -> String {
    format!("[SERVER] Error: unknown command /{name} (try /help)")
}

pub fn usage(usage: &str) -> String {
    format!("[SERVER] Error: usage: {usage}")
}

pub fn name_taken(name: &str) -> String {
    format!("[SERVER] Error: name {name} is taken")
}

pub fn name_reserved(name: &str) -> String {
    format!("[SERVER] Error: name {name} is reserved")
}

pub const NAME_INVALID: &str = "[SERVER] Error: invalid name: use 1 to 16 of A-Z a-z 0-9 _ -";

pub fn already_named(name: &str) -> String {
    format!("[SERVER] Error: you are already {name}")
}

pub fn no_such_user(name: &str) -> String {
    format!("[SERVER] Error: no such user: {name} (try /who)")
}

/// The acknowledgement of `--mode ack` and of UDP messages.
pub fn received(text: &str) -> String {
    format!("received: {text}")
}

/// The transcript's line when the bus link is up: this node's name and where its rooms go.
/// (Whether other names end with it too, the line on how names are kept says.)
pub fn bus_up(node: &str, bus: &str) -> String {
    format!("[SERVER] Node {node}: rooms shared through {bus}; guests here are guestN@{node}")
}

/// The transcript's line when the bus link is lost.
pub fn bus_lost(why: &str) -> String {
    format!("[SERVER] Lost the bus ({why}); connecting again")
}

/// To every client when the bus link is lost.
pub const BUS_LOST: &str = "[SERVER] Lost touch with the other servers: until it is back, only people on this server hear you";

/// To every client when the bus link is back.
pub fn bus_back(secs: u64, unsent: u64) -> String {
    format!(
        "[SERVER] In touch with the other servers again after {secs} s: {unsent} messages said here meanwhile did not reach them, nor theirs you"
    )
}

/// The transcript's line when another node's sequence numbers skip some.
pub fn bus_missed(missed: u64, node: &str) -> String {
    format!("[SERVER] {missed} messages from node {node} were lost on the bus")
}

/// The transcript's line once the bus has said that names are claimed in its bucket.
pub const NAMES_CLAIMED: &str =
    "[SERVER] Names are claimed across the cluster (JetStream bucket loopchat-names)";
/// The transcript's line once the bus has said it has no JetStream.
pub const NAMES_QUALIFIED: &str =
    "[SERVER] The bus has no JetStream: names are qualified by their server (alice@node)";
/// To a client whose `/nick` cannot be checked with the other servers now.
pub const NAMES_UNCHECKED: &str =
    "[SERVER] Error: cannot check names with the other servers now; try again in a moment";

/// To a client whose name another server took while the link was down.
pub fn name_lost(name: &str) -> String {
    format!("[SERVER] Your name {name} was taken on another server while this one was cut off")
}

/// `/stats` on a node of a cluster: the bus link, and what crossed it.
pub fn bus_stats(up: bool, nodes: usize, t: &crate::cluster::Tally) -> String {
    let link = if up { "up" } else { "down" };
    format!(
        "[SERVER]   bus {link}, {nodes} other nodes: published {}, received {}, lost {}, duplicates {}, unsent {}",
        t.published, t.received, t.missed, t.duplicates, t.unsent
    )
}

/// The transcript's line when another node is no longer heard from.
pub fn node_gone(node: &str, secs: u64) -> String {
    format!("[SERVER] Node {node} not heard from for {secs} s: its people are gone from /who")
}

/// Said after the address when `--tls-cert` is given.
pub fn listening_tls(only: bool) -> &'static str {
    if only {
        "[SERVER] TLS on the same port, and nothing else (--tls-only)"
    } else {
        "[SERVER] TLS on the same port, beside plain-text clients"
    }
}

/// The second line on standard output when UDP is on.
pub fn listening_udp(addr: SocketAddr) -> String {
    format!("[SERVER] Listening on UDP {addr}")
}

/// Where the transcript dropped lines because standard output was not being read.
pub fn transcript_dropped(lines: u64) -> String {
    format!("[SERVER] {lines} transcript lines dropped: standard output was not being read")
}

/// The transcript's line when flow control starts holding input back.
pub fn flow_holding(owed: usize, largest: usize) -> String {
    format!(
        "[SERVER] Flow control: holding input back ({owed} bytes owed, largest queue {largest})"
    )
}

/// The transcript's line when every client held back has been served.
pub fn flow_flowing(held: Duration) -> String {
    let secs = held.as_secs_f64();
    format!("[SERVER] Flow control: input flowing again after {secs:.1} s")
}

/// `/stats` on the console, one line each for who, traffic, flow control and drops. Rates are
/// per second since the previous `/stats` (or the start).
pub fn stats(s: &Stats) -> [String; 4] {
    let flow = if s.holding { "holding" } else { "flowing" };
    let c = &s.counters;
    [
        format!(
            "[SERVER] Stats: {} clients, {} sockets, up {} s",
            s.clients, s.sockets, s.uptime_secs
        ),
        format!(
            "[SERVER]   in {} lines ({:.0}/s), out {} lines ({:.0}/s), {} bytes written",
            c.lines_in, s.lines_in_per_sec, c.lines_out, s.lines_out_per_sec, c.bytes_out
        ),
        format!(
            "[SERVER]   owed {} bytes, largest queue {}; flow control {flow}: {} senders waiting, {} holds, {:.1} s held",
            s.owed, s.largest, s.waiting, s.holds, s.held_secs
        ),
        format!(
            "[SERVER]   dropped {} too slow, {} idle, {} on errors; refused {} full, {} per address, {} connection rate",
            c.too_slow, c.idle, c.errors, c.refused_full, c.refused_per_address, c.refused_rate
        ),
    ]
}

/// What `/stats` shows.
pub struct Stats {
    pub clients: usize,
    pub sockets: usize,
    pub uptime_secs: u64,
    pub counters: Counters,
    pub lines_in_per_sec: f64,
    pub lines_out_per_sec: f64,
    pub owed: usize,
    pub largest: usize,
    pub holding: bool,
    pub waiting: usize,
    pub holds: u64,
    pub held_secs: f64,
}

/// A console line for every client.
pub fn from_console(text: &str) -> String {
    format!("SERVER: {text}")
}

/// A runtime failure, one line on stderr.
pub fn fatal(what: impl Display) -> String {
    format!("loopchat-server: {what}")
}
