"""Agent talk share and idle share of one campaign, per interval and agent (pure, plus one SQL read).

Theory of operation
-------------------
The call path writes one ``agent_state_log`` row at every agent state
change: at ``ts`` the agent *enters* ``state`` (for ``reserved``, ``busy``
and ``wrapup`` with the ``call_id`` of the call; an outbound campaign call
keeps the dialer's call id, ``ob-TENANT-NAME-...``, on the agent), and the
row closes the span ``[ts - duration_s, ts)`` spent in ``previous_state``.
:func:`agent_spans` rebuilds each agent's spans ``[start, end)`` with
their state and call from consecutive rows (row *i* opens a span that row
*i + 1* closes; the agent's last row is open until ``until``; before the
agent's first row the ``previous_state`` span of that row, without a
call).  The reader fetches, per agent, the rows inside the report range
plus the last row before it, so a state entered before ``from_ts`` is
known at ``from_ts``.

Every span is clipped to the report range and *split* at interval
boundaries (agent time is time, like staffed hours in engine/kpi.py).  Per
agent ``a`` and interval ``b``:

* ``logged_in_s``: time in any state but ``logged_out``;
* ``talk_s``: time ``busy`` on a call of this campaign (the call id is
  one of the campaign's ``attempt`` rows in ``campaign_log``);
* ``wrapup_s``: time in ``wrapup`` after a call of this campaign;
* ``idle_s``: time ``ready`` (logged in, free, offered nothing);
* ``other_s = logged_in_s - talk_s - wrapup_s - idle_s``: not ready,
  ringing (``reserved``) and calls that are not the campaign's (inbound,
  other campaigns);
* ``talk_share = (talk_s + wrapup_s) / logged_in_s`` and
  ``idle_share = idle_s / logged_in_s`` (``None`` when the agent was not
  logged in during the interval).

The total of an interval sums the seconds of its agents and divides the
sums (a time-weighted mean, not a mean of shares).  The agents reported
are the campaign's assigned agents (its ``agents`` plus the members of its
``groups`` in the current configuration) and every agent that took one of
its calls in the range.  The module reads no clock: ``until`` (the end of
open spans, normally ``min(to_ts, now)``) is passed in.
"""
from __future__ import annotations

import math
import sqlite3
from typing import Any, Iterable

SHARE_FIELDS = ("logged_in_s", "talk_s", "wrapup_s", "idle_s", "other_s", "talk_share", "idle_share")
_SECONDS = SHARE_FIELDS[:5]

Span = tuple[float, float, str, str]  # start, end, state, call id


def agent_spans(rows: Iterable[dict[str, Any]], until: float) -> dict[str, list[Span]]:
    """Each agent's state spans rebuilt from ``agent_state_log`` ``rows`` (any order; see the docstring)."""
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_agent.setdefault(r["agent"], []).append(r)
    out: dict[str, list[Span]] = {}
    for agent, rs in by_agent.items():
        rs.sort(key=lambda r: (float(r["ts"]), r.get("id") or 0))
        spans: list[Span] = []
        first = rs[0]
        if float(first.get("duration_s") or 0.0) > 0 and first.get("previous_state"):
            spans.append((float(first["ts"]) - float(first["duration_s"]), float(first["ts"]),
                          first["previous_state"], ""))
        for r, nxt in zip(rs, rs[1:] + [None]):
            start = float(r["ts"])
            end = float(nxt["ts"]) if nxt is not None else max(start, until)
            if end > start:
                spans.append((start, end, r["state"], r.get("call_id") or ""))
        out[agent] = spans
    return out


def _empty() -> dict[str, float]:
    return dict.fromkeys(_SECONDS, 0.0)


def _finish(t: dict[str, Any]) -> dict[str, Any]:
    t["other_s"] = max(0.0, t["logged_in_s"] - t["talk_s"] - t["wrapup_s"] - t["idle_s"])
    for k in _SECONDS:
        t[k] = round(t[k], 3)
    li = t["logged_in_s"]
    t["talk_share"] = round((t["talk_s"] + t["wrapup_s"]) / li, 4) if li > 0 else None
    t["idle_share"] = round(t["idle_s"] / li, 4) if li > 0 else None
    return t


def agent_share(rows: Iterable[dict[str, Any]], campaign_calls: set[str], agents: Iterable[str], *,
                from_ts: float, to_ts: float, interval_s: float, until: float) -> list[dict[str, Any]]:
    """Per interval ``{"start_ts", "agents": {agent: figures}, "total": figures}`` (see the module docstring).

    ``rows`` are ``agent_state_log`` rows of the agents (at least those in
    the range and each agent's last one before it); ``campaign_calls`` the
    call ids of the campaign's attempts; ``agents`` the agents to report
    (each appears in every interval, with zeros when absent).
    """
    if interval_s <= 0 or to_ts <= from_ts:
        raise ValueError("need interval_s > 0 and to_ts > from_ts")
    n = max(1, math.ceil((to_ts - from_ts) / interval_s))
    if n > 10000:
        raise ValueError(f"{n} intervals: widen interval_s (at most 10000 intervals)")
    names = sorted(set(agents))
    tallies = [{a: _empty() for a in names} for _ in range(n)]
    end_all = min(to_ts, until)
    for agent, spans in agent_spans(rows, until).items():
        if agent not in tallies[0]:
            continue
        for start, end, state, call_id in spans:
            start, end = max(start, from_ts), min(end, end_all)
            if end <= start or state == "logged_out":
                continue
            keys = ["logged_in_s"]
            if state == "ready":
                keys.append("idle_s")
            elif state == "busy" and call_id in campaign_calls:
                keys.append("talk_s")
            elif state == "wrapup" and call_id in campaign_calls:
                keys.append("wrapup_s")
            i = int((start - from_ts) // interval_s)
            while start < end and i < n:
                cut = min(end, from_ts + (i + 1) * interval_s)
                for k in keys:
                    tallies[i][agent][k] += cut - start
                start, i = cut, i + 1
    out = []
    for i, per in enumerate(tallies):
        total = _empty()
        for t in per.values():
            for k in _SECONDS:
                total[k] += t[k]
        out.append({"start_ts": from_ts + i * interval_s, "end_ts": from_ts + (i + 1) * interval_s,
                    "agents": {a: _finish(t) for a, t in per.items()}, "total": _finish(total)})
    return out


def read_state_rows(conn: sqlite3.Connection, tenant: str, agents: Iterable[str], from_ts: float,
                    to_ts: float) -> list[dict[str, Any]]:
    """``agent_state_log`` rows of ``agents`` in ``[from_ts, to_ts)`` plus each one's last row before."""
    conn.row_factory = sqlite3.Row
    out: list[dict[str, Any]] = []
    for agent in sorted(set(agents)):
        before = conn.execute("SELECT * FROM agent_state_log WHERE tenant = ? AND agent = ? AND ts < ? "
                              "ORDER BY ts DESC, id DESC LIMIT 1", (tenant, agent, from_ts)).fetchone()
        if before is not None:
            out.append(dict(before))
        out += [dict(r) for r in conn.execute(
            "SELECT * FROM agent_state_log WHERE tenant = ? AND agent = ? AND ts >= ? AND ts < ? ORDER BY ts, id",
            (tenant, agent, from_ts, to_ts))]
    return out


__all__ = ["SHARE_FIELDS", "agent_share", "agent_spans", "read_state_rows"]
