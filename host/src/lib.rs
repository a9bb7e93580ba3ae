//! The garden host: loads modules compiled to Wasm components, runs each in
//! its own sandbox under hard limits, connects them only through the message
//! bus, and reads the fitness they report.
//!
//! The host is domain-agnostic: it routes [`Envelope`]s by topic and key,
//! hands parameters to modules from their declared genes, and reads
//! [`report`]s of fitness. What the messages mean lives in the WIT types and
//! the modules.
//!
//! * [`engine`]: the wasmtime engine, artifact cache and loader.
//! * [`sandbox`]: one instance, its host functions and per-call limits.
//! * [`limits`]: every limit in one place.
//! * [`bus`]: the bus trait and the in-process backend.
//! * [`runtime`]: the scheduler and supervisor (restarts, quarantine).
//! * [`genes`]: parameters from a module's genes.
//! * [`pipeline`], [`plan`], [`feed`], [`run`], [`report`]: a replay run.

pub mod audit;
mod bindings;
pub mod bus;
pub mod cache;
pub mod cluster;
pub mod engine;
pub mod feed;
pub mod genes;
pub mod integrity;
pub mod limits;
pub mod outbox;
pub mod paths;
pub mod pipeline;
pub mod plan;
pub mod records;
pub mod render;
pub mod replication;
pub mod report;
pub mod run;
pub mod runtime;
pub mod sandbox;
pub mod shape;
mod wasi;

/// The WIT types, as the host sees them.
pub mod types {
    pub use crate::bindings::PublishError;
    pub use crate::bindings::types::*;
}

pub use bindings::types::{Envelope, Info};
pub use engine::{Engine, EngineError, LoadError, Module};
pub use limits::Limits;
pub use runtime::{InstanceSpec, Runtime};
pub use sandbox::CallError;
