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
//! experts' evidence is conditionally independent given the outcome. A plan
//! waits for every expert named in the `experts` setting (comma-separated)
//! until `deadline-bars` bars of its symbol have passed; then it is forwarded
//! with whatever evidence arrived, the rest listed as missing. Evidence that
//! arrives before its plan is kept until the plan comes or the deadline passes.

use std::collections::BTreeMap;

use garden_sdk::{
    Body, Envelope, Evidence, Info, InitContext, Module, Outbox, Plan, ScoredPlan, Subscription,
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

/// Fuse a plan's prior with its evidence. Non-finite ratios are ignored
/// rather than poisoning the sum.
pub fn fuse(plan: Plan, evidence: &BTreeMap<String, f64>, missing: Vec<String>) -> ScoredPlan {
    let prior = logit(plan.confidence);
    let counted: Vec<(&String, &f64)> = evidence.iter().filter(|(_, v)| v.is_finite()).collect();
    let log_odds = prior + counted.iter().map(|(_, v)| **v).sum::<f64>();
    ScoredPlan {
        plan,
        prior_log_odds: prior,
        log_odds,
        confidence: logistic(log_odds),
        experts: counted.iter().map(|(k, _)| (*k).clone()).collect(),
        missing,
    }
}

struct Pending {
    plan: Option<Plan>,
    evidence: BTreeMap<String, f64>,
    /// Bars of the plan's symbol seen since the plan (or evidence) arrived.
    bars: u32,
    symbol: Option<String>,
}

/// The fusion module's state.
pub struct Fusion {
    experts: Vec<String>,
    deadline_bars: u32,
    /// Keyed by plan id; BTreeMap so flushing order is deterministic.
    pending: BTreeMap<String, Pending>,
}

impl Fusion {
    fn entry(&mut self, plan_id: &str) -> &mut Pending {
        self.pending
            .entry(plan_id.to_string())
            .or_insert_with(|| Pending {
                plan: None,
                evidence: BTreeMap::new(),
                bars: 0,
                symbol: None,
            })
    }

    fn complete(&self, p: &Pending) -> bool {
        p.plan.is_some() && self.experts.iter().all(|e| p.evidence.contains_key(e))
    }

    fn forward(&mut self, plan_id: &str, out: &mut Outbox) {
        let Some(p) = self.pending.remove(plan_id) else {
            return;
        };
        let Some(plan) = p.plan else {
            // Evidence whose plan never came: nothing to forward.
            return;
        };
        let missing = self
            .experts
            .iter()
            .filter(|e| !p.evidence.contains_key(*e))
            .cloned()
            .collect();
        let scored = fuse(plan, &p.evidence, missing);
        let key = scored.plan.id.clone();
        out.publish("scored", &key, Body::Scored(scored));
    }

    fn on_plan(&mut self, plan: Plan, out: &mut Outbox) {
        let id = plan.id.clone();
        let entry = self.entry(&id);
        entry.symbol = Some(plan.symbol.clone());
        entry.plan = Some(plan);
        if self.pending.get(&id).is_some_and(|p| self.complete(p)) {
            self.forward(&id, out);
        }
    }

    fn on_evidence(&mut self, ev: Evidence, out: &mut Outbox) {
        if !self.experts.contains(&ev.expert) {
            return;
        }
        let id = ev.plan_id.clone();
        let entry = self.entry(&id);
        entry.evidence.insert(ev.expert, ev.llr);
        if self.pending.get(&id).is_some_and(|p| self.complete(p)) {
            self.forward(&id, out);
        }
    }

    fn on_bar(&mut self, symbol: &str, out: &mut Outbox) {
        let mut due = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            if p.symbol.as_deref().is_none_or(|s| s == symbol) {
                p.bars += 1;
            }
            if p.bars >= self.deadline_bars {
                due.push(id.clone());
            }
        }
        for id in due {
            self.forward(&id, out);
        }
    }
}

impl Module for Fusion {
    fn describe() -> Info {
        Info::new("fusion", env!("CARGO_PKG_VERSION"), "fusion")
            .subscribe(Subscription::shared("plan"))
            .subscribe(Subscription::shared("evidence"))
            .subscribe(Subscription::broadcast("bar"))
            .publishes("scored")
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let experts: Vec<String> = ctx
            .setting("experts")
            .unwrap_or("expert-anomaly")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let deadline = ctx.setting_f64("deadline-bars", 1.0)?;
        if !(0.0..=1000.0).contains(&deadline) || deadline.fract() != 0.0 {
            return Err(format!(
                "deadline-bars must be a whole number in 0..=1000, got {deadline}"
            ));
        }
        Ok(Fusion {
            experts,
            deadline_bars: deadline as u32,
            pending: BTreeMap::new(),
        })
    }

    fn on_message(&mut self, msg: Envelope, out: &mut Outbox) -> Result<(), String> {
        match msg.body {
            Body::Plan(plan) => {
                if plan.origin != msg.source {
                    return Err(format!(
                        "plan {} claims origin {} but was published by {}",
                        plan.id, plan.origin, msg.source
                    ));
                }
                self.on_plan(plan, out)
            }
            // Evidence for a plan already forwarded waits as an orphan and
            // expires at the deadline without effect.
            Body::Evidence(ev) => self.on_evidence(ev, out),
            Body::Bar(bar) => self.on_bar(&bar.symbol, out),
            Body::EndOfStream => {
                let ids: Vec<String> = self.pending.keys().cloned().collect();
                for id in ids {
                    self.forward(&id, out);
                }
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
    use garden_sdk::{Bar, Setting, Side};

    fn fusion(experts: &str, deadline: u32) -> Fusion {
        Fusion::init(InitContext {
            snapshot: None,
            instance: "f".into(),
            params: vec![],
            settings: vec![
                Setting {
                    name: "experts".into(),
                    value: experts.into(),
                },
                Setting {
                    name: "deadline-bars".into(),
                    value: deadline.to_string(),
                },
            ],
        })
        .unwrap()
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
        let s = fuse(plan("p", 0.6), &ev_map, vec![]);
        let prior = (0.6f64 / 0.4).ln();
        assert!((s.prior_log_odds - prior).abs() < 1e-12);
        assert!((s.log_odds - (prior + 0.3)).abs() < 1e-12);
        assert!((s.confidence - 1.0 / (1.0 + (-(prior + 0.3)).exp())).abs() < 1e-12);
        // Even prior and no evidence is a coin flip.
        assert!((fuse(plan("p", 0.5), &BTreeMap::new(), vec![]).confidence - 0.5).abs() < 1e-12);
        // Prior is clamped, so certainty does not give infinities.
        assert!(
            fuse(plan("p", 1.0), &BTreeMap::new(), vec![])
                .log_odds
                .is_finite()
        );
    }

    #[test]
    fn forwards_when_all_experts_answered_in_any_order() {
        let mut f = fusion("e1,e2", 3);
        let mut out = Outbox::new();
        f.on_message(env(ev("p", "e1", 0.4)), &mut out).unwrap();
        f.on_message(env(Body::Plan(plan("p", 0.5))), &mut out)
            .unwrap();
        assert!(scored(&out).is_empty());
        f.on_message(env(ev("p", "e2", 0.1)), &mut out).unwrap();
        let s = scored(&out);
        assert_eq!(s.len(), 1);
        assert!((s[0].log_odds - 0.5).abs() < 1e-12);
        assert!(s[0].missing.is_empty());
    }

    #[test]
    fn deadline_forwards_with_missing_experts() {
        let mut f = fusion("e1,e2", 2);
        let mut out = Outbox::new();
        f.on_message(env(Body::Plan(plan("p", 0.5))), &mut out)
            .unwrap();
        f.on_message(env(ev("p", "e1", 0.4)), &mut out).unwrap();
        f.on_message(env(bar()), &mut out).unwrap();
        assert!(scored(&out).is_empty(), "one bar is before the deadline");
        f.on_message(env(bar()), &mut out).unwrap();
        let s = scored(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].missing, vec!["e2".to_string()]);
        assert_eq!(s[0].experts, vec!["e1".to_string()]);
    }

    #[test]
    fn refuses_plan_with_forged_origin() {
        let mut f = fusion("e1", 1);
        let mut out = Outbox::new();
        let mut msg = env(Body::Plan(plan("p", 0.5)));
        msg.source = "someone-else".into();
        assert!(f.on_message(msg, &mut out).is_err());
    }
}
