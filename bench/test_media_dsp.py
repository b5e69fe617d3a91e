"""Micro benchmarks of the media DSP hot paths, each beside a same-run baseline.

* G.711 encode/decode of 1,000 legs' 20 ms frames (one tick): numpy tables
  vs stdlib ``audioop`` called per leg (what a per-packet design does).
* In-band DTMF detection over 1,000 legs' frames (one tick): the batched
  detector vs a textbook per-leg Goertzel recursion in pure Python over the
  same frames (8 tone filters), and vs the same recursion vectorised across
  legs with numpy (the best you can do without the matrix form).
* Jitter buffer put+get for 1,000 legs (one tick).
* Resampling a 3 s 22.05 kHz TTS clip to 8 kHz.

Run: ``.venv/bin/python -m pytest bench/test_media_dsp.py --benchmark-json=bench/results/media_dsp.json``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from media import g711
from media.dtmf import DtmfDetector, dtmf_tone, LOW_HZ, HIGH_HZ
from media.jitter import JitterBuffer
from media.resample import resample

LEGS = 1000
RNG = np.random.default_rng(0)
PCM = (RNG.normal(0, 3000, (LEGS, 160))).clip(-32768, 32767).astype(np.int16)
ULAW = g711.ulaw_encode(PCM)
PCM_ROWS = [row.tobytes() for row in PCM]
ULAW_ROWS = [row.tobytes() for row in ULAW]


@pytest.mark.benchmark(group="g711-encode-1000-legs")
def test_ulaw_encode_numpy_table(benchmark):
    out = np.empty_like(ULAW)
    benchmark(g711.ulaw_encode, PCM, out)
    assert np.array_equal(out, ULAW)


@pytest.mark.benchmark(group="g711-encode-1000-legs")
def test_ulaw_encode_audioop_per_leg(benchmark):
    res = benchmark(lambda: [audioop.lin2ulaw(r, 2) for r in PCM_ROWS])
    assert res[0] == ULAW_ROWS[0]


@pytest.mark.benchmark(group="g711-decode-1000-legs")
def test_ulaw_decode_numpy_table(benchmark):
    out = np.empty_like(PCM)
    benchmark(g711.ulaw_decode, ULAW, out)


@pytest.mark.benchmark(group="g711-decode-1000-legs")
def test_ulaw_decode_audioop_per_leg(benchmark):
    benchmark(lambda: [audioop.ulaw2lin(r, 2) for r in ULAW_ROWS])


@pytest.mark.benchmark(group="g711-encode-1000-legs")
def test_alaw_encode_numpy_table(benchmark):
    out = np.empty_like(ULAW)
    benchmark(g711.alaw_encode, PCM, out)


@pytest.mark.benchmark(group="g711-encode-1000-legs")
def test_alaw_encode_audioop_per_leg(benchmark):
    benchmark(lambda: [audioop.lin2alaw(r, 2) for r in PCM_ROWS])


# ---------------------------------------------------------------- DTMF

_DIGITS = "0123456789*#ABCD"
_TONES = np.stack([dtmf_tone(_DIGITS[i % 16], 20, level_dbm0=-10) for i in range(LEGS)])
FRAMES = (_TONES + RNG.normal(0, 300, _TONES.shape)).clip(-32768, 32767).astype(np.int16)
_FREQS = LOW_HZ + HIGH_HZ
_COEFFS = [2 * math.cos(2 * math.pi * f / 8000) for f in _FREQS]


def goertzel_python(frame: list[int]) -> list[float]:
    powers = []
    for c in _COEFFS:
        s1 = s2 = 0.0
        for x in frame:
            s1, s2 = x + c * s1 - s2, s1
        powers.append(s1 * s1 + s2 * s2 - c * s1 * s2)
    return powers


def goertzel_numpy_loop(frames: np.ndarray) -> np.ndarray:
    x = frames.astype(np.float64)
    c = np.array(_COEFFS)[None, :]
    s1 = np.zeros((x.shape[0], 8))
    s2 = np.zeros_like(s1)
    for n in range(x.shape[1]):
        s1, s2 = x[:, n : n + 1] + c * s1 - s2, s1
    return s1 * s1 + s2 * s2 - c * s1 * s2


@pytest.mark.benchmark(group="dtmf-1000-legs")
def test_dtmf_detector_batched(benchmark):
    det = DtmfDetector(LEGS)
    benchmark(det.process, FRAMES)


@pytest.mark.benchmark(group="dtmf-1000-legs")
def test_dtmf_goertzel_numpy_recursion(benchmark):
    benchmark(goertzel_numpy_loop, FRAMES)


@pytest.mark.benchmark(group="dtmf-1000-legs")
def test_dtmf_goertzel_pure_python_per_leg(benchmark):
    rows = [r.tolist() for r in FRAMES[:100]]  # 100 legs; the report scales by 10
    benchmark.pedantic(lambda: [goertzel_python(r) for r in rows], rounds=3, iterations=1)


# ---------------------------------------------------------------- jitter, resample


@pytest.mark.benchmark(group="jitter-1000-legs")
def test_jitter_put_get_1000_legs(benchmark):
    bufs = [JitterBuffer() for _ in range(LEGS)]
    state = {"k": 0}

    def tick():
        k = state["k"]
        now = k * 0.02
        for i, jb in enumerate(bufs):
            jb.put(k & 0xFFFF, k * 160, PCM[i], now)
            jb.get(now)
        state["k"] = k + 1

    benchmark(tick)


@pytest.mark.benchmark(group="resample-3s-22k")
def test_resample_tts_clip(benchmark):
    clip = RNG.normal(0, 3000, 3 * 22050)
    benchmark(resample, clip, 22050, 8000)


# ---------------------------------------------------------------- recorder worker


@pytest.fixture
def open_recorder(tmp_path):
    """A Recorder with 1,000 open stereo μ-law recordings (files on tmp)."""
    import datetime

    from media.recorder import Recorder

    rec = Recorder(tmp_path, fmt="wav-ulaw", stereo=True, queue_ticks=10_000)
    ids = [rec.start(f"bench-{i}", datetime.datetime(2026, 11, 23)) for i in range(LEGS)]
    while len(rec._open) < LEGS:  # wait until the worker opened them all
        import time

        time.sleep(0.01)
    yield rec, ids
    rec.close(timeout_s=60)


TICKS = [(None, PCM, PCM, [0] * LEGS)] * 10  # 200 ms of audio for 1,000 recordings


@pytest.mark.benchmark(group="recorder-worker-1000-recordings-200ms")
def test_recorder_worker_batched(benchmark, open_recorder):
    rec, ids = open_recorder
    ticks = [(ids, c, a, p) for _, c, a, p in TICKS]
    benchmark.pedantic(rec._on_frames, args=(ticks,), rounds=5, iterations=1)


@pytest.mark.benchmark(group="recorder-worker-1000-recordings-200ms")
def test_recorder_worker_tick_by_tick(benchmark, open_recorder):
    rec, ids = open_recorder
    ticks = [(ids, c, a, p) for _, c, a, p in TICKS]

    def per_tick():
        for t in ticks:
            rec._write_tick(*t)

    benchmark.pedantic(per_tick, rounds=5, iterations=1)
