"""What a supervisor's mode switch costs the media engine, beside a same-run baseline.

A switch (listen → whisper → barge → listen) changes one room's hear rules and its
recorder's channels; the engine applies it at the start of the next tick by
recompiling its mixing plan.  Measured: one full ``MediaEngine.run_tick`` right
after a switch in one of ``CALLS`` monitored calls (caller, agent, supervisor
and a stereo recorder per room), against the baseline of a steady tick with no
change.  No RTP flows (the tick still receives, mixes, records and sends every
leg's frame).

Run: ``.venv/bin/python -m pytest bench/test_supervise_modes.py --benchmark-json=bench/results/supervise.json``.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.supervision import MODE_HEAR_SET, MonitorState, SupervisionMode, recorder_channels
from media.engine import MediaConfig, MediaEngine

CALLS = 200
MODES = [SupervisionMode.LISTEN, SupervisionMode.WHISPER, SupervisionMode.BARGE]


class _Sink:
    def write_frame(self, frame: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def monitored():
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0, rtp_timeout_s=0))
    for i in range(CALLS):
        room = f"room-{i}"
        engine.create_room(room)
        for role in ("caller", "agent", "sup"):
            engine.create_leg(f"{i}/{role}", remote=("127.0.0.1", 9))  # discard port: sends are dropped
            engine.join(room, f"{i}/{role}")
        engine.record(room, "recorder", _Sink(), [[f"{i}/caller"], [f"{i}/agent"]])
        engine.apply_hear_set(room, MODE_HEAR_SET[SupervisionMode.LISTEN], caller=f"{i}/caller",
                              agent=f"{i}/agent", supervisor=f"{i}/sup")
    ticks = itertools.count()
    engine.run_tick(next(ticks), 0.0)
    yield engine, ticks
    engine.close()


def _tick(engine: MediaEngine, ticks) -> None:
    k = next(ticks)
    engine.run_tick(k, 0.02 * k)


@pytest.mark.benchmark(group=f"supervisor-mode-switch-{CALLS}-calls")
def test_steady_tick_baseline(benchmark, monitored) -> None:
    engine, ticks = monitored
    benchmark.extra_info["calls"] = CALLS
    benchmark.pedantic(_tick, args=(engine, ticks), rounds=30, iterations=1, warmup_rounds=2)


@pytest.mark.benchmark(group=f"supervisor-mode-switch-{CALLS}-calls")
def test_tick_after_a_mode_switch(benchmark, monitored) -> None:
    engine, ticks = monitored
    modes = itertools.cycle(MODES[1:] + MODES[:1])

    def switch_and_tick() -> None:
        mode = next(modes)
        engine.apply_hear_set("room-7", MODE_HEAR_SET[mode], caller="7/caller", agent="7/agent", supervisor="7/sup")
        engine.set_channels("room-7", "recorder", recorder_channels(
            MonitorState.JOINED, mode, caller="7/caller", agent="7/agent", supervisor="7/sup"))
        _tick(engine, ticks)

    benchmark.extra_info["calls"] = CALLS
    benchmark.pedantic(switch_and_tick, rounds=30, iterations=1, warmup_rounds=2)
