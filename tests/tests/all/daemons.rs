//! Two `garden daemon` processes on one real redis-server share the work;
//! one is killed with SIGKILL while messages are in flight, and every
//! message is still handled, by the survivor, exactly once in effect.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use garden_host::bus::redis::{decode_entry, open_entry};
use garden_host::bus::{Bus, RedisBus, RedisOptions};
use garden_host::cluster;
use garden_host::types::Body;
use garden_tests::servers::{Postgres, Redis};
use garden_tests::{feed_bars, plan};

fn record_counts(url: &str) -> BTreeMap<String, i64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match garden_registry::Store::connect(url).await {
            Ok(store) => store.record_counts(PREFIX).await.unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        }
    })
}

/// (kind, module) of every audit record in the store at `url`, and whether
/// the chain is intact.
fn audit_log(url: &str) -> (Vec<(String, String)>, bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = garden_registry::Store::connect(url).await.expect("store");
        let records = store
            .audit_records(&garden_registry::AuditFilter::default())
            .await
            .expect("audit records");
        let intact = matches!(
            store.audit_verify().await,
            Ok(garden_registry::AuditCheck::Intact { .. })
        );
        (
            records.into_iter().map(|r| (r.kind, r.module)).collect(),
            intact,
        )
    })
}

const PREFIX: &str = "twin";

use garden_tests::Killed as Daemon;

fn daemon(redis: &Redis, name: &str, config: &Path, cache: &Path, store: &str) -> Daemon {
    daemon_in(redis, PREFIX, name, config, cache, &["--store", store])
}

fn daemon_in(
    redis: &Redis,
    prefix: &str,
    name: &str,
    config: &Path,
    cache: &Path,
    extra: &[&str],
) -> Daemon {
    garden_tests::trust_daemon(name);
    Daemon(
        garden_tests::garden()
            .args(["daemon", "--bus", &redis.url(), "--prefix", prefix])
            .args(extra)
            .args(["--name", name, "--heartbeat-ttl-ms", "900"])
            .args(["--claim-idle-ms", "600"])
            .arg("--config")
            .arg(config)
            .arg("--cache-dir")
            .arg(cache)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(daemon_log(cache, name)).expect("log file"))
            .spawn()
            .expect("garden daemon starts"),
    )
}

/// The live daemons whose heartbeats a trusted daemon key signed.
fn live_daemons(
    redis: &Redis,
    prefix: &str,
) -> Result<Vec<cluster::DaemonStatus>, garden_host::bus::redis::RedisBusError> {
    cluster::status(&redis.url(), prefix, &garden_tests::daemon_peers()).map(|(d, _)| d)
}

/// Where `daemon_in` keeps daemon `name`'s standard error: beside `cache`.
fn daemon_log(cache: &Path, name: &str) -> std::path::PathBuf {
    cache.with_file_name(format!("{name}.log"))
}

use garden_tests::wait_for;

/// Instances per live daemon.
fn layout(redis: &Redis) -> BTreeMap<String, Vec<String>> {
    layout_of(redis, PREFIX)
}

/// Plan ids of the entries consumer `who` holds unacknowledged, in the
/// groups of the four expert instances.
fn pending_plans(con: &mut redis::Connection, who: &str) -> Vec<String> {
    let stream = format!("{PREFIX}:t:plan");
    let mut rows: Vec<(String, String, u64, u64)> = Vec::new();
    for n in 0..4 {
        let group: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(format!("k:expert-anomaly.{n}"))
            .arg("-")
            .arg("+")
            .arg(100_000)
            .arg(who)
            .query(con)
            .unwrap_or_default();
        rows.extend(group);
    }
    let mut out = Vec::new();
    for (id, ..) in rows {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(&id)
            .arg(&id)
            .query(con)
            .expect("XRANGE");
        for (_, fields) in entries {
            if let Ok((e, _, _)) = decode_entry("plan", &fields)
                && let Body::Plan(p) = e.body
            {
                out.push(p.id);
            }
        }
    }
    out
}

/// Plan ids that have evidence.
fn judged_plans(con: &mut redis::Connection) -> std::collections::BTreeSet<String> {
    judged_plans_in(con, PREFIX)
}

/// Plan ids that have evidence, under `prefix`.
fn judged_plans_in(
    con: &mut redis::Connection,
    prefix: &str,
) -> std::collections::BTreeSet<String> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}:t:evidence"))
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap_or_default();
    entries
        .iter()
        .filter_map(|(_, fields)| match decode_entry("evidence", fields) {
            Ok((e, _, _)) => match e.body {
                Body::Evidence(e) => Some(e.plan_id),
                _ => None,
            },
            Err(_) => None,
        })
        .collect()
}

/// (distinct plan ids with evidence, evidence entries, entries written by
/// daemon a) on the stream.
fn evidence(con: &mut redis::Connection) -> (usize, usize, usize) {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{PREFIX}:t:evidence"))
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap_or_default();
    let mut ids = std::collections::BTreeSet::new();
    let mut by_a = 0;
    for (_, fields) in &entries {
        if let Ok((e, from, _)) = decode_entry("evidence", fields) {
            by_a += usize::from(from.starts_with("a@"));
            if let Body::Evidence(e) = e.body {
                ids.insert(e.plan_id);
            }
        }
    }
    (ids.len(), entries.len(), by_a)
}

#[test]
fn a_daemon_killed_mid_stream_loses_nothing() {
    // The test's producer is a trusted writer before the daemons start.
    garden_tests::trust_daemon("producer");
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        "[[module]]\nname = \"expert-anomaly\"\ninstances = 4\n",
    )
    .expect("config");
    let cache = dir.path().join("cache");
    let pg = Postgres::start();
    let mut a = daemon(&redis, "a", &config, &cache, &pg.url());
    let b = daemon(&redis, "b", &config, &cache, &pg.url());
    // Both alive, and the four instances split between them.
    wait_for(
        "two daemons sharing four instances",
        Duration::from_secs(60),
        || {
            let l = layout(&redis);
            l.len() == 2
                && l.values().all(|v| !v.is_empty())
                && l.values().map(Vec::len).sum::<usize>() == 4
        },
    );

    let mut o = RedisOptions::new(&redis.url());
    o.prefix = PREFIX.into();
    o.consumer = "producer".into();
    let mut producer = garden_tests::trusted_bus("producer", o);
    let total = 4_000u64;
    let mut at_kill = (0, 0, 0);
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    // Publish in bursts; after each, freeze a (SIGSTOP) and look at what it
    // holds unacknowledged. Once it holds some, kill it (SIGKILL): those
    // messages were in flight.
    let signal = |sig: &str, child: &Daemon| {
        let ok = Command::new("kill")
            .args([sig, &child.0.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig}");
    };
    let mut in_flight: Vec<String> = Vec::new();
    let mut n = 0u64;
    while n < total {
        for _ in 0..200 {
            producer.publish(plan(n)).expect("publishes");
            n += 1;
        }
        producer.pump();
        if in_flight.is_empty() && n >= total / 4 {
            // On a busy machine a may start late: let it do a share first.
            wait_for("a judging plans", Duration::from_secs(60), || {
                evidence(&mut con).2 > 0
            });
            signal("-STOP", &a);
            in_flight = pending_plans(&mut con, "a");
            if in_flight.is_empty() {
                signal("-CONT", &a);
            } else {
                a.0.kill().expect("SIGKILL");
                a.0.wait().expect("reaped");
                at_kill = evidence(&mut con);
            }
        }
    }
    assert!(!in_flight.is_empty(), "a was caught holding messages");
    eprintln!("a was killed holding {} messages", in_flight.len());
    producer.pump();
    wait_for("evidence on every plan", Duration::from_secs(60), || {
        evidence(&mut con).0 == total as usize
    });
    let (distinct, entries, by_a) = evidence(&mut con);
    assert_eq!(distinct, total as usize, "every plan was judged");
    assert!(
        at_kill.2 > 0,
        "a did its share before it was killed: {at_kill:?}"
    );
    // Every message a held when it died was handled, by b.
    let judged = judged_plans(&mut con);
    let lost: Vec<&String> = in_flight.iter().filter(|p| !judged.contains(*p)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} in flight lost: {lost:?}",
        lost.len(),
        in_flight.len()
    );
    assert!(entries > by_a, "b judged the rest");
    // The daemons recorded every plan exactly once, though some were
    // delivered twice and the daemons split the recording between them.
    // Entries a left unacknowledged may be judged again a little later, so
    // the evidence stream can still grow: wait until the records catch up
    // with it.
    wait_for(
        "every plan and evidence recorded",
        Duration::from_secs(30),
        || {
            let recorded = record_counts(&pg.url());
            recorded.get("plan") == Some(&(total as i64))
                && recorded.get("evidence") == Some(&(evidence(&mut con).1 as i64))
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let recorded = record_counts(&pg.url());
    let (_, entries, _) = evidence(&mut con);
    assert_eq!(recorded.get("plan"), Some(&(total as i64)), "{recorded:?}");
    assert_eq!(
        recorded.get("evidence"),
        Some(&(entries as i64)),
        "{recorded:?}"
    );
    // Redeliveries of what a had in flight may be judged twice; the plan id
    // makes that harmless downstream. They are few.
    assert!(
        entries - distinct < 2_000,
        "{entries} entries for {distinct} plans"
    );
    // Both daemons audited their module loads into the shared store, in
    // one intact chain.
    let (audit, intact) = audit_log(&pg.url());
    let loads = audit
        .iter()
        .filter(|(k, m)| k == "load" && m.contains("expert-anomaly"))
        .count();
    assert!(loads >= 2, "a load per daemon: {audit:?}");
    assert!(intact, "the audit chain is intact");
    // The survivor runs all four instances now.
    wait_for("b running everything", Duration::from_secs(30), || {
        let l = layout(&redis);
        l.len() == 1 && l.get("b").is_some_and(|v| v.len() == 4)
    });
    // And `garden status` says so.
    let out = garden_tests::garden()
        .args(["status", "--bus", &redis.url(), "--prefix", PREFIX])
        .output()
        .expect("garden status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("b "), "{text}");
    assert!(text.contains("expert-anomaly.3"), "{text}");
    drop(b);
}

#[test]
fn the_leader_lease_moves_to_a_survivor_and_fences_the_old_leader() {
    let prefix = "lease";
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(&config, "[[module]]\nname = \"expert-anomaly\"\n").expect("config");
    let cache = dir.path().join("cache");
    let mut daemons = vec![
        ("a", daemon_in(&redis, prefix, "a", &config, &cache, &[])),
        ("b", daemon_in(&redis, prefix, "b", &config, &cache, &[])),
    ];
    let leader = |redis: &Redis| leaders(redis, prefix);
    wait_for("a leader", Duration::from_secs(60), || {
        leader(&redis).len() == 1
    });
    let first = leader(&redis).remove(0);
    // Several beats as leader: the term is still announced once.
    std::thread::sleep(Duration::from_millis(1_000));
    // Kill the leader; the other takes the lease within about its time to
    // live (900 ms) and a beat, with a newer term.
    let at = daemons
        .iter()
        .position(|(n, _)| *n == first.0)
        .expect("known");
    let (_, mut old) = daemons.remove(at);
    let killed = Instant::now();
    old.0.kill().expect("SIGKILL");
    old.0.wait().expect("reaped");
    wait_for("a new leader", Duration::from_secs(10), || {
        leader(&redis).iter().any(|(n, _)| *n != first.0)
    });
    let took = killed.elapsed();
    let second = leader(&redis).remove(0);
    assert_ne!(second.0, first.0);
    assert!(
        second.1 > first.1,
        "a newer term: {first:?} then {second:?}"
    );
    assert!(took < Duration::from_secs(3), "took over in {took:?}");
    // Fencing: a decision under the old term is refused, under the new one
    // written.
    let mut m = cluster::Membership::connect(&redis.url(), prefix, "test", Duration::from_secs(1))
        .expect("connects")
        .signing(std::sync::Arc::new(cluster::Identity::new(
            garden_registry::SigningKey::generate(),
        )));
    assert!(!m.decide(first.1, &[("kind", "stale")]).expect("decide"));
    assert!(m.decide(second.1, &[("kind", "current")]).expect("decide"));
    // The decisions log: each term announced once, by its leader, in order.
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let log: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}:decisions"))
        .arg("-")
        .arg("+")
        .query(&mut con)
        .expect("decisions");
    let field = |f: &Vec<(String, String)>, k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let leaders: Vec<(String, String)> = log
        .iter()
        .filter(|(_, f)| field(f, "kind") == "leader")
        .map(|(_, f)| (field(f, "term"), field(f, "daemon")))
        .collect();
    assert_eq!(
        leaders,
        [
            (first.1.to_string(), first.0.clone()),
            (second.1.to_string(), second.0.clone())
        ]
    );
    assert!(log.iter().all(|(_, f)| field(f, "kind") != "stale"));
}

/// Decisions in the log of `prefix`: (term, kind, fields).
pub(super) fn decisions(
    con: &mut redis::Connection,
    prefix: &str,
) -> Vec<(u64, String, garden_host::bus::redis::Fields)> {
    let log: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}:decisions"))
        .arg("-")
        .arg("+")
        .query(con)
        .expect("decisions");
    log.into_iter()
        .map(|(_, f)| {
            let get = |k: &str| {
                f.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("term").parse().unwrap_or(0), get("kind"), f)
        })
        .collect()
}

pub(super) fn field(f: &[(String, String)], k: &str) -> String {
    f.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Write bundled bars `rows` to the feed stream as a plain producer would.

#[test]
fn the_leader_breeds_one_population_across_daemons_and_a_new_leader_goes_on() {
    let prefix = "breed";
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        r#"
[evolution]
generation_bars = 100
min_age_bars = 60
threshold = 1000.0
children = 2
cap = 8
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
report-every = "20"
"#,
    )
    .expect("config");
    let cache = dir.path().join("cache");
    let pg = Postgres::start();
    let log = |n: &str| daemon_log(&cache, n);
    let mut daemons: Vec<(&str, Daemon)> = ["a", "b"]
        .into_iter()
        .map(|n| {
            let d = daemon_in(&redis, prefix, n, &config, &cache, &["--store", &pg.url()]);
            (n, d)
        })
        .collect();
    let leader = || leaders(&redis, prefix);
    wait_for("two daemons and a leader", Duration::from_secs(90), || {
        live_daemons(&redis, prefix)
            .map(|d| d.len() == 2)
            .unwrap_or(false)
            && leader().len() == 1
    });
    let (first, first_term) = leader().remove(0);
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let rows = garden_tests::bundled_rows();
    assert!(rows.len() >= 1_400, "enough bundled bars");
    // Children born in `term` (the starting population is logged too).
    let births = |con: &mut redis::Connection, term: u64| {
        decisions(con, prefix)
            .into_iter()
            .filter(|(t, k, f)| {
                *t == term && k == "birth" && !field(f, "record").contains("\"initial\"")
            })
            .count()
    };
    // Feed at a pace the daemons keep up with, until the first leader has
    // bred.
    let mut fed = 0;
    while births(&mut con, first_term) == 0 {
        assert!(fed < 700, "no birth after {fed} bars");
        feed_bars(&mut con, prefix, &rows[fed..fed + 20]);
        fed += 20;
        std::thread::sleep(Duration::from_millis(150));
    }
    // Kill the leader; the survivor takes over and breeds on from where
    // the log says the old leader stopped.
    let at = daemons
        .iter()
        .position(|(n, _)| *n == first)
        .expect("known");
    let (_, mut old) = daemons.remove(at);
    old.0.kill().expect("SIGKILL");
    old.0.wait().expect("reaped");
    wait_for("a new leader", Duration::from_secs(10), || {
        leader().iter().any(|(n, _)| *n != first)
    });
    let (second, second_term) = leader().remove(0);
    assert!(second_term > first_term);
    let start = fed;
    while births(&mut con, second_term) == 0 {
        assert!(fed < start + 700, "no birth from the new leader");
        feed_bars(&mut con, prefix, &rows[fed..fed + 20]);
        fed += 20;
        std::thread::sleep(Duration::from_millis(150));
    }

    // Let the leader finish acting on the bars fed so far: the log stops
    // growing.
    let mut settled = decisions(&mut con, prefix).len();
    loop {
        std::thread::sleep(Duration::from_millis(1_500));
        let now = decisions(&mut con, prefix).len();
        if now == settled {
            break;
        }
        settled = now;
    }
    let log_entries = decisions(&mut con, prefix);
    // Fencing: every decision is in the term of the leader announced last
    // before it, and terms never go back.
    let mut current = 0;
    let mut ids = std::collections::BTreeSet::new();
    let mut last_stepped_first = None;
    let mut first_birth_second = None;
    for (term, kind, f) in &log_entries {
        match kind.as_str() {
            "leader" => {
                assert!(*term > current, "terms only grow: {log_entries:?}");
                current = *term;
            }
            other => {
                assert_eq!(*term, current, "{other} decided outside its term");
                if other == "birth" {
                    assert!(ids.insert(field(f, "id")), "one birth per id");
                    let record: serde_json::Value =
                        serde_json::from_str(&field(f, "record")).expect("record");
                    let bar = record["birth_bar"].as_u64().expect("birth bar");
                    let cause = record["birth_cause"].as_str().unwrap_or_default();
                    assert!(
                        !record["parents"].as_array().expect("parents").is_empty()
                            || cause == "diversity"
                            || cause == "initial",
                        "a child has parents: {record}"
                    );
                    if cause == "initial" {
                        assert_eq!(*term, first_term, "the first leader logs the start");
                        continue;
                    }
                    if *term == second_term && first_birth_second.is_none() {
                        first_birth_second = Some(bar);
                    }
                }
                if other == "stepped" && *term == first_term {
                    last_stepped_first = field(f, "bar").parse::<u64>().ok();
                }
            }
        }
    }
    // The new leader did not act again on bars the old one had.
    let (Some(stepped), Some(born)) = (last_stepped_first, first_birth_second) else {
        panic!("steps of the first leader and a birth by the second: {log_entries:?}");
    };
    assert!(
        born > stepped,
        "born at bar {born}, old leader had reached {stepped}"
    );
    // Every child lives on the survivor, which runs the whole garden now.
    let retired: std::collections::BTreeSet<String> = log_entries
        .iter()
        .filter(|(_, k, _)| k == "retire")
        .map(|(_, _, f)| field(f, "id"))
        .collect();
    let alive: Vec<String> = ids.difference(&retired).cloned().collect();
    assert!(!alive.is_empty());
    wait_for("the children running", Duration::from_secs(30), || {
        let l = layout_of(&redis, prefix);
        l.get(&second)
            .is_some_and(|v| alive.iter().all(|c| v.contains(c)))
    });
    // Children start from their parent's state, and the dead daemon's
    // instances from their own.
    let text = std::fs::read_to_string(log(&second)).expect("log");
    assert!(
        text.contains("from its snapshot"),
        "instances started from snapshots:\n{text}"
    );
    assert!(
        text.contains(&format!("leading, term {second_term}")),
        "{text}"
    );
    // `garden status` shows the population as the log tells it.
    let out = garden_tests::garden()
        .args(["status", "--bus", &redis.url(), "--prefix", prefix])
        .output()
        .expect("garden status");
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.starts_with(&format!(
            "population: {} living of {} in the decision log, leader term {second_term}",
            alive.len(),
            ids.len()
        )),
        "{status}"
    );
    assert!(
        alive.iter().all(|id| status.contains(id.as_str())),
        "{status}"
    );
    // The garden's lineage is in the store, for `garden lineage`: every
    // variant the log names, as last decided.
    let lineage = || {
        let out = garden_tests::garden()
            .args(["lineage", "--store", &pg.url(), "--run", prefix, "--json"])
            .output()
            .expect("garden lineage");
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default()
    };
    // The four starting variants are among the births logged.
    assert!((0..4).all(|n| ids.contains(&format!("alpha-ema.{n}"))));
    wait_for("the lineage stored", Duration::from_secs(30), || {
        lineage().len() == ids.len()
    });
    let records = lineage();
    for r in &records {
        let id = r["id"].as_str().unwrap_or_default();
        assert_eq!(
            r["death_cause"].is_string(),
            retired.contains(id),
            "{id} dead exactly when retired: {r}"
        );
    }
    assert!(
        records
            .iter()
            .any(|r| r["id"] == "alpha-ema.0" && r["control"] == true)
    );
}

fn layout_of(redis: &Redis, prefix: &str) -> BTreeMap<String, Vec<String>> {
    live_daemons(redis, prefix)
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d.name, d.instances.into_iter().map(|i| i.id).collect()))
        .collect()
}

/// Who runs what, believing the daemon keys of the trust store at `trust`.
fn layout_trusting(redis: &Redis, prefix: &str, trust: &Path) -> BTreeMap<String, Vec<String>> {
    let peers = cluster::Peers::new(garden_registry::TrustStore::read(trust).unwrap_or_default());
    cluster::status(&redis.url(), prefix, &peers)
        .map(|(d, _)| d)
        .unwrap_or_default()
        .into_iter()
        .map(|d| (d.name, d.instances.into_iter().map(|i| i.id).collect()))
        .collect()
}

/// The daemons that say they lead, with their terms.
fn leaders(redis: &Redis, prefix: &str) -> Vec<(String, u64)> {
    live_daemons(redis, prefix)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| d.leader_term.map(|t| (d.name, t)))
        .collect()
}

#[test]
fn daemons_reconnect_after_a_redis_restart_and_go_on() {
    // The test's producer is a trusted writer before the daemons start.
    garden_tests::trust_daemon("producer");
    let prefix = "phoenix";
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        "[[module]]\nname = \"expert-anomaly\"\ninstances = 2\n",
    )
    .expect("config");
    let cache = dir.path().join("cache");
    let _a = daemon_in(&redis, prefix, "a", &config, &cache, &[]);
    let _b = daemon_in(&redis, prefix, "b", &config, &cache, &[]);
    let groups_ready = |redis: &Redis| {
        let Ok(mut con) = redis::Client::open(redis.url()).and_then(|c| c.get_connection()) else {
            return false;
        };
        let groups: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(format!("{prefix}:t:plan"))
            .query(&mut con)
            .unwrap_or_default();
        groups.len() == 2 && layout_of(redis, prefix).len() == 2
    };
    wait_for("two daemons reading plans", Duration::from_secs(60), || {
        groups_ready(&redis)
    });
    let mut o = RedisOptions::new(&redis.url());
    o.prefix = prefix.into();
    o.consumer = "producer".into();
    let mut producer = garden_tests::trusted_bus("producer", o);
    let publish = |producer: &mut RedisBus, range: std::ops::Range<u64>| {
        for n in range {
            producer.publish(plan(n)).expect("publishes");
        }
        while producer.unsent() > 0 {
            producer.pump();
        }
    };
    let judged = |redis: &Redis| {
        redis::Client::open(redis.url())
            .and_then(|c| c.get_connection())
            .map(|mut con| judged_plans_in(&mut con, prefix))
            .unwrap_or_default()
    };
    publish(&mut producer, 0..200);
    wait_for("the first plans judged", Duration::from_secs(30), || {
        judged(&redis).len() == 200
    });
    // Redis dies and comes back empty (no persistence in the test server):
    // the daemons reconnect with backoff, beat again and make their groups
    // again, without being restarted.
    redis.restart();
    wait_for("both daemons back", Duration::from_secs(30), || {
        groups_ready(&redis)
    });
    publish(&mut producer, 1_000..1_200);
    wait_for("the later plans judged", Duration::from_secs(30), || {
        judged(&redis).len() == 200
    });
    let ids = judged(&redis);
    assert!(ids.contains("p1000") && ids.contains("p1199"), "{ids:?}");
}

#[test]
fn daemons_started_with_different_plans_are_told_so() {
    let prefix = "mixed";
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let one = dir.path().join("one.toml");
    let two = dir.path().join("two.toml");
    std::fs::write(&one, "[[module]]\nname = \"expert-anomaly\"\n").expect("config");
    std::fs::write(
        &two,
        "[[module]]\nname = \"expert-anomaly\"\ninstances = 2\n",
    )
    .expect("config");
    let _a = daemon_in(&redis, prefix, "a", &one, &cache, &[]);
    let _b = daemon_in(&redis, prefix, "b", &two, &cache, &[]);
    wait_for("two daemons", Duration::from_secs(60), || {
        layout_of(&redis, prefix).len() == 2
    });
    let out = garden_tests::garden()
        .args(["status", "--bus", &redis.url(), "--prefix", prefix])
        .output()
        .expect("garden status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("warning: the daemons run different plans"),
        "{text}"
    );
    assert!(text.contains("same --config and --seed"), "{text}");
    let plans: Vec<String> = live_daemons(&redis, prefix)
        .expect("status")
        .into_iter()
        .map(|d| d.plan)
        .collect();
    assert_eq!(plans.len(), 2);
    assert_ne!(plans[0], plans[1]);
    assert!(plans.iter().all(|p| p.len() == 16), "{plans:?}");
}

#[test]
fn a_damaged_snapshot_in_redis_does_not_cost_the_instance() {
    let prefix = "damaged";
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(&config, "[[module]]\nname = \"alpha-ema\"\n").expect("config");
    // A kept snapshot that a trusted daemon signed but the module cannot
    // read (version 1, junk): the daemon's own key signs it here.
    garden_tests::trust_daemon("a");
    let (key, _) = cluster::Identity::load_or_create(
        &garden_tests::garden_home().join("data/daemons/a.key.pem"),
    )
    .expect("the daemon's key");
    cluster::Membership::connect(&redis.url(), prefix, "a", Duration::from_secs(3))
        .expect("connects")
        .signing(std::sync::Arc::new(key))
        .save_snapshots(&[(
            "alpha-ema".to_string(),
            garden_host::types::Snapshot {
                version: 1,
                data: b"junk".to_vec(),
            },
        )])
        .expect("saved");
    let cache = dir.path().join("cache");
    let _a = daemon_in(&redis, prefix, "a", &config, &cache, &[]);
    let log = daemon_log(&cache, "a");
    wait_for("alpha-ema running", Duration::from_secs(60), || {
        live_daemons(&redis, prefix)
            .unwrap_or_default()
            .iter()
            .flat_map(|d| &d.instances)
            .any(|i| i.id == "alpha-ema" && i.state == "ok")
    });
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("alpha-ema refused its snapshot") && text.contains("starting it fresh"),
        "{text}"
    );
}

#[test]
fn a_huge_value_planted_as_a_snapshot_is_refused_without_being_read_whole() {
    // Anyone who can write to Redis can plant a 64 MiB "snapshot"; a daemon
    // reads at most the limit's worth of it and starts the instance fresh.
    let redis = Redis::start();
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let mut huge = 1u32.to_le_bytes().to_vec();
    huge.resize(64 << 20, 7);
    let _: () = redis::cmd("SET")
        .arg("big:snapshot:alpha-ema")
        .arg(huge)
        .query(&mut con)
        .expect("SET");
    let key = cluster::Identity::new(garden_registry::SigningKey::generate());
    let mut store = garden_registry::TrustStore::default();
    store
        .add_as(
            &key.public(),
            "d",
            garden_registry::trust::Role::Daemon,
            "now",
        )
        .expect("trusts");
    let mut m = cluster::Membership::connect(&redis.url(), "big", "d", Duration::from_secs(3))
        .expect("connects")
        .signing(std::sync::Arc::new(key))
        .trusting(cluster::Peers::new(store));
    let cap = 1 << 20;
    assert_eq!(m.snapshot("alpha-ema", cap).expect("reads"), None);
    // A planted value of the right size but signed by nobody is refused
    // and reported.
    let mut planted = 1u32.to_le_bytes().to_vec();
    planted.resize(4 + cap, 7);
    let _: () = redis::cmd("SET")
        .arg("big:snapshot:alpha-ema")
        .arg(planted)
        .query(&mut con)
        .expect("SET");
    assert_eq!(m.snapshot("alpha-ema", cap).expect("reads"), None);
    let refused = m.take_refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].kind, "snapshot");
    // One a trusted daemon signed, exactly at the limit, is kept; moved to
    // another instance it is refused; nothing kept is no snapshot.
    let fits = garden_host::types::Snapshot {
        version: 1,
        data: vec![7; cap],
    };
    m.save_snapshots(&[("alpha-ema".to_string(), fits)])
        .expect("saved");
    let kept = m.snapshot("alpha-ema", cap).expect("reads").expect("kept");
    assert_eq!((kept.version, kept.data.len()), (1, cap));
    let moved: Vec<u8> = redis::cmd("GET")
        .arg("big:snapshot:alpha-ema")
        .query(&mut con)
        .expect("GET");
    let _: () = redis::cmd("SET")
        .arg("big:snapshot:other")
        .arg(moved)
        .query(&mut con)
        .expect("SET");
    assert_eq!(m.snapshot("other", cap).expect("reads"), None);
    assert!(matches!(
        m.take_refused()[0].reason,
        cluster::EntryRefused::BadSignature(_)
    ));
    assert_eq!(m.snapshot("nobody", cap).expect("reads"), None);
}

/// The attack of issue #17, by a plain Redis client: a decision log entry
/// that makes itself leader of term 31337 and retires an instance, and a
/// heartbeat of a daemon that does not exist. Before daemon keys, the
/// retirement was carried out and `garden status` reported the forged
/// leader; now both are ignored, counted and audited.
#[test]
fn entries_no_trusted_daemon_signed_are_ignored_counted_and_audited() {
    let prefix = "forged";
    let redis = Redis::start();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let config = dir.path().join("one.toml");
    std::fs::write(&config, "[[module]]\nname = \"expert-anomaly\"\n").expect("config");
    let _a = daemon_in(
        &redis,
        prefix,
        "a",
        &config,
        &cache,
        &["--store", &pg.url()],
    );
    wait_for("a leader", Duration::from_secs(60), || {
        leaders(&redis, prefix).len() == 1
    });
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let xadd = |con: &mut redis::Connection, fields: &[(&str, &str)]| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(format!("{prefix}:decisions")).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        let _: String = cmd.query(con).expect("XADD");
    };
    xadd(
        &mut con,
        &[("term", "31337"), ("kind", "leader"), ("daemon", "mallory")],
    );
    // A retirement that decodes: without daemon keys it was carried out.
    let record = serde_json::to_string(&garden_host::replication::LineageRecord {
        id: "expert-anomaly".into(),
        parents: Vec::new(),
        component: String::new(),
        blob: String::new(),
        genes: Vec::new(),
        generation: 0,
        birth_bar: 0,
        death_bar: Some(0),
        birth_cause: garden_host::replication::BirthCause::Initial,
        death_cause: Some("forged".into()),
        fitness: Vec::new(),
        in_sample: None,
        out_of_sample: None,
        control: false,
        fitness_by_label: Vec::new(),
        code_changes: Vec::new(),
    })
    .expect("encodes");
    xadd(
        &mut con,
        &[
            ("term", "31337"),
            ("kind", "retire"),
            ("id", "expert-anomaly"),
            ("time", "0"),
            ("record", &record),
            ("signer", "65f8f5b00ac1171328e65afe5ef92aa7"),
            ("sig", "00"),
        ],
    );
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}:daemon:mallory"))
        .arg(r#"{"name":"mallory","host":"x","pid":1,"started":"","beats":1,"instances":[],"bus_error":null,"leader_term":31337}"#)
        .ignore()
        .cmd("SADD")
        .arg(format!("{prefix}:daemons"))
        .arg("mallory")
        .ignore()
        .query(&mut con)
        .expect("SET");
    // A plan written straight into the topic's stream, as from an alpha:
    // before message tags the expert judged it.
    let forged = serde_json::json!({
        "v": 2, "key": "p-forged", "source": "alpha-ema.0", "time": 1,
        "from": "mallory@1", "n": 1, "body": plan(7).body,
    });
    let _: String = redis::cmd("XADD")
        .arg(format!("{prefix}:t:plan"))
        .arg("*")
        .arg("m")
        .arg(forged.to_string())
        .query(&mut con)
        .expect("XADD");
    // A few heartbeats (300 ms apart): time enough for the daemon to act on
    // the forged retirement, as it did before daemon keys. Nothing changed:
    // the instance runs, on the one real daemon, which alone leads.
    std::thread::sleep(Duration::from_millis(1500));
    let running: Vec<(String, String, String)> = live_daemons(&redis, prefix)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|d| {
            d.instances
                .into_iter()
                .map(move |i| (d.name.clone(), i.id, i.state))
        })
        .collect();
    assert_eq!(
        running,
        [(
            "a".to_string(),
            "expert-anomaly".to_string(),
            "ok".to_string()
        )],
        "the forged retirement was carried out"
    );
    assert_eq!(leaders(&redis, prefix).len(), 1);
    wait_for("the forgeries audited", Duration::from_secs(30), || {
        let (records, _) = audit_log(&pg.url());
        let refused = |kind: &str| {
            records
                .iter()
                .filter(|(k, m)| k == "refused-entry" && m == kind)
                .count()
        };
        refused("decision") == 2 && refused("heartbeat") == 1 && refused("message") == 1
    });
    assert!(
        judged_plans_in(&mut con, prefix).is_empty(),
        "the forged plan was judged"
    );
    let status = || {
        let out = garden_tests::garden()
            .args(["status", "--bus", &redis.url(), "--prefix", prefix])
            .output()
            .expect("garden status");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The count reaches the heartbeat after the one that saw the forgeries.
    wait_for(
        "the count in the heartbeat",
        Duration::from_secs(10),
        || status().contains("4 entries refused"),
    );
    let text = status();
    assert!(!text.contains("31337"), "{text}");
    assert!(
        text.contains("ignored heartbeat forged:daemon:mallory: unsigned"),
        "{text}"
    );
    assert!(
        text.contains("ignored 2 entries of the decision log"),
        "{text}"
    );
}

/// Revoking a daemon's key in the trust store takes effect within a
/// heartbeat, without a restart: the others ignore its entries and take
/// its instances, and the revoked daemon itself stops, saying why.
#[test]
fn a_revoked_daemon_key_is_ignored_within_a_heartbeat() {
    let prefix = "revoke";
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let config = dir.path().join("two.toml");
    std::fs::write(
        &config,
        "[[module]]\nname = \"expert-anomaly\"\ninstances = 4\n",
    )
    .expect("config");
    let trust = dir.path().join("trust.toml");
    let mut store = garden_registry::TrustStore::default();
    let mut keys = Vec::new();
    for name in ["r1", "r2"] {
        let path = dir.path().join(format!("{name}.key.pem"));
        let (key, _) = cluster::Identity::load_or_create(&path).expect("a key");
        store
            .add_as(
                &key.public(),
                name,
                garden_registry::trust::Role::Daemon,
                "now",
            )
            .expect("trusts");
        keys.push((path, key.id()));
    }
    store.write(&trust).expect("writes the trust store");
    let trust_arg = trust.to_str().expect("utf-8");
    let start = |name: &str, key: &std::path::Path| {
        let key = key.to_str().expect("utf-8");
        daemon_in(
            &redis,
            prefix,
            name,
            &config,
            &cache,
            &["--trust", trust_arg, "--key", key],
        )
    };
    let _r1 = start("r1", &keys[0].0);
    let mut r2 = start("r2", &keys[1].0);
    let began = Instant::now();
    loop {
        let layout = layout_trusting(&redis, prefix, &trust);
        if layout.len() == 2 && layout.values().map(Vec::len).sum::<usize>() == 4 {
            break;
        }
        let logs = |n: &str| std::fs::read_to_string(daemon_log(&cache, n)).unwrap_or_default();
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "both daemons live, all four placed: {layout:?}\nr1: {}\nr2: {}",
            logs("r1"),
            logs("r2")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let revoked = garden_tests::garden()
        .args(["trust", "revoke", &keys[1].1.to_string()])
        .args(["--reason", "test", "--trust", trust_arg])
        .output()
        .expect("garden trust revoke");
    assert!(revoked.status.success());
    let at = Instant::now();
    wait_for("r1 alone runs all four", Duration::from_secs(20), || {
        let layout = layout_trusting(&redis, prefix, &trust);
        layout.len() == 1 && layout.get("r1").is_some_and(|v| v.len() == 4)
    });
    // Heartbeats every 300 ms; a few of them, not a restart.
    assert!(at.elapsed() < Duration::from_secs(10), "{:?}", at.elapsed());
    let status = loop {
        if let Some(status) = r2.0.try_wait().expect("waits") {
            break status;
        }
        assert!(at.elapsed() < Duration::from_secs(20), "r2 still runs");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(daemon_log(&cache, "r2")).expect("log");
    assert!(log.contains("no longer a trusted daemon key"), "{log}");
}

/// The live daemons of `prefix` as seen by a reader of the trust store at
/// `trust`.
fn statuses_trusting(redis: &Redis, prefix: &str, trust: &Path) -> Vec<cluster::DaemonStatus> {
    let peers = cluster::Peers::new(garden_registry::TrustStore::read(trust).unwrap_or_default());
    cluster::status(&redis.url(), prefix, &peers)
        .map(|(d, _)| d)
        .unwrap_or_default()
}

/// `garden key rotate` on a running daemon: messages go on flowing with no
/// entry refused on the way, the daemon writes with its new key, and once
/// the grace is over an entry written with the old key is refused.
#[test]
fn a_daemon_key_rotated_while_running_keeps_messages_flowing() {
    let prefix = "rotate";
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let config = dir.path().join("four.toml");
    std::fs::write(
        &config,
        "[[module]]\nname = \"expert-anomaly\"\ninstances = 4\n",
    )
    .expect("config");
    let trust = dir.path().join("trust.toml");
    let mut store = garden_registry::TrustStore::default();
    let key_of = |name: &str| dir.path().join(format!("{name}.key.pem"));
    for name in ["r1", "r2", "producer"] {
        let (key, _) = cluster::Identity::load_or_create(&key_of(name)).expect("a key");
        store
            .add_as(
                &key.public(),
                name,
                garden_registry::trust::Role::Daemon,
                "now",
            )
            .expect("trusts");
    }
    store.write(&trust).expect("writes the trust store");
    let trust_arg = trust.to_str().expect("utf-8");
    let start = |name: &str| {
        let key = key_of(name);
        daemon_in(
            &redis,
            prefix,
            name,
            &config,
            &cache,
            &["--trust", trust_arg, "--key", key.to_str().expect("utf-8")],
        )
    };
    let _r1 = start("r1");
    let _r2 = start("r2");
    wait_for(
        "both daemons share the four",
        Duration::from_secs(60),
        || {
            let layout = layout_trusting(&redis, prefix, &trust);
            layout.len() == 2 && layout.values().map(Vec::len).sum::<usize>() == 4
        },
    );
    // The producer tags for the daemon keys the trust store lists now, as
    // a daemon does after each heartbeat.
    let (producer, _) = cluster::Identity::load_or_create(&key_of("producer")).expect("key");
    let mut o = RedisOptions::new(&redis.url());
    o.prefix = prefix.into();
    o.consumer = "producer".into();
    let mut bus = RedisBus::connect(o).expect("connects");
    let peers = || cluster::Peers::new(garden_registry::TrustStore::read(&trust).expect("reads"));
    let old_key = garden_registry::SigningKey::read(&key_of("r2")).expect("r2's key");
    let total = 600u64;
    for n in 0..total {
        if n % 50 == 0 {
            bus.set_auth(producer.entry_auth(&peers()));
        }
        bus.publish(plan(n)).expect("publishes");
        if n % 10 == 0 {
            bus.pump();
            std::thread::sleep(Duration::from_millis(20));
        }
        if n == total / 3 {
            let rotated = garden_tests::garden()
                .args(["key", "rotate", "--key"])
                .arg(key_of("r2"))
                .args(["--trust", trust_arg, "--grace", "4s"])
                .output()
                .expect("garden key rotate");
            assert!(
                rotated.status.success(),
                "{}",
                String::from_utf8_lossy(&rotated.stderr)
            );
        }
    }
    bus.pump();
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let logs = || {
        ["r1", "r2"]
            .map(|n| std::fs::read_to_string(daemon_log(&cache, n)).unwrap_or_default())
            .join("\n---\n")
    };
    let began = Instant::now();
    while judged_plans_in(&mut con, prefix).len() < total as usize {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "{} of {total} plans judged\n{}",
            judged_plans_in(&mut con, prefix).len(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let new_key = garden_registry::SigningKey::read(&key_of("r2")).expect("the new key");
    assert_ne!(new_key.public().id(), old_key.public().id());
    wait_for(
        "r2 writing with its new key",
        Duration::from_secs(20),
        || logs().contains(&format!("replaced by {}", new_key.public().id())),
    );
    // After the grace, r2 still beats (with the new key: the old one is
    // trusted no more), and no entry was refused on the way.
    std::thread::sleep(Duration::from_secs(5));
    let statuses = statuses_trusting(&redis, prefix, &trust);
    assert_eq!(
        statuses.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["r1", "r2"],
        "{}",
        logs()
    );
    assert_eq!(
        statuses.iter().map(|d| d.refused).sum::<u64>(),
        0,
        "{}",
        logs()
    );
    // The old key, stolen after the rotation, writes nothing anyone takes.
    let mut o = RedisOptions::new(&redis.url());
    o.prefix = prefix.into();
    o.consumer = "thief".into();
    let mut thief = RedisBus::connect(o).expect("connects");
    thief.set_auth(cluster::Identity::new(old_key).entry_auth(&peers()));
    let mut stale = plan(total);
    if let Body::Plan(p) = &mut stale.body {
        p.id = "stale".into();
    }
    thief.publish(stale).expect("publishes");
    thief.pump();
    wait_for("the stale entry refused", Duration::from_secs(20), || {
        statuses_trusting(&redis, prefix, &trust)
            .iter()
            .map(|d| d.refused)
            .sum::<u64>()
            > 0
    });
    assert!(!judged_plans_in(&mut con, prefix).contains("stale"));
}

/// A fitness report written straight into the fitness stream, as a trader
/// would: the leader selects on nothing a trusted daemon did not write,
/// and counts and audits what it ignored.
#[test]
fn a_forged_fitness_report_steers_nothing_and_is_counted() {
    let prefix = "fitness";
    let redis = Redis::start();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let config = dir.path().join("population.toml");
    std::fs::write(
        &config,
        "[[module]]\nname = \"alpha-ema\"\npopulation = true\ninstances = 2\n",
    )
    .expect("config");
    let _a = daemon_in(
        &redis,
        prefix,
        "a",
        &config,
        &cache,
        &["--store", &pg.url()],
    );
    wait_for("a leader", Duration::from_secs(60), || {
        leaders(&redis, prefix).len() == 1
    });
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let report = serde_json::json!({
        "v": 2, "key": "alpha-ema.0", "source": "trader", "time": 1,
        "from": "mallory@1", "n": 1,
        "body": Body::Fitness(garden_host::types::Fitness {
            subject: "alpha-ema.0".into(),
            values: vec![1e9],
            trades: 1_000,
            metrics: Vec::new(),
        }),
    });
    let _: String = redis::cmd("XADD")
        .arg(format!("{prefix}:t:fitness"))
        .arg("*")
        .arg("m")
        .arg(report.to_string())
        .query(&mut con)
        .expect("XADD");
    wait_for("the forged report audited", Duration::from_secs(30), || {
        audit_log(&pg.url())
            .0
            .iter()
            .any(|(k, m)| k == "refused-entry" && m == "leader-input")
    });
    wait_for(
        "the count in the heartbeat",
        Duration::from_secs(10),
        || {
            live_daemons(&redis, prefix)
                .unwrap_or_default()
                .iter()
                .map(|d| d.refused)
                .sum::<u64>()
                == 1
        },
    );
}

/// The record bodies of `topic` in run `run` in the store at `url`.
fn stored_bodies(url: &str, run: &str, topic: &str) -> Vec<(i64, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = garden_registry::Store::connect(url).await.expect("store");
        store
            .record_bodies(run, topic, 100_000)
            .await
            .expect("record bodies")
    })
}

/// With `--body-keys`, nothing of a message's body is in the clear on
/// Redis, in a snapshot there or in a record in the store; the body key
/// rotates while messages flow; a host without the keyring opens nothing.
#[test]
fn bodies_snapshots_and_records_are_encrypted_with_the_body_keys() {
    use garden_host::keyring::Keyring;
    let prefix = "sealed";
    let redis = Redis::start();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let keyring = dir.path().join("body.keys");
    let rotate = || {
        let out = garden_tests::garden()
            .args(["key", "rotate", "--body-keys"])
            .arg(&keyring)
            .args(["--grace", "10m"])
            .output()
            .expect("garden key rotate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(rotate().contains("made with key"));
    let config = dir.path().join("two.toml");
    std::fs::write(
        &config,
        "[[module]]\nname = \"expert-anomaly\"\ninstances = 2\n\n[[module]]\nname = \"alpha-ema\"\n",
    )
    .expect("config");
    let ring = keyring.to_str().expect("utf-8");
    // The test's producer is a trusted writer before the daemon starts.
    garden_tests::trust_daemon("producer");
    let _a = daemon_in(
        &redis,
        prefix,
        "a",
        &config,
        &cache,
        &["--store", &pg.url(), "--body-keys", ring],
    );
    wait_for("the daemon runs all three", Duration::from_secs(60), || {
        layout_of(&redis, prefix)
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == 3
    });
    let mut o = RedisOptions::new(&redis.url());
    o.prefix = prefix.into();
    o.consumer = "producer".into();
    let mut producer = garden_tests::trusted_bus("producer", o);
    // As a daemon does, the producer goes on sealing with the key it has
    // until the daemons have read the new one.
    let seal = |bus: &mut RedisBus, with: &str| {
        let keys = Keyring::read(&keyring)
            .expect("the keyring")
            .sealing_with(with);
        let auth = bus.auth().clone().with_body_keys(Some(Arc::new(keys)));
        bus.set_auth(auth);
    };
    let first = Keyring::read(&keyring)
        .expect("the keyring")
        .writer_id()
        .to_string();
    seal(&mut producer, &first);
    let total = 200u64;
    for n in 0..total {
        if n == total / 2 {
            assert!(rotate().contains("is current"));
            seal(&mut producer, &first);
        }
        producer.publish(plan(n)).expect("publishes");
        if n % 20 == 0 {
            producer.pump();
        }
    }
    producer.pump();
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let raw = |con: &mut redis::Connection, topic: &str| -> Vec<Vec<(String, String)>> {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(format!("{prefix}:t:{topic}"))
            .arg("-")
            .arg("+")
            .query(con)
            .unwrap_or_default();
        entries.into_iter().map(|(_, f)| f).collect()
    };
    let log = || std::fs::read_to_string(daemon_log(&cache, "a")).unwrap_or_default();
    let judged = |con: &mut redis::Connection| -> std::collections::BTreeSet<String> {
        let keys = Keyring::read(&keyring).expect("the keyring");
        let stream = format!("{prefix}:t:evidence");
        raw(con, "evidence")
            .iter()
            .filter_map(|f| open_entry("evidence", &stream, f, Some(&keys)).ok())
            .filter_map(|(e, _, _)| match e.body {
                Body::Evidence(e) => Some(e.plan_id),
                _ => None,
            })
            .collect()
    };
    let began = Instant::now();
    while judged(&mut con).len() < total as usize {
        let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(format!("{prefix}:dead"))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(3)
            .query(&mut con)
            .unwrap_or_default();
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "{} of {total} plans judged; dead letters: {dead:?}\n{}",
            judged(&mut con).len(),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(
        "the daemon sealing with the new key",
        Duration::from_secs(10),
        || log().contains("sealing with body key"),
    );
    // On Redis: every body sealed, nothing of it readable.
    for topic in ["plan", "evidence"] {
        for f in raw(&mut con, topic) {
            let m = &f.iter().find(|(k, _)| k == "m").expect("field m").1;
            assert!(
                m.contains("\"enc\"") && !m.contains("EURUSD") && !m.contains("plan_id"),
                "{m}"
            );
        }
    }
    // Without the keyring, a reader opens nothing and says why.
    let f = raw(&mut con, "plan").remove(0);
    let err = decode_entry("plan", &f).expect_err("sealed");
    assert!(err.contains("give this host the garden's keyring"), "{err}");
    // The snapshot kept in Redis is sealed.
    wait_for("a sealed snapshot", Duration::from_secs(20), || {
        let kept: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("{prefix}:snapshot:alpha-ema"))
            .query(&mut con)
            .unwrap_or(None);
        kept.is_some_and(|b| b.starts_with(b"gsn2"))
    });
    // In the store, the records are sealed and open with the keyring.
    let keys = Keyring::read(&keyring).expect("the keyring");
    wait_for("the plans recorded", Duration::from_secs(30), || {
        stored_bodies(&pg.url(), prefix, "plan").len() == total as usize
    });
    for (n, body) in stored_bodies(&pg.url(), prefix, "plan") {
        assert!(
            body.starts_with("{\"sealed\":") && !body.contains("EURUSD"),
            "{body}"
        );
        let opened =
            garden_host::records::open_body(Some(&keys), prefix, "plan", n, &body).expect("opens");
        assert!(opened.contains("EURUSD"), "{opened}");
    }
}
