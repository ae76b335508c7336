//! The counters behind the console's `/stats`: what came in, what went out, who was dropped or
//! refused and why. Pure; the engine counts, and adds what it measures at the moment asked.

use std::time::Instant;

use super::admission::Refusal;

#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub lines_in: u64,
    /// Lines queued to clients, one per recipient.
    pub lines_out: u64,
    pub bytes_out: u64,
    pub too_slow: u64,
    pub idle: u64,
    /// Dropped on a socket error other than an ordinary close (reset, broken pipe).
    pub errors: u64,
    pub refused_full: u64,
    pub refused_per_address: u64,
    pub refused_rate: u64,
}

impl Counters {
    pub fn refused(&mut self, why: Refusal) {
        *match why {
            Refusal::Full => &mut self.refused_full,
            Refusal::PerAddress => &mut self.refused_per_address,
            Refusal::ConnectRate => &mut self.refused_rate,
        } += 1;
    }
}

/// Rates are per second since the previous look.
pub struct Rates {
    at: Instant,
    lines_in: u64,
    lines_out: u64,
}

impl Rates {
    pub fn new(now: Instant) -> Rates {
        Rates {
            at: now,
            lines_in: 0,
            lines_out: 0,
        }
    }

    /// Lines in and out per second since the last call (or the start).
    pub fn take(&mut self, c: &Counters, now: Instant) -> (f64, f64) {
        let secs = now
            .saturating_duration_since(self.at)
            .as_secs_f64()
            .max(1e-3);
        let rates = (
            (c.lines_in - self.lines_in) as f64 / secs,
            (c.lines_out - self.lines_out) as f64 / secs,
        );
        *self = Rates {
            at: now,
            lines_in: c.lines_in,
            lines_out: c.lines_out,
        };
        rates
    }
}
