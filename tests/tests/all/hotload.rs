//! Hot-loading in a replay (`[[deploy]]` in a pipeline file): new code
//! takes over at a bar while the pipeline runs. `replace` with the same
//! code changes no outcome (every plan, decision and fill is the same, each
//! once, so nothing was lost or handled twice at the switch); `compete`
//! adds variants of another code that live, trade and breed within their
//! code; a tampered component is refused and the old code goes on; and
//! `garden run` audits each deploy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use garden_host::Envelope;
use garden_host::config::{DeployConfig, Strategy};
use garden_host::replay::RunSummary;
use garden_host::replication::BirthCause;
use garden_host::types::{Body, FillKind};
use garden_tests::{bundled_rows, replay_embedded_changed};

const TOPICS: [&str; 3] = ["plan", "decision", "fill"];

/// Built-in module `name` as a component file in `dir`.
fn component(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.signed.wasm"));
    let bytes = garden_modules::module(name).expect("a built-in module");
    std::fs::write(&path, bytes).expect("writes");
    path
}

fn deploy(at_bar: usize, path: &Path, strategy: Strategy, variants: Option<u32>) -> DeployConfig {
    DeployConfig {
        at_bar,
        module: "alpha-ema".into(),
        path: path.to_path_buf(),
        strategy,
        variants,
        share: None,
        rollback: Default::default(),
    }
}

/// Replay 2,000 bundled bars with four variants, with `deploys`.
fn run(deploys: Vec<DeployConfig>) -> (RunSummary, Vec<Arc<Envelope>>) {
    let rows = bundled_rows();
    replay_embedded_changed(7, 4, 0, 0, &rows[..2_000], &TOPICS, |c| c.deploys = deploys)
}

/// Every tapped message as (topic, key, source, body), in order.
fn contents(messages: &[Arc<Envelope>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            format!(
                "{} {} {} {}",
                m.topic,
                m.key,
                m.source,
                serde_json::to_string(&m.body).unwrap_or_default()
            )
        })
        .collect()
}

/// Two message sequences are the same; if not, where they part.
fn same(got: &[String], want: &[String]) {
    let first = got.iter().zip(want).position(|(g, w)| g != w);
    if let Some(i) = first {
        let near = |v: &[String]| {
            v[i.saturating_sub(2)..(i + 3).min(v.len())]
                .iter()
                .map(|m| m.chars().take(90).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n    ")
        };
        panic!(
            "message {i} of {} differs:\n got {}\nwant {}\nnear got:\n    {}\nnear want:\n    {}",
            want.len(),
            got[i].chars().take(400).collect::<String>(),
            want[i].chars().take(400).collect::<String>(),
            near(got),
            near(want)
        );
    }
    assert_eq!(got.len(), want.len(), "as many messages");
}

/// Counts of plan ids in plans, decisions and entry fills.
fn accounted(messages: &[Arc<Envelope>]) -> HashMap<String, (u32, u32, u32)> {
    let mut seen: HashMap<String, (u32, u32, u32)> = HashMap::new();
    for m in messages {
        match &m.body {
            Body::Plan(p) => seen.entry(p.id.clone()).or_default().0 += 1,
            Body::Decision(d) => seen.entry(d.plan.id.clone()).or_default().1 += 1,
            Body::Fill(f) if matches!(f.kind, FillKind::Entry) => {
                seen.entry(f.plan_id.clone()).or_default().2 += 1
            }
            _ => {}
        }
    }
    seen
}

#[test]
fn replacing_alpha_mid_run_keeps_every_plan_decision_and_fill_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alpha = component(dir.path(), "alpha-ema");
    let (plain, plain_messages) = run(Vec::new());
    let (swapped, messages) = run(vec![deploy(1_000, &alpha, Strategy::Replace, None)]);
    let report = &swapped.deploys[0];
    assert_eq!(report.outcome, "done", "{report:?}");
    assert_eq!(report.strategy, "replace");
    assert!(report.code.starts_with("alpha-ema@"), "{report:?}");
    let living: Vec<&str> = plain
        .lineage
        .iter()
        .filter(|l| l.birth_bar < 1_000 && l.death_bar.is_none_or(|d| d >= 1_000))
        .map(|l| l.id.as_str())
        .collect();
    assert_eq!(report.instances.len(), living.len(), "{report:?}");
    assert!(
        report
            .instances
            .iter()
            .all(|(_, what)| what == "from-snapshot"),
        "{report:?}"
    );
    // Up to the switch, the run is the run without it.
    let switch = bundled_rows()[1_000].time;
    let before = |m: &[Arc<Envelope>]| {
        let kept: Vec<Arc<Envelope>> = m.iter().filter(|m| m.time < switch).cloned().collect();
        contents(&kept)
    };
    same(&before(&messages), &before(&plain_messages));
    // Across it, every plan once (the new code goes on numbering where the
    // old one stopped: its snapshot says where), at most one decision and
    // one entry per plan, and none without its plan.
    let counts = accounted(&messages);
    for (id, (plans, decisions, entries)) in &counts {
        assert_eq!(*plans, 1, "plan {id} published {plans} times");
        assert!(
            *decisions <= 1 && *entries <= *decisions,
            "{id}: {decisions} decisions, {entries} entries"
        );
    }
    // The replaced variants go on trading on the new code.
    let after: Vec<&str> = messages
        .iter()
        .filter(|m| m.time >= switch && m.topic == "plan")
        .map(|m| m.source.as_str())
        .collect();
    assert!(
        living.iter().any(|id| after.contains(id)),
        "no plan after the switch"
    );
    // The lineage says which code each variant ran from when.
    let changed: Vec<_> = swapped
        .lineage
        .iter()
        .filter(|l| !l.code_changes.is_empty())
        .collect();
    assert_eq!(changed.len(), living.len());
    assert!(
        changed
            .iter()
            .all(|l| l.code_changes == [(1_000, report.digest.clone())])
    );
}

#[test]
fn competing_code_joins_the_population_and_breeds_within_its_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sma = component(dir.path(), "sma-cross");
    let (summary, _) = run(vec![deploy(800, &sma, Strategy::Compete, Some(3))]);
    let report = &summary.deploys[0];
    assert_eq!(report.outcome, "done", "{report:?}");
    assert_eq!(report.instances.len(), 3, "{report:?}");
    let born: Vec<_> = summary
        .lineage
        .iter()
        .filter(|l| l.birth_cause == BirthCause::Deploy)
        .collect();
    assert_eq!(born.len(), 3);
    for l in &born {
        assert_eq!(l.component, report.digest);
        assert_eq!(l.birth_bar, 800);
        assert!(l.id.starts_with("sma-cross."), "{}", l.id);
    }
    // They trade: their plans reach the trader and come back as fitness.
    let scored = summary
        .variants
        .iter()
        .filter(|v| v.id.starts_with("sma-cross.") && v.score.is_some())
        .count();
    assert!(scored > 0, "no sma-cross variant reported fitness");
    // Crossover stays within one code.
    let by_id: std::collections::HashMap<&str, &str> = summary
        .lineage
        .iter()
        .map(|l| (l.id.as_str(), l.component.as_str()))
        .collect();
    for l in &summary.lineage {
        for p in &l.parents {
            assert_eq!(
                by_id.get(p.as_str()),
                Some(&l.component.as_str()),
                "{}",
                l.id
            );
        }
    }
}

#[test]
fn a_tampered_component_is_refused_and_the_old_code_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alpha = component(dir.path(), "alpha-ema");
    let mut bytes = std::fs::read(&alpha).expect("reads");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&alpha, bytes).expect("writes");
    let (plain, plain_messages) = run(Vec::new());
    let (summary, messages) = run(vec![deploy(1_000, &alpha, Strategy::Replace, None)]);
    let report = &summary.deploys[0];
    assert!(report.outcome.starts_with("refused: "), "{report:?}");
    assert!(report.instances.is_empty());
    same(&contents(&messages), &contents(&plain_messages));
    assert_eq!(summary.lineage.len(), plain.lineage.len());
}

/// Code signed, validly, by a key the host does not trust: an attacker
/// who can write the pipeline's component file but holds no trusted key.
#[test]
fn a_component_signed_by_an_untrusted_key_is_refused_and_the_old_code_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, stranger) = garden_tests::signed_by_stranger(dir.path(), "panic-message");
    let (plain, plain_messages) = run(Vec::new());
    let (summary, messages) = run(vec![deploy(1_000, &path, Strategy::Replace, None)]);
    let report = &summary.deploys[0];
    assert!(report.outcome.starts_with("refused: "), "{report:?}");
    assert!(
        report.outcome.contains(&stranger.public().id().to_string())
            || report.outcome.contains("trust"),
        "{report:?}"
    );
    assert!(report.instances.is_empty());
    same(&contents(&messages), &contents(&plain_messages));
    assert_eq!(summary.lineage.len(), plain.lineage.len());
}

/// The `tenth` fixture (traps on every tenth bar, publishes nothing) as a
/// component signed by the test key, in `dir`.
fn broken_version(dir: &Path) -> PathBuf {
    let name = "tenth";
    let bytes = garden_tests::signed(
        &garden_tests::fixture_bytes(name),
        &garden_tests::fixture_manifest(name),
    );
    let path = dir.join("broken.signed.wasm");
    std::fs::write(&path, bytes).expect("writes");
    path
}

#[test]
fn a_version_that_traps_on_its_tenth_message_is_rolled_back_and_the_old_code_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = broken_version(dir.path());
    let (summary, messages) = run(vec![deploy(1_000, &broken, Strategy::Replace, None)]);
    let report = &summary.deploys[0];
    assert_eq!(report.outcome, "done", "{report:?}");
    let switched: Vec<&str> = report.instances.iter().map(|(id, _)| id.as_str()).collect();
    assert!(!switched.is_empty(), "{report:?}");
    // Each instance traps on its tenth bar on the new code (bar 1,009):
    // that is three traps or more, so the next bar runs the old code.
    let back = report.settled.as_ref().expect("rolled back");
    assert_eq!(back.bar, 1_010, "{back:?}");
    assert!(back.why.contains("traps of the new code"), "{back:?}");
    for id in &switched {
        assert!(
            back.instances
                .iter()
                .any(|(b, what)| b == id && what == "from-snapshot"),
            "{id} not put back from its snapshot: {back:?}"
        );
    }
    // No plan from them while the broken code ran; plans again after.
    let (t0, t1) = (bundled_rows()[1_000].time, bundled_rows()[1_010].time);
    let planned = |from: i64, to: i64| {
        messages
            .iter()
            .filter(|m| m.topic == "plan" && m.time >= from && m.time < to)
            .filter(|m| switched.contains(&m.source.as_str()))
            .count()
    };
    assert_eq!(planned(t0, t1), 0);
    assert!(planned(t1, i64::MAX) > 0, "the old code did not go on");
    // Every plan once, across both switches.
    for (id, (plans, decisions, entries)) in accounted(&messages) {
        assert_eq!(plans, 1, "plan {id} published {plans} times");
        assert!(decisions <= 1 && entries <= decisions, "{id}");
    }
    // The lineage tells which code each ran, and when.
    let old = summary
        .lineage
        .iter()
        .find(|l| l.id == switched[0])
        .expect("in the lineage");
    assert_eq!(
        old.code_changes,
        [
            (1_000, report.digest.clone()),
            (1_010, old.component.clone())
        ],
        "{old:?}"
    );
}

#[test]
fn a_rollback_rule_of_zero_traps_keeps_the_new_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = broken_version(dir.path());
    let mut d = deploy(1_000, &broken, Strategy::Replace, None);
    d.rollback.traps = 0;
    let (summary, _) = run(vec![d]);
    assert!(summary.deploys[0].settled.is_none());
    assert!(summary.runtime.traps >= 4, "{:?}", summary.runtime);
}

#[test]
fn a_replace_whose_fitness_falls_past_the_margin_is_rolled_back_at_the_end_of_its_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The same code under a new digest: what decides is the margin.
    let next = garden_tests::rebuilt(dir.path(), "alpha-ema", "0.2.0");
    let judged = |margin: f64| {
        let mut d = deploy(1_000, &next, Strategy::Replace, None);
        d.rollback.watch_bars = 300;
        d.rollback.fitness_margin = Some(margin);
        run(vec![d]).0.deploys.remove(0)
    };
    // A margin no fitness can meet (it asks the new code to do a million
    // better): taken back at the end of the watch, and the report says by
    // how much.
    let report = judged(-1e6);
    let back = report.settled.as_ref().expect("rolled back on fitness");
    assert_eq!(back.outcome, "rolled-back");
    assert_eq!(back.bar, 1_300, "{back:?}");
    assert!(back.why.contains("mean fitness"), "{back:?}");
    assert!(back.why.contains("margin -1000000"), "{back:?}");
    // A margin no fall can pass: the deploy is final.
    assert!(judged(1e6).settled.is_none());
}

#[test]
fn a_fitness_margin_on_a_module_outside_the_population_is_refused() {
    let text = format!(
        "{}\n[[deploy]]\nat_bar = 10\nmodule = \"decision\"\npath = \"x.signed.wasm\"\n[deploy.rollback]\nfitness_margin = 0.5\n",
        garden_host::config::DEFAULT_PIPELINE
    );
    let err = garden_host::config::PipelineConfig::parse(&text, "test")
        .expect_err("refused")
        .to_string();
    assert!(err.contains("rollback.fitness_margin"), "{err}");
}

/// Decisions as (bar index, source).
fn decided_by(messages: &[Arc<Envelope>]) -> Vec<(usize, String)> {
    let rows = bundled_rows();
    messages
        .iter()
        .filter(|m| matches!(m.body, Body::Decision(_)))
        .map(|m| {
            let bar = rows.partition_point(|r| r.time < m.time);
            (bar, m.source.clone())
        })
        .collect()
}

#[test]
fn a_canary_takes_its_share_of_the_keys_and_is_promoted_after_its_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let next = garden_tests::rebuilt(dir.path(), "decision", "0.2.0");
    let mut d = deploy(500, &next, Strategy::Canary, None);
    d.module = "decision".into();
    d.share = Some(30);
    d.rollback.watch_bars = 1_000;
    let (summary, messages) = run(vec![d]);
    let report = &summary.deploys[0];
    assert_eq!(report.outcome, "done", "{report:?}");
    assert_eq!(report.strategy, "canary");
    // The decision module keeps no state: both start fresh.
    assert_eq!(
        report.instances,
        [(
            "decision.canary".to_string(),
            "fresh: the old code gave no snapshot".to_string()
        )]
    );
    let decided = decided_by(&messages);
    let by = |from: usize, to: usize, who: &str| {
        decided
            .iter()
            .filter(|(bar, s)| (from..to).contains(bar) && s == who)
            .count()
    };
    assert_eq!(by(0, 500, "decision.canary"), 0);
    let (old, canary) = (
        by(500, 1_500, "decision"),
        by(500, 1_500, "decision.canary"),
    );
    let share = canary as f64 / (old + canary) as f64;
    assert!(
        (0.15..0.45).contains(&share),
        "the canary took {canary} of {} decisions",
        old + canary
    );
    // Promoted after its watch: the old instance runs the new code, the
    // canary is gone, and every decision is made once throughout.
    let settled = report.settled.as_ref().expect("settled");
    assert_eq!(settled.outcome, "promoted", "{settled:?}");
    assert_eq!(settled.bar, 1_500);
    assert!(
        settled
            .instances
            .iter()
            .any(|(id, what)| id == "decision" && what.starts_with("fresh: ")),
        "{settled:?}"
    );
    assert_eq!(by(1_500, 2_000, "decision.canary"), 0);
    assert!(by(1_500, 2_000, "decision") > 0);
    for (id, (plans, decisions, entries)) in accounted(&messages) {
        assert_eq!(plans, 1, "plan {id} published {plans} times");
        assert!(
            decisions <= 1 && entries <= decisions,
            "{id}: {decisions} decisions"
        );
    }
    let running = summary
        .instances
        .iter()
        .find(|i| i.id == "decision")
        .expect("decision runs");
    assert_eq!(running.state.label(), "ok");
}

#[test]
fn a_canary_of_a_module_that_takes_broadcasts_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let next = garden_tests::rebuilt(dir.path(), "alpha-ema", "0.2.0");
    let (summary, _) = run(vec![deploy(500, &next, Strategy::Canary, None)]);
    let report = &summary.deploys[0];
    assert!(
        report.outcome.starts_with("refused: ") && report.outcome.contains("shared"),
        "{report:?}"
    );
    assert!(report.instances.is_empty());
}

/// `garden run --seed 3 --variants 2` of the embedded pipeline with
/// `deploys` (TOML) added, in `dir`, with a store there: its output, and
/// `garden audit --kind KIND` of the run.
fn garden_run_with(dir: &Path, deploys: &str) -> (String, impl Fn(&str) -> String) {
    let pipeline = garden_host::config::DEFAULT_PIPELINE.to_string() + deploys;
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, pipeline).expect("writes");
    let store = format!("sqlite://{}", dir.join("g.db").display());
    let out = garden_tests::garden()
        .args([
            "run",
            "--seed",
            "3",
            "--variants",
            "2",
            "--store",
            &store,
            "--config",
        ])
        .arg(&file)
        .output()
        .expect("garden run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let audit = move |kind: &str| {
        let out = garden_tests::garden()
            .args(["audit", "--kind", kind, "--store", &store])
            .output()
            .expect("garden audit");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    (String::from_utf8_lossy(&out.stdout).into_owned(), audit)
}

#[test]
fn garden_run_deploys_on_schedule_and_audits_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    component(dir.path(), "alpha-ema");
    let (stdout, audit) = garden_run_with(
        dir.path(),
        "\n[[deploy]]\nat_bar = 500\nmodule = \"alpha-ema\"\npath = \"alpha-ema.signed.wasm\"\nstrategy = \"replace\"\n",
    );
    assert!(stdout.contains("deploys:"), "{stdout}");
    assert!(
        stdout.contains("bar 500: alpha-ema -> alpha-ema@"),
        "{stdout}"
    );
    assert!(stdout.contains("from-snapshot"), "{stdout}");
    let listed = audit("deploy");
    assert!(listed.contains("strategy replace: done"), "{listed}");
}

#[test]
fn garden_run_audits_a_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    broken_version(dir.path());
    garden_registry::TrustStore::update(&garden_tests::garden_home().join("trust.toml"), |store| {
        store.add(&garden_tests::test_key().public(), "tests", "test")
    })
    .expect("trusts the test key");
    let (stdout, audit) = garden_run_with(
        dir.path(),
        "\n[[deploy]]\nat_bar = 500\nmodule = \"alpha-ema\"\npath = \"broken.signed.wasm\"\n\n[deploy.rollback]\ntraps = 2\n",
    );
    assert!(
        stdout.contains("bar 510: alpha-ema rolled-back: "),
        "{stdout}"
    );
    let listed = audit("rolled-back");
    assert!(
        listed.contains("traps of the new code in 10 bars (rollback.traps 2)"),
        "{listed}"
    );
}
