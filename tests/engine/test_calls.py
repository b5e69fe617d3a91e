"""Unit tests of the call model and the call path's pure helpers (no sockets)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.callpath import aor_user, contact_destination, music_on_hold_frames, sdp_payload_types
from engine.routing import number_matches
from engine.calls import CALL_TRANSITIONS, Call, CallState, CallTrigger, IllegalTransition
from sip.location import Binding
from sip.sdp import SessionDescription


def make_call(**kw):
    return Call("c-1", "default", "+4917000001", "+4930555100", "carrier", "+4930555100", queue="sales", **kw)


def test_happy_transitions_and_illegal_ones_raise():
    call = make_call()
    for trig, state in [(CallTrigger.QUEUE, CallState.QUEUED), (CallTrigger.OFFER, CallState.OFFERING),
                        (CallTrigger.REQUEUE, CallState.QUEUED), (CallTrigger.OFFER, CallState.OFFERING),
                        (CallTrigger.ANSWER, CallState.TALKING), (CallTrigger.END, CallState.ENDED)]:
        assert call.fire(trig) is state
    with pytest.raises(IllegalTransition):
        make_call().fire(CallTrigger.ANSWER)
    # every state can end; ENDED is absorbing
    for state in CallState:
        assert CALL_TRANSITIONS[state][CallTrigger.END] is CallState.ENDED


def test_ivr_dequeue_goes_back_to_routing():
    call = make_call()
    call.fire(CallTrigger.QUEUE)
    assert call.fire(CallTrigger.DEQUEUE) is CallState.ROUTING
    assert call.fire(CallTrigger.QUEUE) is CallState.QUEUED
    # while an agent is being offered the call (phone ringing): the offer is withdrawn (campaign drop)
    assert call.fire(CallTrigger.OFFER) is CallState.OFFERING
    assert call.fire(CallTrigger.DEQUEUE) is CallState.ROUTING


def test_cdr_row_times_and_data():
    call = make_call(start_ts=100.0, queued_ts=101.0, answered_ts=111.5, end_ts=171.5, agent="1001")
    call.data["crm"] = {"ticket": "T-1"}
    call.variables["department"] = "1"
    row = call.cdr_row()
    assert row["wait_s"] == 10.5 and row["talk_s"] == 60.0 and row["queue"] == "sales"
    assert json.loads(row["data"]) == {"attached": {"crm": {"ticket": "T-1"}}, "variables": {"department": "1"}}
    abandoned = make_call(start_ts=100.0, queued_ts=101.0, end_ts=131.0)
    assert abandoned.cdr_row()["wait_s"] == 30.0 and abandoned.cdr_row()["talk_s"] == 0.0


@pytest.mark.parametrize("pattern,number,ok", [
    ("+4930555100", "+4930555100", True), ("+4930555100", "+49305551000", False),
    ("+49*", "+4930555100", True), ("+49*", "+3312345", False), ("*", "", True)])
def test_number_matches(pattern, number, ok):
    assert number_matches(pattern, number) is ok


def test_aor_user():
    assert aor_user("sip:2001@cc.test") == "2001"
    assert aor_user("sip:cc.test") == ""


def test_contact_destination_prefers_contact_on_same_host_else_source():
    same = Binding("sip:2001@127.0.0.1", "sip:2001@127.0.0.1:5099", 0.0, "x", 1, ("127.0.0.1", 40000))
    assert contact_destination(same) == ("127.0.0.1", 5099)
    natted = Binding("sip:2001@cc.test", "sip:2001@192.168.1.20:5060", 0.0, "x", 1, ("203.0.113.7", 61000))
    assert contact_destination(natted) == ("203.0.113.7", 61000)


def test_sdp_payload_types_keeps_offer_order_and_dynamic_names():
    sd = SessionDescription.parse(
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\n")
    pmap = sdp_payload_types(sd)
    assert list(pmap.entries) == [8, 0, 96]
    assert pmap.encoding(96).lower() == "telephone-event"


def test_music_on_hold_is_quiet_and_not_silent():
    x = music_on_hold_frames(1.0)
    assert x.dtype == np.int16 and len(x) == 8000
    assert 500 < np.sqrt(np.mean(x.astype(float) ** 2)) < 3000
