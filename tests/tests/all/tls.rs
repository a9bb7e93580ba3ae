//! Encryption in transit, against real servers that speak TLS only, with
//! certificates each test makes: the Redis bus over `rediss://` (a CA and a
//! client certificate named in the URL), the store over PostgreSQL with
//! `sslmode=verify-full`, and a whole `garden run` over both. A server
//! whose certificate no trusted CA signed is refused, and so is anything
//! in the clear.

use std::time::Duration;

use garden_host::Envelope;
use garden_host::bus::redis::connect;
use garden_host::bus::{Bus, Delivery, RedisOptions, Subscriber};
use garden_host::types::Body;
use garden_tests::servers::{Certificates, Postgres, Redis};

fn refused(url: &str) -> String {
    match connect(url) {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_bus_speaks_tls_to_redis_and_refuses_a_server_it_cannot_verify() {
    let certs = Certificates::make();
    let redis = Redis::start_tls(&certs);
    let mut o = RedisOptions::new(&redis.url());
    o.prefix = "tls".into();
    o.consumer = "d".into();
    let mut bus = garden_tests::shared_bus(o).expect("connects over TLS");
    bus.subscribe(&Subscriber {
        instance: "x".into(),
        group: "x".into(),
        topic: "t".into(),
        delivery: Delivery::Broadcast,
        addressed: false,
    });
    bus.pump();
    bus.publish(Envelope {
        topic: "t".into(),
        key: "k".into(),
        seq: 0,
        time: 1,
        source: "test".into(),
        body: Body::Retired("over TLS".into()),
        trace: garden_host::message::Trace::default(),
    })
    .expect("publishes");
    for _ in 0..3 {
        bus.pump();
    }
    let got = bus.poll("x").expect("the message came back over TLS");
    assert_eq!(got.body, Body::Retired("over TLS".into()));

    let port = redis.port();
    let ca = certs.path("ca.pem").display().to_string();
    let (cert, key) = (
        certs.path("client.pem").display().to_string(),
        certs.path("client.key").display().to_string(),
    );
    // A server certificate signed by a CA the client was not told to trust.
    let other = refused(&redis.url().replace("/ca.pem", "/other-ca.pem"));
    assert!(other.contains("over TLS"), "{other}");
    // The system's roots do not know the test's CA.
    let system = refused(&format!("rediss://127.0.0.1:{port}/?cert={cert}&key={key}"));
    assert!(system.contains("over TLS"), "{system}");
    // The server wants a client certificate.
    let anonymous = refused(&format!("rediss://127.0.0.1:{port}/?ca={ca}"));
    assert!(anonymous.contains("Redis"), "{anonymous}");
    // In the clear, to a port that speaks TLS only.
    let plain = refused(&format!("redis://127.0.0.1:{port}"));
    assert!(plain.contains("cannot reach Redis"), "{plain}");
    // TLS settings on a plain URL are refused, not ignored; a missing file
    // or half a client certificate says what is wrong.
    let settings = refused(&format!("redis://127.0.0.1:{port}/?ca={ca}"));
    assert!(settings.contains("write rediss://"), "{settings}");
    let missing = refused(&format!(
        "rediss://127.0.0.1:{port}/?ca=/nonexistent/ca.pem"
    ));
    assert!(
        missing.contains("cannot read the TLS ca file /nonexistent/ca.pem"),
        "{missing}"
    );
    let half = refused(&format!("rediss://127.0.0.1:{port}/?ca={ca}&cert={cert}"));
    assert!(half.contains("both ?cert= and ?key="), "{half}");
}

#[test]
fn the_store_speaks_tls_to_postgresql_with_verify_full() {
    let certs = Certificates::make();
    let pg = Postgres::start_tls(&certs);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = pg.url();
    assert!(url.contains("sslmode=verify-full"), "{url}");
    rt.block_on(async {
        let store = garden_store::Store::connect(&url)
            .await
            .expect("connects over TLS, verifying the server");
        store.execute_raw("SELECT 1").await.expect("a query");
        let other = url.replace("/ca.pem", "/other-ca.pem");
        let err = garden_store::Store::connect(&other)
            .await
            .expect_err("a server no trusted CA signed is refused")
            .to_string();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
        let clear = url.replace("sslmode=verify-full", "sslmode=disable");
        let err = garden_store::Store::connect(&clear)
            .await
            .expect_err("the server refuses the clear")
            .to_string();
        assert!(err.contains("no encryption"), "{err}");
    });
}

/// The whole path from the command line: `garden run` with its bus on a
/// TLS-only Redis and its records in a TLS-only PostgreSQL.
#[test]
fn garden_run_records_over_tls_to_redis_and_postgresql() {
    let certs = Certificates::make();
    let redis = Redis::start_tls(&certs);
    let pg = Postgres::start_tls(&certs);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("EURUSD_H1.csv");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/EURUSD_H1.csv"
    ))
    .expect("bundled data");
    let head: Vec<&str> = text.lines().take(301).collect();
    std::fs::write(&data, head.join("\n") + "\n").expect("data");
    let out = garden_tests::garden()
        .arg("run")
        .arg("--data")
        .arg(&data)
        .args(["--seed", "3", "--records", "--json"])
        .args(["--bus", &redis.url()])
        .args(["--store", &pg.url()])
        .output()
        .expect("garden run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["bars"], 300, "{summary}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let records = rt.block_on(async {
        let store = garden_store::Store::connect(&pg.url())
            .await
            .expect("store");
        tokio::time::timeout(
            Duration::from_secs(10),
            store.execute_raw("SELECT 1 FROM records"),
        )
        .await
        .expect("in time")
        .expect("a query")
    });
    assert!(records >= 300, "{records} records written over TLS");
}
