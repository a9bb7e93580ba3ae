//! Regime: labels each bar's market as trend or range, calm or volatile,
//! and broadcasts a `context` message when the label changes.
//!
//! * **trend / range**: Wilder's ADX(`adx-period`) at or above `adx-trend`
//!   is a trend, below it a range;
//! * **calm / volatile**: the ATR(`adx-period`) against its own last
//!   `window` values: above the `vol-quantile` quantile is volatile.
//!
//! Only past bars are used. A new label must hold for `dwell` bars before it
//! is announced, so a label flickering around a threshold is not broadcast
//! on every bar. Labels: `trend-calm`, `trend-volatile`, `range-calm`,
//! `range-volatile`.

use std::collections::HashMap;

use garden_sdk::indicators::{Adx, Atr, RollingStats};
use garden_sdk::{
    Bar, Body, ContextChange, Envelope, Gene, Info, InitContext, Module, Outbox, Subscription,
};

struct Tape {
    adx: Adx,
    atr: Atr,
    /// The last `window` ATRs (kept sorted: the quantile is a lookup).
    atrs: RollingStats,
    current: Option<String>,
    candidate: Option<(String, u32)>,
}

/// The module's state.
pub struct Regime {
    period: usize,
    adx_trend: f64,
    window: usize,
    quantile: f64,
    dwell: u32,
    tapes: HashMap<String, Tape>,
}

impl Regime {
    /// The label for one bar, once the indicators are warm.
    fn label(&mut self, bar: &Bar) -> Option<String> {
        let (period, window, quantile, adx_trend) =
            (self.period, self.window, self.quantile, self.adx_trend);
        let tape = self
            .tapes
            .entry(bar.symbol.clone())
            .or_insert_with(|| Tape {
                adx: Adx::new(period),
                atr: Atr::new(period),
                atrs: RollingStats::new(window.max(1)),
                current: None,
                candidate: None,
            });
        let adx = tape.adx.update(bar.high, bar.low, bar.close);
        let atr = tape.atr.update(bar.high, bar.low, bar.close)?;
        // The quantile of the window before this bar: no look-ahead.
        let threshold = if tape.atrs.len() >= window / 2 {
            tape.atrs.quantile(quantile)
        } else {
            None
        };
        tape.atrs.push(atr);
        let adx = adx?;
        let threshold = threshold?;
        let trend = if adx >= adx_trend { "trend" } else { "range" };
        let vol = if atr > threshold { "volatile" } else { "calm" };
        Some(format!("{trend}-{vol}"))
    }

    fn on_bar(&mut self, bar: &Bar, out: &mut Outbox) {
        let Some(label) = self.label(bar) else { return };
        let dwell = self.dwell;
        let Some(tape) = self.tapes.get_mut(&bar.symbol) else {
            return;
        };
        if tape.current.as_deref() == Some(label.as_str()) {
            tape.candidate = None;
            return;
        }
        let held = match &mut tape.candidate {
            Some((l, n)) if *l == label => {
                *n += 1;
                *n
            }
            _ => {
                tape.candidate = Some((label.clone(), 1));
                1
            }
        };
        if held >= dwell || tape.current.is_none() {
            let detail = format!(
                "{} -> {label} on {}",
                tape.current.as_deref().unwrap_or("none"),
                bar.symbol
            );
            tape.current = Some(label.clone());
            tape.candidate = None;
            out.publish(
                "regime",
                &bar.symbol,
                Body::Context(ContextChange { label, detail }),
            );
        }
    }
}

impl Module for Regime {
    fn describe() -> Info {
        Info::new("regime", env!("CARGO_PKG_VERSION"), "regime")
            .subscribe(Subscription::broadcast("bar"))
            .publishes("regime")
            .gene(Gene::int("adx-period", 5.0, 50.0, 14.0, 2.0))
            .gene(Gene::float("adx-trend", 10.0, 50.0, 25.0, 2.0))
            .gene(Gene::int("window", 20.0, 1000.0, 200.0, 20.0))
            .gene(Gene::float("vol-quantile", 0.5, 0.95, 0.7, 0.05))
            .gene(Gene::int("dwell", 1.0, 100.0, 24.0, 4.0))
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let positive = |v: i64, name: &str| {
            usize::try_from(v)
                .ok()
                .filter(|x| *x >= 1)
                .ok_or_else(|| format!("{name} must be at least 1, got {v}"))
        };
        Ok(Regime {
            period: positive(ctx.int("adx-period")?, "adx-period")?,
            adx_trend: ctx.float("adx-trend")?,
            window: positive(ctx.int("window")?, "window")?,
            quantile: ctx.float("vol-quantile")?.clamp(0.0, 1.0),
            dwell: u32::try_from(ctx.int("dwell")?)
                .map_err(|e| e.to_string())?
                .max(1),
            tapes: HashMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        if let Body::Bar(bar) = &msg.body {
            self.on_bar(bar, out);
        }
        Ok(())
    }
}

garden_sdk::export_module!(Regime);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{GeneValue, Param};

    fn regime(dwell: i64) -> Regime {
        let p = |n: &str, v: GeneValue| Param {
            name: n.into(),
            value: v,
        };
        Regime::init(InitContext {
            member: 0,
            snapshot: None,
            instance: "r".into(),
            params: vec![
                p("adx-period", GeneValue::Int(5)),
                p("adx-trend", GeneValue::Float(25.0)),
                p("window", GeneValue::Int(20)),
                p("vol-quantile", GeneValue::Float(0.7)),
                p("dwell", GeneValue::Int(dwell)),
            ],
            settings: vec![],
        })
        .unwrap()
    }

    fn bar(i: usize, c: f64, half_range: f64) -> Envelope {
        Envelope {
            topic: "bar".into(),
            key: "X".into(),
            seq: 0,
            time: i as i64,
            source: "feed".into(),
            body: Body::Bar(Bar {
                symbol: "X".into(),
                time: i as i64,
                open: c,
                high: c + half_range,
                low: c - half_range,
                close: c,
                volume: 1.0,
            }),
        }
    }

    fn labels(out: &Outbox) -> Vec<String> {
        out.messages()
            .iter()
            .filter_map(|m| match &m.body {
                Body::Context(c) => Some(c.label.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_calm_range_then_a_volatile_trend_are_announced_once_each() {
        let mut r = regime(3);
        let mut out = Outbox::new();
        // A range whose bars slowly narrow: never above its own past quantile.
        for i in 0..60 {
            let c = 100.0 + if i % 2 == 0 { 0.2 } else { -0.2 };
            r.on_message(&bar(i, c, 0.6 - i as f64 * 0.005), &mut out)
                .unwrap();
        }
        for i in 60..120 {
            r.on_message(&bar(i, 100.0 + (i - 60) as f64 * 2.0, 3.0), &mut out)
                .unwrap();
        }
        let l = labels(&out);
        assert_eq!(l.first().map(String::as_str), Some("range-calm"), "{l:?}");
        assert!(l.contains(&"trend-volatile".to_string()), "{l:?}");
        assert!(
            l.windows(2).all(|w| w[0] != w[1]),
            "only changes are announced: {l:?}"
        );
    }
}
