"""py-breakout's logic, natively: a plan on a breakout, none inside the range."""

import garden_sdk as garden
from garden_sdk import Bar, Body_Bar, GeneValue_Float, GeneValue_Int, InitContext, Param, Side

from app import Breakout


def variant(window=5):
    genes = Breakout.describe().wit.genes
    params = [
        Param(g.name, GeneValue_Int(int(g.default)) if g.kind.name == "INT" else GeneValue_Float(g.default))
        for g in genes
    ]
    params[0] = Param("window", GeneValue_Int(window))
    return Breakout(garden.Context(InitContext("b1", 0, params, [], None)))


def feed(module, closes):
    plans = []
    for i, c in enumerate(closes):
        out = garden.Outbox()
        body = Body_Bar(Bar("EURUSD", i * 3_600_000, c, c + 0.5, c - 0.5, c, 1.0))
        module.on_message(garden.Envelope("bar", "EURUSD", i, i * 3_600_000, "feed", body), out)
        plans.extend(o.body.value for o in out.messages)
    return plans


def test_a_breakout_up_and_down_writes_one_plan_each():
    flat = [100.0] * 20
    plans = feed(variant(), flat + [103.0, 104.0, 105.0] + [100.0] * 5 + [95.0])
    assert [p.side for p in plans] == [Side.LONG, Side.SHORT]
    long = plans[0]
    assert long.stop < long.entry < long.target
    assert long.origin == "b1" and long.id == "b1-1"


def test_no_plan_inside_the_range():
    assert feed(variant(), [100.0 + (i % 3) * 0.1 for i in range(60)]) == []
