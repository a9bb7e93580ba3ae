//! Issue #5 figures, as a bench binary (one measurement each, printed):
//!
//! * replications per second: mutate a parameter blob, instantiate from
//!   `InstancePre` and `init` (what a birth costs);
//! * resident memory per idle instance: RSS growth while 1,000 initialised
//!   alpha instances sit idle in one runtime;
//! * variant-bars per second with 1,000 alpha variants (evolution off, so
//!   all 1,000 live the whole run) on the bundled data.
//!
//! Run: `cargo bench -p garden-benches --bench replication`.

use std::sync::Arc;
use std::time::Instant;

use garden_host::bus::MemoryBus;
use garden_host::config::Mutation;
use garden_host::config::PipelineConfig;
use garden_host::feed;
use garden_host::replay::{ReplayOptions, replay};
use garden_host::replication::genome;
use garden_host::types::InitContext;
use garden_host::{Engine, InstanceSpec, Limits, Runtime, genes};
use rand::SeedableRng;

fn trust() -> garden_registry::TrustStore {
    garden_host::integrity::dev_trust().expect("dev key")
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn main() {
    let limits = Limits {
        max_instances: 1_200,
        ..PipelineConfig::embedded()
            .expect("embedded pipeline")
            .limits
    };
    let engine = Arc::new(Engine::new(limits, None).expect("engine"));
    let alpha = engine
        .load(
            garden_modules::module("alpha-ema").expect("built in"),
            &trust(),
        )
        .expect("loads");
    let genes = alpha.info().genes.clone();
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(1);
    let parent = genes::defaults(&genes);

    // Replications: mutate + instantiate + init.
    let n = 5_000;
    let started = Instant::now();
    for i in 0..n {
        let mut params = parent.clone();
        genome::mutate(&genes, &mut params, &Mutation::default(), &mut rng);
        let mut sandbox = engine
            .instantiate(&alpha, "child", i)
            .expect("instantiates");
        sandbox
            .init(&InitContext {
                member: 0,
                instance: "child".into(),
                params,
                settings: vec![],
                snapshot: None,
            })
            .expect("init");
    }
    let per_sec = n as f64 / started.elapsed().as_secs_f64();
    println!("replications/s (mutate + instantiate + init): {per_sec:.0}  (target >= 2,000)");

    // Resident memory per idle instance.
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(64), 1);
    let before = rss_kib();
    let count = 1_000;
    for i in 0..count {
        rt.spawn(InstanceSpec {
            id: format!("idle.{i}"),
            module: alpha.clone(),
            params: parent.clone(),
            settings: vec![],
            snapshot: None,
        })
        .expect("spawns");
    }
    let after = rss_kib();
    println!(
        "resident memory per idle instance: {:.0} KiB ({count} instances, RSS {before} -> {after} KiB)  (target <= 256 KiB)",
        (after - before) as f64 / count as f64
    );
    drop(rt);

    // 1,000 variants on the bundled data: the full pipeline, and the lean
    // one with each variant alone and with all 1,000 in one cohort.
    let rows = feed::csv::read(feed::BUNDLED_CSV.as_bytes(), feed::BUNDLED_NAME).expect("data");
    let shapes = [
        ("full pipeline, alone", garden_benches::full()),
        ("lean pipeline, alone", garden_benches::lean()),
        (
            "lean pipeline, one cohort of 1,000",
            garden_benches::in_cohorts(garden_benches::lean(), 1_000),
        ),
    ];
    for (name, config) in shapes {
        let modules = config
            .load(
                &engine,
                &garden_host::integrity::Trust::new(Default::default()).expect("dev key"),
            )
            .expect("modules load");
        let options = ReplayOptions {
            seed: 1,
            variants: Some(1_000),
            symbol: "EURUSD".into(),
            data_name: "bundled".into(),
            threads: 0,
            total_bars: 0,
            steps_per_year: 0.0,
            per_call: 0,
            deploys: Vec::new(),
        };
        let before = rss_kib();
        let summary =
            replay(engine.clone(), &config, &modules, &rows, options, |_| {}).expect("runs");
        let variant_bars = 1_000.0 * summary.bars as f64 / summary.elapsed_secs;
        println!(
            "1,000 variants, {name}: {:.0} bars/s = {variant_bars:.0} variant-bars/s ({:.2} s, RSS +{} KiB)  (target >= 2,000,000 variant-bars/s, lean)",
            summary.bars_per_sec,
            summary.elapsed_secs,
            rss_kib().saturating_sub(before)
        );
    }
}
