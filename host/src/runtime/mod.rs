//! Instances as actors, driven by one deterministic scheduler.
//!
//! Each instance owns an inbox on the bus and lives in a cohort (`cohort`):
//! a sandbox of its own, or, for a module packed in cohorts, one shared
//! with other variants of the same code. The scheduler visits cohorts and
//! lets each handle what waits for its members; what a call publishes goes to the instance's unsent queue and on to
//! the bus when the receivers have room (backpressure: a producer whose
//! unsent queue cannot drain is not run). With the memory bus the same inputs give
//! the same deliveries in the same order, so a replay repeats exactly.
//!
//! A failed call fails that message only: it is dead-lettered with its
//! reason, the failure is logged and counted, a dead instance is
//! re-instantiated after a backoff, and an instance that fails
//! `limits.max_failures` times within `limits.failure_window` is
//! quarantined: unsubscribed, its inbox dead-lettered.

mod cohort;
/// Costs per message, kept here for the runtime's users.
pub use crate::costs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::Envelope;
use crate::bindings::types::{Body, InitContext, Param, Setting, Snapshot};
use crate::bus::{Bus, BusError, DeadLetter, Delivery, MemoryBus, Subscriber};
use crate::engine::{Engine, Module};
use cohort::{Cohort, Outcome, Slot};

/// The topic every instance hears, subscribed or not (end of stream).
pub const SYSTEM_TOPIC: &str = "$system";
/// The subscriber name under which the host itself reads topics.
pub const HOST_SUBSCRIBER: &str = "$host";
/// The inbox of what the host watches ([`Runtime::watch`]).
pub const WATCH_SUBSCRIBER: &str = "$watch";

/// What to start: an id, a loaded module and its parameters.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Unique id in the run (also the `source` of everything it publishes).
    pub id: String,
    /// The loaded module.
    pub module: Arc<Module>,
    /// One value per gene.
    pub params: Vec<Param>,
    /// Free-form settings.
    pub settings: Vec<Setting>,
    /// State to start from (a parent's snapshot), if any.
    pub snapshot: Option<Snapshot>,
}

/// What became of an instance given new code ([`Runtime::upgrade`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upgraded {
    /// The new code runs from the old code's snapshot.
    FromSnapshot,
    /// The new code started fresh: why it did not start from the snapshot.
    Fresh(String),
    /// The new code could not start at all (it is restarted with backoff,
    /// then quarantined, like any instance that fails).
    Failed(String),
}

/// Why an instance could not be given new code.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// No instance has that id here.
    #[error("no instance `{0}` runs here")]
    NoSuchInstance(String),
    /// It is quarantined, retiring or retired.
    #[error("instance `{id}` is {state}: only a running instance takes new code")]
    NotRunning {
        /// The instance.
        id: String,
        /// Its state.
        state: String,
    },
    /// The new instance could not be added.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Why an instance could not be added.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Another instance already has this id.
    #[error("an instance called `{0}` already exists; instance ids must be unique")]
    DuplicateId(String),
    /// Ids starting with `$` are the host's.
    #[error("instance id `{0}` is reserved (ids must be non-empty and not start with `$`)")]
    ReservedId(String),
}

/// Where an instance stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Serving.
    Running,
    /// Dead after a failure; re-instantiated when it next has work.
    Restarting,
    /// Failed too often: no longer receives messages.
    Quarantined {
        /// The failure that tipped it over.
        reason: String,
    },
    /// Retired by the host: receives nothing new, handles what it has, stops.
    Retiring,
    /// Retired and stopped.
    Retired,
}

impl InstanceState {
    /// A short name for tables and status lines: `ok`, `restarting`,
    /// `quarantined`, `retiring`, `retired`.
    pub fn label(&self) -> &'static str {
        match self {
            InstanceState::Running => "ok",
            InstanceState::Restarting => "restarting",
            InstanceState::Quarantined { .. } => "quarantined",
            InstanceState::Retiring => "retiring",
            InstanceState::Retired => "retired",
        }
    }
}

/// The label, and for a quarantined instance the reason after it
/// (`quarantined: ...`): the one text form every command prints.
impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstanceState::Quarantined { reason } => write!(f, "quarantined: {reason}"),
            other => f.write_str(other.label()),
        }
    }
}

/// What the host knows about one instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    /// Instance id.
    pub id: String,
    /// Module name.
    pub module: String,
    /// Module role.
    pub role: String,
    /// The sandbox it runs in, named for its first instance: the same for
    /// the variants one cohort carries, its own id otherwise.
    pub cohort: String,
    /// Its parameters.
    pub params: Vec<(String, f64)>,
    /// State.
    pub state: InstanceState,
    /// Messages taken from its inbox (handled, failed or dead-lettered).
    pub received: u64,
    /// Successful calls.
    pub calls: u64,
    /// Wall time spent inside its message handler, successful calls and
    /// failed ones, in microseconds (start-up excluded).
    pub busy_micros: f64,
    /// `busy_micros` per message received: what one evaluation costs.
    pub micros_per_message: f64,
    /// Fuel (about one unit per Wasm instruction) its calls used: the same
    /// on every machine and in every run.
    pub fuel: u64,
    /// Failed calls, by kind (fuel, deadline, memory, panic, ...).
    pub failures: BTreeMap<String, u64>,
    /// Re-instantiations.
    pub restarts: u64,
    /// Time and fuel per message, bucketed (for the metrics' histograms).
    #[serde(skip)]
    pub costs: crate::runtime::costs::Costs,
    /// Messages published (delivered to the bus).
    pub published: u64,
    /// Publishes the host refused (undeclared topic, too large).
    pub refused_publishes: u64,
    /// The latest failure, if any.
    pub last_error: Option<String>,
}

/// Totals over the run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuntimeStats {
    /// Successful calls into modules.
    pub calls: u64,
    /// Failed calls (module errors and traps).
    pub failures: u64,
    /// Failed calls that killed the instance (traps, limits).
    pub traps: u64,
    /// Re-instantiations after a trap.
    pub restarts: u64,
    /// Instances quarantined.
    pub quarantines: u64,
}

/// How a runtime schedules its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Fewest slots with work in a round for which spreading them over
    /// threads beats the cost of waking the pool. Default 8.
    pub parallel_min: usize,
    /// Most messages a slot takes from its inbox per round, so one busy
    /// instance cannot hold up a round for long. Default 64. This, not
    /// `per_call`, shapes the rounds: the results depend on it.
    pub per_round: usize,
    /// Most messages handed to an instance in one call (`on-messages`).
    /// Default 64. A round's messages go in calls of at most this many, so
    /// the results are the same for any size; only the cost changes.
    pub per_call: usize,
    /// How an instance waits out its backoff before a restart.
    pub restarts: Restarts,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            parallel_min: 8,
            per_round: 64,
            per_call: 64,
            restarts: Restarts::InTurn,
        }
    }
}

/// How an instance waits out its backoff before a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarts {
    /// In its turn: the round waits for it, so the order of work does not
    /// depend on timing and a replay with failures repeats exactly. For
    /// replays.
    InTurn,
    /// Aside: the instance sits rounds out until its backoff has passed
    /// while the others go on (its messages wait in its inbox). For daemons,
    /// where one failing instance must not stall the rest.
    Aside,
}

/// The scheduler and supervisor of all instances on one bus.
///
/// Work proceeds in rounds: (1) every instance whose unsent queue is clear takes
/// the messages waiting for it; (2) instances handle them, in parallel when
/// there are many, each cohort in its own sandbox; (3) what they published
/// goes to the bus in spawn order. The result of a round therefore does not
/// depend on the number of threads, on timing, or on how the instances are
/// packed into cohorts.
pub struct Runtime<B: Bus = MemoryBus> {
    engine: Arc<Engine>,
    bus: B,
    cohorts: Vec<Cohort>,
    spawned: u64,
    /// Every instance's place in spawn order, while no spawn or removal
    /// has made it stale: results are published in this order.
    order: Vec<At>,
    order_stale: bool,
    seed: u64,
    host_inbox: Vec<Arc<Envelope>>,
    /// Host messages taken but not yet acknowledged (manual host acks).
    host_unacked: usize,
    manual_host_acks: bool,
    pool: Option<rayon::ThreadPool>,
    options: RuntimeOptions,
}

/// Where an instance lives: its cohort, and its place among the members.
type At = (usize, usize);

impl<B: Bus> Runtime<B> {
    /// A runtime with no instances. `seed` makes the instances' WASI random
    /// streams repeatable. Instances run on the caller's thread; see
    /// [`Runtime::with_threads`].
    pub fn new(engine: Arc<Engine>, bus: B, seed: u64) -> Self {
        Runtime {
            engine,
            bus,
            cohorts: Vec::new(),
            spawned: 0,
            order: Vec::new(),
            order_stale: false,
            seed,
            host_inbox: Vec::new(),
            host_unacked: 0,
            manual_host_acks: false,
            pool: None,
            options: RuntimeOptions::default(),
        }
    }

    /// When the earliest instance waiting out a backoff may restart, if
    /// any does: a daemon that waits for work wakes by then.
    pub fn next_restart(&self) -> Option<Instant> {
        self.cohorts
            .iter()
            .filter(|c| c.sandbox.is_none())
            .filter_map(|c| c.not_before)
            .min()
    }

    /// Schedule with `options` instead of the defaults.
    pub fn with_options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }

    /// Run instances on `threads` threads (1: all on the caller's thread).
    /// Results are the same for any number. On the 2-core machine the
    /// benches ran on, two threads were slower than one (see
    /// `benches/README.md`), so one is the default.
    pub fn with_threads(mut self, threads: usize) -> Self {
        // The caller's thread works too, so the pool holds the others.
        self.pool = if threads > 1 {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads - 1)
                .thread_name(|i| format!("garden-worker-{i}"))
                .build()
                .ok()
        } else {
            None
        };
        self
    }

    /// Let the host itself read `topic` (e.g. fitness reports); collect the
    /// messages with [`Runtime::take_host_messages`].
    pub fn host_subscribe(&mut self, topic: &str) {
        self.bus.subscribe(&Subscriber {
            instance: HOST_SUBSCRIBER.into(),
            group: HOST_SUBSCRIBER.into(),
            topic: topic.into(),
            delivery: Delivery::Broadcast,
            addressed: false,
        });
    }

    /// Read `topic` through a group of this host's own, `group`, apart
    /// from the instances and the shared host subscriber: every message on
    /// it, to watch (metrics), taken with [`Runtime::take_watched`].
    pub fn watch(&mut self, topic: &str, group: &str) {
        self.bus.subscribe(&Subscriber {
            instance: WATCH_SUBSCRIBER.into(),
            group: group.into(),
            topic: topic.into(),
            delivery: Delivery::Broadcast,
            addressed: false,
        });
    }

    /// What the watched topics brought since the last call, acknowledged.
    pub fn take_watched(&mut self) -> Vec<Arc<Envelope>> {
        let mut out = Vec::new();
        while let Some(m) = self.bus.poll(WATCH_SUBSCRIBER) {
            out.push(m);
        }
        if !out.is_empty() {
            self.bus.ack(WATCH_SUBSCRIBER, out.len());
        }
        out
    }

    fn find(&self, id: &str) -> Option<At> {
        self.cohorts.iter().enumerate().find_map(|(c, cohort)| {
            cohort
                .members
                .iter()
                .position(|s| s.id == id)
                .map(|k| (c, k))
        })
    }

    fn slot(&self, (c, k): At) -> &Slot {
        &self.cohorts[c].members[k]
    }

    fn slot_mut(&mut self, (c, k): At) -> &mut Slot {
        &mut self.cohorts[c].members[k]
    }

    /// Every instance's place in spawn order, computed again only after a
    /// spawn or a removal.
    fn refresh_order(&mut self) {
        if self.order_stale {
            self.order = self.in_spawn_order();
            self.order_stale = false;
        }
    }

    /// Every instance's place, in spawn order.
    fn in_spawn_order(&self) -> Vec<At> {
        let mut all: Vec<(u64, At)> = self
            .cohorts
            .iter()
            .enumerate()
            .flat_map(|(c, cohort)| {
                cohort
                    .members
                    .iter()
                    .enumerate()
                    .map(move |(k, s)| (s.order, (c, k)))
            })
            .collect();
        all.sort_unstable_by_key(|(order, _)| *order);
        all.into_iter().map(|(_, at)| at).collect()
    }

    /// Add an instance: subscribe it as its module declares and start it,
    /// in a cohort of its module with room if the module is packed in
    /// cohorts ([`Module::cohort`]), else in one of its own. A start that
    /// fails is handled like any failure (backoff, then quarantine), so
    /// this only fails on a bad id.
    pub fn spawn(&mut self, spec: InstanceSpec) -> Result<(), SpawnError> {
        if spec.id.is_empty() || spec.id.starts_with('$') {
            return Err(SpawnError::ReservedId(spec.id));
        }
        if self.find(&spec.id).is_some() {
            return Err(SpawnError::DuplicateId(spec.id));
        }
        let info = spec.module.info();
        for s in &info.subscribes {
            self.bus.subscribe(&Subscriber {
                instance: spec.id.clone(),
                group: info.name.clone(),
                topic: s.topic.clone(),
                delivery: match s.delivery {
                    crate::bindings::types::Delivery::Shared => Delivery::Shared,
                    crate::bindings::types::Delivery::Broadcast => Delivery::Broadcast,
                },
                addressed: s.addressed,
            });
        }
        self.bus.subscribe(&Subscriber {
            instance: spec.id.clone(),
            group: SYSTEM_TOPIC.into(),
            topic: SYSTEM_TOPIC.into(),
            delivery: Delivery::Broadcast,
            addressed: false,
        });
        let ctx = InitContext {
            instance: spec.id.clone(),
            member: 0,
            params: spec.params,
            settings: spec.settings,
            snapshot: spec.snapshot,
        };
        self.spawned += 1;
        let slot = Slot::new(spec.id.clone(), self.spawned, spec.module.clone(), ctx);
        let c = match self
            .cohorts
            .iter()
            .position(|c| c.has_room_for(&spec.module))
        {
            Some(c) => c,
            None => {
                let seed = self.seed ^ crate::bus::fnv1a(spec.id.as_bytes());
                let capacity = spec.module.cohort();
                self.cohorts
                    .push(Cohort::new(spec.module, capacity, spec.id, seed));
                self.cohorts.len() - 1
            }
        };
        let engine = self.engine.clone();
        self.cohorts[c].join(&engine, slot);
        self.order_stale = true;
        for k in 0..self.cohorts[c].members.len() {
            self.apply((c, k));
        }
        Ok(())
    }

    /// Publish a message from outside (a data feed). If a receiving inbox is
    /// full, instances run until it has room: the feed is held back, nothing
    /// is dropped.
    pub fn publish(&mut self, message: Envelope) {
        let mut message = message;
        loop {
            match self.bus.publish(message) {
                Ok(()) => return,
                Err(BusError::Full { message: m, .. }) => {
                    message = *m;
                    if !self.round() {
                        self.bus.publish_overflowing(message);
                        return;
                    }
                }
                Err(e @ BusError::Refused { .. }) => {
                    tracing::warn!("{e}");
                    return;
                }
            }
        }
    }

    /// Tell every instance that the input has ended, at event time `time`.
    pub fn end_of_stream(&mut self, time: i64) {
        self.publish(Envelope {
            topic: SYSTEM_TOPIC.into(),
            key: String::new(),
            seq: 0,
            time,
            source: HOST_SUBSCRIBER.into(),
            body: Body::EndOfStream,
            trace: crate::message::Trace::now(),
        });
    }

    /// Run instances until every inbox and unsent queue is empty.
    pub fn run_until_idle(&mut self) {
        loop {
            if self.round() {
                continue;
            }
            // Nothing could run but some unsent queue is blocked: a cycle of full
            // inboxes. Break it by delivering one message over capacity.
            self.refresh_order();
            let blocked = self
                .order
                .iter()
                .copied()
                .find(|&at| !self.slot(at).unsent.is_empty());
            match blocked {
                Some(at) => {
                    if let Some(m) = self.slot_mut(at).unsent.pop_front() {
                        self.slot_mut(at).published += 1;
                        self.bus.publish_overflowing(m);
                    }
                }
                None => break,
            }
        }
        self.collect_host();
    }

    /// Messages on the topics the host subscribed to, since the last call.
    pub fn take_host_messages(&mut self) -> Vec<Arc<Envelope>> {
        self.collect_host();
        std::mem::take(&mut self.host_inbox)
    }

    /// A fresh snapshot of instance `id` (for a child to inherit), or its
    /// last good one if it cannot give one now.
    pub fn snapshot_of(&mut self, id: &str) -> Option<Snapshot> {
        let max = self.engine.limits().max_snapshot_bytes;
        let (c, k) = self.find(id)?;
        self.cohorts[c]
            .take_snapshot(k, max)
            .or_else(|| self.cohorts[c].members[k].last_snapshot.clone())
    }

    /// Retire instance `id`: it receives nothing new; every instance
    /// (itself included) is told on the system topic, so that what it holds
    /// is closed (e.g. the trader closes its positions); it handles what is
    /// left in its inbox and then stops. False if there is no such running
    /// instance.
    pub fn retire(&mut self, id: &str, time: i64) -> bool {
        let Some(at) = self.find(id) else {
            return false;
        };
        if matches!(
            self.slot(at).state,
            InstanceState::Retiring | InstanceState::Retired | InstanceState::Quarantined { .. }
        ) {
            return false;
        }
        // Unsubscribe from everything but the system topic, so the
        // retirement notice still reaches it.
        self.bus.unsubscribe(id);
        self.bus.subscribe(&Subscriber {
            instance: id.to_string(),
            group: SYSTEM_TOPIC.into(),
            topic: SYSTEM_TOPIC.into(),
            delivery: Delivery::Broadcast,
            addressed: false,
        });
        self.slot_mut(at).state = InstanceState::Retiring;
        self.publish(Envelope {
            topic: SYSTEM_TOPIC.into(),
            key: id.to_string(),
            seq: 0,
            time,
            source: HOST_SUBSCRIBER.into(),
            body: Body::Retired(id.to_string()),
            trace: crate::message::Trace::now(),
        });
        true
    }

    /// Acknowledge the host's messages only when told
    /// ([`Runtime::ack_host_messages`]), e.g. once they are recorded.
    pub fn manual_host_acks(&mut self) {
        self.manual_host_acks = true;
    }

    /// Acknowledge every host message taken so far (with manual host acks).
    pub fn ack_host_messages(&mut self) {
        let n = std::mem::take(&mut self.host_unacked);
        if n > 0 {
            self.bus.ack(HOST_SUBSCRIBER, n);
        }
    }

    /// Run instance `id` on new code, `module`, keeping its id, its
    /// parameters, its counters and its inbox: what waits for it is handled
    /// by the new code, in order, so per-key order holds across the switch.
    /// The new code starts from the old one's snapshot; if it refuses that
    /// snapshot (a state it does not know), it starts fresh and the outcome
    /// says why. Call it between rounds, when nothing is in flight.
    pub fn upgrade(&mut self, id: &str, module: Arc<Module>) -> Result<Upgraded, UpgradeError> {
        self.running(id)?;
        let snapshot = self.snapshot_of(id);
        self.upgrade_from(id, module, snapshot)
    }

    /// [`Runtime::upgrade`] from a given `snapshot` (e.g. the one the old
    /// code left at a switch, to go back to it), also for an instance that
    /// its current code got quarantined: a rollback takes it back.
    pub fn upgrade_from(
        &mut self,
        id: &str,
        module: Arc<Module>,
        snapshot: Option<Snapshot>,
    ) -> Result<Upgraded, UpgradeError> {
        let at = self
            .find(id)
            .ok_or_else(|| UpgradeError::NoSuchInstance(id.to_string()))?;
        if matches!(
            self.slot(at).state,
            InstanceState::Retiring | InstanceState::Retired
        ) {
            return Err(UpgradeError::NotRunning {
                id: id.to_string(),
                state: self.slot(at).state.to_string(),
            });
        }
        let old = self
            .detach(id)
            .ok_or_else(|| UpgradeError::NoSuchInstance(id.to_string()))?;
        let spec = |snapshot| InstanceSpec {
            id: id.to_string(),
            module: module.clone(),
            params: old.ctx.params.clone(),
            settings: old.ctx.settings.clone(),
            snapshot,
        };
        let from_snapshot = snapshot.is_some();
        self.spawn(spec(snapshot))?;
        let mut outcome = Upgraded::FromSnapshot;
        if let Some(at) = self.find(id)
            && !self.slot(at).started
        {
            let why = self
                .slot(at)
                .last_error
                .clone()
                .unwrap_or_else(|| "it did not start".into());
            if !from_snapshot {
                outcome = Upgraded::Failed(why);
            } else {
                self.detach(id);
                self.spawn(spec(None))?;
                outcome = match self.find(id).map(|at| self.slot(at).started) {
                    Some(true) => Upgraded::Fresh(why),
                    _ => Upgraded::Failed(why),
                };
            }
        } else if !from_snapshot {
            outcome = Upgraded::Fresh("the old code gave no snapshot".into());
        }
        if let Some(at) = self.find(id) {
            self.slot_mut(at).carry_over(old);
            self.order_stale = true;
        }
        Ok(outcome)
    }

    /// Start instance `id` on `module` with the parameters and settings of
    /// instance `like`, from `like`'s snapshot (a canary of new code beside
    /// the instance it may replace). `Fresh` with the reason if `module`
    /// refuses that snapshot.
    pub fn spawn_like(
        &mut self,
        id: &str,
        like: &str,
        module: Arc<Module>,
    ) -> Result<Upgraded, UpgradeError> {
        self.running(like)?;
        let snapshot = self.snapshot_of(like);
        let at = self
            .find(like)
            .ok_or_else(|| UpgradeError::NoSuchInstance(like.to_string()))?;
        let ctx = &self.slot(at).ctx;
        let spec = |snapshot| InstanceSpec {
            id: id.to_string(),
            module: module.clone(),
            params: ctx.params.clone(),
            settings: ctx.settings.clone(),
            snapshot,
        };
        let from_snapshot = snapshot.is_some();
        let (with, without) = (spec(snapshot), spec(None));
        self.spawn(with)?;
        match self.find(id).map(|at| self.slot(at).started) {
            Some(true) if from_snapshot => Ok(Upgraded::FromSnapshot),
            Some(true) => Ok(Upgraded::Fresh("the old code gave no snapshot".into())),
            None | Some(false) if !from_snapshot => Ok(Upgraded::Failed(
                self.find(id)
                    .and_then(|at| self.slot(at).last_error.clone())
                    .unwrap_or_else(|| "it did not start".into()),
            )),
            _ => {
                let why = self
                    .find(id)
                    .and_then(|at| self.slot(at).last_error.clone())
                    .unwrap_or_else(|| "it did not start".into());
                self.detach(id);
                self.spawn(without)?;
                Ok(match self.find(id).map(|at| self.slot(at).started) {
                    Some(true) => Upgraded::Fresh(why),
                    _ => Upgraded::Failed(why),
                })
            }
        }
    }

    /// Instance `id` runs or restarts: it can be given new code.
    fn running(&self, id: &str) -> Result<(), UpgradeError> {
        let at = self
            .find(id)
            .ok_or_else(|| UpgradeError::NoSuchInstance(id.to_string()))?;
        match &self.slot(at).state {
            InstanceState::Running | InstanceState::Restarting => Ok(()),
            other => Err(UpgradeError::NotRunning {
                id: id.to_string(),
                state: other.to_string(),
            }),
        }
    }

    /// Let instance `id` take no message at or past bus position `at`
    /// (`None`: no longer hold it): it handles what came before and then
    /// waits, with the first message past the hold kept for whatever code
    /// it runs next ([`Runtime::upgrade`] hands it over, in order). This
    /// is how daemons switch code at one point of the streams. False if
    /// there is no such instance.
    pub fn hold(&mut self, id: &str, at: Option<u64>) -> bool {
        let Some(at_slot) = self.find(id) else {
            return false;
        };
        let slot = self.slot_mut(at_slot);
        slot.hold = at;
        if at.is_none()
            && let Some(m) = slot.held.take()
        {
            slot.pending.push_back(m);
        }
        true
    }

    /// Instance `id` has handled everything before its hold and waits at
    /// it with the first message past it, so a switch there loses and
    /// repeats nothing.
    pub fn at_hold(&self, id: &str) -> bool {
        self.find(id).is_some_and(|at| {
            let s = self.slot(at);
            s.hold.is_some() && s.pending.is_empty() && s.held.is_some()
        })
    }

    /// Instance `id` has handled every message of its shared deliveries
    /// before bus position `at`: the bus has read past it and the instance
    /// has nothing left to handle. So an instance whose keys go elsewhere
    /// from `at` (a canary at its end) can stop there, even when no
    /// message of its own comes past it to wait at a hold.
    pub fn drained_to(&self, id: &str, at: u64) -> bool {
        self.find(id)
            .is_some_and(|slot| self.slot(slot).pending.is_empty() && self.bus.passed(id, at))
    }

    /// The code instance `id` runs, and its traps on that code so far.
    pub fn code_of(&self, id: &str) -> Option<(&Arc<Module>, u64)> {
        self.find(id).map(|at| {
            let s = self.slot(at);
            (&s.module, s.code_traps)
        })
    }

    /// The running (or restarting) instances whose code has digest
    /// `digest`, in spawn order.
    pub fn instances_of(&self, digest: &str) -> Vec<String> {
        let mut found: Vec<(u64, String)> = self
            .cohorts
            .iter()
            .flat_map(|c| c.members.iter())
            .filter(|s| {
                s.module.digest() == digest
                    && matches!(s.state, InstanceState::Running | InstanceState::Restarting)
            })
            .map(|s| (s.order, s.id.clone()))
            .collect();
        found.sort();
        found.into_iter().map(|(_, id)| id).collect()
    }

    /// The quarantined instances whose code has digest `digest`, in spawn
    /// order: what a rollback takes back at once, since they handle
    /// nothing.
    pub fn quarantined_of(&self, digest: &str) -> Vec<String> {
        let mut found: Vec<(u64, String)> = self
            .cohorts
            .iter()
            .flat_map(|c| c.members.iter())
            .filter(|s| s.module.digest() == digest && s.quarantined())
            .map(|s| (s.order, s.id.clone()))
            .collect();
        found.sort();
        found.into_iter().map(|(_, id)| id).collect()
    }

    /// Take instance `id` out of its cohort and off its subscriptions,
    /// keeping its inbox on the bus; its slot.
    fn detach(&mut self, id: &str) -> Option<Slot> {
        let (c, k) = self.find(id)?;
        let slot = self.cohorts[c].take_member(k);
        if self.cohorts[c].members.is_empty() {
            self.cohorts.remove(c);
        }
        self.order_stale = true;
        self.bus.unsubscribe(id);
        Some(slot)
    }

    /// Stop instance `id` and forget it, because it now runs elsewhere:
    /// nothing is acknowledged for it, so its new home takes over what it
    /// had not finished. It may be spawned here again later. False if there
    /// is no such instance.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some((c, k)) = self.find(id) else {
            return false;
        };
        if self.cohorts[c].remove(k) {
            self.cohorts.remove(c);
        }
        self.order_stale = true;
        self.bus.release(id);
        true
    }

    /// The bus, mutably (for a backend's own controls).
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// The state of instance `id` and its last error.
    pub fn state_of(&self, id: &str) -> Option<(InstanceState, Option<String>)> {
        self.find(id).map(|at| {
            let s = self.slot(at);
            (s.state.clone(), s.last_error.clone())
        })
    }

    /// Totals over every instance.
    pub fn stats(&self) -> RuntimeStats {
        let mut stats = RuntimeStats::default();
        for s in self.cohorts.iter().flat_map(|c| c.members.iter()) {
            stats.calls += s.calls;
            stats.failures += s.failures.values().sum::<u64>();
            stats.traps += s.traps;
            stats.restarts += s.restarts;
            stats.quarantines += u64::from(s.quarantined());
        }
        stats
    }

    /// The bus.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// A report per instance, in spawn order.
    pub fn instances(&self) -> Vec<InstanceReport> {
        self.in_spawn_order()
            .into_iter()
            .map(|at| {
                let s = self.slot(at);
                InstanceReport {
                    id: s.id.clone(),
                    module: s.module.info().name.clone(),
                    role: s.module.info().role.clone(),
                    cohort: self.cohorts[at.0].tag.clone(),
                    params: s
                        .ctx
                        .params
                        .iter()
                        .map(|p| (p.name.clone(), crate::genes::value_f64(&p.value)))
                        .collect(),
                    state: s.state.clone(),
                    received: s.received,
                    calls: s.calls,
                    busy_micros: s.busy.as_secs_f64() * 1e6,
                    fuel: s.fuel,
                    micros_per_message: if s.received == 0 {
                        0.0
                    } else {
                        s.busy.as_secs_f64() * 1e6 / s.received as f64
                    },
                    failures: s.failures.clone(),
                    restarts: s.restarts,
                    costs: s.costs,
                    published: s.published,
                    refused_publishes: s.refused,
                    last_error: s.last_error.clone(),
                }
            })
            .collect()
    }

    /// One round; whether anything happened.
    fn round(&mut self) -> bool {
        // A remote bus sends last round's publishes and fetches what waits.
        let mut progressed = self.bus.pump();
        // 1. Take work.
        for c in 0..self.cohorts.len() {
            let cohort = &mut self.cohorts[c];
            cohort.resting = self.options.restarts == Restarts::Aside && cohort.backing_off();
            for k in 0..self.cohorts[c].members.len() {
                progressed |= self.take_work((c, k));
            }
        }
        self.collect_host();
        let ready: Vec<bool> = self.cohorts.iter().map(Cohort::is_ready).collect();
        let count = ready.iter().filter(|r| **r).count();
        if count == 0 {
            return progressed;
        }
        // 2. Handle it, each cohort in its own sandbox.
        let engine = &*self.engine;
        match &self.pool {
            Some(pool) if count >= self.options.parallel_min => work_in_parallel(
                &mut self.cohorts,
                engine,
                pool,
                self.options.restarts,
                self.options.per_call,
            ),
            _ => {
                for (cohort, _) in self.cohorts.iter_mut().zip(&ready).filter(|(_, r)| **r) {
                    cohort.work(engine, self.options.restarts, self.options.per_call);
                }
            }
        }
        // 3. Publish the results in spawn order.
        self.refresh_order();
        let order = std::mem::take(&mut self.order);
        for &at in &order {
            if ready[at.0] {
                self.apply(at);
            }
        }
        self.order = order;
        self.collect_host();
        true
    }

    /// Step 1 of a round for one instance: send what it has unsent, let a
    /// quarantined one's inbox go, stop a drained retiring one, and take
    /// what waits for it. Whether anything moved.
    fn take_work(&mut self, at: At) -> bool {
        let (moved, clear) = self.flush(at);
        if !clear {
            return moved;
        }
        if self.slot(at).quarantined() {
            return moved | self.dead_letter_inbox(at);
        }
        let (c, k) = at;
        let slot = &self.cohorts[c].members[k];
        if slot.state == InstanceState::Retired {
            return moved;
        }
        if slot.state == InstanceState::Retiring
            && slot.pending.is_empty()
            && self.bus.depth(&slot.id) == 0
        {
            // Drained: stop it and free its seat.
            let id = slot.id.clone();
            self.cohorts[c].members[k].state = InstanceState::Retired;
            self.cohorts[c].vacate(k);
            self.bus.unsubscribe(&id);
            return true;
        }
        if self.cohorts[c].resting {
            return moved;
        }
        let per_round = self.options.per_round;
        let slot = &mut self.cohorts[c].members[k];
        while slot.pending.len() < per_round && slot.held.is_none() {
            match self.bus.poll(&slot.id) {
                Some(m) if slot.hold.is_some_and(|at| m.seq >= at) => slot.held = Some(m),
                Some(m) => slot.pending.push_back(m),
                None => break,
            }
        }
        moved
    }

    /// Turn instance `at`'s outcomes into unsent messages, dead letters and
    /// log lines; tell the bus about a quarantine; flush.
    fn apply(&mut self, at: At) {
        let outcomes = std::mem::take(&mut self.slot_mut(at).outcomes);
        for outcome in outcomes {
            match outcome {
                Outcome::Handled {
                    time,
                    input,
                    staged,
                } => {
                    let slot = self.slot_mut(at);
                    let now = (!staged.is_empty()).then(std::time::SystemTime::now);
                    for (index, s) in staged.into_iter().enumerate() {
                        slot.unsent.push_back(Envelope {
                            topic: s.topic,
                            key: s.key,
                            seq: 0,
                            time,
                            source: slot.id.clone(),
                            body: s.body,
                            trace: crate::message::Trace {
                                published_at: now,
                                origin: Some(crate::message::Origin {
                                    topic: input.0.clone(),
                                    seq: input.1,
                                    index: u32::try_from(index).unwrap_or(u32::MAX),
                                }),
                            },
                        });
                    }
                }
                Outcome::Failed { message, error } => {
                    let id = &self.slot(at).id;
                    tracing::warn!(instance = %id, kind = error.kind(), "call failed: {error}");
                    if let Some(envelope) = message {
                        self.bus.dead_letter(DeadLetter {
                            instance: id.clone(),
                            envelope,
                            reason: error.to_string(),
                        });
                    }
                }
            }
        }
        let slot = self.slot_mut(at);
        if slot.quarantined() && !slot.quarantine_applied {
            slot.quarantine_applied = true;
            if let InstanceState::Quarantined { reason } = &slot.state {
                tracing::error!(instance = %slot.id, "quarantined: {reason}");
            }
            let id = slot.id.clone();
            self.bus.unsubscribe(&id);
            let slot = &mut self.cohorts[at.0].members[at.1];
            while let Some(envelope) = slot.pending.pop_front() {
                slot.received += 1;
                slot.unacked += 1;
                self.bus.dead_letter(DeadLetter {
                    instance: id.clone(),
                    envelope,
                    reason: "instance quarantined".into(),
                });
            }
            self.dead_letter_inbox(at);
        }
        self.flush(at);
    }

    fn collect_host(&mut self) {
        let mut taken = 0;
        while let Some(m) = self.bus.poll(HOST_SUBSCRIBER) {
            self.host_inbox.push(m);
            taken += 1;
        }
        if self.manual_host_acks {
            self.host_unacked += taken;
        } else if taken > 0 {
            self.bus.ack(HOST_SUBSCRIBER, taken);
        }
    }

    /// Move the unsent queue to the bus while receivers have room. Returns
    /// (moved anything, unsent queue now empty).
    fn flush(&mut self, (c, k): At) -> (bool, bool) {
        let mut moved = false;
        let slot = &mut self.cohorts[c].members[k];
        while let Some(m) = slot.unsent.pop_front() {
            match self.bus.publish(m) {
                Ok(()) => {
                    slot.published += 1;
                    moved = true;
                }
                Err(BusError::Full { message, .. }) => {
                    slot.unsent.push_front(*message);
                    return (moved, false);
                }
                Err(e @ BusError::Refused { .. }) => {
                    slot.refused += 1;
                    slot.last_error = Some(e.to_string());
                    tracing::warn!(instance = %slot.id, "{e}");
                }
            }
        }
        // Everything the handled messages produced is on the bus: they may
        // be acknowledged.
        if slot.unacked > 0 {
            self.bus.ack(&slot.id, slot.unacked);
            slot.unacked = 0;
        }
        (moved, true)
    }

    /// Dead-letter whatever waits for quarantined instance `at`; whether
    /// there was any.
    fn dead_letter_inbox(&mut self, at: At) -> bool {
        let id = self.slot(at).id.clone();
        let mut any = false;
        let mut taken = 0;
        while let Some(envelope) = self.bus.poll(&id) {
            any = true;
            taken += 1;
            self.slot_mut(at).received += 1;
            self.bus.dead_letter(DeadLetter {
                instance: id.clone(),
                envelope,
                reason: "instance quarantined".into(),
            });
        }
        self.bus.ack(&id, taken);
        any
    }
}

/// Let the ready cohorts work, split into contiguous chunks of about equal
/// work, one per thread; the calling thread takes the first chunk, so no
/// thread sits idle while another competes for its core.
fn work_in_parallel(
    cohorts: &mut [Cohort],
    engine: &Engine,
    pool: &rayon::ThreadPool,
    restarts: Restarts,
    per_call: usize,
) {
    let parts = pool.current_num_threads() + 1;
    let ready = cohorts.iter().filter(|c| c.is_ready()).count();
    let per_part = ready.div_ceil(parts).max(1);
    let mut chunks: Vec<&mut [Cohort]> = Vec::with_capacity(parts);
    let mut rest = cohorts;
    while !rest.is_empty() {
        let mut seen = 0;
        let mut cut = rest.len();
        for (i, c) in rest.iter().enumerate() {
            if c.is_ready() {
                seen += 1;
                if seen == per_part {
                    cut = i + 1;
                    break;
                }
            }
        }
        let (chunk, tail) = rest.split_at_mut(cut);
        chunks.push(chunk);
        rest = tail;
    }
    let work = |chunk: &mut [Cohort]| {
        for c in chunk.iter_mut().filter(|c| c.is_ready()) {
            c.work(engine, restarts, per_call);
        }
    };
    pool.in_place_scope(|scope| {
        let mut chunks = chunks.into_iter();
        let first = chunks.next();
        for chunk in chunks {
            scope.spawn(move |_| work(chunk));
        }
        if let Some(chunk) = first {
            work(chunk);
        }
    });
}
