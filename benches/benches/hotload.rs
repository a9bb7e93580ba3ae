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
//! * across daemons, one `garden daemon` on a local Redis running four
//!   expert-anomaly instances while plans arrive every millisecond:
//!   `garden deploy` of a new version and `garden rollback`, ten times in
//!   turn; from the request (its entry id: Redis's clock) to the first
//!   evidence past the decided position, and the longest gap between two
//!   evidence entries within a second of the switch (entry ids, so at
//!   millisecond resolution).
//!
//! Run: `cargo build --release -p garden-cli && cargo bench -p
//! garden-benches --bench hotload` (the daemon part runs the built
//! `garden` and a `redis-server`).

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
    across_daemons();
}

/// Milliseconds of a stream entry id.
fn id_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Entry ids of `stream` from `from_ms` to `to_ms`.
fn ids_between(con: &mut redis::Connection, stream: &str, from_ms: u64, to_ms: u64) -> Vec<u64> {
    let entries: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg(from_ms)
        .arg(to_ms)
        .query(con)
        .unwrap_or_default();
    entries.iter().map(|(id, _)| id_ms(id)).collect()
}

/// One daemon, deploys and rollbacks in turn while plans flow.
fn across_daemons() {
    use garden_host::bus::{Bus, RedisOptions};
    use std::sync::atomic::{AtomicBool, Ordering};

    const ROUNDS: usize = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    garden_registry::TrustStore::update(&garden_tests::garden_home().join("trust.toml"), |s| {
        s.add(&garden_tests::test_key().public(), "tests", "test")
    })
    .expect("trusts the test key");
    garden_tests::trust_daemon("bench");
    garden_tests::trust_daemon("producer");
    let redis = garden_tests::servers::Redis::start();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        "[[module]]\nname = \"expert-anomaly\"\ninstances = 4\n",
    )
    .expect("config");
    let mut daemon = garden_tests::garden()
        .args([
            "daemon",
            "--bus",
            &redis.url(),
            "--prefix",
            "bench",
            "--name",
            "bench",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("garden daemon starts (cargo build --release -p garden-cli first)");
    let peers = garden_tests::daemon_peers();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !garden_host::cluster::status(&redis.url(), "bench", &peers)
        .is_ok_and(|(d, _)| d.len() == 1 && d[0].instances.len() == 4 && d[0].leader_term.is_some())
    {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, url) = (stop.clone(), redis.url());
        std::thread::spawn(move || {
            let mut o = RedisOptions::new(&url);
            o.prefix = "bench".into();
            o.consumer = "producer".into();
            let mut bus = garden_tests::trusted_bus("producer", o);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                bus.publish(garden_tests::plan(n)).expect("publishes");
                bus.pump();
                n += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let next = garden_tests::rebuilt(dir.path(), "expert-anomaly", "0.2.0");
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("connection");
    let (mut latency, mut gaps, mut normal) = (Vec::new(), Vec::new(), Vec::new());
    std::thread::sleep(Duration::from_secs(2));
    let mut cold = None;
    // Two rounds to warm up: the first deploy compiles the new code (with
    // a lead of two heartbeats, as the code is not compiled yet).
    for round in 0..ROUNDS + 2 {
        let mut args: Vec<String> = if round % 2 == 0 {
            vec!["deploy".into(), next.display().to_string()]
        } else {
            vec!["rollback".into()]
        };
        args.extend(["--module", "expert-anomaly", "--name", "bench"].map(String::from));
        let out = garden_tests::garden()
            .args(&args)
            .args(["--bus", &redis.url(), "--prefix", "bench", "--wait", "10"])
            .output()
            .expect("garden runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let request = text
            .split("request ")
            .nth(1)
            .map(|t| id_ms(t.trim()))
            .expect("a request id");
        let at = text
            .split("at bus position ")
            .nth(1)
            .and_then(|t| t.split(';').next())
            .and_then(|t| t.trim().parse::<u64>().ok())
            .expect("a switch position")
            >> 16;
        std::thread::sleep(Duration::from_millis(1_500));
        let deadline = Instant::now() + Duration::from_secs(10);
        while ids_between(&mut con, "bench:t:evidence", at, at + 100_000).is_empty() {
            assert!(Instant::now() < deadline, "no evidence past the switch");
            std::thread::sleep(Duration::from_millis(100));
        }
        let evidence = ids_between(&mut con, "bench:t:evidence", at - 1_000, at + 1_000);
        let first = evidence.iter().find(|ms| **ms >= at).copied().unwrap_or(at);
        if round < 2 {
            cold.get_or_insert(first - request);
            std::thread::sleep(Duration::from_millis(2_000));
            continue;
        }
        latency.push(first - request);
        let gap = |v: &[u64]| v.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        gaps.push(gap(&evidence));
        // The same measure a second earlier, with no switch, for scale.
        normal.push(gap(&ids_between(
            &mut con,
            "bench:t:evidence",
            at - 2_000,
            at - 1_000,
        )));
        // The next round's windows start after this one's.
        std::thread::sleep(Duration::from_millis(2_000));
    }
    println!("  request to first evidence past the switch, per round (ms): {latency:?}");
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let _ = daemon.kill();
    let _ = daemon.wait();
    for v in [&mut latency, &mut gaps, &mut normal] {
        v.sort_unstable();
    }
    println!(
        "Hot-loading across daemons: one daemon, 4 expert-anomaly instances, a plan every ms, {ROUNDS} deploys and rollbacks in turn"
    );
    println!(
        "  the first deploy, compiling: request to first evidence past the switch {} ms",
        cold.unwrap_or(0)
    );
    println!(
        "  request to the first evidence past the switch: median {} ms, max {} ms",
        latency[ROUNDS / 2],
        latency[ROUNDS - 1]
    );
    println!(
        "  longest gap between evidence entries within 1 s of the switch: median {} ms, max {} ms (without a switch: median {} ms, max {} ms)",
        gaps[ROUNDS / 2],
        gaps[ROUNDS - 1],
        normal[ROUNDS / 2],
        normal[ROUNDS - 1]
    );
}
