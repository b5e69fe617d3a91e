"""Call-centre KPIs by interval: rows in, figures out (docs/kpis.md).

Theory of operation
-------------------
Every KPI is a ratio, mean or maximum of a few *additive* quantities
(:class:`Tally`: counts, sums of seconds, a maximum).  Computing a report is
therefore two steps:

1. **tally**: each raw record adds to the tally of one ``(bucket, key)``:

   * a call (one ``cdr`` row, ``direction = 'inbound'``) counts whole in the
     bucket of its *offer time* (``queued_ts``, or ``start_ts`` for a call
     that never reached a queue), even when it is answered, talks or ends in
     a later interval: the interval that received the call owns its
     outcome (the usual ACD convention, so service level and abandon rate of
     an interval never change when later intervals are added);
   * agent time (``agent_state_log``: each row closes a span
     ``[ts - duration_s, ts)`` spent in ``previous_state``) is *split* at
     bucket boundaries, because occupancy and staffed hours are time;
   * ring-no-answer events of an agent (``queue_log``), callbacks
     (``callbacks.requested_ts`` / ``completed_ts``) count at their time.

2. **finish**: :meth:`Tally.figures` turns one tally into the KPI figures
   (``None`` where a denominator is zero).

Buckets are local calendar periods of the centre's time zone
(``engine.time_zone``, :mod:`zoneinfo`): 30-minute intervals, hours, days,
ISO weeks (Monday) and months; a bucket is named by its start as Unix
seconds (UTC) and as local ISO text.  Around DST changes a local day has 23
or 25 hours; an hour that occurs twice (autumn) is two buckets.

Keys are the dimension's column: ``tenant``, ``queue``, ``group`` (the
``cdr.grp`` of the call; agents' time counts in each of their groups),
``agent`` and ``dialed_number``.  Agent time maps onto queues and groups
through :class:`Membership` (an agent serving several queues counts its
whole time in each of them, so per-queue staffed hours add up to more than
the centre's; per-agent figures are the exact ones).

The same tallies come from two sources that must agree (tests demand it):
:func:`tally_rows` (plain Python over row dicts: the reference, used for
small ranges and tests) and :mod:`engine.kpi_sql` (``GROUP BY`` in SQLite
over 15-minute UTC base buckets, rolled up here: the fast path for months
of data).  Every zone offset in use today is a multiple of 15 minutes, so
each 15-minute UTC base bucket lies inside exactly one local period of
every kind; :func:`base_bucket_ok` checks that for the zone in use.
"""
from __future__ import annotations

import datetime as _dt
import enum
import gc
import math
import zoneinfo
from dataclasses import dataclass, field, fields
from itertools import repeat
from operator import itemgetter, sub
from typing import Any, Iterable, Mapping

import numpy as np

BASE_BUCKET_S = 900
"""Width of the SQL fast path's UTC base buckets (15 minutes)."""

BLOCKED_DISPOSITIONS = frozenset({"blocked", "blacklisted", "busy", "capacity", "queue_full", "rejected"})
"""CDR dispositions counted as blocked calls (no queue place offered)."""

STAFFED_STATES = ("not_ready", "ready", "reserved", "busy", "wrapup")
"""Agent states that count as logged in (staffed)."""


class Period(enum.Enum):
    """Report interval kinds (local calendar periods)."""

    INTERVAL_30 = "30min"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class Dimension(enum.Enum):
    """What a report row is about."""

    TENANT = "tenant"
    QUEUE = "queue"
    GROUP = "group"
    AGENT = "agent"
    DIALED_NUMBER = "dialed_number"


@dataclass(frozen=True, slots=True, kw_only=True)
class KpiSettings:
    """Thresholds and conventions (config ``[reporting]``)."""

    service_level_s: float = 20.0
    """T: a call counts as answered in service level when ``wait_s <= T``."""
    service_level_target: float = 0.8
    """The goal the report compares service level with (80/20)."""
    short_abandon_s: float = 20.0
    """Abandons with ``wait_s <= short_abandon_s`` are short abandons."""
    short_abandons_in_service_level: bool = False
    """False (default): short abandons leave the service-level and abandon-rate
    denominators (and the abandon-rate numerator); True: they count as offered
    calls not answered in time."""
    repeat_window_days: float = 7.0
    """A call is a repeat when the same caller called the same tenant within
    this many days before."""


@dataclass(frozen=True, slots=True)
class Membership:
    """Where an agent's time counts: its tenant, groups and the queues it serves."""

    tenant: str
    groups: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()


def memberships_from_config(config: Any) -> dict[str, Membership]:
    """Agent number → :class:`Membership` from a :class:`engine.config.Config`:
    an agent serves a queue when one of its groups is among the queue's
    groups or the groups of its overflow tiers."""
    out: dict[str, Membership] = {}
    for number, agent in config.agents.items():
        groups = frozenset(agent.groups)
        queues = set()
        for qname, q in config.queues.items():
            qgroups = set(q.groups) | {g for t in q.tiers for g in t.groups}
            if q.tenant == agent.tenant and groups & qgroups:
                queues.add(qname)
        out[number] = Membership(agent.tenant, groups, frozenset(queues))
    return out


@dataclass(slots=True)
class Tally:
    """Additive quantities of one (bucket, key); see docs/kpis.md for each."""

    received: int = 0
    offered: int = 0
    answered: int = 0
    answered_within_threshold: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    abandon_wait_s: float = 0.0
    answer_wait_s: float = 0.0
    longest_wait_s: float = 0.0
    talk_s: float = 0.0
    hold_s: float = 0.0
    wrapup_s: float = 0.0
    transferred: int = 0
    blocked: int = 0
    voicemails: int = 0
    ring_no_answer: int = 0
    with_caller_number: int = 0
    repeat_calls: int = 0
    survey_count: int = 0
    survey_score_sum: float = 0.0
    callbacks_requested: int = 0
    callbacks_completed: int = 0
    state_s: dict[str, float] = field(default_factory=dict)
    """Agent seconds by state (split at bucket boundaries)."""

    def add(self, other: "Tally") -> None:
        """Add ``other`` into this tally (roll-up of base buckets)."""
        for f in fields(Tally):
            name = f.name
            if name == "state_s":
                for st, s in other.state_s.items():
                    self.state_s[st] = self.state_s.get(st, 0.0) + s
            elif name == "longest_wait_s":
                self.longest_wait_s = max(self.longest_wait_s, other.longest_wait_s)
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def figures(self, settings: KpiSettings) -> dict[str, Any]:
        """The KPI figures of this tally (docs/kpis.md gives each formula)."""
        sa = self.short_abandoned
        if settings.short_abandons_in_service_level:
            sl_base, long_abandoned = self.offered, self.abandoned
        else:
            sl_base, long_abandoned = self.offered - sa, self.abandoned - sa
        st = self.state_s
        handling = st.get("busy", 0.0) + st.get("wrapup", 0.0)
        available = handling + st.get("ready", 0.0) + st.get("reserved", 0.0)
        staffed = sum(st.get(s, 0.0) for s in STAFFED_STATES)
        sl = _ratio(self.answered_within_threshold, sl_base)
        return {
            "received": self.received,
            "offered": self.offered,
            "answered": self.answered,
            "answered_within_threshold": self.answered_within_threshold,
            "service_level_base": sl_base,
            "service_level": sl,
            "service_level_met": None if sl is None else sl >= settings.service_level_target,
            "average_speed_of_answer_s": _ratio(self.answer_wait_s, self.answered),
            "abandoned": self.abandoned,
            "short_abandoned": sa,
            "abandon_rate": _ratio(long_abandoned, sl_base),
            "short_abandon_rate": _ratio(sa, self.offered),
            "average_time_to_abandon_s": _ratio(self.abandon_wait_s, self.abandoned),
            "longest_wait_s": self.longest_wait_s if self.offered else None,
            "average_handle_time_s": _ratio(self.talk_s + self.hold_s + self.wrapup_s, self.answered),
            "average_talk_time_s": _ratio(self.talk_s, self.answered),
            "average_hold_time_s": _ratio(self.hold_s, self.answered),
            "average_wrapup_time_s": _ratio(self.wrapup_s, self.answered),
            "answered_percentage": _ratio(100.0 * self.answered, self.offered),
            "transferred": self.transferred,
            "transfer_rate": _ratio(self.transferred, self.answered),
            "queue_placement_rate": _ratio(self.offered, self.received),
            "blocked": self.blocked,
            "blocked_rate": _ratio(self.blocked, self.received),
            "ring_no_answer_count": self.ring_no_answer,
            "repeat_calls": self.repeat_calls,
            "repeat_caller_rate": _ratio(self.repeat_calls, self.with_caller_number),
            "survey_count": self.survey_count,
            "survey_average_score": _ratio(self.survey_score_sum, self.survey_count),
            "callbacks_requested": self.callbacks_requested,
            "callbacks_completed": self.callbacks_completed,
            "voicemails": self.voicemails,
            "staffed_s": staffed,
            "occupancy": _ratio(handling, available),
            "utilisation": _ratio(handling, staffed),
            "calls_per_agent_hour": _ratio(self.answered * 3600.0, staffed),
        }


def _ratio(num: float, den: float) -> float | None:
    return None if not den else num / den


FIGURES = tuple(Tally().figures(KpiSettings()))
"""Names of the figures, in report column order."""


# ---------------------------------------------------------------- buckets


class Calendar:
    """Local period starts of one time zone, cached per base bucket."""

    def __init__(self, time_zone: str = "UTC") -> None:
        try:
            self.zone = zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {time_zone!r}") from None
        self.time_zone = time_zone
        self._cache: dict[tuple[int, Period], float] = {}

    def period_start(self, ts: float, period: Period) -> float:
        """Unix time of the start of the local ``period`` containing ``ts``."""
        local = _dt.datetime.fromtimestamp(ts, self.zone)
        if period is Period.INTERVAL_30 or period is Period.HOUR:
            # Sub-day periods are fixed widths of real time from the local hour
            # start, so a repeated autumn hour gives two buckets.
            width = 1800 if period is Period.INTERVAL_30 else 3600
            offset = local.utcoffset().total_seconds()  # type: ignore[union-attr]
            return math.floor((ts + offset) / width) * width - offset
        day = local.date()
        if period is Period.WEEK:
            day = day - _dt.timedelta(days=day.weekday())
        elif period is Period.MONTH:
            day = day.replace(day=1)
        return _local_midnight(day, self.zone)

    def base_start(self, base_index: int, period: Period) -> float:
        """:meth:`period_start` of base bucket ``base_index`` (cached)."""
        key = (base_index, period)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self.period_start(base_index * BASE_BUCKET_S, period)
        return hit

    def next_start(self, start: float, period: Period) -> float:
        """Start of the period after the one starting at ``start``."""
        if period is Period.INTERVAL_30:
            return start + 1800
        if period is Period.HOUR:
            return start + 3600
        day = _dt.datetime.fromtimestamp(start, self.zone).date()
        if period is Period.DAY:
            day = day + _dt.timedelta(days=1)
        elif period is Period.WEEK:
            day = day + _dt.timedelta(days=7)
        else:
            day = (day.replace(day=28) + _dt.timedelta(days=4)).replace(day=1)
        return _local_midnight(day, self.zone)

    def label(self, start: float) -> str:
        """Local ISO 8601 text of a bucket start (with its UTC offset)."""
        return _dt.datetime.fromtimestamp(start, self.zone).isoformat()

    def base_bucket_ok(self, since: float, until: float) -> bool:
        """Every UTC offset of the zone between ``since`` and ``until`` is a
        multiple of 15 minutes (the SQL fast path's assumption)."""
        ts = since
        while ts <= until + 86400:
            off = _dt.datetime.fromtimestamp(ts, self.zone).utcoffset().total_seconds()  # type: ignore[union-attr]
            if off % BASE_BUCKET_S:
                return False
            ts += 6 * 3600
        return True


def _local_midnight(day: _dt.date, zone: zoneinfo.ZoneInfo) -> float:
    # A day starts at 00:00 local, or at the first existing time after it when
    # a DST change skips midnight (fold=0 picks the earlier of two).
    t = _dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    ts = t.timestamp()
    back = _dt.datetime.fromtimestamp(ts, zone)
    if back.date() != day:  # midnight did not exist: shifted into the previous day
        ts += 3600
    return ts


# ---------------------------------------------------------------- tallies from rows


Key = tuple[float, str]  # (bucket start, dimension key)


def call_time(row: Mapping[str, Any]) -> float:
    """The instant a call counts at: queued (offered) or, never queued, started."""
    q = row.get("queued_ts")
    return float(q) if q is not None else float(row["start_ts"])


def repeat_flags(rows: Iterable[Mapping[str, Any]], window_s: float) -> dict[str, bool]:
    """call_id → whether the same tenant + caller number called in the
    ``window_s`` seconds before (``rows``: inbound calls, including that
    look-back).  Ties in ``start_ts`` are ordered by ``call_id``."""
    last: dict[tuple[str, str], float] = {}
    out: dict[str, bool] = {}
    for r in sorted(rows, key=lambda r: (r["start_ts"], r["call_id"])):
        number = r.get("caller_number") or ""
        if not number:
            continue
        k = (r.get("tenant", "default"), number)
        prev = last.get(k)
        out[r["call_id"]] = prev is not None and r["start_ts"] - prev <= window_s
        last[k] = r["start_ts"]
    return out


def call_keys(row: Mapping[str, Any], dimension: Dimension) -> list[str]:
    """The dimension keys a call counts under (empty: not in this dimension)."""
    if dimension is Dimension.TENANT:
        return [row.get("tenant") or "default"]
    col = {"group": "grp"}.get(dimension.value, dimension.value)
    v = row.get(col) or ""
    return [v] if v else []


def agent_keys(agent: str, tenant: str, dimension: Dimension,
               members: Mapping[str, Membership]) -> list[str]:
    """Dimension keys an agent's time counts under (dialled numbers: none)."""
    if dimension is Dimension.AGENT:
        return [agent]
    if dimension is Dimension.TENANT:
        return [tenant]
    m = members.get(agent)
    if m is None:
        return []
    if dimension is Dimension.GROUP:
        return sorted(m.groups)
    if dimension is Dimension.QUEUE:
        return sorted(m.queues)
    return []


def tally_call(t: Tally, r: Mapping[str, Any], settings: KpiSettings, repeat: bool, *,
               count_ring_no_answer: bool = True) -> None:
    """Add one inbound ``cdr`` row to ``t`` (``count_ring_no_answer``: add the
    call's ring-no-answer count; False for the agent dimension, which counts
    the agents who did not answer from the queue log)."""
    t.received += 1
    disposition = r.get("disposition") or ""
    queued = r.get("queued_ts") is not None
    wait = float(r.get("wait_s") or 0.0)
    if r.get("caller_number"):
        t.with_caller_number += 1
        t.repeat_calls += int(repeat)
    if disposition in BLOCKED_DISPOSITIONS:
        t.blocked += 1
    if disposition == "voicemail":
        t.voicemails += 1
    if count_ring_no_answer:
        t.ring_no_answer += int(r.get("ring_no_answer_count") or 0)
    score = r.get("survey_score")
    if score is not None:
        t.survey_count += 1
        t.survey_score_sum += score
    if queued:
        t.offered += 1
        t.longest_wait_s = max(t.longest_wait_s, wait)
        if r.get("answered_ts") is not None:
            t.answered += 1
            t.answer_wait_s += wait
            t.answered_within_threshold += int(wait <= settings.service_level_s)
            t.talk_s += float(r.get("talk_s") or 0.0)
            t.hold_s += float(r.get("hold_s") or 0.0)
            t.wrapup_s += float(r.get("wrapup_s") or 0.0)
            t.transferred += int(bool(r.get("transferred")))
        elif disposition == "abandoned":
            t.abandoned += 1
            t.abandon_wait_s += wait
            t.short_abandoned += int(wait <= settings.short_abandon_s)


def split_span(start: float, end: float, cal: Calendar, period: Period) -> list[tuple[float, float]]:
    """``[start, end)`` cut at period boundaries: ``(bucket start, seconds)`` pairs."""
    out = []
    b = cal.period_start(start, period)
    t = start
    while t < end:
        nxt = cal.next_start(b, period)
        stop = min(end, nxt)
        out.append((b, stop - t))
        t, b = stop, nxt
    return out


class Report:
    """Tallies by (bucket start, key) for one period kind and dimension.

    Sealed bucket rows may be held as they came from SQLite
    (:meth:`add_bucket_rows`) instead of as :class:`Tally` objects:
    :meth:`rows` computes the figures of those column-wise (numpy over all
    rows, the formulas of :meth:`Tally.figures` in the same order of
    operations, so every figure is bit-for-bit the same), which is what
    keeps a month by 30 minutes and agent (190,000 rows) fast.
    :attr:`tallies` turns them into :class:`Tally` objects on first access.
    """

    def __init__(self, period: Period, dimension: Dimension, cal: Calendar, settings: KpiSettings,
                 since: float, until: float) -> None:
        self.period, self.dimension, self.cal, self.settings = period, dimension, cal, settings
        self.since, self.until = since, until
        self._tallies: dict[Key, Tally] = {}
        self._pending: list[tuple[list[float], list[tuple[Any, ...]]]] = []

    @property
    def tallies(self) -> dict[Key, Tally]:
        """Every (bucket start, key) → :class:`Tally` of the report."""
        if self._pending:
            merged: dict[Key, Tally] = {}
            for starts, rows in self._pending:  # in order: a later piece adds into an earlier one
                _add_bucket_rows(merged, starts, rows)
            self._pending = []
            for k, t in self._tallies.items():  # added after the bucket rows: add in that order
                _add_into(merged, k, t)
            self._tallies = merged
        return self._tallies

    def tally(self, bucket: float, key: str) -> Tally:
        """The accumulator of ``(bucket, key)``: what is added to it adds to the report."""
        t = self._tallies.get((bucket, key))
        if t is None:
            t = self._tallies[(bucket, key)] = Tally()
        return t

    def add_bucket_rows(self, starts: list[float], rows: list[tuple[Any, ...]]) -> None:
        """Add sealed bucket rows: ``rows[i]`` is ``(slot, key, *BUCKET_FIELDS, *seconds in
        STAFFED_STATES)`` with bucket start ``starts[i]``; at most one row per (start, key)
        in one call.  Kept as rows (computed column-wise by :meth:`rows`) when they share no
        key with the tallies added before (e.g. a raw tail of later periods; calls may share
        keys among themselves: the pieces of a range cut at a DST change); otherwise added as :class:`Tally` objects (``have.add(bucket)``, the order of additions
        of the row-wise path)."""
        if not self._tallies or self._tallies.keys().isdisjoint(zip(starts, map(itemgetter(1), rows))):
            # nothing to add to (e.g. a raw tail of other periods): the order of additions is kept
            self._pending.append((starts, rows))
            return
        _add_bucket_rows(self.tallies, starts, rows)

    def rows(self) -> list[dict[str, Any]]:
        """Report rows ordered by bucket then key: ``start_ts``, ``start``
        (local ISO), ``end_ts``, the dimension key, then :data:`FIGURES`."""
        return self._rows_columns()

    def rows_by_tally(self) -> list[dict[str, Any]]:
        """:meth:`rows` computed row by row with :meth:`Tally.figures` (the reference of the
        column-wise path; same result)."""
        out = []
        bounds: dict[float, tuple[str, float]] = {}  # per bucket start: label and end (many keys share one)
        tallies = self.tallies
        for (b, key) in sorted(tallies):
            hit = bounds.get(b)
            if hit is None:
                hit = bounds[b] = (self.cal.label(b), self.cal.next_start(b, self.period))
            row = {"start_ts": b, "start": hit[0], "end_ts": hit[1], self.dimension.value: key}
            row.update(tallies[(b, key)].figures(self.settings))
            out.append(row)
        return out

    def _rows_columns(self) -> list[dict[str, Any]]:
        nb, ns = len(BUCKET_FIELDS), len(STAFFED_STATES)
        starts: list[Any] = []
        block: list[tuple[Any, ...]] = []
        for s, r in self._pending:
            starts += s
            block += r
        if len(self._pending) > 1 and len(set(zip(starts, map(itemgetter(1), block)))) < len(block):
            # pieces of a range cut at a DST change share periods (days, weeks, months): add as tallies
            self.tallies  # noqa: B018 (merges the pending rows)
            starts, block = [], []
        extra = self._tallies
        if block and extra:  # keys in both: one Tally, bucket row first (as in :attr:`tallies`)
            idx = {(s, r[1]): i for i, (s, r) in enumerate(zip(starts, block))}
            drop = set()
            merged: dict[Key, Tally] = {}
            for k, t in extra.items():
                i = idx.get(k)
                if i is None:
                    merged[k] = t
                else:
                    m = merged[k] = _bucket_tally(block[i])
                    m.add(t)
                    drop.add(i)
            if drop:
                starts = [s for i, s in enumerate(starts) if i not in drop]
                block = [r for i, r in enumerate(block) if i not in drop]
            extra = merged
        n = len(block) + len(extra)
        if not n:
            return []
        # columns: start, key, the scalar Tally fields, the staffed-state seconds
        cols: list[Any] = [starts, *([] for _ in range(1 + nb))]
        if block:
            t = list(zip(*block))
            cols = [starts, *t[1:2 + nb]]
            cols += [(0,) * len(block), (0,) * len(block), *t[2 + nb:2 + nb + ns]]
        else:
            cols += [(), (), *(() for _ in range(ns))]
        if extra:
            flat = [(k[0], k[1], *(getattr(t, f) for f in _SCALAR_FIELDS),
                     *(t.state_s.get(s, 0.0) for s in STAFFED_STATES)) for k, t in extra.items()]
            cols = [tuple(a) + b for a, b in zip(cols, zip(*flat))]
        if n > 1:  # by start then key (SQLite's index order already, for bucket rows of one tenant)
            st, ky = np.array(cols[0], dtype=np.float64), np.array(cols[1], dtype=str)
            later = (st[1:] > st[:-1]) | ((st[1:] == st[:-1]) & (ky[1:] > ky[:-1]))
            if not later.all():
                get = itemgetter(*np.lexsort((ky, st)).tolist())
                cols = [get(c) for c in cols]
        c = dict(zip(("start_ts", "key", *_SCALAR_FIELDS, *STAFFED_STATES), cols))
        return _figure_rows(self, c, n)


_SCALAR_FIELDS = tuple(f.name for f in fields(Tally) if f.name != "state_s")
BUCKET_FIELDS = tuple(f for f in _SCALAR_FIELDS if f not in ("callbacks_requested", "callbacks_completed"))
"""The :class:`Tally` quantities of a sealed bucket row, in order (callbacks are not in buckets)."""
assert _SCALAR_FIELDS == (*BUCKET_FIELDS, "callbacks_requested", "callbacks_completed")


def _add_into(tallies: dict[Key, Tally], k: Key, t: Tally) -> None:
    """``t`` becomes the tally of ``k``, or is added to the one there (``have.add(t)``)."""
    have = tallies.get(k)
    if have is None:
        tallies[k] = t
    else:
        have.add(t)


def _add_bucket_rows(tallies: dict[Key, Tally], starts: list[float], rows: list[tuple[Any, ...]]) -> None:
    for start, row in zip(starts, rows):
        _add_into(tallies, (start, row[1]), _bucket_tally(row))


def _bucket_tally(row: tuple[Any, ...]) -> Tally:
    n = len(BUCKET_FIELDS)
    return Tally(*row[2:2 + n], 0, 0, {s: v for s, v in zip(STAFFED_STATES, row[2 + n:]) if v})


def _figure_rows(rep: Report, c: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """:meth:`Tally.figures` over columns ``c`` (``n`` rows sorted by start and key): the
    same operations in the same order on float64 (exact for the integer counts), ``None``
    where a denominator is zero, the counts passed through as they are."""
    settings = rep.settings

    arrays: dict[str, Any] = {}

    def f(name: str) -> Any:
        a = arrays.get(name)
        if a is None:
            a = arrays[name] = np.array(c[name], dtype=np.float64)
        return a

    def ratio(num: Any, den: Any) -> list[Any]:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (num / den).tolist()
        for i in np.flatnonzero(den == 0).tolist():
            out[i] = None
        return out

    offered, sa, abandoned = c["offered"], c["short_abandoned"], c["abandoned"]
    if settings.short_abandons_in_service_level:
        sl_base, long_abandoned = list(offered), f("abandoned")
    else:
        sl_base = list(map(sub, offered, sa))
        long_abandoned = f("abandoned") - f("short_abandoned")
    base = np.array(sl_base, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        slq = f("answered_within_threshold") / base
    sl = slq.astype(object)
    met = (slq >= settings.service_level_target).astype(object)
    sl[base == 0] = None
    met[base == 0] = None
    off, ans, rec = f("offered"), f("answered"), f("received")
    nr, rd, rs, bz, wu = (f(s) for s in STAFFED_STATES)
    handling = bz + wu
    available = handling + rd + rs
    staffed = 0.0 + nr + rd + rs + bz + wu
    talk, hold, wrap = f("talk_s"), f("hold_s"), f("wrapup_s")
    lw = c["longest_wait_s"]
    uniq = set(c["start_ts"])  # many keys share one period: label and end once per period
    labels = list(map({b: rep.cal.label(b) for b in uniq}.__getitem__, c["start_ts"]))
    ends = list(map({b: rep.cal.next_start(b, rep.period) for b in uniq}.__getitem__, c["start_ts"]))
    figures = {
        "received": c["received"],
        "offered": offered,
        "answered": c["answered"],
        "answered_within_threshold": c["answered_within_threshold"],
        "service_level_base": sl_base,
        "service_level": sl.tolist(),
        "service_level_met": met.tolist(),
        "average_speed_of_answer_s": ratio(f("answer_wait_s"), ans),
        "abandoned": abandoned,
        "short_abandoned": sa,
        "abandon_rate": ratio(long_abandoned, base),
        "short_abandon_rate": ratio(f("short_abandoned"), off),
        "average_time_to_abandon_s": ratio(f("abandon_wait_s"), f("abandoned")),
        "longest_wait_s": [w if o else None for w, o in zip(lw, offered)],
        "average_handle_time_s": ratio(talk + hold + wrap, ans),
        "average_talk_time_s": ratio(talk, ans),
        "average_hold_time_s": ratio(hold, ans),
        "average_wrapup_time_s": ratio(wrap, ans),
        "answered_percentage": ratio(100.0 * ans, off),
        "transferred": c["transferred"],
        "transfer_rate": ratio(f("transferred"), ans),
        "queue_placement_rate": ratio(off, rec),
        "blocked": c["blocked"],
        "blocked_rate": ratio(f("blocked"), rec),
        "ring_no_answer_count": c["ring_no_answer"],
        "repeat_calls": c["repeat_calls"],
        "repeat_caller_rate": ratio(f("repeat_calls"), f("with_caller_number")),
        "survey_count": c["survey_count"],
        "survey_average_score": ratio(f("survey_score_sum"), f("survey_count")),
        "callbacks_requested": c["callbacks_requested"],
        "callbacks_completed": c["callbacks_completed"],
        "voicemails": c["voicemails"],
        "staffed_s": staffed.tolist(),
        "occupancy": ratio(handling, available),
        "utilisation": ratio(handling, staffed),
        "calls_per_agent_hour": ratio(ans * 3600.0, staffed),
    }
    assert tuple(figures) == FIGURES
    names = ("start_ts", "start", "end_ts", rep.dimension.value, *FIGURES)
    cols = (c["start_ts"], labels, ends, c["key"], *figures.values())
    # 190,000 dicts in a row: the cyclic collector would rescan them again and again
    was = gc.isenabled()
    gc.disable()
    try:
        return list(map(dict, map(zip, repeat(names, n), zip(*cols))))
    finally:
        if was:
            gc.enable()


def tally_rows(*, period: Period, dimension: Dimension, since: float, until: float, settings: KpiSettings,
               cal: Calendar, cdr: Iterable[Mapping[str, Any]] = (),
               agent_states: Iterable[Mapping[str, Any]] = (), queue_log: Iterable[Mapping[str, Any]] = (),
               callbacks: Iterable[Mapping[str, Any]] = (),
               members: Mapping[str, Membership] | None = None) -> Report:
    """The reference path: a :class:`Report` from row dicts.

    ``cdr`` may hold calls before ``since`` (the repeat-caller look-back);
    only calls whose :func:`call_time` lies in ``[since, until)`` are
    counted.  Agent spans are clipped to ``[since, until)``.
    """
    members = members or {}
    rep = Report(period, dimension, cal, settings, since, until)
    cdr = [r for r in cdr if (r.get("direction") or "inbound") == "inbound"]
    repeats = repeat_flags(cdr, settings.repeat_window_days * 86400.0)
    per_agent = dimension is Dimension.AGENT
    for r in cdr:
        t0 = call_time(r)
        if not since <= t0 < until:
            continue
        b = cal.period_start(t0, period)
        for key in call_keys(r, dimension):
            tally_call(rep.tally(b, key), r, settings, repeats.get(r["call_id"], False),
                       count_ring_no_answer=not per_agent)
    for s in agent_states:
        state = s.get("previous_state") or ""
        if state not in STAFFED_STATES:
            continue
        end = float(s["ts"])
        start = max(end - float(s.get("duration_s") or 0.0), since)
        end = min(end, until)
        if end <= start:
            continue
        keys = agent_keys(s["agent"], s.get("tenant") or "default", dimension, members)
        for b, secs in split_span(start, end, cal, period):
            for key in keys:
                st = rep.tally(b, key).state_s
                st[state] = st.get(state, 0.0) + secs
    if per_agent:
        # ring no answer by the agent who did not answer: queue_log; the
        # other dimensions take cdr.ring_no_answer_count above.
        for q in queue_log:
            if q.get("event") == "ring_no_answer" and since <= q["ts"] < until and q.get("agent"):
                rep.tally(cal.period_start(q["ts"], period), q["agent"]).ring_no_answer += 1
    for c in callbacks:
        for col, attr in (("requested_ts", "callbacks_requested"), ("completed_ts", "callbacks_completed")):
            ts = c.get(col)
            if ts is None or not since <= ts < until:
                continue
            keys = _callback_keys(c, dimension)
            for key in keys:
                t = rep.tally(cal.period_start(ts, period), key)
                setattr(t, attr, getattr(t, attr) + 1)
    return rep


def _callback_keys(c: Mapping[str, Any], dimension: Dimension) -> list[str]:
    if dimension is Dimension.TENANT:
        return [c.get("tenant") or "default"]
    if dimension is Dimension.QUEUE:
        return [c["queue"]] if c.get("queue") else []
    if dimension is Dimension.AGENT:
        return [c["assigned_agent"]] if c.get("assigned_agent") else []
    return []


__all__ = ["BASE_BUCKET_S", "BLOCKED_DISPOSITIONS", "BUCKET_FIELDS", "Calendar", "Dimension", "FIGURES", "KpiSettings",
           "Membership", "Period", "Report", "STAFFED_STATES", "Tally", "call_time", "memberships_from_config",
           "repeat_flags", "split_span", "tally_rows"]
