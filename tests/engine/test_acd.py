"""Unit tests of the ACD rules, run on both implementations (the compiled
``Acd`` and the reference ``PyAcd``; under CTIENGINE_PUREPYTHON=1 both are
the reference)."""
from __future__ import annotations

import math

import pytest

from engine import acd as acd_mod
from engine.acd_types import (
    AcdConfigError,
    AcdStateError,
    AgentState,
    DecisionKind as D,
    QueueConfig,
    Reason,
    Strategy,
    Tier,
)

pytestmark = pytest.mark.twin

S = AgentState
INF = math.inf


@pytest.fixture(params=["Acd", "PyAcd"])
def make(request):
    cls = getattr(acd_mod, request.param)

    def build(*queues: QueueConfig, seed: int = 0):
        acd = cls(seed)
        for i, cfg in enumerate(queues):
            acd.add_queue(i, cfg)
        return acd

    return build


def q(strategy="longest_idle", skill=1, level=1, tiers=(), **kw) -> QueueConfig:
    return QueueConfig(strategy, (Tier(0.0, ((skill, level),)),) + tuple(tiers), **kw)


def agents(acd, spec: dict[int, dict[int, int]], now=0.0, ready=True, **kw):
    for aid, skills in spec.items():
        acd.login(aid, now, skills, **kw)
    if ready:
        for aid in spec:
            acd.ready(aid, now)
    acd.pop_decisions()


def offers(acd):
    return [(d[1], d[2]) for d in acd.pop_decisions() if d[0] == D.OFFER]


# ------------------------------------------------------------------ strategies
def test_longest_idle_picks_agent_idle_longest(make):
    acd = make(q("longest_idle"))
    for aid in (1, 2, 3):
        acd.login(aid, 0.0, {1: 5})
    for aid, t in ((2, 1.0), (3, 3.0), (1, 5.0)):
        acd.ready(aid, t)
    acd.enqueue(100, 0, 10.0)
    assert acd.pop_decisions() == [(D.OFFER, 100, 2, 0)]
    acd.enqueue(101, 0, 10.0)
    assert offers(acd) == [(101, 3)]


def test_fewest_calls(make):
    acd = make(q("fewest_calls"))
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    # agent 1 takes a call, returns; agent 2 has fewer calls then
    acd.enqueue(100, 0, 1.0)
    assert offers(acd) == [(100, 1)]  # tie on calls -> idle_since -> id
    acd.accept(100, 1, 2.0)
    acd.call_ended(1, 3.0)
    acd.wrapup_done(1, 4.0)
    acd.enqueue(101, 0, 5.0)
    assert offers(acd) == [(101, 2)]
    assert acd.agent_stats(1)[0] == 1


def test_least_talk_time(make):
    acd = make(q("least_talk_time"))
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    acd.enqueue(101, 0, 1.0)
    assert offers(acd) == [(100, 1), (101, 2)]
    acd.accept(100, 1, 1.0)
    acd.accept(101, 2, 1.0)
    acd.call_ended(2, 11.0)  # 10 s talk
    acd.call_ended(1, 100.0)  # 99 s talk
    acd.wrapup_done(2, 120.0)  # agent 2 idle later but talked less
    acd.wrapup_done(1, 121.0)
    acd.enqueue(102, 0, 130.0)
    assert offers(acd) == [(102, 2)]
    assert acd.agent_stats(2)[1] == pytest.approx(10.0)


def test_round_robin_remembers_position(make):
    acd = make(q("round_robin"))
    agents(acd, {1: {1: 1}, 2: {1: 1}, 3: {1: 1}})
    got = []
    for i in range(6):
        cid = 100 + i
        acd.enqueue(cid, 0, float(i))
        [(c, a)] = offers(acd)
        got.append(a)
        acd.decline(c, a, float(i)) if False else acd.accept(c, a, float(i))
        acd.call_ended(a, float(i))
        acd.wrapup_done(a, float(i))
    assert got == [1, 2, 3, 1, 2, 3]


def test_top_down_by_rank(make):
    acd = make(q("top_down"))
    acd.login(1, 0.0, {1: 1}, rank=30)
    acd.login(2, 0.0, {1: 1}, rank=10)
    acd.login(3, 0.0, {1: 1}, rank=20)
    for a in (1, 2, 3):
        acd.ready(a, 0.0)
    acd.pop_decisions()
    for cid in (100, 101, 102):
        acd.enqueue(cid, 0, 1.0)
    assert offers(acd) == [(100, 2), (101, 3), (102, 1)]


def test_random_is_seeded_and_deterministic(make):
    def run(seed):
        acd = make(q("random"), seed=seed)
        agents(acd, {a: {1: 1} for a in range(20)})
        out = []
        for i in range(10):
            acd.enqueue(100 + i, 0, 1.0)
            out += offers(acd)
        return out

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a != c
    assert len({agent for _, agent in a}) == 10  # each agent reserved once
    # the exact splitmix64 sequence is part of the contract (both twins)
    assert a == run(7)


def test_random_matches_reference_sequence(make):
    acd = make(q("random"), seed=42)
    agents(acd, {a: {1: 1} for a in range(10)})
    ref = acd_mod.PyAcd(42)
    ref.add_queue(0, q("random"))
    agents(ref, {a: {1: 1} for a in range(10)})
    for i in range(8):
        acd.enqueue(i, 0, 1.0)
        ref.enqueue(i, 0, 1.0)
    assert acd.pop_decisions() == ref.pop_decisions()


def test_ring_all_offers_everyone_first_accept_wins(make):
    acd = make(q("ring_all"))
    agents(acd, {1: {1: 1}, 2: {1: 1}, 3: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    assert acd.pop_decisions() == [(D.OFFER, 100, a, 0) for a in (1, 2, 3)]
    acd.decline(100, 3, 1.5)  # one declines: others keep ringing
    assert acd.pop_decisions() == []
    assert acd.agent_state(3) == S.READY
    acd.accept(100, 2, 2.0)
    assert acd.pop_decisions() == [(D.OFFER_CANCELLED, 100, 1, 0)]
    assert acd.agent_state(1) == S.READY
    assert acd.agent_state(2) == S.BUSY
    assert acd.free_agents(0) == [1, 3]


def test_ring_all_all_decline_requeues(make):
    acd = make(q("ring_all"))
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    acd.pop_decisions()
    acd.decline(100, 1, 2.0)
    acd.no_answer(100, 2, 3.0)
    assert acd.pop_decisions() == [(D.AGENT_NOT_READY, 2, 100, Reason.RING_NO_ANSWER)]
    assert acd.waiting_callers(0) == [100]
    assert acd.free_agents(0) == [1]  # excluded for 100, so stays free


def test_best_skill(make):
    acd = make(q("best_skill", level=3))
    agents(acd, {1: {1: 4}, 2: {1: 9}, 3: {1: 6}})
    for cid in (100, 101, 102):
        acd.enqueue(cid, 0, 1.0)
    assert offers(acd) == [(100, 2), (101, 3), (102, 1)]


def test_weighted_combines_skill_and_idle_time(make):
    # score = skill_weight * level + idle_weight * idle_seconds
    acd = make(q("weighted", skill_weight=10.0, idle_weight=1.0))
    acd.login(1, 0.0, {1: 9})
    acd.login(2, 0.0, {1: 2})
    acd.ready(1, 100.0)  # at 200: 10*9 + 100 = 190
    acd.ready(2, 0.0) if False else None
    acd.login(3, 100.0, {1: 2})
    acd.ready(3, 100.0)  # 10*2 + 100 = 120
    acd.ready(2, 100.0)  # same as 3, lower id wins ties
    acd.pop_decisions()
    acd.enqueue(100, 0, 200.0)
    assert offers(acd) == [(100, 1)]
    # idle time dominates with a small skill weight
    acd2 = make(q("weighted", skill_weight=0.1, idle_weight=1.0))
    acd2.login(1, 0.0, {1: 9})
    acd2.login(2, 0.0, {1: 1})
    acd2.ready(2, 0.0)
    acd2.ready(1, 50.0)
    acd2.pop_decisions()
    acd2.enqueue(100, 0, 60.0)
    assert offers(acd2) == [(100, 2)]


# ---------------------------------------------------------------- priorities
def test_priority_then_arrival(make):
    acd = make(q())
    agents(acd, {1: {1: 1}}, ready=False)
    acd.enqueue(100, 0, 1.0, priority=0)
    acd.enqueue(101, 0, 2.0, priority=5)
    acd.enqueue(102, 0, 3.0, priority=5)
    acd.enqueue(103, 0, 4.0, priority=9)
    assert acd.waiting_callers(0) == [103, 101, 102, 100]
    assert [acd.position(c) for c in (100, 101, 102, 103)] == [4, 2, 3, 1]
    got = []
    for t in range(4):
        acd.ready(1, 10.0 + t)
        [(c, a)] = offers(acd)
        got.append(c)
        acd.accept(c, a, 10.0 + t)
        acd.call_ended(a, 10.0 + t)
    assert got == [103, 101, 102, 100]


def test_priority_ageing(make):
    # every 10 s of waiting adds 2 to the priority, capped at 6
    acd = make(q(ageing_interval_s=10.0, ageing_step=2, ageing_max_priority=6))
    agents(acd, {1: {1: 1}}, ready=False)
    acd.enqueue(100, 0, 0.0, priority=0)
    assert acd.next_deadline() == 10.0
    acd.advance(10.0)
    assert acd.caller_info(100)[2] == 2
    acd.enqueue(101, 0, 15.0, priority=3)
    assert acd.waiting_callers(0) == [101, 100]
    assert acd.next_deadline() == 20.0
    acd.advance(20.0)  # 100: 4 ; 101 at 5 s: 3
    assert acd.waiting_callers(0) == [100, 101]
    acd.advance(100.0)
    assert acd.caller_info(100)[2] == 6 and acd.caller_info(101)[2] == 6  # capped
    assert acd.waiting_callers(0) == [100, 101]  # equal: arrival decides
    assert acd.next_deadline() == INF
    acd.ready(1, 101.0)
    assert offers(acd) == [(100, 1)]


def test_ageing_never_lowers_a_vip(make):
    acd = make(q(ageing_interval_s=1.0, ageing_max_priority=3))
    agents(acd, {1: {1: 1}}, ready=False)
    acd.enqueue(100, 0, 0.0, priority=8)
    acd.advance(50.0)
    assert acd.caller_info(100)[2] == 8


# ------------------------------------------------------------------- tiers
def test_tiers_widen_after_waiting(make):
    cfg = q(skill=1, level=8, tiers=(Tier(10.0, ((1, 4),)), Tier(30.0, ((2, 1),))))
    acd = make(cfg)
    agents(acd, {1: {1: 5}, 2: {2: 3}, 3: {1: 9}})
    acd.not_ready(3, 0.0)
    acd.enqueue(100, 0, 0.0)
    assert acd.pop_decisions() == []
    assert acd.caller_info(100)[3] == 0
    assert acd.next_deadline() == 10.0
    acd.advance(9.99)
    assert acd.pop_decisions() == []
    acd.advance(10.0)
    assert offers(acd) == [(100, 1)]
    acd.enqueue(101, 0, 11.0)
    acd.advance(40.0)  # 101 waited 29 s: tier 1, agent 1 is ringing
    assert acd.pop_decisions() == []
    acd.advance(41.0)
    assert offers(acd) == [(101, 2)]  # third tier: another skill


def test_tier_prefers_best_tier_agent_at_equal_key(make):
    # tiers are cumulative: a tier-0 agent still serves a tier-1 caller
    cfg = q("top_down", level=8, tiers=(Tier(5.0, ((1, 1),)),))
    acd = make(cfg)
    agents(acd, {5: {1: 9}, 1: {1: 1}}, ready=False)
    acd.enqueue(100, 0, 0.0)
    acd.advance(6.0)
    acd.ready(5, 7.0)
    acd.ready(1, 7.0)
    assert offers(acd) == [(100, 5)]


def test_groups_in_tiers(make):
    cfg = QueueConfig("longest_idle", (Tier(0.0, ((1, 1),), groups=(7,)), Tier(5.0, ((1, 1),))))
    acd = make(cfg)
    acd.login(1, 0.0, {1: 5}, groups=(3,))
    acd.login(2, 0.0, {1: 5}, groups=(7, 8))
    acd.ready(1, 0.0)
    acd.enqueue(100, 0, 1.0)
    assert acd.pop_decisions() == []
    acd.ready(2, 2.0)
    assert offers(acd) == [(100, 2)]
    acd.enqueue(101, 0, 3.0)
    acd.advance(8.0)
    assert offers(acd) == [(101, 1)]


# --------------------------------------------- timeout, max length, overflow
def test_timeout_names_destination(make):
    acd = make(q(timeout_s=30.0, timeout_destination=77))
    acd.enqueue(100, 0, 5.0)
    assert acd.next_deadline() == 35.0
    acd.advance(35.0)
    assert acd.pop_decisions() == [(D.TIMEOUT, 100, 0, 77)]
    assert acd.queue_length(0) == 0
    with pytest.raises(AcdStateError):
        acd.position(100)


def test_timeout_fires_inside_any_event(make):
    acd = make(q(timeout_s=30.0, timeout_destination=77))
    acd.enqueue(100, 0, 0.0)
    acd.login(1, 31.0, {1: 1})
    assert acd.pop_decisions() == [(D.TIMEOUT, 100, 0, 77)]


def test_timeout_waits_for_outstanding_offer(make):
    acd = make(q(timeout_s=10.0, timeout_destination=5, no_answer_not_ready=True))
    agents(acd, {1: {1: 1}})
    acd.enqueue(100, 0, 0.0)
    assert offers(acd) == [(100, 1)]
    acd.advance(20.0)  # ringing: no timeout
    assert acd.pop_decisions() == []
    acd.no_answer(100, 1, 21.0)
    assert acd.pop_decisions() == [
        (D.AGENT_NOT_READY, 1, 100, Reason.RING_NO_ANSWER),
        (D.TIMEOUT, 100, 0, 5),
    ]


def test_max_length(make):
    acd = make(q(max_length=2, full_destination=9))
    for cid in (100, 101, 102):
        acd.enqueue(cid, 0, 1.0)
    assert acd.pop_decisions() == [(D.QUEUE_FULL, 102, 0, 9)]
    assert acd.queue_length(0) == 2
    acd.abandon(100, 2.0)
    acd.enqueue(102, 0, 3.0)
    assert acd.pop_decisions() == []


def test_overflow_to_another_queue(make):
    acd = make(q(overflow_after_s=20.0, overflow_queue=1), q(skill=2))
    agents(acd, {1: {2: 1}})
    acd.not_ready(1, 0.0)
    acd.enqueue(100, 0, 0.0, priority=4)
    acd.advance(20.0)
    assert acd.pop_decisions() == [(D.OVERFLOW, 100, 0, 1)]
    assert acd.caller_info(100)[:3] == (1, 0, 4)
    acd.ready(1, 21.0)
    assert offers(acd) == [(100, 1)]


# --------------------------------------------------------------- sticky
def test_sticky_waits_for_preferred_agent(make):
    acd = make(q())
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    acd.busy(1, 0.0)
    acd.enqueue(100, 0, 1.0, sticky_agent=1, sticky_s=30.0)
    assert acd.pop_decisions() == []  # agent 2 is free but 100 waits for 1
    assert acd.caller_info(100)[1] == 1
    assert acd.position(100) == 1
    acd.call_ended(1, 5.0)
    acd.wrapup_done(1, 6.0)
    assert offers(acd) == [(100, 1)]


def test_sticky_falls_back_after_timeout(make):
    acd = make(q())
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    acd.busy(1, 0.0)
    acd.enqueue(100, 0, 1.0, sticky_agent=1, sticky_s=30.0)
    assert acd.next_deadline() == 31.0
    acd.advance(31.0)
    assert offers(acd) == [(100, 2)]


def test_sticky_agent_free_gets_offer_at_once(make):
    acd = make(q("top_down"))
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    acd.enqueue(100, 0, 1.0, sticky_agent=2, sticky_s=30.0)
    assert offers(acd) == [(100, 2)]


def test_sticky_decline_falls_back(make):
    acd = make(q())
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    acd.enqueue(100, 0, 1.0, sticky_agent=2, sticky_s=30.0)
    assert offers(acd) == [(100, 2)]
    acd.decline(100, 2, 2.0)
    assert offers(acd) == [(100, 1)]


def test_sticky_agent_logout_releases(make):
    acd = make(q())
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    acd.busy(1, 0.0)
    acd.not_ready(2, 0.0)
    acd.enqueue(100, 0, 1.0, sticky_agent=1, sticky_s=30.0)
    acd.ready(2, 2.0)
    assert acd.pop_decisions() == []
    acd.logout(1, 3.0)
    assert offers(acd) == [(100, 2)]


# ------------------------------------------------------------- offer rules
def test_decline_requeues_at_original_place_and_excludes(make):
    acd = make(q())
    agents(acd, {1: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    acd.enqueue(101, 0, 2.0)
    acd.enqueue(102, 0, 3.0)
    assert offers(acd) == [(100, 1)]
    acd.decline(100, 1, 4.0)
    # 100 goes back in front of 101/102, but agent 1 now takes 101
    assert offers(acd) == [(101, 1)]
    assert acd.waiting_callers(0) == [100, 102]
    assert acd.position(100) == 1
    acd.accept(101, 1, 5.0)
    acd.call_ended(1, 6.0)
    acd.wrapup_done(1, 7.0)
    assert offers(acd) == [(102, 1)]  # 100 excludes agent 1


def test_no_answer_sets_not_ready_when_configured(make):
    acd = make(q(no_answer_not_ready=True), q(no_answer_not_ready=False))
    agents(acd, {1: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    acd.pop_decisions()
    acd.no_answer(100, 1, 16.0)
    assert acd.pop_decisions() == [(D.AGENT_NOT_READY, 1, 100, Reason.RING_NO_ANSWER)]
    assert acd.agent_state(1) == S.NOT_READY
    acd.ready(1, 17.0)
    acd.enqueue(101, 1, 18.0)
    acd.pop_decisions()
    acd.no_answer(101, 1, 30.0)
    assert acd.pop_decisions() == []
    assert acd.agent_state(1) == S.READY


def test_abandon_while_ringing_cancels(make):
    acd = make(q())
    agents(acd, {1: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    acd.enqueue(101, 0, 1.0)
    acd.pop_decisions()
    acd.abandon(100, 2.0)
    assert acd.pop_decisions() == [(D.OFFER_CANCELLED, 100, 1, 0), (D.OFFER, 101, 1, 0)]


def test_logout_while_ringing_requeues_without_exclusion(make):
    acd = make(q())
    agents(acd, {1: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    acd.pop_decisions()
    acd.logout(1, 2.0)
    assert acd.pop_decisions() == [(D.OFFER_CANCELLED, 100, 1, 0)]
    assert acd.agent_state(1) == S.LOGGED_OUT
    agents(acd, {1: {1: 1}}, now=3.0)  # logs in and goes ready again
    assert acd.agent_state(1) == S.RESERVED
    assert acd.offered_agents(100) == (1,)


def test_transfer_moves_caller(make):
    acd = make(q(), q(skill=2))
    agents(acd, {1: {1: 1}, 2: {2: 1}})
    acd.busy(2, 0.0)
    acd.enqueue(100, 0, 1.0)
    acd.pop_decisions()
    acd.transfer(100, 1, 2.0, priority=7)
    assert acd.pop_decisions() == [(D.OFFER_CANCELLED, 100, 1, 0)]
    assert acd.caller_info(100)[:3] == (1, 0, 7)
    assert acd.agent_state(1) == S.READY


def test_agent_busy_elsewhere_and_skill_change(make):
    acd = make(q(skill=1), q(skill=2))
    agents(acd, {1: {1: 1}})
    acd.enqueue(200, 1, 1.0)
    assert acd.pop_decisions() == []
    acd.set_skills(1, 2.0, {1: 1, 2: 5})
    assert offers(acd) == [(200, 1)]
    acd.accept(200, 1, 3.0)
    acd.call_ended(1, 4.0)
    acd.busy(1, 5.0)  # a call from elsewhere during wrap-up
    acd.enqueue(201, 0, 6.0)
    assert acd.pop_decisions() == []
    acd.call_ended(1, 7.0)
    acd.wrapup_done(1, 8.0)
    assert offers(acd) == [(201, 1)]


# ------------------------------------------------------------ state & errors
def test_illegal_transitions_raise_and_change_nothing(make):
    acd = make(q())
    agents(acd, {1: {1: 1}}, ready=False)
    with pytest.raises(AcdStateError, match="agent 1 in state not_ready cannot call_ended"):
        acd.call_ended(1, 1.0)
    with pytest.raises(AcdStateError, match="already logged in"):
        acd.login(1, 1.0, {1: 1})
    with pytest.raises(AcdStateError, match="not logged in"):
        acd.ready(9, 1.0)
    with pytest.raises(AcdStateError, match="queue 5 is not defined"):
        acd.enqueue(1, 5, 1.0)
    with pytest.raises(AcdStateError, match="caller 1 is not queued"):
        acd.accept(1, 1, 1.0)
    acd.enqueue(100, 0, 1.0)
    with pytest.raises(AcdStateError, match="agent 1 has no offer for caller 100"):
        acd.decline(100, 1, 1.0)
    with pytest.raises(AcdStateError, match="already queued"):
        acd.enqueue(100, 0, 1.0)
    with pytest.raises(AcdStateError, match="time went backwards"):
        acd.advance(0.5)
    with pytest.raises(AcdConfigError, match="level 11"):
        acd.login(2, 2.0, {1: 11})
    with pytest.raises(AcdConfigError, match="priority"):
        acd.enqueue(101, 0, 2.0, priority=10)
    assert acd.agent_state(1) == S.NOT_READY
    assert acd.waiting_callers(0) == [100]


def test_config_errors():
    with pytest.raises(AcdConfigError, match="unknown ACD strategy 'fastest'"):
        QueueConfig("fastest", ((0.0, ((1, 1),)),))
    with pytest.raises(AcdConfigError, match="first tier"):
        QueueConfig("random", ((5.0, ((1, 1),)),))
    with pytest.raises(AcdConfigError, match="strictly increase"):
        QueueConfig("random", ((0.0, ((1, 1),)), (0.0, ((1, 1),))))
    with pytest.raises(AcdConfigError, match="level 0"):
        QueueConfig("random", ((0.0, ((1, 0),)),))
    assert QueueConfig("ring_all", ((0, {3: 2}),)).strategy == Strategy.RING_ALL


def test_duplicate_queue_rejected(make):
    acd = make(q())
    with pytest.raises(AcdConfigError, match="queue 0 already defined"):
        acd.add_queue(0, q())


def test_queue_added_after_login(make):
    acd = make()
    agents(acd, {1: {4: 2}})
    acd.add_queue(3, q(skill=4))
    assert acd.free_agents(3) == [1]
    acd.enqueue(100, 3, 1.0)
    assert offers(acd) == [(100, 1)]


# -------------------------------------------------------- position and wait
def test_expected_wait(make):
    acd = make(q(default_handle_time_s=120.0, handle_time_window=2))
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    acd.enqueue(100, 0, 0.0)
    acd.enqueue(101, 0, 0.0)
    acd.enqueue(102, 0, 0.0)
    acd.enqueue(103, 0, 0.0)
    acd.pop_decisions()
    assert acd.expected_wait_s(100) == 0.0  # ringing
    assert acd.position(102) == 1 and acd.position(103) == 2
    assert acd.expected_wait_s(102) == pytest.approx(1 * 120.0 / 2)
    assert acd.expected_wait_s(103) == pytest.approx(2 * 120.0 / 2)
    acd.accept(100, 1, 1.0)
    acd.call_ended(1, 31.0)
    acd.wrapup_done(1, 41.0)  # handle 40 s -> agent 1 takes 102
    assert acd.average_handle_time_s(0) == pytest.approx(40.0)
    assert acd.expected_wait_s(103) == pytest.approx(1 * 40.0 / 2)
    acd.logout(1, 42.0)
    acd.logout(2, 42.0)
    assert acd.expected_wait_s(103) == INF


def test_next_deadline_is_earliest(make):
    acd = make(q(timeout_s=50.0, tiers=(Tier(20.0, ((1, 1),)),), level=5))
    assert acd.next_deadline() == INF
    acd.enqueue(100, 0, 10.0)
    assert acd.next_deadline() == 30.0
    acd.advance(30.0)
    assert acd.next_deadline() == 60.0
    acd.abandon(100, 31.0)
    assert acd.next_deadline() == INF


def test_pure_module_imports_no_clock_or_io():
    import ast
    import pathlib

    for name in ("acd.py", "_acd.pyx", "acd_types.py", "erlang.py"):
        src = (pathlib.Path(acd_mod.__file__).parent / name).read_text()
        for banned in ("import time", "import asyncio", "import socket", "import random", "datetime"):
            assert banned not in src, (name, banned)
    ast.parse((pathlib.Path(acd_mod.__file__).parent / "acd.py").read_text())


def test_bad_ids_get_specific_errors(make):
    acd = make(q())
    with pytest.raises(AcdStateError, match="caller id must be a 64-bit int"):
        acd.enqueue("x", 0, 1.0)
    with pytest.raises(AcdStateError, match="caller id must be a 64-bit int"):
        acd.enqueue(1 << 64, 0, 1.0)
    with pytest.raises(AcdConfigError, match="agent id must be an int"):
        acd.login(-1, 1.0, {1: 1})
    with pytest.raises(AcdConfigError, match="agent id must be an int"):
        acd.login(1 << 20, 1.0, {1: 1})
    with pytest.raises(AcdConfigError, match="listed twice"):
        acd.login(1, 1.0, ((1, 2), (1, 3)))
    with pytest.raises(AcdStateError, match="NaN"):
        acd.advance(float("nan"))
    with pytest.raises(AcdStateError, match="must be finite"):  # keys stay finite: no NaN
        acd.advance(float("inf"))
    with pytest.raises(AcdStateError, match="must be finite"):
        make(q("longest_idle")).advance(float("-inf"))  # a fresh ACD: not "backwards"
    assert acd.queue_length(0) == 0


def test_round_robin_skips_excluded_and_wraps(make):
    acd = make(q("round_robin"))
    agents(acd, {1: {1: 1}, 2: {1: 1}, 3: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    assert offers(acd) == [(100, 1)]
    acd.decline(100, 1, 2.0)  # 100 excludes 1: next after 1 is 2
    assert offers(acd) == [(100, 2)]
    acd.decline(100, 2, 3.0)  # next after 2 is 3
    assert offers(acd) == [(100, 3)]
    acd.decline(100, 3, 4.0)  # everyone excluded: waits
    assert acd.pop_decisions() == []
    acd.enqueue(101, 0, 5.0)  # pointer at 3: wraps to 1
    assert offers(acd) == [(101, 1)]


def test_random_skips_excluded(make):
    acd = make(q("random"), seed=3)
    agents(acd, {1: {1: 1}, 2: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    [(_, first)] = offers(acd)
    acd.decline(100, first, 2.0)
    assert offers(acd) == [(100, 3 - first)]


def test_ring_all_respects_tiers(make):
    acd = make(q("ring_all", level=5, tiers=(Tier(10.0, ((1, 1),)),)))
    agents(acd, {1: {1: 9}, 2: {1: 2}, 3: {1: 6}})
    acd.enqueue(100, 0, 0.0)
    assert offers(acd) == [(100, 1), (100, 3)]
    acd.decline(100, 1, 1.0)
    acd.decline(100, 3, 2.0)
    assert acd.pop_decisions() == []
    acd.advance(10.0)
    assert offers(acd) == [(100, 2)]


def test_ready_after_wrapup_records_handle_time_window(make):
    acd = make(q(handle_time_window=2, default_handle_time_s=99.0))
    agents(acd, {1: {1: 1}})
    assert acd.average_handle_time_s(0) == 99.0
    t = 0.0
    for handle in (10.0, 20.0, 60.0):
        t += 1.0
        acd.enqueue(int(t), 0, t)
        acd.pop_decisions()
        acd.accept(int(t), 1, t)
        acd.call_ended(1, t + handle / 2)
        acd.ready(1, t + handle)  # ready() also ends wrap-up
        t += handle
    assert acd.average_handle_time_s(0) == pytest.approx((20.0 + 60.0) / 2)  # last two


def test_set_skills_while_ringing_keeps_offer(make):
    acd = make(q(skill=1), q(skill=2))
    agents(acd, {1: {1: 1}})
    acd.enqueue(100, 0, 1.0)
    acd.enqueue(200, 1, 1.0)
    assert offers(acd) == [(100, 1)]
    acd.set_skills(1, 2.0, {2: 3})
    assert acd.agent_state(1) == S.RESERVED
    acd.decline(100, 1, 3.0)
    assert offers(acd) == [(200, 1)]
    assert acd.free_agents(0) == []
