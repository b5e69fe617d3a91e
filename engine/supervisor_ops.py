"""Supervisor control ops: monitor (listen, whisper, barge), intercept, force release, forced agent states.

Registered into :data:`engine.ops.registry` at import (``engine.app``
imports this module with the call path); the logic lives in
:mod:`engine.supervision`, documented in ``docs/control-supervisor-ops.md``.
Roles: ``supervisor`` (on agents of the groups it supervises) and
``admin`` (its tenant).  Every op is audited.
"""
from __future__ import annotations

from typing import Any

from engine.callpath import find_centre
from engine.ops import SUPERVISOR_ROLES, Arg, OpContext, registry
from engine.supervision import DEFAULT_RING_TIMEOUT_S, FORCE_STATES, Supervision, SupervisionMode

_AGENT = Arg("agent", str, default="", doc="the agent whose call is the target (or give call_id)")
_CALL = Arg("call_id", str, default="", doc="the call (or give agent)")
_RING = Arg("ring_timeout_s", float, default=DEFAULT_RING_TIMEOUT_S,
            doc="how long the supervisor's phone rings before supervisor.failed")
_TARGET = [_AGENT, _CALL]


def _supervision(ctx: OpContext) -> Supervision:
    return find_centre(ctx.engine).supervision


async def _monitor(ctx: OpContext, args: dict[str, Any], mode: SupervisionMode, intercept: bool = False) -> Any:
    from engine.errors import InvalidArgs

    if not 1.0 <= args["ring_timeout_s"] <= 120.0:
        raise InvalidArgs(f"ring_timeout_s must be between 1 and 120 s, got {args['ring_timeout_s']}")
    sup = _supervision(ctx)
    rec, call = sup.target(ctx.session, args["agent"], args["call_id"])
    mon = sup.monitor(ctx.session, rec, call, mode, intercept=intercept, ring_timeout_s=args["ring_timeout_s"])
    return mon.describe()


@registry.op("supervisor.listen", roles=SUPERVISOR_ROLES, changes_state=True, args=[*_TARGET, _RING])
async def op_supervisor_listen(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Silent monitor: ring the supervisor's phone; it hears caller and agent, nobody hears it."""
    return await _monitor(ctx, args, SupervisionMode.LISTEN)


@registry.op("supervisor.whisper", roles=SUPERVISOR_ROLES, changes_state=True, args=[*_TARGET, _RING])
async def op_supervisor_whisper(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Coach: the supervisor hears both; only the agent hears the supervisor."""
    return await _monitor(ctx, args, SupervisionMode.WHISPER)


@registry.op("supervisor.barge", roles=SUPERVISOR_ROLES, changes_state=True, args=[*_TARGET, _RING])
async def op_supervisor_barge(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Barge in: caller, agent and supervisor all hear each other."""
    return await _monitor(ctx, args, SupervisionMode.BARGE)


@registry.op("supervisor.intercept", roles=SUPERVISOR_ROLES, changes_state=True, args=[*_TARGET, _RING])
async def op_supervisor_intercept(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Take the call away from the agent: the supervisor talks to the caller, the agent goes to wrap-up."""
    return await _monitor(ctx, args, SupervisionMode.BARGE, intercept=True)


@registry.op("supervisor.leave", roles=SUPERVISOR_ROLES, changes_state=True, args=[])
async def op_supervisor_leave(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Stop monitoring (hang up the supervisor's leg, or stop its ringing); the call goes on."""
    return _supervision(ctx).leave(ctx.session).describe()


@registry.op("supervisor.force_release", roles=SUPERVISOR_ROLES, changes_state=True, args=_TARGET)
async def op_supervisor_force_release(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """End the agent's call (BYE to every leg); the agent goes to wrap-up."""
    sup = _supervision(ctx)
    rec, call = sup.target(ctx.session, args["agent"], args["call_id"])
    call = sup.force_release(ctx.session, rec, call)
    return {"call_id": call.call_id, "agent": rec.number, "state": call.state.value, "end_reason": call.end_reason}


@registry.op("agent.force_state", roles=SUPERVISOR_ROLES, changes_state=True,
             args=[Arg("agent", str, doc="agent number"),
                   Arg("state", str, choices=FORCE_STATES, doc="logged_out or not_ready"),
                   Arg("reason_code", str, default="", doc="not_ready: why (default 'supervisor')")])
async def op_agent_force_state(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Log an agent out, or set it not ready with a reason (not while on a call)."""
    sup = _supervision(ctx)
    rec, _ = sup.target(ctx.session, args["agent"], "")
    return sup.force_state(ctx.session, rec, args["state"], args["reason_code"]).describe()


@registry.op("supervisor.phone_login", roles=SUPERVISOR_ROLES, changes_state=True,
             args=[Arg("password", str, doc="the user's control password"),
                   Arg("extension", str, default="", doc="phone extension (default: [users.NAME] extension)")])
async def op_supervisor_phone_login(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Enable digest credentials for the supervisor's own phone (it may then REGISTER)."""
    return await _supervision(ctx).phone_login(ctx.session, args["password"], args["extension"])


@registry.op("supervisor.phone_logout", roles=SUPERVISOR_ROLES, changes_state=True, args=[])
async def op_supervisor_phone_logout(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Drop the supervisor phone's credentials."""
    return _supervision(ctx).phone_logout(ctx.session)


@registry.op("supervisor.list", roles=SUPERVISOR_ROLES, args=[])
async def op_supervisor_list(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Supervisors ringing to, or on, calls the session may see."""
    return {"monitors": _supervision(ctx).snapshot(ctx.session)}
