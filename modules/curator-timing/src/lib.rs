//! Timing curator (governs scored plans, at the decision stage): no entries
//! at the edges of a session or around gaps.
//!
//! Per symbol it follows the bars' times (ms since the Unix epoch, UTC) and
//! the median spacing between them (over the last [`SPACING_WINDOW`]
//! spacings). A bar more than `gap-factor` × the median spacing after the
//! previous bar of its symbol starts a session (the FX weekend, a holiday,
//! a halt). A scored plan is judged against the latest bar of its symbol
//! and vetoed, with every rule that fired named in the reason, if:
//!
//! - **session open**: fewer than `open-bars` bars have passed since a
//!   session start (the start bar itself is bar 0), when prices are still
//!   finding their level;
//! - **weekly close**: the bar is at most `close-bars` × the median spacing
//!   before the weekly close `week-close` (the position could not be held
//!   over the weekend without the gap risk);
//! - **gap**: the bar opened more than `gap-atr` × ATR([`ATR_PERIOD`]) away
//!   from the previous close (the ATR as of the bar before, so a gap does
//!   not widen its own yardstick).
//!
//! Otherwise, and while a rule lacks what it needs (no session start seen
//! yet, fewer than [`MIN_SPACINGS`] spacings, the ATR warming up), the plan
//! passes. The first bar of a stream is not a session start: where a stream
//! begins says nothing about the market.
//!
//! Settings: `open-bars` (2), `close-bars` (2), `week-close` ("5 21": ISO
//! weekday 1 = Monday .. 7 = Sunday, and hour UTC; "none" turns the rule
//! off; the default is Friday 21:00, the FX close in northern summer),
//! `gap-factor` (3.0), `gap-atr` (1.0). `open-bars` or `close-bars` 0
//! turns that rule off.
//!
//! Invariants: exactly one verdict per scored plan, published when it
//! arrives, keyed by its id; only bars already seen are used (no
//! look-ahead); bars with a non-finite price, or not later than the
//! previous bar of their symbol, are ignored; memory per symbol is bounded.

use std::collections::BTreeMap;

use garden_sdk::curation::{Verdicts, figure};
use garden_sdk::indicators::{Atr, RollingStats};
use garden_sdk::{
    Bar, Body, Curation, Envelope, Info, InitContext, Module, Outbox, Plan, Subscription, Timestamp,
};

/// Bars of the ATR that measures a gap (Wilder's usual 14).
pub const ATR_PERIOD: usize = 14;

/// Spacings the median spacing is taken over.
pub const SPACING_WINDOW: usize = 50;

/// Spacings needed before the median is trusted: the median of fewer is
/// one odd spacing away from wrong.
pub const MIN_SPACINGS: usize = 3;

/// Milliseconds in an hour.
const MS_PER_HOUR: i64 = 3_600_000;

/// Milliseconds in a day.
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// Milliseconds in a week.
const MS_PER_WEEK: i64 = 7 * MS_PER_DAY;

/// 1970-01-01 was a Thursday: the epoch is this many days into its ISO
/// week (which starts on Monday).
const EPOCH_DAYS_INTO_WEEK: i64 = 3;

/// Days in a week, and the highest ISO weekday.
const DAYS_PER_WEEK: u8 = 7;

/// Hours in a day: an hour of the day is below it.
const HOURS_PER_DAY: u8 = 24;

/// Short names of the ISO weekdays, Monday first.
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The `week-close` setting's default: Friday 21:00 UTC.
const DEFAULT_WEEK_CLOSE: &str = "5 21";

/// The `week-close` value that turns the rule off.
const NO_WEEK_CLOSE: &str = "none";

/// Most bars accepted for `open-bars` and `close-bars`.
const MAX_BARS: f64 = 10_000.0;

/// `gap-factor` must be above this: at 1, every bar a little late would
/// start a session.
const MIN_GAP_FACTOR: f64 = 1.0;

/// Largest `gap-factor` and `gap-atr` accepted.
const MAX_FACTOR: f64 = 1_000.0;

/// A weekly close: an ISO weekday (1 = Monday) and an hour, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeekClose {
    /// ISO weekday, 1 = Monday .. 7 = Sunday.
    pub weekday: u8,
    /// Hour of the day, 0..=23, UTC.
    pub hour: u8,
}

impl WeekClose {
    /// Reads `"D H"`, or `"none"` for no weekly close.
    pub fn parse(text: &str) -> Result<Option<WeekClose>, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case(NO_WEEK_CLOSE) {
            return Ok(None);
        }
        let refuse = || {
            format!(
                "week-close must be \"D H\" (ISO weekday D in 1..={DAYS_PER_WEEK}, 1 = Monday; \
                 hour H in 0..={} UTC) or \"{NO_WEEK_CLOSE}\", got \"{text}\"",
                HOURS_PER_DAY - 1
            )
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [day, hour] = parts.as_slice() else {
            return Err(refuse());
        };
        let (Ok(weekday), Ok(hour)) = (day.parse::<u8>(), hour.parse::<u8>()) else {
            return Err(refuse());
        };
        if !(1..=DAYS_PER_WEEK).contains(&weekday) || hour >= HOURS_PER_DAY {
            return Err(refuse());
        }
        Ok(Some(WeekClose { weekday, hour }))
    }

    /// Milliseconds from Monday 00:00 UTC to the close.
    fn offset(self) -> i64 {
        i64::from(self.weekday - 1) * MS_PER_DAY + i64::from(self.hour) * MS_PER_HOUR
    }

    /// Milliseconds from `time` to the first close at or after it.
    pub fn until(self, time: Timestamp) -> i64 {
        (self.offset() - week_offset(time)).rem_euclid(MS_PER_WEEK)
    }
}

impl std::fmt::Display for WeekClose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let day = WEEKDAYS[usize::from(self.weekday - 1) % WEEKDAYS.len()];
        write!(f, "{day} {:02}:00 UTC", self.hour)
    }
}

/// Milliseconds since the Monday 00:00 UTC before `time`. Reduced modulo
/// the week before the epoch's offset is added, so no timestamp overflows.
pub fn week_offset(time: Timestamp) -> i64 {
    (time.rem_euclid(MS_PER_WEEK) + EPOCH_DAYS_INTO_WEEK * MS_PER_DAY).rem_euclid(MS_PER_WEEK)
}

/// The rules' settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Veto the first this many bars of a session (0: off).
    pub open_bars: u32,
    /// Veto this many median spacings before the weekly close (0: off).
    pub close_bars: u32,
    /// The weekly close, if the market has one.
    pub week_close: Option<WeekClose>,
    /// A spacing above this many median spacings starts a session.
    pub gap_factor: f64,
    /// Veto an open farther than this many ATRs from the previous close.
    pub gap_atr: f64,
}

/// The latest bar of a symbol, as the rules read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latest {
    /// Its time.
    pub time: Timestamp,
    /// Bars since the latest session start (0 on the start bar); none
    /// while no session start has been seen.
    pub since_start: Option<u32>,
    /// The median spacing of the symbol's bars, ms, once
    /// [`MIN_SPACINGS`] are known.
    pub spacing: Option<f64>,
    /// |open − previous close|; none on the symbol's first bar.
    pub gap: Option<f64>,
    /// The ATR as of the bar before; none while it warms up.
    pub atr: Option<f64>,
}

impl Rules {
    /// Why a plan entering after `latest` is vetoed: one reason per rule
    /// that fires, none to pass.
    pub fn vetoes(&self, latest: &Latest) -> Vec<String> {
        let mut why = Vec::new();
        if let Some(n) = latest.since_start
            && n < self.open_bars
        {
            why.push(format!(
                "bar {n} of a session opened after a gap (the first {} are left alone)",
                self.open_bars
            ));
        }
        if let (Some(close), Some(spacing)) = (self.week_close, latest.spacing) {
            let until = close.until(latest.time);
            if self.close_bars > 0 && until as f64 <= f64::from(self.close_bars) * spacing {
                why.push(format!(
                    "{:.1} h before the weekly close ({close}), within {} bars of {:.0} min",
                    until as f64 / MS_PER_HOUR as f64,
                    self.close_bars,
                    spacing / (MS_PER_HOUR as f64 / 60.0)
                ));
            }
        }
        if let (Some(gap), Some(atr)) = (latest.gap, latest.atr)
            && gap > self.gap_atr * atr
        {
            why.push(format!(
                "opened {} from the previous close, over {} × ATR {}",
                figure(gap),
                self.gap_atr,
                figure(atr)
            ));
        }
        why
    }
}

/// What is kept of one symbol.
struct Track {
    last_time: Timestamp,
    last_close: f64,
    /// Spacings between its bars, ms.
    spacings: RollingStats,
    atr: Atr,
    latest: Latest,
}

/// The curator's state.
pub struct TimingCurator {
    verdicts: Verdicts,
    rules: Rules,
    /// By symbol; BTreeMap so nothing depends on hash order.
    tracks: BTreeMap<String, Track>,
}

impl TimingCurator {
    /// Takes in one bar of its symbol.
    fn on_bar(&mut self, bar: &Bar) {
        let prices = [bar.open, bar.high, bar.low, bar.close];
        if !prices.iter().all(|p| p.is_finite()) {
            return;
        }
        let Some(t) = self.tracks.get_mut(&bar.symbol) else {
            let mut atr = Atr::new(ATR_PERIOD);
            atr.update(bar.high, bar.low, bar.close);
            let first = Track {
                last_time: bar.time,
                last_close: bar.close,
                spacings: RollingStats::new(SPACING_WINDOW),
                atr,
                latest: Latest {
                    time: bar.time,
                    since_start: None,
                    spacing: None,
                    gap: None,
                    atr: None,
                },
            };
            self.tracks.insert(bar.symbol.clone(), first);
            return;
        };
        // A repeated or out-of-order bar has no spacing to learn from and
        // must not become the latest.
        let Some(spacing) = bar.time.checked_sub(t.last_time).filter(|s| *s > 0) else {
            return;
        };
        let spacing = spacing as f64;
        let median = |s: &RollingStats| {
            if s.len() >= MIN_SPACINGS {
                s.median()
            } else {
                None
            }
        };
        let starts = median(&t.spacings).is_some_and(|m| spacing > self.rules.gap_factor * m);
        t.spacings.push(spacing);
        let since_start = if starts {
            Some(0)
        } else {
            t.latest.since_start.map(|n| n.saturating_add(1))
        };
        let atr_before = t.atr.value();
        t.atr.update(bar.high, bar.low, bar.close);
        t.latest = Latest {
            time: bar.time,
            since_start,
            spacing: median(&t.spacings),
            gap: Some((bar.open - t.last_close).abs()),
            atr: atr_before,
        };
        t.last_time = bar.time;
        t.last_close = bar.close;
    }

    /// The verdict on one plan, against the latest bar of its symbol.
    pub fn judge(&self, plan: &Plan) -> Curation {
        let Some(t) = self.tracks.get(&plan.symbol) else {
            return self
                .verdicts
                .pass(&plan.id, &format!("no bar of {} yet", plan.symbol));
        };
        let why = self.rules.vetoes(&t.latest);
        if why.is_empty() {
            self.verdicts.pass(&plan.id, "inside the session, no gap")
        } else {
            self.verdicts.veto(&plan.id, &why.join("; "))
        }
    }
}

/// A setting that is a whole number of bars in 0..=[`MAX_BARS`].
fn bars(ctx: &InitContext, name: &str, default: f64) -> Result<u32, String> {
    Ok(ctx.setting_whole(name, default, 0.0..=MAX_BARS)? as u32)
}

impl Module for TimingCurator {
    fn describe() -> Info {
        Info::new("curator-timing", env!("CARGO_PKG_VERSION"), "curator")
            .subscribe(Subscription::broadcast("bar"))
            .subscribe(Subscription::shared("scored"))
            .publishes("curation")
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        let gap_factor = ctx.setting_f64("gap-factor", 3.0)?;
        if !(gap_factor > MIN_GAP_FACTOR && gap_factor <= MAX_FACTOR) {
            return Err(format!(
                "gap-factor must be above {MIN_GAP_FACTOR} and at most {MAX_FACTOR}, got {gap_factor}"
            ));
        }
        let gap_atr = ctx.setting_f64("gap-atr", 1.0)?;
        if !(0.0..=MAX_FACTOR).contains(&gap_atr) {
            return Err(format!(
                "gap-atr must be in 0..={MAX_FACTOR}, got {gap_atr}"
            ));
        }
        let rules = Rules {
            open_bars: bars(&ctx, "open-bars", 2.0)?,
            close_bars: bars(&ctx, "close-bars", 2.0)?,
            week_close: WeekClose::parse(ctx.setting("week-close").unwrap_or(DEFAULT_WEEK_CLOSE))?,
            gap_factor,
            gap_atr,
        };
        Ok(TimingCurator {
            verdicts: Verdicts::by(&ctx.instance),
            rules,
            tracks: BTreeMap::new(),
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        match &msg.body {
            Body::Bar(bar) => self.on_bar(bar),
            Body::Scored(scored) => {
                let verdict = self.judge(&scored.plan);
                out.publish("curation", &scored.plan.id, Body::Curation(verdict));
            }
            _ => {}
        }
        Ok(())
    }
}

garden_sdk::export_module!(TimingCurator);

#[cfg(test)]
mod tests {
    use super::*;
    use garden_sdk::{CuratorAction, ScoredPlan, Side};

    /// 2024-01-01 00:00 UTC, a Monday.
    const MONDAY: Timestamp = 1_704_067_200_000;

    /// Hours into the week of [`MONDAY`]: Friday 19:00 is 4 × 24 + 19.
    fn at(hours: i64) -> Timestamp {
        MONDAY + hours * MS_PER_HOUR
    }

    const FRI: i64 = 4 * 24;
    const SUN: i64 = 6 * 24;

    fn curator(settings: &[(&str, &str)]) -> Result<TimingCurator, String> {
        TimingCurator::init(garden_sdk::testing::context("curator-timing", settings))
    }

    fn msg(body: Body) -> Envelope {
        garden_sdk::testing::message("s", "X", body)
    }

    /// A bar of X at `hour` opening at `open` and closing at 1.0, with a
    /// range of 0.002 around the close (so the ATR of quiet bars is 0.002).
    fn bar(c: &mut TimingCurator, hour: i64, open: f64) {
        let b = Bar {
            symbol: "X".into(),
            time: at(hour),
            open,
            high: 1.001_f64.max(open),
            low: 0.999_f64.min(open),
            close: 1.0,
            volume: 1.0,
        };
        c.on_message(&msg(Body::Bar(b)), &mut Outbox::new())
            .unwrap();
    }

    /// Quiet hourly bars (open = previous close) over `hours`.
    fn quiet(c: &mut TimingCurator, hours: std::ops::RangeInclusive<i64>) {
        for h in hours {
            bar(c, h, 1.0);
        }
    }

    fn plan() -> Plan {
        Plan {
            id: "p".into(),
            origin: "a".into(),
            symbol: "X".into(),
            side: Side::Long,
            entry: 1.0,
            stop: 0.99,
            target: 1.02,
            size: 1.0,
            horizon: 5,
            confidence: 0.6,
            time: 0,
        }
    }

    /// The action and reason for a plan on X now.
    fn verdict(c: &TimingCurator) -> (CuratorAction, String) {
        let v = c.judge(&plan());
        (v.action, v.reason)
    }

    #[test]
    fn the_week_is_counted_from_a_thursday_epoch() {
        let fri_21 = WeekClose {
            weekday: 5,
            hour: 21,
        };
        let table = [
            // (time, ms until Friday 21:00)
            (0, 45 * MS_PER_HOUR), // Thursday 1970-01-01 00:00
            (at(FRI + 19), 2 * MS_PER_HOUR),
            (at(FRI + 21), 0),
            (at(FRI + 22), MS_PER_WEEK - MS_PER_HOUR),
            (at(SUN + 22), 4 * 24 * MS_PER_HOUR + 23 * MS_PER_HOUR),
            (-MS_PER_DAY, 2 * MS_PER_DAY + 21 * MS_PER_HOUR), // a Wednesday
        ];
        for (time, want) in table {
            assert_eq!(fri_21.until(time), want, "time {time}");
        }
        assert_eq!(week_offset(MONDAY), 0);
        assert_eq!(fri_21.to_string(), "Fri 21:00 UTC");
    }

    #[test]
    fn mid_week_bars_pass() {
        let mut c = curator(&[]).unwrap();
        quiet(&mut c, 0..=60);
        assert_eq!(verdict(&c).0, CuratorAction::Pass);
    }

    #[test]
    fn friday_evening_is_vetoed_by_the_weekly_close_alone() {
        // Thursday 18:00 to Friday 18:00 (3 h before the close): passes.
        let mut c = curator(&[]).unwrap();
        quiet(&mut c, FRI - 6..=FRI + 18);
        assert_eq!(verdict(&c).0, CuratorAction::Pass);
        // Friday 19:00, 2 bars before the close: vetoed, for that only.
        quiet(&mut c, FRI + 19..=FRI + 19);
        let (action, reason) = verdict(&c);
        assert_eq!(action, CuratorAction::Veto);
        assert!(
            reason.contains("2.0 h before the weekly close (Fri 21:00 UTC)"),
            "{reason}"
        );
        assert!(!reason.contains(';'), "one rule only: {reason}");
        // Without a weekly close, or with close-bars 0, it passes.
        for off in [("week-close", "none"), ("close-bars", "0")] {
            let mut c = curator(&[off]).unwrap();
            quiet(&mut c, FRI - 6..=FRI + 20);
            assert_eq!(verdict(&c).0, CuratorAction::Pass, "{off:?}");
        }
        // A Sunday close moves the rule.
        let mut c = curator(&[("week-close", "7 23")]).unwrap();
        quiet(&mut c, FRI - 6..=FRI + 20);
        assert_eq!(verdict(&c).0, CuratorAction::Pass);
    }

    #[test]
    fn the_first_bars_after_the_weekend_gap_are_vetoed_alone() {
        let mut c = curator(&[]).unwrap();
        quiet(&mut c, FRI - 6..=FRI + 20);
        let expected = [
            (SUN + 22, CuratorAction::Veto, "bar 0 of a session"),
            (SUN + 23, CuratorAction::Veto, "bar 1 of a session"),
            (SUN + 24, CuratorAction::Pass, "inside the session"),
            (SUN + 25, CuratorAction::Pass, "inside the session"),
        ];
        for (hour, action, why) in expected {
            bar(&mut c, hour, 1.0);
            let (got, reason) = verdict(&c);
            assert_eq!(got, action, "hour {hour}: {reason}");
            assert!(reason.starts_with(why), "hour {hour}: {reason}");
            assert!(!reason.contains(';'), "one rule only: {reason}");
        }
        // open-bars 0 lets the Sunday open through.
        let mut c = curator(&[("open-bars", "0")]).unwrap();
        quiet(&mut c, FRI - 6..=FRI + 20);
        bar(&mut c, SUN + 22, 1.0);
        assert_eq!(verdict(&c).0, CuratorAction::Pass);
    }

    #[test]
    fn a_gappy_open_is_vetoed_alone_and_a_small_one_passes() {
        let table = [
            // (open after quiet bars with ATR 0.002, action)
            (1.01, CuratorAction::Veto),
            (0.99, CuratorAction::Veto),
            (1.0021, CuratorAction::Veto),
            (1.0019, CuratorAction::Pass),
            (1.0, CuratorAction::Pass),
        ];
        for (open, action) in table {
            let mut c = curator(&[]).unwrap();
            quiet(&mut c, 0..=40);
            bar(&mut c, 41, open);
            let (got, reason) = verdict(&c);
            assert_eq!(got, action, "open {open}: {reason}");
            if action == CuratorAction::Veto {
                assert!(reason.starts_with("opened "), "{reason}");
                assert!(reason.contains("ATR 0.00200"), "{reason}");
                assert!(!reason.contains(';'), "one rule only: {reason}");
            }
        }
        // Before the ATR is warm nothing is measured.
        let mut c = curator(&[]).unwrap();
        quiet(&mut c, 0..=5);
        bar(&mut c, 6, 1.05);
        assert_eq!(verdict(&c).0, CuratorAction::Pass);
    }

    #[test]
    fn rules_that_fire_together_are_all_named() {
        // A gappy Sunday open: session start and gap.
        let mut c = curator(&[]).unwrap();
        quiet(&mut c, FRI - 20..=FRI + 20);
        bar(&mut c, SUN + 22, 1.01);
        let (action, reason) = verdict(&c);
        assert_eq!(action, CuratorAction::Veto);
        assert!(
            reason.contains("bar 0 of a session") && reason.contains("opened "),
            "{reason}"
        );
    }

    #[test]
    fn the_stream_start_is_no_session_and_bad_bars_are_ignored() {
        let mut c = curator(&[]).unwrap();
        assert_eq!(verdict(&c).0, CuratorAction::Pass, "no bars yet");
        quiet(&mut c, 0..=0);
        assert_eq!(verdict(&c).0, CuratorAction::Pass, "first bar");
        quiet(&mut c, 1..=FRI + 18);
        // A NaN bar, a repeated bar and one from the past change nothing:
        // the latest bar stays Friday 18:00, which passes.
        bar(&mut c, FRI + 19, f64::NAN);
        bar(&mut c, FRI + 18, 1.5);
        bar(&mut c, FRI + 10, 1.0);
        assert_eq!(verdict(&c).0, CuratorAction::Pass);
        // Another symbol's bars are its own.
        let other = Bar {
            symbol: "Y".into(),
            time: at(FRI + 20),
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 1.0,
        };
        c.on_message(&msg(Body::Bar(other)), &mut Outbox::new())
            .unwrap();
        assert_eq!(verdict(&c).0, CuratorAction::Pass);
    }

    #[test]
    fn each_scored_plan_gets_one_verdict_keyed_by_its_id() {
        let mut c = curator(&[]).unwrap();
        let mut out = Outbox::new();
        quiet(&mut c, 0..=3);
        let scored = ScoredPlan {
            plan: Plan {
                id: "plan-9".into(),
                ..plan()
            },
            prior_log_odds: 0.0,
            log_odds: 0.0,
            confidence: 0.6,
            experts: vec![],
            missing: vec![],
            confirmed: true,
            curation: vec![],
        };
        c.on_message(&msg(Body::Scored(scored)), &mut out).unwrap();
        assert_eq!(out.messages().len(), 1);
        assert_eq!(out.messages()[0].topic, "curation");
        assert_eq!(out.messages()[0].key, "plan-9");
        assert!(matches!(&out.messages()[0].body, Body::Curation(v) if v.plan_id == "plan-9"));
    }

    /// Settings as (name, value) pairs.
    type Pairs = &'static [(&'static str, &'static str)];

    #[test]
    fn settings_out_of_range_are_refused_by_name() {
        let table: [(Pairs, Option<&str>); 10] = [
            (&[], None),
            (&[("week-close", "NONE"), ("open-bars", "0")], None),
            (&[("week-close", "8 21")], Some("week-close")),
            (&[("week-close", "5 24")], Some("week-close")),
            (&[("week-close", "friday")], Some("week-close")),
            (&[("open-bars", "1.5")], Some("open-bars")),
            (&[("close-bars", "-1")], Some("close-bars")),
            (&[("gap-factor", "1")], Some("gap-factor")),
            (&[("gap-atr", "-0.1")], Some("gap-atr")),
            (&[("gap-atr", "x")], Some("gap-atr")),
        ];
        for (settings, bad) in table {
            match (curator(settings), bad) {
                (Ok(_), None) => {}
                (Err(e), Some(name)) => assert!(e.contains(name), "{e}"),
                (Ok(_), Some(name)) => panic!("{name} accepted in {settings:?}"),
                (Err(e), None) => panic!("{settings:?} refused: {e}"),
            }
        }
    }
}
