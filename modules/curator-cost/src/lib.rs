//! Cost curator (governs scored plans, at the decision stage): vetoes a
//! plan whose expected move does not clear what the round trip costs.
//!
//! With `p` the fused confidence of the scored plan, per unit of size:
//!
//! - edge = p·|target − entry| − (1 − p)·|entry − stop|, the expected
//!   move if the plan ends at its target or its stop;
//! - cost = 2·|entry|·(`fee-bps` + `slippage-bps`)/10 000, a round trip as
//!   the trader charges it (slippage and fee on the entry and on the exit).
//!
//! The rule: veto if edge < `min-edge-cost` × cost; if it clears but
//! edge < `nudge-below` × cost, a size nudge in [−`kappa`, 0), −κ at the
//! veto line and shrinking linearly to 0 at the `nudge-below` line (the
//! thinner the edge, the smaller the position); otherwise pass. A plan
//! whose prices or confidence are not finite cannot be shown to clear its
//! costs and is vetoed.
//!
//! Settings: `fee-bps` (0.2), `slippage-bps` (0.5) — the trader's defaults
//! —, `min-edge-cost` (1.0), `nudge-below` (3.0, at least `min-edge-cost`),
//! `kappa` (0.1).
//!
//! Invariants: exactly one verdict per scored plan, published when the plan
//! arrives, keyed by its id; every nudge is in [−κ, 0). The curator keeps no
//! state between plans, so its verdicts depend on nothing but the plan.

use garden_sdk::curation::{DEFAULT_KAPPA, MAX_KAPPA, Verdicts, figure};
use garden_sdk::{
    Body, Curation, Envelope, Info, InitContext, Module, NudgeTarget, Outbox, ScoredPlan,
    Subscription,
};

/// Basis points in one.
const BPS: f64 = 10_000.0;

/// Fills per round trip (entry and exit), each paying fee and slippage.
const FILLS_PER_ROUND_TRIP: f64 = 2.0;

/// Highest fee or slippage accepted, in basis points (10 % of the price
/// per fill is already no market anyone would trade).
const MAX_BPS: f64 = 1_000.0;

/// Highest edge-to-cost multiple accepted for `min-edge-cost` and
/// `nudge-below`.
const MAX_MULTIPLE: f64 = 1_000.0;

/// The rule's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Fee per fill, in basis points of the notional.
    pub fee_bps: f64,
    /// Adverse price move per fill, in basis points of the price.
    pub slippage_bps: f64,
    /// Veto below this many round-trip costs of edge.
    pub min_edge_cost: f64,
    /// Nudge the size down below this many round-trip costs of edge.
    pub nudge_below: f64,
    /// Bound on the size nudge.
    pub kappa: f64,
}

impl Rule {
    /// The round-trip cost per unit at `entry`.
    pub fn cost(&self, entry: f64) -> f64 {
        FILLS_PER_ROUND_TRIP * entry.abs() * (self.fee_bps + self.slippage_bps) / BPS
    }
}

/// The expected move per unit of a plan that wins with probability `p`:
/// the target's distance if it wins, minus the stop's if it loses.
pub fn edge(p: f64, entry: f64, stop: f64, target: f64) -> f64 {
    p * (target - entry).abs() - (1.0 - p) * (entry - stop).abs()
}

/// The curator's state: its signature and its rule.
pub struct CostCurator {
    verdicts: Verdicts,
    rule: Rule,
}

impl CostCurator {
    /// The verdict on one scored plan (pure: depends only on the plan).
    pub fn judge(&self, scored: &ScoredPlan) -> Curation {
        let plan = &scored.plan;
        let p = scored.confidence;
        let known = [p, plan.entry, plan.stop, plan.target]
            .iter()
            .all(|v| v.is_finite());
        if !known || !(0.0..=1.0).contains(&p) {
            return self.verdicts.veto(
                &plan.id,
                "cannot weigh the costs: a price or the confidence is not a finite number",
            );
        }
        let rule = &self.rule;
        let edge = edge(p, plan.entry, plan.stop, plan.target);
        let cost = rule.cost(plan.entry);
        let floor = rule.min_edge_cost * cost;
        let comfortable = rule.nudge_below * cost;
        if edge < floor {
            return self.verdicts.veto(
                &plan.id,
                &format!(
                    "edge {} per unit is below {} × the round-trip cost {}",
                    figure(edge),
                    rule.min_edge_cost,
                    figure(cost)
                ),
            );
        }
        if edge < comfortable {
            // Here floor ≤ edge < comfortable, so the band is not empty
            // and the share is in (0, 1]: −κ at the veto line, towards 0
            // at the comfortable one.
            let thin = (comfortable - edge) / (comfortable - floor);
            return self.verdicts.nudge(
                &plan.id,
                NudgeTarget::Size,
                -rule.kappa * thin,
                &format!(
                    "thin edge: {} per unit, under {} × the round-trip cost {}",
                    figure(edge),
                    rule.nudge_below,
                    figure(cost)
                ),
            );
        }
        self.verdicts.pass(
            &plan.id,
            &format!(
                "edge {} per unit clears the round-trip cost {}",
                figure(edge),
                figure(cost)
            ),
        )
    }
}

impl Module for CostCurator {
    fn describe() -> Info {
        Info::new("curator-cost", env!("CARGO_PKG_VERSION"), "curator")
            .subscribe(Subscription::shared("scored"))
            .publishes("curation")
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let min_edge_cost = ctx.setting_in("min-edge-cost", 1.0, 0.0..=MAX_MULTIPLE)?;
        // The nudge band starts where the veto ends, so it cannot start
        // below it.
        let nudge_below = ctx.setting_in("nudge-below", 3.0, min_edge_cost..=MAX_MULTIPLE)?;
        let rule = Rule {
            fee_bps: ctx.setting_in("fee-bps", 0.2, 0.0..=MAX_BPS)?,
            slippage_bps: ctx.setting_in("slippage-bps", 0.5, 0.0..=MAX_BPS)?,
            min_edge_cost,
            nudge_below,
            kappa: ctx.setting_in("kappa", DEFAULT_KAPPA, 0.0..=MAX_KAPPA)?,
        };
        Ok(CostCurator {
            verdicts: Verdicts::by(&ctx.instance),
            rule,
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        if let Body::Scored(scored) = &msg.body {
            let verdict = self.judge(scored);
            out.publish("curation", &scored.plan.id, Body::Curation(verdict));
        }
        Ok(())
    }
}

garden_sdk::export_module!(CostCurator);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{CuratorAction, Side};

    fn init(settings: &[(&str, &str)]) -> Result<CostCurator, String> {
        CostCurator::init(garden_sdk::testing::context("curator-cost", settings))
    }

    /// A long at 1.0 with its target `up` above and its stop `down` below,
    /// fused to confidence `p`.
    fn scored(p: f64, up: f64, down: f64) -> ScoredPlan {
        ScoredPlan {
            plan: garden_sdk::testing::plan("p", Side::Long, 1.0, 1.0 - down, 1.0 + up),
            prior_log_odds: 0.0,
            log_odds: 0.0,
            confidence: p,
            experts: vec![],
            missing: vec![],
            confirmed: false,
            curation: vec![],
        }
    }

    fn msg(body: Body) -> Envelope {
        garden_sdk::testing::message("fusion", "p", body)
    }

    #[test]
    fn the_table_of_confidence_and_distances_gives_the_action() {
        // Defaults at entry 1.0: cost = 2 × 0.7 bps = 0.00014 per unit, so
        // the veto line is 0.00014 and the nudge line 0.00042.
        let c = init(&[]).unwrap();
        let table = [
            // (p, target distance, stop distance, action, edge)
            (0.5, 0.01, 0.01, CuratorAction::Veto, 0.0),
            (0.4, 0.01, 0.01, CuratorAction::Veto, -0.002),
            (0.4, 0.01, 0.005, CuratorAction::Pass, 0.001),
            (0.9, 0.0001, 0.0001, CuratorAction::Veto, 0.00008),
            (0.5, 0.0103, 0.01, CuratorAction::Nudge, 0.00015),
            (0.5, 0.0108, 0.01, CuratorAction::Nudge, 0.0004),
            (0.5, 0.0109, 0.01, CuratorAction::Pass, 0.00045),
            (0.6, 0.01, 0.01, CuratorAction::Pass, 0.002),
        ];
        for (p, up, down, action, want_edge) in table {
            let s = scored(p, up, down);
            let e = edge(p, s.plan.entry, s.plan.stop, s.plan.target);
            assert!(
                (e - want_edge).abs() < 1e-12,
                "edge {e} for {p} {up} {down}"
            );
            let v = c.judge(&s);
            assert_eq!(v.action, action, "p {p} up {up} down {down}: {}", v.reason);
            assert_eq!(v.plan_id, "p");
            assert_eq!(v.curator, "curator-cost");
        }
    }

    #[test]
    fn a_veto_names_the_edge_and_the_cost() {
        let c = init(&[]).unwrap();
        let v = c.judge(&scored(0.5, 0.01, 0.01));
        assert_eq!(v.action, CuratorAction::Veto);
        assert!(
            v.reason.contains("below 1 × the round-trip cost"),
            "{}",
            v.reason
        );
        assert!(v.reason.contains("0.000140"), "{}", v.reason);
    }

    #[test]
    fn the_nudge_is_within_kappa_and_grows_as_the_edge_thins() {
        let c = init(&[("kappa", "0.2")]).unwrap();
        // Edges 0.00015 (just over the veto line) and 0.0004 (near the
        // nudge line): −0.2 × (0.00042 − e) / 0.00028.
        let thin = c.judge(&scored(0.5, 0.0103, 0.01));
        let thicker = c.judge(&scored(0.5, 0.0108, 0.01));
        for (v, want) in [(&thin, -0.2 * 27.0 / 28.0), (&thicker, -0.2 * 2.0 / 28.0)] {
            assert_eq!(v.action, CuratorAction::Nudge);
            assert_eq!(v.target, NudgeTarget::Size);
            assert!((v.amount - want).abs() < 1e-9, "{} vs {want}", v.amount);
            assert!((-0.2..0.0).contains(&v.amount), "{}", v.amount);
        }
        assert!(thin.amount < thicker.amount);
    }

    #[test]
    fn costs_and_lines_follow_the_settings() {
        // No costs: any positive edge passes, a negative one is vetoed.
        let free = init(&[("fee-bps", "0"), ("slippage-bps", "0")]).unwrap();
        assert_eq!(
            free.judge(&scored(0.5, 0.0101, 0.01)).action,
            CuratorAction::Pass
        );
        assert_eq!(
            free.judge(&scored(0.5, 0.0099, 0.01)).action,
            CuratorAction::Veto
        );
        // Dearer costs (10 bps a fill: 0.002 a round trip) veto what the
        // defaults pass.
        let dear = init(&[("fee-bps", "5"), ("slippage-bps", "5")]).unwrap();
        assert_eq!(
            dear.judge(&scored(0.6, 0.01, 0.01)).action,
            CuratorAction::Nudge
        );
        assert_eq!(
            dear.judge(&scored(0.55, 0.01, 0.01)).action,
            CuratorAction::Veto
        );
    }

    #[test]
    fn unreadable_plans_are_vetoed_not_panicked_on() {
        let c = init(&[]).unwrap();
        let mut nan_target = scored(0.6, 0.01, 0.01);
        nan_target.plan.target = f64::NAN;
        let mut wild_p = scored(0.6, 0.01, 0.01);
        wild_p.confidence = 1.5;
        let mut inf_entry = scored(0.6, 0.01, 0.01);
        inf_entry.plan.entry = f64::INFINITY;
        for s in [nan_target, wild_p, inf_entry] {
            assert_eq!(c.judge(&s).action, CuratorAction::Veto);
        }
    }

    /// Settings as (name, value) pairs.
    type Pairs = &'static [(&'static str, &'static str)];

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        let table: [(Pairs, Option<&str>); 8] = [
            (&[], None),
            (&[("fee-bps", "-1")], Some("fee-bps")),
            (&[("slippage-bps", "5000")], Some("slippage-bps")),
            (&[("min-edge-cost", "-0.5")], Some("min-edge-cost")),
            (&[("min-edge-cost", "4")], Some("nudge-below")),
            (&[("nudge-below", "0.5")], Some("nudge-below")),
            (&[("kappa", "0.95")], Some("kappa")),
            (&[("kappa", "x")], Some("kappa")),
        ];
        for (settings, bad) in table {
            match (init(settings), bad) {
                (Ok(_), None) => {}
                (Err(e), Some(name)) => assert!(e.contains(name), "{e}"),
                (Ok(_), Some(name)) => panic!("{name} accepted in {settings:?}"),
                (Err(e), None) => panic!("{settings:?} refused: {e}"),
            }
        }
    }

    #[test]
    fn each_scored_plan_gets_one_verdict_keyed_by_its_id() {
        let mut c = init(&[]).unwrap();
        let mut out = Outbox::new();
        let mut s = scored(0.6, 0.01, 0.01);
        s.plan.id = "plan-7".into();
        c.on_message(&msg(Body::Scored(s)), &mut out).unwrap();
        c.on_message(&msg(Body::EndOfStream), &mut out).unwrap();
        assert_eq!(out.messages().len(), 1);
        assert_eq!(out.messages()[0].topic, "curation");
        assert_eq!(out.messages()[0].key, "plan-7");
        assert!(matches!(&out.messages()[0].body, Body::Curation(v) if v.plan_id == "plan-7"));
    }
}
