"""Reporting control ops: KPIs, CDR search and export, real-time stats,
recording search and download (docs/control-reporting-ops.md).

Every op here reads; none changes state except the audited exports and
downloads (``cdr.export``, ``recording.fetch`` are registered with
``changes_state=True`` so that who took data out is in the audit log, as
``audit.export`` does).  Scope (engine.cdr_query.ReadScope): a user sees its
tenant (global users: every tenant, or the one named); supervisors the
calls, recordings and KPI rows of their groups (and of the queues and
agents of those groups); agents only their own; the ``reporting`` role its
whole tenant, read-only.  Database work runs in a worker thread on its own
query-only connection.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Callable

from engine.cdr_query import (EXPORT_FORMATS, FILTER_FIELDS, QUERY_MAX_ROWS, CdrFilter, ReadScope, export_bytes,
                              query, scope_for)
from engine.config import GLOBAL_TENANT
from engine.errors import Forbidden, InvalidArgs, NotFound, Unavailable
from engine.kpi import Dimension, Period
from engine.ops import READ_ROLES, Arg, OpContext, registry
from engine.realtime import find_stats, snapshot
from engine.reporting import build_report, open_reader, parse_local_time

REPORT_MAX_ROWS = 5000
FETCH_MAX_BYTES = 512 * 1024
_TIME = (int, float, str, type(None))


def _tenants(ctx: OpContext, tenant: str) -> tuple[str, ...] | None:
    s = ctx.session
    if s.tenant == GLOBAL_TENANT:
        return (tenant,) if tenant else None
    if tenant and tenant != s.tenant:
        raise Forbidden(f"user {s.user!r} may not see tenant {tenant!r}")
    return (s.tenant,)


def _scope(ctx: OpContext, tenant: str) -> ReadScope:
    base = scope_for(ctx.session, ctx.engine.config)
    return ReadScope(tenants=_tenants(ctx, tenant), groups=base.groups, queues=base.queues, agents=base.agents,
                     agent=base.agent)


def _time(ctx: OpContext, op: str, name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        return parse_local_time(value, ctx.engine.config.engine.time_zone)
    except ValueError as exc:
        raise InvalidArgs(f"{op}: argument {name!r}: {exc}") from None


def _db_path(ctx: OpContext, op: str) -> str:
    store = ctx.engine.require_store()
    path = getattr(store, "path", None)
    if not path or path == ":memory:":
        raise Unavailable(f"{op} needs a file-backed SQLite store")
    return path


async def _in_thread(path: str, fn: Callable[[Any], Any]) -> Any:
    def work() -> Any:
        conn = open_reader(path)
        try:
            return fn(conn)
        finally:
            conn.close()
    return await asyncio.get_running_loop().run_in_executor(None, work)


def _paging(op: str, offset: int, limit: int, most: int) -> None:
    if not 1 <= limit <= most or offset < 0:
        raise InvalidArgs(f"{op}: limit must be 1..{most} and offset >= 0")


# ---------------------------------------------------------------- kpi.report


@registry.op("kpi.report", roles=READ_ROLES, args=[
    Arg("period", str, default="30min", choices=tuple(p.value for p in Period)),
    Arg("dimension", str, default="queue", choices=tuple(d.value for d in Dimension)),
    Arg("since", (int, float, str), doc="Unix seconds or ISO 8601 (no offset: the centre's time zone)"),
    Arg("until", (int, float, str), doc="end (exclusive)"),
    Arg("keys", list, default=[], item_type=str, doc="only these queues/groups/agents/numbers (empty: all)"),
    Arg("tenant", str, default="", doc="global users: one tenant (empty: all)"),
    Arg("offset", int, default=0), Arg("limit", int, default=1000, doc=f"rows, 1..{REPORT_MAX_ROWS}")])
async def op_kpi_report(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Interval KPIs (docs/kpis.md) by period and dimension, one row per (interval, key)."""
    _paging("kpi.report", args["offset"], args["limit"], REPORT_MAX_ROWS)
    since = _time(ctx, "kpi.report", "since", args["since"])
    until = _time(ctx, "kpi.report", "until", args["until"])
    assert since is not None and until is not None
    if until <= since:
        raise InvalidArgs("kpi.report: 'until' must be after 'since'")
    if until - since > 400 * 86400:
        raise InvalidArgs("kpi.report: the range may span at most 400 days")
    period, dim = Period(args["period"]), Dimension(args["dimension"])
    s = ctx.session
    tenants = _tenants(ctx, args["tenant"])
    allowed: set[str] | None = None
    if s.role == "agent":
        if dim is not Dimension.AGENT:
            raise Forbidden("agents may only see the 'agent' dimension (their own figures)")
        allowed = {s.agent}
    elif s.role == "supervisor" or s.scope_kind in ("department", "team"):
        if dim not in (Dimension.QUEUE, Dimension.GROUP, Dimension.AGENT):
            raise Forbidden(f"scope {s.scope_kind!r} covers the queue, group and agent dimensions only")
        sc = scope_for(s, ctx.engine.config)
        allowed = set({Dimension.QUEUE: sc.queues, Dimension.GROUP: sc.groups or (), Dimension.AGENT: sc.agents}[dim])
    keys = set(args["keys"])
    if allowed is not None and keys - allowed:
        raise Forbidden(f"outside this user's scope: {', '.join(sorted(keys - allowed))}")
    await ctx.engine.require_store().aflush()
    config = ctx.engine.config

    def work(conn: Any) -> list[dict[str, Any]]:
        rep = build_report(conn, config, period=period, dimension=dim, since=since, until=until, tenants=tenants)
        rows = rep.rows()
        want = keys or allowed
        return [r for r in rows if want is None or r[dim.value] in want]

    rows = await _in_thread(_db_path(ctx, "kpi.report"), work)
    page = rows[args["offset"]: args["offset"] + args["limit"]]
    end = args["offset"] + len(page)
    return {"period": period.value, "dimension": dim.value, "time_zone": config.engine.time_zone,
            "since": since, "until": until, "rows": page, "total": len(rows), "offset": args["offset"],
            "next_offset": end if end < len(rows) else None}


# ---------------------------------------------------------------- cdr.query / cdr.export

_FILTER_ARGS = [
    Arg("since", _TIME, default=None, doc="start_ts >= since (Unix s or ISO 8601, local zone)"),
    Arg("until", _TIME, default=None, doc="start_ts < until"),
    Arg("call_id", str, default=""), Arg("caller_number", str, default=""),
    Arg("caller_prefix", str, default="", doc="caller numbers starting with this"),
    Arg("dialed_number", str, default=""), Arg("agent", str, default=""), Arg("group", str, default=""),
    Arg("queue", str, default=""), Arg("trunk", str, default=""),
    Arg("direction", str, default="", choices=("", "inbound", "outbound", "internal")),
    Arg("disposition", str, default=""), Arg("end_reason", str, default=""), Arg("reason_code", str, default=""),
    Arg("min_talk_s", (int, float, type(None)), default=None), Arg("max_talk_s", (int, float, type(None)), default=None),
    Arg("min_wait_s", (int, float, type(None)), default=None), Arg("max_wait_s", (int, float, type(None)), default=None),
    Arg("transferred", (bool, type(None)), default=None), Arg("recorded", (bool, type(None)), default=None),
    Arg("min_survey_score", (int, type(None)), default=None), Arg("max_survey_score", (int, type(None)), default=None),
    Arg("notes_text", str, default="", doc="substring of the notes"),
    Arg("callback_of", str, default="", doc="calls that were callbacks of this call id"),
    Arg("tenant", str, default="", doc="global users: one tenant (empty: all)"),
]


def _filter(ctx: OpContext, op: str, args: dict[str, Any]) -> tuple[CdrFilter, ReadScope]:
    values = {k: args[k] for k in FILTER_FIELDS if k in args and k != "tenant"}
    values["since"] = _time(ctx, op, "since", args["since"])
    values["until"] = _time(ctx, op, "until", args["until"])
    return CdrFilter(**values), _scope(ctx, args["tenant"])


@registry.op("cdr.query", roles=READ_ROLES, args=[
    *_FILTER_ARGS, Arg("offset", int, default=0), Arg("limit", int, default=100, doc=f"1..{QUERY_MAX_ROWS}"),
    Arg("descending", bool, default=False, doc="newest first"),
    Arg("count", bool, default=False, doc="also return the total number of matches")])
async def op_cdr_query(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """CDRs matching the filters, in the caller's scope, one page at a time."""
    _paging("cdr.query", args["offset"], args["limit"], QUERY_MAX_ROWS)
    flt, scope = _filter(ctx, "cdr.query", args)
    await ctx.engine.require_store().aflush()
    return await _in_thread(_db_path(ctx, "cdr.query"), lambda conn: query(
        conn, flt, scope, offset=args["offset"], limit=args["limit"], descending=args["descending"],
        count=args["count"]))


@registry.op("cdr.export", roles=READ_ROLES, changes_state=True, args=[
    *_FILTER_ARGS, Arg("format", str, default="csv", choices=EXPORT_FORMATS),
    Arg("offset", int, default=0), Arg("limit", int, default=5000, doc=f"rows per chunk, 1..{QUERY_MAX_ROWS}")])
async def op_cdr_export(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """One chunk of matching CDRs as CSV text bytes or an XLSX workbook (audited)."""
    _paging("cdr.export", args["offset"], args["limit"], QUERY_MAX_ROWS)
    flt, scope = _filter(ctx, "cdr.export", args)
    await ctx.engine.require_store().aflush()
    fmt = args["format"]

    def work(conn: Any) -> dict[str, Any]:
        res = query(conn, flt, scope, offset=args["offset"], limit=args["limit"])
        data = export_bytes(res["rows"], fmt, header=(args["offset"] == 0 or fmt == "xlsx"))
        return {"format": fmt, "data": data, "rows": len(res["rows"]), "offset": args["offset"],
                "next_offset": res["next_offset"]}

    return await _in_thread(_db_path(ctx, "cdr.export"), work)


# ---------------------------------------------------------------- stats.realtime


@registry.op("stats.realtime", roles=READ_ROLES, args=[])
async def op_stats_realtime(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Live per-queue, per-agent and engine statistics with today's KPIs, in the caller's scope."""
    svc = find_stats(ctx.engine)
    return snapshot(ctx.engine, ctx.session, svc.today if svc is not None else None)


# ---------------------------------------------------------------- recordings

_REC_COLUMNS = ("id", "call_id", "tenant", "path", "start_ts", "duration_s", "agent", "grp", "queue",
                "caller_number", "format", "channels", "bytes")


@registry.op("recording.query", roles=READ_ROLES, args=[
    Arg("since", _TIME, default=None), Arg("until", _TIME, default=None), Arg("call_id", str, default=""),
    Arg("agent", str, default=""), Arg("group", str, default=""), Arg("queue", str, default=""),
    Arg("caller_number", str, default=""), Arg("min_duration_s", (int, float, type(None)), default=None),
    Arg("tenant", str, default=""), Arg("offset", int, default=0), Arg("limit", int, default=100)])
async def op_recording_query(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Recordings in the caller's permission scope (all / own groups / own calls), newest first."""
    _paging("recording.query", args["offset"], args["limit"], QUERY_MAX_ROWS)
    scope = _scope(ctx, args["tenant"])
    parts, params = [], []
    since, until = _time(ctx, "recording.query", "since", args["since"]), _time(ctx, "recording.query", "until",
                                                                                 args["until"])
    if since is not None:
        parts.append("start_ts >= ?")
        params.append(since)
    if until is not None:
        parts.append("start_ts < ?")
        params.append(until)
    for arg, col in (("call_id", "call_id"), ("agent", "agent"), ("group", "grp"), ("queue", "queue"),
                     ("caller_number", "caller_number")):
        if args[arg]:
            parts.append(f"{col} = ?")
            params.append(args[arg])
    if args["min_duration_s"] is not None:
        parts.append("duration_s >= ?")
        params.append(args["min_duration_s"])
    sw, sp = scope.where()
    where = " AND ".join([*parts, sw])
    sql = (f"SELECT {', '.join(_REC_COLUMNS)} FROM recordings WHERE {where} ORDER BY start_ts DESC, id DESC "
           "LIMIT ? OFFSET ?")
    await ctx.engine.require_store().aflush()

    def work(conn: Any) -> dict[str, Any]:
        rows = [dict(zip(_REC_COLUMNS, r)) for r in conn.execute(sql, [*params, *sp, args["limit"] + 1,
                                                                        args["offset"]])]
        more = len(rows) > args["limit"]
        rows = rows[: args["limit"]]
        for r in rows:
            r["path"] = os.path.basename(r["path"])  # the server's layout is not the client's business
        return {"rows": rows, "offset": args["offset"],
                "next_offset": args["offset"] + len(rows) if more else None}

    return await _in_thread(_db_path(ctx, "recording.query"), work)


def recording_file(config: Any, stored_path: str) -> str:
    """The file of a ``recordings`` row, refused unless it lies under ``[recording] path``."""
    root = os.path.realpath(config.resolve_path(config.recording.path))
    path = os.path.realpath(stored_path if os.path.isabs(stored_path) else os.path.join(root, stored_path))
    if os.path.commonpath([root, path]) != root:
        raise Forbidden("the recording's file lies outside the recording directory")
    if not os.path.isfile(path):
        raise NotFound("the recording's file is missing")
    return path


@registry.op("recording.fetch", roles=READ_ROLES, changes_state=True, args=[
    Arg("id", int, doc="recording id (recording.query)"), Arg("offset", int, default=0, doc="byte offset"),
    Arg("length", int, default=256 * 1024, doc=f"bytes, 1..{FETCH_MAX_BYTES}")])
async def op_recording_fetch(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """One chunk of a recording's file, in the caller's permission scope (audited)."""
    if not 1 <= args["length"] <= FETCH_MAX_BYTES or args["offset"] < 0:
        raise InvalidArgs(f"recording.fetch: length must be 1..{FETCH_MAX_BYTES} and offset >= 0")
    scope = _scope(ctx, "")
    sw, sp = scope.where()
    await ctx.engine.require_store().aflush()

    def find(conn: Any) -> dict[str, Any] | None:
        row = conn.execute(f"SELECT {', '.join(_REC_COLUMNS)} FROM recordings WHERE id = ? AND {sw}",
                           [args["id"], *sp]).fetchone()
        return dict(zip(_REC_COLUMNS, row)) if row else None

    rec = await _in_thread(_db_path(ctx, "recording.fetch"), find)
    if rec is None:  # absent or outside the scope: the same answer, nothing leaks
        raise NotFound(f"no recording {args['id']} visible to this user")
    path = recording_file(ctx.engine.config, rec["path"])

    def read() -> tuple[bytes, int]:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(args["offset"])
            return f.read(args["length"]), size

    data, size = await asyncio.get_running_loop().run_in_executor(None, read)
    end = args["offset"] + len(data)
    return {"id": rec["id"], "call_id": rec["call_id"], "format": rec["format"], "size": size,
            "offset": args["offset"], "data": data, "next_offset": end if end < size else None}


__all__ = ["recording_file"]
