"""IVR test helpers: flows written to tmp dirs with real prompt files, and a
driver that feeds the sans-IO interpreter and tracks its plays and timers."""
from __future__ import annotations

import pathlib
import wave
from typing import Any, Iterable

import pytest

from ivr import actions as A
from ivr import events as E
from ivr.flow import Flow, load_flow
from ivr.interpreter import Interpreter


def write_wav(path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)


def write_flow(tmp: pathlib.Path, text: str, prompts: Iterable[str] = (),
               languages: Iterable[str] = ("en",), name: str = "flow.toml") -> pathlib.Path:
    for lang in languages:
        for prompt in prompts:
            write_wav(tmp / "prompts" / lang / f"{prompt}.wav")
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


class Call:
    """Drives one interpreter; remembers the live playback and timers."""

    def __init__(self, flow: Flow, call_id: str = "call-1", now: float = 100.0) -> None:
        self.ivr = Interpreter(flow, call_id)
        self.now = now
        self.play: A.PlayPrompts | None = None
        self.timers: dict[str, A.StartTimer] = {}
        self.log: list[A.Action] = []

    def send(self, event: E.Event) -> list[A.Action]:
        out = self.ivr.handle(event, self.now)
        for action in out:
            if isinstance(action, A.PlayPrompts):
                self.play = action
            elif isinstance(action, A.StopPlayback):
                assert self.play is not None and action.play_id == self.play.play_id
                self.play = None
            elif isinstance(action, A.StartTimer):
                self.timers[action.name] = action
            elif isinstance(action, A.CancelTimer):
                self.timers = {k: t for k, t in self.timers.items() if t.timer_id != action.timer_id}
        self.log.extend(out)
        return out

    def start(self, caller: str = "0611223344", dialed: str = "800", wall: float = 1_780_000_000.0) -> list[A.Action]:
        return self.send(E.CallStarted(caller, dialed, wall))

    def dtmf(self, digits: str) -> list[A.Action]:
        out: list[A.Action] = []
        for d in digits:
            out += self.send(E.DtmfReceived(d))
        return out

    def finish_prompt(self) -> list[A.Action]:
        assert self.play is not None, "nothing is playing"
        play, self.play = self.play, None
        return self.send(E.PromptFinished(play.play_id))

    def fire(self, name: str) -> list[A.Action]:
        timer = self.timers.pop(name)
        self.now = max(self.now, timer.deadline)
        return self.send(E.TimerFired(timer.timer_id))

    @property
    def node(self) -> str | None:
        return self.ivr.node.id if self.ivr.node else None

    def played(self) -> list[str]:
        """Values of the items of the live playback."""
        assert self.play is not None, "nothing is playing"
        return [pathlib.Path(i.value).stem if i.kind == "file" else i.text for i in self.play.items]


def of(actions: list[A.Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


@pytest.fixture
def flow_from(tmp_path: pathlib.Path):
    def make(text: str, prompts: Iterable[str] = (), languages: Iterable[str] = ("en",), **kw: Any) -> Flow:
        return load_flow(write_flow(tmp_path, text, prompts, languages), **kw)
    return make
