"""Discrete-event M/M/c simulation driven through an ACD (used by the
Erlang C check; issue 10 can reuse it).  Arrivals are Poisson, handling
times exponential, wrap-up zero; every offer is accepted at once, so the
caller's wait is the time from enqueue to the OFFER decision."""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from engine.acd_types import DecisionKind, QueueConfig, Tier


@dataclass
class SimResult:
    calls: int
    waits: list[float]

    @property
    def probability_of_waiting(self) -> float:
        return sum(1 for w in self.waits if w > 0) / len(self.waits)

    @property
    def average_speed_of_answer(self) -> float:
        return sum(self.waits) / len(self.waits)

    def service_level(self, threshold_s: float) -> float:
        return sum(1 for w in self.waits if w <= threshold_s) / len(self.waits)


def simulate(acd_cls, agents: int, handle_time_s: float, occupancy: float, calls: int,
             seed: int, strategy: str = "longest_idle", warmup: float = 0.05) -> SimResult:
    rnd = random.Random(seed)
    rate = occupancy * agents / handle_time_s
    acd = acd_cls(seed)
    acd.add_queue(0, QueueConfig(strategy, (Tier(0.0, ((0, 1),)),)))
    for a in range(agents):
        acd.login(a, 0.0, ((0, 1 + a % 10),))
        acd.ready(a, 0.0)
    arrived_at: dict[int, float] = {}
    waits: list[float] = []
    ends: list[tuple[float, int]] = []  # (time, agent)
    next_arrival = rnd.expovariate(rate)
    arrivals = 0
    skip = int(calls * warmup)
    OFFER = DecisionKind.OFFER

    def settle(now: float) -> None:
        for d in acd.pop_decisions():
            assert d[0] == OFFER, d
            cid, agent = d[1], d[2]
            acd.accept(cid, agent, now)
            if cid >= skip:
                waits.append(now - arrived_at.pop(cid))
            else:
                del arrived_at[cid]
            heapq.heappush(ends, (now + rnd.expovariate(1.0 / handle_time_s), agent))

    while arrivals < calls or arrived_at:
        if arrivals < calls and (not ends or next_arrival <= ends[0][0]):
            now = next_arrival
            arrived_at[arrivals] = now
            acd.enqueue(arrivals, 0, now)
            arrivals += 1
            next_arrival = now + rnd.expovariate(rate)
        else:
            now, agent = heapq.heappop(ends)
            acd.call_ended(agent, now)
            acd.wrapup_done(agent, now)
        settle(now)
    return SimResult(calls - skip, waits)
