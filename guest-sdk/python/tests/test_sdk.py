"""The Python SDK without Wasm: indicators, the export glue, the outbox."""

import math

import garden_sdk as garden
from garden_sdk import (
    Bar,
    Batch,
    Body_Bar,
    Body_Plan,
    GeneValue_Float,
    GeneValue_Int,
    InitContext,
    Param,
)
from garden_sdk.indicators import Atr, Ema, Macd, Rsi, Sma
from wit_world.imports.types import Envelope as WitEnvelope
from componentize_py_types import Err, Ok
import pytest


def bar(i, close):
    return Bar("EURUSD", i * 3_600_000, close, close + 1.0, close - 1.0, close, 10.0)


def test_ema_seeds_with_the_mean_then_smooths():
    e = Ema(3)
    assert e.update(1.0) is None and e.update(2.0) is None
    assert e.update(3.0) == 2.0
    assert e.update(4.0) == pytest.approx(2.0 + 0.5 * 2.0)


def test_sma_rsi_atr_macd_warm_up_then_give_values():
    s, r, a, m = Sma(3), Rsi(3), Atr(3), Macd(2, 3, 2)
    closes = [1.0, 2.0, 3.0, 2.0, 4.0, 5.0, 4.0]
    for c in closes:
        s.update(c), r.update(c), a.update(c + 1, c - 1, c), m.update(c)
    assert s.value == pytest.approx((5.0 + 4.0 + 4.0) / 3)
    assert 0.0 < r.value < 100.0
    assert a.value > 2.0
    assert m.value is not None and math.isclose(m.value.histogram, m.value.macd - m.value.signal)
    with pytest.raises(ValueError):
        Ema(0)


class Counter(garden.Module):
    """Counts bars; fails on a bar whose close is negative."""

    @staticmethod
    def describe():
        return (
            garden.info("counter", "0.1.0", "test")
            .subscribe(garden.broadcast("bar"))
            .publishes("count")
            .gene(garden.int_gene("every", 1.0, 10.0, 2.0, 1.0))
            .cohort(8)
        )

    def __init__(self, ctx):
        self.id = ctx.instance
        self.every = ctx.int("every")
        if self.every < 1:
            raise ValueError("every must be positive")
        self.seen = 0

    def on_message(self, msg, out):
        if msg.body.value.close < 0:
            raise RuntimeError("negative close")
        self.seen += 1
        if self.seen % self.every == 0:
            out.publish("count", msg.source, Body_Bar(msg.body.value))


def ctx(member, every, instance="c"):
    return InitContext(instance, member, [Param("every", GeneValue_Int(every))], [], None)


def env(topic, source, member, close):
    return WitEnvelope(topic, "k", 0, 1000, source, member, Body_Bar(bar(1, close)))


def test_the_export_keeps_state_across_export_objects_and_members():
    Export = garden.export(Counter)
    assert Export().describe().cohort == 8
    Export().init(ctx(0, 1, "a"))
    Export().init(ctx(2, 2, "b"))
    # A fresh export object per call, as componentize-py makes them.
    first = Export().on_messages(Batch(0, ["bar", "feed"], [env(0, 1, None, 5.0)]))
    assert [type(r) for r in first] == [Ok, Ok]
    assert [len(r.value) for r in first] == [1, 0], "member 0 every bar, member 2 every second"
    assert first[0].value[0].key == "feed", "the publisher's name, from the table"
    second = Export().on_messages(Batch(2, [], [env(0, 1, 2, 5.0), env(0, 1, 0, -1.0)]))
    assert type(second[0]) is Ok and len(second[0].value) == 1
    assert type(second[1]) is Err and "negative close" in second[1].value
    Export().leave(2)
    assert len(Export().on_messages(Batch(2, [], [env(0, 1, None, 5.0)]))) == 1
    with pytest.raises(Err):
        Export().init(ctx(1, 0))


def test_a_params_of_the_wrong_kind_is_refused_by_name():
    c = garden.Context(InitContext("x", 0, [Param("every", GeneValue_Float(1.5))], [], None))
    with pytest.raises(ValueError, match="every"):
        c.int("every")
    assert c.float("every") == 1.5
    assert c.setting_float("missing", 3.0) == 3.0


def test_a_python_curator_publishes_a_verdict_the_host_can_route():
    """The curation and intel records come straight from the WIT."""
    from garden_sdk import Body_Curation, Body_Intel, Curation, CuratorAction, Intel, Metric, NudgeTarget

    out = garden.Outbox()
    verdict = Curation("p1", "curator-py", CuratorAction.NUDGE, NudgeTarget.SIZE, -0.05, "thin edge")
    out.publish("curation", "p1", Body_Curation(verdict))
    out.publish("intel", "expert-x", Body_Intel(Intel("expert-x", "", [Metric("weight", 1.2)], 40)))
    sent = out.take()
    assert [o.topic for o in sent] == ["curation", "intel"]
    assert sent[0].body.value.action == CuratorAction.NUDGE
    assert sent[1].body.value.samples == 40
