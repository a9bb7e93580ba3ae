//! sma-cross: a plan when the fast simple moving average crosses the slow
//! one, with stop and target in ATRs.
//!
//! The same module is written in Python (`modules/py-sma-cross`) and in
//! JavaScript (`modules/js-sma-cross`), operation for operation; a test
//! holds the three to the same plans on the bundled data. It is the
//! reference an author in another language compares against.

use garden_sdk::indicators::{Atr, Sma};
use garden_sdk::{
    Body, Envelope, Gene, Info, InitContext, Module, Outbox, Plan, Side, Subscription,
};

/// ATR period of the stop and target.
const ATR_PERIOD: usize = 14;

/// One variant's state.
pub struct SmaCross {
    instance: String,
    fast: Sma,
    slow: Sma,
    atr: Atr,
    stop_atr: f64,
    target_atr: f64,
    horizon: u32,
    size: f64,
    /// Whether fast was above slow on the previous bar, once both exist.
    above: Option<bool>,
    next_id: u64,
}

fn period(ctx: &InitContext, name: &str) -> Result<usize, String> {
    usize::try_from(ctx.int(name)?)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{name} must be at least 1"))
}

impl Module for SmaCross {
    fn describe() -> Info {
        Info::new("sma-cross", env!("CARGO_PKG_VERSION"), "alpha")
            .subscribe(Subscription::broadcast("bar"))
            .publishes("plan")
            .gene(Gene::int("fast", 2.0, 50.0, 10.0, 3.0))
            .gene(Gene::int("slow", 5.0, 200.0, 30.0, 10.0))
            .gene(Gene::float("stop-atr", 0.5, 5.0, 2.0, 0.3))
            .gene(Gene::float("target-atr", 0.5, 10.0, 3.0, 0.5))
            .gene(Gene::int("horizon", 1.0, 200.0, 24.0, 6.0))
            .gene(Gene::float("size", 1.0, 100000.0, 10000.0, 1000.0))
            .cohort(256)
    }

    fn init(ctx: InitContext) -> Result<Self, String> {
        Ok(SmaCross {
            fast: Sma::new(period(&ctx, "fast")?),
            slow: Sma::new(period(&ctx, "slow")?),
            atr: Atr::new(ATR_PERIOD),
            stop_atr: ctx.float("stop-atr")?,
            target_atr: ctx.float("target-atr")?,
            horizon: u32::try_from(ctx.int("horizon")?).map_err(|e| format!("horizon: {e}"))?,
            size: ctx.float("size")?,
            instance: ctx.instance,
            above: None,
            next_id: 0,
        })
    }

    fn on_message(&mut self, msg: &Envelope, out: &mut Outbox) -> Result<(), String> {
        let Body::Bar(bar) = &msg.body else {
            return Ok(());
        };
        let fast = self.fast.update(bar.close);
        let slow = self.slow.update(bar.close);
        let atr = self.atr.update(bar.high, bar.low, bar.close);
        let (Some(fast), Some(slow), Some(atr)) = (fast, slow, atr) else {
            return Ok(());
        };
        let above = fast > slow;
        let crossed = self.above.is_some_and(|was| was != above);
        self.above = Some(above);
        if !crossed || atr <= 0.0 {
            return Ok(());
        }
        let s = if above { 1.0 } else { -1.0 };
        self.next_id += 1;
        let plan = Plan {
            id: format!("{}-{}", self.instance, self.next_id),
            origin: self.instance.clone(),
            symbol: bar.symbol.clone(),
            side: if above { Side::Long } else { Side::Short },
            entry: bar.close,
            stop: bar.close - s * self.stop_atr * atr,
            target: bar.close + s * self.target_atr * atr,
            size: self.size,
            horizon: self.horizon,
            confidence: 0.5,
            time: bar.time,
        };
        let key = plan.id.clone();
        out.publish("plan", &key, Body::Plan(plan));
        Ok(())
    }
}

garden_sdk::export_module!(SmaCross);
