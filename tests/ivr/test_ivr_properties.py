"""Property tests: random legal event sequences on the example flows keep the
interpreter's invariants; random edits of flow files only ever raise FlowError."""
from __future__ import annotations

import pathlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr import actions as A
from ivr import events as E
from ivr.errors import FlowError
from ivr.flow import load_flow, load_flow_text
from ivr.interpreter import Interpreter

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "flows"
FLOWS = {p.stem: load_flow(p) for p in sorted(EXAMPLES.glob("*.toml"))}


class Tracker:
    """Checks every action against what is live, like an engine would."""

    def __init__(self, flow_name: str) -> None:
        self.ivr = Interpreter(FLOWS[flow_name], "fuzz")
        self.now = 0.0
        self.play: int | None = None
        self.timers: dict[int, float] = {}
        self.request: A.Action | None = None
        self.finished = False
        self.seen_ids: set[int] = set()

    def feed(self, event: E.Event) -> None:
        out = self.ivr.handle(event, self.now)
        if self.finished:
            assert out == []
        for action in out:
            assert not self.finished, f"action after FlowFinished: {action}"
            if isinstance(action, A.PlayPrompts):
                assert self.play is None, "two prompts live at once"
                assert action.items and action.play_id not in self.seen_ids
                self.seen_ids.add(action.play_id)
                self.play = action.play_id
            elif isinstance(action, A.StopPlayback):
                assert action.play_id == self.play
                self.play = None
            elif isinstance(action, A.StartTimer):
                assert action.timer_id not in self.seen_ids and action.deadline >= self.now
                self.seen_ids.add(action.timer_id)
                self.timers[action.timer_id] = action.deadline
            elif isinstance(action, A.CancelTimer):
                assert action.timer_id in self.timers
                del self.timers[action.timer_id]
            elif isinstance(action, A.RequestLookup | A.Enqueue | A.AttemptTransfer | A.RecordVoicemail):
                self.request = action
            elif isinstance(action, A.Dequeue | A.BridgeAgent):
                self.request = None
            elif isinstance(action, A.FlowFinished):
                self.finished = True
                assert self.play is None and self.timers == {}, "flow ended with live prompt or timers"

    def step(self, choice: int, digit: str, flag: bool) -> None:
        kinds = ["dtmf", "dtmf", "prompt", "timer", "answer", "answer", "time"]
        kind = kinds[choice % len(kinds)]
        if kind == "dtmf":
            self.feed(E.DtmfReceived(digit))
        elif kind == "prompt" and self.play is not None:
            play, self.play = self.play, None
            self.feed(E.PromptFinished(play))
        elif kind == "timer" and self.timers:
            timer_id = min(self.timers, key=self.timers.get)
            self.now = max(self.now, self.timers.pop(timer_id))
            self.feed(E.TimerFired(timer_id))
        elif kind == "answer" and self.request is not None:
            r, self.request = self.request, None
            if isinstance(r, A.RequestLookup):
                self.feed(E.LookupCompleted(r.request_id, {"balance": "5", "name": "X", "due_date": "2026-01-01"}
                                            if flag else None))
            elif isinstance(r, A.Enqueue):
                self.feed(E.QueueUpdated(r.request_id, 2, 90.0))
                self.request = r
                if not self.finished:
                    self.request = None
                    self.feed(E.QueueAgentReady(r.request_id, "1001") if flag else E.QueueLeft(r.request_id, "timeout"))
            elif isinstance(r, A.AttemptTransfer):
                self.feed(E.TransferCompleted(r.request_id, flag, "" if flag else "busy"))
            elif isinstance(r, A.RecordVoicemail):
                self.feed(E.RecordingFinished(r.request_id, 3.0))
        elif kind == "time":
            self.now += 1.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow_name=st.sampled_from(sorted(FLOWS)),
       steps=st.lists(st.tuples(st.integers(0, 6), st.sampled_from("0123456789*#"), st.booleans()),
                      max_size=60),
       caller=st.sampled_from(["0611223344", "+33899000000"]),
       wall=st.floats(1_760_000_000, 1_800_000_000),
       hang_up=st.booleans())
def test_random_legal_sequences_keep_invariants(flow_name, steps, caller, wall, hang_up):
    t = Tracker(flow_name)
    t.feed(E.CallStarted(caller, "800", wall))
    for choice, digit, flag in steps:
        t.step(choice, digit, flag)
    if hang_up or not t.finished:
        t.feed(E.CallHungUp())
    assert t.finished and t.ivr.finished


SOURCES = {p.name: p.read_text(encoding="utf-8") for p in sorted(EXAMPLES.glob("*.toml"))}


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(SOURCES)), data=st.data())
def test_random_edits_only_raise_flow_error(name, data):
    lines = SOURCES[name].splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["drop", "value", "dup", "key"]))
        line = lines[index]
        if op == "drop":
            del lines[index]
        elif op == "dup":
            lines.insert(index, line)
        elif op == "value" and "=" in line:
            key = line.split("=", 1)[0]
            value = data.draw(st.sampled_from(['0', '-1', 'true', '"x"', '[]', '{}', '"{"', '"[a-"', '1.5',
                                               '["x", 1]', '{ tts = 1 }', '"25:99-1:00"', '"mon-xyz"']))
            lines[index] = f"{key}= {value}"
        elif op == "key" and "=" in line:
            lines[index] = "zz_" + line.lstrip()
        if not lines:
            lines = ["x"]
    try:
        load_flow_text("\n".join(lines) + "\n", name, EXAMPLES)
    except FlowError as exc:
        assert exc.problems and all(p.file == name and p.line >= 1 for p in exc.problems)
