"""The toll-fraud policy wired into call control's trunk legs (centre.dial_policy):
[toll_fraud.TENANT] patterns per role, concurrent and daily caps, on an in-process
engine whose outbound trunk points at a UDP port nobody answers."""
from __future__ import annotations

import asyncio
import time

import pytest

from conftest_callctl import InProcessEngine, trunk_section
from conftest_inbound import free_port
from engine.legs import LegOutcome, LegState

pytestmark = pytest.mark.interop

POLICY = """
[toll_fraud.default]
allow = ["+4930*"]
deny = ["+49309*"]
roles = { agent = ["+4930555*"], supervisor = ["+4930777*"] }
max_concurrent_outbound = 1
max_calls_per_day = 3
"""


def test_dial_policy_refuses_by_pattern_role_and_caps(tmp_path):
    eng = InProcessEngine(tmp_path, extra=trunk_section("out", free_port()) + POLICY)

    async def scenario():
        await eng.start()
        legs = eng.centre.legs
        try:
            def dial(number: str, agent: str = "", purpose: str = "dial", n: int = 0, role: str = ""):
                return legs.dial_trunk("out", number, call_id=f"c{n}", tenant="default", agent=agent,
                                       purpose=purpose, ring_timeout_s=5, role=role)

            refused = [dial("+4930900111", n=1), dial("+4940111", n=2), dial("+4930666", agent="1001", n=3)]
            assert [leg.outcome for leg in refused] == [LegOutcome.DENIED] * 3
            assert "denied pattern '+49309*'" in refused[0].reason
            assert "outside the allow patterns" in refused[1].reason
            assert "roles.agent" in refused[2].reason
            # a control user's click-to-dial carries its role: a supervisor's list, not the agent's
            by_sup = dial("+4930555002", agent="1001", n=9, role="supervisor")
            assert by_sup.outcome is LegOutcome.DENIED and "roles.supervisor" in by_sup.reason
            first = dial("+4930555001", agent="1001", n=4)  # the agent's own list allows it
            assert first.state is LegState.CALLING
            busy = dial("+4930666", n=5)
            assert busy.outcome is LegOutcome.DENIED and "max_concurrent_outbound" in busy.reason
            first.cancel()
            second = dial("+4930666", purpose="forward", n=6)
            assert second.state is LegState.CALLING
            second.cancel()
            third = dial("+4930667", n=7)
            assert third.state is LegState.CALLING
            third.cancel()
            over = dial("+4930668", n=8)
            assert over.outcome is LegOutcome.DENIED and "max_calls_per_day" in over.reason
            assert eng.centre.toll_fraud.calls_today("default", time.time()) == 3
            await asyncio.sleep(0.05)
        finally:
            await eng.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
