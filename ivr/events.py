"""Events the engine feeds into the IVR interpreter (inputs of the sans-IO core).

Every event is a frozen slotted dataclass named for what happened.  Events that
answer a request made by an action carry that action's id (``play_id``,
``timer_id``, ``request_id``); the interpreter ignores answers to requests it
no longer waits for (a prompt stopped by barge-in, a timer already cancelled,
a queue left after the caller pressed a key), so races between the engine and
the interpreter are harmless.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


class Event:
    """Base class of interpreter input events."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class CallStarted(Event):
    """The call entered the flow (answered and media ready)."""

    caller_number: str
    """The customer's number as received (``From`` user part)."""
    dialed_number: str
    """The number the customer dialled (stays fixed for the call)."""
    wall_time: float
    """Wall-clock time of the start, Unix seconds (for time-of-day routing)."""


@dataclass(frozen=True, slots=True)
class DtmfReceived(Event):
    """The caller pressed a key (RFC 4733 telephone-event or in-band)."""

    digit: str
    """One of ``0-9``, ``*``, ``#``, ``A-D``."""

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in "0123456789*#ABCD":
            raise ValueError(f"not a DTMF digit: {self.digit!r}")


@dataclass(frozen=True, slots=True)
class PromptFinished(Event):
    """A ``PlayPrompts`` action finished playing (or was stopped)."""

    play_id: int


@dataclass(frozen=True, slots=True)
class TimerFired(Event):
    """A timer started by ``StartTimer`` reached its deadline."""

    timer_id: int


@dataclass(frozen=True, slots=True)
class LookupCompleted(Event):
    """Answer to ``RequestLookup``: the row found, or None, or an error."""

    request_id: int
    row: Mapping[str, Any] | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class QueueUpdated(Event):
    """The caller's place in the queue changed (feeds announcements)."""

    request_id: int
    position: int
    expected_wait_s: float


@dataclass(frozen=True, slots=True)
class QueueAgentReady(Event):
    """An agent answered the offer and waits to be bridged to the caller."""

    request_id: int
    agent_number: str


@dataclass(frozen=True, slots=True)
class QueueLeft(Event):
    """The caller left the queue without an agent (``timeout``, ``no_agents``, ``closed``)."""

    request_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class TransferCompleted(Event):
    """Result of one ``AttemptTransfer``: answered, or failed with a reason."""

    request_id: int
    answered: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RecordingFinished(Event):
    """A voicemail recording ended (``#``, silence, max length)."""

    request_id: int
    duration_s: float
    path: str = ""


@dataclass(frozen=True, slots=True)
class CallHungUp(Event):
    """The caller hung up; the interpreter emits clean-up and finishes."""

    reason: str = "caller"


@dataclass(frozen=True, slots=True)
class CallDataAttached(Event):
    """Data attached to the call from outside (CRM, control socket)."""

    data: Mapping[str, Any] = field(default_factory=dict)
