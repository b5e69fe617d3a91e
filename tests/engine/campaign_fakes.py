"""A simulated carrier and agent desk behind the dialer's CallPort (no SIP): outcomes by number.

The last digit of the dialled number decides: 2 busy, 3 no answer, 4 invalid
number, 5 never answers (rings until hung up), 6 answering machine (with
AMD on), anything else a person answering after ``answer_s``.  ``agents``
agents take connected calls for ``talk_s``.  Also runnable as a process
(``python campaign_fakes.py CONFIG``) that runs an engine with this port, for
the kill-and-restart test.
"""
from __future__ import annotations

import asyncio
import sys
from typing import Any

from engine.campaign_service import CampaignService
from engine.dialer import AgentCounts, ConnectAgent, PlaceCall, PlayMessage, RunFlow


class SimCarrier:
    def __init__(self, agents: int = 2, answer_s: float = 0.05, talk_s: float = 0.05) -> None:
        self.service: CampaignService | None = None
        self.progress: Any = None
        self.agents = [f"10{i:02d}" for i in range(1, agents + 1)]
        self.busy: dict[str, str] = {}   # agent -> call
        self.answer_s, self.talk_s = answer_s, talk_s
        self.dialled: list[str] = []
        self.played: list[PlayMessage] = []
        self.hung_up: list[tuple[str, str]] = []
        self.live: dict[str, Any] = {}
        self.pops: list[dict[str, Any]] = []

    def _later(self, delay: float, call_id: str, kind: str, **info: Any) -> None:
        loop = asyncio.get_running_loop()
        self.live.setdefault(call_id, []).append(
            loop.call_later(delay, lambda: self.progress(call_id, kind, **info)))

    def bind(self, progress: Any) -> None:
        self.progress = progress

    def dial(self, action: PlaceCall, campaign: Any) -> None:
        self.dialled.append(action.number)
        last = action.number[-1]
        if last == "2":
            self._later(0.01, action.call_id, "failed", outcome="busy", status=486)
        elif last == "3":
            self._later(0.03, action.call_id, "failed", outcome="no_answer", status=487)
        elif last == "4":
            self._later(0.01, action.call_id, "failed", outcome="invalid_number", status=404)
        elif last == "5":
            pass
        else:
            self._later(self.answer_s, action.call_id, "answered")

    def agent_counts(self, campaign: Any) -> AgentCounts:
        idle = [a for a in self.agents if a not in self.busy]
        return AgentCounts(idle=len(idle), busy=len(self.busy), idle_agents=tuple(idle))

    def connect_agent(self, action: ConnectAgent, campaign: Any) -> None:
        idle = [a for a in self.agents if a not in self.busy and (not action.agent or a == action.agent)]
        if not idle:
            return  # the dialer's connect timeout drops it
        agent = idle[0]
        self.busy[agent] = action.call_id
        self.pops.append(action.screen_pop)
        self._later(0.0, action.call_id, "connected", agent=agent)
        self._later(self.talk_s, action.call_id, "ended", reason="bye_received")
        asyncio.get_running_loop().call_later(self.talk_s, self.busy.pop, agent, None)

    def start_amd(self, call_id: str) -> None:
        number = self.service._call_core[call_id].book.record_for_call(call_id).number  # type: ignore
        self._later(0.01, call_id, "amd", result="machine" if number.endswith("6") else "human")

    def play(self, action: PlayMessage) -> None:
        self.played.append(action)
        if action.hangup:
            self._later(0.01, action.call_id, "ended", reason="message_played")

    def run_flow(self, action: RunFlow, campaign: Any) -> None:
        self._later(0.01, action.call_id, "ended", reason="flow_done")

    def hangup(self, call_id: str, reason: str) -> None:
        self.hung_up.append((call_id, reason))
        for h in self.live.pop(call_id, []):
            h.cancel()
        for agent, c in list(self.busy.items()):
            if c == call_id:
                del self.busy[agent]
        self.progress(call_id, "ended", reason=reason)


def sim_service(**kw: Any) -> tuple[CampaignService, SimCarrier]:
    port = SimCarrier(**kw)
    svc = CampaignService(port, tick_s=0.05)
    port.service = svc
    return svc, port


async def _main(path: str) -> None:  # pragma: no cover - run as a child process by the kill test
    from engine.app import Engine
    from engine.config import load_config

    svc, _ = sim_service(agents=5)
    engine = Engine(load_config(path), services=[svc])
    await engine.start(open_listeners=False)
    await asyncio.sleep(3600)


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main(sys.argv[1]))
