"""``MediaEngine``: the facade the call engine drives -- legs, rooms, players,
recorders, DTMF -- and the 20 ms tick that moves all audio in numpy batches.

Theory of operation
-------------------
The call engine tells the media engine *what* to connect (legs from SDP,
rooms with hear sets, players, recorders); the media engine moves the audio.
Every 20 ms (:mod:`media.clock`) one tick does, for all legs at once:

1. **receive** -- :func:`media.rtpio.recv_batch` drains every leg's socket
   into rows of one array (``recvmmsg`` in Cython, no Python per packet);
2. **classify** -- RTP headers are read with numpy; the common packet (V=2,
   no CSRC/extension/padding, the leg's audio payload type and SSRC, 160
   bytes of G.711) goes straight into the leg's playout buffer; the other
   plain packets of a known stream (RFC 4733 events, comfort noise, other
   payload types) are counted in one batch and each event's fields go to the
   leg's RFC 4733 receiver as integers (:meth:`MediaEngine._classify_events`);
   anything else (RTCP, a new SSRC, SRTP, padding/extension/CSRC, garbage)
   takes a per-packet slow path that parses it with :mod:`media.rtp` and
   never raises out of the tick;
3. **playout** -- one frame per receiving leg from its jitter buffer
   (:mod:`media.playout`: the semantics of :mod:`media.jitter` kept as
   arrays over all legs): a ring of ``playout_slots`` frames indexed by
   extended sequence number absorbs reordering; the depth adapts to the
   leg's RFC 3550 interarrival jitter (``jitter_*`` settings); a lost frame
   is concealed by repeating the last one with a fading gain; sender clock
   drift is followed by dropping or inserting one frame at a time, in a
   quiet frame when there is one; one G.711 decode of all frames
   (:mod:`media.g711`);
4. **sources** -- each active player yields its next 160-sample frame;
5. **mix** -- :class:`media.mixer.Mixer` computes every room member's output
   as the saturated sum of what its hear set allows, all rooms in a few
   batched products (rooms keep fixed slots; a membership change re-packs
   only that room at the next tick); a leg's output is its room output(s)
   plus any player attached to the leg directly (an IVR prompt);
6. **record** -- each recorder member's channels (caller left, agent right)
   go to its sink (the recorder's worker thread does the disk work);
7. **send** -- one G.711 encode of all outputs, RTP headers written with
   numpy (SSRC, sequence, timestamp = leg base + tick × 160), queued RFC 4733
   packets substituted, and :func:`media.rtpio.send_batch` (``sendmmsg``);
8. **housekeeping** -- RFC 4733 end timers, RTP timeout, staggered RTCP
   sender/receiver reports (RFC 3550 §6.4, multiplexed per RFC 5761 when the
   SDP said ``a=rtcp-mux``, else to port + 1).

Per-leg figures kept vectorised (RFC 3550 A.3/A.8): packets received and
expected, interarrival jitter, late and concealed frames; with the remote's
view from its RTCP reports they make the call-quality fields of a CDR
(:meth:`MediaEngine.leg_statistics`).  Jitter is measured at tick resolution
(arrival time = the tick that read the packet).

Threading: the engine is single-threaded; it runs as a ``loop.call_at``
timer on the asyncio loop (:meth:`MediaEngine.start`) or driven by hand with
:meth:`MediaEngine.run_due` / :meth:`MediaEngine.run_tick` (tests, a
dedicated media process).  Public methods must be called from the thread
that runs the ticks.

Errors: calls with unknown ids or illegal arguments raise
:class:`media.errors.LocalMediaError` (a caller bug); bad input from the
network is counted per leg and dropped, never raised.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from media import g711, rtpio
from media.clock import MediaClock, TickStats
from media.dtmf import DtmfDetector, rfc4733_packets
from media.errors import LocalMediaError, MediaError, RemoteMediaError
from media.events import DtmfReceived, MediaEvent, PlaybackFinished, RecordingFailed, RtpLatched, RtpTimedOut
from media.leg import SUPPORTED_CODECS, Direction, Leg
from media.mixer import Mixer
from media.latch import Latcher
from media.playout import PlayoutBuffers, PlayoutSettings
from media.player import Source
from media.ports import PortAllocator
from media.prompttable import PromptTable, batchable
from media.room import HearSet, MemberKind, Room, apply_hear_set
from media.rtp import (
    PayloadTypeMap,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpSourceDescription,
    RtpPacket,
    is_rtcp,
    ntp_from_unix,
    ntp_middle_32,
    parse_rtcp,
)

__all__ = ["MediaEngine", "MediaConfig", "LegStatistics", "FrameSink"]

logger = logging.getLogger(__name__)

FRAME = 160
PACKET = 12 + FRAME
_NONE = np.int64(-(1 << 62))
_SEQ_BASE = 1 << 32  # extended sequence numbers start here, so they stay positive
_KEEP: Any = object()


class FrameSink(Protocol):
    """What ``record()`` accepts: gets ``int16[channels, 160]`` per tick."""

    def write_frame(self, frame: np.ndarray) -> None:
        """Take one tick of audio (must not block: hand it to a worker)."""

    def close(self) -> None:
        """Finish the file."""


@dataclass(slots=True)
class MediaConfig:
    """Media engine settings (``[media]`` in the engine config)."""

    host: str = "127.0.0.1"
    """Local address RTP sockets bind to (and the one the SDP should announce)."""
    port_range: tuple[int, int] | None = (20000, 29999)
    """Even ports of this range are used, one per leg; None: kernel-chosen."""
    ptime_s: float = 0.020
    """Tick period and packetisation time (only 20 ms frames are sent)."""
    rtp_timeout_s: float = 30.0
    """``RtpTimedOut`` after this long without RTP on a receiving leg (0: off)."""
    rtcp_interval_s: float = 5.0
    """Each leg sends an SR (or RR) this often, staggered over the interval (0: off)."""
    playout_slots: int = 32
    """Frames a leg's playout ring holds (reorder window; must exceed ``jitter_max_ms`` + 4 frames)."""
    jitter_min_ms: float = 20.0
    """Smallest playout margin the jitter buffer aims for (:mod:`media.playout`)."""
    jitter_max_ms: float = 200.0
    """Largest playout margin (bounds the delay a jittery network can add)."""
    jitter_initial_ms: float = 40.0
    """Margin buffered before a stream's first frame plays (before jitter is known)."""
    jitter_factor: float = 4.0
    """Target margin = this × the RFC 3550 interarrival jitter (+ what late packets taught)."""
    jitter_adapt_interval_s: float = 1.0
    """At most one frame dropped or inserted per leg per interval (±2 % drift at 1 s)."""
    jitter_quiet_level: float = 200.0
    """A frame whose mean absolute sample is at most this is quiet: depth steps go there."""
    jitter_quiet_wait_s: float = 1.0
    """A depth step still waiting for a quiet frame after this long is done anyway."""
    conceal_gains: tuple[float, ...] = (0.9, 0.6, 0.35, 0.15)
    """Gains of the 1st, 2nd, ... consecutive concealed frame (last frame repeated), then silence."""
    latch_window_s: float = 10.0
    """Symmetric RTP (:mod:`media.latch`): a leg may latch to the source of its packets
    this long after its remote address was set (0: never latch)."""
    latch_packets: int = 3
    """Valid packets in a row from one new source address before a leg latches to it."""
    max_catchup_ticks: int = 5
    """After a stall, at most this many ticks run back to back."""
    max_per_socket: int = 8
    """Datagrams read from one socket per tick."""
    gil_switch_interval_s: float | None = 0.0005
    """``start()`` sets ``sys.setswitchinterval`` to this (None: leave it).  The
    recorder's worker thread holds the GIL while it writes; with Python's
    default 5 ms a tick can wait that long for the GIL (measured: 200
    recorded calls, median tick 12 ms at 5 ms, 3.9 ms at 0.5 ms)."""


@dataclass(frozen=True, slots=True)
class LegStatistics:
    """Call-quality figures of one leg (for the CDR)."""

    leg_id: str
    packets_received: int
    packets_expected: int
    packets_lost: int
    jitter_ms: float
    late_packets: int
    concealed_frames: int
    malformed_packets: int
    packets_sent: int
    octets_sent: int
    remote_fraction_lost: float | None
    """Fraction of our packets the remote reported lost (last RTCP report), or None."""
    remote_jitter_ms: float | None
    """Jitter the remote reported for our stream, or None."""
    playout_delay_ms: float = 0.0
    """Audio buffered ahead of the leg's playout point now (the jitter buffer's delay)."""
    target_delay_ms: float = 0.0
    """The margin the jitter buffer aims for now (from the measured jitter and late packets)."""
    frames_inserted: int = 0
    """Frames the jitter buffer inserted to grow its margin (a slow sender, late packets)."""
    frames_dropped: int = 0
    """Frames the jitter buffer dropped to shrink its margin (a fast sender, calmer network)."""
    resyncs: int = 0
    """Times the playout point jumped (sequence jump, stream moved back)."""


@dataclass(slots=True)
class _Player:
    player_id: str
    source: Any
    slot: int
    leg_id: str | None
    room_id: str | None


@dataclass(slots=True)
class _Recorder:
    room_id: str
    member_id: str
    sink: Any
    recording_id: int | None = None
    rows: np.ndarray | None = None


class MediaEngine:
    """All legs, rooms, players and recorders of one media process.

    Args:
        config: :class:`MediaConfig`.
        on_event: optional callback called with each :mod:`media.events`
            event after the tick that produced it (otherwise poll
            :meth:`next_event`).
    """

    def __init__(self, config: MediaConfig | None = None, on_event: Callable[[MediaEvent], None] | None = None) -> None:
        self.config = c = config or MediaConfig()
        self._jb = PlayoutBuffers(PlayoutSettings(
            ring_frames=c.playout_slots, min_depth_ms=c.jitter_min_ms, max_depth_ms=c.jitter_max_ms,
            initial_depth_ms=c.jitter_initial_ms, jitter_factor=c.jitter_factor,
            adapt_interval_s=c.jitter_adapt_interval_s, quiet_level=c.jitter_quiet_level,
            quiet_wait_s=c.jitter_quiet_wait_s, conceal_gains=tuple(c.conceal_gains), ptime_s=c.ptime_s))
        self.ports = PortAllocator(c.host, c.port_range)
        self.on_event = on_event
        self.legs: dict[str, Leg] = {}
        self.rooms: dict[str, Room] = {}
        self.players: dict[str, _Player] = {}
        self.recorders: dict[tuple[str, str], _Recorder] = {}
        self.events: deque[MediaEvent] = deque()
        self.tick_stats = TickStats()
        self.clock: MediaClock | None = None
        self._member_rooms: dict[str, set[str]] = {}
        self._free_slots: list[int] = []
        self._free_player_slots: list[int] = []
        self._player_count = 0
        self._leg_count = 0
        self._cap = 0
        self._pcap = 0
        self._dirty = True
        self._player_seq = 0
        self._dtmf_tx: set[str] = set()
        self._dtmf_timers: set[str] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_timeout_check = 0.0
        self._detector: DtmfDetector | None = None
        self._slot_leg: dict[int, Leg] = {}
        self._leg_rows: dict[str, int] = {}  # receiving leg id -> its mixer input row
        self._out_map_valid = False
        self._mixer = Mixer()
        self._latch = Latcher(c.latch_packets, c.latch_window_s)
        self._signalled: dict[int, tuple[str, int]] = {}  # slot -> remote from the SDP, when latched
        self._mix_out = np.zeros((1, FRAME), np.int16)
        self._srtp: dict[int, Any] = {}  # slot -> media.srtp.SrtpLeg (issue 12)
        self._srtp_fds: dict[int, tuple[Any, Any]] = {}  # fd -> (SrtpLeg, socket)
        # RFC 4733 events and other non-audio packets of a leg's stream are
        # classified and counted in batches (False: one by one on the slow
        # path, the reference the tests and benchmarks compare against)
        self._batch_events = True
        # prompts played to one leg from a plain array are read for all legs
        # in one gather (media.prompttable); False: one source.read() per
        # player per tick, the reference the tests and benchmarks compare against
        self._batch_prompts = True
        self._prompts = PromptTable()
        self._loose_players: dict[str, _Player] = {}  # players read one by one
        self._table_players: dict[int, _Player] = {}  # player slot -> player read from the prompt table
        self._grow(64, 16)

    # -- storage ---------------------------------------------------------------

    def _grow(self, cap: int, pcap: int) -> None:
        """(Re)allocate the per-slot arrays, keeping existing rows."""
        old = self._cap

        def g(name: str, shape: tuple, dtype: Any, fill: Any = 0) -> None:
            new = np.full(shape, fill, dtype)
            cur = getattr(self, name, None)
            if cur is not None and old:
                new[:old] = cur[:old]
            setattr(self, name, new)

        if cap != old:
            g("_fd", cap, np.int32, -1)
            g("_rip", cap, np.uint32)
            g("_rport", cap, np.int32)
            g("_alaw", cap, bool)
            g("_pt", cap, np.int64)
            g("_dtmf_pt", cap, np.int64, -1)
            g("_ssrc", cap, np.uint32)
            g("_tx_seq", cap, np.int64)
            g("_ts_base", cap, np.int64)
            g("_marker", cap, bool)
            g("_rx_ssrc", cap, np.int64, -1)
            g("_max_seq", cap, np.int64, _NONE)
            g("_base_seq", cap, np.int64, _NONE)
            g("_received", cap, np.int64)
            g("_jitter_q4", cap, np.int64)
            g("_transit", cap, np.int64, _NONE)
            g("_rx_last", cap, np.float64)
            g("_timed_out", cap, bool)
            g("_expected_prior", cap, np.int64)
            g("_received_prior", cap, np.int64)
            g("_tx_packets", cap, np.int64)
            g("_tx_octets", cap, np.int64)
            # what _compile needs of each leg, kept up to date by the calls that change a leg
            g("_on_leg", cap, bool)
            g("_on_recv", cap, bool)
            g("_on_send", cap, bool)
            g("_on_inband", cap, bool)
            self._jb.grow(cap)
            self._latch.grow(cap)
            self._free_slots.extend(range(cap - 1, old - 1, -1))
            self._cap = cap
            self._detector = None
        if pcap != self._pcap:
            self._free_player_slots.extend(range(pcap - 1, self._pcap - 1, -1))
            self._pcap = pcap
            self._prompts.ensure_slots(pcap)
        self._inputs = np.zeros((1 + self._cap + self._pcap, FRAME), np.int16)
        self._recv = rtpio.RecvBuffers(max(256, 2 * self._cap), 256)
        self._tx_buf = np.zeros((self._cap, PACKET), np.uint8)
        # per-tick work arrays, allocated once: fresh large arrays every tick
        # would be mmap'ed and page-faulted in again each time
        self._work_codes = np.zeros((self._cap, FRAME), np.uint8)
        self._work_pcm = np.zeros((self._cap, FRAME), np.int16)
        self._out_map_valid = False
        self._lengths = np.full(self._cap, PACKET, np.int32)
        self._dirty = True

    def _slot(self) -> int:
        if not self._free_slots:
            self._grow(self._cap * 2, self._pcap)
        return self._free_slots.pop()

    def _player_slot(self) -> int:
        if not self._free_player_slots:
            self._grow(self._cap, self._pcap * 2)
        return self._free_player_slots.pop()

    def _leg(self, leg_id: str) -> Leg:
        try:
            return self.legs[leg_id]
        except KeyError:
            raise LocalMediaError(f"no leg {leg_id}") from None

    def _room(self, room_id: str) -> Room:
        try:
            return self.rooms[room_id]
        except KeyError:
            raise LocalMediaError(f"no room {room_id}") from None

    # -- legs ------------------------------------------------------------------

    def create_leg(
        self,
        leg_id: str,
        *,
        call_id: str = "",
        tenant: str = "default",
        remote: tuple[str, int] | None = None,
        payload_types: PayloadTypeMap | None = None,
        codec: str | None = None,
        direction: Direction | str = Direction.SENDRECV,
        inband_dtmf: bool = False,
        rtcp_mux: bool = False,
    ) -> Leg:
        """Open a leg: allocate its socket and start receiving (and sending, once ``remote`` is known).

        Args:
            leg_id: engine-wide id, also its member id in rooms.
            call_id: the call it belongs to (logs and events).
            tenant: owning tenant.
            remote: the peer's RTP address from its SDP (``c=``/``m=``), or None
                until the answer arrives.
            payload_types: negotiated map (:meth:`PayloadTypeMap.from_sdp`);
                default PCMU, PCMA and telephone-event/8000 on 101.
            codec: ``"PCMU"`` or ``"PCMA"``; default the first of those in the map.
            direction: SDP direction from our side.
            inband_dtmf: also detect DTMF tones in the audio (phones without RFC 4733).
            rtcp_mux: the SDP had ``a=rtcp-mux`` (RTCP to the RTP port).

        Returns:
            The :class:`Leg` (``leg.local_port`` goes into our SDP).

        Raises:
            LocalMediaError: duplicate id, no supported codec, or no free port.
        """
        if leg_id in self.legs:
            raise LocalMediaError(f"leg {leg_id} already exists")
        pmap = payload_types or PayloadTypeMap.from_sdp([0, 8, 101], {101: "telephone-event/8000"})
        if codec is None:
            codec = next((pmap.encoding(pt) for pt in pmap.entries if pmap.encoding(pt) in SUPPORTED_CODECS), None)
            if codec is None:
                raise LocalMediaError(f"leg {leg_id}: no supported codec among {sorted(pmap.entries)} (PCMU, PCMA)")
        sock = self.ports.allocate()
        try:
            slot = self._slot()
            leg = Leg(leg_id, call_id, tenant, slot, sock, pmap, codec, Direction(direction), None, inband_dtmf)
        except BaseException:
            self.ports.release(sock)
            raise
        leg.rtcp_mux = rtcp_mux
        self.legs[leg_id] = leg
        self._leg_count += 1
        s = slot
        self._fd[s] = sock.fileno()
        self._ssrc[s] = leg.ssrc
        self._tx_seq[s] = leg.initial_seq
        self._ts_base[s] = leg.timestamp_base
        self._marker[s] = True
        self._reset_rx(s)
        self._tx_packets[s] = self._tx_octets[s] = 0
        self._apply_session(leg)
        if remote is not None:
            self._set_remote(leg, remote)
        else:
            self._rport[s] = 0
        if inband_dtmf and self._detector is not None:
            self._detector.reset(s)
        self._dirty = True
        self._slot_leg[s] = leg
        self._leg_flags(leg)
        leg.log.info("leg %s open on port %d (%s, %s)", leg_id, leg.local_port, codec, leg.direction.value)
        return leg

    def _reset_rx(self, s: int) -> None:
        self._rx_ssrc[s] = -1
        self._jb.reset(s)
        self._max_seq[s] = _NONE
        self._base_seq[s] = _NONE
        self._received[s] = 0
        self._jitter_q4[s] = 0
        self._transit[s] = _NONE
        self._expected_prior[s] = self._received_prior[s] = 0
        self._rx_last[s] = self._now()
        self._timed_out[s] = False

    def _leg_flags(self, leg: Leg) -> None:
        """Record what the next _compile needs of this leg (so it never loops over all legs)."""
        s = leg.slot
        receives = leg.direction.receives
        self._on_leg[s] = True
        self._on_recv[s] = receives
        self._on_send[s] = leg.direction.sends and leg.remote is not None
        self._on_inband[s] = receives and leg.inband_dtmf
        if receives:
            self._leg_rows[leg.leg_id] = 1 + s
        else:
            self._leg_rows.pop(leg.leg_id, None)
        self._out_map_valid = False
        self._dirty = True

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def _apply_session(self, leg: Leg) -> None:
        s = leg.slot
        self._alaw[s] = leg.codec == "PCMA"
        self._pt[s] = leg.audio_payload_type
        dtmf_pt = leg.dtmf_payload_type
        self._dtmf_pt[s] = -1 if dtmf_pt is None else dtmf_pt

    def _set_remote(self, leg: Leg, remote: tuple[str, int]) -> None:
        host, port = remote
        try:
            ip = rtpio.ip_to_int(host)
        except ValueError:
            raise LocalMediaError(f"leg {leg.leg_id}: remote address {host!r} is not an IPv4 address") from None
        if not 0 < port < 65536:
            raise LocalMediaError(f"leg {leg.leg_id}: remote port {port} out of range")
        changed = leg.remote != (host, port)
        leg.remote = (host, port)
        self._rip[leg.slot] = ip
        self._rport[leg.slot] = port
        self._signalled.pop(leg.slot, None)
        if changed:
            self._latch.arm(leg.slot)

    def update_leg(
        self,
        leg_id: str,
        *,
        remote: tuple[str, int] | None = _KEEP,
        payload_types: PayloadTypeMap = _KEEP,
        codec: str = _KEEP,
        direction: Direction | str = _KEEP,
        inband_dtmf: bool = _KEEP,
    ) -> Leg:
        """Apply a new offer/answer (re-INVITE, answer after an early offer); omitted arguments keep their value.

        Raises:
            LocalMediaError: unknown leg or unsupported codec.
        """
        leg = self._leg(leg_id)
        if payload_types is not _KEEP:
            leg.payload_types = payload_types
        if codec is not _KEEP:
            if codec not in SUPPORTED_CODECS:
                raise LocalMediaError(f"leg {leg_id}: codec {codec} not supported (PCMU, PCMA)")
            leg.codec = codec
        if direction is not _KEEP:
            leg.direction = Direction(direction)
            self._rx_last[leg.slot] = self._now()
        if inband_dtmf is not _KEEP:
            leg.inband_dtmf = inband_dtmf
        if remote is not _KEEP:
            if remote is None:
                leg.remote = None
                self._rport[leg.slot] = 0
                self._signalled.pop(leg.slot, None)
                self._latch.close(leg.slot)
            elif self._signalled.get(leg.slot) == tuple(remote):
                pass  # the same SDP address again (hold, codec change): stay latched
            else:
                self._set_remote(leg, remote)
        self._apply_session(leg)
        self._dirty = True
        self._leg_flags(leg)
        leg.log.debug("leg %s updated: %s %s remote=%s", leg_id, leg.codec, leg.direction.value, leg.remote)
        return leg

    def destroy_leg(self, leg_id: str) -> LegStatistics:
        """Close a leg: leave every room, stop players attached to it, release the port.

        Returns:
            Its final :class:`LegStatistics` (for the CDR).
        """
        leg = self._leg(leg_id)
        stats = self.leg_statistics(leg_id)
        for room_id in list(self._member_rooms.get(leg_id, ())):
            self.leave(room_id, leg_id)
        for p in [p for p in self.players.values() if p.leg_id == leg_id]:
            self._finish_player(p, "stopped")
        del self.legs[leg_id]
        if self._srtp.pop(leg.slot, None) is not None:
            self._srtp_fds.pop(leg.sock.fileno(), None)
        self._dtmf_tx.discard(leg_id)
        self._dtmf_timers.discard(leg_id)
        s = leg.slot
        self._fd[s] = -1
        self._rport[s] = 0
        self._on_leg[s] = self._on_recv[s] = self._on_send[s] = self._on_inband[s] = False
        self._slot_leg.pop(s, None)
        self._leg_rows.pop(leg_id, None)
        self._latch.close(s)
        self._signalled.pop(s, None)
        self._free_slots.append(s)
        self._leg_count -= 1
        self.ports.release(leg.sock)
        self._dirty = True
        leg.log.info("leg %s closed: %d received, %d lost, jitter %.1f ms, %d sent", leg_id,
                     stats.packets_received, stats.packets_lost, stats.jitter_ms, stats.packets_sent)
        return stats

    def leg_statistics(self, leg_id: str) -> LegStatistics:
        """Current call-quality figures of a leg (RFC 3550 A.3/A.8 and the remote's RTCP view)."""
        leg = self._leg(leg_id)
        s = leg.slot
        expected = 0 if self._base_seq[s] == _NONE else int(self._max_seq[s] - self._base_seq[s] + 1)
        rr = leg.remote_report
        return LegStatistics(
            leg_id=leg_id,
            packets_received=int(self._received[s]),
            packets_expected=expected,
            packets_lost=max(0, expected - int(self._received[s])),
            jitter_ms=float(self._jitter_q4[s] >> 4) / 8.0,
            late_packets=int(self._jb.late[s]),
            concealed_frames=int(self._jb.concealed[s]),
            malformed_packets=leg.malformed,
            packets_sent=int(self._tx_packets[s]),
            octets_sent=int(self._tx_octets[s]),
            remote_fraction_lost=None if rr is None else rr.fraction_lost / 256.0,
            remote_jitter_ms=None if rr is None else rr.jitter / 8.0,
            playout_delay_ms=self._jb.depth_ms(s),
            target_delay_ms=float(self._jb.target(np.array([s]), self._jitter_q4)[0]) / 8.0,
            frames_inserted=int(self._jb.inserted[s]),
            frames_dropped=int(self._jb.dropped[s]),
            resyncs=int(self._jb.resyncs[s]),
        )

    # -- rooms -----------------------------------------------------------------

    def create_room(self, room_id: str, tenant: str = "default") -> Room:
        """A new, empty room; raises LocalMediaError when the id exists."""
        if room_id in self.rooms:
            raise LocalMediaError(f"room {room_id} already exists")
        room = self.rooms[room_id] = Room(room_id, tenant)
        self._dirty = True
        return room

    def destroy_room(self, room_id: str) -> None:
        """Remove a room: its players stop, its recorders are closed, legs stay open."""
        room = self._room(room_id)
        for member_id, m in list(room.members.items()):
            if m.kind is MemberKind.PLAYER and member_id in self.players:
                self._finish_player(self.players[member_id], "stopped")
            elif m.kind is MemberKind.RECORDER:
                self.stop_recording(room_id, member_id)
            elif member_id in room.members:
                self.leave(room_id, member_id)
        del self.rooms[room_id]
        self._dirty = True

    def join(self, room_id: str, leg_id: str, hears: Iterable[str] | None = None,
             heard_by: Iterable[str] | None = None) -> None:
        """Put a leg into a room with its hear rules (None: everyone else).

        A leg may be in several rooms (an agent consulting); it then hears
        the saturated sum of its rooms.
        """
        room = self._room(room_id)
        self._leg(leg_id)
        room.join(leg_id, MemberKind.LEG, hears, heard_by)
        self._member_rooms.setdefault(leg_id, set()).add(room_id)
        self._dirty = True

    def leave(self, room_id: str, member_id: str) -> None:
        """Take a member out of a room (a player member is stopped)."""
        room = self._room(room_id)
        m = room.leave(member_id)
        rooms = self._member_rooms.get(member_id)
        if rooms is not None:
            rooms.discard(room_id)
            if not rooms:
                del self._member_rooms[member_id]
        if m.kind is MemberKind.PLAYER and member_id in self.players:
            self._finish_player(self.players[member_id], "stopped", in_room=False)
        self._dirty = True

    def set_hearing(self, room_id: str, member_id: str, hears: Iterable[str] | None = _KEEP,
                    heard_by: Iterable[str] | None = _KEEP) -> None:
        """Change who a member hears and is heard by (see :mod:`media.room`)."""
        changes = {k: v for k, v in (("hears", hears), ("heard_by", heard_by)) if v is not _KEEP}
        self._room(room_id).set_hearing(member_id, **changes)
        self._dirty = True

    def apply_hear_set(self, room_id: str, hear_set: HearSet | str, *, caller: str, agent: str,
                       supervisor: str | None = None, music: str | None = None) -> None:
        """Apply a row of the hear-set table (:func:`media.room.apply_hear_set`)."""
        apply_hear_set(self._room(room_id), HearSet(hear_set), caller=caller, agent=agent,
                       supervisor=supervisor, music=music)
        self._dirty = True

    # -- players and recorders ------------------------------------------------------

    def play(self, source: Source, *, leg_id: str | None = None, room_id: str | None = None,
             player_id: str | None = None, heard_by: Iterable[str] | None = None) -> str:
        """Attach a frame source to a leg (it hears it on top of its room) or to a room (a member).

        Args:
            source: a :class:`media.player.Source` (``read() -> int16[160] |
                None``, ``stop()``): prompts, tones, music on hold, TTS, playlists.
            leg_id: play to this leg only.
            room_id: join the room as a speaking member instead; ``heard_by``
                limits who hears it (music on hold: the caller).
            player_id: id to use (default generated); it is the member id in the room.

        Returns:
            The player id; ``PlaybackFinished`` carries it when the source ends.
        """
        if (leg_id is None) == (room_id is None):
            raise LocalMediaError("play() needs exactly one of leg_id and room_id")
        if not callable(getattr(source, "read", None)):
            raise LocalMediaError(f"play() source {source!r} has no read()")
        if player_id is None:
            self._player_seq += 1
            player_id = f"player-{self._player_seq}"
        if player_id in self.players or player_id in self.legs:
            raise LocalMediaError(f"player id {player_id} is already in use")
        if leg_id is not None:
            self._leg(leg_id)
        else:
            room = self._room(room_id)  # type: ignore[arg-type]
            room.join(player_id, MemberKind.PLAYER, hears=set(), heard_by=heard_by)
            self._member_rooms.setdefault(player_id, set()).add(room_id)  # type: ignore[arg-type]
        slot = self._player_slot()
        player = self.players[player_id] = _Player(player_id, source, slot, leg_id, room_id)
        if self._batch_prompts and leg_id is not None and batchable(source):
            self._prompts.start(slot, source.samples)
            self._table_players[slot] = player
        else:
            self._loose_players[player_id] = player
        self._dirty = True
        return player_id

    def stop_playback(self, player_id: str) -> None:
        """Stop a player now (``PlaybackFinished`` with reason ``"stopped"``)."""
        p = self.players.get(player_id)
        if p is None:
            raise LocalMediaError(f"no player {player_id}")
        self._finish_player(p, "stopped")

    def _finish_player(self, p: _Player, reason: str, in_room: bool = True) -> None:
        if self.players.pop(p.player_id, None) is None:
            return
        if self._loose_players.pop(p.player_id, None) is None:
            self._table_players.pop(p.slot, None)
            self._prompts.stop(p.slot)
            p.source.finished = True  # the table played it: the source object was never read
        if reason == "stopped" and callable(getattr(p.source, "stop", None)):
            p.source.stop()
        self._free_player_slots.append(p.slot)
        if in_room and p.room_id is not None and p.room_id in self.rooms and p.player_id in self.rooms[p.room_id].members:
            self.rooms[p.room_id].leave(p.player_id)
            self._member_rooms.pop(p.player_id, None)
        self._dirty = True
        self._emit(PlaybackFinished(p.player_id, p.leg_id, p.room_id, reason))

    def record(self, room_id: str, member_id: str, sink: Any,
               channels: Iterable[Iterable[str]], recording_id: int | None = None) -> None:
        """Add a recorder member to a room; it is heard by nobody.

        Args:
            room_id: the room.
            member_id: the recorder's member id.
            sink: a :class:`media.recorder.Recorder` (then ``recording_id``
                from ``Recorder.start()`` is required, and exactly two
                channels, caller then agent; all recordings of one Recorder
                get one ``write_batch`` per tick), or any :class:`FrameSink`
                (``write_frame(int16[len(channels), 160])`` per tick).
            channels: the members mixed into each channel:
                ``[[caller], [agent]]`` records the caller left and the agent
                right; ``[[caller, agent]]`` a mono mix (FrameSink only).

        Raises:
            LocalMediaError: unknown room, duplicate member, or a sink that
                fits neither shape.
        """
        chans = [list(c) for c in channels]
        if callable(getattr(sink, "write_batch", None)):
            if recording_id is None or len(chans) != 2:
                raise LocalMediaError("record() with a Recorder needs a recording_id and two channels (caller, agent)")
        elif not callable(getattr(sink, "write_frame", None)):
            raise LocalMediaError(f"record() sink {sink!r} has neither write_batch() nor write_frame()")
        room = self._room(room_id)
        room.join(member_id, MemberKind.RECORDER, channels=chans)
        self.recorders[(room_id, member_id)] = _Recorder(room_id, member_id, sink, recording_id)
        self._out_map_valid = False
        self._dirty = True

    def stop_recording(self, room_id: str, member_id: str) -> Any:
        """Remove a recorder member and finish its recording.

        Returns:
            For a :class:`media.recorder.Recorder`, the future of its
            ``RecordingResult`` (``Recorder.stop``); otherwise None (the
            sink's ``close()`` was called).
        """
        rec = self.recorders.pop((room_id, member_id), None)
        self._out_map_valid = False
        if rec is None:
            raise LocalMediaError(f"no recorder {member_id} in room {room_id}")
        self._room(room_id).leave(member_id)
        self._dirty = True
        if rec.recording_id is not None:
            return rec.sink.stop(rec.recording_id)
        rec.sink.close()
        return None

    def set_channels(self, room_id: str, member_id: str, channels: Iterable[Iterable[str]]) -> None:
        """Change what a recorder member mixes into each channel; the recording goes on.

        The number of channels stays fixed (a file's layout cannot change
        mid-recording): a barging supervisor joins the agent's channel, a
        supervisor who intercepted the call replaces the agent.

        Raises:
            LocalMediaError: no such recorder, or a different channel count.
        """
        if (room_id, member_id) not in self.recorders:
            raise LocalMediaError(f"no recorder {member_id} in room {room_id}")
        room = self._room(room_id)
        chans = [list(c) for c in channels]
        if len(chans) != len(room.members[member_id].channels):
            raise LocalMediaError(f"recorder {member_id} in room {room_id} has "
                                  f"{len(room.members[member_id].channels)} channels, not {len(chans)}")
        room.set_hearing(member_id, channels=chans)
        self._dirty = True

    # -- DTMF ------------------------------------------------------------------

    def send_dtmf(self, leg_id: str, digits: str, duration_ms: float = 100.0, gap_ms: float = 60.0) -> None:
        """Queue RFC 4733 events for ``digits`` (RFC 4733 §2.5.1); audio pauses while they go out.

        Raises:
            LocalMediaError: unknown leg, telephone-event not negotiated, or a
                character that is not a DTMF digit.
        """
        leg = self._leg(leg_id)
        if leg.dtmf_payload_type is None:
            raise LocalMediaError(f"leg {leg_id}: telephone-event was not negotiated")
        gap = max(0, int(round(gap_ms / 1000 / self.config.ptime_s)))
        for digit in digits:
            packets = rfc4733_packets(digit, duration_ms)
            for i, (payload, marker) in enumerate(packets):
                leg.dtmf_queue.append((payload, marker, i == 0))
            leg.dtmf_queue.extend([None] * gap)
        self._dtmf_tx.add(leg_id)

    # -- events ----------------------------------------------------------------

    def _emit(self, event: MediaEvent) -> None:
        self.events.append(event)

    def next_event(self) -> MediaEvent | None:
        """The oldest undelivered event, None when there is none."""
        return self.events.popleft() if self.events else None

    def _deliver(self) -> None:
        if self.on_event is None:
            return
        while self.events:
            ev = self.events.popleft()
            try:
                self.on_event(ev)
            except Exception:  # a consumer bug must not stop the media clock
                logger.exception("media on_event callback failed for %r", ev)

    # -- compile -----------------------------------------------------------------

    def _compile(self) -> None:
        # leg sets from the per-slot flags (vectorised; slot order)
        self._rx_slots = np.flatnonzero(self._on_leg)
        self._rx_fds = self._fd[self._rx_slots].astype(np.int32)
        self._play_slots = np.flatnonzero(self._on_recv)
        self._receives_mask = self._on_recv.copy()
        self._some_not_receiving = len(self._play_slots) != len(self._rx_slots)
        self._inband_slots = np.flatnonzero(self._on_inband)
        if len(self._inband_slots) and self._detector is None:
            self._detector = DtmfDetector(self._cap)
        tx_slots = np.flatnonzero(self._on_send)
        if not np.array_equal(tx_slots, getattr(self, "_tx_slots", None)):
            # the sending positions moved (a leg started or stopped sending: hold, a
            # direction change): the output map indexes them, so it is rebuilt
            self._out_map_valid = False
        self._tx_slots = tx_slots
        self._tx_alaw = self._alaw[self._tx_slots]
        tx_pos = np.full(self._cap, -1, np.intp)
        tx_pos[self._tx_slots] = np.arange(len(self._tx_slots))
        input_row = self._leg_rows
        room_players = {p.player_id: 1 + self._cap + p.slot for p in self.players.values() if p.room_id}
        if room_players:
            input_row = {**input_row, **room_players}
        # only rooms whose version or speakers' input rows changed are re-packed
        if self._mixer.sync(self.rooms.values(), input_row):
            self._out_map_valid = False
        if len(self._mix_out) < max(1, self._mixer.n_rows):
            self._mix_out = np.zeros((max(1, self._mixer.n_rows), FRAME), np.int16)
        if not self._out_map_valid:
            self._map_outputs(tx_pos)
        direct = [(int(tx_pos[self.legs[p.leg_id].slot]), 1 + self._cap + p.slot)
                  for p in self.players.values() if p.leg_id is not None and tx_pos[self.legs[p.leg_id].slot] >= 0]
        self._direct = direct
        self._direct_pos = np.array([pos for pos, _ in direct], np.intp)
        self._direct_rows = np.array([row for _, row in direct], np.intp)
        self._direct_unique = len(set(self._direct_pos.tolist())) == len(direct)
        self._dirty = False

    def _map_outputs(self, tx_pos: np.ndarray) -> None:
        """Output row -> sending position of its leg (primary row, extra rows of a leg in
        several rooms) and recorder channels; redone only when the rows or the legs changed."""
        keys = self._mixer.output_keys
        slot_of = {leg_id: leg.slot for leg_id, leg in self.legs.items()} if len(keys) else {}
        member = np.fromiter((-2 if k is None else slot_of.get(k[1], -1) for k in keys), np.int64, len(keys))
        pos = np.where(member >= 0, tx_pos[np.maximum(member, 0)], -1)
        rows = np.flatnonzero(pos >= 0)
        p = pos[rows]
        first = np.zeros(len(rows), bool)
        first[np.unique(p, return_index=True)[1]] = True  # a leg's first row in output order is primary
        self._prim_rows = rows[first].astype(np.intp)
        self._prim_pos = p[first].astype(np.intp)
        self._extra = list(zip(rows[~first].tolist(), p[~first].tolist()))
        rec_rows: dict[tuple[str, str], list[int]] = {}
        recorders = self.recorders
        for r in np.flatnonzero(member == -1).tolist():
            room_id, member_id, _channel = keys[r]
            if (room_id, member_id) in recorders:
                rec_rows.setdefault((room_id, member_id), []).append(r)
        groups: dict[int, list[_Recorder]] = {}
        self._frame_recs = []
        for key, rec in recorders.items():
            rec.rows = np.array(rec_rows.get(key, []), np.intp)
            if rec.recording_id is not None and len(rec.rows) == 2:
                groups.setdefault(id(rec.sink), []).append(rec)
            elif rec.recording_id is None and len(rec.rows):
                self._frame_recs.append(rec)
        self._batch_recs = [
            (recs[0].sink, np.array([r.recording_id for r in recs]), np.array([r.rows[0] for r in recs], np.intp),
             np.array([r.rows[1] for r in recs], np.intp), recs)
            for recs in groups.values()
        ]
        self._out_map_valid = True

    # -- the tick ----------------------------------------------------------------

    def run_due(self, now: float) -> int:
        """Run every tick due at ``now`` (starting the clock on first use); returns how many ran."""
        if self.clock is None:
            self.clock = MediaClock(now, self.config.ptime_s, max_catchup_ticks=self.config.max_catchup_ticks)
        ticks = self.clock.due(now)
        for k in ticks:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                self.run_tick(k, now)
            except Exception:  # our bug: log it, keep the clock alive
                logger.exception("media tick %d failed", k)
            self.tick_stats.add(time.perf_counter() - t0, now - self.clock.deadline(k), time.thread_time() - c0)
        return len(ticks)

    def run_tick(self, tick: int, now: float) -> None:
        """One media tick: receive, play out, mix, record, send (see the module doc)."""
        if self._dirty:
            self._compile()
        self._receive(now)
        self._playout(tick, now)
        self._read_players()
        out = self._mixer.mix(self._inputs, self._mix_out)
        self._record(out)
        self._send(tick, out)
        self._housekeeping(tick, now)
        self._deliver()

    def _receive(self, now: float) -> None:
        if self._latch.fresh:
            self._latch.start(now)
        # One pass over the sockets per tick, at most ``max_per_socket`` datagrams
        # from each, in chunks of sockets whose worst case fits the buffer.  (Calling
        # recv_batch again while it filled the buffer restarted at the first socket:
        # under a receive storm -- a peer sending faster than a tick drains, or the
        # backlog after a slow compile at 1,000 calls -- the loop never ended and
        # the clock stopped ticking.)  What is left waits for the next tick; the
        # kernel drops beyond the socket buffer.
        buf = self._recv
        fds = self._rx_fds
        per = max(1, self.config.max_per_socket)
        step = max(1, buf.capacity // per)
        for start in range(0, len(fds), step):
            n = buf.receive(fds[start:start + step], per)
            if n:
                if start:
                    buf.owners[:n] += start
                self._classify(n, now)

    def _classify(self, n: int, now: float) -> None:
        self._classify_rows(n, now)
        if self._latch.open:
            self._latch_rows(n, now)

    def _latch_rows(self, n: int, now: float) -> None:
        """RFC 4961 latching (:mod:`media.latch`): count this batch's valid packets per source."""
        buf = self._recv
        d = buf.data[:n]
        slots = self._rx_slots[buf.owners[:n]]
        b1 = d[:, 1]
        pt = (b1 & 0x7F).astype(np.int64)
        ssrc = ((d[:, 8].astype(np.int64) << 24) | (d[:, 9].astype(np.int64) << 16)
                | (d[:, 10].astype(np.int64) << 8) | d[:, 11])
        # rule 2: version 2, not RTCP (RFC 5761 §4), the stream's SSRC, a negotiated payload type
        valid = ((d[:, 0] & 0xC0) == 0x80) & (buf.lengths[:n] >= 12) & ~((b1 >= 192) & (b1 <= 223))
        valid &= (ssrc == self._rx_ssrc[slots]) & ((pt == self._pt[slots]) | (pt == self._dtmf_pt[slots]) | (pt == 13))
        if self._srtp:  # SRTP headers are not authenticated here: such legs never latch
            valid &= ~np.isin(slots, np.fromiter(self._srtp, np.int64, len(self._srtp)))
        for slot, ip, port in self._latch.observe(slots, buf.ips[:n], buf.ports[:n], ssrc, valid, self._rip,
                                                   self._rport):
            leg = self._slot_leg.get(slot)
            if leg is None:
                continue
            old = leg.remote
            host = rtpio.int_to_ip(ip)
            if old is not None:
                self._signalled[slot] = old
            leg.remote = (host, port)
            self._rip[slot] = ip
            self._rport[slot] = port
            if old is None:
                self._leg_flags(leg)
            leg.log.info("leg %s: latched to %s:%d (SDP said %s)", leg.leg_id, host, port, old)
            self._emit(RtpLatched(leg.leg_id, leg.call_id, old, (host, port)))

    def _classify_rows(self, n: int, now: float) -> None:
        buf = self._recv
        d = buf.data[:n]
        slots = self._rx_slots[buf.owners[:n]]
        b1 = d[:, 1]
        seq = (d[:, 2].astype(np.int64) << 8) | d[:, 3]
        ts = (d[:, 4].astype(np.int64) << 24) | (d[:, 5].astype(np.int64) << 16) | (d[:, 6].astype(np.int64) << 8) | d[:, 7]
        ssrc = (d[:, 8].astype(np.int64) << 24) | (d[:, 9].astype(np.int64) << 16) | (d[:, 10].astype(np.int64) << 8) | d[:, 11]
        # plain audio: RFC 3550 §5.1 fixed header only (V=2, no P/X/CC), one G.711 frame
        plain = (d[:, 0] == 0x80) & (buf.lengths[:n] == PACKET) & ((b1 & 0x7F) == self._pt[slots])
        if self._some_not_receiving:
            plain &= self._receives_mask[slots]
        if self._srtp:  # SRTP legs: every packet is authenticated on the slow path
            plain &= ~np.isin(slots, np.fromiter(self._srtp, np.int64, len(self._srtp)))
        rx_ssrc = self._rx_ssrc[slots]
        new = plain & (rx_ssrc == -1)
        if new.any():
            self._adopt_streams(slots[new], ssrc[new])
            rx_ssrc = self._rx_ssrc[slots]
        fast = plain & (ssrc == rx_ssrc)
        if fast.all():
            self._insert(slots, seq, ts, d[:, 12:PACKET], now)
            return
        if fast.any():
            self._insert(slots[fast], seq[fast], ts[fast], d[fast, 12:PACKET], now)
        rows = np.flatnonzero(~fast)
        if self._batch_events:
            rows = self._classify_events(rows, d, slots, b1, seq, ts, ssrc, now)
        for i in rows:
            self._slow_packet(int(slots[i]), bytes(d[i, : buf.lengths[i]]), now)

    def _adopt_streams(self, slots: np.ndarray, ssrc: np.ndarray) -> None:
        """Take the SSRC of each leg's first plain audio packet as its stream (RFC 3550 §8.2), in one batch.

        Legs without a stream yet (new, or reset) used to learn it on the
        per-packet slow path, with every packet of the batch that carried it:
        a backlog on 2,000 new legs (a tick after adding 1,000 calls) cost
        seconds of one tick and the clock fell behind for good.
        """
        uniq, first = np.unique(slots, return_index=True)
        for s in uniq.tolist():
            self._reset_rx(s)
        self._rx_ssrc[uniq] = ssrc[first]

    def _classify_events(self, rows: np.ndarray, d: np.ndarray, slots: np.ndarray, b1: np.ndarray,
                         seq: np.ndarray, ts: np.ndarray, ssrc: np.ndarray, now: float) -> np.ndarray:
        """Handle the plain non-audio packets of ``rows`` in one batch; return the rows left for the slow path.

        A row is plain when its leg's stream is known and it needs no
        parsing beyond the fixed header: first octet 0x80 (RFC 3550 §5.1:
        version 2, no padding, no extension, no CSRC), not RTCP (RFC 5761
        §4), the leg's current SSRC, a receiving leg without SRTP, and for a
        telephone-event a 4-octet payload at least (RFC 4733 §2.3).  Plain
        rows are counted as received in one :meth:`_insert` (they use
        sequence numbers but carry no audio); telephone-events go to the
        leg's :class:`media.dtmf.Rfc4733Receiver` as integers read with
        numpy (no ``bytes``, ``RtpPacket`` or one-element arrays per
        packet), comfort noise (RFC 3389, PT 13) is ignored, anything else
        counts as malformed -- exactly what :meth:`_slow_packet` does.

        A leg with any non-plain packet in this batch (a new SSRC, RTCP,
        SRTP, a short event) keeps all its non-audio packets on the slow
        path, so the order in which one leg's packets are applied is the
        arrival order either way.
        """
        if not len(rows):
            return rows
        rs = slots[rows]
        ln = self._recv.lengths[rows]
        rb1 = b1[rows]
        pt = rb1 & 0x7F
        is_event = pt == self._dtmf_pt[rs]
        plain = ((d[rows, 0] == 0x80) & (ln >= 12) & ~((rb1 >= 192) & (rb1 <= 223))
                 & (ssrc[rows] == self._rx_ssrc[rs]) & self._receives_mask[rs] & (~is_event | (ln >= 16)))
        if self._srtp:
            plain &= ~np.isin(rs, np.fromiter(self._srtp, np.int64, len(self._srtp)))
        if not plain.all():
            plain &= ~np.isin(rs, rs[~plain])  # the leg's other packets follow its slow one
            if not plain.any():
                return rows
        cheap = rows[plain]
        cs = rs[plain]
        self._insert(cs, seq[cheap], ts[cheap], None, now)
        is_event = is_event[plain]
        other = ~is_event & (pt[plain] != 13)  # RFC 3389 comfort noise is expected and ignored
        if other.any():
            for s in cs[other].tolist():
                self._slot_leg[s].malformed += 1
        if is_event.any():
            er = cheap[is_event]
            p = d[er, 12:16]
            dur = (p[:, 2].astype(np.int64) << 8) | p[:, 3]
            slot_leg = self._slot_leg
            timers = self._dtmf_timers
            # RFC 4733 §2.3: event, E bit (0x80 of the second octet), duration; marker from the RTP header
            for s, event, flags, duration, t, m, src in zip(
                    cs[is_event].tolist(), p[:, 0].tolist(), p[:, 1].tolist(), dur.tolist(),
                    ts[er].tolist(), (b1[er] >= 0x80).tolist(), ssrc[er].tolist()):
                leg = slot_leg[s]
                for digit in leg.dtmf_receiver.receive_event(event, flags >= 0x80, duration, t, m, src, now):
                    self._emit(DtmfReceived(leg.leg_id, leg.call_id, digit.digit, digit.duration_ms, digit.source))
                timers.add(leg.leg_id)
        return rows[~plain]

    def _insert(self, slots: np.ndarray, seq16: np.ndarray, ts: np.ndarray, payload: np.ndarray | None,
                now: float) -> None:
        """Store G.711 frames in the playout rings and update RFC 3550 A.1/A.3/A.8 figures.

        ``payload=None`` accounts packets of the stream that carry no audio
        (RFC 4733 events, comfort noise): they use sequence numbers, so they
        count as received, but they are not played and their timestamps do
        not enter the jitter estimate.
        """
        ref = self._max_seq[slots]
        unset = ref == _NONE
        if unset.any():
            # first packets of a stream: the first one (per leg) anchors the extension
            first = np.zeros(self._cap, np.int64)
            first[slots[unset][::-1]] = seq16[unset][::-1]
            ref = np.where(unset, _SEQ_BASE + first[slots], ref)
            self._base_seq[slots[unset]] = _SEQ_BASE + first[slots[unset]]
        diff = ((seq16 - (ref & 0xFFFF) + 0x8000) & 0xFFFF) - 0x8000
        ext = ref + diff
        np.maximum.at(self._max_seq, slots, ext)
        np.add.at(self._received, slots, 1)
        self._rx_last[slots] = now
        self._timed_out[slots] = False
        self._jb.put(slots, ext, payload, now, self._jitter_q4)
        if payload is None:
            return
        # RFC 3550 A.8, in arrival order per leg (rounds over each leg's k-th packet)
        arrival = int(now * 8000)
        order = np.argsort(slots, kind="stable")
        ss = slots[order]
        starts = np.r_[0, np.flatnonzero(ss[1:] != ss[:-1]) + 1]
        rank = np.arange(len(ss)) - np.repeat(starts, np.diff(np.r_[starts, len(ss)]))
        for r in range(int(rank.max()) + 1 if len(rank) else 0):
            idx = order[rank == r]
            s = slots[idx]
            transit = (arrival - ts[idx]) & 0xFFFFFFFF
            prev = self._transit[s]
            have = prev != _NONE
            dd = (((transit - prev) + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            j = self._jitter_q4[s]
            self._jitter_q4[s] = np.where(have, j + np.abs(dd) - ((j + 8) >> 4), j)
            self._transit[s] = transit

    def _slow_packet(self, s: int, data: bytes, now: float) -> None:
        leg = self._slot_leg.get(s)
        if leg is None:
            return
        try:
            srtp = self._srtp.get(s)
            if srtp is not None:
                data = srtp.unprotect(data)  # RemoteMediaError when it does not authenticate
            if is_rtcp(data):
                self._rtcp_received(leg, data, now)
                return
            pkt = RtpPacket.parse(data)
        except RemoteMediaError as exc:
            leg.malformed += 1
            leg.log.debug("leg %s: dropped packet: %s", leg.leg_id, exc)
            return
        if not leg.direction.receives:
            return
        audio = pkt.payload_type == leg.audio_payload_type and len(pkt.payload) == FRAME
        if pkt.ssrc != self._rx_ssrc[s]:
            if not audio and self._rx_ssrc[s] != -1:
                # an event or stray packet from another source: not our stream
                leg.malformed += pkt.payload_type != leg.dtmf_payload_type
            else:
                if self._rx_ssrc[s] != -1:
                    leg.log.info("leg %s: new SSRC %08x (was %08x)", leg.leg_id, pkt.ssrc, self._rx_ssrc[s])
                self._reset_rx(s)
                self._rx_ssrc[s] = pkt.ssrc
        one = np.array([s], np.intp)
        seq = np.array([pkt.sequence_number], np.int64)
        ts = np.array([pkt.timestamp], np.int64)
        if audio:
            self._insert(one, seq, ts, np.frombuffer(pkt.payload, np.uint8)[None, :], now)
            return
        if pkt.ssrc == self._rx_ssrc[s]:
            self._insert(one, seq, ts, None, now)  # same stream, no audio: counts as received
        if pkt.payload_type == leg.dtmf_payload_type:
            for digit in leg.dtmf_receiver.receive(pkt.payload, pkt.timestamp, pkt.marker, pkt.ssrc, now):
                self._emit(DtmfReceived(leg.leg_id, leg.call_id, digit.digit, digit.duration_ms, digit.source))
            self._dtmf_timers.add(leg.leg_id)
        elif pkt.payload_type != 13:  # RFC 3389 comfort noise is expected and ignored
            leg.malformed += 1
        self._rx_last[s] = now
        self._timed_out[s] = False

    def _rtcp_received(self, leg: Leg, data: bytes, now: float) -> None:
        for p in parse_rtcp(data):
            blocks: tuple[RtcpReportBlock, ...] = ()
            if isinstance(p, RtcpSenderReport):
                leg.last_sr = (ntp_middle_32(p.ntp_timestamp), now)
                blocks = p.reports
            elif isinstance(p, RtcpReceiverReport):
                blocks = p.reports
            for b in blocks:
                if b.ssrc == leg.ssrc:
                    leg.remote_report = b

    def _playout(self, tick: int, now: float) -> None:
        s = self._play_slots
        self._inputs[1 : 1 + self._cap] = 0
        if not len(s):
            return
        k = len(s)
        pcm = self._work_pcm[:k]
        self._jb.play(s, self._alaw[s], now, tick, self._jitter_q4, pcm, self._work_codes[:k])
        self._inputs[1 + s] = pcm
        if len(self._inband_slots) and self._detector is not None:
            frames = self._inputs[1 + self._inband_slots]
            for digit in self._detector.process(frames, self._inband_slots):
                leg = self._slot_leg.get(digit.leg)
                if leg is not None:
                    self._emit(DtmfReceived(leg.leg_id, leg.call_id, digit.digit, digit.duration_ms, "inband"))

    def _read_players(self) -> None:
        base = 1 + self._cap
        done: list[_Player] = []
        if self._table_players:
            for slot in self._prompts.read(self._inputs, base).tolist():
                # its last frame is in its row already: it is sent this tick, then the player ends
                done.append(self._table_players[slot])
        for p in self._loose_players.values():
            try:
                frame = p.source.read()
            except (MediaError, OSError) as exc:
                logger.warning("player %s failed: %s", p.player_id, exc)
                frame = None
            if frame is None:
                self._inputs[base + p.slot] = 0
                done.append(p)
            else:
                self._inputs[base + p.slot] = frame
        for p in done:
            self._finish_player(p, "completed")

    def _record(self, out: np.ndarray) -> None:
        failed = []
        for sink, ids, left, right, recs in self._batch_recs:
            try:
                sink.write_batch(ids, out[left], out[right])  # one queue item per tick, never blocks
            except Exception as exc:  # a closed recorder must not stop the calls
                logger.error("recorder %r failed: %s", sink, exc)
                failed.extend((rec, str(exc)) for rec in recs)
        for rec in self._frame_recs:
            try:
                rec.sink.write_frame(out[rec.rows])
            except Exception as exc:  # a full disk must not stop the calls
                logger.error("recorder %s in room %s failed: %s", rec.member_id, rec.room_id, exc)
                failed.append((rec, str(exc)))
        for rec, err in failed:
            self.recorders.pop((rec.room_id, rec.member_id), None)
            self._out_map_valid = False
            if rec.member_id in self.rooms[rec.room_id].members:
                self.rooms[rec.room_id].leave(rec.member_id)
            self._dirty = True
            self._emit(RecordingFailed(rec.room_id, rec.member_id, err))

    def _send(self, tick: int, out: np.ndarray) -> None:
        s = self._tx_slots
        k = len(s)
        if not k:
            return
        pcm = self._work_pcm[:k]
        if len(self._prim_pos) != k:
            pcm[...] = 0  # legs in no room send silence
        if len(self._prim_pos):
            pcm[self._prim_pos] = out[self._prim_rows]
        if self._extra or self._direct:
            acc = pcm.astype(np.int32)
            for row, pos in self._extra:
                acc[pos] += out[row]
            if self._direct and self._batch_prompts:
                # every leg's own player (an IVR prompt) in one fancy-index add;
                # np.add.at (unbuffered, slow for rows) only when a leg has two
                if self._direct_unique:
                    acc[self._direct_pos] += self._inputs[self._direct_rows]
                else:
                    np.add.at(acc, self._direct_pos, self._inputs[self._direct_rows])
            else:  # the reference path: one row at a time
                for pos, row in self._direct:
                    acc[pos] += self._inputs[row]
            np.clip(acc, -32768, 32767, out=acc)
            pcm = acc.astype(np.int16)
        pkt = self._tx_buf[:k]
        codes = g711.ulaw_encode(pcm, out=self._work_codes[:k])
        if self._tx_alaw.any():
            codes[self._tx_alaw] = g711.alaw_encode(pcm[self._tx_alaw])
        pkt[:, 12:] = codes
        ts = (self._ts_base[s] + tick * FRAME) & 0xFFFFFFFF
        hdr = np.empty((k, 3), ">u4")
        hdr[:, 0] = (0x80 << 24) | (((self._marker[s].astype(np.int64) << 7) | self._pt[s]) << 16) | (self._tx_seq[s] & 0xFFFF)
        hdr[:, 1] = ts
        hdr[:, 2] = self._ssrc[s]
        pkt[:, :12] = hdr.view(np.uint8).reshape(k, 12)
        lengths = self._lengths[:k]
        lengths[...] = PACKET
        if self._dtmf_tx:
            self._dtmf_rows(tick, pkt, lengths)
        sent = self._transmit(self._fd[s], pkt, lengths, self._rip[s], self._rport[s])
        if sent < k:
            logger.debug("media tick %d: kernel refused %d of %d packets", tick, k - sent, k)
        self._tx_seq[s] += 1
        self._marker[s] = False
        self._tx_packets[s] += 1
        self._tx_octets[s] += lengths - 12

    def _transmit(self, fds: np.ndarray, pkt: np.ndarray, lengths: np.ndarray, ips: np.ndarray,
                  ports: np.ndarray) -> int:
        """Hand one tick's packets to the kernel (a subclass may send differently)."""
        if self._srtp_fds:
            from media.srtp import transmit_batch

            return transmit_batch(rtpio.send_batch, self._srtp_fds, fds, pkt, lengths, ips, ports)
        return rtpio.send_batch(fds, pkt, lengths, ips, ports)

    def set_srtp(self, leg_id: str, suite: str, local_key: bytes, remote_key: bytes) -> None:
        """Protect this leg's RTP/RTCP with SRTP (keys from :mod:`sip.sdes`, RFC 4568).

        From the next tick on, packets sent are protected and packets received
        must authenticate (others are counted as malformed and dropped).

        Raises:
            LocalMediaError: unknown leg, unsupported suite or bad key length.
        """
        from media.srtp import SrtpLeg

        leg = self._leg(leg_id)
        ctx = SrtpLeg(suite, local_key, remote_key)
        self._srtp[leg.slot] = ctx
        self._srtp_fds[leg.sock.fileno()] = (ctx, leg.sock)
        leg.log.info("leg %s: SRTP %s", leg_id, suite)

    def srtp_leg(self, leg_id: str) -> Any:
        """The leg's :class:`media.srtp.SrtpLeg` (counters), or None when plain RTP."""
        return self._srtp.get(self._leg(leg_id).slot)

    def _dtmf_rows(self, tick: int, pkt: np.ndarray, lengths: np.ndarray) -> None:
        pos_of = {int(slot): i for i, slot in enumerate(self._tx_slots)}
        for leg_id in list(self._dtmf_tx):
            leg = self.legs[leg_id]
            i = pos_of.get(leg.slot)
            if not leg.dtmf_queue:
                self._dtmf_tx.discard(leg_id)
                continue
            item = leg.dtmf_queue.popleft()
            if item is None or i is None:
                continue
            payload, marker, first = item
            if first:
                leg.dtmf_event_ts = (leg.timestamp_base + tick * FRAME) & 0xFFFFFFFF
            b = bytes(RtpPacket(leg.dtmf_payload_type or 101, int(self._tx_seq[leg.slot]) & 0xFFFF,
                                leg.dtmf_event_ts, leg.ssrc, payload, marker))
            pkt[i, : len(b)] = np.frombuffer(b, np.uint8)
            lengths[i] = len(b)

    def _housekeeping(self, tick: int, now: float) -> None:
        if self._latch.open and tick % 25 == 0:
            self._latch.expire(now)
        for leg_id in list(self._dtmf_timers):
            leg = self.legs.get(leg_id)
            if leg is None or leg.dtmf_receiver.get_timer() is None:
                self._dtmf_timers.discard(leg_id)
                continue
            for digit in leg.dtmf_receiver.handle_timer(now):
                self._emit(DtmfReceived(leg.leg_id, leg.call_id, digit.digit, digit.duration_ms, digit.source))
        c = self.config
        if c.rtp_timeout_s > 0 and now - self._last_timeout_check >= 0.5:
            self._last_timeout_check = now
            s = self._play_slots
            if len(s):
                silent = now - self._rx_last[s]
                hit = (silent >= c.rtp_timeout_s) & ~self._timed_out[s]
                for i in np.flatnonzero(hit):
                    slot = int(s[i])
                    self._timed_out[slot] = True
                    leg = self._slot_leg[slot]
                    leg.log.warning("leg %s: no RTP for %.1f s", leg.leg_id, silent[i])
                    self._emit(RtpTimedOut(leg.leg_id, leg.call_id, float(silent[i])))
        if c.rtcp_interval_s > 0:
            period = max(1, int(round(c.rtcp_interval_s / c.ptime_s)))
            phase = tick % period
            for slot in self._tx_slots[self._tx_slots % period == phase]:
                self._send_rtcp(self._slot_leg[int(slot)], tick, now)

    def _report_block(self, leg: Leg, now: float) -> RtcpReportBlock | None:
        s = leg.slot
        if self._rx_ssrc[s] < 0 or self._base_seq[s] == _NONE:
            return None
        expected = int(self._max_seq[s] - self._base_seq[s] + 1)
        received = int(self._received[s])
        exp_i = expected - int(self._expected_prior[s])
        rec_i = received - int(self._received_prior[s])
        self._expected_prior[s] = expected
        self._received_prior[s] = received
        lost_i = exp_i - rec_i
        fraction = 0 if exp_i <= 0 or lost_i <= 0 else min(255, (lost_i << 8) // exp_i)
        lsr, dlsr = 0, 0
        last_sr = leg.last_sr
        if last_sr is not None:
            lsr = last_sr[0]
            dlsr = int((now - last_sr[1]) * 65536)
        # extended highest sequence number: cycles << 16 | max_seq (RFC 3550 A.3)
        highest = int(self._max_seq[s] - _SEQ_BASE) & 0xFFFFFFFF
        return RtcpReportBlock(int(self._rx_ssrc[s]), fraction, expected - received, highest,
                               int(self._jitter_q4[s] >> 4), lsr, dlsr)

    def _send_rtcp(self, leg: Leg, tick: int, now: float) -> None:
        if leg.remote is None:
            return
        s = leg.slot
        block = self._report_block(leg, now)
        blocks = (block,) if block else ()
        if self._tx_packets[s]:
            report: RtcpSenderReport | RtcpReceiverReport = RtcpSenderReport(
                leg.ssrc, ntp_from_unix(time.time()), (leg.timestamp_base + tick * FRAME) & 0xFFFFFFFF,
                int(self._tx_packets[s]) & 0xFFFFFFFF, int(self._tx_octets[s]) & 0xFFFFFFFF, blocks)
        else:
            report = RtcpReceiverReport(leg.ssrc, blocks)
        port = leg.remote[1] if leg.rtcp_mux else leg.remote[1] + 1
        # RFC 3550 §6.1: every compound RTCP packet carries an SDES CNAME
        cname = RtcpSourceDescription.cname(leg.ssrc, f"ctiengine-{leg.leg_id}@{self.config.host}")
        try:
            data = bytes(report) + bytes(cname)
            srtp = self._srtp.get(s)
            leg.sock.sendto(data if srtp is None else srtp.protect_rtcp(data), (leg.remote[0], port))
            leg.rtcp_sent += 1
        except OSError as exc:
            leg.log.debug("leg %s: RTCP not sent: %s", leg.leg_id, exc)

    # -- running on asyncio --------------------------------------------------------

    async def start(self, app: object | None = None) -> None:
        """Start ticking on the running asyncio loop (a service of ``engine.app.Engine``)."""
        if self._loop is not None:
            raise LocalMediaError("media engine already started")
        self._loop = asyncio.get_running_loop()
        if self.config.gil_switch_interval_s is not None:
            sys.setswitchinterval(self.config.gil_switch_interval_s)
        self.clock = MediaClock(self._loop.time(), self.config.ptime_s, max_catchup_ticks=self.config.max_catchup_ticks)
        self._handle = self._loop.call_at(self.clock.deadline(), self._on_timer)
        logger.info("media engine started (%s socket IO)", rtpio.IMPLEMENTATION)

    def _on_timer(self) -> None:
        loop = self._loop
        assert loop is not None and self.clock is not None
        self.run_due(loop.time())
        self._handle = loop.call_at(self.clock.deadline(), self._on_timer)

    async def stop(self) -> None:
        """Stop ticking, close every recorder, player and leg."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.close()
        self._loop = None

    def close(self) -> None:
        """Release every resource (legs, recorders, players) without a loop."""
        for room_id in list(self.rooms):
            self.destroy_room(room_id)
        for p in list(self.players.values()):
            self._finish_player(p, "stopped")
        for leg_id in list(self.legs):
            self.destroy_leg(leg_id)
