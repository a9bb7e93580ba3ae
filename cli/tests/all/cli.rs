//! The `garden` command as a user runs it: the default run, JSON output,
//! seeds, and CSV files good and bad.

use std::path::Path;
use std::process::{Command, Output};

fn garden(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_garden"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env("GARDEN_DATA", cache.join("data"))
        .env("GARDEN_TRUST", cache.join("trust.toml"))
        .output()
        .expect("garden runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn default_run_prints_seed_table_and_totals_without_a_progress_bar_when_piped() {
    let cache = tempfile::tempdir().expect("tempdir");
    let o = garden(&["run", "--seed", "5", "--variants", "3"], cache.path());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("seed: 5"), "seed always printed: {err}");
    assert!(out.contains("seed 5") && out.contains("5000 bars"), "{out}");
    for column in [
        "variant",
        "plans",
        "approvals",
        "fills",
        "pnl",
        "trades",
        "sharpe",
        "max dd",
    ] {
        assert!(out.contains(column), "column {column} missing:\n{out}");
    }
    assert!(out.contains("alpha-ema.0"), "the control is listed:\n{out}");
    assert!(
        out.lines().filter(|l| l.starts_with("alpha-ema.")).count() >= 3,
        "{out}"
    );
    for part in [
        "evolution:",
        "variants tried",
        "out of sample",
        "best evolved",
        "generation 0",
        "buy and hold",
    ] {
        assert!(out.contains(part), "the report lacks `{part}`:\n{out}");
    }
    assert!(
        out.contains("bars/s") && out.contains("messages") && out.contains("quarantines"),
        "{out}"
    );
    assert!(
        !err.contains('\r') && !err.contains("bars ("),
        "no progress bar when not a terminal: {err}"
    );
}

#[test]
fn json_summary_is_repeatable_with_a_seed() {
    let cache = tempfile::tempdir().expect("tempdir");
    let parse = |o: &Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("valid JSON")
    };
    let a = parse(&garden(
        &["run", "--json", "--seed", "11", "--variants", "4"],
        cache.path(),
    ));
    // The same run with the variants packed in cohorts of 4.
    let b = parse(&garden(
        &[
            "run",
            "--json",
            "--seed",
            "11",
            "--variants",
            "4",
            "--cohort",
            "4",
        ],
        cache.path(),
    ));
    let shared = |v: &serde_json::Value| {
        v["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["cohort"] != i["id"])
            .count()
    };
    assert_eq!(shared(&a), 0);
    assert!(shared(&b) >= 3, "variants shared an instance");
    let refused = garden(
        &["run", "--seed", "11", "--variants", "4", "--cohort", "5000"],
        cache.path(),
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("cannot carry 5000 variants per instance"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(a["seed"], 11);
    assert_eq!(a["bars"], 5000);
    // Four to start with, and the children evolution bred.
    assert!(a["variants"].as_array().is_some_and(|v| v.len() >= 4));
    assert_eq!(
        a["lineage"].as_array().map(Vec::len),
        a["variants"].as_array().map(Vec::len)
    );
    assert_eq!(a["variants"], b["variants"], "same seed, same leaderboard");
    assert_eq!(a["lineage"], b["lineage"], "same seed, same lineage");
    assert_eq!(a["evolution"], b["evolution"]);
    assert!(a["bars_per_sec"].as_f64().is_some_and(|x| x > 0.0));
    assert!(a["runtime"]["traps"].as_u64() == Some(0));
}

#[test]
fn real_world_csv_layouts_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundled = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/EURUSD_H1.csv"
    ))
    .expect("data");
    // Reorder columns, rename the time column, lower-case the header, add a column.
    let mut lines = bundled.lines();
    lines.next();
    let mut csv = String::from("volume,close,Datetime,LOW,high,open,Adj Close\n");
    for line in lines.take(800) {
        let f: Vec<&str> = line.split(',').collect();
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            f[5], f[4], f[0], f[3], f[2], f[1], f[4]
        ));
    }
    let path = dir.path().join("GBPUSD_H1.csv");
    std::fs::write(&path, csv).expect("write");
    let o = garden(
        &[
            "run",
            "--seed",
            "1",
            "--variants",
            "2",
            "--data",
            path.to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("800 bars"), "{out}");
}

#[test]
fn bad_csv_files_stop_the_run_with_one_line_naming_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &str, &[&str])] = &[
        ("missing.csv", "", &["cannot read", "missing.csv"]),
        ("empty.csv", "", &["empty"]),
        (
            "order.csv",
            "Date,Open,High,Low,Close\n2024-01-02,1,2,0.5,1\n2024-01-01,1,2,0.5,1\n",
            &["line 3", "earlier"],
        ),
        (
            "dup.csv",
            "Date,Open,High,Low,Close\n2024-01-01,1,2,0.5,1\n2024-01-01,1,2,0.5,1\n",
            &["line 3", "repeats"],
        ),
        (
            "hilo.csv",
            "Date,Open,High,Low,Close\n2024-01-01,1,0.5,2,1\n",
            &["line 2", "below low"],
        ),
        (
            "nan.csv",
            "Date,Open,High,Low,Close\n2024-01-01,1,abc,0.5,1\n",
            &["line 2", "`High`", "abc"],
        ),
    ];
    for (name, content, needles) in cases {
        let path = dir.path().join(name);
        if *name != "missing.csv" {
            std::fs::write(&path, content).expect("write");
        }
        let o = garden(
            &[
                "run",
                "--seed",
                "1",
                "--data",
                path.to_str().expect("utf-8"),
            ],
            dir.path(),
        );
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{name} must fail");
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{name}: one error line, got:\n{err}");
        for n in *needles {
            assert!(
                error_lines[0].contains(n),
                "{name}: `{}` lacks `{n}`",
                error_lines[0]
            );
        }
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn a_module_older_than_one_this_host_ran_is_refused_unless_asked_for() {
    let cache = tempfile::tempdir().expect("tempdir");
    let data = cache.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // This host once ran alpha-ema 9.0.0; the built-in one is 0.1.0.
    std::fs::write(data.join("versions.toml"), "alpha-ema = \"9.0.0\"\n").expect("record");
    let o = garden(&["run", "--seed", "1", "--variants", "2"], cache.path());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("alpha-ema@0.1.0 is older than alpha-ema@9.0.0")
            && err.contains("--allow-downgrade"),
        "{err}"
    );
    let o = garden(
        &["run", "--seed", "1", "--variants", "2", "--allow-downgrade"],
        cache.path(),
    );
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
}

#[test]
fn a_run_whose_module_cannot_start_exits_non_zero_naming_it() {
    let cache = tempfile::tempdir().expect("tempdir");
    let pipeline = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../host/pipeline.toml"
    ))
    .expect("the embedded pipeline");
    let bad = pipeline.replace("deadline-bars = \"1\"", "deadline-bars = \"5000\"");
    assert_ne!(bad, pipeline, "the fusion setting is in the pipeline file");
    let path = cache.path().join("bad.toml");
    std::fs::write(&path, bad).expect("writes");
    let o = garden(
        &[
            "run",
            "--seed",
            "1",
            "--config",
            path.to_str().expect("utf-8"),
        ],
        cache.path(),
    );
    let (out, err) = text(&o);
    assert!(!o.status.success(), "exit 0 although fusion never started");
    assert!(
        out.contains("quarantined"),
        "the table is still printed: {out}"
    );
    assert!(
        err.contains("could not start at all")
            && err.contains("`fusion`")
            && err.contains("deadline-bars"),
        "{err}"
    );
}

#[test]
fn new_writes_a_module_whose_own_tests_pass_in_python_and_javascript() {
    let dir = tempfile::tempdir().expect("tempdir");
    let new = |lang: &str, name: &str| {
        Command::new(env!("CARGO_BIN_EXE_garden"))
            .args(["new", "--lang", lang, "--dir"])
            .arg(dir.path())
            .arg(name)
            .output()
            .expect("garden runs")
    };
    for (lang, name) in [
        ("rust", "rsi-watch"),
        ("python", "py-watch"),
        ("js", "js-watch"),
    ] {
        let o = new(lang, name);
        assert!(o.status.success(), "{lang}: {}", text(&o).1);
        assert!(dir.path().join(name).join("build.sh").exists());
    }
    let lib = std::fs::read_to_string(dir.path().join("rsi-watch/src/lib.rs")).expect("lib.rs");
    assert!(lib.contains("pub struct RsiWatch") && lib.contains("\"rsi-watch\""));
    let manifest =
        std::fs::read_to_string(dir.path().join("rsi-watch/Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains("guest-sdk\" }"), "{manifest}");
    // The Python and JavaScript modules' own unit tests pass as written.
    let pytest = Command::new("python3")
        .args(["-m", "pytest", "-q"])
        .current_dir(dir.path().join("py-watch"))
        .output()
        .expect("python3 runs (pip install componentize-py==0.25.1 pytest)");
    assert!(pytest.status.success(), "{}", text(&pytest).0);
    let node = Command::new("node")
        .arg("--test")
        .current_dir(dir.path().join("js-watch"))
        .output()
        .expect("node runs");
    assert!(node.status.success(), "{}{}", text(&node).0, text(&node).1);
    // A second time, or a bad name, is refused.
    let again = new("python", "py-watch");
    assert!(!again.status.success() && text(&again).1.contains("exists already"));
    let bad = new("rust", "Bad_Name");
    assert!(!bad.status.success() && text(&bad).1.contains("not a module name"));
}

#[test]
fn precompile_fills_the_cache_and_the_next_run_compiles_nothing() {
    let home = tempfile::tempdir().expect("tempdir");
    let cache = home.path().join("cache");
    let env = |c: &mut Command| {
        c.env("GARDEN_DATA", home.path().join("data"))
            .env("GARDEN_TRUST", home.path().join("trust.toml"));
    };
    let mut pre = Command::new(env!("CARGO_BIN_EXE_garden"));
    pre.args(["precompile", "--cache-dir"]).arg(&cache);
    env(&mut pre);
    let o = pre.output().expect("garden runs");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("modules verified and compiled"), "{out}");
    assert!(
        err.contains("compiling a component"),
        "says why it waits: {err}"
    );
    let o = garden(&["run", "--seed", "2", "--variants", "1"], &cache);
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("compiling a component"), "all cached: {err}");
}
