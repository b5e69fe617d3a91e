"""Agent call-control ops (docs/control-callcontrol-ops.md): hold, transfers, consult, conference, dial, DTMF.

Registered into :data:`engine.ops.registry` at import (``engine.app`` and
``engine.agent_ops`` users import it with the call path).  The logic is in
:mod:`engine.callcontrol`; these handlers resolve and scope-check the call
(an agent only its own call: else ``forbidden``; supervisors calls of their
groups' queues; admins their tenant), the target and the arguments.
"""
from __future__ import annotations

from typing import Any

from engine.agent_ops import _AGENT, _CALL, _agent_for, _call_held_by
from engine.ops import AGENT_ROLES, Arg, OpContext, registry

_TARGET = Arg("target", str, doc="agent:N, queue:NAME, flow:NAME or number:+49...; a bare value is an agent "
                                 "number or extension, a queue name, else a number")
_TRUNK = Arg("trunk", str, default="", doc="trunk for an external number (default: the call's trunk, else the "
                                           "tenant's first)")


def _control(ctx: OpContext, call_id: str) -> tuple[Any, Any]:
    centre, call = _call_held_by(ctx, call_id)  # an agent that handed the call on no longer controls it
    return centre.callcontrol, call


@registry.op("call.hold", roles=AGENT_ROLES, changes_state=True, args=[_CALL])
async def op_call_hold(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Put the caller on hold (the caller hears music; the agent hears nothing)."""
    cc, call = _control(ctx, args["call_id"])
    cc.hold(call)
    return {"call_id": call.call_id, "held": True}


@registry.op("call.retrieve", roles=AGENT_ROLES, changes_state=True, args=[_CALL])
async def op_call_retrieve(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Take the caller off hold."""
    cc, call = _control(ctx, args["call_id"])
    cc.retrieve(call)
    return {"call_id": call.call_id, "held": False, "hold_s": round(call.hold_s, 3)}


@registry.op("call.transfer", roles=AGENT_ROLES, changes_state=True, args=[_CALL, _TARGET, _TRUNK])
async def op_call_transfer(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Blind transfer to an agent, a queue, an IVR flow or an external number."""
    cc, call = _control(ctx, args["call_id"])
    target = cc.resolve(call, args["target"], allow=("agent", "queue", "flow", "external"), trunk=args["trunk"])
    return cc.transfer(call, _as_user(ctx, cc, call, target))


@registry.op("call.consult", roles=AGENT_ROLES, changes_state=True, args=[_CALL, _TARGET, _TRUNK])
async def op_call_consult(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Hold the caller and call an agent, a queue's first free agent or an external number."""
    cc, call = _control(ctx, args["call_id"])
    target = cc.resolve(call, args["target"], allow=("agent", "queue", "external"), trunk=args["trunk"])
    return cc.consult(call, _as_user(ctx, cc, call, target))


@registry.op("call.transfer_complete", roles=AGENT_ROLES, changes_state=True, args=[_CALL])
async def op_call_transfer_complete(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Hand the caller to the consulted party; the agent leaves (wrap-up)."""
    cc, call = _control(ctx, args["call_id"])
    return cc.transfer_complete(call)


@registry.op("call.conference", roles=AGENT_ROLES, changes_state=True, args=[_CALL])
async def op_call_conference(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Join caller, agent and the consulted party (three-way)."""
    cc, call = _control(ctx, args["call_id"])
    return cc.conference(call)


@registry.op("call.consult_cancel", roles=AGENT_ROLES, changes_state=True, args=[_CALL])
async def op_call_consult_cancel(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Drop the consulted party (or the conference's third party); the agent talks to the caller again."""
    cc, call = _control(ctx, args["call_id"])
    return cc.consult_cancel(call)


@registry.op("call.send_dtmf", roles=AGENT_ROLES, changes_state=True,
             args=[_CALL, Arg("digits", str, doc="1-64 of 0-9 * # A-D"),
                   Arg("to", str, default="caller", doc="caller, or party (the consulted party)")])
async def op_call_send_dtmf(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Send RFC 4733 digits to the caller's leg (IVRs of the far end) or the consulted party."""
    cc, call = _control(ctx, args["call_id"])
    return cc.send_dtmf(call, args["digits"], args["to"])


@registry.op("call.dial", roles=AGENT_ROLES, changes_state=True,
             args=[_AGENT, Arg("number", str, doc="the number to call (digits, optional leading +)"), _TRUNK,
                   Arg("caller_number", str, default="", doc="caller id to send (default: the trunk's "
                                                             "caller_number)")])
async def op_call_dial(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Click-to-dial: ring the agent's phone, then dial the number through a trunk."""
    centre, rec = _agent_for(ctx, args["agent"])
    toll_check(centre, rec.tenant, ctx.session.role, args["number"])
    call = centre.callcontrol.dial(rec, args["number"], trunk=args["trunk"],
                                   caller_number=args["caller_number"] or None, role=ctx.session.role)
    return {**call.describe(), "direction": "outbound"}


def toll_check(centre: Any, tenant: str, role: str, number: str) -> None:
    """Refuse at once (before the agent's phone rings) a number the session's role may not call:
    ``forbidden`` (pattern) or ``busy`` (a cap); the leg is checked again when it is dialled."""
    from engine.legs import NUMBER_RE

    policy = getattr(centre, "toll_fraud", None)
    if policy is not None and NUMBER_RE.match(number or ""):  # not a number: invalid_args from the dial
        import time

        policy.require(tenant, role, number, time.time())


def _as_user(ctx: OpContext, cc: Any, call: Any, target: Any) -> Any:
    """An external target dialled for the session's user: toll-checked with its role at once, and
    its leg carries that role (engine.legs.DialCheck.role)."""
    if target.kind != "external":
        return target
    toll_check(cc.centre, call.tenant, ctx.session.role, target.number)
    target.role = ctx.session.role
    return target
