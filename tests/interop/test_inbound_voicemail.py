"""A voicemail route: the SIPp caller hears a greeting and a beep, its tone is recorded into the
mailbox (file, voicemail row, voicemail.new event), the call ends with disposition voicemail."""
from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import wave

import numpy as np
import pytest

from conftest_inbound import DIALED, VM_DIALED, EngineProcess, free_port, next_event_named, sipp_dir, start_sipp, stop_proc

pytestmark = pytest.mark.interop

SHARED_SIPP = pathlib.Path(__file__).resolve().parents[3] / "shared" / "testpeers" / "sipp"


@pytest.mark.parametrize("dialed,queue_timeout_s", [(VM_DIALED, 0), (DIALED, 1)], ids=["route", "queue_timeout"])
def test_voicemail_records_the_caller(tmp_path, dialed, queue_timeout_s):
    """A voicemail: route, and a queue without agents whose timeout_destination is voicemail."""
    eng = EngineProcess(tmp_path, queue_timeout_s=queue_timeout_s, timeout_destination="voicemail:sales")
    eng.start()
    caller_dir = sipp_dir(tmp_path, "trunk", 1000)

    async def scenario():
        admin = await eng.client()
        trunk = None
        try:
            await admin.subscribe(events=["voicemail.*", "call.*"])
            trunk = start_sipp(["-sf", str(SHARED_SIPP / "uac_tone_dtmf.xml"), f"127.0.0.1:{eng.sip_port}",
                                "-s", dialed, "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
                                "-m", "1", "-recv_timeout", "10000", "-timeout", "20", "-timeout_error"], caller_dir)
            seen: list = []
            vm = await next_event_named(admin, "voicemail.new", 20, seen)
            assert vm["data"]["mailbox"] == "sales" and vm["data"]["duration_s"] > 0.5
            ended = [e for e in seen if e["event"] == "call.ended"] or [await next_event_named(admin, "call.ended")]
            assert ended[0]["data"]["disposition"] == "voicemail"
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, trunk.wait, 15) == 0
            return vm["data"]["path"]
        finally:
            if trunk is not None:
                stop_proc(trunk)
            await admin.close()

    try:
        path = asyncio.run(asyncio.wait_for(scenario(), 50))
    finally:
        rc = eng.stop()
    assert rc == 0, eng.log_text()
    db = sqlite3.connect(tmp_path / "cc.db")
    (row,) = db.execute("SELECT mailbox, path, duration_s FROM voicemail").fetchall()
    assert row[0] == "sales" and row[1] == path and "/voicemail/sales/" in path
    (disp,) = db.execute("SELECT disposition FROM cdr").fetchone()
    assert disp == "voicemail"
    if queue_timeout_s:
        events = [r[0] for r in db.execute("SELECT event FROM queue_log ORDER BY id")]
        assert events == ["enqueued", "queue_timeout"]
        return  # the caller's 4 s tone is mostly over by the time the beep ends
    with wave.open(path) as w:
        assert w.getnchannels() == 1
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    x = x[: 4000]  # the start of the message: the caller's tone
    assert np.sqrt(np.mean(x ** 2)) > 1000
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert abs((np.argmax(spec[1:]) + 1) * 8000 / len(x) - 1000) < 30
