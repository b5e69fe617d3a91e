"""CDR search, paging and export (``cdr.query``, ``cdr.export``, ``ctiengine report``).

Theory of operation
-------------------
:class:`CdrFilter` holds the about twenty conditions a manager searches
calls by; :meth:`CdrFilter.where` turns them into one ``WHERE`` clause of
bound parameters (column names come from this module, never from the
client).  Conditions are chosen so that SQLite can use the ``cdr`` indexes:
every index leads with ``tenant`` and ends with ``start_ts``, so a query
names its tenants and a time range and the planner picks the most selective
of ``(tenant, caller_number | dialed_number | agent | queue | grp, start_ts)``;
a caller-number *prefix* is a range (``caller_number >= '+4930' AND
caller_number < '+4931'``), not ``LIKE``, so it uses the caller index.

:class:`ReadScope` is who may see which rows: tenants (``None``: every
tenant, for global users), and for supervisors their groups plus the
queues and agents of those groups, for department and team scopes
(:mod:`engine.orgscope`) their agents, groups and those groups' queues,
for agents their own calls.  It adds
its own ``AND (...)`` to every query, so no filter a client sends can widen
it.  The same scope applies to ``recordings`` (which carries ``grp``,
``queue`` and ``agent`` too).

Paging is by ``offset``/``limit`` in a stable order (``start_ts`` then
``id``); exports stream pages of rows into CSV (RFC 4180) or XLSX
(openpyxl, write-only mode so memory stays flat).
"""
from __future__ import annotations

import csv
import io
import sqlite3
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Iterator, Sequence

CDR_COLUMNS = ("id", "call_id", "tenant", "direction", "caller_number", "dialed_number", "trunk", "route", "flow",
               "queue", "grp", "agent", "start_ts", "queued_ts", "answered_ts", "end_ts", "wait_s", "ring_s",
               "talk_s", "hold_s", "wrapup_s", "disposition", "end_reason", "reason_code", "transferred", "recorded",
               "ring_no_answer_count", "survey_score", "callback_of", "notes", "data")
EXPORT_FORMATS = ("csv", "xlsx")
QUERY_MAX_ROWS = 10000


@dataclass(frozen=True, slots=True)
class ReadScope:
    """Rows a user may read; see the module docstring."""

    tenants: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    queues: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    agent: str | None = None

    def where(self, prefix: str = "") -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        if self.tenants is not None:
            parts.append(_in(f"{prefix}tenant", self.tenants, params))
        if self.agent is not None:
            parts.append(f"{prefix}agent = ?")
            params.append(self.agent)
        if self.groups is not None:
            alts = [_in(f"{prefix}grp", self.groups, params), _in(f"{prefix}queue", self.queues, params),
                    _in(f"{prefix}agent", self.agents, params)]
            parts.append("(" + " OR ".join(alts) + ")")
        return " AND ".join(parts) or "1", params


def _in(col: str, values: Sequence[str], params: list[Any]) -> str:
    if not values:
        return "0"
    params.extend(values)
    return f"{col} IN ({', '.join('?' for _ in values)})"


def scope_for(session: Any, config: Any) -> ReadScope:
    """The :class:`ReadScope` of a control session (tenant; supervisor groups; agent self)."""
    from engine.config import GLOBAL_TENANT

    from engine.orgscope import queues_of_groups

    tenants = None if session.tenant == GLOBAL_TENANT else (session.tenant,)
    kind = getattr(session, "scope_kind", "")
    if session.role == "agent" or kind == "self":
        return ReadScope(tenants=tenants, agent=session.agent or "\0none")
    if session.role == "supervisor" and kind in ("", "groups"):
        groups = set(session.groups)
        agents = [n for n, a in config.agents.items() if groups & set(a.groups)]
        return ReadScope(tenants=tenants, groups=tuple(sorted(groups)), queues=tuple(queues_of_groups(config, groups)),
                         agents=tuple(sorted(agents)))
    if kind in ("department", "team"):  # engine.orgscope: its agents, its groups and their queues
        groups = set(session.groups)
        return ReadScope(tenants=tenants, groups=tuple(sorted(groups)), queues=tuple(queues_of_groups(config, groups)),
                         agents=tuple(sorted(session.agents)))
    return ReadScope(tenants=tenants)


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrFilter:
    """Search conditions; empty strings / ``None`` mean "any"."""

    since: float | None = None
    """start_ts >= since"""
    until: float | None = None
    """start_ts < until"""
    call_id: str = ""
    caller_number: str = ""
    caller_prefix: str = ""
    dialed_number: str = ""
    agent: str = ""
    group: str = ""
    queue: str = ""
    trunk: str = ""
    direction: str = ""
    disposition: str = ""
    end_reason: str = ""
    reason_code: str = ""
    min_talk_s: float | None = None
    max_talk_s: float | None = None
    min_wait_s: float | None = None
    max_wait_s: float | None = None
    transferred: bool | None = None
    recorded: bool | None = None
    min_survey_score: int | None = None
    max_survey_score: int | None = None
    notes_text: str = ""
    """substring of ``notes`` (case-insensitive for ASCII)"""
    tenant: str = ""
    callback_of: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def where(self) -> tuple[str, list[Any]]:
        """SQL condition (never empty) and its parameters."""
        parts: list[str] = []
        params: list[Any] = []

        def add(sql: str, *values: Any) -> None:
            parts.append(sql)
            params.extend(values)

        if self.since is not None:
            add("start_ts >= ?", float(self.since))
        if self.until is not None:
            add("start_ts < ?", float(self.until))
        for attr, col in (("call_id", "call_id"), ("caller_number", "caller_number"),
                          ("dialed_number", "dialed_number"), ("agent", "agent"), ("group", "grp"),
                          ("queue", "queue"), ("trunk", "trunk"), ("direction", "direction"),
                          ("disposition", "disposition"), ("end_reason", "end_reason"),
                          ("reason_code", "reason_code"), ("tenant", "tenant"), ("callback_of", "callback_of")):
            value = getattr(self, attr)
            if value:
                add(f"{col} = ?", value)
        if self.caller_prefix:
            add("caller_number >= ? AND caller_number < ?", self.caller_prefix, _prefix_end(self.caller_prefix))
        for attr, sql in (("min_talk_s", "talk_s >= ?"), ("max_talk_s", "talk_s <= ?"),
                          ("min_wait_s", "wait_s >= ?"), ("max_wait_s", "wait_s <= ?"),
                          ("min_survey_score", "survey_score >= ?"), ("max_survey_score", "survey_score <= ?")):
            value = getattr(self, attr)
            if value is not None:
                add(sql, value)
        if self.transferred is not None:
            add("transferred != 0" if self.transferred else "transferred = 0")
        if self.recorded is not None:
            add("recorded != 0" if self.recorded else "recorded = 0")
        if self.notes_text:
            add("instr(lower(notes), lower(?)) > 0", self.notes_text)
        return " AND ".join(parts) or "1", params


FILTER_FIELDS = tuple(f.name for f in fields(CdrFilter) if f.name != "extra")


def _prefix_end(prefix: str) -> str:
    # The smallest string greater than every string starting with ``prefix``.
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def query_sql(flt: CdrFilter, scope: ReadScope, *, descending: bool = False) -> tuple[str, list[Any]]:
    """``SELECT`` of matching CDRs in the scope (then ``LIMIT ? OFFSET ?``)."""
    fw, fp = flt.where()
    sw, sp = scope.where()
    order = "DESC" if descending else "ASC"
    sql = (f"SELECT {', '.join(CDR_COLUMNS)} FROM cdr WHERE {fw} AND {sw} "
           f"ORDER BY start_ts {order}, id {order} LIMIT ? OFFSET ?")
    return sql, fp + sp


def query(conn: sqlite3.Connection, flt: CdrFilter, scope: ReadScope, *, offset: int = 0, limit: int = 100,
          descending: bool = False, count: bool = False) -> dict[str, Any]:
    """One page: ``rows``, ``offset``, ``next_offset`` (``None`` at the end), ``total`` when ``count``."""
    sql, params = query_sql(flt, scope, descending=descending)
    cur = conn.execute(sql, [*params, int(limit) + 1, int(offset)])
    rows = [dict(zip(CDR_COLUMNS, r)) for r in cur.fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    out: dict[str, Any] = {"rows": rows, "offset": offset, "next_offset": offset + len(rows) if more else None}
    if count:
        fw, fp = flt.where()
        sw, sp = scope.where()
        out["total"] = conn.execute(f"SELECT COUNT(*) FROM cdr WHERE {fw} AND {sw}", fp + sp).fetchone()[0]
    return out


def iter_rows(conn: sqlite3.Connection, flt: CdrFilter, scope: ReadScope, page: int = 5000) -> Iterator[dict]:
    """Every matching row, oldest first, streamed from one cursor ``page`` rows at a
    time (memory stays flat for a month of CDRs; no OFFSET re-scans)."""
    sql, params = query_sql(flt, scope)
    cur = conn.execute(sql, [*params, -1, 0])  # LIMIT -1: no limit
    try:
        while True:
            batch = cur.fetchmany(page)
            if not batch:
                return
            for r in batch:
                yield dict(zip(CDR_COLUMNS, r))
    finally:
        cur.close()


def write_csv(rows: Iterable[dict[str, Any]], out: io.TextIOBase | Any, columns: Sequence[str] = CDR_COLUMNS, *,
              header: bool = True) -> int:
    """Rows as CSV (RFC 4180, CRLF, header first); returns the count."""
    w = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n", extrasaction="ignore")
    if header:
        w.writeheader()
    n = 0
    for r in rows:
        w.writerow(r)
        n += 1
    return n


XLSX_MAX_ROWS = 1_048_576
"""Rows of one worksheet (ECMA-376 / Excel limit), header included."""


def write_xlsx(sheets: Sequence[tuple[str, Sequence[str], Iterable[dict[str, Any]]]], out: Any) -> int:
    """Workbook with one sheet per ``(title, columns, rows)`` written to ``out``
    (path or binary file); returns the total row count.  Needs openpyxl.

    openpyxl's write-only mode streams each row to a temporary file, so memory
    stays flat whatever ``rows`` yields; a sheet that reaches
    :data:`XLSX_MAX_ROWS` continues on ``"<title> (2)"``, ``(3)``...
    """
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    n = 0
    for title, columns, rows in sheets:
        part = 1
        ws = wb.create_sheet(title=title[:31])
        ws.append(list(columns))
        used = 1
        for r in rows:
            if used >= XLSX_MAX_ROWS:
                part += 1
                suffix = f" ({part})"
                ws = wb.create_sheet(title=title[:31 - len(suffix)] + suffix)
                ws.append(list(columns))
                used = 1
            ws.append([_cell(r.get(c)) for c in columns])
            used += 1
            n += 1
    wb.save(out)
    return n


def _cell(v: Any) -> Any:
    # Spreadsheets read leading "=", "+", "-", "@" as formulas: quote such text (CSV injection).
    if isinstance(v, str) and v[:1] in ("=", "@"):
        return "'" + v
    return v


def export_bytes(rows: Iterable[dict[str, Any]], fmt: str, *, header: bool = True) -> bytes:
    """Rows as CSV (UTF-8) or XLSX bytes."""
    if fmt == "csv":
        buf = io.StringIO()
        write_csv(rows, buf, header=header)
        return buf.getvalue().encode("utf-8")
    if fmt == "xlsx":
        bio = io.BytesIO()
        write_xlsx([("cdr", CDR_COLUMNS, rows)], bio)
        return bio.getvalue()
    raise ValueError(f"unknown export format {fmt!r} (expected {', '.join(EXPORT_FORMATS)})")


__all__ = ["CDR_COLUMNS", "CdrFilter", "EXPORT_FORMATS", "FILTER_FIELDS", "QUERY_MAX_ROWS", "ReadScope",
           "XLSX_MAX_ROWS", "export_bytes", "iter_rows", "query", "query_sql", "scope_for", "write_csv", "write_xlsx"]
