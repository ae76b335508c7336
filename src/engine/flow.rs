//! Flow control for the whole room: the server takes new input only while the output it already
//! owes is within a budget. Pure bookkeeping; the engine asks it and acts.
//!
//! A broadcast turns one line in into one copy per member out, so a room's input must be paced
//! by what its members can be written, not by what each sender may send: per-sender limits
//! (`--rate`) do nothing against many senders, and a flood of short connections brings a fresh
//! budget with each. Without a room-wide bound, one turn could queue more for every member than
//! `--max-pending` allows, and readers that read everything were dropped for bytes the server
//! never tried to write.
//!
//! # The measure
//!
//! Bytes owed to the clients that keep up, in all ([`ROOM_HIGH_WATER`] to stop taking input,
//! [`ROOM_LOW_WATER`] to take it again), and in the largest queue ([`member_high_water`]): the
//! total bounds the server's memory, the largest queue keeps every reader that keeps up far
//! below `--max-pending`, so only a reader that stops reading can ever reach it.
//!
//! A client keeps up while its queue empties now and then. One whose socket has refused bytes
//! for [`BEHIND_AFTER`] without its queue emptying in between is *behind*: what it is owed
//! stops counting, so a client that never reads holds the room back for a moment, not for
//! ever; it goes on being queued to until `--max-pending`, and is dropped there as before. It
//! keeps up again when its queue empties.
//!
//! [`ROOM_HIGH_WATER`]: crate::config::flow::ROOM_HIGH_WATER
//! [`ROOM_LOW_WATER`]: crate::config::flow::ROOM_LOW_WATER
//! [`member_high_water`]: crate::config::flow::member_high_water
//! [`BEHIND_AFTER`]: crate::config::flow::BEHIND_AFTER

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::flow::{BEHIND_AFTER, ROOM_HIGH_WATER, ROOM_LOW_WATER};

/// Whether what a client is owed holds the room's input back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Its queue empties now and then: the room waits for it.
    Keeping,
    /// Its socket has refused bytes for [`BEHIND_AFTER`], its queue never emptying: the room
    /// goes on without it.
    Behind,
}

/// The room's budget, and the clients waiting for it, served in turn.
///
/// What is owed is counted for every client, behind or not, so that a broadcast's loop does
/// no more than add; the few clients behind are listed, and their share is taken out when the
/// marks are applied ([`Flow::recheck`]).
pub struct Flow {
    member_high: usize,
    /// Bytes owed, to every client.
    owed: usize,
    /// Clients with at least `member_high` bytes owed.
    full: usize,
    /// Clients behind: what they are owed does not count.
    behind: Vec<usize>,
    /// Input is held back: set at a high-water mark, cleared below the low one.
    holding: bool,
    /// Clients with input the room has not taken yet.
    waiting: Turns,
    /// When clients that do not keep up are looked for next, while input is held.
    sweep_at: Option<Instant>,
    /// Since when input has been held back, until every waiting client has been served.
    episode: Option<Instant>,
    pub holds: u64,
    /// Time senders waited in the episodes that have ended.
    held_for: Duration,
}

/// What changed when the room's state was looked at: for the transcript.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// Input is held back from now on.
    Started,
    /// Every waiting client has been served: input flows freely again, after this long.
    Ended(Duration),
}

impl Flow {
    pub fn new(member_high: usize) -> Flow {
        Flow {
            member_high,
            owed: 0,
            full: 0,
            behind: Vec::new(),
            holding: false,
            waiting: Turns::default(),
            sweep_at: None,
            episode: None,
            holds: 0,
            held_for: Duration::ZERO,
        }
    }

    /// The member's mark: a queue of this many bytes holds the room's input back.
    pub fn member_high(&self) -> usize {
        self.member_high
    }

    /// Queues grew by `n` bytes in all, and `filled` of them reached the member's mark.
    pub fn queued(&mut self, n: usize, filled: usize) {
        self.owed += n;
        self.full += filled;
    }

    /// A queue of `before` bytes shrank by `n` (written, or thrown away).
    pub fn taken(&mut self, before: usize, n: usize) {
        self.owed -= n;
        if before >= self.member_high && before - n < self.member_high {
            self.full -= 1;
        }
    }

    /// A client falls behind: what it is owed stops counting.
    pub fn fell_behind(&mut self, key: usize) {
        self.behind.push(key);
    }

    /// A client behind has caught up (its queue is empty), or is gone.
    pub fn caught_up(&mut self, key: usize) {
        self.behind.retain(|&k| k != key);
    }

    /// The clients behind, whose queues the caller measures for [`Flow::recheck`].
    pub fn behind(&self) -> &[usize] {
        &self.behind
    }

    /// Applies the marks to what the clients that keep up are owed: what is owed in all, less
    /// `behind_owed` bytes and `behind_full` full queues of the clients behind. Holding starts
    /// at a high mark and ends below the low ones. Returns whether input must wait.
    pub fn recheck(&mut self, behind_owed: usize, behind_full: usize, now: Instant) -> bool {
        let owed = self.owed - behind_owed;
        let full = self.full - behind_full;
        let holding = if self.holding {
            owed > ROOM_LOW_WATER || full > 0
        } else {
            owed >= ROOM_HIGH_WATER || full > 0
        };
        if holding && !self.holding {
            self.holds += 1;
            self.sweep_at.get_or_insert(now + BEHIND_AFTER);
        }
        self.holding = holding;
        holding
    }

    /// Whether the member's mark counts a queue of `len` bytes as full.
    pub fn is_full(&self, len: usize) -> bool {
        len >= self.member_high
    }

    /// Whether input must wait.
    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// Whether clients are waiting to be served in turn: each read is then a share of the turn,
    /// so that one client cannot take the whole budget.
    pub fn is_contended(&self) -> bool {
        self.holding || self.waiting.len > 0
    }

    /// A client with input waits for its turn, at the back.
    pub fn wait(&mut self, key: usize, from: IpAddr, now: Instant) -> Change {
        self.waiting.push(key, from);
        if self.episode.is_none() {
            self.episode = Some(now);
            return Change::Started;
        }
        Change::None
    }

    /// A client that waited is gone.
    pub fn forget(&mut self, key: usize, from: IpAddr) {
        self.waiting.remove(key, from);
    }

    /// The next client to serve, if the room can take input now.
    pub fn next_waiting(&mut self) -> Option<usize> {
        if self.holding {
            return None;
        }
        self.waiting.pop()
    }

    /// Clients waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.len
    }

    /// Whether the loop has clients to serve without waiting for an event.
    pub fn has_ready(&self) -> bool {
        !self.holding && self.waiting.len > 0
    }

    /// Ends the episode once every waiting client has been served.
    pub fn settle(&mut self, now: Instant) -> Change {
        if self.holding || self.waiting.len > 0 {
            return Change::None;
        }
        self.sweep_at = None;
        match self.episode.take() {
            Some(since) => {
                let held = now.saturating_duration_since(since);
                self.held_for += held;
                Change::Ended(held)
            }
            None => Change::None,
        }
    }

    /// Time senders have spent waiting, over every episode, the one under way included.
    pub fn held_for(&self, now: Instant) -> Duration {
        let current = self
            .episode
            .map(|since| now.saturating_duration_since(since));
        self.held_for + current.unwrap_or_default()
    }

    /// When to look for clients that do not keep up: only while input is held back.
    pub fn sweep_at(&self) -> Option<Instant> {
        self.sweep_at.filter(|_| self.holding)
    }

    /// Whether it is time to look for clients that fell behind; sets the next look.
    pub fn sweep_due(&mut self, now: Instant) -> bool {
        match self.sweep_at {
            Some(at) if at <= now && self.holding => {
                self.sweep_at = Some(now + BEHIND_AFTER);
                true
            }
            _ => false,
        }
    }

    /// Whether a client whose socket has refused bytes since `since`, its queue never emptying,
    /// is behind at `now`.
    pub fn is_behind(since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) >= BEHIND_AFTER
    }
}

/// Clients waiting their turn, served by address first: each address in turn, and within an
/// address each client in turn. A thousand connections from one address get one address's
/// share, not a thousand, so that people elsewhere keep being heard through a flood.
#[derive(Default)]
struct Turns {
    addresses: VecDeque<IpAddr>,
    clients: HashMap<IpAddr, VecDeque<usize>>,
    len: usize,
}

impl Turns {
    fn push(&mut self, key: usize, from: IpAddr) {
        let clients = self.clients.entry(from).or_default();
        if clients.is_empty() {
            self.addresses.push_back(from);
        }
        clients.push_back(key);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<usize> {
        let from = self.addresses.pop_front()?;
        let clients = self.clients.get_mut(&from)?;
        let key = clients.pop_front()?;
        self.len -= 1;
        if clients.is_empty() {
            self.clients.remove(&from);
        } else {
            self.addresses.push_back(from);
        }
        Some(key)
    }

    fn remove(&mut self, key: usize, from: IpAddr) {
        let Some(clients) = self.clients.get_mut(&from) else {
            return;
        };
        let Some(at) = clients.iter().position(|&k| k == key) else {
            return;
        };
        clients.remove(at);
        self.len -= 1;
        if clients.is_empty() {
            self.clients.remove(&from);
            self.addresses.retain(|&a| a != from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_the_high_marks_and_lets_go_below_the_low_one() {
        let t0 = Instant::now();
        let mut f = Flow::new(1000);
        f.queued(999, 0);
        assert!(!f.recheck(0, 0, t0));
        f.queued(1, 1); // 999 + 1 reaches the mark of 1000
        assert!(f.recheck(0, 0, t0), "one queue at the member's mark");
        f.taken(1000, 1000);
        assert!(!f.recheck(0, 0, t0));

        let mut f = Flow::new(usize::MAX);
        f.queued(ROOM_HIGH_WATER, 0);
        assert!(f.recheck(0, 0, t0), "the room's mark");
        f.taken(ROOM_HIGH_WATER, ROOM_HIGH_WATER - ROOM_LOW_WATER - 1);
        assert!(f.recheck(0, 0, t0), "still above the low mark");
        f.taken(ROOM_LOW_WATER + 1, 1);
        assert!(!f.recheck(0, 0, t0));
        assert_eq!(f.holds, 1);
    }

    #[test]
    fn a_client_behind_stops_counting() {
        let t0 = Instant::now();
        let mut f = Flow::new(1000);
        f.queued(5000, 1); // client 7, keeping up
        f.queued(5000, 1); // client 8
        assert!(f.recheck(0, 0, t0));
        assert!(!f.sweep_due(t0));
        assert!(f.sweep_due(t0 + BEHIND_AFTER));
        f.fell_behind(7);
        assert_eq!(f.behind(), [7]);
        assert!(f.recheck(5000, 1, t0), "client 8 still holds the room");
        f.taken(5000, 5000);
        assert!(
            !f.recheck(5000, 1, t0),
            "client 8 caught up; 7 does not count"
        );
        f.caught_up(7);
        assert!(f.behind().is_empty());
    }

    #[test]
    fn waiting_clients_are_served_in_turn_and_the_episode_is_timed() {
        let t0 = Instant::now();
        let mut f = Flow::new(1000);
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(f.wait(3, here, t0), Change::Started);
        assert_eq!(f.wait(1, here, t0), Change::None);
        assert!(f.is_contended() && f.has_ready());
        f.queued(1000, 1);
        f.recheck(0, 0, t0);
        assert_eq!(f.next_waiting(), None, "nobody while holding");
        assert_eq!(f.settle(t0), Change::None);
        f.taken(1000, 1000);
        f.recheck(0, 0, t0);
        let t1 = t0 + Duration::from_millis(30);
        assert_eq!(f.next_waiting(), Some(3));
        assert_eq!(
            f.wait(3, here, t1),
            Change::None,
            "served, then back in line"
        );
        assert_eq!(f.next_waiting(), Some(1));
        assert_eq!(f.next_waiting(), Some(3));
        assert_eq!(
            f.held_for(t1),
            Duration::from_millis(30),
            "the episode under way"
        );
        assert_eq!(f.settle(t1), Change::Ended(Duration::from_millis(30)));
        assert_eq!(
            f.held_for(t1 + Duration::from_secs(1)),
            Duration::from_millis(30)
        );
        assert!(!f.is_contended());
    }

    #[test]
    fn each_address_gets_its_turn_however_many_connections_it_has() {
        let t0 = Instant::now();
        let mut f = Flow::new(1000);
        let flood: IpAddr = "10.0.0.1".parse().unwrap();
        let person: IpAddr = "10.0.0.2".parse().unwrap();
        for key in 0..100 {
            f.wait(key, flood, t0);
        }
        f.wait(500, person, t0);
        assert_eq!(f.next_waiting(), Some(0));
        assert_eq!(f.next_waiting(), Some(500), "second, not 101st");
        f.wait(500, person, t0);
        assert_eq!(f.next_waiting(), Some(1));
        assert_eq!(f.next_waiting(), Some(500));
        f.forget(7, flood);
        assert_eq!(f.waiting(), 97);
        let served: Vec<usize> = std::iter::from_fn(|| f.next_waiting()).collect();
        assert_eq!(served.len(), 97);
        assert!(!served.contains(&7));
    }
}
