"""The asyncio runner with a fake engine adapter on real asyncio time."""
from __future__ import annotations

import asyncio

import pytest

from ivr import actions as A
from ivr import events as E
from ivr.interpreter import Interpreter
from ivr.runner import IvrCall, start_call

FLOW = """
[flow]
start = "welcome"
[nodes.welcome]
type = "play"
prompts = [{tts = "Welcome"}]
next = "menu"
[nodes.menu]
type = "menu"
prompts = [{tts = "Press 1 for sales"}]
timeout_s = 0.15
retries = 2
choices = { "1" = "q" }
on_failure = "bye"
[nodes.q]
type = "queue"
queue = "sales"
announce_interval_s = 0
max_wait_s = 5
on_failure = "bye"
[nodes.bye]
type = "hangup"
"""


class FakeEngine:
    """Plays each prompt for ``prompt_s`` of real time, answers the queue after ``agent_s``."""

    def __init__(self, prompt_s: float = 0.05, agent_s: float | None = 0.05) -> None:
        self.prompt_s = prompt_s
        self.agent_s = agent_s
        self.actions: list[A.Action] = []
        self.handles: list[asyncio.TimerHandle] = []

    async def perform(self, call: IvrCall, action: A.Action) -> None:
        self.actions.append(action)
        loop = asyncio.get_running_loop()
        if isinstance(action, A.PlayPrompts):
            self.handles.append(loop.call_later(self.prompt_s, call.feed, E.PromptFinished(action.play_id)))
        elif isinstance(action, A.Enqueue) and self.agent_s is not None:
            self.handles.append(loop.call_later(self.agent_s, call.feed,
                                                E.QueueAgentReady(action.request_id, "1001")))

    def close(self) -> None:
        for h in self.handles:
            h.cancel()


def _flow(flow_from):
    return flow_from(FLOW)


def _started() -> E.CallStarted:
    return E.CallStarted("0611", "800", 1_780_000_000.0)


def _others() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def test_runner_walks_menu_to_agent_with_real_time(flow_from):
    flow = _flow(flow_from)

    async def main() -> None:
        engine = FakeEngine()
        call, task = start_call(Interpreter(flow, "rt-1"), engine, _started())
        asyncio.get_running_loop().call_later(0.07, call.feed, E.DtmfReceived("1"))  # barge into the menu
        result = await asyncio.wait_for(task, 3)
        engine.close()
        assert result == A.FlowFinished("agent", "q")
        assert any(isinstance(a, A.StopPlayback) for a in engine.actions)
        assert any(isinstance(a, A.BridgeAgent) for a in engine.actions)
        assert call.pending_timers == 0 and not _others()

    asyncio.run(main())


def test_runner_menu_timeouts_fire_on_real_clock(flow_from):
    flow = _flow(flow_from)

    async def main() -> None:
        engine = FakeEngine(prompt_s=0.02)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await asyncio.wait_for(IvrCall(Interpreter(flow, "rt-2"), engine).run(_started()), 3)
        engine.close()
        assert result == A.FlowFinished("hangup", "bye")
        # two timeouts of 0.15 s really elapsed
        assert loop.time() - t0 >= 0.3
        assert not _others()

    asyncio.run(main())


def test_runner_hangup_mid_queue_cleans_up(flow_from):
    flow = _flow(flow_from)

    async def main() -> None:
        engine = FakeEngine(agent_s=None)
        call, task = start_call(Interpreter(flow, "rt-3"), engine, _started())
        loop = asyncio.get_running_loop()
        loop.call_later(0.07, call.feed, E.DtmfReceived("1"))
        await asyncio.sleep(0.3)
        assert call.pending_timers == 1            # the max_wait timer
        call.hangup()
        result = await asyncio.wait_for(task, 1)
        engine.close()
        assert result == A.FlowFinished("caller_hangup", "q")
        assert any(isinstance(a, A.Dequeue) and a.reason == "caller_hangup" for a in engine.actions)
        assert call.pending_timers == 0 and not _others()

    asyncio.run(main())


def test_runner_task_cancel_leaves_nothing_behind(flow_from):
    flow = _flow(flow_from)

    async def main() -> None:
        engine = FakeEngine(prompt_s=0.01)
        call, task = start_call(Interpreter(flow, "rt-4"), engine, _started())
        await asyncio.sleep(0.08)                  # waiting for a menu digit
        assert call.pending_timers == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        engine.close()
        assert call.pending_timers == 0 and not _others()

    asyncio.run(main())
