"""A real softphone as the agent: baresip registers itself with digest (hot-desk
credentials after agent.login), auto-answers the engine's offer, and its audio file
ends up on the agent (right) channel of the call recording."""
from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import time
import wave

import numpy as np
import pytest

from conftest_inbound import (
    AGENT_PASSWORDS, DIALED, EngineProcess, free_port, next_event_named, sipp_dir, start_sipp, stop_proc,
)

pytestmark = pytest.mark.interop

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "testpeers"


def start_baresip(tmp: pathlib.Path, engine_port: int, tone_hz: int) -> subprocess.Popen:
    baresip = shutil.which("baresip")
    assert baresip, "baresip not installed"
    d = tmp / "baresip"
    (d / "rec").mkdir(parents=True)
    wav = d / "tone.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(wav),
                    "synth", "20", "sine", str(tone_hz), "vol", "0.5"], check=True, timeout=20)
    rtp = free_port() & ~1
    config = (SHARED / "baresip" / "config.template").read_text()
    for key, value in {"@SIP_PORT@": str(free_port()), "@CTRL_PORT@": str(free_port()),
                       "@RTP_PORTS@": f"{rtp}-{rtp + 9}", "@SRC_WAV@": str(wav), "@REC_DIR@": str(d / "rec")}.items():
        config = config.replace(key, value)
    (d / "config").write_text(config)
    (d / "accounts").write_text(f"<sip:2001@127.0.0.1:{engine_port}>;auth_pass={AGENT_PASSWORDS['1001']};"
                                "regint=60;answermode=auto;audio_codecs=PCMU,PCMA\n")
    out = open(d / "baresip.log", "wb")
    proc = subprocess.Popen([baresip, "-f", str(d)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out.close()
    return proc


def stop_baresip(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_baresip_agent_registers_and_answers(tmp_path):
    eng = EngineProcess(tmp_path)
    eng.start()
    caller_dir = sipp_dir(tmp_path, "trunk", 1000)

    async def scenario():
        alice = await eng.client("alice", AGENT_PASSWORDS["1001"])
        phone = trunk = None
        try:
            await alice.subscribe(events=["call.*"])
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"], extension="2001")
            phone = start_baresip(tmp_path, eng.sip_port, 600)
            deadline = time.monotonic() + 10
            while (await alice.request("engine.status"))["counts"]["registrations"] != 1:
                assert time.monotonic() < deadline, (tmp_path / "baresip" / "baresip.log").read_text()[-2000:]
                assert phone.poll() is None
                await asyncio.sleep(0.1)
            await alice.request("agent.ready")
            trunk = start_sipp(["-sf", str(SHARED / "sipp" / "uac_tone_dtmf.xml"), f"127.0.0.1:{eng.sip_port}",
                                "-s", DIALED, "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()),
                                "-m", "1", "-recv_timeout", "10000", "-timeout", "20", "-timeout_error"], caller_dir)
            await next_event_named(alice, "call.ringing", 10)
            answered = await next_event_named(alice, "call.answered", 10)
            assert answered["data"]["agent"] == "1001"
            ended = await next_event_named(alice, "call.ended", 15)
            assert ended["data"]["reason"] == "caller_hangup"
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, trunk.wait, 15) == 0
        finally:
            if trunk is not None:
                stop_proc(trunk)
            if phone is not None:
                stop_baresip(phone)
            await alice.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        rc = eng.stop()
    assert rc == 0, eng.log_text()
    db = sqlite3.connect(tmp_path / "cc.db")
    (path,) = db.execute("SELECT path FROM recordings").fetchone()
    with wave.open(path) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2).astype(np.float64)
    seg = x[4000:20000]
    for ch, hz in ((0, 1000), (1, 600)):
        spec = np.abs(np.fft.rfft(seg[:, ch] * np.hanning(len(seg))))
        peak = (np.argmax(spec[1:]) + 1) * 8000 / len(seg)
        assert abs(peak - hz) < 30, (ch, peak)
