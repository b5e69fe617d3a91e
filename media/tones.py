"""Call-progress tones (dial, ringback, busy, congestion) with national cadences.

Theory of operation
-------------------
A tone is a sum of sines (or one sine) switched on and off by a cadence, e.g.
North American ringback is 440 + 480 Hz, 2 s on, 4 s off (ANSI T1.401 /
Telcordia GR-506); the ITU-T E.180 Supplement 2 lists what each country uses.
Because the cadence repeats, one whole cadence cycle is rendered once per
tone into an int16 table (at most a few seconds, 2 bytes per sample), and
every leg playing that tone just reads 160-sample slices from it at its own
position: no per-frame synthesis, so a thousand legs hearing ringback cost a
thousand slice copies.

Phase continuity: each on-burst is a continuation of one free-running
oscillator (the sines are evaluated at the absolute sample index), so a
burst that spans frame boundaries has no discontinuity, and each burst
starts and ends with a 4 ms raised-cosine ramp so that switching on and off
does not click.  A continuous tone's table is a whole second, which holds an
integer number of cycles of every integer frequency, so the wrap is seamless.

Levels are per frequency in dBm0 (0 dBm0 = 3.17 dB below a full-scale
μ-law sine, see :data:`media.dtmf.DBM0_AMPLITUDE`).

Tables here: ``NORTH_AMERICA`` (also ``US``), ``ITU`` (the CEPT/E.180
recommended 425 Hz plan used across continental Europe), ``UK``, ``CHINA``
(YD/T 1277 / GB 3380: 450 Hz).  :func:`tone` looks one up by country and
kind.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import numpy.typing as npt

from media.dtmf import DBM0_AMPLITUDE
from media.errors import LocalMediaError

__all__ = ["Tone", "TONES", "tone", "ToneSource", "KINDS", "COUNTRIES"]

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
_RAMP_SAMPLES = 32  # 4 ms


@dataclasses.dataclass(frozen=True, slots=True)
class Tone:
    """A call-progress tone: frequencies, level and cadence."""

    name: str
    frequencies_hz: tuple[float, ...]
    level_dbm0: float
    cadence_ms: tuple[int, ...] = ()
    """Alternating on/off durations starting with on; empty = continuous."""

    def __post_init__(self) -> None:
        if not self.frequencies_hz or any(not 0 < f < SAMPLE_RATE / 2 for f in self.frequencies_hz):
            raise LocalMediaError(f"tone {self.name!r}: frequencies must be in (0, 4000) Hz")
        if len(self.cadence_ms) % 2 or any(d <= 0 for d in self.cadence_ms):
            raise LocalMediaError(f"tone {self.name!r}: cadence must be positive on/off pairs")

    @property
    def cycle_samples(self) -> int:
        """Length of one cadence cycle (a continuous tone: one second)."""
        if not self.cadence_ms:
            return SAMPLE_RATE
        return sum(self.cadence_ms) * SAMPLE_RATE // 1000


@functools.lru_cache(maxsize=64)
def render_cycle(t: Tone) -> npt.NDArray[np.int16]:
    """One whole cadence cycle of ``t`` as int16 (read-only, cached)."""
    n = t.cycle_samples
    idx = np.arange(n)
    amp = DBM0_AMPLITUDE * 10 ** (t.level_dbm0 / 20)
    wave = sum(amp * np.sin(2 * np.pi * f * idx / SAMPLE_RATE) for f in t.frequencies_hz)
    if t.cadence_ms:
        gate = np.zeros(n)
        pos = 0
        for i, ms in enumerate(t.cadence_ms):
            length = ms * SAMPLE_RATE // 1000
            if i % 2 == 0:
                burst = np.ones(length)
                r = min(_RAMP_SAMPLES, length // 2)
                ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
                burst[:r] = ramp
                burst[length - r :] = ramp[::-1]
                gate[pos : pos + length] = burst
            pos += length
        wave = wave * gate
    out = np.clip(np.rint(wave), -32768, 32767).astype(np.int16)
    out.setflags(write=False)
    return out


KINDS = ("dial", "ringback", "busy", "congestion")


def _plan(dial: Tone, ringback: Tone, busy: Tone, congestion: Tone) -> dict[str, Tone]:
    return {"dial": dial, "ringback": ringback, "busy": busy, "congestion": congestion}


# ANSI T1.401 / Telcordia precise tone plan.
NORTH_AMERICA = _plan(
    Tone("us-dial", (350.0, 440.0), -13.0),
    Tone("us-ringback", (440.0, 480.0), -19.0, (2000, 4000)),
    Tone("us-busy", (480.0, 620.0), -24.0, (500, 500)),
    Tone("us-congestion", (480.0, 620.0), -24.0, (250, 250)),  # "reorder"
)
# ITU-T E.180 Supplement 2 / CEPT recommendation: 425 Hz.
ITU = _plan(
    Tone("itu-dial", (425.0,), -10.0),
    Tone("itu-ringback", (425.0,), -10.0, (1000, 4000)),
    Tone("itu-busy", (425.0,), -10.0, (500, 500)),
    Tone("itu-congestion", (425.0,), -10.0, (250, 250)),
)
# BT SIN 350.
UK = _plan(
    Tone("uk-dial", (350.0, 440.0), -13.0),
    Tone("uk-ringback", (400.0, 450.0), -13.0, (400, 200, 400, 2000)),
    Tone("uk-busy", (400.0,), -13.0, (375, 375)),
    Tone("uk-congestion", (400.0,), -13.0, (400, 350, 225, 525)),
)
# China, YD/T 1277 (GB 3380): 450 Hz.
CHINA = _plan(
    Tone("cn-dial", (450.0,), -10.0),
    Tone("cn-ringback", (450.0,), -10.0, (1000, 4000)),
    Tone("cn-busy", (450.0,), -10.0, (350, 350)),
    Tone("cn-congestion", (450.0,), -10.0, (700, 700)),
)

#: country code -> kind -> Tone.  ``us``/``ca`` = North America, ``eu``/``de``/``fr``/... = ITU.
TONES: dict[str, dict[str, Tone]] = {
    "us": NORTH_AMERICA,
    "ca": NORTH_AMERICA,
    "itu": ITU,
    "eu": ITU,
    "de": ITU,
    "fr": ITU,
    "it": ITU,
    "es": ITU,
    "nl": ITU,
    "uk": UK,
    "gb": UK,
    "cn": CHINA,
}
COUNTRIES = tuple(TONES)


def tone(kind: str, country: str = "us") -> Tone:
    """The ``kind`` tone (dial, ringback, busy, congestion) of ``country``.

    Raises:
        LocalMediaError: unknown kind or country (the message lists the known ones).
    """
    plan = TONES.get(country.lower())
    if plan is None:
        raise LocalMediaError(f"no tone plan for country {country!r}; known: {', '.join(COUNTRIES)}")
    if kind not in plan:
        raise LocalMediaError(f"unknown tone kind {kind!r}; known: {', '.join(KINDS)}")
    return plan[kind]


class ToneSource:
    """Frames of a tone, from the start of its cadence, for ever or ``duration_ms``.

    ``read()`` returns the next 160-sample int16 frame, or ``None`` once
    finished (after ``duration_ms``, or :meth:`stop`).
    """

    def __init__(self, t: Tone | str, *, country: str = "us", duration_ms: float | None = None) -> None:
        self.tone = tone(t, country) if isinstance(t, str) else t
        self._table = render_cycle(self.tone)
        self._pos = 0
        self._left = None if duration_ms is None else int(duration_ms * SAMPLE_RATE / 1000)
        self._frame = np.empty(FRAME_SAMPLES, np.int16)
        self.finished = False

    def read(self) -> npt.NDArray[np.int16] | None:
        """The next frame (owned by the source, valid until the next read), or ``None``."""
        if self.finished:
            return None
        n = self._table.size
        end = self._pos + FRAME_SAMPLES
        if end <= n:
            self._frame[:] = self._table[self._pos : end]
        else:  # wrap within the frame
            first = n - self._pos
            self._frame[:first] = self._table[self._pos :]
            self._frame[first:] = self._table[: FRAME_SAMPLES - first]
        self._pos = end % n
        if self._left is not None:
            if self._left < FRAME_SAMPLES:
                self._frame[self._left :] = 0
            self._left -= FRAME_SAMPLES
            if self._left <= 0:
                self.finished = True
        return self._frame

    def stop(self) -> None:
        """Finish now (barge-in)."""
        self.finished = True
