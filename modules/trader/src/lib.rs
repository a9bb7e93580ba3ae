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

use std::collections::{BTreeMap, HashMap};

use garden_sdk::{
    Bar, Body, Decision, Envelope, Feedback, Fill, FillKind, Fitness, Info, InitContext, Metric,
    Module, Outbox, Plan, Subscription, Timestamp, Verdict,
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
    ) {
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
    }

    fn on_decision(&mut self, d: &Decision) {
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
            self.pending.push(d.clone());
        }
    }

    fn on_bar(&mut self, bar: &Bar, out: &mut Outbox) {
        self.time = bar.time;
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
                }),
            );
            account.open.push(Position {
                plan: d.plan,
                entry: price,
                size: d.size,
                entry_fee: fee,
                bars_held: 0,
            });
        }
        // 2. Stops, targets and horizons.
        for account in self.accounts.values_mut() {
            let mut still_open = Vec::with_capacity(account.open.len());
            for mut pos in std::mem::take(&mut account.open) {
                if pos.plan.symbol != bar.symbol {
                    still_open.push(pos);
                    continue;
                }
                pos.bars_held += 1;
                if let Some((kind, price)) = exit_in_bar(&pos.plan, bar) {
                    Self::close(account, pos, kind, price, &costs, bar.time, out);
                } else if pos.bars_held >= pos.plan.horizon {
                    Self::close(
                        account,
                        pos,
                        FillKind::Horizon,
                        bar.close,
                        &costs,
                        bar.time,
                        out,
                    );
                } else {
                    still_open.push(pos);
                }
            }
            account.open = still_open;
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
        self.bars_since_report += 1;
        if self.bars_since_report >= self.report_every {
            self.report(out);
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
            Self::close(&mut account, pos, FillKind::Close, mark, &costs, time, out);
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
        for account in self.accounts.values_mut() {
            for pos in std::mem::take(&mut account.open) {
                let mark = self
                    .last_close
                    .get(&pos.plan.symbol)
                    .copied()
                    .unwrap_or(pos.entry);
                Self::close(account, pos, FillKind::Close, mark, &costs, time, out);
            }
            account.values.push(account.cash);
        }
        self.pending.clear();
        self.report(out);
    }
}

impl Module for Trader {
    fn describe() -> Info {
        Info::new("trader", env!("CARGO_PKG_VERSION"), "trader")
            .subscribe(Subscription::broadcast("bar"))
            .subscribe(Subscription::broadcast("decision"))
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
        Ok(Trader {
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
            Body::Decision(d) => self.on_decision(d),
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
        assert_eq!(fitness.len(), 1);
        assert_eq!(fitness[0].subject, "a");
        assert_eq!(fitness[0].trades, 1);
        assert_eq!(fitness[0].values.len(), 3, "two bars and the final value");
    }
}
