"""{{name}}'s logic under plain pytest (no Wasm)."""

import garden_sdk as garden
from garden_sdk import Bar, Body_Bar, GeneValue_Int, InitContext, Param

from app import {{class}}


def test_sends_every_nth_bar():
    m = {{class}}(garden.Context(InitContext("t", 0, [Param("every", GeneValue_Int(2))], [], None)))
    sent = 0
    for i in range(10):
        out = garden.Outbox()
        body = Body_Bar(Bar("X", i, 1.0, 1.0, 1.0, 1.0, 1.0))
        m.on_message(garden.Envelope("bar", "X", i, i, "feed", body), out)
        sent += len(out.messages)
    assert sent == 5
