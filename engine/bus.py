"""The event bus: engine code publishes, control connections subscribe.

Theory of operation
-------------------
``bus.publish("agent.state", {...}, tenant="acme", group="sales", agent="1001")``
builds one :class:`BusEvent` and hands it synchronously, on the event loop,
to every registered subscriber (a control connection).  The *scope* of an
event (``tenant``, ``groups``, ``agent``, ``queue``) is separate from its
``data`` so that visibility is decided without reading the payload:

1. scope rules (:attr:`EventBus.scope_rules`, each ``(session, event) ->
   bool``; the default is :meth:`engine.ops.Session.sees`: tenant, then
   supervised groups, then own agent) decide whether the *user* may see it;
   later issues append rules (e.g. department scopes) without touching
   connections;
2. the connection's subscriptions (:class:`Subscription`: event-name glob
   patterns, optional tenant/group/agent/queue filters) decide whether the
   *client* wants it.

Each connection numbers the events it sends (``seq`` per connection), so a
client sees gaps and ``state.snapshot`` can say "this snapshot includes
everything up to seq N".  Delivery never blocks: a connection that cannot
keep up is disconnected by the control server, not waited for.

The frame is packed once per event (:attr:`BusEvent.frame_head` and
:attr:`BusEvent.frame_tail`, see :func:`event_frame_parts`); each subscriber
only packs its own ``seq`` between them.
"""
from __future__ import annotations

import fnmatch
import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import msgpack

from engine.config import DEFAULT_TENANT

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One published event."""

    name: str
    """Dotted lower-case event name, e.g. ``agent.state``."""
    data: dict[str, Any]
    """The payload sent to clients as ``data``."""
    ts: float
    """Unix time of publication."""
    tenant: str = DEFAULT_TENANT
    """Tenant the event belongs to; ``*`` for engine-wide events seen by all tenants' admins."""
    groups: frozenset[str] = frozenset()
    """Groups the event concerns (supervisor scope); empty: not group-bound."""
    agent: str | None = None
    """Agent number the event concerns (agent scope); ``None``: not agent-bound."""
    queue: str | None = None
    """Queue the event concerns, for subscription filters."""
    frame_head: bytes = field(default=b"", compare=False)
    """The event frame up to the ``seq`` value, packed once for all subscribers."""
    frame_tail: bytes = field(default=b"", compare=False)
    """The event frame after the ``seq`` value (``ts`` and ``data``), packed once."""


_EVENT_HEAD = b"\x84" + msgpack.packb("event")  # fixmap of 4 entries
_SEQ_KEY = msgpack.packb("seq")
_TS_KEY = msgpack.packb("ts")
_DATA_KEY = msgpack.packb("data")


def event_frame_parts(name: str, ts: float, data: Any) -> tuple[bytes, bytes]:
    """``(head, tail)`` so that ``head + packb(seq) + tail`` is the msgpack of
    ``{"event": name, "seq": seq, "ts": ts, "data": data}``.

    Only ``seq`` differs between subscribers, so fan-out to N connections
    costs one small ``packb`` per connection instead of packing the payload N
    times.  Raises ``TypeError`` when ``data`` cannot be packed.
    """
    head = b"".join((_EVENT_HEAD, msgpack.packb(name, use_bin_type=True), _SEQ_KEY))
    tail = b"".join((_TS_KEY, msgpack.packb(ts), _DATA_KEY, msgpack.packb(data, use_bin_type=True)))
    return head, tail


def pack_event(name: str, seq: int, ts: float, data: Any) -> bytes:
    """One event frame (for events sent to one connection only)."""
    head, tail = event_frame_parts(name, ts, data)
    return head + msgpack.packb(seq) + tail


class Subscriber(Protocol):
    def deliver(self, event: BusEvent) -> None: ...


@dataclass(slots=True)
class Subscription:
    """What one ``events.subscribe`` asked for."""

    id: int
    patterns: tuple[str, ...] = ("*",)
    tenants: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    _regex: re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        self._regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns))

    def wants(self, event: BusEvent) -> bool:
        """Name matches a pattern and each given filter matches (filters
        only apply to events that carry that attribute)."""
        assert self._regex is not None
        if not self._regex.match(event.name):
            return False
        if self.tenants and event.tenant not in self.tenants:
            return False
        if self.groups and event.groups and not (event.groups & self.groups):
            return False
        if self.agents and event.agent is not None and event.agent not in self.agents:
            return False
        if self.queues and event.queue is not None and event.queue not in self.queues:
            return False
        return True

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "events": list(self.patterns), "tenants": sorted(self.tenants),
                "groups": sorted(self.groups), "agents": sorted(self.agents), "queues": sorted(self.queues)}


ScopeRule = Callable[[Any, BusEvent], bool]


def default_scope_rule(session: Any, event: BusEvent) -> bool:
    """Tenant, supervised groups, own agent (see :meth:`engine.ops.Session.sees`)."""
    if event.tenant == "*":
        return session.role == "admin" or session.tenant == "*"
    return session.sees(tenant=event.tenant, groups=event.groups, agent=event.agent)


class EventBus:
    """Fan-out of published events to subscribers."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._subscribers: dict[int, Subscriber] = {}
        self._ids = itertools.count(1)
        self.scope_rules: list[ScopeRule] = [default_scope_rule]
        self.published = 0
        self._clock = clock

    def next_subscription_id(self) -> int:
        return next(self._ids)

    def add(self, subscriber: Subscriber) -> None:
        self._subscribers[id(subscriber)] = subscriber

    def remove(self, subscriber: Subscriber) -> None:
        self._subscribers.pop(id(subscriber), None)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribers(self) -> list[Subscriber]:
        """The current subscribers (a copy), e.g. for per-connection events."""
        return list(self._subscribers.values())

    def visible(self, session: Any, event: BusEvent) -> bool:
        """All scope rules allow ``session`` to see ``event``."""
        return all(rule(session, event) for rule in self.scope_rules)

    def publish_event(self, event: Any, ts: float | None = None) -> BusEvent:
        """Publish a typed :class:`engine.events.Event` (name, payload and scope from it)."""
        return self.publish(event.NAME, event.data(), ts=ts, **event.scope())

    def publish(self, name: str, data: dict[str, Any] | None = None, *, tenant: str = DEFAULT_TENANT,
                group: str | None = None, groups: Iterable[str] = (), agent: str | None = None,
                queue: str | None = None, ts: float | None = None) -> BusEvent:
        """Build and deliver one event; returns it.

        Raises ``TypeError`` when ``data`` cannot be packed (a bug in the
        publisher, raised here rather than once per subscriber).
        """
        data = data or {}
        gs = frozenset(groups) | ({group} if group else frozenset())
        ts = self._clock() if ts is None else ts
        head, tail = event_frame_parts(name, ts, data)
        event = BusEvent(name=name, data=data, ts=ts, tenant=tenant, groups=gs, agent=agent, queue=queue,
                         frame_head=head, frame_tail=tail)
        self.published += 1
        for sub in list(self._subscribers.values()):
            try:
                sub.deliver(event)
            except Exception:  # one broken subscriber never stops the others
                logger.exception("event delivery to a subscriber failed")
        return event
