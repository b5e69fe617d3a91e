"""Queueing-theory check: an M/M/c discrete-event simulation run through the
ACD (tests/engine/acd_sim.py: Poisson arrivals, exponential handle times with
mean 120 s, 10 agents, FIFO within one queue, every offer accepted at once)
must match Erlang C (engine/erlang.py).

Stated tolerance, for every load: |P_w - Erlang C| <= 0.015,
|SL(20 s) - Erlang C| <= 0.015 and |ASA / Erlang C - 1| <= 0.10.
The first 5 % of calls are discarded as warm-up.  Call counts were chosen
from the spread over 6 seeds (docs/acd.md): the standard deviation of the
estimates at these counts is at most ~0.004 for P_w and SL and ~2.5 % for
ASA, so each tolerance is about 4 sigma.  Seeded, hence deterministic.
"""
from __future__ import annotations

import pytest

from acd_sim import simulate
from engine import erlang
from engine.acd import Acd

AGENTS = 10
HANDLE_S = 120.0
TOL_P = 0.015
TOL_SL = 0.015
TOL_ASA_REL = 0.10


@pytest.mark.parametrize(
    "occupancy,calls,strategy",
    [(0.70, 400_000, "longest_idle"), (0.85, 800_000, "longest_idle"),
     (0.95, 1_200_000, "longest_idle"), (0.85, 400_000, "random")],
)
def test_simulation_matches_erlang_c(occupancy, calls, strategy):
    rate = occupancy * AGENTS / HANDLE_S
    result = simulate(Acd, AGENTS, HANDLE_S, occupancy, calls, seed=20261123, strategy=strategy)
    p_w = erlang.probability_of_waiting(rate, HANDLE_S, AGENTS)
    asa = erlang.average_speed_of_answer(rate, HANDLE_S, AGENTS)
    sl = erlang.service_level(rate, HANDLE_S, AGENTS, 20.0)
    assert abs(result.probability_of_waiting - p_w) <= TOL_P, (result.probability_of_waiting, p_w)
    assert abs(result.service_level(20.0) - sl) <= TOL_SL, (result.service_level(20.0), sl)
    assert abs(result.average_speed_of_answer / asa - 1) <= TOL_ASA_REL, (result.average_speed_of_answer, asa)


def test_simulation_detects_a_wrong_model():
    """The check has teeth: the same simulation is far from Erlang C for a
    different agent count (the tolerances above reject it)."""
    occupancy = 0.85
    rate = occupancy * AGENTS / HANDLE_S
    result = simulate(Acd, AGENTS, HANDLE_S, occupancy, 100_000, seed=5)
    wrong = erlang.probability_of_waiting(rate, HANDLE_S, AGENTS + 1)
    assert abs(result.probability_of_waiting - wrong) > 3 * TOL_P
