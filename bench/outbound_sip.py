"""Predictive versus progressive over real SIP: agent utilisation, dial rate and drop rate in the same run.

``python -m bench.outbound_sip [--dial-s 40] [--agents 8] [--cap 0.03]``: the
harness of tests/interop/conftest_outbound.py (a SIPp carrier running
``tests/interop/sipp/carrier_mix.xml``: answer probability 0.6 after
0.3-1.5 s of ringing, talk 2/4/7 s, 20 % no answer until the engine's 5 s
ring timeout, 20 % busy; engine/sim.py agent phones answering after 0.2 s,
wrap-up 1 s) runs a progressive campaign (the baseline) and then a
predictive one at the same drop cap, each for ``--dial-s`` seconds of
dialling.  Utilisation is the campaign report's agent ``talk_share``
((talk + wrap-up on the campaign's calls) / logged-in time,
engine/campaign_agents.py) over the dialling window.  Prints both runs and
the ratios; raw numbers to ``bench/results/outbound_sip.json``.

Short runs: the predictive pacer needs 30 outcomes before it leaves
progressive pacing and ramps its target over its first 200 answered calls
(engine/pacing.py), so a 40 s run shows the start of a campaign, not its
steady state; the simulation benchmark (bench/outbound_pacing.py) covers
many hours.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "interop"))

from conftest_outbound import run_campaign  # noqa: E402


async def main(dial_s: float, agents: int, cap: float) -> dict:
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dial_s": dial_s, "agents": agents,
                 "cap": cap, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="obsip") as tmp:
        for mode in ("progressive", "predictive"):
            run = await run_campaign(pathlib.Path(tmp) / mode, mode, agents=agents, dial_s=dial_s,
                                     max_drop_rate=cap)
            out["runs"][mode] = run.describe()
            print(mode, out["runs"][mode], flush=True)
    prog, pred = out["runs"]["progressive"], out["runs"]["predictive"]
    out["utilisation_ratio"] = round((pred["talk_share"] or 0) / prog["talk_share"], 3) if prog["talk_share"] else None
    out["attempt_rate_ratio"] = round(pred["attempts_per_s"] / prog["attempts_per_s"], 3) if prog["attempts_per_s"] else None
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dial-s", type=float, default=40.0)
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--cap", type=float, default=0.03)
    a = ap.parse_args()
    res = asyncio.run(main(a.dial_s, a.agents, a.cap))
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=1))
    dest = ROOT / "bench" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "outbound_sip.json").write_text(json.dumps(res, indent=1))
