//! Durable records of a run: every message on the recorded topics, written
//! to the store (PostgreSQL or SQLite) in batches by a thread of its own, so
//! the scheduler never waits for the database.
//!
//! A batch that fails (the database restarting, a network cut) is kept and
//! written again with a doubling backoff (50 ms to 2 s) on a fresh
//! connection; rows are keyed by (run, position), so a batch written twice
//! is stored once. Nothing is dropped while the recorder runs; at
//! [`Recorder::finish`] it keeps trying until its deadline and reports what
//! could not be written.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use garden_store::{Blocking, RecordRow, StoreError};

use crate::Envelope;
use crate::keyring::{Keyring, KeyringError};

/// Topics `garden run --records` keeps: enough to replay and audit a run.
pub const RECORDED_TOPICS: [&str; 7] = [
    "bar", "plan", "evidence", "scored", "decision", "fill", "feedback",
];

/// How the recorder writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderOptions {
    /// Rows written per transaction. Default 2,000.
    pub batch: usize,
    /// Wait before retrying a failed write; it doubles per failure up to
    /// `backoff_max`. Default 50 ms.
    pub backoff_first: Duration,
    /// Longest wait between retries. Default 2 s.
    pub backoff_max: Duration,
    /// How long an idle recorder waits for work before it looks again
    /// (e.g. at its deadline). Default 100 ms.
    pub idle_wait: Duration,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            batch: 2_000,
            backoff_first: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            idle_wait: Duration::from_millis(100),
        }
    }
}

/// What the recorder did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecorderReport {
    /// Rows written.
    pub written: u64,
    /// Failed attempts (each retried).
    pub retries: u64,
    /// Rows that could not be written before the deadline.
    pub lost: u64,
    /// The last error, if any attempt failed.
    pub last_error: Option<String>,
}

enum Command {
    Rows(Vec<RecordRow>),
    /// Open the run if it does not exist: (start time, seed, data name).
    Open(String, u64, String),
    /// Lineage rows: (variant id, seq, record JSON).
    Lineage(Vec<(String, i64, String)>),
    /// Answer once everything sent before is written.
    Flush(Sender<()>),
    Finish(Duration),
}

/// Writes records of one run in the background.
pub struct Recorder {
    run: String,
    next: i64,
    /// Body keys, where records are encrypted at rest.
    keys: Option<Arc<Keyring>>,
    tx: Sender<Command>,
    handle: Option<JoinHandle<RecorderReport>>,
}

impl Recorder {
    /// Start recording run `run` into the store at `url`. Connecting
    /// happens on the recorder's thread, retried like any write.
    pub fn start(url: &str, run: &str) -> Recorder {
        Self::start_with(url, run, RecorderOptions::default())
    }

    /// [`Recorder::start`] with `options` instead of the defaults.
    pub fn start_with(url: &str, run: &str, options: RecorderOptions) -> Recorder {
        let (tx, rx) = channel();
        let (url, run_id) = (url.to_string(), run.to_string());
        let handle = std::thread::Builder::new()
            .name("garden-recorder".into())
            .spawn(move || write_loop(&Blocking::lazy(&url), &run_id, rx, &options))
            .ok();
        Recorder {
            run: run.to_string(),
            next: 0,
            keys: None,
            tx,
            handle,
        }
    }

    /// The run being recorded.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Encrypt the bodies of the records written from now on with `keys`
    /// (none: in the clear). A sealed body is stored as the JSON object
    /// `{"sealed": "ID.BASE64"}`, bound to its run, topic and number;
    /// [`open_body`] opens it.
    pub fn seal_bodies(&mut self, keys: Option<Arc<Keyring>>) {
        self.keys = keys;
    }

    /// Record these messages, in order, after those recorded before.
    pub fn record(&mut self, messages: &[Arc<Envelope>]) {
        let rows: Vec<RecordRow> = messages
            .iter()
            .map(|m| {
                self.next += 1;
                row(&self.run, self.next, m, self.keys.as_deref())
            })
            .collect();
        self.send(rows);
    }

    /// Record these messages under their bus sequence number (on Redis, the
    /// stream entry's id): a message delivered twice, or recorded by two
    /// daemons, is stored once.
    pub fn record_by_seq(&mut self, messages: &[Arc<Envelope>]) {
        let rows: Vec<RecordRow> = messages
            .iter()
            .map(|m| {
                let n = i64::try_from(m.seq).unwrap_or(i64::MAX);
                row(&self.run, n, m, self.keys.as_deref())
            })
            .collect();
        self.send(rows);
    }

    /// Wait until everything recorded so far is written, at most
    /// `timeout`; whether it was. Lets a caller acknowledge messages only
    /// once their records are safe.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = channel();
        if self.tx.send(Command::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    /// Open the run in the store unless it exists (for a garden of daemons,
    /// which records into one run as long as it lives).
    pub fn open_run(&self, started_at: &str, seed: u64, data: &str) {
        let _ = self
            .tx
            .send(Command::Open(started_at.into(), seed, data.into()));
    }

    /// Write lineage records as (variant id, seq, record JSON), written in
    /// order and retried like the records; a record only replaces a stored
    /// one with a lower `seq`.
    pub fn lineage(&self, rows: Vec<(String, i64, String)>) {
        if !rows.is_empty() {
            let _ = self.tx.send(Command::Lineage(rows));
        }
    }

    fn send(&mut self, rows: Vec<RecordRow>) {
        if rows.is_empty() {
            return;
        }
        if self.tx.send(Command::Rows(rows)).is_err() {
            tracing::error!("the recorder thread is gone; records are not written");
        }
    }

    /// Write what is left, trying for at most `deadline`, and report.
    pub fn finish(mut self, deadline: Duration) -> RecorderReport {
        let _ = self.tx.send(Command::Finish(deadline));
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            _ => RecorderReport {
                last_error: Some("the recorder thread failed".into()),
                ..RecorderReport::default()
            },
        }
    }
}

fn row(run: &str, n: i64, m: &Envelope, keys: Option<&Keyring>) -> RecordRow {
    // A body that does not encode is recorded as what went wrong, never
    // as an empty string that reads like a message.
    let mut body = serde_json::to_string(&m.body)
        .unwrap_or_else(|e| serde_json::json!({ "unencodable": e.to_string() }).to_string());
    if let Some(keys) = keys {
        body = match keys.seal(&record_aad(run, &m.topic, n), body.as_bytes()) {
            Ok(sealed) => serde_json::json!({ "sealed": sealed }).to_string(),
            Err(e) => serde_json::json!({ "unsealable": e.to_string() }).to_string(),
        };
    }
    RecordRow {
        n,
        topic: m.topic.clone(),
        key: m.key.clone(),
        source: m.source.clone(),
        time: m.time,
        body,
    }
}

/// What a sealed record body is bound to: its place in the store.
fn record_aad(run: &str, topic: &str, n: i64) -> Vec<u8> {
    format!("record\n{run}\n{topic}\n{n}").into_bytes()
}

/// The JSON body of record `n` of `topic` in `run` as stored: a body in
/// the clear as it is, a sealed one opened with `keys` (any key of the
/// ring: the store holds what this garden wrote).
pub fn open_body(
    keys: Option<&Keyring>,
    run: &str,
    topic: &str,
    n: i64,
    body: &str,
) -> Result<String, KeyringError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sealed {
        sealed: String,
    }
    let Ok(Sealed { sealed }) = serde_json::from_str::<Sealed>(body) else {
        return Ok(body.to_string());
    };
    let keys = keys.ok_or_else(|| KeyringError::UnknownKey(sealed.chars().take(8).collect()))?;
    let plain = keys.open_stored(&record_aad(run, topic, n), &sealed)?;
    String::from_utf8(plain).map_err(|_| KeyringError::Malformed)
}

fn write_loop(
    store: &Blocking,
    run: &str,
    rx: Receiver<Command>,
    options: &RecorderOptions,
) -> RecorderReport {
    let mut report = RecorderReport::default();
    let mut pending: VecDeque<RecordRow> = VecDeque::new();
    let mut lineage: Vec<(String, i64, String)> = Vec::new();
    let mut open: Option<(String, u64, String)> = None;
    let mut finish_by: Option<Instant> = None;
    let mut backoff = options.backoff_first;
    let mut waiters: Vec<Sender<()>> = Vec::new();
    loop {
        let idle = pending.is_empty() && lineage.is_empty() && open.is_none();
        // Take what has arrived; wait a little only when idle.
        let wait = if idle {
            options.idle_wait
        } else {
            Duration::ZERO
        };
        let mut take = |cmd: Command| match cmd {
            Command::Rows(rows) => pending.extend(rows),
            Command::Open(at, seed, data) => open = Some((at, seed, data)),
            Command::Lineage(rows) => lineage.extend(rows),
            Command::Flush(w) => waiters.push(w),
            Command::Finish(d) => finish_by = Some(Instant::now() + d),
        };
        let mut gone = false;
        match rx.recv_timeout(wait) {
            Ok(cmd) => take(cmd),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => gone = true,
        }
        while let Ok(cmd) = rx.try_recv() {
            take(cmd);
        }
        if gone {
            finish_by.get_or_insert_with(Instant::now);
        }
        if pending.is_empty() && lineage.is_empty() && open.is_none() {
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
            if finish_by.is_some() {
                return report;
            }
            continue;
        }
        if finish_by.is_some_and(|t| Instant::now() > t) {
            report.lost = (pending.len() + lineage.len()) as u64;
            return report;
        }
        let n = pending.len().min(options.batch);
        let batch: Vec<RecordRow> = pending.iter().take(n).cloned().collect();
        let result = store.run(async |s| {
            if let Some((at, seed, data)) = &open {
                s.open_run(run, at, *seed, data).await?;
            }
            if !lineage.is_empty() {
                s.save_lineage(run, &lineage).await?;
            }
            if !batch.is_empty() {
                s.save_records(run, &batch).await?;
            }
            Ok::<(), StoreError>(())
        });
        match result {
            Ok(()) => {
                open = None;
                lineage.clear();
                pending.drain(..n);
                report.written += n as u64;
                backoff = options.backoff_first;
            }
            Err(e) => {
                tracing::warn!("writing records failed ({e}); retrying in {backoff:?}");
                report.retries += 1;
                report.last_error = Some(e.to_string());
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(options.backoff_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Body;

    #[test]
    fn a_sealed_record_body_opens_only_in_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("body.keys");
        Keyring::rotate(&path, Duration::from_secs(60)).expect("made");
        let keys = Keyring::read(&path).expect("reads");
        let message = Envelope {
            topic: "fill".into(),
            key: "k".into(),
            seq: 0,
            time: 1,
            source: "trader".into(),
            body: Body::Retired("alpha-ema.3".into()),
            trace: crate::message::Trace::default(),
        };
        let clear = row("run-1", 7, &message, None).body;
        let stored = row("run-1", 7, &message, Some(&keys)).body;
        assert!(!stored.contains("alpha-ema.3"), "{stored}");
        assert_eq!(
            open_body(Some(&keys), "run-1", "fill", 7, &stored),
            Ok(clear.clone())
        );
        assert_eq!(
            open_body(None, "run-1", "fill", 7, &clear),
            Ok(clear.clone())
        );
        assert!(open_body(Some(&keys), "run-1", "fill", 8, &stored).is_err());
        assert!(open_body(Some(&keys), "run-2", "fill", 7, &stored).is_err());
        assert!(open_body(None, "run-1", "fill", 7, &stored).is_err());
    }
}
