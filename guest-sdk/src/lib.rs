//! Write garden modules in Rust.
//!
//! A module is a type that implements [`Module`]; one call to
//! [`export_module!`] turns it into a component exporting the
//! `garden:pipeline/module` interface. The raw bindings stay inside this
//! crate: authors see typed records ([`Bar`], [`Plan`], [`Envelope`], ...),
//! two host functions ([`log`], [`now`]) and a few helpers. A module sends
//! messages by adding them to its [`Outbox`]; the host delivers them if the
//! message being handled succeeded. The host hands an instance its waiting
//! messages in batches (`on-messages`); the SDK hides the batch
//! and calls [`Module::on_message`] once per message. Topic and publisher
//! names arrive as numbers in a table the SDK keeps, and an [`Envelope`]
//! gives them back as shared strings ([`Name`]), so no string is made per
//! message for them. A module that declares a cohort
//! ([`Info::cohort`]) may carry several variants in one instance: the SDK
//! keeps one value of the module type per variant and hands each its own
//! messages.
//!
//! ```
//! use garden_sdk::{Body, Envelope, Gene, Info, InitContext, Module, Outbox, Subscription};
//!
//! /// Counts bars and reports every hundredth one in the log.
//! struct Counter {
//!     every: i64,
//!     seen: i64,
//! }
//!
//! impl Module for Counter {
//!     fn describe() -> Info {
//!         Info::new("counter", "0.1.0", "example")
//!             .subscribe(Subscription::broadcast("bar"))
//!             .publishes("count")
//!             .gene(Gene::int("every", 1.0, 1000.0, 100.0, 10.0))
//!     }
//!
//!     fn init(ctx: InitContext) -> Result<Self, String> {
//!         Ok(Counter { every: ctx.int("every")?, seen: 0 })
//!     }
//!
//!     fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
//!         if let Body::Bar(bar) = &msg.body {
//!             self.seen += 1;
//!             if self.seen % self.every == 0 {
//!                 garden_sdk::info(&format!("{} bars, last close {}", self.seen, bar.close));
//!                 out.publish("count", &bar.symbol, Body::Custom(self.seen.to_le_bytes().to_vec()));
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! garden_sdk::export_module!(Counter);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release`: the result
//! is a component the garden host loads.

pub mod curation;
pub mod indicators;
pub mod join;
pub mod retired;
pub mod testing;

/// The README's module example, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Raw bindings generated from `wit/`. Module authors should not need them;
/// [`export_module!`] uses them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "garden-module",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "garden_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

mod helpers;

pub use bindings::garden::pipeline::types::{
    Bar, Body, ContextChange, Curation, CuratorAction, Decision, Delivery, Evidence, Feedback,
    Fill, FillKind, Fitness, Gene, GeneKind, GeneValue, Info, InitContext, Intel, Level, Metric,
    NudgeTarget, Output, Param, Plan, ScoredPlan, Setting, Side, Snapshot, Subscription, Tape,
    Timestamp, Verdict,
};

/// A topic or instance name, shared rather than copied per message.
pub type Name = std::rc::Rc<str>;

/// A message as a module handles it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The topic it came on.
    pub topic: Name,
    /// Ordering key: messages with the same key on a topic reach a
    /// subscribing group in the order they were published.
    pub key: String,
    /// Per-topic sequence number assigned by the bus.
    pub seq: u64,
    /// Event time (inherited from the message being handled when it was
    /// published).
    pub time: Timestamp,
    /// Instance id of the publisher, set by the host (cannot be forged).
    pub source: Name,
    /// What it carries.
    pub body: Body,
}

/// What a module author implements.
///
/// The host calls [`Module::describe`] once to learn topics and genes, then
/// [`Module::init`] with this instance's parameters, then
/// [`Module::on_message`] for every delivered message, one at a time, in
/// delivery order.
pub trait Module: Sized + 'static {
    /// Name, version, role, topics and genes. Must not publish.
    fn describe() -> Info;
    /// Build the instance from its parameters; an error refuses them.
    fn init(ctx: InitContext) -> Result<Self, String>;
    /// Handle one message, adding what to publish to `out`; an error fails
    /// this message only and nothing in `out` is published.
    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String>;

    /// Learned state worth inheriting (`ctx.snapshot` in [`Module::init`]
    /// brings it back). None by default.
    fn snapshot(&self) -> Option<Snapshot> {
        None
    }
}

/// Messages collected during one [`Module::on_message`] call and published
/// when it returns `Ok`. Keeping them in a plain list lets module logic be
/// unit-tested natively, without a host.
#[derive(Debug, Default)]
pub struct Outbox {
    messages: Vec<Output>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue `body` for `topic` with ordering key `key`.
    pub fn publish(&mut self, topic: &str, key: &str, body: Body) {
        self.messages.push(Output {
            topic: topic.to_string(),
            key: key.to_string(),
            body,
        });
    }

    /// The queued messages, oldest first.
    pub fn messages(&self) -> &[Output] {
        &self.messages
    }

    /// Take the queued messages, leaving the outbox empty.
    pub fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.messages)
    }
}

/// Write to the host's log, tagged with this instance's id.
///
/// Outside a component (native unit tests) it writes to stderr instead.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::garden::pipeline::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// [`log`] at info level.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// [`log`] at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

thread_local! {
    /// Event time of the message being handled, while the SDK hands it to
    /// the module.
    static HANDLING: std::cell::Cell<Option<Timestamp>> = const { std::cell::Cell::new(None) };
}

/// Event time of the message being handled, in milliseconds since the
/// epoch (in `init`, of the last message handled).
pub fn now() -> Timestamp {
    match HANDLING.with(std::cell::Cell::get) {
        Some(time) => time,
        #[cfg(target_arch = "wasm32")]
        None => bindings::garden::pipeline::host::now(),
        #[cfg(not(target_arch = "wasm32"))]
        None => 0,
    }
}

/// Glue used by [`export_module!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::bindings::garden::pipeline::types as wit;
    use std::cell::RefCell;

    pub use super::bindings::exports::garden::pipeline::module::Guest;
    pub use wit::Batch;

    /// Holds a module's variants inside its component: one value of the
    /// module type per cohort member (one, member 0, outside cohorts), and
    /// the name table. It lives in a `thread_local!` (a component instance
    /// has one thread), so it needs no `Sync` and no `unsafe`.
    pub struct Slot<M: Module> {
        inner: RefCell<State<M>>,
    }

    struct State<M> {
        members: Vec<Option<M>>,
        names: Vec<Name>,
    }

    impl<M: Module> Slot<M> {
        /// An empty slot.
        pub const fn new() -> Self {
            Slot {
                inner: RefCell::new(State {
                    members: Vec::new(),
                    names: Vec::new(),
                }),
            }
        }

        fn state(&self) -> Result<std::cell::RefMut<'_, State<M>>, String> {
            self.inner
                .try_borrow_mut()
                .map_err(|_| "module re-entered while handling a message".to_string())
        }

        /// `Module::init` for member `ctx.member`, replacing what it held.
        pub fn init(&self, ctx: InitContext) -> Result<(), String> {
            install_panic_hook();
            let mut state = self.state()?;
            let member = ctx.member as usize;
            if state.members.len() <= member {
                state.members.resize_with(member + 1, || None);
            }
            state.members[member] = None;
            state.members[member] = Some(M::init(ctx)?);
            Ok(())
        }

        /// `Module::snapshot` of member `member`.
        pub fn snapshot(&self, member: u32) -> Option<Snapshot> {
            let state = self.inner.try_borrow().ok()?;
            state.members.get(member as usize)?.as_ref()?.snapshot()
        }

        /// Forget member `member`.
        pub fn leave(&self, member: u32) {
            if let Ok(mut state) = self.inner.try_borrow_mut()
                && let Some(m) = state.members.get_mut(member as usize)
            {
                *m = None;
            }
        }

        /// `Module::on_message` for each message of the batch and member it
        /// is for, in order: per message and member, what it sends or why
        /// it failed.
        pub fn on_messages(&self, batch: Batch) -> Vec<Result<Vec<Output>, String>> {
            let mut state = match self.state() {
                Ok(state) => state,
                Err(error) => return batch.messages.iter().map(|_| Err(error.clone())).collect(),
            };
            let State { members, names } = &mut *state;
            // Most calls announce nothing new.
            if !batch.names.is_empty() || names.len() != batch.names_from as usize {
                names.truncate(batch.names_from as usize);
                names.extend(batch.names.into_iter().map(Name::from));
            }
            let name = |n: u32| {
                names
                    .get(n as usize)
                    .cloned()
                    .unwrap_or_else(|| Name::from(""))
            };
            let mut results = Vec::with_capacity(batch.messages.len());
            for m in batch.messages {
                super::HANDLING.with(|t| t.set(Some(m.time)));
                let msg = Envelope {
                    topic: name(m.topic),
                    key: m.key,
                    seq: m.seq,
                    time: m.time,
                    source: name(m.source),
                    body: m.body,
                };
                let handle = |module: &mut M| {
                    let mut out = Outbox::new();
                    module.on_message(&msg, &mut out).map(|()| out.take())
                };
                match m.member {
                    Some(k) => results.push(match members.get_mut(k as usize) {
                        Some(Some(module)) => handle(module),
                        _ => Err(format!("no member {k} was started")),
                    }),
                    None => {
                        for module in members.iter_mut().flatten() {
                            results.push(handle(module));
                        }
                    }
                }
            }
            super::HANDLING.with(|t| t.set(None));
            results
        }
    }

    impl<M: Module> Default for Slot<M> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Sends a panic's message to the host log, so the host can say why the
    /// call trapped instead of only that it did.
    fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                log(Level::Error, &format!("panic: {info}"));
            }));
        });
    }
}

/// Export a [`Module`] implementation as this component's `module` interface.
///
/// Call it once per crate, at the top level.
#[macro_export]
macro_rules! export_module {
    ($module:ty) => {
        const _: () = {
            struct GardenExport;
            ::std::thread_local! {
                static SLOT: $crate::__private::Slot<$module> =
                    const { $crate::__private::Slot::new() };
            }

            impl $crate::__private::Guest for GardenExport {
                fn describe() -> $crate::Info {
                    <$module as $crate::Module>::describe()
                }
                fn init(ctx: $crate::InitContext) -> Result<(), String> {
                    SLOT.with(|slot| slot.init(ctx))
                }
                fn on_messages(
                    batch: $crate::__private::Batch,
                ) -> ::std::vec::Vec<Result<::std::vec::Vec<$crate::Output>, String>> {
                    SLOT.with(|slot| slot.on_messages(batch))
                }
                fn save(member: u32) -> Option<$crate::Snapshot> {
                    SLOT.with(|slot| slot.snapshot(member))
                }
                fn leave(member: u32) {
                    SLOT.with(|slot| slot.leave(member))
                }
            }

            // Only components export the interface; a native build (unit
            // tests of module logic) must not emit these symbol names.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::export!(GardenExport with_types_in $crate::bindings);
        };
    };
}
