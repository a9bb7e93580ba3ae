//! `garden key`, `trust`, `sign`, `verify` and `inspect` as a publisher and
//! an operator use them, and interoperability with openssl.

use std::path::Path;
use std::process::{Command, Output};

fn garden(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_garden"))
        .args(args)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("GARDEN_TRUST", dir.join("default-trust.toml"))
        .env("GARDEN_DATA", dir.join("data"))
        .output()
        .expect("garden runs")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is needed for this test: install it with `apt-get install openssl`")
}

const MANIFEST: &str = r#"
name = "fixture-loop"
version = "1.2.3"
role = "fixture"
wit_package = "garden:pipeline@0.4.0"
wit_world = "garden-module"

[capabilities]
subscribe = ["bar"]
publish = ["noise"]
"#;

#[test]
fn publisher_and_operator_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let s = |p: &str| d.join(p).to_string_lossy().into_owned();

    // A publisher makes a key; openssl reads both halves.
    let out = ok(&garden(
        &["key", "generate", "--name", "alice", "--dir", &s("keys")],
        d,
    ));
    assert!(out.contains("key id"), "{out}");
    assert!(
        openssl(&["pkey", "-in", &s("keys/alice.key.pem"), "-noout"])
            .status
            .success()
    );
    assert!(
        openssl(&["pkey", "-pubin", "-in", &s("keys/alice.pub.pem"), "-noout"])
            .status
            .success()
    );

    // ... and signs a component.
    std::fs::write(d.join("garden.toml"), MANIFEST).expect("manifest");
    let fixture = garden_modules::fixture("loop").expect("fixture built");
    ok(&garden(
        &[
            "sign",
            fixture,
            "--manifest",
            &s("garden.toml"),
            "--key",
            &s("keys/alice.key.pem"),
            "-o",
            &s("loop.wasm"),
        ],
        d,
    ));

    // An operator who has not trusted alice (an empty default store)
    // refuses it, with exit code 1.
    let refused = garden(&["verify", &s("loop.wasm")], d);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    // The reason is said once: the error chain does not repeat its source.
    assert_eq!(said.matches("does not trust").count(), 1, "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.starts_with("error: ") && said.contains("is not accepted: "),
        "{said}"
    );

    // Trusting the key makes it valid.
    ok(&garden(
        &[
            "trust",
            "add",
            &s("keys/alice.pub.pem"),
            "--name",
            "alice",
            "--trust",
            &s("trust.toml"),
        ],
        d,
    ));
    let listed = ok(&garden(&["trust", "list", "--trust", &s("trust.toml")], d));
    assert!(listed.contains("alice"), "{listed}");
    let valid = ok(&garden(
        &["verify", &s("loop.wasm"), "--trust", &s("trust.toml")],
        d,
    ));
    assert!(valid.contains("valid: fixture-loop@1.2.3"), "{valid}");

    // Inspect shows the manifest, signer, trust and the WIT interface.
    let shown = ok(&garden(
        &["inspect", &s("loop.wasm"), "--trust", &s("trust.toml")],
        d,
    ));
    for needle in [
        "fixture-loop@1.2.3",
        "trusted (signed by alice)",
        "garden:pipeline/module@0.4.0",
        "garden:pipeline/host@0.4.0",
    ] {
        assert!(shown.contains(needle), "inspect lacks {needle}:\n{shown}");
    }

    // Rotation: revoke the key and everything it signed is refused with the reason.
    let key_id = listed
        .lines()
        .find(|l| l.contains("alice"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("key id listed")
        .to_string();
    ok(&garden(
        &[
            "trust",
            "revoke",
            &key_id,
            "--reason",
            "laptop stolen",
            "--trust",
            &s("trust.toml"),
        ],
        d,
    ));
    let revoked = garden(&["verify", &s("loop.wasm"), "--trust", &s("trust.toml")], d);
    assert_eq!(revoked.status.code(), Some(1));
    let err = String::from_utf8_lossy(&revoked.stderr);
    assert!(
        err.contains("revoked") && err.contains("laptop stolen"),
        "{err}"
    );

    // Tampering is refused too.
    let mut bytes = std::fs::read(d.join("loop.wasm")).expect("signed");
    bytes[100] ^= 1;
    std::fs::write(d.join("tampered.wasm"), bytes).expect("write");
    let tampered = garden(
        &["verify", &s("tampered.wasm"), "--trust", &s("trust.toml")],
        d,
    );
    assert_eq!(tampered.status.code(), Some(1));
}

#[test]
fn openssl_verifies_a_garden_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The built-in modules are signed with the development key.
    let signed = garden_modules::module("alpha-ema").expect("built in");
    let parsed = garden_registry::signature::parse(signed).expect("signed");
    std::fs::write(d.join("message.bin"), parsed.message()).expect("write");
    std::fs::write(d.join("signature.bin"), &parsed.signature).expect("write");
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/../keys/dev.pub.pem");
    let out = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        key,
        "-rawin",
        "-in",
        &d.join("message.bin").to_string_lossy(),
        "-sigfile",
        &d.join("signature.bin").to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"));
}

#[test]
fn the_python_check_in_docs_verifies_a_garden_signature() {
    // The snippet in docs/signing.md, run as written.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/signing.md"))
        .expect("docs");
    let start = doc.find("```python\n").expect("python block") + "```python\n".len();
    let end = start + doc[start..].find("```").expect("end of block");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("verify.py");
    std::fs::write(&script, &doc[start..end]).expect("write script");
    let signed = dir.path().join("alpha.wasm");
    std::fs::write(
        &signed,
        garden_modules::module("alpha-ema").expect("built in"),
    )
    .expect("write");
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/../keys/dev.pub.pem");
    // In the scratch directory: the script writes the message and the
    // signature it checked beside it.
    let out = Command::new("python3")
        .current_dir(dir.path())
        .arg(&script)
        .arg(&signed)
        .arg(key)
        .output()
        .expect("python3 is needed for this test: install Python 3.11+");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'cryptography'"),
        "the Python check needs the cryptography package: `pip install cryptography`"
    );
    assert!(out.status.success(), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("valid signature by 65f8f5b00ac1171328e65afe5ef92aa7")
    );
    // One flipped byte in the code and the same script refuses it.
    let mut bytes = std::fs::read(&signed).expect("read");
    bytes[500] ^= 1;
    std::fs::write(&signed, bytes).expect("write");
    // In the scratch directory: the script writes the message and the
    // signature it checked beside it.
    let out = Command::new("python3")
        .current_dir(dir.path())
        .arg(&script)
        .arg(&signed)
        .arg(key)
        .output()
        .expect("python3");
    assert!(!out.status.success());
}

#[test]
fn garden_run_is_audited_and_the_chain_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let store = format!("sqlite://{}", d.join("audit.db").display());
    ok(&garden(
        &["run", "--seed", "1", "--variants", "2", "--store", &store],
        d,
    ));
    let loads = ok(&garden(&["audit", "--store", &store, "--kind", "load"], d));
    assert_eq!(loads.lines().count(), 16, "one load per module:\n{loads}");
    assert!(
        loads.contains("alpha-ema@0.1.0") && loads.contains("65f8f5b00ac1171328e65afe5ef92aa7")
    );
    let only = ok(&garden(
        &["audit", "--store", &store, "--module", "trader@0.1.0"],
        d,
    ));
    assert_eq!(only.lines().count(), 1);
    let intact = ok(&garden(&["audit", "verify", "--store", &store], d));
    assert!(intact.contains("intact: 16 records"), "{intact}");
    // The run's lineage is in the same store.
    let tree = ok(&garden(&["lineage", "--store", &store], d));
    assert!(
        tree.contains("family of alpha-ema.") && tree.contains('★'),
        "{tree}"
    );
    let csv = ok(&garden(&["lineage", "--store", &store, "--csv"], d));
    assert!(
        csv.starts_with("id,parents,component,blob,generation"),
        "{csv}"
    );
    assert!(csv.lines().count() >= 3, "two variants at least");
    let json = ok(&garden(&["lineage", "--store", &store, "--json"], d));
    let records: serde_json::Value = serde_json::from_str(&json).expect("JSON lineage");
    assert!(records.as_array().is_some_and(|a| a.len() >= 2));
}

#[test]
fn the_development_key_does_not_vouch_for_a_component_from_a_file() {
    // The development key's private half is in the repository: anyone can
    // sign with it. A component from a path signed with it is refused by
    // `garden run` unless the operator trusts the key on purpose.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let s = |p: &str| d.join(p).to_string_lossy().into_owned();
    let dev_key = concat!(env!("CARGO_MANIFEST_DIR"), "/../keys/dev.key.pem");
    std::fs::write(d.join("garden.toml"), MANIFEST).expect("manifest");
    let fixture = garden_modules::fixture("loop").expect("fixture built");
    ok(&garden(
        &[
            "sign",
            fixture,
            "--manifest",
            &s("garden.toml"),
            "--key",
            dev_key,
            "-o",
            &s("evil.wasm"),
        ],
        d,
    ));
    let pipeline = format!(
        "[[module]]\nname = \"fixture-loop\"\npath = {:?}\n",
        s("evil.wasm")
    );
    std::fs::write(d.join("pipeline.toml"), pipeline).expect("pipeline");
    let store = format!("sqlite://{}", s("garden.db"));
    let config = s("pipeline.toml");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--config", &config, "--store", &store];
        args.extend_from_slice(extra);
        garden(&args, d)
    };
    let refused = run(&[]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("does not trust"), "{said}");

    // A trust file named on the command line must exist.
    let missing = run(&["--trust", &s("no-such-trust.toml")]);
    let said = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{said}");
    assert!(said.contains("no-such-trust.toml"), "{said}");
    let verify = garden(&["verify", fixture, "--trust", &s("no-such-trust.toml")], d);
    assert!(String::from_utf8_lossy(&verify.stderr).contains("no-such-trust.toml"));

    // Trusting the development key on purpose lets it load.
    ok(&garden(
        &[
            "trust",
            "add",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../keys/dev.pub.pem"),
            "--name",
            "dev on purpose",
            "--trust",
            &s("trust.toml"),
        ],
        d,
    ));
    let verified = ok(&garden(
        &["verify", &s("evil.wasm"), "--trust", &s("trust.toml")],
        d,
    ));
    assert!(verified.contains("valid: fixture-loop@1.2.3"), "{verified}");
}

#[test]
fn inspect_does_not_compile_code_from_an_untrusted_signer() {
    // An empty cache directory stays empty: nothing was compiled.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let s = |p: &str| d.join(p).to_string_lossy().into_owned();
    ok(&garden(
        &["key", "generate", "--name", "mallory", "--dir", &s("keys")],
        d,
    ));
    std::fs::write(d.join("garden.toml"), MANIFEST).expect("manifest");
    let fixture = garden_modules::fixture("loop").expect("fixture built");
    ok(&garden(
        &[
            "sign",
            fixture,
            "--manifest",
            &s("garden.toml"),
            "--key",
            &s("keys/mallory.key.pem"),
            "-o",
            &s("m.wasm"),
        ],
        d,
    ));
    let shown = ok(&garden(&["inspect", &s("m.wasm")], d));
    assert!(shown.contains("NOT trusted"), "{shown}");
    assert!(shown.contains("garden:pipeline/host@0.4.0"), "{shown}");
    let cached = std::fs::read_dir(d.join("cache"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(cached, 0, "inspect compiled an untrusted component");
}

#[test]
fn a_truncated_audit_log_is_told_from_an_intact_one() {
    // Whoever can write the database deletes the newest records, then the
    // signed heads in it too. The records left still link up; the heads,
    // and the host's own copy of its head, show what is missing.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let store = format!("sqlite://{}", d.join("audit.db").display());
    ok(&garden(
        &["run", "--seed", "1", "--variants", "2", "--store", &store],
        d,
    ));
    let intact = ok(&garden(&["audit", "verify", "--store", &store], d));
    assert!(intact.contains("intact: 16 records"), "{intact}");
    let tamper = |sql: &str| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let s = garden_registry::Store::connect(&store)
                .await
                .expect("store");
            s.execute_raw(sql).await.expect("tamper");
        });
    };
    tamper("DELETE FROM audit WHERE seq > 4");
    let cut = garden(&["audit", "verify", "--store", &store], d);
    let said = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(1), "{said}");
    assert!(
        said.contains("truncated")
            && said.contains("ends at record 4")
            && said.contains("signed record 16"),
        "{said}"
    );
    tamper("DELETE FROM audit_heads");
    let cut = garden(&["audit", "verify", "--store", &store], d);
    let said = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(
        cut.status.code(),
        Some(1),
        "the host's own head remembers: {said}"
    );
    assert!(said.contains("signed record 16"), "{said}");
}

#[test]
fn manifest_writes_what_describe_declares_and_checks_a_hand_written_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The built-in sma-cross (signed: a signature is a custom section the
    // describe ignores), against its hand-written manifest.
    let wasm = dir.path().join("sma-cross.wasm");
    std::fs::write(
        &wasm,
        garden_modules::module("sma-cross").expect("built in"),
    )
    .expect("writes");
    let wasm = wasm.to_str().expect("utf-8 path");
    let written = ok(&garden(
        &["manifest", wasm, "--memory", "16777216"],
        dir.path(),
    ));
    let generated = garden_registry::Manifest::parse(&written, "generated").expect("valid TOML");
    let hand = garden_registry::Manifest::parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../modules/sma-cross/garden.toml"
        ))
        .expect("the module's manifest"),
        "garden.toml",
    )
    .expect("valid");
    assert_eq!(generated, hand, "describe() and the manifest agree");
    let checked = ok(&garden(
        &[
            "manifest",
            wasm,
            "--check",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../modules/sma-cross/garden.toml"
            ),
        ],
        dir.path(),
    ));
    assert!(checked.contains("matches"), "{checked}");
    // A manifest whose gene differs is refused with the difference.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        written.replace("name = \"slow\"", "name = \"slower\""),
    )
    .expect("writes");
    let o = garden(
        &["manifest", wasm, "--check", wrong.to_str().expect("utf-8")],
        dir.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not match") && err.contains("slow"),
        "{err}"
    );
}
