//! Regime curator (governs plans, at fusion): vetoes a plan that trades
//! against a trending market.
//!
//! It keeps the latest regime label per symbol (the `regime` module's
//! context changes, keyed by symbol) and an EMA(`trend-period`) of each
//! symbol's closes. While the label starts with `trend-`, the trend's
//! direction is the sign of the EMA's change over the last `slope-bars`
//! bars; a plan on the other side is vetoed. In a range, with no label yet,
//! or while the EMA warms up, every plan passes. Only bars before the
//! plan's are used, so the verdict has no look-ahead.
//!
//! Settings: `trend-period` (50), `slope-bars` (10).

use std::collections::{BTreeMap, VecDeque};

use garden_sdk::curation::Verdicts;
use garden_sdk::indicators::Ema;
use garden_sdk::{Body, Envelope, Info, InitContext, Module, Outbox, Plan, Subscription};

/// Longest EMA period and slope window accepted.
const MAX_BARS: f64 = 10_000.0;

struct Trend {
    ema: Ema,
    /// The last `slope-bars` + 1 EMA values, oldest first.
    recent: VecDeque<f64>,
    label: Option<String>,
}

/// The curator's state.
pub struct RegimeCurator {
    verdicts: Verdicts,
    period: usize,
    slope_bars: usize,
    /// By symbol; BTreeMap so nothing depends on hash order.
    trends: BTreeMap<String, Trend>,
}

impl RegimeCurator {
    fn trend(&mut self, symbol: &str) -> &mut Trend {
        let period = self.period;
        self.trends
            .entry(symbol.to_string())
            .or_insert_with(|| Trend {
                ema: Ema::new(period),
                recent: VecDeque::new(),
                label: None,
            })
    }

    /// +1 rising, −1 falling, 0 unknown or flat: the EMA's change over the
    /// slope window.
    fn direction(&self, symbol: &str) -> f64 {
        let Some(t) = self.trends.get(symbol) else {
            return 0.0;
        };
        match (t.recent.front(), t.recent.back()) {
            (Some(first), Some(last)) if t.recent.len() > self.slope_bars => {
                (last - first).signum() * f64::from(u8::from(last != first))
            }
            _ => 0.0,
        }
    }

    /// The verdict on one plan.
    pub fn judge(&self, plan: &Plan) -> garden_sdk::Curation {
        let label = self
            .trends
            .get(&plan.symbol)
            .and_then(|t| t.label.as_deref());
        let Some(label) = label.filter(|l| l.starts_with("trend-")) else {
            return self.verdicts.pass(&plan.id, "no trend");
        };
        let direction = self.direction(&plan.symbol);
        if direction != 0.0 && plan.side.sign() != direction {
            let way = if direction > 0.0 { "up" } else { "down" };
            return self
                .verdicts
                .veto(&plan.id, &format!("against the {label} {way}trend"));
        }
        self.verdicts.pass(&plan.id, "with the trend")
    }
}

impl Module for RegimeCurator {
    fn describe() -> Info {
        Info::new("curator-regime", env!("CARGO_PKG_VERSION"), "curator")
            .subscribe(Subscription::broadcast("bar"))
            .subscribe(Subscription::broadcast("regime"))
            .subscribe(Subscription::shared("plan"))
            .publishes("curation")
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let whole = |name: &str, default: f64| {
            ctx.setting_whole(name, default, 1.0..=MAX_BARS)
                .map(|v| v as usize)
        };
        Ok(RegimeCurator {
            verdicts: Verdicts::by(&ctx.instance),
            period: whole("trend-period", 50.0)?,
            slope_bars: whole("slope-bars", 10.0)?,
            trends: BTreeMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Bar(bar) => {
                let keep = self.slope_bars + 1;
                let t = self.trend(&bar.symbol);
                if let Some(v) = t.ema.update(bar.close) {
                    t.recent.push_back(v);
                    if t.recent.len() > keep {
                        t.recent.pop_front();
                    }
                }
            }
            // Regime changes are keyed by their symbol.
            Body::Context(c) => self.trend(&msg.key).label = Some(c.label.clone()),
            Body::Plan(plan) => {
                let verdict = self.judge(plan);
                out.publish("curation", &plan.id, Body::Curation(verdict));
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(RegimeCurator);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{Bar, ContextChange, CuratorAction, Side};

    fn curator() -> RegimeCurator {
        let settings = [("trend-period", "3"), ("slope-bars", "2")];
        RegimeCurator::init(garden_sdk::testing::context("curator-regime", &settings)).unwrap()
    }

    fn msg(key: &str, body: Body) -> Envelope {
        garden_sdk::testing::message("s", key, body)
    }

    fn bars(c: &mut RegimeCurator, closes: &[f64]) {
        let mut out = Outbox::new();
        for close in closes {
            let bar = Bar {
                symbol: "X".into(),
                time: 0,
                open: *close,
                high: *close,
                low: *close,
                close: *close,
                volume: 1.0,
            };
            c.on_message(&msg("X", Body::Bar(bar)), &mut out).unwrap();
        }
    }

    fn label(c: &mut RegimeCurator, label: &str) {
        let change = ContextChange {
            label: label.into(),
            detail: String::new(),
        };
        c.on_message(&msg("X", Body::Context(change)), &mut Outbox::new())
            .unwrap();
    }

    fn plan(side: Side) -> Plan {
        let (stop, target) = if side == Side::Long {
            (0.9, 1.2)
        } else {
            (1.1, 0.8)
        };
        garden_sdk::testing::plan("p", side, 1.0, stop, target)
    }

    #[test]
    fn a_short_in_an_uptrend_is_vetoed_and_a_long_passes() {
        let mut c = curator();
        bars(&mut c, &[1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]);
        label(&mut c, "trend-calm");
        let short = c.judge(&plan(Side::Short));
        assert_eq!(short.action, CuratorAction::Veto);
        assert!(short.reason.contains("uptrend"), "{}", short.reason);
        assert_eq!(c.judge(&plan(Side::Long)).action, CuratorAction::Pass);
        assert_eq!(short.curator, "curator-regime");
    }

    #[test]
    fn a_range_or_no_label_passes_everything() {
        let mut c = curator();
        bars(&mut c, &[1.6, 1.5, 1.4, 1.3, 1.2, 1.1]);
        assert_eq!(c.judge(&plan(Side::Long)).action, CuratorAction::Pass);
        label(&mut c, "range-volatile");
        assert_eq!(c.judge(&plan(Side::Long)).action, CuratorAction::Pass);
        label(&mut c, "trend-volatile");
        assert_eq!(c.judge(&plan(Side::Long)).action, CuratorAction::Veto);
    }

    #[test]
    fn every_plan_gets_a_verdict_keyed_by_its_id() {
        let mut c = curator();
        let mut out = Outbox::new();
        c.on_message(&msg("p", Body::Plan(plan(Side::Long))), &mut out)
            .unwrap();
        assert_eq!(out.messages().len(), 1);
        assert_eq!(out.messages()[0].key, "p");
        assert!(matches!(out.messages()[0].body, Body::Curation(_)));
    }
}
