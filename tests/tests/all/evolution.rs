//! Evolution on the real modules and the bundled data: the lineage keeps its
//! invariants (cap, trigger timing, causes, out-of-sample freeze, the
//! control), diversity gaps inject variants, snapshots are inherited, and a
//! child whose snapshot is refused is a failed birth, not a crash.

use garden_host::bus::{Bus, MemoryBus};
use garden_host::config::EvolutionConfig;
use garden_host::config::PipelineConfig;
use garden_host::replay::{ReplayOptions, RunSummary, replay};
use garden_host::replication::BirthCause;
use garden_host::runtime::InstanceState;
use garden_host::types::{Body, Envelope, Feedback, FillKind, Snapshot};
use garden_host::{InstanceSpec, Runtime, genes};
use garden_tests::{bundled_rows, engine, module};

fn run(evolution: EvolutionConfig, variants: u32, seed: u64) -> RunSummary {
    let mut config = PipelineConfig::embedded().expect("embedded pipeline");
    config.evolution = evolution;
    let engine = engine(config.limits.clone());
    let modules = config
        .load(&engine, &garden_tests::pipeline_trust())
        .expect("modules load");
    let options = ReplayOptions {
        seed,
        variants: Some(variants),
        symbol: "EURUSD".into(),
        data_name: "bundled".into(),
        threads: 0,
        total_bars: 0,
        steps_per_year: 0.0,
        per_call: 0,
        deploys: Vec::new(),
    };
    replay(engine, &config, &modules, &bundled_rows(), options, |_| {}).expect("runs")
}

#[test]
fn lineage_keeps_its_invariants() {
    let cfg = PipelineConfig::embedded()
        .expect("embedded pipeline")
        .evolution;
    let s = run(cfg.clone(), 8, 3);
    let e = s.evolution.as_ref().expect("evolution ran");
    assert!(e.counts.generations >= 5, "{:?}", e.counts);
    assert_eq!(e.variants_tried, s.lineage.len());
    assert!(s.lineage.len() > 8, "children were born");
    let cut = e.cut_bar;
    assert_eq!(cut, 3500);
    for l in &s.lineage {
        match l.birth_cause {
            BirthCause::Initial => {
                assert!(l.parents.is_empty() && l.birth_bar == 0 && l.generation == 0)
            }
            BirthCause::Generation => {
                assert_eq!(
                    (l.birth_bar + 1) % cfg.generation_bars,
                    0,
                    "{} born off schedule",
                    l.id
                );
                assert!(!l.parents.is_empty() && l.parents.len() <= 2);
            }
            BirthCause::Threshold => {
                assert_eq!((l.birth_bar + 1) % cfg.threshold_every, 0);
                assert_eq!(l.parents.len(), 1);
            }
            BirthCause::Diversity | BirthCause::Deploy => assert!(l.parents.is_empty()),
            BirthCause::Recovery | BirthCause::Regime => assert_eq!(l.parents.len(), 1),
        }
        if !l.parents.is_empty() {
            let parent_gen = l
                .parents
                .iter()
                .map(|p| {
                    s.lineage
                        .iter()
                        .find(|x| &x.id == p)
                        .expect("parent recorded")
                        .generation
                })
                .max()
                .unwrap_or(0);
            assert_eq!(l.generation, parent_gen + 1);
            // Crossover only within one code.
            for p in &l.parents {
                let parent = s.lineage.iter().find(|x| &x.id == p).expect("parent");
                assert_eq!(parent.component, l.component);
            }
        }
        if l.birth_cause != BirthCause::Initial {
            assert!(
                l.birth_bar + 1 < cut,
                "nothing is bred out of sample: {} at {}",
                l.id,
                l.birth_bar
            );
        }
        if let Some(d) = l.death_bar {
            assert!(d + 1 < cut, "nothing is retired out of sample");
            assert!(l.death_cause.is_some());
        }
        if l.death_bar.is_none() {
            assert!(
                l.in_sample.is_some() && l.out_of_sample.is_some(),
                "{} measured on both parts",
                l.id
            );
        }
        for (_, f) in &l.fitness {
            assert!(f.is_finite() || *f == f64::NEG_INFINITY);
        }
    }
    // The control is never retired.
    let control = s.lineage.iter().find(|l| l.control).expect("control");
    assert_eq!(control.id, "alpha-ema.0");
    assert!(control.death_bar.is_none());
    // The cap holds at every bar.
    for bar in 0..s.bars {
        let living = s
            .lineage
            .iter()
            .filter(|l| l.birth_bar <= bar && l.death_bar.is_none_or(|d| d > bar))
            .count();
        assert!(living <= cfg.cap, "{living} alive at bar {bar}");
    }
    // Retired variants left nothing open: every account was closed out.
    for v in &s.variants {
        if let Some(score) = &v.score {
            let open = score
                .metrics
                .iter()
                .find(|(n, _)| n == "open")
                .map_or(0.0, |(_, x)| *x);
            assert_eq!(open, 0.0, "{} has open positions", v.id);
        }
    }
    assert!(e.best.is_some() && e.control.is_some());
    // The regime module's context changes are kept: fitness per label, and
    // children bred from the best of a returning regime.
    assert!(
        !control.fitness_by_label.is_empty(),
        "fitness is kept per regime label"
    );
    assert!(
        e.counts.births.get("regime").copied().unwrap_or(0) > 0,
        "{:?}",
        e.counts
    );
}

#[test]
fn a_diversity_gap_injects_fresh_variants_and_none_without_a_gap() {
    let always = EvolutionConfig {
        diversity_min: 1.0,
        threshold: None,
        ..PipelineConfig::embedded()
            .expect("embedded pipeline")
            .evolution
    };
    let s = run(always, 6, 5);
    let injected = s
        .lineage
        .iter()
        .filter(|l| l.birth_cause == BirthCause::Diversity)
        .count();
    assert!(injected > 0, "collapsed genes trigger injections");
    let never = EvolutionConfig {
        diversity_min: 0.0,
        threshold: None,
        ..PipelineConfig::embedded()
            .expect("embedded pipeline")
            .evolution
    };
    let s = run(never, 6, 5);
    assert_eq!(
        s.lineage
            .iter()
            .filter(|l| l.birth_cause == BirthCause::Diversity)
            .count(),
        0
    );
}

fn feedback(to: &str, pnl: f64) -> Envelope {
    Envelope {
        topic: "feedback".into(),
        key: to.into(),
        seq: 0,
        time: 0,
        source: "test".into(),
        body: Body::Feedback(Feedback {
            plan_id: "p".into(),
            origin: to.into(),
            pnl,
            exit: FillKind::Target,
            bars_held: 1,
        }),
        trace: garden_host::message::Trace::default(),
    }
}

#[test]
fn a_child_inherits_its_parents_snapshot_and_a_refused_one_is_a_failed_birth() {
    let engine = engine(
        PipelineConfig::embedded()
            .expect("embedded pipeline")
            .limits,
    );
    let alpha = module(&engine, "alpha-ema");
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(64), 1);
    let params = genes::defaults(&alpha.info().genes);
    let spec = |id: &str, snapshot: Option<Snapshot>| InstanceSpec {
        id: id.into(),
        module: alpha.clone(),
        params: params.clone(),
        settings: vec![],
        snapshot,
    };
    rt.spawn(spec("parent", None)).expect("spawns");
    for pnl in [1.0, -1.0, 2.0] {
        rt.publish(feedback("parent", pnl));
    }
    rt.run_until_idle();
    let snap = rt.snapshot_of("parent").expect("alpha saves a snapshot");
    assert_eq!(snap.version, 2);
    let wins = f64::from_le_bytes(snap.data[..8].try_into().expect("8 bytes"));
    let closed = f64::from_le_bytes(snap.data[8..16].try_into().expect("8 bytes"));
    assert_eq!((wins, closed), (2.0, 3.0), "two wins of three");
    assert!(
        snap.data.ends_with(b"parent"),
        "the snapshot names its owner"
    );
    rt.spawn(spec("child", Some(snap.clone()))).expect("spawns");
    let child = rt.snapshot_of("child").expect("the child saves a snapshot");
    assert_eq!(
        child.data[..16],
        snap.data[..16],
        "the child starts from its parent's track record"
    );
    assert!(child.data.ends_with(b"child"), "and numbers its own plans");
    // A snapshot the module refuses: a failed birth, the host goes on.
    rt.spawn(spec(
        "broken",
        Some(Snapshot {
            version: 99,
            data: vec![1, 2, 3],
        }),
    ))
    .expect("spawn call succeeds");
    let (state, error) = rt.state_of("broken").expect("known");
    assert!(
        matches!(state, InstanceState::Quarantined { .. }),
        "{state:?}"
    );
    assert!(error.unwrap_or_default().contains("snapshot version 99"));
    assert!(matches!(
        rt.state_of("parent"),
        Some((InstanceState::Running, _))
    ));
}

#[test]
fn retiring_an_instance_drains_it_and_stops_it() {
    let engine = engine(
        PipelineConfig::embedded()
            .expect("embedded pipeline")
            .limits,
    );
    let alpha = module(&engine, "alpha-ema");
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(64), 1);
    rt.spawn(InstanceSpec {
        id: "a".into(),
        module: alpha.clone(),
        params: genes::defaults(&alpha.info().genes),
        settings: vec![],
        snapshot: None,
    })
    .expect("spawns");
    rt.publish(feedback("a", 1.0));
    assert!(rt.retire("a", 0));
    assert!(!rt.retire("a", 0), "retiring twice is refused");
    rt.publish(feedback("a", 1.0)); // after retirement: not delivered
    rt.run_until_idle();
    let report = rt
        .instances()
        .into_iter()
        .find(|i| i.id == "a")
        .expect("report");
    assert_eq!(report.state, InstanceState::Retired);
    assert_eq!(
        report.calls, 2,
        "the queued feedback and the retirement notice, nothing after"
    );
}

fn fragile_config(dir: &std::path::Path, variants: u32) -> (PipelineConfig, String) {
    let mut manifest = garden_tests::fixture_manifest("fragile");
    manifest.genes = vec![
        garden_registry::manifest::GeneSpec {
            name: "fail".into(),
            kind: "boolean".into(),
            min: 0.0,
            max: 1.0,
            default: 0.0,
            scale: 0.0,
        },
        garden_registry::manifest::GeneSpec {
            name: "panic-at".into(),
            kind: "int".into(),
            min: 0.0,
            max: 1000.0,
            default: 0.0,
            scale: 0.0,
        },
    ];
    let path = dir.join("fragile.wasm");
    std::fs::write(
        &path,
        garden_tests::signed(&garden_tests::fixture_bytes("fragile"), &manifest),
    )
    .expect("write");
    let text = format!(
        "fitness_topic = \"fitness\"\n[limits]\nmax_failures = 3\nbackoff_initial = 1\nbackoff_max = 2\n\
         [evolution]\ngeneration_bars = 100\nmin_age_bars = 50\nthreshold_every = 1000\ncap = 12\nout_of_sample = 0.2\n\
         [[module]]\nname = \"fixture-fragile\"\npath = {:?}\npopulation = true\ninstances = {variants}\n",
        path.display().to_string()
    );
    (PipelineConfig::parse(&text, "test").expect("config"), text)
}

#[test]
fn a_quarantined_variant_is_replaced_by_a_mutant_of_a_healthy_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = fragile_config(dir.path(), 8);
    let engine = engine(config.limits.clone());
    let modules = config
        .load(&engine, &garden_tests::pipeline_trust())
        .expect("loads");
    let options = ReplayOptions {
        seed: 11,
        variants: Some(8),
        symbol: "EURUSD".into(),
        data_name: "bundled".into(),
        threads: 0,
        total_bars: 0,
        steps_per_year: 0.0,
        per_call: 0,
        deploys: Vec::new(),
    };
    let rows = bundled_rows();
    let s = replay(engine, &config, &modules, &rows[..400], options, |_| {}).expect("runs");
    let e = s.evolution.as_ref().expect("evolution");
    assert!(
        e.counts.quarantined > 0,
        "some random variants fail: {:?}",
        e.counts
    );
    let recoveries: Vec<_> = s
        .lineage
        .iter()
        .filter(|l| l.birth_cause == BirthCause::Recovery)
        .collect();
    assert!(!recoveries.is_empty());
    for r in recoveries {
        let parent = s
            .lineage
            .iter()
            .find(|l| Some(&l.id) == r.parents.first())
            .expect("parent");
        let fail = parent
            .genes
            .iter()
            .find(|(n, _)| n == "fail")
            .map(|(_, v)| *v);
        assert_eq!(fail, Some(0.0), "{} was bred from a healthy variant", r.id);
        assert!(
            parent.death_bar.is_none_or(|d| d >= r.birth_bar),
            "the parent was alive at the birth"
        );
    }
    for l in s.lineage.iter().filter(|l| {
        l.death_cause
            .as_deref()
            .is_some_and(|c| c.starts_with("quarantined"))
    }) {
        assert!(
            l.death_cause
                .as_deref()
                .is_some_and(|c| c.contains("fails by design")),
            "{:?}",
            l.death_cause
        );
    }
}

#[test]
fn an_instance_restarted_after_a_trap_resumes_from_its_last_good_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut config, _) = fragile_config(dir.path(), 1);
    config.limits.snapshot_every = 1;
    config.limits.max_failures = 10;
    let engine = engine(config.limits.clone());
    let modules = config
        .load(&engine, &garden_tests::pipeline_trust())
        .expect("loads");
    let module = modules[0].1.clone();
    let mut params = genes::defaults(&module.info().genes);
    params[1].value = garden_host::types::GeneValue::Int(5);
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(64), 1);
    rt.host_subscribe("noise");
    rt.spawn(InstanceSpec {
        id: "f".into(),
        module,
        params,
        settings: vec![],
        snapshot: None,
    })
    .expect("spawns");
    let rows = bundled_rows();
    for row in &rows[..8] {
        rt.publish(garden_host::feed::bar_message("bar", "EURUSD", row));
        rt.run_until_idle();
    }
    let counts: Vec<u64> = rt
        .take_host_messages()
        .iter()
        .filter_map(|m| match &m.body {
            Body::Custom(b) => Some(u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))),
            _ => None,
        })
        .collect();
    // Bar 5 trapped; the restart resumed from the snapshot taken after bar 4,
    // so the count goes on at 5 instead of starting again at 1.
    assert_eq!(counts, vec![1, 2, 3, 4, 5, 6, 7], "{counts:?}");
    let report = rt.instances().into_iter().next().expect("report");
    assert_eq!(report.restarts, 1);
    assert_eq!(report.failures.get("panic").copied(), Some(1));
}

/// What a cohort of fragile fixtures did with 8 bars: each member's
/// counts, reports and the dead letters. `members` are (id, fails on
/// every bar, trips once at this count unless restored).
fn fragile_cohort(
    members: &[(&str, bool, i64)],
) -> (
    std::collections::BTreeMap<String, Vec<u64>>,
    Vec<garden_host::runtime::InstanceReport>,
    Vec<garden_host::bus::DeadLetter>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut config, _) = fragile_config(dir.path(), 4);
    config.modules[0].cohort = 4;
    config.limits.snapshot_every = 1;
    config.limits.max_failures = 3;
    let engine = engine(config.limits.clone());
    let modules = config
        .load(&engine, &garden_tests::pipeline_trust())
        .expect("loads");
    let module = modules[0].1.clone();
    assert_eq!(module.cohort(), 4);
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(64), 1);
    rt.host_subscribe("noise");
    for &(id, fail, panic_at) in members {
        let mut params = genes::defaults(&module.info().genes);
        params[0].value = garden_host::types::GeneValue::Boolean(fail);
        params[1].value = garden_host::types::GeneValue::Int(panic_at);
        rt.spawn(InstanceSpec {
            id: id.into(),
            module: module.clone(),
            params,
            settings: vec![],
            snapshot: None,
        })
        .expect("spawns");
    }
    for row in &bundled_rows()[..8] {
        rt.publish(garden_host::feed::bar_message("bar", "EURUSD", row));
        rt.run_until_idle();
    }
    let mut counts: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for m in rt.take_host_messages() {
        if let Body::Custom(b) = &m.body {
            let n = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
            counts.entry(m.source.clone()).or_default().push(n);
        }
    }
    (counts, rt.instances(), rt.bus().dead_letters())
}

#[test]
fn a_trap_in_a_cohort_costs_the_cohort_a_restart_and_the_variants_nothing() {
    // f2 trips at its fifth bar (unless it was restored from a snapshot),
    // inside a call that carries the bar for all three. The cohort restarts,
    // every member from its snapshot, and the bar goes again one member at
    // a time: restored, f2 no longer trips, so nothing is lost at all.
    let (counts, reports, dead) =
        fragile_cohort(&[("f1", false, 0), ("f2", false, 5), ("f3", false, 0)]);
    let all: Vec<u64> = (1..=8).collect();
    for id in ["f1", "f2", "f3"] {
        assert_eq!(
            counts.get(id),
            Some(&all),
            "{id}: every bar once, in order: {counts:?}"
        );
    }
    assert!(
        reports.iter().all(|r| r.cohort == "f1"),
        "one sandbox carries all three"
    );
    for r in &reports {
        assert!(r.failures.is_empty(), "{}: {:?}", r.id, r.failures);
        assert_eq!(r.calls, 8);
        assert_eq!(r.restarts, 1, "{} restarted with its cohort", r.id);
        assert_eq!(r.state, InstanceState::Running);
    }
    assert!(dead.is_empty(), "{dead:?}");

    // f0 fails on every bar: it alone is quarantined; the others handle
    // every bar once.
    let (counts, reports, dead) =
        fragile_cohort(&[("f0", true, 0), ("f1", false, 0), ("f3", false, 0)]);
    assert_eq!(counts.get("f1"), Some(&all), "{counts:?}");
    assert_eq!(counts.get("f3"), Some(&all), "{counts:?}");
    assert!(!counts.contains_key("f0"));
    let report = |id: &str| reports.iter().find(|r| r.id == id).expect("report");
    assert!(matches!(
        report("f0").state,
        InstanceState::Quarantined { .. }
    ));
    assert_eq!(report("f0").failures.get("panic").copied(), Some(3));
    assert!(report("f1").failures.is_empty() && report("f3").failures.is_empty());
    assert_eq!(report("f1").state, InstanceState::Running);
    assert!(dead.iter().all(|d| d.instance == "f0"), "{dead:?}");
    assert_eq!(
        dead.len(),
        3,
        "the bars it failed on, until its quarantine unsubscribed it"
    );
}

#[test]
fn lineage_is_stored_in_postgresql_and_read_back() {
    let pg = garden_tests::servers::Postgres::start();
    let s = run(
        PipelineConfig::embedded()
            .expect("embedded pipeline")
            .evolution,
        4,
        9,
    );
    let records: Vec<(String, String)> = s
        .lineage
        .iter()
        .map(|r| (r.id.clone(), serde_json::to_string(r).expect("json")))
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = garden_registry::Store::connect(&pg.url())
            .await
            .expect("connects");
        store
            .save_run(
                "run-9",
                "2026-11-25T00:00:00Z",
                9,
                "bundled",
                "{}",
                &records,
            )
            .await
            .expect("saves");
        assert_eq!(
            store.latest_run().await.expect("latest"),
            Some("run-9".to_string())
        );
        let back = store.lineage("run-9").await.expect("reads");
        assert_eq!(back.len(), s.lineage.len());
        let parsed: Vec<garden_host::replication::LineageRecord> = back
            .iter()
            .map(|t| serde_json::from_str(t).expect("parses"))
            .collect();
        for r in &s.lineage {
            let back = parsed.iter().find(|p| p.id == r.id).expect("present");
            assert_eq!(
                serde_json::to_value(back).expect("json"),
                serde_json::to_value(r).expect("json"),
                "{} survives the round trip",
                r.id
            );
        }
    });
}
