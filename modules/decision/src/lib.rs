//! Decision: risk rules between the fused plan and the trader.
//!
//! Each originating variant trades its own paper account, so the limits apply
//! per variant. For every scored plan, in this order:
//!
//! 1. reject a malformed plan (stop or target on the wrong side of entry,
//!    non-positive prices or size);
//! 2. reject when the fused confidence is below `min-confidence`;
//! 3. reject when the variant already has `max-open-plans` plans open;
//! 4. with Kelly sizing on (`kelly-fraction` > 0, 0.5 by default): reject a
//!    plan with no edge, whose Kelly fraction `p − (1 − p)/b` (p the fused
//!    confidence, b reward over risk) is not above 0;
//! 5. size = min(plan size, risk budget / stop distance, room left under
//!    `max-position` for the symbol), where the risk budget is
//!    min(`risk-per-plan`, `kelly-fraction` × Kelly fraction) × the
//!    variant's equity (initial `equity` plus realised pnl from feedback);
//! 6. the book across every variant and symbol (`portfolio`): the size is
//!    cut to the room left under `max-portfolio-risk` (open loss at the
//!    stops), `max-gross` and `max-net` (notional), each a multiple of the
//!    book's equity (`equity` plus every variant's realised pnl, retired variants' too).
//!
//! Reject if nothing is left, **modify** if the size shrank (the reason
//! names the limit), **approve** otherwise. An approval reserves its size
//! until the plan's exit fill, or its cancel fill when the trader's
//! curators stop it.
//!
//! The decision goes to topic `decision`, keyed by the originating variant, so
//! the trader and the variant itself (an addressed subscription) receive it.
//!
//! **Curators** (docs/curators.md): a scored plan waits for the curators
//! named in the `curators` setting for at most `deadline-bars` bars (1). A
//! veto anywhere in the plan's record (fusion's curators or these) rejects
//! it, "vetoed by NAME: REASON". This stage's nudges apply before the rules
//! above: confidence and log-odds nudges to the fused confidence, size
//! nudges to the plan's size. The decision records the whole list.

use std::collections::HashMap;

pub mod portfolio;

use portfolio::{Book, PortfolioLimits};

use garden_sdk::curation::{Curators, Effect};
use garden_sdk::join::{Join, Ready};
use garden_sdk::retired::Retired;
use garden_sdk::{
    Body, Curation, Decision, Envelope, FillKind, Gene, Info, InitContext, Module, Outbox, Plan,
    ScoredPlan, Subscription, Verdict,
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
    portfolio: PortfolioLimits,
    book: Book,
    /// Every variant's realised pnl, retired ones' too: the book keeps
    /// what they made or lost.
    book_realised: f64,
    curators: Curators,
    /// Scored plans waiting for this stage's curators.
    pending: Join<ScoredPlan, Curation>,
    /// Variants retired lately: a plan of theirs still waiting is rejected.
    retired: Retired,
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

    /// A scored plan with this stage's verdicts in: vetoed, or nudged and
    /// judged.
    fn curate(&mut self, ready: Ready<ScoredPlan, Curation>, out: &mut Outbox) {
        let mut scored = ready.item;
        let own = self.curators.settle(&ready.id, &ready.answers);
        let effect = Effect::of(&own);
        scored.curation.extend(own);
        let veto = Effect::of(&scored.curation).veto_reason();
        if self.retired.contains(&scored.plan.origin) {
            let reason = format!("variant {} retired", scored.plan.origin);
            self.publish(scored, Verdict::Reject, 0.0, reason, out);
            return;
        }
        if let Some(reason) = veto {
            self.publish(scored, Verdict::Reject, 0.0, reason, out);
            return;
        }
        scored.confidence = effect.confidence_of(scored.confidence);
        scored.plan.size = effect.size_of(scored.plan.size);
        self.decide(scored, out);
    }

    /// The book's equity: the starting equity plus every variant's
    /// realised pnl.
    fn book_equity(&self) -> f64 {
        self.equity + self.book_realised
    }

    fn decide(&mut self, scored: ScoredPlan, out: &mut Outbox) {
        let mut limits = self.limits();
        let kelly = portfolio::kelly(&scored.plan, scored.confidence);
        if self.portfolio.kelly_fraction > 0.0 && kelly.is_finite() {
            if kelly <= 0.0 {
                let reason = format!(
                    "no edge: Kelly fraction {kelly:.3} at fused confidence {:.3}",
                    scored.confidence
                );
                self.publish(scored, Verdict::Reject, 0.0, reason, out);
                return;
            }
            limits.risk_per_plan = limits
                .risk_per_plan
                .min(self.portfolio.kelly_fraction * kelly);
        }
        let book_equity = self.book_equity();
        let start = self.equity;
        let account = self.accounts.entry(scored.plan.origin.clone()).or_default();
        let exposure = account
            .exposure
            .get(&scored.plan.symbol)
            .copied()
            .unwrap_or(0.0);
        let (mut verdict, mut size, mut reason) = judge(
            &scored.plan,
            scored.confidence,
            start + account.realised,
            account.open_plans,
            exposure,
            &limits,
        );
        if verdict != Verdict::Reject {
            let (room, binding) =
                portfolio::allocate(&scored.plan, size, &self.book, book_equity, &self.portfolio);
            if let Some(limit) = binding {
                if room <= 0.0 || room.is_nan() {
                    (verdict, size) = (Verdict::Reject, 0.0);
                    reason = format!("no room under the {limit} limit");
                } else {
                    reason = format!("resized from {} to {room:.2} by {limit}", scored.plan.size);
                    (verdict, size) = (Verdict::Modify, room);
                }
            }
        }
        let account = self.accounts.entry(scored.plan.origin.clone()).or_default();
        if verdict != Verdict::Reject {
            self.book.approve(&scored.plan, size);
            account.open_plans += 1;
            *account
                .exposure
                .entry(scored.plan.symbol.clone())
                .or_default() += size;
            account
                .sizes
                .insert(scored.plan.id.clone(), (scored.plan.symbol.clone(), size));
        }
        self.publish(scored, verdict, size, reason, out);
    }

    /// Send the decision to the trader and back to the variant.
    fn publish(
        &self,
        scored: ScoredPlan,
        verdict: Verdict,
        size: f64,
        reason: String,
        out: &mut Outbox,
    ) {
        let key = scored.plan.origin.clone();
        let decision = Decision {
            plan: scored.plan,
            verdict,
            size,
            confidence: scored.confidence,
            reason,
            curation: scored.curation,
        };
        out.publish("decision", &key, Body::Decision(decision));
    }
}

/// Retired variants remembered (far more than can have plans in flight).
const RETIRED_KEPT: usize = 4096;

/// Most a portfolio limit may be, as a multiple of the book's equity.
const MAX_MULTIPLE: f64 = 1000.0;

/// The book's limits from the settings: `kelly-fraction` (0.5; 0 turns
/// Kelly sizing off), `max-portfolio-risk` (0.2), `max-gross` (50),
/// `max-net` (30), the last three multiples of the book's equity.
/// Generous by default: the book binds only when many variants pile in.
fn portfolio_limits(ctx: &InitContext) -> Result<PortfolioLimits, String> {
    let read = |name: &str, default: f64, max: f64| ctx.setting_in(name, default, 0.0..=max);
    Ok(PortfolioLimits {
        kelly_fraction: read("kelly-fraction", 0.5, 1.0)?,
        max_risk: read("max-portfolio-risk", 0.2, MAX_MULTIPLE)?,
        max_gross: read("max-gross", 50.0, MAX_MULTIPLE)?,
        max_net: read("max-net", 30.0, MAX_MULTIPLE)?,
    })
}

impl Module for Risk {
    fn describe() -> Info {
        Info::new("decision", env!("CARGO_PKG_VERSION"), "decision")
            .subscribe(Subscription::shared("scored"))
            .subscribe(Subscription::shared("curation"))
            .subscribe(Subscription::broadcast("bar"))
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
        let curators = Curators::from_settings(&ctx, 1)?;
        Ok(Risk {
            pending: Join::new(curators.names.clone(), curators.deadline_bars),
            curators,
            max_position: ctx.float("max-position")?,
            max_open_plans: u32::try_from(max_open)
                .map_err(|_| format!("max-open-plans out of range: {max_open}"))?,
            risk_per_plan: ctx.float("risk-per-plan")?,
            min_confidence: ctx.float("min-confidence")?,
            equity: ctx.setting_f64("equity", 100_000.0)?,
            accounts: HashMap::new(),
            portfolio: portfolio_limits(&ctx)?,
            book: Book::default(),
            book_realised: 0.0,
            retired: Retired::new(RETIRED_KEPT),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Scored(scored) => {
                let id = scored.plan.id.clone();
                let symbol = scored.plan.symbol.clone();
                if let Some(ready) = self.pending.item(&id, &symbol, scored.clone()) {
                    self.curate(ready, out);
                }
            }
            Body::Curation(c) => {
                if self.curators.admit(&msg.source, c)
                    && let Some(ready) = self.pending.answer(&c.plan_id, &c.curator, c.clone())
                {
                    self.curate(ready, out);
                }
            }
            Body::Bar(bar) => {
                for ready in self.pending.bar(&bar.symbol) {
                    self.curate(ready, out);
                }
            }
            Body::EndOfStream => {
                for ready in self.pending.drain() {
                    self.curate(ready, out);
                }
            }
            Body::Fill(fill) if fill.kind != FillKind::Entry => {
                self.book.close(&fill.plan_id);
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
                if fb.pnl.is_finite() {
                    self.book_realised += fb.pnl;
                }
                if let Some(a) = self.accounts.get_mut(&fb.origin) {
                    a.realised += fb.pnl;
                }
            }
            Body::Retired(origin) => {
                self.retired.insert(origin);
                self.book.retire(origin);
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

    fn risk(curators: &str) -> Risk {
        risk_with(&[("curators", curators)])
    }

    fn risk_with(settings: &[(&str, &str)]) -> Risk {
        use garden_sdk::{GeneValue, Param};
        let p = |name: &str, value: GeneValue| Param {
            name: name.into(),
            value,
        };
        let mut ctx = garden_sdk::testing::context("decision", settings);
        ctx.params = vec![
            p("max-position", GeneValue::Float(100_000.0)),
            p("max-open-plans", GeneValue::Int(3)),
            p("risk-per-plan", GeneValue::Float(0.01)),
            p("min-confidence", GeneValue::Float(0.45)),
        ];
        Risk::init(ctx).unwrap()
    }

    fn msg(source: &str, body: Body) -> Envelope {
        garden_sdk::testing::message(source, "p", body)
    }

    fn scored(curation: Vec<Curation>) -> Body {
        Body::Scored(ScoredPlan {
            plan: plan(Side::Long, 1.0, 0.99, 1.02, 1_000.0),
            prior_log_odds: 0.0,
            log_odds: 0.4,
            confidence: 0.6,
            experts: vec![],
            missing: vec![],
            confirmed: true,
            curation,
        })
    }

    fn decisions(out: &Outbox) -> Vec<Decision> {
        out.messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Decision(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    fn scored_from(origin: &str, id: &str, confidence: f64, size: f64) -> Body {
        // Distances exact in binary, so sizes compare exactly.
        let mut p = plan(Side::Long, 1.0, 0.5, 2.0, size);
        p.origin = origin.into();
        p.id = id.into();
        Body::Scored(ScoredPlan {
            plan: p,
            prior_log_odds: 0.0,
            log_odds: 0.0,
            confidence,
            experts: vec![],
            missing: vec![],
            confirmed: true,
            curation: vec![],
        })
    }

    #[test]
    fn a_plan_without_edge_is_rejected_and_kelly_caps_the_risk() {
        let mut r = risk_with(&[]);
        let mut out = Outbox::new();
        // b = 2: break-even at p = 1/3; min-confidence 0.45 is above it, so
        // lower the bar to see Kelly speak.
        r.min_confidence = 0.0;
        r.on_message(&msg("fusion", scored_from("a", "p1", 0.3, 1e6)), &mut out)
            .unwrap();
        // p = 0.34: f* = 0.01, half Kelly 0.005 of 100,000 = 500 at 0.5 a
        // unit = 1,000 units, under the 1% risk per plan (2,000).
        r.on_message(&msg("fusion", scored_from("a", "p2", 0.34, 1e6)), &mut out)
            .unwrap();
        let d = decisions(&out);
        assert_eq!(d[0].verdict, Verdict::Reject);
        assert!(d[0].reason.starts_with("no edge"), "{}", d[0].reason);
        assert_eq!(d[1].verdict, Verdict::Modify);
        assert!((d[1].size - 1_000.0).abs() < 1e-6, "{}", d[1].size);
    }

    #[test]
    fn the_book_across_variants_caps_concurrent_plans_and_frees_on_exit() {
        // Book risk cap 1.5% of 100,000 = 1,500 at the stops; one full plan
        // risks 1% (2,000 units × 0.5).
        let mut r = risk_with(&[("max-portfolio-risk", "0.015")]);
        let mut out = Outbox::new();
        for (origin, id) in [("a", "p1"), ("b", "p2"), ("c", "p3")] {
            r.on_message(
                &msg("fusion", scored_from(origin, id, 0.6, 2_000.0)),
                &mut out,
            )
            .unwrap();
        }
        let d = decisions(&out);
        assert_eq!(d[0].verdict, Verdict::Approve, "{}", d[0].reason);
        assert_eq!(d[1].verdict, Verdict::Modify, "{}", d[1].reason);
        assert!(d[1].reason.contains("portfolio risk"), "{}", d[1].reason);
        assert_eq!(d[1].size, 1_000.0);
        assert_eq!(d[2].verdict, Verdict::Reject);
        assert!(r.book.risk() <= 1_500.0 + 1e-9);
        // The first plan's exit frees its room for the next.
        let exit = garden_sdk::Fill {
            plan_id: "p1".into(),
            origin: "a".into(),
            symbol: "X".into(),
            side: Side::Long,
            kind: FillKind::Target,
            price: 2.0,
            size: 2_000.0,
            fee: 0.0,
            time: 0,
            curation: vec![],
        };
        r.on_message(&msg("trader", Body::Fill(exit)), &mut out)
            .unwrap();
        r.on_message(
            &msg("fusion", scored_from("c", "p4", 0.6, 2_000.0)),
            &mut out,
        )
        .unwrap();
        assert_eq!(decisions(&out)[3].verdict, Verdict::Approve);
    }

    #[test]
    fn a_plan_still_waiting_when_its_variant_retires_is_rejected() {
        let mut r = risk("cost");
        let mut out = Outbox::new();
        r.on_message(&msg("fusion", scored(vec![])), &mut out)
            .unwrap();
        r.on_message(&msg("host", Body::Retired("a".into())), &mut out)
            .unwrap();
        r.on_message(&msg("host", Body::EndOfStream), &mut out)
            .unwrap();
        let d = decisions(&out);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].verdict, Verdict::Reject);
        assert_eq!(d[0].reason, "variant a retired");
        assert!(r.book.is_empty() && !r.accounts.contains_key("a"));
    }

    #[test]
    fn a_veto_from_fusions_curators_rejects_the_plan() {
        use garden_sdk::curation::Verdicts;
        let mut r = risk("");
        let mut out = Outbox::new();
        let veto = Verdicts::by("curator-regime").veto("p", "against the trend");
        r.on_message(&msg("fusion", scored(vec![veto])), &mut out)
            .unwrap();
        let d = decisions(&out);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].verdict, Verdict::Reject);
        assert_eq!(d[0].reason, "vetoed by curator-regime: against the trend");
        assert_eq!(d[0].curation.len(), 1);
    }

    #[test]
    fn this_stages_curators_are_waited_for_and_their_size_nudge_applies_first() {
        use garden_sdk::NudgeTarget;
        use garden_sdk::curation::Verdicts;
        let mut r = risk("cost,timing");
        let mut out = Outbox::new();
        r.on_message(&msg("fusion", scored(vec![])), &mut out)
            .unwrap();
        let nudge = Verdicts::by("cost").nudge("p", NudgeTarget::Size, -0.1, "thin edge");
        r.on_message(&msg("cost", Body::Curation(nudge)), &mut out)
            .unwrap();
        assert!(decisions(&out).is_empty(), "timing has not answered");
        let bar = garden_sdk::Bar {
            symbol: "X".into(),
            time: 0,
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 1.0,
        };
        r.on_message(&msg("host", Body::Bar(bar)), &mut out)
            .unwrap();
        let d = decisions(&out);
        assert_eq!(d.len(), 1, "the deadline of one bar passed");
        assert_eq!(d[0].verdict, Verdict::Approve);
        assert!((d[0].size - 900.0).abs() < 1e-9, "{}", d[0].size);
        let actions: Vec<_> = d[0].curation.iter().map(|c| c.action).collect();
        assert_eq!(
            actions,
            vec![
                garden_sdk::CuratorAction::Nudge,
                garden_sdk::CuratorAction::Missing
            ]
        );
        // A verdict in another curator's name is refused, and counted.
        let forged = Verdicts::by("cost").veto("q", "x");
        r.on_message(&msg("timing", Body::Curation(forged)), &mut out)
            .unwrap();
        assert_eq!(r.curators.forged, 1);
    }
}
