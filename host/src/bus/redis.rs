//! The Redis Streams bus: daemons on many machines share one Redis.
//!
//! **Streams.** Every topic is one stream, `{prefix}:t:{topic}`, written with
//! `XADD ... MAXLEN ~ {maxlen}`. An entry has one field, `m` (layout in
//! `docs/redis.md`): the message as JSON with `v` (format, `2`), `key`,
//! `source`, `time`, `from` (the publishing daemon's incarnation), `n` (its
//! publish counter) and `body`. Format 1 (the same values as separate
//! fields) is still read. Entries on the `bar_topic` may instead carry plain
//! bar fields, so any producer can feed bars with `redis-cli XADD`.
//!
//! **Groups.** Each local subscription reads through a consumer group of
//! its own: `i:{instance}` for broadcast (it sees every entry), `a:{instance}`
//! for addressed (entries keyed to another instance are acknowledged and
//! skipped) and `k:{instance}` for shared delivery: every member of a
//! subscribing group reads the stream and keeps the entries whose key
//! hashes to it over the group's *roster*, the group's members in the whole
//! garden, and acknowledges and skips the rest. So each entry goes to one
//! member, every entry of a key to the same one, in stream order, however
//! the members are spread over daemons, and a member that moves takes its
//! group, and so its unfinished entries, with it. The roster is the local
//! members in subscription order (what the memory bus uses) unless the
//! daemon sets it ([`RedisBus::set_roster`]). The consumer name is the
//! daemon's name.
//!
//! **Exchange.** Nothing touches the network until [`Bus::pump`]: it sends
//! the buffered publishes and acknowledgements and reads every group, all
//! in one pipelined round trip. Entries read in one pump are merged into the
//! inboxes in publish order, so a single daemon delivers exactly what the
//! memory bus would.
//!
//! **Acknowledgement.** An entry is `XACK`ed only after the instance that
//! received it has handled it and its outputs are published ([`Bus::ack`]):
//! a daemon that dies leaves its unfinished entries pending. Every
//! `claim_idle / 2` a daemon takes over entries another consumer has left
//! pending longer than `claim_idle` (`XAUTOCLAIM`); an entry already
//! delivered `max_deliveries` times goes to the dead-letter stream
//! `{prefix}:dead` instead, with its reason, as does an entry that cannot be
//! decoded. Redelivered entries already handled here are recognised by
//! (`from`, `n`) and skipped.
//!
//! **Faults.** A lost connection is retried with backoff (up to
//! [`RECONNECT_MAX`]) inside `pump`; nothing buffered is dropped meanwhile.

use std::collections::VecDeque;

// Names chosen by the host and publisher hashes: a fast hash is enough.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;

use super::{Bus, BusError, BusStats, DeadLetter, Delivery, RecentDeadLetters, Subscriber, fnv1a};
use crate::Envelope;
use crate::types::{Bar, Body};

/// The entry format this host writes: one field `m`, the whole message as
/// JSON.
pub const ENTRY_FORMAT: u32 = 2;
/// The earlier format, one field per header value, still read.
const ENTRY_FORMAT_1: &str = "1";

/// A message as written (format 2).
#[derive(serde::Serialize)]
struct WireOut<'a> {
    v: u32,
    key: &'a str,
    source: &'a str,
    time: i64,
    from: &'a str,
    n: u64,
    body: &'a Body,
}

/// A message as read (format 2).
#[derive(serde::Deserialize)]
struct WireIn {
    v: u32,
    key: String,
    source: String,
    time: i64,
    from: String,
    n: u64,
    body: Body,
}
/// Longest wait between reconnection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Recently handled (publisher, counter) pairs remembered per group, to
/// skip redeliveries.
const SEEN_KEPT: usize = 1 << 16;

/// How to reach Redis and how to use it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key this bus uses.
    pub prefix: String,
    /// This daemon's consumer name (stable across restarts).
    pub consumer: String,
    /// Approximate most entries kept per stream (`MAXLEN ~`): must exceed
    /// the longest backlog a group may fall behind by.
    pub maxlen: usize,
    /// Most entries read per group and pump.
    pub batch: usize,
    /// Entries pending this long at another consumer are taken over.
    pub claim_idle: Duration,
    /// Deliveries after which an entry is dead-lettered instead.
    pub max_deliveries: u64,
    /// Largest entry accepted at publish, in bytes.
    pub max_entry_bytes: usize,
    /// Topic whose entries may be plain bar fields (see `docs/redis.md`).
    pub bar_topic: Option<String>,
}

impl RedisOptions {
    /// Defaults for `url`: prefix `garden`, consumer named after the host.
    pub fn new(url: &str) -> Self {
        RedisOptions {
            url: url.to_string(),
            prefix: "garden".into(),
            consumer: default_consumer(),
            maxlen: 100_000,
            batch: 512,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            max_entry_bytes: 1 << 20,
            bar_topic: Some("bar".into()),
        }
    }
}

/// `hostname-pid`: unique per process on one machine.
fn default_consumer() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// This machine's name (`garden` if it has none).
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "garden".into())
}

/// Why the Redis bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisBusError {
    /// The URL does not parse.
    #[error("`{url}` is not a Redis URL ({source}); write redis://[user:password@]host:port")]
    Url {
        /// The URL given.
        url: String,
        /// The parser's complaint.
        source: redis::RedisError,
    },
    /// Redis did not answer, or refused the credentials.
    #[error(
        "cannot reach Redis at {url}: {source}; is redis-server running there, and are the user and password right?"
    )]
    Connect {
        /// The URL, without its password.
        url: String,
        /// What failed.
        source: redis::RedisError,
    },
}

/// Where publishes wait, durably, while Redis cannot be reached: a table in
/// the store (`crate::outbox::StoreOutbox`). Entries are (stream, fields).
pub trait Outbox: Send {
    /// Keep these entries, after those kept before.
    fn park(&mut self, entries: &[(String, Fields)]) -> Result<(), String>;
    /// The oldest `max` kept entries, with their positions.
    fn parked(&mut self, max: usize) -> Result<Vec<(i64, String, Fields)>, String>;
    /// Forget the kept entries up to and including position `upto`.
    fn forwarded(&mut self, upto: i64) -> Result<(), String>;
}

/// Most parked entries forwarded per exchange.
const FORWARD_BATCH: usize = 5_000;

/// One (stream, group) this daemon reads, with its local members.
struct Route {
    /// For shared delivery: the subscribing group whose roster decides
    /// which keys are this route's.
    shared: Option<String>,
    topic: String,
    stream: String,
    group: String,
    delivery: Delivery,
    addressed: bool,
    members: Vec<String>,
    /// The group still has to be created (after start or a Redis restart).
    create: bool,
    /// Read this consumer's own pending entries first (id `0`), left by an
    /// earlier incarnation of this daemon, before new ones (`>`).
    history: bool,
    /// (hash of the publisher, its counter) of recent deliveries.
    seen: HashSet<(u64, u64)>,
    seen_order: VecDeque<(u64, u64)>,
}

/// The members of a subscribing group that share its entries by key.
struct Roster {
    members: Vec<String>,
    /// Set by the daemon for the whole garden, not kept from local
    /// subscriptions.
    fixed: bool,
}

/// An entry's fields, in order.
pub type Fields = Vec<(String, String)>;

/// Where a delivered message came from, to acknowledge it.
#[derive(Debug, Clone)]
struct Receipt {
    /// Index of the route (stream, group) it was read through.
    route: usize,
    id: String,
}

/// An entry read, decoded, waiting to be merged into the inboxes.
struct Fetched {
    route: usize,
    id: String,
    /// (entry ms, entry seq, publisher hash, publisher counter).
    order: (u64, u64, u64, u64),
    result: Result<(Envelope, u64, u64), String>,
    fields: Fields,
}

/// The Redis Streams bus.
pub struct RedisBus {
    options: RedisOptions,
    client: redis::Client,
    conn: Option<redis::Connection>,
    /// This process: distinguishes its publishes from an earlier run's.
    incarnation: String,
    counter: u64,
    routes: Vec<Route>,
    inboxes: HashMap<String, VecDeque<(Arc<Envelope>, Receipt)>>,
    inflight: HashMap<String, VecDeque<Receipt>>,
    /// Encoded XADDs not yet sent.
    outgoing: Vec<(String, Vec<(&'static str, String)>)>,
    /// Route (stream, group) -> ids to XACK. Routes are never removed, so
    /// an index stays valid.
    acks: HashMap<usize, Vec<String>>,
    /// Acknowledgements kept back until [`RedisBus::release_acks`], when
    /// acknowledging waits for a checkpoint.
    held: Option<HashMap<usize, Vec<String>>>,
    /// Subscribing group -> its roster, for shared delivery.
    rosters: HashMap<String, Roster>,
    /// Dead letters not yet written to the dead-letter stream.
    dead_out: Vec<Vec<(&'static str, String)>>,
    dead: RecentDeadLetters,
    stats: BusStats,
    last_claim: Instant,
    backoff: Duration,
    last_error: Option<String>,
    outbox: Option<Box<dyn Outbox>>,
    /// The outbox may hold entries to forward.
    outbox_waiting: bool,
    parked: u64,
}

impl RedisBus {
    /// Connect (checking the server answers) and start with no
    /// subscriptions.
    pub fn connect(options: RedisOptions) -> Result<Self, RedisBusError> {
        let (client, conn) = connect(&options.url)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(RedisBus {
            incarnation: format!("{}@{nanos:x}", options.consumer),
            options,
            client,
            conn: Some(conn),
            counter: 0,
            routes: Vec::new(),
            inboxes: HashMap::default(),
            inflight: HashMap::default(),
            outgoing: Vec::new(),
            acks: HashMap::default(),
            held: None,
            rosters: HashMap::default(),
            dead_out: Vec::new(),
            dead: RecentDeadLetters::default(),
            stats: BusStats::default(),
            last_claim: Instant::now(),
            backoff: Duration::from_millis(50),
            last_error: None,
            outbox: None,
            outbox_waiting: false,
            parked: 0,
        })
    }

    /// Keep publishes in `outbox` while Redis is unreachable, and forward
    /// what it already holds (from an earlier run of this daemon) first.
    pub fn set_outbox(&mut self, outbox: Box<dyn Outbox>) {
        self.outbox = Some(outbox);
        self.outbox_waiting = true;
    }

    /// Acknowledge handled messages only at checkpoints: from now on each
    /// acknowledgement waits for the next [`RedisBus::release_acks`]. A
    /// daemon that saves its instances' snapshots and then releases leaves
    /// pending exactly the messages handled since the last snapshot saved,
    /// so an instance restarted elsewhere from it handles them again and
    /// its state comes out as if it had never moved.
    pub fn hold_acks(&mut self) {
        self.held.get_or_insert_with(HashMap::default);
    }

    /// Send the acknowledgements held so far with the next exchange.
    pub fn release_acks(&mut self) {
        if let Some(held) = self.held.as_mut() {
            for (k, ids) in held.drain() {
                self.acks.entry(k).or_default().extend(ids);
            }
        }
    }

    /// Publishes parked in the outbox so far.
    pub fn parked(&self) -> u64 {
        self.parked
    }

    /// The options it runs with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The stream that holds `topic`.
    pub fn stream(&self, topic: &str) -> String {
        topic_stream(&self.options.prefix, topic)
    }

    /// The dead-letter stream.
    pub fn dead_stream(&self) -> String {
        format!("{}:dead", self.options.prefix)
    }

    /// The latest connection problem, if the bus is not connected now.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Messages read from Redis for `instance` and not yet acknowledged:
    /// waiting in its inbox or being handled.
    pub fn unacked(&self, instance: &str) -> usize {
        self.inboxes.get(instance).map_or(0, VecDeque::len)
            + self.inflight.get(instance).map_or(0, VecDeque::len)
    }

    /// Publishes and acknowledgements not yet sent.
    pub fn unsent(&self) -> usize {
        self.outgoing.len() + self.acks.values().map(Vec::len).sum::<usize>()
    }

    fn group_name(s: &Subscriber) -> String {
        match (s.addressed, s.delivery) {
            (true, _) => format!("a:{}", s.instance),
            (false, Delivery::Broadcast) => format!("i:{}", s.instance),
            (false, Delivery::Shared) => format!("k:{}", s.instance),
        }
    }

    /// Make `members` the roster of subscribing group `group`: its members
    /// in the whole garden, in an order every daemon agrees on. A key goes
    /// to `members[fnv1a(key) % len]`, wherever that member runs. Without
    /// this, the roster is the local members in subscription order.
    pub fn set_roster(&mut self, group: &str, members: Vec<String>) {
        self.rosters.insert(
            group.to_string(),
            Roster {
                members,
                fixed: true,
            },
        );
    }

    /// Encode `message` as XADD fields (format 2: the one field `m`), or
    /// say why it cannot be sent.
    fn encode(&mut self, message: &Envelope) -> Result<Vec<(&'static str, String)>, BusError> {
        let m = serde_json::to_string(&WireOut {
            v: ENTRY_FORMAT,
            key: &message.key,
            source: &message.source,
            time: message.time,
            from: &self.incarnation,
            n: self.counter + 1,
            body: &message.body,
        })
        .map_err(|e| BusError::Refused {
            topic: message.topic.clone(),
            reason: format!("its body does not encode: {e}"),
        })?;
        if m.len() > self.options.max_entry_bytes {
            return Err(BusError::Refused {
                topic: message.topic.clone(),
                reason: format!(
                    "the entry is {} bytes, over the {} byte limit (max_entry_bytes)",
                    m.len(),
                    self.options.max_entry_bytes
                ),
            });
        }
        self.counter += 1;
        Ok(vec![("m", m)])
    }

    /// Move the unsent publishes into the outbox, if there is one: from
    /// there they survive this process too.
    fn park_outgoing(&mut self) {
        let Some(outbox) = self.outbox.as_mut() else {
            return;
        };
        if self.outgoing.is_empty() {
            return;
        }
        let entries: Vec<(String, Fields)> = self
            .outgoing
            .iter()
            .map(|(stream, fields)| {
                (
                    stream.clone(),
                    fields
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), v.clone()))
                        .collect(),
                )
            })
            .collect();
        match outbox.park(&entries) {
            Ok(()) => {
                self.parked += entries.len() as u64;
                self.outgoing.clear();
                self.outbox_waiting = true;
                tracing::info!(
                    entries = entries.len(),
                    "Redis unreachable: publishes parked in the outbox"
                );
            }
            Err(e) => {
                tracing::warn!("cannot park publishes in the outbox ({e}); keeping them in memory")
            }
        }
    }

    /// Send what was published so far, then create the groups still to be
    /// made: a new subscriber sees what is published after it subscribed,
    /// not what was published before, exactly as on the memory bus. If Redis
    /// cannot be reached now, the next pump makes the groups.
    fn create_groups_now(&mut self) {
        if !self.routes.iter().any(|r| r.create) {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let maxlen = self.options.maxlen.to_string();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (stream, fields) in &self.outgoing {
            xadd(
                &mut pipe,
                stream,
                &maxlen,
                fields.iter().map(|(k, v)| (*k, v)),
            );
        }
        let creating: Vec<usize> = (0..self.routes.len())
            .filter(|i| self.routes[*i].create)
            .collect();
        for &i in &creating {
            xgroup_create(&mut pipe, &self.routes[i]);
        }
        match pipe.query::<Vec<Value>>(conn) {
            Ok(replies) => {
                self.stats.published += self.outgoing.len() as u64;
                let sent = self.outgoing.len();
                self.outgoing.clear();
                for (i, reply) in creating.into_iter().zip(replies.into_iter().skip(sent)) {
                    match reply {
                        Value::ServerError(e) if e.code() != "BUSYGROUP" => {
                            tracing::warn!(group = %self.routes[i].group, "XGROUP CREATE failed: {e:?}");
                        }
                        _ => self.routes[i].create = false,
                    }
                }
            }
            Err(e) => {
                tracing::warn!("Redis exchange failed: {e}; the next pump retries");
                self.last_error = Some(e.to_string());
                self.conn = None;
            }
        }
    }

    /// One exchange with Redis; Err if the connection failed.
    fn exchange(&mut self) -> redis::RedisResult<bool> {
        let claim = self.last_claim.elapsed() >= self.options.claim_idle / 2;
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => {
                let c = open(&self.client)?;
                tracing::info!("reconnected to Redis");
                self.conn.insert(c)
            }
        };
        let maxlen = self.options.maxlen.to_string();
        // What waited in the outbox goes first: it was published first.
        let forwarding = match (&mut self.outbox, self.outbox_waiting) {
            (Some(o), true) => match o.parked(FORWARD_BATCH) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!("cannot read the outbox: {e}");
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut creating = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.create {
                xgroup_create(&mut pipe, r);
                creating.push(i);
            }
        }
        for (_, stream, fields) in &forwarding {
            xadd(
                &mut pipe,
                stream,
                &maxlen,
                fields.iter().map(|(k, v)| (k, v)),
            );
        }
        for (stream, fields) in &self.outgoing {
            xadd(
                &mut pipe,
                stream,
                &maxlen,
                fields.iter().map(|(k, v)| (*k, v)),
            );
        }
        let dead_stream = format!("{}:dead", self.options.prefix);
        for fields in &self.dead_out {
            xadd(
                &mut pipe,
                &dead_stream,
                &maxlen,
                fields.iter().map(|(k, v)| (*k, v)),
            );
        }
        let mut acked = Vec::new();
        for (&route, ids) in &self.acks {
            if ids.is_empty() {
                continue;
            }
            let r = &self.routes[route];
            pipe.cmd("XACK").arg(&r.stream).arg(&r.group).arg(ids);
            acked.push(route);
        }
        // One XREADGROUP per group, over all the streams it reads (a
        // broadcast subscriber's group spans its topics).
        let mut reading: Vec<Vec<usize>> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.members.is_empty() {
                continue;
            }
            match reading
                .iter_mut()
                .find(|g| self.routes[g[0]].group == r.group)
            {
                Some(g) => g.push(i),
                None => reading.push(vec![i]),
            }
        }
        for g in &reading {
            let cmd = pipe
                .cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.routes[g[0]].group)
                .arg(&self.options.consumer)
                .arg("COUNT")
                .arg(self.options.batch)
                .arg("STREAMS");
            for &i in g {
                cmd.arg(&self.routes[i].stream);
            }
            for &i in g {
                cmd.arg(if self.routes[i].history { "0" } else { ">" });
            }
        }
        let min_idle = self.options.claim_idle.as_millis().to_string();
        let mut claiming = Vec::new();
        if claim {
            for (i, r) in self.routes.iter().enumerate() {
                if r.members.is_empty() || r.history {
                    continue;
                }
                pipe.cmd("XAUTOCLAIM")
                    .arg(&r.stream)
                    .arg(&r.group)
                    .arg(&self.options.consumer)
                    .arg(&min_idle)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(self.options.batch);
                claiming.push(i);
            }
        }
        if creating.is_empty()
            && forwarding.is_empty()
            && self.outgoing.is_empty()
            && self.dead_out.is_empty()
            && acked.is_empty()
            && reading.is_empty()
            && claiming.is_empty()
        {
            // Nothing to say: an empty pipeline would wait for no reply.
            if claim {
                self.last_claim = Instant::now();
            }
            return Ok(false);
        }
        let replies: Vec<Value> = pipe.query(conn)?;
        // Everything sent was taken: Redis applies a pipeline in order and
        // answered every command.
        let mut replies = replies.into_iter();
        for i in creating {
            if let Some(Value::ServerError(e)) = replies.next()
                && e.code() != "BUSYGROUP"
            {
                tracing::warn!(group = %self.routes[i].group, "XGROUP CREATE failed: {e:?}");
                continue;
            }
            self.routes[i].create = false;
        }
        for _ in &forwarding {
            if let Some(Value::ServerError(e)) = replies.next() {
                tracing::warn!("XADD of an outbox entry refused by Redis: {e:?}");
            }
        }
        if let (Some(o), Some((last, ..))) = (&mut self.outbox, forwarding.last()) {
            if let Err(e) = o.forwarded(*last) {
                // Sent but still kept: sent again later, skipped by the
                // receivers as already seen.
                tracing::warn!("cannot clear the outbox: {e}");
            }
            tracing::info!(entries = forwarding.len(), "forwarded the outbox");
        }
        if forwarding.len() < FORWARD_BATCH {
            self.outbox_waiting = false;
        }
        self.stats.published += forwarding.len() as u64;
        let sent = self.outgoing.len();
        for _ in 0..sent + self.dead_out.len() {
            if let Some(Value::ServerError(e)) = replies.next() {
                tracing::warn!("XADD refused by Redis: {e:?}");
            }
        }
        self.stats.published += sent as u64;
        self.outgoing.clear();
        self.dead_out.clear();
        for key in acked {
            self.acks.remove(&key);
            let _ = replies.next();
        }
        let mut fetched = Vec::new();
        for g in reading {
            match replies.next() {
                Some(Value::ServerError(e)) if e.code() == "NOGROUP" => {
                    // Redis lost a group (restarted without persistence):
                    // make them again and read on.
                    for i in g {
                        self.routes[i].create = true;
                    }
                }
                Some(Value::ServerError(e)) => {
                    tracing::warn!(group = %self.routes[g[0]].group, "XREADGROUP failed: {e:?}");
                }
                Some(v) => {
                    let mut per_stream = stream_entries_by_name(v);
                    for i in g {
                        let entries = per_stream
                            .iter()
                            .position(|(name, _)| *name == self.routes[i].stream)
                            .map(|at| per_stream.swap_remove(at).1)
                            .unwrap_or_default();
                        if self.routes[i].history && entries.is_empty() {
                            self.routes[i].history = false;
                        }
                        for (id, fields) in entries {
                            fetched.push(self.decode(i, id, fields));
                        }
                    }
                }
                None => {}
            }
        }
        let mut claimed = Vec::new();
        for i in claiming {
            if let Some(Value::Array(parts)) = replies.next()
                && let Some(entries) = parts.into_iter().nth(1)
            {
                for (id, fields) in entry_list(entries) {
                    claimed.push((i, id, fields));
                }
            }
        }
        if claim {
            self.last_claim = Instant::now();
        }
        if !claimed.is_empty() {
            self.screen_claimed(claimed, &mut fetched)?;
        }
        let any = !fetched.is_empty();
        self.merge(fetched);
        Ok(any)
    }

    /// Deliveries so far of claimed entries: those over the limit are dead
    /// letters, the others are delivered again.
    fn screen_claimed(
        &mut self,
        claimed: Vec<(usize, String, Fields)>,
        fetched: &mut Vec<Fetched>,
    ) -> redis::RedisResult<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (i, id, _) in &claimed {
            let r = &self.routes[*i];
            pipe.cmd("XPENDING")
                .arg(&r.stream)
                .arg(&r.group)
                .arg(id)
                .arg(id)
                .arg(1);
        }
        let counts: Vec<Value> = pipe.query(conn)?;
        for ((i, id, fields), count) in claimed.into_iter().zip(counts) {
            let deliveries = pending_count(count).unwrap_or(1);
            tracing::info!(group = %self.routes[i].group, %id, deliveries, "reclaimed an entry left pending");
            if deliveries > self.options.max_deliveries {
                let reason = format!(
                    "delivered {deliveries} times without being handled (max_deliveries {})",
                    self.options.max_deliveries
                );
                self.dead_entry(i, &id, &fields, &reason);
                continue;
            }
            fetched.push(self.decode(i, id, fields));
        }
        Ok(())
    }

    fn decode(&self, route: usize, id: String, fields: Fields) -> Fetched {
        let (ms, seq) = parse_id(&id);
        let position = entry_position(&id);
        let r = &self.routes[route];
        let is_bar_topic = self.options.bar_topic.as_deref() == Some(r.topic.as_str());
        // Whoever can write to Redis can write an entry of any size: one
        // above the limit is dead-lettered before it is parsed.
        let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        let result = if size > self.options.max_entry_bytes {
            Err(format!(
                "the entry is {size} bytes, over the {} byte limit (max_entry_bytes)",
                self.options.max_entry_bytes
            ))
        } else {
            decode_entry(&r.topic, &fields, is_bar_topic)
        };
        // Plain entries (no publisher) hash to 0 and are never skipped.
        let result = result.map(|(e, from, n)| {
            let h = if from.is_empty() {
                0
            } else {
                fnv1a(from.as_bytes())
            };
            (e, h, n)
        });
        let order = match &result {
            Ok((_, from, n)) => (ms, seq, *from, *n),
            Err(_) => (ms, seq, 0, 0),
        };
        Fetched {
            route,
            id,
            order,
            result: result.map(|(mut e, from, n)| {
                e.seq = position;
                (e, from, n)
            }),
            fields,
        }
    }

    /// Record an entry that cannot be delivered: to the dead-letter stream,
    /// then acknowledged so it is not delivered again.
    fn dead_entry(&mut self, route: usize, id: &str, fields: &[(String, String)], reason: &str) {
        let (stream, group) = (&self.routes[route].stream, &self.routes[route].group);
        tracing::warn!(%stream, %group, %id, "dead letter: {reason}");
        let raw = serde_json::to_string(fields).unwrap_or_default();
        self.dead_out.push(vec![
            ("stream", stream.to_string()),
            ("group", group.to_string()),
            ("id", id.to_string()),
            ("reason", reason.to_string()),
            ("fields", raw),
        ]);
        self.stats.dead_letters += 1;
        self.acks.entry(route).or_default().push(id.to_string());
    }

    /// Deliver what was read, in publish order (each group's entries keep
    /// their stream order: only heads are ever taken).
    fn merge(&mut self, fetched: Vec<Fetched>) {
        let mut lists: Vec<VecDeque<Fetched>> = Vec::new();
        let mut index: HashMap<usize, usize> = HashMap::default();
        for f in fetched {
            let slot = *index.entry(f.route).or_insert_with(|| {
                lists.push(VecDeque::new());
                lists.len() - 1
            });
            lists[slot].push_back(f);
        }
        loop {
            let next = lists
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.front().map(|f| (i, &f.order)))
                .min_by(|a, b| {
                    // Same publisher: its counter is the true order; else time.
                    let (x, y) = (a.1, b.1);
                    if x.2 == y.2 && x.2 != 0 {
                        x.3.cmp(&y.3)
                    } else {
                        (x.0, x.1).cmp(&(y.0, y.1))
                    }
                })
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let Some(f) = lists[i].pop_front() else { break };
            self.deliver(f);
        }
    }

    fn deliver(&mut self, f: Fetched) {
        let (envelope, from, n) = match f.result {
            Ok(x) => x,
            Err(reason) => {
                self.dead_entry(f.route, &f.id, &f.fields, &reason);
                return;
            }
        };
        let receipt = Receipt {
            route: f.route,
            id: f.id,
        };
        let r = &mut self.routes[f.route];
        // A redelivery of something handled here already: acknowledge only.
        let mark = (from, n);
        if from != 0 && r.seen.contains(&mark) {
            self.acks.entry(receipt.route).or_default().push(receipt.id);
            return;
        }
        let target = if r.addressed {
            r.members.iter().position(|m| *m == envelope.key)
        } else {
            match r.delivery {
                Delivery::Broadcast if r.members.is_empty() => None,
                Delivery::Broadcast => Some(0),
                Delivery::Shared => {
                    // Ours if the key's member is this route's one.
                    let roster = r
                        .shared
                        .as_ref()
                        .and_then(|g| self.rosters.get(g))
                        .map_or(&[][..], |x| x.members.as_slice());
                    let mine = !roster.is_empty()
                        && r.members.first().is_some_and(|m| {
                            let pick = fnv1a(envelope.key.as_bytes()) % roster.len() as u64;
                            roster.get(pick as usize) == Some(m)
                        });
                    mine.then_some(0)
                }
            }
        };
        if r.seen_order.len() == SEEN_KEPT
            && let Some(old) = r.seen_order.pop_front()
        {
            r.seen.remove(&old);
        }
        if from != 0 {
            r.seen.insert(mark);
            r.seen_order.push_back(mark);
        }
        match target {
            Some(k) => {
                self.stats.delivered += 1;
                let instance = &self.routes[receipt.route].members[k];
                let item = (Arc::new(envelope), receipt);
                match self.inboxes.get_mut(instance.as_str()) {
                    Some(q) => q.push_back(item),
                    None => {
                        self.inboxes
                            .insert(instance.clone(), VecDeque::from([item]));
                    }
                }
            }
            None => {
                self.acks.entry(receipt.route).or_default().push(receipt.id);
            }
        }
    }
}

impl Bus for RedisBus {
    fn subscribe(&mut self, s: &Subscriber) {
        let group = Self::group_name(s);
        let stream = self.stream(&s.topic);
        match self
            .routes
            .iter_mut()
            .find(|r| r.stream == stream && r.group == group)
        {
            Some(r) => {
                if !r.members.contains(&s.instance) {
                    r.members.push(s.instance.clone());
                }
            }
            None => self.routes.push(Route {
                shared: (s.delivery == Delivery::Shared && !s.addressed).then(|| s.group.clone()),
                topic: s.topic.clone(),
                stream,
                group,
                delivery: s.delivery,
                addressed: s.addressed,
                members: vec![s.instance.clone()],
                create: true,
                history: true,
                seen: HashSet::default(),
                seen_order: VecDeque::new(),
            }),
        }
        if s.delivery == Delivery::Shared && !s.addressed {
            let roster = self.rosters.entry(s.group.clone()).or_insert(Roster {
                members: Vec::new(),
                fixed: false,
            });
            if !roster.fixed && !roster.members.contains(&s.instance) {
                roster.members.push(s.instance.clone());
            }
        }
        self.inboxes.entry(s.instance.clone()).or_default();
        self.create_groups_now();
    }

    fn unsubscribe(&mut self, instance: &str) {
        for r in &mut self.routes {
            r.members.retain(|m| m != instance);
        }
        for roster in self.rosters.values_mut().filter(|r| !r.fixed) {
            roster.members.retain(|m| m != instance);
        }
    }

    fn release(&mut self, instance: &str) {
        self.unsubscribe(instance);
        // Not acknowledged: they stay pending and are reclaimed by whoever
        // runs the instance next.
        self.inboxes.remove(instance);
        self.inflight.remove(instance);
    }

    fn publish(&mut self, message: Envelope) -> Result<(), BusError> {
        let fields = self.encode(&message)?;
        let stream = self.stream(&message.topic);
        self.outgoing.push((stream, fields));
        Ok(())
    }

    fn publish_overflowing(&mut self, message: Envelope) {
        // Streams have no per-inbox capacity: nothing to overflow.
        if let Err(e) = self.publish(message) {
            tracing::warn!("publish refused: {e}");
        }
    }

    fn poll(&mut self, instance: &str) -> Option<Arc<Envelope>> {
        let (envelope, receipt) = self.inboxes.get_mut(instance)?.pop_front()?;
        self.inflight
            .entry(instance.to_string())
            .or_default()
            .push_back(receipt);
        Some(envelope)
    }

    fn depth(&self, instance: &str) -> usize {
        self.inboxes.get(instance).map_or(0, VecDeque::len)
    }

    fn ack(&mut self, instance: &str, count: usize) {
        let Some(q) = self.inflight.get_mut(instance) else {
            return;
        };
        let to = self.held.as_mut().unwrap_or(&mut self.acks);
        for _ in 0..count {
            let Some(r) = q.pop_front() else { break };
            to.entry(r.route).or_default().push(r.id);
        }
    }

    fn pump(&mut self) -> bool {
        match self.exchange() {
            Ok(any) => {
                self.backoff = Duration::from_millis(50);
                self.last_error = None;
                any
            }
            Err(e) => {
                // Keep everything buffered; wait, then the next pump tries a
                // new connection. A pipeline cut off midway may have been
                // partly applied: its publishes are sent again and the
                // receivers skip what they have seen.
                tracing::warn!("Redis exchange failed: {e}; retrying in {:?}", self.backoff);
                self.last_error = Some(e.to_string());
                self.conn = None;
                for r in &mut self.routes {
                    r.create = true;
                }
                self.park_outgoing();
                std::thread::sleep(self.backoff);
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                // Not idle: work is still waiting to be sent or read.
                true
            }
        }
    }

    fn dead_letter(&mut self, letter: DeadLetter) {
        self.stats.dead_letters += 1;
        let envelope = serde_json::to_string(&*letter.envelope).unwrap_or_default();
        self.dead_out.push(vec![
            ("instance", letter.instance.clone()),
            ("reason", letter.reason.clone()),
            ("envelope", envelope),
        ]);
        self.dead.push(letter);
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead.list()
    }

    fn stats(&self) -> BusStats {
        self.stats
    }
}

/// Queue `XADD stream MAXLEN ~ maxlen * field value ...` on `pipe`.
fn xadd<'a, K: redis::ToRedisArgs + 'a>(
    pipe: &mut redis::Pipeline,
    stream: &str,
    maxlen: &str,
    fields: impl IntoIterator<Item = (K, &'a String)>,
) {
    let cmd = pipe
        .cmd("XADD")
        .arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*");
    for (k, v) in fields {
        cmd.arg(k).arg(v);
    }
}

/// Queue the creation of `route`'s group (from new entries on, making the
/// stream if need be) on `pipe`.
fn xgroup_create(pipe: &mut redis::Pipeline, route: &Route) {
    pipe.cmd("XGROUP")
        .arg("CREATE")
        .arg(&route.stream)
        .arg(&route.group)
        .arg("$")
        .arg("MKSTREAM");
}

/// A client for `url` and a first connection to it, or the error that
/// says which of the two failed.
pub(crate) fn connect(url: &str) -> Result<(redis::Client, redis::Connection), RedisBusError> {
    let client = redis::Client::open(url).map_err(|source| RedisBusError::Url {
        url: redacted(url),
        source,
    })?;
    let conn = open(&client).map_err(|source| RedisBusError::Connect {
        url: redacted(url),
        source,
    })?;
    Ok((client, conn))
}

/// A connection with timeouts, so a stalled server cannot hang the host.
pub(crate) fn open(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(conn)
}

/// A URL fit to print (the password hidden): one redaction for every
/// store, bus and command.
pub use garden_registry::store::redacted;

/// The stream of `topic` under `prefix`: `{prefix}:t:{topic}`. Topics live
/// in a namespace of their own, so no topic (whatever its name) is a
/// control key such as `{prefix}:leader` or `{prefix}:decisions`.
pub fn topic_stream(prefix: &str, topic: &str) -> String {
    format!("{prefix}:t:{topic}")
}

/// `ms-seq` of a stream id.
/// A stream entry id (`ms-seq`) as one number that grows with the id:
/// the milliseconds shifted past a 16-bit sequence.
pub(crate) fn entry_position(id: &str) -> u64 {
    let (ms, seq) = parse_id(id);
    (ms << 16) | seq.min(0xffff)
}

fn parse_id(id: &str) -> (u64, u64) {
    let mut parts = id.splitn(2, '-');
    let ms = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let seq = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (ms, seq)
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A value as text; binary junk as lossy text (moved, not copied, when it
/// is valid UTF-8, as it almost always is).
fn lossy(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        other => text(other).unwrap_or_default(),
    }
}

/// Entries of an XREADGROUP reply, per stream name.
fn stream_entries_by_name(v: Value) -> Vec<(String, Vec<(String, Fields)>)> {
    let streams = match v {
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for s in streams {
        if let Value::Array(pair) = s {
            let mut pair = pair.into_iter();
            if let (Some(name), Some(entries)) = (pair.next().and_then(text), pair.next()) {
                out.push((name, entry_list(entries)));
            }
        }
    }
    out
}

/// `[[id, [field, value, ...]], ...]`; entries deleted by trimming come
/// back with no fields and are skipped.
fn entry_list(v: Value) -> Vec<(String, Fields)> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let Value::Array(parts) = e else { continue };
        let mut parts = parts.into_iter();
        let (Some(id), Some(Value::Array(flat))) = (parts.next().and_then(text), parts.next())
        else {
            continue;
        };
        let mut fields = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
            // Binary junk is kept as lossy text: it still reaches the dead
            // letter stream, with a reason.
            let (k, v) = (lossy(k), lossy(v));
            fields.push((k, v));
        }
        out.push((id, fields));
    }
    out
}

/// The delivery count from an `XPENDING key group id id 1` reply.
fn pending_count(v: Value) -> Option<u64> {
    let Value::Array(rows) = v else { return None };
    let Value::Array(row) = rows.into_iter().next()? else {
        return None;
    };
    match row.into_iter().nth(3)? {
        Value::Int(n) => u64::try_from(n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// Decode an entry of `topic` into (envelope, publisher, counter), or say
/// what is wrong with it.
pub fn decode_entry(
    topic: &str,
    fields: &[(String, String)],
    plain_bars: bool,
) -> Result<(Envelope, String, u64), String> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(m) = get("m") {
        return decode_message(topic, m);
    }
    if get("body").is_none() && plain_bars {
        return decode_bar(topic, &get);
    }
    match get("v") {
        Some(ENTRY_FORMAT_1) => {}
        Some(other) => {
            return Err(format!(
                "entry format `{other}` is not supported (this host reads formats 1 and {ENTRY_FORMAT})"
            ));
        }
        None => return Err("missing field `m` (the message) or `v` (entry format 1)".into()),
    }
    let need = |name: &str| get(name).ok_or_else(|| format!("missing field `{name}`"));
    let time = need("time")?
        .parse::<i64>()
        .map_err(|e| format!("field `time` is not an integer: {e}"))?;
    let n = need("n")?
        .parse::<u64>()
        .map_err(|e| format!("field `n` is not an unsigned integer: {e}"))?;
    let body: Body = serde_json::from_str(need("body")?)
        .map_err(|e| format!("field `body` does not decode: {e}"))?;
    Ok((
        Envelope {
            topic: topic.to_string(),
            key: need("key")?.to_string(),
            seq: 0,
            time,
            source: need("source")?.to_string(),
            body,
        },
        need("from")?.to_string(),
        n,
    ))
}

/// A format 2 entry: the field `m`.
fn decode_message(topic: &str, m: &str) -> Result<(Envelope, String, u64), String> {
    let w: WireIn = match serde_json::from_str(m) {
        Ok(w) => w,
        Err(e) => {
            // Say so if it is another format rather than a broken one.
            let v = serde_json::from_str::<serde_json::Value>(m)
                .ok()
                .and_then(|x| x.get("v")?.as_u64());
            return Err(match v {
                Some(v) if v != u64::from(ENTRY_FORMAT) => format!(
                    "entry format `{v}` is not supported (this host reads formats 1 and {ENTRY_FORMAT})"
                ),
                _ => format!("field `m` does not decode: {e}"),
            });
        }
    };
    if w.v != ENTRY_FORMAT {
        return Err(format!(
            "entry format `{}` is not supported (this host reads formats 1 and {ENTRY_FORMAT})",
            w.v
        ));
    }
    Ok((
        Envelope {
            topic: topic.to_string(),
            key: w.key,
            seq: 0,
            time: w.time,
            source: w.source,
            body: w.body,
        },
        w.from,
        w.n,
    ))
}

/// A bar written by any producer: `symbol time open high low close
/// [volume]` (time in milliseconds since the epoch).
fn decode_bar<'a>(
    topic: &str,
    get: &dyn Fn(&str) -> Option<&'a str>,
) -> Result<(Envelope, String, u64), String> {
    let num = |name: &str| -> Result<f64, String> {
        let raw = get(name).ok_or_else(|| format!("bar entry: missing field `{name}`"))?;
        let x: f64 = raw
            .parse()
            .map_err(|_| format!("bar entry: field `{name}` = `{raw}` is not a number"))?;
        if x.is_finite() {
            Ok(x)
        } else {
            Err(format!("bar entry: field `{name}` is not finite"))
        }
    };
    let symbol = get("symbol")
        .filter(|s| !s.is_empty())
        .ok_or("bar entry: missing field `symbol`")?
        .to_string();
    let raw_time = get("time").ok_or("bar entry: missing field `time`")?;
    let time: i64 = raw_time.parse().map_err(|_| {
        format!("bar entry: field `time` = `{raw_time}` is not an integer (ms since the epoch)")
    })?;
    let (open, high, low, close) = (num("open")?, num("high")?, num("low")?, num("close")?);
    let volume = match get("volume") {
        Some(_) => num("volume")?,
        None => 0.0,
    };
    if low > high || open < low || open > high || close < low || close > high {
        return Err(format!(
            "bar entry: prices are inconsistent (open {open}, high {high}, low {low}, close {close}): high must be the largest and low the smallest"
        ));
    }
    if volume < 0.0 {
        return Err(format!("bar entry: volume {volume} is negative"));
    }
    Ok((
        Envelope {
            topic: topic.to_string(),
            key: symbol.clone(),
            seq: 0,
            time,
            source: "$feed".into(),
            body: Body::Bar(Bar {
                symbol,
                time,
                open,
                high,
                low,
                close,
                volume,
            }),
        },
        // Plain entries have no publisher counter: never deduplicated.
        String::new(),
        0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_bars_decode_and_bad_ones_say_why() {
        let ok = fields(&[
            ("symbol", "EURUSD"),
            ("time", "1700000000000"),
            ("open", "1.1"),
            ("high", "1.2"),
            ("low", "1.0"),
            ("close", "1.15"),
            ("volume", "10"),
        ]);
        let (e, _, _) = decode_entry("bar", &ok, true).unwrap();
        assert!(matches!(e.body, Body::Bar(ref b) if b.close == 1.15 && b.symbol == "EURUSD"));
        assert_eq!(e.key, "EURUSD");
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[("symbol", "X"), ("time", "1")], "missing field `open`"),
            (
                &[
                    ("symbol", "X"),
                    ("time", "1"),
                    ("open", "a"),
                    ("high", "1"),
                    ("low", "1"),
                    ("close", "1"),
                ],
                "`open` = `a` is not a number",
            ),
            (
                &[
                    ("symbol", "X"),
                    ("time", "1"),
                    ("open", "1"),
                    ("high", "0.5"),
                    ("low", "1"),
                    ("close", "1"),
                ],
                "inconsistent",
            ),
            (&[("garbage", "\u{fffd}")], "missing field `symbol`"),
        ];
        for (f, want) in cases {
            let err = decode_entry("bar", &fields(f), true).unwrap_err();
            assert!(err.contains(want), "{err} should say {want}");
        }
    }

    #[test]
    fn format_2_entries_decode_and_broken_ones_say_why() {
        let body = Body::Retired("x".into());
        let m = serde_json::to_string(&WireOut {
            v: ENTRY_FORMAT,
            key: "k",
            source: "s",
            time: 5,
            from: "d@1",
            n: 3,
            body: &body,
        })
        .unwrap();
        let (e, from, n) = decode_entry("t", &fields(&[("m", &m)]), true).unwrap();
        assert_eq!(
            (e.topic.as_str(), e.key.as_str(), e.source.as_str(), e.time),
            ("t", "k", "s", 5)
        );
        assert_eq!((from.as_str(), n, e.body), ("d@1", 3, body));
        let later = m.replace("\"v\":2", "\"v\":3");
        assert!(
            decode_entry("t", &fields(&[("m", &later)]), false)
                .unwrap_err()
                .contains("format `3` is not supported")
        );
        let broken = m.replace("\"key\":\"k\",", "");
        assert!(
            decode_entry("t", &fields(&[("m", &broken)]), false)
                .unwrap_err()
                .contains("field `m` does not decode: missing field `key`")
        );
        assert!(
            decode_entry("t", &fields(&[("m", "\u{1}garbage")]), false)
                .unwrap_err()
                .starts_with("field `m` does not decode")
        );
        assert!(
            decode_entry("t", &fields(&[("other", "1")]), false)
                .unwrap_err()
                .contains("missing field `m`")
        );
    }

    #[test]
    fn envelopes_need_every_field_and_a_known_format() {
        let body = serde_json::to_string(&Body::Retired("x".into())).unwrap();
        let good = fields(&[
            ("v", "1"),
            ("key", "k"),
            ("source", "s"),
            ("time", "5"),
            ("from", "d@1"),
            ("n", "3"),
            ("body", &body),
        ]);
        let (e, from, n) = decode_entry("t", &good, false).unwrap();
        assert_eq!(
            (e.key.as_str(), e.time, from.as_str(), n),
            ("k", 5, "d@1", 3)
        );
        assert_eq!(e.body, Body::Retired("x".into()));
        let mut v9 = good.clone();
        v9[0].1 = "9".into();
        assert!(
            decode_entry("t", &v9, false)
                .unwrap_err()
                .contains("format `9`")
        );
        let no_key: Vec<_> = good.iter().filter(|(k, _)| k != "key").cloned().collect();
        assert!(
            decode_entry("t", &no_key, false)
                .unwrap_err()
                .contains("`key`")
        );
        let mut junk = good.clone();
        junk[6].1 = "{not json".into();
        assert!(
            decode_entry("t", &junk, false)
                .unwrap_err()
                .contains("`body` does not decode")
        );
        let mut time = good.clone();
        time[3].1 = "soon".into();
        assert!(
            decode_entry("t", &time, false)
                .unwrap_err()
                .contains("`time`")
        );
    }

    #[test]
    fn passwords_are_not_repeated_in_messages() {
        assert_eq!(
            redacted("redis://user:secret@127.0.0.1:6379"),
            "redis://user:***@127.0.0.1:6379"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
