"""Inbound call through an IVR flow: SIPp trunk hears a TTS menu, presses 1 (RFC 4733),
is queued and answered by an agent phone; the screen pop carries the IVR variable."""
from __future__ import annotations

import asyncio
import pathlib
import sqlite3

import pytest

from conftest_inbound import (
    AGENT_PASSWORDS, IVR_DIALED, EngineProcess, free_port, next_event_named, register, sipp_dir, start_sipp,
    stop_proc,
)
from sip.uas import AnsweringUas

pytestmark = pytest.mark.interop

SHARED_SIPP = pathlib.Path(__file__).resolve().parents[3] / "shared" / "testpeers" / "sipp"


def test_menu_digit_routes_to_queue_and_screen_pop_has_ivr_variable(tmp_path):
    eng = EngineProcess(tmp_path)
    eng.start()
    caller_dir = sipp_dir(tmp_path, "trunk", 1000, 6.0)

    async def scenario():
        alice = await eng.client("alice", AGENT_PASSWORDS["1001"])
        phone = AnsweringUas("127.0.0.1", 0, tcp=False)
        trunk = None
        try:
            await alice.subscribe(events=["call.*"])
            _, phone_port = await phone.start()
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            assert await register(eng.sip_port, "2001", AGENT_PASSWORDS["1001"], contact_port=phone_port) == 200
            await alice.request("agent.ready")
            trunk = start_sipp(["-sf", str(SHARED_SIPP / "uac_tone_dtmf.xml"), f"127.0.0.1:{eng.sip_port}",
                                "-s", IVR_DIALED, "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
                                "-m", "1", "-recv_timeout", "10000", "-timeout", "20", "-timeout_error"], caller_dir)
            seen: list = []
            ringing = await next_event_named(alice, "call.ringing", 15, seen)
            assert ringing["data"]["variables"].get("department") == "1", ringing["data"]
            assert ringing["data"]["queue"] == "sales"
            await next_event_named(alice, "call.answered", 5, seen)
            ended = await next_event_named(alice, "call.ended", 10, seen)
            assert ended["data"]["reason"] == "caller_hangup"
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, trunk.wait, 15) == 0
            assert phone.counters.answered == 1
        finally:
            if trunk is not None:
                stop_proc(trunk)
            await phone.stop()
            await alice.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 50))
    finally:
        rc = eng.stop()
    assert rc == 0, eng.log_text()
    db = sqlite3.connect(tmp_path / "cc.db")
    db.row_factory = sqlite3.Row
    (cdr,) = db.execute("SELECT * FROM cdr").fetchall()
    assert cdr["flow"] == "inbound_menu" and cdr["queue"] == "sales" and cdr["agent"] == "1001"
    assert '"department": "1"' in cdr["data"]
    assert any((tmp_path / "tts").rglob("*.wav"))  # the menu prompt was spoken by espeak-ng
