"""A real softphone drives call control: baresip (agent 1001) holds and resumes by re-INVITE and
blind-transfers by REFER to agent 1002; the caller's received audio proves each step."""
from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest_callctl import AGENT2_HZ, Phone, TrunkCaller, heard_set, InProcessEngine
from conftest_inbound import AGENT_PASSWORDS, DIALED, free_port, next_event_named

pytestmark = pytest.mark.interop

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "testpeers"
AGENT_TONE_HZ = 700


def start_baresip(tmp: pathlib.Path, engine_port: int) -> tuple[subprocess.Popen, int]:
    baresip = shutil.which("baresip")
    assert baresip, "baresip not installed"
    d = tmp / "baresip"
    (d / "rec").mkdir(parents=True)
    wav = d / "tone.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(wav),
                    "synth", "30", "sine", str(AGENT_TONE_HZ), "vol", "0.5"], check=True, timeout=20)
    rtp = free_port() & ~1
    ctrl = free_port()
    config = (SHARED / "baresip" / "config.template").read_text()
    for key, value in {"@SIP_PORT@": str(free_port()), "@CTRL_PORT@": str(ctrl),
                       "@RTP_PORTS@": f"{rtp}-{rtp + 9}", "@SRC_WAV@": str(wav), "@REC_DIR@": str(d / "rec")}.items():
        config = config.replace(key, value)
    (d / "config").write_text(config)
    (d / "accounts").write_text(f"<sip:2001@127.0.0.1:{engine_port}>;auth_pass={AGENT_PASSWORDS['1001']};"
                                "regint=60;answermode=auto;audio_codecs=PCMU,PCMA\n")
    out = open(d / "baresip.log", "wb")
    proc = subprocess.Popen([baresip, "-f", str(d)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out.close()
    return proc, ctrl


def stop_baresip(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def heard_by(party, seconds: float = 0.9) -> set[str]:
    start = time.monotonic()
    await asyncio.sleep(seconds)
    from conftest_callctl import goertzel_power
    powers = party.hears(start + 0.3)
    powers["baresip"] = goertzel_power(party.audio(start + 0.3)[-8000:], AGENT_TONE_HZ)
    return heard_set(powers) - {"agent"}  # (the baresip tone is AGENT_HZ too: reported as "baresip")


def test_baresip_hold_resume_and_refer_transfer(tmp_path):
    sys.path.insert(0, str(SHARED))
    from bsctl import BaresipCtl

    eng = InProcessEngine(tmp_path)

    async def scenario():
        await eng.start()
        loop = asyncio.get_running_loop()
        alice = await eng.client("alice", AGENT_PASSWORDS["1001"])
        bob = await eng.client("bob", AGENT_PASSWORDS["1002"])
        bob_phone = Phone("2002", AGENT2_HZ)
        caller = TrunkCaller()
        proc = ctl = None
        try:
            await alice.subscribe(events=["call.*"])
            await bob.subscribe(events=["call.*"])
            await alice.request("agent.login", password=AGENT_PASSWORDS["1001"])
            await bob.request("agent.login", password=AGENT_PASSWORDS["1002"])
            await bob_phone.start(eng.sip_port, AGENT_PASSWORDS["1002"])
            proc, ctrl_port = start_baresip(tmp_path, eng.sip_port)
            deadline = time.monotonic() + 10
            while eng.centre._contact_of("2001") is None:
                assert time.monotonic() < deadline and proc.poll() is None, \
                    (tmp_path / "baresip" / "baresip.log").read_text()[-2000:]
                await asyncio.sleep(0.1)
            for _ in range(50):
                try:
                    ctl = BaresipCtl(ctrl_port)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            assert ctl is not None
            await alice.request("agent.ready")
            assert await caller.call(eng.sip_port, DIALED) == 200
            answered = await next_event_named(alice, "call.answered", 10)
            call_id = answered["data"]["call_id"]
            assert await heard_by(caller.party) == {"baresip"}
            await loop.run_in_executor(None, ctl.command, "hold")
            held = await next_event_named(alice, "call.held", 5)
            assert held["data"]["by"] == "phone"
            assert await heard_by(caller.party) == {"music"}
            await loop.run_in_executor(None, ctl.command, "resume")
            await next_event_named(alice, "call.retrieved", 5)
            assert await heard_by(caller.party) == {"baresip"}
            await bob.request("agent.ready")
            await loop.run_in_executor(None, ctl.command, "transfer", "sip:2002@cc.test")
            ev = await next_event_named(bob, "call.transferred", 10)
            assert ev["data"]["by"] == "phone" and ev["data"]["from_agent"] == "1001"
            assert await heard_by(caller.party) == {"agent2"}
            caller.ep.bye(caller.dialog)
            await next_event_named(bob, "call.ended", 5)
            return call_id
        finally:
            if ctl is not None:
                ctl.close()
            if proc is not None:
                stop_baresip(proc)
            await caller.stop()
            await bob_phone.stop()
            await alice.close()
            await bob.close()
            await eng.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    log = (tmp_path / "baresip" / "baresip.log").read_text(errors="replace")
    assert "transfer" in log.lower()
