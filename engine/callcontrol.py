"""Call control: hold, transfers, consult, conference, click-to-dial, DTMF; phone hold and REFER.

Theory of operation
-------------------
One :class:`CallControl` per :class:`engine.callpath.CallCentre`
(``centre.callcontrol``).  It owns the *agent side* operations of a talking
call; the control ops (``engine/callcontrol_ops.py``) and the agents' phones
(re-INVITE hold, REFER) both end up in the same methods, which publish the
same ``call.*`` bus events and write the same ``call_events`` rows.

Media layout (media anchored in the engine, ARCHITECTURE.md hear sets)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
The call's room (``call.room``) holds the caller leg, the agent-side leg
(``call.agent_leg``: the agent's phone, or whoever the call was transferred
to), the recorder and, while the caller waits, a music-on-hold player heard
by the caller only.  :meth:`CallControl.layout` derives every hear rule from
the call's :class:`ControlState` (one function, so no operation can leave a
stale rule behind):

=====================  ===============================================  ===============================
state                  who hears whom                                   recording (left / right)
=====================  ===============================================  ===============================
talking                caller ↔ agent (``two_party``)                   caller / agent
held                   caller hears music; agent hears nobody            caller / silence
consulting             as held; agent ↔ consulted in the consult room   caller / silence
transfer ringing       as held                                           caller / silence
conference             caller, agent, third party all hear each other   caller / agent + third party
=====================  ===============================================  ===============================

The consult room (``consult-<call id>``) joins the agent leg a second time
with the consulted party (a leg in two rooms hears the sum; the agent hears
nobody in the main room meanwhile).  One recording per call: the recorder
stays in the main room and only its channels change.

Operations
~~~~~~~~~~
* **hold / retrieve**: music on; ``hold_s`` accumulates (also while
  consulting or while a transfer target rings).
* **blind transfer** to ``agent:N`` / ``number:+49...``: the caller hears
  music while the target rings through ``engine/legs.py``; the transferring
  agent's leg stays up (silent) until the target answers, then the target
  replaces it in the room and the agent goes to wrap-up.  Busy / no answer /
  any failure: ``call.transfer_failed`` and the call is restored as it was.
  To ``queue:Q``: the agent leaves (wrap-up), the caller goes back to the
  ACD with music and its data; to ``flow:F``: the IVR flow runs again.
* **consult** (agent, the first free agent of a queue, or an external
  number): the caller is held, the party rings; once answered the agent
  talks to it in the consult room.  Then **transfer_complete** (the party
  replaces the agent), **conference** (three-way) or **consult_cancel**
  (party dropped, caller retrieved).  A party that fails or hangs up
  restores the call.  The agent hanging up while consulting completes the
  transfer (answered) or continues it blind (still ringing); leaving a
  conference hands the call to the third party.
* **click-to-dial** (:meth:`dial`): the agent's phone rings first, then the
  number is dialled through a trunk with the trunk's (or given) caller id;
  the result is an ``outbound`` call with the far end as ``caller``, so all
  the operations above apply to it.
* **ring no answer with ``forward_number``**: an offered agent whose phone
  does not answer has the call forwarded to its external number; if that
  fails too the caller goes back to the queue.

Targets needing an agent take only ``ready`` agents; the target agent is
made ``busy`` in the ACD while it rings (no ACD offer can race it) and
``ready`` again if it does not answer.

Phones
~~~~~~
A re-INVITE from the agent's phone with ``sendonly``/``inactive`` is
:meth:`hold` (``by="phone"``), ``sendrecv`` :meth:`retrieve` (RFC 3264
§8.4).  REFER (RFC 3515) on the agent's leg is a blind transfer to the
Refer-To user (an extension or agent number, a queue name, or a number to
dial out): 202 Accepted, a NOTIFY ``message/sipfrag`` ``SIP/2.0 100
Trying``, then the final status (``200 OK`` when the target answered, else
its failure status) with ``Subscription-State: terminated`` (RFC 3515
§2.4.5).

Attended transfer from the phone: the phone holds the call (re-INVITE),
then dials the consulted party itself: its INVITE (digest-authenticated
like its REGISTER, RFC 3261 §22) reaches the engine from the agent's
registered contact, and the engine turns it into a consult of the agent's
call: the target rings through ``engine/legs.py``, the phone gets 180 and
then 200 when the target answers, and phone ↔ target talk in the consult
room.  A REFER on the first dialog whose Refer-To carries ``Replaces``
naming that consult dialog (RFC 3891 §3) completes the transfer (caller ↔
target, both phone dialogs hung up); the phone hanging up its consult line
cancels the consult.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from engine.app import CallLogger
from engine.calls import Call, CallLeg, CallState, CallTrigger
from engine.errors import Conflict, Forbidden, InvalidArgs, InvalidState, NotFound
from engine.legs import (
    LegAnswered, LegEnded, LegEvent, LegFailed, LegHoldChanged, LegRinging, OutgoingLeg,
)

logger = logging.getLogger("engine.callcontrol")

TRANSFER_RING_TIMEOUT_S = 20.0
"""How long a transfer or consult target rings before it counts as no answer (queue ring_timeout_s wins)."""

DIAL_AGENT_RING_TIMEOUT_S = 30.0
"""Click-to-dial: how long the agent's own phone rings."""

DIAL_RING_TIMEOUT_S = 60.0
"""Click-to-dial: how long the dialled number rings."""




@dataclass(slots=True)
class Target:
    """A resolved transfer/consult target."""

    kind: str
    """``"agent"``, ``"external"``, ``"queue"`` or ``"flow"``."""
    number: str
    """Agent number, external number, queue or flow name."""
    rec: Any = None
    """The target agent's record."""
    trunk: str = ""
    role: str = ""
    """External targets: role of the control user who asked (toll fraud, engine.legs.DialCheck.role);
    ``""``: the agent on the call's (or ``system``)."""

    def describe(self) -> str:
        return f"{'number' if self.kind == 'external' else self.kind}:{self.number}"


@dataclass(slots=True)
class Party:
    """A leg call control placed for a transfer or a consult."""

    target: Target
    out: OutgoingLeg
    op: str
    """``"transfer"`` or ``"consult"``."""
    by: str = "op"
    answered: bool = False
    on_done: Any = None
    """``f(ok: bool, status: int, reason: str)`` when the transfer ends (REFER's NOTIFY)."""
    line: "PhoneLine | None" = None
    """A consult the agent's phone dialled itself: its second dialog with the engine."""


@dataclass(slots=True)
class PhoneLine:
    """The agent phone's own call to the engine (its consult line, a UAS dialog of ours)."""

    call_id: str
    leg_id: str
    sdp: Any
    transaction: Any
    answer: bytes
    dialog: Any = None


@dataclass(slots=True)
class ControlState:
    """Call-control state of one call (what :meth:`CallControl.layout` renders)."""

    held: bool = False
    held_by: str = ""
    hold_started: float | None = None
    moh: str = ""
    op: str = ""
    """``""``, ``"transfer"`` (blind, target ringing), ``"consult"`` or ``"conference"``."""
    party: Party | None = None
    held_before_op: bool = False
    consult_room: str = ""
    dial: dict[str, Any] = field(default_factory=dict)


class CallControl:
    """Call-control logic of one call centre (see the module docstring)."""

    def __init__(self, centre: Any) -> None:
        self.centre = centre
        self.states: dict[str, ControlState] = {}
        self._seq = 0
        centre.leg_hook = self._leg_hook
        centre.legs.request_hook = self._leg_request

    # ------------------------------------------------------------------ helpers
    def state(self, call: Call) -> ControlState:
        st = self.states.get(call.call_id)
        if st is None:
            st = self.states[call.call_id] = ControlState()
        return st

    def _log(self, call: Call) -> CallLogger:
        return CallLogger(logger, {"call_id": call.call_id})

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _groups(self, call: Call) -> tuple[str, ...]:
        q = self.centre.config.queues.get(call.queue) if call.queue else None
        return tuple(q.groups) if q is not None else ()

    def publish(self, call: Call, name: str, agent: str = "", **data: Any) -> None:
        """A ``call.*`` event to the desktops (scoped like the call path's events)."""
        self.centre.engine.bus.publish(name, {**call.describe(), **data}, tenant=call.tenant,
                                       agent=(agent or call.agent) or None, queue=call.queue or None,
                                       groups=self._groups(call))

    def record(self, call: Call, event: str, agent: str = "", party: str = "", **detail: Any) -> None:
        """One ``call_events`` row."""
        self.centre._store("call_events", {"ts": time.time(), "tenant": call.tenant, "call_id": call.call_id,
                                           "event": event, "agent": agent or call.agent, "party": party,
                                           "detail": json.dumps(detail, default=str)})

    def _talking(self, call: Call) -> None:
        if call.state is not CallState.TALKING or call.caller is None or call.agent_leg is None:
            raise InvalidState(f"call {call.call_id} is {call.state.value}, not talking")

    # ------------------------------------------------------------------ media layout
    def _hold_clock(self, call: Call, st: ControlState) -> None:
        waiting = st.held or st.op in ("transfer", "consult")
        now = time.time()
        if waiting and st.hold_started is None:
            st.hold_started = now
        elif not waiting and st.hold_started is not None:
            call.hold_s += now - st.hold_started
            st.hold_started = None

    def layout(self, call: Call) -> None:
        """Apply the hear rules, music and recorder channels the call's state asks for (module docstring)."""
        from media.player import MusicSource

        media, st = self.centre.media, self.state(call)
        room = media.rooms.get(call.room) if call.room else None
        if room is None or call.caller is None:
            return
        caller = call.caller.leg_id
        agent = call.agent_leg.leg_id if call.agent_leg is not None and call.agent_leg.leg_id in room.members else None
        third = None
        if st.op == "conference" and st.party is not None and st.party.out.leg_id in room.members:
            third = st.party.out.leg_id
        waiting = st.held or st.op in ("transfer", "consult")
        self._hold_clock(call, st)
        if waiting and not st.moh:
            st.moh = f"moh-{call.call_id}"
            media.play(MusicSource(self.centre._moh), room_id=call.room, player_id=st.moh, heard_by={caller})
        elif not waiting and st.moh:
            if st.moh in media.players:
                media.stop_playback(st.moh)
            st.moh = ""
        others = [m for m in (agent, third) if m is not None]
        if waiting:
            media.set_hearing(call.room, caller, hears={st.moh}, heard_by=set())
            for m in others:
                media.set_hearing(call.room, m, hears=set(), heard_by=set())
            media.set_hearing(call.room, st.moh, hears=set(), heard_by={caller})
            right: list[str] = []
        else:
            talkers = [caller, *others]
            for m in talkers:
                peers = set(talkers) - {m}
                media.set_hearing(call.room, m, hears=peers, heard_by=peers)
            right = others
        if (call.room, "recorder") in media.recorders:
            room.set_hearing("recorder", channels=[[caller], right])
            media.set_hearing(call.room, "recorder")  # (marks the engine's mix for recompiling)
        self.centre.supervision.relayout(call)  # a joined supervisor keeps (or pauses) its mode

    def rejoin(self, call: Call) -> None:
        """A call with a room (back from a queue transfer) was answered: the new agent leg joins it."""
        media = self.centre.media
        if call.agent_leg is not None and call.agent_leg.leg_id not in media.rooms[call.room].members:
            media.join(call.room, call.agent_leg.leg_id)
        if not call.recorded:
            self.centre._start_recording(call)
        self.layout(call)

    # ------------------------------------------------------------------ hold
    def hold(self, call: Call, by: str = "op") -> None:
        """Put the caller on hold (music); raises InvalidState when not talking, already held or consulting."""
        self._talking(call)
        st = self.state(call)
        if st.held or st.op:
            raise InvalidState(f"call {call.call_id} is already {'on hold' if st.held else st.op}")
        st.held, st.held_by = True, by
        self.layout(call)
        self._log(call).info("hold (%s)", by)
        self.record(call, "hold", by=by)
        self.publish(call, "call.held", by=by)

    def retrieve(self, call: Call, by: str = "op") -> None:
        """Take the caller off hold; raises InvalidState when not on hold."""
        self._talking(call)
        st = self.state(call)
        if not st.held or st.op:
            raise InvalidState(f"call {call.call_id} is not on hold" if not st.held else
                               f"call {call.call_id} has a {st.op} in progress")
        st.held, st.held_by = False, ""
        before = call.hold_s
        self.layout(call)
        self._log(call).info("retrieve (%s)", by)
        self.record(call, "retrieve", by=by, hold_s=round(call.hold_s - before, 3))
        self.publish(call, "call.retrieved", by=by, hold_s=round(call.hold_s, 3))

    # ------------------------------------------------------------------ targets
    def resolve(self, call: Call, target: str, *, allow: tuple[str, ...], trunk: str = "") -> Target:
        """``agent:N``, ``queue:Q``, ``flow:F`` or ``number:+49...`` (a bare value: agent, extension, queue, number).

        Raises:
            NotFound: no such agent, queue, flow or trunk.  InvalidArgs: a
            kind not allowed here, or a number that cannot be dialled.
            NotFound: unknown, or another tenant's, agent/queue/flow/trunk.
        """
        centre, cfg = self.centre, self.centre.config
        kind, sep, value = target.partition(":")
        if not sep:
            kind, value = self._guess(call, target)
        kind = {"number": "external", "external": "external"}.get(kind, kind)
        if kind not in allow:
            raise InvalidArgs(f"target {target!r}: expected one of " + ", ".join(
                f"{'number' if k == 'external' else k}:..." for k in allow))
        if kind == "agent":
            rec = centre.agents.get(value) or next(
                (r for r in centre.agents.values() if r.extension == value and r.state != "logged_out"), None)
            if rec is None or rec.tenant != call.tenant:  # another tenant's: as if absent (docs/tenants.md)
                raise NotFound(f"no agent {value!r}")
            if rec.number == call.agent:
                raise InvalidArgs(f"agent {rec.number} is already on call {call.call_id}")
            return Target("agent", rec.number, rec)
        if kind == "queue":
            q = cfg.queues.get(value)
            if q is None or q.tenant != call.tenant:
                raise NotFound(f"no queue {value!r}")
            return Target("queue", value)
        if kind == "flow":
            f = cfg.flows.get(value)
            if f is None or f.tenant != call.tenant:
                raise NotFound(f"no flow {value!r}")
            if centre._flow(value) is None:
                raise NotFound(f"flow {value!r} cannot be loaded")
            return Target("flow", value)
        from engine.legs import NUMBER_RE

        if not NUMBER_RE.match(value):
            raise InvalidArgs(f"{value!r} is not a dialable number (digits, *, #, optional leading +)")
        return Target("external", value, trunk=self.trunk_for(call.tenant, trunk or call.trunk))

    def _guess(self, call: Call, value: str) -> tuple[str, str]:
        centre = self.centre
        if value in centre.agents or any(r.extension == value and r.state != "logged_out"
                                         for r in centre.agents.values()):
            return "agent", value
        if value in centre.config.queues:
            return "queue", value
        return "external", value

    def trunk_for(self, tenant: str, preferred: str = "") -> str:
        """The trunk to dial out on: ``preferred`` when it is a trunk of ``tenant``, else the tenant's first."""
        trunks = self.centre.config.trunks
        if preferred:
            t = trunks.get(preferred)
            if t is None or t.tenant != tenant:
                raise NotFound(f"no trunk {preferred!r}")
            return preferred
        for name, t in sorted(trunks.items()):
            if t.tenant == tenant:
                return name
        raise NotFound(f"tenant {tenant} has no trunk to dial out")

    def _ring_timeout(self, call: Call) -> float:
        q = self.centre.config.queues.get(call.queue) if call.queue else None
        return float(q.ring_timeout_s) if q is not None else TRANSFER_RING_TIMEOUT_S

    def _dial_party(self, call: Call, target: Target, op: str, by: str) -> Party:
        """Ring the target of a transfer/consult (the target agent made busy in the ACD meanwhile)."""
        centre = self.centre
        n = self._next()
        holder: list[Party] = []

        def on_event(ev: LegEvent) -> None:
            if holder:
                self._party_event(call, holder[0], ev)

        if target.kind == "agent":
            rec = target.rec
            centre._cancel_wrapup(rec)
            centre.acd.busy(rec.acd_id, centre.now())
            rec.call_id = call.call_id
            centre._sync_agent(rec)
            centre._pump()
            out = centre.legs.dial_extension(rec.extension, call_id=call.call_id, tenant=call.tenant,
                                             caller_number=call.caller_number, ring_timeout_s=self._ring_timeout(call),
                                             leg_id=f"{call.call_id}/{op}-{rec.number}-{n}", agent=call.agent,
                                             purpose=op, on_event=on_event)
        else:
            out = centre.legs.dial_trunk(target.trunk, target.number, call_id=call.call_id, tenant=call.tenant,
                                         ring_timeout_s=self._ring_timeout(call), leg_id=f"{call.call_id}/{op}-ext-{n}",
                                         agent=call.agent, purpose=op, on_event=on_event, role=target.role)
        party = Party(target, out, op, by)
        holder.append(party)
        return party

    def _free_party_agent(self, call: Call, party: Party) -> None:
        """The party's agent is done with this call: after talking → wrap-up; never answered → ready again."""
        rec = party.target.rec
        if rec is None or rec.call_id != call.call_id:
            return
        centre = self.centre
        if party.answered:
            centre.release_agent(rec, call)
        else:
            centre.return_agent(rec, call)

    # ------------------------------------------------------------------ transfers
    def transfer(self, call: Call, target: Target, by: str = "op", on_done: Any = None) -> dict[str, Any]:
        """Blind transfer (see the module docstring); returns the op result."""
        self._talking(call)
        st = self.state(call)
        if st.op:
            raise InvalidState(f"call {call.call_id} has a {st.op} in progress")
        log = self._log(call)
        if target.kind in ("queue", "flow"):
            self._to_routing(call, target, by)
            if on_done is not None:
                on_done(True, 200, "OK")
            return {"call_id": call.call_id, "result": "transferred", "target": target.describe()}
        if target.kind == "agent" and target.rec.state != "ready":
            return self._unavailable(call, target, "transfer", on_done)
        st.op, st.held_before_op = "transfer", st.held
        st.held = False
        st.party = self._dial_party(call, target, "transfer", by)
        st.party.on_done = on_done
        self.layout(call)
        log.info("blind transfer to %s (%s)", target.describe(), by)
        self.publish(call, "call.transfer_started", target=target.describe(), by=by)
        return {"call_id": call.call_id, "result": "ringing", "target": target.describe()}

    def _unavailable(self, call: Call, target: Target, op: str, on_done: Any) -> dict[str, Any]:
        state = target.rec.state if target.rec is not None else "none"
        reason = f"agent {target.number} is {state}" if target.rec is not None else f"no free agent in {target.number}"
        self._log(call).info("%s to %s: %s", op, target.describe(), reason)
        self.record(call, f"{op}_failed", party=target.describe(), outcome="busy", status=0, reason=reason)
        self.publish(call, f"call.{op}_failed", target=target.describe(), outcome="busy", status=0, reason=reason)
        if on_done is not None:
            on_done(False, 486, "Busy Here")
        return {"call_id": call.call_id, "result": "failed", "outcome": "busy", "reason": reason,
                "target": target.describe()}

    def _to_routing(self, call: Call, target: Target, by: str) -> None:
        """Blind transfer to a queue or a flow: the agent leaves, the caller is routed again."""
        centre = self.centre
        st = self.state(call)
        old_agent = call.agent
        self._drop_agent_leg(call, "transferred")
        st.held = False
        st.op = ""
        self.layout(call)
        call.fire(CallTrigger.TRANSFER)
        call.transferred += 1
        self.record(call, "transfer_blind", agent=old_agent, party=target.describe(), by=by)
        self.publish(call, "call.transferred", agent=old_agent, from_agent=old_agent, target=target.describe(),
                     kind="blind", by=by)
        self._log(call).info("transferred to %s by agent %s", target.describe(), old_agent)
        call.agent = ""
        call.offered_agent = ""
        if target.kind == "queue":
            call.queue = target.number
            centre.start_music(call)
            centre.enqueue_now(call)
        else:
            call.flow = target.number
            centre._spawn(centre._route(call, centre._flow(target.number)))

    def _drop_agent_leg(self, call: Call, reason: str) -> None:
        """The agent-side leg leaves the room and is hung up; its agent goes to wrap-up."""
        centre, media = self.centre, self.centre.media
        leg = call.agent_leg
        if leg is None:
            return
        call.agent_leg = None
        for room in (call.room, self.state(call).consult_room):
            if room and room in media.rooms and leg.leg_id in media.rooms[room].members:
                media.leave(room, leg.leg_id)
        if leg.out is not None:
            leg.out.hangup(reason)
        leg.ended = True
        rec = centre.agents.get(call.agent)
        if rec is not None:
            centre.release_agent(rec, call)

    def _complete(self, call: Call, party: Party, kind: str) -> None:
        """The party replaces the agent on the call.

        Blind transfer answered, consult completed, or the agent left a conference.
        """
        centre, media = self.centre, self.centre.media
        st = self.state(call)
        old_agent = call.agent
        if party.on_done is not None:  # REFER: the final NOTIFY goes before our BYE to the transferor
            party.on_done(True, 200, "OK")
            party.on_done = None
        if st.consult_room and st.consult_room in media.rooms:
            if party.out.leg_id in media.rooms[st.consult_room].members:
                media.leave(st.consult_room, party.out.leg_id)
        if party.line is not None:
            self._close_line(party.line, status=487)
            party.line = None
        self._drop_agent_leg(call, "transferred")
        self._close_consult_room(call)
        if party.out.leg_id not in media.rooms[call.room].members:
            media.join(call.room, party.out.leg_id)
        role = "agent" if party.target.kind == "agent" else "external"
        call.agent_leg = CallLeg(party.out.leg_id, role, dialog=party.out.dialog, sdp=party.out.sdp,
                                 media_open=True, out=party.out)
        party.out.on_event = lambda ev: centre._agent_leg_event(call, ev)
        if party.target.kind == "agent":
            call.agent = party.target.number
        st.op, st.party, st.held = "", None, False
        self.layout(call)
        call.transferred += 1
        event = "transfer_blind" if kind == "blind" else "transfer_complete"
        self.record(call, event, agent=old_agent, party=party.target.describe(), by=party.by)
        for agent in {old_agent, call.agent} - {""}:
            self.publish(call, "call.transferred", agent=agent, from_agent=old_agent,
                         target=party.target.describe(), kind=kind, by=party.by)
        self._log(call).info("transferred from agent %s to %s (%s)", old_agent or "-", party.target.describe(), kind)

    def _restore(self, call: Call, party: Party, outcome: str, status: int, reason: str) -> None:
        """A transfer/consult party failed or left: the call goes back to what it was."""
        st = self.state(call)
        self._free_party_agent(call, party)
        self._close_consult_room(call)
        if party.line is not None:
            self._close_line(party.line, status=486 if outcome == "busy" else 480)
        op = party.op
        st.op, st.party = "", None
        st.held = st.held_before_op
        if call.state is not CallState.TALKING:
            return
        if call.agent_leg is None:  # the agent left meanwhile: nobody to go back to
            self.centre.hangup(call, f"{op}_failed")
            return
        self.layout(call)
        self._log(call).info("%s to %s failed: %s (%d %s); call restored", op, party.target.describe(), outcome,
                             status, reason)
        self.record(call, f"{op}_failed", party=party.target.describe(), outcome=outcome, status=status,
                    reason=reason)
        self.publish(call, f"call.{op}_failed", target=party.target.describe(), outcome=outcome, status=status,
                     reason=reason)

    # ------------------------------------------------------------------ consult
    def consult(self, call: Call, target: Target, by: str = "op") -> dict[str, Any]:
        """Hold the caller and ring the consulted party (agent, a queue's first free agent, or external)."""
        self._talking(call)
        st = self.state(call)
        if st.op:
            raise InvalidState(f"call {call.call_id} has a {st.op} in progress")
        if target.kind == "flow":
            raise InvalidArgs("a flow cannot be consulted")
        if target.kind == "queue":
            target = self._queue_agent(call, target)
            if target.rec is None:
                return self._unavailable(call, target, "consult", None)
        if target.kind == "agent" and target.rec.state != "ready":
            return self._unavailable(call, target, "consult", None)
        st.op, st.held_before_op = "consult", st.held
        st.held = False
        st.party = self._dial_party(call, target, "consult", by)
        self.layout(call)
        self.record(call, "consult", party=target.describe(), by=by)
        self.publish(call, "call.consult_started", target=target.describe(), by=by)
        self._log(call).info("consulting %s", target.describe())
        return {"call_id": call.call_id, "result": "ringing", "target": target.describe()}

    def _queue_agent(self, call: Call, target: Target) -> Target:
        centre = self.centre
        qid = centre.queue_ids[target.number]
        for aid in centre.acd.free_agents(qid):
            rec = centre.agents_by_acd.get(aid)
            if rec is not None and rec.number != call.agent and rec.state == "ready":
                return Target("agent", rec.number, rec)
        return Target("queue", target.number)

    def _consulting(self, call: Call) -> Party:
        self._talking(call)
        st = self.state(call)
        if st.op not in ("consult", "conference") or st.party is None:
            raise InvalidState(f"call {call.call_id} has no consultation in progress")
        return st.party

    def transfer_complete(self, call: Call) -> dict[str, Any]:
        """The consulted (answered) party takes the call over; the agent goes to wrap-up."""
        party = self._consulting(call)
        if not party.answered:
            raise InvalidState(f"the consulted party {party.target.describe()} has not answered yet")
        self._complete(call, party, "consult")
        return {"call_id": call.call_id, "result": "transferred", "target": party.target.describe()}

    def conference(self, call: Call) -> dict[str, Any]:
        """Caller, agent and the consulted party all hear each other."""
        party = self._consulting(call)
        st = self.state(call)
        if not party.answered:
            raise InvalidState(f"the consulted party {party.target.describe()} has not answered yet")
        if st.op == "conference":
            raise InvalidState(f"call {call.call_id} is already a conference")
        media = self.centre.media
        if st.consult_room in media.rooms and party.out.leg_id in media.rooms[st.consult_room].members:
            media.leave(st.consult_room, party.out.leg_id)
        self._close_consult_room(call)
        media.join(call.room, party.out.leg_id)
        st.op, st.held = "conference", False
        self.layout(call)
        self.record(call, "conference", party=party.target.describe())
        self.publish(call, "call.conference", target=party.target.describe())
        self._log(call).info("conference with %s", party.target.describe())
        return {"call_id": call.call_id, "result": "conference", "target": party.target.describe()}

    def consult_cancel(self, call: Call) -> dict[str, Any]:
        """Drop the consulted party (ringing or answered, or the third party of a conference); caller retrieved."""
        party = self._consulting(call)
        st = self.state(call)
        was = st.op
        party.out.hangup("consult_cancelled")
        if party.line is not None:
            self._close_line(party.line, status=487)
        self._free_party_agent(call, party)
        self._close_consult_room(call)
        if was == "conference" and party.out.leg_id in self.centre.media.rooms[call.room].members:
            self.centre.media.leave(call.room, party.out.leg_id)
        st.op, st.party = "", None
        st.held = st.held_before_op if was == "consult" else False
        self.layout(call)
        self.record(call, "consult_cancel", party=party.target.describe(), was=was)
        self.publish(call, "call.consult_ended", target=party.target.describe(), reason="cancelled")
        return {"call_id": call.call_id, "result": "cancelled", "target": party.target.describe()}

    def _close_consult_room(self, call: Call) -> None:
        st, media = self.state(call), self.centre.media
        if st.consult_room and st.consult_room in media.rooms:
            media.destroy_room(st.consult_room)
        st.consult_room = ""

    # ------------------------------------------------------------------ party legs
    def _party_event(self, call: Call, party: Party, ev: LegEvent) -> None:
        st = self.states.get(call.call_id)
        if st is None or st.party is not party or call.state is not CallState.TALKING:
            return
        media = self.centre.media
        if isinstance(ev, LegRinging):
            self.publish(call, f"call.{party.op}_ringing", target=party.target.describe())
        elif isinstance(ev, LegAnswered):
            party.answered = True
            if party.op == "transfer":
                self._complete(call, party, "blind")
                return
            if call.agent_leg is None:  # the agent hung up while it rang: a blind transfer now
                self._complete(call, party, "consult")
                return
            if party.line is not None:
                self._line_answered(call, party)
                self.publish(call, "call.consult_answered", target=party.target.describe())
                return
            st.consult_room = f"consult-{call.call_id}"
            media.create_room(st.consult_room, call.tenant)
            media.join(st.consult_room, call.agent_leg.leg_id)
            media.join(st.consult_room, party.out.leg_id)
            media.apply_hear_set(st.consult_room, "two_party", caller=party.out.leg_id, agent=call.agent_leg.leg_id)
            self.publish(call, "call.consult_answered", target=party.target.describe())
        elif isinstance(ev, LegFailed):
            self._restore(call, party, ev.outcome.value, ev.status, ev.reason)
            if party.on_done is not None:
                party.on_done(False, ev.status or 500, ev.reason or ev.outcome.value)
        elif isinstance(ev, LegEnded):
            if st.op == "conference":
                if party.out.leg_id in media.rooms[call.room].members:
                    media.leave(call.room, party.out.leg_id)
                self._free_party_agent(call, party)
                st.op, st.party = "", None
                self.layout(call)
                self.record(call, "party_left", party=party.target.describe(), reason=ev.reason)
                self.publish(call, "call.party_left", target=party.target.describe(), reason=ev.reason)
            else:
                self._restore(call, party, "hangup", 0, ev.reason)

    def _leg_hook(self, call: Call, ev: LegEvent) -> bool:
        """Events of the call's agent-side leg the call path does not handle itself."""
        if isinstance(ev, LegHoldChanged):
            try:
                (self.hold if ev.held else self.retrieve)(call, by="phone")
            except Conflict as exc:
                self._log(call).info("phone %s ignored: %s", "hold" if ev.held else "retrieve", exc)
            return True
        if isinstance(ev, LegEnded):
            st = self.states.get(call.call_id)
            if st is None or st.party is None or call.state is not CallState.TALKING:
                return False
            party = st.party  # the agent's phone hung up during a transfer, consult or conference
            if party.answered and st.op in ("consult", "conference"):
                self._complete(call, party, "consult")
            else:  # still ringing: go on as a blind transfer
                self._drop_agent_leg(call, "agent_hangup")
                st.op, party.op = "transfer", "transfer"
                self.layout(call)
            return True
        return False

    # ------------------------------------------------------------------ the phone's own consult line
    def handle(self, ev: Any) -> bool:
        """SIP events of phone consult lines (re-INVITE, BYE); True when consumed."""
        from sip.events import DialogTerminated, RequestReceived

        dialog = getattr(ev, "dialog", None)
        tag = getattr(dialog, "data", None)
        if not (isinstance(tag, tuple) and len(tag) == 2 and tag[0] == "phone-line"):
            return False
        call = self.centre.calls.get(tag[1])
        st = self.states.get(tag[1])
        party = st.party if st is not None else None
        line = party.line if party is not None else None
        if isinstance(ev, RequestReceived):
            if line is None or line.dialog is not dialog:
                self.centre.endpoint.respond(ev.transaction, 481)
            elif ev.request.method == "INVITE":
                self._line_reinvite(line, ev)
            else:
                self.centre.endpoint.respond(ev.transaction, 200)
            return True
        if isinstance(ev, DialogTerminated) and call is not None and line is not None and line.dialog is dialog:
            self._close_line(line)
            if call.state is CallState.TALKING and st is not None and st.op == "consult":
                party.out.hangup("consult_cancelled")  # type: ignore[union-attr]
                self._restore(call, party, "cancelled", 0, "the phone hung up its consult line")  # type: ignore
        return True

    def phone_invite(self, ev: Any) -> bool:
        """An INVITE from an agent's phone (not a trunk): a consult of the agent's call; True when answered."""
        centre = self.centre
        ep, req = centre.endpoint, ev.request
        auth = centre.registrar.authenticator if centre.registrar is not None else None
        from_user = getattr(req.from_.uri, "user", None) or ""
        binding = self._from_phone(tuple(ev.source), from_user) if auth is not None else None
        if binding is None:
            return False
        res = auth.authenticate(req, centre.now())
        if res.status:
            ep.respond(ev.transaction, res.status, res.reason, headers=res.headers)
            return True
        rec = next((r for r in centre.agents.values() if r.state != "logged_out"
                    and res.user in (r.extension, r.number)), None)
        call = centre.calls.get(rec.call_id) if rec is not None else None
        if rec is None or call is None or call.agent != rec.number or call.state is not CallState.TALKING:
            ep.respond(ev.transaction, 403, "Forbidden (a phone may only dial a consult of its call)")
            return True
        log = self._log(call)
        try:
            target = self.resolve(call, getattr(req.uri, "user", "") or "", allow=("agent", "external"))
            if self.state(call).op:
                raise InvalidState("a transfer or consult is in progress")
        except (NotFound, InvalidArgs, Forbidden, InvalidState) as exc:
            log.info("phone consult to %s refused: %s", req.uri_text, exc)
            ep.respond(ev.transaction, 403 if isinstance(exc, (Forbidden, InvalidState)) else 404, str(exc)[:80])
            return True
        from engine.callpath import sdp_payload_types
        from sip.sdp import SdpSession, SessionDescription

        leg_id = f"{call.call_id}/line-{self._next()}"
        sdp = SdpSession(centre.config.media.host, int(time.time()) * 1000 + self._seq)
        try:
            offer = SessionDescription.parse(req.body)
            mleg = centre.media.create_leg(leg_id, call_id=call.call_id, tenant=call.tenant,
                                           payload_types=sdp_payload_types(offer))
            # SDES-SRTP per [sip] phone_srtp when the phone is on TLS, else plain (engine/mediasec.py)
            answer, neg = centre.mediasec.answer(leg_id, centre.mediasec.phone_mode(binding), ev.transport, sdp,
                                                 offer, mleg.local_port)
            centre.media.update_leg(leg_id, remote=(neg.remote_address, neg.remote_port) if neg.remote_address
                                    else None, codec=neg.codec)
        except Exception as exc:
            if leg_id in centre.media.legs:
                centre.media.destroy_leg(leg_id)
            log.info("phone consult: no acceptable media (%s): 488", exc)
            ep.respond(ev.transaction, 488)
            return True
        line = PhoneLine(req.call_id, leg_id, sdp, ev.transaction, bytes(answer))
        if target.kind == "agent" and target.rec.state != "ready":
            self._close_line(line)
            ep.respond(ev.transaction, 486, f"Busy Here (agent {target.number} is {target.rec.state})")
            self._unavailable(call, target, "consult", None)
            return True
        result = self.consult(call, target, by="phone")
        st = self.state(call)
        if result["result"] != "ringing" or st.party is None:
            self._close_line(line)
            ep.respond(ev.transaction, 486)
            return True
        st.party.line = line
        ep.respond(ev.transaction, 180)
        return True

    def _from_phone(self, source: tuple[str, int], from_user: str) -> Any:
        """The binding of the phone registered as ``from_user`` at ``source`` (Contact or REGISTER source), or None."""
        from engine.callpath import aor_user
        from sip.dialog import uri_address

        loc = self.centre.registrar.location
        for aor in loc.aors():
            if not from_user or aor_user(aor) != from_user:
                continue
            for b in loc.lookup(aor):
                found = uri_address(b.contact)
                if tuple(b.source) == source or (found is not None and tuple(found[0]) == source):
                    return b
        return None

    def _line_answered(self, call: Call, party: Party) -> None:
        """The target of the phone's consult answered: 200 to the phone, phone line ↔ target."""
        line, media = party.line, self.centre.media
        assert line is not None
        line.dialog = self.centre.endpoint.respond(line.transaction, 200, body=line.answer,
                                                   content_type="application/sdp")
        if line.dialog is not None:
            line.dialog.data = ("phone-line", call.call_id)
        st = self.state(call)
        st.consult_room = f"consult-{call.call_id}"
        media.create_room(st.consult_room, call.tenant)
        media.join(st.consult_room, line.leg_id)
        media.join(st.consult_room, party.out.leg_id)
        media.apply_hear_set(st.consult_room, "two_party", caller=party.out.leg_id, agent=line.leg_id)

    def _line_reinvite(self, line: PhoneLine, ev: Any) -> None:
        from engine.callpath import sdp_payload_types
        from sip.sdp import SessionDescription

        centre = self.centre
        try:
            offer = SessionDescription.parse(ev.request.body)
            answer, neg = centre.mediasec.reanswer(line.leg_id, ev.transport, line.sdp, offer,  # SRTP kept
                                                   centre.media.legs[line.leg_id].local_port)
            centre.media.update_leg(line.leg_id, remote=(neg.remote_address, neg.remote_port)
                                    if neg.remote_address else None, codec=neg.codec,
                                    payload_types=sdp_payload_types(offer), direction=neg.direction)
        except Exception:
            centre.endpoint.respond(ev.transaction, 488)
            return
        centre.endpoint.respond(ev.transaction, 200, body=bytes(answer), content_type="application/sdp")

    def _close_line(self, line: PhoneLine, *, status: int = 0) -> None:
        """End the phone's consult line: final status while unanswered, BYE once answered; media leg gone."""
        centre = self.centre
        if line.dialog is None and status:
            try:
                centre.endpoint.respond(line.transaction, status)
            except Exception as exc:
                logger.debug("consult line %s: final %d not sent: %s", line.call_id, status, exc)
        elif line.dialog is not None and not line.dialog.terminated:
            centre.endpoint.bye(line.dialog)
        if line.leg_id in centre.media.legs:
            centre.media.destroy_leg(line.leg_id)

    # ------------------------------------------------------------------ phone REFER
    def _leg_request(self, leg: OutgoingLeg, ev: Any) -> bool:
        """REFER on an agent's leg (RFC 3515; Replaces, RFC 3891, refused with 501)."""
        if ev.request.method != "REFER":
            return False
        centre = self.centre
        ep = centre.endpoint
        call = centre.calls.get(leg.call_id)
        if call is None or call.agent_leg is None or call.agent_leg.out is not leg:
            ep.respond(ev.transaction, 403, "Forbidden (not the agent leg of a call)")
            return True
        refer_to = ev.request.headers.get("Refer-To") or ""
        if not refer_to:
            ep.respond(ev.transaction, 400, "Bad Request (no Refer-To)")
            return True
        from sip.uri import parse_uri

        uri_text = refer_to.strip()
        if "<" in uri_text:
            uri_text = uri_text[uri_text.index("<") + 1:uri_text.index(">")]
        if "replaces=" in uri_text.lower():
            return self._refer_replaces(call, leg, ev, uri_text)
        try:
            user = getattr(parse_uri(uri_text), "user", None) or ""
            target = self.resolve(call, user, allow=("agent", "queue", "external"))
        except (ValueError, NotFound, InvalidArgs, Forbidden) as exc:
            self._log(call).info("REFER to %r refused: %s", refer_to, exc)
            ep.respond(ev.transaction, 403 if isinstance(exc, Forbidden) else 404, str(exc)[:80])
            return True
        dialog = leg.dialog

        def notify(status: int, reason: str, final: bool) -> None:
            if dialog is None or dialog.terminated:
                return
            state = "terminated;reason=noresource" if final else "active;expires=60"
            try:
                ep.request_in_dialog(dialog, "NOTIFY", headers=[("Event", "refer"), ("Subscription-State", state)],
                                     body=f"SIP/2.0 {status} {reason}\r\n".encode(),
                                     content_type="message/sipfrag;version=2.0")
            except Exception as exc:
                self._log(call).debug("NOTIFY not sent: %s", exc)

        try:
            self._talking(call)
            if self.state(call).op:
                raise InvalidState("a transfer or consult is in progress")
        except InvalidState as exc:
            ep.respond(ev.transaction, 403, f"Forbidden ({exc})"[:80])
            return True
        ep.respond(ev.transaction, 202, "Accepted")
        notify(100, "Trying", False)  # RFC 3515 §2.4.4: the implicit subscription's first NOTIFY
        self.transfer(call, target, by="phone", on_done=lambda ok, status, reason: notify(status, reason, True))
        return True

    def _refer_replaces(self, call: Call, leg: OutgoingLeg, ev: Any, uri_text: str) -> bool:
        """Attended transfer (RFC 3891): the Replaces dialog must be the phone's answered consult line."""
        from urllib.parse import unquote

        ep = self.centre.endpoint
        replaces = unquote(uri_text.split("?", 1)[1]).split("&")
        value = next((h.split("=", 1)[1] for h in replaces if h.lower().startswith("replaces=")), "")
        replaced_call_id = value.split(";", 1)[0]
        st = self.states.get(call.call_id)
        party = st.party if st is not None else None
        if party is None or party.line is None or party.line.call_id != replaced_call_id:
            # not 481: to an in-dialog request it would end the REFER's own dialog (RFC 3261 §12.2.1.2)
            ep.respond(ev.transaction, 404, "Not Found (Replaces names no consult line of this call)")
            return True
        if not party.answered:
            ep.respond(ev.transaction, 403, "Forbidden (the consulted party has not answered)")
            return True
        dialog = leg.dialog
        ep.respond(ev.transaction, 202, "Accepted")
        for status, reason, state in ((100, "Trying", "active;expires=60"),
                                      (200, "OK", "terminated;reason=noresource")):
            ep.request_in_dialog(dialog, "NOTIFY", headers=[("Event", "refer"), ("Subscription-State", state)],
                                 body=f"SIP/2.0 {status} {reason}\r\n".encode(),
                                 content_type="message/sipfrag;version=2.0")
        party.by = "phone"
        self._complete(call, party, "consult")
        return True

    # ------------------------------------------------------------------ DTMF
    def send_dtmf(self, call: Call, digits: str, to: str = "caller") -> dict[str, Any]:
        """RFC 4733 digits to the caller leg (or the consulted party)."""
        self._talking(call)
        if to == "caller":
            leg_id = call.caller.leg_id  # type: ignore[union-attr]
        elif to == "party":
            st = self.state(call)
            if st.party is None or not st.party.answered:
                raise InvalidState(f"call {call.call_id} has no answered consulted party")
            leg_id = st.party.out.leg_id
        else:
            raise InvalidArgs(f"to must be 'caller' or 'party', got {to!r}")
        if not digits or any(d not in "0123456789*#ABCDabcd" for d in digits) or len(digits) > 64:
            raise InvalidArgs(f"digits {digits!r}: 1-64 of 0-9 * # A-D")
        try:
            self.centre.media.send_dtmf(leg_id, digits.upper())
        except Exception as exc:
            raise InvalidState(f"cannot send DTMF on {to}: {exc}") from exc
        return {"call_id": call.call_id, "digits": digits, "to": to}

    # ------------------------------------------------------------------ click-to-dial
    def dial(self, rec: Any, number: str, *, trunk: str = "", caller_number: str | None = None,
             role: str = "") -> Call:
        """Click-to-dial: ring the agent's phone, then dial ``number`` out; returns the new outbound call.

        Raises:
            InvalidState: the agent is not logged in, or busy/ringing.
            NotFound / Forbidden / InvalidArgs: trunk or number (engine/legs.py).
        """
        centre = self.centre
        if rec.state not in ("ready", "not_ready", "wrapup"):
            raise InvalidState(f"agent {rec.number} is {rec.state}")
        from engine.legs import NUMBER_RE

        if not NUMBER_RE.match(number or ""):
            raise InvalidArgs(f"{number!r} is not a dialable number (digits, *, #, optional leading +)")
        trunk = self.trunk_for(rec.tenant, trunk)
        conf = centre.config.trunks[trunk]
        shown = conf.caller_number if caller_number is None else caller_number
        call_id = f"dial-{int(time.time() * 1000)}-{self._next()}@{centre.config.sip.domain}"
        call = Call(call_id, rec.tenant, shown, number, trunk, "", direction="outbound")
        call.agent = rec.number
        call.grp = centre.group_for(call, rec.number)
        centre.calls[call_id] = call
        from engine.recovery import journal_row
        centre._store("call_journal", journal_row(call))  # crash recovery (engine/recovery.py)
        st = self.state(call)
        st.dial = {"number": number, "trunk": trunk, "caller_number": shown, "role": role}
        centre._cancel_wrapup(rec)
        centre.acd.busy(rec.acd_id, centre.now())
        rec.call_id = call_id
        centre._sync_agent(rec)
        centre._pump()
        out = centre.legs.dial_extension(rec.extension, call_id=call_id, tenant=rec.tenant, caller_number=number,
                                         ring_timeout_s=DIAL_AGENT_RING_TIMEOUT_S, leg_id=f"{call_id}/agent",
                                         agent=rec.number, purpose="dial",
                                         on_event=lambda ev: self._dial_agent_event(call, ev))
        call.agent_leg = CallLeg(out.leg_id, "agent", sdp=out.sdp, media_open=True, out=out)
        self._log(call).info("click-to-dial by agent %s: %s via %s (caller id %s)", rec.number, number, trunk, shown)
        self.record(call, "dial", party=f"number:{number}", trunk=trunk, caller_number=shown)
        self.publish(call, "call.dialing", stage="agent_phone", number=number)
        return call

    def _dial_agent_event(self, call: Call, ev: LegEvent) -> None:
        centre = self.centre
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.TALKING:
            centre._agent_leg_event(call, ev)
            return
        if isinstance(ev, LegAnswered):
            st = self.state(call)
            media = centre.media
            call.room = f"room-{call.call_id}"
            media.create_room(call.room, call.tenant)
            media.join(call.room, ev.leg.leg_id)
            call.agent_leg.dialog = ev.leg.dialog  # type: ignore[union-attr]
            try:
                out = centre.legs.dial_trunk(st.dial["trunk"], st.dial["number"], call_id=call.call_id,
                                             tenant=call.tenant, caller_number=st.dial["caller_number"],
                                             ring_timeout_s=DIAL_RING_TIMEOUT_S, leg_id=f"{call.call_id}/far",
                                             agent=call.agent, purpose="dial", role=st.dial.get("role", ""),
                                             on_event=lambda e: self._dial_far_event(call, e))
            except Exception as exc:
                self._dial_failed(call, "rejected", 0, str(exc))
                return
            call.caller = CallLeg(out.leg_id, "caller", sdp=out.sdp, media_open=True, out=out)
            self.publish(call, "call.dialing", stage="number", number=st.dial["number"])
        elif isinstance(ev, LegFailed):
            self._dial_failed(call, f"agent_{ev.outcome.value}", ev.status, ev.reason)
        elif isinstance(ev, LegEnded):
            centre.hangup(call, "agent_hangup")

    def _dial_far_event(self, call: Call, ev: LegEvent) -> None:
        centre, media = self.centre, self.centre.media
        if call.state is CallState.ENDED:
            return
        if isinstance(ev, LegAnswered) and call.state is CallState.ROUTING:
            call.caller.dialog = ev.leg.dialog  # type: ignore[union-attr]
            media.join(call.room, ev.leg.leg_id)
            call.fire(CallTrigger.CONNECT)
            call.answered_ts = time.time()
            self.layout(call)
            centre._start_recording(call)
            self.layout(call)
            self._log(call).info("click-to-dial answered by %s", call.dialed_number)
            self.publish(call, "call.answered", direction="outbound", wait_s=0.0)
        elif isinstance(ev, LegFailed):
            self._dial_failed(call, ev.outcome.value, ev.status, ev.reason)
        elif isinstance(ev, LegEnded):
            if call.caller is not None:
                call.caller.ended = True
            centre.hangup(call, "caller_hangup")

    def _dial_failed(self, call: Call, outcome: str, status: int, reason: str) -> None:
        self._log(call).info("click-to-dial failed: %s (%d %s)", outcome, status, reason)
        self.record(call, "dial_failed", outcome=outcome, status=status, reason=reason)
        self.publish(call, "call.dial_failed", outcome=outcome, status=status, reason=reason)
        self.centre.hangup(call, outcome)

    # ------------------------------------------------------------------ forwarding on ring no answer
    def forward(self, call: Call, rec: Any) -> bool:
        """The offered agent did not answer and has a ``forward_number``: ring it; True when taken over."""
        centre = self.centre
        number = centre.config.agents[rec.number].forward_number
        if not number or call.state is not CallState.OFFERING:
            return False
        try:
            trunk = self.trunk_for(call.tenant, call.trunk)
        except (NotFound, Forbidden):
            return False
        log = self._log(call)
        call.fire(CallTrigger.FORWARD)
        centre._stop_ringing(call)
        call.ring_no_answer_count += 1
        centre._queue_log(call, "ring_no_answer", agent=rec.number)
        centre.acd.abandon(call.acd_id, centre.now())
        centre.acd.not_ready(rec.acd_id, centre.now())
        rec.reason_code = "ring_no_answer"
        centre._sync_agent(rec, force=True)
        centre._pump()
        centre._queue_log(call, "forwarded", agent=rec.number, number=number)
        holder: dict[str, Any] = {}
        out = centre.legs.dial_trunk(trunk, number, call_id=call.call_id, tenant=call.tenant,
                                     ring_timeout_s=self._ring_timeout(call),
                                     leg_id=f"{call.call_id}/forward-{rec.number}-{self._next()}",
                                     agent=rec.number, purpose="forward",
                                     on_event=lambda ev: self._forward_event(call, holder, ev))
        holder.update(out=out, agent=rec.number, number=number)
        log.info("agent %s did not answer: forwarding to %s via %s", rec.number, number, trunk)
        self.record(call, "forward", agent=rec.number, party=f"number:{number}", trunk=trunk)
        self.publish(call, "call.forwarding", agent=rec.number, number=number)
        return True

    def _forward_event(self, call: Call, holder: dict[str, Any], ev: LegEvent) -> None:
        centre, media = self.centre, self.centre.media
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.TALKING:
            centre._agent_leg_event(call, ev)
            return
        if isinstance(ev, LegAnswered) and call.state is CallState.ROUTING:
            out = ev.leg
            call.agent_leg = CallLeg(out.leg_id, "external", dialog=out.dialog, sdp=out.sdp, media_open=True, out=out)
            call.agent = holder["agent"]
            call.fire(CallTrigger.CONNECT)
            call.answered_ts = time.time()
            centre.stop_music(call)
            call.room = call.room or f"room-{call.call_id}"
            if call.room not in media.rooms:
                media.create_room(call.room, call.tenant)
                media.join(call.room, call.caller.leg_id)  # type: ignore[union-attr]
            media.join(call.room, out.leg_id)
            if not call.recorded:
                centre._start_recording(call)
            self.layout(call)
            self.publish(call, "call.answered", forwarded_to=holder["number"], wait_s=0.0)
        elif isinstance(ev, LegFailed) and call.state is CallState.ROUTING:
            self.record(call, "forward_failed", agent=holder["agent"], party=f"number:{holder['number']}",
                        outcome=ev.outcome.value, status=ev.status)
            self.publish(call, "call.forward_failed", agent=holder["agent"], number=holder["number"],
                         outcome=ev.outcome.value, status=ev.status)
            centre.enqueue_now(call)

    # ------------------------------------------------------------------ end of a call
    def call_ending(self, call: Call) -> None:
        """``call`` is ending: drop every call-control leg, stop the music, close the hold time."""
        st = self.states.pop(call.call_id, None)
        if st is None:
            return
        media = self.centre.media
        if st.hold_started is not None:
            call.hold_s += time.time() - st.hold_started
            st.hold_started = None
        if st.party is not None:
            st.party.out.hangup("call_ended")
            if st.party.line is not None:
                self._close_line(st.party.line, status=487)
            self._free_party_agent(call, st.party)
            if st.party.on_done is not None:
                st.party.on_done(False, 487, "Request Terminated")
        if st.moh and media is not None and st.moh in media.players:
            media.stop_playback(st.moh)
        if st.consult_room and media is not None and st.consult_room in media.rooms:
            media.destroy_room(st.consult_room)
