"""Typed events of the engine package (STYLE.md §3), published on the bus.

Each event is a frozen slotted dataclass whose class attribute ``NAME`` is
the dotted wire name clients subscribe to.  :meth:`Event.scope` reads the
conventional fields ``tenant``, ``group``/``groups``, ``agent`` and ``queue``
so the bus can decide visibility without knowing each event;
:meth:`Event.data` is the payload sent to clients (every field)::

    @dataclass(frozen=True, slots=True)
    class AgentStateChanged(Event):
        NAME: ClassVar[str] = "agent.state"
        agent: str
        state: str
        previous_state: str
        tenant: str = DEFAULT_TENANT
        groups: tuple[str, ...] = ()

    engine.bus.publish_event(AgentStateChanged(agent="1001", state="ready", previous_state="not_ready"))

Later issues add their events here; names say what happened.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.config import DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class Event:
    """Base of typed bus events."""

    NAME: ClassVar[str] = ""

    def data(self) -> dict[str, Any]:
        """The payload: every field, tuples as lists."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, (tuple, frozenset)) else value
        return out

    def scope(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`engine.bus.EventBus.publish`."""
        names = {f.name for f in dataclasses.fields(self)}
        groups: tuple[str, ...] = tuple(getattr(self, "groups", ()) or ())
        if "group" in names and getattr(self, "group"):
            groups += (getattr(self, "group"),)
        agent = getattr(self, "agent") if "agent" in names else None
        queue = getattr(self, "queue") if "queue" in names else None
        return {"tenant": getattr(self, "tenant", DEFAULT_TENANT), "groups": groups,
                "agent": agent or None, "queue": queue or None}


@dataclass(frozen=True, slots=True)
class EngineStarted(Event):
    """The engine finished starting (store open, services and listeners up)."""

    NAME: ClassVar[str] = "engine.started"
    name: str
    """The engine's configured name."""
    version: str
    """The engine's version."""
    tenant: str = "*"
    """Engine-wide: seen by administrators of every tenant."""


@dataclass(frozen=True, slots=True)
class EngineStopping(Event):
    """Shutdown began; sent to each control connection just before it is closed."""

    NAME: ClassVar[str] = "engine.stopping"
    reason: str
    """Why: ``shutdown``."""


# ---------------------------------------------------------------- supervision (engine/supervision.py)
# ``supervisor.*`` events are hidden from users of role ``agent`` (a silent
# monitor must stay silent); ``call.intercepted`` is seen by the agent too.


@dataclass(frozen=True, slots=True)
class SupervisorRinging(Event):
    """The supervisor's phone is being rung to join an agent's call."""

    NAME: ClassVar[str] = "supervisor.ringing"
    supervisor: str
    """The supervisor's control user name."""
    extension: str
    """The supervisor's phone extension."""
    call_id: str
    """The monitored call."""
    monitored_agent: str
    """The agent on the monitored call."""
    mode: str
    """Mode requested: ``listen``, ``whisper``, ``barge`` or ``intercept``."""
    tenant: str = DEFAULT_TENANT
    groups: tuple[str, ...] = ()
    """The monitored agent's groups (scope: their supervisors)."""


@dataclass(frozen=True, slots=True)
class SupervisorJoined(Event):
    """The supervisor's phone answered and joined the call's room in ``mode``."""

    NAME: ClassVar[str] = "supervisor.joined"
    supervisor: str
    call_id: str
    monitored_agent: str
    mode: str
    tenant: str = DEFAULT_TENANT
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SupervisorModeChanged(Event):
    """A joined supervisor switched mode (no re-ringing)."""

    NAME: ClassVar[str] = "supervisor.mode_changed"
    supervisor: str
    call_id: str
    monitored_agent: str
    mode: str
    previous_mode: str
    tenant: str = DEFAULT_TENANT
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SupervisorFailed(Event):
    """The supervisor's phone did not join; the monitored call is untouched."""

    NAME: ClassVar[str] = "supervisor.failed"
    supervisor: str
    call_id: str
    monitored_agent: str
    mode: str
    outcome: str
    """A leg outcome (``no_answer``, ``busy``, ``rejected``, ``timeout``, ``unreachable`` ...,
    see ``engine.legs.LegOutcome``), or ``call_ended`` / ``leave``."""
    status: int
    """The SIP status of the phone's final answer (0 when none)."""
    tenant: str = DEFAULT_TENANT
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SupervisorLeft(Event):
    """The supervisor left the call (``supervisor.leave``, hung up, or the call ended)."""

    NAME: ClassVar[str] = "supervisor.left"
    supervisor: str
    call_id: str
    monitored_agent: str
    reason: str
    """``leave``, ``supervisor_hangup``, ``call_ended``, ``moved`` (to another agent's call) or
    ``agent_left`` (the monitored agent transferred the call away)."""
    tenant: str = DEFAULT_TENANT
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallIntercepted(Event):
    """A supervisor took the call over: the agent's leg was released (agent to wrap-up)."""

    NAME: ClassVar[str] = "call.intercepted"
    call_id: str
    agent: str
    """The agent whose leg was released (sees this event)."""
    supervisor: str
    tenant: str = DEFAULT_TENANT
    groups: tuple[str, ...] = ()
