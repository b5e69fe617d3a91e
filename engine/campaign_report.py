"""Campaign reports per interval, computed from ``campaign_log`` rows (pure).

Each interval ``[start, start + interval_s)`` counts, from the log events:

* ``attempts``: ``attempt`` rows (calls placed);
* ``answered``: results answered by a person (``answered``) plus ``dropped``;
  ``machines``: results ``machine``;
* ``connects``: ``connected`` rows (answered calls bridged to an agent);
* ``connect_rate``: connects / attempts;
* ``dropped`` and ``drop_rate``: dropped / (connects + dropped), the
  regulators' abandoned-call rate over answered live calls;
* ``outcomes``: every result outcome (busy, no_answer, invalid_number,
  congestion, interrupted ...); ``amd``: detector verdicts; ``blocked``:
  numbers refused by do-not-call screening; ``dispositions``: agents'
  dispositions; ``talk_s``: agents' talk seconds of the ``ended`` rows;
  ``mean_wait_s``: answer-to-agent time of the connects;
* ``confirmed`` / ``not_confirmed``: notification calls whose callee
  pressed the campaign's ``confirm_digit`` / did not (``confirmed`` and
  ``not_confirmed`` rows, counted in the interval of the key or the end);
* ``agent_time`` (all agents) and ``agents`` (per agent): logged-in, talk,
  wrap-up, idle and other seconds, ``talk_share`` and ``idle_share`` from
  the ``agent_state_log`` (:mod:`engine.campaign_agents` defines them),
  merged in by :func:`merge_agent_share`.

Export: :func:`report_csv` (one line per interval), :func:`agent_csv`
(one line per interval and agent) and :func:`report_xlsx` (both as
sheets ``intervals`` and ``agents``, written like CDR exports by
:func:`engine.cdr_query.write_xlsx`).
"""
from __future__ import annotations

import io
import json
import math
from collections import Counter
from typing import Any, Iterable

from engine.campaign_agents import SHARE_FIELDS
from engine.cdr_query import write_csv, write_xlsx


def _data(row: dict[str, Any]) -> dict[str, Any]:
    d = row.get("data") or {}
    return json.loads(d) if isinstance(d, str) else d


def campaign_report(rows: Iterable[dict[str, Any]], *, from_ts: float, to_ts: float,
                    interval_s: float) -> list[dict[str, Any]]:
    """Per-interval figures for log ``rows`` with ``from_ts <= ts < to_ts`` (empty intervals included)."""
    if interval_s <= 0 or to_ts <= from_ts:
        raise ValueError("need interval_s > 0 and to_ts > from_ts")
    n = max(1, math.ceil((to_ts - from_ts) / interval_s))
    if n > 10000:
        raise ValueError(f"{n} intervals: widen interval_s (at most 10000 intervals)")
    buckets = [_empty(from_ts + i * interval_s, interval_s) for i in range(n)]
    waits: list[list[float]] = [[] for _ in range(n)]
    for row in rows:
        ts = float(row["ts"])
        if not from_ts <= ts < to_ts:
            continue
        i = int((ts - from_ts) // interval_s)
        b = buckets[i]
        event = row["event"]
        if event == "attempt":
            b["attempts"] += 1
        elif event == "result":
            outcome = row.get("outcome", "")
            b["outcomes"][outcome] += 1
            if row.get("amd"):
                b["amd"][row["amd"]] += 1
            if outcome in ("answered", "dropped"):
                b["answered"] += 1
            if outcome == "dropped":
                b["dropped"] += 1
            if outcome == "machine":
                b["machines"] += 1
        elif event == "connected":
            b["connects"] += 1
            if row.get("wait_s") is not None:
                waits[i].append(float(row["wait_s"]))
        elif event == "blocked":
            b["blocked"] += 1
        elif event == "disposition":
            b["dispositions"][_data(row).get("disposition", "")] += 1
        elif event == "ended":
            b["talk_s"] += float(row.get("talk_s") or 0.0)
        elif event in ("confirmed", "not_confirmed"):
            b[event] += 1
    for b, w in zip(buckets, waits):
        b["connect_rate"] = round(b["connects"] / b["attempts"], 4) if b["attempts"] else 0.0
        live = b["connects"] + b["dropped"]
        b["drop_rate"] = round(b["dropped"] / live, 4) if live else 0.0
        b["mean_wait_s"] = round(sum(w) / len(w), 3) if w else 0.0
        b["talk_s"] = round(b["talk_s"], 3)
        for key in ("outcomes", "amd", "dispositions"):
            b[key] = dict(sorted(b[key].items()))
    return buckets


def _empty(start: float, interval_s: float) -> dict[str, Any]:
    return {"start_ts": start, "end_ts": start + interval_s, "attempts": 0, "answered": 0, "connects": 0,
            "dropped": 0, "machines": 0, "blocked": 0, "confirmed": 0, "not_confirmed": 0, "talk_s": 0.0, "outcomes": Counter(), "amd": Counter(),
            "dispositions": Counter()}


INTERVAL_COLUMNS = ("start_ts", "end_ts", "attempts", "answered", "connects", "connect_rate", "dropped",
                    "drop_rate", "machines", "blocked", "talk_s", "mean_wait_s", "outcomes", "amd", "dispositions",
                    "confirmed", "not_confirmed")
AGENT_TIME_COLUMNS = tuple(f"agent_{k}" if k.endswith("_s") else k for k in SHARE_FIELDS)
AGENT_COLUMNS = ("start_ts", "end_ts", "agent") + SHARE_FIELDS


def merge_agent_share(buckets: list[dict[str, Any]], shares: list[dict[str, Any]]) -> None:
    """Add ``agent_time`` and ``agents`` of :func:`engine.campaign_agents.agent_share` (same intervals)."""
    if len(buckets) != len(shares):
        raise ValueError(f"{len(buckets)} report intervals but {len(shares)} agent-share intervals")
    for b, sh in zip(buckets, shares):
        b["agent_time"] = sh["total"]
        b["agents"] = sh["agents"]


def interval_rows(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per interval (counters as ``key=n;...``; agent totals as ``agent_*`` columns)."""
    out = []
    for b in buckets:
        row = {c: (";".join(f"{k}={n}" for k, n in b[c].items()) if isinstance(b[c], dict) else b[c])
               for c in INTERVAL_COLUMNS}
        total = b.get("agent_time") or {}
        row.update({col: total.get(k) for col, k in zip(AGENT_TIME_COLUMNS, SHARE_FIELDS)})
        out.append(row)
    return out


def agent_rows(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per interval and agent."""
    return [{"start_ts": b["start_ts"], "end_ts": b["end_ts"], "agent": agent, **fig}
            for b in buckets for agent, fig in (b.get("agents") or {}).items()]


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    write_csv(({k: ("" if v is None else v) for k, v in r.items()} for r in rows), buf, columns)
    return buf.getvalue()


def report_csv(buckets: list[dict[str, Any]]) -> str:
    """The report as CSV (RFC 4180, one line per interval), for export like CDRs."""
    return _csv(interval_rows(buckets), INTERVAL_COLUMNS + AGENT_TIME_COLUMNS)


def agent_csv(buckets: list[dict[str, Any]]) -> str:
    """Per-agent talk and idle figures as CSV (one line per interval and agent)."""
    return _csv(agent_rows(buckets), AGENT_COLUMNS)


def report_xlsx(buckets: list[dict[str, Any]]) -> bytes:
    """The report as an XLSX workbook: sheets ``intervals`` and ``agents``."""
    bio = io.BytesIO()
    write_xlsx([("intervals", INTERVAL_COLUMNS + AGENT_TIME_COLUMNS, interval_rows(buckets)),
                ("agents", AGENT_COLUMNS, agent_rows(buckets))], bio)
    return bio.getvalue()


__all__ = ["AGENT_COLUMNS", "AGENT_TIME_COLUMNS", "INTERVAL_COLUMNS", "agent_csv", "agent_rows", "campaign_report",
           "interval_rows", "merge_agent_share", "report_csv", "report_xlsx"]
