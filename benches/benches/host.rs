//! The speed figures issue #3 asks for:
//!
//! * `instantiate`: one more instance from `InstancePre` (pooling allocator),
//!   including its store and WASI context;
//! * `on_message_bar`: one `on-message` call carrying a bar, into the real
//!   alpha module, with fuel and epoch deadline armed;
//! * `pipeline/{1,100}_variants`: the whole embedded pipeline over the
//!   bundled 5,000 EUR/USD bars (throughput in bars/s);
//! * `pipeline_uncurated/{1,100}_variants`: the same without the curators
//!   and intel sharing (the `curators` and `sharing` ablations), so the
//!   difference is what that layer costs;
//! * `pipeline_lean/{1,100}_variants`: the same without the MicroTape and
//!   the three token and divergence experts (alpha, regime, anomaly expert,
//!   fusion, decision, trader): the pipeline issue #3's target was set for.
//!
//! Run: `cargo bench -p garden-benches --bench host`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use garden_host::config::PipelineConfig;
use garden_host::feed::{self, csv::Row};
use garden_host::replay::{ReplayOptions, replay};
use garden_host::sandbox::Parcel;
use garden_host::types::{InitContext, Setting};
use garden_host::{Engine, genes};

fn trust() -> garden_registry::TrustStore {
    garden_host::integrity::dev_trust().expect("dev key")
}

fn rows() -> Vec<Row> {
    feed::csv::read(feed::BUNDLED_CSV.as_bytes(), feed::BUNDLED_NAME).expect("bundled data")
}

fn instantiate_and_call(c: &mut Criterion) {
    let config = PipelineConfig::embedded().expect("embedded pipeline");
    let engine = Engine::new(config.limits.clone(), None).expect("engine");
    let alpha = engine
        .load(
            garden_modules::module("alpha-ema").expect("built in"),
            &trust(),
        )
        .expect("loads");
    c.bench_function("instantiate", |b| {
        b.iter(|| {
            engine
                .instantiate(&alpha, "bench", 1)
                .expect("instantiates")
        })
    });

    let mut sandbox = engine
        .instantiate(&alpha, "bench", 1)
        .expect("instantiates");
    let ctx = InitContext {
        member: 0,
        snapshot: None,
        instance: "bench".into(),
        params: genes::defaults(&alpha.info().genes),
        settings: Vec::<Setting>::new(),
    };
    sandbox.init(&ctx).expect("init");
    let rows = rows();
    let messages: Vec<_> = rows
        .iter()
        .map(|r| feed::bar_message("bar", "EURUSD", r))
        .collect();
    let messages: Vec<Parcel<'_>> = messages.iter().map(Parcel::every).collect();
    // Fuel (guest instructions, lifting of the arguments included) per
    // message, one message per call against 64: the same on every machine.
    let mut fuel_one = 0;
    for m in messages.iter().take(640) {
        sandbox.handle(std::slice::from_ref(m)).expect("handles");
        fuel_one += sandbox.last_fuel();
    }
    let mut fuel_batched = 0;
    for batch in messages[640..1280].chunks(64) {
        sandbox.handle(batch).expect("handles");
        fuel_batched += sandbox.last_fuel();
    }
    eprintln!(
        "fuel per bar message (alpha-ema): {} one per call, {} in calls of 64",
        fuel_one / 640,
        fuel_batched / 640
    );
    let mut i = 0;
    c.bench_function("on_message_bar", |b| {
        b.iter(|| {
            let m = &messages[i % messages.len()];
            i += 1;
            sandbox.handle(std::slice::from_ref(m)).expect("handles")
        })
    });
    // The same bars 64 at a time (one call), per message.
    let batches: Vec<&[Parcel<'_>]> = messages.chunks(64).collect();
    let mut j = 0;
    let mut group = c.benchmark_group("on_messages_bar");
    group.throughput(criterion::Throughput::Elements(64));
    group.bench_function("batch_64", |b| {
        b.iter(|| {
            let batch = batches[j % (batches.len() - 1)];
            j += 1;
            sandbox.handle(batch).expect("handles")
        })
    });
    group.finish();

    // One instance carrying 100 variants (a cohort): each bar goes once,
    // for all of them.
    let mut cohort = engine
        .instantiate(&alpha, "cohort", 1)
        .expect("instantiates");
    for member in 0..COHORT {
        cohort
            .init(&InitContext {
                member,
                instance: format!("v{member}"),
                ..ctx.clone()
            })
            .expect("init");
    }
    let mut fuel_cohort = 0;
    for batch in messages[640..1280].chunks(64) {
        cohort.handle(batch).expect("handles");
        fuel_cohort += cohort.last_fuel();
    }
    eprintln!(
        "fuel per variant-bar (alpha-ema, {COHORT} variants in one instance, calls of 64 bars): {}",
        fuel_cohort / (640 * u64::from(COHORT))
    );
    let mut group = c.benchmark_group("on_messages_bar_cohort");
    group.throughput(criterion::Throughput::Elements(64 * u64::from(COHORT)));
    group.bench_function(format!("batch_64_members_{COHORT}"), |b| {
        b.iter(|| {
            let batch = batches[j % (batches.len() - 1)];
            j += 1;
            cohort.handle(batch).expect("handles")
        })
    });
    group.finish();
}

/// Variants one instance carries in the cohort figures.
const COHORT: u32 = 100;

fn pipeline(c: &mut Criterion) {
    let full = garden_benches::full();
    let lean = garden_benches::lean();
    let engine = Arc::new(Engine::new(full.limits.clone(), None).expect("engine"));
    let rows = rows();
    // The embedded pipeline without what issue #19 added: what the
    // curators and sharing cost per bar.
    let uncurated = full
        .ablated("sharing")
        .and_then(|c| c.ablated("curators"))
        .expect("the embedded pipeline's ablations apply");
    let shapes = [
        ("pipeline", full.clone(), &[1u32, 100][..]),
        ("pipeline_uncurated", uncurated, &[1, 100][..]),
        (
            "pipeline_cohort",
            garden_benches::in_cohorts(full, 100),
            &[100][..],
        ),
        ("pipeline_lean", lean.clone(), &[1, 100][..]),
        (
            "pipeline_lean_cohort",
            garden_benches::in_cohorts(lean, 100),
            &[100][..],
        ),
    ];
    for (name, config, sizes) in shapes {
        let config = &config;
        let modules = config
            .load(
                &engine,
                &garden_host::integrity::Trust::new(Default::default()).expect("dev key"),
            )
            .expect("modules load");
        let mut group = c.benchmark_group(name);
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20));
        group.throughput(Throughput::Elements(rows.len() as u64));
        for &variants in sizes {
            group.bench_function(format!("{variants}_variants"), |b| {
                b.iter(|| {
                    let options = ReplayOptions {
                        seed: 1,
                        variants: Some(variants),
                        symbol: "EURUSD".into(),
                        data_name: "bundled".into(),
                        threads: 0,
                        total_bars: 0,
                        steps_per_year: 0.0,
                        per_call: 0,
                        deploys: Vec::new(),
                    };
                    replay(engine.clone(), config, &modules, &rows, options, |_| {}).expect("runs")
                })
            });
        }
        group.finish();
    }
}

// The macro defines a public function it cannot document.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, instantiate_and_call, pipeline);
}
use group::benches;
criterion_main!(benches);
