"""Callback list: ``callback.list``, ``callback.assign``, ``callback.schedule``,
``callback.complete`` over the ``callbacks`` table (docs/control-reporting-ops.md).

Theory of operation
-------------------
A callback row (migration 3) is created by the IVR's callback node
(``engine/ivrbridge.py``), or, with ``[reporting] abandoned_to_callback =
true``, for every call abandoned in a queue (:mod:`engine.realtime`).  Its
life is a small state machine (:data:`TRANSITIONS`)::

    open --assign--> assigned --schedule--> scheduled --complete--> done
      |                 |                       |
      +--schedule-------+--------cancel---------+--> cancelled
      |                 |                       |
      +------dial-------+---------dial----------+--> dialing --answered--> done
                                                        +------failed----> assigned

``scheduled_ts`` is when to call back (``None``: as soon as possible);
``assigned_agent`` who calls.  Completing a callback records the call that
served it (``result_call_id``) and the CDR of that call carries
``callback_of`` = the original call id, which is how the CDR links the
callback to the abandoned call.

Writes go straight to SQLite on a worker thread (one short ``UPDATE`` per
op, guarded by the row's current state so two supervisors cannot both win)
and then the ``callback.changed`` event is published in the row's scope.

Preview dialling: the statistics service (:mod:`engine.realtime`) looks
for due callbacks (``scheduled_ts`` passed, or unscheduled) assigned to an
agent who is ``ready`` and sends that agent's desktop ``callback.preview``
(once per callback and ready period).  The agent accepts with
``callback.dial``: the call-control click-to-dial
(:meth:`engine.callcontrol.CallControl.dial`, outgoing legs of
``engine/legs.py``) rings the agent's phone, then the customer through a
trunk; the callback is ``dialing`` with ``result_call_id`` = the new call.
When that call ends (``call.ended``), an answered call completes the
callback (``done``, and the new call's CDR gets ``callback_of``), any other
outcome returns it to ``assigned`` for another attempt.
"""
from __future__ import annotations

import asyncio
import enum
import sqlite3
import time
from typing import Any

from engine.cdr_query import ReadScope
from engine.errors import Conflict, Forbidden, InvalidArgs, NotFound
from engine.ops import AGENT_ROLES, READ_ROLES, SUPERVISOR_ROLES, Arg, OpContext, registry


class CallbackState(enum.Enum):
    OPEN = "open"
    ASSIGNED = "assigned"
    SCHEDULED = "scheduled"
    DIALING = "dialing"
    DONE = "done"
    CANCELLED = "cancelled"


class CallbackTrigger(enum.Enum):
    ASSIGN = "assign"
    SCHEDULE = "schedule"
    COMPLETE = "complete"
    CANCEL = "cancel"
    DIAL = "dial"
    FAILED = "failed"


_S, _T = CallbackState, CallbackTrigger
TRANSITIONS: dict[CallbackState, dict[CallbackTrigger, CallbackState]] = {
    _S.OPEN: {_T.ASSIGN: _S.ASSIGNED, _T.SCHEDULE: _S.SCHEDULED, _T.COMPLETE: _S.DONE, _T.CANCEL: _S.CANCELLED,
              _T.DIAL: _S.DIALING},
    _S.ASSIGNED: {_T.ASSIGN: _S.ASSIGNED, _T.SCHEDULE: _S.SCHEDULED, _T.COMPLETE: _S.DONE,
                  _T.CANCEL: _S.CANCELLED, _T.DIAL: _S.DIALING},
    _S.SCHEDULED: {_T.ASSIGN: _S.SCHEDULED, _T.SCHEDULE: _S.SCHEDULED, _T.COMPLETE: _S.DONE,
                   _T.CANCEL: _S.CANCELLED, _T.DIAL: _S.DIALING},
    _S.DIALING: {_T.COMPLETE: _S.DONE, _T.FAILED: _S.ASSIGNED, _T.CANCEL: _S.CANCELLED},
    _S.DONE: {},
    _S.CANCELLED: {},
}


class InvalidState(Conflict):
    """An illegal callback transition (error code ``conflict``)."""


def next_state(state: str, trigger: CallbackTrigger, callback_id: int) -> CallbackState:
    """The state after ``trigger``; :class:`InvalidState` naming both when illegal."""
    try:
        current = CallbackState(state)
    except ValueError:
        current = CallbackState.OPEN  # rows written by older code with a free-text state
    nxt = TRANSITIONS[current].get(trigger)
    if nxt is None:
        raise InvalidState(f"callback {callback_id}: cannot {trigger.value} in state {current.value}")
    return nxt


COLUMNS = ("id", "tenant", "call_id", "caller_number", "queue", "requested_ts", "scheduled_ts", "assigned_agent",
           "state", "attempts", "completed_ts", "result_call_id", "notes")


def _scope(ctx: OpContext) -> ReadScope:
    from engine.reporting_ops import _scope as scope
    return scope(ctx, "")


def _callback_where(scope: ReadScope) -> tuple[str, list[Any]]:
    # callbacks carry queue and assigned_agent (no grp): map the scope onto them.
    parts, params = [], []
    if scope.tenants is not None:
        parts.append(f"tenant IN ({', '.join('?' for _ in scope.tenants)})" if scope.tenants else "0")
        params.extend(scope.tenants)
    if scope.agent is not None:
        parts.append("assigned_agent = ?")
        params.append(scope.agent)
    if scope.groups is not None:
        alts = []
        for col, values in (("queue", scope.queues), ("assigned_agent", scope.agents)):
            if values:
                alts.append(f"{col} IN ({', '.join('?' for _ in values)})")
                params.extend(values)
        parts.append("(" + (" OR ".join(alts) or "0") + ")")
    return " AND ".join(parts) or "1", params


def _db(ctx: OpContext) -> str:
    from engine.reporting_ops import _db_path
    return _db_path(ctx, "callback")


async def _write(path: str, fn: Any) -> Any:
    def work() -> Any:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
                conn.execute("COMMIT")
                return out
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
    return await asyncio.get_running_loop().run_in_executor(None, work)


@registry.op("callback.list", roles=READ_ROLES, args=[
    Arg("state", str, default="", choices=("", *(st.value for st in CallbackState))),
    Arg("queue", str, default=""), Arg("assigned_agent", str, default=""),
    Arg("due_before", (int, float, str, type(None)), default=None,
        doc="only callbacks due (scheduled_ts, or requested_ts when unscheduled) before this time"),
    Arg("offset", int, default=0), Arg("limit", int, default=100)])
async def op_callback_list(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Callbacks in the caller's scope, oldest due first."""
    if not 1 <= args["limit"] <= 10000 or args["offset"] < 0:
        raise InvalidArgs("callback.list: limit must be 1..10000 and offset >= 0")
    from engine.reporting_ops import _in_thread, _time
    sw, sp = _callback_where(_scope(ctx))
    parts, params = [sw], list(sp)
    for arg in ("state", "queue", "assigned_agent"):
        if args[arg]:
            parts.append(f"{arg} = ?")
            params.append(args[arg])
    due = _time(ctx, "callback.list", "due_before", args["due_before"])
    if due is not None:
        parts.append("COALESCE(scheduled_ts, requested_ts) < ?")
        params.append(due)
    sql = (f"SELECT {', '.join(COLUMNS)} FROM callbacks WHERE {' AND '.join(parts)} "
           "ORDER BY COALESCE(scheduled_ts, requested_ts), id LIMIT ? OFFSET ?")
    await ctx.engine.require_store().aflush()

    def work(conn: Any) -> dict[str, Any]:
        rows = [dict(zip(COLUMNS, r)) for r in conn.execute(sql, [*params, args["limit"] + 1, args["offset"]])]
        more = len(rows) > args["limit"]
        rows = rows[: args["limit"]]
        return {"callbacks": rows, "offset": args["offset"],
                "next_offset": args["offset"] + len(rows) if more else None}

    return await _in_thread(_db(ctx), work)


async def _change(ctx: OpContext, callback_id: int, trigger: CallbackTrigger, values: dict[str, Any]) -> dict:
    sw, sp = _callback_where(_scope(ctx))
    await ctx.engine.require_store().aflush()

    def fn(conn: sqlite3.Connection) -> dict[str, Any]:
        row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM callbacks WHERE id = ? AND {sw}",
                           [callback_id, *sp]).fetchone()
        if row is None:
            raise NotFound(f"no callback {callback_id} visible to this user")
        cur = dict(zip(COLUMNS, row))
        new = next_state(cur["state"], trigger, callback_id)
        sets = {**values, "state": new.value}
        conn.execute(f"UPDATE callbacks SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ? AND state = ?",
                     [*sets.values(), callback_id, cur["state"]])
        if new is CallbackState.DONE and sets.get("result_call_id") and cur["call_id"]:
            # The serving call's CDR points back at the abandoned call (when it
            # is already written; a call still in progress keeps its own link).
            conn.execute("UPDATE cdr SET callback_of = ? WHERE call_id = ? AND tenant = ? AND callback_of = ''",
                         [cur["call_id"], sets["result_call_id"], cur["tenant"]])
        cur.update(sets)
        return cur

    row = await _write(_db(ctx), fn)
    agent = row["assigned_agent"] or None
    q = ctx.engine.config.queues.get(row["queue"])
    ctx.engine.bus.publish("callback.changed", row, tenant=row["tenant"], agent=agent,
                           queue=row["queue"] or None, groups=q.groups if q is not None else ())
    return row


def _check_agent(ctx: OpContext, agent: str) -> None:
    conf = ctx.engine.config.agents.get(agent)
    if conf is None:
        raise NotFound(f"no agent {agent!r}")
    ctx.session.require(tenant=conf.tenant, groups=set(conf.groups), agent=agent)


@registry.op("callback.assign", roles=SUPERVISOR_ROLES, changes_state=True, args=[
    Arg("id", int, doc="callback id"), Arg("agent", str, doc="agent number who calls back")])
async def op_callback_assign(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Give a callback to an agent (open/assigned/scheduled keep or take 'assigned')."""
    _check_agent(ctx, args["agent"])
    return await _change(ctx, args["id"], CallbackTrigger.ASSIGN, {"assigned_agent": args["agent"]})


@registry.op("callback.schedule", roles=AGENT_ROLES, changes_state=True, args=[
    Arg("id", int), Arg("at", (int, float, str), doc="when to call back: Unix s or ISO 8601 (local zone)"),
    Arg("agent", str, default="", doc="also assign to this agent"), Arg("notes", str, default="")])
async def op_callback_schedule(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Schedule a callback at a date and time (agents: only their own callbacks)."""
    from engine.reporting_ops import _time
    at = _time(ctx, "callback.schedule", "at", args["at"])
    values: dict[str, Any] = {"scheduled_ts": at}
    if args["agent"]:
        if ctx.session.role == "agent" and args["agent"] != ctx.session.agent:
            raise Forbidden("an agent may not assign callbacks to others")
        _check_agent(ctx, args["agent"])
        values["assigned_agent"] = args["agent"]
    if args["notes"]:
        values["notes"] = args["notes"]
    return await _change(ctx, args["id"], CallbackTrigger.SCHEDULE, values)


@registry.op("callback.complete", roles=AGENT_ROLES, changes_state=True, args=[
    Arg("id", int), Arg("result_call_id", str, default="", doc="the call that served the callback"),
    Arg("cancel", bool, default=False, doc="cancel instead of completing")])
async def op_callback_complete(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Close a callback as done (with the serving call) or cancelled."""
    if args["cancel"]:
        return await _change(ctx, args["id"], CallbackTrigger.CANCEL, {"completed_ts": time.time()})
    return await _change(ctx, args["id"], CallbackTrigger.COMPLETE,
                         {"completed_ts": time.time(), "result_call_id": args["result_call_id"]})


@registry.op("callback.dial", roles=AGENT_ROLES, changes_state=True, args=[
    Arg("id", int, doc="callback id (callback.preview / callback.list)"),
    Arg("agent", str, default="", doc="agent who calls (default: the session's agent)"),
    Arg("trunk", str, default="", doc="trunk for the outgoing leg (default: the tenant's first)")])
async def op_callback_dial(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Preview dialling: ring the agent's phone, then the callback's number (click-to-dial)."""
    from engine.errors import Unavailable

    number = args["agent"] or ctx.session.agent
    if not number:
        raise InvalidArgs("callback.dial: give the agent (this user is not an agent)")
    _check_agent(ctx, number)
    centre = next((s for s in ctx.engine.services if type(s).__name__ == "CallCentre"), None)
    control = getattr(centre, "callcontrol", None)
    if centre is None or control is None:
        raise Unavailable("callback.dial needs the call path (a configured trunk) and call control")
    sw, sp = _callback_where(_scope(ctx))
    from engine.reporting_ops import _in_thread

    row = await _in_thread(_db(ctx), lambda conn: conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM callbacks WHERE id = ? AND {sw}", [args["id"], *sp]).fetchone())
    if row is None:
        raise NotFound(f"no callback {args['id']} visible to this user")
    cb = dict(zip(COLUMNS, row))
    if cb["assigned_agent"] and cb["assigned_agent"] != number:
        raise Forbidden(f"callback {cb['id']} is assigned to agent {cb['assigned_agent']}")
    next_state(cb["state"], CallbackTrigger.DIAL, cb["id"])  # refuse before ringing anyone
    from engine.callcontrol_ops import toll_check

    toll_check(centre, cb["tenant"], ctx.session.role, cb["caller_number"])
    call = control.dial(centre.agent(number), cb["caller_number"], trunk=args["trunk"], role=ctx.session.role)
    from engine.realtime import find_stats

    svc = find_stats(ctx.engine)
    if svc is not None:
        svc.dialled.add(call.call_id)
    row = await _change(ctx, cb["id"], CallbackTrigger.DIAL,
                        {"assigned_agent": number, "result_call_id": call.call_id, "attempts": cb["attempts"] + 1})
    return {"callback": row, "call": call.describe()}


async def finish_dialled(engine: Any, call_id: str, answered: bool) -> dict[str, Any] | None:
    """The dialled callback call ``call_id`` ended: done (answered, CDR linked) or back to assigned."""
    store = engine.store
    path = getattr(store, "path", None)
    if store is None or not path or path == ":memory:":
        return None
    await store.aflush()  # the call's CDR is committed before it is linked

    def fn(conn: sqlite3.Connection) -> dict[str, Any] | None:
        row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM callbacks WHERE result_call_id = ? AND state = ?",
                           [call_id, CallbackState.DIALING.value]).fetchone()
        if row is None:
            return None
        cur = dict(zip(COLUMNS, row))
        trigger = CallbackTrigger.COMPLETE if answered else CallbackTrigger.FAILED
        new = next_state(cur["state"], trigger, cur["id"])
        sets: dict[str, Any] = {"state": new.value}
        if answered:
            sets["completed_ts"] = time.time()
            conn.execute("UPDATE cdr SET callback_of = ? WHERE call_id = ? AND tenant = ? AND callback_of = ''",
                         [cur["call_id"], call_id, cur["tenant"]])
        conn.execute(f"UPDATE callbacks SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                     [*sets.values(), cur["id"]])
        cur.update(sets)
        return cur

    row = await _write(path, fn)
    if row is not None:
        engine.bus.publish("callback.changed", row, tenant=row["tenant"], agent=row["assigned_agent"] or None,
                           queue=row["queue"] or None)
    return row


__all__ = ["COLUMNS", "CallbackState", "CallbackTrigger", "InvalidState", "TRANSITIONS", "finish_dialled",
           "next_state"]
