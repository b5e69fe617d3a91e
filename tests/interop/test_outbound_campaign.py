"""Outbound campaigns end to end: SIPp callees behind trunks (answer, busy, no answer), a scripted
agent phone registered with the engine, the campaign service dialling through engine/legs.py, the
ACD connecting the answered call to the agent; attempts, retries and outcomes checked in the store."""
from __future__ import annotations

import asyncio
import json
import pathlib
import time

import pytest

from conftest_callctl import AGENT_HZ, AGENT_PASSWORDS, Phone, goertzel_power, trunk_section
from conftest_inbound import engine_config, free_port, sipp_dir, start_sipp, stop_proc, wait_udp_bound
from engine.app import Engine
from engine.callpath import CallCentre
from engine.campaign_service import CampaignService
from engine.client import ControlClient
from engine.config import parse_config

pytestmark = pytest.mark.interop

SIPP = pathlib.Path(__file__).resolve().parent / "sipp"

CAMPAIGNS = """
[campaigns.answer]
mode = "progressive"
groups = ["sales"]
queue = "sales"
trunk = "ans"
caller_number = "+4930999111"

[campaigns.busy]
mode = "progressive"
groups = ["sales"]
queue = "sales"
trunk = "busy"
max_attempts = 2
retries = [{ outcome = "busy", delay_s = 0 }]

[campaigns.silent]
mode = "progressive"
groups = ["sales"]
queue = "sales"
trunk = "silent"
ring_timeout_s = 5
retries = [{ outcome = "busy", delay_s = 0 }]
"""


def test_campaigns_against_sipp_callees(tmp_path: pathlib.Path) -> None:
    ports = {name: free_port() for name in ("ans", "busy", "silent")}
    sip_port, ctl_port = free_port(), free_port()
    text = (engine_config(tmp_path, sip_port, ctl_port, ring_timeout_s=10, wrapup_s=1)
            + "".join(trunk_section(n, p, caller_number="+4930999000") for n, p in ports.items()) + CAMPAIGNS)
    busy_xml = tmp_path / "callee_busy.xml"
    busy_xml.write_text((SIPP / "callee_reject.xml").read_text().replace("@CODE@", "486")
                        .replace("@REASON@", "Busy Here"))
    procs = []
    for name, scenario, args in (("ans", SIPP / "callee_answer.xml", ["-rtp_echo", "-d", "2500"]),
                                 ("busy", busy_xml, []), ("silent", SIPP / "callee_noanswer.xml", [])):
        d = sipp_dir(tmp_path, name, 1000, 1.0)
        procs.append(start_sipp(["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(ports[name]),
                                 "-mp", str(free_port()), "-m", "2" if name == "busy" else "1",
                                 "-timeout", "40", "-timeout_error", "-trace_msg", *args], d))

    async def scenario() -> None:
        from engine import agent_ops  # noqa: F401
        from engine import campaign_ops  # noqa: F401

        cfg = parse_config(text, str(tmp_path / "engine.toml"))
        centre = CallCentre()
        svc = CampaignService(tick_s=0.1)
        engine = Engine(cfg, services=[centre, svc])
        await engine.start()
        phone = Phone("2001", AGENT_HZ, answer_after_s=0.2)
        admin = ControlClient(host="127.0.0.1", port=ctl_port, user="admin", password="admin-pw")
        try:
            for p in ports.values():
                await wait_udp_bound(p)
            await admin.connect()
            await admin.request("agent.login", agent="1001", password=AGENT_PASSWORDS["1001"], extension="2001")
            await phone.start(sip_port, AGENT_PASSWORDS["1001"])
            await admin.request("agent.ready", agent="1001")
            await admin.request("events.subscribe", events=["call.*"])
            await admin.request("campaign.import", name="answer", csv="number,name\n+4930555001,Anna\n")
            await admin.request("campaign.import", name="busy", csv="number,name\n+4930555002,Bob\n")
            await admin.request("campaign.import", name="silent", csv="number,name\n+4930555003,Carl\n")
            for name in ("answer", "busy", "silent"):
                await admin.request("campaign.start", name=name)
            # The agent's phone rings with the record on the screen pop.
            pop = None
            deadline = time.monotonic() + 15
            while pop is None and time.monotonic() < deadline:
                ev = await admin.next_event(timeout=deadline - time.monotonic())
                if ev and ev.get("event") == "call.ringing":
                    pop = ev["data"]
            assert pop is not None and pop["variables"]["campaign"]["record"]["fields"] == {"name": "Anna"}
            assert pop["dialed_number"] == "+4930555001" and pop["agent"] == "1001"
            # Bridged: SIPp echoes what it gets, so the agent hears its own tone back.
            await phone.wait(lambda e: phone.dialog is not None, 5)
            start = time.monotonic()
            await asyncio.sleep(1.0)
            echoed = goertzel_power(phone.party.audio(start + 0.3)[-4000:], AGENT_HZ)
            assert echoed > 1e5, echoed
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and any(
                    svc.core("default", n).book.state.value != "completed" for n in ("answer", "busy", "silent")):
                await asyncio.sleep(0.1)
            states = {n: svc.core("default", n).book.state.value for n in ("answer", "busy", "silent")}
            assert states == {"answer": "completed", "busy": "completed", "silent": "completed"}, states
            await engine.store.aflush()
            rows = engine.store.select("campaign_log", limit=1000)
            by = {n: [(r["event"], r["outcome"]) for r in rows if r["campaign"] == n] for n in states}
            assert by["busy"] == [("attempt", ""), ("result", "busy"), ("attempt", ""), ("result", "busy")]
            assert by["silent"] == [("attempt", ""), ("result", "no_answer")]
            assert by["answer"] == [("attempt", ""), ("result", "answered"), ("connected", ""), ("ended", "")]
            statuses = [json.loads(r["data"]).get("sip_status") for r in rows
                        if r["campaign"] in ("busy", "silent") and r["event"] == "result"]
            assert statuses == [486, 486, 487] or sorted(statuses) == [486, 486, 487]
            connected = next(r for r in rows if r["event"] == "connected")
            ended = next(r for r in rows if r["campaign"] == "answer" and r["event"] == "ended")
            assert connected["agent"] == "1001" and ended["talk_s"] > 1.0
            cdr = engine.store.select("cdr", {"dialed_number": "+4930555001"})
            assert len(cdr) == 1 and cdr[0]["direction"] == "outbound" and cdr[0]["agent"] == "1001"
            assert cdr[0]["route"] == "campaign:answer" and cdr[0]["disposition"] == "answered"
            states_log = [r["state"] for r in engine.store.select("agent_state_log", {"agent": "1001"})]
            assert "busy" in states_log and "wrapup" in states_log
            report = await admin.request("campaign.report", name="busy", from_ts=time.time() - 120, interval_s=300)
            assert report["intervals"][0]["attempts"] == 2 and report["intervals"][0]["outcomes"] == {"busy": 2}
        finally:
            await admin.close()
            await phone.stop()
            await engine.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 50))
        rcs = [p.wait(10) for p in procs]
        assert rcs == [0, 0, 0], rcs
    finally:
        for p in procs:
            stop_proc(p)


AMD_CAMPAIGNS = """
[campaigns.mach]
mode = "progressive"
groups = ["sales"]
queue = "sales"
trunk = "mach"
amd = true

[campaigns.pers]
mode = "progressive"
groups = ["sales"]
queue = "sales"
trunk = "pers"
amd = true
"""


def test_amd_on_real_rtp_machine_hung_up_person_connected(tmp_path: pathlib.Path) -> None:
    """Two called parties (our own UAs behind two trunks): one answers with a continuous tone (a long
    'greeting'), one with half a second of tone then silence ('hello?'). The detector runs on the RTP."""
    sip_port, ctl_port = free_port(), free_port()

    async def scenario() -> None:
        from engine import agent_ops  # noqa: F401
        from engine import campaign_ops  # noqa: F401

        machine = Phone("m", 1800.0, answer_after_s=0.1)
        person = Phone("p", 1800.0, answer_after_s=0.1)
        await machine.start()
        await person.start()
        text = (engine_config(tmp_path, sip_port, ctl_port, wrapup_s=1)
                + trunk_section("mach", machine.port) + trunk_section("pers", person.port) + AMD_CAMPAIGNS)
        cfg = parse_config(text, str(tmp_path / "engine.toml"))
        centre = CallCentre()
        svc = CampaignService(tick_s=0.1)
        engine = Engine(cfg, services=[centre, svc])
        await engine.start()
        agent = Phone("2001", AGENT_HZ, answer_after_s=0.2)
        admin = ControlClient(host="127.0.0.1", port=ctl_port, user="admin", password="admin-pw")
        try:
            await admin.connect()
            await admin.request("agent.login", agent="1001", password=AGENT_PASSWORDS["1001"], extension="2001")
            await agent.start(sip_port, AGENT_PASSWORDS["1001"])
            await admin.request("agent.ready", agent="1001")
            await admin.request("campaign.import", name="mach", csv="number\n+4930666001\n")
            await admin.request("campaign.import", name="pers", csv="number\n+4930666002\n")
            await admin.request("campaign.start", name="mach")
            await admin.request("campaign.start", name="pers")
            await person.wait(lambda e: person.dialog is not None, 10)
            await asyncio.sleep(0.5)
            person.party.sending = False  # "hello?" ... then waits
            pers = svc.core("default", "pers")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not any(lv.connected_ts for lv in pers.live.values()):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            agent.bye()  # the agent ends the campaign call
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(
                    svc.core("default", n).book.state.value != "completed" for n in ("mach", "pers")):
                await asyncio.sleep(0.05)
            await engine.store.aflush()
            rows = engine.store.select("campaign_log", limit=100)
            res = {r["campaign"]: (r["outcome"], r["amd"]) for r in rows if r["event"] == "result"}
            assert res == {"mach": ("machine", "machine"), "pers": ("answered", "human")}, res
            assert any(r["event"] == "connected" and r["agent"] == "1001" for r in rows if r["campaign"] == "pers")
            # the machine got our BYE
            await machine.wait(lambda e: type(e).__name__ == "DialogTerminated", 5)
        finally:
            await admin.close()
            await agent.stop()
            await engine.stop()
            await machine.stop()
            await person.stop()

    asyncio.run(asyncio.wait_for(scenario(), 50))
