//! The real modules in the real host on the bundled data: the values they
//! produce are sane and the books balance.

use std::collections::{BTreeMap, HashMap};

use garden_host::Envelope;
use garden_host::config::PipelineConfig;
use garden_host::replay::{ReplayOptions, RunSummary};
use garden_host::types::{Body, FillKind, Side, Verdict};
use garden_tests::{bundled_rows, engine, test_limits};

const TOPICS: [&str; 6] = ["plan", "evidence", "scored", "decision", "fill", "feedback"];

fn run(seed: u64, variants: u32) -> (RunSummary, Vec<std::sync::Arc<Envelope>>) {
    run_on(seed, variants, 0)
}

fn run_on(seed: u64, variants: u32, threads: usize) -> (RunSummary, Vec<std::sync::Arc<Envelope>>) {
    garden_tests::replay_embedded(seed, variants, threads, &bundled_rows(), &TOPICS)
}

#[test]
fn plans_evidence_decisions_and_fills_are_sane_and_equity_adds_up() {
    let (summary, tapped) = run(7, 4);
    let rows = bundled_rows();
    let bar_at: HashMap<i64, _> = rows.iter().map(|r| (r.time, *r)).collect();
    let mut plans = BTreeMap::new();
    let (mut evidence, mut scored, mut decisions, mut fills, mut feedback) =
        (0, 0, Vec::new(), Vec::new(), Vec::new());
    for m in &tapped {
        match &m.body {
            Body::Plan(p) => {
                let s = match p.side {
                    Side::Long => 1.0,
                    Side::Short => -1.0,
                };
                assert!(
                    (p.entry - p.stop) * s > 0.0,
                    "stop on the loss side of entry: {p:?}"
                );
                assert!(
                    (p.target - p.entry) * s > 0.0,
                    "target on the profit side: {p:?}"
                );
                assert_eq!(p.origin, m.source, "plan origin is its publisher");
                assert!(p.confidence > 0.0 && p.confidence < 1.0 && p.size > 0.0 && p.horizon >= 1);
                assert!(bar_at.contains_key(&p.time), "plan written on a real bar");
                plans.insert(p.id.clone(), p.clone());
            }
            Body::Evidence(e) => {
                assert!(
                    plans.contains_key(&e.plan_id),
                    "evidence about a known plan"
                );
                assert!(e.llr.is_finite() && !e.reason.is_empty());
                evidence += 1;
            }
            Body::Scored(sp) => {
                assert!(sp.confidence > 0.0 && sp.confidence < 1.0);
                let expected = 1.0 / (1.0 + (-sp.log_odds).exp());
                assert!((sp.confidence - expected).abs() < 1e-12);
                assert!(
                    sp.missing.is_empty(),
                    "the one expert always answers in time"
                );
                scored += 1;
            }
            Body::Decision(d) => {
                match d.verdict {
                    Verdict::Reject => assert_eq!(d.size, 0.0),
                    Verdict::Approve => assert_eq!(d.size, d.plan.size),
                    Verdict::Modify => assert!(d.size > 0.0 && d.size < d.plan.size),
                }
                assert!(!d.reason.is_empty());
                assert_eq!(
                    m.key, d.plan.origin,
                    "decision is addressed to the originating variant"
                );
                decisions.push(d.clone());
            }
            Body::Fill(f) => fills.push(f.clone()),
            Body::Feedback(f) => feedback.push(f.clone()),
            _ => {}
        }
    }
    assert!(plans.len() > 20, "a real run writes plans: {}", plans.len());
    assert_eq!(evidence, 4 * plans.len(), "four experts judge every plan");
    assert_eq!(scored, plans.len());
    assert_eq!(decisions.len(), plans.len());
    let approved = decisions
        .iter()
        .filter(|d| d.verdict != Verdict::Reject)
        .count();
    assert!(approved > 0, "some plans are approved");

    // Fills happen on real bars, within the bar's range widened by the
    // configured slippage (0.5 bps); entries at the bar's open.
    let slip = 0.5 / 10_000.0;
    for f in &fills {
        let bar = bar_at.get(&f.time).expect("fill on a real bar");
        assert!(
            f.price >= bar.low * (1.0 - slip) - 1e-12 && f.price <= bar.high * (1.0 + slip) + 1e-12,
            "{f:?} outside {bar:?}"
        );
        assert!(f.fee >= 0.0 && f.size > 0.0);
        if f.kind == FillKind::Entry {
            assert!(
                (f.price - bar.open).abs() <= bar.open * slip + 1e-12,
                "entry at the open"
            );
            let plan = &plans[&f.plan_id];
            assert!(f.time > plan.time, "filled at a later bar than the plan's");
        }
    }
    let entries = fills.iter().filter(|f| f.kind == FillKind::Entry).count();
    assert_eq!(entries, approved, "every approved plan is entered");
    assert_eq!(fills.len(), 2 * entries, "every entry is closed by the end");

    // Books balance per variant: price moves minus fees = feedback pnl =
    // final value minus starting equity.
    for v in &summary.variants {
        let Some(score) = &v.score else { continue };
        let mine: Vec<_> = fills.iter().filter(|f| f.origin == v.id).collect();
        let mut from_fills = 0.0;
        for entry in mine.iter().filter(|f| f.kind == FillKind::Entry) {
            let exit = mine
                .iter()
                .find(|f| f.plan_id == entry.plan_id && f.kind != FillKind::Entry)
                .expect("closed");
            let s = if entry.side == Side::Long { 1.0 } else { -1.0 };
            from_fills += s * (exit.price - entry.price) * entry.size - entry.fee - exit.fee;
        }
        let pnl: f64 = feedback
            .iter()
            .filter(|f| f.origin == v.id)
            .map(|f| f.pnl)
            .sum();
        assert!(
            (pnl - from_fills).abs() < 1e-6,
            "{}: feedback {pnl} vs fills {from_fills}",
            v.id
        );
        assert!(
            (score.final_value - 100_000.0 - pnl).abs() < 1e-6,
            "{}: equity {} vs pnl {pnl}",
            v.id,
            score.final_value
        );
        assert!(score.max_drawdown >= 0.0 && score.max_drawdown < 1.0);
    }
    assert_eq!(
        summary.runtime.failures, 0,
        "the real modules never fail: {:?}",
        summary.instances
    );
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another_population() {
    let strip = garden_tests::without_timings;
    let (a, ta) = run(42, 5);
    let (b, tb) = run(42, 5);
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(ta.len(), tb.len());
    assert!(
        ta.iter().zip(&tb).all(|(x, y)| x == y),
        "identical message streams"
    );
    let (one_thread, t1) = run_on(42, 12, 1);
    let (two_threads, t2) = run_on(42, 12, 2);
    assert_eq!(
        strip(&one_thread),
        strip(&two_threads),
        "the number of threads does not change the result"
    );
    assert!(t1 == t2, "nor the message stream");
    for batch in [1, 7] {
        let (batched, tb) =
            garden_tests::replay_embedded_in_batches(42, 12, 0, batch, &bundled_rows(), &TOPICS);
        assert_eq!(
            garden_tests::without_costs(&one_thread),
            garden_tests::without_costs(&batched),
            "{batch} messages per call give what 64 do"
        );
        assert!(t1 == tb, "and the same message stream ({batch} per call)");
    }
    let (c, _) = run(43, 5);
    assert_ne!(strip(&a)["variants"], strip(&c)["variants"]);
}

#[test]
fn variants_packed_in_cohorts_run_exactly_as_variants_alone() {
    // Evolution runs (births, retirements, snapshots), the population grows
    // past one cohort of 8, and the name table of every instance starts
    // again every call: none of it may change a message or a score.
    let rows = &bundled_rows()[..1500];
    let (alone, ta) = garden_tests::replay_embedded_changed(7, 12, 0, 0, rows, &TOPICS, |_| {});
    let (packed, tp) = garden_tests::replay_embedded_changed(7, 12, 0, 0, rows, &TOPICS, |c| {
        c.limits.max_names = 2;
        for m in c.modules.iter_mut().filter(|m| m.name == "alpha-ema") {
            m.cohort = 8;
        }
    });
    assert!(
        alone.lineage.len() > 12,
        "births happened: {}",
        alone.lineage.len()
    );
    let shared = |s: &garden_host::replay::RunSummary| {
        s.instances.iter().filter(|i| i.cohort != i.id).count()
    };
    assert_eq!(shared(&alone), 0);
    assert!(shared(&packed) >= 14, "variants shared sandboxes");
    // Where each variant ran is all that may differ.
    let placed = |s: &garden_host::replay::RunSummary| {
        let mut v = garden_tests::without_costs(s);
        for i in v["instances"].as_array_mut().into_iter().flatten() {
            i.as_object_mut().map(|i| i.remove("cohort"));
        }
        v
    };
    assert_eq!(
        placed(&alone),
        placed(&packed),
        "cohorts of 8 give what instances alone do"
    );
    assert!(ta == tp, "and the same message stream");
    assert_eq!(packed.runtime.failures, 0);
}

#[test]
fn limits_from_test_config_still_run_the_real_pipeline() {
    // The real modules fit comfortably inside the tight test limits.
    let config = PipelineConfig::embedded().expect("embedded pipeline");
    let engine = engine(test_limits());
    let modules = config
        .load(&engine, &garden_tests::pipeline_trust())
        .expect("modules load");
    let options = ReplayOptions {
        seed: 1,
        variants: Some(2),
        symbol: "EURUSD".into(),
        data_name: "bundled".into(),
        threads: 0,
        total_bars: 0,
        steps_per_year: 0.0,
        per_call: 0,
        deploys: Vec::new(),
    };
    let rows = bundled_rows();
    let summary =
        garden_host::replay::replay(engine, &config, &modules, &rows[..500], options, |_| {})
            .expect("runs");
    assert_eq!(summary.runtime.failures, 0);
    assert_eq!(summary.bars, 500);
    assert!(summary.messages > 500 * 4);
}

#[test]
fn the_tape_module_writes_one_token_per_bar_after_warmup() {
    use garden_host::bus::MemoryBus;
    use garden_host::{InstanceSpec, Runtime, genes};
    let engine = engine(
        PipelineConfig::embedded()
            .expect("embedded pipeline")
            .limits,
    );
    let tape = garden_tests::module(&engine, "tape");
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(64), 1);
    rt.host_subscribe("tape");
    rt.spawn(InstanceSpec {
        id: "tape".into(),
        module: tape.clone(),
        params: genes::defaults(&tape.info().genes),
        settings: vec![],
        snapshot: None,
    })
    .expect("spawns");
    for row in &bundled_rows()[..120] {
        rt.publish(garden_host::feed::bar_message("bar", "EURUSD", row));
        rt.run_until_idle();
    }
    let tokens: Vec<String> = rt
        .take_host_messages()
        .iter()
        .filter_map(|m| match &m.body {
            Body::Tape(t) => Some(t.token.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 70, "120 bars minus 50 of warm-up");
    for t in &tokens {
        let c: Vec<char> = t.chars().collect();
        assert_eq!(c.len(), 13, "{t}");
        assert!("+-=".contains(c[0]) && "udn".contains(c[12]), "{t}");
        for k in [2, 4, 6, 8, 10] {
            assert!("012".contains(c[k]), "{t}");
        }
    }
    let distinct: std::collections::BTreeSet<&String> = tokens.iter().collect();
    assert!(
        distinct.len() > 10,
        "real bars give varied tokens: {distinct:?}"
    );
}
