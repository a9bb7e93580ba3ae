//! Performance curator (governs plans, at the decision): sizes a plan up or
//! down by how its originating variant's recent trades went.
//!
//! For each origin it keeps, from the `feedback` broadcast, a decayed win
//! count w and trade count n (per closed trade: w = decay·w + won,
//! n = decay·n + 1, a trade won when its pnl is above 0) and the raw number
//! k of closed trades. The recent hit rate is h = w / n. A scored plan of an
//! origin with no closed trade passes; otherwise it gets a size nudge of
//!
//! `κ × clamp(2·(h − 0.5) × min(1, k / min-trades), −1, 1)`
//!
//! so a variant winning more than half its recent trades trades larger and
//! one losing more trades smaller, with the nudge growing from 0 to its full
//! weight over the first `min-trades` trades (few trades say little). A
//! nudge smaller than [`MIN_AMOUNT`] is a pass. Feedback is realised, so
//! the verdict has no look-ahead.
//!
//! Settings: `decay` (0.9), `min-trades` (10), `kappa` (0.1).
//!
//! Invariants: one verdict per scored plan, published at once, keyed by the
//! plan id; nudges within ±κ; a retired origin is forgotten; at most
//! [`MAX_ORIGINS`] origins kept (the one longest without a trade goes
//! first); feedback with a non-finite pnl is ignored.

use std::collections::BTreeMap;

use garden_sdk::curation::{DEFAULT_KAPPA, MAX_KAPPA, Verdicts};
use garden_sdk::{
    Body, Curation, Envelope, Feedback, Info, InitContext, Module, NudgeTarget, Outbox, Plan,
    Subscription,
};

/// Most origins kept.
pub const MAX_ORIGINS: usize = 10_000;

/// Smallest nudge worth sending; below it the plan passes.
pub const MIN_AMOUNT: f64 = 1e-9;

/// The hit rate that earns no nudge either way.
const NEUTRAL_HIT_RATE: f64 = 0.5;

/// Largest `min-trades` accepted.
const MAX_MIN_TRADES: f64 = 10_000.0;

const DEFAULT_DECAY: f64 = 0.9;
const DEFAULT_MIN_TRADES: f64 = 10.0;

/// One origin's closed trades.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Decayed count of winning trades.
    pub wins: f64,
    /// Decayed count of trades.
    pub trades: f64,
    /// Raw number of closed trades.
    pub closed: u64,
    /// Its key in `PerformanceCurator::by_age`.
    last: u64,
}

impl Record {
    /// One more closed trade.
    pub fn close(&mut self, won: bool, decay: f64) {
        self.wins = decay * self.wins + f64::from(u8::from(won));
        self.trades = decay * self.trades + 1.0;
        self.closed = self.closed.saturating_add(1);
    }

    /// The decayed hit rate, or none before the first trade.
    pub fn hit_rate(&self) -> Option<f64> {
        (self.closed > 0 && self.trades > 0.0).then(|| self.wins / self.trades)
    }
}

/// The size nudge a plan of an origin with `record` earns (0 for none).
pub fn amount(record: &Record, kappa: f64, min_trades: f64) -> f64 {
    let Some(h) = record.hit_rate() else {
        return 0.0;
    };
    let weight = (record.closed as f64 / min_trades).min(1.0);
    kappa * (2.0 * (h - NEUTRAL_HIT_RATE) * weight).clamp(-1.0, 1.0)
}

/// The curator's state.
pub struct PerformanceCurator {
    verdicts: Verdicts,
    decay: f64,
    min_trades: f64,
    kappa: f64,
    /// By origin.
    records: BTreeMap<String, Record>,
    /// Origins by their last trade, to drop the stalest when full.
    by_age: BTreeMap<u64, String>,
    next_seq: u64,
}

impl PerformanceCurator {
    /// Counts one closed trade for its origin.
    fn feedback(&mut self, fb: &Feedback) {
        if !fb.pnl.is_finite() {
            return;
        }
        if let Some(known) = self.records.get(&fb.origin) {
            self.by_age.remove(&known.last);
        } else {
            while self.records.len() >= MAX_ORIGINS {
                let Some((_, stalest)) = self.by_age.pop_first() else {
                    break;
                };
                self.records.remove(&stalest);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = self.records.entry(fb.origin.clone()).or_default();
        record.last = seq;
        self.by_age.insert(seq, fb.origin.clone());
        record.close(fb.pnl > 0.0, self.decay);
    }

    fn forget(&mut self, origin: &str) {
        if let Some(r) = self.records.remove(origin) {
            self.by_age.remove(&r.last);
        }
    }

    /// The verdict on one plan, signed by this instance.
    pub fn verdict(&self, plan: &Plan) -> Curation {
        let Some(record) = self.records.get(&plan.origin) else {
            return self
                .verdicts
                .pass(&plan.id, &format!("no closed trade of {} yet", plan.origin));
        };
        let a = amount(record, self.kappa, self.min_trades);
        let why = format!(
            "hit rate {:.2} over {} closed trades of {}",
            record.hit_rate().unwrap_or(NEUTRAL_HIT_RATE),
            record.closed,
            plan.origin
        );
        if a.abs() < MIN_AMOUNT {
            return self.verdicts.pass(&plan.id, &why);
        }
        self.verdicts.nudge(&plan.id, NudgeTarget::Size, a, &why)
    }
}

impl Module for PerformanceCurator {
    fn describe() -> Info {
        Info::new("curator-performance", env!("CARGO_PKG_VERSION"), "curator")
            .subscribe(Subscription::shared("scored"))
            .subscribe(Subscription::broadcast("feedback"))
            .publishes("curation")
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let decay = ctx.setting_f64("decay", DEFAULT_DECAY)?;
        // 0 would keep no memory at all and n could not grow past 1.
        if !(decay > 0.0 && decay <= 1.0) {
            return Err(format!("decay must be in (0, 1], got {decay}"));
        }
        let min_trades = ctx.setting_f64("min-trades", DEFAULT_MIN_TRADES)?;
        if !(1.0..=MAX_MIN_TRADES).contains(&min_trades) || min_trades.fract() != 0.0 {
            return Err(format!(
                "min-trades must be a whole number in 1..={MAX_MIN_TRADES}, got {min_trades}"
            ));
        }
        let kappa = ctx.setting_f64("kappa", DEFAULT_KAPPA)?;
        if !(0.0..=MAX_KAPPA).contains(&kappa) {
            return Err(format!("kappa must be in 0..={MAX_KAPPA}, got {kappa}"));
        }
        Ok(PerformanceCurator {
            verdicts: Verdicts::by(&ctx.instance),
            decay,
            min_trades,
            kappa,
            records: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Feedback(fb) => self.feedback(fb),
            Body::Retired(origin) => self.forget(origin),
            Body::Scored(scored) => {
                let verdict = self.verdict(&scored.plan);
                out.publish("curation", &scored.plan.id, Body::Curation(verdict));
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(PerformanceCurator);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{CuratorAction, FillKind, ScoredPlan, Side};

    fn curator(settings: &[(&str, &str)]) -> Result<PerformanceCurator, String> {
        PerformanceCurator::init(garden_sdk::testing::context(
            "curator-performance",
            settings,
        ))
    }

    fn send(c: &mut PerformanceCurator, body: Body) -> Outbox {
        let mut out = Outbox::new();
        let msg = garden_sdk::testing::message("s", "k", body);
        c.on_message(&msg, &mut out).unwrap();
        out
    }

    /// Closed trades of `origin`, oldest first: true for a win.
    fn trades(c: &mut PerformanceCurator, origin: &str, wins: &[bool]) {
        for (i, won) in wins.iter().enumerate() {
            let pnl = if *won { 100.0 } else { -100.0 };
            send(
                c,
                Body::Feedback(Feedback {
                    plan_id: format!("{origin}-{i}"),
                    origin: origin.into(),
                    pnl,
                    exit: FillKind::Target,
                    bars_held: 1,
                }),
            );
        }
    }

    fn plan(origin: &str) -> Plan {
        Plan {
            id: "p".into(),
            origin: origin.into(),
            symbol: "X".into(),
            side: Side::Long,
            entry: 1.0,
            stop: 0.99,
            target: 1.02,
            size: 1.0,
            horizon: 5,
            confidence: 0.5,
            time: 0,
        }
    }

    #[test]
    fn eight_wins_of_ten_size_up_and_two_of_ten_size_down() {
        let mut c = curator(&[]).unwrap();
        // The losses last, so decay works against the winner.
        let mut good = vec![true; 8];
        good.extend([false, false]);
        trades(&mut c, "good", &good);
        // The wins last, so decay works for the loser.
        let mut bad = vec![false; 8];
        bad.extend([true, true]);
        trades(&mut c, "bad", &bad);

        let up = c.verdict(&plan("good"));
        assert_eq!(up.action, CuratorAction::Nudge);
        assert_eq!(up.target, NudgeTarget::Size);
        assert!(
            up.amount > 0.0 && up.amount <= DEFAULT_KAPPA,
            "{}",
            up.amount
        );
        assert!(up.reason.contains("10 closed trades"), "{}", up.reason);

        let down = c.verdict(&plan("bad"));
        assert_eq!(down.action, CuratorAction::Nudge);
        assert!(
            down.amount < 0.0 && down.amount >= -DEFAULT_KAPPA,
            "{}",
            down.amount
        );
    }

    #[test]
    fn the_formula_holds_without_decay() {
        let mut c = curator(&[("decay", "1"), ("kappa", "0.2")]).unwrap();
        trades(&mut c, "a", &[true, true, true, false, true]);
        // h = 0.8, weight 5/10: 0.2 × 2·0.3 × 0.5 = 0.06.
        let v = c.verdict(&plan("a"));
        assert!((v.amount - 0.06).abs() < 1e-12, "{}", v.amount);
        // All wins, past min-trades: the full κ, never more.
        trades(&mut c, "b", &[true; 30]);
        assert!((c.verdict(&plan("b")).amount - 0.2).abs() < 1e-12);
    }

    #[test]
    fn one_trade_is_close_to_nothing_and_none_is_a_pass() {
        let mut c = curator(&[]).unwrap();
        assert_eq!(c.verdict(&plan("new")).action, CuratorAction::Pass);
        trades(&mut c, "new", &[true]);
        let v = c.verdict(&plan("new"));
        assert!(
            v.amount > 0.0 && v.amount <= DEFAULT_KAPPA / 10.0 + 1e-12,
            "{}",
            v.amount
        );
        // Even wins and losses: neutral, a pass.
        trades(&mut c, "even", &[true, false]);
        let mut even = c.records["even"].clone();
        even.wins = even.trades / 2.0;
        assert_eq!(amount(&even, DEFAULT_KAPPA, 10.0), 0.0);
    }

    #[test]
    fn a_retired_origin_is_forgotten() {
        let mut c = curator(&[]).unwrap();
        trades(&mut c, "a", &[true; 10]);
        trades(&mut c, "b", &[true; 10]);
        assert_eq!(c.verdict(&plan("a")).action, CuratorAction::Nudge);
        send(&mut c, Body::Retired("a".into()));
        assert_eq!(c.verdict(&plan("a")).action, CuratorAction::Pass);
        assert_eq!(c.verdict(&plan("b")).action, CuratorAction::Nudge);
        assert_eq!(c.by_age.len(), 1);
    }

    #[test]
    fn non_finite_pnl_is_ignored() {
        let mut c = curator(&[]).unwrap();
        send(
            &mut c,
            Body::Feedback(Feedback {
                plan_id: "x".into(),
                origin: "a".into(),
                pnl: f64::NAN,
                exit: FillKind::Stop,
                bars_held: 1,
            }),
        );
        assert!(c.records.is_empty());
    }

    #[test]
    fn origins_are_capped_dropping_the_stalest() {
        let mut c = curator(&[]).unwrap();
        for i in 0..MAX_ORIGINS {
            trades(&mut c, &format!("o{i}"), &[true]);
        }
        // o0 trades again, so o1 is now the stalest.
        trades(&mut c, "o0", &[true]);
        trades(&mut c, "late", &[true]);
        assert_eq!(c.records.len(), MAX_ORIGINS);
        assert_eq!(c.by_age.len(), MAX_ORIGINS);
        assert!(c.records.contains_key("o0") && c.records.contains_key("late"));
        assert!(!c.records.contains_key("o1"));
    }

    #[test]
    fn every_scored_plan_gets_one_verdict_keyed_by_its_id() {
        let mut c = curator(&[]).unwrap();
        let scored = ScoredPlan {
            plan: plan("a"),
            prior_log_odds: 0.0,
            log_odds: 0.0,
            confidence: 0.5,
            experts: vec![],
            missing: vec![],
            confirmed: false,
            curation: vec![],
        };
        let out = send(&mut c, Body::Scored(scored));
        assert_eq!(out.messages().len(), 1);
        assert_eq!(out.messages()[0].topic, "curation");
        assert_eq!(out.messages()[0].key, "p");
        match &out.messages()[0].body {
            Body::Curation(v) => assert_eq!(v.curator, "curator-performance"),
            other => panic!("not a curation: {other:?}"),
        }
    }

    #[test]
    fn settings_outside_their_range_are_refused_by_name() {
        for (name, value) in [
            ("decay", "0"),
            ("decay", "1.1"),
            ("min-trades", "0"),
            ("min-trades", "2.5"),
            ("kappa", "-0.1"),
        ] {
            let err = curator(&[(name, value)]).err().unwrap();
            assert!(err.contains(name), "{err}");
        }
    }
}
