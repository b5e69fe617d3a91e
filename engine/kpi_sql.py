"""The SQL fast path of the KPI report: ``GROUP BY`` in SQLite, roll-up in Python.

Theory of operation
-------------------
:func:`engine.kpi.tally_rows` reads every row in Python; for a month of a
busy centre (a million CDRs) that is seconds.  Here SQLite does the
per-row work: one query per table aggregates the additive quantities of
:class:`engine.kpi.Tally` by ``(base bucket, key)``, where the base bucket is
``CAST(t / 900 AS INTEGER)`` (15 minutes of UTC).  Python then adds each
base tally into the tally of the local period that contains it
(:meth:`engine.kpi.Calendar.base_start`, cached: a month is ~3,000 base
buckets).  The result is the same :class:`engine.kpi.Report` the reference
path builds; the tests require both to agree figure by figure.

* **calls**: ``cdr`` filtered by ``tenant`` and an indexed ``start_ts`` range
  (offer time = ``COALESCE(queued_ts, start_ts)`` is at or after
  ``start_ts``; the look-back covers IVR time up to a day), then the exact
  offer-time range.  The repeat-caller flag is a window function
  (``LAG(start_ts) OVER (PARTITION BY tenant, caller_number ORDER BY
  start_ts, call_id)``) over the range plus the look-back window.
* **agent time**: spans (clipped to the range) are cut at base-bucket
  boundaries inside SQLite (first and last bucket of each span); only spans
  longer than a base bucket return to Python for the whole buckets between.
* **ring no answer** (agent dimension) from ``queue_log``, **callbacks**
  from ``callbacks`` (a small table) through the reference code.

All values are bound parameters; the key column comes from a fixed map.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Sequence

from engine.kpi import (BASE_BUCKET_S, BLOCKED_DISPOSITIONS, STAFFED_STATES, Calendar, Dimension, KpiSettings,
                        Membership, Period, Report, Tally, agent_keys, tally_rows)

IVR_LOOKBACK_S = 86400.0
"""Longest time from a call's start to its queue entry the fast path looks back."""
SPAN_LOOKAHEAD_S = 31 * 86400.0
"""Longest agent-state span (logged ``duration_s``) reaching into the range from after it."""

_CALL_KEY = {Dimension.TENANT: "tenant", Dimension.QUEUE: "queue", Dimension.GROUP: "grp",
             Dimension.AGENT: "agent", Dimension.DIALED_NUMBER: "dialed_number"}


def _tenant_clause(tenants: Sequence[str] | None, col: str = "tenant") -> tuple[str, list[Any]]:
    if tenants is None:
        return "1", []
    if not tenants:
        return "0", []
    return f"{col} IN ({', '.join('?' for _ in tenants)})", list(tenants)


def calls_sql(dimension: Dimension, tenants: Sequence[str] | None) -> str:
    """The ``cdr`` aggregation query (parameters: see :func:`tally_sqlite`)."""
    key = _CALL_KEY[dimension]
    tclause, _ = _tenant_clause(tenants)
    blocked = ", ".join(f"'{d}'" for d in sorted(BLOCKED_DISPOSITIONS))
    return f"""
WITH c AS (
  SELECT call_id, tenant, {key} AS k,
         caller_number, start_ts, queued_ts, answered_ts, wait_s, talk_s, hold_s, wrapup_s, disposition,
         transferred, ring_no_answer_count, survey_score,
         COALESCE(queued_ts, start_ts) AS t,
         CASE WHEN caller_number = '' THEN NULL
              ELSE LAG(start_ts) OVER (PARTITION BY tenant, caller_number ORDER BY start_ts, call_id) END AS prev_ts
  FROM cdr
  WHERE {tclause} AND direction = 'inbound' AND start_ts >= ? AND start_ts < ?
)
SELECT CAST(t / {BASE_BUCKET_S} AS INTEGER) AS b, k,
  COUNT(*),
  SUM(queued_ts IS NOT NULL),
  SUM(queued_ts IS NOT NULL AND answered_ts IS NOT NULL),
  SUM(queued_ts IS NOT NULL AND answered_ts IS NOT NULL AND wait_s <= ?),
  SUM(queued_ts IS NOT NULL AND answered_ts IS NULL AND disposition = 'abandoned'),
  SUM(queued_ts IS NOT NULL AND answered_ts IS NULL AND disposition = 'abandoned' AND wait_s <= ?),
  TOTAL(CASE WHEN queued_ts IS NOT NULL AND answered_ts IS NULL AND disposition = 'abandoned' THEN wait_s END),
  TOTAL(CASE WHEN queued_ts IS NOT NULL AND answered_ts IS NOT NULL THEN wait_s END),
  MAX(CASE WHEN queued_ts IS NOT NULL THEN wait_s END),
  TOTAL(CASE WHEN queued_ts IS NOT NULL AND answered_ts IS NOT NULL THEN talk_s END),
  TOTAL(CASE WHEN queued_ts IS NOT NULL AND answered_ts IS NOT NULL THEN hold_s END),
  TOTAL(CASE WHEN queued_ts IS NOT NULL AND answered_ts IS NOT NULL THEN wrapup_s END),
  SUM(queued_ts IS NOT NULL AND answered_ts IS NOT NULL AND transferred != 0),
  SUM(disposition IN ({blocked})),
  SUM(disposition = 'voicemail'),
  SUM(ring_no_answer_count),
  SUM(caller_number != ''),
  SUM(prev_ts IS NOT NULL AND start_ts - prev_ts <= ?),
  COUNT(survey_score),
  TOTAL(survey_score)
FROM c
WHERE t >= ? AND t < ? AND k != ''
GROUP BY b, k
"""


_CALL_FIELDS = ("received", "offered", "answered", "answered_within_threshold", "abandoned", "short_abandoned",
                "abandon_wait_s", "answer_wait_s", "longest_wait_s", "talk_s", "hold_s", "wrapup_s", "transferred",
                "blocked", "voicemails", "ring_no_answer", "with_caller_number", "repeat_calls", "survey_count",
                "survey_score_sum")


def tally_sqlite(conn: sqlite3.Connection, *, period: Period, dimension: Dimension, since: float, until: float,
                 settings: KpiSettings, cal: Calendar, tenants: Sequence[str] | None = None,
                 members: dict[str, Membership] | None = None) -> Report:
    """The :class:`Report` of :func:`engine.kpi.tally_rows` computed in SQLite.

    ``tenants``: the tenants to include (``None``: all).  Raises
    ``ValueError`` when the zone has an offset that is not a multiple of
    15 minutes in the range (use the reference path then).
    """
    if not cal.base_bucket_ok(since, until):
        raise ValueError(f"time zone {cal.time_zone}: offsets are not multiples of 15 minutes")
    members = members or {}
    rep = Report(period, dimension, cal, settings, since, until)
    window_s = settings.repeat_window_days * 86400.0
    _, tparams = _tenant_clause(tenants)
    params = [*tparams, since - IVR_LOOKBACK_S - window_s, until,
              settings.service_level_s, settings.short_abandon_s, window_s, since, until]
    per_agent = dimension is Dimension.AGENT
    # Accumulate plain lists per (period, key) first: a month has ~3,000 base
    # buckets per key, and Tally objects per base row would cost more than SQLite.
    longest = _CALL_FIELDS.index("longest_wait_s")
    rna = _CALL_FIELDS.index("ring_no_answer")
    acc: dict[tuple[float, str], list[float]] = {}
    base_start = cal.base_start
    for row in conn.execute(calls_sql(dimension, tenants), params):
        k = (base_start(row[0], period), row[1])
        vals = [v or 0 for v in row[2:]]
        cur = acc.get(k)
        if cur is None:
            acc[k] = vals
        else:
            lw = max(cur[longest], vals[longest])
            acc[k] = cur = [a + b for a, b in zip(cur, vals)]
            cur[longest] = lw
    for k, vals in acc.items():
        if per_agent:
            vals[rna] = 0
        rep.tally(*k).add(Tally(**dict(zip(_CALL_FIELDS, vals))))
    _agent_time(conn, rep, tenants, members)
    if per_agent:
        tclause, tp = _tenant_clause(tenants)
        sql = (f"SELECT CAST(ts / {BASE_BUCKET_S} AS INTEGER), agent, COUNT(*) FROM queue_log "
               f"WHERE {tclause} AND event = 'ring_no_answer' AND ts >= ? AND ts < ? AND agent != '' "
               "GROUP BY 1, 2")
        for b, agent, n in conn.execute(sql, [*tp, since, until]):
            rep.tally(cal.base_start(b, period), agent).ring_no_answer += n
    if dimension in (Dimension.TENANT, Dimension.QUEUE, Dimension.AGENT):
        tclause, tp = _tenant_clause(tenants)
        cbs = conn.execute(f"SELECT tenant, queue, assigned_agent, requested_ts, completed_ts FROM callbacks "
                           f"WHERE {tclause} AND ((requested_ts >= ? AND requested_ts < ?) "
                           "OR (completed_ts >= ? AND completed_ts < ?))", [*tp, since, until, since, until])
        cb_rows = [dict(zip(("tenant", "queue", "assigned_agent", "requested_ts", "completed_ts"), r)) for r in cbs]
        part = tally_rows(period=period, dimension=dimension, since=since, until=until, settings=settings,
                          cal=cal, callbacks=cb_rows)
        for k, t in part.tallies.items():
            rep.tally(*k).add(t)
    return rep


def _agent_time(conn: sqlite3.Connection, rep: Report, tenants: Sequence[str] | None,
                members: dict[str, Membership]) -> None:
    """Agent seconds by state, split at base-bucket boundaries inside SQLite.

    A span ``[s, e)`` (clipped to the range) gives its first base bucket
    ``min(e, end of that bucket) - s`` and its last ``e - start of that
    bucket``; only spans longer than a whole base bucket (breaks, long idle
    times) come back to Python for the full buckets between.
    """
    since, until, cal, period, dim = rep.since, rep.until, rep.cal, rep.period, rep.dimension
    if dim is Dimension.DIALED_NUMBER:
        return
    tclause, tp = _tenant_clause(tenants)
    states = ", ".join(f"'{s}'" for s in STAFFED_STATES)
    w = BASE_BUCKET_S
    spans = (f"WITH sp AS (SELECT agent, tenant, previous_state AS st, MAX(ts - duration_s, ?) AS s, MIN(ts, ?) AS e "
             f"FROM agent_state_log WHERE {tclause} AND ts >= ? AND ts < ? AND ts - duration_s < ? "
             f"AND previous_state IN ({states})), "
             f"b AS (SELECT agent, tenant, st, s, e, CAST(s / {w} AS INTEGER) AS b0, CAST(e / {w} AS INTEGER) AS b1 "
             f"FROM sp WHERE e > s) ")
    params = [since, until, *tp, since, until + SPAN_LOOKAHEAD_S, until]
    sql = (spans + f"SELECT b0, agent, tenant, st, TOTAL(MIN(e, (b0 + 1) * {w}) - s) FROM b GROUP BY 1, 2, 3, 4 "
           f"UNION ALL SELECT b1, agent, tenant, st, TOTAL(e - b1 * {w}) FROM b "
           f"WHERE b1 > b0 AND e > b1 * {w} GROUP BY 1, 2, 3, 4")
    acc: dict[tuple[int, str, str, str], float] = {}
    for b, agent, tenant, state, secs in conn.execute(sql, params):
        k = (b, agent, tenant, state)
        acc[k] = acc.get(k, 0.0) + secs
    for b, agent, tenant, state, n in conn.execute(
            spans + "SELECT b0, agent, tenant, st, b1 - b0 - 1 FROM b WHERE b1 - b0 >= 2", params):
        for i in range(1, n + 1):
            k = (b + i, agent, tenant, state)
            acc[k] = acc.get(k, 0.0) + w
    keys_of: dict[tuple[str, str], list[str]] = {}
    for (b, agent, tenant, state), secs in acc.items():
        keys = keys_of.get((agent, tenant))
        if keys is None:
            keys = keys_of[(agent, tenant)] = agent_keys(agent, tenant, dim, members)
        start = cal.base_start(b, period)
        for key in keys:
            st = rep.tally(start, key).state_s
            st[state] = st.get(state, 0.0) + secs


__all__ = ["IVR_LOOKBACK_S", "SPAN_LOOKAHEAD_S", "calls_sql", "tally_sqlite"]
