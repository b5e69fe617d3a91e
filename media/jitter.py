"""Adaptive jitter buffer for one RTP audio stream (sans-IO, ``now`` passed in).

Theory of operation
-------------------
Packets arrive when the network delivers them: late, early, twice, out of
order or never.  The media clock asks for exactly one 20 ms frame per leg per
tick.  The buffer sits between the two:

* :meth:`JitterBuffer.put` stores a decoded frame under its RTP timestamp,
  unwrapped to 64 bits (RFC 3550 §5.1: the timestamp wraps at 2**32), in a
  ring of ``capacity`` frame slots indexed by ``timestamp // frame_samples``.
  A payload holding several frames (ptime 40, 60 ms) is split.  A frame
  whose slot already holds that timestamp is a duplicate; a frame older than
  the playout point is late; both are dropped and counted.
* :meth:`JitterBuffer.get` returns the frame whose timestamp is the playout
  point and advances the point by one frame.  A missing frame is concealed:
  the last good frame repeated with a fading gain (``conceal_gains``), then
  comfort silence.  Before the first packet, and while buffering, it returns
  silence.

Depth.  ``ahead`` = (packet timestamp - playout point) at the packet's
arrival: how much earlier than needed it came.  The interarrival jitter ``J``
is estimated exactly as RFC 3550 §6.4.1 / A.8 (``J += (|D| - J) / 16``).  The
target margin is ``clamp(jitter_factor * J + late_boost, min_depth,
max_depth)``, where ``late_boost`` grows by half a frame on the first late
packet of an interval (which also inserts a frame at once) and shrinks by
half a frame after five intervals without one: a heavy-tailed delay
distribution then settles at about one late packet per few seconds.  Once per
``adapt_interval_s`` the smallest ``ahead`` seen in the interval is compared
with the target: more than a frame above it means we hold more delay than the
network needs, so one frame is dropped (the playout point skips a frame, the
quietest of the next two when available); more than a frame below it (or any
late packet) means a frame is inserted (one concealment frame without
advancing the playout point).  One step per interval keeps the changes
inaudible; the same mechanism absorbs sender clock drift, which shows up as
``ahead`` creeping up (fast sender) or down (slow sender): at the default 1 s
interval up to ±2 % drift (±20 ms per second) is tracked.

Jumps.  A packet further ahead than ``max_depth`` plus the ring size, or far
behind (a new talkspurt after silence suppression, an SSRC change, a
timestamp jump by the sender), re-synchronises: the buffer restarts with
that packet as the first one.  So does a marker bit (RFC 3551 §4.1, start
of a talkspurt) on a packet far ahead of or behind the playout point (a
sender whose timestamps did not run through its silence), and a run of
five late packets in a row (the stream moved back without a marker).

All state is per stream; a (capacity, 160) int16 ring holds the frames, so
there is no Python object per packet beyond the call.  The buffer never
reads a clock, never raises on bad input from the network (counted instead).
"""
from __future__ import annotations

import dataclasses
import enum
import logging

import numpy as np
import numpy.typing as npt

from media.errors import LocalMediaError

__all__ = ["JitterBuffer", "FrameKind", "JitterStats"]

logger = logging.getLogger(__name__)


#: This many late packets in a row re-synchronise the stream.
_LATE_RUN_RESYNC = 5


class FrameKind(enum.Enum):
    """What :meth:`JitterBuffer.get` returned."""

    PLAYED = "played"
    """A received frame, on time."""
    CONCEALED = "concealed"
    """A loss (or an inserted frame) filled from the last good frame."""
    SILENCE = "silence"
    """Nothing to play: not started, buffering, or after a long loss."""


@dataclasses.dataclass(slots=True)
class JitterStats:
    """Counters of one buffer (for RTCP and call-quality figures)."""

    received: int = 0
    played: int = 0
    concealed: int = 0
    silence: int = 0
    late: int = 0
    duplicate: int = 0
    dropped_for_depth: int = 0
    inserted_for_depth: int = 0
    resyncs: int = 0
    malformed: int = 0


class _State(enum.Enum):
    IDLE = "idle"  # no packet yet
    BUFFERING = "buffering"  # first packet seen, waiting for target depth
    PLAYING = "playing"


class JitterBuffer:
    """Adaptive jitter buffer for one stream; see the module docstring.

    Args:
        clock_rate: RTP clock rate (8000 for G.711).
        frame_samples: samples per output frame (160 = 20 ms).
        min_depth_ms / max_depth_ms: bounds of the target margin.
        initial_depth_ms: margin before the jitter estimate settles.
        capacity_frames: ring size; packets further ahead re-synchronise.
        jitter_factor: target margin = factor × RFC 3550 jitter.
        adapt_interval_s: one depth step at most per interval.
        conceal_gains: gains for 1st, 2nd, ... consecutive lost frames;
            beyond them comfort silence.
        call_id: for log lines.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        frame_samples: int = 160,
        min_depth_ms: float = 20.0,
        max_depth_ms: float = 300.0,
        initial_depth_ms: float = 40.0,
        capacity_frames: int = 64,
        jitter_factor: float = 4.0,
        adapt_interval_s: float = 1.0,
        conceal_gains: tuple[float, ...] = (0.9, 0.6, 0.35, 0.15),
        call_id: str = "",
    ) -> None:
        if frame_samples <= 0 or clock_rate <= 0 or capacity_frames < 4:
            raise LocalMediaError(
                f"JitterBuffer needs positive clock_rate/frame_samples and capacity_frames >= 4, got "
                f"{clock_rate}, {frame_samples}, {capacity_frames}"
            )
        ms = clock_rate / 1000.0
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self.min_depth = int(min_depth_ms * ms)
        self.max_depth = int(max_depth_ms * ms)
        if self.max_depth >= (capacity_frames - 2) * frame_samples:
            raise LocalMediaError(
                f"JitterBuffer max_depth_ms {max_depth_ms} does not fit {capacity_frames} frames"
            )
        self.initial_depth = int(initial_depth_ms * ms)
        self.capacity = capacity_frames
        self.jitter_factor = jitter_factor
        self.adapt_interval_s = adapt_interval_s
        self.conceal_gains = conceal_gains
        self.call_id = call_id
        self.stats = JitterStats()
        self._ring = np.zeros((capacity_frames, frame_samples), np.int16)
        # Timestamps of the ring's frames (-1 = empty): a list, because scalar
        # reads and writes of a Python list are ~5x cheaper than numpy scalars.
        self._ring_ts: list[int] = [-1] * capacity_frames
        self._silence = np.zeros(frame_samples, np.int16)
        self._last_good = np.zeros(frame_samples, np.int16)
        self._out = np.zeros(frame_samples, np.int16)
        self._reset_stream()
        self.jitter = 0.0  # RFC 3550 J, in timestamp units

    # ------------------------------------------------------------ internals

    def _reset_stream(self) -> None:
        self._state = _State.IDLE
        self._ext_ts: int | None = None  # last unwrapped timestamp seen
        self._playout = 0
        self._start_at = 0.0
        self._ring_ts[:] = [-1] * self.capacity
        self._losses = 0
        self._transit: float | None = None
        self._interval_end: float | None = None
        self._min_ahead: int | None = None
        self._pending_insert = False
        self._pending_drop = False
        self._late_boost = 0  # extra target margin learned from late packets
        self._late_run = 0  # consecutive late packets
        self._late_in_interval = 0
        self._quiet_intervals = 0

    def _unwrap(self, timestamp: int) -> int:
        timestamp &= 0xFFFFFFFF
        if self._ext_ts is None:
            return timestamp
        delta = (timestamp - self._ext_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        return self._ext_ts + delta

    @property
    def target_depth(self) -> int:
        """Current target margin in timestamp units."""
        base = max(self.min_depth, self.jitter_factor * self.jitter)
        return int(min(self.max_depth, base + self._late_boost))

    @property
    def depth_ms(self) -> float:
        """Buffered audio ahead of the playout point, in ms (0 when not playing)."""
        if self._state is _State.IDLE or self._ext_ts is None:
            return 0.0
        return max(0, self._ext_ts + self.frame_samples - self._playout) * 1000.0 / self.clock_rate

    # ------------------------------------------------------------ input

    def put(self, sequence_number: int, timestamp: int, pcm: npt.NDArray[np.int16], now: float,
            marker: bool = False) -> None:
        """Store one received packet's decoded audio.

        Args:
            sequence_number: RTP sequence number (kept for logs; ordering uses
                the timestamp, which also survives sequence resets).
            timestamp: RTP timestamp of the first sample.
            pcm: int16 samples, a multiple of ``frame_samples`` long.
            now: arrival time in seconds (any monotonic origin).
            marker: RTP marker bit (start of a talkspurt).
        """
        if not isinstance(pcm, np.ndarray):
            pcm = np.asarray(pcm)
        if pcm.dtype != np.int16 or pcm.ndim != 1 or pcm.size == 0 or pcm.size % self.frame_samples:
            self.stats.malformed += 1
            logger.debug("[%s] jitter: dropped payload of %s samples (seq %d)", self.call_id, pcm.shape,
                         sequence_number)
            return
        ts = self._unwrap(timestamp)
        if (self._state is _State.PLAYING and not marker and pcm.size == self.frame_samples
                and 0 <= ts - self._playout <= self.max_depth):
            # Fast path: one in-window frame while playing (almost every packet).
            self.stats.received += 1
            self._late_run = 0
            self._update_jitter(ts, now)
            if ts > self._ext_ts:  # type: ignore[operator]
                self._ext_ts = ts
            slot = (ts // self.frame_samples) % self.capacity
            if self._ring_ts[slot] == ts:
                self.stats.duplicate += 1
            else:
                self._ring[slot] = pcm
                self._ring_ts[slot] = ts
            ahead = ts - self._playout
            if self._min_ahead is None or ahead < self._min_ahead:
                self._min_ahead = ahead
            return
        if self._state is not _State.IDLE:
            ahead = ts - self._playout
            far_ahead = ahead > self.max_depth + self.capacity * self.frame_samples // 2
            far_behind = ahead < -self.capacity * self.frame_samples
            # A talkspurt that starts far from where the playout point expects
            # it (the sender's clock did not run through its silence, or jumped).
            gap_talkspurt = marker and (ahead > self.target_depth + 2 * self.frame_samples or ahead < 0)
            # Packets that keep arriving behind the playout point: the stream
            # moved back (e.g. a new sender after a re-INVITE without marker).
            stuck_late = ahead < 0 and self._late_run >= _LATE_RUN_RESYNC
            if far_ahead or far_behind or gap_talkspurt or stuck_late:
                logger.debug("[%s] jitter: resync at seq %d (ahead %d samples)", self.call_id,
                             sequence_number, ahead)
                self.stats.resyncs += 1
                jitter = self.jitter
                self._reset_stream()
                self.jitter = jitter
        self.stats.received += 1
        self._update_jitter(ts, now)
        if self._state is _State.IDLE:
            self._state = _State.BUFFERING
            self._playout = ts
            self._start_at = now + max(self.initial_depth, self.target_depth) / self.clock_rate
            self._interval_end = now + self.adapt_interval_s
        if self._ext_ts is None or ts > self._ext_ts:
            self._ext_ts = ts
        n_frames = pcm.size // self.frame_samples
        for k in range(n_frames):
            fts = ts + k * self.frame_samples
            if fts < self._playout:
                self._late_run += 1
                self.stats.late += 1
                if self._late_in_interval == 0:
                    self._pending_insert = True  # too shallow: grow now, once per interval
                    self._late_boost = min(self.max_depth, self._late_boost + self.frame_samples // 2)
                self._late_in_interval += 1
                continue
            self._late_run = 0
            slot = (fts // self.frame_samples) % self.capacity
            if self._ring_ts[slot] == fts:
                self.stats.duplicate += 1
                continue
            self._ring[slot] = pcm[k * self.frame_samples : (k + 1) * self.frame_samples]
            self._ring_ts[slot] = fts
        ahead = ts - self._playout
        if self._state is _State.PLAYING:
            self._min_ahead = ahead if self._min_ahead is None else min(self._min_ahead, ahead)

    def _update_jitter(self, ts: int, now: float) -> None:
        # RFC 3550 §A.8: transit = arrival - timestamp (both in timestamp units).
        transit = now * self.clock_rate - ts
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < self.capacity * self.frame_samples:  # ignore jumps (resyncs)
                self.jitter += (d - self.jitter) / 16.0
        self._transit = transit

    # ------------------------------------------------------------ output

    def get(self, now: float) -> tuple[npt.NDArray[np.int16], FrameKind]:
        """The next 20 ms frame to play, and what it is.

        The returned array is owned by the buffer and valid until the next
        call (copy it if you keep it); the media clock copies it into its
        batch anyway.
        """
        if self._state is _State.IDLE:
            self.stats.silence += 1
            return self._silence, FrameKind.SILENCE
        if self._state is _State.BUFFERING:
            if now + 1e-9 < self._start_at:
                self.stats.silence += 1
                return self._silence, FrameKind.SILENCE
            self._state = _State.PLAYING
            self._interval_end = now + self.adapt_interval_s
            self._min_ahead = None
        self._adapt(now)
        if self._pending_insert:
            self._pending_insert = False
            self.stats.inserted_for_depth += 1
            return self._conceal(advance=False)
        slot = (self._playout // self.frame_samples) % self.capacity
        if self._ring_ts[slot] != self._playout:
            return self._conceal(advance=True)
        if self._pending_drop:
            self._pending_drop = False
            nxt = (slot + 1) % self.capacity
            if self._ring_ts[nxt] == self._playout + self.frame_samples:
                # Drop the quieter of this frame and the next one; play the other.
                loud = lambda i: int(np.abs(self._ring[i].astype(np.int32)).sum())  # noqa: E731
                dropped, slot = (nxt, slot) if loud(nxt) < loud(slot) else (slot, nxt)
                self._ring_ts[dropped] = -1
                self._playout += self.frame_samples
                self.stats.dropped_for_depth += 1
            else:
                self._pending_drop = True  # try again at the next tick
        self._ring_ts[slot] = -1
        self._playout += self.frame_samples
        np.copyto(self._last_good, self._ring[slot])
        self._losses = 0
        self.stats.played += 1
        return self._last_good, FrameKind.PLAYED

    def _conceal(self, advance: bool) -> tuple[npt.NDArray[np.int16], FrameKind]:
        if advance:
            self._playout += self.frame_samples
        k = self._losses
        self._losses += 1
        if k >= len(self.conceal_gains):
            self.stats.silence += 1
            return self._silence, FrameKind.SILENCE
        # Fade smoothly from the previous gain to this one across the frame.
        g0 = 1.0 if k == 0 else self.conceal_gains[k - 1]
        g1 = self.conceal_gains[k]
        ramp = np.linspace(g0, g1, self.frame_samples)
        np.copyto(self._out, np.rint(self._last_good * ramp).astype(np.int16))
        self.stats.concealed += 1
        return self._out, FrameKind.CONCEALED

    def _adapt(self, now: float) -> None:
        if self._interval_end is None or now < self._interval_end:
            return
        self._interval_end = now + self.adapt_interval_s
        # The late boost decays by half a frame after 5 intervals without late packets.
        if self._late_in_interval:
            self._quiet_intervals = 0
        else:
            self._quiet_intervals += 1
            if self._quiet_intervals >= 5:
                self._quiet_intervals = 0
                self._late_boost = max(0, self._late_boost - self.frame_samples // 2)
        self._late_in_interval = 0
        if self._min_ahead is None:
            return
        # min_ahead counts from the playout point at arrival; the frame that
        # was needed next arrives with ahead == 0, so margin == min_ahead.
        margin, target = self._min_ahead, self.target_depth
        self._min_ahead = None
        if margin > target + self.frame_samples:
            self._pending_drop = True
        elif margin < target - self.frame_samples:
            self._pending_insert = True
