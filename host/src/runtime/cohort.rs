//! A cohort: one sandbox and the variants (members) it carries.
//!
//! Every instance lives in a cohort; a module that does not declare
//! `info.cohort` above 1, or a pipeline that does not ask for more, gives
//! cohorts of one, so there is one mechanism for both.
//!
//! Invariants:
//! - fitness, lineage, failures, quarantine and retirement are per member
//!   ([`Slot`]); the sandbox, its backoff and its restarts are the cohort's;
//! - a member holds a seat (its `member` number in the WIT) from its start
//!   until it retires or is quarantined, and the guest is told `leave` when
//!   it gives the seat up, so the guest's members are the seated, started
//!   ones;
//! - each member handles its own messages in the order of its inbox; a
//!   message every started member has next goes once for all of them, which
//!   changes what a call costs and nothing of what it does;
//! - a trap restarts the whole cohort (every member from its last
//!   snapshot) and hands the call's messages again one message and one
//!   member at a time, so only the message that traps fails, and only for
//!   the member it trapped in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{InstanceState, Restarts};
use crate::Envelope;
use crate::bindings::types::{InitContext, Snapshot};
use crate::engine::{Engine, Module};
use crate::limits::Limits;
use crate::sandbox::{CallError, Handled, Parcel, Sandbox};

/// What happened to one message (or one start attempt) during a round.
pub(super) enum Outcome {
    /// Handled; these were published (at the message's event time).
    Handled {
        time: i64,
        /// The input's topic and sequence number (its identity on the bus).
        input: (String, u64),
        staged: Vec<crate::sandbox::Staged>,
    },
    /// Failed; the message (if any) becomes a dead letter.
    Failed {
        message: Option<Arc<Envelope>>,
        error: CallError,
    },
}

/// One variant: its identity, its inbox and what happened to it.
pub(super) struct Slot {
    pub(super) id: String,
    /// When it was spawned: results are published in this order.
    pub(super) order: u64,
    pub(super) module: Arc<Module>,
    /// Its parameters; `ctx.member` is its seat while it has one.
    pub(super) ctx: InitContext,
    pub(super) seated: bool,
    /// Started (init succeeded) in the cohort's current sandbox.
    pub(super) started: bool,
    pub(super) state: InstanceState,
    /// Set once the bus has been told about a quarantine.
    pub(super) quarantine_applied: bool,
    /// The last snapshot the instance gave (restarts begin from it).
    pub(super) last_snapshot: Option<Snapshot>,
    /// Successful calls since the last snapshot.
    pub(super) since_snapshot: u64,
    /// Snapshots refused for their size.
    pub(super) oversized_snapshots: u64,
    pub(super) recent_failures: VecDeque<Instant>,
    /// Messages taken from the inbox, not yet handled.
    pub(super) pending: VecDeque<Arc<Envelope>>,
    /// Take nothing from the inbox at or past this position (a switch of
    /// code due there): the first such message waits in `held`.
    pub(super) hold: Option<u64>,
    /// The message that reached the hold, kept for the code after it.
    pub(super) held: Option<Arc<Envelope>>,
    pub(super) outcomes: Vec<Outcome>,
    pub(super) unsent: VecDeque<Envelope>,
    pub(super) received: u64,
    /// Messages taken from `pending` and finished with (handled or
    /// dead-lettered), not yet acknowledged to the bus.
    pub(super) unacked: usize,
    pub(super) calls: u64,
    pub(super) busy: Duration,
    pub(super) fuel: u64,
    /// Time and fuel per message, bucketed for the metrics.
    pub(super) costs: crate::runtime::costs::Costs,
    pub(super) failures: BTreeMap<String, u64>,
    pub(super) traps: u64,
    /// Traps on the code it runs now (not carried over to new code).
    pub(super) code_traps: u64,
    pub(super) restarts: u64,
    pub(super) started_once: bool,
    pub(super) published: u64,
    pub(super) refused: u64,
    pub(super) last_error: Option<String>,
}

impl Slot {
    /// A variant not yet started.
    pub(super) fn new(id: String, order: u64, module: Arc<Module>, ctx: InitContext) -> Self {
        Slot {
            last_snapshot: ctx.snapshot.clone(),
            id,
            order,
            module,
            ctx,
            seated: false,
            started: false,
            state: InstanceState::Restarting,
            quarantine_applied: false,
            since_snapshot: 0,
            oversized_snapshots: 0,
            recent_failures: VecDeque::new(),
            pending: VecDeque::new(),
            hold: None,
            held: None,
            outcomes: Vec::new(),
            unsent: VecDeque::new(),
            received: 0,
            unacked: 0,
            calls: 0,
            busy: Duration::ZERO,
            fuel: 0,
            costs: crate::runtime::costs::Costs::default(),
            failures: BTreeMap::new(),
            traps: 0,
            code_traps: 0,
            restarts: 0,
            started_once: false,
            published: 0,
            refused: 0,
            last_error: None,
        }
    }

    pub(super) fn quarantined(&self) -> bool {
        matches!(self.state, InstanceState::Quarantined { .. })
    }

    /// Take over what `old` (this instance on its former code) leaves: its
    /// place in the publishing order, what it had taken and not handled,
    /// what it had not acknowledged, and its counters, so the instance's
    /// report and metrics go on as one.
    pub(super) fn carry_over(&mut self, old: Slot) {
        self.order = old.order;
        let mut pending = old.pending;
        pending.extend(old.held);
        pending.extend(self.pending.drain(..));
        self.pending = pending;
        self.unacked += old.unacked;
        self.received += old.received;
        self.calls += old.calls;
        self.busy += old.busy;
        self.fuel += old.fuel;
        self.costs.add(&old.costs);
        for (cause, n) in old.failures {
            *self.failures.entry(cause).or_default() += n;
        }
        self.traps += old.traps;
        self.restarts += old.restarts;
        self.published += old.published;
        self.refused += old.refused;
        let mut unsent = old.unsent;
        unsent.extend(self.unsent.drain(..));
        self.unsent = unsent;
    }

    /// Seated and neither quarantined nor retired: it should be started.
    fn live(&self) -> bool {
        self.seated && !self.quarantined() && self.state != InstanceState::Retired
    }

    /// May take part in this call: started, and nothing of its own waits
    /// to be sent (a producer that cannot drain does not run).
    fn eligible(&self) -> bool {
        self.started && self.live() && self.unsent.is_empty()
    }

    /// Count a failure; quarantine when the window fills. Returns whether
    /// it is now quarantined.
    fn count_failure(&mut self, error: &CallError, limits: &Limits) -> bool {
        *self.failures.entry(error.kind().to_string()).or_default() += 1;
        self.last_error = Some(error.to_string());
        if error.kills_instance() {
            self.traps += 1;
            self.code_traps += 1;
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
        if self.quarantined() {
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
            return true;
        }
        false
    }
}

/// A message taken for a call: for one member (its position), or for every
/// started member.
struct Take {
    to: Option<usize>,
    message: Arc<Envelope>,
}

/// One sandbox and the members it carries.
pub(super) struct Cohort {
    pub(super) module: Arc<Module>,
    /// Most members it may seat.
    capacity: usize,
    /// The sandbox's name in logs and the seed of its WASI randomness: its
    /// first member's id.
    pub(super) tag: String,
    seed: u64,
    pub(super) sandbox: Option<Sandbox>,
    /// Consecutive failed starts and traps, for the backoff.
    attempt: u32,
    pub(super) not_before: Option<Instant>,
    /// Sitting this round out while its backoff runs ([`Restarts::Aside`]).
    pub(super) resting: bool,
    /// Answers still to take one at a time, after a call trapped.
    solo: usize,
    /// The variants, in the order they joined.
    pub(super) members: Vec<Slot>,
    /// Position in `members` of the member on each seat.
    seats: Vec<Option<usize>>,
}

impl Cohort {
    /// An empty cohort of `module` for up to `capacity` members.
    pub(super) fn new(module: Arc<Module>, capacity: u32, tag: String, seed: u64) -> Self {
        Cohort {
            module,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX).max(1),
            tag,
            seed,
            sandbox: None,
            attempt: 0,
            not_before: None,
            resting: false,
            solo: 0,
            members: Vec::new(),
            seats: Vec::new(),
        }
    }

    /// Whether a variant of `module` may join.
    pub(super) fn has_room_for(&self, module: &Module) -> bool {
        self.capacity > 1
            && self.module.digest() == module.digest()
            && self.seats.iter().filter(|s| s.is_some()).count() < self.capacity
    }

    /// Seat `slot` (the lowest free seat) and start it if the sandbox runs.
    pub(super) fn join(&mut self, engine: &Engine, mut slot: Slot) {
        let seat = match self.seats.iter().position(Option::is_none) {
            Some(seat) => seat,
            None => {
                self.seats.push(None);
                self.seats.len() - 1
            }
        };
        slot.ctx.member = u32::try_from(seat).unwrap_or(u32::MAX);
        slot.seated = true;
        self.members.push(slot);
        self.seats[seat] = Some(self.members.len() - 1);
        if self.sandbox.is_some() {
            self.start_member(engine, self.members.len() - 1);
        } else {
            self.ensure_running(engine);
        }
    }

    /// Take member `k` out, its slot with it (it is given new code).
    pub(super) fn take_member(&mut self, k: usize) -> Slot {
        self.vacate(k);
        let slot = self.members.remove(k);
        for seat in self.seats.iter_mut() {
            *seat = match *seat {
                Some(p) if p > k => Some(p - 1),
                other => other,
            };
        }
        slot
    }

    /// Forget member `k` (it leaves for another host): it gives up its
    /// seat, and its slot goes. Returns whether the cohort is now empty.
    pub(super) fn remove(&mut self, k: usize) -> bool {
        self.take_member(k);
        self.members.is_empty()
    }

    /// Member `k` gives up its seat: the guest forgets it. When no member
    /// is seated any longer, the sandbox goes (its memory is freed).
    pub(super) fn vacate(&mut self, k: usize) {
        let slot = &mut self.members[k];
        if !slot.seated {
            return;
        }
        slot.seated = false;
        let was_started = std::mem::replace(&mut slot.started, false);
        let member = slot.ctx.member;
        if let Some(seat) = self
            .seats
            .get_mut(usize::try_from(member).unwrap_or(usize::MAX))
        {
            *seat = None;
        }
        if self.seats.iter().all(Option::is_none) {
            self.sandbox = None;
            return;
        }
        if was_started
            && let Some(sandbox) = self.sandbox.as_mut()
            && let Err(error) = sandbox.leave(member)
        {
            tracing::warn!(instance = %self.tag, member, "leave failed: {error}; the cohort restarts");
            self.bury_sandbox();
        }
    }

    /// Whether the sandbox is gone and its backoff still runs.
    pub(super) fn backing_off(&self) -> bool {
        self.sandbox.is_none() && self.not_before.is_some_and(|at| at > Instant::now())
    }

    /// Whether some member has a message to handle and may run.
    pub(super) fn is_ready(&self) -> bool {
        !self.resting
            && self
                .members
                .iter()
                .any(|s| !s.pending.is_empty() && s.unsent.is_empty() && s.live())
    }

    /// Handle the members' pending messages, in order, until done, or
    /// until the cohort cannot start: in calls of up to `per_call`
    /// messages, or one message for one member at a time after a call
    /// trapped, until the message that traps is found. Touches nothing
    /// outside the cohort, so cohorts can work in parallel.
    pub(super) fn work(&mut self, engine: &Engine, restarts: Restarts, per_call: usize) {
        loop {
            if !self.is_ready() {
                return;
            }
            if restarts == Restarts::Aside && self.backing_off() {
                // Died in this round: the rest waits for later rounds, after
                // the backoff, instead of holding this one up.
                return;
            }
            if !self.ensure_running(engine) {
                return;
            }
            let size = if self.solo > 0 { 1 } else { per_call.max(1) };
            let takes = self.take(size);
            if takes.is_empty() {
                return;
            }
            self.call(engine, &takes);
        }
    }

    /// One call with `takes`; its answers accounted to the members.
    fn call(&mut self, engine: &Engine, takes: &[Take]) {
        let _span =
            tracing::debug_span!("handle", instance = %self.tag, messages = takes.len()).entered();
        let Some(sandbox) = self.sandbox.as_mut() else {
            return;
        };
        let members = &self.members;
        let alone = self.capacity == 1;
        let parcels: Vec<Parcel<'_>> = takes
            .iter()
            .map(|t| Parcel {
                message: &t.message,
                // Outside cohorts a message is always for "every" member.
                member: t.to.filter(|_| !alone).map(|k| members[k].ctx.member),
            })
            .collect();
        let expected = sandbox.answers_for(&parcels);
        let clock = Instant::now();
        let result = sandbox.handle(&parcels);
        let busy = clock.elapsed();
        let fuel = sandbox.last_fuel();
        drop(parcels);
        let answers = match result {
            Ok(answers) => answers,
            Err(error) if expected > 1 => {
                // A trap somewhere in the call: the instance is gone and no
                // message of it counts as handled. The restarted cohort
                // takes them one at a time, so the one that traps fails
                // alone and its neighbours are handled once.
                tracing::debug!(instance = %self.tag, "a call of {expected} trapped ({error}); retrying one at a time");
                self.share_costs(takes, busy, fuel);
                self.solo = expected;
                self.bury_sandbox();
                return;
            }
            Err(error) => {
                let Some(k) = takes[0]
                    .to
                    .or_else(|| self.members.iter().position(|s| s.started))
                else {
                    return;
                };
                self.charge(k, busy, fuel, 1);
                if let Some(message) = self.members[k].pending.pop_front() {
                    self.finish(engine, k, message, Err(error));
                }
                return;
            }
        };
        let n = u32::try_from(answers.len()).unwrap_or(u32::MAX).max(1);
        for answer in answers {
            let Some(k) = self.position(answer.member) else {
                continue;
            };
            self.charge(k, busy, fuel, n);
            if self.members[k].quarantined() {
                // Quarantined earlier in this call: what is left of its
                // messages is dead-lettered with it.
                continue;
            }
            if let Some(message) = self.members[k].pending.pop_front() {
                self.finish(engine, k, message, answer.handled);
            }
        }
    }

    /// Member `k`'s share of a call: `busy` and `fuel` split over `n` answers.
    fn charge(&mut self, k: usize, busy: Duration, fuel: u64, n: u32) {
        let slot = &mut self.members[k];
        slot.busy += busy / n;
        slot.fuel += fuel / u64::from(n);
        slot.costs
            .observe((busy / n).as_secs_f64(), fuel / u64::from(n));
    }

    /// The cost of a call that trapped, spread over the members it carried.
    fn share_costs(&mut self, takes: &[Take], busy: Duration, fuel: u64) {
        let mut who: Vec<usize> = Vec::new();
        for t in takes {
            match t.to {
                Some(k) => who.push(k),
                None => who.extend((0..self.members.len()).filter(|&k| self.members[k].started)),
            }
        }
        let n = u32::try_from(who.len()).unwrap_or(u32::MAX).max(1);
        for k in who {
            self.charge(k, busy, fuel, n);
        }
    }

    /// Position in `members` of the member on seat `member`.
    fn position(&self, member: u32) -> Option<usize> {
        let seat = usize::try_from(member).ok()?;
        *self.seats.get(seat)?
    }

    /// Up to `size` messages for the next call, in each member's inbox
    /// order. A message that every started member has next goes once, for
    /// all (not after a trap, when each goes alone); otherwise a member's
    /// own message goes first, the rarest first, so that the messages they
    /// share line up again.
    fn take(&self, size: usize) -> Vec<Take> {
        let merge = self.solo == 0;
        if let [only] = self.members.as_slice() {
            if !only.eligible() {
                return Vec::new();
            }
            let to = if merge { None } else { Some(0) };
            return only
                .pending
                .iter()
                .take(size)
                .map(|m| Take {
                    to,
                    message: m.clone(),
                })
                .collect();
        }
        let started = self.members.iter().filter(|s| s.started).count();
        let eligible: Vec<usize> = (0..self.members.len())
            .filter(|&k| self.members[k].eligible())
            .collect();
        let mut cursor = vec![0usize; self.members.len()];
        let mut takes = Vec::new();
        while takes.len() < size {
            let fronts: Vec<(usize, &Arc<Envelope>)> = eligible
                .iter()
                .filter_map(|&k| self.members[k].pending.get(cursor[k]).map(|m| (k, m)))
                .collect();
            let Some(&(_, first)) = fronts.first() else {
                break;
            };
            if merge && fronts.len() == started && fronts.iter().all(|(_, m)| Arc::ptr_eq(m, first))
            {
                takes.push(Take {
                    to: None,
                    message: first.clone(),
                });
                for (k, _) in &fronts {
                    cursor[*k] += 1;
                }
                continue;
            }
            let mut counts: HashMap<*const Envelope, usize> = HashMap::new();
            for (_, m) in &fronts {
                *counts.entry(Arc::as_ptr(m)).or_default() += 1;
            }
            let (k, message) = fronts
                .iter()
                .min_by_key(|(k, m)| (counts.get(&Arc::as_ptr(m)).copied(), *k))
                .map(|(k, m)| (*k, (*m).clone()))
                .unwrap_or((fronts[0].0, first.clone()));
            takes.push(Take {
                to: Some(k),
                message,
            });
            cursor[k] += 1;
        }
        takes
    }

    /// Account for member `k`'s handling of `message`: what it published,
    /// or its failure.
    fn finish(&mut self, engine: &Engine, k: usize, message: Arc<Envelope>, handled: Handled) {
        self.solo = self.solo.saturating_sub(1);
        let slot = &mut self.members[k];
        slot.received += 1;
        slot.unacked += 1;
        match handled {
            Ok(staged) => {
                slot.calls += 1;
                self.attempt = 0;
                slot.since_snapshot += 1;
                let every = engine.limits().snapshot_every;
                if !staged.is_empty() {
                    slot.outcomes.push(Outcome::Handled {
                        time: message.time,
                        input: (message.topic.clone(), message.seq),
                        staged,
                    });
                }
                if every > 0 && slot.since_snapshot >= every {
                    self.take_snapshot(k, engine.limits().max_snapshot_bytes);
                }
            }
            Err(error) => {
                if matches!(error, CallError::Refused { .. }) {
                    slot.refused += 1;
                }
                self.fail(k, &error, engine.limits());
                self.members[k].outcomes.push(Outcome::Failed {
                    message: Some(message),
                    error,
                });
            }
        }
    }

    /// Member `k` failed with `error`: counted against it; the sandbox dies
    /// if the failure killed it; a member quarantined gives up its seat.
    fn fail(&mut self, k: usize, error: &CallError, limits: &Limits) {
        let quarantined = self.members[k].count_failure(error, limits);
        if error.kills_instance() {
            self.bury_sandbox();
            self.attempt = self.attempt.saturating_add(1);
            self.not_before = Some(Instant::now() + limits.backoff(self.attempt));
        }
        if quarantined {
            self.vacate(k);
        }
    }

    /// Drop a sandbox that died; the next work restarts every member (from
    /// its last good snapshot).
    pub(super) fn bury_sandbox(&mut self) {
        self.sandbox = None;
        for slot in &mut self.members {
            slot.started = false;
            if slot.state == InstanceState::Running {
                slot.state = InstanceState::Restarting;
            }
        }
    }

    /// Make sure the cohort has a live sandbox with every live member
    /// started, waiting out its backoff first. False if it has none.
    pub(super) fn ensure_running(&mut self, engine: &Engine) -> bool {
        if !self.members.iter().any(Slot::live) {
            return false;
        }
        if self.sandbox.is_none() {
            // Waiting here, in turn, keeps the order of work independent of
            // timing, so a replay with failures still repeats.
            if let Some(at) = self.not_before.take() {
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
            }
            match engine.instantiate(&self.module, &self.tag, self.seed) {
                Ok(sandbox) => self.sandbox = Some(sandbox),
                Err(error) => {
                    let error = CallError::Trap {
                        detail: format!("during start: {error}"),
                    };
                    for k in 0..self.members.len() {
                        if self.members[k].live() {
                            self.members[k].started_once = true;
                            self.fail(k, &error, engine.limits());
                            self.members[k].outcomes.push(Outcome::Failed {
                                message: None,
                                error: error.clone(),
                            });
                        }
                    }
                    return false;
                }
            }
        }
        for k in 0..self.members.len() {
            let slot = &self.members[k];
            if slot.live()
                && !slot.started
                && !self.start_member(engine, k)
                && self.sandbox.is_none()
            {
                return false;
            }
        }
        self.sandbox.is_some()
    }

    /// Init member `k` in the running sandbox, from its last good snapshot.
    /// False if it did not start.
    fn start_member(&mut self, engine: &Engine, k: usize) -> bool {
        let Some(sandbox) = self.sandbox.as_mut() else {
            return false;
        };
        let slot = &mut self.members[k];
        slot.ctx.snapshot = slot.last_snapshot.clone();
        match sandbox.init(&slot.ctx) {
            Ok(()) => {
                if slot.started_once {
                    slot.restarts += 1;
                }
                slot.started_once = true;
                slot.started = true;
                if slot.state == InstanceState::Restarting {
                    slot.state = InstanceState::Running;
                }
                true
            }
            Err(CallError::Module(reason)) => {
                // The module refused its parameters: trying again cannot help.
                let error = CallError::Module(format!("init refused its parameters: {reason}"));
                slot.count_failure(&error, engine.limits());
                slot.state = InstanceState::Quarantined {
                    reason: error.to_string(),
                };
                slot.outcomes.push(Outcome::Failed {
                    message: None,
                    error,
                });
                self.vacate(k);
                false
            }
            Err(error) => {
                let error = match error {
                    CallError::Trap { detail } => CallError::Trap {
                        detail: format!("during start: {detail}"),
                    },
                    other => other,
                };
                slot.started_once = true;
                self.fail(k, &error, engine.limits());
                self.members[k].outcomes.push(Outcome::Failed {
                    message: None,
                    error,
                });
                false
            }
        }
    }

    /// Ask member `k` for its snapshot and keep it if it fits.
    pub(super) fn take_snapshot(&mut self, k: usize, max_bytes: usize) -> Option<Snapshot> {
        let slot = &mut self.members[k];
        slot.since_snapshot = 0;
        if !slot.started {
            return None;
        }
        let sandbox = self.sandbox.as_mut()?;
        match sandbox.snapshot(slot.ctx.member) {
            Ok(Some(snap)) if snap.data.len() <= max_bytes => {
                slot.last_snapshot = Some(snap.clone());
                Some(snap)
            }
            Ok(Some(snap)) => {
                slot.oversized_snapshots += 1;
                tracing::warn!(instance = %slot.id, size = snap.data.len(), cap = max_bytes, "snapshot refused: too large");
                None
            }
            Ok(None) => None,
            Err(e) => {
                // A failed snapshot call is a failed call like any other.
                tracing::warn!(instance = %slot.id, "snapshot failed: {e}");
                None
            }
        }
    }
}
