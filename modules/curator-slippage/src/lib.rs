//! Slippage curator (governs decisions, at the trader stage): vetoes or
//! shrinks an entry whose likely adverse fill eats too much of the move to
//! its target.
//!
//! The trader fills at the next bar's open, so what a fill may lose is how
//! far opens land from the previous close, plus a share of the bar's range
//! for the price moving while the order works. Per symbol, over the last
//! `window` bars:
//!
//! - expected adverse fill = median |open_t − close_{t−1}| + `range-share`
//!   × median(high − low);
//! - ratio = expected / |target − entry|, the share of the planned move the
//!   fill is likely to give away.
//!
//! The rule, for decisions that approve or modify a plan: veto if ratio >
//! `max-share`, with the numbers in the reason; if ratio > `nudge-above`, a
//! size nudge of −κ·min(1, ratio / `max-share`), so the closer to the veto
//! line the smaller the position; else pass. While fewer than 2 bars of the
//! symbol are known there is no gap to measure, and the decision passes
//! ("warming up"). A decision whose target or entry is not a finite number,
//! or whose target is its entry, has no move to weigh and is vetoed.
//! Rejected decisions get no verdict: the trader does not wait for one.
//!
//! Settings: `window` (50), `range-share` (0.1), `max-share` (0.25),
//! `nudge-above` (0.1, at most `max-share`), `kappa` (0.1).
//!
//! Invariants: exactly one verdict per approved or modified decision,
//! published when it arrives, keyed by its plan's id; every nudge is in
//! [−κ, 0); only bars already seen are used; bars with a non-finite price
//! are ignored; memory per symbol is bounded by the window.

use std::collections::BTreeMap;

use garden_sdk::curation::{DEFAULT_KAPPA, MAX_KAPPA, Verdicts, figure};
use garden_sdk::indicators::RollingStats;
use garden_sdk::{
    Bar, Body, Curation, Decision, Envelope, Info, InitContext, Module, NudgeTarget, Outbox,
    Subscription, Verdict,
};

/// Bars needed before anything is measured: one gap takes two bars.
pub const MIN_BARS: usize = 2;

/// Longest window accepted.
const MAX_WINDOW: f64 = 10_000.0;

/// Largest `max-share` accepted: a fill expected to lose ten times the
/// planned move is already past any sensible line.
const MAX_SHARE: f64 = 10.0;

/// Percent in one, for reasons.
const PERCENT: f64 = 100.0;

/// The rule's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Bars the medians are taken over.
    pub window: usize,
    /// Share of the median range added for the price moving during a fill.
    pub range_share: f64,
    /// Veto above this ratio of expected slippage to the planned move.
    pub max_share: f64,
    /// Nudge the size down above this ratio.
    pub nudge_above: f64,
    /// Bound on the size nudge.
    pub kappa: f64,
}

/// What is kept of one symbol.
struct Track {
    last_close: Option<f64>,
    /// |open − previous close| of the last `window` − 1 bars (the gaps
    /// between `window` bars).
    gaps: RollingStats,
    /// high − low of the last `window` bars.
    ranges: RollingStats,
}

impl Track {
    /// Bars known, up to the window.
    fn bars(&self) -> usize {
        self.ranges.len()
    }
}

/// The curator's state.
pub struct SlippageCurator {
    verdicts: Verdicts,
    rule: Rule,
    /// By symbol; BTreeMap so nothing depends on hash order.
    tracks: BTreeMap<String, Track>,
}

impl SlippageCurator {
    /// Takes in one bar of its symbol.
    fn on_bar(&mut self, bar: &Bar) {
        let prices = [bar.open, bar.high, bar.low, bar.close];
        if !prices.iter().all(|p| p.is_finite()) {
            return;
        }
        let window = self.rule.window;
        let t = self
            .tracks
            .entry(bar.symbol.clone())
            .or_insert_with(|| Track {
                last_close: None,
                gaps: RollingStats::new(window - 1),
                ranges: RollingStats::new(window),
            });
        if let Some(close) = t.last_close {
            t.gaps.push((bar.open - close).abs());
        }
        t.ranges.push((bar.high - bar.low).abs());
        t.last_close = Some(bar.close);
    }

    /// The expected adverse fill on `symbol`, once [`MIN_BARS`] are known.
    pub fn expected(&self, symbol: &str) -> Option<f64> {
        let t = self.tracks.get(symbol).filter(|t| t.bars() >= MIN_BARS)?;
        Some(t.gaps.median()? + self.rule.range_share * t.ranges.median()?)
    }

    /// The verdict on one decision; none for a rejection.
    pub fn judge(&self, decision: &Decision) -> Option<Curation> {
        if decision.verdict == Verdict::Reject {
            return None;
        }
        let plan = &decision.plan;
        let v = &self.verdicts;
        let Some(expected) = self.expected(&plan.symbol) else {
            let known = self.tracks.get(&plan.symbol).map_or(0, Track::bars);
            return Some(v.pass(
                &plan.id,
                &format!("warming up: {known} bar(s) of {} known", plan.symbol),
            ));
        };
        let distance = (plan.target - plan.entry).abs();
        if !distance.is_finite() || distance == 0.0 {
            return Some(v.veto(
                &plan.id,
                "no move to weigh the slippage against: the target is not a finite distance from the entry",
            ));
        }
        let ratio = expected / distance;
        let numbers = format!(
            "expected adverse fill {} is {:.1}% of the move to target {}",
            figure(expected),
            ratio * PERCENT,
            figure(distance)
        );
        let rule = &self.rule;
        Some(if ratio > rule.max_share {
            v.veto(
                &plan.id,
                &format!("{numbers}, over {}%", rule.max_share * PERCENT),
            )
        } else if ratio > rule.nudge_above {
            // max-share > 0 (checked in init) and ratio ≤ max-share here,
            // so the amount is in [−κ, 0).
            let amount = -rule.kappa * (ratio / rule.max_share).min(1.0);
            v.nudge(
                &plan.id,
                NudgeTarget::Size,
                amount,
                &format!("{numbers}, over {}%", rule.nudge_above * PERCENT),
            )
        } else {
            v.pass(&plan.id, &numbers)
        })
    }
}

impl Module for SlippageCurator {
    fn describe() -> Info {
        Info::new("curator-slippage", env!("CARGO_PKG_VERSION"), "curator")
            .subscribe(Subscription::broadcast("bar"))
            .subscribe(Subscription::broadcast("decision"))
            .publishes("curation")
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let window = ctx.setting_f64("window", 50.0)?;
        let min_window = MIN_BARS as f64;
        if !(min_window..=MAX_WINDOW).contains(&window) || window.fract() != 0.0 {
            return Err(format!(
                "window must be a whole number in {min_window}..={MAX_WINDOW}, got {window}"
            ));
        }
        let max_share = ctx.setting_f64("max-share", 0.25)?;
        // Zero would veto every plan and leave the nudge without a scale.
        if !(max_share > 0.0 && max_share <= MAX_SHARE) {
            return Err(format!(
                "max-share must be above 0 and at most {MAX_SHARE}, got {max_share}"
            ));
        }
        let rule = Rule {
            window: window as usize,
            range_share: ctx.setting_in("range-share", 0.1, 0.0..=1.0)?,
            max_share,
            // The nudge band ends where the veto starts.
            nudge_above: ctx.setting_in("nudge-above", 0.1, 0.0..=max_share)?,
            kappa: ctx.setting_in("kappa", DEFAULT_KAPPA, 0.0..=MAX_KAPPA)?,
        };
        Ok(SlippageCurator {
            verdicts: Verdicts::by(&ctx.instance),
            rule,
            tracks: BTreeMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Bar(bar) => self.on_bar(bar),
            Body::Decision(decision) => {
                if let Some(verdict) = self.judge(decision) {
                    out.publish("curation", &decision.plan.id, Body::Curation(verdict));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(SlippageCurator);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{CuratorAction, Plan, Side};

    fn curator(settings: &[(&str, &str)]) -> Result<SlippageCurator, String> {
        SlippageCurator::init(garden_sdk::testing::context("curator-slippage", settings))
    }

    fn msg(body: Body) -> Envelope {
        garden_sdk::testing::message("s", "X", body)
    }

    fn bar(c: &mut SlippageCurator, open: f64, high: f64, low: f64, close: f64) {
        let b = Bar {
            symbol: "X".into(),
            time: 0,
            open,
            high,
            low,
            close,
            volume: 1.0,
        };
        c.on_message(&msg(Body::Bar(b)), &mut Outbox::new())
            .unwrap();
    }

    /// Opens at the previous close, range 0.002: expected fill 0.0002.
    fn quiet(c: &mut SlippageCurator, n: usize) {
        for _ in 0..n {
            bar(c, 1.0, 1.001, 0.999, 1.0);
        }
    }

    /// Opens 0.002 off the previous close, range 0.006: expected fill
    /// 0.002 + 0.1 × 0.006 = 0.0026.
    fn gappy(c: &mut SlippageCurator, n: usize) {
        for i in 0..n {
            let open = if i % 2 == 0 { 1.002 } else { 0.998 };
            bar(c, open, 1.003, 0.997, 1.0);
        }
    }

    /// A decision on a long at 1.0 with its target `distance` above.
    fn decision(verdict: Verdict, distance: f64) -> Decision {
        Decision {
            plan: Plan {
                id: "p".into(),
                origin: "a".into(),
                symbol: "X".into(),
                side: Side::Long,
                entry: 1.0,
                stop: 0.99,
                target: 1.0 + distance,
                size: 1.0,
                horizon: 5,
                confidence: 0.6,
                time: 0,
            },
            verdict,
            size: 1.0,
            confidence: 0.6,
            reason: String::new(),
            curation: vec![],
        }
    }

    fn judge(c: &SlippageCurator, distance: f64) -> Curation {
        c.judge(&decision(Verdict::Approve, distance)).unwrap()
    }

    #[test]
    fn quiet_and_gappy_series_give_pass_nudge_or_veto() {
        type Feed = fn(&mut SlippageCurator, usize);
        let table: [(&str, Feed, f64, CuratorAction, f64); 6] = [
            // (series, feed, distance, action, amount); ratio in comments.
            ("quiet", quiet, 0.01, CuratorAction::Pass, 0.0), // 0.02
            (
                "quiet",
                quiet,
                0.001,
                CuratorAction::Nudge,
                -0.1 * 0.2 / 0.25,
            ), // 0.2
            ("quiet", quiet, 0.0005, CuratorAction::Veto, 0.0), // 0.4
            ("gappy", gappy, 0.05, CuratorAction::Pass, 0.0), // 0.052
            (
                "gappy",
                gappy,
                0.02,
                CuratorAction::Nudge,
                -0.1 * 0.13 / 0.25,
            ), // 0.13
            ("gappy", gappy, 0.01, CuratorAction::Veto, 0.0), // 0.26
        ];
        for (series, feed, distance, action, amount) in table {
            let mut c = curator(&[]).unwrap();
            feed(&mut c, 30);
            let v = judge(&c, distance);
            assert_eq!(v.action, action, "{series} {distance}: {}", v.reason);
            assert!(
                (v.amount - amount).abs() < 1e-9,
                "{series} {distance}: {}",
                v.amount
            );
            assert_eq!(
                (v.plan_id.as_str(), v.curator.as_str()),
                ("p", "curator-slippage")
            );
        }
    }

    #[test]
    fn a_veto_names_the_numbers_and_a_nudge_stays_within_kappa() {
        let mut c = curator(&[("kappa", "0.3")]).unwrap();
        gappy(&mut c, 30);
        let veto = judge(&c, 0.01);
        assert_eq!(
            veto.reason,
            "expected adverse fill 0.00260 is 26.0% of the move to target 0.0100, over 25%"
        );
        for distance in [0.0105, 0.015, 0.02, 0.025] {
            let v = judge(&c, distance);
            assert_eq!(v.action, CuratorAction::Nudge, "{distance}");
            assert!((-0.3..0.0).contains(&v.amount), "{distance}: {}", v.amount);
        }
        assert!(judge(&c, 0.0105).amount < judge(&c, 0.025).amount);
    }

    #[test]
    fn the_window_forgets_old_gaps() {
        let mut c = curator(&[("window", "10")]).unwrap();
        gappy(&mut c, 30);
        assert_eq!(judge(&c, 0.01).action, CuratorAction::Veto);
        quiet(&mut c, 10);
        assert!((c.expected("X").unwrap() - 0.0002).abs() < 1e-12);
        assert_eq!(judge(&c, 0.01).action, CuratorAction::Pass);
    }

    #[test]
    fn it_warms_up_on_two_bars_and_ignores_bad_ones() {
        let mut c = curator(&[]).unwrap();
        for n in 0..MIN_BARS {
            let v = judge(&c, 0.0005);
            assert_eq!(v.action, CuratorAction::Pass, "{n} bars");
            assert!(v.reason.starts_with("warming up"), "{}", v.reason);
            bar(&mut c, 1.0, 1.001, 0.999, 1.0);
            // A bar with a NaN price is not counted.
            bar(&mut c, f64::NAN, 1.001, 0.999, 1.0);
        }
        assert_eq!(judge(&c, 0.0005).action, CuratorAction::Veto);
        // A target at the entry, or not finite, has no move to weigh.
        assert_eq!(judge(&c, 0.0).action, CuratorAction::Veto);
        assert_eq!(judge(&c, f64::NAN).action, CuratorAction::Veto);
    }

    #[test]
    fn only_approved_or_modified_decisions_get_a_verdict() {
        let mut c = curator(&[]).unwrap();
        quiet(&mut c, 5);
        let table = [
            (Verdict::Approve, 1),
            (Verdict::Modify, 1),
            (Verdict::Reject, 0),
        ];
        for (verdict, count) in table {
            let mut out = Outbox::new();
            c.on_message(&msg(Body::Decision(decision(verdict, 0.01))), &mut out)
                .unwrap();
            assert_eq!(out.messages().len(), count, "{verdict:?}");
            if count == 1 {
                assert_eq!(out.messages()[0].topic, "curation");
                assert_eq!(out.messages()[0].key, "p");
                assert!(matches!(&out.messages()[0].body, Body::Curation(v) if v.plan_id == "p"));
            }
        }
    }

    /// Settings as (name, value) pairs.
    type Pairs = &'static [(&'static str, &'static str)];

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        let table: [(Pairs, Option<&str>); 9] = [
            (&[], None),
            (&[("window", "2"), ("nudge-above", "0.25")], None),
            (&[("window", "1")], Some("window")),
            (&[("window", "10.5")], Some("window")),
            (&[("range-share", "1.5")], Some("range-share")),
            (&[("max-share", "0")], Some("max-share")),
            (&[("nudge-above", "0.3")], Some("nudge-above")),
            (&[("kappa", "-0.1")], Some("kappa")),
            (&[("kappa", "lots")], Some("kappa")),
        ];
        for (settings, bad) in table {
            match (curator(settings), bad) {
                (Ok(_), None) => {}
                (Err(e), Some(name)) => assert!(e.contains(name), "{e}"),
                (Ok(_), Some(name)) => panic!("{name} accepted in {settings:?}"),
                (Err(e), None) => panic!("{settings:?} refused: {e}"),
            }
        }
    }
}
