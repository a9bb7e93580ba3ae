//! Bad component bytes get a clear, specific error and nothing is loaded;
//! compiled artifacts are cached and a damaged cache entry is recompiled.

use garden_host::LoadError;
use garden_tests::{engine, test_limits};

/// One bad input: its name, its bytes, which error it must give, and a
/// phrase the message must contain.
type Case = (&'static str, Vec<u8>, fn(&LoadError) -> bool, &'static str);

#[test]
fn table_of_bad_components() {
    let engine = engine(test_limits());
    let real = garden_modules::module("alpha-ema").expect("built in");
    let cases: Vec<Case> = vec![
        (
            "not wasm",
            b"hello, world".to_vec(),
            |e| matches!(e, LoadError::NotWasm),
            "not a WebAssembly binary",
        ),
        (
            "empty file",
            Vec::new(),
            |e| matches!(e, LoadError::NotWasm),
            "not a WebAssembly binary",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            |e| matches!(e, LoadError::CoreModule),
            "core WebAssembly module",
        ),
        (
            "truncated component",
            real[..real.len() / 2].to_vec(),
            |e| matches!(e, LoadError::Invalid(_)),
            "invalid",
        ),
        (
            "garbage after header",
            b"\0asm\x0d\0\x01\0garbage!".to_vec(),
            |e| matches!(e, LoadError::Invalid(_)),
            "invalid",
        ),
        (
            "component of another world",
            b"\0asm\x0d\0\x01\0".to_vec(),
            |e| matches!(e, LoadError::WrongWorld(_)),
            "garden-module world",
        ),
    ];
    for (name, bytes, expected, text) in cases {
        match engine.load(&bytes) {
            Ok(m) => panic!("{name}: loaded {m:?}"),
            Err(e) => {
                assert!(expected(&e), "{name}: wrong error {e:?}");
                assert!(
                    e.to_string().contains(text),
                    "{name}: message `{e}` lacks `{text}`"
                );
            }
        }
    }
    // The engine is unharmed and still loads a real module.
    assert_eq!(engine.load(real).expect("loads").info().name, "alpha-ema");
}

#[test]
fn compiled_artifacts_are_cached_and_a_damaged_entry_is_recompiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = garden_modules::module("trader").expect("built in");
    let engine =
        garden_host::Engine::new(test_limits(), Some(dir.path().to_path_buf())).expect("engine");
    let first = engine.load(real).expect("loads");
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "one artifact per component");
    let again = engine.load(real).expect("loads from cache");
    assert_eq!(first.digest(), again.digest());
    std::fs::write(&artifacts[0], b"damaged").expect("damage the artifact");
    let repaired = engine.load(real).expect("recompiles a damaged entry");
    assert_eq!(repaired.info().name, "trader");
}
