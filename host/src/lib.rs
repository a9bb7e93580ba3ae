//! The garden host: loads modules compiled to Wasm components, runs each in
//! its own sandbox under hard limits, connects them only through the message
//! bus, and reads the fitness they report.
//!
//! The host is domain-agnostic: it routes [`Envelope`]s by topic and key,
//! hands parameters to modules from their declared genes, and reads
//! reports of fitness ([`scoring`]). What the messages mean lives in the WIT types and
//! the modules.
//!
//! Layers, bottom-up; a module imports only from layers below it (checked
//! by `.ci/layers.py`):
//!
//! 1. the WIT bindings; [`config`] (what a pipeline file says, plain data),
//!    [`limits`] and [`genes`] (parameters from a module's genes);
//! 2. [`engine`] (wasmtime, the artifact [`cache`], [`shape`], [`integrity`])
//!    and [`sandbox`] (one instance, its host functions, per-call limits);
//! 3. [`bus`]: the bus trait, the in-process and the Redis backends;
//! 4. [`runtime`]: the scheduler and supervisor (restarts, quarantine);
//! 5. [`replication`]: the population breeds;
//! 6. [`loader`], [`feed`], [`replay`], [`scoring`], [`render`]: a replay
//!    run, its scores and its summary as text;
//! 7. [`cluster`]: a garden of daemons over Redis;
//!
//! beside them [`audit`], [`records`] and [`parking`], the host's uses of
//! the store (`garden-store`).

pub mod audit;
mod bindings;
pub mod bus;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod costs;
pub mod engine;
pub mod feed;
pub mod genes;
pub mod integrity;
pub mod keyring;
pub mod limits;
pub mod loader;
pub mod message;
pub mod metrics;
pub mod parking;
pub mod paths;
pub mod records;
pub mod render;
pub mod replay;
pub mod replication;
pub mod rollout;
pub mod runtime;
pub mod sandbox;
pub mod scoring;
pub mod secret;
pub mod shape;
mod wasi;

/// The WIT types, as the host sees them.
pub mod types {
    pub use crate::bindings::types::*;
    // The host's own record shadows the WIT envelope, which only the
    // sandbox builds.
    pub use crate::message::Envelope;
}

pub use bindings::types::Info;
pub use engine::{Engine, EngineError, LoadError, Module};
pub use limits::Limits;
pub use message::Envelope;
pub use runtime::{InstanceSpec, Runtime};
pub use sandbox::CallError;
