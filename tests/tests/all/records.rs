//! Records of a run in a real PostgreSQL started for the test: what
//! `garden run --records` stores matches the run, and writes survive the
//! database restarting in the middle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use garden_host::Envelope;
use garden_host::records::{RECORDED_TOPICS, Recorder};
use garden_host::types::Body;
use garden_registry::Store;
use garden_tests::servers::Postgres;
use garden_tests::{bundled_rows, replay_embedded};

fn counts(url: &str, run: &str) -> BTreeMap<String, i64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::connect(url).await.expect("store");
        store.record_counts(run).await.expect("counts")
    })
}

#[test]
fn the_records_of_a_run_in_postgres_match_the_run() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = garden_tests::garden()
        .args([
            "run",
            "--seed",
            "9",
            "--variants",
            "2",
            "--records",
            "--json",
        ])
        .args(["--store", &pg.url()])
        .arg("--cache-dir")
        .arg(dir.path())
        .output()
        .expect("garden run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run = stderr
        .lines()
        .find_map(|l| l.strip_prefix("recording run "))
        .and_then(|l| l.split(" into ").next())
        .expect("the run id is printed")
        .to_string();
    assert!(stderr.contains("0 retries"), "{stderr}");
    let stored = counts(&pg.url(), &run);
    // The same run in process, counting what it publishes on each topic.
    let (summary, tapped) = replay_embedded(9, 2, 0, &bundled_rows(), &RECORDED_TOPICS);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for m in &tapped {
        *expected.entry(m.topic.clone()).or_default() += 1;
    }
    assert_eq!(stored, expected);
    assert_eq!(stored.get("bar"), Some(&(summary.bars as i64)));
    assert_eq!(
        stored.get("evidence"),
        stored.get("plan").map(|p| p * 4).as_ref()
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    assert_eq!(printed["bars"], summary.bars);
}

#[test]
fn record_writes_are_retried_across_a_postgres_restart_and_none_is_lost() {
    let pg = Postgres::start();
    let message = |n: i64| {
        Arc::new(Envelope {
            topic: "fill".into(),
            key: "k".into(),
            seq: 0,
            time: n,
            source: "trader".into(),
            body: Body::Retired(format!("m{n}")),
            trace: garden_host::message::Trace::default(),
        })
    };
    let mut recorder = Recorder::start(&pg.url(), "restart");
    let first: Vec<_> = (0..3_000).map(message).collect();
    recorder.record(&first);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counts(&pg.url(), "restart").get("fill") != Some(&3_000) {
        assert!(std::time::Instant::now() < deadline, "first batch written");
        std::thread::sleep(Duration::from_millis(50));
    }
    pg.stop();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert!(
        rt.block_on(Store::connect(&pg.url())).is_err(),
        "the database is really down"
    );
    let second: Vec<_> = (3_000..5_000).map(message).collect();
    recorder.record(&second);
    // Let the recorder fail against the stopped server a few times.
    std::thread::sleep(Duration::from_millis(600));
    pg.start_again();
    let report = recorder.finish(Duration::from_secs(30));
    assert_eq!(report.lost, 0, "{report:?}");
    // (The outage shows as retries here or as the pool waiting for a
    // connection; either way, nothing is lost.)
    assert_eq!(report.written, 5_000);
    assert_eq!(counts(&pg.url(), "restart").get("fill"), Some(&5_000));
}
