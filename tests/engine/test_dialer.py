"""engine/dialer.py: the per-campaign dialer core, driven with a fake clock."""
from __future__ import annotations

import pytest

from engine.campaign import CampaignBook, CampaignTrigger, RecordState
from engine.config import Campaign, CampaignRetry
from engine.dialer import (AgentCounts, CampaignCompleted, ConnectAgent, DialerCore, Hangup, PersistRows, PlaceCall,
                           PlayMessage, PreviewOffered, RunFlow, StartAmd)
from engine.errors import Conflict


def core(numbers: int = 3, **kw: object) -> DialerCore:
    defaults: dict[str, object] = dict(name="c", groups=("sales",),
                                       retries=(CampaignRetry(outcome="busy", delay_s=60),), max_attempts=2)
    defaults.update(kw)
    book = CampaignBook(Campaign(**defaults))  # type: ignore[arg-type]
    book.import_csv("number,name\n" + "".join(f"+4930{100 + i},n{i}\n" for i in range(numbers)), 0.0)
    book.transition(CampaignTrigger.START, 0.0)
    return DialerCore(book)


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def log_events(actions: list) -> list[tuple[str, str]]:
    return [(r["event"], r.get("outcome", "")) for a in of(actions, PersistRows) for r in a.rows]


def test_progressive_one_call_per_idle_agent_and_retry() -> None:
    d = core()
    acts = d.tick(0.0, AgentCounts(idle=2, busy=0))
    calls = of(acts, PlaceCall)
    assert [c.number for c in calls] == ["+4930100", "+4930101"]
    assert calls[0].attempt_row["event"] == "attempt" and calls[0].fields == {"name": "n0"}
    assert of(d.tick(1.0, AgentCounts(idle=2, busy=0)), PlaceCall) == []  # both agents covered
    assert log_events(d.call_failed(calls[0].call_id, "busy", 3.0, status=486)) == [("result", "busy")]
    assert [c.number for c in of(d.tick(3.0, AgentCounts(idle=2, busy=0)), PlaceCall)] == ["+4930102"]
    assert d.next_wakeup(3.0) == 63.0  # the busy retry
    acts = d.call_answered(calls[1].call_id, 5.0)
    (conn,) = of(acts, ConnectAgent)
    assert conn.deadline == 7.0 and conn.screen_pop["record"]["fields"] == {"name": "n1"}
    acts = d.agent_connected(calls[1].call_id, "1001", 5.5)
    assert log_events(acts) == [("result", "answered"), ("connected", "")]
    assert d.connect_timeout(calls[1].call_id, 7.0) == []  # connected in time: no drop
    acts = d.call_ended(calls[1].call_id, 65.5, wrapup_s=5.0)
    assert log_events(acts) == [("ended", "")] and of(acts, PersistRows)[0].rows[0]["talk_s"] == 60.0
    assert d.pacer.mean_handle_s == 65.0
    assert d.book.records["r2"].state is RecordState.DONE


def test_answered_without_agent_in_time_is_dropped_with_message() -> None:
    d = core(mode="predictive", drop_message="tts:Sorry, we will call again.")
    (call, *_), = [of(d.tick(0.0, AgentCounts(idle=1, busy=0)), PlaceCall)]
    d.call_answered(call.call_id, 4.0)
    acts = d.connect_timeout(call.call_id, 6.0)
    assert log_events(acts) == [("result", "dropped")]
    assert of(acts, PlayMessage) == [PlayMessage(call.call_id, "tts:Sorry, we will call again.", hangup=True)]
    assert d.pacer.dropped_total == 1 and d.pacer.window_drop_rate == 1.0
    with pytest.raises(Conflict):
        d.agent_connected(call.call_id, "1001", 6.5)  # too late
    assert log_events(d.call_ended(call.call_id, 9.0)) == [("ended", "")]


def test_amd_machine_and_person() -> None:
    d = core(amd=True, machine_action="hangup", retries=(CampaignRetry(outcome="machine", delay_s=600),))
    a, b = of(d.tick(0.0, AgentCounts(idle=2, busy=0)), PlaceCall)
    assert of(d.call_answered(a.call_id, 3.0), StartAmd) == [StartAmd(a.call_id)]
    acts = d.amd_result(a.call_id, "machine", 5.0, {"reason": "long_greeting"})
    assert log_events(acts) == [("result", "machine")] and of(acts, Hangup) == [Hangup(a.call_id, "answering_machine")]
    assert of(acts, PersistRows)[0].rows[0]["amd"] == "machine"
    assert d.book.records["r1"].state is RecordState.WAITING and d.book.records["r1"].next_ts == 605.0
    d.call_answered(b.call_id, 3.0)
    assert of(d.amd_result(b.call_id, "human", 4.5), ConnectAgent)[0].deadline == 6.5


def test_notification_and_survey_are_agentless() -> None:
    d = core(mode="notification", groups=(), message="tts:Hello {name}, your order shipped. Press 1.",
             confirm_digit="1", max_channels=2)
    calls = of(d.tick(0.0, AgentCounts(idle=0, busy=0)), PlaceCall)
    assert len(calls) == 2  # channels, not agents
    acts = d.call_answered(calls[0].call_id, 2.0)
    assert log_events(acts) == [("result", "answered")]
    assert of(acts, PlayMessage) == [PlayMessage(calls[0].call_id, "tts:Hello n0, your order shipped. Press 1.",
                                                 hangup=True, confirm_digit="1", confirm_timeout_s=5.0)]
    s = core(mode="survey", groups=(), flow="nps", max_channels=1)
    (call,) = of(s.tick(0.0, AgentCounts(0, 0)), PlaceCall)
    assert of(s.call_answered(call.call_id, 1.0), RunFlow) == [RunFlow(call.call_id, "nps", {"name": "n0"})]


def test_notification_confirm_digit_confirmed_or_not() -> None:
    d = core(mode="notification", groups=(), message="tts:Your parcel comes at {name}. Press 1.",
             confirm_digit="1", confirm_timeout_s=2.0, max_channels=3)
    a, b, c = of(d.tick(0.0, AgentCounts(idle=0, busy=0)), PlaceCall)
    for call in (a, b, c):
        d.call_answered(call.call_id, 1.0)
    # A wrong key is ignored; the confirm digit writes "confirmed" and releases the call at once.
    assert d.dtmf(a.call_id, "5", 2.0) == []
    acts = d.dtmf(a.call_id, "1", 3.0)
    assert log_events(acts) == [("confirmed", "confirmed")] and of(acts, Hangup) == [Hangup(a.call_id, "confirmed")]
    row = of(acts, PersistRows)[0].rows[0]
    assert row["data"] == {"digit": "1", "after_s": 2.0} and row["number"] == "+4930100"
    assert d.dtmf(a.call_id, "1", 3.1) == []  # once only
    assert log_events(d.call_ended(a.call_id, 3.2, reason="confirmed")) == [("ended", "")]
    # The message ran out (port timer) or the callee hung up: "not_confirmed", with the reason.
    acts = d.call_ended(b.call_id, 9.0, reason="not_confirmed")
    assert log_events(acts) == [("not_confirmed", "not_confirmed"), ("ended", "")]
    assert log_events(d.call_ended(c.call_id, 4.0, reason="remote_bye"))[0] == ("not_confirmed", "not_confirmed")
    # Without a confirm digit nobody listens for keys and nothing is logged about confirmation.
    n = core(mode="notification", groups=(), message="tts:Hi", max_channels=1)
    (call,) = of(n.tick(0.0, AgentCounts(0, 0)), PlaceCall)
    (play,) = of(n.call_answered(call.call_id, 1.0), PlayMessage)
    assert play.confirm_digit == "" and n.dtmf(call.call_id, "1", 2.0) == []
    assert log_events(n.call_ended(call.call_id, 3.0)) == [("ended", "")]
    with pytest.raises(Conflict):
        n.dtmf(call.call_id, "1", 4.0)  # no longer live


def test_preview_accept_skip_and_expiry() -> None:
    d = core(mode="preview", preview_timeout_s=30)
    assert of(d.tick(0.0, AgentCounts(idle=3, busy=0)), PlaceCall) == []  # preview never auto-dials
    (offer,) = of(d.preview_next("1001", 0.0), PreviewOffered)
    assert offer.record["number"] == "+4930100" and offer.expires == 30.0
    with pytest.raises(Conflict, match="already holds"):
        d.preview_next("1001", 1.0)
    (offer2,) = of(d.preview_next("1002", 1.0), PreviewOffered)
    assert offer2.record["number"] == "+4930101"  # the held record is not shown twice
    with pytest.raises(Conflict, match="not held for agent 1002"):
        d.preview_accept(offer.record["record_id"], "1002", 2.0)
    (call,) = of(d.preview_accept(offer.record["record_id"], "1001", 2.0), PlaceCall)
    assert call.agent == "1001" and call.attempt_row["agent"] == "1001"
    assert of(d.call_answered(call.call_id, 5.0), ConnectAgent)[0].agent == "1001"
    assert log_events(d.preview_skip(offer2.record["record_id"], "1002", 3.0)) == [("skipped", "")]
    (offer3,) = of(d.preview_next("1002", 4.0), PreviewOffered)
    d.tick(40.0, AgentCounts(idle=1, busy=1))  # 1002 let it expire
    assert offer3.record["record_id"] not in d.preview_held
    assert of(d.preview_next("1003", 41.0), PreviewOffered)[0].record["record_id"] == offer3.record["record_id"]


def test_dnc_screen_and_completion() -> None:
    d = core(numbers=2)
    d.screen = lambda t, c, n: "dnc" if n == "+4930100" else None  # type: ignore[method-assign]
    acts = d.tick(0.0, AgentCounts(idle=5, busy=0))
    assert log_events(acts) == [("blocked", "blocked")] and len(of(acts, PlaceCall)) == 1
    (call,) = of(acts, PlaceCall)
    d.call_failed(call.call_id, "invalid_number", 1.0, status=404)
    (done,) = of(d.tick(2.0, AgentCounts(idle=5, busy=0)), CampaignCompleted)
    assert done.row["state"] == "completed"


def test_hangup_while_waiting_for_agent_counts_as_drop() -> None:
    d = core(mode="predictive")
    (call, *_), = [of(d.tick(0.0, AgentCounts(idle=1, busy=0)), PlaceCall)]
    d.call_answered(call.call_id, 2.0)
    assert log_events(d.call_ended(call.call_id, 2.5, reason="bye_received")) == [("result", "dropped"),
                                                                                  ("ended", "")]
    assert d.pacer.dropped_total == 1
