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
* **agent time**: spans inside one base bucket are summed by SQL; spans
  that cross a base-bucket boundary or the report range (a few percent) are
  fetched and split in Python (:func:`engine.kpi.split_span`).
* **ring no answer** (agent dimension) from ``queue_log``, **callbacks**
  from ``callbacks`` (a small table) through the reference code.

All values are bound parameters; the key column comes from a fixed map.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Sequence

from engine.kpi import (BASE_BUCKET_S, BLOCKED_DISPOSITIONS, STAFFED_STATES, Calendar, Dimension, KpiSettings,
                        Membership, Period, Report, Tally, agent_keys, split_span, tally_rows)

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
    for row in conn.execute(calls_sql(dimension, tenants), params):
        b, key = row[0], row[1]
        t = rep.tally(cal.base_start(b, period), key)
        base = Tally(**{f: (v or 0) for f, v in zip(_CALL_FIELDS, row[2:])})
        if per_agent:
            base.ring_no_answer = 0
        t.add(base)
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
    since, until, cal, period, dim = rep.since, rep.until, rep.cal, rep.period, rep.dimension
    if dim is Dimension.DIALED_NUMBER:
        return
    tclause, tp = _tenant_clause(tenants)
    states = ", ".join(f"'{s}'" for s in STAFFED_STATES)
    w = BASE_BUCKET_S
    inside = f"CAST(ts / {w} AS INTEGER) = CAST((ts - duration_s) / {w} AS INTEGER) AND ts - duration_s >= ?"
    # Spans inside one base bucket and inside the range: summed by SQLite.
    sql = (f"SELECT CAST(ts / {w} AS INTEGER), agent, tenant, previous_state, TOTAL(duration_s) "
           f"FROM agent_state_log WHERE {tclause} AND ts >= ? AND ts < ? AND previous_state IN ({states}) "
           f"AND {inside} GROUP BY 1, 2, 3, 4")
    for b, agent, tenant, state, secs in conn.execute(sql, [*tp, since, until, since]):
        start = cal.base_start(b, period)
        for key in agent_keys(agent, tenant, dim, members):
            st = rep.tally(start, key).state_s
            st[state] = st.get(state, 0.0) + secs
    # The rest (crossing a base boundary or the range's ends): split here.
    sql = (f"SELECT agent, tenant, previous_state, ts, duration_s FROM agent_state_log "
           f"WHERE {tclause} AND ts >= ? AND ts < ? AND ts - duration_s < ? AND previous_state IN ({states}) "
           f"AND NOT (ts < ? AND {inside})")
    for agent, tenant, state, ts, dur in conn.execute(sql, [*tp, since, until + SPAN_LOOKAHEAD_S, until,
                                                              until, since]):
        start, end = max(ts - dur, since), min(ts, until)
        if end <= start:
            continue
        keys = agent_keys(agent, tenant, dim, members)
        for b, secs in split_span(start, end, cal, period):
            for key in keys:
                st = rep.tally(b, key).state_s
                st[state] = st.get(state, 0.0) + secs


__all__ = ["IVR_LOOKBACK_S", "SPAN_LOOKAHEAD_S", "calls_sql", "tally_sqlite"]
