//! The message the host routes: topic, key, sequence, event time, source
//! and body, all owned.
//!
//! Invariant: this is the host's record, on the bus, in Redis, in records
//! and dead letters; a module never sees it as such. The sandbox turns it
//! into the WIT `envelope` at the call, where topic and source become
//! numbers in the instance's name table (`sandbox`), so a module pays for
//! no string it already knows.

use serde::{Deserialize, Serialize};

use crate::bindings::types::{Body, Timestamp};

/// A message as the host routes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The topic it was published on.
    pub topic: String,
    /// Ordering key: messages with the same key on a topic reach a
    /// subscribing group in the order they were published.
    pub key: String,
    /// Per-topic sequence number assigned by the bus.
    pub seq: u64,
    /// Event time, inherited from the message being handled when it was
    /// published.
    pub time: Timestamp,
    /// Instance id of the publisher, set by the host.
    pub source: String,
    /// What it carries.
    pub body: Body,
    /// Where and when it was published, as far as this host knows: never
    /// shown to a module, never stored, and not part of what the message
    /// is (equality ignores it).
    #[serde(skip)]
    pub trace: Trace,
}

/// What the host knows of a message's making.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Wall-clock time it was published: stamped by the runtime when a
    /// handler's call returns (by the feed for a bar), read back from the
    /// entry id on Redis (milliseconds, the Redis server's clock). For
    /// latency between messages.
    pub published_at: Option<std::time::SystemTime>,
    /// The message whose handling published it, and its place among that
    /// call's publishes: the same wherever and however often the input is
    /// handled, so a bus can write it once (`bus::redis`'s publish ids).
    pub origin: Option<Origin>,
}

impl Trace {
    /// Published now, by no handler (the feed, the host).
    pub fn now() -> Trace {
        Trace {
            published_at: Some(std::time::SystemTime::now()),
            origin: None,
        }
    }
}

/// The input a message was published in answer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The input's topic.
    pub topic: String,
    /// The input's sequence number on it (on Redis, its entry's position).
    pub seq: u64,
    /// The output's place among the call's publishes, from 0.
    pub index: u32,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic
            && self.key == other.key
            && self.seq == other.seq
            && self.time == other.time
            && self.source == other.source
            && self.body == other.body
    }
}
