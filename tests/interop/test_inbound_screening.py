"""Screening with real SIP and RTP (engine in a subprocess, our own UA as the trunk):
a blocked number rejected with the list's response, a blocked number that hears a
message (energy on the RTP it receives) and is hung up on, a whitelist-only line,
numbers added/removed at run time over the control socket; CDRs say blocked."""
from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess

import numpy as np
import pytest

from conftest_inbound import DIALED, EngineProcess, offer_sdp, trunk_call
from media.g711 import ulaw_decode
from sip.events import DialogTerminated

pytestmark = pytest.mark.interop

NIGHT_DIALED = "+4930555900"
SCREENING = f"""
[[routes]]
dialed_number = "{NIGHT_DIALED}"
destination = "queue:sales"

[screening.spam]
numbers = ["+4917000001", "+49900*"]
reject_status = 486
reject_reason = "Blocked Caller"

[screening.nuisance]
numbers = ["+4917000009"]
action = "message"
message = "Your number is blocked. Goodbye."

[screening.recorded]
numbers = ["+4917000010"]
action = "message"
message_file = "blocked.wav"

[screening.night]
kind = "allow"
numbers = ["+4917055*"]
dialed_numbers = ["{NIGHT_DIALED}"]
windows = [{{ days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start = "00:00", end = "24:00" }}]
"""


def run(coro, timeout: float = 40.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("screening")
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(tmp / "blocked.wav"), "synth", "1.5",
                    "sine", "700", "vol", "0.5"], check=True, timeout=20)
    eng = EngineProcess(tmp)
    eng.config.write_text(eng.config.read_text() + SCREENING)
    eng.start()
    yield eng
    rc = eng.stop()
    assert rc in (0, None), eng.log_text()


def cdrs(eng, caller):
    db = sqlite3.connect(eng.tmp / "cc.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM cdr WHERE caller_number = ? ORDER BY id", (caller,)).fetchall()
    finally:
        db.close()


async def wait_cdr(eng, caller, n=1):
    for _ in range(100):
        rows = cdrs(eng, caller)
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"no CDR for {caller}:\n{eng.log_text()}")


async def call_status(eng, dialed, caller):
    ep, ev = await trunk_call(eng.sip_port, dialed, offer_sdp(4100), caller=caller)
    try:
        if ev.response.status_code == 200:
            ep.bye(ev.dialog)
            await asyncio.sleep(0.1)
        return ev.response.status_code, ev.response.reason
    finally:
        await ep.stop()


def test_blocked_number_and_prefix_rejected_with_the_lists_response(engine):
    async def scenario():
        assert await call_status(engine, DIALED, "+4917000001") == (486, "Blocked Caller")
        assert await call_status(engine, DIALED, "+4990055555") == (486, "Blocked Caller")
        rows = await wait_cdr(engine, "+4990055555")
        assert rows[0]["disposition"] == "blocked" and rows[0]["end_reason"] == "screened:spam"
        assert rows[0]["queue"] == "" and rows[0]["answered_ts"] is None
    run(scenario())


@pytest.mark.parametrize("caller,list_name", [("+4917000009", "nuisance"), ("+4917000010", "recorded")],
                         ids=["tts", "file"])
def test_blocked_number_hears_the_message_then_is_hung_up(engine, caller, list_name):
    async def scenario():
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtp.setblocking(False)
        loop = asyncio.get_running_loop()
        ep, ev = await trunk_call(engine.sip_port, DIALED, offer_sdp(rtp.getsockname()[1]), caller=caller)
        try:
            assert ev.response.status_code == 200
            samples: list[np.ndarray] = []
            bye = None
            deadline = loop.time() + 15
            while bye is None and loop.time() < deadline:
                try:
                    while True:
                        pkt = rtp.recv(2048)
                        if len(pkt) > 12 and pkt[1] & 0x7F == 0:
                            samples.append(ulaw_decode(np.frombuffer(pkt[12:], np.uint8)))
                except BlockingIOError:
                    pass
                try:
                    nxt = await ep.next_event(0.02)
                except TimeoutError:
                    continue
                if isinstance(nxt, DialogTerminated):
                    bye = nxt
            assert bye is not None, "the engine did not hang up after the message"
            audio = np.concatenate(samples).astype(np.float64)
            speech = np.sqrt(np.mean(audio ** 2))
            assert audio.size > 8000 and speech > 300, f"message not heard (rms {speech:.0f}, {audio.size} samples)"
        finally:
            rtp.close()
            await ep.stop()
        (row,) = await wait_cdr(engine, caller)
        assert row["disposition"] == "blocked" and row["end_reason"] == f"screened:{list_name}"
    run(scenario())


def test_whitelist_only_line(engine):
    async def scenario():
        assert await call_status(engine, NIGHT_DIALED, "+4917000002") == (603, "Decline")
        assert (await call_status(engine, NIGHT_DIALED, "+4917055123"))[0] == 200
        assert (await call_status(engine, DIALED, "+4917000002"))[0] == 200  # list only guards its number
        rows = await wait_cdr(engine, "+4917000002", 2)
        assert [r["disposition"] for r in rows][0] == "blocked" and rows[0]["end_reason"] == "screened:night"
    run(scenario())


def test_runtime_entries_over_the_control_socket(engine):
    async def scenario():
        admin = await engine.client()
        try:
            assert (await call_status(engine, DIALED, "+4915550001"))[0] == 200
            added = await admin.request("screening.add", list="spam", number="+491555*", note="robocalls")
            assert added["source"] == "runtime" and added["user"] == "admin"
            assert await call_status(engine, DIALED, "+4915550001") == (486, "Blocked Caller")
            listed = (await admin.request("screening.list", list="spam"))["lists"][0]
            assert {"number": "+491555*", "source": "runtime"}.items() <= listed["entries"][-1].items()
            with pytest.raises(Exception, match="conflict"):
                await admin.request("screening.add", list="spam", number="+491555*")
            with pytest.raises(Exception, match="invalid_args"):
                await admin.request("screening.add", list="spam", number="robot")
            alice = await engine.client("alice", "pw-1001")
            try:
                with pytest.raises(Exception, match="forbidden"):
                    await alice.request("screening.add", list="spam", number="+4912")
            finally:
                await alice.close()
            await admin.request("screening.remove", list="spam", number="+491555*")
            assert (await call_status(engine, DIALED, "+4915550001"))[0] == 200
        finally:
            await admin.close()
    run(scenario())
