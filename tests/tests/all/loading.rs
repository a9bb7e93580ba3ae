//! Bad components get a clear, specific error and nothing is loaded: the
//! table of issue #4 (integrity, trust, world, limits, capabilities) and of
//! issue #3 (not a component at all). Compiled artifacts are cached and a
//! damaged cache entry is recompiled.

use garden_host::LoadError;
use garden_registry::{Manifest, SigningKey, TrustError, TrustStore, signature};
use garden_tests::{engine, fixture_bytes, fixture_manifest, signed, test_key, test_limits, trust};

/// Which error a case must give.
type Expect = fn(&LoadError) -> bool;

/// One bad input: its name, its bytes, the trust store to check it
/// against, which error it must give, and a phrase the message must contain.
type Case = (&'static str, Vec<u8>, TrustStore, Expect, &'static str);

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x01;
    b
}

/// Offset of the last occurrence of `needle`.
fn last(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("needle present")
}

fn with_manifest(name: &str, edit: impl Fn(&str) -> String) -> Vec<u8> {
    let text = edit(&fixture_manifest(name).to_canonical());
    let manifest = Manifest::parse(&text, "edited").expect("edited manifest parses");
    signed(&fixture_bytes(name), &manifest)
}

#[test]
fn table_of_bad_components() {
    let engine = engine(test_limits());
    let alpha = garden_modules::module("alpha-ema")
        .expect("built in")
        .to_vec();
    let trader = garden_modules::module("trader").expect("built in").to_vec();
    let alpha_code_len = signature::parse(&alpha).expect("signed").code.len();
    let trader_signature = &trader[signature::parse(&trader).expect("signed").code.len()..];
    let stranger = SigningKey::generate();
    let mut revoked = trust();
    revoked.revoke(
        test_key().public().id(),
        "key leaked in a test",
        "2026-06-01T00:00:00Z",
    );

    let cases: Vec<Case> = vec![
        (
            "not wasm",
            b"hello, world".to_vec(),
            trust(),
            |e| matches!(e, LoadError::NotWasm),
            "not a WebAssembly binary",
        ),
        (
            "empty file",
            Vec::new(),
            trust(),
            |e| matches!(e, LoadError::NotWasm),
            "not a WebAssembly binary",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            trust(),
            |e| matches!(e, LoadError::CoreModule),
            "core WebAssembly module",
        ),
        (
            "unsigned",
            fixture_bytes("loop"),
            trust(),
            |e| matches!(e, LoadError::Refused(_)),
            "unsigned",
        ),
        (
            "truncated",
            alpha[..alpha.len() - 40].to_vec(),
            trust(),
            |e| matches!(e, LoadError::Refused(_)),
            "truncated",
        ),
        (
            "one byte flipped in the code",
            flip(&alpha, alpha_code_len / 2),
            trust(),
            |e| matches!(e, LoadError::Refused(TrustError::CodeMismatch { .. })),
            "changed after signing",
        ),
        (
            "one byte flipped in the manifest",
            // `role = "alpha"` becomes `role = "blpha"`: still a valid manifest.
            flip(&alpha, last(&alpha, b"role = \"alpha\"") + 8),
            trust(),
            |e| matches!(e, LoadError::Refused(TrustError::BadSignature(_))),
            "does not verify",
        ),
        (
            "signature of another component",
            [&alpha[..alpha_code_len], trader_signature].concat(),
            trust(),
            |e| matches!(e, LoadError::Refused(TrustError::CodeMismatch { .. })),
            "another component",
        ),
        (
            "signed by an untrusted key",
            signature::sign(
                &fixture_bytes("loop"),
                &fixture_manifest("loop"),
                &stranger,
                "2026-01-01T00:00:00Z",
            )
            .expect("signs"),
            trust(),
            |e| matches!(e, LoadError::Refused(TrustError::Untrusted(_))),
            "does not trust",
        ),
        (
            "signed by a revoked key",
            signed(&fixture_bytes("loop"), &fixture_manifest("loop")),
            revoked,
            |e| matches!(e, LoadError::Refused(TrustError::Revoked { .. })),
            "key leaked in a test",
        ),
        (
            "manifest targets another world",
            with_manifest("loop", |m| m.replace("garden-module", "other-world")),
            trust(),
            |e| matches!(e, LoadError::WrongWorld(_)),
            "other-world",
        ),
        (
            "component of another world",
            signed(b"\0asm\x0d\0\x01\0", &fixture_manifest("loop")),
            trust(),
            |e| matches!(e, LoadError::WrongWorld(_)),
            "garden-module world",
        ),
        (
            "limits above the ceiling",
            with_manifest("loop", |m| {
                m.replace("[limits]\n", "[limits]\nmemory_bytes = 1073741824\n")
            }),
            trust(),
            |e| {
                matches!(
                    e,
                    LoadError::AboveCeiling {
                        what: "memory_bytes",
                        ..
                    }
                )
            },
            "ceiling",
        ),
        (
            "memory below what it starts with",
            with_manifest("loop", |m| {
                m.replace("[limits]\n", "[limits]\nmemory_bytes = 65536\n")
            }),
            trust(),
            |e| {
                matches!(
                    e,
                    LoadError::MemoryBelowInitial {
                        allowed: 65_536,
                        ..
                    }
                )
            },
            "but starts with",
        ),
        (
            "subscribes outside its manifest",
            with_manifest("loop", |m| {
                m.replace("subscribe = [\"bar\"]", "subscribe = []")
            }),
            trust(),
            |e| matches!(e, LoadError::ManifestMismatch(_)),
            "subscribes to `bar`",
        ),
        (
            "declares publishing outside its manifest",
            with_manifest("loop", |m| {
                m.replace("publish = [\"noise\"]", "publish = []")
            }),
            trust(),
            |e| matches!(e, LoadError::ManifestMismatch(_)),
            "publishing to `noise`",
        ),
    ];
    for (name, bytes, store, expected, text) in cases {
        match engine.load(&bytes, &store) {
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
    // The engine is unharmed and still loads the real module.
    let m = engine.load(&alpha, &trust()).expect("loads");
    assert_eq!(m.info().name, "alpha-ema");
    assert_eq!(
        m.manifest().map(|m| m.reference()),
        Some("alpha-ema@0.1.0".to_string())
    );
}

#[test]
fn compiled_artifacts_are_cached_and_a_damaged_entry_is_recompiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = garden_modules::module("trader").expect("built in");
    let engine =
        garden_host::Engine::new(test_limits(), Some(dir.path().to_path_buf())).expect("engine");
    let first = engine.load(real, &trust()).expect("loads");
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "one artifact per component");
    let again = engine.load(real, &trust()).expect("loads from cache");
    assert_eq!(first.digest(), again.digest());
    std::fs::write(&artifacts[0], b"damaged").expect("damage the artifact");
    let repaired = engine
        .load(real, &trust())
        .expect("recompiles a damaged entry");
    assert_eq!(repaired.info().name, "trader");
}

#[test]
fn every_built_in_module_loads_and_matches_its_manifest() {
    let engine = engine(test_limits());
    for (name, bytes) in garden_modules::MODULES {
        let m = engine
            .load(bytes, &trust())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.info().name, *name);
        assert_eq!(m.manifest().map(|x| x.name.as_str()), Some(*name));
    }
    assert!(garden_modules::MODULES.len() >= 9);
}

#[test]
fn a_swapped_artifact_is_recompiled_not_run() {
    // Whoever can write the cache directory swaps the trader's compiled
    // artifact for the decision module's, with a fresh unkeyed checksum
    // beside it. The host must compile the trader again, not run the
    // decision module's code as the trader.
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        garden_host::Engine::new(test_limits(), Some(dir.path().to_path_buf())).expect("engine");
    let artifact_of = |name: &str| {
        let digest = engine
            .load(garden_modules::module(name).expect("built in"), &trust())
            .expect("loads")
            .digest()
            .to_string();
        std::fs::read_dir(dir.path())
            .expect("cache dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension().is_some_and(|x| x == "cwasm")
                    && p.file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(&digest))
            })
            .expect("artifact cached")
    };
    let trader = artifact_of("trader");
    let decision = artifact_of("decision");
    std::fs::copy(&decision, &trader).expect("swap");
    let bytes = std::fs::read(&trader).expect("read");
    let check = trader.with_extension("sha256");
    std::fs::write(&check, {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    })
    .expect("forge checksum");
    let fresh =
        garden_host::Engine::new(test_limits(), Some(dir.path().to_path_buf())).expect("engine");
    let loaded = fresh
        .load(
            garden_modules::module("trader").expect("built in"),
            &trust(),
        )
        .expect("the trader loads (recompiled)");
    assert_eq!(loaded.info().name, "trader");
}

#[test]
fn a_description_beyond_the_host_s_ceilings_is_refused_at_load() {
    // The fixture's describe() lists 1,000 genes.
    let engine = engine(test_limits());
    let bytes = garden_tests::signed(
        &garden_tests::fixture_bytes("big-describe"),
        &garden_tests::fixture_manifest("big-describe"),
    );
    let error = engine.load(&bytes, &trust()).expect_err("refused at load");
    let text = error.to_string();
    assert!(matches!(error, LoadError::BadInfo(_)), "{text}");
    assert!(
        text.contains("1000 genes") && text.contains("ceiling of 256"),
        "{text}"
    );
}
