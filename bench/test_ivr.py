"""IVR interpreter throughput: steps (events handled) per second.

A scripted self-service call (welcome → language menu → main menu with
barge-in → collect 8 digits → CSV-style lookup → balance → survey → hang up)
is replayed through the sans-IO interpreter; the baseline in the same run is a
trivial dict-dispatch state machine taking the same number of transitions, so
the ratio says what the interpreter's validation, prompt resolution, timers,
logging calls and call data cost per step.  A second pair runs 200 calls
concurrently on the asyncio runner with an adapter that answers at once.
Figures: docs/performance/ivr.md.
"""
from __future__ import annotations

import asyncio
import pathlib

from ivr import actions as A
from ivr import events as E
from ivr.flow import load_flow_text
from ivr.interpreter import Interpreter
from ivr.runner import IvrCall

FLOW = """
[flow]
start = "welcome"
languages = ["en", "fr"]

[nodes.welcome]
type = "play"
prompts = [{ tts = "Welcome" }]
next = "lang"

[nodes.lang]
type = "menu"
prompts = [{ tts = "1 English, 2 French" }]
choices = { "1" = "en", "2" = "fr" }
on_failure = "en"

[nodes.en]
type = "language"
language = "en"
next = "main"

[nodes.fr]
type = "language"
language = "fr"
next = "main"

[nodes.main]
type = "menu"
prompts = [{ tts = "1 balance, 2 agent" }]
choices = { "1" = "account", "2" = "bye" }
variable = "choice"
on_failure = "bye"

[nodes.account]
type = "collect"
prompts = [{ tts = "Account number" }]
variable = "account"
min_digits = 8
max_digits = 8
next = "find"
on_failure = "bye"

[nodes.find]
type = "lookup"
table = "accounts"
column = "account"
key = "{account}"
into = "acct"
found = "say"
not_found = "bye"

[nodes.say]
type = "play"
prompts = [{ tts = "Your balance is" }, { say_number = "{acct_balance}" }]
next = "rate"

[nodes.rate]
type = "survey"
survey = "sat"
question = "q1"
prompts = [{ tts = "Rate us" }]
digits = "12345"
next = "bye"

[nodes.bye]
type = "hangup"
"""
CALLS = 200
ROW = {"balance": "125"}


def _flow():
    return load_flow_text(FLOW, "bench.toml", pathlib.Path("."))


def one_call(flow, call_id: str) -> int:
    """Drive one call; returns the number of events handled."""
    ivr = Interpreter(flow, call_id)
    now = 0.0
    last: list[A.Action] = ivr.handle(E.CallStarted("0611223344", "800", 1_780_000_000.0), now)

    def play_id() -> int:
        for action in reversed(last):
            if isinstance(action, A.PlayPrompts):
                return action.play_id
        raise AssertionError("no prompt")

    last = ivr.handle(E.PromptFinished(play_id()), now)         # welcome done
    last = ivr.handle(E.DtmfReceived("2"), now)                 # barge into the language menu
    last = ivr.handle(E.DtmfReceived("1"), now)                 # main menu: balance
    for digit in "1001234":
        last = ivr.handle(E.DtmfReceived(digit), now)
    last = ivr.handle(E.DtmfReceived("5"), now)                 # 8th digit → lookup
    request = next(a for a in last if isinstance(a, A.RequestLookup))
    last = ivr.handle(E.LookupCompleted(request.request_id, ROW), now)
    last = ivr.handle(E.PromptFinished(play_id()), now)         # balance spoken
    last = ivr.handle(E.DtmfReceived("4"), now)                 # survey answer → hang up
    assert ivr.finished
    return ivr.steps


STEPS_PER_CALL = one_call(_flow(), "probe")

TABLE = {  # the baseline: a dict-dispatch state machine with the same number of steps
    0: {"start": 1}, 1: {"prompt": 2}, 2: {"digit": 3}, 3: {"digit": 4},
    4: {"digit": 4, "lookup": 5}, 5: {"prompt": 6}, 6: {"digit": 7},
}


def baseline_call() -> int:
    state = 0
    data: dict[str, str] = {}
    script = ["start", "prompt", "digit", "digit", *["digit"] * 8, "lookup", "prompt", "digit"]
    for index, event in enumerate(script):
        if state == 4 and event == "lookup":
            data["acct_balance"] = ROW["balance"]
        state = TABLE[state][event] if event in TABLE[state] else state
        if index == 3:
            state = 4
    return len(script)


def test_interpreter_steps(benchmark):
    flow = _flow()

    def run() -> int:
        return sum(one_call(flow, f"c{i}") for i in range(CALLS))

    steps = benchmark.pedantic(run, rounds=15, iterations=1, warmup_rounds=1)
    assert steps == CALLS * STEPS_PER_CALL
    benchmark.extra_info["steps_per_round"] = steps
    benchmark.extra_info["steps_per_call"] = STEPS_PER_CALL


def test_baseline_dict_dispatch_steps(benchmark):
    def run() -> int:
        return sum(baseline_call() for _ in range(CALLS))

    steps = benchmark.pedantic(run, rounds=15, iterations=1, warmup_rounds=1)
    assert steps == CALLS * STEPS_PER_CALL
    benchmark.extra_info["steps_per_round"] = steps


class _InstantEngine:
    """Answers prompts and the lookup immediately (no media)."""

    async def perform(self, call: IvrCall, action: A.Action) -> None:
        if isinstance(action, A.PlayPrompts):
            call.feed(E.PromptFinished(action.play_id))
        elif isinstance(action, A.RequestLookup):
            call.feed(E.LookupCompleted(action.request_id, ROW))
        elif isinstance(action, A.SetLanguage):
            for digit in "1" + "10012345" + "4":
                call.feed(E.DtmfReceived(digit))


def _runner_round(flow) -> int:
    async def main() -> int:
        calls = [IvrCall(Interpreter(flow, f"r{i}"), _InstantEngine()) for i in range(CALLS)]
        started = E.CallStarted("0611223344", "800", 1_780_000_000.0)
        tasks = [asyncio.ensure_future(c.run(started)) for c in calls]
        for c in calls:
            c.feed(E.DtmfReceived("1"))          # language menu (typed ahead)
        results = await asyncio.gather(*tasks)
        assert all(r is not None and r.reason == "hangup" for r in results), results[:3]
        return sum(c.interpreter.steps for c in calls)

    return asyncio.run(main())


def test_runner_concurrent_calls(benchmark):
    flow = _flow()
    steps = benchmark.pedantic(_runner_round, args=(flow,), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["steps_per_round"] = steps
    benchmark.extra_info["calls_per_round"] = CALLS
