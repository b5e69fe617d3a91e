"""A thin asyncio runner: one coroutine per call driving the sans-IO interpreter.

The runner owns exactly three things: an event queue (the engine calls
:meth:`IvrCall.feed` with DTMF, prompt-finished, lookup results, ...), the
timers (``StartTimer`` becomes ``loop.call_at`` feeding ``TimerFired`` back;
``CancelTimer`` cancels the handle) and the hand-off of every other action to
an engine-supplied :class:`IvrAdapter` (media player, ACD, store).  ``now``
is ``loop.time()``, the clock the timers use.

Ending: the flow finishing (``FlowFinished``) returns from :meth:`IvrCall.run`.
On hang-up the engine calls :meth:`IvrCall.hangup` (the interpreter emits its
clean-up actions: stop playback, leave the queue) or simply cancels the task;
either way every timer handle is cancelled and the runner leaves no task or
callback behind.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ivr.actions import Action, CancelTimer, FlowFinished, StartTimer
from ivr.events import CallHungUp, CallStarted, Event, TimerFired
from ivr.interpreter import CallLogger, Interpreter

logger = logging.getLogger(__name__)


class IvrAdapter(Protocol):
    """What the engine provides: perform one action for one call.

    ``perform`` must not block; results come back later through
    ``call.feed(event)`` (e.g. ``PromptFinished`` when the player is done).
    """

    async def perform(self, call: "IvrCall", action: Action) -> None: ...


class IvrCall:
    """One call in the IVR: the interpreter, its event queue and its timers."""

    def __init__(self, interpreter: Interpreter, adapter: IvrAdapter) -> None:
        self.interpreter = interpreter
        self.adapter = adapter
        self.result: FlowFinished | None = None
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self.max_timer_lateness_s = 0.0
        """Worst delay between a timer's deadline and its firing, for load checks."""
        self.log = CallLogger(logger, {"call_id": interpreter.call_id})

    @property
    def call_id(self) -> str:
        return self.interpreter.call_id

    @property
    def pending_timers(self) -> int:
        return len(self._timers)

    def feed(self, event: Event) -> None:
        """Queue an event for the interpreter (call from the event loop's thread)."""
        self._queue.put_nowait(event)

    def hangup(self, reason: str = "caller") -> None:
        """The caller hung up: the flow cleans up and :meth:`run` returns."""
        self.feed(CallHungUp(reason))

    def _fire(self, timer_id: int) -> None:
        handle = self._timers.pop(timer_id, None)
        if handle is not None:
            # how late the loop ran this timer: a loaded loop shows up here first
            late_s = asyncio.get_running_loop().time() - handle.when()
            if late_s > self.max_timer_lateness_s:
                self.max_timer_lateness_s = late_s
        self.feed(TimerFired(timer_id))

    async def _step(self, event: Event) -> None:
        loop = asyncio.get_running_loop()
        for action in self.interpreter.handle(event, loop.time()):
            if isinstance(action, StartTimer):
                self._timers[action.timer_id] = loop.call_at(action.deadline, self._fire, action.timer_id)
            elif isinstance(action, CancelTimer):
                handle = self._timers.pop(action.timer_id, None)
                if handle is not None:
                    handle.cancel()
            else:
                if isinstance(action, FlowFinished):
                    self.result = action
                await self.adapter.perform(self, action)

    async def run(self, started: CallStarted) -> FlowFinished | None:
        """Run the flow until it finishes; returns the ``FlowFinished`` action.

        Cancelling the task stops the flow at once (timers cancelled, no
        clean-up actions performed: the engine is tearing the call down).
        """
        try:
            await self._step(started)
            while not self.interpreter.finished:
                await self._step(await self._queue.get())
            return self.result
        except asyncio.CancelledError:
            self.log.info("IVR task cancelled in phase %s", self.interpreter.phase.value)
            raise
        finally:
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()


def start_call(interpreter: Interpreter, adapter: IvrAdapter, started: CallStarted
               ) -> tuple[IvrCall, "asyncio.Task[FlowFinished | None]"]:
    """Create the call and its task (named after the call id)."""
    call = IvrCall(interpreter, adapter)
    task = asyncio.get_running_loop().create_task(call.run(started), name=f"ivr-{interpreter.call_id}")
    return call, task
