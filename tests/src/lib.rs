//! Shared helpers for the integration tests: an engine with test limits,
//! keys and a trust store, the real modules and the fixtures (signed by a
//! test key), and the bundled data.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use garden_host::feed::{self, csv::Row};
use garden_host::{Engine, Limits, Module};
use garden_registry::{Manifest, SigningKey, TrustStore, signature};

pub mod languages;
pub mod netns;
pub mod servers;
pub mod tour;

/// Limits small enough that misbehaving fixtures are stopped quickly.
pub fn test_limits() -> Limits {
    Limits {
        memory_bytes: 64 << 20,
        fuel_per_call: 50_000_000,
        deadline: Duration::from_secs(2),
        max_failures: 3,
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(4),
        max_instances: 200,
        ..Limits::default()
    }
}

/// An engine without an artifact cache.
pub fn engine(limits: Limits) -> Arc<Engine> {
    Arc::new(Engine::new(limits, None).expect("engine starts"))
}

/// The key the tests sign fixtures with (one per test process).
pub fn test_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(SigningKey::generate)
}

/// What a pipeline of built-in modules trusts, as `garden run` does: the
/// test key, and the development key for the built-in modules only.
pub fn pipeline_trust() -> garden_host::integrity::Trust {
    let mut store = TrustStore::default();
    store
        .add(&test_key().public(), "tests", "2026-01-01T00:00:00Z")
        .expect("trust test key");
    garden_host::integrity::Trust::new(store).expect("dev key")
}

/// A trust store with the test key and the development key.
pub fn trust() -> TrustStore {
    let mut store = TrustStore::default();
    store
        .add(&test_key().public(), "tests", "2026-01-01T00:00:00Z")
        .expect("trust test key");
    store
        .add(
            &garden_host::integrity::dev_key().expect("dev key"),
            "dev",
            "2026-01-01T00:00:00Z",
        )
        .expect("trust dev key");
    store
}

/// A manifest for a fixture: it may subscribe to `bar` and publish `noise`.
pub fn fixture_manifest(name: &str) -> Manifest {
    let text = format!(
        "name = \"fixture-{name}\"\nversion = \"0.1.0\"\nrole = \"fixture\"\n\
         wit_package = \"garden:pipeline@0.4.0\"\nwit_world = \"garden-module\"\n\
         [capabilities]\nsubscribe = [\"bar\"]\npublish = [\"noise\"]\n"
    );
    Manifest::parse(&text, "fixture manifest").expect("valid fixture manifest")
}

/// `code` signed by the test key with `manifest`.
pub fn signed(code: &[u8], manifest: &Manifest) -> Vec<u8> {
    signature::sign(code, manifest, test_key(), "2026-01-01T00:00:00Z").expect("signs")
}

/// A real module, loaded (signed by the development key at build time).
pub fn module(engine: &Engine, name: &str) -> Arc<Module> {
    let bytes = garden_modules::module(name).unwrap_or_else(|| panic!("no built-in module {name}"));
    engine
        .load(bytes, &trust())
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

/// Built-in module `name` rebuilt as version `version`: the same code with
/// a custom section added (so another digest, the same behaviour), signed
/// by the test key.
pub fn rebuilt(dir: &std::path::Path, name: &str, version: &str) -> std::path::PathBuf {
    let built = garden_modules::module(name).expect("a built-in module");
    let parsed = signature::parse(built).expect("a signed component");
    let mut code = parsed.code.to_vec();
    let (label, payload) = (b"garden-test-build", version.as_bytes());
    let size = 1 + label.len() + payload.len();
    assert!(size < 128 && label.len() < 128, "one-byte LEB128 sizes");
    code.push(0);
    code.push(size as u8);
    code.push(label.len() as u8);
    code.extend_from_slice(label);
    code.extend_from_slice(payload);
    let mut manifest = parsed.manifest.clone();
    manifest.version = version.into();
    manifest.component = None;
    manifest.publisher = None;
    let bytes = signed(&code, &manifest);
    let path = dir.join(format!("{name}-{version}.signed.wasm"));
    std::fs::write(&path, bytes).expect("writes");
    path
}

/// Fixture `name` signed, validly, by a key nobody trusts (an attacker
/// who holds no trusted key), written to `dir`: its file and the key.
pub fn signed_by_stranger(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, SigningKey) {
    let stranger = SigningKey::generate();
    let bytes = signature::sign(
        &fixture_bytes(name),
        &fixture_manifest(name),
        &stranger,
        "2026-01-01T00:00:00Z",
    )
    .expect("signs");
    let path = dir.join("stranger.signed.wasm");
    std::fs::write(&path, bytes).expect("writes");
    (path, stranger)
}

/// The unsigned bytes of an adversarial fixture.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = garden_modules::fixture(name).unwrap_or_else(|| panic!("no fixture {name}"));
    std::fs::read(path).unwrap_or_else(|e| panic!("read fixture {path}: {e}"))
}

/// An adversarial fixture, signed by the test key and loaded.
pub fn fixture(engine: &Engine, name: &str) -> Arc<Module> {
    let bytes = signed(&fixture_bytes(name), &fixture_manifest(name));
    engine
        .load(&bytes, &trust())
        .unwrap_or_else(|e| panic!("fixture {name} loads: {e}"))
}

/// The bundled EUR/USD hourly bars.
pub fn bundled_rows() -> Vec<Row> {
    feed::csv::read(feed::BUNDLED_CSV.as_bytes(), feed::BUNDLED_NAME).expect("bundled data parses")
}

/// Replay `rows` through the embedded pipeline with `variants` variants on
/// `threads` threads (0: the default), keeping every message on `topics`.
pub fn replay_embedded(
    seed: u64,
    variants: u32,
    threads: usize,
    rows: &[Row],
    topics: &[&str],
) -> (
    garden_host::replay::RunSummary,
    Vec<Arc<garden_host::Envelope>>,
) {
    replay_embedded_in_batches(seed, variants, threads, 0, rows, topics)
}

/// [`replay_embedded`], handing each instance at most `batch` messages per
/// call (0: the default).
pub fn replay_embedded_in_batches(
    seed: u64,
    variants: u32,
    threads: usize,
    batch: usize,
    rows: &[Row],
    topics: &[&str],
) -> (
    garden_host::replay::RunSummary,
    Vec<Arc<garden_host::Envelope>>,
) {
    replay_embedded_changed(seed, variants, threads, batch, rows, topics, |_| {})
}

/// [`replay_embedded_in_batches`] with the embedded pipeline changed by
/// `change` first (e.g. packed in cohorts, or other limits).
pub fn replay_embedded_changed(
    seed: u64,
    variants: u32,
    threads: usize,
    batch: usize,
    rows: &[Row],
    topics: &[&str],
    change: impl FnOnce(&mut garden_host::config::PipelineConfig),
) -> (
    garden_host::replay::RunSummary,
    Vec<Arc<garden_host::Envelope>>,
) {
    use garden_host::config::PipelineConfig;
    use garden_host::replay::{Replay, ReplayOptions};
    let mut config = PipelineConfig::embedded().expect("embedded pipeline");
    change(&mut config);
    let engine = engine(config.limits.clone());
    let modules = config
        .load(&engine, &pipeline_trust())
        .expect("modules load");
    let (first, last) = (rows[0].time, rows[rows.len() - 1].time);
    let options = ReplayOptions {
        seed,
        variants: Some(variants),
        symbol: "EURUSD".into(),
        data_name: "bundled".into(),
        threads,
        total_bars: rows.len(),
        steps_per_year: garden_host::scoring::steps_per_year(rows.len(), first, last),
        per_call: batch,
        deploys: garden_host::loader::deploy::start_all(&engine, &pipeline_trust(), &config),
    };
    let mut replay = Replay::start(engine, &config, &modules, options).expect("starts");
    for t in topics {
        replay.tap(t);
    }
    let mut tapped = Vec::new();
    for row in rows {
        replay.feed(row);
        tapped.extend(replay.take_tapped());
    }
    let (summary, rest) = replay.finish_tapped(rows, 1.0);
    tapped.extend(rest);
    (summary, tapped)
}

/// A run summary as JSON without the wall-clock figures, which differ from
/// run to run: what two runs of the same seed must agree on.
pub fn without_timings(s: &garden_host::replay::RunSummary) -> serde_json::Value {
    let mut v = serde_json::to_value(s).expect("serialises");
    if let Some(obj) = v.as_object_mut() {
        for timing in ["elapsed_secs", "bars_per_sec", "messages_per_sec"] {
            obj.remove(timing);
        }
        if let Some(instances) = obj.get_mut("instances").and_then(|i| i.as_array_mut()) {
            for i in instances.iter_mut().filter_map(|i| i.as_object_mut()) {
                i.remove("busy_micros");
                i.remove("micros_per_message");
            }
        }
    }
    v
}

/// [`without_timings`], and without the fuel each instance burned: fuel
/// counts the work of lifting and lowering a call's arguments too, so it
/// changes with how many messages go in one call, while what the run did
/// does not.
pub fn without_costs(s: &garden_host::replay::RunSummary) -> serde_json::Value {
    let mut v = without_timings(s);
    if let Some(instances) = v.get_mut("instances").and_then(|i| i.as_array_mut()) {
        for i in instances.iter_mut().filter_map(|i| i.as_object_mut()) {
            i.remove("fuel");
        }
    }
    v
}

/// The home of [`garden`]'s files in this test process: `data/`, the trust
/// store `trust.toml`, `cache/`.
pub fn garden_home() -> &'static std::path::Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("a home for garden"))
        .path()
}

/// The `garden` command of this build, with its data directory (audit key
/// and heads, default store), trust store and cache in a directory of this
/// test process, never the user's own.
pub fn garden() -> std::process::Command {
    with_garden_env(std::process::Command::new(garden_bin()))
}

/// [`garden`] run on test host `host` (in its network namespace).
pub fn garden_on(host: &netns::Host) -> std::process::Command {
    with_garden_env(host.command(&garden_bin()))
}

fn with_garden_env(mut command: std::process::Command) -> std::process::Command {
    let home = garden_home();
    command
        .env("GARDEN_DATA", home.join("data"))
        .env("GARDEN_TRUST", home.join("trust.toml"))
        .env("XDG_CACHE_HOME", home.join("cache"));
    command
}

/// Make daemon `name`'s key where `garden daemon --name NAME` of
/// [`garden`] finds it, and trust it as a daemon key in [`garden`]'s trust
/// store, as an operator does before starting it.
pub fn trust_daemon(name: &str) {
    // Tests running at once may name the same daemon: one makes its key,
    // the others read it.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let home = garden_home();
    let key = home.join("data/daemons").join(format!("{name}.key.pem"));
    let (identity, _) = garden_host::cluster::Identity::load_or_create(&key).expect("a daemon key");
    TrustStore::update(&home.join("trust.toml"), |store| {
        store.add_as(
            &identity.public(),
            name,
            garden_registry::trust::Role::Daemon,
            "test",
        )
    })
    .expect("trusts the daemon key");
}

/// A Redis bus that tags with, and accepts, one key shared by every bus
/// this test process connects this way: buses of one test read each other,
/// as daemons that trust each other do.
pub fn shared_bus(
    options: garden_host::bus::RedisOptions,
) -> Result<garden_host::bus::RedisBus, garden_host::bus::redis::RedisBusError> {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    let key = KEY.get_or_init(SigningKey::generate);
    let mut bus = garden_host::bus::RedisBus::connect(options)?;
    bus.set_auth(garden_host::bus::redis::EntryAuth::new(key, &[]));
    Ok(bus)
}

/// A Redis bus client the daemons of [`garden`] accept: it holds daemon
/// `name`'s key, trusted as a daemon key, and tags for every daemon key the
/// trust store lists now (so trust the daemons first).
pub fn trusted_bus(
    name: &str,
    options: garden_host::bus::RedisOptions,
) -> garden_host::bus::RedisBus {
    trust_daemon(name);
    let key = garden_home()
        .join("data/daemons")
        .join(format!("{name}.key.pem"));
    let (identity, _) = garden_host::cluster::Identity::load_or_create(&key).expect("a daemon key");
    let mut bus = garden_host::bus::RedisBus::connect(options).expect("connects");
    bus.set_auth(identity.entry_auth(&daemon_peers()));
    bus
}

/// The daemon keys [`garden`]'s trust store lists, as a daemon reads them.
pub fn daemon_peers() -> garden_host::cluster::Peers {
    let store = TrustStore::read(&garden_home().join("trust.toml")).expect("the trust store");
    garden_host::cluster::Peers::new(store)
}

/// The `garden` binary of this build (`target/<profile>/garden`), which
/// `cargo test --workspace` builds before running the tests.
pub fn garden_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/garden
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("garden"))
        .expect("a target directory");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace --release`, which builds it",
        bin.display()
    );
    bin
}

/// Plan `p{n}` for EURUSD, as a test's producer publishes it (topic
/// `plan`, key and id `p{n}`, event time `n`).
pub fn plan(n: u64) -> garden_host::Envelope {
    let id = format!("p{n}");
    garden_host::Envelope {
        topic: "plan".into(),
        key: id.clone(),
        seq: 0,
        time: n as i64,
        source: "test".into(),
        body: garden_host::types::Body::Plan(garden_host::types::Plan {
            id,
            origin: "test".into(),
            symbol: "EURUSD".into(),
            side: garden_host::types::Side::Long,
            entry: 1.0,
            stop: 0.9,
            target: 1.2,
            size: 1.0,
            horizon: 5,
            confidence: 0.5,
            time: n as i64,
        }),
        trace: garden_host::message::Trace::default(),
    }
}

/// Write `rows` into the feed stream `{prefix}:feed` as an outside
/// producer does (`symbol time open high low close volume`).
pub fn feed_bars(con: &mut redis::Connection, prefix: &str, rows: &[Row]) {
    let mut pipe = redis::pipe();
    for r in rows {
        pipe.cmd("XADD")
            .arg(format!("{prefix}:feed"))
            .arg("*")
            .arg("symbol")
            .arg("EURUSD")
            .arg("time")
            .arg(r.time)
            .arg("open")
            .arg(r.open)
            .arg("high")
            .arg(r.high)
            .arg("low")
            .arg(r.low)
            .arg("close")
            .arg(r.close)
            .arg("volume")
            .arg(r.volume)
            .ignore();
    }
    pipe.exec(con).expect("bars written");
}

/// A child process (a daemon, a registry), killed and reaped when dropped
/// (also when a test fails), so none outlives its test.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait up to `timeout` until `ok`, checking every 50 ms; panic naming
/// `what` if it never holds.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
