//! Instances as actors, driven by one deterministic scheduler.
//!
//! Each instance owns its sandbox and an inbox on the bus. The scheduler
//! visits instances in the order they were spawned and lets each handle what
//! is waiting; what a call publishes goes to the instance's outbox and on to
//! the bus when the receivers have room (backpressure: a producer whose
//! outbox cannot drain is not run). With the memory bus the same inputs give
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

use crate::bindings::types::{Body, InitContext, Param, Setting};
use crate::bus::{Bus, BusError, DeadLetter, Delivery, MemoryBus, Subscriber};
use crate::engine::{Engine, Module};
use crate::sandbox::{CallError, Sandbox};
use crate::Envelope;

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

struct Slot {
    id: String,
    module: Arc<Module>,
    ctx: InitContext,
    seed: u64,
    sandbox: Option<Sandbox>,
    state: InstanceState,
    /// Consecutive failures, for the backoff.
    attempt: u32,
    not_before: Option<Instant>,
    recent_failures: VecDeque<Instant>,
    outbox: VecDeque<Envelope>,
    received: u64,
    calls: u64,
    failures: BTreeMap<String, u64>,
    restarts: u64,
    published: u64,
    refused_before: u64,
    last_error: Option<String>,
}

/// The scheduler and supervisor of all instances on one bus.
pub struct Runtime<B: Bus = MemoryBus> {
    engine: Arc<Engine>,
    bus: B,
    slots: Vec<Slot>,
    seed: u64,
    stats: RuntimeStats,
    host_inbox: Vec<Arc<Envelope>>,
}

impl<B: Bus> Runtime<B> {
    /// A runtime with no instances. `seed` makes the instances' WASI random
    /// streams repeatable.
    pub fn new(engine: Arc<Engine>, bus: B, seed: u64) -> Self {
        Runtime {
            engine,
            bus,
            slots: Vec::new(),
            seed,
            stats: RuntimeStats::default(),
            host_inbox: Vec::new(),
        }
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
        let seed = self.seed ^ fnv1a(spec.id.as_bytes());
        self.slots.push(Slot {
            ctx: InitContext {
                instance: spec.id.clone(),
                params: spec.params,
                settings: spec.settings,
            },
            id: spec.id,
            module: spec.module,
            seed,
            sandbox: None,
            state: InstanceState::Restarting,
            attempt: 0,
            not_before: None,
            recent_failures: VecDeque::new(),
            outbox: VecDeque::new(),
            received: 0,
            calls: 0,
            failures: BTreeMap::new(),
            restarts: 0,
            published: 0,
            refused_before: 0,
            last_error: None,
        });
        let i = self.slots.len() - 1;
        self.ensure_running(i);
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

    /// Run instances until every inbox and outbox is empty.
    pub fn run_until_idle(&mut self) {
        loop {
            if self.round() {
                continue;
            }
            // Nothing could run but some outbox is blocked: a cycle of full
            // inboxes. Break it by delivering one message over capacity.
            match self.slots.iter().position(|s| !s.outbox.is_empty()) {
                Some(i) => {
                    if let Some(m) = self.slots[i].outbox.pop_front() {
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

    /// Totals.
    pub fn stats(&self) -> RuntimeStats {
        self.stats
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
                    .map(|p| (p.name.clone(), crate::population::value_f64(&p.value)))
                    .collect(),
                state: s.state.clone(),
                received: s.received,
                calls: s.calls,
                failures: s.failures.clone(),
                restarts: s.restarts,
                published: s.published,
                refused_publishes: s.refused_before + s.sandbox.as_ref().map_or(0, |b| b.counters().refused_publishes),
                last_error: s.last_error.clone(),
            })
            .collect()
    }

    /// One pass over every instance; whether anything happened.
    fn round(&mut self) -> bool {
        let mut progressed = false;
        for i in 0..self.slots.len() {
            progressed |= self.process(i);
            self.collect_host();
        }
        progressed
    }

    fn collect_host(&mut self) {
        while let Some(m) = self.bus.poll(HOST_SUBSCRIBER) {
            self.host_inbox.push(m);
        }
    }

    /// Move the outbox to the bus while receivers have room. Returns
    /// (moved anything, outbox now empty).
    fn flush(&mut self, i: usize) -> (bool, bool) {
        let mut moved = false;
        while let Some(m) = self.slots[i].outbox.pop_front() {
            match self.bus.publish(m) {
                Ok(()) => {
                    self.slots[i].published += 1;
                    moved = true;
                }
                Err(BusError::Full { message, .. }) => {
                    self.slots[i].outbox.push_front(*message);
                    return (moved, false);
                }
            }
        }
        (moved, true)
    }

    /// Let instance `i` handle what waits for it; whether anything happened.
    fn process(&mut self, i: usize) -> bool {
        let mut progressed = false;
        loop {
            let (moved, clear) = self.flush(i);
            progressed |= moved;
            if !clear {
                return progressed;
            }
            if self.bus.depth(&self.slots[i].id) == 0 {
                return progressed;
            }
            if !self.ensure_running(i) {
                if matches!(self.slots[i].state, InstanceState::Quarantined { .. }) {
                    self.dead_letter_inbox(i);
                }
                return progressed;
            }
            let Some(message) = self.bus.poll(&self.slots[i].id) else {
                return progressed;
            };
            progressed = true;
            let slot = &mut self.slots[i];
            slot.received += 1;
            let Some(sandbox) = slot.sandbox.as_mut() else {
                continue;
            };
            match sandbox.handle(&message) {
                Ok(staged) => {
                    slot.calls += 1;
                    slot.attempt = 0;
                    self.stats.calls += 1;
                    for s in staged {
                        slot.outbox.push_back(Envelope {
                            topic: s.topic,
                            key: s.key,
                            seq: 0,
                            time: message.time,
                            source: slot.id.clone(),
                            body: s.body,
                        });
                    }
                }
                Err(error) => self.fail(i, error, Some(message)),
            }
        }
    }

    /// Make sure instance `i` has a live, initialised sandbox, waiting out
    /// its backoff first. False if it is quarantined or failed to start.
    fn ensure_running(&mut self, i: usize) -> bool {
        let slot = &mut self.slots[i];
        if matches!(slot.state, InstanceState::Quarantined { .. }) {
            return false;
        }
        if slot.sandbox.is_some() {
            return true;
        }
        // Waiting here, in turn, keeps the order of work independent of
        // timing, so a replay with failures still repeats.
        if let Some(at) = slot.not_before.take() {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
        let started = self
            .engine
            .instantiate(&slot.module, &slot.id, slot.seed)
            .and_then(|mut sandbox| sandbox.init(&slot.ctx).map(|()| sandbox));
        match started {
            Ok(sandbox) => {
                if slot.calls > 0 || slot.attempt > 0 {
                    slot.restarts += 1;
                    self.stats.restarts += 1;
                }
                slot.sandbox = Some(sandbox);
                slot.state = InstanceState::Running;
                true
            }
            Err(CallError::Module(reason)) => {
                // The module refused its parameters: trying again cannot help.
                let error = CallError::Module(format!("init refused its parameters: {reason}"));
                self.record_failure(i, &error);
                self.quarantine(i, error.to_string());
                false
            }
            Err(error) => {
                let error = match error {
                    CallError::Trap { detail } => CallError::Trap { detail: format!("during start: {detail}") },
                    other => other,
                };
                self.fail(i, error, None);
                false
            }
        }
    }

    fn record_failure(&mut self, i: usize, error: &CallError) {
        let slot = &mut self.slots[i];
        *slot.failures.entry(error.kind().to_string()).or_default() += 1;
        slot.last_error = Some(error.to_string());
        self.stats.failures += 1;
        if error.kills_instance() {
            self.stats.traps += 1;
        }
        tracing::warn!(instance = %slot.id, kind = error.kind(), "call failed: {error}");
    }

    fn fail(&mut self, i: usize, error: CallError, message: Option<Arc<Envelope>>) {
        self.record_failure(i, &error);
        let limits = self.engine.limits().clone();
        let slot = &mut self.slots[i];
        if let Some(envelope) = message {
            self.bus.dead_letter(DeadLetter {
                instance: slot.id.clone(),
                envelope,
                reason: error.to_string(),
            });
        }
        if error.kills_instance() {
            if let Some(old) = slot.sandbox.take() {
                slot.refused_before += old.counters().refused_publishes;
            }
            slot.state = InstanceState::Restarting;
            slot.attempt = slot.attempt.saturating_add(1);
            slot.not_before = Some(Instant::now() + limits.backoff(slot.attempt));
        }
        let now = Instant::now();
        slot.recent_failures.push_back(now);
        while slot
            .recent_failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > limits.failure_window)
        {
            slot.recent_failures.pop_front();
        }
        if slot.recent_failures.len() >= limits.max_failures as usize {
            let reason = format!(
                "{} failures within {:?}; last: {error}",
                slot.recent_failures.len(),
                limits.failure_window
            );
            self.quarantine(i, reason);
        }
    }

    fn quarantine(&mut self, i: usize, reason: String) {
        let slot = &mut self.slots[i];
        if matches!(slot.state, InstanceState::Quarantined { .. }) {
            return;
        }
        tracing::error!(instance = %slot.id, "quarantined: {reason}");
        if let Some(old) = slot.sandbox.take() {
            slot.refused_before += old.counters().refused_publishes;
        }
        slot.state = InstanceState::Quarantined { reason };
        self.stats.quarantines += 1;
        self.bus.unsubscribe(&slot.id);
        self.dead_letter_inbox(i);
    }

    fn dead_letter_inbox(&mut self, i: usize) {
        let id = self.slots[i].id.clone();
        while let Some(envelope) = self.bus.poll(&id) {
            self.slots[i].received += 1;
            self.bus.dead_letter(DeadLetter {
                instance: id.clone(),
                envelope,
                reason: "instance quarantined".into(),
            });
        }
    }
}

/// FNV-1a, for per-instance seeds that do not depend on the platform.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
