"""Erlang C formulas against hand-computed values and the textbook sum."""
from __future__ import annotations

import math

import pytest

from engine import erlang


def direct_erlang_c(load: float, c: int) -> float:
    """The textbook formula, summed term by term (independent of erlang.py)."""
    top = load**c / math.factorial(c) * c / (c - load)
    return top / (sum(load**k / math.factorial(k) for k in range(c)) + top)


def test_known_small_case():
    # A = 2 Erlang on 3 agents: P_w = (8/6 * 3) / (1 + 2 + 2 + 4) = 4/9
    assert erlang.probability_of_waiting(2.0, 1.0, 3) == pytest.approx(4 / 9, rel=1e-12)
    assert erlang.average_speed_of_answer(2.0, 1.0, 3) == pytest.approx(4 / 9, rel=1e-12)
    assert erlang.service_level(2.0, 1.0, 3, 0.0) == pytest.approx(5 / 9, rel=1e-12)


@pytest.mark.parametrize("load,c", [(0.5, 1), (7.0, 10), (8.5, 10), (9.5, 10), (45.0, 50), (95.0, 100)])
def test_matches_direct_sum(load, c):
    lam = load / 180.0
    assert erlang.probability_of_waiting(lam, 180.0, c) == pytest.approx(direct_erlang_c(load, c), rel=1e-9)
    assert erlang.occupancy(lam, 180.0, c) == pytest.approx(load / c)


def test_mm1_closed_forms():
    # M/M/1: P_w = rho, ASA = rho / (mu - lambda)
    assert erlang.probability_of_waiting(0.8, 1.0, 1) == pytest.approx(0.8)
    assert erlang.average_speed_of_answer(0.8, 1.0, 1) == pytest.approx(0.8 / 0.2)
    assert erlang.service_level(0.8, 1.0, 1, 2.0) == pytest.approx(1 - 0.8 * math.exp(-0.2 * 2.0))


def test_staffing_reaches_target():
    c = erlang.agents_for_service_level(100 / 1800, 180.0, 0.8, 20.0)
    assert erlang.service_level(100 / 1800, 180.0, c, 20.0) >= 0.8
    assert erlang.service_level(100 / 1800, 180.0, c - 1, 20.0) < 0.8


def test_no_steady_state_is_refused():
    with pytest.raises(ValueError, match="no steady state"):
        erlang.probability_of_waiting(1.0, 10.0, 10)
    with pytest.raises(ValueError, match="at least one agent"):
        erlang.service_level(1.0, 1.0, 0, 20.0)
