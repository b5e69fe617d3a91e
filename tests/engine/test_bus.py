"""The event bus without sockets: subscription filters, scope rules, typed
events, frame packing, isolation of a failing subscriber."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack
import pytest

from engine.bus import BusEvent, EventBus, Subscription, event_frame_parts, pack_event
from engine.events import EngineStarted, Event
from engine.ops import Session


@dataclass(frozen=True, slots=True)
class AgentStateChanged(Event):
    NAME: ClassVar[str] = "agent.state"
    agent: str
    state: str
    tenant: str = "default"
    groups: tuple[str, ...] = ()


class Sink:
    def __init__(self, session: Session, sub: Subscription, bus: EventBus) -> None:
        self.session, self.sub, self.bus = session, sub, bus
        self.got: list[BusEvent] = []

    def deliver(self, event: BusEvent) -> None:
        if self.bus.visible(self.session, event) and self.sub.wants(event):
            self.got.append(event)


def sess(role: str, tenant: str = "default", groups: tuple[str, ...] = (), agent: str = "") -> Session:
    return Session(peer="t", user=role, role=role, tenant=tenant, groups=frozenset(groups), agent=agent)


def test_typed_event_scope_and_data() -> None:
    ev = AgentStateChanged(agent="1001", state="ready", groups=("sales",))
    assert ev.data() == {"agent": "1001", "state": "ready", "tenant": "default", "groups": ["sales"]}
    assert ev.scope() == {"tenant": "default", "groups": ("sales",), "agent": "1001", "queue": None}
    assert EngineStarted(name="x", version="1").scope()["tenant"] == "*"


def test_scopes_and_filters() -> None:
    bus = EventBus(clock=lambda: 100.0)
    sinks = {
        "admin": Sink(sess("admin"), Subscription(1), bus),
        "sup_support": Sink(sess("supervisor", groups=("support",)), Subscription(2), bus),
        "agent1001": Sink(sess("agent", agent="1001"), Subscription(3), bus),
        "acme": Sink(sess("admin", tenant="acme"), Subscription(4), bus),
        "reports_states": Sink(sess("reporting"), Subscription(5, patterns=("agent.*",), agents=frozenset({"1002"})), bus),
    }
    for s in sinks.values():
        bus.add(s)
    bus.publish_event(AgentStateChanged(agent="1001", state="ready", groups=("sales",)))
    bus.publish_event(AgentStateChanged(agent="1002", state="ready", groups=("support",)))
    bus.publish("queue.stats", {"waiting": 1}, queue="sales", group="sales")
    bus.publish_event(EngineStarted(name="e", version="1"))
    seen = {k: [(e.name, e.agent) for e in s.got] for k, s in sinks.items()}
    assert seen == {
        "admin": [("agent.state", "1001"), ("agent.state", "1002"), ("queue.stats", None), ("engine.started", None)],
        "sup_support": [("agent.state", "1002")],
        "agent1001": [("agent.state", "1001"), ("queue.stats", None)],
        "acme": [("engine.started", None)],
        "reports_states": [("agent.state", "1002")],
    }
    assert all(e.ts == 100.0 for e in sinks["admin"].got)


def test_failing_subscriber_does_not_stop_others() -> None:
    bus = EventBus()

    class Broken:
        def deliver(self, event: BusEvent) -> None:
            raise RuntimeError("boom")

    ok = Sink(sess("admin"), Subscription(1), bus)
    bus.add(Broken())
    bus.add(ok)
    bus.publish("x", {})
    assert len(ok.got) == 1


def test_unpackable_data_raises_at_publish() -> None:
    with pytest.raises(TypeError):
        EventBus().publish("x", {"bad": object()})


@pytest.mark.parametrize("seq", [0, 1, 127, 128, 65536, 2**33])
def test_frame_parts_are_the_full_map(seq: int) -> None:
    data: dict[str, Any] = {"a": [1, "b", b"\x00"], "n": None}
    head, tail = event_frame_parts("agent.state", 12.5, data)
    expected = msgpack.packb({"event": "agent.state", "seq": seq, "ts": 12.5, "data": data}, use_bin_type=True)
    assert head + msgpack.packb(seq) + tail == expected == pack_event("agent.state", seq, 12.5, data)
