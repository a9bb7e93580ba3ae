//! Rollouts across daemons beyond `replace`: a canary takes its share of
//! a module's keys at one point of the streams on every daemon, stops at
//! its rollback and is promoted after its watch; a `compete` deploy brings
//! new variants into the population, which a rollback retires; a
//! `replace` of the population's code is noted in every variant's lineage.
//! Every message is handled exactly once throughout.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use garden_host::bus::redis::decode_entry;
use garden_host::replication::LineageRecord;
use garden_host::types::Body;
use garden_tests::servers::Redis;

use super::daemons::{decisions, field};
use super::deploys::{
    Daemon, PREFIX, ask, code_digest, daemon, evidence, garden, logs, past, statuses, wait_for,
    wait_until_code,
};

/// Per plan, the instance that judged it.
fn judges(con: &mut redis::Connection) -> BTreeMap<u64, String> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{PREFIX}:t:evidence"))
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for (_, fields) in &entries {
        if let Ok((e, _, _)) = decode_entry("evidence", fields)
            && let Body::Evidence(ev) = &e.body
            && let Some(n) = ev.plan_id.strip_prefix('p').and_then(|n| n.parse().ok())
        {
            out.insert(n, e.source.clone());
        }
    }
    out
}

/// Keys the canary test's plans are spread over: several plans per key,
/// so a key's order can be checked across the canary's hand-overs.
const KEYS: u64 = 400;

/// Publish plans `range`, plan `n` keyed `k{n % KEYS}`.
fn publish_keyed(producer: &mut garden_host::bus::RedisBus, range: std::ops::Range<u64>) {
    use garden_host::bus::Bus;
    for n in range {
        let mut p = garden_tests::plan(n);
        p.key = format!("k{}", n % KEYS);
        producer.publish(p).expect("publishes");
        if n % 200 == 199 {
            producer.pump();
        }
    }
    while producer.unsent() > 0 {
        producer.pump();
    }
}

/// Every key's plans were judged in the order they were published (the
/// evidence stream's order), whichever instance judged them.
fn assert_key_order(con: &mut redis::Connection) {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{PREFIX}:t:evidence"))
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap_or_default();
    let mut last: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    for (_, fields) in &entries {
        if let Ok((e, _, _)) = decode_entry("evidence", fields)
            && let Body::Evidence(ev) = &e.body
            && let Some(n) = ev
                .plan_id
                .strip_prefix('p')
                .and_then(|n| n.parse::<u64>().ok())
        {
            if let Some((before, by)) = last.get(&(n % KEYS)) {
                assert!(
                    *before < n,
                    "key k{}: plan {n} (by {}) judged after plan {before} (by {by})",
                    n % KEYS,
                    e.source
                );
            }
            last.insert(n % KEYS, (n, e.source.clone()));
        }
    }
}

/// `garden deploy FILE --module expert-anomaly` as a canary.
fn canary(redis: &Redis, file: &Path, share: &str, watch: &str) -> String {
    let file = file.to_str().expect("a path");
    ask(
        redis,
        &[
            "deploy",
            file,
            "--module",
            "expert-anomaly",
            "--name",
            "a",
            "--strategy",
            "canary",
            "--share",
            share,
            "--watch",
            watch,
        ],
    )
}

#[test]
fn a_canary_across_daemons_takes_its_share_stops_at_a_rollback_and_is_promoted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _a, _b, mut producer) = garden(dir.path());
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    publish_keyed(&mut producer, 0..500);
    let first = garden_tests::rebuilt(dir.path(), "expert-anomaly", "0.2.0");
    let stdout = canary(&redis, &first, "25", "100000");
    assert!(stdout.contains("canary 25% watch 100000"), "{stdout}");
    assert!(stdout.contains("a canary instance joins"), "{stdout}");
    past(&mut con, &stdout);
    publish_keyed(&mut producer, 500..2_500);
    wait_for("evidence on every plan", Duration::from_secs(90), || {
        evidence(&mut con).len() == 2_500
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        evidence(&mut con).values().all(|n| *n == 1),
        "a plan judged twice"
    );
    // The canary took none of the plans before its position and about its
    // share after.
    let by = judges(&mut con);
    let canary_of = |range: std::ops::Range<u64>| {
        range
            .clone()
            .filter(|n| by.get(n).is_some_and(|s| s.contains(".canary-")))
            .count()
    };
    assert_eq!(canary_of(0..500), 0);
    let share = canary_of(500..2_500) as f64 / 2_000.0;
    assert!(
        (0.12..=0.40).contains(&share),
        "the canary took {share:.2} of the plans after its switch\n{}",
        logs(dir.path())
    );
    let on = |label: &str| {
        statuses(&redis)
            .iter()
            .flat_map(|d| d.instances.clone())
            .filter(|i| i.code.starts_with(label))
            .count()
    };
    assert_eq!(on("expert-anomaly@0.2.0 "), 1, "one canary instance");
    // It took its keys only once the old members had passed its position.
    assert!(
        logs(dir.path()).contains("takes its keys: the old members passed its position"),
        "{}",
        logs(dir.path())
    );
    assert_eq!(on("expert-anomaly@0.1.0 "), 4, "the old instances go on");

    // Taken back by hand: the canary stops at the rollback's position,
    // and every later plan goes to the old instances, once.
    let stdout = ask(
        &redis,
        &["rollback", "--module", "expert-anomaly", "--name", "b"],
    );
    past(&mut con, &stdout);
    publish_keyed(&mut producer, 2_500..3_500);
    wait_for(
        "evidence after the rollback",
        Duration::from_secs(60),
        || evidence(&mut con).len() == 3_500,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        evidence(&mut con).values().all(|n| *n == 1),
        "a plan judged twice"
    );
    let by = judges(&mut con);
    assert!(
        (2_500..3_500).all(|n| by.get(&n).is_some_and(|s| !s.contains(".canary-"))),
        "the canary judged plans after its rollback"
    );
    wait_until_code(&redis, dir.path(), "expert-anomaly@0.1.0 ", 2);

    // A second canary, with a short watch: bars past its switch promote
    // it, and every instance takes its code.
    let second = garden_tests::rebuilt(dir.path(), "expert-anomaly", "0.3.0");
    let stdout = canary(&redis, &second, "10", "20");
    past(&mut con, &stdout);
    let rows = garden_tests::bundled_rows();
    garden_tests::feed_bars(&mut con, PREFIX, &rows[..30]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 3_500;
    loop {
        publish_keyed(&mut producer, next..next + 50);
        next += 50;
        let s = statuses(&redis);
        let promoted = s.len() == 2
            && s.iter().map(|d| d.instances.len()).sum::<usize>() == 4
            && s.iter()
                .flat_map(|d| &d.instances)
                .all(|i| i.code.starts_with("expert-anomaly@0.3.0 "));
        if promoted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the canary was not promoted: {s:?}\n{}",
            logs(dir.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let complete = |con: &mut redis::Connection| evidence(con).len() == next as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !complete(&mut con) {
        let judged = evidence(&mut con);
        let missing: Vec<u64> = (0..next)
            .filter(|n| !judged.contains_key(&format!("p{n}")))
            .collect();
        assert!(
            Instant::now() < deadline,
            "plans never judged after the promotion: {missing:?}\n{}",
            logs(dir.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        evidence(&mut con).values().all(|n| *n == 1),
        "a plan judged twice"
    );
    let reasons: Vec<String> = decisions(&mut con, PREFIX)
        .into_iter()
        .filter(|(_, k, _)| k == "deploy")
        .map(|(_, _, f)| field(&f, "reason"))
        .collect();
    assert_eq!(reasons, ["deploy", "rollback: asked", "deploy", "promote"]);
    assert_key_order(&mut con);
}

/// A population of four alpha variants with the panel behind them, bred
/// slowly enough that only deploys change it here.
const POPULATION: &str = r#"
[evolution]
generation_bars = 100000
min_age_bars = 100000
threshold = 1000000.0
regime_children = 0

[[module]]
name = "alpha-ema"
population = true
instances = 4

[[module]]
name = "expert-anomaly"

[[module]]
name = "fusion"
[module.settings]
experts = "expert-anomaly"
deadline-bars = "1"

[[module]]
name = "decision"

[[module]]
name = "trader"
[module.settings]
report-every = "5"
"#;

/// Two daemons running [`POPULATION`], the test key trusted as a
/// publisher, and twenty bars fed, so the leader's engine runs.
fn population(dir: &Path) -> (Redis, Daemon, Daemon, redis::Connection) {
    garden_registry::TrustStore::update(&garden_tests::garden_home().join("trust.toml"), |s| {
        s.add(&garden_tests::test_key().public(), "tests", "test")
    })
    .expect("trusts the test key");
    let redis = Redis::start();
    let config = dir.join("pipeline.toml");
    std::fs::write(&config, POPULATION).expect("config");
    let a = daemon(&redis, "a", &config, dir);
    let b = daemon(&redis, "b", &config, dir);
    wait_for("two daemons", Duration::from_secs(60), || {
        statuses(&redis).len() == 2
    });
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let rows = garden_tests::bundled_rows();
    garden_tests::feed_bars(&mut con, PREFIX, &rows[..20]);
    wait_for(
        "the starting population logged",
        Duration::from_secs(30),
        || lineage(&mut con).len() == 4,
    );
    (redis, a, b, con)
}

/// The lineage records logged, last decided, by id.
fn lineage(con: &mut redis::Connection) -> BTreeMap<String, LineageRecord> {
    let mut out = BTreeMap::new();
    for (_, kind, f) in decisions(con, PREFIX) {
        let records: Vec<LineageRecord> = match kind.as_str() {
            "birth" | "retire" => serde_json::from_str(&field(&f, "record"))
                .map(|r| vec![r])
                .unwrap_or_default(),
            "recode" => serde_json::from_str(&field(&f, "records")).unwrap_or_default(),
            _ => Vec::new(),
        };
        for r in records {
            out.insert(r.id.clone(), r);
        }
    }
    out
}

/// Running instances on code `label...`.
fn running_on(redis: &Redis, label: &str) -> usize {
    statuses(redis)
        .iter()
        .flat_map(|d| d.instances.clone())
        .filter(|i| i.code.starts_with(label) && i.state == "ok")
        .count()
}

#[test]
fn compete_brings_variants_a_rollback_retires_them_and_a_replace_is_in_the_lineage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _a, _b, mut con) = population(dir.path());
    let rows = garden_tests::bundled_rows();

    // compete: two variants of the new code join, on some daemon.
    let next = garden_tests::rebuilt(dir.path(), "alpha-ema", "0.2.0");
    let digest = code_digest(&next);
    let file = next.to_str().expect("a path");
    let stdout = ask(
        &redis,
        &[
            "deploy",
            file,
            "--module",
            "alpha-ema",
            "--name",
            "a",
            "--strategy",
            "compete",
            "--variants",
            "2",
        ],
    );
    assert!(
        stdout.contains("new variants compete in alpha-ema"),
        "{stdout}"
    );
    wait_for(
        "two competing variants running",
        Duration::from_secs(30),
        || running_on(&redis, "alpha-ema@0.2.0 ") == 2,
    );
    let born: Vec<LineageRecord> = lineage(&mut con)
        .into_values()
        .filter(|r| r.component == digest)
        .collect();
    assert_eq!(born.len(), 2, "{born:?}");
    assert!(born.iter().all(|r| r.birth_cause.as_str() == "deploy"));
    assert_eq!(running_on(&redis, "alpha-ema@0.1.0 "), 4);

    // Taken back: the competing variants retire; the old ones go on.
    ask(
        &redis,
        &["rollback", "--module", "alpha-ema", "--name", "b"],
    );
    wait_for(
        "the competing variants retired",
        Duration::from_secs(30),
        || {
            lineage(&mut con)
                .values()
                .filter(|r| r.component == digest)
                .all(|r| r.death_cause.as_deref() == Some("rollback: asked"))
        },
    );
    wait_for(
        "no instance on the withdrawn code",
        Duration::from_secs(30),
        || running_on(&redis, "alpha-ema@0.2.0 ") == 0,
    );

    // replace: every living variant takes the new code at the first bar
    // past the switch, and its lineage says so.
    let third = garden_tests::rebuilt(dir.path(), "alpha-ema", "0.3.0");
    let new = code_digest(&third);
    let stdout = ask(
        &redis,
        &[
            "deploy",
            third.to_str().expect("a path"),
            "--module",
            "alpha-ema",
            "--name",
            "a",
        ],
    );
    past(&mut con, &stdout);
    garden_tests::feed_bars(&mut con, PREFIX, &rows[20..40]);
    wait_for(
        "the lineage notes the new code",
        Duration::from_secs(30),
        || {
            let living: Vec<LineageRecord> = lineage(&mut con)
                .into_values()
                .filter(|r| r.death_bar.is_none())
                .collect();
            living.len() == 4
                && living.iter().all(|r| {
                    r.code_changes
                        .last()
                        .is_some_and(|(bar, d)| *d == new && *bar >= 20)
                })
        },
    );
    wait_for(
        "every variant on the new code",
        Duration::from_secs(30),
        || running_on(&redis, "alpha-ema@0.3.0 ") == 4,
    );
    assert_eq!(
        decisions(&mut con, PREFIX)
            .iter()
            .filter(|(_, k, _)| k == "recode")
            .count(),
        1,
        "{}",
        logs(dir.path())
    );
}

#[test]
fn a_replace_whose_fitness_falls_past_its_margin_is_rolled_back_by_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _a, _b, mut con) = population(dir.path());
    let rows = garden_tests::bundled_rows();
    // Enough bars for the variants' fitness to be reported, and acted on.
    let stepped = |con: &mut redis::Connection| {
        decisions(con, PREFIX)
            .iter()
            .filter(|(_, k, _)| k == "stepped")
            .filter_map(|(_, _, f)| field(f, "bar").parse::<usize>().ok())
            .max()
            .unwrap_or(0)
    };
    for chunk in rows[20..600].chunks(20) {
        garden_tests::feed_bars(&mut con, PREFIX, chunk);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(
        "the leader acting on fitness",
        Duration::from_secs(60),
        || stepped(&mut con) >= 550,
    );
    let first = lineage(&mut con)
        .into_values()
        .next()
        .map(|r| r.component)
        .expect("a variant");
    // The same code under a new digest, with a margin no fitness meets:
    // it must do a million better.
    let next = garden_tests::rebuilt(dir.path(), "alpha-ema", "0.2.0");
    let stdout = ask(
        &redis,
        &[
            "deploy",
            next.to_str().expect("a path"),
            "--module",
            "alpha-ema",
            "--name",
            "a",
            "--fitness-margin",
            "-1000000",
            "--watch",
            "50",
        ],
    );
    past(&mut con, &stdout);
    let rolled_back = |con: &mut redis::Connection| {
        decisions(con, PREFIX).iter().any(|(_, k, f)| {
            k == "deploy" && field(f, "reason").starts_with("rollback: mean fitness")
        })
    };
    let mut fed = 600;
    while !rolled_back(&mut con) {
        assert!(
            fed < 1_300,
            "no rollback on fitness after {fed} bars (stepped to {})\n{}",
            stepped(&mut con),
            logs(dir.path())
        );
        garden_tests::feed_bars(&mut con, PREFIX, &rows[fed..fed + 20]);
        fed += 20;
        std::thread::sleep(Duration::from_millis(300));
    }
    // Every variant goes back to the first code at the first bar past the
    // rollback's position, and its lineage says so.
    wait_for(
        "the variants back on the first code",
        Duration::from_secs(30),
        || {
            if fed + 5 < rows.len() {
                garden_tests::feed_bars(&mut con, PREFIX, &rows[fed..fed + 5]);
                fed += 5;
            }
            std::thread::sleep(Duration::from_millis(100));
            let living: Vec<LineageRecord> = lineage(&mut con)
                .into_values()
                .filter(|r| r.death_bar.is_none())
                .collect();
            living.len() == 4
                && living.iter().all(|r| {
                    r.code_changes.len() == 2
                        && r.code_changes.last().is_some_and(|(_, d)| *d == first)
                })
        },
    );
    wait_for(
        "every alpha on the first code",
        Duration::from_secs(30),
        || running_on(&redis, "alpha-ema@0.1.0 ") == 4,
    );
}

#[test]
fn a_downgrade_is_refused_unless_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _a, _b, _producer) = garden(dir.path());
    let newer = garden_tests::rebuilt(dir.path(), "expert-anomaly", "0.3.0");
    let older = garden_tests::rebuilt(dir.path(), "expert-anomaly", "0.2.0");
    let deploy = |file: &Path, more: &[&str]| {
        let mut args = vec![
            "deploy",
            file.to_str().expect("a path"),
            "--module",
            "expert-anomaly",
            "--name",
            "a",
        ];
        args.extend_from_slice(more);
        garden_tests::garden()
            .args(&args)
            .args(["--bus", &redis.url(), "--prefix", PREFIX, "--wait", "8"])
            .output()
            .expect("garden runs")
    };
    assert!(deploy(&newer, &[]).status.success());
    wait_for("0.3.0 loaded everywhere", Duration::from_secs(30), || {
        let s = statuses(&redis);
        s.len() == 2
            && s.iter().all(|d| {
                d.deploys
                    .iter()
                    .any(|l| l.contains("expert-anomaly@0.3.0 "))
            })
    });
    // An older version is not an upgrade: refused, and said why.
    let refused = deploy(&older, &[]);
    assert!(!refused.status.success());
    wait_for("the downgrade refused", Duration::from_secs(10), || {
        logs(dir.path()).contains("its version 0.2.0 is older than the 0.3.0 running")
    });
    // The flag cannot be added to a signed request: a copy of the refused
    // one with `downgrade` added fails its signature and changes nothing.
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(format!("{PREFIX}:requests"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut con)
        .expect("the refused request");
    let (_, fields) = last.first().expect("a request");
    let mut forged = redis::cmd("XADD");
    forged.arg(format!("{PREFIX}:requests")).arg("*");
    for (k, v) in fields {
        forged.arg(k).arg(v);
    }
    forged.arg("downgrade").arg("yes");
    let _: String = forged.query(&mut con).expect("XADD");
    wait_for("the forged flag refused", Duration::from_secs(10), || {
        statuses(&redis).iter().any(|d| d.refused >= 1)
    });
    let deploys = decisions(&mut con, PREFIX)
        .iter()
        .filter(|(_, k, _)| k == "deploy")
        .count();
    assert_eq!(deploys, 1, "only the upgrade was decided");
    // Asked for, it is deployed.
    let asked = deploy(&older, &["--allow-downgrade"]);
    let out = String::from_utf8_lossy(&asked.stdout);
    assert!(asked.status.success(), "{out}");
    assert!(
        out.contains("every daemon switches expert-anomaly"),
        "{out}"
    );
}
