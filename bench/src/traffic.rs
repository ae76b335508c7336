//! The measured messages of the throughput and flood workloads: S senders each keep at most W
//! messages in flight (sent but not yet received by every other receiver still connected), and
//! every receiver checks each sender's sequence: lost (a gap that never filled), reordered (a
//! gap filled later), duplicated.

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
        Ok(ended)
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
        if m.seq >= t.next {
            t.missing.extend(t.next..m.seq);
            t.next = m.seq + 1;
        } else if let Some(pos) = t.missing.iter().position(|&q| q == m.seq) {
            t.missing.swap_remove(pos);
            self.reordered += 1;
        } else {
            self.dup += 1;
            return;
        }
        let need = self.needed(si);
        let slot = &mut self.ring[si * self.w + m.seq as usize % self.w];
        *slot += 1;
        if *slot >= need && m.seq == self.acked[si] {
            self.advance(si, measuring);
        }
        if measuring {
            self.deliveries += 1;
            self.hist.record(at.saturating_sub(m.sent_ns));
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
    /// receipts are counted again over the receivers left.
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
                    .filter(|&q| {
                        let t = &self.tracks[q * self.s + si];
                        seq < t.next && !t.missing.contains(&seq)
                    })
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
