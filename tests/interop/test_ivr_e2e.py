"""IVR end to end through a running engine with real SIP and RTP (issue 7).

Simulated parties (:mod:`engine.sim`, the project's own SIP/RTP stack) walk
the flows by RFC 4733 DTMF; what the caller hears is checked by level
envelope against the engine's own espeak-ng prompts (an audio fingerprint)
and by Goertzel at the tones the other side sends; what the engine stored is
read from its SQLite file.
"""
from __future__ import annotations

import asyncio
import json
import pathlib

import numpy as np
import pytest

from conftest_inbound import next_event_named
from engine.sim import envelope, envelope_match, tone_ratio
from ivr.prompts import say_text
from ivr_e2e_helpers import (
    ACCOUNT, ACCOUNT_PROMPT, BALANCE, CALLER_TONE, DIALED, MENU_PROMPT, SUPPORT_PROMPT, SURVEY_PROMPT, TONES,
    IvrEngine, parties, prewarm_tts, run, wait_agent_state,
)
from media.tts import Tts

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    e = IvrEngine(tmp_path_factory.mktemp("ivr_e2e"))
    texts = [MENU_PROMPT, SUPPORT_PROMPT, ACCOUNT_PROMPT, SURVEY_PROMPT, "Your balance is", "euros.",
             say_text("number", BALANCE, "en"), say_text("number", "980", "en"), "Thank you. Goodbye."]
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


def assert_heard(levels: np.ndarray, expected: np.ndarray, what: str) -> int:
    score, offset = envelope_match(levels, envelope(expected))
    assert score > 0.85, f"{what}: best envelope match {score:.2f}"
    return offset


def assert_tone(pcm: np.ndarray, hz: float, what: str) -> None:
    ratio = tone_ratio(pcm, hz)
    assert ratio > 0.6, f"{what}: only {ratio:.2f} of the power at {hz} Hz"


def test_two_level_menu_tones_cross_then_post_call_survey(eng: IvrEngine) -> None:
    """2 then 1 lands in support, the support agent answers, tones cross; the agent
    hangs up first and the caller answers the post-call survey (stored with the agent)."""
    async def scenario() -> str:
        async with parties(eng) as p:
            sales_client, sales_phone = await p.agent("1001")
            client, phone = await p.agent("1002")
            call = p.trunk.call(DIALED, caller_number="+4917011110001", tone_hz=CALLER_TONE, keep_audio=True)
            await call.wait_answered()
            await call.wait_heard(1.0)
            await call.wait_quiet(0.6)       # the whole main menu prompt
            await call.press("2")
            await call.wait_heard(1.0)
            await call.wait_quiet(0.6)       # the whole support menu prompt
            await call.press("1")
            ringing = await next_event_named(client, "call.ringing", 10)
            assert ringing["data"]["queue"] == "support"
            assert ringing["data"]["variables"]["department"] == "2"
            assert ringing["data"]["variables"]["support_topic"] == "1"
            await phone.wait_answered(1)
            await next_event_named(client, "call.answered", 5)
            await asyncio.sleep(1.2)
            heard_by_caller = call.party.heard_audio()[-4800:]
            heard_by_agent = phone.party.heard_audio()[-4800:]
            assert_tone(heard_by_caller, TONES["1002"], "caller hears the support agent's phone")
            assert_tone(heard_by_agent, CALLER_TONE, "agent hears the caller")
            assert sales_phone.offered == 0  # the sales agent was never offered the call

            phone.hangup()                   # the agent hangs up first: the caller stays for the survey
            await wait_agent_state(client, "wrapup")
            await call.wait_heard(1.0)
            await call.wait_quiet(0.6)
            assert call.up, "the caller must stay on the line for the survey"
            await call.press("4")
            assert await call.wait_ended(15) == "remote_hangup"  # the survey's hangup node ends the call
            ended = await next_event_named(client, "call.ended", 10)
            assert (ended["data"]["reason"], ended["data"]["disposition"]) == ("ivr_survey_done", "answered")

            levels = call.party.levels
            first = assert_heard(levels, tts(eng, MENU_PROMPT), "main menu prompt")
            second = assert_heard(levels, tts(eng, SUPPORT_PROMPT), "support menu prompt")
            third = assert_heard(levels, tts(eng, SURVEY_PROMPT), "survey question")
            fourth = assert_heard(levels, tts(eng, "Thank you. Goodbye."), "survey goodbye")
            assert first < second < third < fourth
            return call.call_id

    call_id = run(scenario())
    (cdr,) = eng.db_rows("SELECT * FROM cdr WHERE call_id = ?", call_id)
    assert (cdr["flow"], cdr["queue"], cdr["agent"], cdr["disposition"]) == ("centre", "support", "1002", "answered")
    assert cdr["end_reason"] == "ivr_survey_done"
    assert cdr["talk_s"] < cdr["end_ts"] - cdr["answered_ts"] - 1.0  # talk time stops when the agent left
    variables = json.loads(cdr["data"])["variables"]
    assert variables["department"] == "2" and variables["support_topic"] == "1"
    surveys = eng.db_rows("SELECT * FROM surveys WHERE call_id = ?", call_id)
    assert [(r["agent"], r["queue"], r["question"], r["score"]) for r in surveys] == [
        ("1002", "support", "satisfaction/overall", 4)]
    (rec,) = eng.db_rows("SELECT * FROM recordings WHERE call_id = ?", call_id)
    assert pathlib.Path(rec["path"]).exists()


def test_collect_and_lookup_speaks_balance_and_screen_pop_has_it(eng: IvrEngine) -> None:
    async def scenario() -> str:
        async with parties(eng) as p:
            client, phone = await p.agent("1002")
            call = p.trunk.call(DIALED, caller_number="+4917011110002", tone_hz=CALLER_TONE, keep_audio=True)
            await call.wait_answered()
            await call.wait_heard(0.8)
            await call.press("3")            # barge-in: the menu prompt stops at the digit
            await call.wait_heard(1.0)
            await call.wait_quiet(0.6)
            await call.press(ACCOUNT, duration_ms=60, gap_ms=60)
            ringing = await next_event_named(client, "call.ringing", 20)
            variables = ringing["data"]["variables"]
            assert variables["account"] == ACCOUNT and variables["acct_balance"] == BALANCE
            assert variables["acct_name"] == "Alice Martin" and variables["acct_found"] in (True, "true", "1", 1)
            await phone.wait_answered(1)
            await asyncio.sleep(0.3)
            call.hangup()
            await next_event_named(client, "call.ended", 10)
            levels = call.party.levels
            assert_heard(levels, tts(eng, ACCOUNT_PROMPT), "account prompt")
            balance = tts(eng, "Your balance is", say_text("number", BALANCE, "en"), "euros.")
            assert_heard(levels, balance, "spoken balance")
            # Another balance's words do not match what was heard as well.
            other = tts(eng, "Your balance is", say_text("number", "980", "en"), "euros.")
            assert envelope_match(levels, envelope(other))[0] < envelope_match(levels, envelope(balance))[0]
            return call.call_id

    call_id = run(scenario())
    (cdr,) = eng.db_rows("SELECT * FROM cdr WHERE call_id = ?", call_id)
    variables = json.loads(cdr["data"])["variables"]
    assert variables["account"] == ACCOUNT and variables["acct_balance"] == BALANCE
    assert cdr["queue"] == "support" and cdr["agent"] == "1002"
