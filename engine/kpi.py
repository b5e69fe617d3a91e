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
import math
import zoneinfo
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping

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
    """Tallies by (bucket start, key) for one period kind and dimension."""

    def __init__(self, period: Period, dimension: Dimension, cal: Calendar, settings: KpiSettings,
                 since: float, until: float) -> None:
        self.period, self.dimension, self.cal, self.settings = period, dimension, cal, settings
        self.since, self.until = since, until
        self.tallies: dict[Key, Tally] = {}

    def tally(self, bucket: float, key: str) -> Tally:
        t = self.tallies.get((bucket, key))
        if t is None:
            t = self.tallies[(bucket, key)] = Tally()
        return t

    def rows(self) -> list[dict[str, Any]]:
        """Report rows ordered by bucket then key: ``start_ts``, ``start``
        (local ISO), ``end_ts``, the dimension key, then :data:`FIGURES`."""
        out = []
        bounds: dict[float, tuple[str, float]] = {}  # per bucket start: label and end (many keys share one)
        for (b, key) in sorted(self.tallies):
            hit = bounds.get(b)
            if hit is None:
                hit = bounds[b] = (self.cal.label(b), self.cal.next_start(b, self.period))
            row = {"start_ts": b, "start": hit[0], "end_ts": hit[1], self.dimension.value: key}
            row.update(self.tallies[(b, key)].figures(self.settings))
            out.append(row)
        return out


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


__all__ = ["BASE_BUCKET_S", "BLOCKED_DISPOSITIONS", "Calendar", "Dimension", "FIGURES", "KpiSettings",
           "Membership", "Period", "Report", "STAFFED_STATES", "Tally", "call_time", "memberships_from_config",
           "repeat_flags", "split_span", "tally_rows"]
