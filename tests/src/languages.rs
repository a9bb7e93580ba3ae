//! Modules in other languages, for tests and benches: build a Python or
//! JavaScript module with its language's tool, sign it with its manifest
//! and load it under limits that fit a language runtime.
//!
//! The tools: `pip install componentize-py==0.25.1 pytest` and
//! `npm ci --prefix guest-sdk/js`. Without them these fail and say how to
//! install them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use garden_host::{Engine, Module};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// How to get what the Python tests run.
pub const PYTHON_TOOLS: &str = "pip install componentize-py==0.25.1 pytest";
/// How to get what the JavaScript tests run.
pub const JS_TOOLS: &str = "npm ci --prefix guest-sdk/js (Node.js 20)";

/// Run `program args` in `dir`, failing with its output and how to install
/// what is missing if it cannot run or fails.
pub fn run_in(dir: &Path, program: &str, args: &[&str], tools: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; install it: {tools}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{text}\n(needs: {tools})"
    );
    text
}

/// [`run_in`] the workspace, with the Python tools.
pub fn run(program: &str, args: &[&str]) -> String {
    run_in(&root(), program, args, PYTHON_TOOLS)
}

/// An engine whose limits fit a language runtime: a CPython component
/// declares 38 core instances, above the host's default ceiling of 20
/// (limits.max_core_instances), made for Rust.
pub fn language_engine() -> Arc<Engine> {
    crate::engine(garden_host::Limits {
        max_core_instances: 40,
        ..crate::test_limits()
    })
}

/// The component `wasm`, signed with `dir`'s manifest (`garden.toml`) by
/// the test key and loaded.
pub fn load_signed(engine: &Engine, dir: &str, wasm: &Path) -> Arc<Module> {
    let manifest =
        std::fs::read_to_string(root().join(dir).join("garden.toml")).expect("the manifest");
    let manifest =
        garden_registry::Manifest::parse(&manifest, "garden.toml").expect("valid manifest");
    let bytes = crate::signed(&std::fs::read(wasm).expect("built"), &manifest);
    let module = engine
        .load(&bytes, &crate::trust())
        .expect("the component loads");
    assert_eq!(module.info().name, manifest.name);
    module
}

/// Build the Python module in `dir` (its `app.py`) into `out`.
pub fn build_python(dir: &str, out: &Path) -> PathBuf {
    let wasm = out.join("module.wasm");
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
            dir,
            "-p",
            "guest-sdk/python",
            "--stub-wasi",
            "-o",
            wasm.to_str().expect("utf-8 path"),
        ],
    );
    wasm
}

/// Build the JavaScript module in `dir` (`app.js` and `module.js`) into
/// `out`. componentize reads only modules under the entry's directory, so
/// the module is staged there with the SDK's files beside it (over its
/// re-export shim).
pub fn build_javascript(dir: &str, out: &Path) -> PathBuf {
    for (from, to) in [
        (format!("{dir}/app.js"), "app.js"),
        (format!("{dir}/module.js"), "module.js"),
        ("guest-sdk/js/garden-sdk.js".into(), "garden-sdk.js"),
        ("guest-sdk/js/indicators.js".into(), "indicators.js"),
    ] {
        std::fs::copy(root().join(from), out.join(to)).expect("stages the module");
    }
    let jco = root().join("guest-sdk/js/node_modules/.bin/jco");
    let wasm = out.join("module.wasm");
    let wit = root().join("wit");
    run_in(
        out,
        jco.to_str().expect("utf-8 path"),
        &[
            "componentize",
            "app.js",
            "--wit",
            wit.to_str().expect("utf-8 path"),
            "-n",
            "garden-module",
            "--backend",
            "qjs",
            "--backend-qjs-disable-async",
            "--backend-qjs-stub-wasi",
            "-o",
            wasm.to_str().expect("utf-8 path"),
        ],
        JS_TOOLS,
    );
    wasm
}
