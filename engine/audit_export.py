"""Audit log export: filters over ``audit_log``, CSV or JSON Lines out.

Theory of operation
-------------------
The audit log (one row per login, failed login and state-changing control
op, ``engine.store`` migration 1) is read with plain SQL on its own
connection: time ranges are not expressible through ``Store.select``
(equality only).  :class:`AuditFilter` turns the filters into a ``WHERE``
clause with bound parameters only; rows come out oldest first (``id``
order, which is commit order).

Two callers share the code:

* ``ctiengine audit CONFIG ...`` reads the database file directly (offline,
  or beside a running engine: WAL readers never block the writer), streaming
  every matching row to a file or stdout;
* the control op ``audit.export`` (admins only) returns one chunk of at
  most ``limit`` rows as CSV or JSONL text plus ``next_offset``; a client
  pages until ``next_offset`` is nil.  It is registered with
  ``changes_state=True`` so that every export, allowed or refused, is itself
  written to the audit log (who read the log is security-relevant).  A
  tenant administrator only ever sees its own tenant's rows.
"""
from __future__ import annotations

import asyncio
import csv
import datetime as _dt
import io
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, TextIO

from engine.config import GLOBAL_TENANT
from engine.errors import Forbidden, InvalidArgs, Unavailable
from engine.ops import ADMIN, Arg, OpContext, registry
from engine.store import open_query_only

COLUMNS = ("id", "ts", "time", "tenant", "user", "role", "op", "args", "result", "peer")
FORMATS = ("csv", "jsonl")
EXPORT_MAX_ROWS = 10000


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    """Which audit rows to export; empty strings and ``None`` mean "any"."""

    since: float | None = None  # ts >= since
    until: float | None = None  # ts < until
    user: str = ""
    op: str = ""
    tenant: str = ""

    def where(self) -> tuple[str, list[Any]]:
        """SQL ``WHERE`` clause (possibly empty) and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            parts.append("ts >= ?")
            params.append(float(self.since))
        if self.until is not None:
            parts.append("ts < ?")
            params.append(float(self.until))
        for col in ("user", "op", "tenant"):
            value = getattr(self, col)
            if value:
                parts.append(f"{col} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(parts) if parts else ""), params


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO 8601 date/time (``2026-11-23``, ``2026-11-23T10:00:00Z``).

    A time without a zone is UTC.  Raises ``ValueError`` with the accepted forms.
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 date/time "
                         "(e.g. 2026-11-23 or 2026-11-23T10:00:00Z)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.timestamp()


def iso_time(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def open_readonly(db_path: str) -> sqlite3.Connection:
    """A query-only connection to an existing store with an ``audit_log`` table
    (:func:`engine.store.open_query_only`; ``StoreError`` otherwise)."""
    return open_query_only(db_path, "audit_log")


def query_rows(conn: sqlite3.Connection, flt: AuditFilter, *, limit: int | None = None,
               offset: int = 0) -> Iterator[dict[str, Any]]:
    """Matching rows, oldest first, each with an added ISO 8601 ``time``."""
    clause, params = flt.where()
    sql = f"SELECT id, ts, tenant, user, role, op, args, result, peer FROM audit_log{clause} ORDER BY id"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        params = [*params, int(limit), int(offset)]
    for row in conn.execute(sql, params):
        out = dict(row)
        out["time"] = iso_time(out["ts"])
        yield out


def write_rows(rows: Iterable[dict[str, Any]], out: TextIO, fmt: str, *, header: bool = True) -> int:
    """Write rows as CSV (RFC 4180, header line first) or JSON Lines; returns the count."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (expected {', '.join(FORMATS)})")
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
        if header:
            writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n += 1
    else:
        for row in rows:
            out.write(json.dumps({k: row[k] for k in COLUMNS}, ensure_ascii=False, sort_keys=False) + "\n")
            n += 1
    return n


def export_file(db_path: str, out: TextIO, flt: AuditFilter, fmt: str = "csv") -> int:
    """Every row of the store at ``db_path`` matching ``flt`` written to ``out``; returns the count."""
    conn = open_readonly(db_path)
    try:
        return write_rows(query_rows(conn, flt), out, fmt)
    finally:
        conn.close()


def export_chunk(db_path: str, flt: AuditFilter, fmt: str, *, offset: int, limit: int) -> dict[str, Any]:
    """One page of the export: text, row count and the next offset (``None`` at the end)."""
    conn = open_readonly(db_path)
    try:
        rows = list(query_rows(conn, flt, limit=limit + 1, offset=offset))
    finally:
        conn.close()
    more = len(rows) > limit
    rows = rows[:limit]
    buf = io.StringIO()
    write_rows(rows, buf, fmt, header=(offset == 0))
    return {"format": fmt, "data": buf.getvalue(), "rows": len(rows), "offset": offset,
            "next_offset": offset + len(rows) if more else None}


@registry.op("audit.export", roles=ADMIN, changes_state=True, args=[
    Arg("since", (int, float, str, type(None)), default=None, doc="Unix seconds or ISO 8601; ts >= since"),
    Arg("until", (int, float, str, type(None)), default=None, doc="Unix seconds or ISO 8601; ts < until"),
    Arg("user", str, default=""), Arg("op", str, default=""),
    Arg("tenant", str, default="", doc="global admins only; others always get their own tenant"),
    Arg("format", str, default="csv", choices=FORMATS),
    Arg("offset", int, default=0, doc="rows to skip (from the previous chunk's next_offset)"),
    Arg("limit", int, default=1000, doc=f"rows per chunk, 1..{EXPORT_MAX_ROWS}")])
async def op_audit_export(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """One chunk of the audit log as CSV or JSON Lines text, oldest first (audited itself)."""
    if not 1 <= args["limit"] <= EXPORT_MAX_ROWS or args["offset"] < 0:
        raise InvalidArgs(f"audit.export: limit must be 1..{EXPORT_MAX_ROWS} and offset >= 0")
    times: dict[str, float | None] = {}
    for key in ("since", "until"):
        value = args[key]
        try:
            times[key] = parse_time(value) if isinstance(value, str) else (None if value is None else float(value))
        except ValueError as exc:
            raise InvalidArgs(f"audit.export: argument {key!r}: {exc}") from None
    session = ctx.session
    session.require_organisation("the audit log")
    tenant = args["tenant"]
    if session.tenant != GLOBAL_TENANT:
        if tenant and tenant != session.tenant:
            raise Forbidden(f"user {session.user!r} may not see tenant {tenant!r}")
        tenant = session.tenant
    store = ctx.engine.require_store()
    db_path = getattr(store, "path", None)
    if not db_path or db_path == ":memory:":
        raise Unavailable("audit.export needs a file-backed SQLite store")
    await store.aflush()  # rows audited before this request are committed
    flt = AuditFilter(since=times["since"], until=times["until"], user=args["user"], op=args["op"],
                      tenant=tenant)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: export_chunk(db_path, flt, args["format"],
                                                                 offset=args["offset"], limit=args["limit"]))


__all__ = ["AuditFilter", "COLUMNS", "FORMATS", "export_chunk", "export_file", "parse_time", "query_rows",
           "write_rows"]
