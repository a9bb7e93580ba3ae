//! One module instance in its own store: the host functions it may call, the
//! limits on every call, and the classification of what went wrong.
//!
//! Invariants: the sandbox knows which cohort members the instance has
//! started (an `init` that succeeded and no `leave` since), so it knows how
//! many answers a message for every member must bring; and it keeps the
//! instance's name table, so a topic or publisher crosses into the guest as
//! a string once per instance life (or after the table is started again at
//! `limits.max_names`), and as a number on every message after that.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::GardenModule;
use crate::bindings::types::{self as wit, Body, InitContext, Level};
use crate::limits::Limits;
use crate::{Envelope, Info};

/// Why a call into a module failed. Each variant says what the module did
/// and, where it helps, what the module author can change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The call burned its whole fuel budget.
    #[error(
        "ran out of fuel ({fuel} units per call): the module computes too much per message or never stops; raise limits.fuel_per_call only if the work is legitimate"
    )]
    FuelExhausted {
        /// The budget per call.
        fuel: u64,
    },
    /// The call outlived the wall-clock deadline.
    #[error("exceeded the wall-clock deadline of {ms} ms per call")]
    DeadlineExceeded {
        /// The deadline in milliseconds.
        ms: u64,
    },
    /// The module tried to grow its memory past the cap.
    #[error(
        "memory limit: tried to hold {requested} bytes of linear memory (all its memories together), the cap is {cap} bytes"
    )]
    MemoryLimit {
        /// Bytes the module asked for.
        requested: usize,
        /// The cap in bytes.
        cap: usize,
    },
    /// The module's call stack overflowed (usually unbounded recursion).
    #[error("stack overflow: the module recursed too deeply")]
    StackOverflow,
    /// Handling one message sent more messages than allowed.
    #[error("publish flood: more than {cap} publishes for one message")]
    PublishLimit {
        /// The cap per call.
        cap: u32,
    },
    /// The module panicked (its panic message, as it logged it).
    #[error("module panicked: {message}")]
    Panic {
        /// The panic message.
        message: String,
    },
    /// Any other trap.
    #[error("module trapped: {detail}")]
    Trap {
        /// The trap and its backtrace, as wasmtime reported it.
        detail: String,
    },
    /// The module called a WASI function that would wait (sleep or poll);
    /// the host grants no waiting, so the call was stopped.
    #[error(
        "called {function}, which would wait: the host grants no waiting (a wait inside the host cannot be interrupted); remove the sleep or poll from the module"
    )]
    Wait {
        /// The WASI function.
        function: String,
    },
    /// The module returned an error for this message.
    #[error("module returned an error: {0}")]
    Module(String),
    /// The host refused a message the module sent while handling this one
    /// (an undeclared topic, or too large), so the handling fails.
    #[error("publish to `{topic}` refused: {reason}")]
    Refused {
        /// The topic it sent on.
        topic: String,
        /// Why, e.g. `TopicNotDeclared("x")` or `TooLarge(65536)`.
        reason: String,
    },
}

impl CallError {
    /// Whether the instance is dead after this failure and must be
    /// re-instantiated. A module's own error and a message whose outputs
    /// the host refused leave it usable: the call returned normally.
    pub fn kills_instance(&self) -> bool {
        !matches!(
            self,
            CallError::Module(_) | CallError::PublishLimit { .. } | CallError::Refused { .. }
        )
    }

    /// A short stable name for counting failures by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::FuelExhausted { .. } => "fuel",
            CallError::DeadlineExceeded { .. } => "deadline",
            CallError::MemoryLimit { .. } => "memory",
            CallError::StackOverflow => "stack",
            CallError::PublishLimit { .. } => "publish-flood",
            CallError::Panic { .. } => "panic",
            CallError::Trap { .. } => "trap",
            CallError::Wait { .. } => "wait",
            CallError::Module(_) => "module-error",
            CallError::Refused { .. } => "refused",
        }
    }
}

/// Errors the host raises inside a call to stop it; turned into [`CallError`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostTrap {
    #[error("memory limit: {requested} > {cap}")]
    Memory { requested: usize, cap: usize },
}

/// A message a module sent while handling a message (topic, key, body),
/// delivered only if that handling succeeded and the host accepted it.
pub type Staged = crate::bindings::types::Output;

/// What one message of a batch came to: what it sends, or why it failed.
pub type Handled = Result<Vec<Staged>, CallError>;

/// One message handed to an instance: for one member of its cohort, or for
/// every member it has started (`None`; an instance outside a cohort has
/// one member, 0).
#[derive(Debug, Clone, Copy)]
pub struct Parcel<'a> {
    /// The message.
    pub message: &'a Envelope,
    /// The member it is for; `None` for every member.
    pub member: Option<u32>,
}

impl<'a> Parcel<'a> {
    /// `message` for every member.
    pub fn every(message: &'a Envelope) -> Self {
        Parcel {
            message,
            member: None,
        }
    }
}

/// What one parcel came to for one member.
#[derive(Debug)]
pub struct Answer {
    /// Index of the parcel in the batch.
    pub parcel: usize,
    /// The member that handled it.
    pub member: u32,
    /// What it sends, or why it failed.
    pub handled: Handled,
}

/// Caps an instance's resources as a whole: the bytes of all its linear
/// memories together (a component may hold many core instances, each with
/// memories of its own), and how many instances, memories and tables its
/// store may create. Reports the attempt that broke the memory cap.
struct MemoryCap {
    cap: usize,
    /// Bytes of every memory of this store so far. wasmtime calls
    /// `memory_growing` when a memory is created (from 0) and when it grows,
    /// so the sum of `desired - current` is the instance's total.
    used: usize,
    instances: usize,
    memories: usize,
    tables: usize,
    table_elements: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.cap {
            return Err(wasmtime::Error::new(HostTrap::Memory {
                requested: total,
                cap: self.cap,
            }));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.memories
    }

    fn tables(&self) -> usize {
        self.tables
    }
}

/// Per-instance counters the host keeps across calls.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SandboxCounters {
    /// Publishes refused (undeclared topic or too large).
    pub refused_publishes: u64,
    /// Log lines dropped because a call exceeded `max_logs_per_call`.
    pub suppressed_logs: u64,
}

/// What the host functions see: the instance's identity, its declared topics
/// and the current call's staging area.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    instance: Arc<str>,
    logs: u32,
    max_logs: u32,
    max_log_bytes: usize,
    now: i64,
    last_panic: Option<String>,
    counters: SandboxCounters,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if matches!(level, Level::Error) && message.starts_with("panic: ") {
            self.last_panic = Some(truncate(
                &message["panic: ".len()..],
                self.max_log_bytes / 4,
            ));
        }
        self.logs += 1;
        if self.logs > self.max_logs {
            self.counters.suppressed_logs += 1;
            return Ok(());
        }
        let message = truncate(&message, self.max_log_bytes);
        let instance = &*self.instance;
        match level {
            Level::Trace => tracing::trace!(instance, "{message}"),
            Level::Debug => tracing::debug!(instance, "{message}"),
            Level::Info => tracing::info!(instance, "{message}"),
            Level::Warn => tracing::warn!(instance, "{message}"),
            Level::Error => tracing::error!(instance, "{message}"),
        }
        Ok(())
    }

    fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(self.now)
    }
}

impl crate::bindings::garden::pipeline::types::Host for HostState {}

/// Longest trap detail kept, bytes: the cause and four frames fit; what a
/// hostile module makes longer is cut, so it cannot flood logs or records.
const TRAP_DETAIL_MAX: usize = 1024;

/// The cause of a trap and the top of its wasm backtrace, without the
/// host's own Rust backtrace.
fn trap_detail(error: &wasmtime::Error) -> String {
    let cause = error.root_cause().to_string();
    let mut frames: Vec<String> = Vec::new();
    if let Some(bt) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        for frame in bt.frames().iter().take(4) {
            let name = frame.func_name().unwrap_or("<unknown>");
            frames.push(format!("{name} (function {})", frame.func_index()));
        }
    }
    let chain: Vec<String> = error.chain().skip(1).map(|c| c.to_string()).collect();
    let mut text = if chain.len() > 1 {
        chain.join(": ")
    } else {
        cause
    };
    if !frames.is_empty() {
        text.push_str("; at ");
        text.push_str(&frames.join(" <- "));
    }
    truncate(&text, TRAP_DETAIL_MAX)
}

/// Bytes a message occupies on the wire: its postcard encoding plus topic and key.
pub fn message_size(topic: &str, key: &str, body: &Body) -> usize {
    let body_len = postcard::experimental::serialized_size(body).unwrap_or(usize::MAX);
    body_len
        .saturating_add(topic.len())
        .saturating_add(key.len())
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A running instance of a module: its store, its bindings, its limits.
pub struct Sandbox {
    store: Store<HostState>,
    bindings: GardenModule,
    /// Topics the module declared it sends on.
    publishes: Arc<HashSet<String>>,
    max_publishes: usize,
    max_message_bytes: usize,
    fuel: u64,
    deadline_ticks: u64,
    deadline: Duration,
    last_fuel: u64,
    /// Members started and not left, in member order.
    members: BTreeSet<u32>,
    /// The instance's name table, as the guest holds it.
    names: FxHashMap<String, u32>,
    max_names: usize,
}

/// How to build a sandbox's store: identity, declared topics and limits.
pub(crate) struct SandboxSpec<'a> {
    pub instance: &'a str,
    pub publishes: Arc<HashSet<String>>,
    pub limits: &'a Limits,
    pub deadline_ticks: u64,
    /// Seed for the instance's WASI random streams, so replays repeat.
    pub random_seed: u64,
}

impl Sandbox {
    /// A store for one instance. WASI grants nothing: no files, sockets,
    /// environment, arguments or stdio; clocks read zero; randomness is a
    /// seeded stream.
    pub(crate) fn store(
        engine: &wasmtime::Engine,
        spec: &SandboxSpec<'_>,
    ) -> wasmtime::Result<Store<HostState>> {
        use rand::SeedableRng;
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(rand::rngs::ChaCha8Rng::seed_from_u64(spec.random_seed))
            .insecure_random(rand::rngs::ChaCha8Rng::seed_from_u64(
                spec.random_seed ^ 0x5eed,
            ))
            .insecure_random_seed(u128::from(spec.random_seed));
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryCap {
                cap: spec.limits.memory_bytes,
                used: 0,
                instances: as_count(spec.limits.max_core_instances),
                memories: as_count(spec.limits.max_memories),
                tables: as_count(spec.limits.max_tables),
                table_elements: spec.limits.max_table_elements,
            },
            instance: Arc::from(spec.instance),
            logs: 0,
            max_logs: spec.limits.max_logs_per_call,
            max_log_bytes: spec.limits.max_log_bytes,
            now: 0,
            last_panic: None,
            counters: SandboxCounters::default(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_trap();
        store.set_fuel(spec.limits.fuel_per_call)?;
        store.set_epoch_deadline(spec.deadline_ticks);
        Ok(store)
    }

    pub(crate) fn new(store: Store<HostState>, bindings: GardenModule, spec: &SandboxSpec) -> Self {
        Sandbox {
            store,
            bindings,
            publishes: spec.publishes.clone(),
            max_publishes: as_count(spec.limits.max_publishes_per_call),
            max_message_bytes: as_count(spec.limits.max_message_bytes),
            fuel: spec.limits.fuel_per_call,
            deadline_ticks: spec.deadline_ticks,
            deadline: spec.limits.deadline,
            last_fuel: 0,
            members: BTreeSet::new(),
            names: FxHashMap::default(),
            max_names: spec.limits.max_names.max(2),
        }
    }

    /// Counters kept by the host functions.
    pub fn counters(&self) -> SandboxCounters {
        self.store.data().counters
    }

    /// Fuel the latest call used: about one unit per Wasm instruction, a
    /// measure of its work that, unlike time, is the same on every machine.
    pub fn last_fuel(&self) -> u64 {
        self.last_fuel
    }

    /// Call `describe`.
    pub fn describe(&mut self) -> Result<Info, CallError> {
        self.guarded(0, |b, s| {
            b.garden_pipeline_module().call_describe(s).map(Ok)
        })
    }

    /// Call `save` for `member` (its snapshot).
    pub fn snapshot(
        &mut self,
        member: u32,
    ) -> Result<Option<crate::bindings::types::Snapshot>, CallError> {
        self.guarded(0, |b, s| {
            b.garden_pipeline_module().call_save(s, member).map(Ok)
        })
    }

    /// Call `init` for member `ctx.member`; on success it is started.
    pub fn init(&mut self, ctx: &InitContext) -> Result<(), CallError> {
        // Whatever the member held is replaced, even if init fails.
        self.members.remove(&ctx.member);
        self.guarded(0, |b, s| b.garden_pipeline_module().call_init(s, ctx))?;
        self.members.insert(ctx.member);
        Ok(())
    }

    /// Call `leave` for `member`: the instance forgets it.
    pub fn leave(&mut self, member: u32) -> Result<(), CallError> {
        self.members.remove(&member);
        self.guarded(0, |b, s| {
            b.garden_pipeline_module().call_leave(s, member).map(Ok)
        })
    }

    /// How many answers `batch` calls for: one per parcel for one member,
    /// one per started member for a parcel for every member.
    pub fn answers_for(&self, batch: &[Parcel<'_>]) -> usize {
        let every = self.members.len();
        batch
            .iter()
            .map(|p| if p.member.is_some() { 1 } else { every })
            .sum()
    }

    /// The members started and not left, in member order.
    pub fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.members.iter().copied()
    }

    /// Call `on-messages` with `batch`: per parcel and member it reached
    /// (a parcel for every member reaches each started member, in member
    /// order), what it sends (checked against the module's declared topics
    /// and the limits) or why it failed. `Err` when the call itself failed
    /// (a trap: the instance is dead and nothing of the batch counts as
    /// handled). Fuel and the deadline scale with the answers expected:
    /// each message for each member has the budget one call had.
    pub fn handle(&mut self, batch: &[Parcel<'_>]) -> Result<Vec<Answer>, CallError> {
        let every = self.members.len();
        let expected = self.answers_for(batch);
        let n = u64::try_from(expected).unwrap_or(u64::MAX).max(1);
        let now = batch.last().map_or(0, |p| p.message.time);
        let lowered = self.lower(batch);
        let results = self.guarded_scaled(now, n, |b, s| {
            b.garden_pipeline_module()
                .call_on_messages(s, &lowered)
                .map(Ok)
        })?;
        if results.len() != expected {
            return Err(CallError::Module(format!(
                "on-messages answered {} results for {expected} messages and members",
                results.len(),
            )));
        }
        // The answers come per parcel, and for a parcel for every member,
        // per member in member order.
        let members: Vec<u32> = if every == 1 || batch.iter().all(|p| p.member.is_some()) {
            Vec::new()
        } else {
            self.members.iter().copied().collect()
        };
        let only = self.members.first().copied().unwrap_or(0);
        let reached = batch.iter().enumerate().flat_map(|(i, p)| {
            let (one, all) = match p.member {
                Some(m) => (Some(m), &[][..]),
                None if every == 1 => (Some(only), &[][..]),
                None => (None, members.as_slice()),
            };
            one.into_iter()
                .chain(all.iter().copied())
                .map(move |m| (i, m))
        });
        let mut answers = Vec::with_capacity(expected);
        for (r, (parcel, member)) in results.into_iter().zip(reached) {
            answers.push(Answer {
                parcel,
                member,
                handled: match r {
                    Ok(outputs) => self.check_outputs(outputs),
                    Err(message) => Err(CallError::Module(message)),
                },
            });
        }
        Ok(answers)
    }

    /// The WIT batch for `parcels`: topics and publishers as numbers in the
    /// name table, the names new to the instance announced with it.
    fn lower(&mut self, parcels: &[Parcel<'_>]) -> wit::Batch {
        if self.names.len() + 2 * parcels.len() > self.max_names {
            self.names.clear();
        }
        let names_from = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let mut names = Vec::new();
        let mut number = |name: &str| -> u32 {
            if let Some(&n) = self.names.get(name) {
                return n;
            }
            let n = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
            self.names.insert(name.to_string(), n);
            names.push(name.to_string());
            n
        };
        let messages = parcels
            .iter()
            .map(|p| wit::Envelope {
                topic: number(&p.message.topic),
                key: p.message.key.clone(),
                seq: p.message.seq,
                time: p.message.time,
                source: number(&p.message.source),
                member: p.member,
                body: p.message.body.clone(),
            })
            .collect();
        wit::Batch {
            names_from,
            names,
            messages,
        }
    }

    /// The outputs of one message if the host accepts every one: no more
    /// than the cap, each on a declared topic and within the size cap. A
    /// refusal fails the message, and is counted.
    fn check_outputs(&mut self, outputs: Vec<Staged>) -> Handled {
        if outputs.len() > self.max_publishes {
            return Err(CallError::PublishLimit {
                cap: u32::try_from(self.max_publishes).unwrap_or(u32::MAX),
            });
        }
        for o in &outputs {
            let refusal = if !self.publishes.contains(&o.topic) {
                format!("TopicNotDeclared({:?})", o.topic)
            } else if message_size(&o.topic, &o.key, &o.body) > self.max_message_bytes {
                format!("TooLarge({})", self.max_message_bytes)
            } else {
                continue;
            };
            self.store.data_mut().counters.refused_publishes += 1;
            let instance = &self.store.data().instance;
            tracing::warn!(instance = %instance, topic = %o.topic, "publish refused: {refusal}");
            return Err(CallError::Refused {
                topic: o.topic.clone(),
                reason: refusal,
            });
        }
        Ok(outputs)
    }

    /// Run one call with fresh fuel, deadline and staging, and classify how
    /// it ended.
    fn guarded<R>(
        &mut self,
        now: i64,
        call: impl FnOnce(&GardenModule, &mut Store<HostState>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, CallError> {
        self.guarded_scaled(now, 1, call)
    }

    /// [`Sandbox::guarded`] with `scale` times the fuel and the deadline of
    /// one call.
    fn guarded_scaled<R>(
        &mut self,
        now: i64,
        scale: u64,
        call: impl FnOnce(&GardenModule, &mut Store<HostState>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, CallError> {
        let fuel = self.fuel.saturating_mul(scale);
        {
            let state = self.store.data_mut();
            state.logs = 0;
            state.now = now;
            state.last_panic = None;
        }
        // Setting fuel cannot fail once fuel is enabled on the engine, which
        // the engine guarantees; treat a failure as a trap all the same.
        if let Err(e) = self.store.set_fuel(fuel) {
            return Err(CallError::Trap {
                detail: format!("could not set fuel: {e}"),
            });
        }
        self.store
            .set_epoch_deadline(self.deadline_ticks.saturating_mul(scale));
        let result = call(&self.bindings, &mut self.store);
        self.last_fuel = fuel.saturating_sub(self.store.get_fuel().unwrap_or(fuel));
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(CallError::Module(message)),
            Err(error) => Err(self.classify(error)),
        }
    }

    fn classify(&mut self, error: wasmtime::Error) -> CallError {
        if let Some(wait) = error.downcast_ref::<crate::wasi::WaitRefused>() {
            return CallError::Wait {
                function: wait.function.to_string(),
            };
        }
        if let Some(trap) = error.downcast_ref::<HostTrap>() {
            return match *trap {
                HostTrap::Memory { requested, cap } => CallError::MemoryLimit { requested, cap },
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => CallError::FuelExhausted { fuel: self.fuel },
            Some(Trap::Interrupt) => CallError::DeadlineExceeded {
                ms: u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX),
            },
            Some(Trap::StackOverflow) => CallError::StackOverflow,
            _ => match self.store.data_mut().last_panic.take() {
                Some(message) => CallError::Panic { message },
                None => CallError::Trap {
                    detail: trap_detail(&error),
                },
            },
        }
    }
}

fn as_count(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A clock that always reads zero: modules get time only from `host.now`.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_size_counts_body_topic_and_key() {
        let small = message_size("t", "k", &Body::Custom(vec![0; 10]));
        let big = message_size("t", "k", &Body::Custom(vec![0; 1000]));
        assert!((12..20).contains(&small), "{small}");
        assert!((1002..1010).contains(&big), "{big}");
    }

    #[test]
    fn only_module_errors_leave_the_instance_alive() {
        assert!(!CallError::Module("x".into()).kills_instance());
        assert!(CallError::StackOverflow.kills_instance());
        assert!(CallError::FuelExhausted { fuel: 1 }.kills_instance());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
