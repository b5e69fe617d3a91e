"""Inbound call path edge cases with our own SIP UAs as trunk and phones (engine in a subprocess):
488 on codecs we do not support, caller abandons in the queue, ring no answer to the next agent."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from conftest_inbound import (
    AGENT_PASSWORDS, DIALED, EngineProcess, next_event_named, offer_sdp, register, trunk_call,
)
from sip.events import RequestReceived, ResponseReceived
from sip.uas import AnsweringUas
from sip.useragent import SipEndpoint

pytestmark = pytest.mark.interop


def run(coro, timeout: float = 40.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@pytest.fixture
def engine(tmp_path):
    eng = EngineProcess(tmp_path, ring_timeout_s=1)
    eng.start()
    yield eng
    rc = eng.stop()
    assert rc in (0, None), eng.log_text()


def rows(tmp_path, sql):
    db = sqlite3.connect(tmp_path / "cc.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_only_unsupported_codecs_is_488(engine):
    async def scenario():
        ep, ev = await trunk_call(engine.sip_port, DIALED, offer_sdp(4000, "18", "a=rtpmap:18 G729/8000\r\n"))
        await ep.stop()
        assert ev.response.status_code == 488
        admin = await engine.client()
        try:
            assert (await admin.request("engine.status"))["counts"]["legs"] == 0
        finally:
            await admin.close()
    run(scenario())
    assert "488" in engine.log_text()


def test_caller_abandons_in_queue(engine, tmp_path):
    async def scenario():
        admin = await engine.client()
        await admin.subscribe(events=["call.*", "queue.*"])
        ep, ev = await trunk_call(engine.sip_port, DIALED, offer_sdp(4002))
        try:
            assert ev.response.status_code == 200  # answered by the engine: music on hold
            stats = await next_event_named(admin, "queue.stats")
            assert stats["data"]["waiting"] == 1
            queues = (await admin.request("queue.list"))["queues"]
            assert queues[0]["waiting"] == 1
            await asyncio.sleep(0.5)
            ep.bye(ev.dialog)
            ended = await next_event_named(admin, "call.ended")
            assert ended["data"]["reason"] == "caller_hangup" and ended["data"]["disposition"] == "abandoned"
            assert (await admin.request("call.list"))["calls"] == []
        finally:
            await ep.stop()
            await admin.close()
    run(scenario())
    assert engine.stop() == 0
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["disposition"] == "abandoned" and cdr["agent"] == "" and cdr["wait_s"] >= 0.4
    assert [r["event"] for r in rows(tmp_path, "SELECT event FROM queue_log ORDER BY id")] == ["enqueued", "abandoned"]


def test_ring_no_answer_goes_to_next_agent(engine, tmp_path):
    async def scenario():
        admin = await engine.client()
        alice = await engine.client("alice", AGENT_PASSWORDS["1001"])
        bob = await engine.client("bob", AGENT_PASSWORDS["1002"])
        silent = SipEndpoint("127.0.0.1", 0, tcp=False, user="2001")  # rings, never answers
        answering = AnsweringUas("127.0.0.1", 0, tcp=False)
        trunk = None
        try:
            await admin.subscribe(events=["agent.*", "call.*"])
            _, silent_port = await silent.start()
            _, answering_port = await answering.start()
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            await bob.request("agent.login", password=AGENT_PASSWORDS["1002"], extension="2002")
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"], contact_port=silent_port) == 200
            assert await register(engine.sip_port, "2002", AGENT_PASSWORDS["1002"], contact_port=answering_port) == 200
            await alice.request("agent.ready")
            await asyncio.sleep(0.1)
            await bob.request("agent.ready")
            trunk, ev = await trunk_call(engine.sip_port, DIALED, offer_sdp(4004))
            assert ev.response.status_code == 200
            inv = await silent.next_event(5)
            assert isinstance(inv, RequestReceived) and inv.request.method == "INVITE"
            silent.respond(inv.transaction, 180)
            seen: list = []
            first = await next_event_named(admin, "call.ringing", seen=seen)
            assert first["data"]["agent"] == "1001"
            second = await next_event_named(admin, "call.ringing", seen=seen)
            assert second["data"]["agent"] == "1002"
            nr = [e for e in seen if e["event"] == "agent.state" and e["data"]["agent"] == "1001"
                  and e["data"]["state"] == "not_ready"]
            assert nr and nr[-1]["data"]["reason_code"] == "ring_no_answer"
            answered = await next_event_named(admin, "call.answered", seen=seen)
            assert answered["data"]["agent"] == "1002"
            await asyncio.sleep(0.3)
            trunk.bye(ev.dialog)
            ended = await next_event_named(admin, "call.ended", seen=seen)
            assert ended["data"]["agent"] == "1002"
            agents = {a["agent"]: a for a in (await admin.request("agent.list"))["agents"]}
            assert agents["1001"]["state"] == "not_ready" and agents["1001"]["reason_code"] == "ring_no_answer"
            assert agents["1002"]["state"] == "wrapup"
        finally:
            if trunk is not None:
                await trunk.stop()
            await silent.stop()
            await answering.stop()
            for c in (admin, alice, bob):
                await c.close()
    run(scenario())
    assert engine.stop() == 0
    (cdr,) = rows(tmp_path, "SELECT * FROM cdr")
    assert cdr["agent"] == "1002" and cdr["ring_no_answer_count"] == 1 and cdr["disposition"] == "answered"
    assert cdr["ring_s"] >= 0.9
    qlog = [(r["event"], r["agent"]) for r in rows(tmp_path, "SELECT event, agent FROM queue_log ORDER BY id")]
    assert qlog == [("enqueued", ""), ("offered", "1001"), ("ring_no_answer", "1001"), ("offered", "1002"),
                    ("answered", "1002")]


def test_agent_logs_out_while_ringing_caller_waits_again(tmp_path):
    eng = EngineProcess(tmp_path, ring_timeout_s=20)
    eng.start()

    async def scenario():
        admin = await eng.client()
        alice = await eng.client("alice", AGENT_PASSWORDS["1001"])
        silent = SipEndpoint("127.0.0.1", 0, tcp=False, user="2001")
        trunk = None
        try:
            await admin.subscribe(events=["agent.*", "call.*"])
            _, silent_port = await silent.start()
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            assert await register(eng.sip_port, "2001", AGENT_PASSWORDS["1001"], contact_port=silent_port) == 200
            await alice.request("agent.ready")
            trunk, ev = await trunk_call(eng.sip_port, DIALED, offer_sdp(4006))
            inv = await silent.next_event(5)
            assert isinstance(inv, RequestReceived) and inv.request.method == "INVITE"
            silent.respond(inv.transaction, 180)
            await next_event_named(admin, "call.ringing")
            await alice.request("agent.logout")
            cancelled = False
            for _ in range(5):  # the phone is told to stop ringing (CANCEL → 487 by its stack)
                got = await silent.next_event(3)
                if type(got).__name__ == "CancelReceived":
                    cancelled = True
                    break
            assert cancelled
            queues = (await admin.request("queue.list"))["queues"]
            assert queues[0]["waiting"] == 1
            calls = (await admin.request("call.list"))["calls"]
            assert calls[0]["state"] == "queued"
            trunk.bye(ev.dialog)
            ended = await next_event_named(admin, "call.ended")
            assert ended["data"]["disposition"] == "abandoned"
        finally:
            if trunk is not None:
                await trunk.stop()
            await silent.stop()
            await admin.close()
            await alice.close()

    try:
        run(scenario())
    finally:
        rc = eng.stop()
    assert rc == 0, eng.log_text()
    qlog = [(r["event"], r["agent"]) for r in rows(tmp_path, "SELECT event, agent FROM queue_log ORDER BY id")]
    assert qlog == [("enqueued", ""), ("offered", "1001"), ("offer_cancelled", "1001"), ("abandoned", "")]
    states = [r["state"] for r in rows(tmp_path, "SELECT state FROM agent_state_log ORDER BY id")]
    assert states == ["not_ready", "ready", "reserved", "logged_out"]


def test_reinvite_is_answered_and_unregistered_phone_sets_agent_not_ready(engine, tmp_path):
    async def scenario():
        admin = await engine.client()
        alice = await engine.client("alice", AGENT_PASSWORDS["1001"])
        trunk = None
        try:
            await admin.subscribe(events=["agent.*"])
            # logged in and ready, but extension 2001 never registered
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            await alice.request("agent.ready")
            trunk, ev = await trunk_call(engine.sip_port, DIALED, offer_sdp(4008))
            assert ev.response.status_code == 200
            seen: list = []
            while True:
                st = await next_event_named(admin, "agent.state", seen=seen)
                if st["data"]["state"] == "not_ready" and st["data"]["reason_code"]:
                    break
            assert st["data"]["reason_code"] == "phone_unregistered"
            # session refresh with a new RTP port: 200 with our answer
            trunk.request_in_dialog(ev.dialog, "INVITE", body=offer_sdp(4010), content_type="application/sdp")
            while True:
                got = await trunk.next_event(5)
                if isinstance(got, ResponseReceived) and got.response.status_code >= 200:
                    break
            assert got.response.status_code == 200 and b"m=audio" in got.response.body
            assert (await admin.request("queue.list"))["queues"][0]["waiting"] == 1
            trunk.bye(ev.dialog)
        finally:
            if trunk is not None:
                await trunk.stop()
            await admin.close()
            await alice.close()
    run(scenario())
    assert engine.stop() == 0
    qlog = [r["event"] for r in rows(tmp_path, "SELECT event FROM queue_log ORDER BY id")]
    assert qlog[0] == "enqueued" and qlog[-1] == "abandoned"


def test_returning_caller_prefers_last_agent_and_calls_survive_a_garbage_flood(engine, tmp_path):
    import socket

    async def answered_by(admin, caller: str) -> str:
        trunk, ev = await trunk_call(engine.sip_port, DIALED, offer_sdp(4012), caller=caller)
        try:
            assert ev.response.status_code == 200
            ans = await next_event_named(admin, "call.answered")
            # a flood of malformed datagrams while the call is up
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(300):
                    s.sendto(b"INVITE sip:x SIP/2.0\r\nVia: garbage\r\n\r\n" if i % 2 else bytes([i % 256]) * 200,
                             ("127.0.0.1", engine.sip_port))
            await asyncio.sleep(0.2)
            assert len((await admin.request("call.list"))["calls"]) == 1
            trunk.bye(ev.dialog)
            await next_event_named(admin, "call.ended")
            return ans["data"]["agent"]
        finally:
            await trunk.stop()

    async def scenario():
        admin = await engine.client()
        alice = await engine.client("alice", AGENT_PASSWORDS["1001"])
        bob = await engine.client("bob", AGENT_PASSWORDS["1002"])
        phones = [AnsweringUas("127.0.0.1", 0, tcp=False), AnsweringUas("127.0.0.1", 0, tcp=False)]
        try:
            await admin.subscribe(events=["call.*"])
            for (client, agent, ext), phone in zip([(alice, "1001", "2001"), (bob, "1002", "2002")], phones):
                _, port = await phone.start()
                await client.request("agent.login", password=AGENT_PASSWORDS[agent], extension=ext)
                assert await register(engine.sip_port, ext, AGENT_PASSWORDS[agent], contact_port=port) == 200
            await bob.request("agent.ready")
            assert await answered_by(admin, "+4917000042") == "1002"
            await alice.request("agent.ready")          # 1001 is now the longest idle
            await asyncio.sleep(1.5)                    # 1002's wrap-up (1 s) ends
            agents = {a["agent"]: a["state"] for a in (await admin.request("agent.list"))["agents"]}
            assert agents == {"1001": "ready", "1002": "ready"}
            assert await answered_by(admin, "+4917000042") == "1002"   # sticky: the last agent
            await asyncio.sleep(1.5)
            assert await answered_by(admin, "+4917000099") == "1001"   # a new caller: longest idle
        finally:
            for phone in phones:
                await phone.stop()
            for c in (admin, alice, bob):
                await c.close()
    run(scenario())
    assert engine.stop() == 0
    assert [r["agent"] for r in rows(tmp_path, "SELECT agent FROM cdr ORDER BY id")] == ["1002", "1002", "1001"]


def test_phone_unregistering_sets_ready_agent_not_ready(engine):
    async def scenario():
        admin = await engine.client()
        alice = await engine.client("alice", AGENT_PASSWORDS["1001"])
        try:
            await admin.subscribe(events=["agent.*"])
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"], contact_port=45000) == 200
            await alice.request("agent.ready")
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"], contact_port=45000,
                                  expires=0) == 200
            seen: list = []
            while True:
                st = await next_event_named(admin, "agent.state", seen=seen)
                if st["data"]["state"] == "not_ready" and st["data"]["previous_state"] == "ready":
                    break
            assert st["data"]["reason_code"] == "phone_unregistered"
            assert (await admin.request("engine.status"))["counts"]["registrations"] == 0
        finally:
            await admin.close()
            await alice.close()
    run(scenario())


def test_waiting_caller_hears_music_then_a_position_announcement(tmp_path):
    import socket

    from media.g711 import ulaw_decode

    eng = EngineProcess(tmp_path, announce_interval_s=5)
    eng.start()

    async def scenario():
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtp.setblocking(False)
        loop = asyncio.get_running_loop()
        trunk, ev = await trunk_call(eng.sip_port, DIALED, offer_sdp(rtp.getsockname()[1]))
        payload = bytearray()
        try:
            assert ev.response.status_code == 200
            deadline = loop.time() + 8.0
            while loop.time() < deadline:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(rtp, 2048), 0.5)
                except asyncio.TimeoutError:
                    continue
                if len(data) == 172 and data[1] & 0x7F == 0:
                    payload += data[12:]
            trunk.bye(ev.dialog)
            await asyncio.sleep(0.2)
        finally:
            await trunk.stop()
            rtp.close()
        return np.array(ulaw_decode(np.frombuffer(bytes(payload), np.uint8)), np.float64)

    import numpy as np
    try:
        audio = asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        assert eng.stop() == 0, eng.log_text()
    win = 2000  # 0.25 s
    kinds = []
    for i in range(0, len(audio) - win, win):
        seg = audio[i:i + win]
        spec = np.abs(np.fft.rfft(seg * np.hanning(win)))
        peak = (np.argmax(spec[1:]) + 1) * 8000 / win
        tonal = spec.max() / (spec.sum() + 1e-9)
        kinds.append("music" if min(abs(peak - 392), abs(peak - 523.25)) < 12 and tonal > 0.05 else "other")
    assert len(kinds) >= 28, len(kinds)
    assert kinds[:16].count("music") >= 14, kinds          # the first 4 s: music on hold
    assert kinds[20:].count("other") >= 4, kinds           # from 5 s: the spoken position


def test_phone_rejecting_twice_sets_agent_not_ready(engine, tmp_path):
    async def scenario():
        admin = await engine.client()
        alice = await engine.client("alice", AGENT_PASSWORDS["1001"])
        busy_phone = SipEndpoint("127.0.0.1", 0, tcp=False, user="2001")
        trunks = []
        try:
            await admin.subscribe(events=["agent.*"])
            _, port = await busy_phone.start()
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"], contact_port=port) == 200
            await alice.request("agent.ready")
            for n in range(2):  # two callers; the phone answers 486 Busy Here to each offer
                trunks.append(await trunk_call(engine.sip_port, DIALED, offer_sdp(4020 + 2 * n),
                                               caller=f"+491700000{n}"))
                while True:
                    got = await busy_phone.next_event(5)
                    if isinstance(got, RequestReceived) and got.request.method == "INVITE":
                        busy_phone.respond(got.transaction, 486)
                        break
            seen: list = []
            while True:
                st = await next_event_named(admin, "agent.state", seen=seen)
                if st["data"]["state"] == "not_ready" and st["data"]["reason_code"]:
                    break
            assert st["data"]["reason_code"] == "phone_rejects"
            assert (await admin.request("queue.list"))["queues"][0]["waiting"] == 2
            for ep, ev in trunks:
                ep.bye(ev.dialog)
            await asyncio.sleep(0.3)
        finally:
            for ep, _ in trunks:
                await ep.stop()
            await busy_phone.stop()
            await admin.close()
            await alice.close()
    run(scenario())
    assert engine.stop() == 0
    qlog = [r["event"] for r in rows(tmp_path, "SELECT event FROM queue_log ORDER BY id")]
    assert qlog.count("rejected_486") == 2 and qlog.count("abandoned") == 2
