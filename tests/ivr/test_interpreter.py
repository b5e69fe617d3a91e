"""The interpreter through its sans-IO interface: events in, actions asserted."""
from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

import pytest

from ivr import actions as A
from ivr import events as E
from ivr.errors import IvrStateError
from ivr_helpers import Call, of

MENU = """
[flow]
start = "welcome"

[nodes.welcome]
type = "play"
prompts = ["welcome"]
next = "main"

[nodes.main]
type = "menu"
prompts = ["main_menu"]
invalid_prompts = ["invalid"]
timeout_prompts = ["no_input"]
retries = 3
timeout_s = 4
variable = "department"
choices = { "1" = "sales", "2" = "support" }
on_invalid = "too_many_invalid"
on_failure = "bye"

[nodes.sales]
type = "menu"
prompts = ["sales_menu"]
choices = { "1" = "bye", "9" = "main" }
on_failure = "bye"

[nodes.support]
type = "hangup"
reason = "support"

[nodes.too_many_invalid]
type = "hangup"
prompts = ["invalid"]
reason = "invalid"

[nodes.bye]
type = "hangup"
prompts = ["goodbye"]
"""
PROMPTS = ["welcome", "main_menu", "invalid", "no_input", "sales_menu", "goodbye"]


@pytest.fixture
def menu_call(flow_from):
    return Call(flow_from(MENU, PROMPTS))


def test_play_then_menu_choice(menu_call):
    c = menu_call
    out = c.start()
    play = of(out, A.PlayPrompts)[0]
    assert [i.kind for i in play.items] == ["file"] and play.items[0].value.endswith("en/welcome.wav")
    assert play.barge_in is False and c.node == "welcome"
    out = c.finish_prompt()
    assert c.node == "main" and c.played() == ["main_menu"] and c.play.barge_in
    assert "input" not in c.timers  # the timeout starts after the prompt
    c.finish_prompt()
    assert c.timers["input"].deadline == pytest.approx(c.now + 4)
    out = c.dtmf("2")
    assert A.SetCallData("department", "2") in out
    assert of(out, A.CancelTimer) and c.timers == {}
    assert out[-2:] == [A.HangUp("support"), A.FlowFinished("hangup", "support")]
    assert c.ivr.call_data["department"] == "2" and c.ivr.finished


def test_menu_invalid_then_valid(menu_call):
    c = menu_call
    c.start(); c.finish_prompt(); c.finish_prompt()
    c.dtmf("7")
    assert c.played() == ["invalid", "main_menu"] and c.node == "main"
    c.finish_prompt()
    c.dtmf("1")
    assert c.node == "sales" and c.played() == ["sales_menu"]


def test_menu_invalid_retries_exhausted_goes_on_invalid(menu_call):
    c = menu_call
    c.start(); c.finish_prompt(); c.finish_prompt()
    c.dtmf("7"); c.finish_prompt()
    c.dtmf("8"); c.finish_prompt()
    c.dtmf("9")
    assert c.node == "too_many_invalid" and c.played() == ["invalid"]
    out = c.finish_prompt()
    assert out[-1] == A.FlowFinished("hangup", "too_many_invalid")


def test_menu_timeouts_exhausted_go_on_failure(menu_call):
    c = menu_call
    c.start(); c.finish_prompt(); c.finish_prompt()
    c.fire("input")
    assert c.played() == ["no_input", "main_menu"]
    c.finish_prompt(); c.fire("input")
    c.finish_prompt(); c.fire("input")
    assert c.node == "bye" and c.played() == ["goodbye"]


def test_barge_in_digit_stops_menu_prompt(menu_call):
    c = menu_call
    c.start(); c.finish_prompt()
    menu_play = c.play.play_id
    out = c.dtmf("1")
    assert out[0] == A.StopPlayback(menu_play)
    assert c.node == "sales"
    # the late PromptFinished for the stopped prompt is ignored
    assert c.send(E.PromptFinished(menu_play)) == []
    assert c.node == "sales" and c.play is not None


def test_type_ahead_through_welcome_and_two_menus(menu_call):
    c = menu_call
    c.start()
    assert c.dtmf("11") == []          # welcome is not barge-in: digits are buffered
    out = c.finish_prompt()
    # main consumed "1", sales consumed "1" → bye, without playing either menu prompt
    assert c.node == "bye" and c.played() == ["goodbye"]
    assert not [p for p in of(out, A.PlayPrompts) if "menu" in p.items[0].value]


def test_type_ahead_cleared_after_invalid(menu_call):
    c = menu_call
    c.start()
    c.dtmf("71")
    c.finish_prompt()
    # "7" was invalid: re-prompt, and the buffered "1" is dropped
    assert c.node == "main" and c.played() == ["invalid", "main_menu"]


def test_non_barge_in_menu_buffers_until_prompt_ends(flow_from):
    flow = flow_from("""
[flow]
start = "m"
[nodes.m]
type = "menu"
prompts = [{tts = "Legal notice, then press 1"}]
barge_in = false
choices = { "1" = "end" }
on_failure = "end"
[nodes.end]
type = "hangup"
""")
    c = Call(flow)
    c.start()
    assert c.play.barge_in is False and c.play.items[0].kind == "tts"
    assert c.dtmf("1") == []
    out = c.finish_prompt()
    assert out[-1] == A.FlowFinished("hangup", "end")


def test_barge_in_play_node_skips_to_next_menu(flow_from):
    flow = flow_from("""
[flow]
start = "intro"
[nodes.intro]
type = "play"
prompts = ["welcome"]
barge_in = true
next = "m"
[nodes.m]
type = "menu"
prompts = ["main_menu"]
choices = { "3" = "end" }
on_failure = "end"
[nodes.end]
type = "hangup"
""", ["welcome", "main_menu"])
    c = Call(flow)
    c.start()
    intro = c.play.play_id
    out = c.dtmf("3")
    assert out[0] == A.StopPlayback(intro) and out[-1] == A.FlowFinished("hangup", "end")


COLLECT = """
[flow]
start = "account"
[nodes.account]
type = "collect"
prompts = [{tts = "Enter your account number"}]
variable = "account"
min_digits = 4
max_digits = 8
pattern = "[1-9][0-9]*"
first_digit_timeout_s = 6
inter_digit_timeout_s = 2
retries = 2
invalid_prompts = [{tts = "That number is not valid."}]
timeout_prompts = [{tts = "I did not hear you."}]
next = "done"
on_failure = "failed"
[nodes.done]
type = "hangup"
reason = "ok"
[nodes.failed]
type = "hangup"
reason = "failed"
"""


def test_collect_with_terminator(flow_from):
    c = Call(flow_from(COLLECT))
    c.start()
    out = c.dtmf("1")
    assert of(out, A.StopPlayback)        # barge-in
    assert c.timers["input"].deadline == pytest.approx(c.now + 2)
    out = c.dtmf("234#")
    assert A.SetCallData("account", "1234") in out
    assert out[-1] == A.FlowFinished("hangup", "done")


def test_collect_max_digits_ends_entry(flow_from):
    c = Call(flow_from(COLLECT))
    c.start(); c.finish_prompt()
    assert c.timers["input"].deadline == pytest.approx(c.now + 6)
    out = c.dtmf("12345678")
    assert c.ivr.variables["account"] == "12345678" and out[-1].node == "done"


def test_collect_inter_digit_timeout_completes_when_min_reached(flow_from):
    c = Call(flow_from(COLLECT))
    c.start(); c.finish_prompt()
    c.dtmf("98765")
    out = c.fire("input")
    assert c.ivr.variables["account"] == "98765" and out[-1].node == "done"


def test_collect_too_short_and_pattern_mismatch_then_failure(flow_from):
    c = Call(flow_from(COLLECT))
    c.start(); c.finish_prompt()
    c.dtmf("12#")                            # shorter than min_digits
    assert c.played() == ["That number is not valid.", "Enter your account number"]
    c.finish_prompt()
    out = c.dtmf("0123#")                    # pattern forbids a leading 0
    assert "account" not in c.ivr.variables
    assert out[-1] == A.FlowFinished("hangup", "failed")


def test_collect_first_digit_timeout_retry(flow_from):
    c = Call(flow_from(COLLECT))
    c.start(); c.finish_prompt()
    c.fire("input")
    assert c.played() == ["I did not hear you.", "Enter your account number"]
    c.finish_prompt()
    c.dtmf("12")
    c.fire("input")                           # 2 digits < min 4: invalid, last attempt
    assert c.ivr.finished and c.log[-1] == A.FlowFinished("hangup", "failed")


def test_set_and_branch_on_expressions_and_caller(flow_from):
    flow = flow_from("""
[flow]
start = "init"
[nodes.init]
type = "set"
variables = { greeting = "Hello {caller_number}", count = "= count + 1", vip_level = 3 }
next = "route"
[nodes.route]
type = "branch"
default = "normal"
[[nodes.route.rules]]
caller_in = ["0600000000"]
next = "blocked"
[[nodes.route.rules]]
caller_prefix = ["+3361", "0611"]
if = "vip_level >= 3 and count == 1"
next = "vip"
[nodes.blocked]
type = "hangup"
reason = "blocked"
[nodes.vip]
type = "hangup"
reason = "vip"
[nodes.normal]
type = "hangup"
reason = "normal"
""")
    c = Call(flow)
    out = c.start(caller="0611223344")
    assert A.SetCallData("greeting", "Hello 0611223344") in out
    assert c.ivr.variables["count"] == 1
    assert out[-2] == A.HangUp("vip")
    c2 = Call(flow)
    assert c2.start(caller="0600000000")[-2] == A.HangUp("blocked")
    c3 = Call(flow)
    assert c3.start(caller="0700000000")[-2] == A.HangUp("normal")


HOURS = """
[flow]
start = "hours"
timezone = "Europe/Paris"
holidays = ["12-25", "2026-08-01..2026-08-15"]
[nodes.hours]
type = "branch"
default = "closed"
[[nodes.hours.rules]]
holiday = true
next = "holiday"
[[nodes.hours.rules]]
days = ["mon-fri"]
time = "08:00-18:00"
next = "open"
[[nodes.hours.rules]]
time = "22:00-06:00"
next = "night"
[nodes.open]
type = "hangup"
reason = "open"
[nodes.closed]
type = "hangup"
reason = "closed"
[nodes.night]
type = "hangup"
reason = "night"
[nodes.holiday]
type = "hangup"
reason = "holiday"
"""


@pytest.mark.parametrize("local, expected", [
    ("2026-11-23 08:00", "open"),      # Monday, first minute open
    ("2026-11-23 17:59", "open"),
    ("2026-11-23 18:00", "closed"),    # end is exclusive
    ("2026-11-28 10:00", "closed"),    # Saturday
    ("2026-11-28 23:30", "night"),     # wraps past midnight
    ("2026-11-24 05:59", "night"),
    ("2026-12-25 10:00", "holiday"),   # yearly date (a Friday)
    ("2026-08-10 10:00", "holiday"),   # inside the range
    ("2026-07-01 09:00", "open"),      # summer time (UTC+2) handled
])
def test_time_day_holiday_routing_in_centre_zone(flow_from, local, expected):
    flow = flow_from(HOURS)
    wall = dt.datetime.strptime(local, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    c = Call(flow)
    assert c.start(wall=wall)[-2] == A.HangUp(expected)


def test_branch_time_follows_the_clock_during_the_call(flow_from):
    flow = flow_from(HOURS.replace('start = "hours"', 'start = "wait"') + """
[nodes.wait]
type = "play"
prompts = [{tts = "one moment"}]
next = "hours"
""")
    wall = dt.datetime(2026, 11, 23, 17, 59, 30, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    c = Call(flow)
    c.start(wall=wall)
    c.now += 60                                # the prompt lasted a minute: now 18:00:30
    assert c.finish_prompt()[-2] == A.HangUp("closed")


LOOKUP = """
[flow]
start = "acct"
[nodes.acct]
type = "collect"
prompts = [{tts = "Account?"}]
variable = "account"
max_digits = 4
next = "find"
on_failure = "bye"
[nodes.find]
type = "lookup"
table = "accounts"
column = "account"
key = "{account}"
into = "acct"
timeout_s = 3
found = "say"
not_found = "unknown"
on_error = "sorry"
[nodes.say]
type = "play"
prompts = [{tts = "Your balance is"}, {say_number = "{acct_balance}"}, {say_date = "{acct_due}"}]
next = "bye"
[nodes.unknown]
type = "hangup"
reason = "unknown"
[nodes.sorry]
type = "hangup"
reason = "error"
[nodes.bye]
type = "hangup"
"""


def test_lookup_found_speaks_result(flow_from):
    c = Call(flow_from(LOOKUP))
    c.start()
    out = c.dtmf("4242")
    req = of(out, A.RequestLookup)[0]
    assert (req.source, req.table, req.column, req.key, req.tenant) == ("store", "accounts", "account", "4242", "default")
    assert c.dtmf("9") == []                   # type-ahead during the lookup is kept, not acted on
    out = c.send(E.LookupCompleted(req.request_id, {"balance": "125", "due": "2026-12-01"}))
    assert A.SetCallData("acct_balance", "125") in out and c.node == "say"
    assert c.played() == ["Your balance is", "125", "December 1, 2026"]
    assert c.play.items[1].kind == "number" and c.play.items[2].kind == "date"


def test_lookup_miss_error_and_timeout(flow_from):
    flow = flow_from(LOOKUP)
    c = Call(flow); c.start(); req = of(c.dtmf("1111"), A.RequestLookup)[0]
    assert c.send(E.LookupCompleted(req.request_id, None))[-2] == A.HangUp("unknown")
    c = Call(flow); c.start(); req = of(c.dtmf("1111"), A.RequestLookup)[0]
    assert c.send(E.LookupCompleted(req.request_id, None, "database locked"))[-2] == A.HangUp("error")
    c = Call(flow); c.start(); req = of(c.dtmf("1111"), A.RequestLookup)[0]
    assert c.fire("lookup")[-2] == A.HangUp("error")
    # the late answer is ignored
    assert c.send(E.LookupCompleted(req.request_id, {"balance": "1"})) == []


QUEUE = """
[flow]
start = "q"
[nodes.q]
type = "queue"
queue = "sales"
priority = 5
skills = ["french"]
music_on_hold = "jazz"
announce_interval_s = 30
max_wait_s = 300
announce_agent = true
exits = { "1" = "cb", "2" = "vm" }
on_timeout = "vm"
on_failure = "closed"
[nodes.cb]
type = "callback"
next = "bye"
on_failure = "bye"
[nodes.vm]
type = "voicemail"
mailbox = "sales"
max_length_s = 60
[nodes.closed]
type = "hangup"
reason = "closed"
[nodes.bye]
type = "hangup"
"""


def test_queue_announcements_and_agent_announced_before_bridge(flow_from):
    c = Call(flow_from(QUEUE))
    out = c.start()
    enq = of(out, A.Enqueue)[0]
    assert (enq.queue, enq.priority, enq.music_on_hold, enq.max_wait_s, enq.skills) == ("sales", 5, "jazz", 300.0, ("french",))
    c.send(E.QueueUpdated(enq.request_id, position=3, expected_wait_s=130))
    c.fire("announce")
    assert c.played() == ["You are number 3 in the queue. The expected wait is 3 minutes."]
    out = c.finish_prompt()
    assert A.ResumeMusic("jazz") in out and "announce" in c.timers
    out = c.send(E.QueueAgentReady(enq.request_id, "1004"))
    assert A.SetCallData("agent_number", "1004") in out and c.timers == {}
    assert c.played() == ["You are connected to agent", "1 0 0 4"]
    out = c.finish_prompt()
    assert out[0] == A.BridgeAgent(enq.request_id, "1004") and out[-1] == A.FlowFinished("agent", "q")


def test_queue_max_wait_goes_to_voicemail(flow_from):
    c = Call(flow_from(QUEUE))
    enq = of(c.start(), A.Enqueue)[0]
    out = c.fire("max_wait")
    assert A.Dequeue(enq.request_id, "max_wait") in out and c.node == "vm"
    c.finish_prompt()                          # greeting
    rec = of(c.log, A.RecordVoicemail)[0]
    assert (rec.mailbox, rec.max_length_s, rec.beep) == ("sales", 60.0, True)
    out = c.send(E.RecordingFinished(rec.request_id, 12.5, "/var/vm/1.wav"))
    assert A.SetCallData("voicemail_path", "/var/vm/1.wav") in out
    assert out[-2:] == [A.HangUp("voicemail"), A.FlowFinished("voicemail", "vm")]
    # a result for the old queue request is stale
    assert c.send(E.QueueAgentReady(enq.request_id, "1001")) == []


def test_queue_left_and_exit_key(flow_from):
    flow = flow_from(QUEUE)
    c = Call(flow); enq = of(c.start(), A.Enqueue)[0]
    assert c.send(E.QueueLeft(enq.request_id, "no_agents"))[-2] == A.HangUp("closed")
    c = Call(flow); enq = of(c.start(), A.Enqueue)[0]
    out = c.dtmf("1")
    assert A.Dequeue(enq.request_id, "caller_exit") in out and c.node == "cb"


def test_callback_confirm_caller_number(flow_from):
    c = Call(flow_from(QUEUE))
    c.start(caller="0611223344"); c.dtmf("1")
    assert c.played() == ["We will call you back at", "0 6 1 1 2 2 3 3 4 4",
                          "Press 1 to confirm, or 2 to enter another number."]
    out = c.dtmf("1")
    assert A.RequestCallback("0611223344", "sales", True) in out
    assert c.ivr.call_data["callback_requested"] is True


def test_callback_enter_another_number_read_back(flow_from):
    c = Call(flow_from(QUEUE))
    c.start(); c.dtmf("1"); c.dtmf("2")
    assert c.played() == ["Please enter your phone number, then press hash."]
    c.dtmf("123")
    c.dtmf("#")                               # too short (min 6): asked again
    assert c.played() == ["Please enter your phone number, then press hash."]
    c.dtmf("0712345678#")
    assert c.played()[1] == "0 7 1 2 3 4 5 6 7 8"
    out = c.dtmf("1")
    assert A.RequestCallback("0712345678", "sales", True) in out


def test_callback_never_confirmed(flow_from):
    c = Call(flow_from(QUEUE))
    c.start(); c.dtmf("1")
    c.finish_prompt(); c.fire("input")
    c.finish_prompt(); c.fire("input")
    c.finish_prompt()
    out = c.fire("input")
    assert not of(c.log, A.RequestCallback) and out[-1] == A.FlowFinished("hangup", "bye")


TRANSFER = """
[flow]
start = "duty"
[nodes.duty]
type = "transfer"
numbers = "0611111111$0622222222$+33633333333"
prompts = [{tts = "Transferring you to the duty officer"}]
timeout_s = 15
on_failure = "vm"
[nodes.vm]
type = "voicemail"
mailbox = "duty"
prompts = []
next = "bye"
[nodes.bye]
type = "hangup"
"""


def test_transfer_numbers_in_order_second_answers(flow_from):
    c = Call(flow_from(TRANSFER))
    c.start()
    out = c.finish_prompt()
    t1 = of(out, A.AttemptTransfer)[0]
    assert (t1.kind, t1.target, t1.timeout_s, t1.attempt) == ("number", "0611111111", 15.0, 1)
    out = c.send(E.TransferCompleted(t1.request_id, False, "busy"))
    t2 = of(out, A.AttemptTransfer)[0]
    assert (t2.target, t2.attempt) == ("0622222222", 2)
    out = c.send(E.TransferCompleted(t2.request_id, True))
    assert out[-1] == A.FlowFinished("transferred", "duty")
    assert c.ivr.call_data["transfer_target"] == "0622222222"


def test_transfer_all_numbers_failed_falls_back(flow_from):
    c = Call(flow_from(TRANSFER))
    c.start(); c.finish_prompt()
    for _ in range(2):
        t = of(c.log, A.AttemptTransfer)[-1]
        c.send(E.TransferCompleted(t.request_id, False, "no_answer"))
    c.fire("transfer")                         # engine never answered the third: guard timer
    assert c.ivr.call_data["transfer_result"] == "failed"
    rec = of(c.log, A.RecordVoicemail)[0]      # empty greeting: records at once
    assert rec.mailbox == "duty"
    out = c.send(E.RecordingFinished(rec.request_id, 3.0))
    assert out[-1] == A.FlowFinished("hangup", "bye")


def test_transfer_to_agent_announced(flow_from):
    flow = flow_from("""
[flow]
start = "t"
[nodes.t]
type = "transfer"
agent = "{preferred}"
announce_agent = true
on_failure = "bye"
[nodes.bye]
type = "hangup"
""")
    c = Call(flow)
    c.ivr.variables["preferred"] = "1002"
    c.start()
    assert c.played() == ["You are connected to agent", "1 0 0 2"]
    t = of(c.finish_prompt(), A.AttemptTransfer)[0]
    assert (t.kind, t.target) == ("agent", "1002")


SURVEY = """
[flow]
start = "q1"
[nodes.q1]
type = "survey"
survey = "satisfaction"
question = "overall"
prompts = [{tts = "Rate us from 1 to 5"}]
digits = "12345"
retries = 2
invalid_prompts = [{tts = "Please press 1 to 5"}]
next = "thanks"
on_failure = "bye"
[nodes.thanks]
type = "hangup"
prompts = [{tts = "Thank you"}]
reason = "survey_done"
[nodes.bye]
type = "hangup"
"""


def test_survey_answer_stored_with_agent(flow_from):
    c = Call(flow_from(SURVEY))
    c.ivr.variables["agent_number"] = "1003"
    c.start()
    c.dtmf("9")
    assert c.played() == ["Please press 1 to 5", "Rate us from 1 to 5"]
    out = c.dtmf("4")
    assert A.StoreSurveyResult("satisfaction", "overall", "4", "1003") in out
    assert c.ivr.call_data["survey_overall"] == "4"


def test_survey_no_answer(flow_from):
    c = Call(flow_from(SURVEY))
    c.start(); c.finish_prompt(); c.fire("input"); c.finish_prompt()
    out = c.fire("input")
    assert not of(c.log, A.StoreSurveyResult) and out[-1] == A.FlowFinished("hangup", "bye")


LANG = """
[flow]
start = "choose"
languages = ["en", "fr"]
fallback_language = "en"
[nodes.choose]
type = "menu"
prompts = ["choose_language"]
choices = { "1" = "english", "2" = "french" }
on_failure = "main"
[nodes.english]
type = "language"
language = "en"
next = "main"
[nodes.french]
type = "language"
language = "fr"
next = "main"
[nodes.main]
type = "play"
prompts = ["main_menu", "only_english", {tts = "Bonjour"}]
next = "bye"
[nodes.bye]
type = "hangup"
"""


def test_language_switch_applies_to_later_prompts_with_fallback(flow_from, tmp_path):
    from ivr_helpers import write_wav
    write_wav(tmp_path / "prompts" / "en" / "only_english.wav")
    flow = flow_from(LANG, ["choose_language", "main_menu"], languages=["en", "fr"])
    assert [str(w).split(": ", 1)[1] for w in flow.warnings] == [
        "node 'main' (play): prompt 'only_english' missing for language 'fr'; callers hear the 'en' file"]
    c = Call(flow)
    c.start()
    out = c.dtmf("2")
    assert A.SetLanguage("fr") in out and A.SetCallData("language", "fr") in out
    items = c.play.items
    assert items[0].value.endswith("fr/main_menu.wav") and items[0].language == "fr"
    assert items[1].value.endswith("en/only_english.wav") and items[1].language == "en"
    assert items[2] == A.PromptItem("tts", "Bonjour", "fr", "Bonjour")


def test_hangup_mid_prompt_stops_everything(menu_call):
    c = menu_call
    c.start(); c.finish_prompt()
    play = c.play.play_id
    out = c.send(E.CallHungUp())
    assert out == [A.StopPlayback(play), A.FlowFinished("caller_hangup", "main")]
    assert c.ivr.finished and c.send(E.DtmfReceived("1")) == [] and c.send(E.CallHungUp()) == []


def test_hangup_in_queue_dequeues_and_cancels_timers(flow_from):
    c = Call(flow_from(QUEUE))
    enq = of(c.start(), A.Enqueue)[0]
    out = c.send(E.CallHungUp())
    assert A.Dequeue(enq.request_id, "caller_hangup") in out
    assert len(of(out, A.CancelTimer)) == 2 and out[-1].reason == "caller_hangup"


def test_illegal_driving_raises_and_stale_events_are_ignored(menu_call):
    c = menu_call
    with pytest.raises(IvrStateError, match="DtmfReceived before CallStarted"):
        c.send(E.DtmfReceived("1"))
    c.start()
    assert c.send(E.TimerFired(999)) == []
    assert c.send(E.LookupCompleted(999, None)) == []
    with pytest.raises(IvrStateError, match="CallStarted is not expected in phase playing"):
        c.start()
    with pytest.raises(ValueError, match="not a DTMF digit"):
        E.DtmfReceived("x")


def test_every_log_line_names_the_call(flow_from, caplog):
    caplog.set_level(logging.DEBUG, logger="ivr.interpreter")
    c = Call(flow_from(MENU, PROMPTS))          # created after the level is set: step logs on
    c.start(); c.finish_prompt(); c.dtmf("2")
    lines = [r.getMessage() for r in caplog.records if r.name == "ivr.interpreter"]
    assert lines and all(line.startswith("[call-1] ") for line in lines)
    assert "[call-1] node main (menu)" in lines
    assert "[call-1] menu main: caller chose 2" in lines
    assert "[call-1] flow flow finished: hangup at node support" in lines


def test_call_data_attached_from_outside(menu_call):
    c = menu_call
    c.start()
    c.send(E.CallDataAttached({"crm_id": "C-77"}))
    assert c.ivr.call_data["crm_id"] == "C-77" and c.ivr.call_data["caller_number"] == "0611223344"


def test_hangup_while_recording_counts_as_voicemail(flow_from):
    c = Call(flow_from(QUEUE))
    c.start()
    c.fire("max_wait")
    c.finish_prompt()
    assert of(c.log, A.RecordVoicemail)
    out = c.send(E.CallHungUp())
    assert of(out, A.CancelTimer) and out[-1] == A.FlowFinished("voicemail", "vm")


def test_transition_table_is_complete_and_points_at_handlers():
    from ivr.interpreter import TRANSITIONS, Interpreter, Phase
    assert set(TRANSITIONS) == set(Phase)
    for phase, table in TRANSITIONS.items():
        for event_type, method in table.items():
            assert issubclass(event_type, E.Event)
            assert callable(getattr(Interpreter, method)), (phase, method)
    assert TRANSITIONS[Phase.FINISHED] == {}
    # every answer event is handled somewhere
    handled = {t for table in TRANSITIONS.values() for t in table}
    assert handled >= {E.CallStarted, E.PromptFinished, E.TimerFired, E.LookupCompleted, E.QueueUpdated,
                       E.QueueAgentReady, E.QueueLeft, E.TransferCompleted, E.RecordingFinished}


def test_every_node_type_has_an_entry_method():
    from ivr.interpreter import Interpreter
    from ivr.nodes import SCHEMAS
    for node_type in SCHEMAS:
        assert callable(getattr(Interpreter, f"_enter_{node_type}"))


def test_prompt_files_removed_after_load_are_skipped_and_loops_guarded(flow_from, tmp_path, caplog):
    flow = flow_from("""
[flow]
start = "a"
[nodes.a]
type = "play"
prompts = ["welcome"]
next = "b"
[nodes.b]
type = "play"
prompts = ["welcome"]
next = "a"
""", ["welcome"])
    flow.catalog._files.clear()                 # as if the files were deleted after loading
    c = Call(flow)
    out = c.start()
    assert out[-2:] == [A.HangUp("flow_loop"), A.FlowFinished("flow_loop", "b")]
    assert "prompt 'welcome' has no file for en or en; skipped" in caplog.text
