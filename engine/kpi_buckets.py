"""Pre-aggregated KPI buckets: sealed 30-minute UTC tallies for fast month reports.

Theory of operation
-------------------
A month report from raw rows aggregates a million CDRs and 3.4 million agent
state spans (35 s, docs/performance/reporting.md).  Every KPI is a function
of the additive quantities of :class:`engine.kpi.Tally`, so they can be
summed once per **bucket** and rolled up later:

* a bucket is a 30-minute slice of UTC time ``[b, b + 1800)``, one row of
  ``kpi_bucket`` per ``(dimension, bucket_start, tenant, key)`` holding the
  call sums of the calls *offered* in it (``COALESCE(queued_ts, start_ts)``),
  ``longest_wait_s`` as a **maximum**, the repeat-caller count with the
  flag computed at sealing with its full look-back, ring-no-answer counts
  and the agent seconds per state *split at the bucket boundary* (the same
  rules as :mod:`engine.kpi_sql`, which computes them: one bucket is a
  30-minute interval report in UTC);
* every local 30-minute interval, hour, day, week and month is a union of
  such buckets when every UTC offset of the zone in the report's range is a
  multiple of 30 minutes (:func:`offsets_ok`; all zones except Nepal's
  +05:45 and the Chatham Islands, which take the raw path);
* callbacks are **not** in buckets: a callback row is updated in place when
  it completes, so they always come from the (small) ``callbacks`` table.

**Sealing** (:func:`seal`, run by :class:`SealService` every
``SEAL_INTERVAL_S`` in a worker thread with its own connection) keeps one
watermark ``kpi_seal.sealed_until``: every bucket before it is sealed.  A
run (bounded: at most ``max_buckets`` buckets of new range and of re-seals)

1. **re-seals late rows**: rows whose ``id`` is above the ids recorded at
   the previous run and whose time lies before the watermark (a CDR is
   written when the call ends, an agent-state row when the span ends) mark
   their buckets dirty in ``kpi_dirty``: a CDR its offer bucket and the
   buckets of the same caller's calls in the repeat window after it (their
   repeat flag may change), an agent-state row every bucket its span
   touches, a ring-no-answer row its bucket.  Dirty buckets are recomputed
   from raw rows (delete + insert in one transaction), oldest first;
2. **advances** the watermark up to ``now - lag_s`` (default 2 h: most
   calls and agent spans are closed by then, so re-seals stay rare), at
   most ``max_buckets`` at a time.

Everything is recomputed from raw rows, so a run is idempotent and a crash
between runs loses nothing (the ids advance in the same transaction as the
buckets).  The thresholds baked into the sums (T, short-abandon threshold,
repeat window) and the agent → queue/group memberships are stored as a
**fingerprint**; when the configuration changes the buckets are dropped and
re-sealed from the oldest data, and reports take the raw path until the
fingerprints match again.

**Reading** (:func:`report_from_buckets`): sealed buckets for the aligned
part of ``[since, min(until, sealed_until))``, the raw SQL path
(:func:`engine.kpi_sql.tally_sqlite`) for an unaligned head and for the tail
since the watermark, callbacks from their table; the pieces add up into one
:class:`engine.kpi.Report`.  **Staleness bound**: a report is exact except
for rows that arrived late (after the watermark passed their time) since
the last seal run: those show after at most one ``SEAL_INTERVAL_S`` (plus
the run's bounded backlog).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import sqlite3
import time
from dataclasses import asdict, fields
from typing import Any, Mapping, Sequence

from engine.kpi import (BUCKET_FIELDS, STAFFED_STATES, Calendar, Dimension, KpiSettings, Membership, Period, Report, Tally)
from engine.kpi_sql import callbacks_into, segments, tally_sqlite

logger = logging.getLogger(__name__)

BUCKET_S = 1800
"""Width of a sealed bucket (30 minutes of UTC time)."""
SEAL_INTERVAL_S = 60.0
"""How often :class:`SealService` runs :func:`seal`."""
SEAL_LAG_S = 7200.0
"""The watermark stays this far behind now (calls and spans still open)."""
SEAL_MAX_BUCKETS = 48
"""Buckets sealed or re-sealed per run (one day): bounds the work of a run."""

SUM_FIELDS = tuple(f.name for f in fields(Tally)
                   if f.name not in ("state_s", "callbacks_requested", "callbacks_completed"))
"""The :class:`Tally` quantities stored per bucket (``longest_wait_s`` is a maximum)."""
STATE_COLUMNS = tuple(f"state_{s}_s" for s in STAFFED_STATES)
_TALLY_FIELDS = tuple(f.name for f in fields(Tally))
# Positional Tally construction in rollup_into relies on this order.
assert _TALLY_FIELDS == (*SUM_FIELDS, "callbacks_requested", "callbacks_completed", "state_s")
assert SUM_FIELDS == BUCKET_FIELDS  # the row layout of Report.add_bucket_rows
_COLUMNS = ("tenant", "bucket_start", "dimension", "key", *SUM_FIELDS, *STATE_COLUMNS)
_UTC = Calendar("UTC")


def fingerprint(settings: KpiSettings, members: Mapping[str, Membership]) -> str:
    """What the sums depend on besides raw rows: thresholds and memberships."""
    data = {"settings": {k: v for k, v in asdict(settings).items() if k != "service_level_target"},
            "members": {a: [m.tenant, sorted(m.groups), sorted(m.queues)] for a, m in sorted(members.items())},
            "bucket_s": BUCKET_S}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def offsets_ok(cal: Calendar, since: float, until: float) -> bool:
    """Every UTC offset of the zone in ``[since, until]`` is a multiple of :data:`BUCKET_S`."""
    ts = since
    while True:
        off = cal.zone.utcoffset(_utc_dt(ts))
        if off is None or off.total_seconds() % BUCKET_S:
            return False
        if ts >= until:
            return True
        ts = min(ts + 6 * 3600, until)


def _utc_dt(ts: float) -> Any:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).replace(tzinfo=None)


def _floor(ts: float) -> int:
    return int(math.floor(ts / BUCKET_S)) * BUCKET_S


# ---------------------------------------------------------------- sealing


def seal_state(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The ``kpi_seal`` row (``None``: nothing sealed yet or no such table)."""
    try:
        cur = conn.execute("SELECT * FROM kpi_seal WHERE id = 1")
    except sqlite3.OperationalError:
        return None
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row))


def _max_ids(conn: sqlite3.Connection) -> tuple[int, int, int]:
    return tuple(conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0]  # type: ignore[return-value]
                 for t in ("cdr", "agent_state_log", "queue_log"))


def _tenants(conn: sqlite3.Connection) -> list[str]:
    """Distinct tenants of the raw tables, by index seeks (no table scan)."""
    out: set[str] = set()
    for table in ("cdr", "agent_state_log", "queue_log"):
        t = conn.execute(f"SELECT MIN(tenant) FROM {table}").fetchone()[0]
        while t is not None:
            out.add(t)
            t = conn.execute(f"SELECT MIN(tenant) FROM {table} WHERE tenant > ?", (t,)).fetchone()[0]
    return sorted(out)


def compute_buckets(conn: sqlite3.Connection, tenant: str, a: int, b: int, settings: KpiSettings,
                    members: Mapping[str, Membership]) -> list[tuple[Any, ...]]:
    """``kpi_bucket`` rows of ``tenant`` for ``[a, b)`` (aligned), every dimension, from raw rows."""
    out = []
    for dim in Dimension:
        rep = tally_sqlite(conn, period=Period.INTERVAL_30, dimension=dim, since=float(a), until=float(b),
                           settings=settings, cal=_UTC, tenants=[tenant], members=dict(members))
        for (start, key), t in rep.tallies.items():
            row = (tenant, int(start), dim.value, key, *(getattr(t, f) for f in SUM_FIELDS),
                   *(t.state_s.get(s, 0.0) for s in STAFFED_STATES))
            if any(row[4:]):
                out.append(row)
    return out


def _write(conn: sqlite3.Connection, tenant: str, a: int, b: int, rows: Sequence[tuple[Any, ...]]) -> None:
    conn.execute("DELETE FROM kpi_bucket WHERE tenant = ? AND bucket_start >= ? AND bucket_start < ?",
                 (tenant, a, b))
    conn.executemany(f"INSERT INTO kpi_bucket ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
                     rows)


def _oldest(conn: sqlite3.Connection) -> float | None:
    vals = [conn.execute("SELECT MIN(COALESCE(queued_ts, start_ts)) FROM cdr").fetchone()[0],
            conn.execute("SELECT MIN(ts - duration_s) FROM agent_state_log").fetchone()[0],
            conn.execute("SELECT MIN(ts) FROM queue_log").fetchone()[0]]
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def _mark_late(conn: sqlite3.Connection, st: dict[str, Any], ids: tuple[int, int, int],
               settings: KpiSettings) -> int:
    """Dirty buckets for rows added since the last run that belong before the watermark."""
    until = st["sealed_until"]
    dirty: set[tuple[str, int]] = set()
    window = settings.repeat_window_days * 86400.0
    for tenant, t, caller, start in conn.execute(
            "SELECT tenant, COALESCE(queued_ts, start_ts), caller_number, start_ts FROM cdr "
            "WHERE id > ? AND id <= ? AND direction = 'inbound' AND start_ts < ?", (st["cdr_id"], ids[0], until)).fetchall():
        if t < until:
            dirty.add((tenant, _floor(t)))
        if caller:  # later calls of this caller: their repeat flag may change
            for (t2,) in conn.execute("SELECT COALESCE(queued_ts, start_ts) FROM cdr WHERE tenant = ? AND "
                                      "caller_number = ? AND start_ts >= ? AND start_ts <= ? AND direction = 'inbound'",
                                      (tenant, caller, start, start + window)):
                if t2 < until:
                    dirty.add((tenant, _floor(t2)))
    for tenant, ts, dur in conn.execute(
            "SELECT tenant, ts, duration_s FROM agent_state_log WHERE id > ? AND id <= ? AND ts - duration_s < ?",
            (st["agent_state_log_id"], ids[1], until)).fetchall():
        b, end = _floor(ts - dur), min(ts, until)
        while b < end:
            dirty.add((tenant, b))
            b += BUCKET_S
    for tenant, ts in conn.execute("SELECT tenant, ts FROM queue_log WHERE id > ? AND id <= ? AND ts < ? "
                                   "AND event = 'ring_no_answer'", (st["queue_log_id"], ids[2], until)).fetchall():
        dirty.add((tenant, _floor(ts)))
    dirty = {(t, b) for t, b in dirty if b >= _floor(st["sealed_from"])}
    conn.executemany("INSERT OR IGNORE INTO kpi_dirty (tenant, bucket_start) VALUES (?, ?)", sorted(dirty))
    return len(dirty)


def seal(conn: sqlite3.Connection, *, settings: KpiSettings, members: Mapping[str, Membership],
         now: float, lag_s: float = SEAL_LAG_S, max_buckets: int = SEAL_MAX_BUCKETS) -> dict[str, Any]:
    """One bounded sealing run on a writable connection (schema 9+); returns what it did.

    Idempotent: every bucket it writes is recomputed from raw rows.
    """
    fp = fingerprint(settings, members)
    done = {"resealed": 0, "sealed": 0, "late": 0, "reset": False}
    conn.execute("BEGIN IMMEDIATE")
    try:
        st = seal_state(conn)
        ids = _max_ids(conn)
        if st is None or st["fingerprint"] != fp:
            oldest = _oldest(conn)
            start = float(_floor(min(oldest, now - lag_s) if oldest is not None else now - lag_s))
            conn.execute("DELETE FROM kpi_bucket")
            conn.execute("DELETE FROM kpi_dirty")
            conn.execute("INSERT OR REPLACE INTO kpi_seal (id, sealed_from, sealed_until, fingerprint, cdr_id, "
                         "agent_state_log_id, queue_log_id, updated_ts) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                         (start, start, fp, *ids, now))
            st = seal_state(conn)
            assert st is not None
            done["reset"] = True
        else:
            done["late"] = _mark_late(conn, st, ids, settings)
            conn.execute("UPDATE kpi_seal SET cdr_id = ?, agent_state_log_id = ?, queue_log_id = ? WHERE id = 1", ids)
        budget = max_buckets
        # 1. re-seal dirty buckets, oldest first, as contiguous runs per tenant
        dirty = conn.execute("SELECT tenant, bucket_start FROM kpi_dirty ORDER BY bucket_start, tenant LIMIT ?",
                             (budget,)).fetchall()
        runs: dict[str, list[list[int]]] = {}
        for tenant, b in dirty:
            rs = runs.setdefault(tenant, [])
            if rs and rs[-1][1] == b:
                rs[-1][1] = b + BUCKET_S
            else:
                rs.append([b, b + BUCKET_S])
        for tenant, rs in runs.items():
            for a, b in rs:
                _write(conn, tenant, a, b, compute_buckets(conn, tenant, a, b, settings, members))
                conn.execute("DELETE FROM kpi_dirty WHERE tenant = ? AND bucket_start >= ? AND bucket_start < ?",
                             (tenant, a, b))
        done["resealed"] = len(dirty)
        budget -= len(dirty)
        # 2. advance the watermark
        a = int(st["sealed_until"])
        b = min(_floor(now - lag_s), a + max(budget, 0) * BUCKET_S)
        if b > a:
            for tenant in _tenants(conn):
                _write(conn, tenant, a, b, compute_buckets(conn, tenant, a, b, settings, members))
            conn.execute("UPDATE kpi_seal SET sealed_until = ?, updated_ts = ? WHERE id = 1", (float(b), now))
            done["sealed"] = (b - a) // BUCKET_S
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    st = seal_state(conn) or {}
    done["sealed_until"] = st.get("sealed_until")
    return done


def seal_all(conn: sqlite3.Connection, *, settings: KpiSettings, members: Mapping[str, Membership], now: float,
             lag_s: float = SEAL_LAG_S, max_buckets: int = SEAL_MAX_BUCKETS, max_runs: int = 100000) -> int:
    """Run :func:`seal` until caught up (or ``max_runs``); returns the runs made."""
    for n in range(1, max_runs + 1):
        d = seal(conn, settings=settings, members=members, now=now, lag_s=lag_s, max_buckets=max_buckets)
        if not d["resealed"] and not d["sealed"] and not d["reset"]:
            return n
    return max_runs


# ---------------------------------------------------------------- reading


def usable(conn: sqlite3.Connection, cal: Calendar, settings: KpiSettings, members: Mapping[str, Membership],
           since: float, until: float) -> dict[str, Any] | None:
    """The seal state when buckets can serve this report, else ``None``."""
    st = seal_state(conn)
    if st is None or st["fingerprint"] != fingerprint(settings, members):
        return None
    if not offsets_ok(cal, since, until):
        return None
    return st


def report_from_buckets(conn: sqlite3.Connection, st: Mapping[str, Any], *, period: Period, dimension: Dimension,
                        since: float, until: float, settings: KpiSettings, cal: Calendar,
                        tenants: Sequence[str] | None, members: Mapping[str, Membership]) -> Report:
    """The :class:`Report` from sealed buckets plus raw head and tail (see the module docstring)."""
    a = max(int(math.ceil(since / BUCKET_S)) * BUCKET_S, int(st["sealed_from"]))
    b = min(int(st["sealed_until"]), _floor(until))
    rep = Report(period, dimension, cal, settings, since, until)

    def raw(lo: float, hi: float) -> None:
        if hi > lo:
            part = tally_sqlite(conn, period=period, dimension=dimension, since=lo, until=hi, settings=settings,
                                cal=cal, tenants=tenants, members=dict(members))
            for k, t in part.tallies.items():
                rep.tally(*k).add(t)

    if b <= a:  # nothing sealed in the range
        raw(since, until)
        return rep
    raw(since, a)
    raw(b, until)
    rollup_into(conn, rep, tenants, a, b)
    callbacks_into(conn, rep, tenants, float(a), float(b))
    return rep


def rollup_sql(tenants: Sequence[str] | None, *, grouped: bool = True) -> str:
    """The roll-up of sealed buckets into local periods, one ``GROUP BY`` in
    SQLite.  Parameters: slot shift and width, dimension, bucket range
    ``[a, b)`` of one constant-offset piece, tenants.  ``grouped=False``:
    the bucket rows themselves (30-minute periods of one tenant, where each
    (slot, key) has exactly one row: ``kpi_bucket_key`` is unique)."""
    tsql = "" if tenants is None else f" AND tenant IN ({', '.join('?' for _ in tenants)})"
    cols = (*SUM_FIELDS, *STATE_COLUMNS)
    if not grouped:
        return (f"SELECT CAST((bucket_start + ?) / ? AS INTEGER) AS slot, key, {', '.join(cols)} FROM kpi_bucket "
                f"WHERE dimension = ? AND bucket_start >= ? AND bucket_start < ?{tsql}")
    aggs = ", ".join(f"MAX({c})" if c == "longest_wait_s" else f"SUM({c})" for c in cols)
    return (f"SELECT CAST((bucket_start + ?) / ? AS INTEGER) AS slot, key, {aggs} FROM kpi_bucket "
            f"WHERE dimension = ? AND bucket_start >= ? AND bucket_start < ?{tsql} GROUP BY slot, key")


def rollup_into(conn: sqlite3.Connection, rep: Report, tenants: Sequence[str] | None, a: int, b: int) -> None:
    """Add the sealed buckets of ``[a, b)`` (aligned) to ``rep``, rolled up in SQLite.

    The range is cut where the zone's offset changes
    (:func:`engine.kpi_sql.segments`); inside a piece every 30-minute UTC
    bucket lies in one local period (:func:`offsets_ok`), which SQLite
    computes as a slot (:class:`engine.kpi_sql.Slots`) and groups by, so
    Python sees one row per (local period, key) and piece, however many
    buckets and agents the range holds.  ``longest_wait_s`` is a maximum,
    every other quantity a sum, as in :meth:`engine.kpi.Tally.add`.
    Callbacks are not in buckets (:func:`engine.kpi_sql.callbacks_into`).
    """
    # 30-minute periods of one tenant: one bucket row per (slot, key), no
    # GROUP BY (its sort is most of the SQLite time for a month by agent).
    sql = rollup_sql(tenants, grouped=not (rep.period is Period.INTERVAL_30 and tenants is not None
                                           and len(set(tenants)) == 1))
    tp = [] if tenants is None else list(tenants)
    for slots in segments(rep.cal, rep.period, float(a), float(b)):
        rows = conn.execute(sql, [slots.shift, slots.width, rep.dimension.value, slots.a, slots.b, *tp]).fetchall()
        start = {s: slots.start(s) for s in {r[0] for r in rows}}
        # kept as rows: Report.rows computes their figures column-wise
        rep.add_bucket_rows([start[r[0]] for r in rows], rows)


# ---------------------------------------------------------------- service


class SealService:
    """Engine service: runs :func:`seal` every ``interval_s`` in a worker thread."""

    def __init__(self, *, interval_s: float = SEAL_INTERVAL_S, lag_s: float = SEAL_LAG_S,
                 max_buckets: int = SEAL_MAX_BUCKETS) -> None:
        self.interval_s, self.lag_s, self.max_buckets = interval_s, lag_s, max_buckets
        self.engine: Any = None
        self.runs = 0
        self.last: dict[str, Any] = {}
        self._task: asyncio.Task | None = None

    async def start(self, engine: Any) -> None:
        self.engine = engine
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                logger.exception("KPI bucket sealing failed (reports use raw rows meanwhile)")
            await asyncio.sleep(self.interval_s)

    async def run_once(self, now: float | None = None) -> dict[str, Any]:
        """One sealing run off the event loop; ``{}`` without a store file."""
        engine = self.engine
        path = getattr(engine.store, "path", None) if engine is not None and engine.store is not None else None
        if not path or path == ":memory:":
            return {}
        from engine.kpi import memberships_from_config
        from engine.reporting import settings_from_config

        settings = settings_from_config(engine.config)
        members = memberships_from_config(engine.config)
        when = time.time() if now is None else now

        def work() -> dict[str, Any]:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                conn.execute("PRAGMA busy_timeout=30000")
                return seal(conn, settings=settings, members=members, now=when, lag_s=self.lag_s,
                            max_buckets=self.max_buckets)
            finally:
                conn.close()

        self.last = await asyncio.get_running_loop().run_in_executor(None, work)
        self.runs += 1
        return self.last


__all__ = ["BUCKET_S", "SEAL_INTERVAL_S", "SEAL_LAG_S", "SEAL_MAX_BUCKETS", "SealService", "compute_buckets",
           "fingerprint", "offsets_ok", "report_from_buckets", "rollup_into", "rollup_sql", "seal", "seal_all",
           "seal_state", "usable"]
