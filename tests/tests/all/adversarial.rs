//! Hostile and broken guests, built like the real modules, are contained:
//! each failure is reported with its specific cause, nothing is lost (every
//! message it could not handle is a dead letter), and a healthy module
//! beside it keeps serving every message.

use std::time::Duration;

use garden_host::bus::{Bus, MemoryBus};
use garden_host::feed;
use garden_host::runtime::{InstanceReport, InstanceState};
use garden_host::{InstanceSpec, Limits, Runtime, genes};
use garden_tests::{
    bundled_rows, engine, fixture_bytes, fixture_manifest, module, signed, test_limits, trust,
};

const BARS: usize = 12;

struct Outcome {
    bad: InstanceReport,
    good: InstanceReport,
    dead_letters_for_bad: usize,
}

fn contain(name: &str, limits: Limits) -> Outcome {
    contain_with(name, limits, fixture_manifest(name))
}

/// Like [`contain`], with the fixture signed under `manifest`.
fn contain_with(name: &str, limits: Limits, manifest: garden_registry::Manifest) -> Outcome {
    let engine = engine(limits);
    let bad = engine
        .load(&signed(&fixture_bytes(name), &manifest), &trust())
        .expect("fixture loads");
    let good = module(&engine, "alpha-ema");
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(1024), 1);
    rt.spawn(InstanceSpec {
        id: "bad".into(),
        module: bad,
        params: vec![],
        settings: vec![],
        snapshot: None,
    })
    .expect("spawn bad");
    let params = genes::defaults(&good.info().genes);
    rt.spawn(InstanceSpec {
        id: "good".into(),
        module: good,
        params,
        settings: vec![],
        snapshot: None,
    })
    .expect("spawn good");
    for row in &bundled_rows()[..BARS] {
        rt.publish(feed::bar_message("bar", "EURUSD", row));
        rt.run_until_idle();
    }
    let mut reports = rt.instances().into_iter();
    let bad = reports.next().expect("bad report");
    let good = reports.next().expect("good report");
    let dead_letters_for_bad = rt
        .bus()
        .dead_letters()
        .iter()
        .filter(|d| d.instance == "bad")
        .count();
    Outcome {
        bad,
        good,
        dead_letters_for_bad,
    }
}

fn check(o: &Outcome, kind: &str, message_part: &str) {
    assert!(
        o.bad.failures.get(kind).copied().unwrap_or(0) >= 1,
        "expected a `{kind}` failure, got {:?} (last error: {:?})",
        o.bad.failures,
        o.bad.last_error
    );
    let last = o.bad.last_error.as_deref().unwrap_or("");
    assert!(
        last.contains(message_part),
        "last error `{last}` should mention `{message_part}`"
    );
    assert!(
        matches!(o.bad.state, InstanceState::Quarantined { .. }),
        "quarantined after repeated failures: {:?}",
        o.bad.state
    );
    assert_eq!(
        o.good.calls, BARS as u64,
        "the healthy module handled every bar"
    );
    assert!(o.good.failures.is_empty());
    assert!(o.bad.received >= 1);
    assert_eq!(
        o.bad.calls + o.dead_letters_for_bad as u64,
        o.bad.received,
        "every message the bad module received was handled or dead-lettered with its reason"
    );
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let o = contain("loop", test_limits());
    check(&o, "fuel", "ran out of fuel");
    assert!(o.bad.restarts >= 1, "re-instantiated between failures");
}

#[test]
fn infinite_loop_with_unlimited_fuel_hits_the_wall_clock_deadline() {
    let limits = Limits {
        fuel_per_call: u64::MAX / 4,
        deadline: Duration::from_millis(60),
        ..test_limits()
    };
    let o = contain("loop", limits);
    check(&o, "deadline", "deadline of 60 ms");
}

#[test]
fn memory_bomb_hits_the_memory_cap() {
    // The manifest asks for less memory than the host allows: its own
    // request is the cap.
    let mut manifest = fixture_manifest("memory-bomb");
    manifest.limits.memory_bytes = Some(16 << 20);
    let o = contain_with("memory-bomb", test_limits(), manifest);
    check(&o, "memory", "the cap is 16777216 bytes");
}

#[test]
fn deep_recursion_overflows_the_stack() {
    let o = contain("recursion", test_limits());
    check(&o, "stack", "stack overflow");
}

#[test]
fn publish_flood_is_stopped_at_the_cap() {
    let limits = Limits {
        max_publishes_per_call: 100,
        ..test_limits()
    };
    let o = contain("publish-flood", limits);
    check(&o, "publish-flood", "more than 100 publishes");
}

#[test]
fn oversized_message_is_refused_and_reported() {
    let o = contain("oversized", test_limits());
    check(&o, "refused", "TooLarge");
    assert!(o.bad.refused_publishes >= 1);
    assert_eq!(
        o.bad.restarts, 0,
        "a refused publish does not kill the instance"
    );
}

#[test]
fn panic_in_init_is_reported_with_its_message() {
    let o = contain("panic-init", test_limits());
    check(&o, "panic", "fixture refuses to start");
}

#[test]
fn panic_in_on_message_is_reported_with_its_message() {
    let o = contain("panic-message", test_limits());
    check(&o, "panic", "fixture fails on every bar");
    assert!(o.bad.restarts >= 1);
}

#[test]
fn backoff_and_quarantine_follow_the_limits() {
    // With a high failure threshold the instance keeps being restarted.
    let limits = Limits {
        max_failures: 1000,
        ..test_limits()
    };
    let o = contain("panic-message", limits);
    assert_eq!(o.bad.failures.get("panic").copied(), Some(BARS as u64));
    assert_eq!(
        o.bad.restarts,
        BARS as u64 - 1,
        "restarted before each later bar"
    );
    assert!(!matches!(o.bad.state, InstanceState::Quarantined { .. }));
    assert_eq!(o.good.calls, BARS as u64);
}

#[test]
fn publishing_outside_the_manifest_is_refused_and_counted() {
    let o = contain("undeclared-topic", test_limits());
    check(&o, "refused", "TopicNotDeclared(\"secret\")");
    assert!(o.bad.refused_publishes >= 1);
}

#[test]
fn sleeping_inside_wasi_is_refused_not_waited_for() {
    // The fixture asks to sleep 5 s on every bar inside a WASI call, where
    // neither fuel nor the deadline fires. The host traps the wait at once.
    let started = std::time::Instant::now();
    let o = contain("sleep", test_limits());
    check(&o, "wait", "subscribe-duration, which would wait");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no call slept: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_manifest_s_lower_fuel_applies_to_every_call_not_only_the_first() {
    // The loop fixture burns fuel without end; its manifest asks for a
    // million units per call, well under the host's 50 million.
    let mut manifest = fixture_manifest("loop");
    manifest.limits.fuel_per_call = Some(1_000_000);
    let o = contain_with("loop", test_limits(), manifest);
    check(&o, "fuel", "ran out of fuel (1000000 units per call)");
}

#[test]
fn in_a_daemon_a_failing_instance_waits_out_its_backoff_aside_and_the_others_go_on() {
    use garden_host::runtime::{Restarts, RuntimeOptions};
    // A long backoff: waited in turn, as a replay does, every bar would
    // stall for it; waited aside, the healthy instance goes on at once.
    let backoff = Duration::from_secs(3);
    let limits = Limits {
        max_failures: 1000,
        backoff_initial: backoff,
        backoff_max: backoff,
        ..test_limits()
    };
    let engine = engine(limits);
    let bad = engine
        .load(
            &signed(
                &fixture_bytes("panic-message"),
                &fixture_manifest("panic-message"),
            ),
            &trust(),
        )
        .expect("fixture loads");
    let good = module(&engine, "alpha-ema");
    let mut rt =
        Runtime::new(engine.clone(), MemoryBus::new(1024), 1).with_options(RuntimeOptions {
            restarts: Restarts::Aside,
            ..RuntimeOptions::default()
        });
    for (id, module, params) in [
        ("bad", bad, vec![]),
        ("good", good.clone(), genes::defaults(&good.info().genes)),
    ] {
        rt.spawn(InstanceSpec {
            id: id.into(),
            module,
            params,
            settings: vec![],
            snapshot: None,
        })
        .expect("spawn");
    }
    for row in &bundled_rows()[..BARS] {
        rt.publish(feed::bar_message("bar", "EURUSD", row));
        rt.run_until_idle();
    }
    let report = |rt: &Runtime, id: &str| {
        rt.instances()
            .into_iter()
            .find(|r| r.id == id)
            .expect("report")
    };
    assert_eq!(report(&rt, "good").calls, BARS as u64, "never stalled");
    let bad = report(&rt, "bad");
    assert_eq!(
        bad.failures.get("panic").copied(),
        Some(1),
        "failed once, then rested: {:?}",
        bad.failures
    );
    assert_eq!(
        rt.bus().depth("bad"),
        BARS - 1,
        "its later bars wait in its inbox, none lost"
    );
    // Once the backoff has passed it restarts and takes the next bar.
    let due = rt.next_restart().expect("a restart is due");
    std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    rt.run_until_idle();
    let bad = report(&rt, "bad");
    // It took its waiting bars as one batch, which trapped on the first;
    // restarted again, it took them one at a time, and the first failed
    // alone: one more failure, counted once.
    assert!(bad.restarts >= 1, "restarted after its backoff");
    assert_eq!(bad.failures.get("panic").copied(), Some(2));
}

#[test]
fn a_poison_message_in_a_batch_is_dead_lettered_alone_and_its_neighbours_are_handled_once() {
    let engine = engine(test_limits());
    let poison = engine
        .load(
            &signed(&fixture_bytes("poison"), &fixture_manifest("poison")),
            &trust(),
        )
        .expect("fixture loads");
    let mut rt = Runtime::new(engine.clone(), MemoryBus::new(1024), 1);
    rt.spawn(InstanceSpec {
        id: "p".into(),
        module: poison,
        params: vec![],
        settings: vec![],
        snapshot: None,
    })
    .expect("spawn");
    rt.host_subscribe("noise");
    // Ten bars wait in the inbox before the instance runs, so they reach it
    // as one batch; the sixth is poison.
    let rows = &bundled_rows()[..10];
    for (i, row) in rows.iter().enumerate() {
        let symbol = if i == 5 { "POISON" } else { "EURUSD" };
        rt.publish(feed::bar_message("bar", symbol, row));
    }
    rt.run_until_idle();
    let answered: Vec<String> = rt
        .take_host_messages()
        .iter()
        .map(|m| m.key.clone())
        .collect();
    let expected: Vec<String> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, r)| r.time.to_string())
        .collect();
    assert_eq!(answered, expected, "each neighbour answered once, in order");
    let dead: Vec<_> = rt
        .bus()
        .dead_letters()
        .into_iter()
        .filter(|d| d.instance == "p")
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].envelope.time, rows[5].time, "the poison bar alone");
    let report = rt.instances().into_iter().next().expect("report");
    assert_eq!(report.failures.get("panic").copied(), Some(1), "{report:?}");
    assert_eq!(report.calls, 9);
    assert_eq!(report.received, 10, "every message received once");
    assert_eq!(
        report.restarts, 2,
        "the batch trapped (one restart), then the poison bar alone (another)"
    );
}
