"""Raw-row fixtures for the KPI tests and an independent, deliberately plain
recomputation of every KPI (no tallies, no roll-ups: for each bucket, filter
the rows and apply the formula of docs/kpis.md directly)."""
from __future__ import annotations

import datetime as dt
import functools
import random
import zoneinfo
from typing import Any

from engine.kpi import Membership

ZONE = "Europe/Berlin"
# 2026-10-24 00:00 to 2026-10-27 00:00 local: spans the DST end (25 October,
# 03:00 CEST -> 02:00 CET), so one day has 25 hours and 02:xx occurs twice.
SINCE = dt.datetime(2026, 10, 24, tzinfo=zoneinfo.ZoneInfo(ZONE)).timestamp()
UNTIL = dt.datetime(2026, 10, 27, tzinfo=zoneinfo.ZoneInfo(ZONE)).timestamp()

QUEUES = {"sales": ("g_sales",), "support": ("g_support",), "vip": ("g_sales", "g_support")}
AGENTS = {"1001": ("g_sales",), "1002": ("g_sales", "g_support"), "1003": ("g_support",), "1004": ("g_support",)}
MEMBERS = {a: Membership("acme", frozenset(gs), frozenset(q for q, qg in QUEUES.items() if set(qg) & set(gs)))
           for a, gs in AGENTS.items()}
DISPOSITIONS_OTHER = ("voicemail", "blocked", "blacklisted", "queue_timeout", "busy")


def _cdr(call_id: str, **kw: Any) -> dict[str, Any]:
    row = {"call_id": call_id, "tenant": "acme", "direction": "inbound", "caller_number": "", "dialed_number": "",
           "trunk": "t1", "queue": "", "grp": "", "agent": "", "start_ts": 0.0, "queued_ts": None,
           "answered_ts": None, "end_ts": None, "wait_s": 0.0, "ring_s": 0.0, "talk_s": 0.0, "hold_s": 0.0,
           "wrapup_s": 0.0, "disposition": "", "end_reason": "", "reason_code": "", "transferred": 0,
           "recorded": 0, "ring_no_answer_count": 0, "survey_score": None, "callback_of": "", "notes": ""}
    row.update(kw)
    return row


def edge_cases() -> list[dict[str, Any]]:
    """Hand-made calls for each edge case the issue names."""
    t = SINCE + 10 * 3600 + 29 * 60 + 50  # 10:29:50 local on the first day
    return [
        # queued 10:29:50, answered 10:30:10: counts in the 10:00 interval, wait 20 s (within T)
        _cdr("cross", caller_number="+491", dialed_number="800", queue="sales", grp="g_sales", agent="1001",
             start_ts=t - 30, queued_ts=t, answered_ts=t + 20, end_ts=t + 200, wait_s=20.0, talk_s=150.0,
             hold_s=30.0, wrapup_s=12.0, disposition="answered"),
        # transferred between queues: answered in sales, transferred to support (cdr keeps the first queue)
        _cdr("xfer", caller_number="+492", dialed_number="800", queue="sales", grp="g_sales", agent="1002",
             start_ts=t + 100, queued_ts=t + 105, answered_ts=t + 140, end_ts=t + 500, wait_s=35.0, talk_s=300.0,
             wrapup_s=5.0, transferred=1, disposition="answered"),
        # abandoned while an agent's phone rang (after a ring no answer on another agent)
        _cdr("ringab", caller_number="+493", dialed_number="801", queue="support", grp="", agent="",
             start_ts=t + 200, queued_ts=t + 210, end_ts=t + 260, wait_s=50.0, ring_s=25.0,
             ring_no_answer_count=1, disposition="abandoned"),
        # short abandon, exactly at the threshold (20 s counts as short)
        _cdr("shortab", caller_number="+494", dialed_number="801", queue="support", start_ts=t + 300,
             queued_ts=t + 300, end_ts=t + 320, wait_s=20.0, disposition="abandoned"),
        # repeat caller: +491 again one day later
        _cdr("repeat", caller_number="+491", dialed_number="800", queue="sales", grp="g_sales", agent="1001",
             start_ts=t + 86400, queued_ts=t + 86400, answered_ts=t + 86405, end_ts=t + 86500, wait_s=5.0,
             talk_s=95.0, disposition="answered", survey_score=3),
        # blocked (never queued) and a call before the range (look-back for the repeat flag only)
        _cdr("blocked", caller_number="+495", dialed_number="800", start_ts=t + 400, end_ts=t + 400,
             disposition="blacklisted"),
        _cdr("before", caller_number="+494", dialed_number="801", queue="support", start_ts=SINCE - 3600,
             queued_ts=SINCE - 3590, answered_ts=SINCE - 3580, end_ts=SINCE - 3500, wait_s=10.0, talk_s=80.0,
             disposition="answered", grp="g_support", agent="1003"),
        # queued just before the range ends, answered after it: counts in the last interval
        _cdr("lastone", caller_number="+496", dialed_number="800", queue="vip", grp="g_support", agent="1004",
             start_ts=UNTIL - 40, queued_ts=UNTIL - 5, answered_ts=UNTIL + 30, end_ts=UNTIL + 300, wait_s=35.0,
             talk_s=270.0, disposition="answered"),
        # started in the range but queued after it ends: not in the report
        _cdr("after", caller_number="+497", dialed_number="800", queue="vip", start_ts=UNTIL - 10,
             queued_ts=UNTIL + 5, end_ts=UNTIL + 60, wait_s=55.0, disposition="abandoned"),
    ]


def random_calls(n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        start = rnd.uniform(SINCE - 86400, UNTIL)
        queue = rnd.choice(list(QUEUES))
        caller = f"+49{rnd.randint(100, 160)}"
        dialed = rnd.choice(("800", "801", "802"))
        r = rnd.random()
        if r < 0.06:
            rows.append(_cdr(f"r{i}", caller_number=caller, dialed_number=dialed, start_ts=start, end_ts=start,
                             disposition=rnd.choice(DISPOSITIONS_OTHER)))
            continue
        queued = start + rnd.choice((0.0, rnd.uniform(0, 90)))
        wait = rnd.choice((0.0, 20.0, rnd.expovariate(1 / 30)))
        rna = rnd.choice((0, 0, 0, 1, 2))
        score = rnd.choice((None, None, 1, 2, 3))
        if r < 0.75:
            agent = rnd.choice([a for a, gs in AGENTS.items() if set(gs) & set(QUEUES[queue])])
            grp = next(g for g in AGENTS[agent] if g in QUEUES[queue])
            talk = rnd.expovariate(1 / 180)
            rows.append(_cdr(f"r{i}", caller_number=caller, dialed_number=dialed, queue=queue, grp=grp,
                             agent=agent, start_ts=start, queued_ts=queued, answered_ts=queued + wait,
                             end_ts=queued + wait + talk, wait_s=wait, talk_s=talk,
                             hold_s=rnd.choice((0.0, rnd.uniform(0, 60))), wrapup_s=rnd.uniform(0, 30),
                             transferred=int(rnd.random() < 0.1), ring_no_answer_count=rna,
                             survey_score=score, disposition="answered"))
        else:
            disp = "abandoned" if r < 0.93 else rnd.choice(("voicemail", "queue_timeout"))
            rows.append(_cdr(f"r{i}", caller_number=caller, dialed_number=dialed, queue=queue, start_ts=start,
                             queued_ts=queued, end_ts=queued + wait, wait_s=wait, ring_no_answer_count=rna,
                             disposition=disp))
    return rows


def agent_states(seed: int) -> list[dict[str, Any]]:
    """agent_state_log rows: each agent cycles through states with spans
    from seconds to hours (some crossing interval, day and range ends)."""
    rnd = random.Random(seed)
    rows = []
    for agent in AGENTS:
        t = SINCE - 5000
        state = "logged_out"
        while t < UNTIL + 4000:
            nxt = rnd.choice(("ready", "reserved", "busy", "wrapup", "not_ready", "logged_out"))
            dur = rnd.choice((rnd.uniform(1, 120), rnd.uniform(100, 2000), rnd.uniform(1000, 20000)))
            t += dur
            rows.append({"ts": t, "tenant": "acme", "agent": agent, "state": nxt, "previous_state": state,
                         "duration_s": dur, "reason_code": "", "call_id": "", "extension": ""})
            state = nxt
    return rows


def queue_log(calls: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for c in calls:
        for k in range(c["ring_no_answer_count"]):
            if c["queued_ts"] is None:
                continue
            rows.append({"ts": c["queued_ts"] + k + 1, "tenant": "acme", "call_id": c["call_id"],
                         "queue": c["queue"], "event": "ring_no_answer", "agent": rnd.choice(list(AGENTS)),
                         "position": None, "wait_s": None, "data": "{}"})
    return rows


def callbacks(seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(40):
        req = rnd.uniform(SINCE - 3600, UNTIL)
        done = req + rnd.uniform(60, 30000) if rnd.random() < 0.6 else None
        rows.append({"tenant": "acme", "call_id": f"cb{i}", "caller_number": "+4911", "queue": rnd.choice(list(QUEUES)),
                     "requested_ts": req, "scheduled_ts": None,
                     "assigned_agent": rnd.choice(("", "1001", "1003")), "state": "done" if done else "open",
                     "attempts": 0, "completed_ts": done, "result_call_id": "", "notes": ""})
    return rows


# ---------------------------------------------------------------- the plain recomputation


def bucket_of(ts: float, period: str, zone: zoneinfo.ZoneInfo) -> float:
    local = dt.datetime.fromtimestamp(ts, zone)
    if period == "30min":
        start = local.replace(minute=local.minute - local.minute % 30, second=0, microsecond=0)
    elif period == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
    else:
        day = local.date()
        if period == "week":
            day -= dt.timedelta(days=day.weekday())
        elif period == "month":
            day = day.replace(day=1)
        start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    return start.timestamp()


@functools.lru_cache(maxsize=None)
def buckets(period: str, zone: zoneinfo.ZoneInfo) -> list[tuple[float, float]]:
    """Every bucket [start, end) touching the range, found by stepping 5 minutes
    (every zone offset here is a multiple of 15 minutes)."""
    margin = {"month": 32, "week": 8}.get(period, 1) * 86400
    starts = sorted({bucket_of(t, period, zone) for t in range(int(SINCE) - margin, int(UNTIL) + margin, 300)})
    pairs = list(zip(starts, starts[1:]))
    return [(a, b) for a, b in pairs if b > SINCE and a < UNTIL]


def plain_report(period: str, dimension: str, cdr: list[dict[str, Any]], states: list[dict[str, Any]],
                 qlog: list[dict[str, Any]], cbs: list[dict[str, Any]], *, sl_s: float = 20.0,
                 short_s: float = 20.0, short_in_sl: bool = False, repeat_days: float = 7.0,
                 target: float = 0.8) -> dict[tuple[float, str], dict[str, Any]]:
    zone = zoneinfo.ZoneInfo(ZONE)
    col = {"group": "grp"}.get(dimension, dimension)
    blocked_set = {"blocked", "blacklisted", "busy", "capacity", "queue_full", "rejected"}

    def offer_time(c: dict[str, Any]) -> float:
        return c["queued_ts"] if c["queued_ts"] is not None else c["start_ts"]

    inbound = [c for c in cdr if c["direction"] == "inbound"]

    @functools.lru_cache(maxsize=None)
    def is_repeat_id(call_id: str) -> bool:
        return is_repeat(next(c for c in inbound if c["call_id"] == call_id))

    def is_repeat(c: dict[str, Any]) -> bool:
        if not c["caller_number"]:
            return False
        earlier = [p for p in inbound if p["caller_number"] == c["caller_number"] and p["tenant"] == c["tenant"]
                   and (p["start_ts"], p["call_id"]) < (c["start_ts"], c["call_id"])]
        if not earlier:
            return False
        latest = max(p["start_ts"] for p in earlier)
        return c["start_ts"] - latest <= repeat_days * 86400

    def agent_dims(agent: str) -> list[str]:
        if dimension == "agent":
            return [agent]
        if dimension == "tenant":
            return [MEMBERS[agent].tenant]
        if dimension == "group":
            return list(MEMBERS[agent].groups)
        if dimension == "queue":
            return list(MEMBERS[agent].queues)
        return []

    out: dict[tuple[float, str], dict[str, Any]] = {}
    for b0, b1 in buckets(period, zone):
        lo, hi = max(b0, SINCE), min(b1, UNTIL)
        calls = [c for c in inbound if lo <= offer_time(c) < hi]
        keys = {c[col] for c in calls if c[col]}
        active = [s for s in states if s["previous_state"] in ("not_ready", "ready", "reserved", "busy", "wrapup")
                  and s["ts"] - s["duration_s"] < hi and s["ts"] > lo]
        for s in active:
            keys.update(agent_dims(s["agent"]))
        if dimension == "agent":
            keys.update(q["agent"] for q in qlog if q["event"] == "ring_no_answer" and lo <= q["ts"] < hi)
        cb_col = {"tenant": "tenant", "queue": "queue", "agent": "assigned_agent"}.get(dimension)
        if cb_col:
            for cb in cbs:
                for when in ("requested_ts", "completed_ts"):
                    if cb[when] is not None and lo <= cb[when] < hi and cb[cb_col]:
                        keys.add(cb[cb_col])
        for key in keys:
            mine = [c for c in calls if c[col] == key]
            queued = [c for c in mine if c["queued_ts"] is not None]
            answered = [c for c in queued if c["answered_ts"] is not None]
            abandoned = [c for c in queued if c["answered_ts"] is None and c["disposition"] == "abandoned"]
            short = [c for c in abandoned if c["wait_s"] <= short_s]
            within = [c for c in answered if c["wait_s"] <= sl_s]
            base = len(queued) if short_in_sl else len(queued) - len(short)
            long_ab = len(abandoned) if short_in_sl else len(abandoned) - len(short)
            with_number = [c for c in mine if c["caller_number"]]
            surveyed = [c for c in mine if c["survey_score"] is not None]

            secs: dict[str, float] = {}
            for s in active:
                if key not in agent_dims(s["agent"]):
                    continue
                overlap = min(s["ts"], hi) - max(s["ts"] - s["duration_s"], lo)
                if overlap > 0:
                    secs[s["previous_state"]] = secs.get(s["previous_state"], 0.0) + overlap
            handling = secs.get("busy", 0.0) + secs.get("wrapup", 0.0)
            available = handling + secs.get("ready", 0.0) + secs.get("reserved", 0.0)
            staffed = sum(secs.values())
            if dimension == "agent":
                rna = sum(1 for q in qlog if q["event"] == "ring_no_answer" and q["agent"] == key
                          and lo <= q["ts"] < hi)
            else:
                rna = sum(c["ring_no_answer_count"] for c in mine)
            cbreq = cbdone = 0
            if cb_col:
                cbreq = sum(1 for cb in cbs if cb[cb_col] == key and lo <= cb["requested_ts"] < hi)
                cbdone = sum(1 for cb in cbs if cb[cb_col] == key and cb["completed_ts"] is not None
                             and lo <= cb["completed_ts"] < hi)

            def div(a: float, b: float) -> float | None:
                return a / b if b else None

            sl = div(len(within), base)
            out[(b0, key)] = {
                "received": len(mine), "offered": len(queued), "answered": len(answered),
                "answered_within_threshold": len(within), "service_level_base": base, "service_level": sl,
                "service_level_met": None if sl is None else sl >= target,
                "average_speed_of_answer_s": div(sum(c["wait_s"] for c in answered), len(answered)),
                "abandoned": len(abandoned), "short_abandoned": len(short),
                "abandon_rate": div(long_ab, base), "short_abandon_rate": div(len(short), len(queued)),
                "average_time_to_abandon_s": div(sum(c["wait_s"] for c in abandoned), len(abandoned)),
                "longest_wait_s": max((c["wait_s"] for c in queued), default=None),
                "average_handle_time_s": div(sum(c["talk_s"] + c["hold_s"] + c["wrapup_s"] for c in answered),
                                             len(answered)),
                "average_talk_time_s": div(sum(c["talk_s"] for c in answered), len(answered)),
                "average_hold_time_s": div(sum(c["hold_s"] for c in answered), len(answered)),
                "average_wrapup_time_s": div(sum(c["wrapup_s"] for c in answered), len(answered)),
                "answered_percentage": div(100.0 * len(answered), len(queued)),
                "transferred": sum(1 for c in answered if c["transferred"]),
                "transfer_rate": div(sum(1 for c in answered if c["transferred"]), len(answered)),
                "queue_placement_rate": div(len(queued), len(mine)),
                "blocked": sum(1 for c in mine if c["disposition"] in blocked_set),
                "blocked_rate": div(sum(1 for c in mine if c["disposition"] in blocked_set), len(mine)),
                "ring_no_answer_count": rna,
                "repeat_calls": sum(1 for c in with_number if is_repeat_id(c["call_id"])),
                "repeat_caller_rate": div(sum(1 for c in with_number if is_repeat_id(c["call_id"])),
                                          len(with_number)),
                "survey_count": len(surveyed),
                "survey_average_score": div(sum(c["survey_score"] for c in surveyed), len(surveyed)),
                "callbacks_requested": cbreq, "callbacks_completed": cbdone,
                "voicemails": sum(1 for c in mine if c["disposition"] == "voicemail"),
                "staffed_s": staffed, "occupancy": div(handling, available), "utilisation": div(handling, staffed),
                "calls_per_agent_hour": div(len(answered) * 3600.0, staffed),
            }
    return out
