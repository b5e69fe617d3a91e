"""External numbers as call destinations: ``number:`` routes, queue exits and IVR transfers.

Theory of operation
-------------------
A ``number:N1$N2`` destination (after-hours duty numbers tried in order, a
queue's ``timeout_destination`` / ``full_destination``) and an IVR
``transfer`` node's ``numbers`` put the caller through to a number outside
the engine.  The caller's leg is already answered (media anchored in the
engine); for each number in turn an outgoing leg is placed through a trunk
of the call's tenant (``engine/legs.py``: the trunk the call came in on
when it belongs to the tenant, else the tenant's first trunk), with the
caller's number as caller id and the ring time of the destination
(:data:`RING_TIMEOUT_S` for routes and queue exits, the node's
``timeout_s`` for IVR transfers).  Meanwhile the caller hears music on
hold.

* Answered: the leg becomes the call's agent-side leg (role ``external``),
  the call moves ``ROUTING → TALKING`` (``CONNECT``), caller and far end
  are joined in the call's room, recorded per ``[recording]``; the CDR is
  ``answered`` with ``data.variables.external_number`` = the number that
  answered.  A BYE from either side ends the call as for an agent.
* Failed (busy, rejected, no answer, congestion, ...): the next number;
  when every number failed, ``on_failed`` decides (a route's next
  after-hours destination, the IVR's next target or ``on_failure``, else
  the call ends with ``external_failed``).
* The caller hangs up while a number rings: the call path's hang-up
  CANCELs the leg (it is the call's ``agent_leg`` while it rings).

Every attempt is logged with the call id and kept in
``call.variables["external_attempts"]`` (number, outcome, status), so the
CDR's ``data`` shows what was tried.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from engine.app import CallLogger
from engine.calls import CallLeg, CallState, CallTrigger
from engine.legs import LegAnswered, LegEnded, LegEvent, LegFailed

if TYPE_CHECKING:
    from engine.callpath import CallCentre
    from engine.calls import Call

logger = logging.getLogger("engine.external")

RING_TIMEOUT_S = 25.0
"""Ring time per number for ``number:`` routes and queue exits."""


def split_numbers(target: str) -> list[str]:
    """``"+4930111$+4930222"`` → the numbers in order (``$`` separates, as in IVR ``numbers``)."""
    return [n for n in target.split("$") if n]


def trunk_for(centre: "CallCentre", call: "Call") -> str | None:
    """The trunk to dial out on: the call's own when it is of the call's tenant, else the tenant's first."""
    trunks = centre.config.trunks  # type: ignore[union-attr]
    own = trunks.get(call.trunk)
    if own is not None and own.tenant == call.tenant:
        return call.trunk
    return next((name for name, t in sorted(trunks.items()) if t.tenant == call.tenant), None)


def connect_numbers(centre: "CallCentre", call: "Call", numbers: list[str], *,
                    ring_timeout_s: float = RING_TIMEOUT_S,
                    on_connected: Callable[[str], None] | None = None,
                    on_failed: Callable[[str, int], None] | None = None) -> None:
    """Try ``numbers`` in order for ``call`` (state ROUTING); see the module docstring."""
    log = CallLogger(logger, {"call_id": call.call_id})
    trunk = trunk_for(centre, call)
    attempts: list[dict[str, Any]] = call.variables.setdefault("external_attempts", [])

    def give_up(outcome: str, status: int) -> None:
        if call.state is not CallState.ROUTING:
            return
        call.agent_leg = None
        if on_failed is not None:
            on_failed(outcome, status)
        else:
            centre.hangup(call, "external_failed")

    def attempt(i: int) -> None:
        if call.state is not CallState.ROUTING:
            return
        if i >= len(numbers):
            last = attempts[-1] if attempts else {"outcome": "no_trunk", "status": 0}
            log.info("every external number failed (%s)", ", ".join(numbers))
            give_up(last["outcome"], last["status"])
            return
        if trunk is None:
            attempts.append({"number": numbers[i], "outcome": "no_trunk", "status": 0})
            log.warning("no trunk of tenant %s to dial %s", call.tenant, numbers[i])
            give_up("no_trunk", 0)
            return
        number = numbers[i]
        centre.start_music(call)

        def on_event(ev: LegEvent) -> None:
            leg = call.agent_leg
            if leg is None or leg.out is not ev.leg:
                return
            if call.state is CallState.TALKING:
                centre._agent_leg_event(call, ev)
            elif isinstance(ev, LegAnswered) and call.state is CallState.ROUTING:
                attempts.append({"number": number, "outcome": "answered", "status": 200})
                _connected(centre, call, number)
                if on_connected is not None:
                    on_connected(number)
            elif isinstance(ev, LegFailed) and call.state is CallState.ROUTING:
                attempts.append({"number": number, "outcome": ev.outcome.value, "status": ev.status})
                log.info("external %s: %s (%d)", number, ev.outcome.value, ev.status)
                call.agent_leg = None
                attempt(i + 1)
            elif isinstance(ev, LegEnded) and call.state is CallState.ROUTING:
                call.agent_leg = None
                attempt(i + 1)

        try:
            out = centre.legs.dial_trunk(trunk, number, call_id=call.call_id, tenant=call.tenant,
                                         caller_number=call.caller_number or None, ring_timeout_s=ring_timeout_s,
                                         leg_id=f"{call.call_id}/external-{len(attempts)}", purpose="external",
                                         on_event=on_event)
        except Exception as exc:  # a number the trunk cannot dial: the next one
            attempts.append({"number": number, "outcome": "invalid", "status": 0})
            log.warning("external %s not dialable: %s", number, exc)
            attempt(i + 1)
            return
        call.agent_leg = CallLeg(out.leg_id, "external", invite_txn=out.invite_txn, sdp=out.sdp,
                                 media_open=out.media_open, out=out)
        log.info("dialling external %s via trunk %s (%d of %d)", number, trunk, i + 1, len(numbers))

    attempt(0)


def bridge_answered(centre: "CallCentre", call: "Call", leg: CallLeg) -> None:
    """Bridge the caller with an outgoing leg that answered outside the ACD (external number, IVR transfer).

    Music and the IVR stop, caller and leg share the call's room (created
    when the call has none yet) and the recording starts per ``[recording]``.
    """
    media = centre.media
    assert media is not None and call.caller is not None
    centre.stop_music(call)
    centre._end_ivr(call)
    call.room = call.room or f"room-{call.call_id}"
    if call.room not in media.rooms:
        media.create_room(call.room, call.tenant)
        media.join(call.room, call.caller.leg_id)
    media.join(call.room, leg.leg_id)
    centre._start_recording(call)


def _connected(centre: "CallCentre", call: "Call", number: str) -> None:
    assert call.agent_leg is not None
    leg = call.agent_leg
    leg.dialog = leg.out.dialog
    call.fire(CallTrigger.CONNECT)
    call.answered_ts = time.time()
    call.variables["external_number"] = number
    bridge_answered(centre, call, leg)
    CallLogger(logger, {"call_id": call.call_id}).info("external %s answered: bridged", number)
    centre.engine.bus.publish("call.answered", {**call.describe(), "external_number": number, "wait_s": 0.0},
                              tenant=call.tenant)


def route_to_numbers(centre: "CallCentre", call: "Call", route: Any, dest: Any, after_hours: bool) -> None:
    """A ``number:`` route destination; outside hours a failure falls through to the next ``after_hours`` entry."""
    from engine.config import parse_destination
    from engine.routing import servable

    rest: list[Any] = []
    if after_hours:
        texts = list(route.after_hours)
        rest = [parse_destination(t) for t in texts[texts.index(str(dest)) + 1:]] if str(dest) in texts else []

    def fall_through(outcome: str, status: int) -> None:
        centre.stop_music(call)
        nxt = next((d for d in rest if servable(centre.config, d, call.tenant)), None)
        log = CallLogger(logger, {"call_id": call.call_id})
        if nxt is None:
            log.info("duty numbers failed (%s %d), nothing after them: hanging up", outcome, status)
            centre.hangup(call, "external_failed")
            return
        log.info("duty numbers failed (%s %d): %s", outcome, status, nxt)
        call.variables["after_hours_fallback"] = str(nxt)
        if nxt.kind == "number":
            rest[:] = rest[rest.index(nxt) + 1:]
            connect_numbers(centre, call, split_numbers(nxt.target), on_failed=fall_through)
        elif nxt.kind == "queue":
            call.queue = nxt.target
            centre.start_music(call)
            centre.enqueue_now(call)
        elif nxt.kind == "voicemail":
            call.mailbox = nxt.target
            centre._spawn(centre._voicemail_greeting(call))
        else:
            centre._spawn(centre._route(call, centre._flow(nxt.target)))

    connect_numbers(centre, call, split_numbers(dest.target), on_failed=fall_through)
