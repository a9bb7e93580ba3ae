//! Compliance curator (governs plans, at the decision): watches the whole
//! book across every variant and stops or shrinks plans that would break
//! the desk's limits.
//!
//! The book is built from what the trader broadcasts. An `entry` fill opens
//! a position (plan id → symbol, signed size = side × size, entry price);
//! any other fill of that plan closes it: it stops counting towards the
//! caps at once, and its pnl stays frozen at the exit price until its
//! feedback arrives, so the gap between a fill and its feedback never looks
//! like a loss. Realised pnl is the sum of the feedback's pnl; each symbol
//! is marked at its last bar's close (an open position with no mark yet is
//! marked at its entry). Book pnl = realised + Σ unrealised of the open
//! positions.
//!
//! For every scored plan, one verdict, in this order:
//!
//! 1. **kill switch**: once the book pnl has fallen from its running peak
//!    by `kill-drawdown` or more, every plan is vetoed for the next
//!    `kill-bars` bars (bars of any symbol count); then the peak restarts
//!    from the pnl of that moment.
//! 2. **caps** on notional (|size| × price): gross on the plan's symbol
//!    (`max-symbol`), gross of the whole book (`max-gross`) and |net| of the
//!    whole book (`max-net`). The plan's notional is its size hint × entry,
//!    signed by its side; a plan that would take a measure it raises over
//!    its cap is vetoed, naming the cap.
//! 3. **headroom**: if after the plan a measure it raises would be more
//!    than (1 − `headroom`) of its cap, a size nudge of −κ × depth, where
//!    depth (0..1) is how far into that top band it goes (the deepest
//!    cap counts); otherwise the plan passes.
//!
//! A measure the plan does not raise (a short against a long net) never
//! vetoes or shrinks it: shrinking would only keep the book fuller. A plan
//! with no usable size or entry passes, left to the decision's own checks.
//!
//! Settings: `kill-drawdown` (5,000, currency), `kill-bars` (24),
//! `max-symbol` (2,000,000), `max-gross` (4,000,000), `max-net`
//! (2,000,000), `headroom` (0.2), `kappa` (0.1).
//!
//! Invariants: one verdict per scored plan, published at once, keyed by the
//! plan id; nudges within ±κ; at most [`MAX_POSITIONS`] positions and
//! [`MAX_SYMBOLS`] marks kept; non-finite numbers from messages are
//! ignored.

use std::collections::BTreeMap;

use garden_sdk::curation::{DEFAULT_KAPPA, MAX_KAPPA, Verdicts};
use garden_sdk::{
    Bar, Body, Curation, Envelope, Feedback, Fill, FillKind, Info, InitContext, Module,
    NudgeTarget, Outbox, Plan, Subscription,
};

/// Most positions (open or awaiting feedback) kept; the oldest goes first.
pub const MAX_POSITIONS: usize = 10_000;

/// Most symbols with a mark kept; a symbol beyond them is marked at entry.
pub const MAX_SYMBOLS: usize = 10_000;

/// Largest currency amount accepted by a setting.
const MAX_MONEY: f64 = 1e12;

/// Longest kill switch accepted, in bars.
const MAX_BARS: f64 = 10_000.0;

const DEFAULT_KILL_DRAWDOWN: f64 = 5_000.0;
const DEFAULT_KILL_BARS: f64 = 24.0;
const DEFAULT_MAX_SYMBOL: f64 = 2_000_000.0;
const DEFAULT_MAX_GROSS: f64 = 4_000_000.0;
const DEFAULT_MAX_NET: f64 = 2_000_000.0;
const DEFAULT_HEADROOM: f64 = 0.2;

/// The settings, apart from the state so [`judge`] is a pure function.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Fall of the book pnl from its peak that trips the kill switch.
    pub kill_drawdown: f64,
    /// Bars the kill switch lasts.
    pub kill_bars: u32,
    /// Cap on gross notional per symbol.
    pub max_symbol: f64,
    /// Cap on gross notional of the whole book.
    pub max_gross: f64,
    /// Cap on |net| notional of the whole book.
    pub max_net: f64,
    /// Top fraction of each cap where plans are shrunk.
    pub headroom: f64,
    /// Bound on a nudge.
    pub kappa: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            kill_drawdown: DEFAULT_KILL_DRAWDOWN,
            kill_bars: DEFAULT_KILL_BARS as u32,
            max_symbol: DEFAULT_MAX_SYMBOL,
            max_gross: DEFAULT_MAX_GROSS,
            max_net: DEFAULT_MAX_NET,
            headroom: DEFAULT_HEADROOM,
            kappa: DEFAULT_KAPPA,
        }
    }
}

/// Notional of the open book as a plan finds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposure {
    /// Gross notional on the plan's symbol.
    pub symbol_gross: f64,
    /// Gross notional of the whole book.
    pub gross: f64,
    /// Signed net notional of the whole book.
    pub net: f64,
}

/// A kill switch in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Halt {
    /// How far the book pnl had fallen from its peak when it tripped.
    pub drawdown: f64,
    /// Bars still to come before it lapses.
    pub bars_left: u32,
}

/// What the rules say about one plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Ruling {
    /// Let it through.
    Pass(String),
    /// Stop it.
    Veto(String),
    /// Shrink its size by this (negative) amount.
    Nudge(f64, String),
}

/// One cap as a plan would leave it.
struct Cap {
    setting: &'static str,
    what: String,
    before: f64,
    after: f64,
    limit: f64,
}

impl Cap {
    /// Only a measure the plan makes larger can be held against it.
    fn raised(&self) -> bool {
        self.after > self.before
    }
}

/// The verdict on `plan`, given the book's exposure before it and the kill
/// switch if one is in force.
pub fn judge(plan: &Plan, before: &Exposure, halt: Option<&Halt>, rules: &Rules) -> Ruling {
    if let Some(h) = halt {
        return Ruling::Veto(format!(
            "kill switch: book pnl fell {:.0} from its peak (kill-drawdown {:.0}), {} bars left",
            h.drawdown, rules.kill_drawdown, h.bars_left
        ));
    }
    let notional = plan.size * plan.entry;
    if !notional.is_finite() || plan.size <= 0.0 || plan.entry <= 0.0 {
        return Ruling::Pass("no usable size or entry: left to the decision's checks".into());
    }
    let signed = plan.side.sign() * notional;
    let caps = [
        Cap {
            setting: "max-symbol",
            what: format!("gross on {}", plan.symbol),
            before: before.symbol_gross,
            after: before.symbol_gross + notional,
            limit: rules.max_symbol,
        },
        Cap {
            setting: "max-gross",
            what: "book gross".into(),
            before: before.gross,
            after: before.gross + notional,
            limit: rules.max_gross,
        },
        Cap {
            setting: "max-net",
            what: "book |net|".into(),
            before: before.net.abs(),
            after: (before.net + signed).abs(),
            limit: rules.max_net,
        },
    ];
    if let Some(c) = caps.iter().find(|c| c.raised() && c.after > c.limit) {
        return Ruling::Veto(format!(
            "{} would be {:.0}, over {} {:.0}",
            c.what, c.after, c.setting, c.limit
        ));
    }
    // Depth into the top band of each raised cap, 0 below the band, 1 at
    // the cap itself; the deepest one decides.
    let band_floor = 1.0 - rules.headroom;
    let deepest = caps
        .iter()
        .filter(|c| c.raised() && rules.headroom > 0.0)
        .map(|c| {
            let depth = ((c.after / c.limit - band_floor) / rules.headroom).clamp(0.0, 1.0);
            (depth, c)
        })
        .filter(|(depth, _)| *depth > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match deepest {
        Some((depth, c)) => Ruling::Nudge(
            -rules.kappa * depth,
            format!(
                "{} would be {:.0}, {:.0}% of {} {:.0}",
                c.what,
                c.after,
                100.0 * c.after / c.limit,
                c.setting,
                c.limit
            ),
        ),
        None => Ruling::Pass("within caps".into()),
    }
}

/// One position of the book.
#[derive(Debug, Clone)]
struct Position {
    symbol: String,
    /// Side × units.
    size: f64,
    entry: f64,
    /// Its key in `Book::by_age`.
    seq: u64,
    /// The exit price once an exit fill came, until its feedback does.
    exit: Option<f64>,
}

/// The whole book across variants.
#[derive(Debug, Default)]
struct Book {
    /// By plan id.
    positions: BTreeMap<String, Position>,
    /// Plan ids by opening order, to drop the oldest when full.
    by_age: BTreeMap<u64, String>,
    next_seq: u64,
    /// Last close by symbol.
    marks: BTreeMap<String, f64>,
    realised: f64,
}

impl Book {
    fn on_bar(&mut self, bar: &Bar) {
        if !bar.close.is_finite() {
            return;
        }
        if self.marks.len() < MAX_SYMBOLS || self.marks.contains_key(&bar.symbol) {
            self.marks.insert(bar.symbol.clone(), bar.close);
        }
    }

    fn on_fill(&mut self, f: &Fill) {
        match f.kind {
            FillKind::Entry => {
                if !(f.price.is_finite() && f.size.is_finite()) {
                    return;
                }
                self.remove(&f.plan_id);
                while self.positions.len() >= MAX_POSITIONS {
                    let Some((_, oldest)) = self.by_age.pop_first() else {
                        break;
                    };
                    self.positions.remove(&oldest);
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.by_age.insert(seq, f.plan_id.clone());
                self.positions.insert(
                    f.plan_id.clone(),
                    Position {
                        symbol: f.symbol.clone(),
                        size: f.side.sign() * f.size,
                        entry: f.price,
                        seq,
                        exit: None,
                    },
                );
            }
            // Never opened: nothing to close.
            FillKind::Cancel => {}
            FillKind::Stop | FillKind::Target | FillKind::Horizon | FillKind::Close => {
                if let Some(p) = self.positions.get_mut(&f.plan_id) {
                    // A non-finite exit price freezes the pnl at entry.
                    p.exit = Some(if f.price.is_finite() {
                        f.price
                    } else {
                        p.entry
                    });
                }
            }
        }
    }

    fn on_feedback(&mut self, fb: &Feedback) {
        // The realised pnl replaces whatever the position showed.
        self.remove(&fb.plan_id);
        if fb.pnl.is_finite() {
            self.realised += fb.pnl;
        }
    }

    fn remove(&mut self, plan_id: &str) {
        if let Some(p) = self.positions.remove(plan_id) {
            self.by_age.remove(&p.seq);
        }
    }

    fn mark(&self, p: &Position) -> f64 {
        self.marks.get(&p.symbol).copied().unwrap_or(p.entry)
    }

    /// Realised plus unrealised pnl.
    fn pnl(&self) -> f64 {
        let unrealised: f64 = self
            .positions
            .values()
            .map(|p| p.size * (p.exit.unwrap_or_else(|| self.mark(p)) - p.entry))
            .sum();
        self.realised + unrealised
    }

    /// Notional of the open positions (closing ones no longer count).
    fn exposure(&self, symbol: &str) -> Exposure {
        let mut e = Exposure::default();
        for p in self.positions.values().filter(|p| p.exit.is_none()) {
            let signed = p.size * self.mark(p);
            e.gross += signed.abs();
            e.net += signed;
            if p.symbol == symbol {
                e.symbol_gross += signed.abs();
            }
        }
        e
    }
}

/// The curator's state.
pub struct ComplianceCurator {
    verdicts: Verdicts,
    rules: Rules,
    book: Book,
    /// Highest book pnl since the start or the last kill switch.
    peak: f64,
    halt: Option<Halt>,
}

impl ComplianceCurator {
    /// Trips the kill switch when the book pnl has fallen far enough from
    /// its peak; while it is in force the peak waits for its lapse.
    fn watch(&mut self) {
        if self.halt.is_some() {
            return;
        }
        let pnl = self.book.pnl();
        self.peak = self.peak.max(pnl);
        let drawdown = self.peak - pnl;
        if drawdown >= self.rules.kill_drawdown {
            self.halt = Some(Halt {
                drawdown,
                bars_left: self.rules.kill_bars,
            });
        }
    }

    /// One bar of any symbol: a new mark, and one bar less of a kill switch.
    fn bar(&mut self, bar: &Bar) {
        self.book.on_bar(bar);
        if let Some(h) = &mut self.halt {
            h.bars_left = h.bars_left.saturating_sub(1);
            if h.bars_left == 0 {
                self.halt = None;
                self.peak = self.book.pnl();
            }
        }
        self.watch();
    }

    /// The verdict on one plan, signed by this instance.
    pub fn verdict(&self, plan: &Plan) -> Curation {
        let exposure = self.book.exposure(&plan.symbol);
        match judge(plan, &exposure, self.halt.as_ref(), &self.rules) {
            Ruling::Pass(why) => self.verdicts.pass(&plan.id, &why),
            Ruling::Veto(why) => self.verdicts.veto(&plan.id, &why),
            Ruling::Nudge(amount, why) => {
                self.verdicts
                    .nudge(&plan.id, NudgeTarget::Size, amount, &why)
            }
        }
    }
}

impl Module for ComplianceCurator {
    fn describe() -> Info {
        Info::new("curator-compliance", env!("CARGO_PKG_VERSION"), "curator")
            .subscribe(Subscription::shared("scored"))
            .subscribe(Subscription::broadcast("fill"))
            .subscribe(Subscription::broadcast("feedback"))
            .subscribe(Subscription::broadcast("bar"))
            .publishes("curation")
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let money = |name: &str, default: f64| -> Result<f64, String> {
            let v = ctx.setting_f64(name, default)?;
            if !(v > 0.0 && v <= MAX_MONEY) {
                return Err(format!("{name} must be in (0, {MAX_MONEY}], got {v}"));
            }
            Ok(v)
        };
        let kill_bars = ctx.setting_f64("kill-bars", DEFAULT_KILL_BARS)?;
        if !(1.0..=MAX_BARS).contains(&kill_bars) || kill_bars.fract() != 0.0 {
            return Err(format!(
                "kill-bars must be a whole number in 1..={MAX_BARS}, got {kill_bars}"
            ));
        }
        let headroom = ctx.setting_f64("headroom", DEFAULT_HEADROOM)?;
        if !(0.0..=1.0).contains(&headroom) {
            return Err(format!("headroom must be in 0..=1, got {headroom}"));
        }
        let kappa = ctx.setting_f64("kappa", DEFAULT_KAPPA)?;
        if !(0.0..=MAX_KAPPA).contains(&kappa) {
            return Err(format!("kappa must be in 0..={MAX_KAPPA}, got {kappa}"));
        }
        Ok(ComplianceCurator {
            verdicts: Verdicts::by(&ctx.instance),
            rules: Rules {
                kill_drawdown: money("kill-drawdown", DEFAULT_KILL_DRAWDOWN)?,
                kill_bars: kill_bars as u32,
                max_symbol: money("max-symbol", DEFAULT_MAX_SYMBOL)?,
                max_gross: money("max-gross", DEFAULT_MAX_GROSS)?,
                max_net: money("max-net", DEFAULT_MAX_NET)?,
                headroom,
                kappa,
            },
            book: Book::default(),
            peak: 0.0,
            halt: None,
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Bar(bar) => self.bar(bar),
            Body::Fill(fill) => {
                self.book.on_fill(fill);
                self.watch();
            }
            Body::Feedback(fb) => {
                self.book.on_feedback(fb);
                self.watch();
            }
            Body::Scored(scored) => {
                let verdict = self.verdict(&scored.plan);
                out.publish("curation", &scored.plan.id, Body::Curation(verdict));
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(ComplianceCurator);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{CuratorAction, ScoredPlan, Side};

    fn curator(settings: &[(&str, &str)]) -> Result<ComplianceCurator, String> {
        ComplianceCurator::init(garden_sdk::testing::context("curator-compliance", settings))
    }

    fn send(c: &mut ComplianceCurator, body: Body) -> Outbox {
        let mut out = Outbox::new();
        let msg = garden_sdk::testing::message("s", "k", body);
        c.on_message(&msg, &mut out).unwrap();
        out
    }

    fn bar(c: &mut ComplianceCurator, symbol: &str, close: f64) {
        send(
            c,
            Body::Bar(Bar {
                symbol: symbol.into(),
                time: 0,
                open: close,
                high: close,
                low: close,
                close,
                volume: 1.0,
            }),
        );
    }

    /// A fill of plan `id`, whose symbol is its first letter in capitals.
    fn fill(
        c: &mut ComplianceCurator,
        id: &str,
        side: Side,
        kind: FillKind,
        price: f64,
        size: f64,
    ) {
        send(
            c,
            Body::Fill(Fill {
                plan_id: id.into(),
                origin: "a".into(),
                symbol: id[..1].to_uppercase(),
                side,
                kind,
                price,
                size,
                fee: 0.0,
                time: 0,
                curation: vec![],
            }),
        );
    }

    fn feedback(c: &mut ComplianceCurator, id: &str, pnl: f64) {
        send(
            c,
            Body::Feedback(Feedback {
                plan_id: id.into(),
                origin: "a".into(),
                pnl,
                exit: FillKind::Stop,
                bars_held: 1,
            }),
        );
    }

    fn plan(side: Side, size: f64) -> Plan {
        Plan {
            id: "p".into(),
            origin: "a".into(),
            symbol: "X".into(),
            side,
            entry: 1.0,
            stop: 0.99,
            target: 1.02,
            size,
            horizon: 5,
            confidence: 0.5,
            time: 0,
        }
    }

    fn action(c: &ComplianceCurator, side: Side, size: f64) -> Curation {
        c.verdict(&plan(side, size))
    }

    #[test]
    fn the_kill_switch_vetoes_everything_then_lapses_after_kill_bars() {
        let mut c = curator(&[("kill-drawdown", "1000"), ("kill-bars", "3")]).unwrap();
        bar(&mut c, "X", 1.0);
        fill(&mut c, "x1", Side::Long, FillKind::Entry, 1.0, 100_000.0);
        bar(&mut c, "X", 1.02); // +2,000: the peak
        assert_eq!(action(&c, Side::Long, 1.0).action, CuratorAction::Pass);
        bar(&mut c, "X", 1.005); // +500: 1,500 below the peak
        let v = action(&c, Side::Long, 1.0);
        assert_eq!(v.action, CuratorAction::Veto);
        assert!(
            v.reason.contains("kill switch") && v.reason.contains("1500"),
            "{}",
            v.reason
        );
        // Even a tiny plan, and for two more bars.
        bar(&mut c, "X", 1.005);
        bar(&mut c, "X", 1.005);
        assert_eq!(action(&c, Side::Short, 1.0).action, CuratorAction::Veto);
        // The third bar ends it; the peak restarts at +500, so no re-trip.
        bar(&mut c, "X", 1.005);
        assert_eq!(action(&c, Side::Long, 1.0).action, CuratorAction::Pass);
        bar(&mut c, "X", 1.0); // 500 below the new peak: under 1,000
        assert_eq!(action(&c, Side::Long, 1.0).action, CuratorAction::Pass);
    }

    #[test]
    fn the_gap_between_an_exit_fill_and_its_feedback_is_not_a_loss() {
        let mut c = curator(&[("kill-drawdown", "1000")]).unwrap();
        fill(&mut c, "x1", Side::Long, FillKind::Entry, 1.0, 100_000.0);
        bar(&mut c, "X", 1.05); // +5,000 unrealised
        fill(&mut c, "x1", Side::Long, FillKind::Target, 1.05, 100_000.0);
        bar(&mut c, "X", 1.0);
        assert_eq!(action(&c, Side::Long, 1.0).action, CuratorAction::Pass);
        feedback(&mut c, "x1", 4_990.0);
        assert!((c.book.pnl() - 4_990.0).abs() < 1e-6);
        assert!(c.book.positions.is_empty());
        assert_eq!(action(&c, Side::Long, 1.0).action, CuratorAction::Pass);
        // A realised loss counts against the peak.
        feedback(&mut c, "b1", -1_500.0);
        assert_eq!(action(&c, Side::Long, 1.0).action, CuratorAction::Veto);
    }

    #[test]
    fn each_cap_vetoes_alone_and_names_itself() {
        let mut c = curator(&[]).unwrap();
        bar(&mut c, "X", 1.0);
        bar(&mut c, "Y", 1.0);
        // X gross 1.5M, book gross 2.5M, net +0.5M: a 0.6M short on X
        // takes X to 2.1M (over 2M), the book to 3.1M, |net| down to 0.1M.
        fill(&mut c, "x1", Side::Long, FillKind::Entry, 1.0, 1_500_000.0);
        fill(&mut c, "y1", Side::Short, FillKind::Entry, 1.0, 1_000_000.0);
        let v = action(&c, Side::Short, 600_000.0);
        assert_eq!(v.action, CuratorAction::Veto);
        assert!(v.reason.contains("max-symbol"), "{}", v.reason);

        // Book gross alone: X 1.5M long, Y 2.2M short (gross 3.7M, net
        // −0.7M); a 0.4M long on X makes 4.1M gross, X 1.9M, |net| 0.3M.
        let mut c = curator(&[("max-symbol", "3000000")]).unwrap();
        fill(&mut c, "x1", Side::Long, FillKind::Entry, 1.0, 1_500_000.0);
        fill(&mut c, "y1", Side::Short, FillKind::Entry, 1.0, 2_200_000.0);
        let v = action(&c, Side::Long, 400_000.0);
        assert_eq!(v.action, CuratorAction::Veto);
        assert!(v.reason.contains("max-gross"), "{}", v.reason);

        // Net alone: X 1.9M long; +0.2M long makes net 2.1M (over 2M),
        // X 2.1M (under 3M), gross 2.1M (under 4M).
        let mut c = curator(&[("max-symbol", "3000000")]).unwrap();
        fill(&mut c, "x1", Side::Long, FillKind::Entry, 1.0, 1_900_000.0);
        let v = action(&c, Side::Long, 200_000.0);
        assert_eq!(v.action, CuratorAction::Veto);
        assert!(v.reason.contains("max-net"), "{}", v.reason);
        // The same size on the other side lowers |net|: no veto.
        assert_ne!(
            action(&c, Side::Short, 200_000.0).action,
            CuratorAction::Veto
        );
    }

    #[test]
    fn closing_fills_free_the_room() {
        let mut c = curator(&[]).unwrap();
        fill(&mut c, "x1", Side::Long, FillKind::Entry, 1.0, 1_900_000.0);
        assert_eq!(
            action(&c, Side::Long, 200_000.0).action,
            CuratorAction::Veto
        );
        fill(
            &mut c,
            "x1",
            Side::Long,
            FillKind::Horizon,
            1.0,
            1_900_000.0,
        );
        assert_eq!(
            action(&c, Side::Long, 200_000.0).action,
            CuratorAction::Pass
        );
        // Feedback then drops the position altogether.
        feedback(&mut c, "x1", 0.0);
        assert!(c.book.positions.is_empty() && c.book.by_age.is_empty());
    }

    #[test]
    fn headroom_nudges_in_proportion_within_kappa() {
        let mut c = curator(&[("kappa", "0.1")]).unwrap();
        // Net cap 2M, band above 1.6M: 1.5M + 0.3M = 1.8M is half-way in.
        fill(&mut c, "x1", Side::Long, FillKind::Entry, 1.0, 1_500_000.0);
        let v = action(&c, Side::Long, 300_000.0);
        assert_eq!(v.action, CuratorAction::Nudge);
        assert_eq!(v.target, NudgeTarget::Size);
        assert!((v.amount + 0.05).abs() < 1e-9, "{}", v.amount);
        assert!(v.reason.contains("max-net") || v.reason.contains("max-symbol"));
        // Deeper in: 1.5M + 0.5M = 2.0M, right at the cap: −κ.
        let v = action(&c, Side::Long, 500_000.0);
        assert!((v.amount + 0.1).abs() < 1e-9, "{}", v.amount);
        // Below the band: a pass.
        assert_eq!(action(&c, Side::Long, 50_000.0).action, CuratorAction::Pass);
    }

    #[test]
    fn every_scored_plan_gets_one_verdict_keyed_by_its_id() {
        let mut c = curator(&[]).unwrap();
        let scored = ScoredPlan {
            plan: plan(Side::Long, f64::NAN),
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
            Body::Curation(v) => {
                assert_eq!(v.action, CuratorAction::Pass);
                assert_eq!(v.curator, "curator-compliance");
            }
            other => panic!("not a curation: {other:?}"),
        }
    }

    #[test]
    fn non_finite_numbers_are_ignored() {
        let mut c = curator(&[("kill-drawdown", "1000")]).unwrap();
        fill(&mut c, "x1", Side::Long, FillKind::Entry, f64::NAN, 1.0);
        assert!(c.book.positions.is_empty());
        feedback(&mut c, "z", f64::NEG_INFINITY);
        bar(&mut c, "X", f64::INFINITY);
        assert_eq!(c.book.pnl(), 0.0);
        assert_eq!(action(&c, Side::Long, 1.0).action, CuratorAction::Pass);
    }

    #[test]
    fn settings_outside_their_range_are_refused_by_name() {
        for (name, value) in [
            ("kill-drawdown", "0"),
            ("kill-bars", "1.5"),
            ("max-symbol", "-1"),
            ("max-gross", "0"),
            ("max-net", "1e13"),
            ("headroom", "1.5"),
            ("kappa", "0.95"),
        ] {
            let err = curator(&[(name, value)]).err().unwrap();
            assert!(err.contains(name), "{err}");
        }
        assert_eq!(curator(&[]).unwrap().rules, Rules::default());
    }
}
