//! Every timer of the server in one min-heap: its earliest entry is the poll timeout.
//!
//! mio has no timers (its maintainers advise keeping them in user space and passing the nearest
//! deadline to `poll`). Entries are never removed early: each carries the generation of the
//! connection it was set for, and the owner checks, when an entry comes due, whether it still
//! means anything. A connection keeps at most one entry per kind, so the heap stays as small
//! as the number of live timers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// A line without a newline has been quiet for `--flush-partial`.
    FlushPartial,
    /// A rate-limited client may send its next line.
    RateResume,
    /// A client has been silent for `--idle-timeout`.
    Idle,
    /// A closing client has had its chance to read its last lines.
    Linger,
    /// A new connection has sent nothing: it is a chat client, to be greeted.
    Greet,
    /// A request head is still not whole.
    Handshake,
}

impl Timer {
    /// The bit a connection sets while it has an entry of this kind in the heap.
    pub fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// One entry: when, for which connection (slab key and generation), what.
type Entry = Reverse<(Instant, usize, u64, Timer)>;

#[derive(Default)]
pub struct Deadlines {
    heap: BinaryHeap<Entry>,
}

impl Deadlines {
    pub fn set(&mut self, at: Instant, key: usize, generation: u64, timer: Timer) {
        self.heap.push(Reverse((at, key, generation, timer)));
    }

    /// How long `poll` may sleep: until the earliest deadline, `None` if there is none.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, ..))| at.saturating_duration_since(now))
    }

    /// Takes one entry that is due. Strictly: mio rounds poll timeouts up to the millisecond,
    /// so the loop never wakes before a deadline; and an entry set again during this turn for
    /// any time after `now` cannot come back in the same turn (with a tolerance, a rate timer
    /// a fraction of a millisecond away came due, found no budget yet, was set again and came
    /// due again, forever).
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64, Timer)> {
        let Reverse((at, ..)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, key, generation, timer)) = self.heap.pop()?;
        // A crowd arriving at once sets a timer each (the greeting's, with the web door open)
        // and leaves a heap mostly empty: give the memory back.
        if self.heap.capacity() > 1024 && self.heap.len() < self.heap.capacity() / 4 {
            self.heap.shrink_to(self.heap.len() * 2);
        }
        Some((key, generation, timer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_only_when_due() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        assert_eq!(d.timeout(t0), None);
        d.set(t0 + Duration::from_secs(2), 1, 7, Timer::Idle);
        d.set(t0 + Duration::from_millis(100), 2, 8, Timer::FlushPartial);
        assert_eq!(d.timeout(t0), Some(Duration::from_millis(100)));
        assert_eq!(d.pop_due(t0), None);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(d.pop_due(later), Some((2, 8, Timer::FlushPartial)));
        assert_eq!(d.pop_due(later), None);
        assert_eq!(d.timeout(later), Some(Duration::from_millis(1900)));
    }
}
