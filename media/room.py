"""Rooms and hear sets: every call feature as membership plus data.

Theory of operation
-------------------
A room is a mixing point (ARCHITECTURE.md "The call model").  Its members
are legs (a caller, an agent's phone, a supervisor, a trunk), sources that
only speak (a player: music on hold, prompts, tones) and recorders that only
listen.  Who hears whom is data, not code: each member carries

* ``hears`` -- the members it may hear (``None``: every other member), and
* ``heard_by`` -- the members that may hear it (``None``: every other member);

listener ``L`` hears speaker ``S`` iff ``L != S``, ``S`` is in ``L.hears``
(or that is ``None``) and ``L`` is in ``S.heard_by`` (or that is ``None``).
A recorder has one output per channel instead: ``channels=(caller_set,
agent_set)`` records the caller left and the agent right.

:meth:`Room.matrix` turns the rules into a 0/1 matrix ``hear[output,
input]``; :mod:`media.mixer` stacks the matrices of all rooms and computes
every output of every room in one batched numpy product per tick.

The rows of the ARCHITECTURE.md table, as :class:`HearSet` presets applied
with :func:`apply_hear_set`:

=====================  ==========================================================
two-party              caller ↔ agent
hold                   caller hears music; agent hears nothing
consult                room 1: caller hears music; room 2: agent ↔ consulted
three-way / barge      everyone hears everyone else
listen                 supervisor hears caller + agent; nobody hears supervisor
whisper                supervisor hears both; agent hears supervisor; caller not
recording              recorder: caller on the left, agent on the right
=====================  ==========================================================

Sans-IO and numpy-free apart from :meth:`Room.matrix`; the engine owns the
sockets and the clock.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np

from media.errors import LocalMediaError

__all__ = ["MemberKind", "Member", "Room", "HearSet", "apply_hear_set"]


class MemberKind(enum.Enum):
    """What a member contributes: a leg speaks and listens, a player only
    speaks, a recorder only listens (one output per channel)."""

    LEG = "leg"
    PLAYER = "player"
    RECORDER = "recorder"


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a room and its hearing rules."""

    member_id: str
    """Engine-wide id: a leg id, a player id or a recorder id."""
    kind: MemberKind
    """Leg, player or recorder."""
    hears: frozenset[str] | None = None
    """Members this one may hear; None means every other member."""
    heard_by: frozenset[str] | None = None
    """Members that may hear this one; None means every other member."""
    channels: tuple[frozenset[str], ...] = ()
    """Recorder only: the members mixed into each output channel (left, right)."""

    @property
    def speaks(self) -> bool:
        """True when the member is an input of the mix."""
        return self.kind is not MemberKind.RECORDER

    @property
    def listens(self) -> bool:
        """True when the member has outputs."""
        return self.kind is not MemberKind.PLAYER

    @property
    def outputs(self) -> int:
        """Number of output rows: 1 for a leg, one per channel for a recorder."""
        if self.kind is MemberKind.LEG:
            return 1
        if self.kind is MemberKind.RECORDER:
            return len(self.channels)
        return 0


def _ids(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


@dataclass(slots=True)
class Room:
    """A mixing point; members in join order.

    ``version`` increases on every change so the mixer knows to recompile.
    """

    room_id: str
    tenant: str = "default"
    members: dict[str, Member] = field(default_factory=dict)
    version: int = 0
    _matrix_cache: tuple | None = field(default=None, repr=False, compare=False)

    def join(
        self,
        member_id: str,
        kind: MemberKind = MemberKind.LEG,
        hears: Iterable[str] | None = None,
        heard_by: Iterable[str] | None = None,
        channels: Iterable[Iterable[str]] = (),
    ) -> Member:
        """Add a member.

        Raises:
            LocalMediaError: the id is already in the room, or a recorder has
                no channels, or a non-recorder has channels.
        """
        if member_id in self.members:
            raise LocalMediaError(f"room {self.room_id}: member {member_id} already joined")
        chans = tuple(frozenset(c) for c in channels)
        if (kind is MemberKind.RECORDER) != bool(chans):
            raise LocalMediaError(f"room {self.room_id}: member {member_id}: only a recorder has channels, and it needs at least one")
        m = Member(member_id, kind, _ids(hears), _ids(heard_by), chans)
        self.members[member_id] = m
        self.version += 1
        return m

    def leave(self, member_id: str) -> Member:
        """Remove a member; raises LocalMediaError when it is not in the room."""
        try:
            m = self.members.pop(member_id)
        except KeyError:
            raise LocalMediaError(f"room {self.room_id}: no member {member_id}") from None
        self.version += 1
        return m

    _KEEP = object()

    def set_hearing(self, member_id: str, hears: object = _KEEP, heard_by: object = _KEEP,
                    channels: object = _KEEP) -> Member:
        """Change a member's rules; arguments left out keep their value.

        ``hears=None`` / ``heard_by=None`` mean "every other member".
        """
        m = self.members.get(member_id)
        if m is None:
            raise LocalMediaError(f"room {self.room_id}: no member {member_id}")
        changes: dict[str, object] = {}
        if hears is not Room._KEEP:
            changes["hears"] = _ids(hears)  # type: ignore[arg-type]
        if heard_by is not Room._KEEP:
            changes["heard_by"] = _ids(heard_by)  # type: ignore[arg-type]
        if channels is not Room._KEEP:
            if m.kind is not MemberKind.RECORDER:
                raise LocalMediaError(f"room {self.room_id}: member {member_id} is not a recorder")
            changes["channels"] = tuple(frozenset(c) for c in channels)  # type: ignore[union-attr]
        m = replace(m, **changes)  # type: ignore[arg-type]
        self.members[member_id] = m
        self.version += 1
        return m

    def hears(self, listener: str, speaker: str) -> bool:
        """True when ``listener`` hears ``speaker`` under the room's rules."""
        if listener == speaker:
            return False
        lm = self.members[listener]
        sm = self.members[speaker]
        if not (lm.listens and sm.speaks):
            return False
        return (lm.hears is None or speaker in lm.hears) and (sm.heard_by is None or listener in sm.heard_by)

    def matrix(self) -> tuple[list[tuple[str, int]], list[str], np.ndarray]:
        """The hear matrix of this room.

        Returns:
            ``(outputs, inputs, hear)``: ``outputs`` lists ``(member_id,
            channel)`` rows, ``inputs`` the speaking member ids, and ``hear``
            is ``float32[len(outputs), len(inputs)]`` with 1 where that output
            hears that input.
        """
        cached = self._matrix_cache
        if cached is not None and cached[0] == self.version:
            return cached[1]  # unchanged since the last compile: the mixer recompiles every room on any change
        inputs = [m.member_id for m in self.members.values() if m.speaks]
        outputs: list[tuple[str, int]] = []
        rows: list[list[float]] = []
        for m in self.members.values():
            if m.kind is MemberKind.LEG:
                outputs.append((m.member_id, 0))
                rows.append([1.0 if self.hears(m.member_id, s) else 0.0 for s in inputs])
            elif m.kind is MemberKind.RECORDER:
                for c, chan in enumerate(m.channels):
                    outputs.append((m.member_id, c))
                    rows.append([1.0 if s in chan else 0.0 for s in inputs])
        hear = np.array(rows, np.float32).reshape(len(outputs), len(inputs))
        hear.setflags(write=False)
        self._matrix_cache = (self.version, (outputs, inputs, hear))
        return outputs, inputs, hear

    def describe(self) -> dict[str, list[str]]:
        """``{listener: [speakers it hears]}`` for legs, for logs and docs."""
        out: dict[str, list[str]] = {}
        for m in self.members.values():
            if m.kind is MemberKind.LEG:
                out[m.member_id] = [s for s in self.members if self.hears(m.member_id, s)]
            elif m.kind is MemberKind.RECORDER:
                for c, chan in enumerate(m.channels):
                    out[f"{m.member_id}[{c}]"] = sorted(chan & set(self.members))
        return out


class HearSet(enum.Enum):
    """The hear-set rows of ARCHITECTURE.md's call model table."""

    TWO_PARTY = "two_party"
    HOLD = "hold"
    CONSULT = "consult"
    THREE_WAY = "three_way"
    BARGE = "barge"
    LISTEN = "listen"
    WHISPER = "whisper"


def apply_hear_set(room: Room, hear_set: HearSet, *, caller: str, agent: str,
                   supervisor: str | None = None, music: str | None = None) -> None:
    """Set the rules of ``caller``, ``agent`` (and ``supervisor``/``music``) for a row.

    The members must already be in ``room``.  Recorders in the room are left
    alone (a recorder keeps caller left / agent right through every row).
    ``CONSULT`` here is the caller's room (caller hears music, agent hears
    nothing and is not heard); the agent and the consulted party talk in a
    second room set up with ``TWO_PARTY``.

    Raises:
        LocalMediaError: a member the row needs is missing or not given.
    """
    def need(member_id: str | None, what: str) -> str:
        if member_id is None or member_id not in room.members:
            raise LocalMediaError(f"room {room.room_id}: hear set {hear_set.value} needs a {what} member")
        return member_id

    caller = need(caller, "caller")
    if hear_set is HearSet.CONSULT:
        music = need(music, "music")
        room.set_hearing(caller, hears={music}, heard_by=set())
        if agent in room.members:
            room.set_hearing(agent, hears=set(), heard_by=set())
        room.set_hearing(music, hears=set(), heard_by={caller})
        return
    agent = need(agent, "agent")
    if hear_set is HearSet.TWO_PARTY:
        room.set_hearing(caller, hears={agent}, heard_by={agent})
        room.set_hearing(agent, hears={caller}, heard_by={caller})
    elif hear_set is HearSet.HOLD:
        music = need(music, "music")
        room.set_hearing(caller, hears={music}, heard_by=set())
        room.set_hearing(agent, hears=set(), heard_by=set())
        room.set_hearing(music, hears=set(), heard_by={caller})
    elif hear_set in (HearSet.THREE_WAY, HearSet.BARGE):
        sup = need(supervisor, "third party")
        for m in (caller, agent, sup):
            room.set_hearing(m, hears=None, heard_by=None)
    elif hear_set is HearSet.LISTEN:
        sup = need(supervisor, "supervisor")
        room.set_hearing(caller, hears={agent}, heard_by=None)
        room.set_hearing(agent, hears={caller}, heard_by=None)
        room.set_hearing(sup, hears={caller, agent}, heard_by=set())
    elif hear_set is HearSet.WHISPER:
        sup = need(supervisor, "supervisor")
        room.set_hearing(caller, hears={agent}, heard_by=None)
        room.set_hearing(agent, hears={caller, sup}, heard_by=None)
        room.set_hearing(sup, hears={caller, agent}, heard_by={agent})
    else:  # pragma: no cover - exhaustive over the enum
        raise LocalMediaError(f"unknown hear set {hear_set}")
