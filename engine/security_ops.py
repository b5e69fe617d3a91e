"""Control ops of the SIP abuse guard (docs/control-security-ops.md).

Bans are engine-wide (a source address is not tenant data), so both ops are
for global administrators (``tenant = "*"``) only; a tenant administrator
gets ``forbidden``.  Registered at import (``engine.app.run_engine``).
"""
from __future__ import annotations

import ipaddress
from typing import Any

from engine.callpath import find_centre
from engine.config import GLOBAL_TENANT
from engine.errors import Forbidden, InvalidArgs, NotFound
from engine.ops import Arg, OpContext, registry


def _defence(ctx: OpContext) -> Any:
    if ctx.session.tenant != GLOBAL_TENANT:
        raise Forbidden("SIP bans are engine-wide: only a global administrator (tenant '*') may see or lift them")
    return find_centre(ctx.engine).defence


@registry.op("sip.bans", roles=frozenset({"admin"}))
async def op_sip_bans(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Active bans of the SIP abuse guard and its counters."""
    return _defence(ctx).snapshot()


@registry.op("sip.unban", roles=frozenset({"admin"}), changes_state=True,
             args=[Arg("ip", str, doc="the banned source address")])
async def op_sip_unban(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Lift the ban of one source address."""
    defence = _defence(ctx)
    try:
        ip = str(ipaddress.ip_address(args["ip"]))
    except ValueError:
        raise InvalidArgs(f"not an IP address: {args['ip']!r}") from None
    if not defence.guard.unban(ip):
        raise NotFound(f"{ip} is not banned")
    return {"ip": ip, "unbanned": True}
