"""Playout buffers of all legs at once: the jitter buffer of :mod:`media.jitter`
as numpy arrays indexed by leg slot, driven by the media tick.

Theory of operation
-------------------
:class:`media.jitter.JitterBuffer` is the readable reference for one stream:
a Python object and a few method calls per packet.  The media engine cannot
afford that at thousands of legs, so this module keeps the same semantics
for every leg in rows of a few arrays, and the tick calls it twice: once
with all packets a ``recvmmsg`` batch brought (:meth:`PlayoutBuffers.put`),
once to take one frame from every receiving leg (:meth:`PlayoutBuffers.play`).
No Python runs per packet or per leg, except on the rare rows that change
state (a resync, a depth step), and those are still handled as arrays.

Indexing.  Each leg has a ring of ``ring_frames`` G.711 frames indexed by the
*extended sequence number* the engine computes (RFC 3550 A.1: 16-bit
sequence numbers extended with a cycle count).  The engine only takes
single-frame 20 ms packets on this path, so one sequence number is one frame
and the sequence number orders the stream even across silence; packets of
the stream that carry no audio (RFC 4733 events, RFC 3389 comfort noise)
fill their slot with silence (they replace audio while they last).

States of a leg (derived from two arrays, no enum per row):

* *idle* (``next_play`` unset): nothing received yet, or after a resync;
  the first packet sets the playout point to its sequence number and starts
* *buffering* (``now < start_at``): silence is played, the playout point
  waits until ``max(initial_depth, target)`` has passed since that packet;
* *playing*: each tick plays the frame at the playout point and advances it.

Depth (RFC 3550 §6.4.1, A.8).  The engine keeps each leg's interarrival
jitter ``J`` (``J += (|D| - J) / 16``, arrival time = the tick that read the
packet).  The target margin is ``clamp(jitter_factor * J + late_boost,
min_depth, max_depth)``.  At each packet's arrival ``ahead = seq -
playout point`` (in frames: 0 is "just in time") and the smallest ``ahead``
of an adapt interval is that interval's margin.  Once per
``adapt_interval_s`` every playing leg compares margin with target: more than
a frame above asks for one frame to be *dropped*, more than a frame below for
one to be *inserted*.  A late packet (behind the playout point) raises
``late_boost`` by half a frame and asks for an insertion at once (first late
packet of an interval only); five quiet intervals lower the boost by half a
frame.  So a heavy-tailed delay settles at a late packet every few seconds.

Silence.  A requested step waits for a quiet moment: a drop removes the
frame at the playout point only when that frame is quiet (mean absolute
sample below ``quiet_level``); an insertion repeats the last frame only when
the last frame played was quiet.  Speech has pauses every second or so, so
steps land where nobody hears them; a step still pending after
``quiet_wait_s`` (a continuous tone, music) is done anyway, and an
insertion asked for by a late packet is done at once.  Sender clock drift
shows up as ``ahead`` creeping up (fast sender) or down (slow sender) and is
absorbed by the same steps: one step a second tracks up to ±2 % drift.

Loss concealment.  A frame missing at the playout point while later frames
are present is lost: the last good frame is repeated with fading gains
(``conceal_gains``, linear ramps inside each frame so nothing clicks), then
silence, and the playout point moves on.  A frame missing with nothing
later (the buffer ran dry: a delay spike, a slow sender, or the sender
stopped for silence suppression) is concealed the same way but the playout
point *holds*, so a frame that arrives a moment late still plays; after
the fade-out has run its course the leg goes back to buffering and the next
packet starts playout afresh (a new talkspurt gets the full target margin).
The last good frame is decoded again from the ring when needed
(``last_seq``), so a tick that conceals nothing copies no frames and
measures no levels: quietness is computed only for the legs with a depth
step pending.

Resync.  A packet further ahead than the ring holds makes the playout point
jump to that packet minus the target margin; five late packets in a row
(the stream moved back, e.g. the peer restarted its sequence without a new
SSRC) put the leg back to idle.  A new SSRC is handled by the engine
(:meth:`PlayoutBuffers.reset`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from media import g711
from media.errors import LocalMediaError

__all__ = ["PlayoutSettings", "PlayoutBuffers", "NONE"]

FRAME = 160
_HALF_FRAME = FRAME // 2
NONE = np.int64(-(1 << 62))
_BIG = np.int64(1 << 62)
#: This many late packets in a row put a leg back to idle.
_LATE_RUN_RESYNC = 5


@dataclass(frozen=True, slots=True)
class PlayoutSettings:
    """Jitter buffer parameters shared by all legs (from :class:`media.engine.MediaConfig`)."""

    ring_frames: int = 32
    min_depth_ms: float = 20.0
    max_depth_ms: float = 200.0
    initial_depth_ms: float = 40.0
    jitter_factor: float = 4.0
    adapt_interval_s: float = 1.0
    quiet_level: float = 200.0
    quiet_wait_s: float = 1.0
    conceal_gains: tuple[float, ...] = (0.9, 0.6, 0.35, 0.15)
    ptime_s: float = 0.020

    def check(self) -> None:
        """Raise :class:`LocalMediaError` naming the first setting that does not fit."""
        if not 0 < self.min_depth_ms <= self.max_depth_ms:
            raise LocalMediaError(f"jitter depth bounds must satisfy 0 < min <= max, got "
                                  f"{self.min_depth_ms} / {self.max_depth_ms} ms")
        if self.max_depth_ms / 20.0 + 4 > self.ring_frames:
            raise LocalMediaError(f"playout_slots {self.ring_frames} cannot hold jitter_max_ms "
                                  f"{self.max_depth_ms} (needs at least {int(self.max_depth_ms / 20) + 4})")
        if self.adapt_interval_s < self.ptime_s or self.quiet_wait_s < 0 or self.jitter_factor < 0:
            raise LocalMediaError("jitter_adapt_interval_s must be at least one tick, "
                                  "jitter_quiet_wait_s and jitter_factor non-negative")
        if any(not 0.0 <= g <= 1.0 for g in self.conceal_gains):
            raise LocalMediaError(f"conceal_gains must lie in 0..1, got {self.conceal_gains}")


class PlayoutBuffers:
    """Every leg's jitter buffer as rows of arrays (see the module docstring).

    Args:
        settings: :class:`PlayoutSettings`.
        cap: initial number of leg slots (:meth:`grow` adds more).
    """

    def __init__(self, settings: PlayoutSettings, cap: int = 0) -> None:
        settings.check()
        self.settings = st = settings
        self.ring = st.ring_frames
        self.min_depth = st.min_depth_ms * 8.0
        self.max_depth = st.max_depth_ms * 8.0
        self.initial_s = st.initial_depth_ms / 1000.0
        self.interval_ticks = max(1, int(round(st.adapt_interval_s / st.ptime_s)))
        self.wait_ticks = int(round(st.quiet_wait_s / st.ptime_s))
        n = len(st.conceal_gains)
        self.fade_frames = n
        gains = (1.0,) + tuple(st.conceal_gains) + (0.0,)
        # ramps[k]: the gain across the k-th consecutive concealed frame (k >= n: silence)
        self.ramps = np.stack([np.linspace(gains[k], gains[k + 1], FRAME, dtype=np.float32)
                               for k in range(n + 1)])
        self.ramps[n] = 0.0
        self.cap = 0
        self.grow(cap)

    # -- storage -----------------------------------------------------------------

    def grow(self, cap: int) -> None:
        """(Re)allocate for ``cap`` slots, keeping the existing rows."""
        old = self.cap
        d = self.ring

        def g(name: str, shape: tuple, dtype: object, fill: object = 0) -> None:
            new = np.full(shape, fill, dtype)
            cur = getattr(self, name, None)
            if cur is not None and old:
                new[:old] = cur[:old]
            setattr(self, name, new)

        g("codes", (cap, d, FRAME), np.uint8)
        g("ring_seq", (cap, d), np.int64, NONE)
        g("ring_audio", (cap, d), bool)
        g("next_play", cap, np.int64, NONE)
        g("top", cap, np.int64, NONE)
        g("start_at", cap, np.float64)
        g("last_seq", cap, np.int64, NONE)  # the last frame played (concealment repeats it from the ring)
        g("losses", cap, np.int64)
        g("min_ahead", cap, np.int64, _BIG)
        g("late_boost", cap, np.float64)
        g("late_in_interval", cap, np.int64)
        g("quiet_intervals", cap, np.int64)
        g("late_run", cap, np.int64)
        g("pending", cap, np.int8)
        g("pending_age", cap, np.int64)
        # counters (call-quality figures)
        g("late", cap, np.int64)
        g("played", cap, np.int64)
        g("concealed", cap, np.int64)
        g("inserted", cap, np.int64)
        g("dropped", cap, np.int64)
        g("resyncs", cap, np.int64)
        self._first = np.full(cap, _BIG, np.int64)  # scratch: lowest sequence per slot in a batch
        self._top_batch = np.full(cap, NONE, np.int64)
        self.cap = cap

    def reset(self, s: int) -> None:
        """Forget slot ``s``'s stream (new leg, new SSRC): idle, counters zero."""
        self.ring_seq[s] = NONE
        self.next_play[s] = NONE
        self.top[s] = NONE
        self.start_at[s] = 0.0
        self.last_seq[s] = NONE
        self.losses[s] = 0
        self.min_ahead[s] = _BIG
        self.late_boost[s] = 0.0
        self.late_in_interval[s] = self.quiet_intervals[s] = self.late_run[s] = 0
        self.pending[s] = 0
        self.pending_age[s] = 0
        for name in ("late", "played", "concealed", "inserted", "dropped", "resyncs"):
            getattr(self, name)[s] = 0

    def target(self, slots: npt.NDArray[np.intp], jitter_q4: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Target margin of each slot, in samples (RFC 3550 jitter ``jitter_q4 / 16``)."""
        j = jitter_q4[slots] / 16.0
        base = np.maximum(self.min_depth, self.settings.jitter_factor * j)
        return np.minimum(self.max_depth, base + self.late_boost[slots])

    def depth_ms(self, s: int) -> float:
        """Audio buffered ahead of slot ``s``'s playout point, in ms (0 when idle)."""
        if self.next_play[s] == NONE or self.top[s] == NONE:
            return 0.0
        return max(0, int(self.top[s] - self.next_play[s]) + 1) * self.settings.ptime_s * 1000.0

    # -- input -----------------------------------------------------------------

    def _first_of(self, slots: npt.NDArray[np.intp], ext: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """Unique slots of the rows, with ``self._first[slot]`` = their lowest sequence number."""
        u = np.unique(slots)
        self._first[u] = _BIG
        np.minimum.at(self._first, slots, ext)
        return u

    def put(self, slots: npt.NDArray[np.intp], ext: npt.NDArray[np.int64], payload: npt.NDArray[np.uint8] | None,
            now: float, jitter_q4: npt.NDArray[np.int64]) -> None:
        """Store one batch of received packets.

        Args:
            slots: leg slot of each row (a slot may appear several times, in arrival order).
            ext: extended sequence number of each row.
            payload: ``uint8[rows, 160]`` G.711 frames, or None for packets of
                the stream without audio (their slot plays silence).
            now: arrival time (the tick's time).
            jitter_q4: every slot's RFC 3550 jitter × 16 (timestamp units), for the target.
        """
        d = self.ring
        np_ = self.next_play[slots]
        idle = np_ == NONE
        if idle.any():  # first packet: buffer for max(initial, target) before playing
            u = self._first_of(slots[idle], ext[idle])
            self.next_play[u] = self._first[u]
            self.top[u] = self._first[u] - 1
            self.start_at[u] = now + np.maximum(self.initial_s, self.target(u, jitter_q4) / 8000.0)
            self.min_ahead[u] = _BIG
            np_ = self.next_play[slots]
        waiting = self.start_at[slots] == np.inf
        if waiting.any():  # the buffer ran dry long ago: this packet starts a new talkspurt
            u = self._first_of(slots[waiting], ext[waiting])
            newer = self._first[u] > self.next_play[u]
            self.next_play[u[newer]] = self._first[u[newer]]
            self.start_at[u] = now + self.target(u, jitter_q4) / 8000.0
            self.min_ahead[u] = _BIG
            np_ = self.next_play[slots]
        # a packet the ring cannot hold: jump, keeping the target margin behind it
        tb = self._top_batch
        tb[slots] = NONE
        np.maximum.at(tb, slots, ext)
        far = tb[slots] - np_ >= d - 1
        if far.any():
            u = np.unique(slots[far])
            margin = np.ceil(self.target(u, jitter_q4) / FRAME).astype(np.int64)
            self.next_play[u] = tb[u] - margin
            self.resyncs[u] += 1
        late = ext < np_
        stale = ext < self.next_play[slots]
        keep = ~stale
        if keep.all():
            ks, ke = slots, ext
        else:
            ks, ke = slots[keep], ext[keep]
        pos = ke % d
        self.ring_seq[ks, pos] = ke
        if payload is None:
            self.ring_audio[ks, pos] = False
        else:
            self.ring_audio[ks, pos] = True
            self.codes[ks, pos] = payload if keep.all() else payload[keep]
        np.maximum.at(self.top, ks, ke)
        playing = self.start_at[ks] <= now
        if playing.any():
            np.minimum.at(self.min_ahead, ks[playing], ke[playing] - self.next_play[ks[playing]])
        self.late_run[slots[~late]] = 0
        if late.any():
            ls = slots[late]
            np.add.at(self.late, ls, 1)
            u = np.unique(ls)
            first = u[self.late_in_interval[u] == 0]
            # the buffer is too shallow: grow the margin, insert a frame now (once per interval)
            self.late_boost[first] = np.minimum(self.max_depth, self.late_boost[first] + _HALF_FRAME)
            self.pending[first] = 1
            self.pending_age[first] = self.wait_ticks
            np.add.at(self.late_in_interval, ls, 1)
            np.add.at(self.late_run, ls, 1)
            stuck = u[self.late_run[u] >= _LATE_RUN_RESYNC]
            if len(stuck):  # the stream moved back: start again from its next packet
                self.next_play[stuck] = NONE
                self.late_run[stuck] = 0
                self.resyncs[stuck] += 1

    # -- output ----------------------------------------------------------------

    def _adapt(self, s: npt.NDArray[np.intp], jitter_q4: npt.NDArray[np.int64]) -> None:
        """One adapt interval is over for the playing slots ``s``."""
        target = self.target(s, jitter_q4)
        m = self.min_ahead[s]
        have = m != _BIG
        margin = m * float(FRAME)
        idle = self.pending[s] == 0
        drop = have & idle & (margin > target + FRAME)
        ins = have & idle & (margin < target - FRAME)
        self.pending[s[drop]] = -1
        self.pending[s[ins]] = 1
        self.pending_age[s[drop | ins]] = 0
        self.min_ahead[s] = _BIG
        lii = self.late_in_interval[s]
        qi = np.where(lii > 0, 0, self.quiet_intervals[s] + 1)
        decay = qi >= 5
        self.late_boost[s[decay]] = np.maximum(0.0, self.late_boost[s[decay]] - _HALF_FRAME)
        qi[decay] = 0
        self.quiet_intervals[s] = qi
        self.late_in_interval[s] = 0

    def _decode(self, codes: npt.NDArray[np.uint8], alaw: npt.NDArray[np.bool_], out: npt.NDArray[np.int16]
                ) -> npt.NDArray[np.int16]:
        pcm = g711.ulaw_decode(codes, out=out)
        if alaw.any():
            pcm[alaw] = g711.alaw_decode(codes[alaw])
        return pcm

    def _last_frames(self, s: npt.NDArray[np.intp], alaw: npt.NDArray[np.bool_]) -> npt.NDArray[np.int16]:
        """The last frame each slot played, decoded again from its ring (silence when gone)."""
        d = self.ring
        last = self.last_seq[s]
        pos = np.where(last == NONE, 0, last) % d
        pcm = self._decode(self.codes[s, pos], alaw, np.empty((len(s), FRAME), np.int16))
        pcm[~((self.ring_seq[s, pos] == last) & self.ring_audio[s, pos])] = 0
        return pcm

    def _quiet(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.bool_]:
        return np.abs(pcm, dtype=np.int32).sum(axis=1, dtype=np.int64) <= self.settings.quiet_level * FRAME

    def play(self, slots: npt.NDArray[np.intp], alaw: npt.NDArray[np.bool_], now: float, tick: int,
             jitter_q4: npt.NDArray[np.int64], out: npt.NDArray[np.int16], work: npt.NDArray[np.uint8]) -> None:
        """Write one 20 ms frame of each slot into ``out`` (rows in ``slots`` order).

        Args:
            slots: the receiving legs' slots.
            alaw: per row, the leg's codec is PCMA (else PCMU).
            now: the tick's time.
            tick: the tick number (adapt intervals are counted in ticks).
            jitter_q4: every slot's RFC 3550 jitter × 16 (timestamp units).
            out: ``int16[len(slots), 160]`` receives the frames.
            work: ``uint8[len(slots), 160]`` scratch.
        """
        np_ = self.next_play[slots]
        active = (np_ != NONE) & (self.start_at[slots] <= now)
        everyone = bool(active.all())
        if everyone:
            a = slice(None)
            s, ns, al = slots, np_, alaw
        else:
            out[...] = 0
            a = np.flatnonzero(active)
            if not len(a):
                return
            s, ns, al = slots[a], np_[a], alaw[a]
        if tick % self.interval_ticks == 0:
            self._adapt(s, jitter_q4)
        d = self.ring
        n = len(s)
        pos = ns % d
        hit = self.ring_seq[s, pos] == ns
        codes = work[:n]
        flat = self.codes.reshape(-1, FRAME)
        np.take(flat, s * d + pos, axis=0, out=codes)
        # all active (the usual tick): decode in place; else into a copy written back below
        pcm = self._decode(codes, al, out if everyone else np.empty((n, FRAME), np.int16))
        silent = ~(hit & self.ring_audio[s, pos])
        if silent.any():
            pcm[silent] = 0
        pend = self.pending[s]
        ins = drp = np.zeros(n, bool)
        if pend.any():  # a depth step is waiting: find the quiet frames (only these rows)
            urgent = self.pending_age[s] >= self.wait_ticks
            want_ins = pend > 0
            if want_ins.any():
                r = np.flatnonzero(want_ins)
                ins = np.zeros(n, bool)
                ins[r] = urgent[r] | self._quiet(self._last_frames(s[r], al[r]))
            want_drp = (pend < 0) & hit
            if want_drp.any():
                r = np.flatnonzero(want_drp)
                nxt = ns[r] + 1
                ok = (urgent[r] | self._quiet(pcm[r])) & (self.ring_seq[s[r], nxt % d] == nxt)
                r = r[ok]
                if len(r):  # skip the frame at the playout point: play the next one
                    drp = np.zeros(n, bool)
                    drp[r] = True
                    nxt = ns[r] + 1
                    p2 = self._decode(flat[s[r] * d + nxt % d], al[r], np.empty((len(r), FRAME), np.int16))
                    p2[~self.ring_audio[s[r], nxt % d]] = 0
                    pcm[r] = p2
        play = hit & ~ins
        miss = ~hit & ~ins
        conceal = ins | miss
        if conceal.any():
            r = np.flatnonzero(conceal)
            cs = s[r]
            k = np.minimum(self.losses[cs], self.fade_frames)
            pcm[r] = np.rint(self._last_frames(cs, al[r]) * self.ramps[k]).astype(np.int16)
            self.losses[cs] += 1
            lost = miss & (self.top[s] > ns)
            under = miss & ~lost
        else:
            lost = under = miss
        ps = s[play]
        self.last_seq[ps] = ns[play] + drp[play]
        self.losses[ps] = 0
        if not everyone:
            out[a] = pcm
        self.next_play[s] = ns + np.where(play, 1 + drp, lost.astype(np.int64))
        # counters and pending steps
        self.played[ps] += 1
        if conceal.any():
            self.concealed[s[miss]] += 1
            dry = under & (self.losses[s] > self.fade_frames)
            if dry.any():  # the fade-out is over: the next packet starts a new talkspurt
                self.start_at[s[dry]] = np.inf
        if pend.any():
            done = ins | drp
            self.inserted[s[ins]] += 1
            self.dropped[s[drp]] += 1
            self.pending[s[done]] = 0
            self.min_ahead[s[done]] = _BIG  # measure the new margin afresh
            waiting = (pend != 0) & ~done
            self.pending_age[s[waiting]] += 1
