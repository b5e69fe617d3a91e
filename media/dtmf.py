"""DTMF: RFC 4733 telephone-events (receive and send) and an in-band detector.

Theory of operation
-------------------
**RFC 4733 receive** (:class:`Rfc4733Receiver`, one per leg, sans-IO).  An
event payload is 4 bytes (RFC 4733 §2.3)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    |     event     |E|R| volume    |          duration             |

All packets of one event carry the RTP timestamp of the event's start
(§2.5.1.2); ``duration`` grows in updates and the final value is repeated in
(normally three) packets with the E bit (§2.5.1.4).  We identify an event by
``(ssrc, timestamp, event)`` and report it exactly once, when the first end
packet arrives, with its final duration.  Redundant end packets and late
updates of an ended event are dropped by a short memory of ended keys.  An
event whose end packets were all lost is reported when another event starts
or when no packet arrives for ``end_timeout_s`` (``handle_timer``).  The RTP
sequence number is not used: SIPp replays its ``dtmf_2833_*.pcap`` files with
repeated sequence numbers in the end packets and sequence/timestamp jumps
between files, and may replay the same pcap twice (same timestamp, same
event): a packet with the marker bit (§2.5.1.2: "the first packet of an
event") or arriving more than ``replay_gap_s`` after the end starts a new
event even when its key was seen before.  Long events split into segments
(§2.5.1.3, duration overflow past 0xFFFF) are joined into one report.

**RFC 4733 send** (:func:`rfc4733_packets`): the payload sequence for one
digit: a first packet with the marker bit and duration 0 ... updates every
packetisation interval with the cumulative duration, then three identical end
packets (§2.5.1.4 recommends three).  All carry the same RTP timestamp (the
caller stamps the event start); durations are in timestamp units.

**In-band detection** (:class:`DtmfDetector`, batched over legs).  Each 20 ms
tick gives a ``(n_legs, 160)`` int16 batch.  For every leg we analyse two
160-sample (20 ms) Hann-windowed blocks per frame, hopping 10 ms (the second
half of the previous frame plus the first half of this one, then this frame),
so a tone is seen by at least two whole blocks once it lasts ~30 ms.  Each
block's spectrum is evaluated only at the 8 DTMF frequencies and the second
harmonics of the high group: single DFT bins, i.e. what a Goertzel filter
computes, but obtained for all legs at once as one real float32 matrix
product ``blocks @ [w·cos | -w·sin]`` (BLAS GEMM) instead of a per-sample
recursion.  A block is a
*hit* for digit ``d`` when, in the spirit of ITU-T Q.24:

* each tone's level is at least ``min_level_dbm0`` (default -30 dBm0);
* twist: the high tone is no more than ``normal_twist_db`` (8 dB) below the
  low tone and no more than ``reverse_twist_db`` (4 dB) above it;
* in each group the chosen tone is at least ``group_margin_db`` (8 dB) above
  the other tones of that group;
* frequency deviation: the tone frequency, measured from the phase advance of
  the DFT bin between two blocks 80 samples apart, is within
  ``max_deviation`` (2.5 %) of nominal -- Q.24 wants ±1.5 % accepted and
  ±3.5 % rejected;
* energy ratio: the two tones hold at least ``min_tone_energy_ratio`` (0.75)
  of the block's energy (speech spreads energy over many frequencies);
* second harmonic of the high tone at least ``harmonic_margin_db`` (12 dB)
  below it (a tone generator has none; voiced speech has many).

A digit starts after ``hits_to_start`` (2) consecutive hit blocks for the
same digit (≈ 30-40 ms: tones of 40 ms are accepted, 20 ms ones rejected) and
ends after ``misses_to_end`` (3) blocks without it (the inter-digit pause, ≈
30 ms; a shorter drop-out inside a tone does not split it).  The digit is
reported once, at its end, with its duration.  Per-leg state lives in numpy
arrays indexed by a leg slot, so the whole batch is evaluated without Python
work per leg except for the (rare) state changes.

What this module does not know: RTP headers and sockets (``media.rtp`` gives
us ``timestamp``/``marker``/``ssrc``), which legs exist (the caller maps leg
ids to slots), what the digits mean.
"""
from __future__ import annotations

import dataclasses
import logging
import struct
from collections import deque
from typing import Iterator

import numpy as np
import numpy.typing as npt

from media.errors import LocalMediaError, RemoteMediaError

__all__ = [
    "DIGITS",
    "EVENT_CODES",
    "DtmfDigit",
    "Rfc4733Event",
    "Rfc4733Receiver",
    "parse_event",
    "build_event",
    "rfc4733_packets",
    "DtmfDetector",
    "DetectorConfig",
    "dtmf_tone",
    "FREQUENCIES",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160

# RFC 4733 §3.2 table 3: events 0-9, * = 10, # = 11, A-D = 12-15.
DIGITS = "0123456789*#ABCD"
EVENT_CODES = {d: i for i, d in enumerate(DIGITS)}

# Q.23 keypad: low group rows, high group columns.
LOW_HZ = (697.0, 770.0, 852.0, 941.0)
HIGH_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
#: digit -> (low Hz, high Hz)
FREQUENCIES = {
    _KEYPAD[r][c]: (LOW_HZ[r], HIGH_HZ[c]) for r in range(4) for c in range(4)
}


@dataclasses.dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A digit received, reported once."""

    digit: str
    """One of ``0123456789*#ABCD``."""
    duration_ms: float
    """How long the key was held."""
    source: str
    """``"rfc4733"`` or ``"inband"``."""
    leg: int = -1
    """In-band: the detector slot it was heard on; RFC 4733: -1."""


# --------------------------------------------------------------------------
# RFC 4733 wire format

_EVENT = struct.Struct("!BBH")


@dataclasses.dataclass(frozen=True, slots=True)
class Rfc4733Event:
    """One telephone-event payload (RFC 4733 §2.3)."""

    event: int
    """Event code 0-255 (0-15 are DTMF)."""
    end: bool
    """The E bit: this is (a copy of) the last packet of the event."""
    volume: int
    """Power level in -dBm0, 0-63 (§2.3.4)."""
    duration: int
    """Duration so far in RTP timestamp units, 0-65535."""

    @classmethod
    def parse(cls, data: bytes) -> "Rfc4733Event":
        """Parse a telephone-event payload (RFC 4733 §2.3).

        The payload is 4 bytes; a longer one (several events in one packet,
        §2.5.1.5 with redundancy) is read for its first event.

        Raises:
            RemoteMediaError: fewer than 4 bytes.
        """
        if len(data) < 4:
            raise RemoteMediaError(f"RFC 4733 event payload is {len(data)} bytes, needs 4")
        event, flags, duration = _EVENT.unpack_from(data)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def __bytes__(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration)

    @property
    def digit(self) -> str | None:
        """The DTMF digit for events 0-15, else ``None``."""
        return DIGITS[self.event] if self.event < 16 else None


def parse_event(data: bytes) -> Rfc4733Event:
    """Shorthand for :meth:`Rfc4733Event.parse`."""
    return Rfc4733Event.parse(data)


def build_event(digit: str, duration: int, end: bool = False, volume: int = 10) -> bytes:
    """Payload bytes for ``digit`` (raises :class:`LocalMediaError` for a non-DTMF digit)."""
    return bytes(Rfc4733Event(_event_code(digit), end, volume, duration))


def _event_code(digit: str) -> int:
    try:
        return EVENT_CODES[digit.upper()]
    except (KeyError, AttributeError):
        raise LocalMediaError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)") from None


def rfc4733_packets(
    digit: str,
    duration_ms: float = 100.0,
    volume: int = 10,
    ptime_ms: float = 20.0,
    clock_rate: int = SAMPLE_RATE,
    end_packets: int = 3,
) -> list[tuple[bytes, bool]]:
    """The ``(payload, marker)`` sequence to send one digit (RFC 4733 §2.5.1).

    The first packet has the marker bit and duration 0 (§2.5.1.2), then one
    update per ``ptime_ms`` with the cumulative duration, then
    ``end_packets`` identical packets with the E bit and the final duration
    (§2.5.1.4).  Send one per ``ptime_ms``, the end packets may go
    back-to-back, all with the RTP timestamp of the event start.  Durations
    are in ``clock_rate`` timestamp units, capped at 0xFFFF (≈ 8 s at 8 kHz).

    Raises:
        LocalMediaError: not a DTMF digit, or non-positive duration/ptime.
    """
    code = _event_code(digit)
    if duration_ms <= 0 or ptime_ms <= 0 or end_packets < 1:
        raise LocalMediaError(
            f"rfc4733_packets needs positive duration_ms, ptime_ms and end_packets, got "
            f"{duration_ms}, {ptime_ms}, {end_packets}"
        )
    if not 0 <= volume <= 63:
        raise LocalMediaError(f"RFC 4733 volume is 0-63 (-dBm0), got {volume}")
    step = int(round(ptime_ms * clock_rate / 1000))
    total = min(int(round(duration_ms * clock_rate / 1000)), 0xFFFF)
    packets = [(bytes(Rfc4733Event(code, False, volume, 0)), True)]
    duration = step
    while duration < total:
        packets.append((bytes(Rfc4733Event(code, False, volume, duration)), False))
        duration += step
    end = bytes(Rfc4733Event(code, True, volume, total))
    packets.extend((end, False) for _ in range(end_packets))
    return packets


class Rfc4733Receiver:
    """Turns one leg's telephone-event packets into digits, each reported once.

    Sans-IO: feed every telephone-event payload with its RTP header fields and
    ``now``; collect :class:`DtmfDigit` from the return value of
    :meth:`receive` and :meth:`handle_timer` (call it at :meth:`get_timer`).
    """

    def __init__(
        self,
        clock_rate: int = SAMPLE_RATE,
        end_timeout_s: float = 0.5,
        replay_gap_s: float = 0.25,
        call_id: str = "",
    ) -> None:
        self.clock_rate = clock_rate
        self.end_timeout_s = end_timeout_s
        self.replay_gap_s = replay_gap_s
        self._call_id = call_id
        # The event in progress: key, digit, duration units, last arrival,
        # plus accumulated duration of earlier segments (§2.5.1.3).
        self._active: tuple[int, int, int] | None = None
        self._active_duration = 0
        self._active_base = 0
        self._active_last = 0.0
        # Ended keys -> (final duration, end time), for duplicate suppression.
        self._ended: dict[tuple[int, int, int], tuple[int, float]] = {}
        self._ended_order: deque[tuple[int, int, int]] = deque()
        self.duplicates_dropped = 0
        self.malformed_dropped = 0

    def receive(
        self, payload: bytes, timestamp: int, marker: bool, ssrc: int, now: float
    ) -> list[DtmfDigit]:
        """Process one telephone-event payload.

        Returns:
            Digits completed by this packet (usually empty or one).  A bad
            payload is counted in ``malformed_dropped`` and ignored: it never
            raises to the media loop.
        """
        try:
            ev = Rfc4733Event.parse(payload)
        except RemoteMediaError as exc:
            self.malformed_dropped += 1
            logger.debug("[%s] dropped telephone-event: %s", self._call_id, exc)
            return []
        return self.receive_event(ev.event, ev.end, ev.duration, timestamp, marker, ssrc, now)

    def receive_event(
        self, event: int, end: bool, duration: int, timestamp: int, marker: bool, ssrc: int, now: float
    ) -> list[DtmfDigit]:
        """Process one telephone-event already split into its fields (§2.3).

        What :meth:`receive` does after parsing the payload; the media engine
        calls it with fields read for a whole batch of packets at once, so no
        payload ``bytes`` or :class:`Rfc4733Event` is made per packet.
        ``event`` is the event code, ``end`` the E bit, ``duration`` in
        timestamp units.  Same semantics and return value as :meth:`receive`.
        """
        if event >= 16:
            return []  # non-DTMF events (tones, line events) are not digits
        key = (ssrc, timestamp & 0xFFFFFFFF, event)
        out: list[DtmfDigit] = []
        ended = self._ended.get(key)
        if ended is not None:
            _final_duration, ended_at = ended
            replay = marker or (now - ended_at > self.replay_gap_s and not end)
            if not replay:
                self.duplicates_dropped += 1
                return out
            self._forget(key)
        if self._active != key:
            if self._active is not None and self._continues(key):
                # RFC 4733 §2.5.1.3: a long event continues with a new timestamp.
                self._active_base += self._active_duration
            elif self._active is not None:
                out.extend(self._finish(now))  # its end packets were lost
            self._active = key
            self._active_duration = 0
        # Durations only grow, except that the end packet's value is final.
        self._active_duration = duration if end else max(duration, self._active_duration)
        self._active_last = now
        if end:
            out.extend(self._finish(now))
        return out

    def _continues(self, key: tuple[int, int, int]) -> bool:
        assert self._active is not None
        a_ssrc, a_ts, a_event = self._active
        if key[0] != a_ssrc or key[2] != a_event:
            return False
        expected = (a_ts + self._active_duration) & 0xFFFFFFFF
        # Segments start where the previous one's (0xFFFF-capped) duration ended.
        return self._active_duration >= 0xFFFF - self.clock_rate // 10 and abs(key[1] - expected) <= self.clock_rate // 10

    def _finish(self, now: float) -> list[DtmfDigit]:
        assert self._active is not None
        key = self._active
        total = self._active_base + self._active_duration
        self._active = None
        self._active_base = 0
        self._active_duration = 0
        self._ended[key] = (total, now)
        self._ended_order.append(key)
        while len(self._ended_order) > 16:
            self._ended.pop(self._ended_order.popleft(), None)
        digit = DIGITS[key[2]]
        duration_ms = total * 1000.0 / self.clock_rate
        logger.debug("[%s] RFC 4733 digit %s %.0f ms", self._call_id, digit, duration_ms)
        return [DtmfDigit(digit, duration_ms, "rfc4733")]

    def _forget(self, key: tuple[int, int, int]) -> None:
        self._ended.pop(key, None)
        try:
            self._ended_order.remove(key)
        except ValueError:
            pass

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run (an event whose end may be lost), else ``None``."""
        if self._active is None:
            return None
        return self._active_last + self.end_timeout_s

    def handle_timer(self, now: float) -> list[DtmfDigit]:
        """Report an event whose end packets never came, once its timer expired."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return []
        return self._finish(now)


# --------------------------------------------------------------------------
# Tone generation (tests, and in-band sending towards legacy gateways)

#: 0 dBm0 sine amplitude on the int16 scale: the μ-law full-scale sine is
#: +3.17 dBm0 (G.711 table 5), so 0 dBm0 is 3.17 dB below 32767.
DBM0_AMPLITUDE = 32767 * 10 ** (-3.17 / 20)


def dtmf_tone(
    digit: str,
    duration_ms: float,
    level_dbm0: float = -10.0,
    twist_db: float = 0.0,
    deviation: float = 0.0,
    sample_rate: int = SAMPLE_RATE,
    phase: float = 0.0,
) -> npt.NDArray[np.float64]:
    """A DTMF tone pair as float samples on the int16 scale.

    Args:
        digit: the key.
        duration_ms: length.
        level_dbm0: level of each tone.
        twist_db: high tone level minus low tone level (positive = reverse twist).
        deviation: relative frequency offset applied to both tones (0.02 = +2 %).
    """
    code = _event_code(digit)
    low, high = FREQUENCIES[DIGITS[code]]
    n = int(round(duration_ms * sample_rate / 1000))
    t = np.arange(n) / sample_rate
    a_low = DBM0_AMPLITUDE * 10 ** (level_dbm0 / 20)
    a_high = a_low * 10 ** (twist_db / 20)
    f = 1.0 + deviation
    return a_low * np.sin(2 * np.pi * low * f * t + phase) + a_high * np.sin(2 * np.pi * high * f * t + phase)


# --------------------------------------------------------------------------
# In-band detector


@dataclasses.dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds of :class:`DtmfDetector` (ITU-T Q.24-style; see module doc)."""

    min_level_dbm0: float = -30.0
    normal_twist_db: float = 8.0
    reverse_twist_db: float = 4.0
    group_margin_db: float = 8.0
    max_deviation: float = 0.025
    min_tone_energy_ratio: float = 0.75
    harmonic_margin_db: float = 12.0
    hits_to_start: int = 2
    misses_to_end: int = 3


_BLOCK = 160
_HOP = 80
_ANALYSIS_HZ = np.array(LOW_HZ + HIGH_HZ + tuple(2 * h for h in HIGH_HZ))
_N_BINS = _ANALYSIS_HZ.size  # 8 tones + 4 second harmonics
_WINDOW = np.hanning(_BLOCK + 2)[1:-1]  # strictly positive taps
_n = np.arange(_BLOCK)
# Single-bin DFT basis as one real matrix: columns 0-11 are window*cos, 12-23
# window*sin, so a whole batch is one float32 GEMM (a complex GEMM costs 3-4x more).
_phase = 2 * np.pi * _ANALYSIS_HZ[None, :] * _n[:, None] / SAMPLE_RATE
_BASIS = np.ascontiguousarray(
    np.concatenate([_WINDOW[:, None] * np.cos(_phase), -_WINDOW[:, None] * np.sin(_phase)], axis=1), np.float32
)
# |X|^2 of a sine of amplitude A at a bin centre is (A * sum(w) / 2)^2; its
# power is A^2 / 2.  So power = 2 |X|^2 / sum(w)^2.
_POWER_SCALE = 2.0 / _WINDOW.sum() ** 2
_ENERGY_SCALE = 1.0 / (_WINDOW**2).sum()  # windowed mean power
_W2 = (_WINDOW**2).astype(np.float32)
# Phase a bin at the nominal frequency turns through in one hop.
_ROT = np.exp(-2j * np.pi * np.array(LOW_HZ + HIGH_HZ) * _HOP / SAMPLE_RATE)
_DIGIT_OF = np.array([[EVENT_CODES[_KEYPAD[r][c]] for c in range(4)] for r in range(4)], np.int8)
del _n, _phase
# Rows per GEMM call.  A (2000 x 160) @ (160 x 24) product is large enough for
# OpenBLAS to fan out to its thread pool, and on a loaded 2-core machine
# waking those threads costs milliseconds (measured: 7 ms vs 0.3 ms); 64-row
# products stay under its multithreading threshold (m*n*k < 262,144) and run
# on the calling thread, so the media clock never waits for another core.
_GEMM_ROWS = 64


def _project(blocks: np.ndarray) -> np.ndarray:
    out = np.empty((blocks.shape[0], _BASIS.shape[1]), np.float32)
    for i in range(0, blocks.shape[0], _GEMM_ROWS):
        np.matmul(blocks[i : i + _GEMM_ROWS], _BASIS, out=out[i : i + _GEMM_ROWS])
    return out


class DtmfDetector:
    """In-band DTMF detector for many legs at once.

    ``process(frames)`` takes a ``(n, 160)`` int16 batch, row ``i`` belonging
    to slot ``slots[i]`` (default ``0..n-1``), and returns the digits that
    ended in this frame.  Slots are small integers the caller assigns to
    legs; :meth:`reset` clears a slot when a leg leaves.
    """

    def __init__(self, max_slots: int, config: DetectorConfig | None = None) -> None:
        if max_slots < 1:
            raise LocalMediaError(f"DtmfDetector needs max_slots >= 1, got {max_slots}")
        self.config = config or DetectorConfig()
        self.max_slots = max_slots
        c = self.config
        self._min_power = (DBM0_AMPLITUDE * 10 ** (c.min_level_dbm0 / 20)) ** 2 / 2
        self._normal_twist = 10 ** (-c.normal_twist_db / 10)
        self._reverse_twist = 10 ** (c.reverse_twist_db / 10)
        self._group_margin = 10 ** (c.group_margin_db / 10)
        self._harmonic_margin = 10 ** (-c.harmonic_margin_db / 10)
        # Per-slot state arrays.
        self._tail = np.zeros((max_slots, _HOP), np.float32)  # last 80 samples
        self._prev_bins = np.zeros((max_slots, 8), np.complex64)  # last block's tone bins
        self._candidate = np.full(max_slots, -1, np.int8)  # digit being confirmed
        self._hits = np.zeros(max_slots, np.int32)  # consecutive hits of candidate
        self._active = np.full(max_slots, -1, np.int8)  # digit currently held
        self._active_blocks = np.zeros(max_slots, np.int32)
        self._misses = np.zeros(max_slots, np.int32)

    def grow(self, max_slots: int) -> None:
        """Raise the slot capacity to ``max_slots``, keeping every slot's state."""
        if max_slots <= self.max_slots:
            return
        extra = max_slots - self.max_slots
        pad = lambda a, fill: np.concatenate([a, np.full((extra,) + a.shape[1:], fill, a.dtype)])  # noqa: E731
        self._tail = pad(self._tail, 0)
        self._prev_bins = pad(self._prev_bins, 0)
        self._candidate = pad(self._candidate, -1)
        self._hits = pad(self._hits, 0)
        self._active = pad(self._active, -1)
        self._active_blocks = pad(self._active_blocks, 0)
        self._misses = pad(self._misses, 0)
        self.max_slots = max_slots

    def reset(self, slot: int) -> None:
        """Forget everything about ``slot`` (a leg left or a new one took it)."""
        self._tail[slot] = 0
        self._prev_bins[slot] = 0
        self._candidate[slot] = -1
        self._hits[slot] = 0
        self._active[slot] = -1
        self._active_blocks[slot] = 0
        self._misses[slot] = 0

    def process(self, frames: npt.NDArray[np.int16], slots: npt.ArrayLike | None = None) -> list[DtmfDigit]:
        """Analyse one 20 ms frame per slot.

        Args:
            frames: ``(n, 160)`` int16.
            slots: ``(n,)`` distinct slot numbers < ``max_slots``; default ``0..n-1``.

        Returns:
            Digits that ended in this frame, each with its slot in ``leg``.

        Raises:
            LocalMediaError: wrong dtype/shape or slot out of range.
        """
        if not isinstance(frames, np.ndarray) or frames.dtype != np.int16 or frames.ndim != 2 or frames.shape[1] != _BLOCK:
            raise LocalMediaError(
                f"DtmfDetector.process expects int16 frames of shape (n, {_BLOCK}), got "
                f"{getattr(frames, 'dtype', type(frames).__name__)} {getattr(frames, 'shape', '')}"
            )
        n = frames.shape[0]
        if slots is None:
            if n > self.max_slots:
                raise LocalMediaError(f"DtmfDetector got {n} frames for {self.max_slots} slots")
            idx = np.arange(n)
        else:
            idx = np.asarray(slots, dtype=np.intp)
            if idx.shape != (n,) or (n and (idx.min() < 0 or idx.max() >= self.max_slots)):
                raise LocalMediaError(f"DtmfDetector slots must be {n} values in [0, {self.max_slots})")
        if n == 0:
            return []
        x = frames.astype(np.float32)
        # Rows 0..n-1: block A (straddles the previous frame); n..2n-1: block B.
        blocks = np.empty((2 * n, _BLOCK), np.float32)
        blocks[:n, :_HOP] = self._tail[idx]
        blocks[:n, _HOP:] = x[:, :_HOP]
        blocks[n:] = x
        self._tail[idx] = x[:, _HOP:]
        proj = _project(blocks)  # (2n, 24): real parts then imaginary parts
        bins = (proj[:, :_N_BINS] + 1j * proj[:, _N_BINS:]).T  # (12, 2n) complex
        energy = (blocks * blocks) @ _W2 * _ENERGY_SCALE  # (2n,)
        # The block 80 samples before each block: last frame's B, then this frame's A.
        prev = np.concatenate([self._prev_bins[idx].T, bins[:8, :n]], axis=1)  # (8, 2n)
        self._prev_bins[idx] = bins[:8, n:].T
        hits = self._classify(bins, prev, energy)  # (2n,) digit index or -1
        out: list[DtmfDigit] = []
        out.extend(self._advance(idx, hits[:n]))
        out.extend(self._advance(idx, hits[n:]))
        return out

    def _classify(self, bins: np.ndarray, prev: np.ndarray, energy: np.ndarray) -> np.ndarray:
        """Per block (columns): the digit whose checks all pass, or -1."""
        c = self.config
        cols = np.arange(bins.shape[1])
        power = (bins.real**2 + bins.imag**2) * _POWER_SCALE  # (12, 2n)
        low_p, high_p = power[:4], power[4:8]
        li = low_p.argmax(axis=0)
        hi = high_p.argmax(axis=0)
        lp, hp = low_p[li, cols], high_p[hi, cols]
        ok = (lp >= self._min_power) & (hp >= self._min_power)
        ok &= hp >= lp * self._normal_twist
        ok &= hp <= lp * self._reverse_twist
        # Every other tone of each group at least group_margin below.
        rows = np.arange(4)[:, None]
        ok &= lp >= np.where(rows == li, 0.0, low_p).max(axis=0) * self._group_margin
        ok &= hp >= np.where(rows == hi, 0.0, high_p).max(axis=0) * self._group_margin
        ok &= lp + hp >= c.min_tone_energy_ratio * np.maximum(energy, 1e-9)
        ok &= power[8 + hi, cols] <= hp * self._harmonic_margin
        # Frequency from the phase advance over 80 samples: a tone at f + df
        # turns the bin at f by 2*pi*df*80/8000 more than nominal.
        for tone_row in (li, hi + 4):
            turn = bins[tone_row, cols] * np.conj(prev[tone_row, cols]) * _ROT[tone_row]
            dev_hz = np.angle(turn) * SAMPLE_RATE / (2 * np.pi * _HOP)
            nominal = _ANALYSIS_HZ[tone_row]
            ok &= np.abs(dev_hz) <= c.max_deviation * nominal
        return np.where(ok, _DIGIT_OF[li, hi], -1).astype(np.int8)

    def _advance(self, idx: np.ndarray, hit: np.ndarray) -> Iterator[DtmfDigit]:
        c = self.config
        cand = self._candidate[idx]
        same = (hit >= 0) & (hit == cand)
        self._hits[idx] = np.where(same, self._hits[idx] + 1, np.where(hit >= 0, 1, 0))
        self._candidate[idx] = hit
        active = self._active[idx]
        held = (active >= 0) & (hit == active)
        self._misses[idx] = np.where(active >= 0, np.where(held, 0, self._misses[idx] + 1), 0)
        self._active_blocks[idx] += held.astype(np.int32)
        # Ends: active digit missing for misses_to_end blocks, or replaced by a confirmed other digit.
        hits_now = self._hits[idx]
        replaced = (active >= 0) & (hit >= 0) & (hit != active) & (hits_now >= c.hits_to_start)
        ended = (active >= 0) & ((self._misses[idx] >= c.misses_to_end) | replaced)
        for i in np.flatnonzero(ended):
            slot = int(idx[i])
            blocks = int(self._active_blocks[slot])
            # Blocks hop 10 ms and each spans 20 ms: n hit blocks ≈ (n + 1) * 10 ms.
            yield DtmfDigit(DIGITS[int(self._active[slot])], (blocks + 1) * 10.0, "inband", slot)
            self._active[slot] = -1
            self._misses[slot] = 0
            self._active_blocks[slot] = 0
        active = self._active[idx]
        start = (active < 0) & (hit >= 0) & (self._hits[idx] >= c.hits_to_start)
        if start.any():
            s_idx = idx[start]
            self._active[s_idx] = hit[start]
            self._active_blocks[s_idx] = self._hits[s_idx]
            self._misses[s_idx] = 0
