"""The SQL fast path of the KPI report: ``GROUP BY`` in SQLite, roll-up in Python.

Theory of operation
-------------------
:func:`engine.kpi.tally_rows` reads every row in Python; for a month of a
busy centre (a million CDRs) that is seconds.  Here SQLite does the
per-row work and returns one row per (local period, key):

* the range is cut where the zone's UTC offset changes (:func:`segments`,
  DST: a month has at most two pieces); inside a piece a local period is
  ``CAST((t + shift) / width AS INTEGER)`` (:class:`Slots`: 30-minute and
  hour slots of real time, or the local day number for days, weeks and
  months, which Python maps to week and month starts);
* Python only adds the few rows per (period, key) into
  :class:`engine.kpi.Tally` objects.

The result is the same :class:`engine.kpi.Report` the reference path
builds; the tests require both to agree figure by figure.  Zones whose
offsets are not multiples of 15 minutes (none today) take the reference
path (:meth:`engine.kpi.Calendar.base_bucket_ok`).

* **calls**: ``cdr`` filtered by ``tenant`` and an indexed ``start_ts`` range
  (offer time = ``COALESCE(queued_ts, start_ts)`` is at or after
  ``start_ts``; the look-back covers IVR time up to a day), then the exact
  offer-time range.  The repeat-caller flag is a window function
  (``LAG(start_ts) OVER (PARTITION BY tenant, caller_number ORDER BY
  start_ts, call_id)``) over the range plus the look-back window.
* **agent time**: spans (clipped to the piece) are cut at slot boundaries
  inside SQLite (first and last slot of each span), agents mapped to their
  queues/groups by a joined ``VALUES`` table; only spans covering whole
  slots between return to Python.
* **ring no answer** (agent dimension) from ``queue_log``, **callbacks**
  from ``callbacks``, each one ``GROUP BY`` (slot, key) as well.

All values are bound parameters; the key column comes from a fixed map.
"""
from __future__ import annotations

import datetime as _dt
import math
import sqlite3
from typing import Any, Sequence

from engine.kpi import (BLOCKED_DISPOSITIONS, STAFFED_STATES, Calendar, Dimension, KpiSettings,
                        Membership, Period, Report, Tally, agent_keys)

IVR_LOOKBACK_S = 86400.0
"""Longest time from a call's start to its queue entry the fast path looks back."""
SPAN_LOOKAHEAD_S = 31 * 86400.0
"""Longest agent-state span (logged ``duration_s``) reaching into the range from after it."""
SEEK_MAX_RANGE_S = 2 * 86400.0
"""Ranges up to this long find each call's previous call by an index seek
(:func:`calls_sql` ``seek``), longer ones by a window function."""

_CALL_KEY = {Dimension.TENANT: "tenant", Dimension.QUEUE: "queue", Dimension.GROUP: "grp",
             Dimension.AGENT: "agent", Dimension.DIALED_NUMBER: "dialed_number"}


def _tenant_clause(tenants: Sequence[str] | None, col: str = "tenant") -> tuple[str, list[Any]]:
    if tenants is None:
        return "1", []
    if not tenants:
        return "0", []
    return f"{col} IN ({', '.join('?' for _ in tenants)})", list(tenants)


def calls_sql(dimension: Dimension, tenants: Sequence[str] | None, *, seek: bool = False) -> str:
    """The ``cdr`` aggregation query.  Parameters: tenants, start_ts range
    (with look-back), slot shift and width, T, short-abandon threshold,
    repeat window, offer-time range.

    ``prev_ts`` (the same caller's previous inbound call) comes from a window
    function over the range and its repeat look-back (one sort of every row
    read: the cheaper way for long ranges) or, with ``seek``, from one
    ``cdr_caller`` index seek per call (no look-back rows read: the cheaper
    way for short ranges such as a report's raw tail or one sealing run; the
    start_ts lower bound then needs only the IVR look-back).  Both give the
    immediately preceding call in (``start_ts``, ``call_id``) order.
    """
    key = _CALL_KEY[dimension]
    tclause, _ = _tenant_clause(tenants)
    blocked = ", ".join(f"'{d}'" for d in sorted(BLOCKED_DISPOSITIONS))
    if seek:
        prev = ("(SELECT p.start_ts FROM cdr AS p WHERE p.tenant = cdr.tenant AND p.caller_number = cdr.caller_number "
                "AND p.start_ts <= cdr.start_ts AND p.direction = 'inbound' AND (p.start_ts < cdr.start_ts OR "
                "p.call_id < cdr.call_id) ORDER BY p.start_ts DESC LIMIT 1)")
    else:
        prev = "LAG(start_ts) OVER (PARTITION BY tenant, caller_number ORDER BY start_ts, call_id)"
    return f"""
WITH c AS (
  SELECT call_id, tenant, {key} AS k,
         caller_number, start_ts, queued_ts, answered_ts, wait_s, talk_s, hold_s, wrapup_s, disposition,
         transferred, ring_no_answer_count, survey_score,
         COALESCE(queued_ts, start_ts) AS t,
         CASE WHEN caller_number = '' THEN NULL
              ELSE {prev} END AS prev_ts
  FROM cdr
  WHERE {tclause} AND direction = 'inbound' AND start_ts >= ? AND start_ts < ?
)
SELECT CAST((t + ?) / ? AS INTEGER) AS b, k,
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
    per_agent = dimension is Dimension.AGENT
    longest = _CALL_FIELDS.index("longest_wait_s")
    rna = _CALL_FIELDS.index("ring_no_answer")
    for slots in segments(cal, period, since, until):
        seek = slots.b - slots.a <= SEEK_MAX_RANGE_S
        sql = calls_sql(dimension, tenants, seek=seek)
        lookback = IVR_LOOKBACK_S + (0.0 if seek else window_s)
        params = [*tparams, slots.a - lookback, slots.b, slots.shift, slots.width,
                  settings.service_level_s, settings.short_abandon_s, window_s, slots.a, slots.b]
        acc: dict[tuple[float, str], list[float]] = {}
        for row in conn.execute(sql, params):
            k = (slots.start(row[0]), row[1])
            vals = [v or 0 for v in row[2:]]
            cur = acc.get(k)
            if cur is None:
                acc[k] = vals
            else:
                lw = max(cur[longest], vals[longest])
                acc[k] = cur = [x + y for x, y in zip(cur, vals)]
                cur[longest] = lw
        for k, vals in acc.items():
            if per_agent:
                vals[rna] = 0
            rep.tally(*k).add(Tally(**dict(zip(_CALL_FIELDS, vals))))
        _agent_time(conn, rep, tenants, members, slots)
        if per_agent:
            tclause, tp = _tenant_clause(tenants)
            q = (f"SELECT CAST((ts + ?) / ? AS INTEGER), agent, COUNT(*) FROM queue_log "
                 f"WHERE {tclause} AND event = 'ring_no_answer' AND ts >= ? AND ts < ? AND agent != '' "
                 "GROUP BY 1, 2")
            for b, agent, n in conn.execute(q, [slots.shift, slots.width, *tp, slots.a, slots.b]):
                rep.tally(slots.start(b), agent).ring_no_answer += n
    callbacks_into(conn, rep, tenants, since, until)
    return rep


_CALLBACK_KEY = {Dimension.TENANT: "CASE WHEN tenant = '' THEN 'default' ELSE tenant END",
                 Dimension.QUEUE: "queue", Dimension.AGENT: "assigned_agent"}


def callbacks_into(conn: sqlite3.Connection, rep: Report, tenants: Sequence[str] | None,
                   since: float, until: float) -> None:
    """Add the callbacks requested / completed in ``[since, until)`` to ``rep``.

    One ``GROUP BY`` (local period slot, key) per instant column and
    constant-offset piece (:func:`segments`), the rules of
    :func:`engine.kpi.tally_rows`: a callback counts under its tenant,
    queue or assigned agent (none for groups and dialled numbers).
    """
    key = _CALLBACK_KEY.get(rep.dimension)
    if key is None:
        return
    tclause, tp = _tenant_clause(tenants)
    for col, attr in (("requested_ts", "callbacks_requested"), ("completed_ts", "callbacks_completed")):
        sql = (f"SELECT CAST(({col} + ?) / ? AS INTEGER) AS slot, {key} AS k, COUNT(*) FROM callbacks "
               f"WHERE {tclause} AND {col} >= ? AND {col} < ? AND k != '' GROUP BY slot, k")
        for slots in segments(rep.cal, rep.period, since, until):
            for slot, k, n in conn.execute(sql, [slots.shift, slots.width, *tp, slots.a, slots.b]):
                t = rep.tally(slots.start(slot), k)
                setattr(t, attr, getattr(t, attr) + n)


class Slots:
    """Local period slots of one constant-offset piece ``[a, b)`` of the range.

    SQLite computes ``slot = CAST((t + shift) / width AS INTEGER)``: for
    30-minute intervals and hours ``shift`` is the UTC offset modulo the
    width (a repeated autumn hour keeps two slots), for days, weeks and
    months it is the offset and ``width`` a day, so the slot is the local
    day number.  :meth:`start` turns a slot into its period start.
    """

    def __init__(self, cal: Calendar, period: Period, a: float, b: float, offset: int) -> None:
        self.cal, self.period, self.a, self.b = cal, period, a, b
        if period is Period.INTERVAL_30 or period is Period.HOUR:
            self.width = 1800 if period is Period.INTERVAL_30 else 3600
            self.shift = offset % self.width
        else:
            self.width, self.shift = 86400, offset
        self._starts: dict[int, float] = {}

    def start(self, slot: int) -> float:
        hit = self._starts.get(slot)
        if hit is None:
            if self.width < 86400:
                hit = float(slot * self.width - self.shift)
            else:
                day = _dt.date(1970, 1, 1) + _dt.timedelta(days=slot)
                hit = self.cal.period_start(_local_noon(day, self.cal), self.period)
            self._starts[slot] = hit
        return hit


def _local_noon(day: _dt.date, cal: Calendar) -> float:
    return _dt.datetime(day.year, day.month, day.day, 12, tzinfo=cal.zone).timestamp()


def segments(cal: Calendar, period: Period, since: float, until: float) -> list[Slots]:
    """The range cut where the zone's UTC offset changes (DST), one :class:`Slots` each."""
    def offset(ts: float) -> int:
        return int(_dt.datetime.fromtimestamp(ts, cal.zone).utcoffset().total_seconds())  # type: ignore[union-attr]

    out = []
    a, off = since, offset(since)
    t = since
    while t < until:
        nxt = min(t + 3600, until)
        if nxt < until and offset(nxt) != off:
            lo, hi = t, nxt  # the change lies in (lo, hi]: find it to the second
            while hi - lo > 1:
                mid = math.floor((lo + hi) / 2)
                if offset(mid) == off:
                    lo = mid
                else:
                    hi = mid
            out.append(Slots(cal, period, a, float(hi), off))
            a, off = float(hi), offset(hi)
        t = nxt
    out.append(Slots(cal, period, a, until, off))
    return out


def span_lookahead(conn: sqlite3.Connection) -> float:
    """How far after a range an agent-state row can close a span reaching into it:
    the longest staffed span logged (plus a second), at most :data:`SPAN_LOOKAHEAD_S`.

    One seek in the partial index ``agent_state_log_staffed_duration``
    (migration 10); a range then reads the spans closed inside it plus that
    margin, not a month beyond it.  Exact: a span closed at ``ts`` started
    at ``ts - duration_s``, so one closed later than ``b + longest`` started
    after ``b``.
    """
    states = ", ".join(f"'{st}'" for st in STAFFED_STATES)
    sql = f"SELECT MAX(duration_s) FROM agent_state_log WHERE previous_state IN ({states})"
    longest = conn.execute(sql).fetchone()[0]
    return SPAN_LOOKAHEAD_S if longest is None else min(SPAN_LOOKAHEAD_S, float(longest) + 1.0)


def _agent_time(conn: sqlite3.Connection, rep: Report, tenants: Sequence[str] | None,
                members: dict[str, Membership], slots: Slots) -> None:
    """Agent seconds by state and key, split at slot boundaries inside SQLite.

    A span ``[s, e)`` (clipped to the piece) gives its first slot
    ``min(e, end of that slot) - s`` and its last ``e - start of that
    slot``; only spans covering whole slots in between (breaks, long idle
    times) come back to Python.  Agents map to queues and groups through a
    ``VALUES`` table joined in SQL *after* the spans are summed per agent
    (joining raw spans costs spans x agents), so rows come out per (slot,
    key, state).
    """
    dim = rep.dimension
    if dim is Dimension.DIALED_NUMBER:
        return
    tclause, tp = _tenant_clause(tenants)
    states = ", ".join(f"'{st}'" for st in STAFFED_STATES)
    w = slots.width
    pairs: list[str] = []
    if dim is Dimension.AGENT or dim is Dimension.GROUP or dim is Dimension.QUEUE:
        key = "agent"
    else:
        key = "tenant"
    mapped = dim is Dimension.GROUP or dim is Dimension.QUEUE
    if mapped:
        pairs = [x for a, m in sorted(members.items())
                 for k in sorted(m.groups if dim is Dimension.GROUP else m.queues) for x in (a, k)]
        if not pairs:
            return
    mtable = ("m(agent, k) AS (VALUES " + ", ".join("(?, ?)" for _ in range(len(pairs) // 2)) + "), ") if pairs else ""
    # MATERIALIZED: each span is read once, then split three ways below.
    spans = (f"WITH {mtable}sp AS MATERIALIZED (SELECT agent, tenant, previous_state AS st, "
             f"MAX(ts - duration_s, ?) + ? AS s, MIN(ts, ?) + ? AS e "
             f"FROM agent_state_log WHERE {tclause} AND ts >= ? AND ts < ? AND ts - duration_s < ? "
             f"AND previous_state IN ({states})), "
             f"b AS MATERIALIZED (SELECT {key} AS k, st, s, e, CAST(s / {w} AS INTEGER) AS b0, "
             f"CAST(e / {w} AS INTEGER) AS b1 FROM sp WHERE e > s) ")
    params = [*pairs, slots.a, slots.shift, slots.b, slots.shift, *tp, slots.a, slots.b + span_lookahead(conn),
              slots.b]
    parts = (f"SELECT b0 AS slot, k, st, TOTAL(MIN(e, (b0 + 1) * {w}) - s) AS secs FROM b GROUP BY 1, 2, 3 "
             f"UNION ALL SELECT b1, k, st, TOTAL(e - b1 * {w}) FROM b "
             f"WHERE b1 > b0 AND e > b1 * {w} GROUP BY 1, 2, 3")
    whole = f"SELECT b0, k, st, 0, b1 - b0 - 1 FROM b WHERE b1 - b0 >= 2"
    if mapped:
        # Agents -> queues/groups after grouping by agent (at most slots x agents x
        # states rows), so the join never sees the raw spans.
        sql = (spans.rstrip() + f", g AS MATERIALIZED ({parts}) "
               "SELECT g.slot, m.k, g.st, TOTAL(g.secs), 0 FROM g JOIN m ON m.agent = g.k GROUP BY 1, 2, 3 "
               f"UNION ALL {whole}")
    else:
        sql = spans + f"SELECT slot, k, st, secs, 0 FROM ({parts}) UNION ALL {whole}"
    for b, k, st, secs, n in conn.execute(sql, params):
        if n:  # a span covering whole slots: k is the agent when keys are mapped
            keys = agent_keys(k, "", dim, members) if mapped else [k]
            items = [(b + i, key, float(w)) for i in range(1, n + 1) for key in keys]
        else:
            items = [(b, k, secs)]
        for slot, key, amount in items:
            state_s = rep.tally(slots.start(slot), key).state_s
            state_s[st] = state_s.get(st, 0.0) + amount


__all__ = ["IVR_LOOKBACK_S", "SEEK_MAX_RANGE_S", "SPAN_LOOKAHEAD_S", "Slots", "callbacks_into", "calls_sql", "segments",
           "span_lookahead", "tally_sqlite"]
