//! The measured messages of the throughput and flood workloads: S senders each keep at most W
//! messages in flight (sent but not yet received, nor skipped past, by every other receiver
//! still connected), and every receiver checks each sender's sequence: lost (a gap that never
//! filled), reordered (a gap filled later), duplicated. A message lost on the way is counted
//! and the sender goes on: it is not waited for. A gap shows once a later message arrives; with
//! [`Traffic::give_up_after`], a message in flight too long counts as lost too (nothing may
//! come after it: its sender waits for it).

use crate::generator::{Ev, Gen};
use crate::stats::Histogram;
use crate::wire::{Kind, Msg};
use std::time::Duration;

/// One receiver's view of one sender's sequence.
#[derive(Clone, Default)]
struct Track {
    next: u32,
    /// Skipped sequence numbers: lost unless they turn up later (then: reordered).
    missing: Vec<u32>,
}

/// Receivers are the generator's connections 0..n; the first S of them also send.
pub struct Traffic {
    n: usize,
    s: usize,
    w: usize,
    size: usize,
    tracks: Vec<Track>,
    /// Per sender: next sequence to send, oldest not yet received by all, receipts per slot.
    next_seq: Vec<u32>,
    acked: Vec<u32>,
    ring: Vec<u32>,
    /// Per sender and slot: when the message in it was sent (ns, the generator's clock).
    sent_at: Vec<u64>,
    /// In flight longer than this (ns), a message counts as lost for those who lack it.
    give_up: Option<u64>,
    /// Messages given up on: some receiver did not get them in time.
    pub given_up: u64,
    /// Receivers whose connection has not ended.
    live: Vec<bool>,
    live_count: u32,
    pub dup: u64,
    pub reordered: u64,
    /// A sender's own message came back to it.
    pub echoed: u64,
    /// A message from no sender, or with a sequence not sent yet.
    pub bogus: u64,
    /// Receipts while measuring, and messages every receiver got while measuring.
    pub deliveries: u64,
    pub completed: u64,
    /// Send-to-receipt latency of the receipts while measuring, in ns.
    pub hist: Histogram,
}

impl Traffic {
    pub fn new(n: usize, s: usize, w: usize, size: usize) -> Traffic {
        Traffic {
            n,
            s,
            w,
            size,
            tracks: vec![Track::default(); n * s],
            next_seq: vec![0; s],
            acked: vec![0; s],
            ring: vec![0; s * w],
            sent_at: vec![0; s * w],
            give_up: None,
            given_up: 0,
            live: vec![true; n],
            live_count: n as u32,
            dup: 0,
            reordered: 0,
            echoed: 0,
            bogus: 0,
            deliveries: 0,
            completed: 0,
            hist: Histogram::default(),
        }
    }

    /// A message still missing at some receivers `limit` after it was sent counts as lost there
    /// (and as reordered if it turns up after all), and its sender goes on. Without this, a
    /// message lost after a sender's last one stays in flight, and with W of them lost (a link
    /// cut for a while) the sender stops for good: they end as undelivered.
    pub fn give_up_after(mut self, limit: Duration) -> Traffic {
        self.give_up = Some(limit.as_nanos() as u64);
        self
    }

    /// Receipts that complete a message of sender `si`: every other receiver still connected.
    fn needed(&self, si: usize) -> u32 {
        self.live_count - u32::from(self.live[si])
    }

    /// Tops every sender still connected up to W messages in flight.
    pub fn send(&mut self, g: &mut Gen) {
        let sent_ns = g.now_ns();
        for i in 0..self.s {
            if !self.live[i] || self.needed(i) == 0 {
                continue;
            }
            while self.next_seq[i] - self.acked[i] < self.w as u32 {
                let msg = Msg {
                    kind: Kind::Data,
                    sender: i as u32,
                    seq: self.next_seq[i],
                    sent_ns,
                };
                g.send(i, &msg, self.size);
                self.sent_at[i * self.w + msg.seq as usize % self.w] = sent_ns;
                self.next_seq[i] += 1;
            }
        }
    }

    /// Polls once (at most 5 ms) and records what arrived; returns the connections that ended.
    pub fn turn(
        &mut self,
        g: &mut Gen,
        evs: &mut Vec<(usize, Ev)>,
        measuring: bool,
    ) -> Result<Vec<usize>, String> {
        evs.clear();
        g.turn(Duration::from_millis(5), evs)
            .map_err(|e| format!("poll: {e}"))?;
        let mut ended = Vec::new();
        for &(r, ev) in evs.iter() {
            match ev {
                Ev::Msg(m, at) if m.kind == Kind::Data => self.receive(r, m, at, measuring),
                Ev::Msg(..) | Ev::Connected => {}
                Ev::Closed => ended.push(r),
            }
        }
        if let Some(limit) = self.give_up {
            self.expire(g.now_ns(), limit, measuring);
        }
        Ok(ended)
    }

    /// Gives up on every sender's oldest messages sent more than `limit` ns before `now`: the
    /// receivers still connected that lack one count it missing (lost), and it is settled.
    pub fn expire(&mut self, now: u64, limit: u64, measuring: bool) {
        for si in 0..self.s {
            while self.acked[si] < self.next_seq[si] {
                let q = self.acked[si];
                let slot = si * self.w + q as usize % self.w;
                if now.saturating_sub(self.sent_at[slot]) <= limit {
                    break;
                }
                // Every receiver has settled what comes before q: one that lacks q expects it
                // next.
                for r in (0..self.n).filter(|&r| r != si && self.live[r]) {
                    let t = &mut self.tracks[r * self.s + si];
                    if t.next == q {
                        t.missing.push(q);
                        t.next = q + 1;
                    }
                }
                self.given_up += 1;
                self.ring[slot] = self.needed(si);
                self.advance(si, measuring);
            }
        }
    }

    /// Every message sent has reached every receiver still connected.
    pub fn drained(&self) -> bool {
        (0..self.s).all(|i| self.next_seq[i] == self.acked[i] || self.needed(i) == 0)
    }

    /// Receiver `r` got `m` at `at` ns.
    pub fn receive(&mut self, r: usize, m: Msg, at: u64, measuring: bool) {
        let si = m.sender as usize;
        if si >= self.s || r >= self.n || m.seq >= self.next_seq[si] {
            self.bogus += 1;
            return;
        }
        if r == si {
            self.echoed += 1;
            return;
        }
        let t = &mut self.tracks[r * self.s + si];
        let skipped = t.next..m.seq.max(t.next);
        if m.seq >= t.next {
            t.missing.extend(skipped.clone());
            t.next = m.seq + 1;
        } else if let Some(pos) = t.missing.iter().position(|&q| q == m.seq) {
            // Its slot was settled when it was skipped.
            t.missing.swap_remove(pos);
            self.reordered += 1;
            self.record(at, m.sent_ns, measuring);
            return;
        } else {
            self.dup += 1;
            return;
        }
        // A skipped message settles this receiver's part of it: lost unless it turns up later
        // (then reordered), and either way no reason to stop the sender. A message lost on the
        // way (a cluster's bus drops, it does not resend) is then counted, not waited for.
        // Skipped sequences are in flight: this receiver had not settled them, so the sender
        // could not have moved past them, and they are fewer than W.
        for q in skipped.chain(std::iter::once(m.seq)) {
            self.ring[si * self.w + q as usize % self.w] += 1;
        }
        let oldest = self.ring[si * self.w + self.acked[si] as usize % self.w];
        if oldest >= self.needed(si) {
            self.advance(si, measuring);
        }
        self.record(at, m.sent_ns, measuring);
    }

    fn record(&mut self, at: u64, sent_ns: u64, measuring: bool) {
        if measuring {
            self.deliveries += 1;
            self.hist.record(at.saturating_sub(sent_ns));
        }
    }

    /// Moves sender `si`'s oldest unfinished message past every one all receivers have.
    fn advance(&mut self, si: usize, measuring: bool) {
        let need = self.needed(si);
        while self.acked[si] < self.next_seq[si] {
            let slot = &mut self.ring[si * self.w + self.acked[si] as usize % self.w];
            if *slot < need {
                break;
            }
            *slot = 0;
            self.acked[si] += 1;
            self.completed += u64::from(measuring);
        }
    }

    /// Receiver `r`'s connection ended: messages in flight no longer wait for it, so their
    /// receipts (and skips) are counted again over the receivers left.
    pub fn receiver_gone(&mut self, r: usize, measuring: bool) {
        if r >= self.n || !self.live[r] {
            return;
        }
        self.live[r] = false;
        self.live_count -= 1;
        for si in 0..self.s {
            for seq in self.acked[si]..self.next_seq[si] {
                let got = (0..self.n)
                    .filter(|&q| q != si && self.live[q])
                    .filter(|&q| seq < self.tracks[q * self.s + si].next)
                    .count();
                self.ring[si * self.w + seq as usize % self.w] = got as u32;
            }
            self.advance(si, measuring);
        }
    }

    /// Receivers whose connection ended.
    pub fn gone(&self) -> usize {
        self.n - self.live_count as usize
    }

    /// Gaps that never filled.
    pub fn lost(&self) -> usize {
        self.tracks.iter().map(|t| t.missing.len()).sum()
    }

    /// Messages sent that a receiver still connected has not got (nor skipped).
    pub fn undelivered(&self) -> u64 {
        let (n, s) = (self.n, self.s);
        (0..n)
            .filter(|&r| self.live[r])
            .flat_map(|r| (0..s).filter(move |&si| si != r).map(move |si| (r, si)))
            .map(|(r, si)| u64::from(self.next_seq[si] - self.tracks[r * s + si].next))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u32) -> Msg {
        Msg {
            kind: Kind::Data,
            sender: 0,
            seq,
            sent_ns: 0,
        }
    }

    #[test]
    fn a_lost_message_is_counted_and_does_not_stall_its_sender() {
        // One sender (client 0), two receivers, four messages sent.
        let mut t = Traffic::new(3, 1, 4, 64);
        t.next_seq[0] = 4;
        for seq in 0..4 {
            t.receive(1, msg(seq), 10, true);
        }
        for seq in [0, 2, 3] {
            t.receive(2, msg(seq), 10, true);
        }
        assert_eq!((t.lost(), t.acked[0]), (1, 4), "settled past the gap");
        assert!(t.drained());
        assert_eq!(t.deliveries, 7);
        assert_eq!(t.undelivered(), 0);
        // It turns up after all: reordered, not lost, and counted once.
        t.receive(2, msg(1), 10, true);
        assert_eq!((t.lost(), t.reordered, t.dup, t.deliveries), (0, 1, 0, 8));
        t.receive(2, msg(1), 10, true);
        assert_eq!(t.dup, 1);
    }

    #[test]
    fn a_message_lost_at_the_end_stays_in_flight() {
        // Nothing after it shows the gap: the sender waits, and the run reports it undelivered.
        let mut t = Traffic::new(3, 1, 4, 64);
        t.next_seq[0] = 2;
        t.receive(1, msg(0), 10, true);
        t.receive(1, msg(1), 10, true);
        t.receive(2, msg(0), 10, true);
        assert_eq!((t.acked[0], t.undelivered(), t.lost()), (1, 1, 0));
        assert!(!t.drained());
        // Its receiver leaves: nothing waits for it any more.
        t.receiver_gone(2, true);
        assert!(t.drained());
    }

    #[test]
    fn a_message_in_flight_too_long_is_given_up_as_lost() {
        // A link cut for a while: receiver 2 never gets messages 1 and 2, and nothing after
        // them shows the gap.
        let mut t = Traffic::new(3, 1, 4, 64).give_up_after(Duration::from_secs(5));
        t.next_seq[0] = 3;
        for seq in 0..3 {
            t.receive(1, msg(seq), 10, true);
        }
        t.receive(2, msg(0), 10, true);
        t.expire(4_000_000_000, 5_000_000_000, true);
        assert_eq!((t.acked[0], t.given_up), (1, 0), "not yet");
        t.expire(6_000_000_000, 5_000_000_000, true);
        assert_eq!((t.acked[0], t.given_up, t.lost()), (3, 2, 2));
        assert!(t.drained());
        assert_eq!(t.undelivered(), 0);
        // One turns up after all: reordered, as a late gap.
        t.receive(2, msg(2), 10, true);
        assert_eq!((t.lost(), t.reordered), (1, 1));
    }
}
