"""Inbound call path end to end: the engine as a subprocess, SIPp as trunk and agent phone,
the agent driven over the control socket.  Real UDP, real RTP, recordings checked by FFT."""
from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import wave

import numpy as np
import pytest

from conftest_inbound import (
    AGENT_PASSWORDS, DIALED, EngineProcess, free_port, register, sipp_dir, start_sipp, stop_proc, wait_udp_bound,
)
from engine.client import ClientError

pytestmark = pytest.mark.interop

SHARED_SIPP = pathlib.Path(__file__).resolve().parents[3] / "shared" / "testpeers" / "sipp"


def run(coro, timeout: float = 40.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@pytest.fixture
def engine(tmp_path):
    eng = EngineProcess(tmp_path)
    eng.start()
    yield eng
    rc = eng.stop()
    assert rc in (0, None), eng.log_text()


def dominant_hz(x: np.ndarray) -> float:
    """Dominant frequency of 2 s of audio from 0.5 s in (the bridged talk)."""
    x = x[4000:20000].astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec[1:]) + 1) * 8000 / len(x)


def test_phone_registers_with_digest_after_agent_login(engine):
    async def scenario():
        alice = await engine.client("alice", AGENT_PASSWORDS["1001"])
        try:
            # Before login the extension has no credentials: refused.
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"]) == 403
            with pytest.raises(ClientError) as exc:
                await alice.request("agent.login", password="wrong", extension="2001")
            assert exc.value.code == "forbidden"
            with pytest.raises(ClientError) as exc:  # agents act only on themselves
                await alice.request("agent.login", agent="1002", password=AGENT_PASSWORDS["1002"])
            assert exc.value.code == "forbidden"
            res = await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            assert res["state"] == "not_ready" and res["extension"] == "2001"
            assert await register(engine.sip_port, "2001", "wrong-password") == 403
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"]) == 200
            status = await alice.request("engine.status")
            assert status["counts"]["registrations"] == 1
            assert "CallCentre" in status["services"]
            agents = (await alice.request("agent.list"))["agents"]
            assert [a["agent"] for a in agents] == ["1001"]  # an agent sees only itself
        finally:
            await alice.close()
    run(scenario())


def test_unknown_dialed_number_is_404(engine, tmp_path):
    d = sipp_dir(tmp_path, "trunk", 1000, 1.0)
    p = start_sipp(["-sf", str(SHARED_SIPP / "uac_tone_dtmf.xml"), f"127.0.0.1:{engine.sip_port}", "-s", "+4999",
                    "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()), "-m", "1",
                    "-recv_timeout", "5000", "-timeout", "10", "-timeout_error"], d)
    try:
        p.wait(15)
    finally:
        stop_proc(p)
    assert p.returncode != 0
    assert "404" in (d / "sipp.log").read_text(errors="replace") + "".join(
        f.read_text(errors="replace") for f in d.glob("*errors.log")) or "no route" in engine.log_text()
    assert "no route for dialed number '+4999'" in engine.log_text()


def test_happy_path_trunk_queue_agent_recording(engine, tmp_path):
    caller_dir = sipp_dir(tmp_path, "trunk", 1000)
    phone_dir = sipp_dir(tmp_path, "phone", 600)
    phone_port = free_port()

    async def scenario():
        admin = await engine.client()
        alice = await engine.client("alice", AGENT_PASSWORDS["1001"])
        phone = trunk = None
        try:
            await alice.subscribe(events=["agent.*", "call.*"])
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            phone = start_sipp(["-sf", str(SHARED_SIPP / "uas_tone_dtmf.xml"), "-i", "127.0.0.1", "-p",
                                str(phone_port), "-mp", str(free_port()), "-m", "1"], phone_dir)
            await wait_udp_bound(phone_port)
            assert await register(engine.sip_port, "2001", AGENT_PASSWORDS["1001"], contact_port=phone_port) == 200
            await alice.request("agent.ready")
            trunk = start_sipp(["-sf", str(SHARED_SIPP / "uac_tone_dtmf.xml"), f"127.0.0.1:{engine.sip_port}",
                                "-s", DIALED, "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
                                "-m", "1", "-recv_timeout", "10000", "-timeout", "20", "-timeout_error"],
                               caller_dir)
            events = []
            call_id = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 25
            while loop.time() < deadline:
                ev = await alice.next_event(timeout=max(0.1, deadline - loop.time()))
                if ev is None:
                    break
                events.append(ev)
                if ev["event"] == "call.ringing":
                    call_id = ev["data"]["call_id"]
                    assert ev["data"]["caller_number"] and ev["data"]["dialed_number"] == DIALED
                    assert ev["data"]["history"]["calls"] == 0
                if ev["event"] == "call.answered":
                    await alice.request("call.attach_data", call_id=call_id, section="crm",
                                        data={"ticket": "T-42"})
                    got = await alice.request("call.get_data", call_id=call_id)
                    assert got["data"] == {"crm": {"ticket": "T-42"}}
                    calls = (await alice.request("call.list"))["calls"]
                    assert [c["call_id"] for c in calls] == [call_id]
                if ev["event"] == "agent.state" and ev["data"]["state"] == "ready" and call_id:
                    break
            names = [e["event"] if e["event"] != "agent.state" else f"agent.state:{e['data']['state']}"
                     for e in events]
            assert names[:1] == ["agent.state:not_ready"]
            i = names.index("call.ringing")
            assert names[i - 1] == "agent.state:reserved"
            assert names[i:] == ["call.ringing", "agent.state:busy", "call.answered", "agent.state:wrapup",
                                 "call.ended", "agent.state:ready"], names
            ended = events[names.index("call.ended")]["data"]
            assert ended["reason"] == "caller_hangup" and ended["agent"] == "1001"
            assert await loop.run_in_executor(None, trunk.wait, 20) == 0
            assert await loop.run_in_executor(None, phone.wait, 10) == 0
            st = await admin.request("engine.status")
            assert st["counts"]["calls"] == 0 and st["counts"]["legs"] == 0
            return call_id
        finally:
            for p in (trunk, phone):
                if p is not None:
                    stop_proc(p)
            await alice.close()
            await admin.close()

    call_id = run(scenario(), 60)
    assert engine.stop() == 0
    db = sqlite3.connect(tmp_path / "cc.db")
    db.row_factory = sqlite3.Row
    (cdr,) = db.execute("SELECT * FROM cdr").fetchall()
    assert cdr["call_id"] == call_id and cdr["agent"] == "1001" and cdr["queue"] == "sales"
    assert cdr["grp"] == "sales"  # the group that served it (group KPIs, cdr.query group=)
    assert cdr["dialed_number"] == DIALED and cdr["disposition"] == "answered"
    assert cdr["end_reason"] == "caller_hangup" and cdr["talk_s"] > 2 and cdr["recorded"] == 1
    assert '"ticket": "T-42"' in cdr["data"]
    qlog = [r["event"] for r in db.execute("SELECT event FROM queue_log ORDER BY id")]
    assert qlog == ["enqueued", "offered", "answered"]
    states = [r["state"] for r in db.execute("SELECT state FROM agent_state_log ORDER BY id")]
    assert states == ["not_ready", "ready", "reserved", "busy", "wrapup", "ready"]
    (rec,) = db.execute("SELECT * FROM recordings").fetchall()
    assert rec["grp"] == "sales" and rec["agent"] == "1001"
    with wave.open(rec["path"]) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 8000
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert len(x) > 8000 * 2
    left, right = dominant_hz(x[:, 0]), dominant_hz(x[:, 1])
    assert abs(left - 1000) < 30, left    # the caller (trunk) on the left
    assert abs(right - 600) < 30, right   # the agent's phone on the right
