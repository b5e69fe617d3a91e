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
