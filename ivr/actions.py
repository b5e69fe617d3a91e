"""Actions the IVR interpreter asks the engine to perform (outputs of the core).

The interpreter never touches media, the ACD or the store: it returns these
frozen dataclasses and the engine maps them (``PlayPrompts`` to the media
player, ``Enqueue`` to the ACD, ``RequestLookup`` to the store, ...).  Every
action that expects an answer carries an id the answering event repeats.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Action:
    """Base class of interpreter output actions."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class PromptItem:
    """One piece of audio to play, already resolved for the caller's language.

    ``kind`` is ``file`` (``value`` is a path), ``tts`` (``value`` is text to
    synthesise in ``language``), or ``digits`` / ``number`` / ``date``
    (``value`` is the raw value; ``text`` is the same spelled as words for a
    TTS engine, so the media side may use either).
    """

    kind: str
    value: str
    language: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class PlayPrompts(Action):
    """Play these items in order; a DTMF digit stops them when ``barge_in``."""

    play_id: int
    items: tuple[PromptItem, ...]
    barge_in: bool


@dataclass(frozen=True, slots=True)
class StopPlayback(Action):
    """Stop the playback ``play_id`` now (barge-in, hang-up, leaving a node)."""

    play_id: int


@dataclass(frozen=True, slots=True)
class StartTimer(Action):
    """Fire ``TimerFired(timer_id)`` at ``deadline`` (same clock as ``now``)."""

    timer_id: int
    name: str
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelTimer(Action):
    """Forget the timer ``timer_id``; firing it later is harmless."""

    timer_id: int


@dataclass(frozen=True, slots=True)
class RequestLookup(Action):
    """Look ``key`` up in ``column`` of a store table or CSV file.

    ``source`` is ``store`` (``table`` names a store table) or ``csv``
    (``table`` is the absolute path of the CSV file; the engine may answer
    with :class:`ivr.csvlookup.CsvLookup`).
    """

    request_id: int
    source: str
    table: str
    column: str
    key: str
    tenant: str


@dataclass(frozen=True, slots=True)
class Enqueue(Action):
    """Put the caller in ``queue`` (a skill group) with music and priority."""

    request_id: int
    queue: str
    priority: int
    music_on_hold: str
    max_wait_s: float | None
    skills: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Dequeue(Action):
    """Take the caller out of the queue (key pressed, max wait reached)."""

    request_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ResumeMusic(Action):
    """Resume music on hold after an announcement in the queue."""

    music_on_hold: str


@dataclass(frozen=True, slots=True)
class BridgeAgent(Action):
    """Connect the caller to the agent who answered (flow ends after)."""

    request_id: int
    agent_number: str


@dataclass(frozen=True, slots=True)
class AttemptTransfer(Action):
    """Try one transfer target: ``kind`` is agent, queue, flow or number."""

    request_id: int
    kind: str
    target: str
    timeout_s: float
    attempt: int


@dataclass(frozen=True, slots=True)
class RecordVoicemail(Action):
    """Record a message for ``mailbox`` (``#`` or ``max_length_s`` ends it)."""

    request_id: int
    mailbox: str
    max_length_s: float
    beep: bool


@dataclass(frozen=True, slots=True)
class StoreSurveyResult(Action):
    """Store one survey answer with the call (and agent when known)."""

    survey: str
    question: str
    answer: str
    agent_number: str | None


@dataclass(frozen=True, slots=True)
class RequestCallback(Action):
    """Register a callback to ``number``; ``keep_place`` keeps the queue position."""

    number: str
    queue: str | None
    keep_place: bool


@dataclass(frozen=True, slots=True)
class SetCallData(Action):
    """A flow variable changed: attach it to the call (screen pop)."""

    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class SetLanguage(Action):
    """The caller's language changed (the engine may pick a TTS voice)."""

    language: str


@dataclass(frozen=True, slots=True)
class HangUp(Action):
    """Release the call."""

    reason: str


@dataclass(frozen=True, slots=True)
class FlowFinished(Action):
    """The flow is over: ``reason`` is hangup, caller_hangup, agent, transferred, voicemail, ..."""

    reason: str
    node: str
