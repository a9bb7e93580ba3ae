//! Every integration test of the garden, in one test binary (as wasmtime's
//! `tests/all`), so the test build links wasmtime once instead of once per
//! file. One module per concern; each starts its own servers.

mod adversarial;
mod book;
mod curators;
mod daemons;
mod deploys;
mod evolution;
mod hotload;
mod languages;
mod loading;
mod monitoring;
mod panel;
mod partition;
mod pipeline;
mod readme;
mod records;
mod redis_bus;
mod registry;
mod report;
mod rollouts;
mod sharing;
mod tls;
