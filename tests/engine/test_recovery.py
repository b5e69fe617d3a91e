"""engine/recovery.py on real SQLite files: interrupted calls get an engine_restart
CDR, completed CDRs are untouched, agents are logged out, and it is idempotent."""
from __future__ import annotations

import sqlite3

from engine.recovery import END_REASON, recover
from engine.store import SqliteStore


def journal(call_id: str, start: float, tenant: str = "default") -> dict:
    return {"call_id": call_id, "tenant": tenant, "caller_number": "+491701", "dialed_number": "+4930555100",
            "trunk": "carrier", "route": "+4930555100", "queue": "sales", "start_ts": start}


def test_recover_closes_calls_and_agent_sessions(tmp_path):
    path = str(tmp_path / "cc.db")
    store = SqliteStore(path, batch_interval_ms=5)
    for cid, start in (("done", 100.0), ("talking", 200.0), ("queued", 300.0)):
        store.append("call_journal", journal(cid, start, "acme" if cid == "queued" else "default"))
    store.append("cdr", {"call_id": "done", "start_ts": 100.0, "end_ts": 150.0, "end_reason": "caller_hangup",
                         "disposition": "answered", "talk_s": 40.0})
    store.append("queue_log", {"ts": 201.0, "call_id": "talking", "queue": "sales", "event": "enter"})
    store.append("queue_log", {"ts": 300.5, "tenant": "acme", "call_id": "queued", "queue": "sales", "event": "enter"})
    for ts, agent, state, call in ((50.0, "1001", "not_ready", ""), (60.0, "1001", "ready", ""),
                                   (205.0, "1001", "busy", "talking"), (70.0, "1002", "ready", ""),
                                   (80.0, "1002", "logged_out", ""), (90.0, "1003", "wrapup", "")):
        store.append("agent_state_log", {"ts": ts, "agent": agent, "state": state, "call_id": call,
                                         "extension": "2" + agent[1:]})
    store.flush(5)
    store.close()

    report = recover(path)
    assert report.integrity == "ok"
    assert report.calls == ["talking", "queued"]
    assert sorted(report.agents) == ["default/1001", "default/1003"]
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    cdrs = {r["call_id"]: dict(r) for r in db.execute("SELECT * FROM cdr")}
    assert cdrs["done"]["end_reason"] == "caller_hangup" and cdrs["done"]["talk_s"] == 40.0  # untouched
    t = cdrs["talking"]
    assert (t["end_reason"], t["disposition"], t["agent"], t["start_ts"], t["end_ts"]) == \
        (END_REASON, "interrupted", "1001", 200.0, 205.0)
    q = cdrs["queued"]
    assert (q["tenant"], q["agent"], q["end_ts"], q["queue"], q["trunk"]) == ("acme", "", 300.5, "sales", "carrier")
    out = db.execute("SELECT agent, previous_state, reason_code FROM agent_state_log WHERE state = 'logged_out'"
                     " AND reason_code = ? ORDER BY agent", (END_REASON,)).fetchall()
    assert [tuple(r) for r in out] == [("1001", "busy", END_REASON), ("1003", "wrapup", END_REASON)]
    assert db.execute("SELECT COUNT(*) FROM call_journal").fetchone()[0] == 0
    db.close()

    again = recover(path)  # idempotent: nothing left to close
    assert again.calls == [] and again.agents == []
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM cdr").fetchone()[0] == 3


def test_recover_on_a_clean_store_finds_nothing(tmp_path):
    path = str(tmp_path / "clean.db")
    SqliteStore(path).close()
    report = recover(path)
    assert (report.calls, report.agents, report.integrity) == ([], [], "ok")


def test_outbound_journal_rows_recover_as_outbound(tmp_path):
    """A click-to-dial or campaign call journalled as outbound gets an outbound engine_restart CDR."""
    from engine.calls import Call
    from engine.recovery import journal_row

    path = str(tmp_path / "out.db")
    store = SqliteStore(path, batch_interval_ms=5)
    call = Call("dial-1", "acme", "+4930999", "+4940123", "carrier", "", direction="outbound")
    row = journal_row(call)
    assert row["direction"] == "outbound" and row["dialed_number"] == "+4940123"
    store.append("call_journal", row)
    store.flush(5)
    store.close()
    assert recover(path).calls == ["dial-1"]
    got = sqlite3.connect(path).execute("SELECT tenant, direction, dialed_number, end_reason FROM cdr").fetchall()
    assert got == [("acme", "outbound", "+4940123", END_REASON)]
