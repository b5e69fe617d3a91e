"""Vocabulary shared by the two ACD implementations (``engine.acd.PyAcd`` and
the compiled ``engine._acd.Acd``): agent states and the transition table,
strategy names and numbers, decision kinds, and the ACD's exceptions.

Both implementations import from here so that a decision tuple produced by
one compares equal to the tuple produced by the other.  Decisions are plain
tuples whose first element is a :class:`DecisionKind` value (an ``int``):

=====================  =====================================================
tuple                  meaning
=====================  =====================================================
``(OFFER, caller, agent, queue)``            agent reserved for the caller;
                                             the engine rings the agent and
                                             answers accept/decline/no-answer
``(OFFER_CANCELLED, caller, agent, queue)``  an outstanding offer is void
                                             (ring-all lost, caller abandoned,
                                             agent logged out...); stop ringing
``(AGENT_NOT_READY, agent, caller, reason)`` the ACD set the agent not ready
                                             (``reason`` = ``ring_no_answer``)
``(TIMEOUT, caller, queue, destination)``    the caller waited ``timeout_s``;
                                             route it to ``destination``
``(QUEUE_FULL, caller, queue, destination)`` enqueue refused (``max_length``)
``(OVERFLOW, caller, queue, to_queue)``      the caller moved to ``to_queue``
=====================  =====================================================

This module refuses to know about strings, tenants or SIP: the engine maps
its string ids (agent numbers, queue names, skill names) to small ints and
destination ints back to its own routing targets.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class AgentState(enum.IntEnum):
    """The engine-wide agent state (one enum; HELPERS.md interfaces)."""

    LOGGED_OUT = 0
    NOT_READY = 1
    READY = 2
    RESERVED = 3  # offered / ringing
    BUSY = 4  # on a call (ours or from elsewhere)
    WRAPUP = 5

    @property
    def label(self) -> str:
        return self.name.lower()


class AgentTrigger(enum.IntEnum):
    """What can happen to an agent.  ``OFFER``/``CANCEL`` come from the ACD
    itself, the rest from the engine's calls on the ACD."""

    LOGIN = 0
    LOGOUT = 1
    READY = 2
    NOT_READY = 3
    OFFER = 4
    ACCEPT = 5
    DECLINE = 6
    NO_ANSWER = 7
    CANCEL = 8
    BUSY = 9
    CALL_ENDED = 10
    WRAPUP_DONE = 11


S, T = AgentState, AgentTrigger
#: Legal agent transitions.  ``NO_ANSWER`` leads to READY here; the queue's
#: ``no_answer_not_ready`` option turns it into NOT_READY.  Anything missing
#: is illegal and raises :class:`AcdStateError` naming state and trigger.
AGENT_TRANSITIONS: dict[AgentState, dict[AgentTrigger, AgentState]] = {
    S.LOGGED_OUT: {T.LOGIN: S.NOT_READY},
    S.NOT_READY: {
        T.READY: S.READY,
        T.NOT_READY: S.NOT_READY,
        T.LOGOUT: S.LOGGED_OUT,
        T.BUSY: S.BUSY,
    },
    S.READY: {
        T.READY: S.READY,
        T.NOT_READY: S.NOT_READY,
        T.LOGOUT: S.LOGGED_OUT,
        T.OFFER: S.RESERVED,
        T.BUSY: S.BUSY,
    },
    S.RESERVED: {
        T.ACCEPT: S.BUSY,
        T.DECLINE: S.READY,
        T.NO_ANSWER: S.READY,
        T.CANCEL: S.READY,
        T.LOGOUT: S.LOGGED_OUT,
        T.NOT_READY: S.NOT_READY,
        T.BUSY: S.BUSY,
    },
    S.BUSY: {T.CALL_ENDED: S.WRAPUP, T.LOGOUT: S.LOGGED_OUT},
    S.WRAPUP: {
        T.WRAPUP_DONE: S.READY,
        T.READY: S.READY,
        T.NOT_READY: S.NOT_READY,
        T.LOGOUT: S.LOGGED_OUT,
        T.BUSY: S.BUSY,
    },
}
del S, T

#: The same table as a flat list for the compiled module: entry
#: ``state * N_TRIGGERS + trigger`` is the new state or -1 when illegal.
N_TRIGGERS = len(AgentTrigger)
TRANSITION_ARRAY: list[int] = [
    int(AGENT_TRANSITIONS[s].get(t, -1)) for s in AgentState for t in AgentTrigger
]


class Strategy(enum.IntEnum):
    """How a queue picks among several free eligible agents."""

    LONGEST_IDLE = 0
    FEWEST_CALLS = 1
    LEAST_TALK_TIME = 2
    ROUND_ROBIN = 3
    TOP_DOWN = 4
    RANDOM = 5
    RING_ALL = 6
    BEST_SKILL = 7
    WEIGHTED = 8

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_name(cls, name: str) -> "Strategy":
        """``"longest_idle"`` → ``Strategy.LONGEST_IDLE``; raises AcdConfigError."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise AcdConfigError(
                f"unknown ACD strategy {name!r}; expected one of {', '.join(STRATEGY_NAMES)}"
            ) from None


STRATEGY_NAMES: tuple[str, ...] = tuple(s.label for s in Strategy)
#: Strategies served by an ordered set of free agents (by rank) rather than a heap.
ORDERED_STRATEGIES = frozenset({Strategy.ROUND_ROBIN, Strategy.RANDOM, Strategy.RING_ALL})


class DecisionKind(enum.IntEnum):
    OFFER = 0
    OFFER_CANCELLED = 1
    AGENT_NOT_READY = 2
    TIMEOUT = 3
    QUEUE_FULL = 4
    OVERFLOW = 5


class Reason(enum.IntEnum):
    """Reason codes carried by ``AGENT_NOT_READY`` decisions."""

    RING_NO_ANSWER = 1


#: Caller priorities (VIP levels) are 0..MAX_PRIORITY; higher is served first.
MAX_PRIORITY = 9
PRIORITY_LEVELS = MAX_PRIORITY + 1
#: Skill levels are 1..MAX_SKILL_LEVEL.
MAX_SKILL_LEVEL = 10
#: Agent and queue ids are small non-negative ints below this bound.
MAX_ID = 1 << 20
#: Destination meaning "no fallback configured" in TIMEOUT / QUEUE_FULL.
NO_DESTINATION = -1
INF = float("inf")


class AcdError(Exception):
    """Base of the ACD's exceptions."""


class AcdConfigError(AcdError, ValueError):
    """A queue, tier or agent definition is invalid (bad level, unknown
    strategy, duplicate id...).  The message names the thing."""


class AcdStateError(AcdError):
    """The engine asked for something illegal in the current state: an
    unknown agent or caller, a transition missing from AGENT_TRANSITIONS,
    an answer to an offer that does not exist."""


def check_skills(skills: object, what: str = "agent") -> tuple[tuple[int, int], ...]:
    """Validate ``((skill, level), ...)`` (or a ``{skill: level}`` dict) and
    return it as a tuple sorted by skill.  Levels are 1..MAX_SKILL_LEVEL."""
    items = skills.items() if isinstance(skills, dict) else skills
    out: dict[int, int] = {}
    try:
        pairs = [(int(s), int(lv)) for s, lv in items]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise AcdConfigError(f"{what} skills must be (skill, level) int pairs, got {skills!r}") from None
    for skill, level in pairs:
        if not 0 <= skill < MAX_ID:
            raise AcdConfigError(f"{what} skill id {skill} out of range 0..{MAX_ID - 1}")
        if not 1 <= level <= MAX_SKILL_LEVEL:
            raise AcdConfigError(f"{what} skill {skill} level {level} out of range 1..{MAX_SKILL_LEVEL}")
        if skill in out:
            raise AcdConfigError(f"{what} skill {skill} listed twice")
        out[skill] = level
    return tuple(sorted(out.items()))


def check_id(value: object, what: str) -> int:
    """A small non-negative int id, or AcdConfigError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_ID:
        raise AcdConfigError(f"{what} id must be an int in 0..{MAX_ID - 1}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Tier:
    """One widening step of a queue's eligibility.

    An agent is eligible at this tier when it holds every ``skills`` entry
    at ``level >= min_level`` and, if ``groups`` is not empty, belongs to at
    least one of them.  A caller reaches the tier after waiting ``after_s``
    seconds in the queue; from then on agents eligible at this tier *or any
    earlier tier* may take it (tiers are cumulative).
    """

    after_s: float
    skills: tuple[tuple[int, int], ...]  # (skill, min_level)
    groups: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.after_s >= 0 or self.after_s == INF:
            raise AcdConfigError(f"tier after_s must be finite and >= 0, got {self.after_s!r}")
        object.__setattr__(self, "skills", check_skills(self.skills, "tier"))
        object.__setattr__(self, "groups", tuple(sorted({check_id(g, "group") for g in self.groups})))

    def admits(self, skills: dict[int, int], groups: frozenset[int]) -> bool:
        """True when an agent with these skills and groups is eligible."""
        if self.groups and not groups.intersection(self.groups):
            return False
        return all(skills.get(s, 0) >= lv for s, lv in self.skills)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Everything the ACD knows about a queue; validated on construction.

    ``tiers[0].after_s`` must be 0 and thresholds strictly increase.  Times
    are seconds since the caller entered this queue.  ``0`` disables
    ``timeout_s``, ``overflow_after_s``, ``max_length`` and
    ``ageing_interval_s``.  See docs/acd.md for the semantics of each key.
    """

    strategy: Strategy
    tiers: tuple[Tier, ...]
    timeout_s: float = 0.0
    timeout_destination: int = NO_DESTINATION
    max_length: int = 0
    full_destination: int = NO_DESTINATION
    overflow_after_s: float = 0.0
    overflow_queue: int = -1
    ageing_interval_s: float = 0.0
    ageing_step: int = 1
    ageing_max_priority: int = MAX_PRIORITY
    no_answer_not_ready: bool = True
    skill_weight: float = 1.0
    idle_weight: float = 1.0
    default_handle_time_s: float = 180.0
    handle_time_window: int = 50

    def __post_init__(self) -> None:
        strategy = self.strategy
        if isinstance(strategy, str):
            strategy = Strategy.from_name(strategy)
        try:
            strategy = Strategy(strategy)
        except ValueError:
            raise AcdConfigError(f"unknown ACD strategy {self.strategy!r}") from None
        object.__setattr__(self, "strategy", strategy)
        tiers = tuple(t if isinstance(t, Tier) else Tier(*t) for t in self.tiers)
        if not tiers:
            raise AcdConfigError("a queue needs at least one tier")
        if tiers[0].after_s != 0:
            raise AcdConfigError(f"first tier must start at after_s=0, got {tiers[0].after_s}")
        for prev, cur in zip(tiers, tiers[1:]):
            if not cur.after_s > prev.after_s:
                raise AcdConfigError(
                    f"tier thresholds must strictly increase, got {prev.after_s} then {cur.after_s}"
                )
        object.__setattr__(self, "tiers", tiers)
        for name in ("timeout_s", "overflow_after_s", "ageing_interval_s"):
            value = float(getattr(self, name))
            if not 0 <= value < INF:
                raise AcdConfigError(f"queue {name} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, name, value)
        if self.max_length < 0:
            raise AcdConfigError(f"queue max_length must be >= 0, got {self.max_length}")
        if self.overflow_after_s > 0:
            check_id(self.overflow_queue, "overflow_queue")
        if not 1 <= self.ageing_step <= MAX_PRIORITY:
            raise AcdConfigError(f"ageing_step must be in 1..{MAX_PRIORITY}, got {self.ageing_step}")
        if not 0 <= self.ageing_max_priority <= MAX_PRIORITY:
            raise AcdConfigError(
                f"ageing_max_priority must be in 0..{MAX_PRIORITY}, got {self.ageing_max_priority}"
            )
        if not self.default_handle_time_s > 0:
            raise AcdConfigError(f"default_handle_time_s must be > 0, got {self.default_handle_time_s}")
        if self.handle_time_window < 1:
            raise AcdConfigError(f"handle_time_window must be >= 1, got {self.handle_time_window}")
        for name in ("skill_weight", "idle_weight"):
            value = float(getattr(self, name))
            if not -1e12 < value < 1e12:
                raise AcdConfigError(f"queue {name} must be finite, got {value!r}")
            object.__setattr__(self, name, value)

    @property
    def thresholds(self) -> tuple[float, ...]:
        return tuple(float(t.after_s) for t in self.tiers)

    def min_tier(self, skills: dict[int, int], groups: frozenset[int]) -> int:
        """First tier admitting the agent, or -1 when none does."""
        for i, tier in enumerate(self.tiers):
            if tier.admits(skills, groups):
                return i
        return -1

    def score(self, skills: dict[int, int]) -> int:
        """Skill score for ``best_skill``/``weighted``: the sum of the
        agent's levels over the skills named by the first tier."""
        return sum(skills.get(s, 0) for s, _ in self.tiers[0].skills)


class QueueIndex:
    """Which queues could admit an agent, by skill: a queue is a candidate
    when one of its tiers needs only skills the agent has (or none at all).
    Keeps login and skill changes at O(queues touching the agent's skills)
    instead of O(all queues) — with 500 queues and 10,000 agents that is
    the difference between milliseconds and seconds."""

    def __init__(self) -> None:
        self._by_skill: dict[int, set[int]] = {}
        self._open: set[int] = set()

    def add(self, queue: int, config: QueueConfig) -> None:
        for tier in config.tiers:
            if not tier.skills:
                self._open.add(queue)
            for skill, _ in tier.skills:
                self._by_skill.setdefault(skill, set()).add(queue)

    def candidates(self, skills: dict[int, int]) -> list[int]:
        """Sorted ids of queues that might admit an agent with ``skills``."""
        found = set(self._open)
        for skill in skills:
            found.update(self._by_skill.get(skill, ()))
        return sorted(found)
