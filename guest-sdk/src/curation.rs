//! Curators: modules that say `pass`, `veto` or a bounded `nudge` about one
//! plan, decision or fill, and the verdict rules every governed module
//! applies (docs/curators.md).
//!
//! A curator publishes a [`Curation`] on the `curation` topic, keyed by the
//! plan's id. A governed module names its curators in its `curators`
//! setting (comma-separated), waits for them with a [`crate::join::Join`]
//! for at most `deadline-bars` bars, and settles what came with
//! [`Curators::settle`]:
//!
//! - a verdict whose `curator` is not the instance that published it is
//!   refused ([`Curators::admit`]): a curator cannot speak for another. It
//!   is logged and counted, not failed: a failed message counts against
//!   the module that handles it, so failing would let a forger get the
//!   governed module quarantined;
//! - every nudge is clamped to `|amount| ≤ κ` (the `kappa` setting, 0.1 by
//!   default), and the recorded amount is the one applied;
//! - a curator that had not answered is recorded as `missing`;
//! - a veto always wins ([`Effect::veto`]); nudges on one target add up.
//!
//! The settled list travels on in the governed module's output
//! (`scored-plan.curation`, `decision.curation`, `fill.curation`), so the
//! record of who acted and how stays with the plan to its last fill.

use std::collections::BTreeMap;

use crate::{Curation, CuratorAction, InitContext, NudgeTarget};

/// Default bound on one nudge.
pub const DEFAULT_KAPPA: f64 = 0.1;

/// Largest κ: a size nudge of −1 would make the size 0.
pub const MAX_KAPPA: f64 = 0.9;

/// Most bars a governed module may wait for its curators.
pub const MAX_DEADLINE_BARS: f64 = 1000.0;

/// Bounds on a confidence after a nudge (as fusion clamps priors).
const CONFIDENCE_BOUNDS: (f64, f64) = (0.01, 0.99);

/// A governed module's curators and its bound κ.
#[derive(Debug, Clone, PartialEq)]
pub struct Curators {
    /// Curator instance ids, in the order verdicts are recorded.
    pub names: Vec<String>,
    /// Bound on every nudge's amount.
    pub kappa: f64,
    /// Bars of the item's symbol to wait for them.
    pub deadline_bars: u32,
    /// Verdicts refused because they claimed another curator.
    pub forged: u32,
}

impl Curators {
    /// From the settings `curators` (comma-separated; none by default),
    /// `kappa` (0.1) and `deadline-bars` (`default_deadline`).
    pub fn from_settings(ctx: &InitContext, default_deadline: u32) -> Result<Self, String> {
        let names = list_setting(ctx, "curators");
        let kappa = ctx.setting_in("kappa", DEFAULT_KAPPA, 0.0..=MAX_KAPPA)?;
        let deadline = ctx.setting_whole(
            "deadline-bars",
            f64::from(default_deadline),
            0.0..=MAX_DEADLINE_BARS,
        )?;
        Ok(Curators {
            names,
            kappa,
            deadline_bars: deadline as u32,
            forged: 0,
        })
    }

    /// Whether a verdict from `source` is one to count: false for a
    /// curator this module does not name, and for a verdict that claims
    /// another curator than the instance that published it (logged as a
    /// warning and counted in [`Curators::forged`]).
    pub fn admit(&mut self, source: &str, c: &Curation) -> bool {
        if c.curator != source {
            self.forged += 1;
            crate::warn(&format!(
                "refused a verdict on {} that claims curator {} but was published by {source}",
                c.plan_id, c.curator
            ));
            return false;
        }
        self.names.contains(&c.curator)
    }

    /// The verdicts as they apply, one per named curator in order: nudges
    /// clamped to κ, `missing` for those that did not answer.
    pub fn settle(&self, plan_id: &str, answers: &BTreeMap<String, Curation>) -> Vec<Curation> {
        self.names
            .iter()
            .map(|name| match answers.get(name) {
                Some(c) => self.clamp(c.clone()),
                None => Curation {
                    plan_id: plan_id.to_string(),
                    curator: name.clone(),
                    action: CuratorAction::Missing,
                    target: NudgeTarget::Size,
                    amount: 0.0,
                    reason: "no verdict by the deadline".into(),
                },
            })
            .collect()
    }

    fn clamp(&self, mut c: Curation) -> Curation {
        match c.action {
            CuratorAction::Nudge => {
                let asked = if c.amount.is_finite() { c.amount } else { 0.0 };
                let applied = asked.clamp(-self.kappa, self.kappa);
                if applied != asked || !c.amount.is_finite() {
                    c.reason = format!("{} (clamped from {})", c.reason, c.amount);
                }
                c.amount = applied;
            }
            // A curator cannot claim to be missing; its word is a pass.
            CuratorAction::Missing => {
                c.action = CuratorAction::Pass;
                c.amount = 0.0;
            }
            CuratorAction::Pass | CuratorAction::Veto => c.amount = 0.0,
        }
        c
    }
}

/// What a list of settled verdicts does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effect {
    /// The first veto, if any: it wins over every nudge.
    pub veto: Option<Curation>,
    /// Sum of log-odds nudges.
    pub log_odds: f64,
    /// Sum of confidence nudges.
    pub confidence: f64,
    /// Sum of size nudges: the size is multiplied by `1 + size`.
    pub size: f64,
}

impl Effect {
    /// The effect of settled verdicts.
    pub fn of(curations: &[Curation]) -> Effect {
        let mut e = Effect::default();
        for c in curations {
            match c.action {
                CuratorAction::Veto if e.veto.is_none() => e.veto = Some(c.clone()),
                CuratorAction::Nudge => match c.target {
                    NudgeTarget::LogOdds => e.log_odds += c.amount,
                    NudgeTarget::Confidence => e.confidence += c.amount,
                    NudgeTarget::Size => e.size += c.amount,
                },
                _ => {}
            }
        }
        e
    }

    /// A probability after the log-odds and confidence nudges (unchanged
    /// when there are none).
    pub fn confidence_of(&self, p: f64) -> f64 {
        if self.log_odds == 0.0 && self.confidence == 0.0 {
            return p;
        }
        let (lo, hi) = CONFIDENCE_BOUNDS;
        let p = p.clamp(lo, hi);
        let shifted = if self.log_odds != 0.0 {
            let x = (p / (1.0 - p)).ln() + self.log_odds;
            1.0 / (1.0 + (-x).exp())
        } else {
            p
        };
        if self.confidence != 0.0 {
            (shifted + self.confidence).clamp(lo, hi)
        } else {
            shifted
        }
    }

    /// A size after the size nudges. Several nudges add up, but never
    /// below −[`MAX_KAPPA`] in all, so a positive size stays positive: to
    /// stop an item takes a veto.
    pub fn size_of(&self, size: f64) -> f64 {
        size * (1.0 + self.size.max(-MAX_KAPPA))
    }

    /// "vetoed by NAME: REASON", when vetoed.
    pub fn veto_reason(&self) -> Option<String> {
        self.veto
            .as_ref()
            .map(|c| format!("vetoed by {}: {}", c.curator, c.reason))
    }
}

/// A curator's verdicts about plans, signed with its own instance id.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdicts {
    curator: String,
}

impl Verdicts {
    /// Verdicts by the instance `curator` (its `InitContext::instance`).
    pub fn by(curator: &str) -> Self {
        Verdicts {
            curator: curator.to_string(),
        }
    }

    fn make(
        &self,
        plan_id: &str,
        action: CuratorAction,
        target: NudgeTarget,
        amount: f64,
        reason: &str,
    ) -> Curation {
        Curation {
            plan_id: plan_id.to_string(),
            curator: self.curator.clone(),
            action,
            target,
            amount,
            reason: reason.to_string(),
        }
    }

    /// Nothing to say about the plan.
    pub fn pass(&self, plan_id: &str, reason: &str) -> Curation {
        self.make(plan_id, CuratorAction::Pass, NudgeTarget::Size, 0.0, reason)
    }

    /// Stop the plan, for `reason`.
    pub fn veto(&self, plan_id: &str, reason: &str) -> Curation {
        self.make(plan_id, CuratorAction::Veto, NudgeTarget::Size, 0.0, reason)
    }

    /// Move `target` by `amount` (the governed module clamps it to κ).
    pub fn nudge(&self, plan_id: &str, target: NudgeTarget, amount: f64, reason: &str) -> Curation {
        self.make(plan_id, CuratorAction::Nudge, target, amount, reason)
    }
}

/// Significant digits of a number in a verdict's reason.
const REASON_DIGITS: i32 = 3;

/// Most decimals of a number in a verdict's reason (below that it reads 0).
const REASON_MAX_DECIMALS: i32 = 12;

/// `x` with about three significant digits and no exponent, for reasons:
/// costs are small for currencies and large for indices, and a reason
/// should read the same way for both.
pub fn figure(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (REASON_DIGITS - 1 - magnitude).clamp(0, REASON_MAX_DECIMALS);
    format!("{x:.*}", decimals as usize)
}

/// A comma-separated setting as trimmed, non-empty names.
pub fn list_setting(ctx: &InitContext, name: &str) -> Vec<String> {
    ctx.setting(name)
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curators(settings: &[(&str, &str)]) -> Result<Curators, String> {
        Curators::from_settings(&crate::testing::context("m", settings), 1)
    }

    #[test]
    fn settings_are_read_and_checked() {
        let c = curators(&[("curators", " a, b ,"), ("kappa", "0.2")]).unwrap();
        assert_eq!(c.names, vec!["a".to_string(), "b".to_string()]);
        assert_eq!((c.kappa, c.deadline_bars), (0.2, 1));
        assert!(curators(&[]).unwrap().names.is_empty());
        assert!(curators(&[("kappa", "1.5")]).is_err());
        assert!(curators(&[("deadline-bars", "1.5")]).is_err());
    }

    #[test]
    fn nudges_are_clamped_missing_is_recorded_and_a_veto_wins() {
        let c = curators(&[("curators", "a,b,c,d"), ("kappa", "0.1")]).unwrap();
        let a = Verdicts::by("a");
        let b = Verdicts::by("b");
        let d = Verdicts::by("d");
        let answers: BTreeMap<String, Curation> = [
            ("a".to_string(), a.nudge("p", NudgeTarget::Size, 0.5, "big")),
            (
                "b".to_string(),
                b.nudge("p", NudgeTarget::LogOdds, -0.05, "small"),
            ),
            (
                "d".to_string(),
                d.nudge("p", NudgeTarget::Size, f64::NAN, "nan"),
            ),
        ]
        .into();
        let settled = c.settle("p", &answers);
        assert_eq!(settled.len(), 4);
        assert_eq!(settled[0].amount, 0.1);
        assert!(settled[0].reason.contains("clamped from 0.5"));
        assert_eq!(settled[1].amount, -0.05);
        assert_eq!(settled[2].action, CuratorAction::Missing);
        assert_eq!(settled[3].amount, 0.0, "a NaN nudge does nothing");
        let e = Effect::of(&settled);
        assert!(e.veto.is_none());
        assert!((e.size_of(2.0) - 2.2).abs() < 1e-12);
        assert!(e.confidence_of(0.5) < 0.5);

        let mut with_veto = answers.clone();
        with_veto.insert("c".into(), Verdicts::by("c").veto("p", "against the trend"));
        let e = Effect::of(&c.settle("p", &with_veto));
        assert_eq!(
            e.veto_reason().as_deref(),
            Some("vetoed by c: against the trend")
        );
    }

    #[test]
    fn a_verdict_must_come_from_the_curator_it_names() {
        let mut c = curators(&[("curators", "a")]).unwrap();
        let forged = Verdicts::by("a").veto("p", "x");
        assert!(!c.admit("someone-else", &forged));
        assert_eq!(c.forged, 1);
        assert!(c.admit("a", &forged));
        let stranger = Verdicts::by("z").veto("p", "x");
        assert!(!c.admit("z", &stranger));
        assert_eq!(c.forged, 1, "a curator nobody named is no forger");
    }

    #[test]
    fn confidence_nudges_stay_in_bounds() {
        let e = Effect {
            confidence: 0.5,
            ..Effect::default()
        };
        assert_eq!(e.confidence_of(0.9), 0.99);
        let e = Effect {
            size: -2.0,
            ..Effect::default()
        };
        assert!(
            (e.size_of(1.0) - (1.0 - MAX_KAPPA)).abs() < 1e-12,
            "only a veto stops"
        );
    }
}
