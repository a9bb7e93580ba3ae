//! What an alpha variant learns per market regime, and what it hears the
//! other variants learned (the `intel` topic).
//!
//! Each variant keeps its own record per regime label (the label of its
//! plan's symbol when the plan was written): closed plans, wins, and the
//! sum of their R (pnl over the risk to the stop). After each of its own
//! outcomes it may share that label's record as an [`Intel`]: subject its
//! instance id, scope the label, values `trades`, `hit-rate` and `mean-r`.
//! It keeps the latest record every other variant shared, and pools them
//! per label: a variant using intel skips a plan while the others' pooled
//! hit rate in the current label, over at least `min_samples` trades, is
//! below its threshold. A record heard more than `memory` bars ago no
//! longer counts: if every variant skipped a regime, nobody would trade in
//! it again and its poor record would never change, so it must lapse.
//!
//! Invariants: bounded memory (at most [`MAX_PLANS`] plans awaiting their
//! outcome, [`MAX_HEARD`] records heard); records heard from itself, or
//! with non-finite values, are ignored; pooling is deterministic (ordered
//! maps).

use std::collections::{BTreeMap, VecDeque};

use garden_sdk::{Intel, Metric};

/// Most plans remembered while waiting for their outcome.
pub const MAX_PLANS: usize = 256;

/// Most (variant, label) records heard from others.
pub const MAX_HEARD: usize = 4096;

/// How the variant takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Neither shares nor listens.
    Off,
    /// Shares its record, ignores the others'.
    Share,
    /// Shares, and skips plans the others' record in the regime advises
    /// against.
    Use,
}

impl Sharing {
    /// From the `intel` setting: `off`, `share` or `use`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(Sharing::Off),
            "share" => Ok(Sharing::Share),
            "use" => Ok(Sharing::Use),
            other => Err(format!("intel must be off, share or use, got `{other}`")),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Record {
    trades: f64,
    wins: f64,
    r_sum: f64,
}

/// A variant's intel: its own record per label and what it heard.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Plans awaiting their outcome: (plan id, label, risk to the stop).
    plans: VecDeque<(String, String, f64)>,
    own: BTreeMap<String, Record>,
    /// Others' latest: (subject, label) → (trades, hit rate, bar heard).
    heard: BTreeMap<(String, String), (f64, f64, u64)>,
    /// Bars seen (of any symbol): the clock records lapse by.
    bars: u64,
}

impl Ledger {
    /// A plan was written under `label`, risking `risk` to its stop.
    pub fn planned(&mut self, id: &str, label: &str, risk: f64) {
        if self.plans.len() >= MAX_PLANS {
            self.plans.pop_front();
        }
        self.plans
            .push_back((id.to_string(), label.to_string(), risk));
    }

    /// A plan's outcome: the intel to share about its label, if the plan
    /// was remembered.
    pub fn outcome(&mut self, subject: &str, id: &str, pnl: f64) -> Option<Intel> {
        let at = self.plans.iter().position(|(p, _, _)| p == id)?;
        let (_, label, risk) = self.plans.remove(at)?;
        if !pnl.is_finite() {
            return None;
        }
        let r = self.own.entry(label.clone()).or_default();
        r.trades += 1.0;
        r.wins += f64::from(u8::from(pnl > 0.0));
        r.r_sum += if risk > 0.0 { pnl / risk } else { 0.0 };
        let m = |name: &str, value: f64| Metric {
            name: name.into(),
            value,
        };
        Some(Intel {
            subject: subject.to_string(),
            scope: label,
            values: vec![
                m("trades", r.trades),
                m("hit-rate", r.wins / r.trades),
                m("mean-r", r.r_sum / r.trades),
            ],
            samples: r.trades as u32,
        })
    }

    /// Another variant's record, published by `source` (ignored when it
    /// is `me`'s own, malformed, or about another subject than its
    /// publisher: one variant cannot speak for others).
    pub fn heard(&mut self, me: &str, source: &str, intel: &Intel) {
        if intel.subject == me || intel.subject != source || intel.scope.is_empty() {
            return;
        }
        let value = |name: &str| {
            intel
                .values
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.value)
                .filter(|v| v.is_finite())
        };
        let (Some(trades), Some(hit)) = (value("trades"), value("hit-rate")) else {
            return;
        };
        if trades < 0.0 || !(0.0..=1.0).contains(&hit) {
            return;
        }
        let key = (intel.subject.clone(), intel.scope.clone());
        if self.heard.len() >= MAX_HEARD && !self.heard.contains_key(&key) {
            // Make room by forgetting the record heard longest ago.
            let oldest = self
                .heard
                .iter()
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.heard.remove(&k);
            }
        }
        self.heard.insert(key, (trades, hit, self.bars));
    }

    /// One more bar has passed.
    pub fn tick(&mut self) {
        self.bars += 1;
    }

    /// The others' pooled (trades, hit rate) under `label`, of the records
    /// heard within the last `memory` bars.
    pub fn pooled(&self, label: &str, memory: u64) -> (f64, f64) {
        let (trades, wins) = self
            .heard
            .iter()
            .filter(|((_, scope), (_, _, at))| scope == label && self.bars - at <= memory)
            .fold((0.0, 0.0), |(t, w), (_, (n, h, _))| (t + n, w + n * h));
        if trades > 0.0 {
            (trades, wins / trades)
        } else {
            (0.0, 0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intel(subject: &str, scope: &str, trades: f64, hit: f64) -> Intel {
        Intel {
            subject: subject.into(),
            scope: scope.into(),
            values: vec![
                Metric {
                    name: "trades".into(),
                    value: trades,
                },
                Metric {
                    name: "hit-rate".into(),
                    value: hit,
                },
            ],
            samples: trades as u32,
        }
    }

    #[test]
    fn own_outcomes_become_intel_per_label() {
        let mut l = Ledger::default();
        l.planned("a-1", "trend-calm", 100.0);
        l.planned("a-2", "trend-calm", 100.0);
        assert!(l.outcome("a", "unknown", 5.0).is_none());
        l.outcome("a", "a-1", 50.0);
        let i = l.outcome("a", "a-2", -100.0).expect("remembered");
        assert_eq!(
            (i.subject.as_str(), i.scope.as_str(), i.samples),
            ("a", "trend-calm", 2)
        );
        let v: Vec<f64> = i.values.iter().map(|m| m.value).collect();
        assert_eq!(v, vec![2.0, 0.5, -0.25]);
    }

    #[test]
    fn the_others_are_pooled_per_label_and_self_or_nonsense_ignored() {
        let mut l = Ledger::default();
        l.heard("me", "b", &intel("b", "range-calm", 10.0, 0.2));
        l.heard("me", "c", &intel("c", "range-calm", 30.0, 0.6));
        l.heard("me", "c", &intel("c", "trend-calm", 5.0, 1.0));
        l.heard("me", "me", &intel("me", "range-calm", 100.0, 1.0));
        l.heard("me", "d", &intel("d", "range-calm", 10.0, f64::NAN));
        l.heard("me", "e", &intel("e", "range-calm", 10.0, 7.0));
        let (n, h) = l.pooled("range-calm", 10);
        assert_eq!(n, 40.0);
        assert!((h - (2.0 + 18.0) / 40.0).abs() < 1e-12);
        // A later record replaces the earlier one of the same variant.
        l.heard("me", "b", &intel("b", "range-calm", 20.0, 0.5));
        assert_eq!(l.pooled("range-calm", 10).0, 50.0);
        assert_eq!(l.pooled("none", 10), (0.0, 0.0));
        // Records lapse after the memory, unless heard again.
        for _ in 0..11 {
            l.tick();
        }
        l.heard("me", "c", &intel("c", "range-calm", 30.0, 0.6));
        assert_eq!(l.pooled("range-calm", 10), (30.0, 0.6));
        assert!(Sharing::parse("maybe").is_err());
        // One variant cannot speak for another.
        l.heard("me", "mallory", &intel("c", "range-calm", 1e6, 0.0));
        assert_eq!(l.pooled("range-calm", 10), (30.0, 0.6));
    }
}
