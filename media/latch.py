"""Symmetric RTP latching for legs behind NAT (RFC 4961 behaviour, "comedia").

Theory of operation
-------------------
A phone behind a NAT puts its private address in the SDP (``c=10.0.0.7``,
``m=audio 4000``); its RTP reaches us from the NAT's public address and a
port the NAT chose.  Sending to the SDP address goes nowhere.  RFC 4961
(symmetric RTP) says an endpoint sends from the port it receives on, so the
source address of the phone's packets is where it can be reached: the leg
*latches* to it and sends there (and RTCP to its port + 1, or the same port
with ``a=rtcp-mux``).

Latching is a way to steal a call's audio, so it is fenced in.  The rule:

1. **Window.**  A leg may latch only within ``latch_window_s`` seconds after
   it was opened with a remote address or its remote changed (a re-INVITE
   with a new ``c=``/``m=``).  After that the address is fixed until the
   next offer/answer.  ``latch_window_s = 0`` turns latching off.
2. **Confirmed stream.**  Each counted packet must be a valid RTP packet of
   the leg's stream: version 2, not RTCP, a negotiated payload type (the
   audio codec, telephone-event or comfort noise), the SSRC the leg's
   playout is following, and the SSRC of the first such packet of the window
   (a packet with another SSRC neither counts nor resets the count; the
   engine follows a new SSRC for playout, but a sender that takes over the
   stream with a new SSRC cannot take over where we send).
3. **Consistency.**  ``latch_packets`` such packets in a row from one source
   address (another source in between starts the count again).
4. **The signalled address wins.**  Once one valid packet came from the
   address the SDP gave, the leg is not behind a NAT that matters: its
   window closes at once and it never latches (until the next change of
   remote).
5. **Once.**  A leg latches at most once per window (the window closes).

An attacker must therefore send, within the first seconds of a call, more
packets with the phone's SSRC and payload type than the phone itself, from a
single address, to a call whose phone does not send from its SDP address;
ports are also random (:mod:`media.ports`).  Audio from other sources is
played as before (RFC 3550 does not require symmetric sending); latching
only decides where *we* send.

Work per tick is vectorised over the rows of the receive batch whose leg is
still in its window; once every window has closed it costs one check of an
empty set.
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["Latcher"]


class Latcher:
    """Per-slot latching state (see the module docstring).

    Args:
        packets: valid packets in a row from one new source before latching.
        window_s: seconds after (re)setting a remote during which latching may happen; 0: off.
    """

    def __init__(self, packets: int, window_s: float) -> None:
        self.packets = max(1, int(packets))
        self.window_s = window_s
        self.open: set[int] = set()
        """Slots whose window is open."""
        self.fresh: set[int] = set()
        """Slots armed since the last tick (their window starts at that tick's time)."""
        self.cap = 0
        self.grow(64)

    def grow(self, cap: int) -> None:
        """(Re)allocate for ``cap`` slots, keeping existing rows."""
        old = self.cap
        for name, dtype, fill in (("until", np.float64, 0.0), ("mask", bool, False),
                                  ("cand", np.int64, -1), ("count", np.int64, 0), ("ssrc", np.int64, -1)):
            new = np.full(cap, fill, dtype)
            cur = getattr(self, name, None)
            if cur is not None and old:
                new[:old] = cur[:old]
            setattr(self, name, new)
        self._key_lo = np.zeros(cap, np.int64)
        self._key_hi = np.zeros(cap, np.int64)
        self._last = np.zeros(cap, np.int64)
        self.cap = cap

    def arm(self, s: int) -> None:
        """Slot ``s`` got a (new) remote address: open its window (when latching is on).

        The window is timed from the next tick (:meth:`start`), so it follows
        the media clock, whatever clock the caller of ``arm`` reads.
        """
        self.close(s)
        if self.window_s > 0:
            self.open.add(s)
            self.fresh.add(s)
            self.mask[s] = True
            self.until[s] = np.inf

    def start(self, now: float) -> None:
        """Start the windows armed since the last tick at ``now``."""
        for s in self.fresh:
            if s in self.open:
                self.until[s] = now + self.window_s
        self.fresh.clear()

    def close(self, s: int) -> None:
        """Close slot ``s``'s window (latched, confirmed, expired or the leg closed)."""
        self.open.discard(s)
        self.fresh.discard(s)
        self.mask[s] = False
        self.cand[s] = -1
        self.count[s] = 0
        self.ssrc[s] = -1

    def expire(self, now: float) -> None:
        """Close the windows that ran out."""
        for s in [s for s in self.open if self.until[s] <= now]:
            self.close(s)

    def observe(self, slots: npt.NDArray[np.intp], ips: npt.NDArray[np.uint32], ports: npt.NDArray[np.int32],
                ssrc: npt.NDArray[np.int64], valid: npt.NDArray[np.bool_], remote_ip: npt.NDArray[np.uint32],
                remote_port: npt.NDArray[np.int32]) -> list[tuple[int, int, int]]:
        """Account one receive batch (rows in arrival order per slot).

        Args:
            slots: each row's leg slot.
            ips / ports: each row's source address.
            ssrc: each row's SSRC.
            valid: each row is version 2 RTP of the leg's stream with a negotiated
                payload type (checked by the caller; the window's SSRC is checked here).
            remote_ip / remote_port: every slot's current remote address.

        Returns:
            ``(slot, ip, port)`` for every slot that latches now (its window is closed).
        """
        rows = np.flatnonzero(self.mask[slots] & valid)
        if not len(rows):
            return []
        s = slots[rows]
        fresh = self.ssrc[s] == -1
        if fresh.any():  # the window's first packet fixes its SSRC (reversed: the first row wins)
            self.ssrc[s[fresh][::-1]] = ssrc[rows][fresh][::-1]
        same = ssrc[rows] == self.ssrc[s]
        rows, s = rows[same], s[same]
        if not len(rows):
            return []
        ip = ips[rows].astype(np.int64)
        port = ports[rows].astype(np.int64)
        signalled = (ip == remote_ip[s]) & (port == remote_port[s])
        if signalled.any():  # rule 4: the SDP address works, never latch away from it
            for slot in np.unique(s[signalled]).tolist():
                self.close(slot)
            keep = self.mask[s]
            s, ip, port = s[keep], ip[keep], port[keep]
            if not len(s):
                return []
        key = (ip << 16) | port
        u = np.unique(s)
        lo, hi, last = self._key_lo, self._key_hi, self._last
        lo[u] = np.iinfo(np.int64).max
        hi[u] = -1
        np.minimum.at(lo, s, key)
        np.maximum.at(hi, s, key)
        last[s] = key  # fancy assignment keeps the last row per slot
        n = np.bincount(s, minlength=self.cap)[u]
        one = lo[u] == hi[u]
        same = one & (self.cand[u] == last[u])
        # rule 3: one source throughout extends its run; a new or mixed source starts one
        self.count[u] = np.where(same, self.count[u] + n, np.where(one, n, 1))
        self.cand[u] = last[u]
        done = u[self.count[u] >= self.packets]
        out = []
        for slot in done.tolist():
            k = int(self.cand[slot])
            out.append((slot, k >> 16, k & 0xFFFF))
            self.close(slot)  # rule 5
        return out
