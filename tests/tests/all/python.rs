//! Modules in Python: the SDK's own tests, its indicators against the Rust
//! ones, and a Python module built with componentize-py running in the
//! real host, alone and in a cohort.
//!
//! These need `python3` with pytest and componentize-py
//! (`pip install componentize-py==0.25.1 pytest`); without them they fail
//! and say so, they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use garden_host::bus::MemoryBus;
use garden_host::types::Body;
use garden_host::{InstanceSpec, Runtime, genes};
use garden_tests::{bundled_rows, engine, test_limits};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Run `program args` in the workspace, failing with its output and an
/// install hint if it cannot run or fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program}: {e}; install it: pip install componentize-py==0.25.1 pytest"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{text}\n(needs: pip install componentize-py==0.25.1 pytest)"
    );
    text
}

#[test]
fn the_python_sdk_and_module_tests_pass_under_plain_pytest() {
    let text = run(
        "python3",
        &[
            "-m",
            "pytest",
            "-q",
            "guest-sdk/python",
            "modules/py-breakout",
        ],
    );
    assert!(
        text.contains("passed") && !text.contains("failed"),
        "{text}"
    );
}

#[test]
fn python_indicators_give_what_the_rust_ones_give_to_1e_9() {
    use garden_sdk::indicators::{Atr, Ema, Macd, Rsi, Sma};
    let rows = bundled_rows();
    let (mut ema, mut sma, mut atr, mut rsi, mut macd) = (
        Ema::new(10),
        Sma::new(20),
        Atr::new(14),
        Rsi::new(14),
        Macd::new(12, 26, 9),
    );
    let rust: Vec<[Option<f64>; 5]> = rows
        .iter()
        .map(|r| {
            [
                ema.update(r.close),
                sma.update(r.close),
                atr.update(r.high, r.low, r.close),
                rsi.update(r.close),
                macd.update(r.close).map(|m| m.histogram),
            ]
        })
        .collect();
    let bars: Vec<[f64; 3]> = rows.iter().map(|r| [r.high, r.low, r.close]).collect();
    let input = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(input.path(), serde_json::to_vec(&bars).expect("json")).expect("writes");
    let script = format!(
        "import json, sys\n\
         sys.path.insert(0, 'guest-sdk/python')\n\
         import garden_sdk_pytest; garden_sdk_pytest.install()\n\
         from garden_sdk.indicators import Atr, Ema, Macd, Rsi, Sma\n\
         e, s, a, r, m = Ema(10), Sma(20), Atr(14), Rsi(14), Macd(12, 26, 9)\n\
         out = []\n\
         for h, l, c in json.load(open({:?})):\n\
         \x20   v = m.update(c)\n\
         \x20   out.append([e.update(c), s.update(c), a.update(h, l, c), r.update(c), None if v is None else v.histogram])\n\
         print(json.dumps(out))\n",
        input.path()
    );
    let text = run("python3", &["-c", &script]);
    let line = text.lines().last().expect("the script's output");
    let python: Vec<[Option<f64>; 5]> = serde_json::from_str(line).expect("JSON from python");
    assert_eq!(python.len(), rust.len());
    let names = ["ema", "sma", "atr", "rsi", "macd"];
    for (i, (p, r)) in python.iter().zip(&rust).enumerate() {
        for k in 0..5 {
            match (p[k], r[k]) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "{} at bar {i}: python {a}, rust {b}",
                    names[k]
                ),
                other => panic!("{} at bar {i}: {other:?}", names[k]),
            }
        }
    }
    assert!(rust.last().is_some_and(|r| r.iter().all(Option::is_some)));
}

#[test]
fn a_python_module_runs_in_the_garden_alone_and_in_a_cohort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("py-breakout.wasm");
    let wasm_arg = wasm.to_str().expect("utf-8 path");
    run(
        "componentize-py",
        &[
            "-d",
            "wit",
            "-w",
            "garden-module",
            "componentize",
            "app",
            "-p",
            "modules/py-breakout",
            "-p",
            "guest-sdk/python",
            "--stub-wasi",
            "-o",
            wasm_arg,
        ],
    );
    let manifest = std::fs::read_to_string(root().join("modules/py-breakout/garden.toml"))
        .expect("the manifest");
    let manifest =
        garden_registry::Manifest::parse(&manifest, "garden.toml").expect("valid manifest");
    let bytes = garden_tests::signed(&std::fs::read(&wasm).expect("built"), &manifest);
    // A CPython component declares 38 core instances, above the host's
    // default ceiling of 20 (limits.max_core_instances), made for Rust.
    let engine = engine(garden_host::Limits {
        max_core_instances: 40,
        ..test_limits()
    });
    let module = engine
        .load(&bytes, &garden_tests::trust())
        .expect("the Python component loads");
    assert_eq!(module.info().name, "py-breakout");
    assert_eq!(module.cohort_allowed(), 256);

    let plans = |module: std::sync::Arc<garden_host::Module>| {
        let mut rt = Runtime::new(engine.clone(), MemoryBus::new(256), 1);
        rt.host_subscribe("plan");
        for (i, window) in [20i64, 10, 40].into_iter().enumerate() {
            let mut params = genes::defaults(&module.info().genes);
            params[0].value = garden_host::types::GeneValue::Int(window);
            rt.spawn(InstanceSpec {
                id: format!("py.{i}"),
                module: module.clone(),
                params,
                settings: vec![],
                snapshot: None,
            })
            .expect("spawns");
        }
        for row in &bundled_rows()[..800] {
            rt.publish(garden_host::feed::bar_message("bar", "EURUSD", row));
            rt.run_until_idle();
        }
        assert_eq!(rt.stats().failures, 0, "{:?}", rt.instances());
        let cohorts: std::collections::BTreeSet<String> =
            rt.instances().into_iter().map(|i| i.cohort).collect();
        let plans: Vec<garden_host::types::Plan> = rt
            .take_host_messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Plan(p) => {
                    assert_eq!(p.origin, m.source, "a plan's origin is its publisher");
                    Some(p.clone())
                }
                _ => None,
            })
            .collect();
        (plans, cohorts.len())
    };
    let (alone, sandboxes) = plans(module.clone());
    assert_eq!(sandboxes, 3);
    assert!(alone.len() >= 10, "{} plans", alone.len());
    for p in &alone {
        let s = if p.side == garden_host::types::Side::Long {
            1.0
        } else {
            -1.0
        };
        assert!(
            s * (p.target - p.entry) > 0.0 && s * (p.entry - p.stop) > 0.0,
            "{p:?}"
        );
    }
    let (packed, sandboxes) = plans(module.in_cohorts_of(3).expect("allowed"));
    assert_eq!(sandboxes, 1, "three variants in one Python instance");
    assert_eq!(alone, packed, "the same plans in a cohort");
}
