"""Differential tests: the compiled ``engine._acd.Acd`` and the reference
``engine.acd.PyAcd`` fed the same random event sequences (thousands of
events per case) must make identical decisions after every event and answer
every query identically (acd_driver.Driver.apply / compare_queries).

The compiled module is imported directly: when it is not built this test
FAILS, except under CTIENGINE_PUREPYTHON=1 where two reference instances are
compared (a determinism check).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acd_driver import Driver, Scenario
from engine.acd import PyAcd
from engine.acd_types import Strategy
from engine.purepython import pure_python_forced

pytestmark = pytest.mark.twin


def other_impl():
    if pure_python_forced():
        return PyAcd
    try:
        from engine._acd import Acd
    except ImportError as exc:  # never skip: a missing build is a failure
        pytest.fail(f"engine._acd is not compiled ({exc}); run `make build`")
    return Acd


scenarios = st.builds(
    Scenario,
    seed=st.integers(0, 2**31),
    agents=st.integers(1, 40),
    queues=st.integers(1, 6),
    skills=st.integers(1, 6),
    strategies=st.lists(st.sampled_from(list(Strategy)), min_size=1, max_size=9, unique=True).map(tuple),
    tiers=st.booleans(),
    timers=st.booleans(),
    sticky=st.booleans(),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios)
def test_identical_decisions(scenario):
    driver = Driver(scenario, [PyAcd(scenario.seed), other_impl()(scenario.seed)], check=False)
    driver.run(3000)
    driver.compare_queries()


@pytest.mark.parametrize("strategy", list(Strategy))
def test_identical_decisions_per_strategy(strategy):
    sc = Scenario(seed=1000 + int(strategy), agents=60, queues=5, skills=4, strategies=(strategy,))
    driver = Driver(sc, [PyAcd(sc.seed), other_impl()(sc.seed)], check=False)
    driver.run(4000)
    assert sum(1 for d in driver.decisions if d[0] == 0) > 100


def test_compiled_module_is_used():
    """``engine.acd.Acd`` is the compiled class unless pure Python is forced."""
    from engine import acd

    if pure_python_forced():
        assert acd.Acd is PyAcd
    else:
        assert acd.COMPILED and acd.Acd is other_impl()


@pytest.mark.parametrize("seed,tiers", [(11, True), (12, False), (13, True), (14, False)])
def test_identical_decisions_with_shared_free_containers(seed, tiers):
    """Sixteen queues over one skill and five strategies: about half the
    (queue, tier) pairs share a free-agent container with another queue
    (same strategy family and tier prefix), including round_robin, random
    and ring_all sharing one ordered set."""
    strategies = (Strategy.LONGEST_IDLE, Strategy.ROUND_ROBIN, Strategy.RANDOM, Strategy.RING_ALL,
                  Strategy.BEST_SKILL)
    sc = Scenario(seed=seed, agents=40, queues=16, skills=1, tiers=tiers, strategies=strategies)
    driver = Driver(sc, [PyAcd(seed), other_impl()(seed)], check=True)
    driver.run(3000)
    driver.compare_queries()


def _caller_table_run(cls, ids):
    """Enqueue every id (no agent: all wait), abandon every other one in a
    shuffled order, then query and abandon the rest; returns every
    observable answer."""
    import random

    from engine.acd_types import AcdStateError, QueueConfig, Tier

    acd = cls(5)
    acd.add_queue(0, QueueConfig(Strategy.LONGEST_IDLE, (Tier(0.0, ((0, 1),)),)))
    seen = []
    now = 0.0
    for cid in ids:
        now += 0.001
        acd.enqueue(cid, 0, now)
    for probe in (True, 1.0, 2**70, -(2**70), "1", None, 1.5):
        try:
            seen.append(("probe", repr(probe), acd.caller_info(probe)))
        except AcdStateError:
            seen.append(("probe", repr(probe), "not queued"))
    order = list(ids)
    random.Random(9).shuffle(order)
    for cid in order[::2]:
        now += 0.001
        acd.abandon(cid, now)
    for cid in order[::2]:  # gone: probing must not find a shifted neighbour
        with pytest.raises(AcdStateError):
            acd.caller_info(cid)
    for cid in order[1::2]:
        seen.append((cid, acd.caller_info(cid), acd.position(cid)))
    for cid in order[1::2]:
        now += 0.001
        acd.abandon(cid, now)
        with pytest.raises(AcdStateError):
            acd.position(cid)
    seen.append(acd.waiting_callers(0))
    seen.append(acd.pop_decisions())
    return seen


def test_caller_id_table_matches_reference():
    """The compiled caller id -> slot table (open addressing, backward-shift
    deletion) answers like the reference dict: 64-bit extremes, negative
    ids, ids equal modulo the table size (long probe runs that wrap), ids
    re-used after leaving, and non-int look-ups equal to an int (True,
    1.0) or to none."""
    ids = [1, 0, -1, 2**63 - 1, -(2**63), 2**32, -(2**32)]
    ids += [k * 4096 + 3 for k in range(1, 600)]  # same low bits
    ids += [(k << 40) | 7 for k in range(1, 400)]  # differ in high bits only
    ids += list(range(10_000, 12_000))
    assert len(set(ids)) == len(ids)
    ref = _caller_table_run(PyAcd, ids)
    got = _caller_table_run(other_impl(), ids)
    assert got == ref
    probes = {s[1]: s[2] for s in ref if isinstance(s, tuple) and s[0] == "probe"}
    assert probes["True"] == probes["1.0"] != "not queued"  # both find caller 1
    assert probes[repr(2**70)] == probes["'1'"] == probes["1.5"] == "not queued"


def _with_index_limits(hi, lo, seed):
    """The compiled ACD with its class-index limits set (the reference has
    no such knob: under CTIENGINE_PUREPYTHON=1 a plain PyAcd)."""
    acd = other_impl()(seed)
    if hasattr(acd, "_set_index_limits"):
        acd._set_index_limits(hi, lo)
    return acd


@pytest.mark.parametrize("hi,lo", [(0, 0), (2, 1), (6, 2), (12, 12)])
@pytest.mark.parametrize("strategies", [tuple(Strategy), (Strategy.WEIGHTED, Strategy.FEWEST_CALLS)])
def test_identical_decisions_across_index_switches(hi, lo, strategies):
    """The compiled ACD answers a small eligibility class by scanning its
    dense array and a large one from heaps: with tiny limits classes switch
    between the two all the time (0, 0: always heaps) and every decision
    must still be the reference's."""
    seed = 300 + hi + len(strategies)
    sc = Scenario(seed=seed, agents=40, queues=8, skills=2, tiers=True, strategies=strategies)
    driver = Driver(sc, [PyAcd(seed), _with_index_limits(hi, lo, seed)], check=False)
    driver.run(3000)
    driver.compare_queries()


def test_identical_decisions_with_large_free_pool():
    """Default limits with hundreds of free agents in one class: the class
    gets its heaps (more than 512 free), loses them as agents get busy and
    queues added on the live ACD attach to indexed classes."""
    from engine.acd_types import QueueConfig, Tier

    ref, got = PyAcd(4), other_impl()(4)
    acds = (ref, got)
    now = 0.0
    for acd in acds:
        for a in range(1100):
            acd.login(a, 0.0, {0: 1 + a % 10, 1: 1 + a % 7})
            acd.ready(a, 0.0)
    strategies = [s for s in Strategy if s != Strategy.RING_ALL]
    for q, s in enumerate(strategies):
        cfg = QueueConfig(s, (Tier(0.0, ((q % 2, 1 + q % 3),)), Tier(5.0, ((q % 2, 1),))))
        for acd in acds:
            acd.add_queue(q, cfg)
    busy: list[int] = []
    most_busy = 0
    cid = 0
    import random

    rnd = random.Random(4)

    def both(*calls) -> None:
        """Apply ``(method, *args)`` calls to both, compare the decisions
        and answer every offer."""
        outs = []
        for acd in acds:
            for name, *args in calls:
                getattr(acd, name)(*args)
            outs.append(acd.pop_decisions())
        assert outs[0] == outs[1]
        for d in outs[0]:
            if d[0] == 0:
                both(("accept", d[1], d[2], now))
                busy.append(d[2])

    for step in range(4000):
        now += 0.01
        if rnd.random() < (0.8 if step < 2000 else 0.3):
            cid += 1
            both(("enqueue", cid, rnd.randrange(len(strategies)), now))
        elif busy:
            agent = busy.pop(rnd.randrange(len(busy)))
            both(("call_ended", agent, now), ("wrapup_done", agent, now))
        most_busy = max(most_busy, len(busy))
        if step == 1000:  # late queues on classes that are indexed by now
            for q2 in range(len(strategies), len(strategies) + 4):
                cfg = QueueConfig(strategies[q2 % len(strategies)], (Tier(0.0, ((q2 % 2, 1 + q2 % 3),)),))
                for acd in acds:
                    acd.add_queue(q2, cfg)
    assert most_busy > 1050 and len(busy) < 500  # below the 128 drop limit and back above 512
    for q in range(len(strategies) + 4):
        assert ref.free_agents(q) == got.free_agents(q)
        assert ref.waiting_callers(q) == got.waiting_callers(q)
