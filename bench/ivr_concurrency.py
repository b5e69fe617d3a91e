"""Load driver: N concurrent callers walking IVR menus on the asyncio runner.

    python -m bench.ivr_concurrency [--calls 500] [--seconds 20]

Each simulated caller hears a 1 s welcome, a 1 s menu prompt, answers after
0.3-3 s (one caller in five lets the 2 s menu timeout expire once), then types
6 digits 0.2 s apart into a collect node and hangs up after the goodbye prompt.
The fake engine plays prompts by sleeping on the loop (no RTP, no media
clock: this measures the IVR's own load on the event loop).  Reported: calls
finished, wall time, CPU time, interpreter steps, and how late the runner's
timers fired (the "late tick" signal).  Raw JSON goes to bench/results/.
Bounded: every call is cancelled after --seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import statistics
import time

from ivr import actions as A
from ivr import events as E
from ivr.flow import load_flow_text
from ivr.interpreter import Interpreter
from ivr.runner import IvrCall

FLOW = """
[flow]
start = "welcome"
[nodes.welcome]
type = "play"
prompts = [{ tts = "Welcome" }]
next = "menu"
[nodes.menu]
type = "menu"
prompts = [{ tts = "1 for balance, 2 for sales" }]
timeout_s = 2
retries = 3
choices = { "1" = "account", "2" = "account" }
on_failure = "bye"
[nodes.account]
type = "collect"
prompts = [{ tts = "Account number" }]
variable = "account"
min_digits = 6
max_digits = 6
inter_digit_timeout_s = 2
next = "bye"
on_failure = "bye"
[nodes.bye]
type = "hangup"
prompts = [{ tts = "Goodbye" }]
"""


class SimulatedCaller:
    """Engine side of one call: plays prompts by time, presses keys like a person."""

    def __init__(self, rng: random.Random, lateness: list[float]) -> None:
        self.rng = rng
        self.lateness = lateness
        self.patient = rng.random() < 0.2      # lets the menu time out once
        self.handles: list[asyncio.TimerHandle] = []

    def _later(self, delay_s: float, call: IvrCall, event: E.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay_s

        def fire() -> None:
            self.lateness.append(loop.time() - due)
            call.feed(event)

        self.handles.append(loop.call_later(delay_s, fire))

    async def perform(self, call: IvrCall, action: A.Action) -> None:
        if isinstance(action, A.PlayPrompts):
            self._later(1.0, call, E.PromptFinished(action.play_id))
            text = action.items[0].text
            if text.startswith("1 for"):
                if self.patient:
                    self.patient = False       # say nothing: the menu times out and repeats
                else:
                    self._later(1.0 + self.rng.uniform(0.3, 3.0), call, E.DtmfReceived("1"))
            elif text.startswith("Account"):
                for i, digit in enumerate("123456"):
                    self._later(1.0 + 0.2 * (i + 1), call, E.DtmfReceived(digit))

    def close(self) -> None:
        for handle in self.handles:
            handle.cancel()


async def run(calls: int, seconds: float, seed: int) -> dict:
    flow = load_flow_text(FLOW, "load.toml", pathlib.Path("."))
    rng = random.Random(seed)
    lateness: list[float] = []
    loop = asyncio.get_running_loop()
    cpu0, t0 = time.process_time(), loop.time()
    callers = [SimulatedCaller(random.Random(rng.random()), lateness) for _ in range(calls)]
    ivr_calls = [IvrCall(Interpreter(flow, f"load-{i}"), callers[i]) for i in range(calls)]
    started = E.CallStarted("0611223344", "800", time.time())

    async def one(i: int) -> A.FlowFinished | None:
        await asyncio.sleep(rng.uniform(0, 1.0))          # arrivals spread over a second
        return await ivr_calls[i].run(started)

    tasks = [asyncio.ensure_future(one(i)) for i in range(calls)]
    done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for caller in callers:
        caller.close()
    wall_s, cpu_s = loop.time() - t0, time.process_time() - cpu0
    finished = [t.result() for t in done if not t.cancelled() and t.exception() is None]
    timer_late = [c.max_timer_lateness_s for c in ivr_calls]
    lateness.sort()
    return {
        "calls": calls, "finished": len(finished), "cancelled_at_limit": len(pending),
        "reasons": sorted({r.reason for r in finished if r is not None}),
        "wall_s": round(wall_s, 3), "cpu_s": round(cpu_s, 3),
        "steps": sum(c.interpreter.steps for c in ivr_calls),
        "ivr_timer_lateness_max_ms": round(1000 * max(timer_late), 2),
        "ivr_timer_lateness_mean_of_call_max_ms": round(1000 * statistics.mean(timer_late), 2),
        "caller_event_lateness_p99_ms": round(1000 * lateness[int(0.99 * (len(lateness) - 1))], 2),
        "caller_event_lateness_max_ms": round(1000 * lateness[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    result = asyncio.run(run(args.calls, args.seconds, args.seed))
    result["loop"] = loop_name
    out = pathlib.Path(__file__).resolve().parent / "results" / "ivr_concurrency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
