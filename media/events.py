"""Events of the ``media`` package (frozen, slotted, past tense; STYLE.md §3).

The :class:`media.engine.MediaEngine` queues these as they happen during a
tick; the call engine drains them with ``next_event()`` or receives them
through the ``on_event`` callback.  Every event names the leg (and the call
id given when the leg was created) so the call engine can route it without a
lookup.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MediaEvent", "DtmfReceived", "PlaybackFinished", "RtpTimedOut", "RtpLatched", "RecordingFailed"]


@dataclass(frozen=True, slots=True)
class MediaEvent:
    """Base class of every media event."""


@dataclass(frozen=True, slots=True)
class DtmfReceived(MediaEvent):
    """A DTMF digit arrived on a leg (RFC 4733 event or in-band tones), reported once."""

    leg_id: str
    """The leg it arrived on."""
    call_id: str
    """The call id given to ``create_leg`` (empty when none)."""
    digit: str
    """One of ``0123456789*#ABCD``."""
    duration_ms: float
    """How long the key was held."""
    source: str
    """``"rfc4733"`` or ``"inband"``."""


@dataclass(frozen=True, slots=True)
class PlaybackFinished(MediaEvent):
    """A player attached with ``play()`` ended."""

    player_id: str
    """The id ``play()`` returned."""
    leg_id: str | None
    """The leg it played to directly, or None for a room member."""
    room_id: str | None
    """The room it played into, or None."""
    reason: str
    """``"completed"`` (the source ran out) or ``"stopped"`` (``stop_playback``,
    its leg or room was destroyed)."""


@dataclass(frozen=True, slots=True)
class RtpTimedOut(MediaEvent):
    """No RTP arrived on a receiving leg for ``rtp_timeout_s`` (reported once until RTP resumes)."""

    leg_id: str
    """The silent leg."""
    call_id: str
    """Its call id."""
    silent_s: float
    """Seconds since the last packet (or since the leg started receiving)."""


@dataclass(frozen=True, slots=True)
class RtpLatched(MediaEvent):
    """A leg now sends to where its packets come from, not to its SDP address
    (RFC 4961 symmetric RTP, a phone behind NAT; the rule in :mod:`media.latch`)."""

    leg_id: str
    """The leg."""
    call_id: str
    """Its call id."""
    signalled: tuple[str, int] | None
    """The address the SDP gave (None when it gave none)."""
    latched: tuple[str, int]
    """The packets' source address, where the leg sends from now on."""


@dataclass(frozen=True, slots=True)
class RecordingFailed(MediaEvent):
    """A recorder member's sink raised; it was removed from its room."""

    room_id: str
    """The room the recorder was in."""
    member_id: str
    """The recorder member."""
    error: str
    """The error's text."""
