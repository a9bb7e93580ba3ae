"""{{name}}: a garden module. It counts bars and, every `every` of them,
sends the bar on `{{name}}-count`."""

import garden_sdk as garden
from garden_sdk import Body_Bar


class {{class}}(garden.Module):
    """One variant's state."""

    @staticmethod
    def describe() -> garden.Info:
        return (
            garden.info("{{name}}", "0.1.0", "example")
            .subscribe(garden.broadcast("bar"))
            .publishes("{{name}}-count")
            .gene(garden.int_gene("every", 1.0, 1000.0, 100.0, 10.0))
        )

    def __init__(self, ctx: garden.Context) -> None:
        self.every = max(ctx.int("every"), 1)
        self.seen = 0

    def on_message(self, msg: garden.Envelope, out: garden.Outbox) -> None:
        if isinstance(msg.body, Body_Bar):
            self.seen += 1
            if self.seen % self.every == 0:
                out.publish("{{name}}-count", msg.body.value.symbol, msg.body)


Module = garden.export({{class}})
