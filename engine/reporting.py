"""Interval KPI reports over a store file: the layer ``kpi.report``, the real-time
statistics and ``ctiengine report`` share.

Theory of operation
-------------------
:func:`build_report` picks the computation: sealed 30-minute buckets plus
the raw tail since the watermark (:mod:`engine.kpi_buckets`) when they were
sealed with the same settings and memberships; else the SQLite fast path
(:func:`engine.kpi_sql.tally_sqlite`) when the zone's offsets allow it
(always, in practice), else the reference path over rows read from the same
connection.  Settings come from ``[reporting]`` (:func:`settings_from_config`),
agent memberships from ``[agents]`` / ``[queues]``.  Times given as text are
read in the centre's zone (``2026-11-23`` is local midnight), so a manager's
"November" is the local month.

:func:`open_reader` opens a query-only connection to the store file; each
report uses its own connection (WAL: readers never block the engine's
writer), in a worker thread when called from the event loop.
"""
from __future__ import annotations

import datetime as _dt
import sqlite3
import zoneinfo
from typing import Any, Sequence

from engine.kpi import Calendar, Dimension, KpiSettings, Period, Report, memberships_from_config, tally_rows
from engine.kpi_sql import IVR_LOOKBACK_S, SPAN_LOOKAHEAD_S, tally_sqlite
from engine.store import open_query_only


def settings_from_config(config: Any) -> KpiSettings:
    """:class:`KpiSettings` from the ``[reporting]`` section."""
    r = config.reporting
    return KpiSettings(service_level_s=r.service_level_s, service_level_target=r.service_level_target,
                       short_abandon_s=r.short_abandon_s,
                       short_abandons_in_service_level=r.short_abandons_in_service_level,
                       repeat_window_days=r.repeat_window_days)


def parse_local_time(value: Any, time_zone: str) -> float:
    """Unix seconds from a number, or ISO 8601 text read in ``time_zone`` when it has no offset.

    Raises ``ValueError`` naming the accepted forms.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 date/time "
                         "(e.g. 2026-11-23, 2026-11-23T08:00 or 2026-11-23T08:00:00+01:00)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=zoneinfo.ZoneInfo(time_zone))
    return t.timestamp()


def open_reader(db_path: str) -> sqlite3.Connection:
    """A query-only connection to an existing store file with a ``cdr`` table
    (:func:`engine.store.open_query_only`; ``StoreError`` otherwise)."""
    return open_query_only(db_path, "cdr")


def build_report(conn: sqlite3.Connection, config: Any, *, period: Period, dimension: Dimension, since: float,
                 until: float, tenants: Sequence[str] | None) -> Report:
    """The KPI :class:`Report` for ``[since, until)`` of the given tenants (``None``: all)."""
    if until <= since:
        raise ValueError(f"the report range is empty: until ({until}) must be after since ({since})")
    cal = Calendar(config.engine.time_zone)
    settings = settings_from_config(config)
    members = memberships_from_config(config)
    from engine.kpi_buckets import report_from_buckets, usable

    st = usable(conn, cal, settings, members, since, until)
    if st is not None:  # sealed 30-minute buckets + raw tail (engine/kpi_buckets.py)
        return report_from_buckets(conn, st, period=period, dimension=dimension, since=since, until=until,
                                   settings=settings, cal=cal, tenants=tenants, members=members)
    if cal.base_bucket_ok(since, until):
        return tally_sqlite(conn, period=period, dimension=dimension, since=since, until=until, settings=settings,
                            cal=cal, tenants=tenants, members=members)
    return _reference(conn, cal, settings, members, period, dimension, since, until, tenants)


def _reference(conn: sqlite3.Connection, cal: Calendar, settings: KpiSettings, members: Any, period: Period,
               dimension: Dimension, since: float, until: float, tenants: Sequence[str] | None) -> Report:
    tsql, tp = ("1", []) if tenants is None else (f"tenant IN ({', '.join('?' for _ in tenants)})", list(tenants))
    window = settings.repeat_window_days * 86400.0

    def rows(sql: str, params: list[Any]) -> list[dict[str, Any]]:
        cur = conn.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur]

    cdr = rows(f"SELECT * FROM cdr WHERE {tsql} AND start_ts >= ? AND start_ts < ?",
               [*tp, since - IVR_LOOKBACK_S - window, until])
    states = rows(f"SELECT * FROM agent_state_log WHERE {tsql} AND ts >= ? AND ts < ?",
                  [*tp, since, until + SPAN_LOOKAHEAD_S])
    qlog = rows(f"SELECT * FROM queue_log WHERE {tsql} AND event = 'ring_no_answer' AND ts >= ? AND ts < ?",
                [*tp, since, until])
    cbs = rows(f"SELECT * FROM callbacks WHERE {tsql}", tp)
    return tally_rows(period=period, dimension=dimension, since=since, until=until, settings=settings, cal=cal,
                      cdr=cdr, agent_states=states, queue_log=qlog, callbacks=cbs, members=members)


def today_range(time_zone: str, now: float) -> tuple[float, float]:
    """``[start, end)`` of the local day containing ``now``."""
    cal = Calendar(time_zone)
    start = cal.period_start(now, Period.DAY)
    return start, cal.next_start(start, Period.DAY)


__all__ = ["build_report", "open_reader", "parse_local_time", "settings_from_config", "today_range"]
