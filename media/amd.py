"""Answering-machine detection on the first seconds of an answered call, sans-IO.

Theory of operation
-------------------
A person answers with a short word ("Hello?", "Yes?") and then waits for
the caller; an answering machine plays a long, continuous greeting
("Hi, you have reached ... please leave a message after the tone").  The
detector classifies from that cadence alone, on 8 kHz int16 frames of 20 ms
(160 samples) fed in order with :meth:`AmdDetector.feed`:

1. Voice activity per frame: the frame energy in dBFS against an adaptive
   noise floor (the quietest recent frames, tracked with a slow rise and a
   fast fall).  A frame is voiced when it is ``voice_margin_db`` above the
   floor and above ``min_voice_dbfs``; a short hangover (``word_gap_ms``)
   bridges the gaps between syllables.
2. Words are voiced runs of at least ``min_word_ms``; the *greeting* is the
   time from the first word's start to the end of the last word before a
   silence of ``after_greeting_silence_ms``.
3. Decisions (the first that applies wins):

   * ``machine``: the greeting has lasted ``greeting_ms`` (long continuous
     speech), or more than ``max_words`` words before a pause;
   * ``human``: after a greeting shorter than ``greeting_ms`` the line is
     silent for ``after_greeting_silence_ms`` (the person waits for us);
   * ``silence``: nothing voiced for ``initial_silence_ms`` (dead air: some
     machines, or a person who does not speak first);
   * ``not_sure``: ``total_analysis_ms`` elapsed without a decision.

   Callers treat ``silence`` and ``not_sure`` as a person (a false
   ``machine`` hangs up on a customer and counts as a dropped call).

The defaults were tuned on espeak-ng speech; the measured accuracy is in
docs/outbound.md and asserted in ``tests/media/test_amd.py``.  The module
reads no clock: time is the number of frames fed.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

FRAME_SAMPLES = 160      # 20 ms at 8 kHz
FRAME_MS = 20
_FULL_SCALE = 32768.0


class AmdResult(enum.Enum):
    HUMAN = "human"
    MACHINE = "machine"
    SILENCE = "silence"
    NOT_SURE = "not_sure"


@dataclass(frozen=True, slots=True)
class AmdSettings:
    """Cadence thresholds (milliseconds, dB)."""

    initial_silence_ms: int = 3500
    greeting_ms: int = 1800
    after_greeting_silence_ms: int = 700
    total_analysis_ms: int = 5000
    min_word_ms: int = 100
    word_gap_ms: int = 120
    max_words: int = 4
    voice_margin_db: float = 12.0
    min_voice_dbfs: float = -50.0


@dataclass(frozen=True, slots=True)
class AmdDecision:
    """The verdict and the measurements behind it."""

    result: AmdResult
    reason: str
    decided_ms: int
    greeting_ms: int
    words: int

    def describe(self) -> dict[str, object]:
        return {"result": self.result.value, "reason": self.reason, "decided_ms": self.decided_ms,
                "greeting_ms": self.greeting_ms, "words": self.words}


def frame_dbfs(frames: np.ndarray) -> np.ndarray:
    """Energy of each row of int16 ``frames`` (shape ``(n, 160)``) in dBFS."""
    x = frames.astype(np.float64) / _FULL_SCALE
    rms = np.sqrt(np.mean(x * x, axis=-1))
    return 20.0 * np.log10(np.maximum(rms, 1e-6))


class AmdDetector:
    """One call's detector: :meth:`feed` frames until :attr:`decision` is set."""

    def __init__(self, settings: AmdSettings | None = None) -> None:
        self.settings = settings or AmdSettings()
        self.decision: AmdDecision | None = None
        self._ms = 0
        self._floor_db = -70.0
        self._voiced_run_ms = 0      # current voiced run (with hangover)
        self._silence_ms = 0         # current silence since the last voiced frame
        self._words = 0
        self._greeting_start_ms: int | None = None
        self._last_voice_ms = 0
        self._in_word = False
        self._pending: np.ndarray = np.zeros(0, np.int16)

    def feed(self, samples: np.ndarray) -> AmdDecision | None:
        """Add 8 kHz int16 samples (any length; 20 ms frames are cut inside).

        Returns the decision once made (and every call after that); ``None``
        while undecided.
        """
        if self.decision is not None:
            return self.decision
        data = np.concatenate((self._pending, np.asarray(samples, dtype=np.int16).ravel()))
        n = len(data) // FRAME_SAMPLES
        self._pending = data[n * FRAME_SAMPLES:]
        if n == 0:
            return None
        for db in frame_dbfs(data[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)):
            self._frame(float(db))
            if self.decision is not None:
                break
        return self.decision

    def _decide(self, result: AmdResult, reason: str) -> None:
        greeting = (self._last_voice_ms - self._greeting_start_ms) if self._greeting_start_ms is not None else 0
        self.decision = AmdDecision(result=result, reason=reason, decided_ms=self._ms, greeting_ms=greeting,
                                    words=self._words)

    def _frame(self, db: float) -> None:
        s = self.settings
        self._ms += FRAME_MS
        voiced = db >= max(self._floor_db + s.voice_margin_db, s.min_voice_dbfs)
        # Noise floor: falls at once to quieter frames, rises slowly (0.5 dB per frame) on unvoiced ones.
        if db < self._floor_db:
            self._floor_db = db
        elif not voiced:
            self._floor_db = min(db, self._floor_db + 0.5)
        if voiced:
            self._silence_ms = 0
            self._voiced_run_ms += FRAME_MS
            self._last_voice_ms = self._ms
            if not self._in_word and self._voiced_run_ms >= s.min_word_ms:
                self._in_word = True
                self._words += 1
                if self._greeting_start_ms is None:
                    self._greeting_start_ms = self._ms - self._voiced_run_ms
        else:
            self._silence_ms += FRAME_MS
            if self._silence_ms > s.word_gap_ms:
                self._voiced_run_ms = 0
                self._in_word = False
        if self._greeting_start_ms is not None:
            if self._last_voice_ms - self._greeting_start_ms >= s.greeting_ms:
                self._decide(AmdResult.MACHINE, "long_greeting")
            elif self._words > s.max_words:
                self._decide(AmdResult.MACHINE, "max_words")
            elif self._silence_ms >= s.after_greeting_silence_ms:
                self._decide(AmdResult.HUMAN, "silence_after_greeting")
        elif self._ms >= s.initial_silence_ms:
            self._decide(AmdResult.SILENCE, "initial_silence")
        if self.decision is None and self._ms >= s.total_analysis_ms:
            self._decide(AmdResult.NOT_SURE, "max_analysis_time")


def classify(audio: np.ndarray, settings: AmdSettings | None = None) -> AmdDecision:
    """Run a detector over a whole recording (tests, offline tuning); pads with silence to decide."""
    det = AmdDetector(settings)
    det.feed(audio)
    if det.decision is None:
        s = det.settings
        det.feed(np.zeros(8 * (s.total_analysis_ms + FRAME_MS), np.int16))
    assert det.decision is not None
    return det.decision


__all__ = ["AmdDecision", "AmdDetector", "AmdResult", "AmdSettings", "FRAME_SAMPLES", "classify", "frame_dbfs"]
