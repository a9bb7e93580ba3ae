//! Write garden modules in Rust.
//!
//! A module is a type that implements [`Module`]; one call to
//! [`export_module!`] turns it into a component exporting the
//! `garden:pipeline/module` interface. The raw bindings stay inside this
//! crate: authors see typed records ([`Bar`], [`Plan`], [`Envelope`], ...),
//! two host functions ([`log`], [`now`]) and a few helpers. A module sends
//! messages by adding them to its [`Outbox`]; the host delivers them if the
//! message being handled succeeded. The host hands an instance its waiting
//! messages in batches (`on-messages`, WIT 0.3.0); the SDK hides the batch
//! and calls [`Module::on_message`] once per message.
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
//!     fn on_message(&mut self, msg: Envelope, out: &mut Outbox) -> Result<(), String> {
//!         if let Body::Bar(bar) = msg.body {
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

pub mod indicators;

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
    Bar, Body, ContextChange, Decision, Delivery, Envelope, Evidence, Feedback, Fill, FillKind,
    Fitness, Gene, GeneKind, GeneValue, Info, InitContext, Level, Metric, Output, Param, Plan,
    ScoredPlan, Setting, Side, Snapshot, Subscription, Tape, Timestamp, Verdict,
};

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
    fn on_message(&mut self, msg: Envelope, out: &mut Outbox) -> Result<(), String>;

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
    use std::cell::RefCell;

    pub use super::bindings::exports::garden::pipeline::module::Guest;

    /// Holds the one instance of a module inside its component. It lives in
    /// a `thread_local!` (a component instance has one thread), so it needs
    /// no `Sync` and no `unsafe`.
    pub struct Slot<M: Module> {
        inner: RefCell<Option<M>>,
    }

    impl<M: Module> Slot<M> {
        /// An empty slot.
        pub const fn new() -> Self {
            Slot {
                inner: RefCell::new(None),
            }
        }

        /// `Module::init`, storing the result.
        pub fn init(&self, ctx: InitContext) -> Result<(), String> {
            install_panic_hook();
            let module = M::init(ctx)?;
            *self.inner.borrow_mut() = Some(module);
            Ok(())
        }

        /// `Module::snapshot` on the stored instance.
        pub fn snapshot(&self) -> Option<Snapshot> {
            self.inner.try_borrow().ok()?.as_ref()?.snapshot()
        }

        /// `Module::on_message` on the stored instance for each message of
        /// the batch, in order: per message, what it sends or why it failed.
        pub fn on_messages(&self, batch: Vec<Envelope>) -> Vec<Result<Vec<Output>, String>> {
            let Ok(mut slot) = self.inner.try_borrow_mut() else {
                let error = "module re-entered while handling a message".to_string();
                return batch.iter().map(|_| Err(error.clone())).collect();
            };
            let Some(module) = slot.as_mut() else {
                let error = "on-messages called before a successful init".to_string();
                return batch.iter().map(|_| Err(error.clone())).collect();
            };
            let mut results = Vec::with_capacity(batch.len());
            for msg in batch {
                super::HANDLING.with(|t| t.set(Some(msg.time)));
                let mut out = Outbox::new();
                results.push(module.on_message(msg, &mut out).map(|()| out.take()));
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
                    batch: ::std::vec::Vec<$crate::Envelope>,
                ) -> ::std::vec::Vec<Result<::std::vec::Vec<$crate::Output>, String>> {
                    SLOT.with(|slot| slot.on_messages(batch))
                }
                fn save() -> Option<$crate::Snapshot> {
                    SLOT.with(|slot| slot.snapshot())
                }
            }

            // Only components export the interface; a native build (unit
            // tests of module logic) must not emit these symbol names.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::export!(GardenExport with_types_in $crate::bindings);
        };
    };
}
