//! What a report is drawn from: one run's records, lineage and summary, read
//! from the store and decoded.
//!
//! Invariants: records keep the order they were recorded in; a record whose
//! body does not decode is counted in [`RunData::unreadable`], never
//! silently dropped and never fatal (a report of a long run should not be
//! lost to one bad row); a sealed body without the keyring to open it is an
//! error that names the flag, because every record would be unreadable.

use garden_host::keyring::Keyring;
use garden_host::replication::LineageRecord;
use garden_host::types::{Bar, Body, Evidence, Feedback, Fill, Fitness, ScoredPlan};
use garden_store::{RecordRow, Store};
use serde::Deserialize;

use crate::ReportError;

/// The topics a report reads, as `garden run --records` names them.
pub mod topics {
    /// Bars of the replayed data.
    pub const BAR: &str = "bar";
    /// The alphas' plans.
    pub const PLAN: &str = "plan";
    /// The risk module's decisions.
    pub const DECISION: &str = "decision";
    /// Fused plans (their confidence is what the calibration judges).
    pub const SCORED: &str = "scored";
    /// The experts' opinions.
    pub const EVIDENCE: &str = "evidence";
    /// The trader's executions.
    pub const FILL: &str = "fill";
    /// Realised results of closed plans.
    pub const FEEDBACK: &str = "feedback";
}

/// One run, decoded.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// The run's id.
    pub run: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its seed.
    pub seed: String,
    /// The name of the data it replayed.
    pub data: String,
    /// What `garden run` summarised at its end (empty for a run still
    /// going, e.g. a daemon garden).
    pub summary: Summary,
    /// Bars, in order.
    pub bars: Vec<Bar>,
    /// Fitness reports with the event time they were published at.
    pub fitness: Vec<(i64, Fitness)>,
    /// Fused plans.
    pub scored: Vec<ScoredPlan>,
    /// Expert opinions.
    pub evidence: Vec<Evidence>,
    /// Fills.
    pub fills: Vec<Fill>,
    /// Realised results.
    pub feedback: Vec<Feedback>,
    /// Every variant's lineage record.
    pub lineage: Vec<LineageRecord>,
    /// Records whose body could not be read, per topic.
    pub unreadable: Vec<(String, usize)>,
}

/// The part of a run's summary a report uses. Fields missing from an older
/// summary read as empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// Bars replayed.
    pub bars: usize,
    /// Every instance's counters.
    pub instances: Vec<InstanceCost>,
    /// Evolution's view: the in-sample/out-of-sample cut, best and control.
    pub evolution: Option<Evolution>,
}

/// What one instance cost.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct InstanceCost {
    /// Module name.
    pub module: String,
    /// Calls into the instance.
    pub calls: u64,
    /// Time spent in it, µs.
    pub busy_micros: f64,
    /// Fuel it burned.
    pub fuel: u64,
}

/// Evolution's summary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Evolution {
    /// First out-of-sample bar.
    pub cut_bar: usize,
    /// The best variant in sample.
    pub best: Option<Named>,
    /// The generation-0 control.
    pub control: Option<Named>,
}

/// A variant named by the summary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Named {
    /// Its instance id.
    pub id: String,
}

impl RunData {
    /// Read `run` from `store`, opening sealed bodies with `keys`.
    pub async fn load(
        store: &Store,
        run: &str,
        keys: Option<&Keyring>,
    ) -> Result<RunData, ReportError> {
        let info = store
            .run_info(run)
            .await?
            .ok_or_else(|| ReportError::NoSuchRun(run.to_string()))?;
        let summary = if info.summary.trim().is_empty() {
            Summary::default()
        } else {
            serde_json::from_str(&info.summary).map_err(ReportError::Summary)?
        };
        let lineage = store
            .lineage(run)
            .await?
            .iter()
            .map(|t| serde_json::from_str(t))
            .collect::<Result<Vec<LineageRecord>, _>>()
            .map_err(ReportError::Lineage)?;
        let mut data = RunData {
            run: run.to_string(),
            started_at: info.started_at,
            seed: info.seed,
            data: info.data,
            summary,
            lineage,
            ..RunData::default()
        };
        let mut reader = Reader {
            store,
            run,
            keys,
            unreadable: Vec::new(),
        };
        data.bars = reader
            .bodies(topics::BAR, |b| match b {
                Body::Bar(x) => Some(x),
                _ => None,
            })
            .await?
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        data.scored = reader
            .values(topics::SCORED, |b| match b {
                Body::Scored(x) => Some(x),
                _ => None,
            })
            .await?;
        data.evidence = reader
            .values(topics::EVIDENCE, |b| match b {
                Body::Evidence(x) => Some(x),
                _ => None,
            })
            .await?;
        data.fills = reader
            .values(topics::FILL, |b| match b {
                Body::Fill(x) => Some(x),
                _ => None,
            })
            .await?;
        data.feedback = reader
            .values(topics::FEEDBACK, |b| match b {
                Body::Feedback(x) => Some(x),
                _ => None,
            })
            .await?;
        // Fitness reports are recorded on whatever topic the pipeline names,
        // beside the message topics every run records (read above, or of
        // no use here): they are looked for on the others.
        let others = store
            .record_counts(run)
            .await?
            .into_keys()
            .filter(|t| !garden_host::records::RECORDED_TOPICS.contains(&t.as_str()));
        for topic in others {
            let found = reader
                .bodies(&topic, |b| match b {
                    Body::Fitness(x) => Some(x),
                    _ => None,
                })
                .await?;
            data.fitness.extend(found);
        }
        data.fitness.sort_by_key(|(t, _)| *t);
        data.unreadable = reader.unreadable;
        Ok(data)
    }
}

/// Reads one topic's records and keeps count of what it could not read.
struct Reader<'a> {
    store: &'a Store,
    run: &'a str,
    keys: Option<&'a Keyring>,
    unreadable: Vec<(String, usize)>,
}

impl Reader<'_> {
    /// The bodies of `topic` that `pick` accepts, with their event times.
    /// Bodies of another kind on the topic are skipped (a topic may carry
    /// several), bodies that do not decode are counted.
    async fn bodies<T>(
        &mut self,
        topic: &str,
        pick: impl Fn(Body) -> Option<T>,
    ) -> Result<Vec<(i64, T)>, ReportError> {
        let rows = self.store.records(self.run, topic).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut bad = 0;
        for row in rows {
            match self.decode(&row)? {
                Some(body) => out.extend(pick(body).map(|b| (row.time, b))),
                None => bad += 1,
            }
        }
        if bad > 0 {
            self.unreadable.push((topic.to_string(), bad));
        }
        Ok(out)
    }

    async fn values<T>(
        &mut self,
        topic: &str,
        pick: impl Fn(Body) -> Option<T>,
    ) -> Result<Vec<T>, ReportError> {
        Ok(self
            .bodies(topic, pick)
            .await?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    /// A row's body, or none if it does not decode or open (tampered, or
    /// sealed under a key no longer in the ring); an error only when it is
    /// sealed and no keyring was given, since then no row would open.
    fn decode(&self, row: &RecordRow) -> Result<Option<Body>, ReportError> {
        let opened =
            garden_host::records::open_body(self.keys, self.run, &row.topic, row.n, &row.body);
        match opened {
            Ok(text) => Ok(serde_json::from_str(&text).ok()),
            Err(e) if self.keys.is_none() => Err(ReportError::Sealed {
                topic: row.topic.clone(),
                reason: e.to_string(),
            }),
            Err(_) => Ok(None),
        }
    }
}
