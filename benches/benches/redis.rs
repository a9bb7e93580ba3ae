//! The Redis Streams bus (issue #6), against a redis-server of its own on a
//! free loopback port:
//!
//! * the ceiling: `redis-benchmark` pipelining 200-byte XADDs (`-P 16`) on
//!   the same machine, in the same run;
//! * end to end through the bus: one thread (then four, each a daemon with
//!   its own bus) publishes plans (about 250 bytes encoded) through a
//!   `RedisBus`, pipelined (one pump per 256 publishes); another reads them
//!   through a consumer group in batches, hands each to its subscriber and
//!   acknowledges it. Messages per second from the first publish to the last
//!   acknowledgement;
//! * latency of a plan from an alpha to a decision module: plans published
//!   at a steady 10,000 per second, each timed from its publish until the
//!   consumer holds it; p50 and p99.
//!
//! * the same end-to-end run over TLS (`rediss://` with a client
//!   certificate, against a redis-server that speaks TLS only);
//! * the cost of outputs written once: the same end-to-end run with every
//!   plan carrying a publish id, appended by the `PUBLISH_ONCE` script;
//! * the cost of authenticated entries: tagging a plan for one and for
//!   three reading daemons, and checking a tag (every bus above tags for
//!   one reader, the key all its buses share).
//!
//! * the pattern's own ceiling: the same commands the bus sends (XADD of
//!   entries as large as a plan's, pipelined 256 deep; XREADGROUP of up to
//!   1,024; XACK) from a bare redis client that does nothing else, so the
//!   share of Redis's time that any client of consumer groups must leave
//!   to Redis is visible;
//! * Redis's own CPU time per message in each end-to-end run (`INFO cpu`),
//!   which bounds what a faster client could gain.
//!
//! Run: `cargo bench -p garden-benches --bench redis`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use garden_host::Envelope;
use garden_host::bus::{Bus, Delivery, RedisBus, RedisOptions, Subscriber};
use garden_host::keyring::Keyring;
use garden_host::types::{Body, Plan, Side};
use garden_tests::servers::Redis;

const MESSAGES: u64 = 200_000;

fn options(redis: &Redis, prefix: &str, consumer: &str) -> RedisOptions {
    let mut o = RedisOptions::new(&redis.url());
    o.prefix = prefix.into();
    o.consumer = consumer.into();
    o.maxlen = 1_000_000;
    o.batch = 1024;
    o
}

fn plan(n: u64, sent_nanos: i64) -> Envelope {
    let id = format!("alpha-ema.3/{n}");
    Envelope {
        topic: "plan".into(),
        key: id.clone(),
        seq: 0,
        time: sent_nanos,
        source: "alpha-ema.3".into(),
        body: Body::Plan(Plan {
            id,
            origin: "alpha-ema.3".into(),
            symbol: "EURUSD".into(),
            side: Side::Long,
            entry: 1.085_71,
            stop: 1.081_22,
            target: 1.094_05,
            size: 10_000.0,
            horizon: 24,
            confidence: 0.61,
            time: 1_700_000_000_000,
        }),
        trace: garden_host::message::Trace::default(),
    }
}

fn consumer(redis: &Redis, prefix: &str) -> RedisBus {
    consumer_sealing(redis, prefix, None)
}

/// A bus tagging with the shared key, and sealing bodies with `keys`.
fn sealing_bus(opts: RedisOptions, keys: Option<&Arc<Keyring>>) -> RedisBus {
    let mut bus = garden_tests::shared_bus(opts).expect("connects");
    if let Some(keys) = keys {
        let auth = bus.auth().clone().with_body_keys(Some(keys.clone()));
        bus.set_auth(auth);
    }
    bus
}

fn consumer_sealing(redis: &Redis, prefix: &str, keys: Option<&Arc<Keyring>>) -> RedisBus {
    let mut bus = sealing_bus(options(redis, prefix, "decision-daemon"), keys);
    bus.subscribe(&Subscriber {
        instance: "decision".into(),
        group: "decision".into(),
        topic: "plan".into(),
        delivery: Delivery::Shared,
        addressed: false,
    });
    bus
}

/// `redis-benchmark` XADD with 200-byte values, pipelined 16 deep.
fn ceiling(redis: &Redis) -> Option<f64> {
    let value = "x".repeat(200);
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port().to_string(),
            "-n",
            "200000",
            "-P",
            "16",
            "-q",
        ])
        .args(["XADD", "ceiling", "*", "f", &value])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "XADD ceiling * f xxx…: 912408.75 requests per second, p50=…"
    let rate = text
        .split("requests per second")
        .next()?
        .rsplit(':')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some(rate)
}

/// Redis's CPU seconds so far (user plus system), from `INFO cpu`.
fn redis_cpu(redis: &Redis) -> f64 {
    let client = redis::Client::open(redis.url()).expect("a client");
    let mut conn = client.get_connection().expect("connects");
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query(&mut conn)
        .expect("INFO");
    info.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "used_cpu_sys" | "used_cpu_user").then(|| v.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// Messages per second and Redis's CPU microseconds per message of `run`,
/// which moves [`MESSAGES`].
fn with_redis_cpu(redis: &Redis, run: impl FnOnce() -> f64) -> (f64, f64) {
    let before = redis_cpu(redis);
    let rate = run();
    let used = redis_cpu(redis) - before;
    (rate, 1e6 * used / MESSAGES as f64)
}

/// The bus's command pattern from a bare client: a publisher thread
/// pipelining XADDs of a plan-sized entry (`m` 250 bytes, `a` 74, as the
/// bus writes them) 256 at a time; a reader acknowledging what it read
/// and reading up to 1,024 more in one round trip. Messages per second
/// from the first XADD to the last XACK.
fn bare_streams(redis: &Redis) -> f64 {
    let client = redis::Client::open(redis.url()).expect("a client");
    let stream = "bare:plan";
    let mut reader = client.get_connection().expect("connects");
    let _: redis::Value = redis::cmd("XGROUP")
        .arg(&["CREATE", stream, "g", "$", "MKSTREAM"])
        .query(&mut reader)
        .expect("a group");
    let started = Instant::now();
    let publisher = std::thread::spawn(move || {
        let mut conn = client.get_connection().expect("connects");
        let (m, a) = ("m".repeat(250), "a".repeat(74));
        for _ in 0..MESSAGES / 256 {
            let mut pipe = redis::pipe();
            for _ in 0..256 {
                pipe.cmd("XADD")
                    .arg(&[stream, "MAXLEN", "~", "1000000", "*", "m", &m, "a", &a])
                    .ignore();
            }
            let () = pipe.query(&mut conn).expect("XADDs");
        }
    });
    let mut got = 0u64;
    let mut ids: Vec<String> = Vec::new();
    while got < MESSAGES / 256 * 256 {
        let mut pipe = redis::pipe();
        if !ids.is_empty() {
            pipe.cmd("XACK").arg(stream).arg("g").arg(&ids).ignore();
        }
        pipe.cmd("XREADGROUP")
            .arg(&["GROUP", "g", "c", "COUNT", "1024", "STREAMS", stream, ">"]);
        let (reply,): (redis::streams::StreamReadReply,) =
            pipe.query(&mut reader).expect("XREADGROUP");
        ids = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids.into_iter().map(|e| e.id))
            .collect();
        got += ids.len() as u64;
        if ids.is_empty() {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let _: redis::Value = redis::cmd("XACK")
        .arg(stream)
        .arg("g")
        .arg(&ids)
        .query(&mut reader)
        .expect("XACK");
    let elapsed = started.elapsed();
    publisher.join().expect("publisher");
    (MESSAGES / 256 * 256) as f64 / elapsed.as_secs_f64()
}

/// Messages per second from the first publish to the last acknowledgement,
/// with `publishers` publishing daemons (threads, each with its own bus and
/// connection, as daemons on several machines would) and one reader.
fn throughput(redis: &Redis, publishers: u64) -> f64 {
    throughput_sealing(redis, publishers, None, false)
}

/// [`throughput`] with bodies sealed with `keys`, and with `once` each plan
/// carrying a publish id (as a handler's output does), written through
/// `PUBLISH_ONCE`.
fn throughput_sealing(
    redis: &Redis,
    publishers: u64,
    keys: Option<&Arc<Keyring>>,
    once: bool,
) -> f64 {
    let prefix = format!(
        "tput{publishers}{}{}",
        if keys.is_some() { "s" } else { "" },
        if once { "o" } else { "" }
    );
    let mut reader = consumer_sealing(redis, &prefix, keys);
    let started = Instant::now();
    let producers: Vec<_> = (0..publishers)
        .map(|p| {
            let opts = options(redis, &prefix, &format!("alpha-daemon-{p}"));
            let keys = keys.cloned();
            std::thread::spawn(move || {
                let mut bus = sealing_bus(opts, keys.as_ref());
                for n in (p..MESSAGES).step_by(publishers as usize) {
                    let mut message = plan(n, 0);
                    if once {
                        message.trace.origin = Some(garden_host::message::Origin {
                            topic: "bar".into(),
                            seq: n,
                            index: 0,
                        });
                    }
                    bus.publish(message).expect("publishes");
                    if n % 256 == 255 {
                        bus.pump();
                    }
                }
                while bus.unsent() > 0 {
                    bus.pump();
                }
                started.elapsed()
            })
        })
        .collect();
    let mut got = 0u64;
    while got < MESSAGES {
        if !reader.pump() {
            std::thread::sleep(Duration::from_micros(50));
        }
        let mut n = 0;
        while reader.poll("decision").is_some() {
            n += 1;
        }
        reader.ack("decision", n);
        got += n as u64;
    }
    reader.pump(); // the last acknowledgements
    let elapsed = started.elapsed();
    let published_in = producers
        .into_iter()
        .map(|p| p.join().expect("producer"))
        .max()
        .unwrap_or_default();
    println!(
        "  ({publishers} publisher(s) done after {:.2} s, the reader after {:.2} s)",
        published_in.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    MESSAGES as f64 / elapsed.as_secs_f64()
}

fn latency(redis: &Redis) -> (f64, f64, f64) {
    let rate = 10_000u64;
    let total = 50_000u64;
    let base = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let mut reader = consumer(redis, "latency");
    let producer = {
        let opts = options(redis, "latency", "alpha-daemon");
        let done = done.clone();
        std::thread::spawn(move || {
            let mut bus = garden_tests::shared_bus(opts).expect("connects");
            // Ten plans every millisecond, each stamped when published.
            let per_tick = rate / 1_000;
            for tick in 0..total / per_tick {
                let due = base + Duration::from_millis(tick + 1);
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
                for k in 0..per_tick {
                    let sent = base.elapsed().as_nanos() as i64;
                    bus.publish(plan(tick * per_tick + k, sent))
                        .expect("publishes");
                }
                bus.pump();
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut lat = Vec::with_capacity(total as usize);
    while (lat.len() as u64) < total {
        reader.pump();
        let now = base.elapsed().as_nanos() as i64;
        let mut n = 0;
        while let Some(m) = reader.poll("decision") {
            lat.push((now - m.time) as f64 / 1e6);
            n += 1;
        }
        reader.ack("decision", n);
        if n == 0 && done.load(Ordering::Acquire) && (lat.len() as u64) < total {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    producer.join().expect("producer");
    // The first second warms connections and the server up.
    let steady = &mut lat[rate as usize..];
    steady.sort_by(f64::total_cmp);
    let at = |q: f64| steady[((steady.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(1.0))
}

/// Microseconds to tag one plan entry for `readers` daemons, and to check
/// one tag, on this machine (no Redis involved).
fn auth_cost(readers: usize) -> (f64, f64) {
    use garden_host::bus::redis::EntryAuth;
    use garden_registry::SigningKey;
    let keys: Vec<SigningKey> = (0..readers).map(|_| SigningKey::generate()).collect();
    let publics: Vec<_> = keys.iter().map(SigningKey::public).collect();
    let writer = EntryAuth::new(&keys[0], &publics);
    let reader = EntryAuth::new(&keys[readers - 1], &publics);
    let m = serde_json::to_string(&plan(17, 0).body).expect("encodes");
    let rounds = 100_000u32;
    let started = Instant::now();
    let mut a = String::new();
    for _ in 0..rounds {
        a = writer.seal("garden:t:plan", std::hint::black_box(&m));
    }
    let seal = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let started = Instant::now();
    for _ in 0..rounds {
        let ok = reader.check("garden:t:plan", std::hint::black_box(&m), Some(&a));
        assert!(ok.is_ok());
    }
    let check = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    (seal, check)
}

/// Microseconds to sign one plan entry with ed25519, and to verify it: the
/// alternative to tags.
fn signature_cost() -> (f64, f64) {
    use garden_registry::SigningKey;
    let key = SigningKey::generate();
    let public = key.public();
    let m = serde_json::to_string(&plan(17, 0).body).expect("encodes");
    let rounds = 20_000u32;
    let started = Instant::now();
    let mut sig = [0u8; 64];
    for _ in 0..rounds {
        sig = key.sign(std::hint::black_box(m.as_bytes()));
    }
    let sign = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let started = Instant::now();
    for _ in 0..rounds {
        assert!(public.verify(std::hint::black_box(m.as_bytes()), &sig));
    }
    let verify = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    (sign, verify)
}

/// Microseconds to seal one plan body with a body key, and to open it.
fn body_cost(keys: &Keyring) -> (f64, f64) {
    let m = serde_json::to_vec(&plan(17, 0).body).expect("encodes");
    let rounds = 100_000u32;
    let started = Instant::now();
    let mut sealed = String::new();
    for _ in 0..rounds {
        sealed = keys
            .seal(b"garden:t:plan", std::hint::black_box(&m))
            .expect("seals");
    }
    let seal = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let started = Instant::now();
    for _ in 0..rounds {
        assert!(
            keys.open(b"garden:t:plan", std::hint::black_box(&sealed))
                .is_ok()
        );
    }
    let open = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    (seal, open)
}

fn main() {
    let ring_dir = tempfile::tempdir().expect("tempdir");
    let ring_path = ring_dir.path().join("body.keys");
    Keyring::rotate(&ring_path, Duration::from_secs(3600)).expect("a keyring");
    let keys = Arc::new(Keyring::read(&ring_path).expect("reads"));
    let (body_seal, body_open) = body_cost(&keys);
    let (seal1, check1) = auth_cost(1);
    let (seal3, check3) = auth_cost(3);
    let (sign, verify) = signature_cost();
    let redis = Redis::start();
    let ceiling = ceiling(&redis);
    let (bare, bare_cpu) = with_redis_cpu(&redis, || bare_streams(&redis));
    let (one, one_cpu) = with_redis_cpu(&redis, || throughput(&redis, 1));
    let four = throughput(&redis, 4);
    let one_sealed = throughput_sealing(&redis, 1, Some(&keys), false);
    let four_sealed = throughput_sealing(&redis, 4, Some(&keys), false);
    let (one_once, once_cpu) = with_redis_cpu(&redis, || throughput_sealing(&redis, 1, None, true));
    let four_once = throughput_sealing(&redis, 4, None, true);
    let (p50, p99, max) = latency(&redis);
    // The same bus over TLS (a redis-server speaking TLS only, with a
    // client certificate), in the same run.
    let certs = garden_tests::servers::Certificates::make();
    let tls = Redis::start_tls(&certs);
    let one_tls = throughput(&tls, 1);
    let four_tls = throughput(&tls, 4);
    println!(
        "Redis Streams bus, redis-server on 127.0.0.1:{}",
        redis.port()
    );
    let share = |x: f64| {
        ceiling.map_or(String::new(), |c| {
            format!(" = {:.0}% of the ceiling", 100.0 * x / c)
        })
    };
    match ceiling {
        Some(c) => {
            println!("  ceiling: redis-benchmark XADD (200 B, -P 16, 50 clients): {c:.0} msgs/s")
        }
        None => println!("  ceiling: redis-benchmark did not run (install redis-tools)"),
    }
    println!(
        "  the same commands from a bare client (XADD, XREADGROUP, XACK), 1 publisher: {bare:.0} msgs/s{}; Redis busy {bare_cpu:.2} us per message",
        share(bare)
    );
    println!(
        "  garden bus end to end (publish, read, hand over, ack), 1 publisher: {one:.0} msgs/s{} ({:.0}% of the bare client); Redis busy {one_cpu:.2} us per message",
        share(one),
        100.0 * one / bare
    );
    println!(
        "  garden bus end to end, 4 publishers: {four:.0} msgs/s{}",
        share(four)
    );
    println!(
        "  plan latency, alpha to decision, 10,000 plans/s: p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms"
    );
    println!(
        "  over TLS (rediss://, client certificate): 1 publisher {one_tls:.0} msgs/s ({:.0}% of the clear), 4 publishers {four_tls:.0} msgs/s ({:.0}%)",
        100.0 * one_tls / one,
        100.0 * four_tls / four
    );
    println!(
        "  entry tags: seal {seal1:.2} us for 1 reader, {seal3:.2} us for 3; check {check1:.2} us (1), {check3:.2} us (3)"
    );
    println!("  ed25519 instead: sign {sign:.2} us, verify {verify:.2} us");
    println!(
        "  outputs written once (publish ids through PUBLISH_ONCE): 1 publisher {one_once:.0} msgs/s ({:.0}% of plain XADD), 4 publishers {four_once:.0} msgs/s ({:.0}%); Redis busy {once_cpu:.2} us per message",
        100.0 * one_once / one,
        100.0 * four_once / four
    );
    println!(
        "  bodies sealed (--body-keys): 1 publisher {one_sealed:.0} msgs/s ({:.0}% of the clear), 4 publishers {four_sealed:.0} msgs/s ({:.0}%); seal {body_seal:.2} us, open {body_open:.2} us per plan body",
        100.0 * one_sealed / one,
        100.0 * four_sealed / four
    );
}
