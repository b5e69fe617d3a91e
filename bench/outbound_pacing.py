"""Predictive vs progressive pacing in the discrete-event simulation (engine/pacing_sim.py).

``python -m bench.outbound_pacing [--seeds N] [--hours H]`` prints one line per
scenario and mode (mean and worst drop rate over seeds, worst rolling-window
drop rate, mean utilisation, connects per agent-hour) and writes the raw runs
to ``bench/results/outbound_pacing.json``.  Bounded: seeds × scenarios runs.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

from engine.pacing import PacingMode
from engine.pacing_sim import SimParams, simulate

SCENARIOS = {
    "base (10 agents, 30 % answer, 90 s handle)": SimParams(),
    "high answer (20 agents, 60 %, 40 s)": SimParams(agents=20, answer_probability=0.6, handle_mean_s=40.0),
    "small team (5 agents, 15 %, cv 1.2)": SimParams(agents=5, answer_probability=0.15, handle_cv=1.2),
    "large (50 agents, 25 %, 120 s)": SimParams(agents=50, answer_probability=0.25, handle_mean_s=120.0),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--hours", type=float, default=4.0)
    ns = ap.parse_args()
    raw = []
    t0 = time.time()
    for name, params in SCENARIOS.items():
        params = SimParams(**{**{f: getattr(params, f) for f in params.__dataclass_fields__},
                              "duration_s": ns.hours * 3600})
        for mode in (PacingMode.PROGRESSIVE, PacingMode.PREDICTIVE):
            runs = [simulate(mode, params, seed) for seed in range(ns.seeds)]
            raw += [{"scenario": name, **r.describe()} for r in runs]
            print(f"{name:45s} {mode.value:11s} drop mean {statistics.mean(r.drop_rate for r in runs):.4f} "
                  f"max {max(r.drop_rate for r in runs):.4f} window max "
                  f"{max(r.max_window_drop_rate for r in runs):.4f} utilisation "
                  f"{statistics.mean(r.utilisation for r in runs):.3f} connects/agent-h "
                  f"{statistics.mean(r.connects_per_agent_hour for r in runs):.1f} "
                  f"placed/s {sum(r.placed for r in runs) / (ns.seeds * params.duration_s):.3f}", flush=True)
    out = pathlib.Path("bench/results/outbound_pacing.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seeds": ns.seeds, "hours": ns.hours, "runs": raw,
                               "wall_s": round(time.time() - t0, 1)}, indent=1))
    print(f"{len(raw)} runs in {time.time() - t0:.0f} s -> {out}")


if __name__ == "__main__":
    main()
