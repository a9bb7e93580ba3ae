//! Partitions, Jepsen-style, on this one machine: three daemons, each on a
//! test host of its own (a network namespace joined to Redis by a veth
//! link, `garden_tests::netns`). The test cuts a follower off and heals
//! it, cuts the leader off and heals it, then slows every link, while
//! plans flow; afterwards it checks what the issue "Wire trust" asks:
//! no decision from a stale term in the log, at most one leader per term,
//! no plan lost, every instance placed once, and the population what the
//! log says.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use garden_host::bus::redis::decode_entry;
use garden_host::bus::{Bus, RedisOptions};
use garden_host::cluster;
use garden_host::types::Body;
use garden_tests::netns::Host;
use garden_tests::plan;
use garden_tests::servers::Redis;

const PREFIX: &str = "part";
const INSTANCES: usize = 6;

use garden_tests::Killed as Daemon;

fn start(host: &Host, redis: &Redis, name: &str, config: &Path, dir: &Path) -> Daemon {
    garden_tests::trust_daemon(name);
    Daemon(
        garden_tests::garden_on(host)
            .args(["daemon", "--bus", &redis.url_at(host.gateway())])
            .args(["--prefix", PREFIX, "--name", name])
            .args(["--heartbeat-ttl-ms", "900", "--claim-idle-ms", "600"])
            .arg("--config")
            .arg(config)
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file"))
            .spawn()
            .expect("garden daemon starts"),
    )
}

fn statuses(redis: &Redis) -> Vec<cluster::DaemonStatus> {
    cluster::status(&redis.url(), PREFIX, &garden_tests::daemon_peers())
        .map(|(d, _)| d)
        .unwrap_or_default()
}

/// Instances per live daemon.
fn layout(redis: &Redis) -> BTreeMap<String, Vec<String>> {
    statuses(redis)
        .into_iter()
        .map(|d| (d.name, d.instances.into_iter().map(|i| i.id).collect()))
        .collect()
}

/// The live daemons that say they lead, with their terms.
fn leaders(redis: &Redis) -> Vec<(String, u64)> {
    statuses(redis)
        .into_iter()
        .filter_map(|d| d.leader_term.map(|t| (d.name, t)))
        .collect()
}

/// `names` live, and every instance placed on exactly one of them.
fn settled(redis: &Redis, names: &[&str]) -> bool {
    let l = layout(redis);
    let placed: Vec<&String> = l.values().flatten().collect();
    let distinct: BTreeSet<&String> = placed.iter().copied().collect();
    l.keys().map(String::as_str).eq(names.iter().copied())
        && placed.len() == INSTANCES
        && distinct.len() == INSTANCES
}

fn wait_for(
    what: &str,
    timeout: Duration,
    logs: &dyn Fn() -> String,
    mut ok: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (plan id, how many evidence entries it has).
fn judged(con: &mut redis::Connection) -> BTreeMap<String, usize> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{PREFIX}:t:evidence"))
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for (_, fields) in entries {
        if let Ok((e, _, _)) = decode_entry("evidence", &fields)
            && let Body::Evidence(e) = e.body
        {
            *out.entry(e.plan_id).or_insert(0) += 1;
        }
    }
    out
}

/// The decision log as (term, kind, daemon or instance).
fn log(con: &mut redis::Connection) -> Vec<(u64, String, String)> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{PREFIX}:decisions"))
        .arg("-")
        .arg("+")
        .query(con)
        .expect("XRANGE");
    let field = |f: &[(String, String)], k: &str| {
        f.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    entries
        .iter()
        .map(|(_, f)| {
            let who = match field(f, "kind").as_str() {
                "leader" => field(f, "daemon"),
                _ => field(f, "id"),
            };
            (field(f, "term").parse().unwrap_or(0), field(f, "kind"), who)
        })
        .collect()
}

#[test]
fn three_daemons_survive_partitions_of_a_follower_and_the_leader() {
    let hosts: Vec<Host> = (1..=3).map(Host::make).collect();
    let gateways: Vec<String> = hosts.iter().map(|h| h.gateway().to_string()).collect();
    let redis = Redis::start_binding(&gateways);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!("[[module]]\nname = \"expert-anomaly\"\ninstances = {INSTANCES}\n"),
    )
    .expect("config");
    // The test's producer is a trusted writer before the daemons start.
    garden_tests::trust_daemon("producer");
    let names = ["d1", "d2", "d3"];
    let _daemons: Vec<Daemon> = hosts
        .iter()
        .zip(names)
        .map(|(h, n)| start(h, &redis, n, &config, dir.path()))
        .collect();
    let logs = || {
        names
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(dir.path().join(format!("{n}.log")))
                    .unwrap_or_default();
                format!("--- {n}\n{text}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    wait_for(
        "three daemons, all placed, a leader",
        Duration::from_secs(90),
        &logs,
        || settled(&redis, &names) && leaders(&redis).len() == 1,
    );
    let mut o = RedisOptions::new(&redis.url());
    o.prefix = PREFIX.into();
    o.consumer = "producer".into();
    let mut producer = garden_tests::trusted_bus("producer", o);
    let mut n = 0u64;
    let mut publish = |count: u64| {
        for _ in 0..count {
            producer.publish(plan(n)).expect("publishes");
            n += 1;
            if n.is_multiple_of(25) {
                producer.pump();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        producer.pump();
    };
    let index = |name: &str| names.iter().position(|n| *n == name).expect("a daemon");
    publish(200);

    // A follower cut off: the others take its instances; healed, it is
    // placed again.
    let (leader, first_term) = leaders(&redis).remove(0);
    let follower = names
        .iter()
        .copied()
        .find(|n| *n != leader)
        .expect("a follower");
    hosts[index(follower)].cut();
    let rest: Vec<&str> = names.iter().copied().filter(|n| *n != follower).collect();
    wait_for(
        "the two others run everything",
        Duration::from_secs(30),
        &logs,
        || settled(&redis, &rest),
    );
    publish(200);
    hosts[index(follower)].heal();
    wait_for("the follower back", Duration::from_secs(30), &logs, || {
        settled(&redis, &names)
    });
    publish(200);

    // The leader cut off: another leads, in a later term.
    hosts[index(&leader)].cut();
    let rest: Vec<&str> = names.iter().copied().filter(|n| *n != leader).collect();
    wait_for(
        "a new leader among the others",
        Duration::from_secs(30),
        &logs,
        || {
            settled(&redis, &rest)
                && leaders(&redis)
                    .iter()
                    .any(|(who, term)| *who != leader && *term > first_term)
        },
    );
    publish(200);
    hosts[index(&leader)].heal();
    wait_for(
        "the old leader back, one leader",
        Duration::from_secs(30),
        &logs,
        || settled(&redis, &names) && leaders(&redis).len() == 1,
    );

    // Every link slowed to a trickle, then freed.
    for h in &hosts {
        h.slow(Some((256, 100)));
    }
    publish(200);
    std::thread::sleep(Duration::from_secs(2));
    for h in &hosts {
        h.slow(None);
    }
    publish(200);
    let total = n;

    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    wait_for("every plan judged", Duration::from_secs(90), &logs, || {
        judged(&mut con).len() == total as usize
    });
    wait_for(
        "all three back, one leader",
        Duration::from_secs(30),
        &logs,
        || settled(&redis, &names) && leaders(&redis).len() == 1,
    );
    let counts = judged(&mut con);
    let twice = counts.values().filter(|c| **c > 1).count();
    eprintln!(
        "{total} plans, {} judged, {twice} judged more than once",
        counts.len()
    );
    // A plan handled after an instance's last checkpoint is handled again
    // where it restarts from it (after a handover, a fence or a crash), but
    // its outputs are written once: each carries a publish id (publisher,
    // input, place in the call) that Redis keeps per stream. Before the
    // ids, 153 to 169 of the 1,200 were judged twice; with them, none in
    // every run so far. The bound leaves room for the one case the ids do
    // not cover: a restarted instance that sees its pending inputs in
    // another order may publish an output in answer to another input.
    assert!(
        twice * 100 < total as usize,
        "{twice} of {total} plans judged more than once"
    );
    // The follower, back after more than a heartbeat's lifetime, knew it
    // had been presumed dead: it dropped what it held and restarted its
    // instances from their snapshots.
    let follower_log =
        std::fs::read_to_string(dir.path().join(format!("{follower}.log"))).unwrap_or_default();
    assert!(follower_log.contains("presumed dead"), "{follower_log}");

    // The log: each term announced once, terms rising, and no decision of
    // a term after a later one was announced.
    let decisions = log(&mut con);
    let mut current = 0;
    let mut announced = BTreeSet::new();
    for (term, kind, who) in &decisions {
        if kind == "leader" {
            assert!(
                *term > current,
                "term {term} announced after {current}: {decisions:?}"
            );
            assert!(announced.insert(*term), "term {term} announced twice");
            current = *term;
        } else {
            assert_eq!(
                *term, current,
                "a {kind} of {who} in stale term {term}: {decisions:?}"
            );
        }
    }
    assert!(announced.len() >= 2, "the leader changed: {decisions:?}");
    // The population is what the log says: no instance was retired, so
    // all six run, each once; and no daemon refused an entry.
    assert!(
        decisions.iter().all(|(_, k, _)| k == "leader"),
        "{decisions:?}"
    );
    let now = statuses(&redis);
    assert_eq!(now.iter().map(|d| d.refused).sum::<u64>(), 0, "{}", logs());
    let claimed: Vec<u64> = now.iter().filter_map(|d| d.leader_term).collect();
    assert_eq!(claimed, [current], "the leader is the last announced");
}
