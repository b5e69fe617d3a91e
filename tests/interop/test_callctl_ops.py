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

    def __init__(self, tmp_path, *, external_reject: int | None = None, agent_text: str = "") -> None:
        self.external = Phone("external", EXTERNAL_HZ, reject=external_reject)
        self.ext_port = free_port()
        self.external.ep.port = self.ext_port
        self.eng = InProcessEngine(tmp_path, extra=trunk_section("out", self.ext_port, caller_number="+4930111"))
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
            c.caller.ep.bye(c.caller.dialog)
            await next_event_named(c.admin, "call.ended")
            return call_id
        finally:
            await c.stop()

    call_id = run(scenario())
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["call_id"] == call_id and cdr["transferred"] == 0
    assert 1.3 <= cdr["hold_s"] <= cdr["talk_s"], (cdr["hold_s"], cdr["talk_s"])
    events = [(r["event"], json.loads(r["detail"]).get("by")) for r in
              rows(tmp_path, "SELECT * FROM call_events WHERE call_id = ? ORDER BY id", call_id)]
    assert events == [("hold", "op"), ("retrieve", "op"), ("hold", "phone"), ("retrieve", "phone")]
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
            assert invite.uri_text.startswith(f"sip:{EXTERNAL}@127.0.0.1:") and "+4930111@" in invite.headers.get("From")
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
