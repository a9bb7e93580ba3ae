//! Hot-loading (issue #16), as a bench binary (figures printed):
//!
//! * from a deploy of a cached, verified component to the first message
//!   its new code handled: eight alpha-ema instances warm up on 500 bundled
//!   bars, then every one is given the new code (`Runtime::upgrade`, from
//!   its snapshot) and the next bar is handled; timed from the first
//!   upgrade to the end of that bar, 20 times;
//! * the longest the module handled nothing at the switch: the time to
//!   upgrade one instance (each instance's own gap), and all eight;
//! * compile time, reported apart: loading the component with no cache
//!   (what a deploy's own thread does off the message path).
//!
//! Run: `cargo bench -p garden-benches --bench hotload`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use garden_host::bus::MemoryBus;
use garden_host::config::PipelineConfig;
use garden_host::{Engine, InstanceSpec, Module, Runtime, feed, genes};

const INSTANCES: usize = 8;
const WARM_BARS: usize = 500;
const SWITCHES: usize = 20;

fn load(engine: &Engine, bytes: &[u8]) -> Arc<Module> {
    let trust = garden_host::integrity::dev_trust().expect("dev key");
    engine.load(bytes, &trust).expect("alpha-ema loads")
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let limits = PipelineConfig::embedded().expect("embedded").limits;
    let bytes = garden_modules::module("alpha-ema").expect("built-in");
    // Compile time, apart: no cache, as a first deploy of new code.
    let cold = Engine::new(limits.clone(), None).expect("engine");
    let started = Instant::now();
    let _ = load(&cold, bytes);
    let compile = started.elapsed();

    let engine = Arc::new(Engine::new(limits, None).expect("engine"));
    let old = load(&engine, bytes);
    // The deploy's code: loaded and compiled beforehand (a separate module
    // of the same bytes, as a deploy's thread hands it over).
    let new = load(&engine, bytes);
    let rows = garden_tests::bundled_rows();
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(1024), 1);
    let params = genes::defaults(&old.info().genes);
    let ids: Vec<String> = (0..INSTANCES).map(|i| format!("alpha-ema.{i}")).collect();
    for id in &ids {
        rt.spawn(InstanceSpec {
            id: id.clone(),
            module: old.clone(),
            params: params.clone(),
            settings: vec![],
            snapshot: None,
        })
        .expect("spawns");
    }
    let mut bar = 0;
    let feed_one = |rt: &mut Runtime<MemoryBus>, bar: &mut usize| {
        let row = &rows[*bar % rows.len()];
        rt.publish(feed::bar_message("bar", "EURUSD", row));
        rt.run_until_idle();
        *bar += 1;
    };
    for _ in 0..WARM_BARS {
        feed_one(&mut rt, &mut bar);
    }
    let (mut first, mut one, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..SWITCHES {
        let code = if n % 2 == 0 { &new } else { &old };
        let started = Instant::now();
        for id in &ids {
            let t = Instant::now();
            rt.upgrade(id, code.clone()).expect("upgrades");
            one.push(t.elapsed());
        }
        all.push(started.elapsed());
        feed_one(&mut rt, &mut bar);
        first.push(started.elapsed());
        for _ in 0..10 {
            feed_one(&mut rt, &mut bar);
        }
    }
    for v in [&mut first, &mut one, &mut all] {
        v.sort();
    }
    let median = |v: &[Duration]| millis(v[v.len() / 2]);
    let max = |v: &[Duration]| millis(v[v.len() - 1]);
    println!("Hot-loading, {INSTANCES} alpha-ema instances, memory bus, {SWITCHES} switches");
    println!(
        "  deploy of a compiled component to the first bar handled by the new code: median {:.2} ms, max {:.2} ms",
        median(&first),
        max(&first)
    );
    println!(
        "  one instance's gap at the switch (its upgrade, from its snapshot): median {:.3} ms, max {:.3} ms",
        median(&one),
        max(&one)
    );
    println!(
        "  all {INSTANCES} upgraded: median {:.2} ms, max {:.2} ms",
        median(&all),
        max(&all)
    );
    println!(
        "  compile time (no cache, off the message path): {:.0} ms",
        millis(compile)
    );
}
