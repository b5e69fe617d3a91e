"""Supervisor monitoring: listen, whisper, barge, intercept, force release, forced agent states.

Theory of operation
-------------------
Media is anchored in the engine (ARCHITECTURE.md "The call model"), so
monitoring is room membership plus hear-set data, never a feature of the
phones: a supervisor's own phone is rung (an INVITE with our SDP offer to
the contact its extension registered), and once it answers its media leg
joins the monitored call's room and the room gets one row of the hear-set
table (:class:`media.room.HearSet`):

===========  ===============================  ===============================
mode         the supervisor hears             who hears the supervisor
===========  ===============================  ===============================
listen       caller + agent                   nobody
whisper      caller + agent                   the agent only
barge        caller + agent                   caller and agent (three-way)
intercept    the caller                       the caller (the agent is gone)
===========  ===============================  ===============================

Switching between listen, whisper and barge while joined only changes the
room's rules (no re-ringing).  The call's recording goes on in the same
file, caller left / agent right; what the caller hears from the company
side is on the right: a barging supervisor is mixed into the right channel
(listen and whisper are not part of the customer conversation and are not
recorded), and after an intercept the supervisor replaces the agent there.

Intercept takes the call away from the agent: the supervisor's leg becomes
the call's company-side leg, the agent's leg gets a BYE and the agent goes
to wrap-up (the ACD's ``call_ended``); the CDR keeps the agent who handled
the call and the call ends when the caller or the supervisor hangs up.
Force release ends the agent's call (BYE on every leg, CDR ``end_reason``
``force_released``, agent to wrap-up).

One :class:`Monitor` per supervisor (a supervisor has one phone) and per
call; its life is the state machine :data:`MONITOR_TRANSITIONS`::

    RINGING --answered--> JOINED --intercept--> INTERCEPTED
       |  ^ switch/intercept  |  ^ switch             |
       |  '-------'           |  '------'             |
       '--failed/leave/call_ended--> ENDED <--leave/call_ended/hangup

A joined monitor may also *move* to another agent's call: its leg leaves
the old room (which gets its own rules back) and joins the new one, with
no re-ringing (``supervisor.left`` with reason ``moved``, then
``supervisor.joined``).

A phone that rejects, does not answer within ``ring_timeout_s`` or times
out ends the monitor in RINGING: an event (``supervisor.failed``) and the
monitored call is untouched.  Every operation writes a ``call_events``
row (``party`` = the supervisor's user name, ``detail`` a JSON map).

Scope: the monitored agent must be in the session's tenant (else
``not_found``: another tenant's objects do not exist for this user) and,
for a supervisor, in at least one of the groups it supervises (else
``forbidden``; an agent in no group is not supervisable by group).
Admins act on their whole tenant.

Phone credentials follow the agents' hot-desking model (see
:mod:`engine.callpath`): the configuration keeps only scrypt hashes, so a
supervisor's phone credentials come into being at ``supervisor.phone_login``
(the user's control password, verified against its hash, gives HA1 for the
extension) and are dropped at ``supervisor.phone_logout``.

The :class:`Monitor` state machine is sans-IO; :class:`Supervision` does
the media work on the loop thread and rings the phone through
:mod:`engine.legs` (``dial_extension``: progress and the phone's hang-up
come back as leg events; a phone registered over TLS gets SDES-SRTP per
``[sip] phone_srtp``, one on UDP/TCP plain RTP, :mod:`engine.mediasec`).  Narrow hooks: ``CallCentre.hangup`` calls
:meth:`Supervision.call_ended`; ``CallControl.layout`` (which re-renders a
call's hear rules after hold, consult ...) calls :meth:`Supervision.relayout`,
so the supervisor keeps its mode when the call is plain talking again and
hears nobody (and is not heard) while the call is held or in a consult.
Monitoring ops refuse a call that is held or has a transfer, consult or
conference in progress (``invalid_state``).
"""
from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.app import CallLogger
from engine.calls import CallLeg, CallState
from engine.config import GLOBAL_TENANT
from engine.errors import Conflict, Forbidden, InvalidArgs, InvalidState, NotFound
from engine.events import (
    CallIntercepted, SupervisorFailed, SupervisorJoined, SupervisorLeft, SupervisorModeChanged, SupervisorRinging,
)
from media.room import HearSet
from engine.legs import LegAnswered, LegEnded, LegEvent, LegFailed

if TYPE_CHECKING:
    from engine.callpath import CallCentre
    from engine.calls import AgentRecord, Call
    from engine.ops import Session

logger = logging.getLogger("engine.supervision")

DEFAULT_RING_TIMEOUT_S = 20.0
"""How long a supervisor's phone rings before the join is given up (``supervisor.failed``)."""

FORCE_STATES = ("logged_out", "not_ready")
"""States ``agent.force_state`` may impose."""


class SupervisionMode(enum.Enum):
    """How a joined supervisor takes part (the hear-set rows above)."""

    LISTEN = "listen"
    WHISPER = "whisper"
    BARGE = "barge"


MODE_HEAR_SET: dict[SupervisionMode, HearSet] = {
    SupervisionMode.LISTEN: HearSet.LISTEN,
    SupervisionMode.WHISPER: HearSet.WHISPER,
    SupervisionMode.BARGE: HearSet.BARGE,
}


class MonitorState(enum.Enum):
    RINGING = "ringing"
    JOINED = "joined"
    INTERCEPTED = "intercepted"
    ENDED = "ended"


class MonitorTrigger(enum.Enum):
    ANSWERED = "answered"
    FAILED = "failed"
    SWITCH = "switch"
    INTERCEPT = "intercept"
    LEAVE = "leave"
    CALL_ENDED = "call_ended"


_S, _T = MonitorState, MonitorTrigger
MONITOR_TRANSITIONS: dict[MonitorState, dict[MonitorTrigger, MonitorState]] = {
    _S.RINGING: {_T.ANSWERED: _S.JOINED, _T.FAILED: _S.ENDED, _T.SWITCH: _S.RINGING, _T.INTERCEPT: _S.RINGING,
                 _T.LEAVE: _S.ENDED, _T.CALL_ENDED: _S.ENDED},
    _S.JOINED: {_T.SWITCH: _S.JOINED, _T.INTERCEPT: _S.INTERCEPTED, _T.LEAVE: _S.ENDED, _T.CALL_ENDED: _S.ENDED},
    _S.INTERCEPTED: {_T.LEAVE: _S.ENDED, _T.CALL_ENDED: _S.ENDED},
    _S.ENDED: {},
}


class IllegalMonitorTransition(Exception):
    """A monitor was asked to move along a transition the table lacks (a bug)."""


def recorder_channels(state: MonitorState, mode: SupervisionMode, *, caller: str, agent: str,
                      supervisor: str) -> list[list[str]]:
    """The call recorder's channels (caller left, company side right) for a monitor's state and mode."""
    if state is MonitorState.INTERCEPTED:
        return [[caller], [supervisor]]
    if state is MonitorState.JOINED and mode is SupervisionMode.BARGE:
        return [[caller], [agent, supervisor]]
    return [[caller], [agent]]


@dataclass(slots=True)
class Monitor:
    """One supervisor on (or ringing to join) one call."""

    supervisor: str
    """The supervisor's control user name."""
    extension: str
    """The phone that is rung."""
    tenant: str
    call_id: str
    agent: str
    """The monitored agent (the one on the call when the monitor began)."""
    groups: tuple[str, ...]
    """The monitored agent's groups (event scope)."""
    mode: SupervisionMode
    intercept: bool = False
    """Intercept requested: done as soon as the phone answers."""
    state: MonitorState = MonitorState.RINGING
    leg: CallLeg | None = None
    agent_leg_id: str = ""
    """The monitored agent's leg when the supervisor joined (the monitor ends when it leaves the call)."""
    started_ts: float = field(default_factory=time.time)
    joined_ts: float | None = None

    def fire(self, trigger: MonitorTrigger) -> MonitorState:
        """Move along :data:`MONITOR_TRANSITIONS`; raises :class:`IllegalMonitorTransition`."""
        nxt = MONITOR_TRANSITIONS[self.state].get(trigger)
        if nxt is None:
            raise IllegalMonitorTransition(
                f"monitor of call {self.call_id} by {self.supervisor}: {trigger.value} not allowed in {self.state.value}")
        self.state = nxt
        return nxt

    @property
    def mode_label(self) -> str:
        return "intercept" if self.intercept or self.state is MonitorState.INTERCEPTED else self.mode.value

    def describe(self) -> dict[str, Any]:
        return {"supervisor": self.supervisor, "extension": self.extension, "call_id": self.call_id,
                "agent": self.agent, "mode": self.mode_label, "state": self.state.value,
                "started_ts": self.started_ts, "joined_ts": self.joined_ts}


def hide_supervisor_events(session: Any, event: Any) -> bool:
    """Bus scope rule: ``supervisor.*`` events are never shown to agents (silent monitoring)."""
    return not (session.role == "agent" and event.name.startswith("supervisor."))


class Supervision:
    """The supervisor side of the call path (owned by :class:`engine.callpath.CallCentre`)."""

    def __init__(self, centre: "CallCentre") -> None:
        self.centre = centre
        self.monitors: dict[str, Monitor] = {}
        """Live monitors by supervisor user name."""
        self.by_call: dict[str, Monitor] = {}
        self.phones: dict[str, str] = {}
        """Supervisor user → extension its phone is logged in on (credentials live)."""
        self._seq = 0

    def attach(self, engine: Any) -> None:
        """Called by ``CallCentre.start``: hide ``supervisor.*`` events from agents."""
        if hide_supervisor_events not in engine.bus.scope_rules:
            engine.bus.scope_rules.append(hide_supervisor_events)

    # ------------------------------------------------------------------ targets and scope
    def target(self, session: "Session", agent: str, call_id: str) -> tuple["AgentRecord", "Call | None"]:
        """Resolve the agent (and its current call) an op acts on, checking scope.

        Either ``agent`` or ``call_id`` names the target; with both, the
        call must be that agent's.

        Raises:
            InvalidArgs: neither given.
            NotFound: unknown (or another tenant's) agent or call.
            Forbidden: the agent is not in a group the supervisor supervises.
        """
        c = self.centre
        call = None
        named = f"agent {agent}" if agent else f"the agent on call {call_id}"  # what the caller named
        if call_id:
            call = c.calls.get(call_id)
            if call is None or not session.sees_tenant(call.tenant):
                raise NotFound(f"no call {call_id!r}")
            agent = agent or call.agent or call.offered_agent
            if not agent:
                raise InvalidState(f"call {call_id} is not with an agent ({call.state.value})")
        if not agent:
            raise InvalidArgs("give 'agent' or 'call_id'")
        rec = c.agents.get(agent)
        if rec is None or not session.sees_tenant(rec.tenant):
            raise NotFound(f"no agent {agent!r}")
        groups = set(c.config.agents[rec.number].groups)  # type: ignore[union-attr]
        if (session.scope_kind == "groups" and not groups & session.groups) or \
                not session.sees(tenant=rec.tenant, groups=groups, agent=rec.number):
            # name only what the caller named: not the agent behind a call id, nor its groups
            raise Forbidden(f"user {session.user!r} does not supervise {named}")
        if call is not None and call.agent != rec.number and call.offered_agent != rec.number:
            raise NotFound(f"call {call_id} is not agent {rec.number}'s")
        return rec, call

    def talking_call(self, rec: "AgentRecord", call: "Call | None" = None) -> "Call":
        """The call ``rec`` is talking on; raises :class:`InvalidState` when it is on none."""
        c = self.centre
        call = call or c.calls.get(rec.call_id)
        if rec.state != "busy" or call is None or call.state is not CallState.TALKING or call.agent != rec.number \
                or call.agent_leg is None or call.caller is None or not call.room:
            raise InvalidState(f"agent {rec.number} is not on a call (state {rec.state})")
        return call

    def _extension(self, session: "Session") -> str:
        if session.user in self.phones:
            return self.phones[session.user]
        user = self.centre.config.users.get(session.user)  # type: ignore[union-attr]
        if user is None or not user.extension:
            raise InvalidArgs(f"user {session.user!r} has no phone extension ([users.{session.user}] extension)")
        return user.extension

    # ------------------------------------------------------------------ phone credentials
    async def phone_login(self, session: "Session", password: str, extension: str) -> dict[str, Any]:
        """Enable digest credentials for the supervisor's phone (see the module docstring).

        Raises:
            Forbidden: wrong password.  InvalidArgs: no extension given or configured.
            Conflict: the extension is in use by a logged-in agent or another user.
        """
        from engine.passwords import verify_password

        c = self.centre
        user = c.config.users[session.user]  # type: ignore[union-attr]
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_password, password, user.password)
        if not ok:
            raise Forbidden(f"wrong password for user {session.user}")
        extension = extension or user.extension
        if not extension:
            raise InvalidArgs(f"user {session.user!r} has no configured extension: give one")
        cfg = c.config
        assert cfg is not None
        if session.tenant != GLOBAL_TENANT:  # never another tenant's phone (its device or agent's extension)
            device = cfg.extensions.get(extension)
            if (device is not None and device.tenant != session.tenant) or any(
                    a.extension == extension and a.tenant != session.tenant for a in cfg.agents.values()):
                raise Forbidden(f"extension {extension} belongs to another tenant")

        def who(kind: str, name: str, tenant: str) -> str:  # never name another tenant's agent or user
            return f"{kind} {name}" if session.sees_tenant(tenant) else "another tenant"
        for rec in c.agents.values():
            if rec.state != "logged_out" and extension in (rec.extension, rec.number):
                raise Conflict(f"extension {extension} is in use by {who('agent', rec.number, rec.tenant)}")
        for other, ext in self.phones.items():
            if other != session.user and ext == extension:
                raise Conflict(f"extension {extension} is in use by "
                               f"{who('user', other, cfg.users[other].tenant)}")
        old = self.phones.get(session.user)
        if old and old != extension:
            c.credentials.pop(old, None)
        realm = c.config.sip.domain  # type: ignore[union-attr]
        c.credentials[extension] = hashlib.md5(f"{extension}:{realm}:{password}".encode()).hexdigest()
        self.phones[session.user] = extension
        logger.info("supervisor %s: phone credentials for extension %s", session.user, extension)
        return {"user": session.user, "extension": extension}

    def phone_logout(self, session: "Session") -> dict[str, Any]:
        """Drop the supervisor's phone credentials (a joined monitor stays up until it ends)."""
        extension = self.phones.pop(session.user, "")
        if not extension:
            raise InvalidState(f"user {session.user!r} has no phone logged in")
        self.centre.credentials.pop(extension, None)
        return {"user": session.user, "extension": extension}

    # ------------------------------------------------------------------ monitoring ops
    def monitor(self, session: "Session", rec: "AgentRecord", call: "Call | None", mode: SupervisionMode, *,
                intercept: bool = False, ring_timeout_s: float = DEFAULT_RING_TIMEOUT_S) -> Monitor:
        """``supervisor.listen`` / ``whisper`` / ``barge`` / ``intercept``.

        Rings the supervisor's phone; when this supervisor is already on (or
        ringing to) the agent's call, switches mode without re-ringing; when
        it is joined to another call, moves its leg to this one (no
        re-ringing either).

        Raises:
            InvalidState: the agent is not on a call, the call is held or in a
                consult/transfer/conference, or the call is already intercepted.
            Conflict: another supervisor is on the call, or this one is still
                ringing on / has intercepted another call (or asks to intercept
                from another call).
            InvalidArgs: the supervisor has no phone extension.
        """
        call = self.talking_call(rec, call)
        if not self._plain(call):
            raise InvalidState(f"call {call.call_id} is on hold or has a transfer/consult/conference in progress")
        mon = self.monitors.get(session.user)
        log = CallLogger(logger, {"call_id": call.call_id})
        other = self.by_call.get(call.call_id)
        if other is not None and other.supervisor != session.user:
            raise Conflict(f"call {call.call_id} is already monitored by {other.supervisor}")
        if mon is not None and mon.call_id != call.call_id:
            if mon.state is not MonitorState.JOINED:
                raise Conflict(f"user {session.user!r} is {mon.state.value} on call {mon.call_id} "
                               f"(agent {mon.agent}): supervisor.leave first")
            self._move(mon, rec, call, mode, intercept)
            return mon
        if mon is not None:
            if mon.state is MonitorState.INTERCEPTED:
                raise InvalidState(f"call {call.call_id} was intercepted: the supervisor is its party now")
            previous = mon.mode_label
            if intercept:
                mon.intercept = True
                mon.fire(MonitorTrigger.INTERCEPT)
                if mon.state is MonitorState.INTERCEPTED:
                    self._take_over(mon, call)
            else:
                mon.fire(MonitorTrigger.SWITCH)
                mon.mode = mode
                if mon.state is MonitorState.JOINED:
                    self._apply(mon, call)
            log.info("supervisor %s: %s → %s (%s)", mon.supervisor, previous, mon.mode_label, mon.state.value)
            self._row(mon, f"supervisor.{mon.mode_label}", previous_mode=previous, state=mon.state.value)
            if mon.state is MonitorState.JOINED:
                self.centre.engine.bus.publish_event(SupervisorModeChanged(
                    mon.supervisor, mon.call_id, mon.agent, mon.mode_label, previous, mon.tenant, mon.groups))
            return mon
        extension = self._extension(session)
        mon = Monitor(session.user, extension, call.tenant, call.call_id, rec.number,
                      tuple(self.centre.config.agents[rec.number].groups), mode,  # type: ignore[union-attr]
                      intercept=intercept)
        self._ring(mon, call, ring_timeout_s)
        self.monitors[mon.supervisor] = mon
        self.by_call[mon.call_id] = mon
        self._row(mon, f"supervisor.{mon.mode_label}", state=mon.state.value, extension=extension)
        self.centre.engine.bus.publish_event(SupervisorRinging(
            mon.supervisor, extension, mon.call_id, mon.agent, mon.mode_label, mon.tenant, mon.groups))
        return mon

    def _move(self, mon: Monitor, rec: "AgentRecord", call: "Call", mode: SupervisionMode, intercept: bool) -> None:
        """A joined supervisor goes straight to another agent's call: same phone leg, no re-ringing."""
        c = self.centre
        media = c.media
        assert media is not None and mon.leg is not None
        old = c.calls.get(mon.call_id)
        if old is not None and old.room in media.rooms and mon.leg.leg_id in media.rooms[old.room].members:
            media.leave(old.room, mon.leg.leg_id)
            self._restore(old)
        self._row(mon, "supervisor.left", reason="moved", to_call=call.call_id)
        c.engine.bus.publish_event(SupervisorLeft(mon.supervisor, mon.call_id, mon.agent, "moved",
                                                  mon.tenant, mon.groups))
        if self.by_call.get(mon.call_id) is mon:
            del self.by_call[mon.call_id]
        previous = mon.call_id
        mon.call_id, mon.agent, mon.tenant, mon.mode = call.call_id, rec.number, call.tenant, mode
        mon.groups = tuple(c.config.agents[rec.number].groups)  # type: ignore[union-attr]
        mon.joined_ts = time.time()
        mon.agent_leg_id = call.agent_leg.leg_id if call.agent_leg is not None else ""
        mon.intercept = intercept
        self.by_call[call.call_id] = mon
        media.join(call.room, mon.leg.leg_id)
        CallLogger(logger, {"call_id": call.call_id}).info("supervisor %s moved here from call %s (%s agent %s)",
                                                          mon.supervisor, previous, mon.mode_label, mon.agent)
        self._row(mon, f"supervisor.{mon.mode_label}", state=mon.state.value, from_call=previous)
        self._row(mon, "supervisor.joined", mode=mon.mode_label, from_call=previous)
        c.engine.bus.publish_event(SupervisorJoined(mon.supervisor, mon.call_id, mon.agent, mon.mode_label,
                                                    mon.tenant, mon.groups))
        if intercept:
            mon.fire(MonitorTrigger.INTERCEPT)
            self._take_over(mon, call)
        else:
            self._apply(mon, call)

    def leave(self, session: "Session") -> Monitor:
        """``supervisor.leave``: hang up the supervisor's monitor leg; the call goes on as before.

        Raises:
            InvalidState: not monitoring, or the call was intercepted (hang up the call instead).
        """
        mon = self.monitors.get(session.user)
        if mon is None:
            raise InvalidState(f"user {session.user!r} is not on a call")
        if mon.state is MonitorState.INTERCEPTED:
            raise InvalidState(f"call {mon.call_id} was intercepted: the supervisor is its party (call.hangup ends it)")
        self._end(mon, MonitorTrigger.LEAVE, "leave")
        return mon

    def force_release(self, session: "Session", rec: "AgentRecord", call: "Call | None") -> "Call":
        """``supervisor.force_release``: end the agent's call; the agent goes to wrap-up."""
        call = self.talking_call(rec, call)
        self._write_row(call.tenant, call.call_id, "supervisor.force_release", rec.number, session.user, {})
        CallLogger(logger, {"call_id": call.call_id}).info("supervisor %s force-releases agent %s",
                                                          session.user, rec.number)
        self.centre.hangup(call, "force_released")
        return call

    def force_state(self, session: "Session", rec: "AgentRecord", state: str, reason_code: str) -> "AgentRecord":
        """``agent.force_state``: log the agent out, or set it not ready with a reason.

        Raises:
            InvalidState: the agent is on a call (``supervisor.force_release`` first),
                or already logged out.
        """
        c = self.centre
        if rec.state == "busy":
            raise InvalidState(f"agent {rec.number} is on a call (supervisor.force_release first)")
        if rec.state == "logged_out":
            raise InvalidState(f"agent {rec.number} is logged out")
        previous = rec.state
        if state == "logged_out":
            c.logout(rec)
        else:
            if rec.state == "reserved":
                raise InvalidState(f"agent {rec.number} is being offered a call; try again in a moment")
            c.set_not_ready(rec, reason_code or "supervisor")
        logger.info("supervisor %s forced agent %s from %s to %s (%s)", session.user, rec.number, previous,
                    rec.state, reason_code)
        self._write_row(rec.tenant, "", "agent.force_state", rec.number, session.user,
                        {"state": rec.state, "previous_state": previous, "reason_code": rec.reason_code})
        return rec

    # ------------------------------------------------------------------ ringing the phone (engine/legs.py)
    def _ring(self, mon: Monitor, call: "Call", ring_timeout_s: float) -> None:
        c = self.centre
        if c._contact_of(mon.extension) is None:
            raise InvalidState(f"supervisor phone {mon.extension} is not registered")
        self._seq += 1
        out = c.legs.dial_extension(
            mon.extension, call_id=call.call_id, tenant=call.tenant, caller_number=mon.agent,
            ring_timeout_s=ring_timeout_s, leg_id=f"{call.call_id}/supervisor-{mon.supervisor}-{self._seq}",
            agent=mon.agent, purpose="supervisor", headers=[("X-Monitor-Mode", mon.mode_label)],
            on_event=lambda ev: self._leg_event(mon, ev))
        mon.leg = CallLeg(out.leg_id, "supervisor", invite_txn=out.invite_txn, sdp=out.sdp,
                          media_open=out.media_open, out=out)
        CallLogger(logger, {"call_id": call.call_id}).info(
            "ringing supervisor %s at extension %s to %s agent %s", mon.supervisor, mon.extension, mon.mode_label,
            mon.agent)

    def _leg_event(self, mon: Monitor, ev: LegEvent) -> None:
        """Progress of the supervisor's leg (ringing, answered, failed, hung up by the phone)."""
        leg = mon.leg
        if leg is None or leg.out is not ev.leg:
            return
        if isinstance(ev, LegAnswered):
            leg.invite_txn = None
            leg.dialog = ev.leg.dialog
            self._answered(mon)
        elif isinstance(ev, LegFailed):
            leg.invite_txn = None
            if mon.state is MonitorState.RINGING:
                self._fail(mon, ev.outcome.value, ev.status)
        elif isinstance(ev, LegEnded):
            leg.ended = True
            if mon.state is MonitorState.INTERCEPTED:
                call = self.centre.calls.get(mon.call_id)
                if call is not None:
                    self.centre.hangup(call, "supervisor_hangup")
            elif mon.state is MonitorState.JOINED:
                self._end(mon, MonitorTrigger.LEAVE, "supervisor_hangup")

    def _fail(self, mon: Monitor, outcome: str, status: int = 0) -> None:
        """The phone did not join: drop its leg, tell the supervisor; the call is untouched."""
        CallLogger(logger, {"call_id": mon.call_id}).info("supervisor %s did not join: %s (%d)", mon.supervisor,
                                                         outcome, status)
        self._end(mon, MonitorTrigger.CALL_ENDED if outcome == "call_ended" else
                  MonitorTrigger.LEAVE if outcome == "leave" else MonitorTrigger.FAILED, outcome, status)

    def _answered(self, mon: Monitor) -> None:
        c = self.centre
        media = c.media
        assert media is not None and mon.leg is not None
        log = CallLogger(logger, {"call_id": mon.call_id})
        call = c.calls.get(mon.call_id)
        if mon.state is not MonitorState.RINGING or call is None or call.state is not CallState.TALKING:
            mon.leg.out.hangup("monitor_over")  # answered after we gave up
            return
        mon.fire(MonitorTrigger.ANSWERED)
        mon.joined_ts = time.time()
        mon.agent_leg_id = call.agent_leg.leg_id if call.agent_leg is not None else ""
        media.join(call.room, mon.leg.leg_id)
        log.info("supervisor %s joined (%s) agent %s", mon.supervisor, mon.mode_label, mon.agent)
        self._row(mon, "supervisor.joined", mode=mon.mode_label)
        c.engine.bus.publish_event(SupervisorJoined(mon.supervisor, mon.call_id, mon.agent, mon.mode_label,
                                                    mon.tenant, mon.groups))
        if mon.intercept and self._plain(call):
            mon.fire(MonitorTrigger.INTERCEPT)
            self._take_over(mon, call)
        else:
            mon.intercept = False  # the call went on hold / into a consult meanwhile: join it, do not take it
            self._apply(mon, call)

    # ------------------------------------------------------------------ media
    def _plain(self, call: "Call") -> bool:
        """True when call control has the call in plain talking (not held, no transfer/consult/conference)."""
        st = self.centre.callcontrol.states.get(call.call_id)
        return st is None or not (st.held or st.op)

    def relayout(self, call: "Call") -> None:
        """``CallControl.layout`` hook: call control just reset the room's rules; put the supervisor back.

        In plain talking the monitor's mode applies again; while the call is
        held or in a consult/transfer/conference the supervisor hears nobody
        and nobody hears it (until the call is plain again).  When the
        monitored agent's leg has left the call (a completed transfer), the
        supervisor leaves too (``supervisor.left``, reason ``agent_left``).
        """
        mon = self.by_call.get(call.call_id)
        media = self.centre.media
        if mon is None or mon.state is not MonitorState.JOINED or mon.leg is None or media is None \
                or call.room not in media.rooms or mon.leg.leg_id not in media.rooms[call.room].members:
            return
        if call.agent_leg is None or call.agent_leg.leg_id != mon.agent_leg_id:
            # transferred (to an agent, a number or a queue): the monitored agent left the call, so does the supervisor
            self._end(mon, MonitorTrigger.LEAVE, "agent_left")
            return
        if self._plain(call) and call.caller is not None and call.agent_leg is not None:
            self._apply(mon, call)
        else:
            media.set_hearing(call.room, mon.leg.leg_id, hears=set(), heard_by=set())

    def _apply(self, mon: Monitor, call: "Call") -> None:
        """The room's hear set and the recorder's channels for the monitor's mode."""
        media = self.centre.media
        assert media is not None and mon.leg is not None and call.caller is not None and call.agent_leg is not None
        caller, agent, sup = call.caller.leg_id, call.agent_leg.leg_id, mon.leg.leg_id
        media.apply_hear_set(call.room, MODE_HEAR_SET[mon.mode], caller=caller, agent=agent, supervisor=sup)
        self._set_recording(call, recorder_channels(mon.state, mon.mode, caller=caller, agent=agent, supervisor=sup))

    def _set_recording(self, call: "Call", channels: list[list[str]]) -> None:
        media = self.centre.media
        if call.recorded and media is not None and (call.room, "recorder") in media.recorders:
            media.set_channels(call.room, "recorder", channels)

    def _restore(self, call: "Call") -> None:
        """Back to caller ↔ agent after the supervisor left."""
        media = self.centre.media
        if media is None or call.state is not CallState.TALKING or call.room not in media.rooms \
                or call.caller is None or call.agent_leg is None:
            return
        self.centre.callcontrol.layout(call)  # the call's own rules (two-party, or hold/consult as call control has it)

    def _take_over(self, mon: Monitor, call: "Call") -> None:
        """Intercept: the supervisor's leg replaces the agent's; the agent goes to wrap-up."""
        c = self.centre
        media, ep = c.media, c.endpoint
        assert media is not None and ep is not None and mon.leg is not None and call.caller is not None
        agent_leg = call.agent_leg
        rec = c.agents[call.agent]
        if agent_leg is not None:
            if agent_leg.out is not None:
                agent_leg.out.hangup("intercepted")  # BYE; our own hang-up reports nothing back
            elif agent_leg.dialog is not None and not agent_leg.dialog.terminated:
                ep.bye(agent_leg.dialog)
            c._drop_leg(agent_leg)
        call.agent_leg = mon.leg
        media.apply_hear_set(call.room, HearSet.TWO_PARTY, caller=call.caller.leg_id, agent=mon.leg.leg_id)
        self._set_recording(call, recorder_channels(mon.state, mon.mode, caller=call.caller.leg_id, agent="",
                                                    supervisor=mon.leg.leg_id))
        c.release_agent(rec, call)
        CallLogger(logger, {"call_id": call.call_id}).info("supervisor %s intercepted the call from agent %s",
                                                          mon.supervisor, rec.number)
        self._row(mon, "call.intercepted")
        c.engine.bus.publish_event(CallIntercepted(call.call_id, rec.number, mon.supervisor, mon.tenant, mon.groups))

    # ------------------------------------------------------------------ ending
    def call_ended(self, call: "Call") -> None:
        """``CallCentre.hangup`` hook: the monitored call is ending."""
        mon = self.by_call.get(call.call_id)
        if mon is not None:
            if mon.state is MonitorState.RINGING:
                self._fail(mon, "call_ended")
            else:
                self._end(mon, MonitorTrigger.CALL_ENDED, "call_ended")

    def _end(self, mon: Monitor, trigger: MonitorTrigger, reason: str, status: int = 0) -> None:
        c = self.centre
        was = mon.state
        mon.fire(trigger)
        self.monitors.pop(mon.supervisor, None)
        if self.by_call.get(mon.call_id) is mon:
            del self.by_call[mon.call_id]
        call = c.calls.get(mon.call_id)
        leg = mon.leg
        if leg is not None and was is not MonitorState.INTERCEPTED:  # an intercepted leg is the call's: hangup ends it
            if leg.out is not None:
                leg.out.hangup(reason)  # CANCEL while ringing, BYE once answered (no-op when over)
            c._drop_leg(leg)
            if call is not None and was is MonitorState.JOINED:
                self._restore(call)
        if was is MonitorState.RINGING:
            self._row(mon, "supervisor.failed", outcome=reason, status=status)
            c.engine.bus.publish_event(SupervisorFailed(mon.supervisor, mon.call_id, mon.agent, mon.mode_label,
                                                        reason, status, mon.tenant, mon.groups))
        else:
            self._row(mon, "supervisor.left", reason=reason)
            c.engine.bus.publish_event(SupervisorLeft(mon.supervisor, mon.call_id, mon.agent, reason,
                                                      mon.tenant, mon.groups))

    # ------------------------------------------------------------------ records
    def _row(self, mon: Monitor, event: str, **detail: Any) -> None:
        self._write_row(mon.tenant, mon.call_id, event, mon.agent, mon.supervisor, detail)

    def _write_row(self, tenant: str, call_id: str, event: str, agent: str, party: str,
                   detail: dict[str, Any]) -> None:
        self.centre._store("call_events", {"ts": time.time(), "tenant": tenant, "call_id": call_id, "event": event,
                                           "agent": agent, "party": party,
                                           "detail": json.dumps(detail, sort_keys=True, default=str)})

    def snapshot(self, session: "Session") -> list[dict[str, Any]]:
        """Live monitors the session may see (``supervisor.list``)."""
        return [m.describe() for m in self.monitors.values()
                if session.sees(tenant=m.tenant, groups=set(m.groups), agent=m.agent) and
                (session.scope_kind != "groups" or set(m.groups) & session.groups)]
