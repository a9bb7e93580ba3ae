//! What each message an instance handled cost (and each round trip to a
//! broker took), counted into fixed buckets as it happens: the runtime
//! keeps them per instance, the bus per backend, and the metrics
//! (`crate::metrics`) turn them into Prometheus histograms.
//!
//! Invariant: counting a message allocates nothing and costs two binary
//! searches over a dozen bounds (2.4 % of the lean 100-variant pipeline,
//! `benches/README.md`).

/// Upper bounds of the buckets of handler time per message, seconds: from
/// a microsecond (a small Rust module) to a second (a deadline).
pub const SECONDS_BOUNDS: [f64; 14] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0,
];
/// Upper bounds of the buckets of fuel per message: from a hundred
/// instructions to the default per-call budget and past it.
pub const FUEL_BOUNDS: [f64; 12] = [1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 1e8];

/// Observations in fixed buckets: a count per bucket (the last one past
/// every bound: `N` is one more than the bounds) and the sum. Arrays, not
/// vectors: it is counted for every message, and must cost next to
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Buckets<const N: usize> {
    /// Observations per bucket, not cumulative.
    pub counts: [u64; N],
    /// Their sum.
    pub sum: f64,
}

impl<const N: usize> Default for Buckets<N> {
    fn default() -> Self {
        Buckets {
            counts: [0; N],
            sum: 0.0,
        }
    }
}

impl<const N: usize> Buckets<N> {
    pub(crate) fn observe(&mut self, bounds: &[f64], v: f64) {
        // The first bucket whose bound is at or above v: Prometheus's `le`.
        let i = bounds.partition_point(|b| *b < v).min(N - 1);
        self.counts[i] += 1;
        self.sum += v;
    }

    /// Add what `now` holds beyond `before` (all of `now` if it went back:
    /// the instance started again).
    pub fn add_growth(&mut self, now: &Buckets<N>, before: &Buckets<N>) {
        let restarted = now.counts.iter().zip(&before.counts).any(|(n, b)| n < b);
        for i in 0..N {
            let was = if restarted { 0 } else { before.counts[i] };
            self.counts[i] += now.counts[i] - was;
        }
        self.sum += if restarted {
            now.sum
        } else {
            (now.sum - before.sum).max(0.0)
        };
    }
}

/// Buckets of time per message.
pub type SecondsBuckets = Buckets<{ SECONDS_BOUNDS.len() + 1 }>;

impl SecondsBuckets {
    /// Count one duration, seconds, against [`SECONDS_BOUNDS`].
    pub fn observe_seconds(&mut self, seconds: f64) {
        self.observe(&SECONDS_BOUNDS, seconds);
    }
}
/// Buckets of fuel per message.
pub type FuelBuckets = Buckets<{ FUEL_BOUNDS.len() + 1 }>;

/// What each message an instance handled cost, in buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Costs {
    /// Handler time per message, seconds ([`SECONDS_BOUNDS`]).
    pub seconds: SecondsBuckets,
    /// Fuel per message ([`FUEL_BOUNDS`]).
    pub fuel: FuelBuckets,
}

impl Costs {
    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &Costs) {
        self.seconds.add_growth(&other.seconds, &Buckets::default());
        self.fuel.add_growth(&other.fuel, &Buckets::default());
    }

    /// Count one message that took `seconds` and `fuel`.
    pub fn observe(&mut self, seconds: f64, fuel: u64) {
        self.seconds.observe(&SECONDS_BOUNDS, seconds);
        self.fuel.observe(&FUEL_BOUNDS, fuel as f64);
    }
}
