//! Fusion: joins a plan with its experts' evidence and fuses it in log-odds.
//!
//! The fused log-odds are the prior log-odds of the plan (from the alpha's
//! own confidence `c`: `ln(c / (1 − c))`, with `c` clamped to [0.01, 0.99])
//! plus the sum of the experts' log-likelihood ratios:
//!
//! ```text
//! log-odds = ln(c / (1 − c)) + Σ_e llr_e        confidence = 1 / (1 + e^(−log-odds))
//! ```
//!
//! This is Bayes' rule in log-odds form under the naive assumption that the
//! experts' evidence is conditionally independent given the outcome.
//!
//! **Calibration.** Each expert's ratio is weighted by its track record:
//! `log-odds = prior + Σ_e w_e · llr_e`. For every expert the module keeps a
//! Beta(α, β) posterior, starting at Beta(1, 1), over "its evidence pointed
//! the right way": when a plan's feedback arrives, an expert that supported
//! it (llr > 0) scores a success if the plan won (pnl > 0) and a failure
//! otherwise, and one that opposed it the reverse; zero evidence is not
//! counted. Its weight is `w_e = 2 · α / (α + β)`, so an unknown or coin-flip
//! expert weighs 1, one that is always right tends to 2, one that is always
//! wrong to 0. A plan is **confirmed** when at least `confirm-min` experts
//! supported it. Evidence still missing at the deadline is counted per
//! expert. At the end of the stream the module reports each expert
//! (`expert:<name>`: evaluations, supported, opposed, missing, the shares
//! supported and opposed, hit rate of its supported plans, the Brier score
//! of the fused confidence over the plans it spoke about, weight) and itself (`fusion`: the Brier score of the fused
//! confidence and a calibration table of confidence bins against realised
//! win rates) as fitness reports the host lists: at the end of the stream,
//! and every `report-every` bars if that setting is above 0 (so that
//! `garden run --metrics` and a daemon's page show them as they change).
//!
//! A plan
//! waits for every expert named in the `experts` setting (comma-separated)
//! and every curator named in `curators` until `deadline-bars` bars of its
//! symbol have passed; then it is forwarded with whatever evidence arrived,
//! the rest listed as missing. Evidence that arrives before its plan is kept
//! until the plan comes or the deadline passes.
//!
//! **Intel.** Every `intel-every` bars (0, the default: never) fusion
//! broadcasts what it learned of each expert on the `intel` topic
//! (`expert:<name>`: `alpha`, `beta`, `weight`, `hit-rate`; samples = its
//! evaluations), for experts and alphas that adapt to it.
//!
//! **Curators** (docs/curators.md) govern plans here: their verdicts are
//! settled by `garden_sdk::curation` (nudges clamped to `kappa`) and
//! recorded in `scored-plan.curation`. Log-odds nudges add to the fused
//! log-odds, confidence nudges to the confidence, size nudges scale the
//! plan's size hint. A vetoed plan is still forwarded, with its veto, so
//! that the decision rejects it and the trader follows what it would have
//! made.

use std::collections::BTreeMap;

use garden_sdk::curation::{Curators, Effect};
use garden_sdk::join::{Join, Ready};
use garden_sdk::{
    Body, Curation, Envelope, Evidence, Fitness, Info, InitContext, Intel, Metric, Module, Outbox,
    Plan, ScoredPlan, Subscription,
};

/// Clamp for the alpha's confidence, so a prior of exactly 0 or 1 cannot
/// make the log-odds infinite.
const PRIOR_CLAMP: (f64, f64) = (0.01, 0.99);

/// Natural log-odds of a probability.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(PRIOR_CLAMP.0, PRIOR_CLAMP.1);
    (p / (1.0 - p)).ln()
}

/// Inverse of [`logit`].
pub fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Fuse a plan's prior with its evidence, each expert's ratio weighted by
/// `weights` (1 for an expert not listed). Non-finite ratios are ignored
/// rather than poisoning the sum. Confirmed when at least `confirm_min`
/// experts supported the plan.
pub fn fuse(
    plan: Plan,
    evidence: &BTreeMap<String, f64>,
    missing: Vec<String>,
    weights: &BTreeMap<String, f64>,
    confirm_min: usize,
) -> ScoredPlan {
    let prior = logit(plan.confidence);
    let counted: Vec<(&String, &f64)> = evidence.iter().filter(|(_, v)| v.is_finite()).collect();
    let log_odds = prior
        + counted
            .iter()
            .map(|(k, v)| weights.get(*k).copied().unwrap_or(1.0) * **v)
            .sum::<f64>();
    let supporting = counted.iter().filter(|(_, v)| **v > 0.0).count();
    ScoredPlan {
        plan,
        prior_log_odds: prior,
        log_odds,
        confidence: logistic(log_odds),
        experts: counted.iter().map(|(k, _)| (*k).clone()).collect(),
        missing,
        confirmed: confirm_min > 0 && supporting >= confirm_min,
        curation: vec![],
    }
}

/// Apply a scored plan's settled verdicts: log-odds and confidence nudges
/// to the fused figures, size nudges to the plan's size hint. A veto changes
/// nothing here: the plan goes on with it, and the decision rejects it.
pub fn curate(scored: &mut ScoredPlan) {
    let e = Effect::of(&scored.curation);
    if e.log_odds != 0.0 {
        scored.log_odds += e.log_odds;
        scored.confidence = logistic(scored.log_odds);
    }
    if e.confidence != 0.0 {
        scored.confidence = (scored.confidence + e.confidence).clamp(PRIOR_CLAMP.0, PRIOR_CLAMP.1);
    }
    scored.plan.size = e.size_of(scored.plan.size);
}

/// Whether plan id `id` is one variant `origin` may use: `{origin}-...`.
pub fn owns_id(origin: &str, id: &str) -> bool {
    id.strip_prefix(origin)
        .is_some_and(|rest| rest.starts_with('-') && rest.len() > 1)
}

/// An expert's track record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Beta posterior: successes + 1.
    pub alpha: f64,
    /// Beta posterior: failures + 1.
    pub beta: f64,
    /// Plans it gave evidence on.
    pub evaluations: u32,
    /// Of those, supported (llr > 0).
    pub supported: u32,
    /// Of those, opposed (llr < 0).
    pub opposed: u32,
    /// Plans it had not answered by the deadline.
    pub missing: u32,
    /// Supported plans whose outcome is known.
    pub supported_closed: u32,
    /// Of those, won.
    pub supported_won: u32,
    /// Squared errors of the fused confidence of the plans it spoke about
    /// whose outcome is known, summed, and their count.
    pub brier_sum: f64,
    /// Count behind `brier_sum`.
    pub brier_n: u32,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            alpha: 1.0,
            beta: 1.0,
            evaluations: 0,
            supported: 0,
            opposed: 0,
            missing: 0,
            supported_closed: 0,
            supported_won: 0,
            brier_sum: 0.0,
            brier_n: 0,
        }
    }
}

impl Record {
    /// `2 · α / (α + β)`: 1 for an unknown or coin-flip expert.
    pub fn weight(&self) -> f64 {
        2.0 * self.alpha / (self.alpha + self.beta)
    }

    /// Learn from one outcome of a plan it gave `llr` about, which fusion
    /// had scored at `confidence`.
    pub fn learn(&mut self, llr: f64, confidence: f64, won: bool) {
        self.brier_sum += (confidence - f64::from(u8::from(won))).powi(2);
        self.brier_n += 1;
        if llr == 0.0 || !llr.is_finite() {
            return;
        }
        if (llr > 0.0) == won {
            self.alpha += 1.0;
        } else {
            self.beta += 1.0;
        }
        if llr > 0.0 {
            self.supported_closed += 1;
            self.supported_won += u32::from(won);
        }
    }
}

/// What fusion waits for about a plan: an expert's ratio or a curator's
/// verdict (experts and curators are distinct instances).
enum Answer {
    Llr(f64),
    Word(Curation),
}

/// Most forwarded plans remembered while waiting for their outcome.
const OPEN_CAP: usize = 10_000;

/// The fusion module's state.
pub struct Fusion {
    experts: Vec<String>,
    curators: Curators,
    confirm_min: usize,
    /// Report the experts every this many bars (0: only at the end).
    report_every: u32,
    bars_since_report: u32,
    /// Share the experts' records every this many bars (0: never).
    intel_every: u32,
    /// Plans refused because they claimed another variant as origin.
    forged_plans: u32,
    bars_since_intel: u32,
    /// Plans waiting for their experts and curators.
    pending: Join<Plan, Answer>,
    records: BTreeMap<String, Record>,
    /// Forwarded plans awaiting feedback: (fused confidence, evidence).
    open: BTreeMap<String, (f64, BTreeMap<String, f64>)>,
    /// (fused confidence, won) of every plan with an outcome.
    outcomes: Vec<(f64, bool)>,
}

impl Fusion {
    fn forward(&mut self, ready: Ready<Plan, Answer>, out: &mut Outbox) {
        let mut evidence = BTreeMap::new();
        let mut words = BTreeMap::new();
        for (name, answer) in ready.answers {
            match answer {
                Answer::Llr(llr) => {
                    evidence.insert(name, llr);
                }
                Answer::Word(c) => {
                    words.insert(name, c);
                }
            }
        }
        let missing: Vec<String> = ready
            .missing
            .into_iter()
            .filter(|m| self.experts.contains(m))
            .collect();
        for e in &missing {
            self.records.entry(e.clone()).or_default().missing += 1;
        }
        for (e, llr) in &evidence {
            let r = self.records.entry(e.clone()).or_default();
            r.evaluations += 1;
            r.supported += u32::from(*llr > 0.0);
            r.opposed += u32::from(*llr < 0.0);
        }
        let weights: BTreeMap<String, f64> = self
            .records
            .iter()
            .map(|(k, r)| (k.clone(), r.weight()))
            .collect();
        let mut scored = fuse(ready.item, &evidence, missing, &weights, self.confirm_min);
        scored.curation = self.curators.settle(&ready.id, &words);
        curate(&mut scored);
        let key = scored.plan.id.clone();
        if self.open.len() >= OPEN_CAP {
            self.open.pop_first();
        }
        self.open.insert(key.clone(), (scored.confidence, evidence));
        out.publish("scored", &key, Body::Scored(scored));
    }

    fn on_plan(&mut self, plan: Plan, out: &mut Outbox) {
        let id = plan.id.clone();
        let symbol = plan.symbol.clone();
        if let Some(ready) = self.pending.item(&id, &symbol, plan) {
            self.forward(ready, out);
        }
    }

    fn on_evidence(&mut self, ev: &Evidence, out: &mut Outbox) {
        if !self.experts.contains(&ev.expert) {
            return;
        }
        if let Some(ready) = self
            .pending
            .answer(&ev.plan_id, &ev.expert, Answer::Llr(ev.llr))
        {
            self.forward(ready, out);
        }
    }

    fn on_curation(&mut self, source: &str, c: &Curation, out: &mut Outbox) {
        if !self.curators.admit(source, c) {
            return;
        }
        if let Some(ready) = self
            .pending
            .answer(&c.plan_id, &c.curator, Answer::Word(c.clone()))
        {
            self.forward(ready, out);
        }
    }

    /// A plan's outcome: every expert that spoke about it learns.
    fn on_feedback(&mut self, plan_id: &str, pnl: f64) {
        let Some((confidence, evidence)) = self.open.remove(plan_id) else {
            return;
        };
        let won = pnl > 0.0;
        for (e, llr) in evidence {
            self.records
                .entry(e)
                .or_default()
                .learn(llr, confidence, won);
        }
        self.outcomes.push((confidence, won));
    }

    /// Per-expert and calibration reports, as fitness reports the host lists.
    fn report(&self, out: &mut Outbox) {
        let m = |name: &str, value: f64| Metric {
            name: name.into(),
            value,
        };
        for (name, r) in &self.records {
            let hit = if r.supported_closed > 0 {
                f64::from(r.supported_won) / f64::from(r.supported_closed)
            } else {
                0.0
            };
            let share = |n: u32| {
                if r.evaluations > 0 {
                    f64::from(n) / f64::from(r.evaluations)
                } else {
                    0.0
                }
            };
            let brier = if r.brier_n > 0 {
                r.brier_sum / f64::from(r.brier_n)
            } else {
                0.0
            };
            let subject = format!("expert:{name}");
            out.publish(
                "fitness",
                &subject.clone(),
                Body::Fitness(Fitness {
                    subject,
                    values: vec![],
                    trades: r.supported_closed,
                    metrics: vec![
                        m("evaluations", f64::from(r.evaluations)),
                        m("supported", f64::from(r.supported)),
                        m("opposed", f64::from(r.opposed)),
                        m("missing", f64::from(r.missing)),
                        m("supported-share", share(r.supported)),
                        m("opposed-share", share(r.opposed)),
                        m("hit-rate", hit),
                        m("brier", brier),
                        m("weight", r.weight()),
                    ],
                }),
            );
        }
        let n = self.outcomes.len() as f64;
        let brier = if n > 0.0 {
            self.outcomes
                .iter()
                .map(|(p, w)| (p - f64::from(u8::from(*w))).powi(2))
                .sum::<f64>()
                / n
        } else {
            0.0
        };
        let mut metrics = vec![
            m("plans-with-outcome", n),
            m("brier", brier),
            m("forged-plans", f64::from(self.forged_plans)),
            m("forged-verdicts", f64::from(self.curators.forged)),
        ];
        for b in 0..10 {
            let (lo, hi) = (b as f64 / 10.0, (b + 1) as f64 / 10.0);
            let inside: Vec<bool> = self
                .outcomes
                .iter()
                .filter(|(p, _)| *p >= lo && (*p < hi || b == 9))
                .map(|(_, w)| *w)
                .collect();
            if inside.is_empty() {
                continue;
            }
            let rate = inside.iter().filter(|w| **w).count() as f64 / inside.len() as f64;
            metrics.push(m(
                &format!("bin-{lo:.1}-{hi:.1}-plans"),
                inside.len() as f64,
            ));
            metrics.push(m(&format!("bin-{lo:.1}-{hi:.1}-win-rate"), rate));
        }
        out.publish(
            "fitness",
            "fusion",
            Body::Fitness(Fitness {
                subject: "fusion".into(),
                values: vec![],
                trades: n as u32,
                metrics,
            }),
        );
    }

    /// Each expert's record, as intel for the others.
    fn share(&self, out: &mut Outbox) {
        for (name, r) in &self.records {
            let m = |name: &str, value: f64| Metric {
                name: name.into(),
                value,
            };
            let hit = if r.supported_closed > 0 {
                f64::from(r.supported_won) / f64::from(r.supported_closed)
            } else {
                0.0
            };
            let subject = format!("expert:{name}");
            out.publish(
                "intel",
                &subject.clone(),
                Body::Intel(Intel {
                    subject,
                    scope: String::new(),
                    values: vec![
                        m("alpha", r.alpha),
                        m("beta", r.beta),
                        m("weight", r.weight()),
                        m("hit-rate", hit),
                    ],
                    samples: r.evaluations,
                }),
            );
        }
    }

    fn on_bar(&mut self, symbol: &str, out: &mut Outbox) {
        self.bars_since_intel += 1;
        if self.intel_every > 0 && self.bars_since_intel >= self.intel_every {
            self.bars_since_intel = 0;
            self.share(out);
        }
        self.bars_since_report += 1;
        if self.report_every > 0 && self.bars_since_report >= self.report_every {
            self.bars_since_report = 0;
            self.report(out);
        }
        for ready in self.pending.bar(symbol) {
            self.forward(ready, out);
        }
    }
}

impl Module for Fusion {
    fn describe() -> Info {
        Info::new("fusion", env!("CARGO_PKG_VERSION"), "fusion")
            .subscribe(Subscription::shared("plan"))
            .subscribe(Subscription::shared("evidence"))
            .subscribe(Subscription::shared("curation"))
            .subscribe(Subscription::broadcast("bar"))
            .subscribe(Subscription::broadcast("feedback"))
            .publishes("scored")
            .publishes("fitness")
            .publishes("intel")
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let experts: Vec<String> = ctx
            .setting("experts")
            .unwrap_or("expert-anomaly")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let curators = Curators::from_settings(&ctx, 1)?;
        let confirm_min = ctx.setting_f64("confirm-min", experts.len().div_ceil(2) as f64)?;
        let report_every = ctx.setting_f64("report-every", 0.0)?;
        let intel_every = ctx.setting_f64("intel-every", 0.0)?;
        if !(0.0..=1e9).contains(&intel_every) || intel_every.fract() != 0.0 {
            return Err(format!(
                "intel-every must be a whole number of bars (0: never), got {intel_every}"
            ));
        }
        if !(0.0..=1e9).contains(&report_every) || report_every.fract() != 0.0 {
            return Err(format!(
                "report-every must be a whole number of bars (0: only at the end), got {report_every}"
            ));
        }
        if !(0.0..=100.0).contains(&confirm_min) || confirm_min.fract() != 0.0 {
            return Err(format!(
                "confirm-min must be a whole number in 0..=100, got {confirm_min}"
            ));
        }
        Ok(Fusion {
            records: experts
                .iter()
                .map(|e| (e.clone(), Record::default()))
                .collect(),
            pending: Join::new(
                experts.iter().chain(&curators.names).cloned().collect(),
                curators.deadline_bars,
            ),
            experts,
            curators,
            confirm_min: confirm_min as usize,
            report_every: report_every as u32,
            bars_since_report: 0,
            intel_every: intel_every as u32,
            forged_plans: 0,
            bars_since_intel: 0,
            open: BTreeMap::new(),
            outcomes: Vec::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            // A plan in another variant's name is refused, and logged and
            // counted rather than failed: a failure counts against fusion,
            // so failing would let the forger get fusion quarantined.
            // Its id must be its origin's too (`{origin}-...`): verdicts
            // and evidence are keyed by plan id, so another variant's id
            // would take over that plan's join.
            Body::Plan(plan) if *plan.origin != *msg.source || !owns_id(&plan.origin, &plan.id) => {
                self.forged_plans += 1;
                garden_sdk::warn(&format!(
                    "refused plan {}: it claims origin {}, was published by {}, and a plan's id must start with `{{origin}}-`",
                    plan.id, plan.origin, msg.source
                ));
            }
            Body::Plan(plan) => self.on_plan(plan.clone(), out),
            // Evidence for a plan already forwarded waits as an orphan and
            // expires at the deadline without effect.
            Body::Evidence(ev) => self.on_evidence(ev, out),
            Body::Curation(c) => self.on_curation(&msg.source, c, out),
            Body::Bar(bar) => self.on_bar(&bar.symbol, out),
            Body::Feedback(fb) => self.on_feedback(&fb.plan_id, fb.pnl),
            Body::EndOfStream => {
                for ready in self.pending.drain() {
                    self.forward(ready, out);
                }
                self.report(out);
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(Fusion);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{Bar, Side};

    fn fusion(experts: &str, deadline: u32) -> Fusion {
        with_settings(&[
            ("experts", experts),
            ("deadline-bars", &deadline.to_string()),
        ])
        .unwrap()
    }

    fn with_settings(settings: &[(&str, &str)]) -> Result<Fusion, String> {
        Fusion::init(garden_sdk::testing::context("f", settings))
    }

    fn plan(id: &str, confidence: f64) -> Plan {
        Plan {
            id: id.into(),
            origin: "a".into(),
            symbol: "X".into(),
            side: Side::Long,
            entry: 1.0,
            stop: 0.9,
            target: 1.2,
            size: 1.0,
            horizon: 5,
            confidence,
            time: 0,
        }
    }

    fn env(body: Body) -> Envelope {
        Envelope {
            topic: "t".into(),
            key: "k".into(),
            seq: 0,
            time: 0,
            source: "a".into(),
            body,
        }
    }

    fn ev(plan: &str, expert: &str, llr: f64) -> Body {
        Body::Evidence(Evidence {
            plan_id: plan.into(),
            expert: expert.into(),
            llr,
            reason: String::new(),
        })
    }

    fn bar() -> Body {
        Body::Bar(Bar {
            symbol: "X".into(),
            time: 0,
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 1.0,
        })
    }

    #[test]
    fn reports_come_every_report_every_bars_when_asked() {
        let reports = |every: &str, bars: usize| {
            let mut f = with_settings(&[("experts", "e1,e2"), ("report-every", every)]).unwrap();
            let mut out = Outbox::new();
            for _ in 0..bars {
                f.on_message(&env(bar()), &mut out).unwrap();
            }
            out.messages()
                .iter()
                .filter(|m| matches!(m.body, Body::Fitness(_)))
                .count()
        };
        // Two experts and fusion itself, twice in five bars.
        assert_eq!(reports("2", 5), 6);
        assert_eq!(reports("0", 5), 0);
        let mut f = with_settings(&[("experts", "e1,e2"), ("intel-every", "3")]).unwrap();
        let mut out = Outbox::new();
        for _ in 0..7 {
            f.on_message(&env(bar()), &mut out).unwrap();
        }
        let shared: Vec<&str> = out
            .messages()
            .iter()
            .filter(|m| m.topic == "intel")
            .map(|m| m.key.as_str())
            .collect();
        assert_eq!(shared, ["expert:e1", "expert:e2", "expert:e1", "expert:e2"]);
        let bad = with_settings(&[("report-every", "1.5")]);
        assert!(bad.is_err());
    }

    fn scored(out: &Outbox) -> Vec<ScoredPlan> {
        out.messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Scored(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fused_log_odds_are_prior_plus_sum_of_llrs() {
        let mut ev_map = BTreeMap::new();
        ev_map.insert("a".to_string(), 0.5);
        ev_map.insert("b".to_string(), -0.2);
        let s = fuse(plan("a-p", 0.6), &ev_map, vec![], &BTreeMap::new(), 1);
        let prior = (0.6f64 / 0.4).ln();
        assert!((s.prior_log_odds - prior).abs() < 1e-12);
        assert!((s.log_odds - (prior + 0.3)).abs() < 1e-12);
        assert!((s.confidence - 1.0 / (1.0 + (-(prior + 0.3)).exp())).abs() < 1e-12);
        // Even prior and no evidence is a coin flip.
        assert!(
            (fuse(
                plan("a-p", 0.5),
                &BTreeMap::new(),
                vec![],
                &BTreeMap::new(),
                1
            )
            .confidence
                - 0.5)
                .abs()
                < 1e-12
        );
        // Prior is clamped, so certainty does not give infinities.
        assert!(
            fuse(
                plan("a-p", 1.0),
                &BTreeMap::new(),
                vec![],
                &BTreeMap::new(),
                1
            )
            .log_odds
            .is_finite()
        );
        assert!(s.confirmed, "one expert supported, one needed");
        // Weights scale each ratio.
        let w: BTreeMap<String, f64> = [("a".to_string(), 2.0), ("b".to_string(), 0.5)].into();
        let weighted = fuse(plan("a-p", 0.6), &ev_map, vec![], &w, 2);
        assert!((weighted.log_odds - (prior + 2.0 * 0.5 - 0.5 * 0.2)).abs() < 1e-12);
        assert!(!weighted.confirmed, "two needed, one supported");
    }

    #[test]
    fn calibration_trusts_the_expert_that_is_right_and_not_the_random_one() {
        let mut f = fusion("right,random", 5);
        let mut rng_state = 12345u64;
        let mut coin = || {
            rng_state = rng_state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng_state >> 33).is_multiple_of(2)
        };
        let mut out = Outbox::new();
        for i in 0..200 {
            let id = format!("a-p{i}");
            let wins = coin();
            f.on_message(&env(Body::Plan(plan(&id, 0.5))), &mut out)
                .unwrap();
            f.on_message(
                &env(ev(&id, "right", if wins { 0.5 } else { -0.5 })),
                &mut out,
            )
            .unwrap();
            f.on_message(
                &env(ev(&id, "random", if coin() { 0.5 } else { -0.5 })),
                &mut out,
            )
            .unwrap();
            let fb = garden_sdk::Feedback {
                plan_id: id.clone(),
                origin: "a".into(),
                pnl: if wins { 1.0 } else { -1.0 },
                exit: garden_sdk::FillKind::Target,
                bars_held: 1,
            };
            f.on_message(&env(Body::Feedback(fb)), &mut out).unwrap();
        }
        let right = f.records["right"].weight();
        let random = f.records["random"].weight();
        assert!(right > 1.9, "always right tends to 2: {right}");
        assert!(
            (random - 1.0).abs() < 0.25,
            "a coin flip stays near 1: {random}"
        );
        assert_eq!(f.records["right"].evaluations, 200);
        // The end of the stream reports every expert and the calibration.
        f.on_message(&env(Body::EndOfStream), &mut out).unwrap();
        let reports: Vec<String> = out
            .messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Fitness(r) => Some(r.subject.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(reports, vec!["expert:random", "expert:right", "fusion"]);
    }

    #[test]
    fn missing_evidence_is_counted_per_expert() {
        let mut f = fusion("e1,e2", 1);
        let mut out = Outbox::new();
        f.on_message(&env(Body::Plan(plan("a-p", 0.5))), &mut out)
            .unwrap();
        f.on_message(&env(ev("a-p", "e1", 0.4)), &mut out).unwrap();
        f.on_message(&env(bar()), &mut out).unwrap();
        assert_eq!(f.records["e2"].missing, 1);
        assert_eq!(f.records["e1"].missing, 0);
    }

    #[test]
    fn forwards_when_all_experts_answered_in_any_order() {
        let mut f = fusion("e1,e2", 3);
        let mut out = Outbox::new();
        f.on_message(&env(ev("a-p", "e1", 0.4)), &mut out).unwrap();
        f.on_message(&env(Body::Plan(plan("a-p", 0.5))), &mut out)
            .unwrap();
        assert!(scored(&out).is_empty());
        f.on_message(&env(ev("a-p", "e2", 0.1)), &mut out).unwrap();
        let s = scored(&out);
        assert_eq!(s.len(), 1);
        assert!((s[0].log_odds - 0.5).abs() < 1e-12);
        assert!(s[0].missing.is_empty());
    }

    #[test]
    fn deadline_forwards_with_missing_experts() {
        let mut f = fusion("e1,e2", 2);
        let mut out = Outbox::new();
        f.on_message(&env(Body::Plan(plan("a-p", 0.5))), &mut out)
            .unwrap();
        f.on_message(&env(ev("a-p", "e1", 0.4)), &mut out).unwrap();
        f.on_message(&env(bar()), &mut out).unwrap();
        assert!(scored(&out).is_empty(), "one bar is before the deadline");
        f.on_message(&env(bar()), &mut out).unwrap();
        let s = scored(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].missing, vec!["e2".to_string()]);
        assert_eq!(s[0].experts, vec!["e1".to_string()]);
    }

    fn word(source: &str, c: garden_sdk::Curation) -> Envelope {
        let mut msg = env(Body::Curation(c));
        msg.source = source.into();
        msg
    }

    #[test]
    fn curators_are_waited_for_clamped_and_recorded() {
        use garden_sdk::curation::Verdicts;
        use garden_sdk::{CuratorAction, NudgeTarget};
        let mut f = with_settings(&[
            ("experts", "e1"),
            ("curators", "c1,c2"),
            ("kappa", "0.1"),
            ("deadline-bars", "1"),
        ])
        .unwrap();
        let mut out = Outbox::new();
        // A verdict before its plan, one after the experts: forwarded with
        // the last one.
        f.on_message(
            &word(
                "c1",
                Verdicts::by("c1").nudge("a-p", NudgeTarget::LogOdds, 3.0, "keen"),
            ),
            &mut out,
        )
        .unwrap();
        f.on_message(&env(Body::Plan(plan("a-p", 0.5))), &mut out)
            .unwrap();
        f.on_message(&env(ev("a-p", "e1", 0.4)), &mut out).unwrap();
        assert!(scored(&out).is_empty(), "c2 has not answered");
        f.on_message(
            &word(
                "c2",
                Verdicts::by("c2").nudge("a-p", NudgeTarget::Size, -0.5, "cut"),
            ),
            &mut out,
        )
        .unwrap();
        let s = scored(&out);
        assert_eq!(s.len(), 1);
        assert!((s[0].log_odds - 0.5).abs() < 1e-12, "0.4 + 0.1 (clamped)");
        assert!((s[0].plan.size - 0.9).abs() < 1e-12, "size 1 × (1 − 0.1)");
        assert_eq!(s[0].curation.len(), 2);
        assert_eq!(s[0].curation[0].amount, 0.1);

        // A curator that does not answer is recorded as missing at the
        // deadline; a veto is forwarded with the plan.
        let mut out = Outbox::new();
        f.on_message(&env(Body::Plan(plan("a-q", 0.5))), &mut out)
            .unwrap();
        f.on_message(&env(ev("a-q", "e1", 0.4)), &mut out).unwrap();
        f.on_message(&word("c1", Verdicts::by("c1").veto("a-q", "no")), &mut out)
            .unwrap();
        f.on_message(&env(bar()), &mut out).unwrap();
        let s = scored(&out);
        assert_eq!(s.len(), 1);
        let actions: Vec<CuratorAction> = s[0].curation.iter().map(|c| c.action).collect();
        assert_eq!(actions, vec![CuratorAction::Veto, CuratorAction::Missing]);
    }

    #[test]
    fn a_verdict_in_another_curators_name_is_refused() {
        use garden_sdk::curation::Verdicts;
        let mut f = with_settings(&[("experts", "e1"), ("curators", "c1")]).unwrap();
        let mut out = Outbox::new();
        let forged = word("intruder", Verdicts::by("c1").veto("a-p", "forged"));
        f.on_message(&forged, &mut out).unwrap();
        assert_eq!(f.curators.forged, 1, "logged and counted, not failed");
        // An unnamed curator's word is ignored: the plan does not wait for it.
        f.on_message(&word("c9", Verdicts::by("c9").veto("a-p", "x")), &mut out)
            .unwrap();
        f.on_message(&env(Body::Plan(plan("a-p", 0.5))), &mut out)
            .unwrap();
        f.on_message(&env(ev("a-p", "e1", 0.4)), &mut out).unwrap();
        f.on_message(
            &word("c1", Verdicts::by("c1").pass("a-p", "fine")),
            &mut out,
        )
        .unwrap();
        let s = scored(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].curation.len(), 1);
        assert_eq!(s[0].curation[0].curator, "c1");
    }

    #[test]
    fn refuses_plan_with_forged_origin() {
        let mut f = fusion("e1", 1);
        let mut out = Outbox::new();
        let mut msg = env(Body::Plan(plan("a-p", 0.5)));
        msg.source = "someone-else".into();
        f.on_message(&msg, &mut out).unwrap();
        f.on_message(&env(bar()), &mut out).unwrap();
        assert!(scored(&out).is_empty(), "the forged plan went nowhere");
        assert_eq!(f.forged_plans, 1);
        // Its own origin, but another variant's id: refused too.
        f.on_message(&env(Body::Plan(plan("b-1", 0.5))), &mut out)
            .unwrap();
        assert_eq!(f.forged_plans, 2);
        assert!(owns_id("a", "a-7") && !owns_id("a", "ab-7") && !owns_id("a", "a-"));
    }
}
