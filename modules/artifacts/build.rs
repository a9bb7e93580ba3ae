//! Builds every guest crate to a wasm32-wasip2 component, so that a fresh
//! clone needs no manual step: `cargo build` or `cargo test` at the root
//! builds the modules first. The components land in `<target>/guests`, one
//! build shared by every profile of the host.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Real modules, embedded in the `garden` binary.
const MODULES: &[&str] = &[
    "alpha-ema",
    "expert-anomaly",
    "fusion",
    "decision",
    "trader",
    "regime",
    "tape",
    "expert-grammar",
    "expert-sequence",
    "expert-divergence",
    "sma-cross",
    "curator-regime",
    "curator-cost",
    "curator-timing",
    "curator-compliance",
    "curator-performance",
    "curator-slippage",
];

/// Adversarial fixtures, used by tests only (by path).
const FIXTURES: &[&str] = &[
    "loop",
    "memory-bomb",
    "recursion",
    "publish-flood",
    "oversized",
    "panic-init",
    "panic-message",
    "undeclared-topic",
    "fragile",
    "sleep",
    "big-describe",
    "poison",
    "tenth",
    "forger",
];

const TARGET: &str = "wasm32-wasip2";

/// Signing time of the built-in modules (fixed: reproducible builds).
const SIGNED_AT: &str = "2026-01-01T00:00:00Z";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>/out (or one level deeper with
    // --target); the guests share <target>/guests across profiles.
    let target_dir = out_dir
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("target"));
    let guest_dir = target_dir.join("guests");

    // The root manifest holds the guest profile (opt-level, LTO): a change
    // there must rebuild the guests too.
    for path in ["wit", "guest-sdk", "modules", "keys", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg("guest")
        .arg("--target-dir")
        .arg(&guest_dir);
    for name in MODULES {
        cmd.arg("-p").arg(name);
    }
    for name in FIXTURES {
        cmd.arg("-p").arg(format!("fixture-{name}"));
    }
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build the guest modules: {e}"));
    if !status.success() {
        panic!(
            "building the guest modules failed (see above). If the target is missing, run:\n    rustup target add {TARGET}"
        );
    }

    let wasm = |crate_name: &str| {
        guest_dir
            .join(TARGET)
            .join("guest")
            .join(format!("{}.wasm", crate_name.replace('-', "_")))
    };
    // The real modules are signed with the development key (docs/signing.md)
    // at a fixed time, so the build is reproducible.
    let key_path = root.join("keys/dev.key.pem");
    let key = garden_trust::SigningKey::read(&key_path).unwrap_or_else(|e| panic!("{e}"));
    let signed_dir = guest_dir.join("signed");
    std::fs::create_dir_all(&signed_dir).expect("create the signed-modules directory");
    let mut code = String::new();
    code.push_str(
        "/// The real modules, signed with the development key: (name, signed component bytes).\npub static MODULES: &[(&str, &[u8])] = &[\n",
    );
    for name in MODULES {
        let manifest_path = root.join("modules").join(name).join("garden.toml");
        let text = std::fs::read_to_string(&manifest_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", manifest_path.display()));
        let manifest = garden_trust::Manifest::parse(&text, &manifest_path.display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let unsigned =
            std::fs::read(wasm(name)).unwrap_or_else(|e| panic!("read built module {name}: {e}"));
        let signed = garden_trust::signature::sign(&unsigned, &manifest, &key, SIGNED_AT)
            .unwrap_or_else(|e| panic!("sign {name}: {e}"));
        let path = signed_dir.join(format!("{name}.wasm"));
        std::fs::write(&path, signed).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .ok();
    }
    code.push_str("];\n\n/// Adversarial fixtures, unsigned (tests sign them with their own keys): (name, path).\npub static FIXTURES: &[(&str, &str)] = &[\n");
    for name in FIXTURES {
        let path = wasm(&format!("fixture-{name}"));
        writeln!(code, "    ({name:?}, {:?}),", path.display().to_string()).ok();
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("guests.rs"), code).expect("write guests.rs into OUT_DIR");
}
