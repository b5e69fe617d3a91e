"""Agent call control end to end: engine in-process, our own UAs as trunk caller, agents' phones and
external callee, each sending a distinct tone; what each party receives (and the recording) proves who
hears whom before and after every operation.  Real UDP, SIP and RTP on 127.0.0.1."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import wave

import numpy as np
import pytest

from conftest_callctl import (
    AGENT2_HZ, AGENT_HZ, CALLER_HZ, EXTERNAL_HZ, InProcessEngine, Phone, TrunkCaller, goertzel_power, heard_set,
    trunk_section,
)
from conftest_inbound import AGENT_PASSWORDS, DIALED, free_port, next_event_named
from engine.client import ClientError
from sip.events import RequestReceived, ResponseReceived

pytestmark = pytest.mark.interop

EXTERNAL = "+4930555999"


def run(coro, timeout: float = 60.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def rows(tmp_path, sql, *args):
    db = sqlite3.connect(tmp_path / "cc.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


async def expect_error(client, code: str, op: str, **args) -> None:
    with pytest.raises(ClientError) as exc:
        await client.request(op, **args)
    assert exc.value.code == code, (op, exc.value.code, exc.value)


async def hearing(parties: dict, seconds: float = 0.8) -> dict[str, set[str]]:
    """Who each party heard during the last part of a ``seconds`` window."""
    start = time.monotonic()
    await asyncio.sleep(seconds)
    return {name: heard_set(p.hears(start + 0.3)) for name, p in parties.items()}


def recording_channels(tmp_path) -> np.ndarray:
    (rec,) = rows(tmp_path, "SELECT * FROM recordings")
    with wave.open(rec["path"]) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 8000
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)


def tones_in(x: np.ndarray) -> set[str]:
    names = {"caller": CALLER_HZ, "agent": AGENT_HZ, "agent2": AGENT2_HZ, "external": EXTERNAL_HZ}
    return {n for n, hz in names.items() if goertzel_power(x, hz) > 1e5}


class Centre:
    """One engine with agents 1001 (phone 2001, 700 Hz) and 1002 (phone 2002, 1400 Hz), an outbound trunk
    to an external UA (1800 Hz), a trunk caller (1000 Hz) and control clients."""

    def __init__(self, tmp_path, *, external_reject: int | None = None, agent_text: str = "", **engine_kw) -> None:
        self.external = Phone("external", EXTERNAL_HZ, reject=external_reject)
        self.ext_port = free_port()
        self.external.ep.port = self.ext_port
        self.eng = InProcessEngine(tmp_path, extra=trunk_section("out", self.ext_port, caller_number="+4930111"),
                                   **engine_kw)
        # the inbound trunk dials out to the external UA too (never to port 5060)
        self.eng.text = self.eng.text.replace('[trunks.carrier]\nhost = "127.0.0.1"\n',
                                              f'[trunks.carrier]\nhost = "127.0.0.1"\nport = {self.ext_port}\n')
        assert f"port = {self.ext_port}" in self.eng.text
        if agent_text:
            self.eng.text = self.eng.text.replace('name = "Alice"', 'name = "Alice"\n' + agent_text)
        self.phones = {"1001": Phone("2001", AGENT_HZ), "1002": Phone("2002", AGENT2_HZ)}
        self.caller = TrunkCaller(CALLER_HZ)
        self.clients: dict[str, object] = {}

    async def start(self, *, ready=("1001",), login=("1001", "1002")) -> None:
        await self.eng.start()
        await self.external.start()
        self.admin = await self.eng.client()
        await self.admin.subscribe(events=["call.*", "agent.*"])
        for number, user in (("1001", "alice"), ("1002", "bob")):
            c = await self.eng.client(user, AGENT_PASSWORDS[number])
            await c.subscribe(events=["call.*"])
            self.clients[number] = c
            if number in login:
                await c.request("agent.login", password=AGENT_PASSWORDS[number])
                await self.phones[number].start(self.eng.sip_port, AGENT_PASSWORDS[number])
        for number in ready:
            await self.clients[number].request("agent.ready")

    async def inbound(self) -> str:
        """The trunk caller calls in; agent 1001 answers; returns the call id."""
        assert await self.caller.call(self.eng.sip_port, DIALED) == 200
        ev = await next_event_named(self.admin, "call.answered", timeout_s=10)
        return ev["data"]["call_id"]

    async def stop(self) -> None:
        for c in [*self.clients.values(), getattr(self, "admin", None)]:
            if c is not None:
                await c.close()
        for p in [*self.phones.values(), self.external]:
            await p.stop()
        await self.caller.stop()
        await self.eng.stop()

    def parties(self, *names: str) -> dict:
        table = {"caller": self.caller.party, "alice": self.phones["1001"].party,
                 "bob": self.phones["1002"].party, "external": self.external.party}
        return {n: table[n] for n in names}


def test_hold_retrieve_by_op_and_by_phone_with_errors(tmp_path):
    c = Centre(tmp_path)
    marks: dict[str, float] = {}

    async def scenario():
        await c.start()
        alice, bob = c.clients["1001"], c.clients["1002"]
        try:
            call_id = await c.inbound()
            marks["answered"] = time.monotonic()
            who = await hearing(c.parties("caller", "alice"))
            assert who == {"caller": {"agent"}, "alice": {"caller"}}, who
            # errors first: the call stays up through all of them
            await expect_error(alice, "invalid_state", "call.retrieve", call_id=call_id)
            await expect_error(bob, "forbidden", "call.hold", call_id=call_id)
            await expect_error(alice, "not_found", "call.hold", call_id="no-such-call")
            await expect_error(alice, "not_found", "call.transfer", call_id=call_id, target="agent:9999")
            await expect_error(alice, "not_found", "call.transfer", call_id=call_id, target="queue:nope")
            await expect_error(alice, "invalid_args", "call.transfer", call_id=call_id, target="number:abc")
            await expect_error(alice, "invalid_state", "call.transfer_complete", call_id=call_id)
            await expect_error(alice, "invalid_state", "call.conference", call_id=call_id)
            await expect_error(alice, "invalid_state", "call.consult_cancel", call_id=call_id)
            await expect_error(alice, "invalid_args", "call.send_dtmf", call_id=call_id, digits="x")
            # hold by op
            marks["hold"] = time.monotonic()
            res = await alice.request("call.hold", call_id=call_id)
            assert res == {"call_id": call_id, "held": True}
            held = await next_event_named(alice, "call.held")
            assert held["data"]["by"] == "op"
            await expect_error(alice, "invalid_state", "call.hold", call_id=call_id)
            who = await hearing(c.parties("caller", "alice"))
            assert who == {"caller": {"music"}, "alice": set()}, who
            marks["retrieve"] = time.monotonic()
            res = await alice.request("call.retrieve", call_id=call_id)
            assert res["held"] is False and res["hold_s"] >= 0.7
            who = await hearing(c.parties("caller", "alice"))
            assert who == {"caller": {"agent"}, "alice": {"caller"}}, who
            # hold by the phone: re-INVITE sendonly, then sendrecv (RFC 3264 §8.4)
            phone = c.phones["1001"]
            assert await phone.reinvite("sendonly") == 200
            held = await next_event_named(alice, "call.held")
            assert held["data"]["by"] == "phone"
            who = await hearing(c.parties("caller"))
            assert who == {"caller": {"music"}}, who
            assert await phone.reinvite("sendrecv") == 200
            await next_event_named(alice, "call.retrieved")
            who = await hearing(c.parties("caller", "alice"))
            assert who == {"caller": {"agent"}, "alice": {"caller"}}, who
            # DTMF to the caller
            assert (await alice.request("call.send_dtmf", call_id=call_id, digits="7#"))["digits"] == "7#"
            await asyncio.sleep(0.5)
            assert 7 in [e for _, e in c.caller.party.events] and 11 in [e for _, e in c.caller.party.events]
            calls = (await alice.request("call.list"))["calls"]
            assert [x["state"] for x in calls] == ["talking"]
            # blind transfer by op to agent 1002 (ready): music while bob rings, then caller <-> bob
            await bob.request("agent.ready")
            res = await alice.request("call.transfer", call_id=call_id, target="agent:1002")
            assert res == {"call_id": call_id, "result": "ringing", "target": "agent:1002"}
            ev = await next_event_named(bob, "call.transferred")
            assert ev["data"]["kind"] == "blind" and ev["data"]["by"] == "op"
            who = await hearing(c.parties("caller", "bob", "alice"))
            assert who == {"caller": {"agent2"}, "bob": {"caller"}, "alice": set()}, who
            c.caller.ep.bye(c.caller.dialog)
            await next_event_named(c.admin, "call.ended")
            return call_id
        finally:
            await c.stop()

    call_id = run(scenario())
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["call_id"] == call_id and cdr["transferred"] == 1 and cdr["agent"] == "1002"
    assert 1.3 <= cdr["hold_s"] <= cdr["talk_s"], (cdr["hold_s"], cdr["talk_s"])
    events = [(r["event"], json.loads(r["detail"]).get("by")) for r in
              rows(tmp_path, "SELECT * FROM call_events WHERE call_id = ? ORDER BY id", call_id)]
    assert events == [("hold", "op"), ("retrieve", "op"), ("hold", "phone"), ("retrieve", "phone"),
                      ("transfer_blind", "op")]
    x = recording_channels(tmp_path)
    t0 = marks["answered"]

    def seg(a: float, b: float) -> tuple[set[str], set[str]]:
        s = x[int((a - t0) * 8000):int((b - t0) * 8000)]
        return tones_in(s[:, 0]), tones_in(s[:, 1])

    assert seg(t0 + 0.2, t0 + 0.7) == ({"caller"}, {"agent"})
    assert seg(marks["hold"] + 0.3, marks["retrieve"] - 0.1) == ({"caller"}, set())
    assert seg(marks["retrieve"] + 0.3, marks["retrieve"] + 0.7) == ({"caller"}, {"agent"})


def test_consult_conference_complete_then_blind_to_external(tmp_path):
    c = Centre(tmp_path)
    marks: dict[str, float] = {}

    async def scenario():
        await c.start()
        alice, bob = c.clients["1001"], c.clients["1002"]
        try:
            call_id = await c.inbound()
            marks["answered"] = time.monotonic()
            await alice.request("call.attach_data", call_id=call_id, section="crm", data={"ticket": "T-7"})
            await bob.request("agent.ready")
            await expect_error(alice, "invalid_args", "call.consult", call_id=call_id, target="flow:inbound_menu")
            # consult agent 1002: caller on music, alice <-> bob
            res = await alice.request("call.consult", call_id=call_id, target="agent:1002")
            assert res["result"] == "ringing" and res["target"] == "agent:1002"
            await next_event_named(alice, "call.consult_answered")
            marks["consult"] = time.monotonic()
            await expect_error(alice, "invalid_state", "call.hold", call_id=call_id)
            await expect_error(alice, "invalid_state", "call.consult", call_id=call_id, target="agent:1002")
            who = await hearing(c.parties("caller", "alice", "bob"))
            assert who == {"caller": {"music"}, "alice": {"agent2"}, "bob": {"agent"}}, who
            # three-way
            marks["conference"] = time.monotonic()
            assert (await alice.request("call.conference", call_id=call_id))["result"] == "conference"
            who = await hearing(c.parties("caller", "alice", "bob"))
            assert who == {"caller": {"agent", "agent2"}, "alice": {"caller", "agent2"},
                           "bob": {"caller", "agent"}}, who
            # alice leaves: bob has the caller
            marks["complete"] = time.monotonic()
            res = await alice.request("call.transfer_complete", call_id=call_id)
            assert res["result"] == "transferred"
            ev = await next_event_named(bob, "call.transferred")
            assert ev["data"]["from_agent"] == "1001" and ev["data"]["agent"] == "1002"
            who = await hearing(c.parties("caller", "bob"))
            assert who == {"caller": {"agent2"}, "bob": {"caller"}}, who
            await expect_error(alice, "forbidden", "call.hold", call_id=call_id)  # no longer alice's call
            assert (await bob.request("call.get_data", call_id=call_id))["data"] == {"crm": {"ticket": "T-7"}}
            agents = {a["agent"]: a["state"] for a in (await c.admin.request("agent.list"))["agents"]}
            assert agents == {"1001": "wrapup", "1002": "busy"}, agents
            # bob: blind transfer to an external number through the trunk
            marks["blind"] = time.monotonic()
            res = await bob.request("call.transfer", call_id=call_id, target=f"number:{EXTERNAL}", trunk="out")
            assert res["result"] == "ringing"
            await next_event_named(bob, "call.transferred")
            marks["external"] = time.monotonic()
            who = await hearing(c.parties("caller", "external"))
            assert who == {"caller": {"external"}, "external": {"caller"}}, who
            invite = next(r for r in c.external.requests if r.method == "INVITE")
            assert invite.uri_text.startswith(f"sip:{EXTERNAL}@127.0.0.1:")
            assert "+4930111@" in invite.headers.get("From")
            c.caller.ep.bye(c.caller.dialog)
            await next_event_named(c.admin, "call.ended")
            await asyncio.sleep(0.2)
            assert not c.external.dialog or c.external.dialog.terminated  # the engine's BYE reached it
            return call_id
        finally:
            await c.stop()

    call_id = run(scenario())
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["transferred"] == 2 and cdr["agent"] == "1002" and cdr["hold_s"] >= 0.7
    assert json.loads(cdr["data"])["attached"] == {"crm": {"ticket": "T-7"}}
    events = [(r["event"], r["agent"], r["party"]) for r in
              rows(tmp_path, "SELECT * FROM call_events WHERE call_id = ? ORDER BY id", call_id)]
    assert events == [("consult", "1001", "agent:1002"), ("conference", "1001", "agent:1002"),
                      ("transfer_complete", "1001", "agent:1002"), ("transfer_blind", "1002", f"number:{EXTERNAL}")]
    x = recording_channels(tmp_path)
    t0 = marks["answered"]

    def seg(a: float, b: float) -> tuple[set[str], set[str]]:
        s = x[int((a - t0) * 8000):int((b - t0) * 8000)]
        return tones_in(s[:, 0]), tones_in(s[:, 1])

    assert seg(marks["consult"] + 0.2, marks["conference"] - 0.1) == ({"caller"}, set())
    assert seg(marks["conference"] + 0.3, marks["complete"] - 0.1) == ({"caller"}, {"agent", "agent2"})
    assert seg(marks["complete"] + 0.3, marks["blind"] - 0.1) == ({"caller"}, {"agent2"})
    assert seg(marks["external"] + 0.3, marks["external"] + 0.7) == ({"caller"}, {"external"})


def test_failed_targets_restore_the_call_then_blind_transfer_to_a_queue(tmp_path):
    c = Centre(tmp_path, external_reject=486, ring_timeout_s=1)

    async def scenario():
        await c.start()
        alice, bob = c.clients["1001"], c.clients["1002"]
        try:
            call_id = await c.inbound()
            await alice.request("call.attach_data", call_id=call_id, section="crm", data={"ticket": "T-9"})
            # bob is not ready: an immediate failure event, nothing changes
            res = await alice.request("call.consult", call_id=call_id, target="agent:1002")
            assert res["result"] == "failed" and res["outcome"] == "busy"
            ev = await next_event_named(alice, "call.consult_failed")
            assert ev["data"]["outcome"] == "busy" and ev["data"]["status"] == 0
            # bob ready but his phone answers 486: the caller is back with alice
            await bob.request("agent.ready")
            c.phones["1002"].reject = 486
            assert (await alice.request("call.consult", call_id=call_id, target="1002"))["result"] == "ringing"
            ev = await next_event_named(alice, "call.consult_failed")
            assert (ev["data"]["outcome"], ev["data"]["status"]) == ("busy", 486)
            who = await hearing(c.parties("caller", "alice"))
            assert who == {"caller": {"agent"}, "alice": {"caller"}}, who
            agents = {a["agent"]: a["state"] for a in (await c.admin.request("agent.list"))["agents"]}
            assert agents == {"1001": "busy", "1002": "ready"}, agents
            # bob's phone rings and rings: no_answer after the queue's ring_timeout_s (1 s), CANCEL
            c.phones["1002"].reject, c.phones["1002"].answer_after_s = None, None
            assert (await alice.request("call.consult", call_id=call_id, target="1002"))["result"] == "ringing"
            ev = await next_event_named(alice, "call.consult_failed")
            assert (ev["data"]["outcome"], ev["data"]["status"]) == ("no_answer", 487)
            assert any(type(e).__name__ == "CancelReceived" for e in c.phones["1002"].events)
            who = await hearing(c.parties("caller", "alice"))
            assert who == {"caller": {"agent"}, "alice": {"caller"}}, who
            c.phones["1002"].answer_after_s = 0.1
            # an external number that is busy: transfer_failed, call restored (and held state kept)
            await alice.request("call.hold", call_id=call_id)
            assert (await alice.request("call.transfer", call_id=call_id, target=f"number:{EXTERNAL}"))[
                "result"] == "ringing"
            ev = await next_event_named(alice, "call.transfer_failed")
            assert (ev["data"]["outcome"], ev["data"]["status"]) == ("busy", 486)
            who = await hearing(c.parties("caller"))
            assert who == {"caller": {"music"}}, who
            await alice.request("call.retrieve", call_id=call_id)
            who = await hearing(c.parties("caller", "alice"))
            assert who == {"caller": {"agent"}, "alice": {"caller"}}, who
            # blind transfer to the queue: alice leaves, bob (ready) gets the caller with its data
            c.phones["1002"].reject = None
            res = await alice.request("call.transfer", call_id=call_id, target="queue:sales")
            assert res["result"] == "transferred"
            ringing = await next_event_named(bob, "call.ringing")
            assert ringing["data"]["attached_data"] == {"crm": {"ticket": "T-9"}}
            await next_event_named(bob, "call.answered")
            who = await hearing(c.parties("caller", "bob", "alice"))
            assert who == {"caller": {"agent2"}, "bob": {"caller"}, "alice": set()}, who
            agents = {a["agent"]: a["state"] for a in (await c.admin.request("agent.list"))["agents"]}
            assert agents["1002"] == "busy" and agents["1001"] in ("wrapup", "ready"), agents
            c.caller.ep.bye(c.caller.dialog)
            await next_event_named(c.admin, "call.ended")
            return call_id
        finally:
            await c.stop()

    call_id = run(scenario())
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["transferred"] == 1 and cdr["agent"] == "1002" and cdr["disposition"] == "answered"
    events = [(r["event"], r["party"], json.loads(r["detail"]).get("outcome")) for r in
              rows(tmp_path, "SELECT * FROM call_events WHERE call_id = ? ORDER BY id", call_id)]
    assert events == [("consult_failed", "agent:1002", "busy"), ("consult", "agent:1002", None),
                      ("consult_failed", "agent:1002", "busy"), ("consult", "agent:1002", None),
                      ("consult_failed", "agent:1002", "no_answer"), ("hold", "", None),
                      ("transfer_failed", f"number:{EXTERNAL}", "busy"), ("retrieve", "", None),
                      ("transfer_blind", "queue:sales", None)], events
    qlog = [(r["event"], r["agent"]) for r in rows(tmp_path, "SELECT * FROM queue_log ORDER BY id")]
    assert qlog == [("enqueued", ""), ("offered", "1001"), ("answered", "1001"), ("enqueued", ""),
                    ("offered", "1002"), ("answered", "1002")], qlog
    x = recording_channels(tmp_path)  # one recording for the whole call, both agents on the right
    assert {"agent", "agent2"} <= tones_in(x[:, 1][: len(x) // 2]) | tones_in(x[:, 1][len(x) // 2:])


def sipfrags(phone: Phone) -> list[tuple[str, str]]:
    """(Subscription-State, sipfrag status line) of every NOTIFY the phone received."""
    return [(r.headers.get("Subscription-State"), r.body.decode().strip()) for r in phone.requests
            if r.method == "NOTIFY"]


def test_phone_refer_blind_transfers_with_notify(tmp_path):
    c = Centre(tmp_path)

    async def scenario():
        await c.start()
        alice, bob = c.clients["1001"], c.clients["1002"]
        try:
            call_id = await c.inbound()
            await bob.request("agent.ready")
            a_phone, b_phone = c.phones["1001"], c.phones["1002"]
            # unknown target: refused, call intact
            assert await a_phone.refer("<sip:nobody@cc.test>") == 404
            assert await a_phone.refer("<sip:2002@cc.test?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>") == 404
            who = await hearing(c.parties("caller", "alice"))
            assert who == {"caller": {"agent"}, "alice": {"caller"}}, who
            # REFER to bob's extension (RFC 3515): 202, NOTIFY 100 then 200 once bob answered
            assert await a_phone.refer("<sip:2002@cc.test>") == 202
            ev = await next_event_named(bob, "call.transferred")
            assert ev["data"]["by"] == "phone" and ev["data"]["kind"] == "blind"
            await asyncio.sleep(0.2)
            assert sipfrags(a_phone) == [("active;expires=60", "SIP/2.0 100 Trying"),
                                         ("terminated;reason=noresource", "SIP/2.0 200 OK")]
            assert a_phone.dialog.terminated  # the engine hung up the transferor
            who = await hearing(c.parties("caller", "bob"))
            assert who == {"caller": {"agent2"}, "bob": {"caller"}}, who
            # bob's phone refers the caller to an external number (dialled through the trunk)
            assert await b_phone.refer(f"<sip:{EXTERNAL}@cc.test>") == 202
            await next_event_named(bob, "call.transferred")
            who = await hearing(c.parties("caller", "external"))
            assert who == {"caller": {"external"}, "external": {"caller"}}, who
            assert sipfrags(b_phone)[-1] == ("terminated;reason=noresource", "SIP/2.0 200 OK")
            c.caller.ep.bye(c.caller.dialog)
            await next_event_named(c.admin, "call.ended")
            return call_id
        finally:
            await c.stop()

    call_id = run(scenario())
    events = [(r["event"], r["agent"], r["party"], json.loads(r["detail"]).get("by")) for r in
              rows(tmp_path, "SELECT * FROM call_events WHERE call_id = ? ORDER BY id", call_id)]
    assert events == [("transfer_blind", "1001", "agent:1002", "phone"),
                      ("transfer_blind", "1002", f"number:{EXTERNAL}", "phone")], events
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["transferred"] == 2


def test_click_to_dial_then_hold_and_dtmf_and_dial_failures(tmp_path):
    c = Centre(tmp_path)

    async def scenario():
        await c.start(ready=())
        alice = c.clients["1001"]
        try:
            await expect_error(alice, "invalid_args", "call.dial", number="sip:x@y")
            await expect_error(alice, "forbidden", "call.dial", agent="1002", number=EXTERNAL)
            await expect_error(alice, "not_found", "call.dial", number=EXTERNAL, trunk="nope")
            call = await alice.request("call.dial", number=EXTERNAL, trunk="out")
            call_id = call["call_id"]
            assert call["direction"] == "outbound" and call["state"] == "routing"
            await expect_error(alice, "invalid_state", "call.dial", number=EXTERNAL)  # already busy
            answered = await next_event_named(alice, "call.answered", timeout_s=10)
            assert answered["data"]["direction"] == "outbound" and answered["data"]["call_id"] == call_id
            # the agent's phone was rung first, showing the number; the trunk INVITE carries the trunk's caller id
            a_invite = next(r for r in c.phones["1001"].requests if r.method == "INVITE")
            assert f"<sip:{EXTERNAL}@" in a_invite.headers.get("From")
            x_invite = next(r for r in c.external.requests if r.method == "INVITE")
            assert "<sip:+4930111@" in x_invite.headers.get("From")
            who = await hearing(c.parties("alice", "external"))
            assert who == {"alice": {"external"}, "external": {"agent"}}, who
            await alice.request("call.hold", call_id=call_id)
            who = await hearing(c.parties("alice", "external"))
            assert who == {"alice": set(), "external": {"music"}}, who
            await alice.request("call.retrieve", call_id=call_id)
            await alice.request("call.send_dtmf", call_id=call_id, digits="42")
            await asyncio.sleep(0.6)
            assert [4, 2] == sorted({e for _, e in c.external.party.events}, reverse=True)
            agents = {a["agent"]: a["state"] for a in (await c.admin.request("agent.list"))["agents"]}
            assert agents["1001"] == "busy"
            c.external.bye()  # the far end hangs up
            ended = await next_event_named(alice, "call.ended")
            assert ended["data"]["reason"] == "caller_hangup"
            await asyncio.sleep(0.1)
            assert c.phones["1001"].dialog.terminated
            # a busy number: call.dial_failed with the SIP status, the agent released
            c.external.reject = 486
            await asyncio.sleep(1.2)  # wrap-up (1 s)
            call2 = await alice.request("call.dial", number=EXTERNAL, trunk="out")
            failed = await next_event_named(alice, "call.dial_failed", timeout_s=10)
            assert (failed["data"]["outcome"], failed["data"]["status"]) == ("busy", 486)
            assert failed["data"]["call_id"] == call2["call_id"]
            return call_id, call2["call_id"]
        finally:
            await c.stop()

    first, second = run(scenario())
    cdrs = {r["call_id"]: r for r in rows(tmp_path, "SELECT * FROM cdr")}
    assert cdrs[first]["direction"] == "outbound" and cdrs[first]["disposition"] == "answered"
    assert cdrs[first]["agent"] == "1001" and cdrs[first]["dialed_number"] == EXTERNAL and cdrs[first]["hold_s"] > 0.5
    assert cdrs[second]["disposition"] == "busy"
    events = [(r["call_id"], r["event"]) for r in rows(tmp_path, "SELECT * FROM call_events ORDER BY id")]
    assert events == [(first, "dial"), (first, "hold"), (first, "retrieve"), (second, "dial"),
                      (second, "dial_failed")], events


def test_ring_no_answer_forwards_to_the_agents_external_number(tmp_path):
    c = Centre(tmp_path, agent_text='forward_number = "+4930777"', ring_timeout_s=1)
    c.phones["1001"].answer_after_s = None  # alice's phone rings and rings

    async def scenario():
        await c.start()
        try:
            assert await c.caller.call(c.eng.sip_port, DIALED) == 200
            fwd = await next_event_named(c.admin, "call.forwarding", timeout_s=15)
            assert fwd["data"]["number"] == "+4930777"
            await next_event_named(c.admin, "call.answered")
            who = await hearing(c.parties("caller", "external"))
            assert who == {"caller": {"external"}, "external": {"caller"}}, who
            invite = next(r for r in c.external.requests if r.method == "INVITE")
            assert invite.uri_text.startswith("sip:+4930777@")
            agents = {a["agent"]: a for a in (await c.admin.request("agent.list"))["agents"]}
            assert agents["1001"]["state"] == "not_ready" and agents["1001"]["reason_code"] == "ring_no_answer"
            c.caller.ep.bye(c.caller.dialog)
            await next_event_named(c.admin, "call.ended")
        finally:
            await c.stop()

    run(scenario())
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["disposition"] == "answered" and cdr["agent"] == "1001" and cdr["ring_no_answer_count"] == 1
    qlog = [r["event"] for r in rows(tmp_path, "SELECT * FROM queue_log ORDER BY id")]
    assert qlog == ["enqueued", "offered", "ring_no_answer", "forwarded"], qlog


def test_phone_attended_transfer_hold_dial_refer_with_replaces(tmp_path):
    c = Centre(tmp_path)

    async def scenario():
        await c.start()
        alice, bob = c.clients["1001"], c.clients["1002"]
        try:
            call_id = await c.inbound()
            await bob.request("agent.ready")
            a_phone, b_phone = c.phones["1001"], c.phones["1002"]
            assert await a_phone.reinvite("sendonly") == 200           # the phone holds the caller ...
            assert (await next_event_named(alice, "call.held"))["data"]["by"] == "phone"
            unknown = await a_phone.invite(c.eng.sip_port, "nobody", AGENT_PASSWORDS["1001"])
            assert unknown.status_code == 404                          # ... a wrong number: refused
            resp = await a_phone.invite(c.eng.sip_port, "2002", AGENT_PASSWORDS["1001"])  # ... dials bob
            assert resp.status_code == 200
            assert (await next_event_named(alice, "call.consult_answered"))["data"]["target"] == "agent:1002"
            who = await hearing(c.parties("caller", "alice", "bob"))
            assert who == {"caller": {"music"}, "alice": {"agent2"}, "bob": {"agent"}}, who
            # a Replaces naming some other dialog: refused (404), nothing changes
            assert await a_phone.refer("<sip:2002@cc.test?Replaces=nope%3Bto-tag%3D1%3Bfrom-tag%3D2>") == 404
            # REFER on the first dialog, Replaces = the consult line (RFC 3891)
            assert await a_phone.refer(f"<sip:2002@cc.test?Replaces={a_phone.replaces(a_phone.line)}>") == 202
            ev = await next_event_named(bob, "call.transferred")
            assert ev["data"]["kind"] == "consult" and ev["data"]["by"] == "phone"
            await asyncio.sleep(0.3)
            assert a_phone.dialog.terminated and a_phone.line.terminated
            assert sipfrags(a_phone)[-1] == ("terminated;reason=noresource", "SIP/2.0 200 OK")
            who = await hearing(c.parties("caller", "bob"))
            assert who == {"caller": {"agent2"}, "bob": {"caller"}}, who
            c.caller.ep.bye(c.caller.dialog)
            await next_event_named(c.admin, "call.ended")
            return call_id
        finally:
            await c.stop()

    call_id = run(scenario())
    events = [(r["event"], r["agent"], r["party"], json.loads(r["detail"]).get("by")) for r in
              rows(tmp_path, "SELECT * FROM call_events WHERE call_id = ? ORDER BY id", call_id)]
    assert events == [("hold", "1001", "", "phone"), ("consult", "1001", "agent:1002", "phone"),
                      ("transfer_complete", "1001", "agent:1002", "phone")], events
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["transferred"] == 1 and cdr["agent"] == "1002" and cdr["hold_s"] > 0.5


def test_queue_consult_cancel_conference_hangup_and_transfer_to_a_flow(tmp_path):
    c = Centre(tmp_path)

    async def scenario():
        await c.start()
        alice, bob = c.clients["1001"], c.clients["1002"]
        try:
            call_id = await c.inbound()
            await bob.request("agent.ready")
            # consult the queue: its first free agent (bob) rings and answers; then cancelled
            res = await alice.request("call.consult", call_id=call_id, target="queue:sales")
            assert res["target"] == "agent:1002"
            await next_event_named(alice, "call.consult_answered")
            assert (await alice.request("call.consult_cancel", call_id=call_id))["result"] == "cancelled"
            who = await hearing(c.parties("caller", "alice", "bob"))
            assert who == {"caller": {"agent"}, "alice": {"caller"}, "bob": set()}, who
            await asyncio.sleep(1.2)  # bob's wrap-up after the consultation
            # conference, then alice hangs up her phone: the caller stays with bob
            await alice.request("call.consult", call_id=call_id, target="agent:1002")
            await next_event_named(alice, "call.consult_answered")
            await alice.request("call.conference", call_id=call_id)
            c.phones["1001"].bye()
            ev = await next_event_named(bob, "call.transferred")
            assert ev["data"]["from_agent"] == "1001"
            who = await hearing(c.parties("caller", "bob"))
            assert who == {"caller": {"agent2"}, "bob": {"caller"}}, who
            # bob sends the caller to the IVR flow: prompts (speech) instead of a tone
            res = await bob.request("call.transfer", call_id=call_id, target="flow:inbound_menu")
            assert res["result"] == "transferred"
            start = time.monotonic()
            await asyncio.sleep(2.5)
            x = c.caller.party.audio(start + 0.5)
            assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 100  # the spoken menu
            assert heard_set(c.caller.party.hears(start + 0.5)) <= {"music"}
            calls = (await c.admin.request("call.list"))["calls"]
            assert calls[0]["state"] == "routing" and calls[0]["agent"] == ""
            c.caller.ep.bye(c.caller.dialog)
            await next_event_named(c.admin, "call.ended")
            return call_id
        finally:
            await c.stop()

    call_id = run(scenario())
    events = [(r["event"], r["party"]) for r in
              rows(tmp_path, "SELECT * FROM call_events WHERE call_id = ? ORDER BY id", call_id)]
    assert events == [("consult", "agent:1002"), ("consult_cancel", "agent:1002"), ("consult", "agent:1002"),
                      ("conference", "agent:1002"), ("transfer_complete", "agent:1002"),
                      ("transfer_blind", "flow:inbound_menu")], events
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["transferred"] == 2 and cdr["flow"] == "inbound_menu"


def test_phone_consult_over_udp_never_negotiates_srtp(tmp_path):
    """A phone on UDP dialling a consult: an RTP/SAVP offer is refused (488, SDES keys must not
    travel in clear signalling, RFC 4568 §8.3), an RTP/AVP offer with a=crypto gets a plain answer."""
    from conftest_inbound import DOMAIN
    from sip.auth import DigestClient
    from sip.sdes import opportunistic_offer, secure_offer
    from sip.sdp import SdpSession

    c = Centre(tmp_path)

    async def scenario():
        await c.start()
        try:
            await c.inbound()
            a_phone = c.phones["1001"]

            async def dial(body: bytes):
                a_phone.ep.invite(f"sip:2002@{DOMAIN}", dest=("127.0.0.1", c.eng.sip_port),
                                  from_=f"<sip:{a_phone.extension}@{DOMAIN}>", body=body,
                                  content_type="application/sdp", auth=DigestClient("2001", AGENT_PASSWORDS["1001"]))
                ev = await a_phone.wait_new(lambda e: isinstance(e, ResponseReceived) and e.response.cseq[1] ==
                                            "INVITE" and e.response.status_code >= 200, timeout=10)
                return ev.response

            savp = await dial(bytes(secure_offer(SdpSession("127.0.0.1", 41), a_phone.party.port)[0]))
            assert savp.status_code == 488
            assert not [leg for leg in c.eng.centre.media.legs if "/line-" in leg]  # its media leg is gone
            await c.clients["1002"].request("agent.ready")
            plain = await dial(bytes(opportunistic_offer(SdpSession("127.0.0.1", 42), a_phone.party.port)[0]))
            assert plain.status_code == 200 and b"a=crypto" not in plain.body and b"RTP/AVP" in plain.body
            (line_leg,) = [leg for leg in c.eng.centre.media.legs if "/line-" in leg]
            assert c.eng.centre.media.srtp_leg(line_leg) is None and not c.eng.centre.mediasec.is_secure(line_leg)
            await next_event_named(c.admin, "call.consult_answered")
            c.caller.ep.bye(c.caller.dialog)
            await next_event_named(c.admin, "call.ended")
        finally:
            await c.stop()

    run(scenario())
