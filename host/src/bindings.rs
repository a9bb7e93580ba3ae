//! The host side of the WIT contract, generated from `wit/`. This is the only
//! place the generated bindings are defined; the rest of the host uses the
//! re-exports in [`crate`]. The WIT documents every type; the generated
//! Rust carries those comments where bindgen can place them, and the rest
//! (trait methods, some fields) is exempt from `missing_docs`.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "garden-module",
    path: "../wit",
    imports: { default: trappable },
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

pub use garden::pipeline::host::Host;
pub use garden::pipeline::types;
