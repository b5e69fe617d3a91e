"""Agent, queue and call control ops of the inbound call path (docs/control-agent-ops.md).

Registered into :data:`engine.ops.registry` at import (``engine.app`` imports
this module when it adds the :class:`engine.callpath.CallCentre` service).
Scope: an ``agent`` user acts only on itself (its ``agent`` number in
``[users]``); supervisors on agents of their groups; admins on their tenant.
"""
from __future__ import annotations

from typing import Any

from engine.callpath import find_centre
from engine.errors import Forbidden, InvalidArgs, NotFound
from engine.ops import AGENT_ROLES, READ_ROLES, Arg, OpContext, registry


def _agent_for(ctx: OpContext, number: str) -> Any:
    centre = find_centre(ctx.engine)
    number = number or ctx.session.agent
    if not number:
        raise InvalidArgs("give the agent number (this user is not an agent)")
    rec = centre.agent(number)
    conf = ctx.engine.config.agents[number]
    ctx.session.require(tenant=rec.tenant, groups=set(conf.groups), agent=number)
    return centre, rec


_AGENT = Arg("agent", str, default="", doc="agent number (default: the session's own agent)")


@registry.op("agent.login", roles=AGENT_ROLES, changes_state=True,
             args=[_AGENT, Arg("password", str, doc="the agent's password"),
                   Arg("extension", str, default="", doc="phone extension (hot-desking; default: configured)")])
async def op_agent_login(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Log an agent in on an extension (state not_ready); enables its phone's digest credentials."""
    centre, rec = _agent_for(ctx, args["agent"])
    rec = await centre.login(rec.number, args["password"], args["extension"])
    return rec.describe()


@registry.op("agent.logout", roles=AGENT_ROLES, changes_state=True, args=[_AGENT])
async def op_agent_logout(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Log an agent out (not while on a call)."""
    centre, rec = _agent_for(ctx, args["agent"])
    centre.logout(rec)
    return rec.describe()


@registry.op("agent.ready", roles=AGENT_ROLES, changes_state=True, args=[_AGENT])
async def op_agent_ready(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Make the agent available for calls (from not_ready, or ends wrapup)."""
    centre, rec = _agent_for(ctx, args["agent"])
    centre.set_ready(rec)
    return rec.describe()


@registry.op("agent.not_ready", roles=AGENT_ROLES, changes_state=True,
             args=[_AGENT, Arg("reason_code", str, default="", doc="why (break, lunch, ...)")])
async def op_agent_not_ready(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Stop receiving calls, with a reason code."""
    centre, rec = _agent_for(ctx, args["agent"])
    centre.set_not_ready(rec, args["reason_code"])
    return rec.describe()


@registry.op("agent.wrapup_done", roles=AGENT_ROLES, changes_state=True, args=[_AGENT])
async def op_agent_wrapup_done(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """End after-call work early (wrapup → ready)."""
    centre, rec = _agent_for(ctx, args["agent"])
    centre.wrapup_done(rec)
    return rec.describe()


@registry.op("agent.list", roles=READ_ROLES, args=[])
async def op_agent_list(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Live agents the session may see."""
    return {"agents": find_centre(ctx.engine)._snapshot_agents(ctx.session)}


@registry.op("queue.list", roles=READ_ROLES, args=[])
async def op_queue_list(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Queues with waiting callers and free agents."""
    return {"queues": find_centre(ctx.engine)._snapshot_queues(ctx.session)}


@registry.op("call.list", roles=READ_ROLES, args=[])
async def op_call_list(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Calls in progress the session may see (agents: their own)."""
    return {"calls": find_centre(ctx.engine)._snapshot_calls(ctx.session)}


def _call_for(ctx: OpContext, call_id: str) -> Any:
    centre = find_centre(ctx.engine)
    call = centre.calls.get(call_id)
    if call is None:
        raise NotFound(f"no call {call_id!r}")
    groups = set(ctx.engine.config.queues[call.queue].groups) if call.queue else set()
    ctx.session.require(tenant=call.tenant, groups=groups, agent=call.agent or call.offered_agent or "")
    return centre, call


def _call_held_by(ctx: OpContext, call_id: str) -> Any:
    """:func:`_call_for`, and an ``agent`` user must still hold the call (ringing or talking on it).

    An agent keeps seeing a call it handed on (``cdr.agent`` still names it,
    and notes may be attached in wrap-up), but once a transfer, an intercept
    or a force release took the call away it may no longer end or steer it.
    """
    centre, call = _call_for(ctx, call_id)
    if ctx.session.role == "agent":
        rec = centre.agents.get(ctx.session.agent)
        if rec is None or rec.call_id != call.call_id or rec.state not in ("busy", "reserved"):
            raise Forbidden(f"agent {ctx.session.agent} is not on call {call.call_id}")
    return centre, call


_CALL = Arg("call_id", str, doc="the call's id (call.ringing / call.list)")


@registry.op("call.hangup", roles=AGENT_ROLES, changes_state=True, args=[_CALL])
async def op_call_hangup(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """End a call (every leg gets a BYE)."""
    centre, call = _call_held_by(ctx, args["call_id"])
    centre.hangup(call, "hangup_op")
    return {"call_id": call.call_id, "state": call.state.value}


@registry.op("call.answer", roles=AGENT_ROLES, changes_state=True, args=[_CALL])
async def op_call_answer(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Ask the ringing agent's phone to answer (auto-answer headers on a new INVITE)."""
    centre, call = _call_for(ctx, args["call_id"])
    centre.request_answer(call)
    return {"call_id": call.call_id, "state": call.state.value, "agent": call.offered_agent}


@registry.op("call.attach_data", roles=AGENT_ROLES, changes_state=True,
             args=[_CALL, Arg("section", str, default="default"), Arg("data", dict, doc="keys to set")])
async def op_call_attach_data(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Attach keys to a section of the call's data (kept in the CDR's ``data``)."""
    _, call = _call_for(ctx, args["call_id"])
    call.data.setdefault(args["section"], {}).update(args["data"])
    return {"call_id": call.call_id, "data": call.data}


@registry.op("call.get_data", roles=AGENT_ROLES, args=[_CALL])
async def op_call_get_data(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Attached data and IVR variables of a call."""
    _, call = _call_for(ctx, args["call_id"])
    return {"call_id": call.call_id, "data": call.data, "variables": call.variables}


import engine.supervisor_ops  # noqa: E402,F401  (supervisor ops register with the call path's ops)
import engine.screening_ops  # noqa: E402,F401  (screening.* ops register with the call path's)
