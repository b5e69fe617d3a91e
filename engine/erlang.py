"""Erlang C: the M/M/c queue with infinite patience, used to check the ACD
(tests/engine/test_acd_erlang.py) and the KPI code (issue 10) against theory.

Notation: arrivals are Poisson with rate ``arrival_rate`` (calls/s), handle
times exponential with mean ``handle_time_s``, ``agents`` = c servers.  The
offered load is ``A = arrival_rate * handle_time_s`` Erlangs and the
occupancy ``rho = A / c`` (must be < 1 for a steady state).

- Probability of waiting (Erlang C):
  ``P_w = (A^c / c!) * c/(c-A) / (sum_{k<c} A^k/k! + A^c/c! * c/(c-A))``;
  computed through the numerically stable Erlang B recursion
  ``B_0 = 1, B_k = A B_{k-1} / (k + A B_{k-1})`` and
  ``C = c B_c / (c - A (1 - B_c))``.
- Average speed of answer (mean wait over all calls):
  ``ASA = P_w * handle_time_s / (c - A)``.
- Service level (share answered within ``t`` seconds):
  ``SL(t) = 1 - P_w * exp(-(c - A) * t / handle_time_s)``.

All functions are pure and raise ``ValueError`` for loads with no steady
state or non-positive inputs.
"""
from __future__ import annotations

import math


def _check(arrival_rate: float, handle_time_s: float, agents: int) -> float:
    if agents < 1:
        raise ValueError(f"Erlang C needs at least one agent, got {agents}")
    if arrival_rate <= 0 or handle_time_s <= 0:
        raise ValueError(
            f"Erlang C needs positive arrival_rate and handle_time_s, got {arrival_rate}, {handle_time_s}"
        )
    load = arrival_rate * handle_time_s
    if load >= agents:
        raise ValueError(f"offered load {load:.3f} Erlang >= {agents} agents: no steady state")
    return load


def erlang_b(load: float, agents: int) -> float:
    """Blocking probability of M/M/c/c for ``load`` Erlangs on ``agents``."""
    b = 1.0
    for k in range(1, agents + 1):
        b = load * b / (k + load * b)
    return b


def probability_of_waiting(arrival_rate: float, handle_time_s: float, agents: int) -> float:
    """Erlang C: probability that an arriving caller has to wait."""
    load = _check(arrival_rate, handle_time_s, agents)
    b = erlang_b(load, agents)
    return agents * b / (agents - load * (1.0 - b))


def average_speed_of_answer(arrival_rate: float, handle_time_s: float, agents: int) -> float:
    """Mean wait in queue over all callers (those not waiting count as 0 s)."""
    load = _check(arrival_rate, handle_time_s, agents)
    return probability_of_waiting(arrival_rate, handle_time_s, agents) * handle_time_s / (agents - load)


def service_level(arrival_rate: float, handle_time_s: float, agents: int, threshold_s: float) -> float:
    """Share of callers answered within ``threshold_s`` seconds."""
    load = _check(arrival_rate, handle_time_s, agents)
    p_w = probability_of_waiting(arrival_rate, handle_time_s, agents)
    return 1.0 - p_w * math.exp(-(agents - load) * threshold_s / handle_time_s)


def occupancy(arrival_rate: float, handle_time_s: float, agents: int) -> float:
    """Agent occupancy ``A / c``."""
    return _check(arrival_rate, handle_time_s, agents) / agents


def agents_for_service_level(
    arrival_rate: float, handle_time_s: float, target: float, threshold_s: float
) -> int:
    """Fewest agents reaching ``service_level >= target`` (staffing)."""
    c = max(1, math.floor(arrival_rate * handle_time_s) + 1)
    while service_level(arrival_rate, handle_time_s, c, threshold_s) < target:
        c += 1
    return c
