//! Which bus a run uses, as a pipeline file's `[bus]` table or
//! `garden run --bus` gives it. Plain data: [`crate::bus`] turns it into a
//! bus.
//!
//! Invariant: every field is optional; what is left out takes the bus's
//! documented default.

use serde::Deserialize;

/// Which bus a run uses: `[bus]` in a pipeline file, or `garden run --bus`.
///
/// With no `url` (or `memory`) the in-process bus; with
/// `redis://[user:password@]host:port` the Redis Streams bus.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `memory`, or a Redis URL.
    pub url: Option<String>,
    /// Prefix of every Redis key (default: one per run for `garden run`).
    pub prefix: Option<String>,
    /// This daemon's consumer name (default: `hostname-pid`).
    pub consumer: Option<String>,
    /// Approximate most entries kept per stream.
    pub maxlen: Option<usize>,
    /// Entries pending this long at another consumer are taken over, ms.
    pub claim_idle_ms: Option<u64>,
    /// Deliveries after which an entry is dead-lettered.
    pub max_deliveries: Option<u64>,
}
