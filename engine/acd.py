"""The ACD: which caller goes to which agent.  Pure (sans-IO): every call
takes ``now`` (seconds, monotonic, never decreasing) and decisions come out
of :meth:`PyAcd.pop_decisions`; nothing here reads a clock or does IO.

This module is the readable reference ``PyAcd``; ``engine/_acd.pyx`` is the
same algorithm on C arrays.  ``Acd`` is the compiled one when it is built
and ``CTIENGINE_PUREPYTHON`` is not set.  Both produce identical decisions
for identical inputs (tests/engine/test_acd_differential.py).

Theory of operation
-------------------
*Eligibility.*  A queue has tiers (``acd_types.Tier``).  For each queue an
agent has a *minimum tier*: the first tier whose skills/groups it satisfies
(or none).  A caller has a *current tier*: the number of tier thresholds it
has waited past.  Agent ``a`` may take caller ``c`` of queue ``q`` iff
``min_tier(a, q) <= tier(c)``, ``a`` is not in ``c``'s exclusions (agents
that declined or did not answer this caller) and, while ``c`` is sticky,
``a`` is ``c``'s preferred agent.

*Order of callers.*  ``(effective_priority desc, seq asc)`` where ``seq``
is a global arrival counter (given on enqueue, kept on re-queue after a
declined offer, renewed on transfer/overflow).  Effective priority starts at
the caller's priority (0..9, VIP levels) and, when the queue has
``ageing_interval_s > 0``, grows by ``ageing_step`` after every full
interval of waiting in the queue, capped at ``max(priority,
ageing_max_priority)``.  Ageing, tiers, stickiness, overflow and timeout are
*caller timers*: the ACD keeps one heap of caller deadlines, reports the
earliest through :meth:`next_deadline` and processes every due deadline at
the start of each call (and in :meth:`advance`), in ``(time, seq)`` order.
Each waiting caller sits in its queue's FIFO for its *base* priority level
(ordered by seq); within one level earlier arrivals have waited longer, so
they have an equal or higher effective priority and an equal or higher tier:
the best caller of a queue for an agent is found among the heads of the ten
levels, skipping only callers that exclude this agent.

*Free agents.*  For each (queue, tier) the ACD keeps the free (READY)
agents whose minimum tier in the queue is that tier, ordered by the queue's
strategy: a binary heap with lazy deletion keyed ``(k1, k2, agent)`` for
``longest_idle`` (idle_since), ``fewest_calls`` (calls, idle_since),
``least_talk_time`` (talk_s, idle_since),
``best_skill`` (-score, idle_since) and ``weighted`` (``idle_weight *
idle_since - skill_weight * score``: the agent maximising ``skill_weight *
score + idle_weight * idle_time`` is the one minimising this key); or an
ordered array of ``rank << 21 | agent`` for ``round_robin`` (first key after
the last one offered, wrapping), ``random`` (uniform index drawn from a
splitmix64 generator seeded in the constructor), ``ring_all`` (every
key) and ``top_down`` (the smallest key not excluded).  Heap entries carry the agent's *epoch*, bumped whenever it stops
being free, so stale entries are dropped when they surface.  A decision for
an arriving caller looks at the heads of the containers of tiers
``0..tier(c)`` only: O(tiers * log n), never a scan of all agents.
Containers are shared between (queue, tier) pairs of queues with the same
strategy family (``weighted`` per weight pair; ``round_robin``, ``random``,
``ring_all`` and ``top_down`` form one ordered family) and the same tiers up to that
tier: they hold the same agents under the same keys, so an agent freed is
pushed once per distinct container rather than once per queue it serves.

*Matching rule (the invariant).*  After every call no free agent may take
any waiting caller.  Whenever an agent becomes free it takes the best caller
it may take (over its sticky callers and every queue it serves), else it
joins the free containers.  Whenever a caller starts waiting (enqueue,
re-queue after decline, tier widening, sticky expiry, transfer) it takes
the best agent of its queue's strategy, else it joins its FIFO.

*Offers.*  An offer reserves the agent(s) (state RESERVED).  ``accept``
makes the agent BUSY and removes the caller (ring-all: the other agents get
``OFFER_CANCELLED`` and become free).  ``decline`` / ``no_answer`` exclude
the agent for this caller and, once no offer is outstanding, re-queue the
caller at its original place (same seq).  ``no_answer`` sets the agent not
ready when the queue's ``no_answer_not_ready`` is true.  Timeout and
overflow never fire while a caller is being offered; they fire when it
returns to waiting if they are due by then.

*Expected wait.*  ``expected_wait_s = position * average_handle_time_s /
staffed`` where ``position`` is 1 + the waiting callers of the queue ahead
of this one, ``average_handle_time_s`` the mean of the queue's last
``handle_time_window`` handle times (answer to end of wrap-up; the queue's
``default_handle_time_s`` before any) and ``staffed`` the agents eligible
for the caller's tier that are READY, RESERVED, BUSY or WRAPUP.  With c
busy servers and exponential handling, departures come at rate c/AHT, so
the k-th caller in line waits k * AHT / c on average.
"""
from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from typing import Iterable

from engine.acd_types import (
    AGENT_TRANSITIONS,
    INF,
    MAX_PRIORITY,
    PRIORITY_LEVELS,
    AcdConfigError,
    AcdStateError,
    AgentState,
    AgentTrigger,
    DecisionKind,
    QueueConfig,
    QueueIndex,
    Reason,
    Strategy,
    check_id,
    check_skills,
)
from engine.purepython import pure_python_forced

__all__ = ["Acd", "PyAcd", "COMPILED"]

_MASK64 = (1 << 64) - 1
_RANK_SHIFT = 21

# caller states
_WAITING, _STICKY, _OFFERED = 0, 1, 2

_OFFER = int(DecisionKind.OFFER)
_CANCELLED = int(DecisionKind.OFFER_CANCELLED)
_NOT_READY = int(DecisionKind.AGENT_NOT_READY)
_TIMEOUT = int(DecisionKind.TIMEOUT)
_FULL = int(DecisionKind.QUEUE_FULL)
_OVERFLOW = int(DecisionKind.OVERFLOW)

_S = AgentState
_T = AgentTrigger
# strategies served by a sorted list of agent keys (``top_down`` too: its
# best agent is the smallest key, so it shares the containers of the others)
_ORDERED = (int(Strategy.ROUND_ROBIN), int(Strategy.RANDOM), int(Strategy.RING_ALL), int(Strategy.TOP_DOWN))
_ACTIVE_STATES = (_S.READY, _S.RESERVED, _S.BUSY, _S.WRAPUP)


class _Agent:
    __slots__ = (
        "id", "state", "rank", "key", "skills", "groups", "idle_since", "calls", "talk_s",
        "busy_since", "epoch", "memberships", "containers", "sticky", "offer_caller", "call_queue",
    )

    def __init__(self, agent: int, rank: int, skills: dict[int, int], groups: frozenset[int]) -> None:
        self.id = agent
        self.state = _S.NOT_READY
        self.rank = rank
        self.key = (rank << _RANK_SHIFT) | agent
        self.skills = skills
        self.groups = groups
        self.idle_since = 0.0
        self.calls = 0
        self.talk_s = 0.0
        self.busy_since = 0.0
        self.epoch = 0
        self.memberships: list[tuple[_Queue, int]] = []  # sorted by queue id
        # the distinct free containers of the memberships, each with a queue
        # using it (the queue gives the container's key)
        self.containers: list[tuple[_Free, _Queue]] = []
        self.sticky: list[_Caller] = []  # callers waiting for this agent only
        self.offer_caller: _Caller | None = None
        self.call_queue = -1  # queue of the ACD call in progress / in wrap-up


class _Caller:
    __slots__ = (
        "id", "queue", "seq", "priority", "eff", "age_steps", "enq_at", "tier", "state",
        "sticky_agent", "sticky_until", "excluded", "offers", "timer_ver",
    )

    def __init__(self, caller: int, queue: "_Queue", seq: int, priority: int, now: float) -> None:
        self.id = caller
        self.queue = queue
        self.seq = seq
        self.priority = priority
        self.eff = priority
        self.age_steps = 0
        self.enq_at = now
        self.tier = 0
        self.state = _WAITING
        self.sticky_agent: _Agent | None = None
        self.sticky_until = INF
        self.excluded: list[int] = []
        self.offers: list[_Agent] = []
        self.timer_ver = -1


class _Free:
    """Free agents of one eligibility class: a heap of ``(k1, k2, agent,
    epoch)`` (with stale entries) or a sorted list of agent keys.  Shared by
    every (queue, tier) with the same strategy family and the same tiers up
    to that tier, since those hold exactly the same agents under the same
    keys."""

    __slots__ = ("items", "live")

    def __init__(self) -> None:
        self.items: list = []
        self.live = 0  # free agents held (a heap holds stale entries too)


class _Queue:
    __slots__ = (
        "id", "cfg", "strategy", "thresholds", "score_skills", "fifo_seq", "fifo_callers",
        "waiting", "count", "members", "free", "live", "rr_last", "handle_times", "handle_pos",
    )

    def __init__(self, queue: int, cfg: QueueConfig) -> None:
        self.id = queue
        self.cfg = cfg
        self.strategy = int(cfg.strategy)
        self.thresholds = cfg.thresholds
        n = len(cfg.tiers)
        self.fifo_seq: list[list[int]] = [[] for _ in range(PRIORITY_LEVELS)]
        self.fifo_callers: list[list[_Caller]] = [[] for _ in range(PRIORITY_LEVELS)]
        self.waiting = 0  # callers in the FIFOs
        self.count = 0  # callers held: waiting, sticky or offered
        self.members: dict[int, int] = {}  # agent id -> min tier
        # per tier: the shared free container (PyAcd.add_queue sets them)
        self.free: list[_Free] = [_Free() for _ in range(n)]
        self.rr_last = -1
        self.handle_times: list[float] = []
        self.handle_pos = 0

    def average_handle_time_s(self) -> float:
        if not self.handle_times:
            return self.cfg.default_handle_time_s
        return sum(self.handle_times) / len(self.handle_times)

    def record_handle_time(self, seconds: float) -> None:
        if len(self.handle_times) < self.cfg.handle_time_window:
            self.handle_times.append(seconds)
        else:
            self.handle_times[self.handle_pos] = seconds
            self.handle_pos = (self.handle_pos + 1) % self.cfg.handle_time_window


def _better(a: _Caller, b: _Caller | None) -> bool:
    """Caller order: higher effective priority, then earlier seq."""
    return b is None or a.eff > b.eff or (a.eff == b.eff and a.seq < b.seq)


class PyAcd:
    """Automatic call distributor (pure-Python reference).

    Args:
        seed: seed of the splitmix64 generator used by the ``random`` strategy.

    Every event method takes ``now`` first processes the caller deadlines
    due at ``now`` (as :meth:`advance` does), then the event; decisions
    accumulate until :meth:`pop_decisions`.  Unknown ids and illegal
    transitions raise :class:`~engine.acd_types.AcdStateError` and leave the
    ACD unchanged; bad configuration raises
    :class:`~engine.acd_types.AcdConfigError`.
    """

    def __init__(self, seed: int = 0) -> None:
        self._rng = seed & _MASK64
        self._agents: dict[int, _Agent] = {}
        self._queues: dict[int, _Queue] = {}
        self._callers: dict[int, _Caller] = {}
        self._index = QueueIndex()
        self._free_by_sig: dict[tuple, _Free] = {}
        self._timers: list[tuple[float, int, int, int]] = []  # (t, seq, ver, caller)
        self._seq = 0
        self._ver = 0
        self._epoch = 0  # global, so a re-login never revives old heap entries
        self._now = -INF
        self._out: list[tuple] = []

    # ------------------------------------------------------------ configuration
    def add_queue(self, queue: int, config: QueueConfig) -> None:
        """Define queue ``queue``; agents already logged in are matched to it.

        Raises AcdConfigError for a duplicate id or an overflow to itself."""
        check_id(queue, "queue")
        if not isinstance(config, QueueConfig):
            raise AcdConfigError(f"queue {queue} config must be a QueueConfig, got {type(config).__name__}")
        if queue in self._queues:
            raise AcdConfigError(f"queue {queue} already defined")
        if config.overflow_after_s > 0 and config.overflow_queue == queue:
            raise AcdConfigError(f"queue {queue} overflows to itself")
        q = _Queue(queue, config)
        s = q.strategy
        if s in _ORDERED:
            family: tuple = (int(Strategy.ROUND_ROBIN),)
        elif s == Strategy.WEIGHTED:
            family = (s, config.idle_weight, config.skill_weight)
        else:
            family = (s,)
        for t in range(len(config.tiers)):
            sig = (family, tuple((tr.skills, tr.groups) for tr in config.tiers[: t + 1]))
            q.free[t] = self._free_by_sig.setdefault(sig, q.free[t])
        self._queues[queue] = q
        self._index.add(queue, config)
        for aid in sorted(self._agents):
            a = self._agents[aid]
            tier = config.min_tier(a.skills, a.groups)
            if tier < 0:
                continue
            q.members[aid] = tier
            shared = any(f is q.free[tier] for f, _ in a.containers)
            a.memberships.append((q, tier))
            a.memberships.sort(key=lambda m: m[0].id)
            self._rebuild_containers(a)
            if not shared and a.state == _S.READY:
                self._push_free(q.free[tier], q, a)

    # --------------------------------------------------------------- agent side
    def login(
        self, agent: int, now: float, skills: Iterable[tuple[int, int]] | dict[int, int] = (),
        groups: Iterable[int] = (), rank: int = -1,
    ) -> None:
        """Log ``agent`` in (state NOT_READY).  ``skills`` are ``(skill,
        level)`` pairs, ``groups`` group ids, ``rank`` the agent's place for
        ``top_down``/``round_robin``/``ring_all`` (default: the agent id)."""
        check_id(agent, "agent")
        sk = dict(check_skills(skills))
        gr = frozenset(check_id(g, "group") for g in groups)
        if rank == -1:
            rank = agent
        if not 0 <= rank < (1 << 31):
            raise AcdConfigError(f"agent {agent} rank must be in 0..2**31-1, got {rank}")
        self._advance(now)
        if agent in self._agents:
            raise AcdStateError(f"agent {agent} is already logged in")
        a = _Agent(agent, rank, sk, gr)
        self._epoch += 1
        a.epoch = self._epoch
        self._agents[agent] = a
        self._attach(a)

    def logout(self, agent: int, now: float) -> None:
        """Log ``agent`` out from any state; an offer to it is cancelled (the
        caller re-queued without exclusion) and its sticky callers released."""
        a = self._agent(agent)
        self._advance(now)
        old = self._transition(a, _T.LOGOUT)
        self._leave(a, old, now)
        del self._agents[agent]
        self._detach(a)
        released = sorted(a.sticky, key=lambda c: c.seq)
        a.sticky = []
        for c in released:
            c.state = _WAITING
            c.sticky_agent = None
            c.sticky_until = INF
            self._schedule(c)
            self._wait(c, now)

    def ready(self, agent: int, now: float) -> None:
        """Agent is ready (from NOT_READY or WRAPUP; no-op when READY)."""
        a = self._agent(agent)
        self._advance(now)
        old = self._transition(a, _T.READY)
        if old != _S.READY:
            self._end_wrapup(a, old, now)
            a.idle_since = now
            self._available(a, now)

    def not_ready(self, agent: int, now: float) -> None:
        """Agent is not ready; an outstanding offer to it is cancelled."""
        a = self._agent(agent)
        self._advance(now)
        old = self._transition(a, _T.NOT_READY)
        self._end_wrapup(a, old, now)
        self._leave(a, old, now)

    def busy(self, agent: int, now: float) -> None:
        """Agent took a call from elsewhere (outbound, internal, direct)."""
        a = self._agent(agent)
        self._advance(now)
        old = self._transition(a, _T.BUSY)
        self._end_wrapup(a, old, now)
        self._leave(a, old, now)
        a.busy_since = now
        a.call_queue = -1

    def call_ended(self, agent: int, now: float) -> None:
        """The agent's call ended: BUSY → WRAPUP (talk time accounted for
        ACD calls, used by ``least_talk_time``)."""
        a = self._agent(agent)
        self._advance(now)
        self._transition(a, _T.CALL_ENDED)
        if a.call_queue >= 0:
            a.talk_s += now - a.busy_since

    def wrapup_done(self, agent: int, now: float) -> None:
        """After-call work finished: WRAPUP → READY."""
        a = self._agent(agent)
        self._advance(now)
        old = self._transition(a, _T.WRAPUP_DONE)
        self._end_wrapup(a, old, now)
        a.idle_since = now
        self._available(a, now)

    def set_skills(
        self, agent: int, now: float, skills: Iterable[tuple[int, int]] | dict[int, int],
        groups: Iterable[int] | None = None,
    ) -> None:
        """Replace the agent's skills (and groups when given); queue
        memberships are recomputed and a free agent re-matched."""
        a = self._agent(agent)
        sk = dict(check_skills(skills))
        gr = a.groups if groups is None else frozenset(check_id(g, "group") for g in groups)
        self._advance(now)
        free = a.state == _S.READY
        if free:
            self._unfree(a)
        self._detach(a)
        a.skills = sk
        a.groups = gr
        self._attach(a)
        if free:
            self._available(a, now)

    # -------------------------------------------------------------- caller side
    def enqueue(
        self, caller: int, queue: int, now: float, priority: int = 0,
        sticky_agent: int = -1, sticky_s: float = 0.0,
    ) -> None:
        """A caller enters ``queue``.  ``priority`` 0..9 (higher first);
        ``sticky_agent`` with ``sticky_s > 0``: wait only for that agent for
        up to ``sticky_s`` seconds (ignored when it is not logged in).
        May decide QUEUE_FULL (max_length reached) or OFFER."""
        q = self._queue(queue)
        if not isinstance(caller, int) or isinstance(caller, bool) or not -(1 << 63) <= caller < (1 << 63):
            raise AcdStateError(f"caller id must be a 64-bit int, got {caller!r}")
        if not 0 <= priority <= MAX_PRIORITY:
            raise AcdConfigError(f"caller {caller} priority must be in 0..{MAX_PRIORITY}, got {priority}")
        if not sticky_s >= 0:
            raise AcdConfigError(f"caller {caller} sticky_s must be >= 0, got {sticky_s}")
        self._advance(now)
        if caller in self._callers:
            raise AcdStateError(f"caller {caller} is already queued")
        c = _Caller(caller, q, 0, priority, now)
        sa = self._agents.get(sticky_agent) if sticky_s > 0 else None
        self._enter(c, q, now, sa, sticky_s)

    def abandon(self, caller: int, now: float) -> None:
        """The caller hung up; outstanding offers are cancelled."""
        c = self._caller(caller)
        self._advance(now)
        released = self._detach_caller(c)
        for a in released:
            self._available(a, now)

    def transfer(self, caller: int, queue: int, now: float, priority: int = -1) -> None:
        """Move a caller to another queue (fresh position there; keeps its
        exclusions; ``priority`` -1 keeps the current base priority)."""
        c = self._caller(caller)
        q = self._queue(queue)
        if not -1 <= priority <= MAX_PRIORITY:
            raise AcdConfigError(f"caller {caller} priority must be in 0..{MAX_PRIORITY}, got {priority}")
        self._advance(now)
        released = self._detach_caller(c)
        self._reenter(c, q, now, c.priority if priority < 0 else priority)
        for a in released:
            self._available(a, now)

    def accept(self, caller: int, agent: int, now: float) -> None:
        """The agent answered the offer: agent BUSY, caller leaves the ACD;
        other ring-all offers are cancelled."""
        c, a = self._offer_pair(caller, agent)
        self._advance(now)
        self._transition(a, _T.ACCEPT)
        a.offer_caller = None
        a.calls += 1
        a.busy_since = now
        a.call_queue = c.queue.id
        others = [b for b in c.offers if b is not a]
        c.offers = []
        self._remove_caller(c)
        qid = c.queue.id
        for b in others:
            self._transition(b, _T.CANCEL)
            b.offer_caller = None
            self._out.append((_CANCELLED, c.id, b.id, qid))
        for b in others:
            self._available(b, now)

    def decline(self, caller: int, agent: int, now: float) -> None:
        """The agent refused: agent excluded for this caller, back to ready."""
        self._refused(caller, agent, now, _T.DECLINE)

    def no_answer(self, caller: int, agent: int, now: float) -> None:
        """Ring no answer: agent excluded for this caller; set not ready
        (decision AGENT_NOT_READY) when the queue says so, else ready."""
        self._refused(caller, agent, now, _T.NO_ANSWER)

    # ---------------------------------------------------------- time & output
    def advance(self, now: float) -> None:
        """Process every caller deadline due at ``now``."""
        self._advance(now)

    def next_deadline(self) -> float:
        """Earliest time a tier widens, ageing steps, stickiness ends, an
        overflow or a timeout fires; ``inf`` when nothing is pending."""
        timers = self._timers
        while timers:
            t, _, ver, cid = timers[0]
            c = self._callers.get(cid)
            if c is not None and c.timer_ver == ver:
                return t
            heapq.heappop(timers)
        return INF

    def pop_decisions(self) -> list[tuple]:
        """Decisions made since the last call, oldest first (see acd_types)."""
        out = self._out
        self._out = []
        return out

    # ------------------------------------------------------------------ queries
    def agent_state(self, agent: int) -> int:
        """The agent's AgentState value (LOGGED_OUT for unknown agents)."""
        a = self._agents.get(agent)
        return int(_S.LOGGED_OUT) if a is None else int(a.state)

    def agent_stats(self, agent: int) -> tuple[int, float, float]:
        """``(calls, talk_s, idle_since)`` of a logged-in agent."""
        a = self._agent(agent)
        return (a.calls, a.talk_s, a.idle_since)

    def caller_info(self, caller: int) -> tuple[int, int, int, int, int]:
        """``(queue, state, effective_priority, tier, seq)``; state 0 waiting,
        1 sticky, 2 offered."""
        c = self._caller(caller)
        return (c.queue.id, c.state, c.eff, c.tier, c.seq)

    def offered_agents(self, caller: int) -> tuple[int, ...]:
        return tuple(a.id for a in self._caller(caller).offers)

    def queue_length(self, queue: int) -> int:
        """Callers held by the queue (waiting, sticky or being offered)."""
        return self._queue(queue).count

    def waiting_callers(self, queue: int) -> list[int]:
        """Waiting (not sticky, not offered) caller ids in service order."""
        q = self._queue(queue)
        cs = [c for level in q.fifo_callers for c in level]
        cs.sort(key=lambda c: (-c.eff, c.seq))
        return [c.id for c in cs]

    def free_agents(self, queue: int) -> list[int]:
        """Free agents eligible in the queue at any tier, sorted by id."""
        q = self._queue(queue)
        return sorted(aid for aid in q.members if self._agents[aid].state == _S.READY)

    def position(self, caller: int) -> int:
        """1-based place in line (0 while an offer is outstanding)."""
        c = self._caller(caller)
        if c.state == _OFFERED:
            return 0
        if c.state == _STICKY:
            assert c.sticky_agent is not None
            others = c.sticky_agent.sticky
        else:
            others = [o for level in c.queue.fifo_callers for o in level]
        return 1 + sum(1 for o in others if o is not c and _better(o, c))

    def expected_wait_s(self, caller: int) -> float:
        """Estimated remaining wait (see module docstring); inf when no
        eligible agent is staffed, 0 while an offer is outstanding."""
        c = self._caller(caller)
        pos = self.position(caller)
        if pos == 0:
            return 0.0
        q = c.queue
        staffed = 0
        for aid, tier in q.members.items():
            if tier <= c.tier and self._agents[aid].state in _ACTIVE_STATES:
                staffed += 1
        if staffed == 0:
            return INF
        return pos * q.average_handle_time_s() / staffed

    def average_handle_time_s(self, queue: int) -> float:
        return self._queue(queue).average_handle_time_s()

    # ============================================================== internals
    def _agent(self, agent: int) -> _Agent:
        a = self._agents.get(agent)
        if a is None:
            raise AcdStateError(f"agent {agent!r} is not logged in")
        return a

    def _queue(self, queue: int) -> _Queue:
        q = self._queues.get(queue)
        if q is None:
            raise AcdStateError(f"queue {queue!r} is not defined")
        return q

    def _caller(self, caller: int) -> _Caller:
        c = self._callers.get(caller)
        if c is None:
            raise AcdStateError(f"caller {caller!r} is not queued")
        return c

    def _offer_pair(self, caller: int, agent: int) -> tuple[_Caller, _Agent]:
        c = self._caller(caller)
        a = self._agent(agent)
        if a.offer_caller is not c:
            raise AcdStateError(f"agent {agent} has no offer for caller {caller}")
        return c, a

    def _transition(self, a: _Agent, trigger: _T) -> _S:
        old = a.state
        new = AGENT_TRANSITIONS[old].get(trigger)
        if new is None:
            raise AcdStateError(f"agent {a.id} in state {old.label} cannot {trigger.name.lower()}")
        a.state = new
        return old

    def _attach(self, a: _Agent) -> None:
        for qid in self._index.candidates(a.skills):
            q = self._queues[qid]
            tier = q.cfg.min_tier(a.skills, a.groups)
            if tier >= 0:
                q.members[a.id] = tier
                a.memberships.append((q, tier))
        self._rebuild_containers(a)

    @staticmethod
    def _rebuild_containers(a: _Agent) -> None:
        seen: set[int] = set()
        a.containers = []
        for q, tier in a.memberships:
            f = q.free[tier]
            if id(f) not in seen:
                seen.add(id(f))
                a.containers.append((f, q))

    def _detach(self, a: _Agent) -> None:
        for q, _ in a.memberships:
            del q.members[a.id]
        a.memberships = []
        a.containers = []

    def _end_wrapup(self, a: _Agent, old: _S, now: float) -> None:
        if old == _S.WRAPUP and a.call_queue >= 0:
            self._queues[a.call_queue].record_handle_time(now - a.busy_since)
            a.call_queue = -1

    def _leave(self, a: _Agent, old: _S, now: float) -> None:
        """``a`` stopped being available (already transitioned from ``old``)."""
        if old == _S.READY:
            self._unfree(a)
        elif old == _S.RESERVED:
            c = a.offer_caller
            assert c is not None
            a.offer_caller = None
            c.offers.remove(a)
            self._out.append((_CANCELLED, c.id, a.id, c.queue.id))
            if not c.offers:
                self._requeue(c, now)

    # ---- free containers
    def _heap_key(self, q: _Queue, a: _Agent) -> tuple[float, float]:
        s = q.strategy
        if s == Strategy.LONGEST_IDLE:
            return (a.idle_since, 0.0)
        if s == Strategy.FEWEST_CALLS:
            return (float(a.calls), a.idle_since)
        if s == Strategy.LEAST_TALK_TIME:
            return (a.talk_s, a.idle_since)
        score = float(q.cfg.score(a.skills))
        if s == Strategy.BEST_SKILL:
            return (-score, a.idle_since)
        return (q.cfg.idle_weight * a.idle_since - q.cfg.skill_weight * score, 0.0)

    def _push_free(self, f: _Free, q: _Queue, a: _Agent) -> None:
        """Add free agent ``a`` to container ``f`` (keyed as for queue ``q``)."""
        f.live += 1
        if q.strategy in _ORDERED:
            insort(f.items, a.key)
            return
        k1, k2 = self._heap_key(q, a)
        heap = f.items
        heapq.heappush(heap, (k1, k2, a.id, a.epoch))
        if len(heap) > 2 * f.live + 64:  # drop stale entries
            agents = self._agents
            f.items = [e for e in heap if self._valid(e, agents)]
            heapq.heapify(f.items)

    @staticmethod
    def _valid(e: tuple[float, float, int, int], agents: dict[int, _Agent]) -> bool:
        a = agents.get(e[2])
        return a is not None and a.state == _S.READY and a.epoch == e[3]

    def _unfree(self, a: _Agent) -> None:
        """Remove a (formerly READY) agent from every free container."""
        self._epoch += 1
        a.epoch = self._epoch
        for f, q in a.containers:
            f.live -= 1
            if q.strategy in _ORDERED:
                lst = f.items
                del lst[bisect_left(lst, a.key)]

    def _available(self, a: _Agent, now: float) -> None:
        """``a`` is READY: take the best caller it may take, else be free."""
        best: _Caller | None = None
        for c in a.sticky:
            if _better(c, best):
                best = c
        aid = a.id
        for q, m in a.memberships:
            if not q.waiting:
                continue
            for level in range(PRIORITY_LEVELS):
                for c in q.fifo_callers[level]:
                    if c.tier < m:
                        break
                    if aid in c.excluded:
                        continue
                    if _better(c, best):
                        best = c
                    break
        if best is None:
            for f, q in a.containers:
                self._push_free(f, q, a)
            return
        if best.state == _STICKY:
            a.sticky.remove(best)
        else:
            self._fifo_remove(best)
        self._offer(best, [a], False)

    def _find_agents(self, c: _Caller) -> list[_Agent]:
        """Best free agent(s) for waiting caller ``c`` by its queue's strategy."""
        q = c.queue
        agents = self._agents
        excl = c.excluded
        tiers = range(c.tier + 1)
        s = q.strategy
        if s in _ORDERED:
            if s == Strategy.TOP_DOWN:  # smallest non-excluded key over the tiers
                best_key = None
                for t in tiers:
                    for k in q.free[t].items:
                        if (k & 0x1FFFFF) not in excl:
                            if best_key is None or k < best_key:
                                best_key = k
                            break
                return [] if best_key is None else [agents[best_key & 0x1FFFFF]]
            if s == Strategy.RING_ALL:
                keys = sorted(k for t in tiers for k in q.free[t].items if (k & 0x1FFFFF) not in excl)
                return [agents[k & 0x1FFFFF] for k in keys]
            if s == Strategy.ROUND_ROBIN:
                after = None
                first = None
                for t in tiers:
                    lst = q.free[t].items
                    i = bisect_right(lst, q.rr_last)
                    while i < len(lst) and (lst[i] & 0x1FFFFF) in excl:
                        i += 1
                    if i < len(lst) and (after is None or lst[i] < after):
                        after = lst[i]
                    i = 0
                    while i < len(lst) and (lst[i] & 0x1FFFFF) in excl:
                        i += 1
                    if i < len(lst) and (first is None or lst[i] < first):
                        first = lst[i]
                key = after if after is not None else first
                return [] if key is None else [agents[key & 0x1FFFFF]]
            # RANDOM: index into the candidates listed tier by tier in key order
            if excl:
                cand = [k for t in tiers for k in q.free[t].items if (k & 0x1FFFFF) not in excl]
                if not cand:
                    return []
                return [agents[cand[self._random() % len(cand)] & 0x1FFFFF]]
            total = sum(len(q.free[t].items) for t in tiers)
            if total == 0:
                return []
            r = self._random() % total
            for t in tiers:
                n = len(q.free[t].items)
                if r < n:
                    return [agents[q.free[t].items[r] & 0x1FFFFF]]
                r -= n
            raise AssertionError("random index out of range")
        best = None
        for t in tiers:
            heap = q.free[t].items
            held = []
            while heap:
                e = heap[0]
                if not self._valid(e, agents):
                    heapq.heappop(heap)
                elif e[2] in excl:
                    held.append(heapq.heappop(heap))
                else:
                    if best is None or e < best:
                        best = e
                    break
            for e in held:
                heapq.heappush(heap, e)
        return [] if best is None else [agents[best[2]]]

    def _random(self) -> int:
        """splitmix64 (Steele, Lea, Flood 2014)."""
        self._rng = (self._rng + 0x9E3779B97F4A7C15) & _MASK64
        z = self._rng
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def _offer(self, c: _Caller, agents: list[_Agent], in_free: bool = True) -> None:
        """Reserve ``agents`` for ``c``; ``in_free`` says whether they sit in
        the free containers (False for an agent that just became ready)."""
        c.state = _OFFERED
        c.offers = agents
        qid = c.queue.id
        for a in agents:
            self._transition(a, _T.OFFER)
            if in_free:
                self._unfree(a)
            else:
                self._epoch += 1
                a.epoch = self._epoch
            a.offer_caller = c
            self._out.append((_OFFER, c.id, a.id, qid))
        if c.queue.strategy == Strategy.ROUND_ROBIN:
            c.queue.rr_last = agents[0].key
        self._schedule(c)

    # ---- caller placement
    def _enter(self, c: _Caller, q: _Queue, now: float, sa: _Agent | None, sticky_s: float) -> None:
        if q.cfg.max_length and q.count >= q.cfg.max_length:
            self._out.append((_FULL, c.id, q.id, q.cfg.full_destination))
            return
        self._seq += 1
        c.seq = self._seq
        c.queue = q
        c.enq_at = now
        c.tier = 0
        c.eff = c.priority
        c.age_steps = 0
        self._callers[c.id] = c
        q.count += 1
        if sa is not None:
            c.state = _STICKY
            c.sticky_agent = sa
            c.sticky_until = now + sticky_s
            self._update_clock(c, now)
            self._schedule(c)
            if sa.state == _S.READY:
                self._offer(c, [sa])
            else:
                sa.sticky.append(c)
            return
        c.state = _WAITING
        self._update_clock(c, now)
        self._schedule(c)
        self._wait(c, now)

    def _reenter(self, c: _Caller, q: _Queue, now: float, priority: int) -> None:
        c.priority = priority
        c.state = _WAITING
        c.sticky_agent = None
        c.sticky_until = INF
        self._enter(c, q, now, None, 0.0)

    def _wait(self, c: _Caller, now: float) -> None:
        """``c`` (WAITING, not in a FIFO) takes an agent or joins its FIFO."""
        agents = self._find_agents(c)
        if agents:
            self._offer(c, agents)
        else:
            self._fifo_insert(c)

    def _requeue(self, c: _Caller, now: float) -> None:
        """No offer outstanding any more: back to waiting at the original place."""
        if c.sticky_agent is not None:  # the preferred agent did not take it
            c.sticky_agent = None
            c.sticky_until = INF
        c.state = _WAITING
        self._schedule(c)
        if self._due(c, now):
            self._fifo_insert(c)
            self._fire(c, now)
        else:
            self._wait(c, now)

    def _refused(self, caller: int, agent: int, now: float, trigger: _T) -> None:
        c, a = self._offer_pair(caller, agent)
        self._advance(now)
        self._transition(a, trigger)
        a.offer_caller = None
        c.offers.remove(a)
        c.excluded.append(a.id)
        if trigger == _T.NO_ANSWER and c.queue.cfg.no_answer_not_ready:
            a.state = _S.NOT_READY
            self._out.append((_NOT_READY, a.id, c.id, int(Reason.RING_NO_ANSWER)))
        if not c.offers:
            self._requeue(c, now)
        if a.state == _S.READY:
            self._available(a, now)

    def _fifo_insert(self, c: _Caller) -> None:
        seqs = c.queue.fifo_seq[c.priority]
        i = bisect_left(seqs, c.seq)
        seqs.insert(i, c.seq)
        c.queue.fifo_callers[c.priority].insert(i, c)
        c.queue.waiting += 1

    def _fifo_remove(self, c: _Caller) -> None:
        seqs = c.queue.fifo_seq[c.priority]
        i = bisect_left(seqs, c.seq)
        del seqs[i]
        del c.queue.fifo_callers[c.priority][i]
        c.queue.waiting -= 1

    def _detach_caller(self, c: _Caller) -> list[_Agent]:
        """Take ``c`` out of wherever it is; returns agents whose offers were
        cancelled (READY, to be made available by the caller)."""
        released = []
        if c.state == _OFFERED:
            for a in c.offers:
                self._transition(a, _T.CANCEL)
                a.offer_caller = None
                self._out.append((_CANCELLED, c.id, a.id, c.queue.id))
                released.append(a)
            c.offers = []
        elif c.state == _STICKY:
            assert c.sticky_agent is not None
            c.sticky_agent.sticky.remove(c)
        else:
            self._fifo_remove(c)
        self._remove_caller(c)
        return released

    def _remove_caller(self, c: _Caller) -> None:
        del self._callers[c.id]
        c.queue.count -= 1
        c.timer_ver = -1

    # ---- caller timers
    def _update_clock(self, c: _Caller, now: float) -> None:
        """Bring tier and effective priority up to ``now``."""
        th = c.queue.thresholds
        while c.tier + 1 < len(th) and c.enq_at + th[c.tier + 1] <= now:
            c.tier += 1
        cfg = c.queue.cfg
        if cfg.ageing_interval_s > 0:
            cap = max(c.priority, cfg.ageing_max_priority)
            while c.eff < cap and c.enq_at + (c.age_steps + 1) * cfg.ageing_interval_s <= now:
                c.age_steps += 1
                c.eff = min(c.priority + c.age_steps * cfg.ageing_step, cap)

    def _next_time(self, c: _Caller) -> float:
        q = c.queue
        cfg = q.cfg
        t = INF
        if c.tier + 1 < len(q.thresholds):
            t = c.enq_at + q.thresholds[c.tier + 1]
        if cfg.ageing_interval_s > 0 and c.eff < max(c.priority, cfg.ageing_max_priority):
            t = min(t, c.enq_at + (c.age_steps + 1) * cfg.ageing_interval_s)
        if c.state == _STICKY:
            t = min(t, c.sticky_until)
        if c.state != _OFFERED:
            if cfg.timeout_s > 0:
                t = min(t, c.enq_at + cfg.timeout_s)
            if cfg.overflow_after_s > 0:
                t = min(t, c.enq_at + cfg.overflow_after_s)
        return t

    def _schedule(self, c: _Caller) -> None:
        t = self._next_time(c)
        self._ver += 1
        c.timer_ver = self._ver
        if t < INF:
            heapq.heappush(self._timers, (t, c.seq, self._ver, c.id))

    def _due(self, c: _Caller, now: float) -> bool:
        """Timeout or overflow due for a caller that is not being offered."""
        cfg = c.queue.cfg
        return (cfg.timeout_s > 0 and c.enq_at + cfg.timeout_s <= now) or (
            cfg.overflow_after_s > 0 and c.enq_at + cfg.overflow_after_s <= now
        )

    def _fire(self, c: _Caller, now: float) -> None:
        """Timeout (wins when both are due) or overflow of a waiting or
        sticky caller that is in its FIFO / sticky list."""
        q = c.queue
        cfg = q.cfg
        self._detach_caller(c)
        if cfg.timeout_s > 0 and c.enq_at + cfg.timeout_s <= now:
            self._out.append((_TIMEOUT, c.id, q.id, cfg.timeout_destination))
            return
        target = self._queues.get(cfg.overflow_queue)
        if target is None:  # overflow to an undefined queue: treated as a timeout
            self._out.append((_TIMEOUT, c.id, q.id, cfg.timeout_destination))
            return
        self._out.append((_OVERFLOW, c.id, q.id, target.id))
        self._reenter(c, target, now, c.priority)

    def _advance(self, now: float) -> None:
        if not now >= self._now:
            if now != now:
                raise AcdStateError("now is NaN")
            raise AcdStateError(f"time went backwards: now={now} after {self._now}")
        if now == INF or now == -INF:  # an infinite idle_since would give NaN weighted keys
            raise AcdStateError(f"now must be finite, got {now}")
        self._now = now
        timers = self._timers
        callers = self._callers
        while timers and timers[0][0] <= now:
            _, _, ver, cid = heapq.heappop(timers)
            c = callers.get(cid)
            if c is None or c.timer_ver != ver:
                continue
            self._on_timer(c, now)

    def _on_timer(self, c: _Caller, now: float) -> None:
        old_tier = c.tier
        self._update_clock(c, now)
        if c.state == _OFFERED:
            self._schedule(c)
            return
        if self._due(c, now):
            self._fire(c, now)
            return
        if c.state == _STICKY and c.sticky_until <= now:
            assert c.sticky_agent is not None
            c.sticky_agent.sticky.remove(c)
            c.sticky_agent = None
            c.sticky_until = INF
            c.state = _WAITING
            self._schedule(c)
            self._wait(c, now)
            return
        self._schedule(c)
        if c.state == _WAITING and c.tier != old_tier:
            agents = self._find_agents(c)
            if agents:
                self._fifo_remove(c)
                self._offer(c, agents)


COMPILED = False
Acd: type = PyAcd
if not pure_python_forced():
    try:
        from engine._acd import Acd  # type: ignore[no-redef]  # noqa: F811

        COMPILED = True
    except ImportError:  # not built: the reference is used
        pass
