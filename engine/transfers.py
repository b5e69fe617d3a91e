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
tries the next target or goes to ``on_failure``.  ``agent`` targets are
answered ``not_supported`` (a direct offer to one agent needs an ACD
reservation outside a queue).  Stopping the flow cancels the runner
task this runs in; everything here is synchronous, so the cancellation
lands at the runner's next ``await``, after the transfer is done.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engine.app import CallLogger
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
    return "not_supported"
