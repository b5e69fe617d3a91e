"""Screening-list control ops (docs/control-screening-ops.md).

Registered into :data:`engine.ops.registry` at import (``engine.agent_ops``
imports this module).  Scope: the list's tenant; admins and supervisors
change lists, reporting users may read them, agents may not see them.
Every change is audited (``changes_state``) and written to the store's
``screening_log`` (engine/screening.py).
"""
from __future__ import annotations

from typing import Any

from engine.callpath import find_centre
from engine.errors import Unavailable
from engine.ops import SUPERVISOR_ROLES, Arg, OpContext, registry
from engine.screening import Screening

_LIST = Arg("list", str, doc="screening list name ([screening.NAME])")
_NUMBER = Arg("number", str, doc="caller number or prefix pattern ending in '*'")


def _screening(ctx: OpContext, name: str) -> Screening:
    screening = find_centre(ctx.engine).screened.screening
    if screening is None:
        raise Unavailable("screening is not loaded yet")
    sl = screening.get_list(name)
    ctx.session.require(tenant=sl.tenant)
    return screening


@registry.op("screening.list", roles=SUPERVISOR_ROLES | {"reporting"},
             args=[Arg("list", str, default="", doc="one list (default: every list the session sees)")])
async def op_screening_list(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Screening lists with their entries (configured and added at run time)."""
    if args["list"]:
        return {"lists": [_screening(ctx, args["list"]).describe(args["list"])]}
    screening = find_centre(ctx.engine).screened.screening
    if screening is None:
        raise Unavailable("screening is not loaded yet")
    return {"lists": [screening.describe(name) for name, sl in sorted(screening.config.screening.items())
                      if ctx.session.sees(tenant=sl.tenant)]}


@registry.op("screening.add", roles=SUPERVISOR_ROLES, changes_state=True,
             args=[_LIST, _NUMBER, Arg("note", str, default="", doc="why (kept in the store)")])
async def op_screening_add(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Add a number or prefix to a list; effective for the next call."""
    screening = _screening(ctx, args["list"])
    entry = screening.add(args["list"], args["number"], user=ctx.session.user, note=args["note"])
    return {"list": args["list"], **entry}


@registry.op("screening.remove", roles=SUPERVISOR_ROLES, changes_state=True,
             args=[_LIST, _NUMBER, Arg("note", str, default="", doc="why (kept in the store)")])
async def op_screening_remove(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Remove a number added at run time (configured numbers are changed in the file)."""
    screening = _screening(ctx, args["list"])
    screening.remove(args["list"], args["number"], user=ctx.session.user, note=args["note"])
    return {"list": args["list"], "number": args["number"], "removed": True}
