//! The engine's connection to the bus (nats-server): one more connection of the loop, with its
//! own state, buffers and timers, and no thread.
//!
//! The link goes down → connecting (the loop made a socket) → handshaking (INFO came, CONNECT
//! and the subscriptions went, a PING waits for its PONG) → up. Any failure takes it down, and
//! it connects again after a wait that doubles up to a limit, with jitter. While it is down, the
//! node's own clients go on chatting: what they say is counted as unsent, not queued, because
//! core NATS would not deliver it later anyway (at-most-once).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Socket;
use crate::claims::{Claims, Outcome};
use crate::cluster::{self, Arrival, Gossip, Node};
use crate::config::Cluster;
use crate::config::cluster::{
    HANDSHAKE, HEARTBEAT, MAX_OWED, NODE_TIMEOUT, PRESENCE_DELAY, READ_SHARE, RECONNECT_MAX,
    RECONNECT_MIN,
};
use crate::nats::{self, Decoder, Op};

/// The largest message the bus may send: its INFO may lower this, not raise it.
const MAX_PAYLOAD: usize = 1 << 20;
/// Subscription ids: room traffic, presence, this node's private messages.
const SUBSCRIPTIONS: [(u64, &str); 2] = [(1, cluster::ROOMS), (2, cluster::PRESENCE)];
const PRIVATE_SID: u64 = 3;
/// Answers to this node's requests (JetStream's, for names).
const INBOX_SID: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    /// A socket is connecting; the bus speaks first (INFO).
    Connecting,
    /// CONNECT and the subscriptions are sent; the PONG to our PING says they were taken.
    Handshaking,
    Up,
}

/// What the bus link has for the engine after an event or a timer.
#[derive(Debug, Default)]
pub struct News {
    /// Gossip from other nodes, in the order it arrived.
    pub gossip: Vec<(String, Gossip)>,
    /// Lines for the transcript (lost messages, the link's state).
    pub transcript: Vec<String>,
    /// The link came up after having been down: since when.
    pub back_after: Option<(Duration, u64)>,
    /// The link went down after having been up.
    pub lost: bool,
    /// Nodes not heard from for too long.
    pub gone: Vec<String>,
    /// What came of this node's requests about names.
    pub names: Vec<Outcome>,
}

pub struct Bus<S> {
    config: Cluster,
    node: Node,
    claims: Claims,
    link: Link,
    socket: Option<S>,
    decoder: Decoder,
    out: Vec<u8>,
    /// The bus to try next, in `config.buses`.
    next_bus: usize,
    /// Failed connections in a row: the wait before the next one doubles with each.
    failures: u32,
    /// While down: when to connect again.
    retry_at: Instant,
    /// While connecting or handshaking: when to give up.
    handshake_by: Instant,
    /// The next presence dump: the heartbeat, or sooner after a change.
    presence_at: Instant,
    generation: u64,
    /// When each other node was last heard from.
    heard: HashMap<String, Instant>,
    /// Since when the link has been down, after having been up; and the unsent count then.
    down_since: Option<(Instant, u64)>,
    /// Read again without waiting for an event: the last read stopped at its share.
    again: bool,
    /// Jitter's state (xorshift), seeded by the node's boot.
    rng: u64,
}

impl<S: Socket> Bus<S> {
    pub fn new(config: Cluster, boot: u64, now: Instant) -> Bus<S> {
        Bus {
            node: Node::new(&config.node, boot),
            claims: Claims::new(&config.node, boot),
            config,
            link: Link::Down,
            socket: None,
            decoder: Decoder::new(MAX_PAYLOAD),
            out: Vec::new(),
            next_bus: 0,
            failures: 0,
            retry_at: now,
            handshake_by: now,
            presence_at: now,
            generation: 0,
            heard: HashMap::new(),
            down_since: None,
            again: false,
            rng: boot | 1,
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn is_up(&self) -> bool {
        self.link == Link::Up
    }

    /// The address to connect to now, if the link wants a connection; the loop connects and
    /// hands the socket to [`Bus::attach`].
    pub fn wants_connection(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.link != Link::Down || now < self.retry_at {
            return None;
        }
        let (_, addr) = self.config.buses[self.next_bus % self.config.buses.len()];
        self.next_bus += 1;
        Some(addr)
    }

    /// The socket the loop connected (or is connecting).
    pub fn attach(&mut self, socket: S, now: Instant) {
        self.socket = Some(socket);
        self.link = Link::Connecting;
        self.handshake_by = now + HANDSHAKE;
        self.decoder = Decoder::new(MAX_PAYLOAD);
        self.out.clear();
    }

    /// The loop could not even start a connection.
    pub fn connect_failed(&mut self, error: &io::Error, now: Instant, news: &mut News) {
        self.fail(&format!("cannot connect: {error}"), now, news);
    }

    /// When the link next needs the loop's attention (a retry, a deadline, a heartbeat).
    pub fn deadline(&self) -> Instant {
        let link = match self.link {
            Link::Down => self.retry_at,
            Link::Connecting | Link::Handshaking => self.handshake_by,
            Link::Up => self
                .claims
                .deadline()
                .map_or(self.presence_at, |c| c.min(self.presence_at)),
        };
        let expiry = self.heard.values().min().map(|&t| t + NODE_TIMEOUT);
        expiry.map_or(link, |e| e.min(link))
    }

    pub fn has_again(&self) -> bool {
        self.again
    }

    /// Gossip from this node's clients: published if the link is up, counted as unsent if not
    /// (or if the bus is not taking what it has already).
    pub fn publish(&mut self, gossip: &Gossip) {
        if self.link == Link::Up && self.out.len() < MAX_OWED {
            self.node.publish(gossip, &mut self.out);
        } else {
            self.node.unsent();
        }
    }

    /// Asks the cluster for a name for client `id`; refused at once if the link is down.
    pub fn claim(&mut self, id: usize, name: &str, now: Instant) -> Option<Outcome> {
        if self.link != Link::Up {
            return Some(Outcome::Refused {
                id,
                name: name.to_owned(),
                taken: false,
            });
        }
        self.claims.claim(id, name, now, &mut self.out);
        None
    }

    /// Gives a name back to the cluster (while the link is down, the bucket forgets it by
    /// itself).
    pub fn release(&mut self, name: &str) {
        if self.link == Link::Up {
            self.claims.release(name, &mut self.out);
        }
    }

    /// This node's presence has changed: it is published soon (not at once, so that a crowd
    /// arriving together is one dump).
    pub fn presence_changed(&mut self, now: Instant) {
        self.presence_at = self.presence_at.min(now + PRESENCE_DELAY);
    }

    /// Time passes: the handshake's deadline, the heartbeat (`presence` is asked for this
    /// node's clients only when a dump is due), nodes not heard from.
    pub fn tick(
        &mut self,
        now: Instant,
        presence: impl FnOnce() -> Vec<crate::remote::Client>,
        news: &mut News,
    ) {
        match self.link {
            Link::Connecting | Link::Handshaking if now >= self.handshake_by => {
                self.fail("no answer from the bus in time", now, news);
            }
            Link::Up => {
                news.names.extend(self.claims.tick(now, &mut self.out));
                if now >= self.presence_at {
                    self.generation += 1;
                    for part in cluster::presence_parts(self.generation, presence()) {
                        self.node.publish(&part, &mut self.out);
                    }
                    self.presence_at = now + HEARTBEAT;
                }
            }
            _ => {}
        }
        let gone: Vec<String> = self
            .heard
            .iter()
            .filter(|&(_, &at)| now >= at + NODE_TIMEOUT)
            .map(|(node, _)| node.clone())
            .collect();
        for node in gone {
            self.heard.remove(&node);
            self.node.forget(&node);
            news.transcript
                .push(crate::notice::node_gone(&node, NODE_TIMEOUT.as_secs()));
            news.gone.push(node);
        }
    }

    /// The bus's socket is readable or writable (or may be): reads up to its share, handles
    /// what came, and writes what is owed.
    pub fn ready(&mut self, scratch: &mut [u8], now: Instant, news: &mut News) {
        self.again = false;
        let mut share = READ_SHARE;
        while share > 0 {
            let Some(socket) = self.socket.as_mut() else {
                return;
            };
            let want = scratch.len().min(share);
            match socket.read(&mut scratch[..want]) {
                Ok(0) => return self.fail("the bus closed the connection", now, news),
                Ok(n) => {
                    share -= n;
                    let mut input = &scratch[..n];
                    while let Some(op) = self.decoder.next(&mut input) {
                        match op {
                            Ok(op) => self.on_op(op, now, news),
                            Err(e) => return self.fail(&e.to_string(), now, news),
                        }
                        if self.link == Link::Down {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(&e.to_string(), now, news),
            }
        }
        self.again = share == 0;
        self.write(now, news);
    }

    /// Writes what the bus is owed, until the socket is full.
    pub fn write(&mut self, now: Instant, news: &mut News) {
        let Some(socket) = self.socket.as_mut() else {
            return;
        };
        while !self.out.is_empty() {
            match socket.write(&self.out) {
                Ok(0) => return self.fail("the bus took nothing", now, news),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Still connecting: the bus speaks first, so nothing should be owed yet.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(&e.to_string(), now, news),
            }
        }
    }

    /// Says goodbye to the other nodes (the server is stopping): its clients are gone at once,
    /// not after the node timeout.
    pub fn bye(&mut self, now: Instant, news: &mut News) {
        if self.link == Link::Up {
            self.node.publish(&Gossip::Bye, &mut self.out);
            self.write(now, news);
        }
    }

    fn on_op(&mut self, op: Op, now: Instant, news: &mut News) {
        match op {
            Op::Info(info) => {
                // Never more than ours: no node sends a message near a megabyte, and a bus set to
                // allow 64 MB must not make the node hold that much for one message.
                if let Some(max) = max_payload(&info) {
                    self.decoder.set_max_payload(max.min(MAX_PAYLOAD));
                }
                if self.link == Link::Connecting {
                    let version = env!("CARGO_PKG_VERSION");
                    let name = format!("loopchat {}", self.node.name());
                    nats::connect(&mut self.out, &name, version);
                    for (sid, subject) in SUBSCRIPTIONS {
                        nats::subscribe(&mut self.out, subject, None, sid);
                    }
                    let private = cluster::node_subject(self.node.name());
                    nats::subscribe(&mut self.out, &private, None, PRIVATE_SID);
                    let inbox = self.claims.inbox_subject();
                    nats::subscribe(&mut self.out, &inbox, None, INBOX_SID);
                    nats::ping(&mut self.out);
                    self.link = Link::Handshaking;
                }
            }
            Op::Ping => nats::pong(&mut self.out),
            Op::Pong if self.link == Link::Handshaking => {
                self.link = Link::Up;
                self.failures = 0;
                // Everyone hears from this node at once.
                self.presence_at = now;
                self.claims.link_up(now, &mut self.out);
                let (address, _) =
                    &self.config.buses[(self.next_bus - 1) % self.config.buses.len()];
                news.transcript
                    .push(crate::notice::bus_up(self.node.name(), address));
                if let Some((since, unsent)) = self.down_since.take() {
                    let missed = self.node.tally.unsent - unsent;
                    news.back_after = Some((now.saturating_duration_since(since), missed));
                }
            }
            Op::Pong | Op::Ok => {}
            Op::Err(e) => log::warn!("bus: -ERR {e}"),
            Op::Msg(msg) if msg.sid == INBOX_SID => {
                news.names
                    .extend(self.claims.answer(&msg, now, &mut self.out));
            }
            Op::Msg(msg) => {
                let Some((node, gossip, arrival)) = self.node.receive(&msg) else {
                    return;
                };
                if let Arrival::AfterGap { missed } = arrival {
                    news.transcript
                        .push(crate::notice::bus_missed(missed, &node));
                }
                if gossip == Gossip::Bye {
                    self.heard.remove(&node);
                    self.node.forget(&node);
                } else if let Some(at) = self.heard.get_mut(&node) {
                    *at = now;
                } else {
                    self.heard.insert(node.clone(), now);
                }
                news.gossip.push((node, gossip));
            }
        }
    }

    /// The link is down: the socket dropped, and a new connection after the backoff.
    fn fail(&mut self, why: &str, now: Instant, news: &mut News) {
        log::warn!("bus: {why}");
        if self.link == Link::Up {
            news.lost = true;
            news.transcript.push(crate::notice::bus_lost(why));
            self.down_since = Some((now, self.node.tally.unsent));
        }
        news.names.extend(self.claims.link_down());
        self.link = Link::Down;
        self.socket = None;
        self.out.clear();
        self.again = false;
        let wait = RECONNECT_MIN
            .saturating_mul(1 << self.failures.min(16))
            .min(RECONNECT_MAX);
        self.failures += 1;
        self.retry_at = now + wait + self.jitter(wait / 2);
    }

    /// Up to `most`, at random.
    fn jitter(&mut self, most: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let nanos = u64::try_from(most.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(self.rng % nanos)
    }
}

/// `max_payload` from the bus's INFO.
fn max_payload(info: &str) -> Option<usize> {
    let value: serde_json::Value = serde_json::from_str(info).ok()?;
    usize::try_from(value.get("max_payload")?.as_u64()?).ok()
}
