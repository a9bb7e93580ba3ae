//! Paper trader: executes approved decisions and reports fitness per variant.
//!
//! Rules (each variant trades its own account, starting at `equity`):
//!
//! * an approved (or modified) decision is filled at the **next bar's open**
//!   of its symbol, worse by `slippage-bps` (basis points of price) and
//!   charged `fee-bps` of the filled notional;
//! * on every bar, from the entry bar on, an open position closes at its stop
//!   or target; a bar that touches both counts the **stop first**; a bar that
//!   opens beyond the level fills at the open (a gap is not forgiven);
//! * a position still open after `horizon` bars (the entry bar counts) closes
//!   at that bar's close; at the end of the stream everything still open
//!   closes at the last close;
//! * exits pay slippage and fees the same way. Every fill is published on
//!   `fill`, every closed plan's realised pnl (after fees) on `feedback` to the
//!   variant that wrote it, and every `report-every` bars a `fitness` report
//!   per variant carries its account value after each bar.
//!
//! **Curators** (docs/curators.md). An approved decision waits for the
//! trader stage's curators (`curators`, `deadline-bars` 1, `kappa`) until
//! the next bar of its symbol, when it would be filled anyway, so waiting
//! never delays a fill. A veto there stops the entry: a `cancel` fill (size
//! 0, no feedback) tells the decision and the variant, and records the
//! verdicts. A size nudge may only shrink the entry (the decision's limits
//! already hold). The entry fill records every curator's word on the plan.
//!
//! A plan vetoed at any stage is followed as a **shadow position**: filled
//! and closed by the same rules and costs as a real one, at the size it
//! would have had, with no cash and no fill or feedback. Every
//! `report-every` bars and at the end the trader reports each curator it
//! has seen (`curator:NAME`): verdicts, passes, vetoes, nudges, missing,
//! the mean applied nudge, and what its vetoed plans would have made
//! (`vetoed-closed`, `vetoed-won`, `vetoed-would-pnl`, `vetoed-would-r` in
//! multiples of the risk to the stop) beside the realised pnl of the plans
//! it nudged, so a curator's value is visible.

use std::collections::{BTreeMap, HashMap};

use garden_sdk::curation::{Curators, Effect};
use garden_sdk::join::{Join, Ready};
use garden_sdk::retired::Retired;
use garden_sdk::{
    Bar, Body, Curation, CuratorAction, Decision, Envelope, Feedback, Fill, FillKind, Fitness,
    Info, InitContext, Metric, Module, Outbox, Plan, Subscription, Timestamp, Verdict,
};

/// Execution costs and reporting cadence.
#[derive(Debug, Clone, Copy)]
pub struct Costs {
    /// Adverse price move per fill, in basis points of the price.
    pub slippage_bps: f64,
    /// Fee per fill, in basis points of the notional.
    pub fee_bps: f64,
}

impl Costs {
    /// Price actually paid or received for a fill at `price` (`buying` for a
    /// long entry or a short exit).
    pub fn fill_price(&self, price: f64, buying: bool) -> f64 {
        let slip = price * self.slippage_bps / 10_000.0;
        if buying { price + slip } else { price - slip }
    }

    /// Fee charged on a fill.
    pub fn fee(&self, price: f64, size: f64) -> f64 {
        price * size.abs() * self.fee_bps / 10_000.0
    }
}

/// Where a position exits during one bar, if it does: (kind, reference price
/// before slippage). The stop is checked first, so a bar touching both levels
/// exits at the stop.
pub fn exit_in_bar(plan: &Plan, bar: &Bar) -> Option<(FillKind, f64)> {
    let s = plan.side.sign();
    // Work in "profit direction" coordinates: for a short, flip the bar.
    let (worst, best) = if s > 0.0 {
        (bar.low, bar.high)
    } else {
        (bar.high, bar.low)
    };
    if (plan.stop - worst) * s >= 0.0 {
        // The open beyond the stop means the gap already passed it.
        let price = if (plan.stop - bar.open) * s >= 0.0 {
            bar.open
        } else {
            plan.stop
        };
        return Some((FillKind::Stop, price));
    }
    if (best - plan.target) * s >= 0.0 {
        let price = if (bar.open - plan.target) * s >= 0.0 {
            bar.open
        } else {
            plan.target
        };
        return Some((FillKind::Target, price));
    }
    None
}

struct Position {
    plan: Plan,
    entry: f64,
    size: f64,
    entry_fee: f64,
    bars_held: u32,
    /// Curators that nudged the plan, for their reports.
    nudged_by: Vec<String>,
}

/// A vetoed plan followed as if it had been filled.
struct Shadow {
    plan: Plan,
    size: f64,
    /// Entry price after slippage; `None` until the next open of its symbol.
    entry: Option<f64>,
    entry_fee: f64,
    bars_held: u32,
    vetoed_by: Vec<String>,
}

/// What the trader has seen one curator do.
#[derive(Default)]
struct CuratorStats {
    verdicts: u32,
    passes: u32,
    vetoes: u32,
    nudges: u32,
    missing: u32,
    nudge_sum: f64,
    vetoed_closed: u32,
    vetoed_won: u32,
    vetoed_pnl: f64,
    vetoed_r: f64,
    nudged_closed: u32,
    nudged_pnl: f64,
}

impl CuratorStats {
    fn metrics(&self) -> Vec<Metric> {
        let m = |name: &str, value: f64| Metric {
            name: name.into(),
            value,
        };
        let mean_nudge = if self.nudges > 0 {
            self.nudge_sum / f64::from(self.nudges)
        } else {
            0.0
        };
        vec![
            m("verdicts", f64::from(self.verdicts)),
            m("passes", f64::from(self.passes)),
            m("vetoes", f64::from(self.vetoes)),
            m("nudges", f64::from(self.nudges)),
            m("missing", f64::from(self.missing)),
            m("mean-nudge", mean_nudge),
            m("vetoed-closed", f64::from(self.vetoed_closed)),
            m("vetoed-won", f64::from(self.vetoed_won)),
            m("vetoed-would-pnl", self.vetoed_pnl),
            m("vetoed-would-r", self.vetoed_r),
            m("nudged-closed", f64::from(self.nudged_closed)),
            m("nudged-pnl", self.nudged_pnl),
        ]
    }
}

/// Most vetoed plans followed at once; the oldest is dropped (and
/// counted) to make room, so an alpha writing vetoed plans that never
/// close cannot grow the trader without bound.
const MAX_SHADOWS: usize = 4096;

/// Retired variants remembered (far more than can have decisions in
/// flight).
const RETIRED_KEPT: usize = 4096;

/// What closing a position leaves behind.
struct Closed {
    pnl: f64,
    symbol: String,
    nudged_by: Vec<String>,
}

/// Names of the curators that vetoed, and of those that nudged.
fn acted(curation: &[Curation]) -> (Vec<String>, Vec<String>) {
    let by = |action: CuratorAction| {
        curation
            .iter()
            .filter(|c| c.action == action)
            .map(|c| c.curator.clone())
            .collect::<Vec<_>>()
    };
    (by(CuratorAction::Veto), by(CuratorAction::Nudge))
}

/// Profit of a round trip of `size` from `entry` to the exit `reference`
/// price, after slippage on the exit and both fees.
fn round_trip(
    plan: &Plan,
    entry: f64,
    entry_fee: f64,
    size: f64,
    reference: f64,
    costs: &Costs,
) -> f64 {
    let s = plan.side.sign();
    let price = costs.fill_price(reference, s < 0.0);
    s * (price - entry) * size - costs.fee(price, size) - entry_fee
}

#[derive(Default)]
struct Account {
    cash: f64,
    open: Vec<Position>,
    values: Vec<f64>,
    plans: u32,
    approvals: u32,
    fills: u32,
    trades: u32,
    wins: u32,
    realised: f64,
    fees: f64,
}

/// The trader's state.
pub struct Trader {
    costs: Costs,
    equity: f64,
    report_every: u32,
    bars_since_report: u32,
    /// Accounts by variant; ordered so reports come out in a stable order.
    accounts: BTreeMap<String, Account>,
    /// Approved decisions waiting for the next bar of their symbol.
    pending: Vec<Decision>,
    curators: Curators,
    /// Approved decisions waiting for this stage's curators.
    curating: Join<Decision, Curation>,
    /// Vetoed plans followed as if filled, in arrival order.
    shadows: Vec<Shadow>,
    /// Shadows dropped to stay within [`MAX_SHADOWS`].
    shadows_dropped: u32,
    /// Variants retired lately: a decision of theirs still in flight is
    /// not traded, and brings back no account.
    retired: Retired,
    /// By curator name; ordered so reports come out in a stable order.
    curator_stats: BTreeMap<String, CuratorStats>,
    /// The book of every variant together: realised pnl and closed
    /// positions per symbol.
    realised_by_symbol: BTreeMap<String, f64>,
    closed_by_symbol: BTreeMap<String, u32>,
    /// Its value after each bar since the last report: in all, and per
    /// symbol.
    book_values: Vec<f64>,
    symbol_values: BTreeMap<String, Vec<f64>>,
    last_close: HashMap<String, f64>,
    time: Timestamp,
}

impl Trader {
    fn close(
        account: &mut Account,
        pos: Position,
        kind: FillKind,
        reference: f64,
        costs: &Costs,
        time: Timestamp,
        out: &mut Outbox,
    ) -> Closed {
        let s = pos.plan.side.sign();
        let price = costs.fill_price(reference, s < 0.0);
        let fee = costs.fee(price, pos.size);
        let gross = s * (price - pos.entry) * pos.size;
        account.cash += gross - fee;
        account.fees += fee;
        let pnl = gross - fee - pos.entry_fee;
        account.realised += pnl;
        account.trades += 1;
        account.fills += 1;
        if pnl > 0.0 {
            account.wins += 1;
        }
        let plan = pos.plan;
        out.publish(
            "fill",
            &plan.origin,
            Body::Fill(Fill {
                plan_id: plan.id.clone(),
                origin: plan.origin.clone(),
                symbol: plan.symbol.clone(),
                side: plan.side,
                kind,
                price,
                size: pos.size,
                fee,
                time,
                curation: vec![],
            }),
        );
        out.publish(
            "feedback",
            &plan.origin,
            Body::Feedback(Feedback {
                plan_id: plan.id,
                origin: plan.origin.clone(),
                pnl,
                exit: kind,
                bars_held: pos.bars_held,
            }),
        );
        Closed {
            pnl,
            symbol: plan.symbol,
            nudged_by: pos.nudged_by,
        }
    }

    /// A closed position in the book's figures, and in the reports of the
    /// curators that nudged it.
    fn closed(
        &mut self,
        Closed {
            pnl,
            symbol,
            nudged_by,
        }: Closed,
    ) {
        *self.closed_by_symbol.entry(symbol.clone()).or_default() += 1;
        *self.realised_by_symbol.entry(symbol).or_default() += pnl;
        for name in nudged_by {
            let stats = self.curator_stats.entry(name).or_default();
            stats.nudged_closed += 1;
            stats.nudged_pnl += pnl;
        }
    }

    /// Count every verdict on a plan whose curation is final here.
    fn count(&mut self, curation: &[Curation]) {
        for c in curation {
            let stats = self.curator_stats.entry(c.curator.clone()).or_default();
            stats.verdicts += 1;
            match c.action {
                CuratorAction::Pass => stats.passes += 1,
                CuratorAction::Veto => stats.vetoes += 1,
                CuratorAction::Nudge => {
                    stats.nudges += 1;
                    stats.nudge_sum += c.amount;
                }
                CuratorAction::Missing => stats.missing += 1,
            }
        }
    }

    /// Follow a vetoed plan as if it had been filled at `size`.
    fn shadow(&mut self, plan: Plan, size: f64, vetoed_by: Vec<String>) {
        // Plans come from the alphas: bound what they can make us follow.
        if self.shadows.len() >= MAX_SHADOWS {
            self.shadows.remove(0);
            if self.shadows_dropped == 0 {
                garden_sdk::warn(&format!(
                    "following more than {MAX_SHADOWS} vetoed plans: the oldest are dropped, and their outcomes are missing from the curators' reports"
                ));
            }
            self.shadows_dropped += 1;
        }
        if size > 0.0 && size.is_finite() {
            self.shadows.push(Shadow {
                plan,
                size,
                entry: None,
                entry_fee: 0.0,
                bars_held: 0,
                vetoed_by,
            });
        }
    }

    /// What a closed shadow would have made, in its vetoers' reports.
    fn shadow_closed(&mut self, sh: &Shadow, reference: f64) {
        let Some(entry) = sh.entry else {
            return;
        };
        let pnl = round_trip(
            &sh.plan,
            entry,
            sh.entry_fee,
            sh.size,
            reference,
            &self.costs,
        );
        let risk = (sh.plan.entry - sh.plan.stop).abs() * sh.size;
        let r = if risk > 0.0 { pnl / risk } else { 0.0 };
        for name in &sh.vetoed_by {
            let stats = self.curator_stats.entry(name.clone()).or_default();
            stats.vetoed_closed += 1;
            stats.vetoed_won += u32::from(pnl > 0.0);
            stats.vetoed_pnl += pnl;
            stats.vetoed_r += r;
        }
    }

    /// Shadows of `bar`'s symbol: enter at its open, exit by the rules.
    fn follow_shadows(&mut self, bar: &Bar) {
        let costs = self.costs;
        let mut still = Vec::with_capacity(self.shadows.len());
        for mut sh in std::mem::take(&mut self.shadows) {
            if sh.plan.symbol != bar.symbol {
                still.push(sh);
                continue;
            }
            if sh.entry.is_none() {
                let price = costs.fill_price(bar.open, sh.plan.side.sign() > 0.0);
                sh.entry = Some(price);
                sh.entry_fee = costs.fee(price, sh.size);
            }
            sh.bars_held += 1;
            if let Some((_, price)) = exit_in_bar(&sh.plan, bar) {
                self.shadow_closed(&sh, price);
            } else if sh.bars_held >= sh.plan.horizon {
                self.shadow_closed(&sh, bar.close);
            } else {
                still.push(sh);
            }
        }
        self.shadows = still;
    }

    /// An approved decision with this stage's verdicts in.
    fn curated(&mut self, ready: Ready<Decision, Curation>, out: &mut Outbox) {
        let mut d = ready.item;
        if self.retired.contains(&d.plan.origin) {
            return;
        }
        let own = self.curators.settle(&ready.id, &ready.answers);
        let effect = Effect::of(&own);
        d.curation.extend(own);
        self.count(&d.curation);
        // The decision's limits already hold: a nudge here may only shrink.
        d.size = effect.size_of(d.size).min(d.size);
        if effect.veto.is_some() || d.size.is_nan() || d.size <= 0.0 {
            let (vetoed_by, _) = acted(&d.curation);
            out.publish(
                "fill",
                &d.plan.origin,
                Body::Fill(Fill {
                    plan_id: d.plan.id.clone(),
                    origin: d.plan.origin.clone(),
                    symbol: d.plan.symbol.clone(),
                    side: d.plan.side,
                    kind: FillKind::Cancel,
                    price: 0.0,
                    size: 0.0,
                    fee: 0.0,
                    time: self.time,
                    curation: d.curation.clone(),
                }),
            );
            self.shadow(d.plan, d.size, vetoed_by);
            return;
        }
        self.pending.push(d);
    }

    fn on_decision(&mut self, d: &Decision, out: &mut Outbox) {
        if self.retired.contains(&d.plan.origin) {
            return;
        }
        if d.verdict == Verdict::Reject {
            self.count(&d.curation);
            let (vetoed_by, _) = acted(&d.curation);
            if !vetoed_by.is_empty() {
                self.shadow(d.plan.clone(), d.plan.size, vetoed_by);
            }
        }
        let equity = self.equity;
        let account = self
            .accounts
            .entry(d.plan.origin.clone())
            .or_insert_with(|| Account {
                cash: equity,
                ..Account::default()
            });
        account.plans += 1;
        if d.verdict != Verdict::Reject && d.size > 0.0 && d.size.is_finite() {
            account.approvals += 1;
            if let Some(ready) = self.curating.item(&d.plan.id, &d.plan.symbol, d.clone()) {
                self.curated(ready, out);
            }
        }
    }

    fn on_curation(&mut self, source: &str, c: &Curation, out: &mut Outbox) {
        if self.curators.admit(source, c)
            && let Some(ready) = self.curating.answer(&c.plan_id, &c.curator, c.clone())
        {
            self.curated(ready, out);
        }
    }

    fn on_bar(&mut self, bar: &Bar, out: &mut Outbox) {
        self.time = bar.time;
        // Decisions whose curators are late go on now, before this open.
        for ready in self.curating.bar(&bar.symbol) {
            self.curated(ready, out);
        }
        self.follow_shadows(bar);
        let costs = self.costs;
        // 1. Entries waiting for this symbol's next open.
        let (due, rest): (Vec<Decision>, Vec<Decision>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|d| d.plan.symbol == bar.symbol);
        self.pending = rest;
        for d in due {
            let Some(account) = self.accounts.get_mut(&d.plan.origin) else {
                continue;
            };
            let price = costs.fill_price(bar.open, d.plan.side.sign() > 0.0);
            let fee = costs.fee(price, d.size);
            account.cash -= fee;
            account.fees += fee;
            account.fills += 1;
            out.publish(
                "fill",
                &d.plan.origin,
                Body::Fill(Fill {
                    plan_id: d.plan.id.clone(),
                    origin: d.plan.origin.clone(),
                    symbol: d.plan.symbol.clone(),
                    side: d.plan.side,
                    kind: FillKind::Entry,
                    price,
                    size: d.size,
                    fee,
                    time: bar.time,
                    curation: d.curation.clone(),
                }),
            );
            account.open.push(Position {
                plan: d.plan,
                entry: price,
                size: d.size,
                entry_fee: fee,
                bars_held: 0,
                nudged_by: acted(&d.curation).1,
            });
        }
        // 2. Stops, targets and horizons.
        let mut closed = Vec::new();
        for account in self.accounts.values_mut() {
            let mut still_open = Vec::with_capacity(account.open.len());
            for mut pos in std::mem::take(&mut account.open) {
                if pos.plan.symbol != bar.symbol {
                    still_open.push(pos);
                    continue;
                }
                pos.bars_held += 1;
                if let Some((kind, price)) = exit_in_bar(&pos.plan, bar) {
                    closed.push(Self::close(
                        account, pos, kind, price, &costs, bar.time, out,
                    ));
                } else if pos.bars_held >= pos.plan.horizon {
                    closed.push(Self::close(
                        account,
                        pos,
                        FillKind::Horizon,
                        bar.close,
                        &costs,
                        bar.time,
                        out,
                    ));
                } else {
                    still_open.push(pos);
                }
            }
            account.open = still_open;
        }
        for c in closed {
            self.closed(c);
        }
        self.last_close.insert(bar.symbol.clone(), bar.close);
        // 3. Mark to market.
        for account in self.accounts.values_mut() {
            let value = account.cash
                + account
                    .open
                    .iter()
                    .map(|p| {
                        let mark = self
                            .last_close
                            .get(&p.plan.symbol)
                            .copied()
                            .unwrap_or(p.entry);
                        p.plan.side.sign() * (mark - p.entry) * p.size
                    })
                    .sum::<f64>();
            account.values.push(value);
        }
        self.mark_book();
        self.bars_since_report += 1;
        if self.bars_since_report >= self.report_every {
            self.report(out);
            self.report_book(out);
            self.report_curators(out);
        }
    }

    /// The book's value now: `equity` plus every variant's realised pnl
    /// and open pnl (after the entry fee), in all and per symbol.
    fn mark_book(&mut self) {
        let mut pnl = self.realised_by_symbol.clone();
        for pos in self.accounts.values().flat_map(|a| &a.open) {
            let mark = self
                .last_close
                .get(&pos.plan.symbol)
                .copied()
                .unwrap_or(pos.entry);
            *pnl.entry(pos.plan.symbol.clone()).or_default() +=
                pos.plan.side.sign() * (mark - pos.entry) * pos.size - pos.entry_fee;
        }
        for symbol in self.last_close.keys() {
            let value = self.equity + pnl.get(symbol).copied().unwrap_or(0.0);
            self.symbol_values
                .entry(symbol.clone())
                .or_default()
                .push(value);
        }
        self.book_values
            .push(self.equity + pnl.values().sum::<f64>());
    }

    /// The book's reports: `portfolio`, and `portfolio:SYMBOL` per symbol
    /// when there are several, each with its values since the last.
    fn report_book(&mut self, out: &mut Outbox) {
        let trades = self.closed_by_symbol.values().sum::<u32>();
        let mut reports = vec![(
            "portfolio".to_string(),
            std::mem::take(&mut self.book_values),
            trades,
        )];
        if self.symbol_values.len() > 1 {
            for (symbol, values) in self.symbol_values.iter_mut() {
                let trades = self.closed_by_symbol.get(symbol).copied().unwrap_or(0);
                reports.push((
                    format!("portfolio:{symbol}"),
                    std::mem::take(values),
                    trades,
                ));
            }
        } else {
            self.symbol_values.values_mut().for_each(Vec::clear);
        }
        for (subject, values, trades) in reports {
            out.publish(
                "fitness",
                &subject.clone(),
                Body::Fitness(Fitness {
                    subject,
                    values,
                    trades,
                    metrics: vec![],
                }),
            );
        }
    }

    /// One `curator:NAME` report per curator seen (no values: the host
    /// lists them beside the population).
    fn report_curators(&self, out: &mut Outbox) {
        for (name, stats) in &self.curator_stats {
            let subject = format!("curator:{name}");
            out.publish(
                "fitness",
                &subject.clone(),
                Body::Fitness(Fitness {
                    subject,
                    values: vec![],
                    trades: stats.vetoed_closed,
                    metrics: stats.metrics(),
                }),
            );
        }
    }

    fn report(&mut self, out: &mut Outbox) {
        self.bars_since_report = 0;
        for (origin, a) in self.accounts.iter_mut() {
            let metric = |name: &str, value: f64| Metric {
                name: name.into(),
                value,
            };
            let fitness = Fitness {
                subject: origin.clone(),
                values: std::mem::take(&mut a.values),
                trades: a.trades,
                metrics: vec![
                    metric("plans", f64::from(a.plans)),
                    metric("approvals", f64::from(a.approvals)),
                    metric("fills", f64::from(a.fills)),
                    metric("wins", f64::from(a.wins)),
                    metric("pnl", a.realised),
                    metric("fees", a.fees),
                    metric("open", a.open.len() as f64),
                ],
            };
            out.publish("fitness", origin, Body::Fitness(fitness));
        }
    }

    /// A retired variant: close its positions at the last close, report it
    /// one last time, forget it. Nothing it held stays open.
    fn retire(&mut self, origin: &str, out: &mut Outbox) {
        self.retired.insert(origin);
        self.pending.retain(|d| d.plan.origin != origin);
        let Some(mut account) = self.accounts.remove(origin) else {
            return;
        };
        let costs = self.costs;
        let time = self.time;
        for pos in std::mem::take(&mut account.open) {
            let mark = self
                .last_close
                .get(&pos.plan.symbol)
                .copied()
                .unwrap_or(pos.entry);
            let closed = Self::close(&mut account, pos, FillKind::Close, mark, &costs, time, out);
            self.closed(closed);
        }
        account.values.push(account.cash);
        let mut single = BTreeMap::new();
        single.insert(origin.to_string(), account);
        let mut others = std::mem::replace(&mut self.accounts, single);
        let since = self.bars_since_report;
        self.report(out);
        self.bars_since_report = since;
        std::mem::swap(&mut self.accounts, &mut others);
    }

    fn end(&mut self, out: &mut Outbox) {
        let costs = self.costs;
        let time = self.time;
        let mut closed = Vec::new();
        for account in self.accounts.values_mut() {
            for pos in std::mem::take(&mut account.open) {
                let mark = self
                    .last_close
                    .get(&pos.plan.symbol)
                    .copied()
                    .unwrap_or(pos.entry);
                closed.push(Self::close(
                    account,
                    pos,
                    FillKind::Close,
                    mark,
                    &costs,
                    time,
                    out,
                ));
            }
            account.values.push(account.cash);
        }
        for c in closed {
            self.closed(c);
        }
        for sh in std::mem::take(&mut self.shadows) {
            if let Some(mark) = self.last_close.get(&sh.plan.symbol).copied() {
                self.shadow_closed(&sh, mark);
            }
        }
        // Decisions still waiting for curators have no bar left to fill on.
        for ready in self.curating.drain() {
            self.count(&ready.item.curation);
        }
        self.pending.clear();
        self.mark_book();
        self.report(out);
        self.report_book(out);
        self.report_curators(out);
    }
}

impl Module for Trader {
    fn describe() -> Info {
        Info::new("trader", env!("CARGO_PKG_VERSION"), "trader")
            .subscribe(Subscription::broadcast("bar"))
            .subscribe(Subscription::broadcast("decision"))
            .subscribe(Subscription::broadcast("curation"))
            .publishes("fill")
            .publishes("feedback")
            .publishes("fitness")
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let report_every = ctx.setting_f64("report-every", 100.0)?;
        if !(1.0..=1.0e6).contains(&report_every) {
            return Err(format!(
                "report-every must be in 1..=1000000, got {report_every}"
            ));
        }
        let costs = Costs {
            slippage_bps: ctx.setting_f64("slippage-bps", 0.5)?,
            fee_bps: ctx.setting_f64("fee-bps", 0.2)?,
        };
        if costs.slippage_bps < 0.0 || costs.fee_bps < 0.0 {
            return Err("slippage-bps and fee-bps must not be negative".into());
        }
        let curators = Curators::from_settings(&ctx, 1)?;
        Ok(Trader {
            curating: Join::new(curators.names.clone(), curators.deadline_bars),
            curators,
            shadows: Vec::new(),
            shadows_dropped: 0,
            retired: Retired::new(RETIRED_KEPT),
            curator_stats: BTreeMap::new(),
            realised_by_symbol: BTreeMap::new(),
            closed_by_symbol: BTreeMap::new(),
            book_values: Vec::new(),
            symbol_values: BTreeMap::new(),
            costs,
            equity: ctx.setting_f64("equity", 100_000.0)?,
            report_every: report_every as u32,
            bars_since_report: 0,
            accounts: BTreeMap::new(),
            pending: Vec::new(),
            last_close: HashMap::new(),
            time: 0,
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Bar(bar) => self.on_bar(bar, out),
            Body::Decision(d) => self.on_decision(d, out),
            Body::Curation(c) => self.on_curation(&msg.source, c, out),
            Body::EndOfStream => self.end(out),
            Body::Retired(origin) => self.retire(origin, out),
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(Trader);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{Setting, Side};

    fn bar(o: f64, h: f64, l: f64, c: f64) -> Bar {
        Bar {
            symbol: "X".into(),
            time: 0,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: 1.0,
        }
    }

    fn plan(side: Side, stop: f64, target: f64, horizon: u32) -> Plan {
        Plan {
            id: "p1".into(),
            origin: "a".into(),
            symbol: "X".into(),
            side,
            entry: 100.0,
            stop,
            target,
            size: 10.0,
            horizon,
            confidence: 0.5,
            time: 0,
        }
    }

    #[test]
    fn bar_touching_both_levels_exits_at_stop() {
        let p = plan(Side::Long, 95.0, 105.0, 10);
        assert_eq!(
            exit_in_bar(&p, &bar(100.0, 106.0, 94.0, 100.0)),
            Some((FillKind::Stop, 95.0))
        );
        let s = plan(Side::Short, 105.0, 95.0, 10);
        assert_eq!(
            exit_in_bar(&s, &bar(100.0, 106.0, 94.0, 100.0)),
            Some((FillKind::Stop, 105.0))
        );
    }

    #[test]
    fn exits_at_levels_or_at_gapped_open() {
        let p = plan(Side::Long, 95.0, 105.0, 10);
        assert_eq!(
            exit_in_bar(&p, &bar(100.0, 106.0, 99.0, 100.0)),
            Some((FillKind::Target, 105.0))
        );
        assert_eq!(
            exit_in_bar(&p, &bar(90.0, 91.0, 89.0, 90.0)),
            Some((FillKind::Stop, 90.0))
        );
        assert_eq!(
            exit_in_bar(&p, &bar(110.0, 111.0, 109.0, 110.0)),
            Some((FillKind::Target, 110.0))
        );
        assert_eq!(exit_in_bar(&p, &bar(100.0, 104.0, 96.0, 100.0)), None);
        let s = plan(Side::Short, 105.0, 95.0, 10);
        assert_eq!(
            exit_in_bar(&s, &bar(100.0, 101.0, 94.0, 100.0)),
            Some((FillKind::Target, 95.0))
        );
    }

    fn trader() -> Trader {
        let set = |n: &str, v: &str| Setting {
            name: n.into(),
            value: v.into(),
        };
        Trader::init(InitContext {
            member: 0,
            snapshot: None,
            instance: "t".into(),
            params: vec![],
            settings: vec![
                set("slippage-bps", "10"),
                set("fee-bps", "10"),
                set("equity", "1000"),
                set("report-every", "1000"),
            ],
        })
        .unwrap()
    }

    fn decision(p: Plan) -> Envelope {
        let size = p.size;
        Envelope {
            topic: "decision".into(),
            key: "a".into(),
            seq: 0,
            time: 0,
            source: "d".into(),
            body: Body::Decision(Decision {
                plan: p,
                verdict: Verdict::Approve,
                size,
                confidence: 0.6,
                reason: String::new(),
                curation: vec![],
            }),
        }
    }

    fn bar_msg(b: Bar) -> Envelope {
        Envelope {
            topic: "bar".into(),
            key: "X".into(),
            seq: 0,
            time: 0,
            source: "feed".into(),
            body: Body::Bar(b),
        }
    }

    #[test]
    fn fills_next_open_with_costs_and_equity_adds_up() {
        let mut t = trader();
        let mut out = Outbox::new();
        t.on_message(&decision(plan(Side::Long, 95.0, 105.0, 5)), &mut out)
            .unwrap();
        t.on_message(&bar_msg(bar(100.0, 101.0, 99.0, 100.5)), &mut out)
            .unwrap();
        t.on_message(&bar_msg(bar(101.0, 106.0, 100.0, 104.0)), &mut out)
            .unwrap();
        let fills: Vec<Fill> = out
            .messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Fill(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(fills.len(), 2);
        assert_eq!(fills[0].kind, FillKind::Entry);
        assert!((fills[0].price - 100.1).abs() < 1e-9, "open plus 10 bps");
        assert_eq!(fills[1].kind, FillKind::Target);
        assert!(
            (fills[1].price - 104.895).abs() < 1e-9,
            "target minus 10 bps"
        );
        let fb: Vec<Feedback> = out
            .messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Feedback(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        let fees: f64 = fills.iter().map(|f| f.fee).sum();
        let expected = (104.895 - 100.1) * 10.0 - fees;
        assert!((fb[0].pnl - expected).abs() < 1e-9);
        let account = &t.accounts["a"];
        assert!((account.cash - (1000.0 + expected)).abs() < 1e-9);
        assert_eq!(fb[0].bars_held, 2, "entry bar and exit bar");
    }

    #[test]
    fn a_retired_variant_is_closed_out_and_forgotten() {
        let mut t = trader();
        let mut out = Outbox::new();
        t.on_message(&decision(plan(Side::Long, 50.0, 150.0, 100)), &mut out)
            .unwrap();
        t.on_message(&bar_msg(bar(100.0, 101.0, 99.0, 100.0)), &mut out)
            .unwrap();
        t.on_message(&bar_msg(bar(100.0, 102.0, 99.0, 101.0)), &mut out)
            .unwrap();
        let retire = Envelope {
            body: Body::Retired("a".into()),
            ..bar_msg(bar(1.0, 1.0, 1.0, 1.0))
        };
        t.on_message(&retire, &mut out).unwrap();
        let closes: Vec<&Fill> = out
            .messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Fill(f) if f.kind == FillKind::Close => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(closes.len(), 1, "the open position is closed");
        assert!(
            out.messages()
                .iter()
                .any(|m| matches!(&m.body, Body::Fitness(f) if f.subject == "a"))
        );
        assert!(t.accounts.is_empty(), "no orphaned account");
        // A decision of the retired variant still in flight brings back
        // neither its account nor a trade.
        t.on_message(&decision(plan(Side::Long, 50.0, 150.0, 100)), &mut out)
            .unwrap();
        t.on_message(&bar_msg(bar(100.0, 101.0, 99.0, 100.0)), &mut out)
            .unwrap();
        assert!(t.accounts.is_empty() && t.pending.is_empty());
    }

    fn with_curators(curators: &str) -> Trader {
        let set = |n: &str, v: &str| Setting {
            name: n.into(),
            value: v.into(),
        };
        Trader::init(InitContext {
            member: 0,
            snapshot: None,
            instance: "t".into(),
            params: vec![],
            settings: vec![
                set("slippage-bps", "0"),
                set("fee-bps", "0"),
                set("equity", "1000"),
                set("report-every", "1000"),
                set("curators", curators),
            ],
        })
        .unwrap()
    }

    fn kinds(out: &Outbox) -> Vec<FillKind> {
        out.messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Fill(f) => Some(f.kind),
                _ => None,
            })
            .collect()
    }

    fn curator_report(out: &Outbox, name: &str) -> BTreeMap<String, f64> {
        out.messages()
            .iter()
            .rev()
            .find_map(|m| match &m.body {
                Body::Fitness(f) if f.subject == format!("curator:{name}") => Some(
                    f.metrics
                        .iter()
                        .map(|m| (m.name.clone(), m.value))
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn end_msg() -> Envelope {
        Envelope {
            body: Body::EndOfStream,
            ..bar_msg(bar(1.0, 1.0, 1.0, 1.0))
        }
    }

    #[test]
    fn a_vetoed_plan_is_followed_in_the_shadows_and_reported_for_its_curator() {
        use garden_sdk::curation::Verdicts;
        let mut t = with_curators("");
        let mut out = Outbox::new();
        let mut msg = decision(plan(Side::Long, 95.0, 105.0, 5));
        if let Body::Decision(d) = &mut msg.body {
            d.verdict = Verdict::Reject;
            d.size = 0.0;
            d.curation = vec![Verdicts::by("regime").veto("p1", "against the trend")];
        }
        t.on_message(&msg, &mut out).unwrap();
        t.on_message(&bar_msg(bar(100.0, 101.0, 99.0, 100.5)), &mut out)
            .unwrap();
        t.on_message(&bar_msg(bar(101.0, 106.0, 100.0, 104.0)), &mut out)
            .unwrap();
        assert!(kinds(&out).is_empty(), "no real fill for a vetoed plan");
        assert!((t.accounts["a"].cash - 1000.0).abs() < 1e-12);
        t.on_message(&end_msg(), &mut out).unwrap();
        let r = curator_report(&out, "regime");
        assert_eq!(r["vetoes"], 1.0);
        assert_eq!(r["vetoed-closed"], 1.0);
        assert_eq!(r["vetoed-won"], 1.0);
        // Size 10 from 100 to the target 105; risk to the stop is 50.
        assert!((r["vetoed-would-pnl"] - 50.0).abs() < 1e-9);
        assert!((r["vetoed-would-r"] - 1.0).abs() < 1e-9);
    }

    /// The attack: an alpha writing vetoed plans that never close. The
    /// trader follows a bounded number of them, dropping the oldest.
    #[test]
    fn vetoed_plans_that_never_close_cannot_grow_the_trader() {
        use garden_sdk::curation::Verdicts;
        let mut t = with_curators("");
        let mut out = Outbox::new();
        for n in 0..=MAX_SHADOWS {
            let mut msg = decision(plan(Side::Long, 1.0, 1e9, u32::MAX));
            if let Body::Decision(d) = &mut msg.body {
                d.plan.id = format!("a-{n}");
                d.verdict = Verdict::Reject;
                d.curation = vec![Verdicts::by("regime").veto(&d.plan.id, "x")];
            }
            t.on_message(&msg, &mut out).unwrap();
        }
        assert_eq!(t.shadows.len(), MAX_SHADOWS);
        assert_eq!(t.shadows_dropped, 1);
        assert_eq!(t.shadows[0].plan.id, "a-1", "the oldest went first");
    }

    #[test]
    fn the_trader_stage_waits_one_bar_at_most_and_may_only_shrink() {
        use garden_sdk::NudgeTarget;
        use garden_sdk::curation::Verdicts;
        let verdict = |c: Curation| {
            let mut msg = bar_msg(bar(1.0, 1.0, 1.0, 1.0));
            msg.source = c.curator.clone().into();
            msg.body = Body::Curation(c);
            msg
        };
        // A growing nudge is not applied: the decision's size stands.
        let mut t = with_curators("slip");
        let mut out = Outbox::new();
        t.on_message(&decision(plan(Side::Long, 95.0, 105.0, 5)), &mut out)
            .unwrap();
        t.on_message(
            &verdict(Verdicts::by("slip").nudge("p1", NudgeTarget::Size, 0.1, "calm")),
            &mut out,
        )
        .unwrap();
        t.on_message(&bar_msg(bar(100.0, 101.0, 99.0, 100.5)), &mut out)
            .unwrap();
        let entry = out.messages().iter().find_map(|m| match &m.body {
            Body::Fill(f) => Some(f.clone()),
            _ => None,
        });
        let entry = entry.expect("filled at the next open");
        assert_eq!(entry.size, 10.0);
        assert_eq!(entry.curation.len(), 1, "the fill records the verdict");

        // A curator that never answers does not delay the fill.
        let mut t = with_curators("slip");
        let mut out = Outbox::new();
        t.on_message(&decision(plan(Side::Long, 95.0, 105.0, 5)), &mut out)
            .unwrap();
        t.on_message(&bar_msg(bar(100.0, 101.0, 99.0, 100.5)), &mut out)
            .unwrap();
        assert_eq!(kinds(&out), vec![FillKind::Entry]);

        // A veto at this stage stops the entry.
        let mut t = with_curators("slip");
        let mut out = Outbox::new();
        t.on_message(&decision(plan(Side::Long, 95.0, 105.0, 5)), &mut out)
            .unwrap();
        t.on_message(&verdict(Verdicts::by("slip").veto("p1", "gappy")), &mut out)
            .unwrap();
        assert_eq!(
            kinds(&out),
            vec![FillKind::Cancel],
            "the veto cancels at once"
        );
        t.on_message(&bar_msg(bar(100.0, 101.0, 99.0, 100.5)), &mut out)
            .unwrap();
        assert_eq!(
            kinds(&out),
            vec![FillKind::Cancel],
            "and nothing is entered"
        );
        // And a verdict in another's name is refused.
        let mut forged = verdict(Verdicts::by("slip").veto("p1", "x"));
        forged.source = "intruder".into();
        t.on_message(&forged, &mut out).unwrap();
        assert_eq!(t.curators.forged, 1);
    }

    #[test]
    fn horizon_closes_at_close_and_end_of_stream_reports() {
        let mut t = trader();
        let mut out = Outbox::new();
        t.on_message(&decision(plan(Side::Long, 50.0, 150.0, 2)), &mut out)
            .unwrap();
        t.on_message(&bar_msg(bar(100.0, 101.0, 99.0, 100.0)), &mut out)
            .unwrap();
        t.on_message(&bar_msg(bar(100.0, 101.0, 99.0, 100.7)), &mut out)
            .unwrap();
        let kinds: Vec<FillKind> = out
            .messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Fill(f) => Some(f.kind),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, vec![FillKind::Entry, FillKind::Horizon]);
        t.on_message(
            &Envelope {
                body: Body::EndOfStream,
                ..bar_msg(bar(1.0, 1.0, 1.0, 1.0))
            },
            &mut out,
        )
        .unwrap();
        let fitness: Vec<Fitness> = out
            .messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Fitness(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        let subjects: Vec<&str> = fitness.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(
            subjects,
            ["a", "portfolio"],
            "one symbol: no per-symbol book"
        );
        assert_eq!(fitness[0].trades, 1);
        assert_eq!(fitness[0].values.len(), 3, "two bars and the final value");
        assert_eq!(fitness[1].values.len(), 3);
        assert_eq!(
            fitness[1].values.last(),
            fitness[0].values.last(),
            "one variant: its account is the book"
        );
    }

    #[test]
    fn the_book_adds_up_over_symbols_and_variants() {
        let mut t = with_curators("");
        let mut out = Outbox::new();
        let on = |symbol: &str, mut msg: Envelope| {
            if let Body::Decision(d) = &mut msg.body {
                d.plan.symbol = symbol.into();
                d.plan.id = format!("{symbol}-1");
                d.plan.origin = format!("v-{symbol}");
            }
            if let Body::Bar(b) = &mut msg.body {
                b.symbol = symbol.into();
            }
            msg
        };
        t.on_message(
            &on("X", decision(plan(Side::Long, 95.0, 105.0, 5))),
            &mut out,
        )
        .unwrap();
        t.on_message(
            &on("Y", decision(plan(Side::Short, 105.0, 95.0, 5))),
            &mut out,
        )
        .unwrap();
        for (o, c) in [(100.0_f64, 103.0_f64), (103.0, 106.0)] {
            t.on_message(&on("X", bar_msg(bar(o, c.max(o), o.min(c), c))), &mut out)
                .unwrap();
            t.on_message(&on("Y", bar_msg(bar(o, c.max(o), o.min(c), c))), &mut out)
                .unwrap();
        }
        t.on_message(&end_msg(), &mut out).unwrap();
        let last = |subject: &str| {
            out.messages()
                .iter()
                .rev()
                .find_map(|m| match &m.body {
                    Body::Fitness(f) if f.subject == subject => f.values.last().copied(),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no {subject}"))
        };
        let (x, y, all) = (last("portfolio:X"), last("portfolio:Y"), last("portfolio"));
        assert!(
            (x - 1000.0 - 50.0).abs() < 1e-9,
            "X's long hit its target: {x}"
        );
        assert!(
            (y - 1000.0 + 50.0).abs() < 1e-9,
            "Y's short hit its stop: {y}"
        );
        assert!((all - 1000.0 - (x - 1000.0) - (y - 1000.0)).abs() < 1e-9);
    }
}
