//! `garden daemon --metrics`: a Prometheus scrape of a running daemon sees
//! its counters grow as bars flow, and its health endpoints tell an
//! orchestrator whether it is alive and of use.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use garden_tests::servers::Redis;

use garden_tests::Killed as Daemon;

/// (status code, headers, body) of `GET path` at `addr`.
fn get(addr: &str, path: &str) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, head.to_string(), body.to_string()))
}

/// The value of the sample `name` (with its labels) in a scrape.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn wait_for(what: &str, log: &dyn Fn() -> String, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_scrape_sees_counters_grow_and_readiness_follows_redis() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("d.log");
    garden_tests::trust_daemon("watched");
    let _daemon = Daemon(
        garden_tests::garden()
            .args(["daemon", "--bus", &redis.url(), "--prefix", "watched"])
            .args(["--name", "watched", "--heartbeat-ttl-ms", "900"])
            .args(["--metrics", "127.0.0.1:0"])
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("garden daemon starts"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut addr = String::new();
    wait_for("the metrics address", &log, || {
        let text = log();
        match text.split("metrics on http://").nth(1) {
            Some(rest) => {
                addr = rest.split('/').next().unwrap_or_default().to_string();
                true
            }
            None => false,
        }
    });
    let (code, _, body) = get(&addr, "/healthz").expect("healthz answers");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    wait_for("ready", &log, || {
        get(&addr, "/readyz").is_some_and(|(c, _, _)| c == 200)
    });
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection");
    let rows = garden_tests::bundled_rows();
    let received = |text: &str| sample(text, "garden_messages_received_total{module=\"tape\"}");
    garden_tests::feed_bars(&mut con, "watched", &rows[..100]);
    let mut first = String::new();
    wait_for("the tape's messages counted", &log, || {
        first = get(&addr, "/metrics")
            .map(|(_, _, b)| b)
            .unwrap_or_default();
        received(&first) >= 100.0
    });
    let (_, head, _) = get(&addr, "/metrics").expect("metrics answer");
    assert!(
        head.to_lowercase().contains("application/openmetrics-text"),
        "{head}"
    );
    garden_tests::feed_bars(&mut con, "watched", &rows[100..300]);
    let mut second = String::new();
    wait_for("the count to grow", &log, || {
        second = get(&addr, "/metrics")
            .map(|(_, _, b)| b)
            .unwrap_or_default();
        received(&second) >= 300.0
    });
    assert!(
        sample(&second, "garden_fuel_total{module=\"alpha-ema\"}")
            > sample(&first, "garden_fuel_total{module=\"alpha-ema\"}")
    );
    // The path timed from the daemon's own watch of plans, decisions and
    // fills (the times are Redis's).
    wait_for("plans and fills timed", &log, || {
        get(&addr, "/metrics").is_some_and(|(_, _, b)| {
            sample(&b, "garden_latency_seconds_count{hop=\"plan_to_decision\"}") > 0.0
                && sample(&b, "garden_latency_seconds_count{hop=\"decision_to_fill\"}") > 0.0
        })
    });
    assert!(sample(&second, "garden_handler_seconds_total{module=\"tape\"}") > 0.0);
    assert_eq!(sample(&second, "garden_leader_term"), 1.0, "{second}");
    assert!(
        sample(&second, "garden_instances{state=\"ok\"}") >= 10.0,
        "{second}"
    );
    assert!(
        sample(&second, "garden_bus_published_total") > 0.0,
        "{second}"
    );
    assert!(
        second.contains("# TYPE garden_handler_seconds counter"),
        "{second}"
    );
    // Time and fuel per message, as histograms: every message counted.
    assert!(
        sample(
            &second,
            "garden_message_handler_seconds_count{module=\"tape\"}"
        ) >= 300.0,
        "{second}"
    );
    assert!(
        sample(
            &second,
            "garden_message_fuel_bucket{le=\"+Inf\",module=\"tape\"}"
        ) >= 300.0,
        "{second}"
    );
    assert!(
        second.contains("# UNIT garden_handler_seconds seconds"),
        "{second}"
    );
    // Round trips to Redis, timed; no audit write failed.
    assert!(
        sample(&second, "garden_bus_round_trips_total") > 0.0,
        "{second}"
    );
    let timed = sample(&second, "garden_bus_round_trip_seconds_bucket{le=\"+Inf\"}");
    assert!(
        timed > 0.0 && timed == sample(&second, "garden_bus_round_trips_total"),
        "every round trip is in the histogram: {second}"
    );
    assert!(
        sample(&second, "garden_lease_age_seconds") >= 0.0
            && second.contains("# TYPE garden_lease_age_seconds gauge"),
        "{second}"
    );
    assert!(
        second.contains("garden_audit_write_failures_total 0\n"),
        "{second}"
    );
    // The population as the decision log tells it.
    assert_eq!(
        sample(&second, "garden_births_total{cause=\"initial\"}"),
        8.0,
        "{second}"
    );
    assert!(sample(&second, "garden_population") >= 1.0, "{second}");
    // Redis gone: alive, not ready, and says why.
    redis.kill();
    wait_for("not ready", &log, || {
        get(&addr, "/readyz").is_some_and(|(c, _, b)| c == 503 && b.contains("not ready"))
    });
    assert_eq!(get(&addr, "/healthz").map(|(c, _, _)| c), Some(200));
}

/// The bundled bars forty times over, a year apart: a replay long enough
/// (200,000 bars, many seconds) to be scraped while it runs.
fn long_data(dir: &std::path::Path) -> std::path::PathBuf {
    let bundled =
        std::fs::read_to_string(garden_tests::languages::root().join("data/EURUSD_H1.csv"))
            .expect("the bundled data");
    let mut lines = bundled.lines();
    let mut out = String::from(lines.next().expect("a header"));
    out.push('\n');
    let rows: Vec<&str> = lines.collect();
    for k in 0..40 {
        for row in &rows {
            let year: i32 = row[..4].parse().expect("a year");
            out.push_str(&format!("{}{}\n", year + k, &row[4..]));
        }
    }
    let path = dir.join("long.csv");
    std::fs::write(&path, out).expect("writes");
    path
}

#[test]
fn a_long_run_serves_its_metrics_while_it_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = long_data(dir.path());
    let log_path = dir.path().join("run.log");
    let mut run = Daemon(
        garden_tests::garden()
            .args([
                "run",
                "--variants",
                "50",
                "--metrics",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("garden run starts"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut addr = String::new();
    wait_for("the metrics address", &log, || {
        match log().split("metrics on http://").nth(1) {
            Some(rest) => {
                addr = rest.split('/').next().unwrap_or_default().to_string();
                true
            }
            None => false,
        }
    });
    let received =
        |text: &str| sample(text, "garden_messages_received_total{module=\"alpha-ema\"}");
    let mut first = 0.0;
    wait_for("a first count", &log, || {
        first = get(&addr, "/metrics").map_or(0.0, |(_, _, b)| received(&b));
        first > 0.0
    });
    wait_for("the count to grow while it runs", &log, || {
        get(&addr, "/metrics").is_some_and(|(_, _, b)| received(&b) > first)
    });
    // What fusion reports about each expert, the population and its spread.
    wait_for("the experts' reports and the population", &log, || {
        get(&addr, "/metrics").is_some_and(|(_, _, b)| {
            b.contains("garden_reported{subject=\"expert:expert-anomaly\",metric=\"hit-rate\"}")
                && b.contains(
                    "garden_reported{subject=\"expert:expert-sequence\",metric=\"brier\"}",
                )
                && sample(&b, "garden_population") >= 2.0
                && sample(&b, "garden_diversity") > 0.0
                && sample(&b, "garden_latency_seconds_count{hop=\"plan_to_decision\"}") > 0.0
                && sample(&b, "garden_latency_seconds_count{hop=\"decision_to_fill\"}") > 0.0
        })
    });
    assert_eq!(get(&addr, "/readyz").map(|(c, _, _)| c), Some(200));
    assert!(
        run.0.try_wait().expect("waits").is_none(),
        "the run was still going: {}",
        log()
    );
}

/// The first `bars` bars of the bundled data, as a file in `dir`.
fn short_data(dir: &std::path::Path, bars: usize) -> std::path::PathBuf {
    let bundled =
        std::fs::read_to_string(garden_tests::languages::root().join("data/EURUSD_H1.csv"))
            .expect("the bundled data");
    let short: String = bundled
        .lines()
        .take(bars + 1)
        .map(|l| format!("{l}\n"))
        .collect();
    let data = dir.join("short.csv");
    std::fs::write(&data, short).expect("writes");
    data
}

/// With `GARDEN_LOG`, the spans of loading, instantiating, handling and
/// selection print as they close, with the instance and their time.
#[test]
fn spans_show_what_the_host_did_and_for_how_long() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = short_data(dir.path(), 300);
    let out = garden_tests::garden()
        .env("GARDEN_LOG", "garden_host=debug")
        .args(["run", "--variants", "2", "--data"])
        .arg(&data)
        .output()
        .expect("garden run");
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let closed = |span: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("{span}{{")) && l.contains("close time.busy"))
            .count()
    };
    assert!(closed("load") >= 10, "a load span per module");
    assert!(
        closed("instantiate") >= 10,
        "an instantiate span per instance"
    );
    assert!(closed("handle") >= 300, "handle spans");
    assert!(closed("selection") >= 300, "a selection span per bar");
    assert!(
        log.lines()
            .any(|l| l.contains("handle{instance=alpha-ema.1 messages=")),
        "handle spans name the instance"
    );
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes outside a terminal"
    );
}

/// A collector stand-in that is a real HTTP server: it answers every
/// request `200` and keeps (path, content type, body).
fn collector() -> (String, std::sync::mpsc::Receiver<(String, String, Vec<u8>)>) {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("its address").to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                    let (mut length, mut kind) = (0usize, String::new());
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let (name, value) = header.split_once(':').unwrap_or((header, ""));
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().unwrap_or(0),
                            "content-type" => kind = value.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let _ = tx.send((path, kind, body));
                    let _ = reader
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
    (addr, rx)
}

/// `--otlp URL` sends the spans to an OpenTelemetry collector over
/// OTLP/HTTP: protobuf posts to the path given, naming the service and the
/// spans, all flushed before the command exits.
#[test]
fn spans_are_exported_to_an_otlp_collector() {
    let (addr, received) = collector();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = short_data(dir.path(), 200);
    let out = garden_tests::garden()
        .env("GARDEN_OTLP_LOG", "garden_host=debug")
        .args(["run", "--variants", "2", "--otlp"])
        .arg(format!("http://{addr}/v1/traces"))
        .arg("--data")
        .arg(&data)
        .output()
        .expect("garden run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let posts: Vec<_> = received.try_iter().collect();
    assert!(!posts.is_empty(), "no span reached the collector");
    let mut all = Vec::new();
    for (path, kind, body) in &posts {
        assert_eq!(path, "/v1/traces");
        assert_eq!(kind, "application/x-protobuf");
        all.extend_from_slice(body);
    }
    let has = |what: &str| all.windows(what.len()).any(|w| w == what.as_bytes());
    for name in ["garden", "load", "instantiate", "handle", "selection"] {
        assert!(has(name), "no `{name}` in what was exported");
    }
}
