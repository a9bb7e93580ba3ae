//! Micro-expert: return and volume anomaly, by robust z-scores.
//!
//! For each symbol it keeps the last `window` bar returns and volumes. When a
//! plan arrives it scores the latest bar of the plan's symbol:
//!
//! * a return outlier (|z| ≥ `z-outlier`) in the plan's direction **with**
//!   volume above normal (volume z ≥ `z-volume`) is a confirmed breakout:
//!   evidence for the plan, `+confirm-llr`;
//! * a return outlier without that volume is a plan entering on an outlier
//!   bar, likely to revert: evidence against, `-outlier-llr`;
//! * otherwise the bar is ordinary: a log-likelihood ratio of 0.
//!
//! z = (x − median) / (1.4826 · MAD), which a single wild bar cannot drag
//! the way it drags a mean and standard deviation.

use std::collections::HashMap;

use garden_sdk::indicators::RollingStats;
use garden_sdk::{
    Bar, Body, Envelope, Evidence, Gene, Info, InitContext, Module, Outbox, Plan, Subscription,
};

/// Per-symbol history.
struct Tape {
    returns: RollingStats,
    volumes: RollingStats,
    last_close: Option<f64>,
    /// (return, volume) of the latest bar.
    last: Option<(f64, f64)>,
}

/// The expert's state.
pub struct Anomaly {
    name: String,
    window: usize,
    z_outlier: f64,
    z_volume: f64,
    confirm_llr: f64,
    outlier_llr: f64,
    tapes: HashMap<String, Tape>,
}

impl Anomaly {
    fn on_bar(&mut self, bar: &Bar) {
        let window = self.window;
        let tape = self
            .tapes
            .entry(bar.symbol.clone())
            .or_insert_with(|| Tape {
                returns: RollingStats::new(window),
                volumes: RollingStats::new(window),
                last_close: None,
                last: None,
            });
        if let Some(prev) = tape.last_close.filter(|p| *p > 0.0) {
            let ret = bar.close / prev - 1.0;
            // Score the bar against the history before it, then add it.
            tape.last = Some((ret, bar.volume));
            tape.returns.push(ret);
            tape.volumes.push(bar.volume);
        }
        tape.last_close = Some(bar.close);
    }

    /// The evidence about `plan`, from the latest bar of its symbol.
    pub fn judge(&self, plan: &Plan) -> Evidence {
        let (llr, reason) = self.score(plan);
        Evidence {
            plan_id: plan.id.clone(),
            expert: self.name.clone(),
            llr,
            reason,
        }
    }

    fn score(&self, plan: &Plan) -> (f64, String) {
        let Some(tape) = self.tapes.get(&plan.symbol) else {
            return (0.0, "no bars seen for this symbol yet".into());
        };
        let Some((ret, volume)) = tape.last else {
            return (0.0, "not enough history".into());
        };
        let (Some(z_ret), Some(z_vol)) =
            (tape.returns.robust_z(ret), tape.volumes.robust_z(volume))
        else {
            return (0.0, "history too flat to score".into());
        };
        if z_ret.abs() < self.z_outlier {
            return (0.0, format!("ordinary bar (return z {z_ret:.2})"));
        }
        let with_plan = z_ret.signum() == plan.side.sign();
        if with_plan && z_vol >= self.z_volume {
            (
                self.confirm_llr,
                format!("breakout confirmed by volume (return z {z_ret:.2}, volume z {z_vol:.2})"),
            )
        } else {
            (
                -self.outlier_llr,
                format!("entry on an outlier bar (return z {z_ret:.2}, volume z {z_vol:.2})"),
            )
        }
    }
}

impl Module for Anomaly {
    fn describe() -> Info {
        Info::new("expert-anomaly", env!("CARGO_PKG_VERSION"), "expert")
            .subscribe(Subscription::broadcast("bar"))
            .subscribe(Subscription::shared("plan"))
            .publishes("evidence")
            .gene(Gene::int("window", 10.0, 500.0, 100.0, 20.0))
            .gene(Gene::float("z-outlier", 1.0, 8.0, 2.5, 0.3))
            .gene(Gene::float("z-volume", 0.0, 8.0, 1.0, 0.3))
            .gene(Gene::float("confirm-llr", 0.0, 2.0, 0.3, 0.1))
            .gene(Gene::float("outlier-llr", 0.0, 2.0, 0.4, 0.1))
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let window = ctx.int("window")?;
        Ok(Anomaly {
            name: "expert-anomaly".into(),
            window: usize::try_from(window)
                .ok()
                .filter(|w| *w >= 3)
                .ok_or_else(|| format!("window must be at least 3, got {window}"))?,
            z_outlier: ctx.float("z-outlier")?,
            z_volume: ctx.float("z-volume")?,
            confirm_llr: ctx.float("confirm-llr")?,
            outlier_llr: ctx.float("outlier-llr")?,
            tapes: HashMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Bar(bar) => self.on_bar(bar),
            Body::Plan(plan) => {
                let evidence = self.judge(plan);
                out.publish("evidence", &plan.id, Body::Evidence(evidence));
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(Anomaly);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{GeneValue, Param, Side};

    fn expert() -> Anomaly {
        let p = |name: &str, v: f64| Param {
            name: name.into(),
            value: GeneValue::Float(v),
        };
        Anomaly::init(InitContext {
            member: 0,
            snapshot: None,
            instance: "e".into(),
            params: vec![
                Param {
                    name: "window".into(),
                    value: GeneValue::Int(50),
                },
                p("z-outlier", 3.0),
                p("z-volume", 1.0),
                p("confirm-llr", 0.3),
                p("outlier-llr", 0.4),
            ],
            settings: vec![],
        })
        .unwrap()
    }

    fn feed(e: &mut Anomaly, closes_and_volumes: &[(f64, f64)]) {
        for (i, (c, v)) in closes_and_volumes.iter().enumerate() {
            e.on_bar(&Bar {
                symbol: "X".into(),
                time: i as i64,
                open: *c,
                high: *c,
                low: *c,
                close: *c,
                volume: *v,
            });
        }
    }

    fn plan(side: Side) -> Plan {
        Plan {
            id: "p".into(),
            origin: "a".into(),
            symbol: "X".into(),
            side,
            entry: 1.0,
            stop: 0.9,
            target: 1.2,
            size: 1.0,
            horizon: 5,
            confidence: 0.5,
            time: 0,
        }
    }

    /// Alternating small moves, so the MAD is not zero.
    fn calm() -> Vec<(f64, f64)> {
        (0..40)
            .map(|i| {
                (
                    100.0 + if i % 2 == 0 { 0.0 } else { 0.1 } + i as f64 * 0.01,
                    100.0 + (i % 3) as f64,
                )
            })
            .collect()
    }

    #[test]
    fn ordinary_bar_gives_no_evidence() {
        let mut e = expert();
        feed(&mut e, &calm());
        assert_eq!(e.judge(&plan(Side::Long)).llr, 0.0);
    }

    #[test]
    fn volume_confirmed_breakout_supports_plan_in_its_direction() {
        let mut e = expert();
        let mut bars = calm();
        bars.push((110.0, 1000.0));
        feed(&mut e, &bars);
        assert!(e.judge(&plan(Side::Long)).llr > 0.0);
        assert!(
            e.judge(&plan(Side::Short)).llr < 0.0,
            "short into a breakout is opposed"
        );
    }

    #[test]
    fn outlier_without_volume_opposes_plan() {
        let mut e = expert();
        let mut bars = calm();
        bars.push((110.0, 100.0));
        feed(&mut e, &bars);
        let ev = e.judge(&plan(Side::Long));
        assert!(ev.llr < 0.0, "{}", ev.reason);
        assert!(ev.reason.contains("outlier"));
    }
}
