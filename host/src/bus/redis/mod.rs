//! The Redis Streams bus: daemons on many machines share one Redis.
//!
//! **Streams.** Every topic is one stream, `{prefix}:t:{topic}`, written with
//! `XADD ... MAXLEN ~ {maxlen}`. An entry has two fields (layout in
//! `docs/redis.md`): `m`, the message as JSON with `v` (format, `2`), `key`,
//! `source`, `time`, `from` (the publishing daemon's incarnation), `n` (its
//! publish counter) and `body`; and `a`, the writer's key id and a tag per
//! reader ([`EntryAuth`]). An entry no trusted daemon wrote is refused
//! before it is decoded: dead-lettered with the reason and counted, never
//! delivered, so `source` is always what a trusted host set.
//!
//! **Feed.** Producers outside garden (`redis-cli XADD`) write plain bar
//! fields to `{prefix}:feed`, which a bus with a `feed_topic` reads through
//! the one group `feed`: each entry is taken by one daemon, checked like a
//! CSV row, and published on the bar topic as that daemon's entry, with
//! (`$feed`, the feed entry's position) as its publisher and counter, so a
//! bar taken twice (after a failover) is delivered once.
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
//! daemon sets it ([`Bus::set_roster`]). The consumer name is the
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

mod auth;
mod connection;
mod reply;
mod wire;

pub use auth::{AUTH_FIELD, EntryAuth, Unauthenticated};

pub use connection::{
    CONNECT_TIMEOUT, IO_TIMEOUT, RECONNECT_FIRST, RECONNECT_MAX, RedisBusError, RedisOptions,
    connect, hostname, open, redacted,
};
pub use wire::{
    ENTRY_FORMAT, FEED_SOURCE, Fields, decode_entry, entry_position, feed_stream, field,
    open_entry, topic_stream,
};

use std::collections::VecDeque;

// Names chosen by the host and publisher hashes: a fast hash is enough.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Bus, BusError, BusStats, DeadLetter, Delivery, RecentDeadLetters, Subscriber, fnv1a};
use crate::Envelope;
use redis::Value;
use reply::{entry_list, pending_count, stream_entries_by_name};
use wire::{WireOut, decode_feed_bar, parse_id, xadd};

/// Recently handled (publisher, counter) pairs remembered per group, to
/// skip redeliveries.
const SEEN_KEPT: usize = 1 << 16;

/// Where publishes wait, durably, while Redis cannot be reached: a table in
/// the store (`crate::parking::StoreParking`). Entries are (stream, fields).
pub trait Parking: Send {
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
    /// Where a new group starts reading (an entry id): new entries unless
    /// set.
    start: Option<String>,
    /// Position of the latest entry read through it.
    read_upto: u64,
    /// Read this consumer's own pending entries first (id `0`), left by an
    /// earlier incarnation of this daemon, before new ones (`>`).
    history: bool,
    /// The feed: entries are bars to check and publish, not deliveries.
    feed: bool,
    /// (hash of the publisher, its counter) of recent deliveries.
    seen: HashSet<(u64, u64)>,
    seen_order: VecDeque<(u64, u64)>,
}

impl Route {
    /// Remember a delivery, forgetting the oldest past [`SEEN_KEPT`].
    fn remember(&mut self, mark: (u64, u64)) {
        if self.seen_order.len() >= SEEN_KEPT
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        if self.seen.insert(mark) {
            self.seen_order.push_back(mark);
        }
    }
}

/// The members of a subscribing group that share its entries by key.
struct Roster {
    /// (from position, members), by position: the last at or before an
    /// entry's position splits its keys.
    versions: Vec<(u64, Vec<String>)>,
    /// Set by the daemon for the whole garden, not kept from local
    /// subscriptions.
    fixed: bool,
}

impl Roster {
    fn local(members: Vec<String>) -> Roster {
        Roster {
            versions: vec![(0, members)],
            fixed: false,
        }
    }

    /// The members that split the keys of the entry at `position`.
    fn at(&self, position: u64) -> &[String] {
        let n = self.versions.partition_point(|(from, _)| *from <= position);
        self.versions
            .get(n.saturating_sub(1))
            .map_or(&[][..], |(_, m)| m.as_slice())
    }

    /// Where `instance` first joins, if after the start: its group need
    /// not read what comes before.
    fn joins(&self, instance: &str) -> Option<u64> {
        self.versions
            .iter()
            .find(|(_, m)| m.iter().any(|x| x == instance))
            .map(|(from, _)| *from)
            .filter(|from| *from > 0)
    }
}

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

/// What one exchange sends besides the publishes, in pipeline order: the
/// routes whose groups are created, the parked entries forwarded, the
/// routes acknowledged, the groups read and the routes claimed from.
struct Round {
    creating: Vec<usize>,
    /// Write commands queued (XADDs and script calls).
    writes: usize,
    forwarding: Vec<(i64, String, Fields)>,
    acked: Vec<usize>,
    reading: Vec<Vec<usize>>,
    claiming: Vec<usize>,
}

impl Round {
    fn is_empty(&self) -> bool {
        self.creating.is_empty()
            && self.forwarding.is_empty()
            && self.acked.is_empty()
            && self.reading.is_empty()
            && self.claiming.is_empty()
    }
}

/// The Redis Streams bus.
pub struct RedisBus {
    options: RedisOptions,
    /// [`wire::PUBLISH_ONCE`], loaded by every pipeline that uses it.
    once: redis::Script,
    client: redis::Client,
    conn: Option<redis::Connection>,
    /// This process: distinguishes its publishes from an earlier run's.
    incarnation: String,
    /// Tags what it writes and checks who wrote what it reads.
    auth: EntryAuth,
    /// (stream hash, position) of entries refused lately.
    refused_entries: HashSet<(u64, u64)>,
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
    parking: Option<Box<dyn Parking>>,
    /// The parking may hold entries to forward.
    parking_waiting: bool,
    /// Entries the last exchange fetched (0: the streams were quiet).
    fetched_last: usize,
    /// Per stream, the newest entry id seen, for [`RedisBus::wait`].
    last_seen: HashMap<String, String>,
    parked: u64,
    /// Whether a long loss of Redis fences this bus ([`RedisBus::fence_on_loss`]).
    fencing: bool,
    /// Since when exchanges have failed, if they do.
    down_since: Option<Instant>,
    /// Fenced: what it held was dropped, and it reads nothing until
    /// [`RedisBus::take_fence`].
    fenced: bool,
}

impl RedisBus {
    /// Connect (checking the server answers) and start with no
    /// subscriptions.
    pub fn connect(options: RedisOptions) -> Result<Self, RedisBusError> {
        let (client, conn) = connect(&options.url)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let feed = options.feed_topic.clone().map(|topic| Route {
            shared: None,
            stream: feed_stream(&options.prefix),
            group: "feed".into(),
            topic,
            delivery: Delivery::Shared,
            addressed: false,
            members: vec![FEED_SOURCE.into()],
            create: true,
            start: None,
            read_upto: 0,
            history: true,
            feed: true,
            seen: HashSet::default(),
            seen_order: VecDeque::new(),
        });
        let mut bus = RedisBus {
            once: redis::Script::new(wire::PUBLISH_ONCE),
            incarnation: format!("{}@{nanos:x}", options.consumer),
            auth: EntryAuth::ephemeral(),
            refused_entries: HashSet::default(),
            options,
            client,
            conn: Some(conn),
            counter: 0,
            routes: feed.into_iter().collect(),
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
            backoff: RECONNECT_FIRST,
            last_error: None,
            parking: None,
            parking_waiting: false,
            fetched_last: 0,
            last_seen: HashMap::default(),
            parked: 0,
            fencing: false,
            down_since: None,
            fenced: false,
        };
        bus.create_groups_now();
        Ok(bus)
    }

    /// Tag and check entries with `auth` from now on: a daemon's own key
    /// and the daemon keys it trusts (until then, a key of its own made at
    /// connect that trusts no other).
    pub fn set_auth(&mut self, auth: EntryAuth) {
        self.auth = auth;
    }

    /// The keys entries are tagged and checked with.
    pub fn auth(&self) -> &EntryAuth {
        &self.auth
    }

    /// Keep publishes in `parking` while Redis is unreachable, and forward
    /// what it already holds (from an earlier run of this daemon) first.
    pub fn set_parking(&mut self, parking: Box<dyn Parking>) {
        self.parking = Some(parking);
        self.parking_waiting = true;
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

    /// Fence this bus when it gets Redis back after losing it for longer
    /// than the claim idle time (`claim_idle`): by then other daemons may
    /// have claimed what it read and not acknowledged, and its instances
    /// may have been started elsewhere. It then drops what it held (unsent
    /// publishes, unacknowledged deliveries, acknowledgements not sent) and
    /// reads nothing until [`RedisBus::take_fence`], so the daemon can
    /// restart its instances from their snapshots first: what they had
    /// handled since is handled once more, by whoever holds it now, instead
    /// of a stale instance's output going out beside it.
    pub fn fence_on_loss(&mut self) {
        self.fencing = true;
    }

    /// Fence now (the daemon found its heartbeat had lapsed).
    pub fn fence(&mut self) {
        self.outgoing.clear();
        self.acks.clear();
        if let Some(held) = self.held.as_mut() {
            held.clear();
        }
        self.inboxes.clear();
        self.inflight.clear();
        self.fenced = true;
    }

    /// Whether the bus was fenced since the last call; reading resumes.
    pub fn take_fence(&mut self) -> bool {
        std::mem::take(&mut self.fenced)
    }

    /// Publishes parked so far.
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

    /// Wait, at most `timeout`, until an entry may be waiting on a stream
    /// this daemon reads: one blocking `XREAD` over every stream from the
    /// newest entry seen on it, instead of polling. Returns at once when the
    /// last exchange fetched entries or something waits to be sent, so a
    /// busy daemon never sleeps; any error just ends the wait (the next
    /// exchange reports and retries it).
    pub fn wait(&mut self, timeout: Duration) {
        if timeout.is_zero()
            || self.fetched_last > 0
            || !self.outgoing.is_empty()
            || !self.dead_out.is_empty()
            || self.acks.values().any(|ids| !ids.is_empty())
        {
            return;
        }
        let mut streams: Vec<String> = self
            .routes
            .iter()
            .filter(|r| !r.members.is_empty())
            .map(|r| r.stream.clone())
            .collect();
        streams.sort_unstable();
        streams.dedup();
        let Some(conn) = self.conn.as_mut() else {
            std::thread::sleep(timeout.min(self.backoff));
            return;
        };
        if streams.is_empty() {
            std::thread::sleep(timeout);
            return;
        }
        // A stream never read here starts from its newest entry, asked for
        // once: from `0-0` its history would wake the wait entry by entry,
        // and `$` would miss an entry added between the last exchange and
        // this wait until the timeout.
        let unseen: Vec<&String> = streams
            .iter()
            .filter(|s| !self.last_seen.contains_key(*s))
            .collect();
        if !unseen.is_empty() {
            let mut pipe = redis::pipe();
            for stream in &unseen {
                pipe.cmd("XREVRANGE")
                    .arg(*stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1);
            }
            match pipe.query::<Vec<Value>>(conn) {
                Ok(replies) => {
                    for (stream, reply) in unseen.into_iter().zip(replies) {
                        let newest = entry_list(reply)
                            .pop()
                            .map_or_else(|| "0-0".into(), |(id, _)| id);
                        self.last_seen.insert(stream.clone(), newest);
                    }
                }
                Err(e) => {
                    tracing::debug!("waiting for entries: {e}");
                    return;
                }
            }
        }
        // BLOCK takes whole milliseconds; 0 would mean forever, and a
        // block past the read timeout would end in an error.
        let ms = timeout.min(connection::IO_TIMEOUT / 2).as_millis().max(1);
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(ms.to_string())
            .arg("STREAMS");
        for stream in &streams {
            cmd.arg(stream);
        }
        for stream in &streams {
            cmd.arg(self.last_seen.get(stream).map_or("0-0", String::as_str));
        }
        match cmd.query::<Value>(conn) {
            Ok(reply) => {
                // Remember what woke us, so the same entry does not wake
                // the next wait before an exchange has read it.
                for (stream, entries) in stream_entries_by_name(reply) {
                    if let Some((id, _)) = entries.last() {
                        self.last_seen.insert(stream, id.clone());
                    }
                }
            }
            Err(e) => tracing::debug!("waiting for entries: {e}"),
        }
    }

    fn group_name(s: &Subscriber) -> String {
        match (s.addressed, s.delivery) {
            (true, _) => format!("a:{}", s.instance),
            (false, Delivery::Broadcast) => format!("i:{}", s.instance),
            (false, Delivery::Shared) => format!("k:{}", s.instance),
        }
    }

    /// Encode `message` for `stream` as XADD fields (format 2: the message
    /// `m` and its writer's tags `a`) as publish `n` of `from`, or say why
    /// it cannot be sent.
    fn encode(
        &self,
        message: &Envelope,
        stream: &str,
        from: &str,
        n: u64,
    ) -> Result<Vec<(&'static str, String)>, BusError> {
        let refused = |reason: String| BusError::Refused {
            topic: message.topic.clone(),
            reason,
        };
        let sealed = match self.auth.body_keys() {
            Some(keys) => {
                let plain = serde_json::to_vec(&message.body)
                    .map_err(|e| refused(format!("its body does not encode: {e}")))?;
                let sealed = keys
                    .seal(stream.as_bytes(), &plain)
                    .map_err(|e| refused(e.to_string()))?;
                Some(sealed)
            }
            None => None,
        };
        let m = serde_json::to_string(&WireOut {
            v: ENTRY_FORMAT,
            key: &message.key,
            source: &message.source,
            time: message.time,
            from,
            n,
            body: sealed.is_none().then_some(&message.body),
            enc: sealed.as_deref(),
        })
        .map_err(|e| refused(format!("its body does not encode: {e}")))?;
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
        let a = self.auth.seal(stream, &m);
        Ok(vec![("m", m), (AUTH_FIELD, a)])
    }

    /// Park the unsent publishes, if there is one: from
    /// there they survive this process too.
    fn park_outgoing(&mut self) {
        let Some(parking) = self.parking.as_mut() else {
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
        match parking.park(&entries) {
            Ok(()) => {
                self.parked += entries.len() as u64;
                self.outgoing.clear();
                self.parking_waiting = true;
                tracing::info!(
                    entries = entries.len(),
                    "Redis unreachable: publishes parked"
                );
            }
            Err(e) => {
                tracing::warn!("cannot park publishes ({e}); keeping them in memory")
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
        let mut once = wire::OnceBatch::default();
        let mut writes = 0;
        for (stream, fields) in &self.outgoing {
            if !once.take(stream, fields) {
                xadd(
                    &mut pipe,
                    stream,
                    &maxlen,
                    fields.iter().map(|(k, v)| (*k, v)),
                );
                writes += 1;
            }
        }
        writes += once.queue(&mut pipe, &self.once, &maxlen);
        let creating: Vec<usize> = (0..self.routes.len())
            .filter(|i| self.routes[*i].create)
            .collect();
        for &i in &creating {
            xgroup_create(&mut pipe, &self.routes[i]);
        }
        match pipe.query::<Vec<Value>>(conn) {
            Ok(replies) => {
                self.stats.published += self.outgoing.len() as u64;
                self.outgoing.clear();
                let mut replies = replies.into_iter();
                self.take_writes(writes, &mut replies);
                for (i, reply) in creating.into_iter().zip(replies) {
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
        if self.conn.is_none() {
            self.conn = Some(open(&self.client)?);
            tracing::info!("reconnected to Redis");
            if self.fencing
                && self
                    .down_since
                    .is_some_and(|t| t.elapsed() >= self.options.claim_idle)
            {
                tracing::warn!("Redis was lost for longer than the claim idle time: fencing");
                self.fence();
            }
            self.down_since = None;
        }
        let forwarding = self.take_parked();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let creating = self.queue_group_creation(&mut pipe);
        let write_commands = self.queue_writes(&mut pipe, &forwarding);
        let writes = self.outgoing.len() + self.dead_out.len();
        let acked = self.queue_acks(&mut pipe);
        let reading = self.queue_reads(&mut pipe);
        let claiming = if claim {
            self.queue_claims(&mut pipe)
        } else {
            Vec::new()
        };
        let plan = Round {
            creating,
            writes: write_commands,
            forwarding,
            acked,
            reading,
            claiming,
        };
        if writes == 0 && plan.is_empty() {
            // Nothing to say: an empty pipeline would wait for no reply.
            if claim {
                self.last_claim = Instant::now();
            }
            self.fetched_last = 0;
            return Ok(false);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(false);
        };
        let _span = tracing::debug_span!("publish", entries = writes).entered();
        let sent = Instant::now();
        let replies: Vec<Value> = pipe.query(conn)?;
        self.stats.round_trips += 1;
        let took = sent.elapsed();
        self.stats.round_trip_micros += u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.stats
            .round_trip_seconds
            .observe_seconds(took.as_secs_f64());
        if claim {
            self.last_claim = Instant::now();
        }
        // Everything sent was taken: Redis applies a pipeline in order and
        // answered every command.
        let mut replies = replies.into_iter();
        self.take_write_replies(&plan, &mut replies);
        let mut fetched = self.take_read_replies(plan.reading, &mut replies);
        let mut claimed = Vec::new();
        for i in plan.claiming {
            if let Some(Value::Array(parts)) = replies.next()
                && let Some(entries) = parts.into_iter().nth(1)
            {
                for (id, fields) in entry_list(entries) {
                    claimed.push((i, id, fields));
                }
            }
        }
        if !claimed.is_empty() {
            self.screen_claimed(claimed, &mut fetched)?;
        }
        let any = !fetched.is_empty();
        self.fetched_last = fetched.len();
        self.merge(fetched);
        Ok(any)
    }

    /// The oldest parked publishes, to send before anything newer: they
    /// were published first.
    fn take_parked(&mut self) -> Vec<(i64, String, Fields)> {
        match (&mut self.parking, self.parking_waiting) {
            (Some(o), true) => o.parked(FORWARD_BATCH).unwrap_or_else(|e| {
                tracing::warn!("cannot read the parked publishes: {e}");
                Vec::new()
            }),
            _ => Vec::new(),
        }
    }

    /// Queue the creation of every group still to be made; their routes.
    fn queue_group_creation(&self, pipe: &mut redis::Pipeline) -> Vec<usize> {
        let mut creating = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.create {
                xgroup_create(pipe, r);
                creating.push(i);
            }
        }
        creating
    }

    /// Queue the writes: parked entries first (`forwarding`, given here
    /// only to keep their order), then this round's publishes, then dead
    /// letters; entries with publish ids through one [`wire::PUBLISH_ONCE`]
    /// call per stream, in their order. How many commands were queued.
    fn queue_writes(
        &self,
        pipe: &mut redis::Pipeline,
        forwarding: &[(i64, String, Fields)],
    ) -> usize {
        let maxlen = self.options.maxlen.to_string();
        let mut commands = 0;
        let mut once = wire::OnceBatch::default();
        for (_, stream, fields) in forwarding {
            if !once.take(stream, fields) {
                xadd(pipe, stream, &maxlen, fields.iter().map(|(k, v)| (k, v)));
                commands += 1;
            }
        }
        for (stream, fields) in &self.outgoing {
            if !once.take(stream, fields) {
                xadd(pipe, stream, &maxlen, fields.iter().map(|(k, v)| (*k, v)));
                commands += 1;
            }
        }
        commands += once.queue(pipe, &self.once, &maxlen);
        let dead_stream = format!("{}:dead", self.options.prefix);
        for fields in &self.dead_out {
            xadd(
                pipe,
                &dead_stream,
                &maxlen,
                fields.iter().map(|(k, v)| (*k, v)),
            );
            commands += 1;
        }
        commands
    }

    /// Take the replies of `commands` queued writes: count what was not
    /// written again, say what Redis refused.
    fn take_writes(&mut self, commands: usize, replies: &mut impl Iterator<Item = Value>) {
        for _ in 0..commands {
            match replies.next() {
                Some(Value::ServerError(e)) => tracing::warn!("a write refused by Redis: {e:?}"),
                Some(Value::Nil) => self.stats.deduplicated += 1,
                Some(Value::Array(each)) => {
                    for reply in each {
                        match reply {
                            Value::Nil => self.stats.deduplicated += 1,
                            Value::ServerError(e) => {
                                tracing::warn!("XADD refused by Redis: {e:?}")
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Queue the XACKs; the routes they are for.
    fn queue_acks(&self, pipe: &mut redis::Pipeline) -> Vec<usize> {
        let mut acked = Vec::new();
        for (&route, ids) in &self.acks {
            if ids.is_empty() {
                continue;
            }
            let r = &self.routes[route];
            pipe.cmd("XACK").arg(&r.stream).arg(&r.group).arg(ids);
            acked.push(route);
        }
        acked
    }

    /// Queue one XREADGROUP per group, over all the streams it reads (a
    /// broadcast subscriber's group spans its topics); the routes of each.
    fn queue_reads(&self, pipe: &mut redis::Pipeline) -> Vec<Vec<usize>> {
        let mut reading: Vec<Vec<usize>> = Vec::new();
        if self.fenced {
            return reading;
        }
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
        reading
    }

    /// Queue an XAUTOCLAIM of entries other consumers left pending too
    /// long, per route; the routes.
    fn queue_claims(&self, pipe: &mut redis::Pipeline) -> Vec<usize> {
        let min_idle = self.options.claim_idle.as_millis().to_string();
        let mut claiming = Vec::new();
        if self.fenced {
            return claiming;
        }
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
        claiming
    }

    /// Read the replies to the group creations, writes and acks of `plan`.
    fn take_write_replies(&mut self, plan: &Round, replies: &mut impl Iterator<Item = Value>) {
        for &i in &plan.creating {
            if let Some(Value::ServerError(e)) = replies.next()
                && e.code() != "BUSYGROUP"
            {
                tracing::warn!(group = %self.routes[i].group, "XGROUP CREATE failed: {e:?}");
                continue;
            }
            self.routes[i].create = false;
        }
        self.take_writes(plan.writes, replies);
        let forwarding = &plan.forwarding;
        if let (Some(o), Some((last, ..))) = (&mut self.parking, forwarding.last()) {
            if let Err(e) = o.forwarded(*last) {
                // Sent but still kept: sent again later, skipped by the
                // receivers as already seen.
                tracing::warn!("cannot clear the forwarded parked entries: {e}");
            }
            tracing::info!(entries = forwarding.len(), "forwarded the parked publishes");
        }
        if forwarding.len() < FORWARD_BATCH {
            self.parking_waiting = false;
        }
        self.stats.published += forwarding.len() as u64;
        self.stats.published += self.outgoing.len() as u64;
        self.outgoing.clear();
        self.dead_out.clear();
        for &key in &plan.acked {
            self.acks.remove(&key);
            let _ = replies.next();
        }
    }

    /// Read the XREADGROUP replies of `reading`, decoded per route.
    fn take_read_replies(
        &mut self,
        reading: Vec<Vec<usize>>,
        replies: &mut impl Iterator<Item = Value>,
    ) -> Vec<Fetched> {
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
                        if let Some((last, _)) = entries.last() {
                            self.last_seen
                                .insert(self.routes[i].stream.clone(), last.clone());
                        }
                        for (id, fields) in entries {
                            fetched.push(self.decode(i, id, fields));
                        }
                    }
                }
                None => {}
            }
        }
        fetched
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

    fn decode(&mut self, route: usize, id: String, fields: Fields) -> Fetched {
        let (ms, seq) = parse_id(&id);
        let position = entry_position(&id);
        let r = &self.routes[route];
        // Whoever can write to Redis can write an entry of any size: one
        // above the limit is dead-lettered before it is parsed.
        let size: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        let result = if size > self.options.max_entry_bytes {
            Err(format!(
                "the entry is {size} bytes, over the {} byte limit (max_entry_bytes)",
                self.options.max_entry_bytes
            ))
        } else if r.feed {
            // Identified by its place in the feed, whoever takes it.
            decode_feed_bar(&r.topic, &fields).map(|e| (e, fnv1a(FEED_SOURCE.as_bytes()), position))
        } else {
            let m = field(&fields, "m").unwrap_or_default();
            match self.auth.check(&r.stream, m, field(&fields, AUTH_FIELD)) {
                Ok(_) => open_entry(&r.topic, &r.stream, &fields, self.auth.body_keys())
                    .map(|(e, from, n)| (e, fnv1a(from.as_bytes()), n)),
                Err(refused) => {
                    // Counted once, however many of its groups read it.
                    let entry = (fnv1a(r.stream.as_bytes()), position);
                    if self.refused_entries.len() >= SEEN_KEPT {
                        self.refused_entries.clear();
                    }
                    if self.refused_entries.insert(entry) {
                        self.stats.refused += 1;
                    }
                    Err(format!("refused: {refused}"))
                }
            }
        };
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
                e.trace.published_at =
                    Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
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

    /// Publish a bar taken from the feed as this daemon's entry, numbered
    /// by its place in the feed; the feed entry is acknowledged in the same
    /// exchange that sends it.
    fn republish(&mut self, bar: Envelope, n: u64, receipt: Receipt, fields: &[(String, String)]) {
        let stream = self.stream(&bar.topic);
        match self.encode(&bar, &stream, FEED_SOURCE, n) {
            Ok(fields) => {
                self.outgoing.push((stream, fields));
                self.routes[receipt.route].remember((fnv1a(FEED_SOURCE.as_bytes()), n));
                self.acks.entry(receipt.route).or_default().push(receipt.id);
            }
            Err(e) => {
                let reason = e.to_string();
                self.dead_entry(receipt.route, &receipt.id, fields, &reason);
            }
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
        r.read_upto = r.read_upto.max(entry_position(&receipt.id));
        // A redelivery of something handled here already: acknowledge only.
        let mark = (from, n);
        if from != 0 && r.seen.contains(&mark) {
            self.acks.entry(receipt.route).or_default().push(receipt.id);
            return;
        }
        if r.feed {
            self.republish(envelope, n, receipt, &f.fields);
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
                    let position = entry_position(&receipt.id);
                    let roster = r
                        .shared
                        .as_ref()
                        .and_then(|g| self.rosters.get(g))
                        .map_or(&[][..], |x| x.at(position));
                    let mine = !roster.is_empty()
                        && r.members.first().is_some_and(|m| {
                            let pick = fnv1a(envelope.key.as_bytes()) % roster.len() as u64;
                            roster.get(pick as usize) == Some(m)
                        });
                    mine.then_some(0)
                }
            }
        };
        if from != 0 {
            r.remember(mark);
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
                stream: stream.clone(),
                group: group.clone(),
                delivery: s.delivery,
                addressed: s.addressed,
                members: vec![s.instance.clone()],
                create: true,
                start: None,
                read_upto: 0,
                history: true,
                feed: false,
                seen: HashSet::default(),
                seen_order: VecDeque::new(),
            }),
        }
        if s.delivery == Delivery::Shared && !s.addressed {
            let roster = self
                .rosters
                .entry(s.group.clone())
                .or_insert_with(|| Roster::local(Vec::new()));
            if !roster.fixed
                && let Some((_, members)) = roster.versions.last_mut()
                && !members.contains(&s.instance)
            {
                members.push(s.instance.clone());
            }
            // A member that joins at a later position (a canary) reads
            // from there: what comes before has other members.
            if let Some(from) = roster.joins(&s.instance)
                && let Some(r) = self
                    .routes
                    .iter_mut()
                    .find(|r| r.stream == stream && r.group == group && r.create)
            {
                let before = from - 1;
                r.start = Some(format!("{}-{}", before >> 16, before & 0xffff));
            }
        }
        self.inboxes.entry(s.instance.clone()).or_default();
        self.create_groups_now();
    }

    /// Its members in the whole garden, in an order every daemon agrees
    /// on, wherever each runs. Without a roster (or after an empty one),
    /// it is the local members in subscription order.
    fn set_roster(&mut self, group: &str, members: Vec<String>) {
        let roster = if members.is_empty() {
            let mut local: Vec<String> = Vec::new();
            for r in self
                .routes
                .iter()
                .filter(|r| r.shared.as_deref() == Some(group))
            {
                for m in &r.members {
                    if !local.contains(m) {
                        local.push(m.clone());
                    }
                }
            }
            Roster::local(local)
        } else {
            Roster {
                versions: vec![(0, members)],
                fixed: true,
            }
        };
        self.rosters.insert(group.to_string(), roster);
    }

    fn set_roster_history(&mut self, group: &str, mut versions: Vec<(u64, Vec<String>)>) {
        versions.sort_by_key(|(from, _)| *from);
        if versions.first().is_none_or(|(from, _)| *from > 0) {
            // Before the first change: the local members, as without one.
            self.set_roster(group, Vec::new());
            let local = self
                .rosters
                .get(group)
                .map(|r| r.at(0).to_vec())
                .unwrap_or_default();
            versions.insert(0, (0, local));
        }
        self.rosters.insert(
            group.to_string(),
            Roster {
                versions,
                fixed: true,
            },
        );
    }

    /// Every shared stream of `instance` has been read past `position`
    /// and nothing waits in its inbox: what its keys had before that
    /// position is handled.
    fn passed(&self, instance: &str, position: u64) -> bool {
        let shared = self
            .routes
            .iter()
            .filter(|r| r.shared.is_some() && r.members.iter().any(|m| m == instance));
        let mut any = false;
        for r in shared {
            any = true;
            if r.read_upto < position {
                return false;
            }
        }
        any && self.inboxes.get(instance).is_none_or(VecDeque::is_empty)
    }

    fn passed_by(&mut self, group: &str, members: &[String], position: u64) -> bool {
        let mut streams: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.shared.as_deref() == Some(group))
            .map(|r| r.stream.clone())
            .collect();
        streams.sort_unstable();
        streams.dedup();
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let below = position.saturating_sub(1);
        let end = format!("{}-{}", below >> 16, below & 0xffff);
        for stream in &streams {
            let groups: redis::streams::StreamInfoGroupsReply =
                match redis::cmd("XINFO").arg("GROUPS").arg(stream).query(conn) {
                    Ok(g) => g,
                    Err(_) => return false,
                };
            for m in members {
                let name = format!("k:{m}");
                let Some(g) = groups.groups.iter().find(|g| g.name == name) else {
                    // Never made: it took nothing.
                    continue;
                };
                if entry_position(&g.last_delivered_id) < position {
                    return false;
                }
                let pending: redis::RedisResult<Vec<Value>> = redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(&name)
                    .arg("-")
                    .arg(&end)
                    .arg(1)
                    .query(conn);
                if !pending.is_ok_and(|p| p.is_empty()) {
                    return false;
                }
            }
        }
        true
    }

    fn forget_groups(&mut self, instance: &str) {
        let doomed: Vec<(String, String)> = self
            .routes
            .iter()
            .filter(|r| r.shared.is_some() && r.members.iter().any(|m| m == instance))
            .map(|r| (r.stream.clone(), r.group.clone()))
            .collect();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        for (stream, group) in doomed {
            let gone: redis::RedisResult<Value> = redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(&stream)
                .arg(&group)
                .query(conn);
            if let Err(e) = gone {
                tracing::warn!(%stream, %group, "could not drop a finished group: {e}");
            }
        }
    }

    fn unsubscribe(&mut self, instance: &str) {
        for r in &mut self.routes {
            r.members.retain(|m| m != instance);
        }
        for roster in self.rosters.values_mut().filter(|r| !r.fixed) {
            for (_, members) in &mut roster.versions {
                members.retain(|m| m != instance);
            }
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
        let stream = self.stream(&message.topic);
        let mut fields = self.encode(&message, &stream, &self.incarnation, self.counter + 1)?;
        // A handler's output is written once however often its input is
        // handled (a claim after a partition, a restart from a snapshot).
        if let Some(origin) = &message.trace.origin {
            fields.push((wire::ONCE_FIELD, wire::publish_id(&message.source, origin)));
        }
        self.counter += 1;
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
                self.backoff = RECONNECT_FIRST;
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
                self.down_since.get_or_insert_with(Instant::now);
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
/// Queue the creation of `route`'s group (from new entries on, making the
/// stream if need be) on `pipe`.
fn xgroup_create(pipe: &mut redis::Pipeline, route: &Route) {
    pipe.cmd("XGROUP")
        .arg("CREATE")
        .arg(&route.stream)
        .arg(&route.group)
        // The feed is a queue, read from its start; a subscriber sees what
        // is published after it subscribed.
        .arg(
            route
                .start
                .as_deref()
                .unwrap_or(if route.feed { "0" } else { "$" }),
        )
        .arg("MKSTREAM");
}

#[cfg(test)]
mod tests {
    use super::Roster;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_roster_splits_each_entry_by_the_version_at_its_position() {
        let roster = Roster {
            versions: vec![
                (0, names(&["a", "b"])),
                (100, names(&["c", "a", "b"])),
                (200, names(&["a", "b"])),
            ],
            fixed: true,
        };
        assert_eq!(roster.at(0), names(&["a", "b"]));
        assert_eq!(roster.at(99), names(&["a", "b"]));
        assert_eq!(roster.at(100), names(&["c", "a", "b"]));
        assert_eq!(roster.at(199), names(&["c", "a", "b"]));
        assert_eq!(roster.at(200), names(&["a", "b"]));
        // A member that joins later need not read what came before.
        assert_eq!(roster.joins("c"), Some(100));
        assert_eq!(roster.joins("a"), None);
        assert_eq!(roster.joins("z"), None);
    }
}
