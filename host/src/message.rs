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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}
