//! The Redis Streams bus against a real redis-server started on a free
//! loopback port: the pipeline gives the same result as on the memory bus,
//! bad entries are dead-lettered with a reason, a dead consumer's entries are
//! reclaimed, a Redis restart is survived, AUTH works, entries no trusted
//! bus wrote are refused, and bars can come from any producer through the
//! feed stream.

use std::sync::Arc;
use std::time::Duration;

use garden_host::Envelope;
use garden_host::bus::{
    Bus, BusError, Delivery, MemoryBus, RedisBus, RedisOptions, Subscriber, fnv1a,
};
use garden_host::config::PipelineConfig;
use garden_host::replay::{Replay, ReplayOptions};
use garden_host::types::Body;
use garden_tests::servers::Redis;
use garden_tests::{bundled_rows, engine, without_timings};

fn options(redis: &Redis, prefix: &str, consumer: &str) -> RedisOptions {
    let mut o = RedisOptions::new(&redis.url());
    o.prefix = prefix.into();
    o.consumer = consumer.into();
    o
}

fn sub(instance: &str, group: &str, topic: &str, delivery: Delivery) -> Subscriber {
    Subscriber {
        instance: instance.into(),
        group: group.into(),
        topic: topic.into(),
        delivery,
        addressed: false,
    }
}

fn msg(topic: &str, key: &str, n: i64) -> Envelope {
    Envelope {
        topic: topic.into(),
        key: key.into(),
        seq: 0,
        time: n,
        source: "test".into(),
        body: Body::Retired(format!("{key}-{n}")),
        trace: garden_host::message::Trace::default(),
    }
}

/// The reasons of the dead letters in `stream`, in order.
fn dead_reasons(con: &mut redis::Connection, stream: &str) -> Vec<String> {
    let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(con)
        .expect("dead letters");
    dead.iter()
        .filter_map(|(_, f)| {
            f.iter()
                .find(|(k, _)| k == "reason")
                .map(|(_, v)| v.clone())
        })
        .collect()
}

fn raw(redis: &Redis) -> redis::Connection {
    redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("a raw connection")
}

/// Pump until nothing more arrives, then take everything `instance` has.
fn drain<B: Bus>(bus: &mut B, instance: &str) -> Vec<Arc<Envelope>> {
    for _ in 0..3 {
        bus.pump();
    }
    let mut out = Vec::new();
    while let Some(m) = bus.poll(instance) {
        out.push(m);
    }
    out
}

fn label(m: &Envelope) -> String {
    match &m.body {
        Body::Retired(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn run_on<B: Bus>(
    bus: B,
    rows: &[garden_host::feed::csv::Row],
) -> (serde_json::Value, Vec<Envelope>) {
    let config = PipelineConfig::embedded().expect("embedded pipeline");
    let engine = engine(config.limits.clone());
    let modules = config
        .load(&engine, &garden_tests::pipeline_trust())
        .expect("modules load");
    let options = ReplayOptions {
        seed: 3,
        variants: Some(3),
        symbol: "EURUSD".into(),
        data_name: "bundled".into(),
        threads: 0,
        total_bars: rows.len(),
        steps_per_year: 6_000.0,
        per_call: 0,
        deploys: Vec::new(),
    };
    let mut replay = Replay::start_on(bus, engine, &config, &modules, options).expect("starts");
    for t in ["plan", "evidence", "scored", "decision", "fill"] {
        replay.tap(t);
    }
    let mut tapped = Vec::new();
    for row in rows {
        replay.feed(row);
        tapped.extend(replay.take_tapped());
    }
    let (summary, rest) = replay.finish_tapped(rows, 1.0);
    tapped.extend(rest);
    let mut json = without_timings(&summary);
    // Counted differently by each backend; everything else must agree.
    if let Some(o) = json.as_object_mut() {
        o.remove("bus");
        o.remove("messages");
    }
    // Sequence numbers are the backend's own (Redis: from the entry id).
    let tapped = tapped
        .iter()
        .map(|m| Envelope {
            seq: 0,
            ..(**m).clone()
        })
        .collect();
    (json, tapped)
}

#[test]
fn the_pipeline_over_redis_gives_what_it_gives_over_the_memory_bus() {
    let redis = Redis::start();
    let rows: Vec<_> = bundled_rows().into_iter().take(700).collect();
    let config = PipelineConfig::embedded().expect("embedded pipeline");
    let (memory, memory_msgs) = run_on(MemoryBus::new(config.limits.inbox_capacity), &rows);
    let bus = garden_tests::shared_bus(options(&redis, "same", "daemon-1")).expect("connects");
    let (over_redis, redis_msgs) = run_on(bus, &rows);
    assert!(memory_msgs.len() > 100, "the run says something");
    assert_eq!(memory_msgs.len(), redis_msgs.len());
    for (a, b) in memory_msgs.iter().zip(&redis_msgs) {
        assert_eq!(a, b);
    }
    assert_eq!(memory, over_redis);
    // Every entry was acknowledged: nothing is left pending in any group.
    let mut con = raw(&redis);
    for stream in [
        "same:t:bar",
        "same:t:plan",
        "same:t:evidence",
        "same:t:scored",
    ] {
        let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query(&mut con)
            .expect("groups of the stream");
        assert!(!groups.is_empty(), "{stream} has groups");
        for g in groups {
            let at = g
                .iter()
                .position(|v| matches!(v, redis::Value::BulkString(b) if b == b"pending"))
                .expect("a pending field");
            assert_eq!(
                g.get(at + 1),
                Some(&redis::Value::Int(0)),
                "{stream}: {g:?}"
            );
        }
    }
}

#[test]
fn shared_delivery_keeps_per_key_order_and_broadcast_reaches_everyone() {
    let redis = Redis::start();
    let mut bus = garden_tests::shared_bus(options(&redis, "order", "d")).expect("connects");
    bus.subscribe(&sub("w1", "workers", "job", Delivery::Shared));
    bus.subscribe(&sub("w2", "workers", "job", Delivery::Shared));
    bus.subscribe(&sub("log", "log", "job", Delivery::Broadcast));
    bus.pump();
    for n in 0..60 {
        bus.publish(msg("job", ["a", "b", "c"][n as usize % 3], n))
            .expect("publishes");
    }
    let (w1, w2, log) = (
        drain(&mut bus, "w1"),
        drain(&mut bus, "w2"),
        drain(&mut bus, "log"),
    );
    assert_eq!(w1.len() + w2.len(), 60, "each job to one worker");
    assert_eq!(log.len(), 60, "and every job to the broadcast subscriber");
    for worker in [&w1, &w2] {
        for key in ["a", "b", "c"] {
            let times: Vec<i64> = worker
                .iter()
                .filter(|m| m.key == key)
                .map(|m| m.time)
                .collect();
            assert!(times.windows(2).all(|w| w[0] < w[1]), "{key}: {times:?}");
            // One key, one worker.
            let other = if std::ptr::eq(worker, &w1) { &w2 } else { &w1 };
            assert!(times.is_empty() || other.iter().all(|m| m.key != key));
        }
    }
}

/// An output of `input`'s handling, `index`-th of its call.
fn output(input_seq: u64, index: u32, n: i64) -> Envelope {
    let mut m = msg("evidence", "p1", n);
    m.source = "expert.0".into();
    m.trace.origin = Some(garden_host::message::Origin {
        topic: "plan".into(),
        seq: input_seq,
        index,
    });
    m
}

/// The same output of the same input, published by two daemons (the one
/// that handled it first and the one that claimed the input after a
/// partition) or twice by one (a restart from a snapshot, a resend after a
/// lost reply), is written once; another output is not held back.
#[test]
fn an_output_handled_twice_is_written_once() {
    let redis = Redis::start();
    let mut first = garden_tests::shared_bus(options(&redis, "once", "d1")).expect("connects");
    let mut second = garden_tests::shared_bus(options(&redis, "once", "d2")).expect("connects");
    first.publish(output(42, 0, 1)).expect("publishes");
    first.pump();
    second.publish(output(42, 0, 2)).expect("publishes");
    second.publish(output(42, 1, 3)).expect("publishes");
    second.publish(output(43, 0, 4)).expect("publishes");
    second.pump();
    first.publish(output(42, 0, 5)).expect("publishes");
    first.pump();
    let mut con = raw(&redis);
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("once:t:evidence")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .expect("the stream");
    let times: Vec<i64> = entries
        .iter()
        .filter_map(|(_, fields)| fields.iter().find(|(k, _)| k == "m"))
        .filter_map(|(_, m)| serde_json::from_str::<serde_json::Value>(m).ok())
        .filter_map(|m| m["time"].as_i64())
        .collect();
    assert_eq!(
        times,
        [1, 3, 4],
        "the first copy only, and every other output"
    );
    assert_eq!(first.stats().deduplicated + second.stats().deduplicated, 2);
    // The id does not travel in the entry.
    assert!(entries.iter().all(|(_, f)| f.iter().all(|(k, _)| k != "p")));
}

#[test]
fn malformed_entries_are_dead_lettered_with_a_reason_and_the_consumer_goes_on() {
    let redis = Redis::start();
    let mut bus = garden_tests::shared_bus(options(&redis, "bad", "d")).expect("connects");
    bus.subscribe(&sub("x", "x", "t", Delivery::Shared));
    bus.pump();
    let mut con = raw(&redis);
    // Broken entries a trusted writer tagged (a bug, not an attack): they
    // pass the tag check and fail to decode.
    let auth = bus.auth().clone();
    let add = |con: &mut redis::Connection, fields: &[(&str, &str)]| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("bad:t:t").arg("*");
        let m = fields
            .iter()
            .find(|(k, _)| *k == "m")
            .map_or("", |(_, v)| *v);
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.arg("a").arg(auth.seal("bad:t:t", m));
        let _: String = cmd.query(con).expect("XADD");
    };
    add(&mut con, &[("hello", "world")]);
    add(
        &mut con,
        &[(
            "m",
            "{\"v\":2,\"key\":\"k\",\"source\":\"s\",\"time\":1,\"from\":\"p\",\"n\":1,\"body\":\"\u{1}garbage\"}",
        )],
    );
    add(&mut con, &[("m", "{\"v\":9,\"body\":{}}")]);
    add(&mut con, &[("m", "{\"v\":2,\"key\":")]);
    bus.publish(msg("t", "k", 7))
        .expect("a good one after them");
    let got = drain(&mut bus, "x");
    assert_eq!(got.iter().map(|m| label(m)).collect::<Vec<_>>(), ["k-7"]);
    bus.pump();
    let reasons = dead_reasons(&mut con, "bad:dead");
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("missing field `m`"), "{reasons:?}");
    assert!(reasons[1].contains("`m` does not decode"), "{reasons:?}");
    assert!(reasons[2].contains("format `9`"), "{reasons:?}");
    assert!(reasons[3].contains("`m` does not decode"), "{reasons:?}");
    assert_eq!(bus.stats().dead_letters, 4);
    // An oversized message is refused at publish, with the reason.
    let mut small = options(&redis, "bad", "p");
    small.max_entry_bytes = 64;
    let mut publisher = garden_tests::shared_bus(small).expect("connects");
    let mut big = msg("t", "k", 8);
    big.body = Body::Retired("x".repeat(1000));
    match publisher.publish(big) {
        Err(BusError::Refused { reason, .. }) => assert!(reason.contains("byte limit"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn entries_a_dead_consumer_left_pending_are_reclaimed_and_poison_is_dead_lettered() {
    let redis = Redis::start();
    let claim = |consumer: &str, max_deliveries: u64| {
        let mut o = options(&redis, "claim", consumer);
        o.claim_idle = Duration::from_millis(300);
        o.max_deliveries = max_deliveries;
        garden_tests::shared_bus(o).expect("connects")
    };
    // Consumer a takes five entries and dies before acknowledging them.
    let mut a = claim("a", 5);
    a.subscribe(&sub("w", "workers", "job", Delivery::Shared));
    a.pump();
    for n in 0..5 {
        a.publish(msg("job", "k", n)).expect("publishes");
    }
    assert_eq!(drain(&mut a, "w").len(), 5);
    drop(a);
    // Consumer b in the same group gets nothing new, then, once the entries
    // have been pending longer than claim_idle, takes them over in order.
    let mut b = claim("b", 5);
    b.subscribe(&sub("w", "workers", "job", Delivery::Shared));
    assert!(drain(&mut b, "w").is_empty());
    std::thread::sleep(Duration::from_millis(400));
    let reclaimed = drain(&mut b, "w");
    assert_eq!(
        reclaimed.iter().map(|m| m.time).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    b.ack("w", 5);
    b.pump();
    let mut con = raw(&redis);
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg("claim:t:job")
        .arg("k:w")
        .query(&mut con)
        .expect("XPENDING");
    assert_eq!(pending.first(), Some(&redis::Value::Int(0)), "{pending:?}");

    // With max_deliveries 1, an entry already delivered once is poison.
    let mut c = claim("c", 1);
    c.subscribe(&sub("p", "poison", "job", Delivery::Shared));
    c.pump();
    c.publish(msg("job", "k", 9)).expect("publishes");
    assert_eq!(drain(&mut c, "p").len(), 1);
    drop(c);
    let mut d = claim("d", 1);
    d.subscribe(&sub("p", "poison", "job", Delivery::Shared));
    d.pump();
    std::thread::sleep(Duration::from_millis(400));
    assert!(drain(&mut d, "p").is_empty(), "not delivered a second time");
    d.pump();
    let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("claim:dead")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]
            .1
            .iter()
            .any(|(k, v)| k == "reason" && v.contains("delivered 2 times")),
        "{dead:?}"
    );
}

#[test]
fn a_redis_restart_is_survived_and_publishes_made_meanwhile_arrive() {
    let mut redis = Redis::start();
    let mut bus = garden_tests::shared_bus(options(&redis, "restart", "d")).expect("connects");
    bus.subscribe(&sub("x", "x", "t", Delivery::Shared));
    bus.pump();
    bus.publish(msg("t", "k", 1)).expect("publishes");
    assert_eq!(drain(&mut bus, "x").len(), 1);
    bus.ack("x", 1);
    redis.kill();
    bus.publish(msg("t", "k", 2))
        .expect("buffered while Redis is down");
    bus.publish(msg("t", "k", 3))
        .expect("buffered while Redis is down");
    assert!(bus.pump(), "a failed exchange is not idleness");
    assert!(bus.last_error().is_some(), "the failure is reported");
    assert!(bus.unsent() >= 2, "nothing buffered is dropped");
    redis.restart();
    let got = drain(&mut bus, "x");
    assert_eq!(
        got.iter().map(|m| m.time).collect::<Vec<_>>(),
        [2, 3],
        "what was published during the outage arrives, once, in order"
    );
    assert!(bus.last_error().is_none());
}

#[test]
fn redis_auth_with_a_user_and_password_and_a_clear_error_without() {
    let redis = Redis::start_with_user("garden", "s3cret-pw");
    let mut bus =
        garden_tests::shared_bus(options(&redis, "auth", "d")).expect("the right password");
    bus.subscribe(&sub("x", "x", "t", Delivery::Shared));
    bus.pump();
    bus.publish(msg("t", "k", 1)).expect("publishes");
    assert_eq!(drain(&mut bus, "x").len(), 1);
    let wrong = RedisOptions::new(&format!(
        "redis://garden:wrong-pw@127.0.0.1:{}",
        redis.port()
    ));
    let err = RedisBus::connect(wrong).err().expect("refused").to_string();
    assert!(err.contains("user and password"), "{err}");
    assert!(
        !err.contains("wrong-pw"),
        "the password is not repeated: {err}"
    );
}

/// Write a plain bar to `stream` as any Redis client can.
fn xadd_bar(con: &mut redis::Connection, stream: &str, close: &str) {
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(&[
            ("symbol", "EURUSD"),
            ("time", "1700000000000"),
            ("open", "1.0850"),
            ("high", "1.0862"),
            ("low", "1.0841"),
            ("close", close),
            ("volume", "1520"),
        ])
        .query(con)
        .expect("XADD");
}

#[test]
fn bars_written_to_the_feed_arrive_once_and_bad_ones_are_dead_lettered() {
    let redis = Redis::start();
    let mut con = raw(&redis);
    // Written before any daemon reads the feed: the feed is a queue, read
    // from its start.
    xadd_bar(&mut con, "feed:feed", "1.0857");
    let mut o = options(&redis, "feed", "d");
    o.feed_topic = Some("bar".into());
    let mut bus = garden_tests::shared_bus(o.clone()).expect("connects");
    o.consumer = "e".into();
    let mut other = garden_tests::shared_bus(o).expect("connects");
    bus.subscribe(&sub("alpha", "alpha", "bar", Delivery::Broadcast));
    bus.pump();
    let _: String = redis::cmd("XADD")
        .arg("feed:feed")
        .arg("*")
        .arg(&[("symbol", "EURUSD"), ("time", "soon")])
        .query(&mut con)
        .expect("XADD");
    xadd_bar(&mut con, "feed:feed", "1.0860");
    // Two daemons read the feed: each bar is taken by one of them.
    for _ in 0..3 {
        other.pump();
    }
    let got = drain(&mut bus, "alpha");
    let closes: Vec<f64> = got
        .iter()
        .map(|m| match &m.body {
            Body::Bar(b) => {
                assert_eq!((b.symbol.as_str(), b.volume), ("EURUSD", 1520.0));
                assert_eq!((m.key.as_str(), m.source.as_str()), ("EURUSD", "$feed"));
                b.close
            }
            other => panic!("a bar, not {other:?}"),
        })
        .collect();
    assert_eq!(closes, [1.0857, 1.0860]);
    let dead = bus.stats().dead_letters + other.stats().dead_letters;
    assert_eq!(dead, 1, "the bar with a bad time is a dead letter");
}

/// The producer of docs/redis.md's ACL: it can write the feed and nothing
/// else, and its bars arrive.
#[test]
fn a_producer_limited_to_the_feed_by_an_acl_feeds_bars_and_nothing_else() {
    let redis = Redis::start();
    let mut admin = raw(&redis);
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "feeder",
            "on",
            ">feeder-password",
            "resetkeys",
            "~acl:feed",
            "resetchannels",
            "-@all",
            "+xadd",
        ])
        .query(&mut admin)
        .expect("ACL SETUSER");
    let mut o = options(&redis, "acl", "d");
    o.feed_topic = Some("bar".into());
    let mut bus = garden_tests::shared_bus(o).expect("connects");
    bus.subscribe(&sub("alpha", "alpha", "bar", Delivery::Broadcast));
    bus.pump();
    let mut feeder = redis::Client::open(format!(
        "redis://feeder:feeder-password@127.0.0.1:{}",
        redis.port()
    ))
    .and_then(|c| c.get_connection())
    .expect("the feeder connects");
    xadd_bar(&mut feeder, "acl:feed", "1.0857");
    for stream in ["acl:t:bar", "acl:t:plan", "acl:decisions"] {
        let refused: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("m")
            .arg("x")
            .query(&mut feeder);
        let err = refused.expect_err("only the feed is writable");
        assert!(err.to_string().to_lowercase().contains("noperm"), "{err}");
    }
    let got = drain(&mut bus, "alpha");
    assert_eq!(got.len(), 1, "the bar arrives through the feed");
}

/// The attack: any Redis client writes a message into a topic's stream,
/// claiming a source, or copies a real entry onto another topic. Before
/// entries were authenticated every one of these was delivered.
#[test]
fn entries_no_trusted_bus_wrote_are_refused_and_dead_lettered() {
    let redis = Redis::start();
    let mut bus = garden_tests::shared_bus(options(&redis, "forge", "d")).expect("connects");
    bus.subscribe(&sub("x", "x", "plan", Delivery::Broadcast));
    bus.subscribe(&sub("y", "y", "fill", Delivery::Broadcast));
    bus.pump();
    let mut con = raw(&redis);
    // A real entry, to copy.
    bus.publish(msg("plan", "k", 1)).expect("publishes");
    let real = drain(&mut bus, "x");
    assert_eq!(real.len(), 1, "a trusted bus's entry is delivered");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("forge:t:plan")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .expect("XRANGE");
    let fields = entries[0].1.clone();
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .expect("field")
    };
    let (m, a) = (get("m"), get("a"));
    // Another source, and a new counter so it is not taken for a
    // redelivery of the real one.
    let mut value: serde_json::Value = serde_json::from_str(&m).expect("JSON");
    value["source"] = "alpha-ema.0".into();
    value["n"] = 99.into();
    let forged_m = value.to_string();
    let add = |con: &mut redis::Connection, stream: &str, pairs: &[(&str, &str)]| {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(pairs)
            .query(con)
            .expect("XADD");
    };
    // No tag at all; a forged source under the real tag; the real entry
    // moved to another topic; a tag under another key's name.
    add(&mut con, "forge:t:plan", &[("m", &forged_m)]);
    add(&mut con, "forge:t:plan", &[("m", &forged_m), ("a", &a)]);
    add(&mut con, "forge:t:fill", &[("m", &m), ("a", &a)]);
    let mallory = garden_host::bus::redis::EntryAuth::ephemeral();
    let by_mallory = mallory.seal("forge:t:plan", &forged_m);
    add(
        &mut con,
        "forge:t:plan",
        &[("m", &forged_m), ("a", &by_mallory)],
    );
    assert!(
        drain(&mut bus, "x").is_empty(),
        "no forged plan is delivered"
    );
    assert!(
        drain(&mut bus, "y").is_empty(),
        "no moved entry is delivered"
    );
    assert_eq!(bus.stats().refused, 4);
    let reasons = dead_reasons(&mut con, "forge:dead");
    // Two streams: entries of one millisecond may come in either order.
    let count = |what: &str| reasons.iter().filter(|r| r.contains(what)).count();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert_eq!(count("not written by a garden host"), 1, "{reasons:?}");
    assert_eq!(count("does not match"), 2, "{reasons:?}");
    assert_eq!(count("not a trusted daemon key"), 1, "{reasons:?}");
    // A plain bar on the bar topic itself is refused too: outside bars go
    // through the feed.
    let mut bars = garden_tests::shared_bus(options(&redis, "forge", "b")).expect("connects");
    bars.subscribe(&sub("z", "z", "bar", Delivery::Broadcast));
    bars.pump();
    xadd_bar(&mut con, "forge:t:bar", "1.0857");
    assert!(drain(&mut bars, "z").is_empty());
    assert_eq!(bars.stats().refused, 1);
}

#[test]
fn a_bus_with_nothing_to_send_or_read_answers_at_once() {
    let redis = Redis::start();
    let mut bus = garden_tests::shared_bus(options(&redis, "idle", "d")).expect("connects");
    let started = std::time::Instant::now();
    assert!(!bus.pump(), "nothing arrived");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "an empty exchange does not wait for a reply that never comes"
    );
}

#[test]
fn publishes_made_while_redis_is_down_are_parked_in_the_store_and_survive_a_crash() {
    use garden_host::parking::StoreParking;
    let mut redis = Redis::start();
    let pg = garden_tests::servers::Postgres::start();
    let parking = || Box::new(StoreParking::new(&pg.url(), "d"));
    let mut bus = garden_tests::shared_bus(options(&redis, "ob", "d")).expect("connects");
    bus.set_parking(parking());
    bus.subscribe(&sub("x", "x", "t", Delivery::Shared));
    bus.pump();
    redis.kill();
    for n in 1..=3 {
        bus.publish(msg("t", "k", n)).expect("publishes");
    }
    bus.pump();
    assert_eq!(bus.parked(), 3, "parked in the store");
    assert_eq!(bus.unsent(), 0, "nothing left only in memory");
    // The daemon dies; its memory is gone, the parked publishes are not.
    drop(bus);
    redis.restart();
    let mut again = garden_tests::shared_bus(options(&redis, "ob", "d")).expect("connects");
    again.set_parking(parking());
    again.subscribe(&sub("x", "x", "t", Delivery::Shared));
    again.publish(msg("t", "k", 4)).expect("publishes");
    let got = drain(&mut again, "x");
    assert_eq!(
        got.iter().map(|m| m.time).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "forwarded in order, before what came after"
    );
    // And forwarded once: the table is empty now.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let left = rt.block_on(async {
        let store = garden_registry::Store::connect(&pg.url())
            .await
            .expect("store");
        store.parked("d", 100).await.expect("peek")
    });
    assert!(left.is_empty(), "{left:?}");
}

/// Entries pending in `group` of `stream`.
fn pending(con: &mut redis::Connection, stream: &str, group: &str) -> redis::Value {
    let summary: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(con)
        .expect("XPENDING");
    summary.into_iter().next().unwrap_or(redis::Value::Nil)
}

#[test]
fn held_acknowledgements_wait_for_the_checkpoint_and_only_later_work_is_handled_again() {
    let redis = Redis::start();
    let bus = |consumer: &str| {
        let mut o = options(&redis, "held", consumer);
        o.claim_idle = Duration::from_millis(300);
        garden_tests::shared_bus(o).expect("connects")
    };
    let mut con = raw(&redis);
    let mut a = bus("a");
    a.hold_acks();
    a.subscribe(&sub("w", "workers", "job", Delivery::Shared));
    a.pump();
    for n in 0..3 {
        a.publish(msg("job", "k", n)).expect("publishes");
    }
    assert_eq!(drain(&mut a, "w").len(), 3);
    a.ack("w", 3);
    a.pump();
    // Handled, but not acknowledged until the checkpoint.
    assert_eq!(pending(&mut con, "held:t:job", "k:w"), redis::Value::Int(3));
    a.release_acks();
    for n in 3..5 {
        a.publish(msg("job", "k", n)).expect("publishes");
    }
    assert_eq!(drain(&mut a, "w").len(), 2);
    a.ack("w", 2);
    a.pump();
    assert_eq!(pending(&mut con, "held:t:job", "k:w"), redis::Value::Int(2));
    // a dies after handling 3 and 4 but before its next checkpoint: whoever
    // takes over handles exactly those again.
    drop(a);
    let mut b = bus("b");
    b.subscribe(&sub("w", "workers", "job", Delivery::Shared));
    assert!(drain(&mut b, "w").is_empty());
    std::thread::sleep(Duration::from_millis(400));
    let again = drain(&mut b, "w");
    assert_eq!(again.iter().map(|m| m.time).collect::<Vec<_>>(), [3, 4]);
}

#[test]
fn shared_delivery_keeps_per_key_order_across_daemons() {
    let redis = Redis::start();
    // One subscribing group of three members on two daemons, a and b.
    let roster: Vec<String> = ["w.0", "w.1", "w.2"].map(String::from).to_vec();
    let mut a = garden_tests::shared_bus(options(&redis, "spread", "a")).expect("connects");
    let mut b = garden_tests::shared_bus(options(&redis, "spread", "b")).expect("connects");
    a.set_roster("workers", roster.clone());
    b.set_roster("workers", roster.clone());
    a.subscribe(&sub("w.0", "workers", "job", Delivery::Shared));
    a.subscribe(&sub("w.2", "workers", "job", Delivery::Shared));
    b.subscribe(&sub("w.1", "workers", "job", Delivery::Shared));
    a.pump();
    b.pump();
    let mut producer = garden_tests::shared_bus(options(&redis, "spread", "p")).expect("connects");
    let total = 600;
    for n in 0..total {
        producer
            .publish(msg("job", &format!("key{}", n % 23), n))
            .expect("publishes");
        if n % 50 == 49 {
            producer.pump();
        }
    }
    producer.pump();
    // (member, key, time) as each member handles them.
    let mut got: Vec<(String, String, i64)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < total as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} arrived",
            got.len()
        );
        for (bus, members) in [(&mut a, &["w.0", "w.2"][..]), (&mut b, &["w.1"][..])] {
            bus.pump();
            for m in members {
                let mut n = 0;
                while let Some(e) = bus.poll(m) {
                    got.push((m.to_string(), e.key.clone(), e.time));
                    n += 1;
                }
                bus.ack(m, n);
            }
        }
    }
    assert_eq!(got.len(), total as usize, "each entry to one member");
    for k in 0..23 {
        let key = format!("key{k}");
        let mine: Vec<&(String, String, i64)> = got.iter().filter(|g| g.1 == key).collect();
        let want = &roster[(fnv1a(key.as_bytes()) % 3) as usize];
        assert!(
            mine.iter().all(|g| &g.0 == want),
            "{key} always to {want}: {mine:?}"
        );
        let times: Vec<i64> = mine.iter().map(|g| g.2).collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "{key} in order: {times:?}"
        );
    }
    for m in &roster {
        assert!(got.iter().any(|g| &g.0 == m), "{m} had a share");
    }
}

#[test]
fn a_topic_never_lands_on_a_control_key() {
    // Once, a module publishing on `leader` turned the lease key into a
    // stream and no daemon could lead again. Manifests now refuse such
    // names, and topics live under `{prefix}:t:` whatever they are called.
    let redis = Redis::start();
    let mut bus = garden_tests::shared_bus(options(&redis, "ns", "d")).expect("connects");
    bus.subscribe(&sub("x", "x", "leader", Delivery::Broadcast));
    bus.pump();
    for topic in ["leader", "decisions", "daemons"] {
        bus.publish(msg(topic, "k", 1)).expect("publishes");
    }
    assert_eq!(drain(&mut bus, "x").len(), 1);
    let mut con = raw(&redis);
    for topic in ["leader", "decisions", "daemons"] {
        let control: String = redis::cmd("TYPE")
            .arg(format!("ns:{topic}"))
            .query(&mut con)
            .expect("TYPE");
        assert_eq!(control, "none", "ns:{topic} untouched");
        let stream: String = redis::cmd("TYPE")
            .arg(format!("ns:t:{topic}"))
            .query(&mut con)
            .expect("TYPE");
        assert_eq!(stream, "stream", "ns:t:{topic} holds the topic");
    }
    // And a manifest naming a host key is refused when it is signed.
    let mut manifest = garden_tests::fixture_manifest("loop");
    manifest.capabilities.publish.push("leader".into());
    let refused = garden_registry::signature::sign(
        &garden_tests::fixture_bytes("loop"),
        &manifest,
        garden_tests::test_key(),
        "2026-01-01T00:00:00Z",
    )
    .expect_err("a reserved topic is not signed");
    assert!(refused.to_string().contains("reserved"), "{refused}");
}

#[test]
fn an_entry_above_the_size_limit_is_dead_lettered_unparsed() {
    let redis = Redis::start();
    let mut o = options(&redis, "huge", "d");
    o.max_entry_bytes = 1 << 10;
    let mut bus = garden_tests::shared_bus(o).expect("connects");
    bus.subscribe(&sub("x", "x", "t", Delivery::Shared));
    bus.pump();
    let mut con = raw(&redis);
    let _: String = redis::cmd("XADD")
        .arg("huge:t:t")
        .arg("*")
        .arg("m")
        .arg("x".repeat(4 << 10))
        .query(&mut con)
        .expect("XADD");
    assert!(drain(&mut bus, "x").is_empty());
    bus.pump();
    let dead: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("huge:dead")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .expect("XRANGE");
    let reasons: Vec<&str> = dead
        .iter()
        .flat_map(|(_, f)| {
            f.iter()
                .filter(|(k, _)| k == "reason")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("over the 1024 byte limit"),
        "{reasons:?}"
    );
}

/// Commands Redis has processed so far (`INFO stats`).
fn commands_processed(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(con).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_commands_processed in INFO stats")
}

#[test]
fn an_idle_bus_blocks_on_redis_instead_of_polling_and_wakes_for_an_entry() {
    let redis = Redis::start();
    let mut bus = garden_tests::shared_bus(options(&redis, "wait", "d")).expect("connects");
    bus.subscribe(&sub("a", "a", "t", Delivery::Broadcast));
    bus.pump();
    let mut con = raw(&redis);
    // A daemon's idle loop for about a second: exchange, then wait. A
    // 2 ms poll would send hundreds of commands; a blocking wait a few.
    let before = commands_processed(&mut con);
    let idle_until = std::time::Instant::now() + Duration::from_millis(1000);
    while std::time::Instant::now() < idle_until {
        bus.pump();
        bus.wait(idle_until.saturating_duration_since(std::time::Instant::now()));
    }
    let idle_commands = commands_processed(&mut con) - before;
    assert!(
        idle_commands < 20,
        "{idle_commands} commands in an idle second"
    );
    // An entry written by another client ends the wait long before its
    // timeout, and the next pump delivers it.
    let mut writer = bus_for(&redis, "wait", "other");
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        writer.publish(msg("t", "k", 1)).expect("publishes");
        writer.pump();
    });
    let started = std::time::Instant::now();
    bus.wait(Duration::from_secs(8));
    let woke_after = started.elapsed();
    sender.join().expect("sender");
    assert!(
        woke_after < Duration::from_secs(4),
        "woke after {woke_after:?}, not at the timeout"
    );
    let got = drain(&mut bus, "a");
    assert_eq!(got.len(), 1, "the entry that woke it is delivered");
}

fn bus_for(redis: &Redis, prefix: &str, consumer: &str) -> RedisBus {
    garden_tests::shared_bus(options(redis, prefix, consumer)).expect("connects")
}

#[test]
fn an_idle_bus_is_not_woken_by_a_stream_s_history() {
    let redis = Redis::start();
    let mut con = raw(&redis);
    // Entries written before this daemon subscribed: its group starts after
    // them, so they are not its work and must not wake it either.
    let stream = garden_host::bus::redis::topic_stream("history", "t");
    for n in 0..500 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("old")
            .arg(n)
            .query(&mut con)
            .expect("XADD");
    }
    let mut bus = garden_tests::shared_bus(options(&redis, "history", "d")).expect("connects");
    bus.subscribe(&sub("a", "a", "t", Delivery::Broadcast));
    bus.pump();
    let before = commands_processed(&mut con);
    let idle_until = std::time::Instant::now() + Duration::from_millis(1000);
    while std::time::Instant::now() < idle_until {
        bus.pump();
        bus.wait(idle_until.saturating_duration_since(std::time::Instant::now()));
    }
    let idle_commands = commands_processed(&mut con) - before;
    assert!(
        idle_commands < 20,
        "{idle_commands} commands in an idle second over a stream with history"
    );
    assert!(
        drain(&mut bus, "a").is_empty(),
        "old entries are not delivered"
    );
}

/// A Redis password reaches `garden run` from a 0600 file or from
/// `GARDEN_BUS_URL`, never from the command line, and is never printed.
#[test]
fn a_bus_password_comes_from_a_file_or_the_environment_and_is_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    let secret = "pw-7f3a-secret";
    let redis = Redis::start_with_user("garden", secret);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bus.pw");
    std::fs::write(&file, format!("{secret}\n")).expect("writes");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let url = format!("redis://garden@127.0.0.1:{}", redis.port());
    let run = |args: &[&str], env: Option<String>| {
        let mut c = garden_tests::garden();
        c.args(["run", "--seed", "3", "--variants", "1", "--data"])
            .arg(garden_tests::languages::root().join("data/EURUSD_H1.csv"))
            .args(args)
            .env_remove("GARDEN_BUS_URL");
        if let Some(env) = env {
            c.env("GARDEN_BUS_URL", env);
        }
        let o = c.output().expect("garden runs");
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(!text.contains("pw-7f3a"), "the password was shown: {text}");
        (o.status.success(), text)
    };
    let file_arg = file.to_str().expect("utf-8");
    let (ok, text) = run(&["--bus", &url, "--bus-password-file", file_arg], None);
    assert!(ok && text.contains("bus: Redis at"), "{text}");
    let (ok, text) = run(&["--bus-password-file", file_arg], Some(url.clone()));
    assert!(ok && text.contains("bus: Redis at"), "{text}");
    // Without the password Redis refuses, and the run stops at once saying so.
    let (ok, text) = run(&["--bus", &url], None);
    assert!(!ok && text.contains("NOAUTH"), "{text}");
    // A file others may read is refused before anything connects.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (ok, text) = run(&["--bus", &url, "--bus-password-file", file_arg], None);
    assert!(!ok && text.contains("chmod 600"), "{text}");
}
