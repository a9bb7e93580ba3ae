//! Modules in Python and JavaScript: each SDK's own tests, its indicators
//! against the Rust ones, and a module built by each language's tool
//! (componentize-py; jco with the QuickJS backend) running in the real
//! host, alone and in a cohort.
//!
//! These need `python3` with pytest and componentize-py
//! (`pip install componentize-py==0.25.1 pytest`), and Node.js with the
//! SDK's pinned tools (`npm ci --prefix guest-sdk/js`); without them they
//! fail and say so, they never skip.

use garden_host::bus::MemoryBus;
use garden_host::types::{Body, Plan, Side};
use garden_host::{InstanceSpec, Runtime, genes};
use garden_tests::bundled_rows;
use garden_tests::languages::{
    JS_TOOLS, build_javascript, build_python, language_engine, load_signed, root, run, run_in,
};

/// The Rust SDK's indicators over the bundled bars: EMA(10), SMA(20),
/// ATR(14), RSI(14) and the MACD(12, 26, 9) histogram, per bar.
fn rust_indicators() -> Vec<[Option<f64>; 5]> {
    use garden_sdk::indicators::{Atr, Ema, Macd, Rsi, Sma};
    let (mut ema, mut sma, mut atr, mut rsi, mut macd) = (
        Ema::new(10),
        Sma::new(20),
        Atr::new(14),
        Rsi::new(14),
        Macd::new(12, 26, 9),
    );
    bundled_rows()
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
        .collect()
}

/// The bundled bars as `[[high, low, close], ...]` in a JSON file.
fn bars_file() -> tempfile::NamedTempFile {
    let bars: Vec<[f64; 3]> = bundled_rows()
        .iter()
        .map(|r| [r.high, r.low, r.close])
        .collect();
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), serde_json::to_vec(&bars).expect("json")).expect("writes");
    file
}

/// Assert that `other` (a script's JSON, `null` for "no value yet") equals
/// the Rust indicators to 1e-9.
fn same_as_rust(language: &str, json: &str) {
    let rust = rust_indicators();
    let other: Vec<[Option<f64>; 5]> = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("JSON from {language}: {e}: {json:.200}"));
    assert_eq!(other.len(), rust.len());
    let names = ["ema", "sma", "atr", "rsi", "macd"];
    for (i, (p, r)) in other.iter().zip(&rust).enumerate() {
        for k in 0..5 {
            match (p[k], r[k]) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "{language} {} at bar {i}: {a}, rust {b}",
                    names[k]
                ),
                other => panic!("{language} {} at bar {i}: {other:?}", names[k]),
            }
        }
    }
    assert!(rust.last().is_some_and(|r| r.iter().all(Option::is_some)));
}

/// The plans three variants of `module` write over 800 bundled bars, each
/// alone, and the three in one cohort.
fn alone_and_in_a_cohort(
    engine: &std::sync::Arc<garden_host::Engine>,
    module: std::sync::Arc<garden_host::Module>,
) -> (Vec<Plan>, Vec<Plan>) {
    assert_eq!(module.cohort_allowed(), 256);
    let plans = |module: std::sync::Arc<garden_host::Module>| {
        let mut rt = Runtime::new(engine.clone(), MemoryBus::new(256), 1);
        rt.host_subscribe("plan");
        for (i, first) in [20i64, 10, 40].into_iter().enumerate() {
            let mut params = genes::defaults(&module.info().genes);
            params[0].value = garden_host::types::GeneValue::Int(first);
            rt.spawn(InstanceSpec {
                id: format!("v.{i}"),
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
        let sandboxes: std::collections::BTreeSet<String> =
            rt.instances().into_iter().map(|i| i.cohort).collect();
        let plans: Vec<Plan> = rt
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
        (plans, sandboxes.len())
    };
    let (alone, sandboxes) = plans(module.clone());
    assert_eq!(sandboxes, 3);
    assert!(alone.len() >= 10, "{} plans", alone.len());
    for p in &alone {
        let s = if p.side == Side::Long { 1.0 } else { -1.0 };
        assert!(
            s * (p.target - p.entry) > 0.0 && s * (p.entry - p.stop) > 0.0,
            "{p:?}"
        );
    }
    let (packed, sandboxes) = plans(module.in_cohorts_of(3).expect("allowed"));
    assert_eq!(sandboxes, 1, "three variants in one instance");
    (alone, packed)
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
    let bars = bars_file();
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
        bars.path()
    );
    let text = run("python3", &["-c", &script]);
    same_as_rust("python", text.lines().last().expect("output"));
}

#[test]
fn javascript_indicators_give_what_the_rust_ones_give_to_1e_9() {
    let bars = bars_file();
    let sdk = root().join("guest-sdk/js/garden-sdk.js");
    let script = format!(
        "import {{ readFileSync }} from 'node:fs';\n\
         const {{ Atr, Ema, Macd, Rsi, Sma }} = await import({:?});\n\
         const [e, s, a, r, m] = [new Ema(10), new Sma(20), new Atr(14), new Rsi(14), new Macd(12, 26, 9)];\n\
         const u = (x) => (x === undefined ? null : x);\n\
         const out = JSON.parse(readFileSync({:?}, 'utf8')).map(([h, l, c]) => {{\n\
         \x20 const v = m.update(c);\n\
         \x20 return [u(e.update(c)), u(s.update(c)), u(a.update(h, l, c)), u(r.update(c)), v === undefined ? null : v.histogram];\n\
         }});\n\
         console.log(JSON.stringify(out));\n",
        sdk.to_str().expect("utf-8 path"),
        bars.path()
    );
    let text = run_in(
        &root(),
        "node",
        &["--input-type=module", "-e", &script],
        JS_TOOLS,
    );
    same_as_rust("javascript", text.lines().last().expect("output"));
}

#[test]
fn the_javascript_sdk_and_module_tests_pass_under_node_test() {
    let text = run_in(
        &root(),
        "node",
        &[
            "--test",
            "guest-sdk/js",
            "modules/js-sma-cross",
            "modules/js-expert-range",
        ],
        JS_TOOLS,
    );
    assert!(
        text.contains("# fail 0") && !text.contains("# pass 0"),
        "{text}"
    );
}

#[test]
fn a_python_module_runs_in_the_garden_alone_and_in_a_cohort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = build_python("modules/py-breakout", dir.path());
    let engine = language_engine();
    let module = load_signed(&engine, "modules/py-breakout", &wasm);
    let (alone, packed) = alone_and_in_a_cohort(&engine, module);
    assert_eq!(alone, packed, "the same plans in a cohort");
}

#[test]
fn the_same_sma_cross_gives_the_same_plans_in_rust_python_and_javascript() {
    let engine = language_engine();
    let rust = garden_tests::module(&engine, "sma-cross");
    let (rust, rust_packed) = alone_and_in_a_cohort(&engine, rust);
    assert_eq!(rust, rust_packed);

    let py_dir = tempfile::tempdir().expect("tempdir");
    let wasm = build_python("modules/py-sma-cross", py_dir.path());
    let (python, python_packed) =
        alone_and_in_a_cohort(&engine, load_signed(&engine, "modules/py-sma-cross", &wasm));
    assert_eq!(python, python_packed);

    let js_dir = tempfile::tempdir().expect("tempdir");
    let wasm = build_javascript("modules/js-sma-cross", js_dir.path());
    let (javascript, javascript_packed) =
        alone_and_in_a_cohort(&engine, load_signed(&engine, "modules/js-sma-cross", &wasm));
    assert_eq!(javascript, javascript_packed, "the same plans in a cohort");

    assert_eq!(python, rust, "Python writes what Rust writes, bit for bit");
    assert_eq!(
        javascript, rust,
        "JavaScript writes what Rust writes, bit for bit"
    );
}

/// `wasm` signed with `dir`'s manifest by the test key, written beside it.
fn signed_file(dir: &str, wasm: &std::path::Path) -> std::path::PathBuf {
    let manifest = std::fs::read_to_string(root().join(dir).join("garden.toml")).expect("manifest");
    let manifest =
        garden_registry::Manifest::parse(&manifest, "garden.toml").expect("valid manifest");
    let bytes = garden_tests::signed(&std::fs::read(wasm).expect("built"), &manifest);
    let path = wasm.with_extension("signed.wasm");
    std::fs::write(&path, bytes).expect("writes");
    path
}

#[test]
fn rust_python_and_javascript_variants_share_one_population_deterministically() {
    use garden_host::config::{ModuleConfig, PipelineConfig};
    use garden_host::replay::{Replay, ReplayOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let py_out = dir.path().join("py");
    let js_out = dir.path().join("js");
    std::fs::create_dir_all(&py_out).expect("dir");
    std::fs::create_dir_all(&js_out).expect("dir");
    let py = signed_file(
        "modules/py-breakout",
        &build_python("modules/py-breakout", &py_out),
    );
    let js = signed_file(
        "modules/js-sma-cross",
        &build_javascript("modules/js-sma-cross", &js_out),
    );
    let expert_out = dir.path().join("expert");
    std::fs::create_dir_all(&expert_out).expect("dir");
    let expert = signed_file(
        "modules/js-expert-range",
        &build_javascript("modules/js-expert-range", &expert_out),
    );
    let mut config = PipelineConfig::embedded().expect("embedded pipeline");
    config.limits.max_core_instances = 40;
    for (name, path, population) in [
        ("py-breakout", py, true),
        ("js-sma-cross", js, true),
        ("js-expert-range", expert, false),
    ] {
        config.modules.push(ModuleConfig {
            name: name.into(),
            path: Some(path),
            instances: if population { 3 } else { 1 },
            population,
            params: Default::default(),
            settings: Default::default(),
            cohort: 1,
        });
    }
    // Fusion weighs the JavaScript expert with the Rust ones.
    for m in config.modules.iter_mut().filter(|m| m.name == "fusion") {
        let experts = m
            .settings
            .get("experts")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let experts = format!("{experts},js-expert-range");
        m.settings
            .insert("experts".into(), toml::Value::String(experts));
    }
    let engine = garden_tests::engine(config.limits.clone());
    let modules = config
        .load(&engine, &garden_tests::pipeline_trust())
        .expect("the mixed pipeline loads");
    let rows = &bundled_rows()[..1500];
    let run = || {
        let options = ReplayOptions {
            seed: 3,
            variants: Some(3),
            symbol: "EURUSD".into(),
            data_name: "bundled".into(),
            threads: 0,
            total_bars: rows.len(),
            steps_per_year: garden_host::scoring::steps_per_year(
                rows.len(),
                rows[0].time,
                rows[rows.len() - 1].time,
            ),
            per_call: 0,
            deploys: Vec::new(),
        };
        let mut replay = Replay::start(engine.clone(), &config, &modules, options).expect("starts");
        replay.tap("scored");
        for row in rows {
            replay.feed(row);
        }
        replay.finish_tapped(rows, 1.0)
    };
    let (a, scored) = run();
    let (b, _) = run();
    let weighed = scored
        .iter()
        .filter(|m| matches!(&m.body, Body::Scored(s) if s.experts.iter().any(|e| e == "js-expert-range")))
        .count();
    assert!(
        weighed > 10,
        "fusion counted the JavaScript expert: {weighed} plans"
    );
    assert_eq!(
        garden_tests::without_timings(&a),
        garden_tests::without_timings(&b),
        "the same seed gives the same mixed run"
    );
    assert_eq!(a.runtime.failures, 0, "{:?}", a.instances);
    // Every language has variants that traded and were scored.
    for module in ["alpha-ema", "py-breakout", "js-sma-cross"] {
        let traded = a
            .instances
            .iter()
            .filter(|i| i.module == module)
            .filter_map(|i| a.variants.iter().find(|v| v.id == i.id))
            .any(|v| v.score.as_ref().is_some_and(|s| s.trades > 0));
        assert!(traded, "{module} variants traded: {:?}", a.variants);
    }
    // One population: the lineage holds the three codes, and children.
    let codes: std::collections::BTreeSet<&str> =
        a.lineage.iter().map(|l| l.component.as_str()).collect();
    assert_eq!(codes.len(), 3, "three codes in one lineage");
    assert!(
        a.lineage.len() > 9,
        "children were born: {}",
        a.lineage.len()
    );
}

#[test]
fn the_javascript_sdk_s_typescript_declarations_compile_against_a_module() {
    let tsc = root().join("guest-sdk/js/node_modules/.bin/tsc");
    run_in(
        &root().join("guest-sdk/js"),
        tsc.to_str().expect("utf-8 path"),
        &[
            "--noEmit",
            "--strict",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--target",
            "es2022",
            "types-test/usage.ts",
        ],
        JS_TOOLS,
    );
}
