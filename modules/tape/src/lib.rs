//! MicroTape: each bar becomes a token from a small alphabet plus the
//! numbers behind it, so that experts can read the tape as text.
//!
//! The alphabet and its thresholds are in `docs/tape.md`. In short, a token
//! `{colour}b{body}u{upper}l{lower}r{range}v{volume}g{gap}` holds:
//!
//! * colour `+` (close above open), `-` (below) or `=` (doji: body at most
//!   `doji` of the range);
//! * body, upper shadow and lower shadow as a share of the bar's range, and
//!   the range over the previous bar's ATR, and the volume over the median
//!   volume, each cut into classes 0, 1, 2 at the terciles of **the previous
//!   `window` bars' own values** (never a future bar's);
//! * gap `u` / `d` when the open is more than `gap-atr` ATRs above / below
//!   the previous close, else `n`.
//!
//! No token is written until `warmup` bars of history exist.

use std::collections::HashMap;

use garden_sdk::indicators::{Atr, RollingStats};
use garden_sdk::{
    Bar, Body, Envelope, Gene, Info, InitContext, Metric, Module, Outbox, Subscription, Tape,
};

/// Class 0, 1 or 2 of `x` against the terciles of `history`.
fn tercile(history: &RollingStats, x: f64) -> Option<u8> {
    let (lo, hi) = (history.quantile(1.0 / 3.0)?, history.quantile(2.0 / 3.0)?);
    Some(if x < lo {
        0
    } else if x <= hi {
        1
    } else {
        2
    })
}

/// The numbers one bar is described by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features {
    /// |close − open| / range.
    pub body: f64,
    /// (high − max(open, close)) / range.
    pub upper: f64,
    /// (min(open, close) − low) / range.
    pub lower: f64,
    /// range / ATR of the bars before.
    pub range_atr: f64,
    /// volume / median volume of the bars before (1 when there is none).
    pub volume: f64,
    /// (open − previous close) / ATR.
    pub gap_atr: f64,
    /// close / previous close − 1.
    pub ret: f64,
    /// close above, below or equal to open (within the doji share).
    pub colour: char,
}

struct Symbol {
    atr: Atr,
    prev_close: Option<f64>,
    prev_atr: Option<f64>,
    bodies: RollingStats,
    uppers: RollingStats,
    lowers: RollingStats,
    ranges: RollingStats,
    /// Raw volumes, for the median.
    volumes: RollingStats,
    /// Volume over the median, for the classes.
    volume_ratios: RollingStats,
    seen: usize,
}

/// The tape module's state.
pub struct MicroTape {
    window: usize,
    warmup: usize,
    doji: f64,
    gap_atr: f64,
    symbols: HashMap<String, Symbol>,
}

impl MicroTape {
    /// The token for `bar`, or none while warming up. Updates the history
    /// after cutting the classes, so a bar is never judged by itself.
    pub fn token(&mut self, bar: &Bar) -> Option<(String, Features)> {
        let window = self.window;
        let s = self
            .symbols
            .entry(bar.symbol.clone())
            .or_insert_with(|| Symbol {
                atr: Atr::new(14),
                prev_close: None,
                prev_atr: None,
                bodies: RollingStats::new(window),
                uppers: RollingStats::new(window),
                lowers: RollingStats::new(window),
                ranges: RollingStats::new(window),
                volumes: RollingStats::new(window),
                volume_ratios: RollingStats::new(window),
                seen: 0,
            });
        let range = (bar.high - bar.low).max(0.0);
        let top = bar.open.max(bar.close);
        let bottom = bar.open.min(bar.close);
        let share = |x: f64| {
            if range > 0.0 {
                (x / range).clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let body = share(bar.close - bar.open).max(share(bar.open - bar.close));
        let upper = share(bar.high - top);
        let lower = share(bottom - bar.low);
        let atr = s.prev_atr.filter(|a| *a > 0.0);
        let range_atr = atr.map_or(1.0, |a| range / a);
        let volume = match s.volumes.median() {
            Some(m) if m > 0.0 => bar.volume / m,
            _ => 1.0,
        };
        let gap_atr = match (s.prev_close, atr) {
            (Some(pc), Some(a)) => (bar.open - pc) / a,
            _ => 0.0,
        };
        let ret = s
            .prev_close
            .filter(|p| *p > 0.0)
            .map_or(0.0, |p| bar.close / p - 1.0);
        let colour = if range > 0.0 && body <= self.doji {
            '='
        } else if bar.close > bar.open {
            '+'
        } else if bar.close < bar.open {
            '-'
        } else {
            '='
        };
        let features = Features {
            body,
            upper,
            lower,
            range_atr,
            volume,
            gap_atr,
            ret,
            colour,
        };
        let classes = (
            tercile(&s.bodies, body),
            tercile(&s.uppers, upper),
            tercile(&s.lowers, lower),
            tercile(&s.ranges, range_atr),
            tercile(&s.volume_ratios, volume),
        );
        let warm = s.seen >= self.warmup;
        // Only now does this bar join the history.
        s.bodies.push(body);
        s.uppers.push(upper);
        s.lowers.push(lower);
        s.ranges.push(range_atr);
        s.volumes.push(bar.volume);
        s.volume_ratios.push(volume);
        s.prev_close = Some(bar.close);
        s.prev_atr = s.atr.update(bar.high, bar.low, bar.close);
        s.seen += 1;
        let (Some(b), Some(u), Some(l), Some(r), Some(v)) = classes else {
            return None;
        };
        if !warm {
            return None;
        }
        let gap = if gap_atr > self.gap_atr {
            'u'
        } else if gap_atr < -self.gap_atr {
            'd'
        } else {
            'n'
        };
        Some((format!("{colour}b{b}u{u}l{l}r{r}v{v}g{gap}"), features))
    }
}

impl Module for MicroTape {
    fn describe() -> Info {
        Info::new("tape", env!("CARGO_PKG_VERSION"), "tape")
            .subscribe(Subscription::broadcast("bar"))
            .publishes("tape")
            .gene(Gene::int("window", 20.0, 2000.0, 200.0, 20.0))
            .gene(Gene::int("warmup", 5.0, 2000.0, 50.0, 5.0))
            .gene(Gene::float("doji", 0.0, 0.5, 0.1, 0.02))
            .gene(Gene::float("gap-atr", 0.0, 5.0, 0.5, 0.1))
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let window = usize::try_from(ctx.int("window")?).map_err(|e| e.to_string())?;
        let warmup = usize::try_from(ctx.int("warmup")?).map_err(|e| e.to_string())?;
        if window < 3 {
            return Err(format!("window must be at least 3, got {window}"));
        }
        Ok(MicroTape {
            window,
            warmup: warmup.max(3),
            doji: ctx.float("doji")?,
            gap_atr: ctx.float("gap-atr")?,
            symbols: HashMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        if let Body::Bar(bar) = &msg.body
            && let Some((token, f)) = self.token(bar)
        {
            let m = |name: &str, value: f64| Metric {
                name: name.into(),
                value,
            };
            let tape = Tape {
                symbol: bar.symbol.clone(),
                time: bar.time,
                token,
                features: vec![
                    m("body-ratio", f.body),
                    m("upper-ratio", f.upper),
                    m("lower-ratio", f.lower),
                    m("range-atr", f.range_atr),
                    m("volume-ratio", f.volume),
                    m("gap-atr", f.gap_atr),
                    m("return", f.ret),
                ],
                extra: vec![],
            };
            out.publish("tape", &bar.symbol, Body::Tape(tape));
        }
        Ok(())
    }
}

garden_sdk::export_module!(MicroTape);

#[cfg(test)]
mod tests {
    use super::*;

    fn tape(warmup: usize) -> MicroTape {
        MicroTape {
            window: 30,
            warmup,
            doji: 0.1,
            gap_atr: 0.5,
            symbols: HashMap::new(),
        }
    }

    fn bar(i: usize, o: f64, h: f64, l: f64, c: f64, v: f64) -> Bar {
        Bar {
            symbol: "X".into(),
            time: i as i64,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: v,
        }
    }

    /// A varied but ordinary history, so every tercile is well defined.
    fn history(t: &mut MicroTape) {
        for i in 0..40 {
            let base = 100.0 + (i % 5) as f64 * 0.1;
            let body = 0.2 + (i % 3) as f64 * 0.2;
            let (o, c) = if i % 2 == 0 {
                (base, base + body)
            } else {
                (base + body, base)
            };
            let top = o.max(c) + 0.1 + (i % 4) as f64 * 0.1;
            let bottom = o.min(c) - 0.1 - (i % 3) as f64 * 0.1;
            t.token(&bar(i, o, top, bottom, c, 100.0 + (i % 7) as f64 * 10.0));
        }
    }

    fn classes(token: &str) -> (char, Vec<char>) {
        let chars: Vec<char> = token.chars().collect();
        (
            chars[0],
            vec![chars[2], chars[4], chars[6], chars[8], chars[10], chars[12]],
        )
    }

    #[test]
    fn warmup_writes_no_token() {
        let mut t = tape(10);
        for i in 0..9 {
            assert!(t.token(&bar(i, 1.0, 1.2, 0.9, 1.1, 10.0)).is_none());
        }
    }

    #[test]
    fn every_class_is_reached_on_hand_made_bars() {
        let mut seen: Vec<std::collections::BTreeSet<char>> = vec![Default::default(); 7];
        let cases = [
            // Big bull bar, no shadows, wide range, heavy volume, gap up.
            (101.5, 103.5, 101.5, 103.5, 500.0),
            // Small bear bar, long shadows, narrow range, thin volume, gap down.
            (99.0, 99.4, 98.7, 98.85, 10.0),
            // Doji, ordinary.
            (100.2, 100.6, 99.9, 100.21, 130.0),
            // Middle-sized bar with a small upper and big lower shadow.
            (100.06, 100.65, 99.6, 100.55, 120.0),
            // A bar like the history's middle.
            (100.2, 100.85, 100.0, 100.6, 130.0),
        ];
        for (o, h, l, c, v) in cases {
            let mut t = tape(20);
            history(&mut t);
            let (token, _) = t.token(&bar(99, o, h, l, c, v)).expect("warm");
            let (colour, cls) = classes(&token);
            seen[0].insert(colour);
            for (k, ch) in cls.iter().enumerate() {
                seen[k + 1].insert(*ch);
            }
        }
        assert_eq!(seen[0], ['+', '-', '='].into_iter().collect(), "colours");
        for (k, name) in ["body", "upper", "lower", "range", "volume"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                seen[k + 1],
                ['0', '1', '2'].into_iter().collect(),
                "{name} classes: {:?}",
                seen[k + 1]
            );
        }
        assert_eq!(seen[6], ['u', 'd', 'n'].into_iter().collect(), "gaps");
    }

    #[test]
    fn tokens_do_not_depend_on_future_bars() {
        let series = |tail: f64| -> Vec<String> {
            let mut t = tape(20);
            (0..120)
                .filter_map(|i| {
                    let drift = if i >= 80 { tail * (i - 80) as f64 } else { 0.0 };
                    let c = 100.0 + ((i * 7) % 11) as f64 * 0.1 + drift;
                    t.token(&bar(
                        i,
                        c - 0.05,
                        c + 0.2,
                        c - 0.25,
                        c,
                        100.0 + ((i * 3) % 13) as f64,
                    ))
                    .map(|(tok, _)| tok)
                })
                .collect()
        };
        let a = series(0.0);
        let b = series(5.0);
        // Bars up to 80 (the cut) give the same tokens whatever follows.
        let upto = 80 - 20;
        assert_eq!(a[..upto], b[..upto]);
        assert_ne!(a, b, "the altered future does change later tokens");
    }
}
