//! Alpha detector: EMA crossover with ATR-based stop and target.
//!
//! When the fast EMA crosses above the slow one it writes a long plan, below
//! a short plan (if `allow-short`). Entry is the bar's close (the trader fills
//! at the next open), the stop `stop-atr` ATRs away, the target `target-atr`
//! ATRs away, closing after `horizon` bars. Its confidence is its own
//! Laplace-smoothed hit rate from the feedback on its earlier plans, with
//! old outcomes fading by `DECAY` per plan written, so a variant that keeps
//! losing says so to the fusion module, yet one whose plans are all being
//! rejected drifts back to an even prior instead of being shut out for good.
//!
//! `fast` and `slow` may come in either order (random genes do): the shorter
//! window is the fast one; equal windows make the slow one a bar longer.
//!
//! **Decisions.** The decision module sends each verdict back to the
//! variant. The variant scales its size hint by how much of its asks were
//! granted of late: each approval moves the scale a fifth of the way to 1,
//! each modification a fifth of the way to its scale × approved / asked (rejections
//! leave it), so a variant whose plans keep being cut asks for what it
//! gets.
//!
//! **Intel** (`intel` setting: `off` by default, `share` or `use`; see
//! `intel.rs`). A sharing variant broadcasts its record in the regime of
//! each closed plan (regime labels from the `regime` topic). A variant
//! using intel also skips a plan while the other variants' pooled hit rate
//! in the current regime, over at least `intel-min-samples` (20) trades,
//! is below `intel-skip-below` (0.35); records older than `intel-memory`
//! (500) bars no longer count.

use std::collections::BTreeMap;

use garden_sdk::indicators::{Atr, Ema};
use garden_sdk::{
    Bar, Body, Decision, Envelope, Gene, Info, InitContext, Module, Outbox, Plan, Side, Snapshot,
    Subscription, Verdict,
};

pub mod intel;

use intel::{Ledger, Sharing};

/// Version of the snapshot format: the decayed win and close counts, then
/// (since version 2) the last plan number and the owner's instance id.
/// A child inherits the counts only; the instance itself (restarted, or
/// given new code by a `replace` deploy) also goes on numbering its plans
/// where it stopped, so a plan id is never used twice.
const SNAPSHOT_VERSION: u32 = 2;

/// Indicators of one symbol (each symbol its own, so several
/// instruments on one timeline do not mix).
struct Tape {
    fast: Ema,
    slow: Ema,
    atr: Atr,
    /// Sign of fast - slow on the previous bar, once both exist.
    last_sign: Option<bool>,
}

/// One variant's state.
pub struct Alpha {
    instance: String,
    /// Indicator periods: fast, slow, ATR.
    periods: (usize, usize, usize),
    tapes: BTreeMap<String, Tape>,
    stop_atr: f64,
    target_atr: f64,
    horizon: u32,
    size: f64,
    allow_short: bool,
    next_id: u64,
    /// Decayed counts of winning and closed plans.
    wins: f64,
    closed: f64,
    /// Share of its size hint the decisions have lately granted.
    size_scale: f64,
    sharing: Sharing,
    skip_below: f64,
    min_samples: f64,
    /// Bars a record heard from another variant counts for.
    memory: u64,
    /// The latest regime label per symbol.
    labels: BTreeMap<String, String>,
    ledger: Ledger,
}

/// How far each decision moves the size scale toward what it granted.
const SCALE_STEP: f64 = 0.2;

/// Smallest size scale: a variant keeps asking for something.
const MIN_SCALE: f64 = 0.05;

/// How much of the past hit rate survives each new plan.
const DECAY: f64 = 0.95;

impl Alpha {
    fn on_bar(&mut self, bar: &Bar, out: &mut Outbox) {
        self.ledger.tick();
        let (f, sl, a) = self.periods;
        let tape = self
            .tapes
            .entry(bar.symbol.clone())
            .or_insert_with(|| Tape {
                fast: Ema::new(f),
                slow: Ema::new(sl),
                atr: Atr::new(a),
                last_sign: None,
            });
        let fast = tape.fast.update(bar.close);
        let slow = tape.slow.update(bar.close);
        let atr = tape.atr.update(bar.high, bar.low, bar.close);
        let (Some(fast), Some(slow), Some(atr)) = (fast, slow, atr) else {
            return;
        };
        let above = fast > slow;
        let crossed = tape.last_sign.is_some_and(|was| was != above);
        tape.last_sign = Some(above);
        if !crossed || atr <= 0.0 {
            return;
        }
        let side = if above { Side::Long } else { Side::Short };
        if side == Side::Short && !self.allow_short {
            return;
        }
        let label = self.labels.get(&bar.symbol).cloned().unwrap_or_default();
        if self.sharing == Sharing::Use && !label.is_empty() {
            let (trades, hit) = self.ledger.pooled(&label, self.memory);
            if trades >= self.min_samples && hit < self.skip_below {
                return;
            }
        }
        let s = side.sign();
        self.next_id += 1;
        self.wins *= DECAY;
        self.closed *= DECAY;
        let plan = Plan {
            id: format!("{}-{}", self.instance, self.next_id),
            origin: self.instance.clone(),
            symbol: bar.symbol.clone(),
            side,
            entry: bar.close,
            stop: bar.close - s * self.stop_atr * atr,
            target: bar.close + s * self.target_atr * atr,
            size: self.size * self.size_scale,
            horizon: self.horizon,
            confidence: self.confidence(),
            time: bar.time,
        };
        if self.sharing != Sharing::Off {
            let risk = plan.size * (plan.entry - plan.stop).abs();
            self.ledger.planned(&plan.id, &label, risk);
        }
        out.publish("plan", &plan.id.clone(), Body::Plan(plan));
    }

    /// Ask for what the decisions grant.
    fn on_decision(&mut self, d: &Decision) {
        let asked = d.plan.size;
        let target = match d.verdict {
            Verdict::Approve => 1.0,
            Verdict::Modify if asked > 0.0 && d.size.is_finite() => {
                self.size_scale * d.size / asked
            }
            _ => return,
        };
        self.size_scale += SCALE_STEP * (target.clamp(MIN_SCALE, 1.0) - self.size_scale);
    }

    /// (wins + 1) / (closed + 2), kept inside [0.3, 0.7] so one lucky streak
    /// does not dominate the fused score.
    fn confidence(&self) -> f64 {
        let p = (self.wins + 1.0) / (self.closed + 2.0);
        p.clamp(0.3, 0.7)
    }
}

impl Module for Alpha {
    fn describe() -> Info {
        Info::new("alpha-ema", env!("CARGO_PKG_VERSION"), "alpha")
            .cohort(1024)
            .subscribe(Subscription::broadcast("bar"))
            .subscribe(Subscription::addressed("decision"))
            .subscribe(Subscription::addressed("feedback"))
            .subscribe(Subscription::broadcast("regime"))
            .subscribe(Subscription::broadcast("intel"))
            .publishes("plan")
            .publishes("intel")
            .gene(Gene::int("fast", 2.0, 50.0, 10.0, 3.0))
            .gene(Gene::int("slow", 5.0, 200.0, 30.0, 8.0))
            .gene(Gene::int("atr-period", 5.0, 50.0, 14.0, 3.0))
            .gene(Gene::float("stop-atr", 0.5, 5.0, 2.0, 0.3))
            .gene(Gene::float("target-atr", 0.5, 10.0, 3.0, 0.5))
            .gene(Gene::int("horizon", 1.0, 200.0, 24.0, 6.0))
            .gene(Gene::float("size", 1000.0, 100000.0, 10000.0, 2000.0))
            .gene(Gene::boolean("allow-short", true))
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let (a, b) = (ctx.int("fast")?, ctx.int("slow")?);
        let (fast, slow) = (a.min(b), if a == b { b + 1 } else { a.max(b) });
        let period = |v: i64, name: &str| {
            usize::try_from(v)
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| format!("{name} must be a positive integer, got {v}"))
        };
        let horizon = ctx.int("horizon")?;
        // Inherit the parent's (or its own last) track record.
        let (wins, closed, next_id) = match &ctx.snapshot {
            None => (0.0, 0.0, 0),
            Some(snap) => restore(snap, &ctx.instance)?,
        };
        Ok(Alpha {
            periods: (
                period(fast, "fast")?,
                period(slow, "slow")?,
                period(ctx.int("atr-period")?, "atr-period")?,
            ),
            tapes: BTreeMap::new(),
            stop_atr: ctx.float("stop-atr")?,
            target_atr: ctx.float("target-atr")?,
            horizon: u32::try_from(horizon)
                .ok()
                .filter(|h| *h >= 1)
                .ok_or_else(|| format!("horizon must be at least 1, got {horizon}"))?,
            size: ctx.float("size")?,
            allow_short: ctx.boolean("allow-short")?,
            sharing: Sharing::parse(ctx.setting("intel").unwrap_or("off"))?,
            skip_below: ctx.setting_in("intel-skip-below", 0.35, 0.0..=1.0)?,
            min_samples: ctx.setting_f64("intel-min-samples", 20.0)?.max(1.0),
            memory: ctx.setting_f64("intel-memory", 500.0)?.clamp(1.0, 1e9) as u64,
            instance: ctx.instance,
            next_id,
            wins,
            closed,
            size_scale: 1.0,
            labels: BTreeMap::new(),
            ledger: Ledger::default(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Bar(bar) => self.on_bar(bar, out),
            Body::Feedback(fb) if fb.origin == self.instance => {
                self.closed += 1.0;
                if fb.pnl > 0.0 {
                    self.wins += 1.0;
                }
                if self.sharing != Sharing::Off
                    && let Some(intel) = self.ledger.outcome(&self.instance, &fb.plan_id, fb.pnl)
                {
                    out.publish("intel", &self.instance, Body::Intel(intel));
                }
            }
            Body::Decision(d) if d.plan.origin == self.instance => self.on_decision(d),
            // Regime changes are keyed by their symbol.
            Body::Context(c) => {
                self.labels.insert(msg.key.clone(), c.label.clone());
            }
            Body::Intel(i) if self.sharing == Sharing::Use => {
                self.ledger.heard(&self.instance, &msg.source, i)
            }
            _ => {}
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<Snapshot> {
        let mut data = self.wins.to_le_bytes().to_vec();
        data.extend_from_slice(&self.closed.to_le_bytes());
        data.extend_from_slice(&self.next_id.to_le_bytes());
        data.extend_from_slice(self.instance.as_bytes());
        Some(Snapshot {
            version: SNAPSHOT_VERSION,
            data,
        })
    }
}

/// (wins, closes, next plan number) from a snapshot of version 1 (counts
/// only) or 2 (counts, plan number, owner); the plan number only if the
/// snapshot is `instance`'s own.
fn restore(snap: &Snapshot, instance: &str) -> Result<(f64, f64, u64), String> {
    let f = |b: &[u8]| f64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    let (counts, rest) = match snap.version {
        1 | 2 if snap.data.len() >= 16 => snap.data.split_at(16),
        _ => {
            return Err(format!(
                "snapshot version {} ({} bytes) is not version 1 or {SNAPSHOT_VERSION}",
                snap.version,
                snap.data.len()
            ));
        }
    };
    let (w, c) = (f(&counts[..8]), f(&counts[8..]));
    if !(w.is_finite() && c.is_finite() && 0.0 <= w && w <= c) {
        return Err(format!("snapshot holds impossible counts: {w} wins of {c}"));
    }
    let next_id = match (snap.version, rest.len()) {
        (1, 0) => 0,
        (2, n) if n >= 8 => {
            let (number, owner) = rest.split_at(8);
            if owner == instance.as_bytes() {
                u64::from_le_bytes(number.try_into().unwrap_or([0; 8]))
            } else {
                0
            }
        }
        _ => return Err(format!("snapshot version {} is truncated", snap.version)),
    };
    Ok((w, c, next_id))
}

garden_sdk::export_module!(Alpha);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{GeneValue, Param};

    fn ctx(fast: i64, slow: i64) -> InitContext {
        let p = |name: &str, value: GeneValue| Param {
            name: name.into(),
            value,
        };
        InitContext {
            member: 0,
            snapshot: None,
            instance: "a1".into(),
            params: vec![
                p("fast", GeneValue::Int(fast)),
                p("slow", GeneValue::Int(slow)),
                p("atr-period", GeneValue::Int(3)),
                p("stop-atr", GeneValue::Float(2.0)),
                p("target-atr", GeneValue::Float(3.0)),
                p("horizon", GeneValue::Int(10)),
                p("size", GeneValue::Float(1000.0)),
                p("allow-short", GeneValue::Boolean(true)),
            ],
            settings: vec![],
        }
    }

    fn bar(i: i64, close: f64) -> Envelope {
        Envelope {
            topic: "bar".into(),
            key: "X".into(),
            seq: i as u64,
            time: i * 3_600_000,
            source: "feed".into(),
            body: Body::Bar(Bar {
                symbol: "X".into(),
                time: i * 3_600_000,
                open: close,
                high: close + 0.5,
                low: close - 0.5,
                close,
                volume: 100.0,
            }),
        }
    }

    #[test]
    fn snapshot_round_trips_and_bad_ones_are_refused() {
        let mut a = Alpha::init(ctx(2, 4)).unwrap();
        a.wins = 3.0;
        a.closed = 5.0;
        let snap = a.snapshot().unwrap();
        let mut c = ctx(2, 4);
        c.snapshot = Some(snap);
        let child = Alpha::init(c).unwrap();
        assert_eq!((child.wins, child.closed), (3.0, 5.0));
        // A child starts its own numbering; the instance itself goes on.
        let mut numbered = Alpha::init(ctx(2, 4)).unwrap();
        numbered.next_id = 41;
        let mut other = ctx(2, 4);
        other.instance = "a2".into();
        other.snapshot = numbered.snapshot();
        assert_eq!(Alpha::init(other).unwrap().next_id, 0);
        let mut same = ctx(2, 4);
        same.snapshot = numbered.snapshot();
        assert_eq!(Alpha::init(same).unwrap().next_id, 41);
        // Version 1 (counts only) still reads.
        let mut old = ctx(2, 4);
        old.snapshot = Some(Snapshot {
            version: 1,
            data: [3.0f64.to_le_bytes(), 5.0f64.to_le_bytes()].concat(),
        });
        assert_eq!(Alpha::init(old).unwrap().closed, 5.0);
        let mut bad = ctx(2, 4);
        bad.snapshot = Some(Snapshot {
            version: 9,
            data: vec![],
        });
        assert!(Alpha::init(bad).is_err());
    }

    fn with_intel(sharing: &str) -> Alpha {
        let mut c = ctx(2, 4);
        c.settings = vec![
            garden_sdk::Setting {
                name: "intel".into(),
                value: sharing.into(),
            },
            garden_sdk::Setting {
                name: "intel-min-samples".into(),
                value: "10".into(),
            },
        ];
        Alpha::init(c).unwrap()
    }

    fn plans(out: &Outbox) -> Vec<Plan> {
        out.messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Plan(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// The same bars, regime and intel to two variants: the one using
    /// intel skips the plan the others' poor record advises against.
    #[test]
    fn a_variant_using_intel_behaves_differently_and_deterministically() {
        let run = |sharing: &str| {
            let mut a = with_intel(sharing);
            let mut out = Outbox::new();
            let mut regime = bar(0, 0.0);
            regime.body = Body::Context(garden_sdk::ContextChange {
                label: "range-calm".into(),
                detail: String::new(),
            });
            a.on_message(&regime, &mut out).unwrap();
            let mut heard = bar(0, 0.0);
            heard.source = "b".into();
            heard.body = Body::Intel(garden_sdk::Intel {
                subject: "b".into(),
                scope: "range-calm".into(),
                values: vec![
                    garden_sdk::Metric {
                        name: "trades".into(),
                        value: 12.0,
                    },
                    garden_sdk::Metric {
                        name: "hit-rate".into(),
                        value: 0.25,
                    },
                ],
                samples: 12,
            });
            a.on_message(&heard, &mut out).unwrap();
            let closes = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 6.0, 8.0, 11.0, 15.0];
            for (i, c) in closes.iter().enumerate() {
                a.on_message(&bar(i as i64, *c), &mut out).unwrap();
            }
            plans(&out)
        };
        assert_eq!(run("share").len(), 1, "ignores what it hears");
        assert!(
            run("use").is_empty(),
            "skips the cross in a regime the others lose in"
        );
        assert_eq!(run("use"), run("use"));
        assert_eq!(run("off"), run("share"));
    }

    #[test]
    fn its_own_outcomes_are_shared_and_cuts_shrink_the_next_ask() {
        let mut a = with_intel("share");
        let mut out = Outbox::new();
        let closes = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 6.0, 8.0, 11.0, 15.0];
        for (i, c) in closes.iter().enumerate() {
            a.on_message(&bar(i as i64, *c), &mut out).unwrap();
        }
        let plan = plans(&out).pop().expect("a plan");
        let mut verdict = bar(20, 0.0);
        verdict.body = Body::Decision(Decision {
            plan: plan.clone(),
            verdict: Verdict::Modify,
            size: plan.size / 2.0,
            confidence: 0.5,
            reason: String::new(),
            curation: vec![],
        });
        a.on_message(&verdict, &mut out).unwrap();
        assert!(
            (a.size_scale - 0.9).abs() < 1e-12,
            "a fifth of the way to a half"
        );
        let mut fb = bar(21, 0.0);
        fb.body = Body::Feedback(garden_sdk::Feedback {
            plan_id: plan.id.clone(),
            origin: "a1".into(),
            pnl: 10.0,
            exit: garden_sdk::FillKind::Target,
            bars_held: 3,
        });
        a.on_message(&fb, &mut out).unwrap();
        let shared: Vec<_> = out
            .messages()
            .iter()
            .filter(|m| m.topic == "intel")
            .collect();
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].key, "a1");
    }

    #[test]
    fn windows_in_either_order_work() {
        let a = Alpha::init(ctx(30, 10)).unwrap();
        assert_eq!((a.periods.0, a.periods.1), (10, 30));
        let b = Alpha::init(ctx(10, 10)).unwrap();
        assert_eq!((b.periods.0, b.periods.1), (10, 11));
        assert!(Alpha::init(ctx(0, 10)).is_err(), "a zero window is refused");
    }

    #[test]
    fn writes_long_plan_on_upward_cross_with_stop_below_and_target_above() {
        let mut alpha = Alpha::init(ctx(2, 4)).unwrap();
        let mut out = Outbox::new();
        let closes = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 6.0, 8.0, 11.0, 15.0];
        for (i, c) in closes.iter().enumerate() {
            alpha.on_message(&bar(i as i64, *c), &mut out).unwrap();
        }
        let plans: Vec<&Plan> = out
            .messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Plan(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(plans.len(), 1, "one upward cross");
        let plan = plans[0];
        assert_eq!(plan.side, Side::Long);
        assert!(plan.stop < plan.entry && plan.entry < plan.target);
        assert_eq!(plan.origin, "a1");
        assert_eq!(plan.id, "a1-1");
        assert!((plan.confidence - 0.5).abs() < 1e-12);
    }
}
