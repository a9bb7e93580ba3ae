"""Write garden modules in Python.

A module is a class deriving from :class:`Module`; ``Module = export(MyModule)``
at the top of the app file turns it into the component's export (built with
componentize-py against ``wit/garden.wit``). The WIT records (``Bar``,
``Plan``, ``Body_Bar`` ...) come from the generated bindings and are
re-exported here. What the SDK hides:

* componentize-py makes a new export object for every call, so the module's
  state cannot live on it: the SDK keeps one instance of your class per
  variant (one, member 0, outside cohorts) in module-level state;
* the host hands messages in batches, with topic and publisher as numbers in
  a name table: the SDK keeps the table and calls :meth:`Module.on_message`
  once per message with names as strings;
* a raised exception fails that one message (the host dead-letters it with
  the exception's text); in ``__init__`` it refuses the parameters.

Module logic is testable with plain pytest: build an :class:`Envelope`, call
``on_message`` with an :class:`Outbox`, look at ``out.messages``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Type

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import *  # noqa: F401,F403  (the WIT records)
from wit_world.imports import types as wit

from . import indicators  # noqa: F401

__all__ = [
    "Context",
    "Envelope",
    "Info",
    "Module",
    "Outbox",
    "addressed",
    "boolean_gene",
    "broadcast",
    "export",
    "float_gene",
    "indicators",
    "info",
    "int_gene",
    "log",
    "now",
    "shared",
    "warn",
]


# --- what a module says about itself -------------------------------------


def broadcast(topic: str) -> wit.Subscription:
    """Every instance of the module receives every message on ``topic``."""
    return wit.Subscription(topic, wit.Delivery.BROADCAST, False)


def shared(topic: str) -> wit.Subscription:
    """Each message on ``topic`` goes to one instance (by key)."""
    return wit.Subscription(topic, wit.Delivery.SHARED, False)


def addressed(topic: str) -> wit.Subscription:
    """Only messages on ``topic`` whose key is this instance's id."""
    return wit.Subscription(topic, wit.Delivery.BROADCAST, True)


def float_gene(name: str, min: float, max: float, default: float, scale: float) -> wit.Gene:
    """A real-valued gene within [min, max]; ``scale`` is its mutation step."""
    return wit.Gene(name, wit.GeneKind.FLOAT, min, max, default, scale)


def int_gene(name: str, min: float, max: float, default: float, scale: float) -> wit.Gene:
    """An integer gene within [min, max]."""
    return wit.Gene(name, wit.GeneKind.INT, min, max, default, scale)


def boolean_gene(name: str, default: bool) -> wit.Gene:
    """A gene that is on or off."""
    return wit.Gene(name, wit.GeneKind.BOOLEAN, 0.0, 1.0, 1.0 if default else 0.0, 0.0)


class Info:
    """A module's description, built step by step:
    ``info("sma", "0.1.0", "alpha").subscribe(broadcast("bar")).publishes("plan")``."""

    def __init__(self, name: str, version: str, role: str) -> None:
        self.wit = wit.Info(name, version, role, [], [], [], 0)

    def subscribe(self, subscription: wit.Subscription) -> "Info":
        """Add a subscription."""
        self.wit.subscribes.append(subscription)
        return self

    def publishes(self, topic: str) -> "Info":
        """Declare a topic this module sends on; any other is refused."""
        self.wit.publishes.append(topic)
        return self

    def gene(self, gene: wit.Gene) -> "Info":
        """Declare a gene."""
        self.wit.genes.append(gene)
        return self

    def cohort(self, members: int) -> "Info":
        """Let one instance carry up to ``members`` variants (docs/cohorts.md)."""
        self.wit.cohort = members
        return self


def info(name: str, version: str, role: str) -> Info:
    """Start a module's description."""
    return Info(name, version, role)


# --- what a module gets ----------------------------------------------------


class Context:
    """Everything a variant learns when it starts: its id, its parameters
    (one per gene), its settings and the snapshot to start from."""

    def __init__(self, ctx: wit.InitContext) -> None:
        self.instance: str = ctx.instance
        self.member: int = ctx.member
        self.snapshot: Optional[wit.Snapshot] = ctx.snapshot
        self._params: Dict[str, Any] = {p.name: p.value for p in ctx.params}
        self._settings: Dict[str, str] = {s.name: s.value for s in ctx.settings}

    def _param(self, name: str) -> Any:
        if name not in self._params:
            raise ValueError(f"missing parameter `{name}`")
        return self._params[name]

    def float(self, name: str) -> float:
        """A gene's value as a float (any gene kind)."""
        value = self._param(name)
        if isinstance(value, wit.GeneValue_Boolean):
            return 1.0 if value.value else 0.0
        return float(value.value)

    def int(self, name: str) -> int:
        """An integer gene's value."""
        value = self._param(name)
        if not isinstance(value, wit.GeneValue_Int):
            raise ValueError(f"parameter `{name}` is not an integer")
        return int(value.value)

    def boolean(self, name: str) -> bool:
        """A boolean gene's value."""
        value = self._param(name)
        if not isinstance(value, wit.GeneValue_Boolean):
            raise ValueError(f"parameter `{name}` is not a boolean")
        return bool(value.value)

    def setting(self, name: str) -> Optional[str]:
        """A free-form setting from the pipeline file."""
        return self._settings.get(name)

    def setting_float(self, name: str, default: float) -> float:
        """A setting as a number, or ``default`` when absent."""
        text = self._settings.get(name)
        if text is None:
            return default
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"setting `{name}` is not a number: {text!r}") from None


@dataclass
class Envelope:
    """A message as a module handles it."""

    topic: str
    key: str
    seq: int
    time: int
    source: str
    body: Any


class Outbox:
    """What one ``on_message`` sends; delivered only if it returns normally."""

    def __init__(self) -> None:
        self.messages: List[wit.Output] = []

    def publish(self, topic: str, key: str, body: Any) -> None:
        """Queue ``body`` for ``topic`` with ordering key ``key``."""
        self.messages.append(wit.Output(topic, key, body))

    def take(self) -> List[wit.Output]:
        """The queued messages, leaving the outbox empty."""
        taken, self.messages = self.messages, []
        return taken


class Module:
    """What a module author writes. Subclass it and implement
    :meth:`describe`, ``__init__(self, ctx: Context)`` and
    :meth:`on_message`; :meth:`snapshot` if the module learns state worth
    inheriting."""

    @staticmethod
    def describe() -> Info:
        """Name, version, role, topics and genes."""
        raise NotImplementedError

    def on_message(self, msg: Envelope, out: Outbox) -> None:
        """Handle one message; raise to fail it (nothing in ``out`` is sent)."""
        raise NotImplementedError

    def snapshot(self) -> Optional[wit.Snapshot]:
        """Learned state a child may start from (``ctx.snapshot``). None by default."""
        return None


# --- the host --------------------------------------------------------------

_handling: List[Optional[int]] = [None]


def log(level: wit.Level, message: str) -> None:
    """Write to the host's log, tagged with this instance's id; outside a
    component (plain pytest) to stderr."""
    try:
        host.log(level, message)
    except NotImplementedError:
        print(f"[{level.name}] {message}", file=sys.stderr)


def warn(message: str) -> None:
    """:func:`log` at warn level."""
    log(wit.Level.WARN, message)


def now() -> int:
    """Event time of the message being handled, ms since the epoch."""
    if _handling[0] is not None:
        return _handling[0]
    try:
        return host.now()
    except NotImplementedError:
        return 0


# --- the export glue ---------------------------------------------------------


class _Variants:
    """The module's variants (one per cohort member) and the name table.
    One object per component instance, made at import, so it outlives
    componentize-py's export object of each call."""

    def __init__(self, cls: Type[Module]) -> None:
        self.cls = cls
        self.members: List[Optional[Module]] = []
        self.names: List[str] = []

    def describe(self) -> wit.Info:
        described = self.cls.describe()
        return described.wit if isinstance(described, Info) else described

    def init(self, ctx: wit.InitContext) -> None:
        member = ctx.member
        while len(self.members) <= member:
            self.members.append(None)
        self.members[member] = None
        try:
            self.members[member] = self.cls(Context(ctx))  # type: ignore[call-arg]
        except Err:
            raise
        except Exception as e:  # refusing the parameters, with why
            raise Err(f"{type(e).__name__}: {e}") from None

    def save(self, member: int) -> Optional[wit.Snapshot]:
        if member < len(self.members) and self.members[member] is not None:
            return self.members[member].snapshot()  # type: ignore[union-attr]
        return None

    def leave(self, member: int) -> None:
        if member < len(self.members):
            self.members[member] = None

    def on_messages(self, batch: wit.Batch) -> list:
        if batch.names or len(self.names) != batch.names_from:
            del self.names[batch.names_from :]
            self.names.extend(batch.names)
        names = self.names
        results: list = []
        for m in batch.messages:
            _handling[0] = m.time
            msg = Envelope(
                names[m.topic] if m.topic < len(names) else "",
                m.key,
                m.seq,
                m.time,
                names[m.source] if m.source < len(names) else "",
                m.body,
            )
            if m.member is None:
                for module in self.members:
                    if module is not None:
                        results.append(_handle(module, msg))
            elif m.member < len(self.members) and self.members[m.member] is not None:
                results.append(_handle(self.members[m.member], msg))  # type: ignore[arg-type]
            else:
                results.append(Err(f"no member {m.member} was started"))
        _handling[0] = None
        return results


def _handle(module: Module, msg: Envelope) -> Any:
    out = Outbox()
    try:
        module.on_message(msg, out)
    except Exception as e:
        return Err(f"{type(e).__name__}: {e}")
    return Ok(out.take())


def export(cls: Type[Module]) -> type:
    """The class componentize-py exports for ``cls``: write
    ``Module = export(MyModule)`` at the top level of the app file."""
    variants = _Variants(cls)

    class Export(exports.Module):
        def describe(self) -> wit.Info:
            return variants.describe()

        def init(self, ctx: wit.InitContext) -> None:
            variants.init(ctx)

        def on_messages(self, batch: wit.Batch) -> list:
            return variants.on_messages(batch)

        def save(self, member: int) -> Optional[wit.Snapshot]:
            return variants.save(member)

        def leave(self, member: int) -> None:
            variants.leave(member)

    Export.__name__ = "Module"
    Export.__qualname__ = "Module"
    return Export
