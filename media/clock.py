"""The media clock: one 20 ms tick for every leg, locked to the wall clock.

Theory of operation
-------------------
Tick ``k`` is due at ``origin + k * ptime_s`` -- an absolute deadline computed
from the tick number, never "previous tick + 20 ms".  So a tick that runs late
(the event loop was busy) does not push the following ticks back: the next
deadline is still on the original grid and the lateness is compensated at
once instead of accumulating, and the RTP timestamps (``k * 160`` samples at
8 kHz) follow the wall clock without drift however long the run.

When the loop was stalled for more than one period, :meth:`MediaClock.due`
returns every tick that is owed, so the media engine runs them back to back
and no audio is lost; when more than ``max_catchup_ticks`` are owed (a stall
of, say, a second), the excess is skipped: the clock jumps forward on the grid
and the skipped ticks show in :attr:`MediaClock.skipped_ticks` (receivers see
a timestamp gap, which RFC 3550 receivers treat like loss).

Sans-IO: the clock never reads time; ``now`` comes from the caller
(``loop.time()`` in :mod:`media.engine`, floats in tests).
:class:`TickStats` keeps the recent tick durations and lateness for the
p99 figures of the load benchmark and the engine's statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from media.errors import LocalMediaError

__all__ = ["MediaClock", "TickStats", "PTIME_S", "SAMPLES_PER_TICK"]

PTIME_S = 0.020
CLOCK_RATE = 8000
SAMPLES_PER_TICK = 160


@dataclass(slots=True)
class MediaClock:
    """Absolute-deadline tick grid.

    Args:
        origin_s: time of tick 0 (usually ``loop.time()`` at start).
        ptime_s: tick period (RFC 3551 §4.2: 20 ms default packetisation).
        clock_rate: RTP clock rate in Hz; ``samples_per_tick`` follows.
        max_catchup_ticks: most ticks run back to back after a stall.
    """

    origin_s: float
    ptime_s: float = PTIME_S
    clock_rate: int = CLOCK_RATE
    max_catchup_ticks: int = 5
    tick: int = 0
    """Number of ticks run so far (the next tick to run has this index)."""
    late_ticks: int = 0
    """Ticks that started more than one period after their deadline."""
    skipped_ticks: int = 0
    """Ticks dropped because more than ``max_catchup_ticks`` were owed."""

    def __post_init__(self) -> None:
        if self.ptime_s <= 0 or self.max_catchup_ticks < 1:
            raise LocalMediaError(f"media clock needs ptime_s > 0 and max_catchup_ticks >= 1, got {self.ptime_s}, {self.max_catchup_ticks}")

    @property
    def samples_per_tick(self) -> int:
        """RTP timestamp units per tick (160 for 20 ms at 8 kHz)."""
        return int(round(self.ptime_s * self.clock_rate))

    def deadline(self, tick: int | None = None) -> float:
        """Absolute time at which ``tick`` (default: the next one) is due."""
        return self.origin_s + (self.tick if tick is None else tick) * self.ptime_s

    def timestamp(self, tick: int | None = None) -> int:
        """Media time of ``tick`` in samples (add a leg's random base, mod 2**32)."""
        return (self.tick if tick is None else tick) * self.samples_per_tick

    def due(self, now: float) -> list[int]:
        """The tick numbers to run now, oldest first, and advance past them.

        Returns an empty list when the next deadline is still ahead.  Ticks owed
        beyond ``max_catchup_ticks`` are skipped (counted, not run).
        """
        if now < self.deadline():
            return []
        owed = int(math.floor((now - self.origin_s) / self.ptime_s)) - self.tick + 1
        if owed > 1:
            self.late_ticks += 1
        if owed > self.max_catchup_ticks:
            skip = owed - self.max_catchup_ticks
            self.skipped_ticks += skip
            self.tick += skip
            owed = self.max_catchup_ticks
        ticks = list(range(self.tick, self.tick + owed))
        self.tick += owed
        return ticks

    def delay(self, now: float) -> float:
        """Seconds from ``now`` to the next deadline (0 when already due)."""
        return max(0.0, self.deadline() - now)


@dataclass(slots=True)
class TickStats:
    """Ring buffer of recent tick durations and start lateness, in seconds."""

    size: int = 3000
    durations: np.ndarray = field(init=False)
    lateness: np.ndarray = field(init=False)
    cpu: np.ndarray = field(init=False)
    """CPU time of the ticking thread per tick: unlike the wall-clock duration it
    does not grow when other processes take the core."""
    count: int = 0

    def __post_init__(self) -> None:
        self.durations = np.zeros(self.size, np.float64)
        self.lateness = np.zeros(self.size, np.float64)
        self.cpu = np.zeros(self.size, np.float64)

    def add(self, duration_s: float, lateness_s: float, cpu_s: float = 0.0) -> None:
        """Record one tick: how long it took, how late it started, its CPU time."""
        i = self.count % self.size
        self.durations[i] = duration_s
        self.lateness[i] = lateness_s
        self.cpu[i] = cpu_s
        self.count += 1

    def reset(self) -> None:
        """Forget every sample (e.g. after a warm-up)."""
        self.count = 0

    def _window(self, a: np.ndarray) -> np.ndarray:
        return a[: min(self.count, self.size)]

    def percentile_ms(self, q: float, which: str = "durations") -> float:
        """The ``q``-th percentile (0-100) of recent ``durations``, ``lateness`` or ``cpu``, in ms."""
        w = self._window(getattr(self, which))
        return float(np.percentile(w, q) * 1000.0) if len(w) else 0.0

    def max_ms(self, which: str = "durations") -> float:
        """The largest recent ``durations``, ``lateness`` or ``cpu`` value, in ms."""
        w = self._window(getattr(self, which))
        return float(w.max() * 1000.0) if len(w) else 0.0
