"""sma-cross in Python: a plan when the fast simple moving average crosses
the slow one, with stop and target in ATRs.

The same module as the Rust `modules/sma-cross` and the JavaScript
`modules/js-sma-cross`, operation for operation; a test holds the three to
the same plans on the bundled data.
"""

import garden_sdk as garden
from garden_sdk import Body_Bar, Body_Plan, Plan, Side
from garden_sdk.indicators import Atr, Sma


class SmaCross(garden.Module):
    """One variant: two SMAs, an ATR, a plan per cross."""

    @staticmethod
    def describe() -> garden.Info:
        return (
            garden.info("py-sma-cross", "0.1.0", "alpha")
            .subscribe(garden.broadcast("bar"))
            .publishes("plan")
            .gene(garden.int_gene("fast", 2.0, 50.0, 10.0, 3.0))
            .gene(garden.int_gene("slow", 5.0, 200.0, 30.0, 10.0))
            .gene(garden.float_gene("stop-atr", 0.5, 5.0, 2.0, 0.3))
            .gene(garden.float_gene("target-atr", 0.5, 10.0, 3.0, 0.5))
            .gene(garden.int_gene("horizon", 1.0, 200.0, 24.0, 6.0))
            .gene(garden.float_gene("size", 1.0, 100000.0, 10000.0, 1000.0))
            .cohort(256)
        )

    def __init__(self, ctx: garden.Context) -> None:
        self.instance = ctx.instance
        self.fast = Sma(ctx.int("fast"))
        self.slow = Sma(ctx.int("slow"))
        self.atr = Atr(14)
        self.stop_atr = ctx.float("stop-atr")
        self.target_atr = ctx.float("target-atr")
        self.horizon = ctx.int("horizon")
        self.size = ctx.float("size")
        self.above = None
        self.next_id = 0

    def on_message(self, msg: garden.Envelope, out: garden.Outbox) -> None:
        if not isinstance(msg.body, Body_Bar):
            return
        bar = msg.body.value
        fast = self.fast.update(bar.close)
        slow = self.slow.update(bar.close)
        atr = self.atr.update(bar.high, bar.low, bar.close)
        if fast is None or slow is None or atr is None:
            return
        above = fast > slow
        crossed = self.above is not None and self.above != above
        self.above = above
        if not crossed or atr <= 0.0:
            return
        s = 1.0 if above else -1.0
        self.next_id += 1
        plan = Plan(
            id=f"{self.instance}-{self.next_id}",
            origin=self.instance,
            symbol=bar.symbol,
            side=Side.LONG if above else Side.SHORT,
            entry=bar.close,
            stop=bar.close - s * self.stop_atr * atr,
            target=bar.close + s * self.target_atr * atr,
            size=self.size,
            horizon=self.horizon,
            confidence=0.5,
            time=bar.time,
        )
        out.publish("plan", plan.id, Body_Plan(plan))


Module = garden.export(SmaCross)
