"""ACD throughput: 10,000 agents, 500 queues, 50 skills; events (enqueue,
offer accepted, call ended, agent ready after wrap-up, abandon) with the
decisions popped after each event.  The compiled ``engine._acd.Acd`` and the
pure twin ``PyAcd`` replay the same recorded event script from the same
starting state in the same run; the ratio and absolute rates are written to
``bench/results/acd.json`` (docs/performance/acd.md quotes them).

The script is recorded once by a closed-loop driver (it accepts every offer,
ends the oldest call, abandons the oldest waiting caller when more than
2,000 wait); replaying it on a fresh instance reproduces the same decisions,
which the benchmark checks, so it cannot time a broken ACD.

Run: ``.venv/bin/python -m pytest -q bench/test_acd.py``.
"""
from __future__ import annotations

import collections
import gc
import json
import os
import pathlib
import random
import time

import pytest

from engine.acd import COMPILED, PyAcd
from engine.acd_types import DecisionKind, QueueConfig, Strategy, Tier

N_AGENTS = 10_000
N_QUEUES = 500
N_SKILLS = 50
ITERATIONS = 25_000
MAX_WAITING = 1_500
RESULTS = pathlib.Path(__file__).parent / "results"
OFFER = int(DecisionKind.OFFER)
# every strategy but ring_all, which answers one enqueue with many offers
STRATEGIES = [s for s in Strategy if s != Strategy.RING_ALL]

_rates: dict[str, float] = {}


def build(cls):
    rnd = random.Random(2026)
    acd = cls(2026)
    for q in range(N_QUEUES):
        skill = q % N_SKILLS
        cfg = QueueConfig(
            STRATEGIES[q % len(STRATEGIES)],
            (Tier(0.0, ((skill, 1 + q % 5),)), Tier(30.0, ((skill, 1),))),
        )
        acd.add_queue(q, cfg)
    for a in range(N_AGENTS):
        skills = {s: rnd.randint(1, 10) for s in rnd.sample(range(N_SKILLS), 5)}
        acd.login(a, 0.0, skills)
        acd.ready(a, 0.0)
    return acd


class Script:
    """The closed-loop workload; ``record`` runs it on an ACD and returns the
    list of (method, args) it issued after the preload."""

    def __init__(self, acd) -> None:
        self.acd = acd
        self.rnd = random.Random(7)
        self.now = 1.0
        self.cid = 0
        self.busy: collections.deque[int] = collections.deque()
        self.waiting: dict[int, None] = {}
        self.calls: list[tuple[str, tuple]] = []
        self.decisions = 0

    def do(self, name: str, *args) -> list:
        getattr(self.acd, name)(*args)
        self.calls.append((name, args))
        out = self.acd.pop_decisions()
        self.decisions += len(out)
        for d in out:
            if d[0] == OFFER:
                self.waiting.pop(d[1], None)
                self.do("accept", d[1], d[2], self.now)
                self.busy.append(d[2])
        return out

    def arrival(self) -> None:
        self.cid += 1
        self.waiting[self.cid] = None
        self.do("enqueue", self.cid, self.rnd.randrange(N_QUEUES), self.now)

    def departure(self) -> None:
        agent = self.busy.popleft()
        self.do("call_ended", agent, self.now)
        self.do("wrapup_done", agent, self.now)

    def preload(self, regime: str) -> None:
        """``light``: 9,000 agents busy, 1,000 free, callers rarely wait.
        ``peak``: every eligible agent busy and ~1,000 callers waiting."""
        if regime == "light":
            while len(self.busy) < 9_000:
                self.now += 0.001
                self.arrival()
        else:
            while len(self.waiting) < 1_000:
                self.now += 0.001
                self.arrival()
        self.calls.clear()
        self.decisions = 0

    def run(self, iterations: int, regime: str) -> None:
        for i in range(iterations):
            self.now += 0.001
            self.arrival()
            if regime == "peak" and i % 10 == 0:
                self.arrival()  # arrivals outpace departures: abandons bound the queue
            self.departure()
            if len(self.waiting) > MAX_WAITING:
                oldest = next(iter(self.waiting))
                del self.waiting[oldest]
                self.do("abandon", oldest, self.now)


REGIMES = ("light", "peak")


@pytest.fixture(scope="module", params=REGIMES)
def script(request):
    from engine.acd import Acd

    s = Script(build(Acd))
    s.preload(request.param)
    s.run(ITERATIONS, request.param)
    s.regime = request.param
    return s


def replay(acd, calls):
    """Replay; returns (decisions, wall seconds, CPU seconds of this process)."""
    pop = acd.pop_decisions
    bound = [(getattr(acd, name), args) for name, args in calls]
    # Move the 10,000-agent set-up and the script out of the collector's
    # sight (as a long-running engine would after start-up) so the cyclic GC
    # does not rescan them while the loop allocates decision tuples.
    gc.collect()
    gc.freeze()
    n = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for fn, args in bound:
        fn(*args)
        n += len(pop())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.unfreeze()
    return n, wall, cpu


def fresh(cls, regime):
    acd = build(cls)
    s = Script(acd)
    s.preload(regime)
    return acd


@pytest.mark.parametrize("impl", ["compiled", "pure"])
def test_acd_events_per_second(benchmark, script, impl):
    if impl == "compiled":
        if not COMPILED:
            pytest.fail("engine._acd is not compiled; run `make build`")
        from engine._acd import Acd as cls
        rounds = 5
    else:
        cls = PyAcd
        rounds = 1
    results = []

    def setup():
        return (fresh(cls, script.regime),), {}

    def run(acd):
        results.append(replay(acd, script.calls))

    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)
    for decisions, _, _ in results:
        assert decisions == script.decisions  # same decisions as the recording
    best = min(t for _, t, _ in results)
    best_cpu = min(c for _, _, c in results)
    rate = len(script.calls) / best
    _rates[(script.regime, impl)] = (rate, len(script.calls) / best_cpu)
    benchmark.extra_info.update(events=len(script.calls), decisions=script.decisions,
                                events_per_s=rate, events_per_cpu_s=len(script.calls) / best_cpu)


def test_acd_report(script):
    """Write the same-run figures (no timing assertion: the CPU is shared)."""
    regime = script.regime
    if (regime, "compiled") not in _rates or (regime, "pure") not in _rates:
        pytest.skip("run together with test_acd_events_per_second")
    counts = collections.Counter(name for name, _ in script.calls)
    (cw, cc), (pw, pc) = _rates[(regime, "compiled")], _rates[(regime, "pure")]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "regime": regime, "agents": N_AGENTS, "queues": N_QUEUES, "skills": N_SKILLS,
        "events": len(script.calls), "decisions": script.decisions,
        "event_mix": dict(counts), "load_average": list(os.getloadavg()),
        "compiled_events_per_s_wall": cw, "compiled_events_per_cpu_s": cc,
        "pure_events_per_s_wall": pw, "pure_events_per_cpu_s": pc,
        "speedup_wall": cw / pw, "speedup_cpu": cc / pc,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"acd_{regime}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
