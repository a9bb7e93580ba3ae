//! Micro-expert: RSI and MACD divergence against price swings.
//!
//! **Swings.** A swing high is a bar whose high is above the highs of the
//! `pivot-k` bars before it and not below those of the `pivot-k` bars after
//! it (a swing low the same with lows, mirrored); the first of equal highs
//! wins. A swing is therefore known only `pivot-k` bars after it happened,
//! and that is when this expert learns of it: nothing it says depends on a
//! bar it has not yet seen.
//!
//! **Divergence.** Each new swing is compared with the previous swing of the
//! same kind, if that one lies at most `max-spacing` bars before it (two
//! swings of one kind are at least `pivot-k + 1` bars apart by construction,
//! so the spacing compared is bounded on both sides; a farther swing belongs
//! to another move and is not compared). The oscillators are read at the
//! swing bars: RSI (14, Wilder) and the MACD line (12, 26, 9).
//!
//! | swings | price | oscillator | divergence | points |
//! |---|---|---|---|---|
//! | highs | higher high | lower high | regular bearish | short |
//! | highs | lower high | higher high | hidden bearish | short |
//! | lows | lower low | higher low | regular bullish | long |
//! | lows | higher low | lower low | hidden bullish | long |
//!
//! A divergence stays active for `recent` bars after the bar that revealed
//! it. When a plan arrives, every active divergence of its symbol adds
//! `regular-llr` (or `hidden-llr`) to the log-likelihood ratio if it points
//! the plan's way and subtracts it otherwise: RSI and MACD count separately,
//! so two oscillators agreeing weigh twice.

use std::collections::{HashMap, VecDeque};

use garden_sdk::indicators::{Macd, Rsi};
use garden_sdk::{
    Bar, Body, Envelope, Evidence, Gene, Info, InitContext, Module, Outbox, Plan, Side,
    Subscription,
};

/// RSI period (Wilder).
pub const RSI_PERIOD: usize = 14;
/// MACD fast, slow and signal periods.
pub const MACD_PERIODS: (usize, usize, usize) = (12, 26, 9);

/// The oscillators, in the order their readings are kept.
pub const OSCILLATORS: [&str; 2] = ["RSI", "MACD"];

/// Regular (reversal) or hidden (continuation) divergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Price makes a new extreme the oscillator does not confirm.
    Regular,
    /// The oscillator makes a new extreme the price does not.
    Hidden,
}

/// A swing: where it was, its price and the oscillators there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Swing {
    /// Bar number (per symbol, from 0).
    pub bar: u64,
    /// The high of a swing high, the low of a swing low.
    pub price: f64,
    /// One reading per entry of [`OSCILLATORS`].
    pub oscillators: [f64; 2],
}

/// A divergence found between two swings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    /// Which way it points.
    pub side: Side,
    /// Regular or hidden.
    pub kind: Kind,
    /// Index into [`OSCILLATORS`].
    pub oscillator: usize,
    /// The bar at which it became known (the later swing plus `pivot-k`).
    pub known_at: u64,
}

/// The divergences between a previous swing and a new one of the same kind
/// (`highs` for swing highs), one per oscillator at most. Equal prices or
/// readings diverge from nothing.
pub fn compare(prev: &Swing, new: &Swing, highs: bool, known_at: u64) -> Vec<Divergence> {
    let mut out = Vec::new();
    for (i, (&a, &b)) in prev.oscillators.iter().zip(&new.oscillators).enumerate() {
        let price_up = new.price > prev.price;
        let price_down = new.price < prev.price;
        let osc_up = b > a;
        let osc_down = b < a;
        let found = if highs {
            if price_up && osc_down {
                Some((Side::Short, Kind::Regular))
            } else if price_down && osc_up {
                Some((Side::Short, Kind::Hidden))
            } else {
                None
            }
        } else if price_down && osc_up {
            Some((Side::Long, Kind::Regular))
        } else if price_up && osc_down {
            Some((Side::Long, Kind::Hidden))
        } else {
            None
        };
        if let Some((side, kind)) = found {
            out.push(Divergence {
                side,
                kind,
                oscillator: i,
                known_at,
            });
        }
    }
    out
}

/// One bar as the swing finder keeps it.
#[derive(Debug, Clone, Copy)]
struct Point {
    high: f64,
    low: f64,
    /// None while an oscillator is still warming up.
    oscillators: Option<[f64; 2]>,
}

/// Swings and divergences of one symbol.
pub struct Series {
    k: usize,
    max_spacing: u64,
    rsi: Rsi,
    macd: Macd,
    /// The last `2k + 1` bars; the middle one is the swing candidate.
    window: VecDeque<Point>,
    /// Bars seen.
    bars: u64,
    last_high: Option<Swing>,
    last_low: Option<Swing>,
    /// Divergences found, oldest first (pruned by the expert).
    pub found: VecDeque<Divergence>,
}

impl Series {
    /// A series finding swings with `k` bars on each side, comparing swings
    /// at most `max_spacing` bars apart.
    pub fn new(k: usize, max_spacing: u64) -> Series {
        Series {
            k,
            max_spacing,
            rsi: Rsi::new(RSI_PERIOD),
            macd: Macd::new(MACD_PERIODS.0, MACD_PERIODS.1, MACD_PERIODS.2),
            window: VecDeque::with_capacity(2 * k + 1),
            bars: 0,
            last_high: None,
            last_low: None,
            found: VecDeque::new(),
        }
    }

    /// Bars seen so far.
    pub fn bars(&self) -> u64 {
        self.bars
    }

    /// Feed one bar; returns how many divergences it revealed.
    pub fn push(&mut self, high: f64, low: f64, close: f64) -> usize {
        let rsi = self.rsi.update(close);
        self.macd.update(close);
        let oscillators = match (rsi, self.macd.line()) {
            (Some(r), Some(m)) => Some([r, m]),
            _ => None,
        };
        self.bars += 1;
        if self.window.len() == 2 * self.k + 1 {
            self.window.pop_front();
        }
        self.window.push_back(Point {
            high,
            low,
            oscillators,
        });
        if self.window.len() < 2 * self.k + 1 {
            return 0;
        }
        let now = self.bars - 1;
        let bar = now - self.k as u64;
        let mid = self.window[self.k];
        let Some(oscillators) = mid.oscillators else {
            return 0;
        };
        let (mut left, mut right) = (self.window.range(..self.k), self.window.range(self.k + 1..));
        let is_high =
            left.clone().all(|p| mid.high > p.high) && right.clone().all(|p| mid.high >= p.high);
        let is_low = left.all(|p| mid.low < p.low) && right.all(|p| mid.low <= p.low);
        let before = self.found.len();
        if is_high {
            let swing = Swing {
                bar,
                price: mid.high,
                oscillators,
            };
            if let Some(prev) = self.last_high.filter(|p| bar - p.bar <= self.max_spacing) {
                self.found.extend(compare(&prev, &swing, true, now));
            }
            self.last_high = Some(swing);
        }
        if is_low {
            let swing = Swing {
                bar,
                price: mid.low,
                oscillators,
            };
            if let Some(prev) = self.last_low.filter(|p| bar - p.bar <= self.max_spacing) {
                self.found.extend(compare(&prev, &swing, false, now));
            }
            self.last_low = Some(swing);
        }
        self.found.len() - before
    }

    /// Forget divergences revealed `recent` or more bars ago.
    fn prune(&mut self, recent: u64) {
        let now = self.bars.saturating_sub(1);
        while self
            .found
            .front()
            .is_some_and(|d| now - d.known_at >= recent)
        {
            self.found.pop_front();
        }
    }
}

/// The expert's state.
pub struct Divergences {
    k: usize,
    max_spacing: u64,
    recent: u64,
    regular_llr: f64,
    hidden_llr: f64,
    series: HashMap<String, Series>,
}

impl Divergences {
    fn on_bar(&mut self, bar: &Bar) {
        let (k, spacing, recent) = (self.k, self.max_spacing, self.recent);
        let series = self
            .series
            .entry(bar.symbol.clone())
            .or_insert_with(|| Series::new(k, spacing));
        series.push(bar.high, bar.low, bar.close);
        series.prune(recent);
    }

    /// The evidence about `plan` from the active divergences of its symbol.
    pub fn judge(&self, plan: &Plan) -> Evidence {
        let mut llr = 0.0;
        let mut reasons = Vec::new();
        if let Some(series) = self.series.get(&plan.symbol) {
            let now = series.bars.saturating_sub(1);
            for d in &series.found {
                let weight = match d.kind {
                    Kind::Regular => self.regular_llr,
                    Kind::Hidden => self.hidden_llr,
                };
                let with = d.side == plan.side;
                llr += if with { weight } else { -weight };
                reasons.push(format!(
                    "{} {} {} divergence {} bars ago ({})",
                    match d.kind {
                        Kind::Regular => "regular",
                        Kind::Hidden => "hidden",
                    },
                    match d.side {
                        Side::Long => "bullish",
                        Side::Short => "bearish",
                    },
                    OSCILLATORS[d.oscillator],
                    now - d.known_at,
                    if with { "for" } else { "against" }
                ));
            }
        }
        Evidence {
            plan_id: plan.id.clone(),
            expert: "expert-divergence".into(),
            llr,
            reason: if reasons.is_empty() {
                format!("no divergence in the last {} bars", self.recent)
            } else {
                reasons.join("; ")
            },
        }
    }
}

impl Module for Divergences {
    fn describe() -> Info {
        Info::new("expert-divergence", env!("CARGO_PKG_VERSION"), "expert")
            .subscribe(Subscription::broadcast("bar"))
            .subscribe(Subscription::shared("plan"))
            .publishes("evidence")
            .gene(Gene::int("pivot-k", 2.0, 10.0, 3.0, 1.0))
            .gene(Gene::int("max-spacing", 10.0, 200.0, 60.0, 10.0))
            .gene(Gene::int("recent", 1.0, 50.0, 10.0, 2.0))
            .gene(Gene::float("regular-llr", 0.0, 2.0, 0.3, 0.1))
            .gene(Gene::float("hidden-llr", 0.0, 2.0, 0.2, 0.1))
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let positive = |name: &str| -> Result<u64, String> {
            let v = ctx.int(name)?;
            u64::try_from(v)
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| format!("{name} must be at least 1, got {v}"))
        };
        let k = positive("pivot-k")?;
        let max_spacing = positive("max-spacing")?;
        if max_spacing <= k {
            return Err(format!(
                "max-spacing ({max_spacing}) must exceed pivot-k ({k}): swings of one kind are at least pivot-k + 1 bars apart"
            ));
        }
        Ok(Divergences {
            k: usize::try_from(k).map_err(|e| e.to_string())?,
            max_spacing,
            recent: positive("recent")?,
            regular_llr: ctx.float("regular-llr")?,
            hidden_llr: ctx.float("hidden-llr")?,
            series: HashMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Bar(bar) => self.on_bar(bar),
            Body::Plan(plan) => {
                let evidence = self.judge(plan);
                out.publish("evidence", &plan.id, Body::Evidence(evidence));
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(Divergences);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{GeneValue, Param};

    fn swing(bar: u64, price: f64, rsi: f64, macd: f64) -> Swing {
        Swing {
            bar,
            price,
            oscillators: [rsi, macd],
        }
    }

    #[test]
    fn the_four_divergences_are_told_apart() {
        let kinds = |v: Vec<Divergence>| -> Vec<(Side, Kind, usize)> {
            v.into_iter()
                .map(|d| (d.side, d.kind, d.oscillator))
                .collect()
        };
        // Highs: higher high, RSI lower, MACD higher: regular bearish on RSI.
        let a = swing(10, 1.10, 70.0, 0.002);
        let b = swing(20, 1.12, 65.0, 0.003);
        assert_eq!(
            kinds(compare(&a, &b, true, 23)),
            vec![(Side::Short, Kind::Regular, 0)]
        );
        // Highs: lower high, both oscillators higher: hidden bearish twice.
        let b = swing(20, 1.09, 75.0, 0.003);
        assert_eq!(
            kinds(compare(&a, &b, true, 23)),
            vec![
                (Side::Short, Kind::Hidden, 0),
                (Side::Short, Kind::Hidden, 1)
            ]
        );
        // Lows: lower low, MACD higher: regular bullish on MACD.
        let a = swing(10, 1.00, 30.0, -0.003);
        let b = swing(20, 0.98, 25.0, -0.002);
        assert_eq!(
            kinds(compare(&a, &b, false, 23)),
            vec![(Side::Long, Kind::Regular, 1)]
        );
        // Lows: higher low, RSI lower: hidden bullish.
        let b = swing(20, 1.01, 25.0, -0.003);
        assert_eq!(
            kinds(compare(&a, &b, false, 23)),
            vec![(Side::Long, Kind::Hidden, 0)]
        );
        // Confirmation (both higher) and equal readings: nothing.
        let b = swing(20, 1.02, 35.0, -0.003);
        assert!(compare(&a, &b, false, 23).is_empty());
    }

    /// Closes that rally hard to a first peak, pull back, then grind to a
    /// marginally higher second peak on weaker momentum.
    fn fading_rally() -> Vec<f64> {
        let mut closes = Vec::new();
        let mut p = 100.0;
        // Warm-up: a gentle zigzag so RSI and MACD are defined.
        for i in 0..40 {
            p += if i % 2 == 0 { 0.3 } else { -0.3 };
            closes.push(p);
        }
        for _ in 0..10 {
            p += 1.0; // strong rally: first peak
            closes.push(p);
        }
        for _ in 0..6 {
            p -= 0.8; // pull-back: a swing low
            closes.push(p);
        }
        for i in 0..30 {
            // A grind higher with losses mixed in: weaker momentum.
            p += if i % 2 == 0 { 0.8 } else { -0.3 };
            closes.push(p);
        }
        for _ in 0..8 {
            p -= 1.0; // and the fall that makes the second peak a swing
            closes.push(p);
        }
        closes
    }

    #[test]
    fn a_fading_rally_shows_regular_bearish_divergence_k_bars_after_the_peak() {
        let k = 3;
        let mut s = Series::new(k, 60);
        let closes = fading_rally();
        let mut revealed = Vec::new();
        for (i, c) in closes.iter().enumerate() {
            if s.push(*c, *c, *c) > 0 {
                revealed.push(i as u64);
            }
        }
        let bearish: Vec<&Divergence> = s
            .found
            .iter()
            .filter(|d| d.side == Side::Short && d.kind == Kind::Regular)
            .collect();
        let oscillators: Vec<usize> = bearish.iter().map(|d| d.oscillator).collect();
        assert!(
            oscillators.contains(&0) && oscillators.contains(&1),
            "both RSI and MACD diverge: {:?}",
            s.found
        );
        // The second peak is the highest close of the series; it becomes
        // known exactly k bars later, not a bar sooner.
        let peak = closes
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u64)
            .unwrap();
        for d in &bearish {
            assert_eq!(d.known_at, peak + k as u64, "{d:?}");
        }
    }

    #[test]
    fn swings_farther_apart_than_max_spacing_are_not_compared() {
        let mut s = Series::new(3, 10);
        for c in fading_rally() {
            s.push(c, c, c);
        }
        // The two peaks are about 36 bars apart: nothing to compare.
        assert!(
            s.found
                .iter()
                .all(|d| !(d.side == Side::Short && d.kind == Kind::Regular)),
            "{:?}",
            s.found
        );
    }

    fn expert(recent: i64) -> Divergences {
        let int = |name: &str, v: i64| Param {
            name: name.into(),
            value: GeneValue::Int(v),
        };
        let float = |name: &str, v: f64| Param {
            name: name.into(),
            value: GeneValue::Float(v),
        };
        Divergences::init(InitContext {
            member: 0,
            snapshot: None,
            instance: "d".into(),
            params: vec![
                int("pivot-k", 3),
                int("max-spacing", 60),
                int("recent", recent),
                float("regular-llr", 0.3),
                float("hidden-llr", 0.2),
            ],
            settings: vec![],
        })
        .unwrap()
    }

    fn plan(side: Side) -> Plan {
        Plan {
            id: "p".into(),
            origin: "a".into(),
            symbol: "X".into(),
            side,
            entry: 1.0,
            stop: 0.9,
            target: 1.2,
            size: 1.0,
            horizon: 5,
            confidence: 0.5,
            time: 0,
        }
    }

    #[test]
    fn a_bearish_divergence_supports_shorts_and_opposes_longs_until_it_ages_out() {
        let mut e = expert(10);
        let closes = fading_rally();
        let mut first = None;
        for (i, c) in closes.iter().enumerate() {
            e.on_bar(&Bar {
                symbol: "X".into(),
                time: i as i64,
                open: *c,
                high: *c,
                low: *c,
                close: *c,
                volume: 1.0,
            });
            let short = e.judge(&plan(Side::Short));
            if short.llr > 0.0 && first.is_none() {
                first = Some(i);
                assert!(short.reason.contains("regular bearish"), "{}", short.reason);
                assert!(e.judge(&plan(Side::Long)).llr < 0.0);
            }
        }
        assert!(first.is_some(), "the divergence was reported");
        // Ten bars of flat prices later it is forgotten.
        let last = closes[closes.len() - 1];
        for i in 0..10 {
            e.on_bar(&Bar {
                symbol: "X".into(),
                time: 1000 + i,
                open: last,
                high: last,
                low: last,
                close: last,
                volume: 1.0,
            });
        }
        let ev = e.judge(&plan(Side::Short));
        assert_eq!(ev.llr, 0.0, "{}", ev.reason);
    }

    #[test]
    fn max_spacing_must_exceed_pivot_k() {
        let ctx = InitContext {
            member: 0,
            snapshot: None,
            instance: "d".into(),
            params: vec![
                Param {
                    name: "pivot-k".into(),
                    value: GeneValue::Int(5),
                },
                Param {
                    name: "max-spacing".into(),
                    value: GeneValue::Int(5),
                },
            ],
            settings: vec![],
        };
        assert!(
            Divergences::init(ctx)
                .err()
                .unwrap()
                .contains("max-spacing")
        );
    }
}
