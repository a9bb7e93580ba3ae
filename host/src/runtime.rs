//! Instances as actors, driven by one deterministic scheduler.
//!
//! Each instance owns its sandbox and an inbox on the bus. The scheduler
//! visits instances in the order they were spawned and lets each handle what
//! is waiting; what a call publishes goes to the instance's unsent queue and on to
//! the bus when the receivers have room (backpressure: a producer whose
//! unsent queue cannot drain is not run). With the memory bus the same inputs give
//! the same deliveries in the same order, so a replay repeats exactly.
//!
//! A failed call fails that message only: it is dead-lettered with its
//! reason, the failure is logged and counted, a dead instance is
//! re-instantiated after a backoff, and an instance that fails
//! `limits.max_failures` times within `limits.failure_window` is
//! quarantined: unsubscribed, its inbox dead-lettered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::Envelope;
use crate::bindings::types::{Body, InitContext, Param, Setting, Snapshot};
use crate::bus::{Bus, BusError, DeadLetter, Delivery, MemoryBus, Subscriber};
use crate::engine::{Engine, Module};
use crate::limits::Limits;
use crate::sandbox::{CallError, Handled, Sandbox};

/// The topic every instance hears, subscribed or not (end of stream).
pub const SYSTEM_TOPIC: &str = "$system";
/// The subscriber name under which the host itself reads topics.
pub const HOST_SUBSCRIBER: &str = "$host";

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

/// What happened to one message (or one start attempt) during a round.
enum Outcome {
    /// Handled; these were published (at the message's event time).
    Handled {
        time: i64,
        staged: Vec<crate::sandbox::Staged>,
    },
    /// Failed; the message (if any) becomes a dead letter.
    Failed {
        message: Option<Arc<Envelope>>,
        error: CallError,
    },
}

struct Slot {
    id: String,
    module: Arc<Module>,
    ctx: InitContext,
    seed: u64,
    sandbox: Option<Sandbox>,
    state: InstanceState,
    /// Set once the bus has been told about a quarantine.
    quarantine_applied: bool,
    /// The last snapshot the instance gave (restarts begin from it).
    last_snapshot: Option<Snapshot>,
    /// Successful calls since the last snapshot.
    since_snapshot: u64,
    /// Snapshots refused for their size.
    oversized_snapshots: u64,
    /// Consecutive failures, for the backoff.
    attempt: u32,
    not_before: Option<Instant>,
    /// Sitting this round out while its backoff runs ([`Restarts::Aside`]).
    resting: bool,
    /// Messages still to hand over one at a time, after a batch trapped.
    solo: usize,
    recent_failures: VecDeque<Instant>,
    /// Messages taken from the inbox, not yet handled.
    pending: VecDeque<Arc<Envelope>>,
    outcomes: Vec<Outcome>,
    unsent: VecDeque<Envelope>,
    received: u64,
    /// Messages taken from `pending` and finished with (handled or
    /// dead-lettered), not yet acknowledged to the bus.
    unacked: usize,
    calls: u64,
    busy: std::time::Duration,
    fuel: u64,
    failures: BTreeMap<String, u64>,
    traps: u64,
    restarts: u64,
    started_once: bool,
    published: u64,
    refused_before: u64,
    last_error: Option<String>,
}

impl Slot {
    /// Handle the pending messages, in order, until done, quarantined, or
    /// unable to start: all of them in one call (a batch), or one at a time
    /// after a batch trapped until the message that traps is found. Touches
    /// nothing outside the slot, so slots can work in parallel.
    fn work(&mut self, engine: &Engine, restarts: Restarts, per_call: usize) {
        while !self.pending.is_empty() {
            if restarts == Restarts::Aside && self.backing_off() {
                // Died in this round: the rest waits for later rounds, after
                // the backoff, instead of holding this one up.
                return;
            }
            if !self.ensure_running(engine) {
                return;
            }
            let size = if self.solo > 0 {
                1
            } else {
                self.pending.len().min(per_call.max(1))
            };
            let batch: Vec<Envelope> = self
                .pending
                .iter()
                .take(size)
                .map(|m| Envelope::clone(m))
                .collect();
            let Some(sandbox) = self.sandbox.as_mut() else {
                return;
            };
            let started = Instant::now();
            let result = sandbox.handle(&batch);
            self.busy += started.elapsed();
            self.fuel += sandbox.last_fuel();
            let results = match result {
                Ok(results) => results,
                Err(error) if batch.len() > 1 => {
                    // A trap somewhere in the batch: the instance is gone
                    // and no message of it counts as handled. The restarted
                    // instance takes them one at a time, so the one that
                    // traps fails alone and its neighbours are handled once.
                    tracing::debug!(instance = %self.id, "a batch of {} trapped ({error}); retrying one at a time", batch.len());
                    self.solo = batch.len();
                    self.bury_sandbox();
                    continue;
                }
                Err(error) => vec![Err(error)],
            };
            for handled in results {
                let Some(message) = self.pending.pop_front() else {
                    return;
                };
                if self.finish(engine, message, handled) {
                    return;
                }
            }
        }
    }

    /// Account for one message handled: what it published, or its failure.
    /// Returns whether the slot is now quarantined.
    fn finish(&mut self, engine: &Engine, message: Arc<Envelope>, handled: Handled) -> bool {
        self.solo = self.solo.saturating_sub(1);
        self.received += 1;
        self.unacked += 1;
        match handled {
            Ok(staged) => {
                self.calls += 1;
                self.attempt = 0;
                self.since_snapshot += 1;
                let every = engine.limits().snapshot_every;
                if every > 0 && self.since_snapshot >= every {
                    self.take_snapshot(engine.limits().max_snapshot_bytes);
                }
                if !staged.is_empty() {
                    self.outcomes.push(Outcome::Handled {
                        time: message.time,
                        staged,
                    });
                }
                false
            }
            Err(error) => {
                let quarantined = self.note_failure(&error, engine.limits());
                self.outcomes.push(Outcome::Failed {
                    message: Some(message),
                    error,
                });
                quarantined
            }
        }
    }

    /// Drop a sandbox that died, keeping its counters; the next message
    /// restarts the instance (from its last good snapshot).
    fn bury_sandbox(&mut self) {
        if let Some(old) = self.sandbox.take() {
            self.refused_before += old.counters().refused_publishes;
        }
        if !matches!(self.state, InstanceState::Quarantined { .. }) {
            self.state = InstanceState::Restarting;
        }
    }

    /// Whether the slot's sandbox is gone and its backoff still runs.
    fn backing_off(&self) -> bool {
        self.sandbox.is_none() && self.not_before.is_some_and(|at| at > Instant::now())
    }

    /// Make sure the slot has a live, initialised sandbox, waiting out its
    /// backoff first. False if it is quarantined or failed to start.
    fn ensure_running(&mut self, engine: &Engine) -> bool {
        if matches!(self.state, InstanceState::Quarantined { .. }) {
            return false;
        }
        if self.sandbox.is_some() {
            return true;
        }
        // Waiting here, in turn, keeps the order of work independent of
        // timing, so a replay with failures still repeats.
        if let Some(at) = self.not_before.take() {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
        // A restart begins from the last good snapshot.
        self.ctx.snapshot = self.last_snapshot.clone();
        let started = engine
            .instantiate(&self.module, &self.id, self.seed)
            .and_then(|mut sandbox| sandbox.init(&self.ctx).map(|()| sandbox));
        match started {
            Ok(sandbox) => {
                if self.started_once {
                    self.restarts += 1;
                }
                self.started_once = true;
                self.sandbox = Some(sandbox);
                if self.state == InstanceState::Restarting {
                    self.state = InstanceState::Running;
                }
                true
            }
            Err(CallError::Module(reason)) => {
                // The module refused its parameters: trying again cannot help.
                let error = CallError::Module(format!("init refused its parameters: {reason}"));
                self.note_failure(&error, engine.limits());
                self.state = InstanceState::Quarantined {
                    reason: error.to_string(),
                };
                self.outcomes.push(Outcome::Failed {
                    message: None,
                    error,
                });
                false
            }
            Err(error) => {
                let error = match error {
                    CallError::Trap { detail } => CallError::Trap {
                        detail: format!("during start: {detail}"),
                    },
                    other => other,
                };
                self.started_once = true;
                self.note_failure(&error, engine.limits());
                self.outcomes.push(Outcome::Failed {
                    message: None,
                    error,
                });
                false
            }
        }
    }

    /// Count a failure; kill the sandbox if the failure did; quarantine when
    /// the window fills. Returns whether the slot is now quarantined.
    fn note_failure(&mut self, error: &CallError, limits: &Limits) -> bool {
        *self.failures.entry(error.kind().to_string()).or_default() += 1;
        self.last_error = Some(error.to_string());
        if error.kills_instance() {
            self.traps += 1;
            self.bury_sandbox();
            self.attempt = self.attempt.saturating_add(1);
            self.not_before = Some(Instant::now() + limits.backoff(self.attempt));
        }
        let now = Instant::now();
        self.recent_failures.push_back(now);
        while self
            .recent_failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > limits.failure_window)
        {
            self.recent_failures.pop_front();
        }
        if matches!(self.state, InstanceState::Quarantined { .. }) {
            return true;
        }
        if self.recent_failures.len() >= limits.max_failures as usize {
            self.state = InstanceState::Quarantined {
                reason: format!(
                    "{} failures within {:?}; last: {error}",
                    self.recent_failures.len(),
                    limits.failure_window
                ),
            };
            if let Some(old) = self.sandbox.take() {
                self.refused_before += old.counters().refused_publishes;
            }
            return true;
        }
        false
    }

    fn quarantined(&self) -> bool {
        matches!(self.state, InstanceState::Quarantined { .. })
    }

    /// Ask the instance for its snapshot and keep it if it fits.
    fn take_snapshot(&mut self, max_bytes: usize) -> Option<Snapshot> {
        self.since_snapshot = 0;
        let sandbox = self.sandbox.as_mut()?;
        match sandbox.snapshot() {
            Ok(Some(snap)) if snap.data.len() <= max_bytes => {
                self.last_snapshot = Some(snap.clone());
                Some(snap)
            }
            Ok(Some(snap)) => {
                self.oversized_snapshots += 1;
                tracing::warn!(instance = %self.id, size = snap.data.len(), cap = max_bytes, "snapshot refused: too large");
                None
            }
            Ok(None) => None,
            Err(e) => {
                // A failed snapshot call is a failed call like any other.
                tracing::warn!(instance = %self.id, "snapshot failed: {e}");
                None
            }
        }
    }
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
/// there are many, each in its own sandbox; (3) what they published goes to
/// the bus in spawn order. The result of a round therefore does not depend
/// on the number of threads or on timing.
pub struct Runtime<B: Bus = MemoryBus> {
    engine: Arc<Engine>,
    bus: B,
    slots: Vec<Slot>,
    seed: u64,
    host_inbox: Vec<Arc<Envelope>>,
    /// Host messages taken but not yet acknowledged (manual host acks).
    host_unacked: usize,
    manual_host_acks: bool,
    pool: Option<rayon::ThreadPool>,
    options: RuntimeOptions,
}

impl<B: Bus> Runtime<B> {
    /// A runtime with no instances. `seed` makes the instances' WASI random
    /// streams repeatable. Instances run on the caller's thread; see
    /// [`Runtime::with_threads`].
    pub fn new(engine: Arc<Engine>, bus: B, seed: u64) -> Self {
        Runtime {
            engine,
            bus,
            slots: Vec::new(),
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
        self.slots
            .iter()
            .filter(|s| s.sandbox.is_none())
            .filter_map(|s| s.not_before)
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

    /// Add an instance: subscribe it as its module declares and start it.
    /// A start that fails is handled like any failure (backoff, then
    /// quarantine), so this only fails on a bad id.
    pub fn spawn(&mut self, spec: InstanceSpec) -> Result<(), SpawnError> {
        if spec.id.is_empty() || spec.id.starts_with('$') {
            return Err(SpawnError::ReservedId(spec.id));
        }
        if self.slots.iter().any(|s| s.id == spec.id) {
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
        let seed = self.seed ^ crate::bus::fnv1a(spec.id.as_bytes());
        self.slots.push(Slot {
            ctx: InitContext {
                instance: spec.id.clone(),
                params: spec.params,
                settings: spec.settings,
                snapshot: spec.snapshot.clone(),
            },
            last_snapshot: spec.snapshot,
            since_snapshot: 0,
            oversized_snapshots: 0,
            id: spec.id,
            module: spec.module,
            seed,
            sandbox: None,
            state: InstanceState::Restarting,
            quarantine_applied: false,
            attempt: 0,
            not_before: None,
            resting: false,
            solo: 0,
            recent_failures: VecDeque::new(),
            pending: VecDeque::new(),
            outcomes: Vec::new(),
            unsent: VecDeque::new(),
            received: 0,
            unacked: 0,
            calls: 0,
            busy: std::time::Duration::ZERO,
            fuel: 0,
            failures: BTreeMap::new(),
            traps: 0,
            restarts: 0,
            started_once: false,
            published: 0,
            refused_before: 0,
            last_error: None,
        });
        let i = self.slots.len() - 1;
        let engine = self.engine.clone();
        self.slots[i].ensure_running(&engine);
        self.apply(i);
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
            match self.slots.iter().position(|s| !s.unsent.is_empty()) {
                Some(i) => {
                    if let Some(m) = self.slots[i].unsent.pop_front() {
                        self.slots[i].published += 1;
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
        let slot = self.slots.iter_mut().find(|s| s.id == id)?;
        slot.take_snapshot(max)
            .or_else(|| slot.last_snapshot.clone())
    }

    /// Retire instance `id`: it receives nothing new; every instance
    /// (itself included) is told on the system topic, so that what it holds
    /// is closed (e.g. the trader closes its positions); it handles what is
    /// left in its inbox and then stops. False if there is no such running
    /// instance.
    pub fn retire(&mut self, id: &str, time: i64) -> bool {
        let Some(i) = self.slots.iter().position(|s| s.id == id) else {
            return false;
        };
        if matches!(
            self.slots[i].state,
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
        self.slots[i].state = InstanceState::Retiring;
        self.publish(Envelope {
            topic: SYSTEM_TOPIC.into(),
            key: id.to_string(),
            seq: 0,
            time,
            source: HOST_SUBSCRIBER.into(),
            body: Body::Retired(id.to_string()),
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

    /// Stop instance `id` and forget it, because it now runs elsewhere:
    /// nothing is acknowledged for it, so its new home takes over what it
    /// had not finished. It may be spawned here again later. False if there
    /// is no such instance.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(i) = self.slots.iter().position(|s| s.id == id) else {
            return false;
        };
        self.slots.remove(i);
        self.bus.release(id);
        true
    }

    /// The bus, mutably (for a backend's own controls).
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// The state of instance `id` and its last error.
    pub fn state_of(&self, id: &str) -> Option<(InstanceState, Option<String>)> {
        self.slots
            .iter()
            .find(|s| s.id == id)
            .map(|s| (s.state.clone(), s.last_error.clone()))
    }

    /// Totals over every instance.
    pub fn stats(&self) -> RuntimeStats {
        let mut stats = RuntimeStats::default();
        for s in &self.slots {
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
        self.slots
            .iter()
            .map(|s| InstanceReport {
                id: s.id.clone(),
                module: s.module.info().name.clone(),
                role: s.module.info().role.clone(),
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
                published: s.published,
                refused_publishes: s.refused_before
                    + s.sandbox
                        .as_ref()
                        .map_or(0, |b| b.counters().refused_publishes),
                last_error: s.last_error.clone(),
            })
            .collect()
    }

    /// One round; whether anything happened.
    fn round(&mut self) -> bool {
        // A remote bus sends last round's publishes and fetches what waits.
        let mut progressed = self.bus.pump();
        let mut ready = Vec::new();
        // 1. Take work.
        for i in 0..self.slots.len() {
            let (moved, clear) = self.flush(i);
            progressed |= moved;
            if !clear {
                continue;
            }
            if self.slots[i].quarantined() {
                progressed |= self.dead_letter_inbox(i);
                continue;
            }
            if self.slots[i].state == InstanceState::Retired {
                continue;
            }
            let slot = &mut self.slots[i];
            if slot.state == InstanceState::Retiring
                && slot.pending.is_empty()
                && self.bus.depth(&slot.id) == 0
            {
                // Drained: stop it and free its memory.
                slot.state = InstanceState::Retired;
                slot.sandbox = None;
                self.bus.unsubscribe(&slot.id);
                progressed = true;
                continue;
            }
            slot.resting = self.options.restarts == Restarts::Aside && slot.backing_off();
            if slot.resting {
                continue;
            }
            while slot.pending.len() < self.options.per_round {
                match self.bus.poll(&slot.id) {
                    Some(m) => slot.pending.push_back(m),
                    None => break,
                }
            }
            if !slot.pending.is_empty() {
                ready.push(i);
            }
        }
        self.collect_host();
        if ready.is_empty() {
            return progressed;
        }
        // 2. Handle it, each slot in its own sandbox.
        let engine = &*self.engine;
        match &self.pool {
            Some(pool) if ready.len() >= self.options.parallel_min => work_in_parallel(
                &mut self.slots,
                engine,
                pool,
                self.options.restarts,
                self.options.per_call,
            ),
            _ => {
                for &i in &ready {
                    self.slots[i].work(engine, self.options.restarts, self.options.per_call);
                }
            }
        }
        // 3. Publish the results in spawn order.
        for &i in &ready {
            self.apply(i);
        }
        self.collect_host();
        true
    }

    /// Turn slot `i`'s outcomes into unsent messages, dead letters and log
    /// lines; tell the bus about a quarantine; flush.
    fn apply(&mut self, i: usize) {
        let outcomes = std::mem::take(&mut self.slots[i].outcomes);
        for outcome in outcomes {
            match outcome {
                Outcome::Handled { time, staged } => {
                    let slot = &mut self.slots[i];
                    for s in staged {
                        slot.unsent.push_back(Envelope {
                            topic: s.topic,
                            key: s.key,
                            seq: 0,
                            time,
                            source: slot.id.clone(),
                            body: s.body,
                        });
                    }
                }
                Outcome::Failed { message, error } => {
                    let id = &self.slots[i].id;
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
        let slot = &mut self.slots[i];
        if slot.quarantined() && !slot.quarantine_applied {
            slot.quarantine_applied = true;
            if let InstanceState::Quarantined { reason } = &slot.state {
                tracing::error!(instance = %slot.id, "quarantined: {reason}");
            }
            self.bus.unsubscribe(&slot.id);
            while let Some(envelope) = slot.pending.pop_front() {
                slot.received += 1;
                slot.unacked += 1;
                self.bus.dead_letter(DeadLetter {
                    instance: slot.id.clone(),
                    envelope,
                    reason: "instance quarantined".into(),
                });
            }
            self.dead_letter_inbox(i);
        }
        self.flush(i);
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
    fn flush(&mut self, i: usize) -> (bool, bool) {
        let mut moved = false;
        while let Some(m) = self.slots[i].unsent.pop_front() {
            match self.bus.publish(m) {
                Ok(()) => {
                    self.slots[i].published += 1;
                    moved = true;
                }
                Err(BusError::Full { message, .. }) => {
                    self.slots[i].unsent.push_front(*message);
                    return (moved, false);
                }
                Err(e @ BusError::Refused { .. }) => {
                    let slot = &mut self.slots[i];
                    slot.refused_before += 1;
                    slot.last_error = Some(e.to_string());
                    tracing::warn!(instance = %slot.id, "{e}");
                }
            }
        }
        // Everything the handled messages produced is on the bus: they may
        // be acknowledged.
        let slot = &mut self.slots[i];
        if slot.unacked > 0 {
            self.bus.ack(&slot.id, slot.unacked);
            slot.unacked = 0;
        }
        (moved, true)
    }

    /// Dead-letter whatever waits for quarantined slot `i`; whether there was any.
    fn dead_letter_inbox(&mut self, i: usize) -> bool {
        let id = self.slots[i].id.clone();
        let mut any = false;
        let mut taken = 0;
        while let Some(envelope) = self.bus.poll(&id) {
            any = true;
            taken += 1;
            self.slots[i].received += 1;
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

/// Whether a slot has work this round (see `Runtime::round`).
fn is_ready(slot: &Slot) -> bool {
    !slot.pending.is_empty() && slot.unsent.is_empty() && !slot.resting
}

/// Let the ready slots work, split into contiguous chunks of about equal
/// work, one per thread; the calling thread takes the first chunk, so no
/// thread sits idle while another competes for its core.
fn work_in_parallel(
    slots: &mut [Slot],
    engine: &Engine,
    pool: &rayon::ThreadPool,
    restarts: Restarts,
    per_call: usize,
) {
    let parts = pool.current_num_threads() + 1;
    let ready = slots.iter().filter(|s| is_ready(s)).count();
    let per_part = ready.div_ceil(parts).max(1);
    let mut chunks: Vec<&mut [Slot]> = Vec::with_capacity(parts);
    let mut rest = slots;
    while !rest.is_empty() {
        let mut seen = 0;
        let mut cut = rest.len();
        for (i, s) in rest.iter().enumerate() {
            if is_ready(s) {
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
    let work = |chunk: &mut [Slot]| {
        for s in chunk.iter_mut().filter(|s| is_ready(s)) {
            s.work(engine, restarts, per_call);
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
