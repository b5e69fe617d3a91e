"""Dial pacing: how many new calls a campaign places now (preview, progressive, predictive).

Theory of operation
-------------------
A :class:`Pacer` is fed what happened (attempt outcomes with their ring
time, answered calls connected or dropped, handle times) and asked
:meth:`Pacer.calls_to_place` with the live picture: free agents (ready and
not reserved), the elapsed time of busy agents, calls in flight (dialled,
not yet answered or failed).  It never reads a clock or touches a call.

* ``preview``: 0.  The agent asks for a record, sees it, accepts (one call,
  reserved for that agent) or skips; the dialer does that, not the pacer.
* ``progressive``: one call per idle agent, each call reserved for its
  agent: ``free_agents - in_flight``.  Nobody is ever dropped, but every
  agent waits through every ring and every unanswered attempt.
* ``predictive``: place ``k`` more calls, the largest ``k`` for which the
  *expected share of answered calls finding no agent* stays at or under a
  target.  With ``n = in_flight + k`` calls each answered with the
  measured probability ``p``, answers ``X ~ Binomial(n, p)``; agents able to
  take them within the horizon ``H`` (mean time to answer + the connect
  timeout) are ``A = free + Binomial(busy, q)``, where a busy agent frees
  within ``H`` with ``q = 1 - exp(-H / h)`` (``h`` the measured mean handle
  time, memoryless).  Expected drops ``E[max(0, X - A)]`` are computed
  exactly from the two distributions (numpy), and ``k`` grows while
  ``E[max(0, X - A)] <= target * E[X]``.

  The model is an approximation (answers are spread over time, handle
  times are not exponential), so the target is closed-loop: ``target =
  cap * max(0, 1 - m / (setpoint * cap))`` where ``m`` is the measured drop
  rate over the last ``drop_window_calls`` answered calls and ``setpoint``
  is 0.7.  With no drops the pacer aims at the cap; as the measured rate
  nears 70 % of the cap the target falls to zero, which is progressive-like
  (no call beyond what idle agents cover for sure).  If the model
  under-estimates drops by a factor ``a``, the loop settles at ``m = cap *
  a * setpoint / (setpoint + a)``, below 70 % of the cap for any ``a``; the
  remaining 30 % absorbs the random swings of a rolling window (the
  simulation's worst 500-call window with setpoint 1.0 reached 3.8 % at a
  3 % cap with 50 agents; with 0.7 it stays under the cap).
  Until ``min_samples`` outcomes and handle times are measured, the
  predictive pacer dials progressively, and the target then ramps up over
  the first ``RAMP_CALLS`` answered calls: the first handle times measured
  are the short ones (the long calls are still going), so early estimates
  overdial; in the simulation that produced a burst of 16 drops in a row
  in a young window before the ramp was added.  Answered calls already
  waiting for an agent (``waiting``) are certain claims on the next free
  agents, and a budget guard keeps the expected drops of the calls in
  flight under ``BUDGET_SHARE`` of the drops the rolling window still
  allows before it would pass the cap.

Drops are defined as regulators do (Ofcom, FTC TSR): an answered call
(by a person: AMD machines excluded) that is not connected to an agent
within ``connect_timeout_s``.  The rate is drops / answered calls.

:mod:`engine.pacing_sim` is a discrete-event simulation of agents and
called parties used by the tests and the benchmark to show the cap holds.
"""
from __future__ import annotations

import collections
import enum
import functools
import math
from dataclasses import dataclass

import numpy as np


RAMP_CALLS = 200
"""Answered calls over which the predictive target ramps up from 0 to its full value."""
BUDGET_SHARE = 0.2
"""Share of the window's remaining drop budget that the expected drops of calls in flight may use."""


class PacingMode(enum.Enum):
    PREVIEW = "preview"
    PROGRESSIVE = "progressive"
    PREDICTIVE = "predictive"


# Agentless modes (notification, survey) pace like progressive against a
# channel count instead of agents; the dialer maps campaign modes here.
MODE_OF_CAMPAIGN = {"preview": PacingMode.PREVIEW, "progressive": PacingMode.PROGRESSIVE,
                    "predictive": PacingMode.PREDICTIVE, "notification": PacingMode.PROGRESSIVE,
                    "survey": PacingMode.PROGRESSIVE}


@functools.lru_cache(maxsize=4096)
def _pmf_cached(n: int, p_milli: int) -> np.ndarray:
    pmf = binomial_pmf(n, p_milli / 1000.0)
    pmf.setflags(write=False)
    return pmf


def binomial_pmf(n: int, p: float) -> np.ndarray:
    """P(X = x) for x = 0..n, X ~ Binomial(n, p) (numerically stable for n ≤ a few thousand)."""
    if n <= 0:
        return np.ones(1)
    if p <= 0.0:
        out = np.zeros(n + 1)
        out[0] = 1.0
        return out
    if p >= 1.0:
        out = np.zeros(n + 1)
        out[n] = 1.0
        return out
    x = np.arange(n + 1)
    log_pmf = (_log_choose(n) + x * math.log(p) + (n - x) * math.log1p(-p))
    pmf = np.exp(log_pmf)
    return pmf / pmf.sum()


@functools.lru_cache(maxsize=1024)
def _log_choose(n: int) -> np.ndarray:
    return np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(n + 1)])


def expected_shortfall(pmf_x: np.ndarray, pmf_a: np.ndarray, a_offset: int) -> float:
    """E[max(0, X - (a_offset + B))] for independent X (pmf_x) and B (pmf_a)."""
    # tail[a] = E[max(0, X - a)] for a = 0..len(pmf_x)-1, from the survival function;
    # for a < 0 it is E[X] - a (a negative offset: more certain claims than agents).
    survival = 1.0 - np.cumsum(pmf_x)              # P(X > a)
    tail = np.concatenate((np.cumsum(survival[::-1])[::-1], [0.0]))  # sum_{j>=a} P(X > j)
    a = a_offset + np.arange(len(pmf_a))
    mean = float(np.arange(len(pmf_x)) @ pmf_x)
    per_a = np.where(a < 0, mean - a, tail[np.clip(a, 0, len(pmf_x))])
    return float(per_a @ pmf_a)


@dataclass(frozen=True, slots=True)
class PacingStats:
    """What the pacer measured (reported by ``campaign.status``)."""

    answer_rate: float
    mean_ring_s: float
    mean_handle_s: float
    answered: int
    dropped: int
    window_drop_rate: float
    target: float

    def describe(self) -> dict[str, float | int]:
        return {"answer_rate": round(self.answer_rate, 4), "mean_ring_s": round(self.mean_ring_s, 2),
                "mean_handle_s": round(self.mean_handle_s, 2), "answered": self.answered,
                "dropped": self.dropped, "window_drop_rate": round(self.window_drop_rate, 4),
                "target": round(self.target, 4)}


class Pacer:
    """The dial-rate decision of one campaign."""

    def __init__(self, mode: PacingMode, *, max_drop_rate: float = 0.03, drop_window_calls: int = 500,
                 connect_timeout_s: float = 2.0, min_samples: int = 30, sample_window: int = 300,
                 max_in_flight_per_agent: float = 5.0, setpoint: float = 0.7) -> None:
        if not 0.0 <= max_drop_rate < 1.0:
            raise ValueError(f"max_drop_rate {max_drop_rate} is not in [0, 1)")
        self.mode = mode
        self.max_drop_rate = max_drop_rate
        self.connect_timeout_s = connect_timeout_s
        self.min_samples = min_samples
        self.max_in_flight_per_agent = max_in_flight_per_agent
        self.setpoint = setpoint
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=sample_window)
        self._rings: collections.deque[float] = collections.deque(maxlen=sample_window)
        self._handles: collections.deque[float] = collections.deque(maxlen=sample_window)
        self._connects: collections.deque[bool] = collections.deque(maxlen=drop_window_calls)  # True = dropped
        self.answered_total = 0
        self.dropped_total = 0

    def retune(self, mode: PacingMode, *, max_drop_rate: float, drop_window_calls: int,
               connect_timeout_s: float) -> None:
        """New parameters (``campaign.update``); the measurements are kept.

        A shorter drop window keeps its newest answered calls; a longer one
        fills up as calls are answered.
        """
        if not 0.0 <= max_drop_rate < 1.0:
            raise ValueError(f"max_drop_rate {max_drop_rate} is not in [0, 1)")
        self.mode = mode
        self.max_drop_rate = max_drop_rate
        self.connect_timeout_s = connect_timeout_s
        if self._connects.maxlen != drop_window_calls:
            self._connects = collections.deque(self._connects, maxlen=drop_window_calls)

    # ------------------------------------------------------------ measurements

    def attempt_finished(self, answered: bool, ring_s: float) -> None:
        """An attempt ended ringing: answered (by a person) or not; ``ring_s`` until that moment."""
        self._outcomes.append(bool(answered))
        if answered:
            self._rings.append(max(0.0, ring_s))

    def answered_call(self, dropped: bool) -> None:
        """An answered call was connected to an agent (``False``) or dropped (``True``)."""
        self._connects.append(bool(dropped))
        self.answered_total += 1
        self.dropped_total += int(dropped)

    def handle_finished(self, handle_s: float) -> None:
        """An agent finished a campaign call: talk plus wrap-up seconds."""
        self._handles.append(max(0.1, handle_s))

    # ------------------------------------------------------------ estimates

    @property
    def answer_rate(self) -> float:
        # A Beta(1, 1) prior keeps the estimate off 0 and 1 with few samples.
        return (sum(self._outcomes) + 1.0) / (len(self._outcomes) + 2.0)

    @property
    def mean_ring_s(self) -> float:
        return sum(self._rings) / len(self._rings) if self._rings else 10.0

    @property
    def mean_handle_s(self) -> float:
        return sum(self._handles) / len(self._handles) if self._handles else 60.0

    @property
    def window_drop_rate(self) -> float:
        return sum(self._connects) / len(self._connects) if self._connects else 0.0

    def target(self) -> float:
        """The expected-drop share allowed for the next decision (closed loop on the measured rate)."""
        cap = self.max_drop_rate
        if cap <= 0.0:
            return 0.0
        # Ramp up over the first RAMP_CALLS answered calls: early estimates (handle
        # times above all: the first calls to finish are the short ones) are biased
        # towards overdialling, and a burst of drops then fills a young window.
        ramp = min(1.0, self.answered_total / RAMP_CALLS)
        return ramp * cap * max(0.0, 1.0 - self.window_drop_rate / (self.setpoint * cap))

    def warmed_up(self) -> bool:
        return len(self._outcomes) >= self.min_samples and len(self._handles) >= self.min_samples

    def stats(self) -> PacingStats:
        return PacingStats(answer_rate=self.answer_rate, mean_ring_s=self.mean_ring_s,
                           mean_handle_s=self.mean_handle_s, answered=self.answered_total,
                           dropped=self.dropped_total, window_drop_rate=self.window_drop_rate,
                           target=self.target())

    # ------------------------------------------------------------ decision

    def calls_to_place(self, free_agents: int, busy_agents: int, in_flight: int,
                       channels_left: int | None = None, waiting: int = 0) -> int:
        """How many new calls to place now.

        ``free_agents``: idle ready agents, including those waiting for a
        call placed for them (progressive, preview); ``busy_agents``: agents on
        a campaign call or in wrap-up; ``in_flight``: calls dialled and not
        yet answered or failed; ``channels_left``: trunk/campaign channel
        limit minus calls up (``None``: unlimited); ``waiting``: answered
        calls waiting for an agent (they take the next free agents first).
        """
        if self.mode is PacingMode.PREVIEW:
            return 0
        progressive = max(0, free_agents - in_flight - waiting)
        if self.mode is PacingMode.PREDICTIVE and self.warmed_up() and free_agents + busy_agents > 0:
            k = self._predictive(free_agents - waiting, busy_agents, in_flight, progressive)
        else:
            k = progressive
        if channels_left is not None:
            k = min(k, max(0, channels_left))
        return k

    def _predictive(self, free: int, busy: int, in_flight: int, floor: int) -> int:
        # ``free`` may be negative (more answered calls waiting than idle agents).
        # Calls up to ``floor`` (one per idle agent) are always allowed; grow from there.
        p_milli = min(max(round(self.answer_rate * 1000), 10), 990)
        p = p_milli / 1000.0
        horizon = self.mean_ring_s + self.connect_timeout_s
        q_milli = round(1000.0 * (1.0 - math.exp(-horizon / self.mean_handle_s)))
        pmf_a = _pmf_cached(busy, q_milli)
        target = self.target()
        limit = int(math.ceil((max(free, 0) + busy) * self.max_in_flight_per_agent))
        # Budget guard: the drops still allowed in the rolling window before it
        # exceeds the cap; the calls in flight may use at most BUDGET_SHARE of them.
        window = self._connects.maxlen or len(self._connects)
        budget = BUDGET_SHARE * max(0.0, self.max_drop_rate * window - sum(self._connects))
        k = floor
        while in_flight + k < limit:
            n = in_flight + k + 1
            pmf_x = _pmf_cached(n, p_milli)
            shortfall = expected_shortfall(pmf_x, pmf_a, free)
            if shortfall > target * n * p or shortfall > budget:
                break
            k += 1
        return k


__all__ = ["MODE_OF_CAMPAIGN", "Pacer", "PacingMode", "PacingStats", "binomial_pmf", "expected_shortfall"]
