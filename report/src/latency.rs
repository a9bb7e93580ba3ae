//! Wall-clock latency along the trading path, matched by plan id: from a
//! plan's publication to its decision's, and from an approved decision's
//! to its entry fill's. The host stamps when each message was published
//! (`Envelope::published_at`); which messages belong together is trading
//! knowledge, so it lives here and not in the host.
//!
//! Invariants: each plan and each decision is matched at most once; what
//! waits for its match is bounded ([`Latency::new`]'s `pending`), the
//! oldest forgotten first, so a path that never completes (a rejected
//! plan, a fill lost to a retirement) cannot grow it without end.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use garden_host::Envelope;
use garden_host::types::{Body, FillKind, Verdict};

/// The topics whose messages time the path.
pub const TOPICS: [&str; 3] = [
    crate::topics::PLAN,
    crate::topics::DECISION,
    crate::topics::FILL,
];

/// Plans (and decisions) at most waiting for their match, by default.
pub const PENDING: usize = 100_000;

/// The seed's target from a plan to its decision.
pub const PLAN_TO_DECISION_TARGET: Duration = Duration::from_millis(100);
/// The seed's target from a decision to its fill.
pub const DECISION_TO_FILL_TARGET: Duration = Duration::from_millis(50);

/// A step of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Plan published → its decision published.
    PlanToDecision,
    /// Approved decision published → its entry fill published.
    DecisionToFill,
}

impl Hop {
    /// The hop's name as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Hop::PlanToDecision => "plan_to_decision",
            Hop::DecisionToFill => "decision_to_fill",
        }
    }
}

/// Matches plans, decisions and fills as they pass.
#[derive(Debug)]
pub struct Latency {
    plans: Waiting,
    decisions: Waiting,
}

#[derive(Debug)]
struct Waiting {
    at: HashMap<String, SystemTime>,
    order: VecDeque<String>,
    cap: usize,
}

impl Waiting {
    fn insert(&mut self, id: &str, at: SystemTime) {
        if self.at.insert(id.to_string(), at).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.at.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.at.remove(&old);
                }
                None => break,
            }
        }
        // Matched ids leave `at` but stay in `order` until they reach its
        // front; keep `order` from growing past a few times the cap.
        if self.order.len() > self.cap.saturating_mul(4).max(64) {
            let at = &self.at;
            self.order.retain(|id| at.contains_key(id));
        }
    }

    fn take(&mut self, id: &str, now: SystemTime) -> Option<Duration> {
        let then = self.at.remove(id)?;
        Some(now.duration_since(then).unwrap_or(Duration::ZERO))
    }
}

impl Latency {
    /// A tracker keeping at most `pending` plans and as many decisions
    /// waiting for their match.
    pub fn new(pending: usize) -> Latency {
        let waiting = || Waiting {
            at: HashMap::new(),
            order: VecDeque::new(),
            cap: pending.max(1),
        };
        Latency {
            plans: waiting(),
            decisions: waiting(),
        }
    }

    /// Take in a message; the hop it completes and how long it took.
    /// Messages without a publish stamp are ignored.
    pub fn observe(&mut self, message: &Envelope) -> Option<(Hop, Duration)> {
        let at = message.trace.published_at?;
        match &message.body {
            Body::Plan(p) => {
                self.plans.insert(&p.id, at);
                None
            }
            Body::Decision(d) => {
                if !matches!(d.verdict, Verdict::Reject) {
                    self.decisions.insert(&d.plan.id, at);
                }
                self.plans
                    .take(&d.plan.id, at)
                    .map(|t| (Hop::PlanToDecision, t))
            }
            Body::Fill(f) if matches!(f.kind, FillKind::Entry) => self
                .decisions
                .take(&f.plan_id, at)
                .map(|t| (Hop::DecisionToFill, t)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use garden_host::types::{Decision, Fill, Plan, Side};

    fn plan(id: &str) -> Plan {
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
            confidence: 0.6,
            time: 0,
        }
    }

    fn at(ms: u64, body: Body) -> Envelope {
        Envelope {
            topic: "t".into(),
            key: "k".into(),
            seq: 0,
            time: 0,
            source: "s".into(),
            body,
            trace: garden_host::message::Trace {
                published_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
                origin: None,
            },
        }
    }

    fn decision(id: &str, verdict: Verdict) -> Body {
        Body::Decision(Decision {
            plan: plan(id),
            verdict,
            size: 1.0,
            confidence: 0.6,
            reason: String::new(),
            curation: vec![],
        })
    }

    fn entry(id: &str) -> Body {
        Body::Fill(Fill {
            plan_id: id.into(),
            origin: "a".into(),
            symbol: "X".into(),
            side: Side::Long,
            kind: FillKind::Entry,
            price: 1.0,
            size: 1.0,
            fee: 0.0,
            time: 0,
            curation: vec![],
        })
    }

    #[test]
    fn each_hop_is_timed_once_by_plan_id() {
        let mut l = Latency::new(8);
        assert_eq!(l.observe(&at(1_000, Body::Plan(plan("p1")))), None);
        assert_eq!(
            l.observe(&at(1_040, decision("p1", Verdict::Approve))),
            Some((Hop::PlanToDecision, Duration::from_millis(40)))
        );
        assert_eq!(
            l.observe(&at(1_045, entry("p1"))),
            Some((Hop::DecisionToFill, Duration::from_millis(5)))
        );
        // Matched once only; a rejected plan waits for no fill.
        assert_eq!(l.observe(&at(1_050, entry("p1"))), None);
        l.observe(&at(2_000, Body::Plan(plan("p2"))));
        l.observe(&at(2_001, decision("p2", Verdict::Reject)));
        assert_eq!(l.observe(&at(2_002, entry("p2"))), None);
    }

    #[test]
    fn what_waits_is_bounded_and_the_oldest_goes_first() {
        let mut l = Latency::new(2);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            l.observe(&at(i as u64, Body::Plan(plan(id))));
        }
        assert_eq!(l.observe(&at(10, decision("a", Verdict::Approve))), None);
        assert!(
            l.observe(&at(10, decision("c", Verdict::Approve)))
                .is_some()
        );
        for i in 0..1_000 {
            l.observe(&at(i, Body::Plan(plan(&format!("x{i}")))));
        }
        assert!(l.plans.at.len() <= 2 && l.plans.order.len() <= 64);
    }
}
