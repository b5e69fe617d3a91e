"""The call/leg model of the inbound call path (ARCHITECTURE.md: call, leg, agent).

Theory of operation
-------------------
A :class:`Call` is what the engine (and its CDR) sees: one customer
contact, from the trunk INVITE to the last BYE.  It owns legs: the caller
leg (the trunk dialog, UAS side) and, once an agent is offered, the agent
leg (our INVITE to the agent's phone, UAC side).  Each :class:`CallLeg`
pairs a SIP dialog with a media leg of the :class:`media.engine.MediaEngine`
(same id), so "hang up a leg" ends both.

A call moves through :class:`CallState` by the transitions of
:data:`CALL_TRANSITIONS` (STYLE.md: enum + transition table)::

    ROUTING -> QUEUED -> OFFERING -> TALKING -> ENDED
       ^        ^  |         |          |          ^
       |        '--+---------'          '-> POST_CALL   (the agent hung up first and the
       '-----------'  (the IVR takes       the caller stays for a post-call flow, e.g. a
                       the caller out      survey: engine/ivrbridge.py)
                       of the queue;
                       ring no answer / reject: back to the queue)

An agent's live state (:class:`AgentRecord`) mirrors the ACD's agent state
(``engine.acd_types.AgentState``) with what the ACD does not know: the
extension the agent logged in on, the call it is on, when the state began
(for the agent state log's durations) and the not-ready reason code.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any


class CallState(enum.Enum):
    ROUTING = "routing"
    QUEUED = "queued"
    OFFERING = "offering"
    TALKING = "talking"
    POST_CALL = "post_call"
    ENDED = "ended"


class CallTrigger(enum.Enum):
    QUEUE = "queue"
    OFFER = "offer"
    ANSWER = "answer"
    REQUEUE = "requeue"
    DEQUEUE = "dequeue"
    AGENT_LEFT = "agent_left"
    END = "end"
    TRANSFER = "transfer"
    """Call control: an agent sends the caller to a queue or a flow (engine/callcontrol.py)."""
    CONNECT = "connect"
    """Call control: bridged without the ACD (click-to-dial, forward to an external number)."""
    FORWARD = "forward"
    """Call control: the offered agent's ``forward_number`` is rung instead of requeueing."""


_S, _T = CallState, CallTrigger
CALL_TRANSITIONS: dict[CallState, dict[CallTrigger, CallState]] = {
    _S.ROUTING: {_T.QUEUE: _S.QUEUED, _T.END: _S.ENDED, _T.CONNECT: _S.TALKING},
    _S.QUEUED: {_T.OFFER: _S.OFFERING, _T.DEQUEUE: _S.ROUTING, _T.END: _S.ENDED},
    _S.OFFERING: {_T.ANSWER: _S.TALKING, _T.REQUEUE: _S.QUEUED, _T.OFFER: _S.OFFERING, _T.END: _S.ENDED,
                  _T.FORWARD: _S.ROUTING, _T.DEQUEUE: _S.ROUTING},  # dequeue: the offer is withdrawn
    _S.TALKING: {_T.END: _S.ENDED, _T.TRANSFER: _S.ROUTING, _T.AGENT_LEFT: _S.POST_CALL},
    _S.POST_CALL: {_T.END: _S.ENDED},
    _S.ENDED: {_T.END: _S.ENDED},
}


class IllegalTransition(Exception):
    """A call was asked to move along a transition the table lacks (a bug)."""


@dataclass(slots=True)
class CallLeg:
    """One side of a call: a SIP dialog plus the media leg with the same id."""

    leg_id: str
    role: str
    """``"caller"`` or ``"agent"``."""
    dialog: Any = None
    """The ``sip.dialog.Dialog`` once it exists."""
    invite_txn: Any = None
    """Our client INVITE transaction (agent legs, until answered) for CANCEL."""
    sdp: Any = None
    """``sip.sdp.SdpSession`` of this leg."""
    media_open: bool = False
    ended: bool = False
    out: Any = None
    """The ``engine.legs.OutgoingLeg`` of a leg the engine placed (agent phones)."""


@dataclass(slots=True)
class Call:
    """One inbound call (see the module docstring)."""

    call_id: str
    """Engine call id (also the SIP Call-ID of the trunk leg)."""
    tenant: str
    caller_number: str
    dialed_number: str
    trunk: str
    route: str
    queue: str = ""
    grp: str = ""
    """Skill group the call counts for (``cdr.grp``, group KPIs): see ``CallCentre.group_for``."""
    acd_id: int = 0
    state: CallState = CallState.ROUTING
    start_ts: float = field(default_factory=time.time)
    queued_ts: float | None = None
    answered_ts: float | None = None
    end_ts: float | None = None
    agent: str = ""
    offered_agent: str = ""
    ring_started_ts: float | None = None
    ring_s: float = 0.0
    ring_no_answer_count: int = 0
    end_reason: str = ""
    disposition: str = ""
    recorded: bool = False
    recording_path: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    """Attached data (``call.attach_data``), sections of keys."""
    variables: dict[str, Any] = field(default_factory=dict)
    """IVR variables collected before the queue."""
    caller: CallLeg | None = None
    agent_leg: CallLeg | None = None
    moh_player: str = ""
    ring_timer: Any = None
    room: str = ""
    ivr: Any = None
    """(IvrCall, task, IvrBridge) while a flow runs for the caller."""
    flow: str = ""
    mailbox: str = ""
    """``voicemail:`` route: the mailbox the caller leaves a message in."""
    greeting_player: str = ""
    announce_player: str = ""
    direction: str = "inbound"
    """``"inbound"`` (trunk call) or ``"outbound"`` (click-to-dial)."""
    hold_s: float = 0.0
    """Seconds the caller spent on hold (call control: hold and consult)."""
    transferred: int = 0
    """Completed transfers (blind or consultative) of this call."""
    agent_left_ts: float | None = None
    """When the agent hung up first and the caller stayed for a post-call flow (ends talk time)."""

    def fire(self, trigger: CallTrigger) -> CallState:
        nxt = CALL_TRANSITIONS[self.state].get(trigger)
        if nxt is None:
            raise IllegalTransition(f"call {self.call_id}: {trigger.value} not allowed in {self.state.value}")
        self.state = nxt
        return nxt

    def describe(self) -> dict[str, Any]:
        """The ``call.list`` / event view of the call."""
        return {"call_id": self.call_id, "tenant": self.tenant, "state": self.state.value,
                "caller_number": self.caller_number, "dialed_number": self.dialed_number,
                "trunk": self.trunk, "queue": self.queue, "agent": self.agent or self.offered_agent,
                "start_ts": self.start_ts, "answered_ts": self.answered_ts}

    def cdr_row(self) -> dict[str, Any]:
        """The store's ``cdr`` row (written once, when the call ended)."""
        import json

        end = self.end_ts or time.time()
        wait_s = 0.0
        if self.queued_ts is not None:
            wait_s = (self.answered_ts or end) - self.queued_ts
        talk_s = (self.agent_left_ts or end) - self.answered_ts if self.answered_ts is not None else 0.0
        return {"call_id": self.call_id, "tenant": self.tenant, "direction": self.direction,
                "caller_number": self.caller_number, "dialed_number": self.dialed_number,
                "trunk": self.trunk, "route": self.route, "flow": self.flow, "queue": self.queue, "grp": self.grp,
                "agent": self.agent,
                "start_ts": self.start_ts, "queued_ts": self.queued_ts, "answered_ts": self.answered_ts,
                "end_ts": end, "wait_s": round(max(0.0, wait_s), 3), "ring_s": round(self.ring_s, 3),
                "talk_s": round(max(0.0, talk_s), 3), "disposition": self.disposition,
                "end_reason": self.end_reason, "recorded": int(self.recorded),
                "ring_no_answer_count": self.ring_no_answer_count,
                "hold_s": round(self.hold_s, 3), "transferred": self.transferred,
                "data": json.dumps({"attached": self.data, "variables": self.variables}, default=str)}


@dataclass(slots=True)
class AgentRecord:
    """Live state of one configured agent (the ACD holds the matching state)."""

    number: str
    tenant: str
    acd_id: int
    state: str = "logged_out"
    extension: str = ""
    since: float = field(default_factory=time.time)
    reason_code: str = ""
    call_id: str = ""
    wrapup_timer: Any = None
    rejects: int = 0
    """Consecutive offers the phone rejected (reset by an answer)."""

    def describe(self) -> dict[str, Any]:
        return {"agent": self.number, "tenant": self.tenant, "state": self.state, "extension": self.extension,
                "since": self.since, "reason_code": self.reason_code, "call_id": self.call_id}
