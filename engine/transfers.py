"""Transfers out of an IVR flow (``transfer`` nodes): to a queue, another flow or external numbers.

Theory of operation
-------------------
The interpreter emits ``AttemptTransfer(request_id, kind, target, timeout_s,
attempt)`` and waits for ``TransferCompleted`` (docs/ivr.md).  A transfer
inside the engine needs no new call leg: the caller's leg stays where it
is, only what drives it changes.

* ``queue``: a blind transfer to the ACD.  The flow is stopped (its
  variables merged into the call, its prompts stopped), the call gets music
  on hold and joins the queue like a call routed there directly (position
  announcements, periodic prompt, ``timeout_destination``).  The CDR keeps
  the flow's name and gets the queue.
* ``flow``: the flow is stopped and the named flow starts on the same call
  with the old flow's variables (``Interpreter(variables=call_data)``).

* ``number`` (one attempt per number of the node's ``numbers``; the
  interpreter walks the list): an outgoing trunk leg
  (engine/external.py) while the caller hears music; answered → the flow
  is stopped and the caller bridged to the far end; failed →
  ``TransferCompleted(False, outcome)`` and the flow goes on.

An unknown target, a target of another tenant, or a call that is no longer
routing answers ``TransferCompleted(answered=False, reason)`` so the flow
tries the next target or goes to ``on_failure``.

* ``agent``: only a ``ready`` agent (else ``agent_<state>``); it is made
  busy in the ACD (no queue offer can reach it meanwhile) and its phone
  rung for the node's ``timeout_s``; answered → bridged like a queue call
  (the agent goes to wrap-up after it); failed → the agent is ready again
  and the flow goes on.  Stopping the flow cancels the runner
task this runs in; everything here is synchronous, so the cancellation
lands at the runner's next ``await``, after the transfer is done.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from engine.app import CallLogger
from engine.external import bridge_answered
from ivr import actions as A
from ivr import events as E

if TYPE_CHECKING:
    from engine.callpath import CallCentre
    from engine.calls import Call

logger = logging.getLogger("engine.transfers")


def attempt_transfer(centre: "CallCentre", call: "Call", ivr: Any, action: A.AttemptTransfer) -> None:
    """Carry out (or refuse) one ``AttemptTransfer`` of ``call``'s flow."""
    log = CallLogger(logger, {"call_id": call.call_id})
    reason = _refusal(centre, call, action)
    if reason:
        log.info("IVR transfer to %s %s refused: %s", action.kind, action.target, reason)
        ivr.feed(E.TransferCompleted(action.request_id, False, reason))
        return
    log.info("IVR transfer to %s %s", action.kind, action.target)
    call.variables["transfer_target"] = f"{action.kind}:{action.target}"
    if action.kind == "number":
        from engine.external import connect_numbers

        def connected(number: str) -> None:  # the flow was stopped by the connect
            call.variables.update(transfer_result="answered", transfer_target=f"number:{number}")

        def failed(outcome: str, status: int) -> None:
            centre.stop_music(call)
            ivr.feed(E.TransferCompleted(action.request_id, False, outcome))

        connect_numbers(centre, call, [action.target], ring_timeout_s=action.timeout_s,
                        on_connected=connected, on_failed=failed)
    elif action.kind == "agent":
        _ring_agent(centre, call, ivr, action)
    elif action.kind == "queue":
        centre._end_ivr(call)
        call.queue = action.target
        centre.start_music(call)
        centre.enqueue_now(call)
    else:
        variables = dict(ivr.interpreter.call_data)
        centre._end_ivr(call)
        centre._spawn(centre._route(call, centre._flow(action.target), variables=variables))


def _refusal(centre: "CallCentre", call: "Call", action: A.AttemptTransfer) -> str:
    cfg = centre.config
    assert cfg is not None
    if call.state.value != "routing":
        return f"call is {call.state.value}"
    if action.kind == "queue":
        q = cfg.queues.get(action.target)
        if q is None or action.target not in centre.queue_ids:
            return "unknown_queue"
        return "" if q.tenant == call.tenant else "other_tenant"
    if action.kind == "flow":
        f = cfg.flows.get(action.target)
        if f is None or centre._flow(action.target) is None:
            return "unknown_flow"
        return "" if f.tenant == call.tenant else "other_tenant"
    if action.kind == "number":
        from engine.external import trunk_for

        return "" if trunk_for(centre, call) is not None else "no_trunk"
    if action.kind == "agent":
        rec = centre.agents.get(action.target)
        if rec is None:
            return "unknown_agent"
        if rec.tenant != call.tenant:
            return "other_tenant"
        return "" if rec.state == "ready" else f"agent_{rec.state}"
    return "not_supported"


def _ring_agent(centre: "CallCentre", call: "Call", ivr: Any, action: A.AttemptTransfer) -> None:
    """Ring one ready agent's phone for the flow: the agent is made busy in the ACD meanwhile."""
    from engine.calls import CallLeg, CallState, CallTrigger
    from engine.legs import LegAnswered, LegEnded, LegEvent, LegFailed

    rec = centre.agents[action.target]
    log = CallLogger(logger, {"call_id": call.call_id})
    centre._cancel_wrapup(rec)
    centre.acd.busy(rec.acd_id, centre.now())
    rec.call_id = call.call_id
    centre._sync_agent(rec)
    centre._pump()
    centre.start_music(call)
    answered = finished = False

    def free(outcome: str, status: int) -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        call.offered_agent = ""
        centre.return_agent(rec, call)
        if call.state is CallState.ROUTING:
            call.agent_leg = None
            centre.stop_music(call)
            ivr.feed(E.TransferCompleted(action.request_id, False, outcome))
        log.info("IVR transfer to agent %s failed: %s (%d)", rec.number, outcome, status)

    def on_event(ev: LegEvent) -> None:
        nonlocal answered, finished
        leg = call.agent_leg
        if leg is None or leg.out is not ev.leg:
            return
        if call.state is CallState.TALKING:
            centre._agent_leg_event(call, ev)
        elif isinstance(ev, LegAnswered) and call.state is CallState.ROUTING and not finished:
            answered = finished = True
            leg.dialog = ev.leg.dialog
            call.fire(CallTrigger.CONNECT)
            call.agent = rec.number
            call.grp = centre.group_for(call, rec.number)
            call.answered_ts = time.time()
            call.variables.update(transfer_result="answered", transfer_target=f"agent:{rec.number}")
            bridge_answered(centre, call, leg)
            log.info("IVR transfer: agent %s answered", rec.number)
            centre.engine.bus.publish("call.answered", {**call.describe(), "agent": rec.number, "wait_s": 0.0},
                                      tenant=call.tenant, agent=rec.number,
                                      groups=centre.config.agents[rec.number].groups)  # type: ignore[union-attr]
        elif isinstance(ev, LegFailed):
            free(ev.outcome.value, ev.status)
        elif isinstance(ev, LegEnded):
            free("ended", 0)

    out = centre.legs.dial_extension(rec.extension, call_id=call.call_id, tenant=call.tenant,
                                     caller_number=call.caller_number, ring_timeout_s=action.timeout_s,
                                     leg_id=f"{call.call_id}/ivr-agent-{rec.number}-{action.attempt}",
                                     agent=rec.number, purpose="ivr_transfer", on_event=on_event)
    call.agent_leg = CallLeg(out.leg_id, "agent", invite_txn=out.invite_txn, sdp=out.sdp,
                             media_open=out.media_open, out=out)
    call.offered_agent = rec.number

    async def caller_gone() -> None:  # the caller hung up while the phone rang: our CANCEL sends no event
        await out.wait_ended()
        if not answered:
            free("caller_hangup" if call.state is CallState.ENDED else "ended", 0)

    centre._spawn(caller_gone())
