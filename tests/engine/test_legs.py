"""engine/legs.py tables: outcome classification and the leg state table (the SIP side is in
tests/interop/test_callctl_legs.py)."""
from __future__ import annotations

import pytest

from engine.legs import (
    LEG_TRANSITIONS, NUMBER_RE, IllegalLegTransition, LegOutcome, LegState, LegTrigger, classify,
)


@pytest.mark.parametrize("status, outcome", [
    (486, "busy"), (600, "busy"), (404, "invalid_number"), (484, "invalid_number"), (604, "invalid_number"),
    (503, "congestion"), (480, "congestion"), (500, "congestion"), (502, "congestion"), (599, "congestion"),
    (408, "timeout"), (487, "cancelled"), (403, "rejected"), (401, "rejected"), (407, "rejected"),
    (488, "rejected"), (603, "rejected"), (699, "rejected"), (302, "rejected"),
])
def test_classify(status: int, outcome: str) -> None:
    assert classify(status) is LegOutcome(outcome)


def test_every_state_has_a_row_and_end_states_are_final() -> None:
    assert set(LEG_TRANSITIONS) == set(LegState)
    assert LEG_TRANSITIONS[LegState.FAILED] == {} and LEG_TRANSITIONS[LegState.ENDED] == {}
    reachable = {LegState.CALLING}
    frontier = [LegState.CALLING]
    while frontier:
        for nxt in LEG_TRANSITIONS[frontier.pop()].values():
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(LegState)
    # a leg can only end after an answer; it can only fail before one
    assert all(LegTrigger.END not in row for s, row in LEG_TRANSITIONS.items() if s is not LegState.ANSWERED)
    assert LegTrigger.FAIL not in LEG_TRANSITIONS[LegState.ANSWERED]


def test_illegal_transition_names_state_and_trigger() -> None:
    from engine.legs import OutgoingLeg

    leg = OutgoingLeg.__new__(OutgoingLeg)
    leg.leg_id, leg.state = "c/out-1", LegState.ENDED
    with pytest.raises(IllegalLegTransition, match="c/out-1: answer not allowed in ended"):
        leg._fire(LegTrigger.ANSWER)


@pytest.mark.parametrize("number, ok", [
    ("+4930555999", True), ("0800123", True), ("*31#", True), ("", False), ("sip:x@y", False),
    ("+49 30", False), ("12345678901234567890123456789012345", False), ("++49", False),
])
def test_dialable_numbers(number: str, ok: bool) -> None:
    assert bool(NUMBER_RE.match(number)) is ok
