//! Hot-loading into a running garden of daemons: `garden deploy` keeps a
//! new version of a module in Redis and asks for it; the leader decides
//! it in the fenced log; both daemons verify it and switch every instance
//! at the decided position, with every message handled once. A request no
//! trusted daemon signed, and code no trusted publisher signed, change
//! nothing.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use garden_host::bus::redis::decode_entry;
use garden_host::bus::{Bus, RedisOptions};
use garden_host::cluster;
use garden_host::types::Body;
use garden_tests::plan;
use garden_tests::servers::Redis;

pub(super) const PREFIX: &str = "hot";

pub(super) use garden_tests::Killed as Daemon;

pub(super) fn daemon(redis: &Redis, name: &str, config: &Path, dir: &Path) -> Daemon {
    garden_tests::trust_daemon(name);
    Daemon(
        garden_tests::garden()
            .args(["daemon", "--bus", &redis.url(), "--prefix", PREFIX])
            .args(["--name", name, "--heartbeat-ttl-ms", "900"])
            .args(["--claim-idle-ms", "600"])
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

pub(super) use garden_tests::wait_for;

/// Both daemons' standard error.
pub(super) fn logs(dir: &Path) -> String {
    ["a", "b"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

pub(super) fn statuses(redis: &Redis) -> Vec<cluster::DaemonStatus> {
    cluster::status(&redis.url(), PREFIX, &garden_tests::daemon_peers())
        .map(|(d, _)| d)
        .unwrap_or_default()
}

/// Evidence entries per plan id.
pub(super) fn evidence(con: &mut redis::Connection) -> std::collections::BTreeMap<String, usize> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{PREFIX}:t:evidence"))
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for (_, fields) in &entries {
        if let Ok((e, _, _)) = decode_entry("evidence", fields)
            && let Body::Evidence(e) = e.body
        {
            *out.entry(e.plan_id).or_insert(0) += 1;
        }
    }
    out
}

/// Two daemons sharing four expert instances, the test key trusted as a
/// publisher, and a producer of plans.
pub(super) fn garden(dir: &Path) -> (Redis, Daemon, Daemon, garden_host::bus::RedisBus) {
    garden_registry::TrustStore::update(&garden_tests::garden_home().join("trust.toml"), |s| {
        s.add(&garden_tests::test_key().public(), "tests", "test")
    })
    .expect("trusts the test key");
    garden_tests::trust_daemon("producer");
    let redis = Redis::start();
    let config = dir.join("pipeline.toml");
    std::fs::write(
        &config,
        "[[module]]\nname = \"expert-anomaly\"\ninstances = 4\n",
    )
    .expect("config");
    let a = daemon(&redis, "a", &config, dir);
    let b = daemon(&redis, "b", &config, dir);
    wait_for(
        "two daemons sharing four instances",
        Duration::from_secs(60),
        || {
            let s = statuses(&redis);
            s.len() == 2
                && s.iter().all(|d| !d.instances.is_empty())
                && s.iter().map(|d| d.instances.len()).sum::<usize>() == 4
        },
    );
    let mut o = RedisOptions::new(&redis.url());
    o.prefix = PREFIX.into();
    o.consumer = "producer".into();
    let producer = garden_tests::trusted_bus("producer", o);
    (redis, a, b, producer)
}

/// `garden ARGS --bus URL --prefix hot` (a deploy, rollback or undeploy
/// with `--wait 30` added), which must succeed: what it printed.
pub(super) fn ask(redis: &Redis, args: &[&str]) -> String {
    let out = garden_tests::garden()
        .args(args)
        .args(["--bus", &redis.url(), "--prefix", PREFIX, "--wait", "30"])
        .output()
        .expect("garden runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "garden {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `garden deploy FILE --module expert-anomaly` as daemon `a`, waiting for
/// the leader's answer: what it printed.
fn deploy(redis: &Redis, file: &Path) -> String {
    let file = file.to_str().expect("a path");
    ask(
        redis,
        &["deploy", file, "--module", "expert-anomaly", "--name", "a"],
    )
}

#[test]
fn a_deploy_reaches_every_daemon_and_every_message_is_handled_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _a, _b, mut producer) = garden(dir.path());
    let next = garden_tests::rebuilt(dir.path(), "expert-anomaly", "0.2.0");
    let total = 3_000u64;
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    for n in 0..total {
        producer.publish(plan(n)).expect("publishes");
        if n % 200 == 199 {
            producer.pump();
        }
        if n == total / 3 {
            producer.pump();
            let stdout = deploy(&redis, &next);
            assert!(
                stdout.contains("every daemon switches expert-anomaly"),
                "{stdout}"
            );
            // Publish the rest once Redis's clock is past the switch, so
            // plans come on both sides of it.
            past(&mut con, &stdout);
        }
    }
    while producer.unsent() > 0 {
        producer.pump();
    }
    wait_for("evidence on every plan", Duration::from_secs(90), || {
        evidence(&mut con).len() == total as usize
    });
    std::thread::sleep(Duration::from_millis(300));
    // Each plan judged once: nothing lost or handled twice at the switch.
    let judged = evidence(&mut con);
    let twice: Vec<_> = judged.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "{} plans judged more than once",
        twice.len()
    );
    // Both daemons run the new code on all their instances, and say so.
    let deadline = Instant::now() + Duration::from_secs(30);
    let on_new = |s: &[cluster::DaemonStatus]| {
        s.len() == 2
            && s.iter()
                .flat_map(|d| &d.instances)
                .all(|i| i.code.starts_with("expert-anomaly@0.2.0 "))
    };
    while !on_new(&statuses(&redis)) {
        assert!(
            Instant::now() < deadline,
            "not every instance on the new code: {:?}\n{}",
            statuses(&redis),
            logs(dir.path())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = statuses(&redis);
    for d in &s {
        assert_eq!(d.deploys.len(), 1, "{d:?}");
        assert!(d.deploys[0].contains("switched here"), "{:?}", d.deploys);
    }
    let out = garden_tests::garden()
        .args(["status", "--bus", &redis.url(), "--prefix", PREFIX])
        .output()
        .expect("garden status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("code: expert-anomaly@0.2.0 sha256:"),
        "{text}"
    );
    assert!(text.contains("deploy: expert-anomaly -> sha256:"), "{text}");

    // Taken back by hand: every instance returns to the pipeline's code at
    // the next switch, and the plans after it are judged once too.
    let stdout = ask(
        &redis,
        &["rollback", "--module", "expert-anomaly", "--name", "b"],
    );
    assert!(stdout.contains("(rollback: asked, replace)"), "{stdout}");
    past(&mut con, &stdout);
    publish(&mut producer, total..total + 1_000);
    wait_for(
        "evidence on the later plans",
        Duration::from_secs(60),
        || evidence(&mut con).len() == total as usize + 1_000,
    );
    assert!(evidence(&mut con).values().all(|n| *n == 1));
    wait_until_code(&redis, dir.path(), "expert-anomaly@0.1.0 ", 2);
}

/// Wait until Redis's clock is past the switch position `garden deploy`
/// or `garden rollback` printed, so what is published next comes after it.
pub(super) fn past(con: &mut redis::Connection, printed: &str) {
    let at: u64 = printed
        .split("at bus position ")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.trim().parse().ok())
        .expect("the switch position");
    wait_for(
        "Redis's clock past the switch",
        Duration::from_secs(10),
        || {
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query(con).expect("TIME");
            (secs * 1000 + micros / 1000) << 16 > at
        },
    );
}

/// Publish plans `range`.
pub(super) fn publish(producer: &mut garden_host::bus::RedisBus, range: std::ops::Range<u64>) {
    for n in range {
        producer.publish(plan(n)).expect("publishes");
        if n % 200 == 199 {
            producer.pump();
        }
    }
    while producer.unsent() > 0 {
        producer.pump();
    }
}

/// Wait until `daemons` daemons run the four instances, every one on code
/// `label...`.
pub(super) fn wait_until_code(redis: &Redis, dir: &Path, label: &str, daemons: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let on = |s: &[cluster::DaemonStatus]| {
        s.len() == daemons
            && s.iter().map(|d| d.instances.len()).sum::<usize>() == 4
            && s.iter()
                .flat_map(|d| &d.instances)
                .all(|i| i.code.starts_with(label))
    };
    while !on(&statuses(redis)) {
        assert!(
            Instant::now() < deadline,
            "not every instance on {label}: {:?}\n{}",
            statuses(redis),
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_deploy_that_traps_is_rolled_back_by_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _a, _b, mut producer) = garden(dir.path());
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    // A new version that traps on every tenth bar.
    let broken = dir.path().join("broken.signed.wasm");
    let bytes = garden_tests::signed(
        &garden_tests::fixture_bytes("tenth"),
        &garden_tests::fixture_manifest("tenth"),
    );
    std::fs::write(&broken, bytes).expect("writes");
    let stdout = deploy(&redis, &broken);
    past(&mut con, &stdout);
    // Bars (each instance traps on its tenth) and plans, until the leader
    // has taken the module back and every instance runs the old code.
    let rows = garden_tests::bundled_rows();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    loop {
        for row in &rows[n % 4_000..n % 4_000 + 20] {
            producer
                .publish(garden_host::feed::bar_message("bar", "EURUSD", row))
                .expect("publishes");
        }
        n += 20;
        while producer.unsent() > 0 {
            producer.pump();
        }
        std::thread::sleep(Duration::from_millis(100));
        let s = statuses(&redis);
        if s.len() == 2
            && s.iter()
                .flat_map(|d| &d.instances)
                .all(|i| i.code.starts_with("expert-anomaly@0.1.0 "))
            && n > 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not rolled back: {s:?}\n{}",
            logs(dir.path())
        );
    }
    let log = logs(dir.path());
    assert!(
        log.contains("rolled expert-anomaly back from sha256:"),
        "{log}"
    );
    assert!(log.contains("traps and"), "{log}");
    // The old code goes on: plans published now are judged, once each.
    publish(&mut producer, 0..500);
    wait_for("evidence on every plan", Duration::from_secs(60), || {
        evidence(&mut con).len() == 500
    });
    assert!(evidence(&mut con).values().all(|c| *c == 1));
}

#[test]
fn a_forged_request_and_untrusted_code_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _a, _b, _producer) = garden(dir.path());
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    // A request written by any Redis client, unsigned.
    let _: String = redis::cmd("XADD")
        .arg(format!("{PREFIX}:requests"))
        .arg("*")
        .arg(&["kind", "deploy", "module", "expert-anomaly", "digest", "00"])
        .query(&mut con)
        .expect("XADD");
    // Code signed by a stranger, asked for by a trusted daemon key whose
    // holder trusts the stranger on their own machine.
    let (file, stranger) = garden_tests::signed_by_stranger(dir.path(), "panic-message");
    let mut own = garden_registry::TrustStore::default();
    own.add(&stranger.public(), "stranger", "test")
        .expect("trusts");
    let own_path = dir.path().join("own-trust.toml");
    own.write(&own_path).expect("writes the trust file");
    let out = garden_tests::garden()
        .arg("deploy")
        .arg(&file)
        .args(["--module", "expert-anomaly", "--bus", &redis.url()])
        .args(["--prefix", PREFIX, "--name", "a", "--wait", "3"])
        .arg("--trust")
        .arg(&own_path)
        .output()
        .expect("garden deploy");
    assert!(!out.status.success(), "the leader must not answer it");
    // The leader refused both: counted in its status, the old code runs.
    wait_for("both refusals counted", Duration::from_secs(30), || {
        statuses(&redis).iter().map(|d| d.refused).sum::<u64>() >= 1
    });
    let s = statuses(&redis);
    assert!(
        s.iter()
            .flat_map(|d| &d.instances)
            .all(|i| i.code.starts_with("expert-anomaly@") && !i.code.contains("panic")),
        "{s:?}"
    );
    assert!(s.iter().all(|d| d.deploys.is_empty()), "{s:?}");
    let log = logs(dir.path());
    assert!(log.contains("refused a deploy request"), "{log}");
    assert!(log.contains("does not verify here"), "{log}");
}

#[test]
fn a_daemon_killed_mid_rollout_leaves_the_survivor_to_finish_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, a, _b, mut producer) = garden(dir.path());
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    publish(&mut producer, 0..1_000);
    let next = garden_tests::rebuilt(dir.path(), "expert-anomaly", "0.3.0");
    let file = next.to_str().expect("a path");
    let stdout = ask(
        &redis,
        &["deploy", file, "--module", "expert-anomaly", "--name", "b"],
    );
    // Daemon a dies before the switch: the survivor takes its instances
    // over and finishes the rollout alone.
    drop(a);
    past(&mut con, &stdout);
    publish(&mut producer, 1_000..2_000);
    wait_for("evidence on every plan", Duration::from_secs(90), || {
        evidence(&mut con).len() == 2_000
    });
    wait_until_code(&redis, dir.path(), "expert-anomaly@0.3.0 ", 1);
    // Taken out by version: it drains, and the pipeline's code comes back.
    let stdout = ask(&redis, &["undeploy", "expert-anomaly@0.3.0", "--name", "b"]);
    past(&mut con, &stdout);
    publish(&mut producer, 2_000..2_100);
    wait_until_code(&redis, dir.path(), "expert-anomaly@0.1.0 ", 1);
    // Nothing left to take out.
    let out = garden_tests::garden()
        .args(["undeploy", "expert-anomaly@0.3.0", "--bus", &redis.url()])
        .args(["--prefix", PREFIX, "--name", "b"])
        .output()
        .expect("garden undeploy");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runs expert-anomaly@0.3.0 by a deploy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_version_from_the_registry_deploys_and_a_yanked_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _a, _b, mut producer) = garden(dir.path());
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    // A registry of its own, publishing what the test key signs.
    let (key, _) = garden_tests::test_key()
        .write_pair(dir.path(), "publisher")
        .expect("key files");
    let publishers = dir.path().join("publishers.toml");
    let mut store = garden_registry::TrustStore::default();
    store
        .add(&garden_tests::test_key().public(), "tests", "test")
        .expect("trusts");
    store.write(&publishers).expect("writes");
    let addr = format!("127.0.0.1:{}", garden_tests::servers::free_port());
    let registry = format!("http://{addr}");
    let db = format!("sqlite://{}", dir.path().join("registry.db").display());
    let _server = Daemon(
        garden_tests::garden()
            .args([
                "registry", "serve", "--addr", &addr, "--store", &db, "--trust",
            ])
            .arg(&publishers)
            .arg("--blobs")
            .arg(dir.path().join("blobs"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("garden registry serve"),
    );
    wait_for("the registry", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let garden = |args: &[&str]| {
        garden_tests::garden()
            .args(args)
            .args(["--registry", &registry])
            .output()
            .expect("garden runs")
    };
    for version in ["0.2.0", "0.4.0"] {
        let file = garden_tests::rebuilt(dir.path(), "expert-anomaly", version);
        let out = garden(&["publish", file.to_str().expect("a path")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key = key.to_str().expect("a path");
    let out = garden(&["yank", "expert-anomaly@0.2.0", "--key", key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The yanked version never reaches the garden.
    let out = garden(&[
        "deploy",
        "expert-anomaly@0.2.0",
        "--module",
        "expert-anomaly",
        "--bus",
        &redis.url(),
        "--prefix",
        PREFIX,
        "--name",
        "a",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("yanked"),
        "{stderr}"
    );
    // The published one does.
    let stdout = ask(
        &redis,
        &[
            "deploy",
            "expert-anomaly@0.4.0",
            "--registry",
            &registry,
            "--module",
            "expert-anomaly",
            "--name",
            "a",
        ],
    );
    assert!(
        stdout.contains("to deploy expert-anomaly@0.4.0"),
        "{stdout}"
    );
    past(&mut con, &stdout);
    publish(&mut producer, 0..200);
    wait_until_code(&redis, dir.path(), "expert-anomaly@0.4.0 ", 2);
}

/// The sha256 of a signed component's code, as deploys name it.
pub(super) fn code_digest(file: &Path) -> String {
    let bytes = std::fs::read(file).expect("reads");
    garden_registry::signature::parse(&bytes)
        .expect("a signed component")
        .digest
        .to_hex()
}

#[test]
fn forged_deploy_decisions_and_code_swapped_in_redis_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _a, _b, _producer) = garden(dir.path());
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    // Trusted code, already in Redis: only the decision is forged.
    let trusted = garden_tests::rebuilt(dir.path(), "expert-anomaly", "0.5.0");
    let digest = code_digest(&trusted);
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}:code:{digest}"))
        .arg(std::fs::read(&trusted).expect("reads"))
        .query(&mut con)
        .expect("SET");
    let fields = |request: &str| {
        vec![
            ("term", "1".to_string()),
            ("kind", "deploy".into()),
            ("module", "expert-anomaly".into()),
            ("digest", digest.clone()),
            ("at", "0".into()),
            ("request", request.into()),
            ("by", "forger".into()),
            ("reason", "deploy".into()),
        ]
    };
    // 1. Written by any Redis client, unsigned.
    let mut xadd = redis::cmd("XADD");
    xadd.arg(format!("{PREFIX}:decisions")).arg("*");
    for (k, v) in fields("unsigned") {
        xadd.arg(k).arg(v);
    }
    let _: String = xadd.query(&mut con).expect("XADD");
    // 2. Signed by a trusted daemon that does not lead the term.
    let leader = statuses(&redis)
        .into_iter()
        .find(|d| d.leader_term.is_some())
        .map(|d| d.name)
        .expect("a leader");
    let other = if leader == "a" { "b" } else { "a" };
    let key = garden_tests::garden_home()
        .join("data/daemons")
        .join(format!("{other}.key.pem"));
    let (identity, _) = cluster::Identity::load_or_create(&key).expect("the key");
    let owned = fields("not the leader");
    let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut xadd = redis::cmd("XADD");
    xadd.arg(format!("{PREFIX}:decisions")).arg("*");
    for (k, v) in identity.sign(&format!("decision {PREFIX}"), &pairs) {
        xadd.arg(k).arg(v);
    }
    let _: String = xadd.query(&mut con).expect("XADD");
    // 3. A signed request for code whose copy in Redis was swapped for
    //    other trusted code before the request wrote it.
    let asked = garden_tests::rebuilt(dir.path(), "expert-anomaly", "0.6.0");
    let asked_digest = code_digest(&asked);
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}:code:{asked_digest}"))
        .arg(std::fs::read(&trusted).expect("reads"))
        .query(&mut con)
        .expect("SET");
    cluster::request_deploy(
        &redis.url(),
        PREFIX,
        &identity,
        cluster::Asked {
            module: "expert-anomaly",
            rollout: cluster::Rollout::Replace,
            fitness: None,
            downgrade: false,
        },
        &asked_digest,
        &std::fs::read(&asked).expect("reads"),
    )
    .expect("asks");
    // Each daemon refuses both decisions; the leader refuses the request;
    // nothing is deployed.
    wait_for(
        "the forged decisions refused",
        Duration::from_secs(30),
        || {
            let s = statuses(&redis);
            s.len() == 2 && s.iter().all(|d| d.refused >= 2)
        },
    );
    wait_for("the swapped code refused", Duration::from_secs(30), || {
        logs(dir.path()).contains(&format!(
            "the code kept under sha256:{asked_digest} is sha256:{digest}"
        ))
    });
    std::thread::sleep(Duration::from_secs(1));
    let s = statuses(&redis);
    assert!(s.iter().all(|d| d.deploys.is_empty()), "{s:?}");
    assert!(
        s.iter()
            .flat_map(|d| &d.instances)
            .all(|i| i.code.starts_with("expert-anomaly@0.1.0 ")),
        "{s:?}"
    );
}
