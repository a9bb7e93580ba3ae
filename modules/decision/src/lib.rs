//! Decision: risk rules between the fused plan and the trader.
//!
//! Each originating variant trades its own paper account, so the limits apply
//! per variant. For every scored plan, in this order:
//!
//! 1. reject a malformed plan (stop or target on the wrong side of entry,
//!    non-positive prices or size);
//! 2. reject when the fused confidence is below `min-confidence`;
//! 3. reject when the variant already has `max-open-plans` plans open;
//! 4. size = min(plan size, risk budget / stop distance, room left under
//!    `max-position` for the symbol), where the risk budget is
//!    `risk-per-plan` × the variant's equity (initial `equity` plus realised
//!    pnl from feedback); reject if nothing is left, **modify** if the size
//!    shrank, **approve** otherwise.
//!
//! The decision goes to topic `decision`, keyed by the originating variant, so
//! the trader and the variant itself (an addressed subscription) receive it.

use std::collections::HashMap;

use garden_sdk::{
    Body, Decision, Envelope, FillKind, Gene, Info, InitContext, Module, Outbox, Plan, ScoredPlan,
    Subscription, Verdict,
};

#[derive(Default)]
struct Account {
    open_plans: u32,
    /// Absolute open size per symbol.
    exposure: HashMap<String, f64>,
    realised: f64,
    /// Sizes of approved plans, by plan id, until they close.
    sizes: HashMap<String, (String, f64)>,
}

/// The decision module's state.
pub struct Risk {
    max_position: f64,
    max_open_plans: u32,
    risk_per_plan: f64,
    min_confidence: f64,
    equity: f64,
    accounts: HashMap<String, Account>,
}

/// What the rules say about one plan: verdict, size, reason.
pub fn judge(
    plan: &Plan,
    confidence: f64,
    equity: f64,
    open_plans: u32,
    exposure: f64,
    limits: &Limits,
) -> (Verdict, f64, String) {
    let s = plan.side.sign();
    let valid = plan.entry > 0.0
        && plan.size > 0.0
        && plan.entry.is_finite()
        && (plan.entry - plan.stop) * s > 0.0
        && (plan.target - plan.entry) * s > 0.0;
    if !valid {
        return (Verdict::Reject, 0.0, "malformed plan: stop or target on the wrong side of entry, or non-positive price or size".into());
    }
    // NaN confidence is rejected too: it is not >= anything.
    if confidence.is_nan() || confidence < limits.min_confidence {
        return (
            Verdict::Reject,
            0.0,
            format!(
                "fused confidence {confidence:.3} below minimum {:.3}",
                limits.min_confidence
            ),
        );
    }
    if open_plans >= limits.max_open_plans {
        return (
            Verdict::Reject,
            0.0,
            format!(
                "{open_plans} plans already open (max {})",
                limits.max_open_plans
            ),
        );
    }
    let risk_size = limits.risk_per_plan * equity.max(0.0) / (plan.entry - plan.stop).abs();
    let room = (limits.max_position - exposure).max(0.0);
    let size = plan.size.min(risk_size).min(room);
    if size.is_nan() || size <= 0.0 {
        return (
            Verdict::Reject,
            0.0,
            format!(
                "no room: exposure {exposure} at max position {}",
                limits.max_position
            ),
        );
    }
    if size < plan.size {
        let why = if size == room {
            "position limit"
        } else {
            "risk per plan"
        };
        (
            Verdict::Modify,
            size,
            format!("resized from {} to {size:.2} by {why}", plan.size),
        )
    } else {
        (Verdict::Approve, size, "within limits".into())
    }
}

/// The numeric limits, separate from the state so [`judge`] is a pure function.
pub struct Limits {
    /// Largest absolute size per symbol and variant.
    pub max_position: f64,
    /// Most plans one variant may have open.
    pub max_open_plans: u32,
    /// Fraction of equity one plan may lose at its stop.
    pub risk_per_plan: f64,
    /// Least fused confidence to trade.
    pub min_confidence: f64,
}

impl Risk {
    fn limits(&self) -> Limits {
        Limits {
            max_position: self.max_position,
            max_open_plans: self.max_open_plans,
            risk_per_plan: self.risk_per_plan,
            min_confidence: self.min_confidence,
        }
    }

    fn decide(&mut self, scored: &ScoredPlan, out: &mut Outbox) {
        let limits = self.limits();
        let start = self.equity;
        let account = self.accounts.entry(scored.plan.origin.clone()).or_default();
        let exposure = account
            .exposure
            .get(&scored.plan.symbol)
            .copied()
            .unwrap_or(0.0);
        let (verdict, size, reason) = judge(
            &scored.plan,
            scored.confidence,
            start + account.realised,
            account.open_plans,
            exposure,
            &limits,
        );
        if verdict != Verdict::Reject {
            account.open_plans += 1;
            *account
                .exposure
                .entry(scored.plan.symbol.clone())
                .or_default() += size;
            account
                .sizes
                .insert(scored.plan.id.clone(), (scored.plan.symbol.clone(), size));
        }
        let key = scored.plan.origin.clone();
        let decision = Decision {
            plan: scored.plan.clone(),
            verdict,
            size,
            confidence: scored.confidence,
            reason,
        };
        out.publish("decision", &key, Body::Decision(decision));
    }
}

impl Module for Risk {
    fn describe() -> Info {
        Info::new("decision", env!("CARGO_PKG_VERSION"), "decision")
            .subscribe(Subscription::shared("scored"))
            .subscribe(Subscription::broadcast("fill"))
            .subscribe(Subscription::broadcast("feedback"))
            .publishes("decision")
            .gene(Gene::float(
                "max-position",
                1000.0,
                1.0e7,
                100000.0,
                10000.0,
            ))
            .gene(Gene::int("max-open-plans", 1.0, 100.0, 3.0, 1.0))
            .gene(Gene::float("risk-per-plan", 0.0001, 0.1, 0.01, 0.002))
            .gene(Gene::float("min-confidence", 0.0, 1.0, 0.45, 0.05))
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let max_open = ctx.int("max-open-plans")?;
        Ok(Risk {
            max_position: ctx.float("max-position")?,
            max_open_plans: u32::try_from(max_open)
                .map_err(|_| format!("max-open-plans out of range: {max_open}"))?,
            risk_per_plan: ctx.float("risk-per-plan")?,
            min_confidence: ctx.float("min-confidence")?,
            equity: ctx.setting_f64("equity", 100_000.0)?,
            accounts: HashMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Scored(scored) => self.decide(scored, out),
            Body::Fill(fill) if fill.kind != FillKind::Entry => {
                if let Some(account) = self.accounts.get_mut(&fill.origin)
                    && let Some((symbol, size)) = account.sizes.remove(&fill.plan_id)
                {
                    account.open_plans = account.open_plans.saturating_sub(1);
                    if let Some(e) = account.exposure.get_mut(&symbol) {
                        *e = (*e - size).max(0.0);
                    }
                }
            }
            Body::Feedback(fb) => {
                if let Some(a) = self.accounts.get_mut(&fb.origin) {
                    a.realised += fb.pnl;
                }
            }
            Body::Retired(origin) => {
                self.accounts.remove(origin);
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(Risk);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::Side;

    fn limits() -> Limits {
        Limits {
            max_position: 100_000.0,
            max_open_plans: 2,
            risk_per_plan: 0.01,
            min_confidence: 0.5,
        }
    }

    fn plan(side: Side, entry: f64, stop: f64, target: f64, size: f64) -> Plan {
        Plan {
            id: "p".into(),
            origin: "a".into(),
            symbol: "X".into(),
            side,
            entry,
            stop,
            target,
            size,
            horizon: 5,
            confidence: 0.5,
            time: 0,
        }
    }

    #[test]
    fn table_of_decisions() {
        let l = limits();
        let long = plan(Side::Long, 1.0, 0.99, 1.02, 10_000.0);
        // (plan, confidence, equity, open, exposure) -> verdict, size
        let cases: Vec<(Plan, f64, f64, u32, f64, Verdict, f64)> = vec![
            (
                long.clone(),
                0.6,
                100_000.0,
                0,
                0.0,
                Verdict::Approve,
                10_000.0,
            ),
            (long.clone(), 0.4, 100_000.0, 0, 0.0, Verdict::Reject, 0.0),
            (long.clone(), 0.6, 100_000.0, 2, 0.0, Verdict::Reject, 0.0),
            // risk: 1% of 50k = 500 / 0.01 stop distance = 50k units: fine; of 5k = 5k units
            (long.clone(), 0.6, 5_000.0, 0, 0.0, Verdict::Modify, 5_000.0),
            (
                long.clone(),
                0.6,
                100_000.0,
                0,
                95_000.0,
                Verdict::Modify,
                5_000.0,
            ),
            (
                long.clone(),
                0.6,
                100_000.0,
                0,
                100_000.0,
                Verdict::Reject,
                0.0,
            ),
            (
                plan(Side::Long, 1.0, 1.01, 1.02, 1.0),
                0.9,
                100_000.0,
                0,
                0.0,
                Verdict::Reject,
                0.0,
            ),
            (
                plan(Side::Short, 1.0, 1.01, 0.98, 1.0),
                0.9,
                100_000.0,
                0,
                0.0,
                Verdict::Approve,
                1.0,
            ),
            (
                plan(Side::Short, 1.0, 0.99, 0.98, 1.0),
                0.9,
                100_000.0,
                0,
                0.0,
                Verdict::Reject,
                0.0,
            ),
            (
                long.clone(),
                f64::NAN,
                100_000.0,
                0,
                0.0,
                Verdict::Reject,
                0.0,
            ),
        ];
        for (i, (p, c, eq, open, exp, verdict, size)) in cases.into_iter().enumerate() {
            let (v, s, reason) = judge(&p, c, eq, open, exp, &l);
            assert_eq!(v, verdict, "case {i}: {reason}");
            assert!((s - size).abs() < 1e-6, "case {i}: size {s} != {size}");
            assert!(!reason.is_empty());
        }
    }
}
