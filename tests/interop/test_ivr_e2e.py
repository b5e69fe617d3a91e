"""IVR end to end through a running engine with real SIP and RTP (issue 7),
the caller being a real peer, not the project's own stack.

- baresip calls the engine's trunk, walks the two-level menu and answers the
  post-call survey with its own RFC 4733 sender (``sndcode``), and records
  what it received: its ``dump-*-dec.wav`` is what the caller heard, matched
  by level envelope (an audio fingerprint) against the engine's own espeak-ng
  prompts, and by Goertzel at the agent phone's tone.
- baresip enters an account number (barge-in on the menu prompt, then the
  collect), hears its balance spoken, and the agent's screen pop carries the
  looked-up fields.
- SIPp replays RFC 4733 digit pcaps written by :mod:`ivr_peers` (a second,
  independent RTP sender whose events carry an SSRC other than its audio's) through the same
  collect + lookup for the other account.

Agents' phones are :mod:`engine.sim` phones (they are not under test here);
what the engine stored is read from its SQLite file.
"""
from __future__ import annotations

import asyncio
import json
import pathlib
import time

import numpy as np
import pytest

from conftest_inbound import free_port, next_event_named, sipp_dir, start_sipp, stop_proc, wait_udp_bound
from engine.sim import LOUD_DB, envelope, tone_ratio
from ivr.prompts import say_text
from ivr_e2e_helpers import (
    ACCOUNT, ACCOUNT_PROMPT, BALANCE, CALLER_TONE, DIALED, MENU_PROMPT, SUPPORT_PROMPT, SURVEY_PROMPT, TONES,
    IvrEngine, parties, prewarm_tts, run, wait_agent_state,
)
from ivr_peers import BaresipCaller, heard_match, read_pcap_rtp, write_rfc4733_pcap
from media.dtmf import parse_event
from media.tts import Tts

pytestmark = pytest.mark.interop

SIPP_SCENARIOS = pathlib.Path(__file__).resolve().parent / "sipp"
OTHER_ACCOUNT, OTHER_BALANCE = "20011111", "980"
GOODBYE = "Thank you. Goodbye."


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    e = IvrEngine(tmp_path_factory.mktemp("ivr_e2e"))
    texts = [MENU_PROMPT, SUPPORT_PROMPT, ACCOUNT_PROMPT, SURVEY_PROMPT, "Your balance is", "euros.",
             say_text("number", BALANCE, "en"), say_text("number", OTHER_BALANCE, "en"), GOODBYE]
    pool = prewarm_tts(e.tmp / "tts", texts)
    e.start()
    pool.shutdown(wait=True)
    yield e
    rc = e.stop()
    assert rc == 0, e.log_text()


def tts(eng: IvrEngine, *texts: str) -> np.ndarray:
    """The engine's own prompt audio (same espeak-ng, same cache directory)."""
    t = Tts(eng.tmp / "tts")
    return np.concatenate([t.load(x, language="en") for x in texts])


def sound_s(pcm: np.ndarray) -> float:
    """Seconds of audible 20 ms frames in ``pcm`` (a prompt's speech without its pauses)."""
    return float(np.count_nonzero(envelope(pcm) > LOUD_DB)) * 0.02


def assert_heard(heard: np.ndarray, expected: np.ndarray, what: str) -> int:
    """The frame offset in ``heard`` where ``expected``'s envelope matches (score > 0.85)."""
    score, offset = heard_match(heard, expected)
    assert score > 0.85, f"{what}: best envelope match {score:.2f}"
    return offset


def tone_seconds(pcm: np.ndarray, hz: float) -> float:
    """Seconds of ``pcm`` (20 ms frames) that are audible and mostly a tone at ``hz`` (Goertzel bin)."""
    frames = pcm[:len(pcm) // 160 * 160].reshape(-1, 160)
    loud = envelope(pcm) > LOUD_DB
    return sum(0.02 for f, on in zip(frames, loud) if on and tone_ratio(f, hz) > 0.6)


def assert_tone(pcm: np.ndarray, hz: float, what: str) -> None:
    ratio = tone_ratio(pcm, hz)
    assert ratio > 0.6, f"{what}: only {ratio:.2f} of the power at {hz} Hz"


async def in_thread(fn, *args):  # type: ignore[no-untyped-def]
    """A blocking peer-control call (bsctl, Popen.wait) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_baresip_walks_two_level_menu_then_answers_post_call_survey(eng: IvrEngine, tmp_path: pathlib.Path) -> None:
    """2 then 1 lands in support, the support agent answers, tones cross; the agent
    hangs up first and the caller answers the post-call survey (stored with the agent)."""
    menu, support, survey, goodbye = (tts(eng, t) for t in (MENU_PROMPT, SUPPORT_PROMPT, SURVEY_PROMPT, GOODBYE))
    caller = BaresipCaller(tmp_path, "caller", "4917011110001", CALLER_TONE)

    async def scenario() -> str:
        async with parties(eng) as p:
            sales_client, sales_phone = await p.agent("1001")
            client, phone = await p.agent("1002")
            await in_thread(caller.start)
            await in_thread(caller.dial, f"sip:{DIALED}@127.0.0.1:{eng.sip_port}")
            await caller.wait_prompt(0.7 * sound_s(menu))     # the whole main menu prompt
            await in_thread(caller.press, "2")
            await caller.wait_prompt(0.7 * sound_s(support))  # the whole support menu prompt
            await in_thread(caller.press, "1")
            ringing = await next_event_named(client, "call.ringing", 10)
            assert ringing["data"]["queue"] == "support"
            assert ringing["data"]["variables"]["department"] == "2"
            assert ringing["data"]["variables"]["support_topic"] == "1"
            assert ringing["data"]["caller_number"] == "4917011110001"
            await phone.wait_answered(1)
            await next_event_named(client, "call.answered", 5)
            await asyncio.sleep(1.5)
            heard_by_agent = phone.party.heard_audio()[-4800:]
            assert_tone(heard_by_agent, CALLER_TONE, "agent hears baresip's microphone")
            assert sales_phone.offered == 0  # the sales agent was never offered the call

            phone.hangup()                   # the agent hangs up first: the caller stays for the survey
            await wait_agent_state(client, "wrapup")
            caller.mark = len(caller.received_so_far())
            await caller.wait_prompt(0.7 * sound_s(survey))   # the whole survey question
            await in_thread(caller.press, "4")
            await in_thread(caller.wait_closed, 15)  # the survey's hangup node ends the call
            ended = await next_event_named(client, "call.ended", 10)
            assert (ended["data"]["reason"], ended["data"]["disposition"]) == ("ivr_survey_done", "answered")
            return ended["data"]["call_id"]

    try:
        call_id = run(scenario(), 60)
    finally:
        caller.stop()
    heard = caller.heard()
    first = assert_heard(heard, menu, "main menu prompt")
    second = assert_heard(heard, support, "support menu prompt")
    third = assert_heard(heard, survey, "survey question")
    fourth = assert_heard(heard, goodbye, "survey goodbye")
    assert first < second < third < fourth, (first, second, third, fourth)
    # Between the support menu and the survey question the caller talked to the agent: its phone's tone.
    bridged = heard[second * 160 + len(support):third * 160]
    assert tone_seconds(bridged, TONES["1002"]) > 1.0, "caller hears the agent's phone"
    assert tone_seconds(heard[:second * 160], TONES["1002"]) < 0.1  # not before the agent answered

    (cdr,) = eng.db_rows("SELECT * FROM cdr WHERE call_id = ?", call_id)
    assert (cdr["flow"], cdr["queue"], cdr["agent"], cdr["disposition"]) == ("centre", "support", "1002", "answered")
    assert cdr["end_reason"] == "ivr_survey_done" and cdr["caller_number"] == "4917011110001"
    assert cdr["talk_s"] < cdr["end_ts"] - cdr["answered_ts"] - 1.0  # talk time stops when the agent left
    variables = json.loads(cdr["data"])["variables"]
    assert variables["department"] == "2" and variables["support_topic"] == "1"
    surveys = eng.db_rows("SELECT * FROM surveys WHERE call_id = ?", call_id)
    assert [(r["agent"], r["queue"], r["question"], r["score"]) for r in surveys] == [
        ("1002", "support", "satisfaction/overall", 4)]
    (rec,) = eng.db_rows("SELECT * FROM recordings WHERE call_id = ?", call_id)
    assert pathlib.Path(rec["path"]).exists()


def test_baresip_collect_and_lookup_speaks_balance_and_screen_pop_has_it(eng: IvrEngine,
                                                                        tmp_path: pathlib.Path) -> None:
    menu, account_prompt = tts(eng, MENU_PROMPT), tts(eng, ACCOUNT_PROMPT)
    balance = tts(eng, "Your balance is", say_text("number", BALANCE, "en"), "euros.")
    other = tts(eng, "Your balance is", say_text("number", OTHER_BALANCE, "en"), "euros.")
    caller = BaresipCaller(tmp_path, "caller", "4917011110002", CALLER_TONE)

    async def scenario() -> str:
        async with parties(eng) as p:
            client, phone = await p.agent("1002")
            await in_thread(caller.start)
            await in_thread(caller.dial, f"sip:{DIALED}@127.0.0.1:{eng.sip_port}")
            await caller.wait_sound(0.8)
            await in_thread(caller.press, "3")           # barge-in: the menu prompt stops at the digit
            await caller.wait_prompt(0.7 * sound_s(account_prompt))  # the whole account prompt
            await in_thread(caller.press, ACCOUNT)
            ringing = await next_event_named(client, "call.ringing", 20)
            variables = ringing["data"]["variables"]
            assert variables["account"] == ACCOUNT and variables["acct_balance"] == BALANCE
            assert variables["acct_name"] == "Alice Martin" and variables["acct_found"] in (True, "true", "1", 1)
            await phone.wait_answered(1)
            await next_event_named(client, "call.answered", 5)
            await asyncio.sleep(0.5)
            await in_thread(caller.hangup)
            ended = await next_event_named(client, "call.ended", 10)
            assert ended["data"]["reason"] == "caller_hangup"
            return ended["data"]["call_id"]

    try:
        call_id = run(scenario(), 60)
    finally:
        caller.stop()
    heard = caller.heard()
    at_account = assert_heard(heard, account_prompt, "account prompt")
    at_balance = assert_heard(heard, balance, "spoken balance")
    assert at_account < at_balance
    # Another balance's words do not match what was heard as well.
    assert heard_match(heard, other)[0] < heard_match(heard, balance)[0]
    assert heard_match(heard, tts(eng, SURVEY_PROMPT))[0] < 0.8  # a prompt this caller never got
    # Barge-in: the caller heard less of the menu than the whole prompt before the account prompt began.
    before = envelope(heard[:at_account * 160])
    menu_heard_s = float(np.count_nonzero(before > LOUD_DB)) * 0.02
    menu_s = sound_s(menu)
    assert 0.3 < menu_heard_s < menu_s - 0.5, (menu_heard_s, menu_s)

    (cdr,) = eng.db_rows("SELECT * FROM cdr WHERE call_id = ?", call_id)
    variables = json.loads(cdr["data"])["variables"]
    assert variables["account"] == ACCOUNT and variables["acct_balance"] == BALANCE
    assert (cdr["queue"], cdr["agent"], cdr["caller_number"]) == ("support", "1002", "4917011110002")


def test_rfc4733_pcap_writer_round_trip(tmp_path: pathlib.Path) -> None:
    """The pcaps SIPp replays below hold what media.dtmf reads as the intended digits."""
    path = tmp_path / "d.pcap"
    length_s = write_rfc4733_pcap(path, "10#*", tone_ms=100, gap_ms=80)
    assert 0.5 < length_s < 0.7  # 4 x (100 ms event + 80 ms gap), minus the last gap
    packets = read_pcap_rtp(path)
    assert len(packets) == 4 * 7
    ended = []
    for rtp in packets:
        assert rtp[1] & 0x7F == 101
        ev = parse_event(rtp[12:])
        if ev.end:
            ended.append((ev.event, ev.duration))
    assert ended == [(1, 800)] * 3 + [(0, 800)] * 3 + [(11, 800)] * 3 + [(10, 800)] * 3
    markers = [rtp[1] >> 7 for rtp in packets]
    assert markers == ([1] + [0] * 6) * 4


def test_sipp_pcap_digits_collect_and_lookup(eng: IvrEngine, tmp_path: pathlib.Path) -> None:
    """SIPp calls, barges into the menu with a pcap of "3", then replays a pcap of the
    other account number; the agent's screen pop and the CDR carry its lookup."""
    d = sipp_dir(tmp_path, "sipp", int(CALLER_TONE), 4.0)
    write_rfc4733_pcap(d / "menu3.pcap", "3")
    # the same stream continued: later sequence numbers and timestamps (SIPp replays them verbatim)
    write_rfc4733_pcap(d / "account.pcap", OTHER_ACCOUNT, seq=1100, timestamp=200000)
    sip_port = free_port()
    sipp = start_sipp(["-sf", str(SIPP_SCENARIOS / "caller_ivr_pcap_dtmf.xml"), f"127.0.0.1:{eng.sip_port}",
                       "-s", DIALED, "-i", "127.0.0.1", "-p", str(sip_port), "-mp", str(free_port()),
                       "-m", "1", "-recv_timeout", "10000", "-timeout", "40", "-timeout_error"], d)

    async def scenario() -> str:
        async with parties(eng) as p:
            client, phone = await p.agent("1002")
            t0 = time.monotonic()
            ringing = await next_event_named(client, "call.ringing", 25)
            variables = ringing["data"]["variables"]
            assert variables["department"] == "3"
            assert variables["account"] == OTHER_ACCOUNT and variables["acct_balance"] == OTHER_BALANCE
            assert variables["acct_name"] == "Chen Wei"
            await phone.wait_answered(1)
            ended = await next_event_named(client, "call.ended", 25)
            assert ended["data"]["reason"] == "caller_hangup", ended
            assert time.monotonic() - t0 < 30
            rc = await in_thread(sipp.wait, 10)
            assert rc == 0, (d / "sipp.log").read_text(errors="replace")[-2000:]
            return ended["data"]["call_id"]

    try:
        run(wait_udp_bound(sip_port))
        call_id = run(scenario(), 60)
    finally:
        stop_proc(sipp)
    (cdr,) = eng.db_rows("SELECT * FROM cdr WHERE call_id = ?", call_id)
    variables = json.loads(cdr["data"])["variables"]
    assert (variables["account"], variables["acct_balance"]) == (OTHER_ACCOUNT, OTHER_BALANCE)
    assert (cdr["queue"], cdr["agent"], cdr["disposition"]) == ("support", "1002", "answered")
