//! The book across variants and symbols: two instruments on one timeline
//! add up to the portfolio, the decision never lets the book's open risk
//! pass its limit, and `--ablate` runs each arm on the same code, bars and
//! seed.

use std::collections::BTreeMap;

use garden_host::types::{Body, FillKind, Verdict};
use garden_tests::{bundled_rows, garden, replay_embedded_changed};
use serde_json::Value;

/// The bundled data file, as a user passes it.
fn data_file() -> String {
    format!("{}/../data/EURUSD_H1.csv", env!("CARGO_MANIFEST_DIR"))
}

/// `garden run ARGS --json`, parsed.
fn run_json(args: &[&str]) -> Value {
    let out = garden()
        .args(["run", "--seed", "3", "--variants", "3", "--json"])
        .args(args)
        .output()
        .expect("garden runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// A report's final value.
fn final_value(summary: &Value, subject: &str) -> f64 {
    summary["reports"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["subject"] == subject))
        .and_then(|r| r["final_value"].as_f64())
        .unwrap_or_else(|| panic!("no report {subject}"))
}

#[test]
fn two_symbols_on_one_timeline_add_up_to_the_portfolio() {
    let data = data_file();
    let summary = run_json(&[
        "--data", &data, "--data", &data, "--symbol", "EURUSD", "--symbol", "COPY",
    ]);
    assert_eq!(summary["bars"], 10_000, "both files, merged");
    let equity = 100_000.0;
    let (a, b, all) = (
        final_value(&summary, "portfolio:EURUSD"),
        final_value(&summary, "portfolio:COPY"),
        final_value(&summary, "portfolio"),
    );
    assert!(
        ((a - equity) + (b - equity) - (all - equity)).abs() < 1e-6,
        "per-symbol pnl {a} + {b} adds up to the portfolio's {all}"
    );
    assert!(a != equity && b != equity, "both symbols were traded");
    let held = &summary["evolution"]["buy_and_hold"]["per_symbol"];
    assert_eq!(held[0][0], "EURUSD");
    assert_eq!(held[1][0], "COPY");
    assert_eq!(held[0][1], held[1][1], "the same bars, the same return");
    // Two symbols and one name is refused before anything runs.
    let out = garden()
        .args(["run", "--data", &data, "--data", &data])
        .output()
        .expect("garden runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("given to two files"));
}

#[test]
fn ablation_arms_run_the_same_bars_and_seed_and_differ_in_their_layer() {
    let out = garden()
        .args([
            "run",
            "--seed",
            "3",
            "--variants",
            "3",
            "--json",
            "--ablate",
            "curators",
            "--ablate",
            "sharing",
        ])
        .output()
        .expect("garden runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arms: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = arms.iter().filter_map(|a| a["arm"].as_str()).collect();
    assert_eq!(names, ["pipeline", "curators", "sharing"]);
    let summary = |i: usize| &arms[i]["summary"];
    // Generation 0 is drawn from the seed alone: the same in every arm.
    let gen0 = |i: usize| -> Vec<Value> {
        summary(i)["lineage"]
            .as_array()
            .expect("lineage")
            .iter()
            .filter(|l| l["generation"] == 0)
            .map(|l| l["params"].clone())
            .collect()
    };
    assert!(!gen0(0).is_empty());
    assert_eq!(gen0(0), gen0(1));
    assert_eq!(gen0(0), gen0(2));
    for i in 0..3 {
        let oos = summary(i)["out_of_sample"]
            .as_array()
            .expect("window scores");
        assert!(oos.iter().any(|w| w["subject"] == "portfolio"), "arm {i}");
    }
    let curators = |i: usize| {
        summary(i)["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .filter(|m| m["role"] == "curator")
            .count()
    };
    assert_eq!((curators(0), curators(1), curators(2)), (6, 0, 6));
    assert_ne!(
        summary(0)["out_of_sample"],
        summary(1)["out_of_sample"],
        "the curators changed what the book did"
    );
    // An ablation the pipeline does not define is refused by name.
    let out = garden()
        .args(["run", "--ablate", "nothing"])
        .output()
        .expect("garden runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ablation `nothing`"));
}

/// Replays with a tight book and checks, from what was published, that
/// the open risk to the stops never passes its limit.
#[test]
fn the_book_never_holds_more_risk_than_its_limit() {
    const LIMIT: f64 = 0.004;
    let rows: Vec<_> = bundled_rows().into_iter().take(3_000).collect();
    let (_, tapped) = replay_embedded_changed(
        2,
        8,
        0,
        0,
        &rows,
        &["decision", "fill", "feedback"],
        |config| {
            let decision = config
                .modules
                .iter_mut()
                .find(|m| m.name == "decision")
                .expect("decision");
            decision.settings.insert(
                "max-portfolio-risk".into(),
                toml::Value::String(LIMIT.to_string()),
            );
        },
    );
    let mut open: BTreeMap<String, f64> = BTreeMap::new();
    let mut realised = 0.0;
    let mut bound_by_book = 0;
    for m in &tapped {
        match &m.body {
            Body::Decision(d) if d.verdict != Verdict::Reject => {
                open.insert(
                    d.plan.id.clone(),
                    d.size * (d.plan.entry - d.plan.stop).abs(),
                );
                let risk: f64 = open.values().sum();
                let cap = LIMIT * (100_000.0 + realised);
                assert!(risk <= cap + 1e-6, "open risk {risk} above {cap}");
                bound_by_book += usize::from(d.reason.contains("portfolio risk"));
            }
            Body::Fill(f) if f.kind != FillKind::Entry => {
                open.remove(&f.plan_id);
            }
            Body::Feedback(fb) => realised += fb.pnl,
            _ => {}
        }
    }
    assert!(bound_by_book > 0, "the limit bound some plans");
}
