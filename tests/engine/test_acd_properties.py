"""Property tests: random event sequences (hypothesis chooses the scenario
and the seed of the event stream) with the ACD invariants checked after
every event through the public API (see acd_driver.Driver.verify):

- an agent is never reserved for two callers, and every RESERVED agent is
  ringing for exactly one caller;
- a caller is never offered to two agents unless its queue rings all;
- no free agent may take a waiting caller (eligible tier, not excluded),
  and no sticky caller waits while its preferred agent is free;
- waiting callers are ordered by (effective priority desc, arrival), and an
  agent that becomes free takes the best caller it may take.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acd_driver import Driver, Scenario
from engine import acd as acd_mod
from engine.acd_types import Strategy

pytestmark = pytest.mark.twin

scenarios = st.builds(
    Scenario,
    seed=st.integers(0, 2**31),
    agents=st.integers(1, 16),
    queues=st.integers(1, 5),
    skills=st.integers(1, 5),
    strategies=st.lists(st.sampled_from(list(Strategy)), min_size=1, max_size=4, unique=True).map(tuple),
    tiers=st.booleans(),
    timers=st.booleans(),
    sticky=st.booleans(),
)


@pytest.mark.parametrize("impl", ["Acd", "PyAcd"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(scenario=scenarios)
def test_invariants_hold_after_every_event(impl, scenario):
    cls = getattr(acd_mod, impl)
    driver = Driver(scenario, [cls(scenario.seed)])
    driver.run(400)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_invariants_per_strategy_long_run(strategy):
    """One long run per strategy on the default implementation."""
    sc = Scenario(seed=int(strategy) + 11, agents=20, queues=4, skills=3, strategies=(strategy,))
    driver = Driver(sc, [acd_mod.Acd(sc.seed)])
    driver.run(2500)
    kinds = {d[0] for d in driver.decisions}
    assert 0 in kinds  # offers were made


@pytest.mark.xfail(strict=True, reason="known ACD ordering bug (open in issue 6): with tiers and timers, "
                   "a freed agent took caller 1007 while 1008 was ahead of it for that agent; both twins "
                   "agree, so it is the shared semantics (or this check), not the compiled code")
@pytest.mark.parametrize("impl", ["Acd", "PyAcd"])
def test_known_ordering_counterexample(impl):
    """Found by the random search above in a CI rehearsal (2026-11-23); kept as a fixed case."""
    sc = Scenario(seed=1549, agents=3, queues=2, skills=1, strategies=(Strategy.LONGEST_IDLE,),
                  tiers=True, timers=True, sticky=False)
    Driver(sc, [getattr(acd_mod, impl)(sc.seed)]).run(400)
