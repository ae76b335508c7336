//! The token bucket behind `--rate` and `--connect-rate`: N a second with bursts of 2N. Pure:
//! the caller passes the time in, so tests need no sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What floating-point refills may lose of a whole line.
const ROUNDING: f64 = 1e-9;

/// A client's line budget. It refills continuously at `per_second` up to twice that.
#[derive(Debug, Clone)]
pub struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    /// A full bucket: a new client may send its whole burst at once.
    pub fn new(per_second: u32, now: Instant) -> Bucket {
        let per_second = f64::from(per_second);
        Bucket {
            per_second,
            burst: 2.0 * per_second,
            tokens: 2.0 * per_second,
            refilled: now,
        }
    }

    /// Whether one more line is allowed now. Rounding may leave the budget a hair short of a
    /// whole line at the very moment [`Bucket::next_at`] named; that counts as whole.
    pub fn allows(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0 - ROUNDING
    }

    /// Spends one line; call after [`Bucket::allows`] said yes.
    pub fn spend(&mut self) {
        self.tokens -= 1.0;
    }

    /// Whether the budget is whole again: a bucket in this state remembers nothing worth keeping.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// When the next whole line will be allowed: always after `now`, so that a timer set for it
    /// can never come due in the turn that set it.
    pub fn next_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let missing = (1.0 - self.tokens).max(0.0);
        now + Duration::from_secs_f64(missing / self.per_second).max(Duration::from_micros(1))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled = now;
    }
}

/// A budget per key (a UDP sender, an address that connects), in a map that cannot grow without
/// bound: past `most` keys, those whose budget is whole again are forgotten (they remember
/// nothing worth keeping), and if every one is busy a new key is refused.
pub struct Budgets<K> {
    per_second: u32,
    most: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq> Budgets<K> {
    pub fn new(per_second: u32, most: usize) -> Budgets<K> {
        Budgets {
            per_second,
            most,
            buckets: HashMap::new(),
        }
    }

    /// Spends one from `key`'s budget if it allows it; always allows when the rate is 0.
    pub fn allows(&mut self, key: K, now: Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        if self.buckets.len() >= self.most && !self.buckets.contains_key(&key) {
            self.buckets.retain(|_, bucket| !bucket.is_full(now));
            if self.buckets.len() >= self.most {
                return false;
            }
        }
        let bucket = self
            .buckets
            .entry(key)
            .or_insert_with(|| Bucket::new(self.per_second, now));
        let allowed = bucket.allows(now);
        if allowed {
            bucket.spend();
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_two_n_then_n_per_second() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, t0);
        let take = |b: &mut Bucket, now| {
            b.allows(now) && {
                b.spend();
                true
            }
        };
        assert_eq!((0..25).filter(|_| take(&mut b, t0)).count(), 20);
        assert_eq!(b.next_at(t0), t0 + Duration::from_millis(100));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..25).filter(|_| take(&mut b, t1)).count(), 10);
        let t9 = t1 + Duration::from_secs(9);
        assert_eq!(
            (0..25).filter(|_| take(&mut b, t9)).count(),
            20,
            "never more than the burst"
        );
    }

    #[test]
    fn budgets_per_key_forget_the_idle_and_refuse_when_all_are_busy() {
        let t0 = Instant::now();
        let mut b = Budgets::new(1, 2);
        assert!(b.allows("a", t0) && b.allows("a", t0));
        assert!(!b.allows("a", t0), "a burst of two");
        assert!(b.allows("b", t0));
        assert!(
            !b.allows("c", t0),
            "two keys, both busy: no room for a third"
        );
        let later = t0 + Duration::from_secs(2);
        assert!(
            b.allows("c", later),
            "whole budgets are forgotten to make room"
        );
        assert!(Budgets::new(0, 0).allows("x", t0), "0 means no limit");
    }
}
