"""Call-progress tones: frequencies by FFT, cadences, phase continuity."""
from __future__ import annotations

import numpy as np
import pytest

from media.dtmf import DBM0_AMPLITUDE
from media.errors import LocalMediaError
from media.tones import COUNTRIES, KINDS, Tone, ToneSource, tone


def collect(src: ToneSource, frames: int) -> np.ndarray:
    return np.concatenate([src.read().copy() for _ in range(frames)])


def peaks_hz(x: np.ndarray, n: int) -> list[float]:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    freqs = np.fft.rfftfreq(x.size, 1 / 8000)
    top = np.argsort(spec)[::-1]
    out: list[float] = []
    for i in top:
        if all(abs(freqs[i] - f) > 20 for f in out):
            out.append(float(freqs[i]))
        if len(out) == n:
            break
    return sorted(out)


def on_off_runs_ms(x: np.ndarray) -> list[tuple[bool, int]]:
    # 5 ms envelope, on when above 10 % of peak.
    env = np.abs(x[: x.size // 40 * 40]).reshape(-1, 40).max(axis=1)
    on = env > 0.1 * env.max()
    runs = []
    start = 0
    for i in range(1, on.size + 1):
        if i == on.size or on[i] != on[start]:
            runs.append((bool(on[start]), (i - start) * 5))
            start = i
    return runs


@pytest.mark.parametrize("country", ["us", "itu", "uk", "cn"])
@pytest.mark.parametrize("kind", KINDS)
def test_frequencies_by_fft(country, kind):
    t = tone(kind, country)
    x = collect(ToneSource(t), 50)  # 1 s
    got = peaks_hz(x, len(t.frequencies_hz))
    assert got == pytest.approx(list(t.frequencies_hz), abs=2)


@pytest.mark.parametrize(
    "kind, country, pattern",
    [
        ("ringback", "us", [(True, 2000), (False, 4000)]),
        ("busy", "us", [(True, 500), (False, 500)]),
        ("congestion", "us", [(True, 250), (False, 250)]),
        ("ringback", "itu", [(True, 1000), (False, 4000)]),
        ("busy", "cn", [(True, 350), (False, 350)]),
        ("congestion", "cn", [(True, 700), (False, 700)]),
        ("ringback", "uk", [(True, 400), (False, 200), (True, 400), (False, 2000)]),
        ("congestion", "uk", [(True, 400), (False, 350), (True, 225), (False, 525)]),
    ],
)
def test_cadences(kind, country, pattern):
    t = tone(kind, country)
    x = collect(ToneSource(t), 2 * t.cycle_samples // 160)
    runs = on_off_runs_ms(x)
    expected = pattern * 2
    assert [on for on, _ in runs] == [on for on, _ in expected]
    for (_, got), (_, want) in zip(runs, expected):
        assert abs(got - want) <= 10  # ramps blur the edges by a few ms


def test_phase_continuous_across_frames_and_cycles():
    t = tone("dial", "us")
    x = collect(ToneSource(t), 120).astype(np.float64)  # 2.4 s: crosses the 1 s table twice
    n = np.arange(x.size)
    amp = DBM0_AMPLITUDE * 10 ** (t.level_dbm0 / 20)
    ideal = amp * sum(np.sin(2 * np.pi * f * n / 8000) for f in t.frequencies_hz)
    assert np.max(np.abs(x - ideal)) <= 1.0  # one free-running oscillator, only rounding
    # No step between consecutive samples larger than the sine's own slope allows.
    max_step = 2 * np.pi * sum(t.frequencies_hz) / 8000 * np.max(np.abs(x)) / 2 * 1.1
    assert np.max(np.abs(np.diff(x))) <= max_step


def test_bursts_start_and_end_with_ramps():
    x = collect(ToneSource(tone("busy", "itu")), 50).astype(np.float64)
    # The first samples of a burst rise smoothly (no full-amplitude click).
    assert np.max(np.abs(x[:8])) < 0.3 * np.max(np.abs(x))


def test_duration_and_stop():
    src = ToneSource("busy", country="us", duration_ms=70)
    frames = []
    while (f := src.read()) is not None:
        frames.append(f.copy())
    assert len(frames) == 4 and src.finished
    assert np.all(frames[-1][80:] == 0)  # 70 ms = 3.5 frames
    src = ToneSource("ringback")
    src.read()
    src.stop()
    assert src.read() is None


def test_unknown_country_or_kind_and_bad_tones():
    with pytest.raises(LocalMediaError, match="no tone plan for country 'xx'"):
        tone("busy", "xx")
    with pytest.raises(LocalMediaError, match="unknown tone kind 'howler'"):
        tone("howler", "us")
    with pytest.raises(LocalMediaError, match="frequencies"):
        Tone("bad", (5000.0,), -10)
    with pytest.raises(LocalMediaError, match="cadence"):
        Tone("bad", (400.0,), -10, (100,))
    assert set(COUNTRIES) >= {"us", "itu", "uk", "cn"}
