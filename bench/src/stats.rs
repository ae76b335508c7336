//! A log-linear latency histogram: bounded memory whatever the run length, ~1.5% precision.

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; ((64 - SUB_BITS as usize) + 1) * SUB as usize],
            count: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    ((shift as u64 + 1) * SUB + (v >> shift) - SUB) as usize
}

/// Middle of bucket `i`.
fn value(i: usize) -> u64 {
    let (bucket, sub) = (i as u64 / SUB, i as u64 % SUB);
    if bucket == 0 {
        return sub;
    }
    let shift = bucket - 1;
    ((SUB + sub) << shift) + ((1u64 << shift) >> 1)
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.max = self.max.max(v);
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds another histogram's values to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Value at quantile `q` in [0, 1] (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }
}

/// A figure as the benchmark's tables print it: millions with two decimals, thousands as `k`,
/// whole numbers as they are, a dash for none. The report's summary table is held to it
/// (tests/report.rs).
pub fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.abs() >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v.abs() >= 1e4 => format!("{:.0}k", v / 1e3),
        Some(v) if v.abs() >= 100.0 || v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (q, want) in [(0.5, 50_000_000.0), (0.99, 99_000_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
        let mut sum = Histogram::default();
        sum.merge(&h);
        sum.merge(&h);
        assert_eq!((sum.count(), sum.max()), (200_000, 100_000_000));
        assert_eq!(sum.quantile(0.5), h.quantile(0.5));
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for v in [0u64, 1, 63, 64, 65, 127, 128, 1 << 20, u64::MAX] {
            let i = index(v);
            assert!(i >= last);
            last = i;
        }
    }
}
