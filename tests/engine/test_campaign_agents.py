"""engine/campaign_agents.py: agent talk and idle share per interval, against hand-computed figures and an
independent recomputation (state sampled every second) from raw agent_state_log fixtures; the SQLite read;
the report's CSV and XLSX export."""
from __future__ import annotations

import csv
import io
import random
from typing import Any

import pytest

from engine.campaign_agents import agent_share, read_state_rows
from engine.campaign_report import agent_csv, campaign_report, merge_agent_share, report_csv, report_xlsx
from engine.store import SqliteStore

CAMPAIGN = {"ob-c-1", "ob-c-2", "ob-c-3"}


def srow(ts: float, agent: str, state: str, previous: str, since: float, call_id: str = "") -> dict[str, Any]:
    return {"ts": ts, "tenant": "default", "agent": agent, "state": state, "previous_state": previous,
            "duration_s": ts - since, "call_id": call_id, "reason_code": "", "extension": ""}


def chain(agent: str, start: float, steps: list[tuple[float, str, str]]) -> list[dict[str, Any]]:
    """Rows of an agent logging in at ``start`` and then entering (ts, state, call) in turn."""
    rows = [srow(start, agent, "ready", "logged_out", start - 100.0)]
    prev_ts, prev = start, "ready"
    for ts, state, call in steps:
        rows.append(srow(ts, agent, state, prev, prev_ts, call))
        prev_ts, prev = ts, state
    return rows


# Agent 1001: ready 0-10, reserved 10-12 (campaign call 1), busy 12-40, wrapup 40-50, ready 50-70,
# busy on an inbound call 70-80, wrapup 80-85, not_ready 85-90, logged out at 90.
A1 = chain("1001", 0, [(10, "reserved", "ob-c-1"), (12, "busy", "ob-c-1"), (40, "wrapup", "ob-c-1"),
                       (50, "ready", ""), (70, "reserved", "in-9"), (71, "busy", "in-9"),
                       (80, "wrapup", "in-9"), (85, "not_ready", ""), (90, "logged_out", "")])
# Agent 1002 logs in at 30: ready 30-45, busy 45-75 (campaign call 2), wrapup 75-78, ready until the end.
A2 = chain("1002", 30, [(45, "busy", "ob-c-2"), (75, "wrapup", "ob-c-2"), (78, "ready", "")])


def test_hand_computed_shares() -> None:
    first, second = agent_share(A1 + A2, CAMPAIGN, ["1001", "1002", "1003"], from_ts=0, to_ts=100,
                                interval_s=50, until=1000)
    a1 = first["agents"]["1001"]
    assert (a1["logged_in_s"], a1["talk_s"], a1["wrapup_s"], a1["idle_s"], a1["other_s"]) == (50, 28, 10, 10, 2)
    assert a1["talk_share"] == 0.76 and a1["idle_share"] == 0.2
    a2 = first["agents"]["1002"]
    assert (a2["logged_in_s"], a2["talk_s"], a2["idle_s"]) == (20, 5, 15)
    assert first["total"]["logged_in_s"] == 70 and first["total"]["talk_share"] == round((28 + 10 + 5) / 70, 4)
    b1, b2 = second["agents"]["1001"], second["agents"]["1002"]
    # 1001: ready 50-70 (20), ringing + inbound call + its wrap-up + not ready (20): not the campaign's.
    assert (b1["logged_in_s"], b1["talk_s"], b1["wrapup_s"], b1["idle_s"], b1["other_s"]) == (40, 0, 0, 20, 20)
    # 1002: busy 50-75, wrapup 75-78, ready 78-100.
    assert (b2["logged_in_s"], b2["talk_s"], b2["wrapup_s"], b2["idle_s"]) == (50, 25, 3, 22)
    assert second["total"]["idle_share"] == round(42 / 90, 4)
    never = second["agents"]["1003"]
    assert never["logged_in_s"] == 0 and never["talk_share"] is None and never["idle_share"] is None


def test_open_span_ends_at_until_and_history_before_the_range() -> None:
    # The report starts at 20, inside 1001's campaign call: the last row before (busy at 12) opens it.
    (b,) = agent_share(A1 + A2, CAMPAIGN, ["1002"], from_ts=20, to_ts=200, interval_s=180, until=90)
    a2 = b["agents"]["1002"]
    assert a2["logged_in_s"] == 60 and a2["idle_s"] == 15 + 12       # ready 78 → until 90
    (c,) = agent_share(A1, CAMPAIGN, ["1001"], from_ts=20, to_ts=45, interval_s=25, until=1000)
    assert c["agents"]["1001"]["talk_s"] == 20 and c["agents"]["1001"]["wrapup_s"] == 5


def sampled(rows: list[dict[str, Any]], calls: set[str], agent: str, t0: int, t1: int,
            until: float) -> dict[str, float]:
    """Independent recomputation: the agent's state at every second t + 0.5 (latest row at or before it)."""
    mine = sorted((r for r in rows if r["agent"] == agent), key=lambda r: r["ts"])
    out = {"logged_in_s": 0.0, "talk_s": 0.0, "wrapup_s": 0.0, "idle_s": 0.0}
    for t in range(t0, t1):
        m = t + 0.5
        if m >= until:
            break
        before = [r for r in mine if r["ts"] <= m]
        if before:
            state, call = before[-1]["state"], before[-1]["call_id"]
        else:
            nxt = next((r for r in mine if r["ts"] - r["duration_s"] <= m), None)
            if nxt is None:
                continue
            state, call = nxt["previous_state"], ""
        if state == "logged_out":
            continue
        out["logged_in_s"] += 1
        if state == "ready":
            out["idle_s"] += 1
        elif state == "busy" and call in calls:
            out["talk_s"] += 1
        elif state == "wrapup" and call in calls:
            out["wrapup_s"] += 1
    return out


def random_day(rng: random.Random, agent: str) -> list[dict[str, Any]]:
    t = rng.randint(0, 40)
    steps: list[tuple[float, str, str]] = []
    n = 0
    while t < 1000:
        t += rng.randint(1, 30)
        kind = rng.random()
        if kind < 0.5:
            n += 1
            call = f"ob-c-{rng.randint(1, 3)}" if rng.random() < 0.7 else f"in-{n}"
            steps += [(t, "reserved", call), (t + rng.randint(1, 5), "busy", call)]
            t = int(steps[-1][0]) + rng.randint(5, 60)
            steps.append((t, "wrapup", call))
            t += rng.randint(1, 20)
            steps.append((t, "ready", ""))
        elif kind < 0.7:
            steps.append((t, "not_ready", ""))
            t += rng.randint(1, 40)
            steps.append((t, "ready", ""))
        elif kind < 0.8:
            steps.append((t, "logged_out", ""))
            t += rng.randint(1, 60)
            steps.append((t, "ready", ""))
    return chain(agent, steps[0][0] - 5 if steps else 0, steps)


@pytest.mark.parametrize("seed", range(6))
def test_random_days_match_the_sampled_recomputation(seed: int) -> None:
    rng = random.Random(seed)
    agents = ["1001", "1002", "1003"]
    rows = [r for a in agents for r in random_day(rng, a)]
    rng.shuffle(rows)
    from_ts, to_ts, step, until = rng.randint(0, 100), rng.randint(700, 1300), rng.choice([60, 97, 300]), 1100
    buckets = agent_share(rows, CAMPAIGN, agents, from_ts=from_ts, to_ts=to_ts, interval_s=step, until=until)
    for b in buckets:
        t0, t1 = int(b["start_ts"]), int(min(b["end_ts"], to_ts))
        totals = dict.fromkeys(("logged_in_s", "talk_s", "wrapup_s", "idle_s"), 0.0)
        for a in agents:
            want = sampled(rows, CAMPAIGN, a, t0, t1, until)
            got = b["agents"][a]
            assert {k: got[k] for k in want} == want, (seed, a, b["start_ts"])
            for k in totals:
                totals[k] += want[k]
        li = totals["logged_in_s"]
        assert b["total"]["talk_share"] == (round((totals["talk_s"] + totals["wrapup_s"]) / li, 4) if li else None)
        assert b["total"]["idle_share"] == (round(totals["idle_s"] / li, 4) if li else None)


def test_read_state_rows_from_sqlite_and_export(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    for r in A1 + A2 + [srow(5, "2001", "ready", "logged_out", 0) | {"tenant": "acme"}]:
        store.append("agent_state_log", r)
    store.flush()
    import sqlite3
    conn = sqlite3.connect(str(tmp_path / "s.db"))
    try:
        rows = read_state_rows(conn, "default", ["1001", "1002", "2001"], 45, 100)
    finally:
        conn.close()
    store.close()
    # 1001: the row at 40 (wrapup) opens the range; 1002: the row at 30 (login), then 45, 75, 78.
    assert [(r["agent"], r["ts"]) for r in rows] == [("1001", 40), ("1001", 50), ("1001", 70), ("1001", 71),
                                                     ("1001", 80), ("1001", 85), ("1001", 90), ("1002", 30),
                                                     ("1002", 45), ("1002", 75), ("1002", 78)]
    log = [{"ts": 46, "event": "attempt", "call_id": "ob-c-2"}, {"ts": 45, "event": "connected", "agent": "1002"}]
    buckets = campaign_report(log, from_ts=45, to_ts=100, interval_s=55)
    merge_agent_share(buckets, agent_share(rows, {"ob-c-2"}, ["1001", "1002"], from_ts=45, to_ts=100,
                                           interval_s=55, until=100))
    (b,) = buckets
    assert b["agent_time"]["talk_s"] == 30 and b["agent_time"]["wrapup_s"] == 3   # 1001's wrap-up: call 1
    text = report_csv(buckets)
    (line,) = csv.DictReader(io.StringIO(text))
    assert line["attempts"] == "1" and line["agent_talk_s"] == "30.0" and float(line["talk_share"]) == pytest.approx(
        (30 + 3) / (45 + 55), abs=1e-4)
    per = list(csv.DictReader(io.StringIO(agent_csv(buckets))))
    assert [(p["agent"], p["talk_s"], p["idle_s"]) for p in per] == [("1001", "0.0", "20.0"), ("1002", "30.0", "22.0")]
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.load_workbook(io.BytesIO(report_xlsx(buckets)))
    assert wb.sheetnames == ["intervals", "agents"]
    sheet = list(wb["agents"].values)
    assert sheet[0][:3] == ("start_ts", "end_ts", "agent") and [r[2] for r in sheet[1:]] == ["1001", "1002"]
