"""The shipped example flows validate and behave as their comments say."""
from __future__ import annotations

import datetime as dt
import pathlib
from zoneinfo import ZoneInfo

import pytest

from ivr import actions as A
from ivr import events as E
from ivr.cli import check, flow_files
from ivr.csvlookup import CsvLookup
from ivr.flow import load_flow
from ivr_helpers import Call, of

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "flows"
FLOWS = sorted(EXAMPLES.glob("*.toml"))


def test_the_four_examples_exist():
    assert {p.stem for p in FLOWS} >= {"main_menu", "self_service", "survey", "after_hours"}


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_example_validates_without_warnings(path):
    flow = load_flow(path)
    assert flow.warnings == []


def test_check_directory_reports_nothing():
    assert flow_files([EXAMPLES]) == FLOWS
    assert check([EXAMPLES]) == ([], [])


def test_main_menu_in_french(tmp_path):
    c = Call(load_flow(EXAMPLES / "main_menu.toml"))
    c.start()
    c.finish_prompt()
    assert c.played() == ["choose_english", "choose_french"]
    c.dtmf("2")
    assert c.play.items[0].value.endswith("fr/main_menu.wav")
    c.dtmf("1")
    assert c.play.items[0].value.endswith("fr/sales_menu.wav")
    out = c.dtmf("2")
    enq = of(out, A.Enqueue)[0]
    assert enq.queue == "sales"
    assert c.ivr.call_data["department"] == "1" and c.ivr.call_data["sales_topic"] == "2"
    assert c.ivr.call_data["language"] == "fr"


def test_self_service_with_csv_lookup():
    flow = load_flow(EXAMPLES / "self_service.toml")
    tables = CsvLookup()
    c = Call(flow)
    c.start()
    req = of(c.dtmf("10012345"), A.RequestLookup)[0]
    assert req.source == "csv" and req.table == str(EXAMPLES / "tables" / "accounts.csv")
    c.send(tables.lookup(req))
    assert c.played() == ["Hello Alice Martin. Your balance is", "125.40", "euros, due on", "December 1, 2026"]
    assert c.ivr.call_data["customer"] == "Alice Martin"
    c.finish_prompt()
    c.dtmf("1")                                    # another account: unknown three times → agent
    for attempt in range(3):
        req = of(c.dtmf("19999999"), A.RequestLookup)[-1]
        answer = tables.lookup(req)
        assert answer.row is None and answer.error is None
        out = c.send(answer)
        assert c.ivr.variables["misses"] == attempt + 1
        if attempt < 2:
            assert c.played() == ["We could not find account", "1 9 9 9 9 9 9 9"]
            c.finish_prompt()
    assert of(out, A.Enqueue)[0].queue == "billing"


def test_survey_example_stores_two_answers():
    c = Call(load_flow(EXAMPLES / "survey.toml"))
    c.ivr.variables["agent_number"] = "1002"
    c.start()
    c.dtmf("5")                                    # barges into the intro, answers question 1
    out = c.dtmf("1")
    assert of(c.log, A.StoreSurveyResult) == [
        A.StoreSurveyResult("satisfaction", "overall", "5", "1002"),
        A.StoreSurveyResult("satisfaction", "resolved", "1", "1002")]
    c.finish_prompt()
    assert c.log[-1] == A.FlowFinished("hangup", "thanks")


def _wall(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Europe/Paris")).timestamp()


@pytest.mark.parametrize("when, caller, node", [
    ("2026-11-24 10:00", "0611223344", "open"),
    ("2026-11-28 11:00", "0611223344", "open"),          # Saturday morning
    ("2026-11-28 15:00", "0611223344", "closed"),
    ("2026-12-25 10:00", "0611223344", "holiday"),
    ("2026-11-24 10:00", "0899123456", "reject"),
])
def test_after_hours_routing(when, caller, node):
    c = Call(load_flow(EXAMPLES / "after_hours.toml"))
    c.start(caller=caller, wall=_wall(when))
    assert c.node == node


def test_after_hours_duty_numbers_then_voicemail():
    c = Call(load_flow(EXAMPLES / "after_hours.toml"))
    c.start(wall=_wall("2026-11-24 22:00"))
    c.finish_prompt()                               # closed message
    c.finish_prompt()                               # duty announcement
    targets = []
    for _ in range(2):
        t = of(c.log, A.AttemptTransfer)[-1]
        targets.append(t.target)
        c.send(E.TransferCompleted(t.request_id, False, "no_answer"))
    assert targets == ["+33611111111", "+33622222222"] and c.node == "voicemail"


def test_example_prompts_are_real_speech_audio():
    import numpy as np
    import soundfile as sf
    files = sorted((EXAMPLES / "prompts").rglob("*.wav"))
    assert {f.parent.name for f in files} == {"en", "fr"} and len(files) == 16
    for path in files:
        data, rate = sf.read(path, dtype="float64")
        assert rate == 8000 and data.ndim == 1, path
        assert 0.5 < len(data) / rate < 10, path                       # a spoken sentence
        assert np.sqrt(np.mean(data ** 2)) > 0.01, f"{path} is silent"
    # every language directory holds the same prompt names
    names = {lang: {f.stem for f in files if f.parent.name == lang} for lang in ("en", "fr")}
    assert names["en"] == names["fr"]
