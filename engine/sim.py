"""Simulated callers and agent phones on the project's own SIP and RTP stack.

Theory of operation
-------------------
``ctiengine demo``, the IVR end-to-end tests and the 500-caller benchmark
need many telephone parties that behave like real ones: a carrier trunk
placing calls that press keys and listen, and agents' phones that register
with digest auth and answer.  This module builds them from ``sip/`` and
``media/`` only, shaped so that hundreds of parties cost little:

* **Signalling is shared.**  :class:`SimTrunk` is one
  :class:`sip.useragent.SipEndpoint` (one UDP socket) placing every
  caller's INVITE, like a carrier; responses and BYEs are dispatched to the
  :class:`SimCall` by Call-ID.  :class:`PhoneBank` is one endpoint for every
  agent phone: each phone registers its own AoR ``sip:<ext>@<domain>`` with
  Contact ``sip:<ext>@<bank address>`` (RFC 3261 §10.2, digest §22.4 answered
  by the stack's :class:`sip.auth.DigestClient`), and an INVITE is routed to
  the phone named by the Request-URI user.
* **Media is one clock.**  Every party owns exactly one RTP socket
  (:class:`MediaParty`, a slot of :class:`RtpPump`).  The pump runs one
  timer callback per 20 ms tick (no task per party or per packet): one
  :func:`media.rtpio.recv_batch` over all sockets, RTP headers read and
  G.711 µ-law decoded for all received packets in numpy at once, then one
  :func:`media.rtpio.send_batch` of a frame for every sending party, its
  headers and payloads (a tone or silence from shared tables) built in
  numpy.  Late ticks catch up (up to 5 frames) so the send rate stays 50
  packets/s on average (RFC 3550 §5.1: the timestamp advances 160 per frame).
* **DTMF** goes out as RFC 4733 telephone-events
  (:func:`media.dtmf.rfc4733_packets`: marker on the first packet, growing
  duration, three end packets), one packet per frame instead of audio, all
  packets of a digit stamped with the event's start timestamp (§2.5.1.2).
* **What a party hears** is kept per 20 ms frame, indexed by the sender's
  RTP timestamp (so silence gaps and late arrivals keep their place): the
  level in dBFS for every party (a ``float32`` matrix), counters of loud
  frames for cheap "has it heard speech yet" waits, and, for parties opened
  with ``keep_audio=True``, the decoded samples for Goertzel checks
  (:func:`tone_ratio`) and envelope fingerprints (:func:`envelope_match`).

Everything runs on the caller's asyncio loop.  Nothing here is a mock: the
engine sees real UDP SIP and real RTP on 127.0.0.1.

Example::

    pump = RtpPump(capacity=8)
    trunk = SimTrunk(("127.0.0.1", 5060), pump)
    await trunk.start(); pump.start()
    call = trunk.call("+4930555100", caller_number="+4917000001", keep_audio=True)
    await call.wait_answered()
    await call.wait_heard(1.0)          # a second of prompt speech
    await call.press("21")              # RFC 4733 digits
    ...
    call.hangup()
"""
from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from typing import Any, Callable

import numpy as np

from media.dtmf import rfc4733_packets
from media.g711 import ulaw_decode, ulaw_encode
from media.rtpio import RecvBuffers, send_batch
from sip.auth import DigestClient
from sip.events import (
    CancelReceived, DialogTerminated, Event, RequestReceived, ResponseReceived, TransactionTimedOut,
)
from sip.sdp import PCMU, SdpSession, SessionDescription
from sip.useragent import SipEndpoint

logger = logging.getLogger("engine.sim")

Address = tuple[str, int]

FRAME_SAMPLES = 160
FRAME_S = 0.020
RATE = 8000
HEADER = 12
ROW = HEADER + FRAME_SAMPLES
SILENT_DB = -120.0
LOUD_DB = -45.0
"""A frame above this level (dBFS) counts as heard sound (prompts are about -20 dBFS, silence is -inf)."""
MAX_CATCH_UP_FRAMES = 5


class SimError(Exception):
    """A simulated party could not do what was asked (refused registration, no answer ...)."""


def level_db(pcm: np.ndarray) -> np.ndarray:
    """Per-row RMS level in dBFS of an ``int16[n, k]`` array (``SILENT_DB`` for digital silence)."""
    power = np.mean(pcm.astype(np.float32) ** 2, axis=-1)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(power / (32768.0 ** 2))
    return np.maximum(db, SILENT_DB).astype(np.float32)


def tone_ratio(pcm: np.ndarray, hz: float, rate: int = RATE) -> float:
    """Fraction of the power of ``pcm`` at ``hz`` (one Goertzel/DFT bin, Hann window).

    A clean sine at ``hz`` gives about 1.0 (0.5 for one of two alternating
    notes), speech or another tone gives near 0.  Computed in blocks of 20 ms
    so the bin is ±50 Hz wide (G.711 noise and small offsets do not matter).
    """
    n = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
    if n == 0:
        return 0.0
    x = pcm[:n].astype(np.float64).reshape(-1, FRAME_SAMPLES)
    w = np.hanning(FRAME_SAMPLES)
    k = np.arange(FRAME_SAMPLES)
    basis = w * np.exp(-2j * np.pi * hz * k / rate)
    bins = np.abs(x @ basis) ** 2
    total = np.sum((x * w) ** 2, axis=1) * FRAME_SAMPLES
    energy = float(total.sum())
    # A windowed sine's bin power is |sum w|^2 A^2/4 and its windowed energy N sum(w^2) A^2/2.
    scale = 2.0 * FRAME_SAMPLES * np.sum(w ** 2) / np.sum(w) ** 2
    return float(bins.sum() * scale / energy) if energy > 0 else 0.0


def speech_segments(levels: np.ndarray, threshold_db: float = -40.0, min_s: float = 0.2,
                    bridge_s: float = 0.35) -> list[tuple[float, float]]:
    """Runs of frames above ``threshold_db`` (gaps up to ``bridge_s`` joined), as (start_s, end_s)."""
    loud = np.asarray(levels) > threshold_db
    segments: list[tuple[float, float]] = []
    idx = np.flatnonzero(loud)
    if idx.size == 0:
        return segments
    gap = int(round(bridge_s / FRAME_S))
    start = prev = int(idx[0])
    for i in idx[1:]:
        i = int(i)
        if i - prev > gap + 1:
            segments.append((start * FRAME_S, (prev + 1) * FRAME_S))
            start = i
        prev = i
    segments.append((start * FRAME_S, (prev + 1) * FRAME_S))
    return [s for s in segments if s[1] - s[0] >= min_s]


def envelope(pcm: np.ndarray) -> np.ndarray:
    """The 20 ms level envelope (dBFS) of ``pcm``, the unit :func:`envelope_match` compares."""
    n = len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES
    return level_db(pcm[:n].reshape(-1, FRAME_SAMPLES)) if n else np.zeros(0, np.float32)


def envelope_match(heard: np.ndarray, expected: np.ndarray, floor_db: float = -60.0) -> tuple[float, int]:
    """Best normalised correlation of the ``expected`` level envelope inside ``heard``.

    Both are per-frame dBFS levels (:func:`envelope`, :attr:`MediaParty.levels`),
    clipped at ``floor_db``.  Returns ``(correlation, frame offset)``: an
    audio fingerprint that survives G.711 and a shifted start; the same
    prompt scores above 0.9, different speech of similar length far lower.
    """
    h = np.maximum(np.asarray(heard, np.float64), floor_db)
    e = np.maximum(np.asarray(expected, np.float64), floor_db)
    # Leading and trailing silence of the expected audio would match any silence-to-sound edge: drop it.
    sound = np.flatnonzero(e > floor_db + 10.0)
    e = e[sound[0]:sound[-1] + 1] if sound.size else e[:0]
    m = len(e)
    if m == 0 or len(h) < m:
        return 0.0, -1
    e = e - e.mean()
    e_norm = np.sqrt(np.sum(e ** 2))
    if e_norm == 0:
        return 0.0, -1
    windows = np.lib.stride_tricks.sliding_window_view(h, m)
    wc = windows - windows.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.sum(wc ** 2, axis=1)) * e_norm
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(norms > 0, wc @ e / norms, 0.0)
    best = int(np.argmax(corr))
    return float(corr[best]), best


def _tone_table(hz: float, amplitude: int) -> np.ndarray:
    """One second (plus one frame for wrap-free slicing) of a µ-law sine: periodic in 8000 samples."""
    if hz <= 0:
        return np.full(RATE + FRAME_SAMPLES, 0xFF, np.uint8)  # µ-law of 0
    t = np.arange(RATE + FRAME_SAMPLES)
    pcm = (amplitude * np.sin(2 * np.pi * round(hz) * t / RATE)).astype(np.int16)
    return ulaw_encode(pcm)


class MediaParty:
    """One party's RTP socket and what it heard (a slot of :class:`RtpPump`).

    Attributes:
        port: the local RTP port (put it in the SDP).
        slot: the pump's row for this party.
    """

    def __init__(self, pump: "RtpPump", slot: int, sock: socket.socket, keep_audio: bool) -> None:
        self.pump = pump
        self.slot = slot
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.keep_audio = keep_audio
        self.audio: np.ndarray | None = (np.zeros(pump.max_frames * FRAME_SAMPLES, np.int16)
                                         if keep_audio else None)
        self.dtmf: collections.deque[tuple[bytes, bool] | None] = collections.deque()
        self.dtmf_ts = 0
        self.telephone_event_pt = 101
        self.closed = False

    # ------------------------------------------------------------ sending
    def connect(self, remote: Address | None, payload_type: int = 0, telephone_event_pt: int | None = 101) -> None:
        """Start sending to ``remote`` (the SDP's connection address and port), PCMU by default."""
        p = self.pump
        if remote is None:
            p._sending[self.slot] = False
            return
        p._ips[self.slot] = int.from_bytes(socket.inet_aton(remote[0]), "big")
        p._ports[self.slot] = remote[1]
        p._pt[self.slot] = payload_type
        self.telephone_event_pt = telephone_event_pt if telephone_event_pt is not None else 101
        p._sending[self.slot] = True

    def set_tone(self, hz: float) -> None:
        """Send a sine at ``hz`` (about -12 dBFS) from now on; 0 sends silence."""
        self.pump._tone[self.slot] = self.pump.tone_index(hz)

    def send_digits(self, digits: str, duration_ms: float = 100.0, gap_ms: float = 120.0) -> float:
        """Queue RFC 4733 events for ``digits``; returns the seconds they take to send.

        Raises:
            media.errors.LocalMediaError: a character that is not a DTMF digit.
        """
        frames = 0
        gap = max(1, int(round(gap_ms / 20.0)))
        for d in digits:
            packets = rfc4733_packets(d, duration_ms)
            self.dtmf.extend(packets)
            self.dtmf.extend([None] * gap)
            frames += len(packets) + gap
        self.pump._has_dtmf.add(self.slot)
        return frames * FRAME_S

    def stop_sending(self) -> None:
        self.pump._sending[self.slot] = False

    # ------------------------------------------------------------ hearing
    @property
    def frames_heard(self) -> int:
        """Frames received so far (any level)."""
        return int(self.pump._rx_count[self.slot])

    @property
    def loud_frames(self) -> int:
        """Frames received above :data:`LOUD_DB` so far."""
        return int(self.pump._loud_count[self.slot])

    @property
    def levels(self) -> np.ndarray:
        """Per-frame level (dBFS) heard, from the first frame received (by RTP timestamp)."""
        end = int(self.pump._max_idx[self.slot]) + 1
        return self.pump._levels[self.slot, :max(0, end)].copy()

    def heard_audio(self) -> np.ndarray:
        """The decoded samples heard (``keep_audio=True`` parties only)."""
        if self.audio is None:
            raise SimError("this party was opened without keep_audio=True")
        end = int(self.pump._max_idx[self.slot]) + 1
        return self.audio[:max(0, end) * FRAME_SAMPLES].copy()

    def now_s(self) -> float:
        """Seconds since the first frame heard (the time base of :attr:`levels`)."""
        t0 = self.pump._t_first[self.slot]
        return 0.0 if t0 == 0 else self.pump.loop_time() - t0

    def close(self) -> None:
        self.pump.close(self)


class RtpPump:
    """One 20 ms clock for the RTP of many :class:`MediaParty` (see the module docstring).

    Args:
        host: local address of every party's socket.
        capacity: most parties open at once.
        max_seconds: how much heard audio/levels each party keeps.
        amplitude: peak of the tones sent (8000 ≈ -15 dBFS RMS).
    """

    def __init__(self, host: str = "127.0.0.1", capacity: int = 64, max_seconds: float = 180.0,
                 amplitude: int = 8000) -> None:
        self.host = host
        self.capacity = capacity
        self.max_frames = int(max_seconds / FRAME_S)
        self.amplitude = amplitude
        self.parties: dict[int, MediaParty] = {}
        self._free = list(range(capacity - 1, -1, -1))
        c = capacity
        self._sending = np.zeros(c, bool)
        self._ips = np.zeros(c, np.uint32)
        self._ports = np.zeros(c, np.int32)
        self._pt = np.zeros(c, np.int64)
        self._seq = np.zeros(c, np.int64)
        self._ts = np.zeros(c, np.int64)
        self._ssrc = np.zeros(c, np.int64)
        self._tone = np.zeros(c, np.int64)
        self._fds = np.full(c, -1, np.int32)
        self._rx_count = np.zeros(c, np.int64)
        self._loud_count = np.zeros(c, np.int64)
        self._base_ts = np.full(c, -1, np.int64)
        self._last_ext = np.zeros(c, np.int64)
        self._max_idx = np.full(c, -1, np.int64)
        self._t_first = np.zeros(c, np.float64)
        self._levels = np.full((c, self.max_frames), SILENT_DB, np.float32)
        self._tables: list[np.ndarray] = [_tone_table(0, amplitude)]
        self._table_hz: dict[int, int] = {0: 0}
        self._table_stack = np.stack(self._tables)
        self._has_dtmf: set[int] = set()
        self._rx = RecvBuffers(max(64, capacity * 4), slot=256)
        self._tx = np.zeros((c, 256), np.uint8)
        self._rng = np.random.default_rng()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._k = 0
        self.ticks = 0
        self.late_ticks = 0
        self.max_lateness_s = 0.0
        self.lateness_sum_s = 0.0
        self.packets_sent = 0
        self.packets_received = 0
        self.on_tick: Callable[[], None] | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start ticking on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._k = 0
        self._timer = self._loop.call_at(self._t0 + FRAME_S, self._tick)

    async def stop(self) -> None:
        """Stop ticking and close every party's socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for party in list(self.parties.values()):
            self.close(party)
        await asyncio.sleep(0)

    def loop_time(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def tone_index(self, hz: float) -> int:
        key = int(round(hz)) if hz > 0 else 0
        if key not in self._table_hz:
            self._table_hz[key] = len(self._tables)
            self._tables.append(_tone_table(key, self.amplitude))
            self._table_stack = np.stack(self._tables)
        return self._table_hz[key]

    def open(self, *, keep_audio: bool = False, tone_hz: float = 0.0) -> MediaParty:
        """A new party with its own RTP socket on ``host`` (port chosen by the kernel).

        Raises:
            SimError: ``capacity`` parties are already open.
        """
        if not self._free:
            raise SimError(f"RtpPump is full ({self.capacity} parties)")
        slot = self._free.pop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((self.host, 0))
        party = MediaParty(self, slot, sock, keep_audio)
        self.parties[slot] = party
        self._fds[slot] = sock.fileno()
        self._sending[slot] = False
        self._seq[slot] = int(self._rng.integers(0, 0xFFFF))
        self._ts[slot] = int(self._rng.integers(0, 0x7FFFFFFF))
        self._ssrc[slot] = int(self._rng.integers(1, 0xFFFFFFFF))
        self._tone[slot] = self.tone_index(tone_hz)
        self._rx_count[slot] = self._loud_count[slot] = 0
        self._base_ts[slot] = -1
        self._max_idx[slot] = -1
        self._t_first[slot] = 0.0
        self._levels[slot, :] = SILENT_DB
        return party

    def close(self, party: MediaParty) -> None:
        """Close the party's socket and free its slot (its levels stay readable until reused)."""
        if party.closed:
            return
        party.closed = True
        s = party.slot
        self._sending[s] = False
        self._fds[s] = -1
        self._has_dtmf.discard(s)
        party.sock.close()
        del self.parties[s]
        self._free.append(s)

    # ------------------------------------------------------------ the tick
    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        due = self._t0 + (self._k + 1) * FRAME_S
        late = now - due
        self.ticks += 1
        self.lateness_sum_s += max(0.0, late)
        if late > self.max_lateness_s:
            self.max_lateness_s = late
        if late > FRAME_S:
            self.late_ticks += 1
        frames = min(MAX_CATCH_UP_FRAMES, max(1, int(late / FRAME_S) + 1))
        try:
            self._receive(now)
            for _ in range(frames):
                self._send_frame()
        except Exception:  # a bad packet or socket must not stop every party's media
            logger.exception("simulated RTP tick failed")
        self._k = max(self._k + frames, int((now - self._t0) / FRAME_S))
        if self.on_tick is not None:
            self.on_tick()
        self._timer = loop.call_at(self._t0 + (self._k + 1) * FRAME_S, self._tick)

    def _receive(self, now: float) -> None:
        open_slots = np.flatnonzero(self._fds >= 0)
        if open_slots.size == 0:
            return
        rx = self._rx
        n = rx.receive(self._fds[open_slots], max_per_fd=8)
        if n == 0:
            return
        self.packets_received += n
        data = rx.data[:n]
        lengths = rx.lengths[:n]
        slots = open_slots[rx.owners[:n]]
        ok = (lengths == ROW) & ((data[:, 0] & 0xC0) == 0x80) & ((data[:, 1] & 0x7F) == 0)
        if not ok.any():
            return
        data, slots = data[ok], slots[ok]
        ts = np.ascontiguousarray(data[:, 4:8]).view(">u4").reshape(-1).astype(np.int64)
        first = self._base_ts[slots] < 0
        if first.any():
            fs = slots[first]
            self._base_ts[fs] = ts[first]
            self._last_ext[fs] = ts[first]
            self._t_first[fs] = now
        # Extend the 32-bit timestamp around the last one seen (RFC 3550 §5.1 wraps).
        last = self._last_ext[slots]
        delta = ((ts - last + (1 << 31)) % (1 << 32)) - (1 << 31)
        ext = last + delta
        np.maximum.at(self._last_ext, slots, ext)
        idx = (ext - self._base_ts[slots]) // FRAME_SAMPLES
        keep = (idx >= 0) & (idx < self.max_frames)
        pcm = ulaw_decode(np.ascontiguousarray(data[:, HEADER:ROW]))
        db = level_db(pcm)
        self._levels[slots[keep], idx[keep]] = db[keep]
        np.maximum.at(self._max_idx, slots[keep], idx[keep])
        np.add.at(self._rx_count, slots, 1)
        loud = db > LOUD_DB
        if loud.any():
            np.add.at(self._loud_count, slots[loud], 1)
        for i in np.flatnonzero(keep):
            party = self.parties.get(int(slots[i]))
            if party is not None and party.audio is not None:
                j = int(idx[i]) * FRAME_SAMPLES
                party.audio[j:j + FRAME_SAMPLES] = pcm[i]

    def _send_frame(self) -> None:
        s = np.flatnonzero(self._sending)
        if s.size == 0:
            return
        n = s.size
        tx = self._tx[:n]
        hdr = np.empty((n, 3), ">u4")
        hdr[:, 0] = (0x80 << 24) | (self._pt[s] << 16) | (self._seq[s] & 0xFFFF)
        hdr[:, 1] = self._ts[s] & 0xFFFFFFFF
        hdr[:, 2] = self._ssrc[s]
        tx[:, :HEADER] = hdr.view(np.uint8).reshape(n, HEADER)
        phase = (self._ts[s] % RATE)[:, None] + np.arange(FRAME_SAMPLES)
        tx[:, HEADER:ROW] = self._table_stack[self._tone[s][:, None], phase]
        lengths = np.full(n, ROW, np.int32)
        if self._has_dtmf:
            self._dtmf_rows(s, tx, lengths)
        sent = send_batch(self._fds[s], tx, lengths, self._ips[s], self._ports[s])
        self.packets_sent += sent
        self._seq[s] += 1
        self._ts[s] += FRAME_SAMPLES

    def _dtmf_rows(self, s: np.ndarray, tx: np.ndarray, lengths: np.ndarray) -> None:
        rows = {int(slot): i for i, slot in enumerate(s)}
        for slot in list(self._has_dtmf):
            party = self.parties.get(slot)
            if party is None or not party.dtmf:
                self._has_dtmf.discard(slot)
                continue
            i = rows.get(slot)
            item = party.dtmf.popleft()
            if i is None or item is None:
                continue  # a gap frame: audio as usual
            payload, marker = item
            if marker:
                party.dtmf_ts = int(self._ts[slot])
            # RFC 4733 §2.5.1.2: every packet of the event carries its start timestamp.
            first = 0x80.to_bytes(1, "big") + bytes([(0x80 if marker else 0) | party.telephone_event_pt])
            header = first + int(self._seq[slot] & 0xFFFF).to_bytes(2, "big") + \
                (party.dtmf_ts & 0xFFFFFFFF).to_bytes(4, "big") + int(self._ssrc[slot]).to_bytes(4, "big")
            tx[i, :HEADER] = np.frombuffer(header, np.uint8)
            tx[i, HEADER:HEADER + len(payload)] = np.frombuffer(payload, np.uint8)
            lengths[i] = HEADER + len(payload)


# ====================================================================== SIP
def _sdp_session(host: str) -> SdpSession:
    return SdpSession(host, int(time.time() * 1000) % 10 ** 12, codecs=(PCMU,))


def _connect_party(party: MediaParty, neg: Any) -> None:
    remote = (neg.remote_address, neg.remote_port) if neg.remote_address and neg.remote_port else None
    party.connect(remote, neg.payload_type, neg.telephone_event_payload_type)


class SimCall:
    """One simulated caller on a :class:`SimTrunk` (create with :meth:`SimTrunk.call`).

    Attributes:
        call_id: the SIP Call-ID (the engine's call id).
        status: final response status (0 until one arrives).
        end_reason: ``""`` while up; ``"remote_hangup"``, ``"local_hangup"``,
            ``"rejected_<status>"``, ``"timeout"`` or the dialog's reason after.
        party: the :class:`MediaParty` (what the caller sends and hears).
    """

    def __init__(self, trunk: "SimTrunk", dialed: str, caller_number: str, party: MediaParty) -> None:
        self.trunk = trunk
        self.dialed = dialed
        self.caller_number = caller_number
        self.party = party
        self.call_id = trunk.endpoint.stack.new_call_id()
        self.sdp = _sdp_session(trunk.host)
        self.dialog: Any = None
        self.status = 0
        self.end_reason = ""
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        loop = asyncio.get_running_loop()
        self._answered: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[str] = loop.create_future()

    @property
    def up(self) -> bool:
        return self.dialog is not None and not self.end_reason

    def _response(self, ev: ResponseReceived) -> None:
        status = ev.response.status_code
        if status < 200 or self.status:
            return
        self.status = status
        if status >= 300:
            self._end(f"rejected_{status}")
            return
        self.dialog = ev.dialog
        try:
            neg = self.sdp.process_answer(SessionDescription.parse(ev.response.body))
        except Exception as exc:
            logger.warning("[%s] unusable SDP answer: %s", self.call_id, exc)
            self.hangup()
            return
        _connect_party(self.party, neg)
        self.answered_at = self.trunk.endpoint.transport.loop.time() if self.trunk.endpoint.transport else 0.0
        if not self._answered.done():
            self._answered.set_result(None)

    def _end(self, reason: str) -> None:
        if self.end_reason:
            return
        self.end_reason = reason
        self.ended_at = time.monotonic()
        self.party.stop_sending()
        self.trunk._calls.pop(self.call_id, None)
        if not self._answered.done():
            self._answered.set_exception(SimError(f"call {self.call_id} not answered: {reason}"))
            self._answered.exception()  # retrieved: no "never retrieved" warning when nobody waits
        if not self._ended.done():
            self._ended.set_result(reason)

    async def wait_answered(self, timeout_s: float = 10.0) -> None:
        """Until the engine answered (raises :class:`SimError` when rejected, TimeoutError after ``timeout_s``)."""
        await asyncio.wait_for(asyncio.shield(self._answered), timeout_s)

    async def wait_ended(self, timeout_s: float = 10.0) -> str:
        """Until the call ended (by either side); returns the end reason."""
        return await asyncio.wait_for(asyncio.shield(self._ended), timeout_s)

    async def wait_heard(self, loud_s: float, timeout_s: float = 15.0) -> None:
        """Until ``loud_s`` more seconds of sound (frames above -45 dBFS) arrived than when called.

        Raises:
            TimeoutError: not heard within ``timeout_s``.
            SimError: the call ended first.
        """
        target = self.party.loud_frames + int(round(loud_s / FRAME_S))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.party.loud_frames < target:
            if self.end_reason:
                raise SimError(f"call {self.call_id} ended ({self.end_reason}) before {loud_s} s were heard")
            if loop.time() > deadline:
                raise TimeoutError(f"call {self.call_id}: heard {self.party.loud_frames * FRAME_S:.1f} s of sound, "
                                   f"waited for {loud_s} s more")
            await asyncio.sleep(0.05)

    async def wait_quiet(self, quiet_s: float = 0.5, timeout_s: float = 15.0) -> None:
        """Until no loud frame arrived for ``quiet_s`` (a prompt finished)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last, since = self.party.loud_frames, loop.time()
        while loop.time() - since < quiet_s:
            if self.end_reason:
                raise SimError(f"call {self.call_id} ended ({self.end_reason}) while waiting for quiet")
            if loop.time() > deadline:
                raise TimeoutError(f"call {self.call_id}: still hearing sound after {timeout_s} s")
            await asyncio.sleep(0.05)
            if self.party.loud_frames != last:
                last, since = self.party.loud_frames, loop.time()

    async def press(self, digits: str, duration_ms: float = 100.0, gap_ms: float = 150.0) -> None:
        """Send ``digits`` as RFC 4733 events and wait until they are sent."""
        if not self.up:
            raise SimError(f"call {self.call_id} is not up ({self.end_reason or 'not answered'})")
        await asyncio.sleep(self.party.send_digits(digits, duration_ms, gap_ms))

    def hangup(self) -> None:
        """BYE (when up); the party stops sending."""
        if self.dialog is not None and not self.end_reason and not self.dialog.terminated:
            try:
                txn = self.trunk.endpoint.bye(self.dialog)
                if txn is not None:  # kept until answered: stop() waits so BYE retransmissions can happen
                    self.trunk._byes[id(txn)] = txn
            except Exception as exc:
                logger.debug("[%s] BYE not sent: %s", self.call_id, exc)
        self._end("local_hangup")


class SimTrunk:
    """A carrier trunk placing simulated calls at the engine (one SIP socket for all calls).

    Args:
        engine: the engine's SIP address (its trunk listener).
        pump: the :class:`RtpPump` the callers' media runs on.
        host: local address (must be inside the engine trunk's ``accept_networks``/``host``).
    """

    def __init__(self, engine: Address, pump: RtpPump, host: str = "127.0.0.1") -> None:
        self.engine = engine
        self.pump = pump
        self.host = host
        self.endpoint = SipEndpoint(host, 0, on_event=self._on_event, tcp=False, user="sim-trunk",
                                    user_agent="ctiengine-sim")
        self._calls: dict[str, SimCall] = {}
        self._byes: dict[int, Any] = {}
        self.calls_placed = 0

    async def start(self) -> Address:
        return await self.endpoint.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Hang up every call, wait (up to ``timeout_s``) until every BYE was answered, close.

        RFC 3261 §17.1.2.2: a BYE lost on UDP is retransmitted by its client
        transaction, which needs the socket open until the response arrives.
        """
        for call in list(self._calls.values()):
            call.hangup()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._byes and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await self.endpoint.stop()

    def call(self, dialed: str, *, caller_number: str = "+4917000000", tone_hz: float = 0.0,
             keep_audio: bool = False) -> SimCall:
        """INVITE ``sip:<dialed>@engine`` with a PCMU + telephone-event offer; returns at once."""
        party = self.pump.open(keep_audio=keep_audio, tone_hz=tone_hz)
        call = SimCall(self, dialed, caller_number, party)
        self._calls[call.call_id] = call
        offer = call.sdp.offer(party.port)
        host, port = self.engine
        self.endpoint.invite(f"sip:{dialed}@{host}:{port}", from_=f"<sip:{caller_number}@{self.host}>",
                             call_id=call.call_id, body=bytes(offer), content_type="application/sdp",
                             dest=self.engine, transport="UDP")
        self.calls_placed += 1
        return call

    def _on_event(self, ev: Event) -> None:
        try:
            if isinstance(ev, ResponseReceived):
                if ev.response.cseq[1] == "BYE":
                    if ev.response.status_code >= 200:
                        self._byes.pop(id(ev.transaction), None)
                    return
                call = self._calls.get(ev.response.call_id)
                if call is not None and ev.response.cseq[1] == "INVITE":
                    call._response(ev)
            elif isinstance(ev, DialogTerminated):
                call = self._calls.get(ev.dialog.call_id)
                if call is not None:
                    call._end("remote_hangup" if ev.reason == "bye_received" else ev.reason)
            elif isinstance(ev, TransactionTimedOut):
                self._byes.pop(id(ev.transaction), None)
                call = self._calls.get(ev.call_id)
                if call is not None and ev.method == "INVITE":
                    call._end("timeout")
            elif isinstance(ev, RequestReceived):
                # In-dialog requests (re-INVITE for a session refresh, INFO ...): accept.
                if ev.request.method == "INVITE" and ev.dialog is not None:
                    call = self._calls.get(ev.request.call_id)
                    if call is not None:
                        answer = call.sdp.answer(SessionDescription.parse(ev.request.body), call.party.port)[0]
                        self.endpoint.respond(ev.transaction, 200, body=bytes(answer),
                                              content_type="application/sdp")
                        return
                self.endpoint.respond(ev.transaction, 200 if ev.dialog is not None else 403)
        except Exception:
            logger.exception("simulated trunk failed handling %s", type(ev).__name__)


class SimPhone:
    """One agent phone of a :class:`PhoneBank`: registered, auto-answers, sends a tone.

    Attributes:
        extension: the registered user (``sip:<extension>@<domain>``).
        answered: calls answered so far.
        ended: calls that ended so far.
        party: the media of the current call (None between calls).
    """

    def __init__(self, bank: "PhoneBank", extension: str, password: str, tone_hz: float,
                 answer_after_s: float, keep_audio: bool) -> None:
        self.bank = bank
        self.extension = extension
        self.password = password
        self.tone_hz = tone_hz
        self.answer_after_s = answer_after_s
        self.keep_audio = keep_audio
        self.answered = 0
        self.ended = 0
        self.offered = 0
        self.party: MediaParty | None = None
        self.last_party: MediaParty | None = None
        self.dialog: Any = None
        self.registered = False
        self.call_ids: list[str] = []
        self._changed = asyncio.Event()

    @property
    def busy(self) -> bool:
        return self.party is not None

    async def wait_answered(self, count: int = 1, timeout_s: float = 15.0) -> None:
        """Until this phone has answered ``count`` calls in total."""
        await self._wait(lambda: self.answered >= count, timeout_s, f"answered {count} call(s)")

    async def wait_ended(self, count: int = 1, timeout_s: float = 15.0) -> None:
        """Until ``count`` calls of this phone have ended in total."""
        await self._wait(lambda: self.ended >= count, timeout_s, f"ended {count} call(s)")

    async def _wait(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not cond():
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"phone {self.extension} has not {what} (answered {self.answered}, "
                                   f"ended {self.ended})")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def hangup(self) -> None:
        """BYE the current call (the agent hangs up first)."""
        if self.dialog is not None and not self.dialog.terminated:
            self.bank.endpoint.bye(self.dialog)
        self._call_over()

    def _call_over(self) -> None:
        if self.party is not None:
            self.party.stop_sending()
            self.last_party = self.party
            self.bank.pump.close(self.party)
            self.party = None
            self.dialog = None
            self.ended += 1
            self._changed.set()


class PhoneBank:
    """Agents' phones sharing one SIP socket (see the module docstring).

    Args:
        registrar: the engine's SIP address.
        domain: the SIP domain (the engine's ``[sip] domain``, the digest realm).
        pump: the :class:`RtpPump` the phones' media runs on.
    """

    def __init__(self, registrar: Address, domain: str, pump: RtpPump, host: str = "127.0.0.1") -> None:
        self.registrar = registrar
        self.domain = domain
        self.pump = pump
        self.host = host
        self.endpoint = SipEndpoint(host, 0, on_event=self._on_event, tcp=False, user="sim-phones",
                                    user_agent="ctiengine-sim")
        self.phones: dict[str, SimPhone] = {}
        self._registering: dict[str, asyncio.Future[int]] = {}
        self._by_dialog: dict[str, SimPhone] = {}
        self._pending: dict[int, Any] = {}

    async def start(self) -> Address:
        return await self.endpoint.start()

    async def stop(self) -> None:
        for phone in self.phones.values():
            if phone.busy:
                phone.hangup()
        for handle, _phone in self._pending.values():
            handle.cancel()
        await asyncio.sleep(0.05)
        await self.endpoint.stop()

    async def register(self, extension: str, password: str, *, tone_hz: float = 1400.0, expires_s: int = 300,
                       answer_after_s: float = 0.0, keep_audio: bool = False, timeout_s: float = 5.0) -> SimPhone:
        """REGISTER ``sip:<extension>@<domain>`` with digest auth; the phone then auto-answers.

        Raises:
            SimError: the registrar refused (the status is in the message).
            TimeoutError: no final response within ``timeout_s``.
        """
        phone = self.phones.get(extension) or SimPhone(self, extension, password, tone_hz, answer_after_s, keep_audio)
        self.phones[extension] = phone
        status = await self._register(phone, expires_s, timeout_s)
        if status != 200:
            raise SimError(f"phone {extension}: REGISTER answered {status}")
        phone.registered = expires_s > 0
        return phone

    async def unregister(self, phone: SimPhone, timeout_s: float = 5.0) -> None:
        """REGISTER with ``Expires: 0`` (RFC 3261 §10.2.2)."""
        status = await self._register(phone, 0, timeout_s)
        if status != 200:
            raise SimError(f"phone {phone.extension}: un-REGISTER answered {status}")
        phone.registered = False

    async def _register(self, phone: SimPhone, expires_s: int, timeout_s: float) -> int:
        host, port = self.endpoint.address
        aor = f"<sip:{phone.extension}@{self.domain}>"
        call_id = f"reg-{phone.extension}-{self.endpoint.stack.new_call_id()}"
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._registering[call_id] = fut
        try:
            self.endpoint.request("REGISTER", f"sip:{self.domain}", from_=aor, to=aor, call_id=call_id,
                                  headers=[("Contact", f"<sip:{phone.extension}@{host}:{port}>"),
                                           ("Expires", str(expires_s))],
                                  dest=self.registrar, transport="UDP",
                                  auth=DigestClient(phone.extension, phone.password))
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._registering.pop(call_id, None)

    def _on_event(self, ev: Event) -> None:
        try:
            if isinstance(ev, ResponseReceived):
                fut = self._registering.get(ev.response.call_id)
                if fut is not None and ev.response.status_code >= 200 and not fut.done():
                    fut.set_result(ev.response.status_code)
            elif isinstance(ev, TransactionTimedOut):
                fut = self._registering.get(ev.call_id)
                if fut is not None and not fut.done():
                    fut.set_result(408)
            elif isinstance(ev, RequestReceived):
                if ev.request.method == "INVITE" and ev.dialog is None:
                    self._invite(ev)
                else:
                    self.endpoint.respond(ev.transaction, 200 if ev.dialog is not None else 405)
            elif isinstance(ev, CancelReceived):
                self._cancelled(ev)
            elif isinstance(ev, DialogTerminated):
                phone = self._by_dialog.pop(ev.dialog.call_id, None)
                if phone is not None and phone.dialog is ev.dialog:
                    phone._call_over()
        except Exception:
            logger.exception("simulated phones failed handling %s", type(ev).__name__)

    def _invite(self, ev: RequestReceived) -> None:
        user = getattr(ev.request.uri, "user", None) or ""
        phone = self.phones.get(user)
        if phone is None or not phone.registered:
            self.endpoint.respond(ev.transaction, 404)
            return
        if phone.busy:
            self.endpoint.respond(ev.transaction, 486)
            return
        phone.offered += 1
        try:
            offer = SessionDescription.parse(ev.request.body)
        except Exception:
            self.endpoint.respond(ev.transaction, 400)
            return
        party = self.pump.open(keep_audio=phone.keep_audio, tone_hz=phone.tone_hz)
        sdp = _sdp_session(self.host)
        try:
            answer, neg = sdp.answer(offer, party.port)
        except Exception:
            self.pump.close(party)
            self.endpoint.respond(ev.transaction, 488)
            return
        phone.party = party
        self.endpoint.respond(ev.transaction, 180)

        def answer_now() -> None:
            self._pending.pop(id(ev.transaction), None)
            if phone.party is not party or party.closed:
                return
            dialog = self.endpoint.respond(ev.transaction, 200, body=bytes(answer), content_type="application/sdp")
            phone.dialog = dialog
            if dialog is not None:
                self._by_dialog[dialog.call_id] = phone
            _connect_party(party, neg)
            phone.answered += 1
            phone.call_ids.append(ev.request.call_id)
            phone._changed.set()

        if phone.answer_after_s > 0:
            handle = asyncio.get_running_loop().call_later(phone.answer_after_s, answer_now)
            self._pending[id(ev.transaction)] = (handle, phone)
        else:
            answer_now()

    def _cancelled(self, ev: CancelReceived) -> None:
        """The engine gave up ringing (RFC 3261 §9.2; the stack answered 487): free the phone."""
        pending = self._pending.pop(id(ev.transaction), None)
        if pending is None:
            return
        handle, phone = pending
        handle.cancel()
        if phone.party is not None and phone.dialog is None:
            self.pump.close(phone.party)
            phone.party = None
            phone._changed.set()


__all__ = ["RtpPump", "MediaParty", "SimTrunk", "SimCall", "PhoneBank", "SimPhone", "SimError",
           "tone_ratio", "speech_segments", "envelope", "envelope_match", "level_db", "LOUD_DB"]
