"""One RTP leg: a socket, the negotiated session, and its per-leg state.

Theory of operation
-------------------
A leg is one RTP stream of one SIP dialog (ARCHITECTURE.md "The call
model").  The call engine creates it from the SDP offer/answer with
:meth:`media.engine.MediaEngine.create_leg` and changes it on a re-INVITE
with ``update_leg``.  The fields that the tick needs for every leg at once
(file descriptor, remote address, SSRC, sequence number, playout buffer) live
in the engine's numpy arrays at index :attr:`Leg.slot`; this object keeps what
is handled per leg in Python: the negotiated payload types, the RFC 4733
receiver and the digits queued for sending, remote RTCP reports, and the
call id for logging.

Direction follows the SDP attribute (RFC 4566 §6, RFC 3264 §5.1) *from the
engine's point of view*: ``sendrecv``, ``sendonly`` (we send, ignore what
arrives), ``recvonly`` (we only receive), ``inactive``.  A phone that puts us
on hold with ``a=sendonly`` in its offer makes our answer ``recvonly``.
"""
from __future__ import annotations

import enum
import logging
import random
import socket
from collections import deque
from dataclasses import dataclass, field

from media.dtmf import Rfc4733Receiver
from media.errors import LocalMediaError
from media.rtp import PayloadTypeMap, RtcpReportBlock

__all__ = ["Direction", "Leg", "CallLogger", "SUPPORTED_CODECS"]

logger = logging.getLogger(__name__)

SUPPORTED_CODECS = ("PCMU", "PCMA")


class CallLogger(logging.LoggerAdapter):
    """Prefixes every line with the call id (STYLE.md §9)."""

    def process(self, msg, kwargs):  # type: ignore[no-untyped-def]
        return f"[{self.extra['call_id']}] {msg}", kwargs  # type: ignore[index]


class Direction(enum.Enum):
    """SDP direction from the engine's side (RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    # identity tests: Enum equality and hashing run Python code, and the
    # engine asks these for every leg when it recompiles
    @property
    def sends(self) -> bool:
        """We transmit RTP on the leg."""
        return self is Direction.SENDRECV or self is Direction.SENDONLY

    @property
    def receives(self) -> bool:
        """We use the RTP that arrives on the leg."""
        return self is Direction.SENDRECV or self is Direction.RECVONLY


@dataclass(slots=True)
class Leg:
    """Per-leg state kept in Python (the hot fields live in engine arrays)."""

    leg_id: str
    call_id: str
    tenant: str
    slot: int
    sock: socket.socket
    payload_types: PayloadTypeMap
    codec: str = "PCMU"
    direction: Direction = Direction.SENDRECV
    remote: tuple[str, int] | None = None
    inband_dtmf: bool = False
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    # RFC 3550 §5.1: random initial sequence number and timestamp
    initial_seq: int = field(default_factory=lambda: random.getrandbits(16))
    timestamp_base: int = field(default_factory=lambda: random.getrandbits(32))
    dtmf_receiver: Rfc4733Receiver = field(default_factory=Rfc4733Receiver)
    dtmf_queue: deque = field(default_factory=deque)
    """Pending RFC 4733 packets: ``(payload, marker, event_start)`` tuples."""
    remote_report: RtcpReportBlock | None = None
    """The last report block the remote sent about our stream (its view of loss/jitter)."""
    rtcp_sent: int = 0
    rtcp_mux: bool = False
    """RTCP goes to the RTP port (SDP ``a=rtcp-mux``, RFC 5761) instead of port + 1."""
    last_sr: tuple[int, float] | None = None
    """LSR of the remote's last SR and when it arrived (for our report blocks)."""
    dtmf_event_ts: int = 0
    """RTP timestamp of the RFC 4733 event being sent (§2.5.1.2: constant per event)."""
    malformed: int = 0
    """Packets dropped as unparsable or with an unnegotiated payload type."""
    log: logging.LoggerAdapter = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.codec not in SUPPORTED_CODECS:
            raise LocalMediaError(f"leg {self.leg_id}: codec {self.codec} not supported (PCMU, PCMA)")
        self.log = CallLogger(logger, {"call_id": self.call_id or self.leg_id})
        self.dtmf_receiver = Rfc4733Receiver(call_id=self.call_id)

    @property
    def audio_payload_type(self) -> int:
        """Payload number of the codec in use (from the SDP map, else RFC 3551 static)."""
        pt = self.payload_types.payload_type(self.codec)
        return pt if pt is not None else (0 if self.codec == "PCMU" else 8)

    @property
    def dtmf_payload_type(self) -> int | None:
        """Payload number of ``telephone-event/8000``, None when not negotiated."""
        return self.payload_types.payload_type("TELEPHONE-EVENT")

    @property
    def local_port(self) -> int:
        """The leg's local RTP port (for the SDP answer)."""
        return self.sock.getsockname()[1]
