//! `garden report` and `garden run --report`: the page holds the run's
//! figures (checked as data), draws every chart in a real headless Chromium
//! without a console error or a request leaving the file, and a click on
//! the lineage tree shows the clicked variant's genes. Reports come from
//! SQLite (the default store) and from a real PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Command;

use garden_tests::servers::Postgres;
use serde_json::Value;

/// The figures a report page carries (its `#garden-data` JSON).
fn figures(page: &Path) -> Value {
    let html = std::fs::read_to_string(page).expect("the report page");
    let start = html
        .find(r#"id="garden-data">"#)
        .map(|i| i + r#"id="garden-data">"#.len())
        .expect("a data block in the page");
    let len = html[start..]
        .find("</script>")
        .expect("the data block's end");
    serde_json::from_str(&html[start..start + len]).expect("the data block is JSON")
}

fn run_garden(args: &[&str]) -> String {
    let out = garden_tests::garden().args(args).output().expect("garden");
    assert!(
        out.status.success(),
        "garden {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What every report of the bundled data with evolution must show.
fn check_figures(f: &Value) {
    let bars = f["meta"]["bars"].as_u64().expect("bars");
    assert!(bars > 1_000, "bars recorded: {bars}");
    let kinds: Vec<&str> = f["equity"]["series"]
        .as_array()
        .expect("equity series")
        .iter()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    for kind in ["best", "control", "portfolio", "buy-and-hold"] {
        assert!(
            kinds.contains(&kind),
            "equity has no {kind} line: {kinds:?}"
        );
    }
    assert!(
        f["equity"]["cut"].as_i64().is_some(),
        "no in/out-of-sample cut"
    );
    for s in f["drawdown"]["series"].as_array().expect("drawdown") {
        for p in s["points"].as_array().expect("points") {
            assert!(p[1].as_f64().expect("a drawdown value") <= 0.0);
        }
    }
    assert!(
        !f["trades"]["candles"]
            .as_array()
            .expect("candles")
            .is_empty()
    );
    let chosen = f["trades"]["chosen"]
        .as_str()
        .expect("a variant with trades");
    assert!(
        !f["trades"]["fills"][chosen]
            .as_array()
            .expect("its fills")
            .is_empty()
    );
    let tree = &f["lineage"]["tree"];
    assert!(tree["name"].is_string(), "no lineage tree");
    assert!(f["lineage"]["nodes"][tree["name"].as_str().unwrap_or("")].is_object());
    assert!(!f["generations"].as_array().expect("generations").is_empty());
    let bins = f["calibration"]["fused"].as_array().expect("bins");
    let judged: u64 = bins.iter().filter_map(|b| b["count"].as_u64()).sum();
    let closed = f["meta"]["closed_plans"].as_u64().expect("closed plans");
    assert!(judged > 0 && judged <= closed, "{judged} of {closed}");
    let brier = f["calibration"]["fused_brier"]
        .as_f64()
        .expect("a Brier score");
    assert!((0.0..=1.0).contains(&brier));
    let experts: Vec<&str> = f["experts"]
        .as_array()
        .expect("experts")
        .iter()
        .filter_map(|e| e["expert"].as_str())
        .collect();
    assert_eq!(experts.len(), 4, "{experts:?}");
    let modules: Vec<&str> = f["costs"]
        .as_array()
        .expect("costs")
        .iter()
        .filter_map(|c| c["module"].as_str())
        .collect();
    for m in ["alpha-ema", "fusion", "trader"] {
        assert!(modules.contains(&m), "no cost row for {m}: {modules:?}");
    }
    assert!(
        f["meta"]["warnings"]
            .as_array()
            .expect("warnings")
            .is_empty()
    );
}

/// Where the browser check lives, with its npm dependencies installed.
fn browser_check() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "the browser check needs playwright-core: npm ci --prefix tests/browser"
    );
    dir.join("check-report.mjs")
}

#[test]
fn a_run_report_draws_every_chart_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite://{}", dir.path().join("garden.db").display());
    let page = dir.path().join("run.html");
    let page_arg = page.to_string_lossy().into_owned();
    run_garden(&[
        "run", "--seed", "11", "--store", &store, "--report", &page_arg,
    ]);
    let from_run = figures(&page);
    check_figures(&from_run);

    // `garden report` of the same run (the latest) makes the same page.
    let again = dir.path().join("again.html");
    run_garden(&[
        "report",
        "--store",
        &store,
        "--out",
        &again.to_string_lossy(),
    ]);
    assert_eq!(figures(&again), from_run);

    // In a real browser.
    let shot = match std::env::var_os("GARDEN_SCREENSHOT") {
        Some(path) => PathBuf::from(path),
        None => dir.path().join("report.png"),
    };
    let out = Command::new("node")
        .arg(browser_check())
        .arg(&page)
        .arg(&shot)
        .output()
        .expect("node (Node.js 20) must be installed");
    assert!(
        out.status.success(),
        "the browser check failed (Chromium: apt-get install chromium):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the check's JSON");
    assert_eq!(seen["errors"], Value::Array(vec![]), "console errors");
    assert_eq!(
        seen["requests"],
        Value::Array(vec![]),
        "the page went online"
    );
    for id in [
        "equity",
        "drawdown",
        "trades",
        "lineage",
        "generations",
        "calibration",
        "costs",
    ] {
        let chart = &seen["charts"][id];
        let series = chart["series"].as_u64().unwrap_or(0);
        assert!(series > 0, "{id} has no series: {chart}");
        assert_eq!(chart["series"], chart["expected"], "{id}");
        let painted = chart["painted"].as_f64().unwrap_or(0.0);
        let pixels = chart["pixels"].as_f64().unwrap_or(0.0);
        assert!(painted > pixels * 0.005, "{id} looks blank: {chart}");
    }
    assert_eq!(
        seen["charts"]["equity"]["series"].as_u64(),
        from_run["equity"]["series"]
            .as_array()
            .map(|s| s.len() as u64)
    );
    assert_eq!(seen["charts"]["trades"]["series"], 3);
    assert_eq!(seen["charts"]["calibration"]["series"], 3);

    // The click on a parent in the tree showed that parent's genes.
    let clicked = &seen["clicked"];
    let name = clicked["name"].as_str().expect("a node was clicked");
    assert!(
        clicked["title"].as_str().unwrap_or("").starts_with(name),
        "{clicked}"
    );
    let genes = clicked["genes"].as_array().expect("gene rows");
    let expected = from_run["lineage"]["nodes"][name]["genes"]
        .as_array()
        .expect("the node's genes");
    assert_eq!(genes.len(), expected.len(), "{clicked}");
    assert!(!genes.is_empty());
    for (row, gene) in genes.iter().zip(expected) {
        assert_eq!(row[0], gene[0]);
    }
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}

#[test]
fn a_report_comes_from_postgres_too_and_a_missing_run_is_named() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    run_garden(&[
        "run",
        "--seed",
        "5",
        "--variants",
        "4",
        "--records",
        "--store",
        &pg.url(),
    ]);
    let page = dir.path().join("pg.html");
    run_garden(&[
        "report",
        "--store",
        &pg.url(),
        "--out",
        &page.to_string_lossy(),
    ]);
    check_figures(&figures(&page));

    let out = garden_tests::garden()
        .args(["report", "--store", &pg.url(), "--run", "no-such-run"])
        .output()
        .expect("garden");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no run `no-such-run`"), "{err}");
}
