//! Curators in the embedded pipeline on the bundled data: every curator
//! acts, a vetoed plan is never filled, every verdict is in by its
//! deadline, the trader's per-curator reports agree with what was
//! published, and a fixed seed repeats it all exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use garden_host::Envelope;
use garden_host::types::{Body, CuratorAction, Verdict};
use garden_tests::{bundled_rows, replay_embedded, without_timings};

/// The curators of the embedded pipeline, by the stage they govern.
const FUSION: [&str; 1] = ["curator-regime"];
const DECISION: [&str; 4] = [
    "curator-cost",
    "curator-timing",
    "curator-compliance",
    "curator-performance",
];
const TRADER: [&str; 1] = ["curator-slippage"];

const TOPICS: [&str; 5] = ["bar", "curation", "scored", "decision", "fill"];

/// A report's metric by name.
fn metric(summary: &garden_host::replay::RunSummary, subject: &str, name: &str) -> f64 {
    let report = summary
        .reports
        .iter()
        .find(|r| r.subject == subject)
        .unwrap_or_else(|| panic!("no report {subject}"));
    report
        .metrics
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("{subject} reports no {name}"))
}

fn curators() -> impl Iterator<Item = &'static str> {
    FUSION.into_iter().chain(DECISION).chain(TRADER)
}

#[test]
fn every_curator_acts_and_a_vetoed_plan_is_never_filled() {
    let rows = bundled_rows();
    let (summary, tapped) = replay_embedded(7, 6, 0, &rows, &TOPICS);

    // Every curator spoke, and did more than pass.
    let mut acted: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for m in &tapped {
        if let Body::Curation(c) = &m.body {
            assert_eq!(*m.source, c.curator, "a curator speaks for itself");
            let name = curators()
                .find(|n| *n == c.curator)
                .unwrap_or_else(|| panic!("unknown curator {}", c.curator));
            let e = acted.entry(name).or_default();
            e.0 += 1;
            e.1 += usize::from(c.action != CuratorAction::Pass);
        }
    }
    for name in curators() {
        let (spoke, did) = acted.get(name).copied().unwrap_or_default();
        assert!(spoke > 0, "{name} gave no verdict");
        assert!(did > 0, "{name} only ever passed ({spoke} verdicts)");
    }

    // A plan vetoed at fusion or decision is rejected with the veto's name,
    // and no plan with a veto anywhere is ever filled.
    let mut vetoed = BTreeSet::new();
    let mut approved = 0;
    let mut vetoes_at_decision: BTreeMap<String, f64> = BTreeMap::new();
    for m in &tapped {
        if let Body::Decision(d) = &m.body {
            let veto = d.curation.iter().find(|c| c.action == CuratorAction::Veto);
            if let Some(v) = veto {
                assert_eq!(d.verdict, Verdict::Reject, "{d:?}");
                assert!(d.reason.starts_with(&format!("vetoed by {}", v.curator)));
                vetoed.insert(d.plan.id.clone());
            } else if d.verdict != Verdict::Reject {
                approved += 1;
            }
            for c in d
                .curation
                .iter()
                .filter(|c| c.action == CuratorAction::Veto)
            {
                *vetoes_at_decision.entry(c.curator.clone()).or_default() += 1.0;
            }
            let names: Vec<&str> = d.curation.iter().map(|c| c.curator.as_str()).collect();
            let expected: Vec<&str> = FUSION.into_iter().chain(DECISION).collect();
            assert_eq!(names, expected, "every curator recorded, in order");
        }
    }
    assert!(!vetoed.is_empty());
    let mut filled_with_slippage = 0;
    for m in &tapped {
        if let Body::Fill(f) = &m.body
            && f.kind == garden_host::types::FillKind::Entry
        {
            assert!(
                !vetoed.contains(&f.plan_id),
                "vetoed {} was filled",
                f.plan_id
            );
            assert!(
                f.curation.iter().all(|c| c.action != CuratorAction::Veto),
                "{f:?}"
            );
            assert_eq!(f.curation.len(), 6, "the entry records all six");
            filled_with_slippage += 1;
        }
    }
    assert!(filled_with_slippage > 0);

    // The trader's reports agree with what the decisions carried, nobody
    // was missing (every verdict is in within the bar), and the trader
    // stage's curator answered every approved decision.
    for name in FUSION.into_iter().chain(DECISION) {
        let counted = vetoes_at_decision.get(name).copied().unwrap_or(0.0);
        assert_eq!(
            metric(&summary, &format!("curator:{name}"), "vetoes"),
            counted,
            "{name}"
        );
    }
    for name in curators() {
        assert_eq!(
            metric(&summary, &format!("curator:{name}"), "missing"),
            0.0,
            "{name}"
        );
    }
    assert_eq!(
        metric(&summary, "curator:curator-slippage", "verdicts"),
        f64::from(approved)
    );
    // What the vetoed plans would have made is reported.
    let closed = metric(&summary, "curator:curator-regime", "vetoed-closed");
    assert!(closed > 0.0, "regime's vetoed plans were followed");

    // The same seed repeats everything.
    let (again, _) = replay_embedded(7, 6, 0, &rows, &TOPICS);
    assert_eq!(without_timings(&summary), without_timings(&again));
}

#[test]
fn every_verdict_is_in_by_the_next_bar() {
    let rows: Vec<_> = bundled_rows().into_iter().take(3_000).collect();
    let (_, tapped) = replay_embedded(3, 4, 0, &rows, &TOPICS);
    let bar_index: BTreeMap<i64, usize> =
        rows.iter().enumerate().map(|(i, r)| (r.time, i)).collect();
    let index = |m: &Arc<Envelope>| bar_index.get(&m.time).copied();
    let mut scored_at = BTreeMap::new();
    let mut plan_at = BTreeMap::new();
    for m in &tapped {
        match &m.body {
            Body::Scored(s) => {
                plan_at.insert(s.plan.id.clone(), bar_index.get(&s.plan.time).copied());
                scored_at.insert(s.plan.id.clone(), index(m));
            }
            Body::Decision(d) => {
                let (Some(Some(p)), Some(Some(s)), Some(at)) =
                    (plan_at.get(&d.plan.id), scored_at.get(&d.plan.id), index(m))
                else {
                    panic!("decision {} without its scored plan", d.plan.id);
                };
                assert!(s - p <= 1, "fusion waited {} bars", s - p);
                assert!(at - s <= 1, "the decision waited {} bars", at - s);
            }
            _ => {}
        }
    }
    assert!(!scored_at.is_empty());
}

/// The attack: a module allowed to publish on `curation` (signed by a
/// trusted key) speaks for the pipeline's curators and nudges without
/// bound. Before the fix, each forged verdict failed the governed module's
/// message, so a few of them quarantined fusion and the decision.
#[test]
fn a_module_speaking_for_the_curators_steers_nothing_and_stops_nothing() {
    use garden_host::config::ModuleConfig;
    use garden_host::runtime::InstanceState;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = garden_registry::Manifest::parse(
        "name = \"fixture-forger\"\nversion = \"0.1.0\"\nrole = \"fixture\"\n\
         wit_package = \"garden:pipeline@0.4.0\"\nwit_world = \"garden-module\"\n\
         [capabilities]\nsubscribe = [\"plan\", \"scored\"]\npublish = [\"curation\"]\n",
        "forger manifest",
    )
    .expect("manifest");
    let path = dir.path().join("forger.signed.wasm");
    let code = garden_tests::fixture_bytes("forger");
    std::fs::write(&path, garden_tests::signed(&code, &manifest)).expect("writes");
    let rows: Vec<_> = bundled_rows().into_iter().take(2_000).collect();
    let (summary, tapped) = garden_tests::replay_embedded_changed(
        5,
        4,
        0,
        0,
        &rows,
        &["scored", "decision"],
        |config| {
            let at = config
                .modules
                .iter()
                .position(|m| m.name == "fusion")
                .expect("fusion");
            config.modules.insert(
                at,
                ModuleConfig {
                    name: "forger".into(),
                    path: Some(path.clone()),
                    instances: 1,
                    population: false,
                    params: Default::default(),
                    settings: Default::default(),
                    cohort: 1,
                },
            );
            // Fusion names the forger as one of its curators, so its own
            // (unbounded) word counts, clamped.
            let fusion = &mut config.modules[at + 1];
            fusion.settings.insert(
                "curators".into(),
                toml::Value::String("curator-regime,forger".into()),
            );
        },
    );
    for name in ["fusion", "decision", "trader"] {
        let i = summary
            .instances
            .iter()
            .find(|i| i.id == name)
            .unwrap_or_else(|| panic!("{name}"));
        assert!(
            matches!(i.state, InstanceState::Running),
            "{name}: {:?}",
            i.state
        );
        assert!(i.failures.is_empty(), "{name} failed: {:?}", i.failures);
    }
    let mut scored = 0;
    for m in &tapped {
        let curation = match &m.body {
            Body::Scored(s) => {
                scored += 1;
                let own = s.curation.iter().find(|c| c.curator == "forger");
                let own = own.expect("the forger's own word is recorded");
                assert!(own.amount.abs() <= 0.1, "clamped to kappa: {own:?}");
                &s.curation
            }
            Body::Decision(d) => &d.curation,
            _ => continue,
        };
        assert!(
            curation.iter().all(|c| c.reason != "forged"),
            "a forged veto counted: {curation:?}"
        );
    }
    assert!(scored > 0);
    let forged = metric(&summary, "fusion", "forged-verdicts");
    assert!(forged > 0.0, "fusion counts what it refused");
}
