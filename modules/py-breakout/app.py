"""A breakout alpha, in Python: a plan when the close leaves the range of
the previous `window` bars, with stop and target in ATRs.

Another family than alpha-ema's trend crossover, written with the Python
SDK (guest-sdk/python). Built with componentize-py:

    componentize-py -d ../../wit -w garden-module componentize app \
        -p . -p ../../guest-sdk/python --stub-wasi -o py-breakout.wasm
"""

from collections import deque

import garden_sdk as garden
from garden_sdk import Body_Bar, Body_Plan, Plan, Side
from garden_sdk.indicators import Atr


class Breakout(garden.Module):
    """One variant: the last `window` highs and lows, an ATR, a plan per breakout."""

    @staticmethod
    def describe() -> garden.Info:
        return (
            garden.info("py-breakout", "0.1.0", "alpha")
            .subscribe(garden.broadcast("bar"))
            .publishes("plan")
            .gene(garden.int_gene("window", 5.0, 100.0, 20.0, 5.0))
            .gene(garden.float_gene("stop-atr", 0.5, 5.0, 2.0, 0.3))
            .gene(garden.float_gene("target-atr", 0.5, 10.0, 3.0, 0.5))
            .gene(garden.int_gene("horizon", 1.0, 200.0, 24.0, 6.0))
            .gene(garden.float_gene("size", 1.0, 100000.0, 10000.0, 1000.0))
            .cohort(256)
        )

    def __init__(self, ctx: garden.Context) -> None:
        self.instance = ctx.instance
        self.window = ctx.int("window")
        if self.window < 1:
            raise ValueError("window must be at least 1")
        self.stop_atr = ctx.float("stop-atr")
        self.target_atr = ctx.float("target-atr")
        self.horizon = ctx.int("horizon")
        self.size = ctx.float("size")
        self.highs = deque(maxlen=self.window)
        self.lows = deque(maxlen=self.window)
        self.atr = Atr(14)
        self.side = None  # the side of the breakout in progress, if any
        self.next_id = 0

    def on_message(self, msg: garden.Envelope, out: garden.Outbox) -> None:
        if not isinstance(msg.body, Body_Bar):
            return
        bar = msg.body.value
        atr = self.atr.update(bar.high, bar.low, bar.close)
        full = len(self.highs) == self.window
        side = None
        if full and bar.close > max(self.highs):
            side = Side.LONG
        elif full and bar.close < min(self.lows):
            side = Side.SHORT
        self.highs.append(bar.high)
        self.lows.append(bar.low)
        fresh = side is not None and side != self.side
        self.side = side
        if not fresh or atr is None or atr <= 0.0:
            return
        s = 1.0 if side == Side.LONG else -1.0
        self.next_id += 1
        plan = Plan(
            id=f"{self.instance}-{self.next_id}",
            origin=self.instance,
            symbol=bar.symbol,
            side=side,
            entry=bar.close,
            stop=bar.close - s * self.stop_atr * atr,
            target=bar.close + s * self.target_atr * atr,
            size=self.size,
            horizon=self.horizon,
            confidence=0.5,
            time=bar.time,
        )
        out.publish("plan", plan.id, Body_Plan(plan))


Module = garden.export(Breakout)
