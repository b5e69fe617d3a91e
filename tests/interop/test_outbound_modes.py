"""Notification (with DTMF confirmation), preview and survey campaigns over real SIP and RTP.

The called parties are engine/sim.py phones behind an outbound trunk: one
:class:`engine.sim.PhoneBank` endpoint answers the engine's INVITEs by
Request-URI user (the dialled number), keeps what each callee hears (decoded
G.711 per 20 ms frame) and sends RFC 4733 telephone-events.  The agent phone
is a phone of the same bank, registered with digest auth.  One more
notification callee is SIPp (``sipp/callee_confirm_dtmf.xml``: answers,
streams a tone, replays the Debian RFC 4733 pcap of digit 5 with its own SSRC,
expects our BYE at once) behind a second trunk, so the confirm digit also comes from an
implementation that is not ours.  Everything the engine sees is real UDP SIP
and RTP on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import json
import pathlib
import time
from typing import Any, Callable

import numpy as np
import pytest

from conftest_callctl import AGENT_PASSWORDS, trunk_section
from conftest_inbound import DOMAIN, engine_config, free_port, sipp_dir, start_sipp, stop_proc, wait_udp_bound
from engine.app import Engine
from engine.callpath import CallCentre
from engine.campaign_service import CampaignService
from engine.client import ControlClient
from engine.config import parse_config
from engine.ivrbridge import prompt_audio
from engine.sim import LOUD_DB, PhoneBank, RtpPump, SimPhone, envelope, envelope_match, tone_ratio
from ivr.actions import PromptItem

pytestmark = pytest.mark.interop

SIPP = pathlib.Path(__file__).resolve().parent / "sipp"

AGENT_TONE_HZ = 1400.0
MESSAGE = "tts:Hello {name}. Your parcel arrives tomorrow morning. Press 1 to confirm."

SURVEY_FLOW = """
[flow]
name = "nps"
start = "score"

[nodes.score]
type = "survey"
survey = "nps"
question = "score"
prompts = [{ tts = "How likely are you to recommend us? Press a key from 1 to 5." }]
digits = "12345"
timeout_s = 6
retries = 1
next = "bye"

[nodes.bye]
type = "hangup"
prompts = [{ tts = "Thank you." }]
reason = "survey_done"
"""

CAMPAIGNS = """
[flows.nps]
path = "{tmp}/nps.toml"

[campaigns.notify]
mode = "notification"
trunk = "out"
message = "{message}"
confirm_digit = "1"
confirm_timeout_s = 1.0
max_channels = 2

[campaigns.notify_sipp]
mode = "notification"
trunk = "sipp"
message = "tts:Please confirm your appointment on Monday. Press 5 to confirm, now or after the message."
confirm_digit = "5"
confirm_timeout_s = 3.0

[campaigns.poll]
mode = "survey"
trunk = "out"
flow = "nps"

[campaigns.pv]
mode = "preview"
groups = ["sales"]
queue = "sales"
trunk = "out"
"""

NUMBERS = {"confirms": "+4930777001", "wrong_key": "+4930777002", "survey": "+4930777003",
           "preview": "+4930777004"}
SIPP_NUMBER = "+4930777005"


def callee(bank: PhoneBank, number: str, answer_after_s: float = 0.2) -> SimPhone:
    """A called party at ``number`` behind the trunk (answers; no registration: the trunk routes to it)."""
    phone = SimPhone(bank, number, "", 0.0, answer_after_s, True)
    phone.registered = True
    bank.phones[number] = phone
    return phone


def heard_speech_s(phone: SimPhone) -> float:
    party = phone.party or phone.last_party
    assert party is not None
    return float(np.count_nonzero(party.levels > LOUD_DB)) * 0.02


async def until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


async def speech_then_press(phone: SimPhone, digits: str, speech_s: float = 1.0) -> None:
    """Wait until ``phone`` answered and heard ``speech_s`` of loud audio, then press ``digits`` (RFC 4733)."""
    await phone.wait_answered(timeout_s=15)
    await until(lambda: phone.party is not None and phone.party.loud_frames * 0.02 >= speech_s, 15,
                f"{phone.extension} hears speech")
    assert phone.party is not None
    phone.party.send_digits(digits)


def test_notification_survey_and_preview_over_sip(tmp_path: pathlib.Path) -> None:
    sip_port, ctl_port, sipp_port = free_port(), free_port(), free_port()
    (tmp_path / "nps.toml").write_text(SURVEY_FLOW)
    sipp = start_sipp(["-sf", str(SIPP / "callee_confirm_dtmf.xml"), "-i", "127.0.0.1", "-p", str(sipp_port),
                       "-mp", str(free_port()), "-m", "1", "-timeout", "40", "-timeout_error"],
                      sipp_dir(tmp_path, "sipp", 700, 2.0))

    async def scenario() -> None:
        from engine import agent_ops  # noqa: F401
        from engine import campaign_ops  # noqa: F401

        pump = RtpPump(capacity=8)
        pump.start()
        bank = PhoneBank(("127.0.0.1", sip_port), DOMAIN, pump)
        _, bank_port = await bank.start()
        phones = {k: callee(bank, n) for k, n in NUMBERS.items()}
        text = (engine_config(tmp_path, sip_port, ctl_port, wrapup_s=1) + trunk_section("out", bank_port)
                + trunk_section("sipp", sipp_port) + CAMPAIGNS.format(tmp=tmp_path, message=MESSAGE))
        cfg = parse_config(text, str(tmp_path / "engine.toml"))
        centre = CallCentre()
        svc = CampaignService(tick_s=0.1)
        engine = Engine(cfg, services=[centre, svc])
        await engine.start()
        admin = ControlClient(host="127.0.0.1", port=ctl_port, user="admin", password="admin-pw")
        alice = ControlClient(host="127.0.0.1", port=ctl_port, user="alice", password=AGENT_PASSWORDS["1001"])
        try:
            await wait_udp_bound(sipp_port)
            await admin.connect()
            await alice.connect()
            await alice.request("agent.login", agent="1001", password=AGENT_PASSWORDS["1001"], extension="2001")
            agent = await bank.register("2001", AGENT_PASSWORDS["1001"], tone_hz=AGENT_TONE_HZ,
                                        answer_after_s=0.2, keep_audio=True)
            await alice.request("agent.ready", agent="1001")
            await admin.request("campaign.import", name="notify",
                                csv=f"number,name\n{NUMBERS['confirms']},Anna\n{NUMBERS['wrong_key']},Bert\n")
            await admin.request("campaign.import", name="poll", csv=f"number,name\n{NUMBERS['survey']},Cleo\n")
            await admin.request("campaign.import", name="notify_sipp", csv=f"number\n{SIPP_NUMBER}\n")
            await admin.request("campaign.import", name="pv", csv=f"number,name\n{NUMBERS['preview']},Dora\n")
            for name in ("notify", "poll", "pv", "notify_sipp"):
                await admin.request("campaign.start", name=name)

            # Preview: the agent sees the record, accepts; the engine dials and connects it to the agent.
            offer = await alice.request("campaign.preview_next", name="pv")
            assert offer["record"]["number"] == NUMBERS["preview"] and offer["record"]["fields"] == {"name": "Dora"}
            placed = await alice.request("campaign.preview_accept", name="pv", record_id=offer["record"]["record_id"])

            # Notification: one callee presses 1 during the message, the other a wrong key only.
            await phones["confirms"].wait_answered(timeout_s=15)
            await until(lambda: any(c["confirm"] == "pending" for c in svc.status(svc.core("default", "notify"))
                                    ["live_calls"]), 5, "confirmation pending in campaign.status")
            await asyncio.gather(speech_then_press(phones["confirms"], "1"),
                                 speech_then_press(phones["wrong_key"], "7"),
                                 speech_then_press(phones["survey"], "4", speech_s=1.5))
            await phones["preview"].wait_answered(timeout_s=10)
            await agent.wait_answered(timeout_s=10)
            # Bridged: the callee hears the agent phone's tone.
            await asyncio.sleep(1.0)
            heard = phones["preview"].party.heard_audio()[-8000:]  # type: ignore[union-attr]
            assert tone_ratio(heard, AGENT_TONE_HZ) > 0.5, tone_ratio(heard, AGENT_TONE_HZ)
            agent.hangup()

            await until(lambda: all(svc.core("default", n).book.state.value == "completed"
                                    for n in ("notify", "poll", "pv", "notify_sipp")), 20, "campaigns completed")
            await until(lambda: all(p.ended >= 1 for p in phones.values()), 10, "every callee's call ended")
            await engine.store.aflush()
            rows = engine.store.select("campaign_log", limit=1000)
            by: dict[str, list[tuple[str, str]]] = {}
            for r in rows:
                by.setdefault(r["number"] or "", []).append((r["event"], r["outcome"]))
            assert by[NUMBERS["confirms"]] == [("attempt", ""), ("result", "answered"), ("confirmed", "confirmed"),
                                               ("ended", "")]
            assert by[NUMBERS["wrong_key"]] == [("attempt", ""), ("result", "answered"),
                                                ("not_confirmed", "not_confirmed"), ("ended", "")]
            assert by[NUMBERS["survey"]] == [("attempt", ""), ("result", "answered"), ("ended", "")]
            assert by[NUMBERS["preview"]] == [("attempt", ""), ("result", "answered"), ("connected", ""),
                                              ("ended", "")]
            # SIPp's digit 5 (its own pcap, another SSRC) confirmed during the message; our BYE ended SIPp.
            assert by[SIPP_NUMBER] == [("attempt", ""), ("result", "answered"), ("confirmed", "confirmed"),
                                       ("ended", "")]
            sipp_confirm = next(r for r in rows if r["event"] == "confirmed" and r["number"] == SIPP_NUMBER)
            assert json.loads(sipp_confirm["data"])["digit"] == "5"
            assert 1.5 < json.loads(sipp_confirm["data"])["after_s"] < 4.0
            confirmed = next(r for r in rows if r["event"] == "confirmed" and r["number"] == NUMBERS["confirms"])
            ended: dict[str, Any] = {r["number"]: r for r in rows if r["event"] == "ended"}
            assert '"digit": "1"' in confirmed["data"]
            assert '"reason": "confirmed"' in ended[NUMBERS["confirms"]]["data"]
            assert '"reason": "not_confirmed"' in ended[NUMBERS["wrong_key"]]["data"]
            # Both heard the spoken message; the one who never confirmed heard it to its end (about 4 s of
            # espeak-ng speech), the one who pressed 1 after a second was released early.
            full, cut = heard_speech_s(phones["wrong_key"]), heard_speech_s(phones["confirms"])
            assert full > 2.5 and 0.8 <= cut < full - 1.0, (full, cut)
            # What Bert heard is the message with his name in it: the level envelope of the same espeak-ng
            # audio the engine rendered is found in what his RTP carried.
            # (Same audio scores ~1.0 and another sentence ~0.3; 0.7 leaves room for a frame lost on a loaded box.)
            heard_levels = phones["wrong_key"].last_party.levels  # type: ignore[union-attr]
            loop = asyncio.get_running_loop()
            expected, other = [await loop.run_in_executor(None, prompt_audio, (PromptItem("tts", t, "en"),)) for t in
                               (MESSAGE[4:].format(name="Bert"), "Please hold the line, an agent will be with you.")]
            score, other_score = (envelope_match(heard_levels, envelope(a))[0] for a in (expected, other))
            assert score > 0.7 and other_score < 0.6, (score, other_score)
            report = await admin.request("campaign.report", name="notify", from_ts=time.time() - 120, interval_s=300)
            (b,) = report["intervals"]
            assert (b["attempts"], b["confirmed"], b["not_confirmed"]) == (2, 1, 1), b
            # Survey: the answer (key 4) is stored with the campaign call's id.
            (survey,) = engine.store.select("surveys", {"call_id": ended[NUMBERS["survey"]]["call_id"]})
            assert survey["question"] == "nps/score" and survey["score"] == 4
            # Preview: placed for and connected to agent 1001; an outbound CDR.
            connected = next(r for r in rows if r["event"] == "connected")
            assert connected["agent"] == "1001" and connected["call_id"] == placed["call_id"]
            await until(lambda: bool(engine.store.select("cdr", {"dialed_number": NUMBERS["preview"]})), 5, "cdr")
            (cdr,) = engine.store.select("cdr", {"dialed_number": NUMBERS["preview"]})
            assert cdr["direction"] == "outbound" and cdr["agent"] == "1001" and cdr["route"] == "campaign:pv"
        finally:
            await admin.close()
            await alice.close()
            await engine.stop()
            await bank.stop()
            await pump.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 60))
        assert sipp.wait(10) == 0
    finally:
        stop_proc(sipp)


PREDICTIVE = """
[campaigns.pred]
mode = "predictive"
groups = ["sales"]
queue = "sales"
trunk = "out"
connect_timeout_s = 0.8
max_drop_rate = 0.5
drop_message = "tts:Sorry, all our agents are busy. We will call you again."
"""


def test_predictive_overdial_drops_with_message_over_sip(tmp_path: pathlib.Path) -> None:
    """The pacer, warmed with a 30 % answer rate, dials two numbers for the one idle agent; the agent's
    phone never answers, so both answered callees wait ``connect_timeout_s``, hear the drop message and
    are released: outcome ``dropped``; the agent's offer is withdrawn."""
    sip_port, ctl_port = free_port(), free_port()

    async def scenario() -> None:
        from engine import agent_ops  # noqa: F401
        from engine import campaign_ops  # noqa: F401

        pump = RtpPump(capacity=6)
        pump.start()
        bank = PhoneBank(("127.0.0.1", sip_port), DOMAIN, pump)
        _, bank_port = await bank.start()
        numbers = ("+4930888001", "+4930888002")
        phones = [callee(bank, n, answer_after_s=0.1) for n in numbers]
        text = engine_config(tmp_path, sip_port, ctl_port, wrapup_s=1) + trunk_section("out", bank_port) + PREDICTIVE
        cfg = parse_config(text, str(tmp_path / "engine.toml"))
        centre = CallCentre()
        svc = CampaignService(tick_s=0.1)
        engine = Engine(cfg, services=[centre, svc])
        await engine.start()
        admin = ControlClient(host="127.0.0.1", port=ctl_port, user="admin", password="admin-pw")
        try:
            await admin.connect()
            await admin.request("agent.login", agent="1001", password=AGENT_PASSWORDS["1001"], extension="2001")
            agent = await bank.register("2001", AGENT_PASSWORDS["1001"], answer_after_s=60.0)
            await admin.request("agent.ready", agent="1001")
            await admin.request("campaign.import", name="pred", csv="number\n" + "\n".join(numbers) + "\n")
            core = svc.core("default", "pred")
            for i in range(300):  # history: 30 % answered, long handle times
                core.pacer.attempt_finished(i < 90, 5.0)
                core.pacer.handle_finished(60.0)
                core.pacer.answered_call(dropped=False)
            await admin.request("campaign.start", name="pred")
            await until(lambda: core.book.state.value == "completed", 20, "campaign completed")
            await until(lambda: all(p.ended >= 1 for p in phones), 10, "callees released")
            await engine.store.aflush()
            rows = engine.store.select("campaign_log", {"campaign": "pred"}, limit=100)
            results = sorted((r["number"], r["outcome"]) for r in rows if r["event"] == "result")
            assert results == [(n, "dropped") for n in numbers], results
            waits = [r["wait_s"] for r in rows if r["event"] == "result"]
            assert all(0.7 <= w < 3.0 for w in waits), waits
            for p in phones:  # each heard the spoken drop message
                assert heard_speech_s(p) > 1.0, heard_speech_s(p)
            assert agent.answered == 0 and agent.offered >= 1
            st = await admin.request("campaign.status", name="pred")
            assert st["pacing"]["dropped"] == 2
            await until(lambda: centre.agents["1001"].state == "ready", 5, "agent ready again")
        finally:
            await admin.close()
            await engine.stop()
            await bank.stop()
            await pump.stop()

    asyncio.run(asyncio.wait_for(scenario(), 45))
