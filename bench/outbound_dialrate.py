"""Sustained dial attempts per second through the campaign service, against a same-run store baseline.

``python -m bench.outbound_dialrate [--records N]``: a notification campaign
(agentless, ``max_channels`` calls at a time) over N numbers whose calls all
fail at once as busy (no retry), through :class:`CampaignService` with a
real SQLite store: every attempt row is appended and flushed before its
call is "placed", every result row appended.  The baseline writes the same
two rows per record straight to the store with the same flush cadence.
Prints both rates and their ratio; raw numbers to
``bench/results/outbound_dialrate.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import tempfile
import time
from typing import Any

from engine.app import Engine
from engine.campaign_service import CampaignService
from engine.config import parse_config
from engine.dialer import AgentCounts
from engine.store import SqliteStore


class InstantBusy:
    def __init__(self) -> None:
        self.progress: Any = None
        self.placed = 0

    def bind(self, progress: Any) -> None:
        self.progress = progress

    def dial(self, action: Any, campaign: Any) -> None:
        self.placed += 1
        asyncio.get_running_loop().call_soon(lambda: self.progress(action.call_id, "failed", outcome="busy",
                                                                   status=486))

    def agent_counts(self, campaign: Any) -> AgentCounts:
        return AgentCounts(0, 0)

    def connect_agent(self, *a: Any) -> None: ...
    def start_amd(self, *a: Any) -> None: ...
    def play(self, *a: Any) -> None: ...
    def run_flow(self, *a: Any) -> None: ...
    def hangup(self, *a: Any) -> None: ...


async def service_rate(tmp: str, records: int, channels: int) -> float:
    cfg = parse_config(f"""
[store]
path = "{tmp}/svc.db"
batch_interval_ms = 5
[campaigns.blast]
mode = "notification"
message = "tts:hello"
max_channels = {channels}
""", f"{tmp}/engine.toml")
    port = InstantBusy()
    svc = CampaignService(port, tick_s=0.001)
    engine = Engine(cfg, services=[svc])
    await engine.start(open_listeners=False)
    core = svc.core("default", "blast")
    svc.import_csv(core, "number\n" + "\n".join(f"+4930{i:07d}" for i in range(records)) + "\n")
    await engine.store.aflush()
    t0 = time.perf_counter()
    from engine.campaign import CampaignTrigger
    svc.transition(core, CampaignTrigger.START)
    while core.book.state.value != "completed":
        await asyncio.sleep(0.005)
    dt = time.perf_counter() - t0
    await engine.stop()
    assert port.placed == records
    return records / dt


def baseline_rate(tmp: str, records: int, channels: int) -> float:
    store = SqliteStore(f"{tmp}/base.db", batch_interval_ms=5)
    t0 = time.perf_counter()
    for start in range(0, records, channels):
        for i in range(start, min(records, start + channels)):
            store.append("campaign_log", {"tenant": "default", "campaign": "b", "record_id": f"r{i}", "ts": 0.0,
                                          "event": "attempt", "call_id": f"c{i}", "number": f"+4930{i:07d}"})
        store.flush()
        for i in range(start, min(records, start + channels)):
            store.append("campaign_log", {"tenant": "default", "campaign": "b", "record_id": f"r{i}", "ts": 0.0,
                                          "event": "result", "call_id": f"c{i}", "outcome": "busy"})
    store.flush()
    dt = time.perf_counter() - t0
    store.close()
    return records / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--channels", type=int, default=30)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        svc = asyncio.run(service_rate(tmp, ns.records, ns.channels))
        base = baseline_rate(tmp, ns.records, ns.channels)
    print(f"campaign service: {svc:.0f} attempts/s; store baseline (same rows, same flushes): {base:.0f}/s; "
          f"ratio {svc / base:.2f}")
    out = pathlib.Path("bench/results/outbound_dialrate.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"records": ns.records, "channels": ns.channels, "service_per_s": svc,
                               "baseline_per_s": base, "date": time.strftime("%Y-%m-%d")}))


if __name__ == "__main__":
    main()
