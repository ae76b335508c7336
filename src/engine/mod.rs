//! The whole server without sockets and without a clock: every connection's buffers and limits,
//! the timers, the room. The event loop tells the engine what happened (a client came, a socket
//! is readable or writable, a line on the console, the time) and the engine decides everything
//! else. Tests drive it with no network at all: they pass in the time, and closures that stand
//! in for `read` and `write`.
//!
//! # How the event loop uses it
//!
//! - A client connects: [`Engine::join`] admits it (or returns the refusal to send).
//! - Its socket is readable: [`Engine::read`]. Its socket is writable again: [`Engine::writable`].
//! - Time passes: sleep no longer than [`Engine::next_deadline`], then [`Engine::tick`].
//! - Before sleeping again: [`Engine::end_turn`] reads the clients left with input on purpose
//!   (edge-triggered sockets give no new event for them), writes what is owed, serves clients
//!   that waited for the room's budget, and hands back the connections to close; then print
//!   [`Engine::transcript`].
//!
//! Nothing is removed from the table until the end of [`Engine::end_turn`], once per turn: a
//! key freed in the middle of a batch of events could be handed to a new connection while an
//! event for the old one still waits in that batch. Connections are likewise never dropped in the middle
//! of a broadcast: a queue that overflows is noted, and dealt with after the broadcast.

mod admission;
mod bus;
pub mod deadlines;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod flow;
mod peer;
pub mod stats;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use slab::Slab;

use crate::ack::{self, Answer};
use crate::chat::{After, Chat, ConsoleAfter, Limits};
use crate::codec::http;
use crate::codec::line::{self, Foreign, LineCodec};
use crate::codec::websocket::{self, Decoder, status};
use crate::codec::{Codec, Input};
use crate::command;
use crate::config::{self, Config};
use crate::event::{Delivery, Event, To};
use crate::notice;
use crate::rate::{Bucket, Budgets};
use crate::service::Service;
use crate::text;
use crate::web::{self, Asker};
use admission::Admission;
use bus::{Bus, News};
use deadlines::{Deadlines, Timer};
pub use flow::Pace;
use flow::{Change, Flow};
use peer::{Got, Lines};
pub use peer::{Peer, Reading, State, Writing};
use stats::{Counters, Rates};

/// One read buffer for all clients: per-client memory holds only unfinished lines and output.
/// 64 KiB also holds the largest UDP datagram whole.
pub const SCRATCH: usize = 64 * 1024;
/// Bytes read from one client per turn before the others get their go.
const FAIR_SHARE: usize = 64 * 1024;
/// UDP senders whose rate budget is remembered at once (see [`Budgets`]): if every one is busy,
/// datagrams from new senders are dropped.
const UDP_SENDERS: usize = 4096;
/// How long a leaving client may go without reading its last lines, and how long the server
/// flushes at shutdown.
pub const LINGER: Duration = Duration::from_secs(2);

/// What the engine needs of a connection's socket. The event loop gives it mio's `TcpStream`;
/// tests give it a fake that hands out chunks, fills up, and records what it was sent.
pub trait Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Several buffers in one write where the socket can (a TLS session's records, which
    /// would otherwise leave in a segment each).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        self.write(first)
    }
    /// Ends the stream in this direction (a FIN after what was written); reading goes on.
    fn shutdown_write(&mut self);
}

pub struct Engine<S> {
    config: Config,
    service: Service,
    peers: Slab<Peer<S>>,
    admission: Admission,
    deadlines: Deadlines,
    scratch: Vec<u8>,
    /// Lines the service produced and [`Engine::deliver`] has yet to route.
    deliveries: Vec<Delivery>,
    /// What is owed and who must be written to or dropped before the next poll.
    outbox: Outbox,
    /// Connections to read again without waiting for an event.
    ready: Vec<usize>,
    /// Connections to close before the next poll.
    closed: Vec<usize>,

    /// Standard output, gathered during a turn.
    transcript: Vec<u8>,
    /// The `--rate` budget of each UDP sender, by address.
    udp_budgets: Budgets<SocketAddr>,
    /// Connections in the room (or, in echo and ack, not yet leaving): what `--max-clients`
    /// counts.
    open: usize,
    counters: Counters,
    rates: Rates,
    started: Instant,
    /// The Unix time at `started`, read once: the rooms' history shows when each message was
    /// said, and the engine's own clock is the caller's `Instant`.
    started_unix: Duration,
    next_generation: u64,
    shutdown_at: Option<Instant>,
    /// The link to the other nodes of a cluster (`--nats`).
    bus: Option<Bus<S>>,
    /// The time of the event being handled, given by the caller.
    now: Instant,
}

impl<S: Socket> Engine<S> {
    pub fn new(config: Config, now: Instant) -> Engine<S> {
        let started_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        // What tells this run of a node from an earlier one with the same name.
        let boot = started_unix.as_nanos() as u64 ^ u64::from(std::process::id());
        Engine {
            bus: config.cluster.clone().map(|c| Bus::new(c, boot, now)),
            service: Service::new(
                config.mode,
                Chat::new(config.welcome.clone(), Limits::new(&config)),
            ),
            admission: Admission::new(&config),
            peers: Slab::new(),
            deadlines: Deadlines::default(),
            scratch: vec![0; SCRATCH],
            deliveries: Vec::new(),
            outbox: Outbox {
                max_pending: config.max_pending,
                dirty: Vec::new(),
                overflowed: Vec::new(),
                flow: Flow::new(config::flow::member_high_water(config.max_pending)),
            },
            ready: Vec::new(),
            closed: Vec::new(),
            transcript: Vec::new(),
            udp_budgets: Budgets::new(config.rate, UDP_SENDERS),
            open: 0,
            counters: Counters::default(),
            rates: Rates::new(now),
            started: now,
            started_unix,
            next_generation: 0,
            shutdown_at: None,
            now,
            config,
        }
    }

    // ----- what the event loop asks -----

    /// The key the next [`Engine::join`] will use: the loop registers the socket under it.
    pub fn next_key(&self) -> usize {
        self.peers.vacant_key()
    }

    pub fn peer(&self, key: usize) -> Option<&Peer<S>> {
        self.peers.get(key)
    }

    pub fn socket_mut(&mut self, key: usize) -> Option<&mut S> {
        self.peers.get_mut(key).map(|p| &mut p.socket)
    }

    /// How long the loop may sleep: until the nearest timer, the next look for clients that
    /// hold the room back, or the end of the shutdown.
    pub fn next_deadline(&self, now: Instant) -> Option<Duration> {
        let bus = self.bus.as_ref().map(Bus::deadline);
        let engine = [self.outbox.flow.sweep_at(), self.shutdown_at, bus]
            .into_iter()
            .flatten()
            .map(|at| at.saturating_duration_since(now));
        engine.chain(self.deadlines.timeout(now)).min()
    }

    /// Whether clients wait to be read without an event: the loop must not sleep.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
            || self.outbox.flow.has_ready()
            || self.bus.as_ref().is_some_and(Bus::has_again)
    }

    /// The end of a turn of the event loop, before it sleeps: reads the clients left with
    /// input on purpose, writes what every connection is owed, serves in turn the clients that
    /// waited for the room's budget (and writes what they said), and hands back the
    /// connections that are done, for the loop to deregister and drop.
    pub fn end_turn(&mut self, now: Instant) -> Vec<Peer<S>> {
        self.now = now;
        if self.bus.as_ref().is_some_and(Bus::has_again) {
            self.bus_ready(now);
        }
        for key in std::mem::take(&mut self.ready) {
            self.read(key, now);
        }
        self.flush();
        if self.release() {
            self.flush();
        }
        self.holding();
        self.bus_write();
        if let Change::Ended(held) = self.outbox.flow.settle(now) {
            log::info!("flow control: input flowing again after {held:?}");
            self.print_line(&notice::flow_flowing(held));
        }
        self.take_closed()
    }

    fn take_closed(&mut self) -> Vec<Peer<S>> {
        let mut gone = Vec::with_capacity(self.closed.len());
        for key in self.closed.drain(..) {
            if let Some(peer) = self.peers.try_remove(key) {
                self.admission.release(peer.addr.ip());
                if peer.reading == Reading::Waiting {
                    self.outbox.flow.forget(key, peer.addr.ip());
                }
                gone.push(peer);
            }
        }
        gone
    }

    /// What to print on standard output; the loop writes it out and clears it.
    pub fn transcript(&mut self) -> &mut Vec<u8> {
        &mut self.transcript
    }

    pub fn is_stopping(&self) -> bool {
        self.shutdown_at.is_some()
    }

    /// The shutdown is over: every client's queue is written, or the time is up.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.shutdown_at
            .is_some_and(|at| self.peers.is_empty() || now >= at)
    }

    // ----- events -----

    /// A new connection: admitted (welcomed, announced), or refused with the line to send it.
    pub fn join(
        &mut self,
        socket: S,
        addr: SocketAddr,
        now: Instant,
    ) -> Result<usize, (S, &'static str)> {
        self.now = now;
        let admitted = self
            .admission
            .admit(addr.ip(), self.open, self.peers.len(), now);
        if let Err(refusal) = admitted {
            self.counters.refused(refusal);
            return Err((socket, refusal.line()));
        }
        self.open += 1;
        self.next_generation += 1;
        let bucket = (self.config.rate > 0).then(|| Bucket::new(self.config.rate, now));
        // With the web door open, or TLS, a connection is greeted only once it is known not to
        // be a browser's request or a TLS handshake (see `Config::greet_wait`).
        let codec = if self.config.greet_wait().is_zero() {
            Codec::Line(LineCodec::new(self.config.max_line))
        } else {
            Codec::Unsure
        };
        let peer = Peer::new(
            socket,
            addr,
            self.next_generation,
            codec,
            Lines::new(bucket, now),
            now,
        );
        let key = self.peers.insert(peer);
        match self.peers[key].codec {
            // Under `--tls-only` nobody is greeted in plain text: a client has the handshake
            // deadline to start TLS.
            Codec::Unsure if self.tls_only() => {
                self.arm(key, Timer::Handshake, now + config::tls::HANDSHAKE)
            }
            Codec::Unsure => self.arm(key, Timer::Greet, now + self.config.greet_wait()),
            _ => self.welcome(key, false),
        }
        Ok(key)
    }

    fn tls_only(&self) -> bool {
        self.config.tls.as_ref().is_some_and(|t| t.only)
    }

    /// A connection that has said nothing by its greeting time is greeted as a line client:
    /// quietly where a browser may have opened it and never used it.
    fn greet_silent(&mut self, key: usize) {
        let quiet = self.config.web.is_some();
        self.greet(key, quiet);
    }

    /// A connection that has sent nothing (`quiet`), or something that is no web request, is a
    /// chat client of the line protocol. Returns whether it is: not while its TLS handshake is
    /// under way, nor in plain text under `--tls-only`.
    fn greet(&mut self, key: usize, quiet: bool) -> bool {
        let tls_only = self.tls_only();
        let Some(peer) = self.peers.get_mut(key) else {
            return false;
        };
        let unsecured = match &peer.tls {
            Some(session) => session.is_handshaking(),
            None => tls_only,
        };
        if !matches!(peer.codec, Codec::Unsure) || peer.state != State::Open || unsecured {
            return false;
        }
        peer.codec = Codec::Line(LineCodec::new(self.config.max_line));
        self.welcome(key, quiet);
        true
    }

    /// A client's TLS handshake is done: inside the session, it is now what a plain connection
    /// is when it opens, a chat client or (web door open) perhaps a browser's request.
    fn secured(&mut self, key: usize) {
        if self.config.web.is_some() {
            self.arm(key, Timer::Greet, self.now + self.config.greet_wait());
        } else {
            self.greet(key, false);
        }
    }

    /// A connection is a chat client from now on (or, in echo and ack mode, a client of the
    /// service): welcomed, announced (a quiet one once it speaks), and timed for silence from
    /// now.
    fn welcome(&mut self, key: usize, quiet: bool) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        peer.lines.last = self.now;
        let addr = peer.addr;
        if let Some(idle) = self.config.idle_timeout {
            self.arm(key, Timer::Idle, self.now + idle);
        }
        self.service.join(key, addr, quiet, &mut self.deliveries);
        self.deliver();
    }

    /// The client's socket is readable, or may be: reads until it has nothing more
    /// (WouldBlock, as edge triggering requires), or the client may not send more now (rate
    /// budget, the room's budget, echo backpressure), or its fair share of the turn is used.
    /// In the last case it goes on the ready list, since no new event would come for it; while
    /// clients wait for the room's budget the share is split among them, and it waits in turn.
    pub fn read(&mut self, key: usize, now: Instant) {
        self.now = now;
        // Lines held back while it was paused go first (the rate timer and the turns of the
        // room's budget take theirs themselves).
        let ready = |p: &Peer<S>| matches!(p.reading, Reading::Ready { .. });
        if self
            .peers
            .get(key)
            .is_some_and(|p| ready(p) && p.codec.has_line())
        {
            self.take_lines(key, &[]);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let contended = self.outbox.flow.is_contended();
        let mut share = if contended {
            // The turn is shared among those waiting, but is never less than a line.
            (FAIR_SHARE / self.outbox.flow.waiting().max(1)).max(self.config.max_line + 2)
        } else {
            FAIR_SHARE
        };
        while let Some(want) = self.input_budget(key) {
            let peer = &mut self.peers[key];
            let n = match peer.read(&mut scratch[..want.min(share)]) {
                Got::Bytes(n) => n,
                Got::Secured => {
                    self.secured(key);
                    continue;
                }
                Got::Nothing => break,
                Got::End if peer.state == State::Draining => {
                    // The client has read our end of the stream and closed its own.
                    self.close_now(key);
                    break;
                }
                Got::End => {
                    peer.reading = Reading::Ended;
                    break;
                }
                Got::Failed(e) => {
                    self.drop_failed(key, &e);
                    break;
                }
            };
            self.received(key, &scratch[..n]);
            share -= n;
            if share == 0 {
                if contended {
                    self.wait_for_room(key);
                } else {
                    self.ready.push(key);
                }
                break;
            }
        }
        self.scratch = scratch;
        // A TLS session may have bytes of its own to send (its half of the handshake), with
        // nothing owed to the chat client.
        if let Some(peer) = self.peers.get_mut(key)
            && peer.wants_write()
        {
            self.outbox.mark_dirty(peer, key);
        }
        self.after_input(key);
    }

    /// The client's socket can take more after a write hit WouldBlock.
    pub fn writable(&mut self, key: usize) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if peer.writing == Writing::Blocked {
            peer.writing = Writing::Idle;
        }
        if peer.wants_write() {
            self.outbox.mark_dirty(peer, key);
        }
    }

    /// Writes what every connection with queued output is owed, until all is written or its
    /// socket is full. A failure, or a queue still over `--max-pending` when the socket is
    /// full, drops the client, whose departure is more output: this repeats until nothing is
    /// left to write.
    fn flush(&mut self) {
        while !self.outbox.dirty.is_empty() {
            for key in std::mem::take(&mut self.outbox.dirty) {
                if let Err(e) = self.write_out(key) {
                    self.drop_failed(key, &e);
                }
            }
            self.drop_overflowed();
            self.deliver();
        }
    }

    /// Serves the clients that waited for the room's budget, each in turn, once round at most:
    /// the lines it was stopped in the middle of, then about a line more from its socket. It
    /// goes to the back of the line if it has more. Returns whether anyone was served.
    fn release(&mut self) -> bool {
        let mut turns = self.outbox.flow.waiting();
        let mut served = false;
        while turns > 0
            && !self.holding()
            && let Some(key) = self.outbox.flow.next_waiting()
        {
            turns -= 1;
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            // A client that ended its stream while it waited says so again on the next read.
            peer.reading = Reading::Ready { drained: false };
            served = true;
            self.take_lines(key, &[]);
            self.read(key, self.now);
        }
        served
    }

    /// A client has input the room cannot take now: it waits its turn.
    fn wait_for_room(&mut self, key: usize) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if peer.reading == Reading::Waiting {
            return;
        }
        peer.reading = Reading::Waiting;
        if self.outbox.flow.wait(key, peer.addr.ip(), self.now) == Change::Started {
            let (owed, largest) = self.owed();
            log::info!("flow control: holding input back, {owed} bytes owed");
            self.print_line(&notice::flow_holding(owed, largest));
        }
    }

    /// Bytes owed in all, and the largest queue. Walks every connection: for the transcript
    /// and `/stats`, not for every line.
    fn owed(&self) -> (usize, usize) {
        self.peers.iter().fold((0, 0), |(all, largest), (_, p)| {
            (all + p.owed.len(), largest.max(p.owed.len()))
        })
    }

    /// Fires the timers that are due.
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        if let Some(bus) = self.bus.as_mut() {
            let mut news = News::default();
            let chat = self.service.chat();
            bus.tick(now, || chat.presence(), &mut news);
            self.bus_news(news);
        }
        if self.outbox.flow.sweep_due(now) {
            self.sweep_behind();
        }
        while let Some((key, generation, timer)) = self.deadlines.pop_due(now) {
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            if peer.generation != generation {
                continue; // set for an earlier connection with the same key
            }
            peer.timers &= !timer.bit();
            match timer {
                Timer::FlushPartial => self.quiet_passed(key),
                Timer::RateResume => self.resume(key),
                Timer::Idle => self.check_idle(key),
                Timer::Linger => self.check_linger(key),
                Timer::Greet => self.greet_silent(key),
                Timer::Handshake => self.handshake_over(key),
            }
        }
    }

    /// A line typed on the operator console. True if it was `/shutdown`: the caller begins
    /// the shutdown ([`Engine::begin_shutdown`]), once it has done what comes first (with
    /// `--reuseport`, taking the listener's queue).
    #[must_use]
    pub fn console(&mut self, raw: &[u8], now: Instant) -> bool {
        self.now = now;
        let line = text::clean(raw);
        if text::is_blank(&line) {
            return false;
        }
        let at = self.unix_now();
        let after = self
            .service
            .console(command::parse_console(&line), at, &mut self.deliveries);
        self.deliver();
        match after {
            ConsoleAfter::Continue => {}
            ConsoleAfter::Close(key) => self.depart(key, None),
            ConsoleAfter::Stats => {
                for line in notice::stats(&self.stats(now)) {
                    self.print_line(&line);
                }
                if let Some(bus) = &self.bus {
                    let nodes = self.service.chat().nodes();
                    let line = notice::bus_stats(bus.is_up(), nodes, &bus.node().tally);
                    self.print_line(&line);
                }
            }
            ConsoleAfter::Shutdown => return true,
        }
        false
    }

    /// Seconds since the Unix epoch now, for the rooms' history.
    fn unix_now(&self) -> u64 {
        unix_secs(self.started_unix, self.started, self.now)
    }

    /// Connections with a TLS session.
    fn tls_sockets(&self) -> usize {
        self.peers.iter().filter(|(_, p)| p.tls.is_some()).count()
    }

    /// The figures `/stats` shows.
    fn stats(&mut self, now: Instant) -> notice::Stats {
        let c = self.counters;
        let (lines_in_per_sec, lines_out_per_sec) = self.rates.take(&c, now);
        let (owed, largest) = self.owed();
        let flow = &self.outbox.flow;
        notice::Stats {
            clients: self.open,
            sockets: self.peers.len(),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            counters: c,
            lines_in_per_sec,
            lines_out_per_sec,
            owed,
            largest,
            holding: flow.is_holding(),
            waiting: flow.waiting(),
            holds: flow.holds,
            held_secs: flow.held_for(now).as_secs_f64(),
        }
    }

    /// While input is held back: clients whose socket has refused bytes for a while, their
    /// queue never emptying, stop holding the room (see `flow.rs`).
    fn sweep_behind(&mut self) {
        for (key, peer) in self.peers.iter_mut() {
            if peer.owed.pace == Pace::Keeping
                && !peer.owed.is_empty()
                && peer
                    .owed
                    .refused_since
                    .is_some_and(|t| Flow::is_behind(t, self.now))
            {
                self.outbox.flow.fell_behind(key);
                peer.owed.pace = Pace::Behind;
            }
        }
        self.holding();
    }

    /// Whether input must wait: the room's marks, applied to what the clients that keep up
    /// are owed (the few behind are measured here, so that a broadcast only adds).
    fn holding(&mut self) -> bool {
        let flow = &self.outbox.flow;
        let (owed, full) = flow
            .behind()
            .iter()
            .filter_map(|&key| self.peers.get(key))
            .fold((0, 0), |(owed, full), p| {
                let len = p.owed.len();
                (owed + len, full + usize::from(flow.is_full(len)))
            });
        self.outbox.flow.recheck(owed, full, self.now)
    }

    /// One UDP datagram, one message: echoed in echo mode, acknowledged otherwise, and in chat
    /// mode also shown to the room under the sender's address. An exit word gets a goodbye and
    /// nothing else: there is no connection to close. Returns the reply to send.
    pub fn datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) -> Option<Vec<u8>> {
        self.now = now;
        if self.service.is_echo() {
            return Some(bytes.to_vec());
        }
        // `--rate` per sender address. A datagram cannot wait in the sender's socket as a TCP
        // line does (nothing tells the sender to slow down), so one over the budget is dropped,
        // as UDP allows.
        if !self.udp_budgets.allows(from, now) {
            log::debug!(
                "datagram from {from} dropped: over --rate {}",
                self.config.rate
            );
            return None;
        }
        let reply = match line::datagram(bytes, self.config.max_line) {
            line::Frame::TooLong => notice::too_long(self.config.max_line),
            line::Frame::Line(raw) => match ack::answer(raw) {
                Answer::Ignore => return None,
                Answer::Bye => notice::BYE.to_owned(),
                Answer::Received { reply, text } => {
                    let at = self.unix_now();
                    self.service.relay(from, &text, at, &mut self.deliveries);
                    self.deliver();
                    reply
                }
            },
        };
        Some(format!("{reply}\n").into_bytes())
    }

    /// Tells everyone the server is stopping and gives their queues [`LINGER`] to drain. A
    /// second call (a second Ctrl-C) stops at once.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.now = now;
        if self.shutdown_at.is_some() {
            self.shutdown_at = Some(now);
            return;
        }
        log::info!("shutting down");
        self.shutdown_at = Some(now + LINGER);
        if let Some(bus) = self.bus.as_mut() {
            // What the goodbye's write finds (the link lost, say) is left unsaid: everyone is
            // about to be told that this server stops.
            let mut news = News::default();
            bus.bye(now, &mut news);
        }
        // Connections still waiting for their greeting (the web door's wait) are greeted now,
        // so that they too are told, rather than closed without a word.
        let unsure: Vec<usize> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.codec, Codec::Unsure))
            .map(|(key, _)| key)
            .collect();
        for key in unsure {
            self.greet_silent(key);
        }
        self.deliveries.push(Delivery {
            to: To::All,
            event: Event::line(notice::SHUTTING_DOWN),
        });
        self.deliver();
        let keys: Vec<usize> = self.peers.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.begin_close(key);
        }
    }

    // ----- the bus -----

    /// The address to connect the bus to now, if the link wants a connection: the loop
    /// connects and hands the socket to [`Engine::bus_attach`] (or the error to
    /// [`Engine::bus_connect_failed`]).
    pub fn bus_wants_connection(&mut self, now: Instant) -> Option<SocketAddr> {
        self.bus.as_mut()?.wants_connection(now)
    }

    pub fn bus_attach(&mut self, socket: S, now: Instant) {
        if let Some(bus) = self.bus.as_mut() {
            bus.attach(socket, now);
        }
    }

    pub fn bus_connect_failed(&mut self, error: &io::Error, now: Instant) {
        self.now = now;
        if let Some(bus) = self.bus.as_mut() {
            let mut news = News::default();
            bus.connect_failed(error, now, &mut news);
            self.bus_news(news);
        }
    }

    /// The bus's socket is readable or writable: what other nodes said reaches the members
    /// here. The loop hands this event over before any client's, so that the bus is read
    /// first: nats-server cuts a node that falls behind.
    pub fn bus_ready(&mut self, now: Instant) {
        self.now = now;
        let Some(bus) = self.bus.as_mut() else {
            return;
        };
        let mut news = News::default();
        bus.ready(&mut self.scratch, now, &mut news);
        self.bus_news(news);
    }

    fn bus_write(&mut self) {
        if let Some(bus) = self.bus.as_mut() {
            let mut news = News::default();
            bus.write(self.now, &mut news);
            self.bus_news(news);
        }
    }

    /// What the bus link brought: gossip for the chat, its state for the clients and the
    /// transcript.
    fn bus_news(&mut self, news: News) {
        for line in &news.transcript {
            self.print_line(line);
        }
        if news.lost {
            self.deliveries.push(Delivery {
                to: To::All,
                event: Event::line(notice::BUS_LOST),
            });
        }
        if let Some((after, unsent)) = news.back_after {
            self.deliveries.push(Delivery {
                to: To::All,
                event: Event::line(notice::bus_back(after.as_secs(), unsent)),
            });
        }
        let at = self.unix_now();
        let chat = self.service.chat();
        for outcome in news.names {
            chat.names(outcome, &mut self.deliveries);
        }
        for node in &news.gone {
            chat.forget_node(node);
        }
        for (node, gossip) in news.gossip {
            chat.gossip(&node, gossip, at, &mut self.deliveries);
        }
        self.deliver();
    }

    // ----- reading -----

    /// How many bytes the client may send now, if any. Also where a client that may not is
    /// set to be woken: by the rate timer, in its turn for the room's budget, or by the flush
    /// that brings its own queue down (see [`Engine::pause_mark`]).
    fn input_budget(&mut self, key: usize) -> Option<usize> {
        let mark = self.pause_mark();
        let peer = self.peers.get_mut(key)?;
        if !matches!(peer.reading, Reading::Ready { .. }) || peer.state == State::Closed {
            return None;
        }
        if matches!(peer.state, State::Closing | State::Draining) {
            return Some(SCRATCH); // read and thrown away, so that the close is clean
        }
        if peer.owed.len() >= mark {
            peer.reading = Reading::Paused;
            return None;
        }
        if self.service.is_echo() {
            return Some((mark - peer.owed.len()).min(SCRATCH));
        }
        if peer.codec.has_line() {
            // Lines held back go first: on the rate timer, or in the client's turn.
            return None;
        }
        if self.holding() {
            self.wait_for_room(key);
            return None;
        }
        let peer = self.peers.get_mut(key)?;
        let Some(bucket) = peer.lines.bucket.as_mut() else {
            return Some(SCRATCH);
        };
        if bucket.allows(self.now) {
            // Read about a line at a time: lines beyond the budget must wait in the server,
            // and this keeps them to one line's worth.
            return Some(self.config.max_line + 2);
        }
        let at = bucket.next_at(self.now);
        self.arm(key, Timer::RateResume, at);
        None
    }

    /// Bytes from a client.
    fn received(&mut self, key: usize, bytes: &[u8]) {
        let peer = &mut self.peers[key];
        peer.last_input = self.now;
        if peer.state != State::Open {
            return; // on its way out: input is discarded
        }
        if self.service.is_echo() {
            return self.send(key, bytes);
        }
        if matches!(self.peers[key].codec, Codec::Unsure) && !self.first_bytes(key, bytes) {
            return;
        }
        if let Codec::Line(codec) = &mut self.peers[key].codec
            && let Some(foreign) = codec.received(bytes)
        {
            return self.reject_foreign(key, foreign);
        }
        self.take_lines(key, bytes);
    }

    /// The first bytes of a connection not yet known (or of a TLS session just secured): a TLS
    /// handshake, a browser's request, or a chat client that spoke first. Returns whether they
    /// are to be read as what the connection now is; false if they were taken or refused here.
    fn first_bytes(&mut self, key: usize, bytes: &[u8]) -> bool {
        let peer = &mut self.peers[key];
        if let Some(tls) = self.config.tls.as_ref()
            && peer.tls.is_none()
        {
            if line::is_tls_hello(bytes) {
                if let Err(e) = peer.start_tls(tls, bytes) {
                    log::debug!("{}: TLS handshake refused: {e}", peer.addr);
                    self.close_now(key);
                } else {
                    self.arm(key, Timer::Handshake, self.now + config::tls::HANDSHAKE);
                }
                return false;
            }
            if tls.only {
                if http::starts_request(bytes) {
                    self.send(key, &web::https_only());
                } else {
                    self.send_line(key, notice::TLS_ONLY);
                }
                self.depart(key, Some("did not start TLS"));
                return false;
            }
        }
        if self.config.tls.is_none() && line::is_tls_hello(bytes) {
            // Told before any greeting, which a TLS client would take for a broken handshake.
            self.reject_foreign(key, Foreign::Tls);
            return false;
        }
        if self.config.web.is_some() && http::starts_request(bytes) {
            self.peers[key].codec = Codec::Http(http::HeadReader::default());
            self.arm(key, Timer::Handshake, self.now + config::web::HANDSHAKE);
        } else {
            self.greet(key, false);
        }
        true
    }

    /// Frames `input` (after any lines held back) and acts on each line while the client's
    /// rate budget allows; what it may not send yet is kept, in order.
    fn take_lines(&mut self, key: usize, mut input: &[u8]) {
        let mark = self.pause_mark();
        loop {
            let holding = self.holding();
            let Some(peer) = self.peers.get_mut(key) else {
                return;
            };
            if peer.state != State::Open || (input.is_empty() && !peer.codec.has_line()) {
                return;
            }
            // A request head is read whole, whatever the chat's limits: its answer is at once.
            let chat = peer.codec.is_chat();
            if chat
                && let Some(bucket) = peer.lines.bucket.as_mut()
                && !bucket.allows(self.now)
            {
                let at = bucket.next_at(self.now);
                peer.codec.keep(input);
                return self.arm(key, Timer::RateResume, at);
            }
            // Checked before every line, not every read: one read can hold hundreds of lines,
            // each a copy for every member, or a replay for the sender.
            if chat && holding {
                peer.codec.keep(input);
                return self.wait_for_room(key);
            }
            if chat && peer.owed.len() >= mark {
                peer.codec.keep(input);
                peer.reading = Reading::Paused;
                return;
            }
            let Some(frame) = peer.codec.next(&mut input) else {
                return;
            };
            // Chat lines, not requests or control frames.
            self.counters.lines_in += u64::from(matches!(frame, Input::Line(_) | Input::TooLong));
            peer.lines.record(self.now);
            let from = (key, peer.addr);
            // Not `unix_now`: the frame borrows the connection, and with it `self`.
            let at = unix_secs(self.started_unix, self.started, self.now);
            let verdict = on_frame(
                &mut self.service,
                &mut self.deliveries,
                &self.config,
                from,
                at,
                frame,
            );
            self.settle(key, verdict);
        }
    }

    /// After reading: a client whose stream ended departs, or time its unfinished line.
    fn after_input(&mut self, key: usize) {
        let Some(peer) = self.peers.get(key) else {
            return;
        };
        if peer.state != State::Open || peer.codec.has_line() {
            return;
        }
        if peer.reading == Reading::Ended && matches!(peer.codec, Codec::Unsure) {
            // It left before saying anything: nobody (a browser's spare connection, say), or
            // in the middle of its TLS handshake.
            if !self.greet(key, true) {
                return self.close_now(key);
            }
            return self.after_input(key);
        }
        if peer.reading == Reading::Ended {
            // Its last words: an unterminated line counts, then it leaves (once the rate
            // budget lets that line through, if it holds it back).
            self.end_line(key);
            if self.peers.get(key).is_some_and(|p| !p.codec.has_line()) {
                self.depart(key, None);
            }
        } else if !peer.codec.is_empty()
            && let Some(quiet) = self.config.flush_partial
        {
            let at = peer.last_input + quiet;
            self.arm(key, Timer::FlushPartial, at);
        }
    }

    /// The rate budget allows a line again: take the lines held back, then let the loop read.
    fn resume(&mut self, key: usize) {
        self.take_lines(key, &[]);
        self.after_input(key);
        if self.input_budget(key).is_some() {
            self.ready.push(key);
        }
    }

    /// The quiet after an unfinished line has passed, or the stream ended: the line is complete,
    /// and taken like any other (rate budget included).
    fn end_line(&mut self, key: usize) {
        if let Some(peer) = self.peers.get_mut(key) {
            peer.codec.end_line();
        }
        self.take_lines(key, &[]);
    }

    /// Delivers what an input produced and carries out what it means for the connection.
    fn settle(&mut self, key: usize, verdict: Verdict) {
        self.deliver();
        match verdict {
            Verdict::Stay => {}
            Verdict::Close => self.depart(key, None),
            Verdict::Foreign(foreign) => self.reject_foreign(key, foreign),
            Verdict::Request(request) => self.web_request(key, &request),
            Verdict::BadRequest(status) => {
                self.send(key, &web::refusal(status));
                self.depart(key, None);
            }
            Verdict::Reply(bytes) => self.send(key, &bytes),
            Verdict::CloseWith(bytes) => {
                self.send(key, &bytes);
                self.depart(key, None);
            }
        }
    }

    /// A client speaking another protocol gets one line of explanation and is closed.
    fn reject_foreign(&mut self, key: usize, foreign: Foreign) {
        let (line, reason) = match foreign {
            Foreign::Http => (notice::NOT_HTTP, "sent an HTTP request"),
            // Greeted in plain text already: too late for TLS on this connection.
            Foreign::Tls if self.config.tls.is_some() => {
                (notice::TLS_TOO_LATE, "sent a TLS handshake late")
            }
            Foreign::Tls => (notice::NOT_TLS, "sent a TLS handshake"),
        };
        self.send_line(key, line);
        self.depart(key, Some(reason));
    }

    /// An HTTP request through the web door: answered and closed, or a WebSocket chat client
    /// from now on, welcomed like any other.
    fn web_request(&mut self, key: usize, request: &http::Request) {
        let (Some(web), Some(peer)) = (&self.config.web, self.peers.get(key)) else {
            return;
        };
        let asker = Asker {
            loopback: peer.addr.ip().is_loopback(),
        };
        let answer = web::answer(web, request, &asker, || self.metrics());
        match answer {
            web::Answer::Close(bytes) => {
                self.send(key, &bytes);
                self.depart(key, None);
            }
            web::Answer::Upgrade(bytes) => {
                self.send(key, &bytes);
                self.peers[key].codec =
                    Codec::WebSocket(Box::new(Decoder::new(self.config.max_line)));
                self.welcome(key, false);
            }
        }
    }

    /// The server's figures for `/metrics`: those of `/stats`, as Prometheus counters and
    /// gauges.
    fn metrics(&self) -> String {
        let (owed, _) = self.owed();
        let flow = &self.outbox.flow;
        web::metrics(&web::Figures {
            clients: self.service.everyone().count(),
            sockets: self.peers.len(),
            websockets: self
                .peers
                .iter()
                .filter(|(_, p)| p.codec.is_websocket())
                .count(),
            tls: self.tls_sockets(),
            rooms: self.service.rooms(),
            counters: self.counters,
            owed,
            holding: flow.is_holding(),
            holds: flow.holds,
            held_secs: flow.held_for(self.now).as_secs_f64(),
        })
    }

    /// Bytes for one connection as they are (an HTTP answer, a WebSocket control frame, echo).
    fn send(&mut self, key: usize, bytes: &[u8]) {
        let wire = Wire::raw(bytes);
        self.outbox
            .queue(&mut self.peers, key, wire, &mut self.counters);
    }

    /// A line of the server's own for one connection, in its codec's form.
    fn send_line(&mut self, key: usize, line: &str) {
        let (mut bytes, mut frame) = (Vec::new(), Vec::new());
        let wire = Wire::render(&Event::line(line), &mut bytes, &mut frame);
        self.outbox
            .queue(&mut self.peers, key, wire, &mut self.counters);
    }

    // ----- delivering -----

    /// Routes every event the service produced, rendered once as a line for all its
    /// recipients. A client whose queue overflows is dropped after the routing (never while a
    /// room's members are being walked) and its departure is routed in turn, until nothing is
    /// left.
    fn deliver(&mut self) {
        if let Some(bus) = self.bus.as_mut() {
            let chat = self.service.chat();
            for gossip in chat.take_gossip() {
                bus.publish(&gossip);
            }
            if chat.presence_changed() {
                bus.presence_changed(self.now);
            }
            let (claims, releases) = chat.take_claims();
            for name in releases {
                bus.release(&name);
            }
            for (id, name) in claims {
                // Refused at once (the link is down): told now.
                if let Some(outcome) = bus.claim(id, &name, self.now) {
                    chat.names(outcome, &mut self.deliveries);
                }
            }
        }
        let (mut bytes, mut frame) = (Vec::new(), Vec::new());
        while !self.deliveries.is_empty() {
            let mut batch = std::mem::take(&mut self.deliveries);
            for Delivery { to, event } in batch.drain(..) {
                let wire = Wire::render(&event, &mut bytes, &mut frame);
                let (room, except) = match to {
                    To::One(key) => {
                        self.outbox
                            .queue(&mut self.peers, key, wire, &mut self.counters);
                        continue;
                    }
                    To::Transcript => {
                        self.print(wire.line);
                        continue;
                    }
                    To::Room { room, except } => {
                        self.print(wire.line);
                        (Some(room), except)
                    }
                    To::Members { room, except } => (Some(room), except),
                    To::All => {
                        self.print(wire.line);
                        (None, None)
                    }
                };
                let mut tally = self.outbox.tally();
                let (outbox, peers) = (&mut self.outbox, &mut self.peers);
                // Each audience's own iterator type, so that the loop over a thousand members
                // is a plain walk of one set.
                match room {
                    Some(room) => {
                        if let Some(members) = self.service.members(room) {
                            outbox.queue_all(peers, members, except, wire, &mut tally);
                        }
                    }
                    None => {
                        let everyone = self.service.everyone();
                        outbox.queue_all(peers, everyone, except, wire, &mut tally);
                    }
                }
                self.outbox.count(tally, &mut self.counters);
            }
            if self.deliveries.is_empty() {
                self.deliveries = batch; // keep the capacity
            }
            self.drop_overflowed();
        }
    }

    /// Drops the clients whose queue overflowed: their departure goes out with the next lines.
    fn drop_overflowed(&mut self) {
        for key in std::mem::take(&mut self.outbox.overflowed) {
            let unread = self.peers.get(key).map_or(0, |p| p.owed.len());
            log::warn!(
                "dropping client {key}: {unread} bytes unread (--max-pending {})",
                self.config.max_pending
            );
            self.counters.too_slow += 1;
            self.announce_departure(key, Some(&notice::too_slow(unread)));
            self.close_now(key);
        }
    }

    /// A line (with its newline) for standard output.
    fn print(&mut self, line: &[u8]) {
        if !self.config.quiet {
            self.transcript.extend_from_slice(line);
        }
    }

    /// A line of the server's own for standard output.
    fn print_line(&mut self, line: &str) {
        if !self.config.quiet {
            self.transcript.extend_from_slice(line.as_bytes());
            self.transcript.push(b'\n');
        }
    }

    // ----- leaving -----
    //
    // A client departs (on its own, or told to: announced, then closed once its last lines are
    // written), or is dropped (a socket error, or too slow: announced, closed now). Either way
    // the departure is announced once, the close begins or happens now, and the socket is
    // handed back at the end of the turn.

    /// A socket error ends a client: its departure is announced and it is closed at once.
    fn drop_failed(&mut self, key: usize, error: &io::Error) {
        if self.peers.get(key).is_some_and(|p| p.state == State::Open) {
            let reason = describe(error);
            self.counters.errors += u64::from(reason.is_some());
            self.announce_departure(key, reason.as_deref());
            self.deliver();
        }
        self.close_now(key);
    }

    /// A client departs: announced (with the reason, if the server ends it), out of the room,
    /// not read any more, and closed once its last lines are written or [`LINGER`] is over.
    /// For a client already out of the room (it quit, or was kicked) only the closing is left.
    fn depart(&mut self, key: usize, reason: Option<&str>) {
        if self.peers.get(key).is_none_or(|p| p.state != State::Open) {
            return; // already on its way out
        }
        self.announce_departure(key, reason);
        self.deliver();
        self.begin_close(key);
        self.arm(key, Timer::Linger, self.now + LINGER);
    }

    /// The announcement of a departure, as the service has it.
    fn announce_departure(&mut self, key: usize, reason: Option<&str>) {
        if let Some(peer) = self.peers.get(key) {
            self.service
                .leave(key, peer.addr, reason, &mut self.deliveries);
        }
    }

    /// Stops reading a client; it is closed once its queue is written.
    fn begin_close(&mut self, key: usize) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if peer.state != State::Open {
            return;
        }
        peer.state = State::Closing;
        self.open -= 1;
        // A WebSocket client is told with a close frame, unless its own close is answered.
        let tell = match &mut peer.codec {
            Codec::WebSocket(decoder) => decoder.close(),
            _ => false,
        };
        if tell {
            let code = if self.shutdown_at.is_some() {
                status::GOING_AWAY
            } else {
                status::NORMAL
            };
            self.send(key, &websocket::encode_close(code, ""));
        }
        // An empty queue still needs a flush: that is where the close happens.
        if let Some(peer) = self.peers.get_mut(key) {
            self.outbox.mark_dirty(peer, key);
        }
    }

    /// Closes a client now, dropping whatever it is still owed.
    fn close_now(&mut self, key: usize) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if peer.state == State::Open {
            self.open -= 1;
        }
        if peer.state != State::Closed {
            peer.state = State::Closed;
            let owed = std::mem::take(&mut peer.owed.bytes);
            self.outbox.flow.taken(owed.len(), owed.len());
            if peer.owed.pace == Pace::Behind {
                self.outbox.flow.caught_up(key);
            }
            self.closed.push(key);
        }
    }

    // ----- writing -----

    fn write_out(&mut self, key: usize) -> io::Result<()> {
        let resume_below = self.pause_mark() / 2;
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        peer.writing = Writing::Idle;
        if peer.state == State::Closed {
            return Ok(());
        }
        let wrote = peer.write_owed(self.now);
        self.outbox.flow.taken(wrote.before, wrote.bytes);
        self.counters.bytes_out += wrote.bytes as u64;
        if wrote.caught_up {
            self.outbox.flow.caught_up(key);
        }
        if let Some(e) = wrote.error {
            return Err(e);
        }
        // Too slow is judged here, on what the kernel refused, never on what one turn queued
        // before its first write.
        if wrote.blocked && peer.owed.len() > self.outbox.max_pending && !peer.overflowed {
            peer.overflowed = true;
            self.outbox.overflowed.push(key);
        }
        if peer.state == State::Closing && !wrote.blocked {
            if peer.reading == Reading::Ended {
                // It has sent all it will send: nothing unread can turn the close into a reset.
                self.close_now(key);
                return Ok(());
            } else {
                // Our end of the stream goes after every byte; then wait for its end, reading
                // and discarding. Closing a socket with input unread sends a reset instead,
                // which can destroy the last lines still on their way to the client.
                peer.socket.shutdown_write();
                peer.state = State::Draining;
                self.ready.push(key); // input may be waiting already, with no event to come
            }
        }
        if peer.reading == Reading::Paused && peer.owed.len() < resume_below {
            // Room again for its input; half the mark, so that it is read in batches.
            peer.reading = Reading::Ready { drained: false };
            self.ready.push(key);
        }
        Ok(())
    }

    /// A client owed this much is not read until its queue is down to half of it: what it
    /// sends would add to what it has not read. In echo, everything it sends comes back; in
    /// chat, its replies and replays do (`/history` asked again and again while reading
    /// slowly), and its messages are held to its own pace as well as the room's.
    fn pause_mark(&self) -> usize {
        if self.service.is_echo() {
            self.config.max_pending
        } else {
            self.outbox.flow.member_high()
        }
    }

    // ----- timers -----

    /// Sets a timer for a connection unless one of that kind is already set: an entry that
    /// comes due too early is set again for the right time when it fires.
    fn arm(&mut self, key: usize, timer: Timer, at: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if peer.timers & timer.bit() == 0 {
            peer.timers |= timer.bit();
            self.deadlines.set(at, key, peer.generation, timer);
        }
    }

    fn quiet_passed(&mut self, key: usize) {
        let (Some(quiet), Some(peer)) = (self.config.flush_partial, self.peers.get(key)) else {
            return;
        };
        if peer.state != State::Open || peer.codec.is_empty() || peer.codec.has_line() {
            return;
        }
        if peer.reading != (Reading::Ready { drained: true }) {
            // The rest of the line may wait in the socket while the server holds the client
            // back: that quiet is ours. The read that finds the socket empty sets this again.
            return;
        }
        let due = peer.last_input + quiet;
        if due > self.now {
            // More bytes came since this was set: the quiet starts again from them.
            self.arm(key, Timer::FlushPartial, due);
        } else {
            self.end_line(key);
        }
    }

    /// A closing client is closed once it has read nothing for [`LINGER`]: one that never
    /// reads cannot hold its slot, one that reads slowly still gets all it is owed.
    fn check_linger(&mut self, key: usize) {
        let Some(peer) = self.peers.get(key) else {
            return;
        };
        if !matches!(peer.state, State::Closing | State::Draining) {
            return;
        }
        let due = peer.last_output + LINGER;
        if due > self.now {
            return self.arm(key, Timer::Linger, due);
        }
        log::debug!("{} did not read its last lines in time", peer.addr);
        self.close_now(key);
    }

    /// A TLS handshake, or a request head, that is still not done is a slowloris: the
    /// connection is closed. So is a silent connection under `--tls-only`.
    fn handshake_over(&mut self, key: usize) {
        let tls_only = self.tls_only();
        let Some(peer) = self.peers.get(key) else {
            return;
        };
        let late = match (&peer.codec, &peer.tls) {
            (Codec::Http(_), _) => "request head not whole",
            (_, Some(session)) if session.is_handshaking() => "TLS handshake not done",
            (Codec::Unsure, None) if tls_only => "no TLS handshake",
            _ => return,
        };
        if peer.state == State::Open {
            log::debug!("{}: {late} in time", peer.addr);
            self.close_now(key);
        }
    }

    fn check_idle(&mut self, key: usize) {
        let (Some(idle), Some(peer)) = (self.config.idle_timeout, self.peers.get(key)) else {
            return;
        };
        if peer.state != State::Open {
            return;
        }
        let due = peer.lines.last + idle;
        if due > self.now {
            return self.arm(key, Timer::Idle, due);
        }
        let secs = idle.as_secs();
        self.counters.idle += 1;
        self.send_line(key, &notice::idle(secs));
        self.depart(key, Some(&notice::idle_reason(secs)));
    }
}

/// What is owed and to whom: the connections to write before the next poll, those whose
/// queue overflowed, and the room's budget. (What went out is counted in the engine's
/// [`Counters`], which the caller lends.) Apart from the table of peers, so that a broadcast
/// can queue to every member while it walks the room.
struct Outbox {
    max_pending: usize,
    dirty: Vec<usize>,
    overflowed: Vec<usize>,
    flow: Flow,
}

impl Outbox {
    /// Appends bytes to what a client is owed, or notes that its queue overflowed: over
    /// `--max-pending` while its socket refuses more. A queue that grew in one turn, before
    /// its first write, is written first (see `write_out`).
    fn queue<S>(
        &mut self,
        peers: &mut Slab<Peer<S>>,
        key: usize,
        wire: Wire<'_>,
        counters: &mut Counters,
    ) {
        let mut tally = self.tally();
        self.queue_to(peers, key, wire, &mut tally);
        self.count(tally, counters);
    }

    /// [`Outbox::queue_to`] for each of `keys` but `except`.
    fn queue_all<S>(
        &mut self,
        peers: &mut Slab<Peer<S>>,
        keys: impl Iterator<Item = usize>,
        except: Option<usize>,
        wire: Wire<'_>,
        tally: &mut Tally,
    ) {
        for key in keys {
            if Some(key) != except {
                self.queue_to(peers, key, wire, tally);
            }
        }
    }

    /// [`Outbox::queue`] for one of many recipients: what the room's budget must count is
    /// tallied apart and counted once for all of them ([`Outbox::count`]), which keeps a
    /// broadcast's loop down to the copy.
    fn queue_to<S>(
        &mut self,
        peers: &mut Slab<Peer<S>>,
        key: usize,
        wire: Wire<'_>,
        tally: &mut Tally,
    ) {
        let Some(peer) = peers.get_mut(key) else {
            return;
        };
        // A draining client's side of the stream is shut: nothing more can be written to it.
        if matches!(peer.state, State::Draining | State::Closed) || peer.overflowed {
            return;
        }
        let bytes = if peer.codec.is_websocket() {
            wire.frame
        } else {
            wire.line
        };
        let (before, size) = (peer.owed.len(), bytes.len());
        if before > self.max_pending.saturating_sub(size) && peer.writing == Writing::Blocked {
            peer.overflowed = true;
            self.overflowed.push(key);
            return;
        }
        peer.owed.bytes.extend_from_slice(bytes);
        // Reaches the member's mark now: before < mark <= before + size, in one comparison.
        tally.full += usize::from(tally.last_below_mark.wrapping_sub(before) < size);
        tally.lines += 1;
        tally.bytes += size;
        self.mark_dirty(peer, key);
    }

    /// What one delivery's recipients are checked against, worked out once for all of them.
    fn tally(&self) -> Tally {
        Tally {
            last_below_mark: self.flow.member_high() - 1,
            full: 0,
            lines: 0,
            bytes: 0,
        }
    }

    /// Counts what a line's delivery added: for the room's budget, and for `/stats`.
    fn count(&mut self, tally: Tally, counters: &mut Counters) {
        counters.lines_out += tally.lines as u64;
        self.flow.queued(tally.bytes, tally.full);
    }

    /// Puts a connection on the list to write this turn, unless it is there already or its
    /// socket is full (a writable event will put it back).
    fn mark_dirty<S>(&mut self, peer: &mut Peer<S>, key: usize) {
        if peer.writing == Writing::Idle {
            peer.writing = Writing::Listed;
            self.dirty.push(key);
        }
    }
}

/// One line's delivery to its recipients: the limits it is checked against, and what it added,
/// counted once at the end ([`Outbox::count`]). A broadcast's loop over the members thus does
/// no more than copy, compare and add.
struct Tally {
    /// The member's mark, less one.
    last_below_mark: usize,
    /// Queues that reached the member's mark.
    full: usize,
    /// Recipients.
    lines: usize,
    /// Bytes queued to them all.
    bytes: usize,
}

/// One line as each codec sends it: the text line (also the transcript's), and the WebSocket
/// text frame. Rendered once per delivery, whoever its recipients.
#[derive(Clone, Copy)]
struct Wire<'a> {
    line: &'a [u8],
    frame: &'a [u8],
}

impl<'a> Wire<'a> {
    /// An event in both forms, in the buffers lent.
    fn render(event: &Event, line: &'a mut Vec<u8>, frame: &'a mut Vec<u8>) -> Wire<'a> {
        line.clear();
        line::encode(event, line);
        frame.clear();
        websocket::encode_text(&line[..line.len() - 1], frame);
        Wire { line, frame }
    }

    /// Bytes that are already in their one form.
    fn raw(bytes: &'a [u8]) -> Wire<'a> {
        Wire {
            line: bytes,
            frame: bytes,
        }
    }
}

/// What an input means for its connection.
enum Verdict {
    Stay,
    Close,
    Foreign(Foreign),
    Request(http::Request),
    BadRequest(u16),
    /// Send these bytes (a pong).
    Reply(Vec<u8>),
    /// Send these bytes (a close frame), then close.
    CloseWith(Vec<u8>),
}

/// Acts on one input from a client, by the server's mode. A free function over the parts it
/// needs, because a line borrows the connection's codec while the chat runs.
fn on_frame(
    service: &mut Service,
    out: &mut Vec<Delivery>,
    config: &Config,
    (key, addr): (usize, SocketAddr),
    at: u64,
    input: Input<'_>,
) -> Verdict {
    match input {
        Input::TooLong => {
            out.push(Delivery {
                to: To::One(key),
                event: Event::line(notice::too_long(config.max_line)),
            });
            Verdict::Stay
        }
        Input::Foreign(foreign) => Verdict::Foreign(foreign),
        Input::Request(request) => Verdict::Request(request),
        Input::BadRequest(status) => Verdict::BadRequest(status),
        Input::Reply(bytes) => Verdict::Reply(bytes),
        Input::Close(bytes) => Verdict::CloseWith(bytes),
        Input::Line(raw) => match service.line(key, addr, raw, at, out) {
            After::Stay => Verdict::Stay,
            After::Close => Verdict::Close,
        },
    }
}

/// `now` in seconds since the Unix epoch, from the Unix time at `started`.
fn unix_secs(started_unix: Duration, started: Instant, now: Instant) -> u64 {
    (started_unix + now.saturating_duration_since(started)).as_secs()
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

#[cfg(test)]
mod tests;
