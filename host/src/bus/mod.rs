//! The message bus: one trait, several backends.
//!
//! Two delivery kinds: *shared* (each message to one member of a subscribing
//! group, chosen by key so per-key order holds) and *broadcast* (to every
//! member). A subscription may also be *addressed*: only messages whose key
//! is the subscriber's own id. Inboxes are bounded: a publish that would
//! overflow one is refused with [`BusError::Full`] and the producer waits;
//! nothing is dropped silently, and messages that cannot be handled are kept
//! as dead letters with their reason.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use serde::Serialize;

use crate::Envelope;

pub use memory::MemoryBus;
pub use redis::{RedisBus, RedisOptions};

use crate::config::BusConfig;

/// A bus URL that names no bus garden has.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a bus garden knows: use `memory`, redis://[user:password@]host:port or rediss://... (TLS)"
)]
pub struct UnknownBus(pub String);

impl BusConfig {
    /// The Redis options this asks for, with `default_prefix` unless a
    /// prefix is set; `None` for the memory bus.
    pub fn redis(&self, default_prefix: &str) -> Result<Option<RedisOptions>, UnknownBus> {
        let url = match self.url.as_deref() {
            None | Some("memory") => return Ok(None),
            Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => u,
            Some(other) => return Err(UnknownBus(other.to_string())),
        };
        let mut o = RedisOptions::new(url);
        o.prefix = self
            .prefix
            .clone()
            .unwrap_or_else(|| default_prefix.to_string());
        if let Some(c) = &self.consumer {
            o.consumer = c.clone();
        }
        if let Some(m) = self.maxlen {
            o.maxlen = m;
        }
        if let Some(ms) = self.claim_idle_ms {
            o.claim_idle = std::time::Duration::from_millis(ms);
        }
        if let Some(n) = self.max_deliveries {
            o.max_deliveries = n;
        }
        Ok(Some(o))
    }
}

/// FNV-1a (64-bit): a fixed, platform-independent hash, so that shared delivery and
/// per-instance seeds come out the same in every run and on every machine.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A roster where `canary` takes `share` of every 100 places and `others`
/// take the rest in turn, so the canary gets about `share` percent of the
/// keys and every key stays with one member.
pub fn canary_roster(canary: &str, share: u8, others: &[String]) -> Vec<String> {
    (0..100usize)
        .map(|i| match others.get(i % others.len().max(1)) {
            Some(other) if i >= usize::from(share) => other.clone(),
            _ => canary.to_string(),
        })
        .collect()
}

/// How a subscription receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Delivery {
    /// One member of the group per message.
    Shared,
    /// Every member of the group.
    Broadcast,
}

/// One instance's interest in one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The subscribing instance.
    pub instance: String,
    /// Its group: shared delivery picks one member per group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// Shared or broadcast.
    pub delivery: Delivery,
    /// Only messages keyed with the instance's own id.
    pub addressed: bool,
}

/// A message that could not be handled, kept with the reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The instance it was meant for.
    pub instance: String,
    /// The message.
    pub envelope: Arc<Envelope>,
    /// Why it could not be handled.
    pub reason: String,
}

/// The most recent dead letters, kept in memory by every backend; older
/// ones are counted in [`BusStats::dead_letters`], not kept.
#[derive(Debug, Default)]
pub(crate) struct RecentDeadLetters {
    kept: std::collections::VecDeque<DeadLetter>,
}

impl RecentDeadLetters {
    /// Most kept.
    const KEPT: usize = 10_000;

    pub(crate) fn push(&mut self, letter: DeadLetter) {
        if self.kept.len() == Self::KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(letter);
    }

    pub(crate) fn list(&self) -> Vec<DeadLetter> {
        self.kept.iter().cloned().collect()
    }
}

/// Counters every backend keeps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct BusStats {
    /// Messages accepted by `publish`.
    pub published: u64,
    /// Deliveries into inboxes (one message to three subscribers is three).
    pub delivered: u64,
    /// Messages delivered beyond an inbox's capacity to break a cycle of
    /// full inboxes.
    pub overflowed: u64,
    /// Dead letters recorded.
    pub dead_letters: u64,
    /// Entries refused because no trusted writer made them (each is also a
    /// dead letter).
    pub refused: u64,
    /// Handler outputs not written because the same output (same
    /// publisher, input and place in the call) was written before: an
    /// input handled again after a claim or a restart.
    pub deduplicated: u64,
    /// Round trips to a remote broker (one pipelined exchange each).
    pub round_trips: u64,
    /// Their total time, microseconds.
    pub round_trip_micros: u64,
    /// Their times, seconds, in buckets (for the metrics' histogram).
    #[serde(skip)]
    pub round_trip_seconds: crate::costs::SecondsBuckets,
}

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A receiving inbox is full; the message is handed back to retry later.
    #[error(
        "the inbox of `{instance}` is full ({capacity} messages); the producer must wait until it drains"
    )]
    Full {
        /// The full inbox's owner.
        instance: String,
        /// Its capacity.
        capacity: usize,
        /// The message, unchanged, to publish again.
        message: Box<Envelope>,
    },
    /// The backend cannot carry this message at all (too large, does not
    /// encode); it is dropped from the outbox and dead-lettered.
    #[error("a message on `{topic}` was refused by the bus: {reason}")]
    Refused {
        /// The message's topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// A message bus backend.
pub trait Bus {
    /// Register a subscription (idempotent).
    fn subscribe(&mut self, subscriber: &Subscriber);
    /// Remove every subscription of `instance`; its inbox stays until drained.
    fn unsubscribe(&mut self, instance: &str);
    /// Publish: assign the topic's next sequence number and deliver to every
    /// subscriber, or to none if any receiving inbox is full.
    fn publish(&mut self, message: Envelope) -> Result<(), BusError>;
    /// Publish even into full inboxes; used only to break a cycle of full
    /// inboxes, and counted in [`BusStats::overflowed`].
    fn publish_overflowing(&mut self, message: Envelope);
    /// The next message for `instance`, oldest first.
    fn poll(&mut self, instance: &str) -> Option<Arc<Envelope>>;
    /// Messages waiting for `instance`.
    fn depth(&self, instance: &str) -> usize;
    /// Record a message that could not be handled.
    fn dead_letter(&mut self, letter: DeadLetter);
    /// Dead letters kept so far (a backend may keep only the most recent).
    fn dead_letters(&self) -> Vec<DeadLetter>;
    /// Counters.
    fn stats(&self) -> BusStats;
    /// The oldest `count` messages `instance` polled are handled and their
    /// outputs published: a durable backend may now forget them. The
    /// memory bus has nothing to do.
    fn ack(&mut self, _instance: &str, _count: usize) {}
    /// `instance` moves elsewhere: unsubscribe it and drop what waits for
    /// it here. A durable backend leaves those messages unacknowledged, so
    /// the instance's new home takes them over.
    fn release(&mut self, instance: &str) {
        self.unsubscribe(instance);
    }
    /// Make `members` the roster of subscribing group `group`: a key of
    /// its shared deliveries goes to `members[fnv1a(key) % len]`. A member
    /// named more than once takes a larger share of the keys (a canary
    /// takes its share this way). An empty roster goes back to the group's
    /// subscribers in subscription order. Change it between rounds, when
    /// nothing waits, so that no key's messages wait at two members.
    fn set_roster(&mut self, group: &str, members: Vec<String>);
    /// The roster of `group` as it changes along the streams: each
    /// (position, members) decides the keys of entries at or past its
    /// position (a Redis entry id's time and sequence, as
    /// `entry_position` gives) up to the next one's, so every daemon
    /// splits the keys alike whenever it learns of a change. A bus
    /// without positions takes the last.
    fn set_roster_history(&mut self, group: &str, versions: Vec<(u64, Vec<String>)>) {
        let last = versions.into_iter().last().map(|(_, m)| m);
        self.set_roster(group, last.unwrap_or_default());
    }
    /// Whether `instance` has been given every message of its shared
    /// deliveries before bus position `position` (it has read past it,
    /// and nothing waits for it). A bus without positions delivers at
    /// once: always.
    fn passed(&self, _instance: &str, _position: u64) -> bool {
        true
    }
    /// Whether each of `members` of subscribing group `group` has handled
    /// every shared delivery before bus position `position`, wherever it
    /// runs: it has been given entries past it and has none before it
    /// left unacknowledged (a member that never read took nothing). So a
    /// key can move between members at a position with its order kept. A
    /// bus without positions delivers at once: always.
    fn passed_by(&mut self, _group: &str, _members: &[String], _position: u64) -> bool {
        true
    }
    /// `instance` is done for good (a canary at its end, with everything
    /// before its end handled): its shared consumer groups go, with
    /// anything they still list as unacknowledged. Nothing for a bus
    /// without groups.
    fn forget_groups(&mut self, _instance: &str) {}
    /// Exchange with a remote backend: send what was published and
    /// acknowledged, fetch what waits. Whether anything arrived (or the
    /// backend is still catching up). The runtime calls it once per round.
    fn pump(&mut self) -> bool {
        false
    }
}
