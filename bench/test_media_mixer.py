"""Mixer alone: 1,000 three-party rooms per tick (target under 2 ms).

Run: ``.venv/bin/python -m pytest -q bench/test_media_mixer.py
--benchmark-json=bench/results/media_mixer.json``.  The batched mixer
(:func:`media.mixer.mix`, plan compiled once) is measured beside two
baselines from the same run: the naive per-room Python loop
(:func:`media.mixer.mix_naive`) and the batched mixer that recompiles its
plan every tick (the cost of a membership change).
"""
from __future__ import annotations

import numpy as np
import pytest

from media.mixer import compile_plan, mix, mix_naive
from media.room import MemberKind, Room

ROOMS = 1000


def _rooms(recorder: bool) -> tuple[list[Room], dict[str, int], np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    rooms = []
    rows: dict[str, int] = {}
    for r in range(ROOMS):
        room = Room(f"r{r}")
        for m in ("caller", "agent", "sup"):
            mid = f"{m}{r}"
            room.join(mid)
            rows[mid] = len(rows) + 1
        if recorder:
            room.join(f"rec{r}", MemberKind.RECORDER, channels=[{f"caller{r}"}, {f"agent{r}"}])
        rooms.append(room)
    inputs = np.zeros((len(rows) + 1, 160), np.int16)
    inputs[1:] = rng.integers(-12000, 12000, (len(rows), 160), dtype=np.int16)
    frames = {m: inputs[i] for m, i in rows.items()}
    return rooms, rows, inputs, frames


@pytest.mark.parametrize("recorder", [False, True], ids=["3party", "3party+recorder"])
def test_mixer_batched(benchmark, recorder: bool) -> None:
    rooms, rows, inputs, frames = _rooms(recorder)
    plan = compile_plan(rooms, rows)
    out = np.zeros((plan.n_outputs + 1, 160), np.int16)
    benchmark.group = f"mixer-1000-rooms-{'rec' if recorder else 'plain'}"
    benchmark.extra_info["rooms"] = ROOMS
    benchmark(mix, plan, inputs, out)
    # sanity: same result as the naive loop
    ref = mix_naive(rooms[:5], frames)
    for k, key in enumerate(plan.output_keys[: len(ref)]):
        np.testing.assert_array_equal(out[k], ref[key])


@pytest.mark.parametrize("recorder", [False, True], ids=["3party", "3party+recorder"])
def test_mixer_naive_baseline(benchmark, recorder: bool) -> None:
    rooms, rows, inputs, frames = _rooms(recorder)
    benchmark.group = f"mixer-1000-rooms-{'rec' if recorder else 'plain'}"
    benchmark.pedantic(mix_naive, args=(rooms, frames), rounds=5, iterations=1)


@pytest.mark.parametrize("recorder", [False, True], ids=["3party", "3party+recorder"])
def test_mixer_recompile_every_tick(benchmark, recorder: bool) -> None:
    rooms, rows, inputs, frames = _rooms(recorder)
    benchmark.group = f"mixer-1000-rooms-{'rec' if recorder else 'plain'}"
    benchmark.pedantic(lambda: mix(compile_plan(rooms, rows), inputs), rounds=5, iterations=1)


@pytest.mark.parametrize("recorder", [False, True], ids=["3party", "3party+recorder"])
def test_mixer_incremental_engine_path(benchmark, recorder: bool) -> None:
    """The engine's path: media.mixer.Mixer (fixed slots, per-bucket regions)."""
    from media.mixer import Mixer

    rooms, rows, inputs, frames = _rooms(recorder)
    mixer = Mixer()
    mixer.sync(rooms, rows)
    out = np.zeros((mixer.n_rows, 160), np.int16)
    benchmark.group = f"mixer-1000-rooms-{'rec' if recorder else 'plain'}"
    benchmark(mixer.mix, inputs, out)
    ref = mix_naive(rooms[:5], frames)
    got = {k: out[i] for i, k in enumerate(mixer.output_keys) if k is not None}
    for key, frame in ref.items():
        np.testing.assert_array_equal(got[key], frame)
