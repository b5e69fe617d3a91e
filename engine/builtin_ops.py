"""The foundation's control ops: auth, ping, engine.status, events.*, state.snapshot,
ops.list, audit.query.

Each op is registered into :data:`engine.ops.registry` at import; later
issues add their ops the same way in their own modules.  Documentation of
every op (arguments, result, errors, examples) is in ``docs/control.md``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

from engine import __version__
from engine.bus import Subscription
from engine.errors import Forbidden, InvalidArgs, NotFound, Unauthorized
from engine.ops import ADMIN, ALL_ROLES, Arg, OpContext, registry, sees_engine_wide
from engine.orgscope import queues_of_groups, resolve_scope
from engine.passwords import verify_password


@registry.op("auth", public=True, args=[Arg("user", str, doc="control user name"),
                                        Arg("password", str, doc="the user's password")])
async def op_auth(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Authenticate the connection as a configured user."""
    engine, session = ctx.engine, ctx.session
    user = engine.config.users.get(args["user"])
    ok = False
    if user is not None:
        loop = asyncio.get_running_loop()
        # scrypt costs tens of milliseconds: off the loop.
        ok = await loop.run_in_executor(None, verify_password, args["password"], user.password)
        if ok and user.allow_networks and not _peer_in(session.peer, user.allow_networks):
            ok = False
    if not ok:
        session.failures += 1
        engine.audit(user=args["user"], role="", tenant=user.tenant if user else "", op="auth",
                     args="{}", result="error:unauthorized", peer=session.peer)
        if session.failures >= engine.config.control.auth_max_failures:
            ctx.connection.close_with_error(Unauthorized(
                f"{session.failures} failed authentication attempts; closing"))
        raise Unauthorized("wrong user name or password")
    session.user = user.name
    session.role = user.role
    session.tenant = user.tenant
    session.groups = frozenset(user.groups)
    session.agent = user.agent
    session.apply_scope(resolve_scope(engine.config, user))
    session.authenticated_at = time.time()
    session.failures = 0
    engine.audit(user=user.name, role=user.role, tenant=user.tenant, op="auth", args="{}", result="ok",
                 peer=session.peer)
    return {**session.describe(), "version": __version__, "engine": engine.config.engine.name}


def _peer_in(peer: str, networks: tuple[str, ...]) -> bool:
    host = peer.rsplit(":", 1)[0]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return peer.startswith("unix:")  # local socket: file permissions guard it
    return any(addr in ipaddress.ip_network(n, strict=False) for n in networks)


@registry.op("ping", public=True, args=[Arg("data", (str, int, float, bool, type(None)), default=None,
                                            doc="echoed back")])
async def op_ping(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Liveness check; echoes ``data``."""
    return {"pong": True, "data": args["data"], "ts": time.time()}


@registry.op("engine.status", roles=ALL_ROLES)
async def op_engine_status(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Uptime, version, counts from the registered providers, store status.

    Engine-wide figures (legs, registrations, bans, connections, the store's
    path and queue) are for global administrators; a tenant's user gets the
    calls it may see and whether the store is open (docs/tenants.md).
    """
    status = await ctx.engine.status()
    session = ctx.session
    if sees_engine_wide(session, ctx.engine.config):
        return status
    calls = ctx.engine.snapshots.get("calls")
    status["counts"] = {"calls": len(calls(session))} if calls is not None else {}
    status["control"] = {}
    status["store"] = {k: v for k, v in status["store"].items() if k in ("backend", "schema_version", "open")}
    return status


@registry.op("events.subscribe", roles=ALL_ROLES, args=[
    Arg("events", list, default=["*"], item_type=str, doc="glob patterns of event names"),
    Arg("tenants", list, default=[], item_type=str),
    Arg("groups", list, default=[], item_type=str),
    Arg("agents", list, default=[], item_type=str),
    Arg("queues", list, default=[], item_type=str),
])
async def op_events_subscribe(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Receive events matching the patterns and filters, within the user's scope."""
    session = ctx.session
    if not args["events"]:
        raise InvalidArgs("events.subscribe: 'events' needs at least one pattern")
    for t in args["tenants"]:
        if not session.sees_tenant(t):
            raise Forbidden(f"user {session.user!r} may not see tenant {t!r}")
    kind = session.scope_kind
    if kind in ("groups", "department", "team"):
        outside = set(args["groups"]) - session.groups
        if outside:
            raise Forbidden(f"user {session.user!r} does not supervise {', '.join(sorted(outside))}")
    if kind in ("department", "team"):
        outside = (set(args["agents"]) - session.agents) | \
            (set(args["queues"]) - set(queues_of_groups(ctx.engine.config, session.groups)))
        if outside:
            raise Forbidden(f"outside the {kind} scope of user {session.user!r}: {', '.join(sorted(outside))}")
    if session.self_scoped and set(args["agents"]) - {session.agent}:
        raise Forbidden(f"agent user {session.user!r} may only follow agent {session.agent!r}")
    sub = Subscription(id=ctx.engine.bus.next_subscription_id(), patterns=tuple(args["events"]),
                       tenants=frozenset(args["tenants"]), groups=frozenset(args["groups"]),
                       agents=frozenset(args["agents"]), queues=frozenset(args["queues"]))
    ctx.connection.subscribe(sub)
    return {"subscription": sub.id, "seq": ctx.connection.seq, "filter": sub.describe()}


@registry.op("events.unsubscribe", roles=ALL_ROLES,
             args=[Arg("subscription", (int, type(None)), default=None, doc="id; nil: all")])
async def op_events_unsubscribe(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Drop one subscription (or all)."""
    removed = ctx.connection.unsubscribe(args["subscription"])
    if args["subscription"] is not None and not removed:
        raise NotFound(f"no subscription {args['subscription']} on this connection")
    return {"removed": removed}


@registry.op("state.snapshot", roles=ALL_ROLES,
             args=[Arg("include", list, default=[], item_type=str, doc="sections; empty: all")])
async def op_state_snapshot(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Current agents, calls and queues, stamped with this connection's event ``seq``."""
    return ctx.engine.snapshot(ctx.session, ctx.connection.seq, include=args["include"])


@registry.op("ops.list", roles=ALL_ROLES)
async def op_ops_list(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """The ops this user's role may call, with their arguments."""
    out = []
    for spec in ctx.engine.ops.specs():
        if spec.public or ctx.session.role in spec.roles:
            out.append({"op": spec.name, "doc": spec.doc, "changes_state": spec.changes_state,
                        "args": [{"name": a.name, "required": a.required,
                                  "type": (a.type.__name__ if isinstance(a.type, type)
                                           else "|".join(t.__name__ for t in a.type))}
                                 for a in spec.args]})
    return out


@registry.op("audit.query", roles=ADMIN, args=[
    Arg("user", str, default=""), Arg("op", str, default=""), Arg("limit", int, default=100),
    Arg("offset", int, default=0)])
async def op_audit_query(ctx: OpContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Newest audit rows first, within the admin's tenant."""
    ctx.session.require_organisation("the audit log")
    if not 1 <= args["limit"] <= 10000 or args["offset"] < 0:
        raise InvalidArgs("audit.query: limit must be 1..10000 and offset >= 0")
    store = ctx.engine.require_store()
    await store.aflush()
    where: dict[str, Any] = {}
    if args["user"]:
        where["user"] = args["user"]
    if args["op"]:
        where["op"] = args["op"]
    if ctx.session.tenant != "*":
        where["tenant"] = ctx.session.tenant
    return await store.aselect("audit_log", where, order_by="id", descending=True, limit=args["limit"],
                               offset=args["offset"])


@registry.op("engine.log_level", roles=ADMIN, changes_state=True,
             args=[Arg("level", str, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))])
async def op_engine_log_level(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Change the engine's log level at run time."""
    previous = ctx.engine.set_log_level(args["level"])
    return {"level": args["level"], "previous": previous}
