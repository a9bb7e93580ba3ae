//! The same module (the SMA cross) in Rust, Python and JavaScript (issue
//! #15): instantiate time, and time and fuel per message, one bar per call
//! and 64 per call. The Python and JavaScript components are built here by
//! their tools (`pip install componentize-py==0.25.1`,
//! `npm ci --prefix guest-sdk/js`).
//!
//! Run: `cargo bench -p garden-benches --bench languages`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use garden_host::sandbox::Parcel;
use garden_host::types::InitContext;
use garden_host::{Engine, Limits, Module, feed, genes};
use garden_tests::languages::{build_javascript, build_python, load_signed};

/// Instantiations timed per language.
const STARTS: usize = 40;
/// Bars handed over, per way of handing them.
const BARS: usize = 2_048;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn measure(engine: &Engine, name: &str, module: &Arc<Module>) {
    let starts: Vec<Duration> = (0..STARTS)
        .map(|i| {
            let t = Instant::now();
            let sandbox = engine
                .instantiate(module, "bench", i as u64)
                .expect("instantiates");
            let elapsed = t.elapsed();
            drop(sandbox);
            elapsed
        })
        .collect();
    let ctx = InitContext {
        member: 0,
        instance: "bench".into(),
        params: genes::defaults(&module.info().genes),
        settings: vec![],
        snapshot: None,
    };
    let rows = feed::csv::read(feed::BUNDLED_CSV.as_bytes(), feed::BUNDLED_NAME).expect("data");
    let messages: Vec<_> = rows
        .iter()
        .take(BARS)
        .map(|r| feed::bar_message("bar", "EURUSD", r))
        .collect();
    let parcels: Vec<Parcel<'_>> = messages.iter().map(Parcel::every).collect();
    let mut per_call = Vec::new();
    for size in [1usize, 64] {
        let mut sandbox = engine
            .instantiate(module, "bench", 1)
            .expect("instantiates");
        sandbox.init(&ctx).expect("init");
        let (mut fuel, t) = (0u64, Instant::now());
        for chunk in parcels.chunks(size) {
            sandbox.handle(chunk).expect("handles");
            fuel += sandbox.last_fuel();
        }
        let each = t.elapsed() / BARS as u32;
        per_call.push((size, each, fuel / BARS as u64));
    }
    print!(
        "{name:<11} instantiate {:>8.1} µs",
        median(starts).as_secs_f64() * 1e6
    );
    for (size, each, fuel) in per_call {
        print!(
            " | {size:>2} per call: {:>7.2} µs, {fuel:>7} fuel per message",
            each.as_secs_f64() * 1e6
        );
    }
    println!();
}

fn main() {
    // A CPython component declares 38 core instances.
    let engine = Arc::new(
        Engine::new(
            Limits {
                max_core_instances: 40,
                ..Limits::default()
            },
            None,
        )
        .expect("engine"),
    );
    let trust = garden_tests::trust();
    let rust = engine
        .load(
            garden_modules::module("sma-cross").expect("built in"),
            &trust,
        )
        .expect("loads");
    let py_dir = tempfile::tempdir().expect("tempdir");
    let py_wasm = build_python("modules/py-sma-cross", py_dir.path());
    let t = Instant::now();
    let python = load_signed(&engine, "modules/py-sma-cross", &py_wasm);
    let py_compile = t.elapsed();
    let js_dir = tempfile::tempdir().expect("tempdir");
    let js_wasm = build_javascript("modules/js-sma-cross", js_dir.path());
    let t = Instant::now();
    let javascript = load_signed(&engine, "modules/js-sma-cross", &js_wasm);
    let js_compile = t.elapsed();
    println!(
        "sma-cross in three languages (compile: Python {:.1} s, {} MB; JavaScript {:.1} s, {} MB)",
        py_compile.as_secs_f64(),
        std::fs::metadata(&py_wasm).map_or(0, |m| m.len() >> 20),
        js_compile.as_secs_f64(),
        std::fs::metadata(&js_wasm).map_or(0, |m| m.len() >> 20),
    );
    for (name, module) in [
        ("rust", &rust),
        ("python", &python),
        ("javascript", &javascript),
    ] {
        measure(&engine, name, module);
    }
}
