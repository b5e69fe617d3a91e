"""Queue exits and call-path timers with real SIP/RTP (engine in a subprocess, our UAs as trunk
and phone): queue full → the queue's full_destination (a flow), queue timeout → a flow, the
periodic prompt heard by the caller (Goertzel on the RTP it receives), hang-up on RTP timeout,
and call.answer re-offering with auto-answer headers."""
from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import sqlite3
import subprocess

import numpy as np
import pytest

from conftest_inbound import (
    AGENT_PASSWORDS, DIALED, DOMAIN, EngineProcess, free_port, next_event_named, offer_sdp, register, trunk_call,
)
from media.g711 import ulaw_decode
from sip.events import DialogTerminated, RequestReceived
from sip.uas import AnsweringUas
from sip.useragent import SipEndpoint

pytestmark = pytest.mark.interop

SMALL, TO_FLOW, PERIODIC = "+4930555701", "+4930555702", "+4930555703"
EXTRA = f"""
[queues.small]
groups = ["sales"]
max_length = 1
full_destination = "flow:inbound_menu"

[queues.toflow]
groups = ["sales"]
timeout_s = 1
timeout_destination = "flow:inbound_menu"

[queues.periodic]
groups = ["sales"]
announcements = {{ periodic_prompt = "beep.wav", periodic_interval_s = 1 }}

[[routes]]
dialed_number = "{SMALL}"
destination = "queue:small"

[[routes]]
dialed_number = "{TO_FLOW}"
destination = "queue:toflow"

[[routes]]
dialed_number = "{PERIODIC}"
destination = "queue:periodic"
"""
RTP_TIMEOUT_S = 4
XFER_FLOW, XFER_BAD, XFER_NUMBER = "+4930555801", "+4930555802", "+4930555803"
DUTY, DUTY_ALL_BUSY = "+4930555901", "+4930555902"
XFER_AGENT = "+4930555804"
BUSY_NUMBERS = {"+4930700001", "+4930700003"}
FLOWS = {
    "to_agent": """
[flow]
name = "to_agent"
start = "t"

[nodes.t]
type = "transfer"
agent = "1002"
timeout_s = 5
on_failure = "sorry"

[nodes.sorry]
type = "set"
variables = { fallback = "yes" }
next = "bye"

[nodes.bye]
type = "hangup"
""",
    "to_number": """
[flow]
name = "to_number"
start = "t"

[nodes.t]
type = "transfer"
numbers = "+4930700001$+4930700002"
timeout_s = 5
on_failure = "bye"

[nodes.bye]
type = "hangup"
""",
    "to_queue": """
[flow]
name = "to_queue"
start = "t"

[nodes.t]
type = "transfer"
queue = "sales"
on_failure = "bye"

[nodes.bye]
type = "hangup"
""",
    "to_flow": """
[flow]
name = "to_flow"
start = "greet"

[nodes.greet]
type = "set"
variables = { department = "sales" }
next = "t"

[nodes.t]
type = "transfer"
flow = "to_queue"
on_failure = "bye"

[nodes.bye]
type = "hangup"
""",
    "to_nowhere": """
[flow]
name = "to_nowhere"
start = "t"

[nodes.t]
type = "transfer"
queue = "closed_queue"
on_failure = "bye"

[nodes.bye]
type = "hangup"
""",
}
DEVICE_PASSWORD = "dev-pw-2009"
XFER_CONFIG = f"""
[extensions.2009]
sip_ha1 = "{hashlib.md5(f"2009:{DOMAIN}:{DEVICE_PASSWORD}".encode()).hexdigest()}"
[flows.to_queue]
path = "to_queue.toml"

[flows.to_flow]
path = "to_flow.toml"

[flows.to_nowhere]
path = "to_nowhere.toml"

[flows.to_number]
path = "to_number.toml"

[flows.to_agent]
path = "to_agent.toml"

[[routes]]
dialed_number = "{XFER_AGENT}"
destination = "flow:to_agent"

[hours.never]
rules = []

[[routes]]
dialed_number = "{XFER_NUMBER}"
destination = "flow:to_number"

[[routes]]
dialed_number = "{DUTY}"
destination = "queue:sales"
hours = "never"
after_hours = ["number:+4930700001$+4930700002", "voicemail:sales"]

[[routes]]
dialed_number = "{DUTY_ALL_BUSY}"
destination = "queue:sales"
hours = "never"
after_hours = ["number:+4930700001$+4930700003", "voicemail:sales"]

[[routes]]
dialed_number = "{XFER_FLOW}"
destination = "flow:to_flow"

[[routes]]
dialed_number = "{XFER_BAD}"
destination = "flow:to_nowhere"
"""


def run(coro, timeout: float = 40.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("queue_extras")
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(tmp / "beep.wav"), "synth", "0.6",
                    "sine", "1000", "vol", "0.5"], check=True, timeout=20)
    for name, flow in FLOWS.items():
        (tmp / f"{name}.toml").write_text(flow)
    eng = EngineProcess(tmp)
    eng.carrier_port = free_port()
    text = eng.config.read_text().replace("[media]\n", f"[media]\nrtp_timeout_s = {RTP_TIMEOUT_S}\n", 1)
    text = text.replace("[trunks.carrier]\n", f"[trunks.carrier]\nport = {eng.carrier_port}\n", 1)
    eng.config.write_text(text + EXTRA + XFER_CONFIG)
    eng.start()
    yield eng
    rc = eng.stop()
    assert rc in (0, None), eng.log_text()


def db_rows(eng, sql, *params):
    db = sqlite3.connect(eng.tmp / "cc.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


async def wait_rows(eng, sql, *params, n=1):
    for _ in range(100):
        rows = db_rows(eng, sql, *params)
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"no rows for {sql}:\n{eng.log_text()}")


async def still_up(ep: SipEndpoint, seconds: float) -> bool:
    """No BYE from the engine for ``seconds``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        try:
            ev = await ep.next_event(max(0.01, end - loop.time()))
        except TimeoutError:
            continue
        if isinstance(ev, DialogTerminated):
            return False
    return True


def test_queue_full_goes_to_full_destination_flow(engine):
    async def scenario():
        first, ev1 = await trunk_call(engine.sip_port, SMALL, offer_sdp(4200), caller="+4917100001")
        second, ev2 = await trunk_call(engine.sip_port, SMALL, offer_sdp(4202), caller="+4917100002")
        try:
            assert ev1.response.status_code == ev2.response.status_code == 200
            assert await still_up(second, 1.0), "the overflowing caller was hung up instead of routed"
            first.bye(ev1.dialog)
            second.bye(ev2.dialog)
            await asyncio.sleep(0.2)
        finally:
            await first.stop()
            await second.stop()
        (cdr,) = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100002")
        assert cdr["flow"] == "inbound_menu" and cdr["end_reason"] == "caller_hangup"
        events = [r["event"] for r in db_rows(engine, "SELECT event FROM queue_log WHERE call_id = ? ORDER BY id",
                                              cdr["call_id"])]
        assert events[:1] == ["queue_full"] or events[:2] == ["enqueued", "queue_full"], events
    run(scenario())


def test_queue_timeout_goes_to_a_flow(engine):
    async def scenario():
        ep, ev = await trunk_call(engine.sip_port, TO_FLOW, offer_sdp(4204), caller="+4917100003")
        try:
            assert ev.response.status_code == 200
            assert await still_up(ep, 2.0), "the caller was hung up at the queue timeout"
            ep.bye(ev.dialog)
            await asyncio.sleep(0.2)
        finally:
            await ep.stop()
        (cdr,) = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100003")
        assert cdr["flow"] == "inbound_menu" and cdr["queue"] == "toflow"
        events = [r["event"] for r in db_rows(engine, "SELECT event FROM queue_log WHERE call_id = ? ORDER BY id",
                                              cdr["call_id"])]
        assert events == ["enqueued", "queue_timeout"]
    run(scenario())


def goertzel_ratio(frame: np.ndarray, hz: float) -> float:
    """Share of the frame's energy at ``hz`` (Goertzel over one 20 ms frame)."""
    coeff = 2 * np.cos(2 * np.pi * hz / 8000)
    s1 = s2 = 0.0
    for x in frame:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    total = float(np.sum(frame * frame)) * len(frame) / 2
    return power / total if total > 0 else 0.0


def test_periodic_prompt_is_heard(engine):
    async def scenario():
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtp.setblocking(False)
        ep, ev = await trunk_call(engine.sip_port, PERIODIC, offer_sdp(rtp.getsockname()[1]), caller="+4917100004")
        frames: list[np.ndarray] = []
        try:
            assert ev.response.status_code == 200
            loop = asyncio.get_running_loop()
            end = loop.time() + 2.6
            while loop.time() < end:
                try:
                    while True:
                        pkt = rtp.recv(2048)
                        if len(pkt) == 172 and pkt[1] & 0x7F == 0:
                            frames.append(ulaw_decode(np.frombuffer(pkt[12:], np.uint8)).astype(np.float64))
                except BlockingIOError:
                    pass
                await asyncio.sleep(0.02)
            ep.bye(ev.dialog)
            await asyncio.sleep(0.1)
        finally:
            rtp.close()
            await ep.stop()
        tone = [goertzel_ratio(f, 1000.0) > 0.8 for f in frames]
        music = [goertzel_ratio(f, 392.0) > 0.5 or goertzel_ratio(f, 523.25) > 0.5 for f in frames]
        assert len(frames) > 80, len(frames)
        assert sum(music) > 20, "no music on hold before the prompt"
        assert sum(tone) >= 20, f"periodic prompt (1 kHz) not heard: {sum(tone)} of {len(frames)} frames"
    run(scenario())


def test_rtp_timeout_hangs_up(engine):
    async def scenario():
        ep, ev = await trunk_call(engine.sip_port, DIALED, offer_sdp(4206), caller="+4917100005")
        try:
            assert ev.response.status_code == 200
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert not await still_up(ep, RTP_TIMEOUT_S + 4), "no BYE after the RTP timeout"
            assert loop.time() - t0 >= RTP_TIMEOUT_S - 1.0
        finally:
            await ep.stop()
        (cdr,) = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100005")
        assert cdr["end_reason"] == "rtp_timeout" and cdr["disposition"] == "rtp_timeout"
    run(scenario())


def test_call_answer_reoffers_with_auto_answer_headers(engine):
    async def scenario():
        admin = await engine.client()
        alice = await engine.client("alice", AGENT_PASSWORDS["1001"])
        phone = SipEndpoint("127.0.0.1", 0, tcp=False, user="2001")
        trunk = None
        try:
            await admin.subscribe(events=["call.*"])
            _, phone_port = await phone.start()
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"], contact_port=phone_port) == 200
            await alice.request("agent.ready")
            trunk, ev = await trunk_call(engine.sip_port, DIALED, offer_sdp(4208), caller="+4917100006")
            first = await phone.next_event(5)
            assert isinstance(first, RequestReceived) and first.request.method == "INVITE"
            assert "Answer-Mode" not in first.request.headers
            phone.respond(first.transaction, 180)
            ringing = await next_event_named(admin, "call.ringing")
            res = await alice.request("call.answer", call_id=ringing["data"]["call_id"])
            assert res["agent"] == "1001"
            invite = None
            while invite is None:
                nxt = await phone.next_event(5)
                if isinstance(nxt, RequestReceived) and nxt.request.method == "INVITE" and nxt.dialog is None:
                    invite = nxt
            h = invite.request.headers
            assert h.get("Answer-Mode") == "Auto"
            assert "answer-after=0" in h.get("Call-Info") and "alert-autoanswer" in h.get("Alert-Info")
            phone.respond(invite.transaction, 200, body=offer_sdp(4210), content_type="application/sdp")
            answered = await next_event_named(admin, "call.answered")
            assert answered["data"]["agent"] == "1001"
            with pytest.raises(Exception, match="conflict"):
                await alice.request("call.answer", call_id=ringing["data"]["call_id"])
            trunk.bye(ev.dialog)
            await next_event_named(admin, "call.ended")
            await alice.request("agent.wrapup_done")
            await alice.request("agent.logout")
        finally:
            if trunk is not None:
                await trunk.stop()
            await phone.stop()
            await alice.close()
            await admin.close()
    run(scenario())


def test_ivr_transfer_to_flow_then_to_queue(engine):
    async def scenario():
        admin = await engine.client()
        ep, ev = await trunk_call(engine.sip_port, XFER_FLOW, offer_sdp(4212), caller="+4917100007")
        try:
            assert ev.response.status_code == 200
            call = None
            for _ in range(60):
                calls = [c for c in (await admin.request("call.list"))["calls"] if c["caller_number"] == "+4917100007"]
                if calls and calls[0]["state"] == "queued":
                    call = calls[0]
                    break
                await asyncio.sleep(0.05)
            assert call is not None and call["queue"] == "sales", calls
            data = await admin.request("call.get_data", call_id=call["call_id"])
            assert data["variables"]["department"] == "sales"
            assert data["variables"]["transfer_target"] == "queue:sales"
            ep.bye(ev.dialog)
            await asyncio.sleep(0.2)
        finally:
            await ep.stop()
            await admin.close()
        (cdr,) = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100007")
        assert cdr["flow"] == "to_queue" and cdr["queue"] == "sales" and cdr["disposition"] == "abandoned"
    run(scenario())


def test_ivr_transfer_to_unknown_queue_takes_on_failure(engine):
    async def scenario():
        ep, ev = await trunk_call(engine.sip_port, XFER_BAD, offer_sdp(4214), caller="+4917100008")
        try:
            assert ev.response.status_code == 200
            assert not await still_up(ep, 5.0), "the flow's on_failure (hangup) did not run"
        finally:
            await ep.stop()
        (cdr,) = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100008")
        assert cdr["flow"] == "to_nowhere" and cdr["queue"] == ""
    run(scenario())


def test_device_credential_registers_before_login(engine):
    async def scenario():
        admin = await engine.client()
        bob = await engine.client("bob", AGENT_PASSWORDS["1002"])
        phone = AnsweringUas("127.0.0.1", 0, tcp=False)
        trunk = None
        try:
            await admin.subscribe(events=["call.*"])
            _, phone_port = await phone.start()
            assert await register(engine.sip_port, "2009", DEVICE_PASSWORD, contact_port=phone_port) == 200
            assert await register(engine.sip_port, "2002", DEVICE_PASSWORD) != 200  # no device credential
            await bob.request("agent.login", password=AGENT_PASSWORDS["1002"], extension="2009")
            assert await register(engine.sip_port, "2009", AGENT_PASSWORDS["1002"]) != 200  # the device's stays
            await bob.request("agent.ready")
            trunk, ev = await trunk_call(engine.sip_port, DIALED, offer_sdp(4216), caller="+4917100009")
            answered = await next_event_named(admin, "call.answered")
            assert answered["data"]["agent"] == "1002"
            trunk.bye(ev.dialog)
            await next_event_named(admin, "call.ended")
            await bob.request("agent.wrapup_done")
            await bob.request("agent.logout")
            assert await register(engine.sip_port, "2009", DEVICE_PASSWORD, contact_port=phone_port) == 200
        finally:
            if trunk is not None:
                await trunk.stop()
            await phone.stop()
            await bob.close()
            await admin.close()
    run(scenario())


class Carrier:
    """The far side of the trunk for outgoing legs: 486 for BUSY_NUMBERS, else 200 with SDP."""

    def __init__(self, port: int) -> None:
        self.ep = SipEndpoint("127.0.0.1", port, tcp=False, user="carrier", on_event=self.on_event)
        self.invited: list[str] = []

    def on_event(self, ev) -> None:
        if isinstance(ev, RequestReceived) and ev.request.method == "INVITE" and ev.dialog is None:
            user = getattr(ev.request.uri, "user", "")
            self.invited.append(user)
            if user in BUSY_NUMBERS:
                self.ep.respond(ev.transaction, 486)
            else:
                self.ep.respond(ev.transaction, 180)
                self.ep.respond(ev.transaction, 200, body=offer_sdp(4230), content_type="application/sdp")


async def external_call(engine, dialed: str, caller: str, expect_bridge: bool) -> dict:
    carrier = Carrier(engine.carrier_port)
    await carrier.ep.start()
    admin = await engine.client()
    trunk = None
    try:
        await admin.subscribe(events=["call.*"])
        trunk, ev = await trunk_call(engine.sip_port, dialed, offer_sdp(4232), caller=caller)
        assert ev.response.status_code == 200
        if expect_bridge:
            answered = await next_event_named(admin, "call.answered", 15)
            assert answered["data"]["external_number"] == "+4930700002"
        else:  # wait until the voicemail recording runs (greeting and beep first)
            for _ in range(150):
                if f"[{ev.response.call_id}] recording voicemail" in engine.log.read_text(errors="replace"):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
        trunk.bye(ev.dialog)
        await next_event_named(admin, "call.ended", 10)
        return {"invited": carrier.invited}
    finally:
        if trunk is not None:
            await trunk.stop()
        await carrier.ep.stop()
        await admin.close()


def test_duty_numbers_in_order_first_busy_second_answers(engine):
    async def scenario():
        res = await external_call(engine, DUTY, "+4917100010", True)
        assert res["invited"] == ["+4930700001", "+4930700002"]
        (cdr,) = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100010")
        assert cdr["disposition"] == "answered" and cdr["end_reason"] == "caller_hangup"
        variables = json.loads(cdr["data"])["variables"]
        assert variables["external_number"] == "+4930700002"
        assert [(a["number"], a["outcome"], a["status"]) for a in variables["external_attempts"]] == [
            ("+4930700001", "busy", 486), ("+4930700002", "answered", 200)]
    run(scenario())


def test_duty_numbers_all_busy_fall_through_to_voicemail(engine):
    async def scenario():
        res = await external_call(engine, DUTY_ALL_BUSY, "+4917100011", False)
        assert res["invited"] == ["+4930700001", "+4930700003"]
        (cdr,) = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100011")
        assert cdr["disposition"] == "voicemail"
        assert json.loads(cdr["data"])["variables"]["after_hours_fallback"] == "voicemail:sales"
    run(scenario())


def test_ivr_transfer_to_an_external_number(engine):
    async def scenario():
        res = await external_call(engine, XFER_NUMBER, "+4917100012", True)
        assert res["invited"] == ["+4930700001", "+4930700002"]
        (cdr,) = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100012")
        variables = json.loads(cdr["data"])["variables"]
        assert cdr["flow"] == "to_number" and cdr["disposition"] == "answered"
        assert variables["transfer_target"] == "number:+4930700002"
    run(scenario())


def test_ivr_transfer_to_an_agent(engine):
    async def scenario():
        admin = await engine.client()
        bob = await engine.client("bob", AGENT_PASSWORDS["1002"])
        phone = AnsweringUas("127.0.0.1", 0, tcp=False)
        trunk = None
        try:
            await admin.subscribe(events=["call.*", "agent.*"])
            # not logged in: the attempt fails at once and the flow takes on_failure (hang-up)
            ep, ev = await trunk_call(engine.sip_port, XFER_AGENT, offer_sdp(4240), caller="+4917100013")
            try:
                assert ev.response.status_code == 200
                assert not await still_up(ep, 5.0), "on_failure (hangup) did not run"
            finally:
                await ep.stop()
            _, phone_port = await phone.start()
            await bob.request("agent.login", password=AGENT_PASSWORDS["1002"], extension="2002")
            assert await register(engine.sip_port, "2002", AGENT_PASSWORDS["1002"], contact_port=phone_port) == 200
            await bob.request("agent.ready")
            trunk, ev = await trunk_call(engine.sip_port, XFER_AGENT, offer_sdp(4242), caller="+4917100014")
            answered = await next_event_named(admin, "call.answered", 15)
            assert answered["data"]["agent"] == "1002"
            agents = {a["agent"]: a for a in (await admin.request("agent.list"))["agents"]}
            assert agents["1002"]["state"] == "busy"
            trunk.bye(ev.dialog)
            await next_event_named(admin, "call.ended")
            await asyncio.sleep(0.2)
            agents = {a["agent"]: a for a in (await admin.request("agent.list"))["agents"]}
            assert agents["1002"]["state"] in ("wrapup", "ready")
            if agents["1002"]["state"] == "wrapup":
                await bob.request("agent.wrapup_done")
            await bob.request("agent.logout")
        finally:
            if trunk is not None:
                await trunk.stop()
            await phone.stop()
            await bob.close()
            await admin.close()
        failed = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100013")
        ok = await wait_rows(engine, "SELECT * FROM cdr WHERE caller_number = ?", "+4917100014")
        assert json.loads(failed[0]["data"])["variables"]["fallback"] == "yes"
        assert ok[0]["agent"] == "1002" and ok[0]["disposition"] == "answered" and ok[0]["flow"] == "to_agent"
    run(scenario())
