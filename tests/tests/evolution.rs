//! Evolution on the real modules and the bundled data: the lineage keeps its
//! invariants (cap, trigger timing, causes, out-of-sample freeze, the
//! control), diversity gaps inject variants, snapshots are inherited, and a
//! child whose snapshot is refused is a failed birth, not a crash.

use garden_host::bus::MemoryBus;
use garden_host::pipeline::PipelineConfig;
use garden_host::replication::{BirthCause, EvolutionConfig};
use garden_host::run::{ReplayOptions, RunSummary, replay};
use garden_host::runtime::InstanceState;
use garden_host::types::{Body, Envelope, Feedback, FillKind, Snapshot};
use garden_host::{InstanceSpec, Runtime, population};
use garden_tests::{bundled_rows, engine, module, trust};

fn run(evolution: EvolutionConfig, variants: u32, seed: u64) -> RunSummary {
    let mut config = PipelineConfig::embedded();
    config.evolution = evolution;
    let engine = engine(config.limits.clone());
    let modules = config.load(&engine, &trust()).expect("modules load");
    let options = ReplayOptions {
        seed,
        variants: Some(variants),
        symbol: "EURUSD".into(),
        data_name: "bundled".into(),
        threads: 0,
        total_bars: 0,
        steps_per_year: 0.0,
    };
    replay(engine, &config, &modules, &bundled_rows(), options, |_| {}).expect("runs")
}

#[test]
fn lineage_keeps_its_invariants() {
    let cfg = PipelineConfig::embedded().evolution;
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
            BirthCause::Diversity => assert!(l.parents.is_empty()),
            BirthCause::Recovery => assert_eq!(l.parents.len(), 1),
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
}

#[test]
fn a_diversity_gap_injects_fresh_variants_and_none_without_a_gap() {
    let always = EvolutionConfig {
        diversity_min: 1.0,
        threshold: None,
        ..PipelineConfig::embedded().evolution
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
        ..PipelineConfig::embedded().evolution
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
    }
}

#[test]
fn a_child_inherits_its_parents_snapshot_and_a_refused_one_is_a_failed_birth() {
    let engine = engine(PipelineConfig::embedded().limits);
    let alpha = module(&engine, "alpha-ema");
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(64), 1);
    let params = population::defaults(&alpha.info().genes);
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
    assert_eq!(snap.version, 1);
    let wins = f64::from_le_bytes(snap.data[..8].try_into().expect("8 bytes"));
    let closed = f64::from_le_bytes(snap.data[8..].try_into().expect("8 bytes"));
    assert_eq!((wins, closed), (2.0, 3.0), "two wins of three");
    rt.spawn(spec("child", Some(snap.clone()))).expect("spawns");
    assert_eq!(
        rt.snapshot_of("child"),
        Some(snap),
        "the child starts from its parent's state"
    );
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
    let engine = engine(PipelineConfig::embedded().limits);
    let alpha = module(&engine, "alpha-ema");
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(64), 1);
    rt.spawn(InstanceSpec {
        id: "a".into(),
        module: alpha.clone(),
        params: population::defaults(&alpha.info().genes),
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
