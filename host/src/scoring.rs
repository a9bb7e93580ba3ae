//! Fitness reports in, scores out: the one kind of body the host reads.
//!
//! A fitness report names a subject (an instance) and its account value after
//! each step since the previous report. From the concatenated series the host
//! derives, without knowing what the values mean:
//!
//! * **return** per step `r_t = v_t / v_{t-1} − 1`;
//! * **Sharpe-like score** `mean(r) / stdev(r) × √(steps per year)`, with the
//!   steps per year taken from the feed (steps in the run ÷ years it spans),
//!   0 when the series is flat;
//! * **maximum drawdown** `max_t (peak_t − v_t) / peak_t`, as a fraction.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bindings::types::Fitness;

#[derive(Debug, Default, Clone)]
struct Track {
    values: Vec<f64>,
    /// Step (bar index) of each value.
    steps: Vec<usize>,
    /// (step, cumulative trades) at each report.
    trades_at: Vec<(usize, u32)>,
    trades: u32,
    metrics: Vec<(String, f64)>,
}

/// The latest fitness of every subject.
#[derive(Debug, Default, Clone)]
pub struct Scoreboard {
    tracks: BTreeMap<String, Track>,
}

/// Scores of one subject.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Score {
    /// The subject (instance id).
    pub subject: String,
    /// Steps reported.
    pub steps: usize,
    /// First reported value.
    pub start_value: f64,
    /// Last reported value.
    pub final_value: f64,
    /// Sharpe-like score (annualised).
    pub sharpe: f64,
    /// Maximum drawdown, a fraction of the peak.
    pub max_drawdown: f64,
    /// Trades reported.
    pub trades: u32,
    /// The latest metrics, in the order the module reported them.
    pub metrics: Vec<(String, f64)>,
}

impl Scoreboard {
    /// Take in one report; its last value belongs to step `end_step` and
    /// the ones before it to the steps before that.
    pub fn record(&mut self, report: &Fitness, end_step: usize) {
        let track = self.tracks.entry(report.subject.clone()).or_default();
        let n = report.values.len();
        for (k, v) in report.values.iter().enumerate() {
            if v.is_finite() {
                track.values.push(*v);
                track.steps.push((end_step + k + 1).saturating_sub(n));
            }
        }
        track.trades = report.trades;
        track.trades_at.push((end_step, report.trades));
        track.metrics = report
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect();
    }

    /// The values of `subject` at steps in `[from, to)` and the trades it
    /// made in that window (by its cumulative trade counts).
    pub fn window(&self, subject: &str, from: usize, to: usize) -> (Vec<f64>, u32) {
        let Some(t) = self.tracks.get(subject) else {
            return (Vec::new(), 0);
        };
        let values = t
            .steps
            .iter()
            .zip(&t.values)
            .filter(|(s, _)| **s >= from && **s < to)
            .map(|(_, v)| *v)
            .collect();
        let before = t
            .trades_at
            .iter()
            .filter(|(s, _)| *s < from)
            .map(|(_, n)| *n)
            .next_back()
            .unwrap_or(0);
        let until = t
            .trades_at
            .iter()
            .filter(|(s, _)| *s < to)
            .map(|(_, n)| *n)
            .next_back()
            .unwrap_or(before);
        (values, until.saturating_sub(before))
    }

    /// Forget `subject` and everything it reported (a retired variant).
    pub fn forget(&mut self, subject: &str) {
        self.tracks.remove(subject);
    }

    /// Each subject's latest metrics, in subject order.
    pub fn latest_metrics(&self) -> impl Iterator<Item = (&str, &[(String, f64)])> {
        self.tracks
            .iter()
            .map(|(s, t)| (s.as_str(), t.metrics.as_slice()))
    }

    /// Subjects seen, in order.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.tracks.keys().map(String::as_str)
    }

    /// The scores of `subject`, if it reported.
    pub fn score(&self, subject: &str, steps_per_year: f64) -> Option<Score> {
        let t = self.tracks.get(subject)?;
        Some(Score {
            subject: subject.to_string(),
            steps: t.values.len(),
            start_value: t.values.first().copied().unwrap_or(0.0),
            final_value: t.values.last().copied().unwrap_or(0.0),
            sharpe: sharpe(&t.values, steps_per_year),
            max_drawdown: max_drawdown(&t.values),
            trades: t.trades,
            metrics: t.metrics.clone(),
        })
    }
}

/// Per-step returns of a value series, one per step so that two series of
/// one length line up: a step from a value at or below 0 (a busted
/// account) returns 0. The one definition of a return, for scores and for
/// fitness alike.
pub fn returns(values: &[f64]) -> Vec<f64> {
    values
        .windows(2)
        .map(|w| if w[0] > 0.0 { w[1] / w[0] - 1.0 } else { 0.0 })
        .collect()
}

/// Annualised Sharpe-like ratio of the step returns of `values` (no
/// risk-free rate). 0 for fewer than three values or a flat series.
pub fn sharpe(values: &[f64], steps_per_year: f64) -> f64 {
    let returns = returns(values);
    if returns.len() < 2 {
        return 0.0;
    }
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let sd = var.sqrt();
    if sd.is_nan() || sd <= 1e-15 {
        return 0.0;
    }
    mean / sd * steps_per_year.max(0.0).sqrt()
}

/// Largest fall from a running peak, as a fraction of that peak.
pub fn max_drawdown(values: &[f64]) -> f64 {
    let mut peak = f64::NEG_INFINITY;
    let mut worst: f64 = 0.0;
    for &v in values {
        peak = peak.max(v);
        if peak > 0.0 {
            worst = worst.max((peak - v) / peak);
        }
    }
    worst
}

/// Steps per year of a feed with `steps` steps between two event times (ms).
pub fn steps_per_year(steps: usize, first_ms: i64, last_ms: i64) -> f64 {
    const YEAR_MS: f64 = 365.25 * 24.0 * 3600.0 * 1000.0;
    let span = (last_ms - first_ms) as f64;
    if span <= 0.0 || steps < 2 {
        return 1.0;
    }
    (steps - 1) as f64 / (span / YEAR_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::types::Metric;

    #[test]
    fn drawdown_is_the_worst_fall_from_a_peak() {
        assert_eq!(max_drawdown(&[100.0, 120.0, 90.0, 130.0, 117.0]), 0.25);
        assert_eq!(max_drawdown(&[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(max_drawdown(&[]), 0.0);
    }

    #[test]
    fn sharpe_matches_a_hand_computation() {
        // returns: +10%, -5%, +10% → mean 0.05, sample sd = sqrt(0.0075)
        let v = [100.0, 110.0, 104.5, 114.95];
        let expected = 0.05 / 0.0075f64.sqrt() * 4.0f64.sqrt();
        assert!(
            (sharpe(&v, 4.0) - expected).abs() < 1e-9,
            "{}",
            sharpe(&v, 4.0)
        );
        assert_eq!(
            sharpe(&[100.0, 100.0, 100.0], 252.0),
            0.0,
            "flat is zero, not NaN"
        );
        assert_eq!(sharpe(&[100.0], 252.0), 0.0);
    }

    #[test]
    fn steps_per_year_from_span() {
        let year = 365.25 * 24.0 * 3600.0 * 1000.0;
        let spy = steps_per_year(366, 0, year as i64);
        assert!((spy - 365.0).abs() < 1e-6);
    }

    #[test]
    fn scoreboard_concatenates_reports_and_keeps_latest_metrics() {
        let mut b = Scoreboard::default();
        let m = |n: &str, v: f64| Metric {
            name: n.into(),
            value: v,
        };
        b.record(
            &Fitness {
                subject: "a".into(),
                values: vec![100.0, 110.0],
                trades: 1,
                metrics: vec![m("pnl", 10.0)],
            },
            1,
        );
        b.record(
            &Fitness {
                subject: "a".into(),
                values: vec![99.0, f64::NAN],
                trades: 2,
                metrics: vec![m("pnl", -1.0)],
            },
            3,
        );
        let (w, trades) = b.window("a", 1, 3);
        assert_eq!(w, vec![110.0, 99.0], "steps 1 and 2");
        assert_eq!(trades, 1, "one trade reported after step 1");
        let s = b.score("a", 1.0).unwrap();
        assert_eq!(s.steps, 3, "non-finite values are skipped");
        assert_eq!(s.final_value, 99.0);
        assert_eq!(s.trades, 2);
        assert_eq!(s.metrics, vec![("pnl".to_string(), -1.0)]);
        assert!((s.max_drawdown - 0.1).abs() < 1e-12);
        assert!(b.score("b", 1.0).is_none());
    }
}
