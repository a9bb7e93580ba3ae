//! Shared helpers for the integration tests: an engine with test limits, the
//! real modules and fixtures, and the bundled data.

use std::sync::Arc;
use std::time::Duration;

use garden_host::feed::{self, csv::Row};
use garden_host::{Engine, Limits, Module};

/// Limits small enough that misbehaving fixtures are stopped quickly.
pub fn test_limits() -> Limits {
    Limits {
        memory_bytes: 16 << 20,
        fuel_per_call: 20_000_000,
        deadline: Duration::from_secs(2),
        max_failures: 3,
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(4),
        max_instances: 200,
        ..Limits::default()
    }
}

/// An engine without an artifact cache.
pub fn engine(limits: Limits) -> Arc<Engine> {
    Arc::new(Engine::new(limits, None).expect("engine starts"))
}

/// A real module, loaded.
pub fn module(engine: &Engine, name: &str) -> Arc<Module> {
    let bytes = garden_modules::module(name).unwrap_or_else(|| panic!("no built-in module {name}"));
    engine
        .load(bytes)
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

/// The bytes of an adversarial fixture.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = garden_modules::fixture(name).unwrap_or_else(|| panic!("no fixture {name}"));
    std::fs::read(path).unwrap_or_else(|e| panic!("read fixture {path}: {e}"))
}

/// An adversarial fixture, loaded.
pub fn fixture(engine: &Engine, name: &str) -> Arc<Module> {
    engine
        .load(&fixture_bytes(name))
        .unwrap_or_else(|e| panic!("fixture {name} loads: {e}"))
}

/// The bundled EUR/USD hourly bars.
pub fn bundled_rows() -> Vec<Row> {
    feed::csv::read(feed::BUNDLED_CSV.as_bytes(), feed::BUNDLED_NAME).expect("bundled data parses")
}
