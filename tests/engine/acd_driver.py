"""Random event driver and invariant checker for the ACD tests.

``Driver`` feeds legal random event sequences (agents logging in and out,
going ready/not ready/busy, skill changes, callers enqueuing, abandoning,
transferring, offers accepted/declined/unanswered, time passing) to one or
more ACD instances built from the same scenario, asserting after every event
that all instances made identical decisions and, when asked, that the ACD
invariants hold (checked only through the public query API, so the compiled
module is checked exactly like the reference).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from engine.acd_types import (
    AgentState,
    DecisionKind,
    QueueConfig,
    Strategy,
    Tier,
)

S = AgentState
D = DecisionKind


@dataclass
class Scenario:
    seed: int
    agents: int = 12
    queues: int = 4
    skills: int = 4
    strategies: tuple[Strategy, ...] = tuple(Strategy)
    tiers: bool = True
    timers: bool = True  # timeouts, overflow, ageing, max length
    sticky: bool = True
    configs: dict[int, QueueConfig] = field(default_factory=dict)

    def build(self) -> None:
        rnd = random.Random(self.seed)
        for q in range(self.queues):
            strategy = self.strategies[rnd.randrange(len(self.strategies))]
            skill = rnd.randrange(self.skills)
            tiers = [Tier(0.0, ((skill, rnd.randint(3, 8)),), ())]
            if self.tiers and rnd.random() < 0.7:
                tiers.append(Tier(rnd.uniform(2, 10), ((skill, rnd.randint(1, 3)),), ()))
                if rnd.random() < 0.5:
                    other = rnd.randrange(self.skills)
                    tiers.append(Tier(tiers[-1].after_s + rnd.uniform(1, 10), ((other, 1),), (rnd.randrange(3),)))
            kw: dict = {}
            if self.timers:
                if rnd.random() < 0.5:
                    kw.update(timeout_s=rnd.uniform(10, 60), timeout_destination=rnd.randrange(100))
                if rnd.random() < 0.3 and self.queues > 1:
                    kw.update(overflow_after_s=rnd.uniform(5, 40), overflow_queue=(q + 1) % self.queues)
                if rnd.random() < 0.5:
                    kw.update(ageing_interval_s=rnd.uniform(1, 8), ageing_step=rnd.randint(1, 3),
                              ageing_max_priority=rnd.randint(3, 9))
                if rnd.random() < 0.3:
                    kw.update(max_length=rnd.randint(1, 6), full_destination=rnd.randrange(100))
            kw.update(no_answer_not_ready=rnd.random() < 0.5, skill_weight=rnd.uniform(0, 5),
                      idle_weight=rnd.uniform(0, 2), handle_time_window=rnd.randint(1, 5))
            self.configs[q] = QueueConfig(strategy, tuple(tiers), **kw)


class Driver:
    def __init__(self, scenario: Scenario, acds: list, check: bool = True) -> None:
        scenario.build()
        self.sc = scenario
        self.rnd = random.Random(scenario.seed * 7919 + 1)
        self.acds = acds
        self.check = check
        self.now = 0.0
        self.skills: dict[int, dict[int, int]] = {}
        self.groups: dict[int, frozenset[int]] = {}
        self.callers: dict[int, int] = {}  # caller -> queue
        self.offers: dict[int, set[int]] = {}  # caller -> agents ringing
        self.excluded: dict[int, set[int]] = {}
        self.sticky: dict[int, int] = {}  # caller -> preferred agent (while sticky)
        self.next_caller = 1000
        self.decisions: list[tuple] = []
        self.ranks: dict[int, int] = {}
        self.events = 0
        for q, cfg in scenario.configs.items():
            for acd in acds:
                acd.add_queue(q, cfg)

    # ------------------------------------------------------------ plumbing
    @property
    def ref(self):
        return self.acds[0]

    def apply(self, name: str, *args, **kw) -> list[tuple]:
        outs = []
        for acd in self.acds:
            getattr(acd, name)(*args, **kw)
            outs.append(acd.pop_decisions())
        for other in outs[1:]:
            assert [tuple(d) for d in other] == [tuple(d) for d in outs[0]], (name, args, outs)
        for d in outs[0]:
            self._track(d)
        self.decisions.extend(outs[0])
        self.events += 1
        return outs[0]

    def _track(self, d: tuple) -> None:
        kind = d[0]
        if kind == D.OFFER:
            self.offers.setdefault(d[1], set()).add(d[2])
        elif kind == D.OFFER_CANCELLED:
            ringing = self.offers.get(d[1])
            if ringing is not None:
                ringing.discard(d[2])
                if not ringing:
                    del self.offers[d[1]]
                    self.sticky.pop(d[1], None)
        elif kind in (D.TIMEOUT, D.QUEUE_FULL):
            self.callers.pop(d[1], None)
            self.sticky.pop(d[1], None)
        elif kind == D.OVERFLOW:
            self.callers[d[1]] = d[3]
            self.sticky.pop(d[1], None)

    def state(self, agent: int) -> S:
        return S(self.ref.agent_state(agent))

    def agents_in(self, *states: S) -> list[int]:
        return [a for a in range(self.sc.agents) if self.state(a) in states]

    # ------------------------------------------------------------- events
    def step(self) -> None:
        rnd = self.rnd
        self.now += rnd.expovariate(1.0) if rnd.random() < 0.7 else 0.0
        now = self.now
        if rnd.random() < 0.1:
            self.apply("advance", now)
            self.verify(None)
            return
        r = rnd.random()
        caller_side = (0.25 <= r < 0.55) and not (r < 0.45 and self.offers)
        if caller_side or rnd.random() < 0.5:
            # due timers first, so the model knows where callers are before
            # picking one (other events advance implicitly)
            self.apply("advance", now)
            self.verify(None)
        agent_event = None
        ringing_before = {a for ags in self.offers.values() for a in ags}
        if r < 0.25:
            cid = self.next_caller
            self.next_caller += 1
            q = rnd.randrange(self.sc.queues)
            prio = rnd.choice((0, 0, 0, 1, 2, 5, 9))
            sticky_agent, sticky_s = -1, 0.0
            logged = self.agents_in(S.NOT_READY, S.READY, S.RESERVED, S.BUSY, S.WRAPUP)
            if self.sc.sticky and logged and rnd.random() < 0.15:
                sticky_agent, sticky_s = rnd.choice(logged), rnd.uniform(1, 15)
            self.callers[cid] = q
            self.excluded[cid] = set()
            if sticky_agent >= 0:
                self.sticky[cid] = sticky_agent
            out = self.apply("enqueue", cid, q, now, priority=prio, sticky_agent=sticky_agent, sticky_s=sticky_s)
            mine = [d for d in out if d[0] == D.OFFER and d[1] == cid]
            if self.check and mine and sticky_agent < 0:
                self._check_strategy_choice(cid, q, mine[0][2])
            if cid in self.callers and cid not in self.offers and self.ref.caller_info(cid)[1] != 1:
                self.sticky.pop(cid, None)
        elif r < 0.45 and self.offers:
            cid = rnd.choice(sorted(self.offers))
            agent = rnd.choice(sorted(self.offers[cid]))
            how = rnd.random()
            if how < 0.6:
                del self.offers[cid]
                self.callers.pop(cid)
                self.sticky.pop(cid, None)
                self.apply("accept", cid, agent, now)
            else:
                self.offers[cid].discard(agent)
                if not self.offers[cid]:
                    del self.offers[cid]
                    self.sticky.pop(cid, None)
                self.excluded[cid].add(agent)
                self.apply("decline" if how < 0.8 else "no_answer", cid, agent, now)
                agent_event = agent
        elif r < 0.52 and self.callers:
            cid = rnd.choice(sorted(self.callers))
            self.callers.pop(cid)
            self.offers.pop(cid, None)
            self.sticky.pop(cid, None)
            self.apply("abandon", cid, now)
        elif r < 0.55 and self.callers and self.sc.queues > 1:
            cid = rnd.choice(sorted(self.callers))
            q = rnd.randrange(self.sc.queues)
            self.callers[cid] = q
            self.offers.pop(cid, None)
            self.sticky.pop(cid, None)
            self.apply("transfer", cid, q, now, priority=rnd.choice((-1, -1, 3)))
        else:
            agent = rnd.randrange(self.sc.agents)
            st = self.state(agent)
            agent_event = agent
            if st == S.LOGGED_OUT:
                sk = {s: rnd.randint(1, 10) for s in rnd.sample(range(self.sc.skills), rnd.randint(1, self.sc.skills))}
                gr = frozenset(rnd.sample(range(3), rnd.randint(0, 2)))
                self.skills[agent], self.groups[agent] = sk, gr
                rank = rnd.choice((-1, rnd.randrange(50)))
                self.ranks[agent] = agent if rank == -1 else rank
                self.apply("login", agent, now, tuple(sk.items()), tuple(gr), rank=rank)
                agent_event = None
            elif rnd.random() < 0.04:
                self._forget_offers_of(agent)
                self.apply("logout", agent, now)
                agent_event = None
            elif rnd.random() < 0.05:
                sk = {s: rnd.randint(1, 10) for s in rnd.sample(range(self.sc.skills), rnd.randint(1, self.sc.skills))}
                self.skills[agent] = sk
                self.apply("set_skills", agent, now, tuple(sk.items()))
            elif st in (S.NOT_READY,):
                if rnd.random() < 0.9:
                    self.apply("ready", agent, now)
                else:
                    self.apply("busy", agent, now)
                    agent_event = None
            elif st == S.READY:
                self.apply("not_ready" if rnd.random() < 0.6 else "busy", agent, now)
                agent_event = None
            elif st == S.RESERVED:
                self._forget_offers_of(agent)
                self.apply(rnd.choice(("not_ready", "busy")), agent, now)
                agent_event = None
            elif st == S.BUSY:
                self.apply("call_ended", agent, now)
                agent_event = None
            elif st == S.WRAPUP:
                self.apply(rnd.choice(("wrapup_done", "wrapup_done", "ready", "not_ready")), agent, now)
        if agent_event is not None and agent_event in ringing_before:
            agent_event = None  # it was already ringing: nothing chosen now
        self.verify(agent_event)

    def _forget_offers_of(self, agent: int) -> None:
        for cid in [c for c, ags in self.offers.items() if agent in ags]:
            self.offers[cid].discard(agent)
            if not self.offers[cid]:
                del self.offers[cid]
                self.sticky.pop(cid, None)

    # ---------------------------------------------------------- invariants
    def min_tier(self, agent: int, q: int) -> int:
        return self.sc.configs[q].min_tier(self.skills[agent], self.groups[agent])

    def compare_queries(self) -> None:
        """Every query answers the same in every implementation."""
        ref = self.ref
        for acd in self.acds[1:]:
            for q in range(self.sc.queues):
                assert acd.waiting_callers(q) == ref.waiting_callers(q)
                assert acd.free_agents(q) == ref.free_agents(q)
                assert acd.queue_length(q) == ref.queue_length(q)
                assert acd.average_handle_time_s(q) == ref.average_handle_time_s(q)
            for cid in self.callers:
                assert acd.caller_info(cid) == ref.caller_info(cid)
                assert acd.offered_agents(cid) == ref.offered_agents(cid)
                assert acd.position(cid) == ref.position(cid)
                assert acd.expected_wait_s(cid) == ref.expected_wait_s(cid)
            for a in range(self.sc.agents):
                assert acd.agent_state(a) == ref.agent_state(a)
                if ref.agent_state(a) != S.LOGGED_OUT:
                    assert acd.agent_stats(a) == ref.agent_stats(a)

    def verify(self, agent_event: int | None) -> None:
        for acd in self.acds[1:]:
            assert acd.next_deadline() == self.ref.next_deadline()
        if len(self.acds) > 1 and self.events % 7 == 0:
            self.compare_queries()
        if not self.check:
            return
        acd = self.ref
        reserved_by: dict[int, int] = {}
        for cid in list(self.callers):
            queue, state, eff, tier, seq = acd.caller_info(cid)
            assert queue == self.callers[cid]
            offered = acd.offered_agents(cid)
            assert set(offered) == self.offers.get(cid, set()), (cid, offered, self.offers.get(cid))
            if state == 2:
                assert offered
                if self.sc.configs[queue].strategy != Strategy.RING_ALL:
                    assert len(offered) == 1, f"caller {cid} offered to {offered}"
            for a in offered:
                assert a not in reserved_by, f"agent {a} reserved for {reserved_by[a]} and {cid}"
                reserved_by[a] = cid
                assert self.state(a) == S.RESERVED
            if state == 0:
                self.sticky.pop(cid, None)
            if state == 1:
                pref = self.sticky[cid]
                assert self.state(pref) != S.READY, f"sticky caller {cid} waits but agent {pref} is free"
        assert set(self.agents_in(S.RESERVED)) == set(reserved_by)
        free = set(self.agents_in(S.READY))
        for q in range(self.sc.queues):
            waiting = acd.waiting_callers(q)
            assert set(acd.free_agents(q)) == {a for a in free if self.min_tier(a, q) >= 0}
            if not waiting:
                continue
            infos = {c: acd.caller_info(c) for c in waiting}
            keys = [(-infos[c][2], infos[c][4]) for c in waiting]
            assert keys == sorted(keys)
            for c in waiting:
                for a in free:
                    mt = self.min_tier(a, q)
                    assert not (0 <= mt <= infos[c][3] and a not in self.excluded[c]), (
                        f"free agent {a} (tier {mt}) and waiting caller {c} (tier {infos[c][3]}) in queue {q}"
                    )
        if agent_event is not None:
            self._check_agent_choice(agent_event)

    def _check_agent_choice(self, agent: int) -> None:
        """After an agent-side event, an agent that got an offer got the
        best caller it may take: no waiting one is ahead of it."""
        acd = self.ref
        got = [c for c, ags in self.offers.items() if agent in ags]
        if not got or got[0] in self.sticky:
            return
        _, _, eff, _, seq = acd.caller_info(got[0])
        for q in range(self.sc.queues):
            mt = self.min_tier(agent, q) if agent in self.skills else -1
            if mt < 0:
                continue
            for c in acd.waiting_callers(q):
                _, _, e2, t2, s2 = acd.caller_info(c)
                if t2 >= mt and agent not in self.excluded[c]:
                    assert (-e2, s2) > (-eff, seq), f"agent {agent} took {got[0]} but {c} was ahead"

    def strategy_key(self, q: int, agent: int) -> tuple:
        """The documented ordering key of a heap strategy (docs/acd.md)."""
        cfg = self.sc.configs[q]
        calls, talk_s, idle_since = self.ref.agent_stats(agent)
        score = float(cfg.score(self.skills[agent]))
        s = cfg.strategy
        if s == Strategy.LONGEST_IDLE:
            return (idle_since, 0.0, agent)
        if s == Strategy.FEWEST_CALLS:
            return (float(calls), idle_since, agent)
        if s == Strategy.LEAST_TALK_TIME:
            return (talk_s, idle_since, agent)
        if s == Strategy.TOP_DOWN:
            return (float(self.ranks[agent]), 0.0, agent)
        if s == Strategy.BEST_SKILL:
            return (-score, idle_since, agent)
        return (cfg.idle_weight * idle_since - cfg.skill_weight * score, 0.0, agent)

    def _check_strategy_choice(self, cid: int, q: int, chosen: int) -> None:
        """An arriving caller got the agent its queue's strategy ranks first
        among the free agents it may take (computed independently here;
        random, ring_all and round_robin are covered by unit tests)."""
        cfg = self.sc.configs[q]
        tier = self.ref.caller_info(cid)[3]
        if cfg.strategy == Strategy.RING_ALL:  # every candidate rings
            for a in self.agents_in(S.READY):
                assert not (0 <= self.min_tier(a, q) <= tier and a not in self.excluded[cid]), (
                    f"ring_all queue {q}: agent {a} free but not rung for {cid}"
                )
            return
        if cfg.strategy in (Strategy.RANDOM, Strategy.ROUND_ROBIN):
            return
        best = self.strategy_key(q, chosen)
        for a in self.agents_in(S.READY):
            if 0 <= self.min_tier(a, q) <= tier and a not in self.excluded[cid]:
                assert self.strategy_key(q, a) > best, (
                    f"queue {q} {cfg.strategy.label}: chose {chosen}, {a} ranks first"
                )

    def run(self, events: int) -> None:
        while self.events < events:
            self.step()
