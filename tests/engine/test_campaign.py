"""engine/campaign.py: CSV import, calling hours in the callee's zone, retries, DNC, replay."""
from __future__ import annotations

import datetime
import json
import zoneinfo

import pytest

from engine.campaign import (CAMPAIGN_TRANSITIONS, CampaignBook, CampaignError, CampaignState, CampaignTrigger,
                             DncList, RecordState, in_calling_hours, next_window_start, normalise_number,
                             render_message, zone_for)
from engine.config import Campaign, CampaignRetry, TimeRule, parse_config
from engine.errors import ConfigError, Conflict
from engine.store import SqliteStore
from foundation_helpers import AGENT_HASH

RETRIES = (CampaignRetry(outcome="busy", delay_s=300), CampaignRetry(outcome="no_answer", delay_s=3600),
           CampaignRetry(outcome="machine", delay_s=7200, max_attempts=2))


def ts(text: str, zone: str = "UTC") -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=zoneinfo.ZoneInfo(zone)).timestamp()


def book(**kw: object) -> CampaignBook:
    defaults: dict[str, object] = dict(name="c1", groups=("sales",), retries=RETRIES, max_attempts=3)
    defaults.update(kw)
    return CampaignBook(Campaign(**defaults))  # type: ignore[arg-type]


CSV = """number,name,balance,time_zone
+49 30 1234-567,Anna,120.50,
(030) 555 01,Bob,7,America/New_York
+4930123456 7,dup,0,
bad-number,Eve,1,
+33123456789,Zoe,3,Mars/Olympus
"""


def test_import_csv_normalises_rejects_and_keeps_fields() -> None:
    b = book(time_zone="Europe/Berlin")
    res = b.import_csv(CSV, now=1000.0, batch="b1")
    assert res.imported == 2
    assert [line for line, _ in res.rejected] == [4, 5, 6]
    assert "duplicate number +49301234567" in res.rejected[0][1]
    assert "not a phone number 'bad-number'" in res.rejected[1][1]
    assert "unknown time zone 'Mars/Olympus'" in res.rejected[2][1]
    r1, r2 = b.records.values()
    assert r1.number == "+49301234567" and r1.fields == {"name": "Anna", "balance": "120.50"}
    assert r1.time_zone == "Europe/Berlin" and r2.time_zone == "America/New_York"
    assert res.rows[0]["fields"] == {"name": "Anna", "balance": "120.50"} and res.rows[0]["batch"] == "b1"


def test_import_needs_number_column_and_rejects_ragged_rows() -> None:
    with pytest.raises(CampaignError, match="no 'number' column"):
        book().import_csv("phone,name\n123,x\n", 0.0)
    res = book().import_csv("number,name\n12345,a,extra\n", 0.0)
    assert res.imported == 0 and "more values than header" in res.rejected[0][1]


def test_numbers_and_prefix_zones() -> None:
    assert normalise_number("0049 (30) 12.34/5") == "+493012345"
    with pytest.raises(CampaignError):
        normalise_number("12")
    zones = {"+1212*": "America/New_York", "+1*": "America/Chicago", "+49": "Europe/Berlin"}
    assert zone_for("+12125550000", "", zones, "UTC") == "America/New_York"
    assert zone_for("+13125550000", "", zones, "UTC") == "America/Chicago"
    assert zone_for("+4930", "", zones, "UTC") == "Europe/Berlin"
    assert zone_for("+4930", "Asia/Tokyo", zones, "UTC") == "Asia/Tokyo"
    assert zone_for("+81", "", zones, "UTC") == "UTC"


WEEKDAYS_9_TO_20 = (TimeRule(days=("mon", "tue", "wed", "thu", "fri"), start="09:00", end="20:00"),)


def test_calling_hours_follow_the_callee_zone_and_dst() -> None:
    # Monday 2026-03-09 13:30 UTC = 09:30 in New York (EDT since 8 March), 14:30 in Berlin.
    now = ts("2026-03-09T13:30:00")
    assert in_calling_hours(now, "America/New_York", WEEKDAYS_9_TO_20)
    # One week earlier New York was still on EST: 08:30, closed.
    assert not in_calling_hours(now - 7 * 86400, "America/New_York", WEEKDAYS_9_TO_20)
    assert not in_calling_hours(ts("2026-03-09T19:30:00"), "Europe/Berlin", WEEKDAYS_9_TO_20)  # 20:30
    assert not in_calling_hours(now, "Europe/Berlin", WEEKDAYS_9_TO_20, holidays=("2026-03-09",))
    # Saturday: the next window is Monday 09:00 local.
    sat = ts("2026-03-14T12:00:00", "Europe/Berlin")
    assert next_window_start(sat, "Europe/Berlin", WEEKDAYS_9_TO_20) == ts("2026-03-16T09:00:00", "Europe/Berlin")
    assert next_window_start(now, "America/New_York", WEEKDAYS_9_TO_20) == now
    assert next_window_start(now, "UTC", (TimeRule(days=("sun",), start="09:00", end="10:00"),),
                             holidays=tuple((datetime.date(2026, 3, 9) + datetime.timedelta(days=d)).isoformat()
                                            for d in range(20))) is None


def test_due_respects_hours_order_and_state() -> None:
    b = book(calling_hours=WEEKDAYS_9_TO_20)
    b.import_csv("number,time_zone\n+12125550001,America/New_York\n+4930111,Europe/Berlin\n+4930222,\n", 0.0)
    now = ts("2026-03-09T13:30:00")  # NY 09:30, Berlin 14:30, UTC 13:30
    assert b.due(now, 10) == ([], [])  # not running
    b.transition(CampaignTrigger.START, now)
    due, rows = b.due(now, 10)
    assert [r.number for r in due] == ["+12125550001", "+4930111", "+4930222"] and rows == []
    due, _ = b.due(ts("2026-03-09T12:30:00"), 10)  # NY 08:30: closed there only
    assert [r.number for r in due] == ["+4930111", "+4930222"]
    assert len(b.due(now, 2)[0]) == 2


def test_retry_rules_and_max_attempts() -> None:
    b = book()
    b.import_csv("number\n+4930111\n", 0.0)
    b.transition(CampaignTrigger.START, 0.0)
    (rec,), _ = b.due(0.0, 5)
    row = b.begin_attempt(rec.record_id, "call-1", 10.0)
    assert row["event"] == "attempt" and row["attempt"] == 1 and rec.state is RecordState.DIALING
    assert b.due(10.0, 5)[0] == []  # dialling: not due again
    res = b.finish_attempt("call-1", "busy", 20.0)
    assert res["next_ts"] == 320.0 and rec.state is RecordState.WAITING
    assert b.due(319.0, 5)[0] == [] and b.due(320.0, 5)[0] == [rec]
    assert b.next_wakeup(21.0) == 320.0
    b.begin_attempt(rec.record_id, "call-2", 320.0)
    assert b.finish_attempt("call-2", "no_answer", 350.0)["next_ts"] == 3950.0
    b.begin_attempt(rec.record_id, "call-3", 3950.0)
    assert b.finish_attempt("call-3", "busy", 3960.0)["next_ts"] is None  # 3 attempts = max
    assert rec.state is RecordState.FAILED and b.exhausted()


def test_outcome_rules_machine_limit_and_no_rule_fails() -> None:
    b = book()
    b.import_csv("number\n+4930111\n+4930222\n", 0.0)
    b.transition(CampaignTrigger.START, 0.0)
    b.begin_attempt("r1", "a", 0.0)
    b.finish_attempt("a", "machine", 1.0)
    b.begin_attempt("r1", "b", 7201.0)
    b.finish_attempt("b", "machine", 7202.0)  # machine rule allows 2 attempts
    assert b.records["r1"].state is RecordState.FAILED
    b.begin_attempt("r2", "c", 0.0)
    b.finish_attempt("c", "invalid_number", 1.0)  # no rule: no retry
    assert b.records["r2"].state is RecordState.FAILED
    with pytest.raises(CampaignError, match="unknown call outcome"):
        b.finish_attempt("zzz", "exploded", 1.0)
    with pytest.raises(CampaignError, match="no attempt with call id"):
        b.finish_attempt("zzz", "busy", 1.0)


def test_answered_done_disposition_and_callback() -> None:
    b = book()
    b.import_csv("number\n+4930111\n", 0.0)
    b.transition(CampaignTrigger.START, 0.0)
    b.begin_attempt("r1", "a", 0.0)
    with pytest.raises(Conflict):
        b.disposition("r1", "sale", 1.0)
    b.finish_attempt("a", "answered", 5.0, agent="1001")
    assert b.records["r1"].state is RecordState.DONE and b.exhausted()
    with pytest.raises(CampaignError, match="in the past"):
        b.disposition("r1", "call_back", 10.0, agent="1001", callback_ts=9.0)
    row = b.disposition("r1", "call_back", 10.0, agent="1001", callback_ts=500.0, notes="after lunch")
    assert row["next_ts"] == 500.0 and row["data"] == {"disposition": "call_back", "notes": "after lunch"}
    assert b.due(499.0, 5)[0] == [] and b.due(500.0, 5, agent="1002")[0] == []
    assert b.due(500.0, 5, agent="1001")[0] == [b.records["r1"]]


def test_dnc_screen_blocks_before_dialling() -> None:
    dnc = DncList()
    dnc.apply_rows([{"tenant": "default", "number": "+4930111", "action": "add", "reason": "customer asked"},
                    {"tenant": "default", "number": "+49900*", "action": "add"},
                    {"tenant": "other", "number": "+4930222", "action": "add"},
                    {"tenant": "default", "number": "+4930333", "campaign": "c2", "action": "add"},
                    {"tenant": "default", "number": "+4930444", "action": "add"},
                    {"tenant": "default", "number": "+4930444", "action": "remove"}])
    assert dnc.check("default", "c1", "+4930111") == "customer asked"
    assert dnc.check("default", "c1", "+4990012345") == "dnc"
    assert dnc.check("default", "c1", "+4930222") is None
    assert dnc.check("default", "c1", "+4930333") is None and dnc.check("default", "c2", "+4930333") == "dnc"
    assert dnc.check("default", "c1", "+4930444") is None
    b = book()
    b.import_csv("number\n+4930111\n+4990055\n+4930555\n", 0.0)
    b.transition(CampaignTrigger.START, 0.0)
    extra = {"+4930555": "blacklist"}
    due, rows = b.due(0.0, 10, screen=lambda t, c, n: dnc.check(t, c, n) or extra.get(n))
    assert due == [] and [r["data"]["reason"] for r in rows] == ["customer asked", "dnc", "blacklist"]
    assert all(r.state is RecordState.BLOCKED for r in b.records.values())


def test_transition_table_walk() -> None:
    b = book()
    for state, table in CAMPAIGN_TRANSITIONS.items():
        for trigger in CampaignTrigger:
            b.state = state
            if trigger in table:
                assert b.transition(trigger, 0.0)["state"] == table[trigger].value
            else:
                with pytest.raises(Conflict, match=f"is {state.value}: cannot {trigger.value}"):
                    b.transition(trigger, 0.0)


def test_replay_from_the_store_never_redials_an_interrupted_attempt(tmp_path) -> None:
    """Kill mid-campaign: the attempt row is on disk before the INVITE; the restart resumes."""
    store = SqliteStore(str(tmp_path / "s.db"))
    b = book()
    res = b.import_csv("number,name\n+4930111,a\n+4930222,b\n+4930333,c\n", 0.0)
    for row in res.rows:
        store.append("campaign_records", row)
    b.transition(CampaignTrigger.START, 0.0)
    for rec in b.due(0.0, 3)[0]:
        store.append("campaign_log", b.begin_attempt(rec.record_id, "call-" + rec.record_id, 1.0))
    store.append("campaign_log", b.finish_attempt("call-r1", "busy", 2.0))
    store.append("campaign_log", b.finish_attempt("call-r2", "answered", 3.0, agent="1001"))
    store.append("campaign_log", b.disposition("r2", "sale", 4.0, agent="1001"))
    store.flush()
    store.close()  # "kill": r3's attempt has no result row

    store = SqliteStore(str(tmp_path / "s.db"))
    again = book()
    rows = again.replay(store.select("campaign_records", {"campaign": "c1"}),
                        store.select("campaign_log", {"campaign": "c1"}), now=100.0)
    assert [(r["record_id"], r["outcome"]) for r in rows] == [("r3", "interrupted")]
    r1, r2, r3 = again.records.values()
    assert (r1.state, r1.attempts, r1.next_ts) == (RecordState.WAITING, 1, 302.0)
    assert (r2.state, r2.disposition) == (RecordState.DONE, "sale") and r2.fields == {"name": "b"}
    assert (r3.state, r3.attempts, r3.last_outcome) == (RecordState.FAILED, 1, "interrupted")
    again.state = CampaignState.RUNNING
    assert again.due(1000.0, 10)[0] == [r1]  # only the busy retry comes back
    for row in rows:
        store.append("campaign_log", row)
    store.flush()
    logged = store.select("campaign_log", {"campaign": "c1", "event": "result"})
    assert [json.loads(r["data"]).get("reason") for r in logged][-1] == "engine stopped during the attempt"
    store.close()


def test_render_message() -> None:
    assert render_message("Hello {name}, you owe {balance} euro. {nope}", {"name": "Anna", "balance": "12"}) \
        == "Hello Anna, you owe 12 euro. {nope}"


BASE = """
[groups.sales]
[agents.1001]
name = "A"
password = "%s"
groups = ["sales"]
""" % AGENT_HASH


def test_config_campaign_section_and_cross_checks() -> None:
    cfg = parse_config(BASE + """
[campaigns.winter]
mode = "predictive"
groups = ["sales"]
caller_number = "+4930999"
prefix_time_zones = { "+1*" = "America/New_York" }
calling_hours = [{ days = ["mon", "tue"], start = "09:00", end = "20:00" }]
retries = [{ outcome = "busy", delay_s = 300 }, { outcome = "no_answer", delay_s = 1800, max_attempts = 5 }]
""")
    c = cfg.campaigns["winter"]
    assert c.mode == "predictive" and c.retries[1].max_attempts == 5 and c.max_drop_rate == 0.03
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + """
[campaigns.bad]
mode = "survey"
groups = ["nobody"]
prefix_time_zones = { "+1*" = "Mars/Base" }
retries = [{ outcome = "bored", delay_s = 1 }]
""")
    text = "\n".join(err.value.lines) if hasattr(err.value, "lines") else str(err.value)
    for needle in ("bored", "unknown group 'nobody'", "Mars/Base", "mode 'survey' needs 'flow'"):
        assert needle in text, text


def test_finished_records_leave_the_scan_and_callbacks_come_back() -> None:
    b = book(retries=())
    b.import_csv("number\n" + "".join(f"+49301{i:04d}\n" for i in range(100)), 0.0)
    b.transition(CampaignTrigger.START, 0.0)
    for rec in b.due(0.0, 60)[0]:
        b.begin_attempt(rec.record_id, "c" + rec.record_id, 1.0)
        b.finish_attempt("c" + rec.record_id, "answered" if rec.record_id == "r1" else "busy", 2.0)
    due, _ = b.due(3.0, 100)
    assert len(due) == 40 and len(b._order) == 40  # compacted: 60 finished records no longer scanned
    assert not b.exhausted() and b.counts()["failed"] == 59
    b.disposition("r1", "call_back", 4.0, agent="1001", callback_ts=10.0)
    assert "r1" in b._order and b.next_wakeup(5.0) == 5.0  # r2.. are due now; r1 at 10
    assert [r.record_id for r in b.due(10.0, 100, agent="1001")[0]][-1] == "r1"
