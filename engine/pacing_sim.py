"""A discrete-event simulation of an outbound campaign, to measure a :class:`engine.pacing.Pacer`.

Theory of operation
-------------------
``agents`` agents work one campaign for ``duration_s`` simulated seconds.
Every call placed is decided at launch from a seeded :class:`random.Random`:
answered by a person with probability ``answer_probability`` after a ring of
``U(ring_min_s, ring_max_s)``; else busy after ``U(1, 4)`` s (share
``busy_share`` of the unanswered) or no answer after ``ring_timeout_s``.
An answered call takes the longest-free agent at once; when none is free it
waits up to ``connect_timeout_s`` for one and is *dropped* after that.
Handle time (talk + wrap-up) is lognormal with mean ``handle_mean_s`` and
coefficient of variation ``handle_cv`` plus ``wrapup_s``.

In ``progressive`` mode every call is reserved for one free agent at launch
(the agent idles through the ring), so nothing is dropped; in
``predictive`` mode answered calls go to whoever is free.  The pacer is
asked after every event (its inputs change only then, so no timer is needed).

The result gives the drop rate (drops / answered), its maximum over every
rolling window of ``drop_window_calls`` answered calls, agent utilisation (share
of agent time spent on calls incl. wrap-up), calls placed and connected per
agent-hour.  Used by ``tests/engine/test_pacing.py`` (the cap holds over
many seeds) and ``bench/outbound_pacing.py``.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass

import numpy as np

from engine.pacing import Pacer, PacingMode


@dataclass(frozen=True, slots=True)
class SimParams:
    agents: int = 10
    duration_s: float = 4 * 3600.0
    answer_probability: float = 0.3
    ring_min_s: float = 4.0
    ring_max_s: float = 20.0
    ring_timeout_s: float = 25.0
    busy_share: float = 0.3
    handle_mean_s: float = 90.0
    handle_cv: float = 0.6
    wrapup_s: float = 5.0
    connect_timeout_s: float = 2.0
    max_drop_rate: float = 0.03
    drop_window_calls: int = 500
    warmup_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SimResult:
    mode: str
    seed: int
    placed: int
    answered: int
    connected: int
    dropped: int
    drop_rate: float
    max_window_drop_rate: float
    utilisation: float
    connects_per_agent_hour: float

    def describe(self) -> dict[str, float | int | str]:
        return {"mode": self.mode, "seed": self.seed, "placed": self.placed, "answered": self.answered,
                "connected": self.connected, "dropped": self.dropped, "drop_rate": round(self.drop_rate, 4),
                "max_window_drop_rate": round(self.max_window_drop_rate, 4),
                "utilisation": round(self.utilisation, 4),
                "connects_per_agent_hour": round(self.connects_per_agent_hour, 2)}


_ANSWER, _FAIL, _AGENT_FREE, _DROP_CHECK = range(4)


def simulate(mode: PacingMode, params: SimParams, seed: int) -> SimResult:
    """Run one simulated campaign; deterministic for a given ``seed``."""
    rng = random.Random(seed)
    pacer = Pacer(mode, max_drop_rate=params.max_drop_rate, drop_window_calls=params.drop_window_calls,
                  connect_timeout_s=params.connect_timeout_s)
    sigma = math.sqrt(math.log(1.0 + params.handle_cv ** 2))
    mu = math.log(params.handle_mean_s) - sigma ** 2 / 2
    events: list[tuple[float, int, int, int]] = []   # (time, seq, kind, payload)
    seq = itertools.count()
    free_agents = params.agents
    busy_agents = 0
    reserved = 0          # progressive: agents held for a call in flight
    in_flight = 0
    waiting: dict[int, float] = {}   # answered call -> time it was answered (waiting for an agent)
    busy_time = 0.0
    placed = answered = connected = dropped = 0
    end = params.duration_s

    def push(t: float, kind: int, payload: int = 0) -> None:
        heapq.heappush(events, (t, next(seq), kind, payload))

    def start_handle(now: float) -> None:
        nonlocal busy_agents, busy_time
        h = rng.lognormvariate(mu, sigma) + params.wrapup_s
        busy_agents += 1
        busy_time += max(0.0, min(now + h, end) - now)
        push(now + h, _AGENT_FREE, int(h * 1000))

    def connect(now: float) -> None:
        nonlocal connected
        connected += 1
        history.append(False)
        pacer.answered_call(False)
        start_handle(now)

    def decide(now: float) -> None:
        nonlocal placed, in_flight, free_agents, reserved
        if now >= end:
            return
        k = pacer.calls_to_place(free_agents + reserved, busy_agents, in_flight, waiting=len(waiting))
        for _ in range(k):
            placed += 1
            in_flight += 1
            if mode is PacingMode.PROGRESSIVE:
                free_agents -= 1
                reserved += 1
            call = placed
            launch_ts[call] = now
            if rng.random() < params.answer_probability:
                push(now + rng.uniform(params.ring_min_s, params.ring_max_s), _ANSWER, call)
            elif rng.random() < params.busy_share:
                push(now + rng.uniform(1.0, 4.0), _FAIL, call)
            else:
                push(now + params.ring_timeout_s, _FAIL, call)

    launch_ts: dict[int, float] = {}   # call in flight -> when it was placed
    history: list[bool] = []           # answered calls in order: dropped?
    decide(0.0)
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == _ANSWER:
            in_flight -= 1
            answered += 1
            pacer.attempt_finished(True, now - launch_ts.pop(payload))
            if mode is PacingMode.PROGRESSIVE:
                reserved -= 1
                connect(now)
            elif free_agents > 0:
                free_agents -= 1
                connect(now)
            else:
                waiting[payload] = now
                push(now + params.connect_timeout_s, _DROP_CHECK, payload)
        elif kind == _FAIL:
            in_flight -= 1
            pacer.attempt_finished(False, now - launch_ts.pop(payload))
            if mode is PacingMode.PROGRESSIVE:
                reserved -= 1
                free_agents += 1
        elif kind == _AGENT_FREE:
            busy_agents -= 1
            pacer.handle_finished(payload / 1000.0)
            if waiting:
                call = min(waiting, key=waiting.__getitem__)
                del waiting[call]
                connect(now)
            else:
                free_agents += 1
        elif kind == _DROP_CHECK:
            if payload in waiting:
                del waiting[payload]
                dropped += 1
                history.append(True)
                pacer.answered_call(True)
        decide(now)
    agent_time = params.agents * params.duration_s
    w = min(params.drop_window_calls, len(history))
    if w:
        sums = np.convolve(np.array(history, dtype=float), np.ones(w), mode="valid")
        max_window = float(sums.max()) / w
    else:
        max_window = 0.0
    return SimResult(mode=mode.value, seed=seed, placed=placed, answered=answered, connected=connected,
                     dropped=dropped, drop_rate=dropped / answered if answered else 0.0, max_window_drop_rate=max_window,
                     utilisation=busy_time / agent_time,
                     connects_per_agent_hour=connected / (agent_time / 3600.0))


__all__ = ["SimParams", "SimResult", "simulate"]
