//! The signal panel's cost per bar (issue #7): the tape, the four experts and
//! fusion in their sandboxes, fed the bundled bars with one plan per bar.
//!
//! Per bar the host publishes the bar and one plan on it (as from one
//! variant), or 16 (as from a population, where the experts take the plans
//! of a bar in one call), then runs the panel until it is idle: the tape tokenizes, every expert updates and judges
//! the plan, fusion fuses the four ratios and scores it. Reported: the
//! median and p99 wall time per bar, and expert evaluations per second
//! (plans judged by all four experts over the wall time of the whole panel,
//! so the bars, the tape and fusion are paid for too).
//!
//! Run: `cargo bench -p garden-benches --bench panel`.

use std::time::Instant;

use garden_host::bus::MemoryBus;
use garden_host::config::PipelineConfig;
use garden_host::feed::{self, csv::Row};
use garden_host::types::{Body, Plan, Setting, Side};
use garden_host::{Engine, Envelope, InstanceSpec, Runtime, genes};

const EXPERTS: [&str; 4] = [
    "expert-anomaly",
    "expert-grammar",
    "expert-sequence",
    "expert-divergence",
];

fn plan(i: usize, row: &Row) -> Envelope {
    let id = format!("$bench-p{i}");
    let i = i / PLANS_SPREAD;
    Envelope {
        topic: "plan".into(),
        key: id.clone(),
        seq: 0,
        time: row.time,
        source: "$bench".into(),
        body: Body::Plan(Plan {
            id,
            origin: "$bench".into(),
            symbol: "EURUSD".into(),
            side: if i.is_multiple_of(2) {
                Side::Long
            } else {
                Side::Short
            },
            entry: row.close,
            stop: row.close * 0.99,
            target: row.close * 1.02,
            size: 1.0,
            horizon: 10,
            confidence: 0.55,
            time: row.time,
        }),
        trace: garden_host::message::Trace::default(),
    }
}

/// Plan ids per bar in [`plan`]'s numbering (sides alternate per bar).
const PLANS_SPREAD: usize = 1_000;

fn main() {
    for plans in [1, 16] {
        panel(plans);
    }
}

/// Run the panel over the bundled bars with `plans` plans per bar; print
/// what it cost.
fn panel(plans: usize) {
    let config = PipelineConfig::embedded().expect("embedded pipeline");
    let engine = std::sync::Arc::new(Engine::new(config.limits.clone(), None).expect("engine"));
    let trust = garden_host::integrity::dev_trust().expect("dev key");
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(1024), 1);
    rt.host_subscribe("scored");
    let names = ["tape"]
        .into_iter()
        .chain(EXPERTS)
        .chain(["fusion"])
        .collect::<Vec<_>>();
    for name in &names {
        let module = engine
            .load(garden_modules::module(name).expect("built in"), &trust)
            .expect("loads");
        let settings = if *name == "fusion" {
            vec![Setting {
                name: "experts".into(),
                value: EXPERTS.join(","),
            }]
        } else {
            vec![]
        };
        rt.spawn(InstanceSpec {
            id: (*name).into(),
            module: module.clone(),
            params: genes::defaults(&module.info().genes),
            settings,
            snapshot: None,
        })
        .expect("spawns");
    }
    let rows = feed::csv::read(feed::BUNDLED_CSV.as_bytes(), feed::BUNDLED_NAME).expect("data");
    // Warm-up: the tape's window and the indicators fill, the code is hot.
    let warm = 1_000;
    for (i, row) in rows.iter().enumerate().take(warm) {
        rt.publish(feed::bar_message("bar", "EURUSD", row));
        for p in 0..plans {
            rt.publish(plan(i * PLANS_SPREAD + p, row));
        }
        rt.run_until_idle();
    }
    rt.take_host_messages();
    let mut per_bar = Vec::with_capacity(rows.len());
    let started = Instant::now();
    for (i, row) in rows.iter().enumerate().skip(warm) {
        let t = Instant::now();
        rt.publish(feed::bar_message("bar", "EURUSD", row));
        for p in 0..plans {
            rt.publish(plan(i * PLANS_SPREAD + p, row));
        }
        rt.run_until_idle();
        per_bar.push(t.elapsed());
    }
    let total = started.elapsed();
    let scored = rt
        .take_host_messages()
        .iter()
        .filter(|m| matches!(m.body, Body::Scored(_)))
        .count();
    let bars = per_bar.len();
    assert!(
        scored + 2 * plans >= bars * plans,
        "every plan was scored: {scored} of {}",
        bars * plans
    );
    per_bar.sort_unstable();
    let at = |q: f64| per_bar[((bars - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let evaluations = (EXPERTS.len() * bars * plans) as f64;
    println!(
        "panel (tape + {} experts + fusion), {bars} bars after {warm} of warm-up, {plans} plan(s) per bar:",
        EXPERTS.len()
    );
    println!(
        "  per bar: median {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    println!(
        "  expert evaluations: {:.0}/s ({} in {:.3} s of panel wall time)",
        evaluations / total.as_secs_f64(),
        evaluations,
        total.as_secs_f64()
    );
    println!("  inside each sandbox, per message:");
    for i in rt.instances() {
        println!(
            "    {:<18} {:>6.2} µs  {:>7.0} fuel  ({} messages)",
            i.id,
            i.micros_per_message,
            i.fuel as f64 / i.received.max(1) as f64,
            i.received
        );
    }
}
