//! The token bucket behind `--rate`: N lines a second with bursts of 2N. Pure: the caller
//! passes the time in, so tests need no sleeping.

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
}
