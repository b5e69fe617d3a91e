"""RTP and RTCP wire formats and per-stream statistics (RFC 3550, RFC 3551).

Theory of operation
-------------------
This module is sans-IO: it turns bytes into frozen dataclasses and back
(``Packet.parse(data)`` / ``bytes(packet)``, so ``bytes(RtpPacket.parse(b))
== b`` for every well-formed packet, padding and header extensions
included), and keeps the receive-side statistics of one stream given the
arrival time that the caller hands in.  It never reads a clock and never
touches a socket.

* :class:`RtpPacket` -- RFC 3550 §5.1 fixed header, CSRC list, §5.3.1 header
  extension kept opaque (profile + words), §5 padding kept byte-exact.
* :class:`RtcpSenderReport`, :class:`RtcpReceiverReport` with
  :class:`RtcpReportBlock` (RFC 3550 §6.4.1/§6.4.2),
  :class:`RtcpSourceDescription` (§6.5, the CNAME), :class:`RtcpBye` (§6.6); :func:`parse_rtcp` splits a compound packet (§6.1) and keeps
  unknown packet types as :class:`RtcpUnknown` so a compound round-trips.
* :class:`PayloadTypeMap` -- payload number ↔ encoding from the SDP
  ``a=rtpmap`` lines, with the RFC 3551 §6 static table as the default.
* :class:`ReceiveStatistics` -- RFC 3550 A.1 sequence validation with the
  extended highest sequence number, A.3 cumulative and interval loss
  (fraction lost), A.8 interarrival jitter, and the LSR/DLSR fields of a
  report block.  The media engine's batched receive path keeps the same
  figures vectorised over all legs; this class is the readable reference
  and what a single-stream user (tests, the load driver) uses.

Bad input raises :class:`media.errors.RemoteMediaError` naming the field;
the media loop drops such a packet, counts it and goes on.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Iterable, Union

from media.errors import LocalMediaError, RemoteMediaError

__all__ = [
    "RTP_VERSION",
    "RTCP_SR",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_BYE",
    "RTCP_APP",
    "RtpPacket",
    "RtcpReportBlock",
    "RtcpSenderReport",
    "RtcpReceiverReport",
    "RtcpBye",
    "RtcpSourceDescription",
    "RtcpUnknown",
    "RtcpPacket",
    "parse_rtcp",
    "is_rtcp",
    "PayloadTypeMap",
    "ReceiveStatistics",
    "ntp_from_unix",
    "ntp_middle_32",
    "seq_diff",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
# RFC 3550 §12.1 RTCP packet types
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

# Seconds between the NTP epoch (1900) and the Unix epoch (1970).
NTP_UNIX_OFFSET_S = 2_208_988_800

_HEADER = struct.Struct("!BBHII")
_RTCP_HEADER = struct.Struct("!BBH")


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 16-bit sequence numbers (RFC 1982)."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def ntp_from_unix(unix_s: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for a Unix time in seconds."""
    whole = int(unix_s)
    frac = int((unix_s - whole) * (1 << 32)) & 0xFFFFFFFF
    return (((whole + NTP_UNIX_OFFSET_S) & 0xFFFFFFFF) << 32) | frac


def ntp_middle_32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as carried in LSR (§6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def _u(value: int, bits: int, name: str) -> None:
    if not 0 <= value < (1 << bits):
        raise LocalMediaError(f"RTP {name} {value} does not fit in {bits} bits")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1)."""

    payload_type: int
    """7-bit payload type; map it to an encoding with :class:`PayloadTypeMap`."""
    sequence_number: int
    """16-bit sequence number, +1 per packet, wraps."""
    timestamp: int
    """32-bit sampling instant of the first payload octet (8 kHz for G.711)."""
    ssrc: int
    """32-bit synchronisation source identifier."""
    payload: bytes = b""
    """The payload, without padding."""
    marker: bool = False
    """Marker bit: start of a talkspurt (RFC 3551 §4.1) or of a DTMF event."""
    csrc: tuple[int, ...] = ()
    """Contributing sources (at most 15)."""
    extension_profile: int | None = None
    """16-bit profile of the §5.3.1 header extension, or None when absent."""
    extension: bytes = b""
    """Header extension body (a multiple of 4 bytes), kept opaque."""
    padding: bytes = b""
    """§5 padding as received (last byte = its length); empty when none."""

    def __post_init__(self) -> None:
        _u(self.payload_type, 7, "payload_type")
        _u(self.sequence_number, 16, "sequence_number")
        _u(self.timestamp, 32, "timestamp")
        _u(self.ssrc, 32, "ssrc")
        if len(self.csrc) > 15:
            raise LocalMediaError(f"RTP packet has {len(self.csrc)} CSRCs, at most 15 allowed")
        if len(self.extension) % 4:
            raise LocalMediaError("RTP header extension length is not a multiple of 4 bytes")
        if self.padding and self.padding[-1] != len(self.padding):
            raise LocalMediaError("RTP padding must end with its own length")

    @classmethod
    def parse(cls, data: bytes) -> "RtpPacket":
        """Parse one RTP packet.

        Raises:
            RemoteMediaError: the packet is too short, not version 2, or its
                CSRC count, extension or padding run past the end.
        """
        n = len(data)
        if n < RTP_HEADER_SIZE:
            raise RemoteMediaError(f"RTP packet is {n} bytes, the fixed header needs 12")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RemoteMediaError(f"RTP version is {b0 >> 6}, expected 2")
        cc = b0 & 0x0F
        pos = RTP_HEADER_SIZE + 4 * cc
        if pos > n:
            raise RemoteMediaError(f"RTP CSRC count {cc} runs past the {n}-byte packet")
        csrc = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_SIZE) if cc else ()
        ext_profile: int | None = None
        ext = b""
        if b0 & 0x10:  # RFC 3550 §5.3.1: 16-bit profile, 16-bit length in words
            if pos + 4 > n:
                raise RemoteMediaError("RTP header extension header runs past the packet")
            ext_profile, words = struct.unpack_from("!HH", data, pos)
            end = pos + 4 + 4 * words
            if end > n:
                raise RemoteMediaError(f"RTP header extension of {words} words runs past the packet")
            ext = bytes(data[pos + 4 : end])
            pos = end
        padding = b""
        end = n
        if b0 & 0x20:  # §5: the last octet counts the padding, itself included
            pad = data[-1]
            if pad == 0 or pos + pad > n:
                raise RemoteMediaError(f"RTP padding length {pad} is invalid for a {n}-byte packet")
            padding = bytes(data[n - pad :])
            end = n - pad
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension_profile=ext_profile,
            extension=ext,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension_profile is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(b0, b1, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_profile is not None:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        parts.append(self.padding)
        return b"".join(parts)


# --- RTCP ------------------------------------------------------------------

_REPORT_BLOCK = struct.Struct("!IB3sIIII")


@dataclass(frozen=True, slots=True)
class RtcpReportBlock:
    """A reception report block (RFC 3550 §6.4.1), 24 bytes."""

    ssrc: int
    """The source this block reports on."""
    fraction_lost: int
    """Fraction lost since the previous report, in 1/256 units (8 bits)."""
    packets_lost: int
    """Cumulative packets lost, signed 24-bit (duplicates can make it negative)."""
    highest_sequence: int
    """Extended highest sequence number received (cycles << 16 | max_seq)."""
    jitter: int
    """Interarrival jitter in timestamp units (A.8)."""
    lsr: int = 0
    """Middle 32 bits of the last SR's NTP timestamp, 0 if none received."""
    dlsr: int = 0
    """Delay since that SR in 1/65536 s units, 0 if none received."""

    SIZE: ClassVar[int] = 24

    @classmethod
    def parse(cls, data: bytes) -> "RtcpReportBlock":
        """Parse a 24-byte report block; raises RemoteMediaError when short."""
        if len(data) < cls.SIZE:
            raise RemoteMediaError(f"RTCP report block is {len(data)} bytes, needs 24")
        ssrc, fraction, lost3, high, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data)
        lost = int.from_bytes(lost3, "big", signed=True)
        return cls(ssrc, fraction, lost, high, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        # RFC 3550 A.3: clamp the signed 24-bit cumulative loss
        lost = max(-0x800000, min(0x7FFFFF, self.packets_lost))
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost & 0xFF,
            lost.to_bytes(3, "big", signed=True),
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )


def _rtcp_header(count: int, packet_type: int, body_len: int, padded: bool = False) -> bytes:
    # RFC 3550 §6.4.1: length is in 32-bit words minus one, header included
    return _RTCP_HEADER.pack(0x80 | (0x20 if padded else 0) | count, packet_type, (body_len + 4) // 4 - 1)


def _rtcp_body(data: bytes, expected_type: int, name: str) -> tuple[int, bytes]:
    if len(data) < 4:
        raise RemoteMediaError(f"RTCP {name} is {len(data)} bytes, the header needs 4")
    b0, pt, words = _RTCP_HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RemoteMediaError(f"RTCP {name} version is {b0 >> 6}, expected 2")
    if pt != expected_type:
        raise RemoteMediaError(f"RTCP packet type {pt} is not {name} ({expected_type})")
    end = 4 * (words + 1)
    if end > len(data):
        raise RemoteMediaError(f"RTCP {name} length {end} runs past the {len(data)}-byte datagram")
    body = data[4:end]
    if b0 & 0x20:
        pad = body[-1] if body else 0
        if pad == 0 or pad > len(body):
            raise RemoteMediaError(f"RTCP {name} padding length {pad} is invalid")
        body = body[:-pad]
    return b0 & 0x1F, bytes(body)


def _blocks(body: bytes, count: int, name: str) -> tuple[RtcpReportBlock, ...]:
    if len(body) < 24 * count:
        raise RemoteMediaError(f"RTCP {name} announces {count} report blocks but has room for {len(body) // 24}")
    return tuple(RtcpReportBlock.parse(body[24 * i : 24 * i + 24]) for i in range(count))


@dataclass(frozen=True, slots=True)
class RtcpSenderReport:
    """RTCP SR (RFC 3550 §6.4.1): sender info plus reception reports."""

    ssrc: int
    """SSRC of the sender of this report."""
    ntp_timestamp: int
    """64-bit NTP wallclock time when the report was sent."""
    rtp_timestamp: int
    """The same instant in the sender's RTP timestamp units."""
    packet_count: int
    """Packets sent since the start of transmission."""
    octet_count: int
    """Payload octets sent since the start of transmission."""
    reports: tuple[RtcpReportBlock, ...] = ()
    """Reception report blocks (at most 31)."""
    extension: bytes = b""
    """Profile-specific extension after the blocks, kept opaque."""

    packet_type: ClassVar[int] = RTCP_SR

    @classmethod
    def parse(cls, data: bytes) -> "RtcpSenderReport":
        """Parse one SR (the first packet of ``data``); raises RemoteMediaError."""
        count, body = _rtcp_body(data, RTCP_SR, "SR")
        if len(body) < 24:
            raise RemoteMediaError(f"RTCP SR body is {len(body)} bytes, sender info needs 24")
        ssrc, ntp_hi, ntp_lo, rtp_ts, packets, octets = struct.unpack_from("!6I", body)
        reports = _blocks(body[24:], count, "SR")
        return cls(ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, packets, octets, reports, body[24 + 24 * count :])

    def __bytes__(self) -> bytes:
        if len(self.reports) > 31:
            raise LocalMediaError(f"RTCP SR has {len(self.reports)} report blocks, at most 31 allowed")
        body = struct.pack(
            "!6I",
            self.ssrc,
            (self.ntp_timestamp >> 32) & 0xFFFFFFFF,
            self.ntp_timestamp & 0xFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        ) + b"".join(bytes(r) for r in self.reports) + self.extension
        return _rtcp_header(len(self.reports), RTCP_SR, len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpReceiverReport:
    """RTCP RR (RFC 3550 §6.4.2): reception reports from a non-sender."""

    ssrc: int
    """SSRC of the sender of this report."""
    reports: tuple[RtcpReportBlock, ...] = ()
    """Reception report blocks (at most 31)."""
    extension: bytes = b""
    """Profile-specific extension after the blocks, kept opaque."""

    packet_type: ClassVar[int] = RTCP_RR

    @classmethod
    def parse(cls, data: bytes) -> "RtcpReceiverReport":
        """Parse one RR (the first packet of ``data``); raises RemoteMediaError."""
        count, body = _rtcp_body(data, RTCP_RR, "RR")
        if len(body) < 4:
            raise RemoteMediaError("RTCP RR has no SSRC")
        (ssrc,) = struct.unpack_from("!I", body)
        return cls(ssrc, _blocks(body[4:], count, "RR"), body[4 + 24 * count :])

    def __bytes__(self) -> bytes:
        if len(self.reports) > 31:
            raise LocalMediaError(f"RTCP RR has {len(self.reports)} report blocks, at most 31 allowed")
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports) + self.extension
        return _rtcp_header(len(self.reports), RTCP_RR, len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpBye:
    """RTCP BYE (RFC 3550 §6.6): the listed sources are leaving."""

    sources: tuple[int, ...]
    """SSRC/CSRCs that leave."""
    reason: bytes = b""
    """Optional reason for leaving (UTF-8 text on the wire)."""

    packet_type: ClassVar[int] = RTCP_BYE

    @classmethod
    def parse(cls, data: bytes) -> "RtcpBye":
        """Parse one BYE; raises RemoteMediaError."""
        count, body = _rtcp_body(data, RTCP_BYE, "BYE")
        if len(body) < 4 * count:
            raise RemoteMediaError(f"RTCP BYE announces {count} sources in {len(body)} bytes")
        sources = struct.unpack_from(f"!{count}I", body)
        rest = body[4 * count :]
        reason = b""
        if rest:
            n = rest[0]
            if 1 + n > len(rest):
                raise RemoteMediaError(f"RTCP BYE reason of {n} bytes runs past the packet")
            reason = rest[1 : 1 + n]
        return cls(tuple(sources), reason)

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason:
            r = self.reason[:255]
            body += bytes([len(r)]) + r
            body += b"\x00" * (-len(body) % 4)
        return _rtcp_header(len(self.sources), RTCP_BYE, len(body)) + body


SDES_CNAME = 1  # RFC 3550 §6.5.1


@dataclass(frozen=True, slots=True)
class RtcpSourceDescription:
    """RTCP SDES (RFC 3550 §6.5): per source, a list of (item type, value) pairs.

    Every compound RTCP packet must carry a CNAME (§6.1); the engine sends
    one with each report.
    """

    chunks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...]
    """``((ssrc, ((item_type, value), ...)), ...)``."""

    packet_type: ClassVar[int] = RTCP_SDES

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> "RtcpSourceDescription":
        """An SDES with one chunk holding a CNAME item."""
        return cls(((ssrc, ((SDES_CNAME, cname.encode()[:255]),)),))

    @classmethod
    def parse(cls, data: bytes) -> "RtcpSourceDescription":
        """Parse one SDES; raises RemoteMediaError when a chunk runs past the packet."""
        count, body = _rtcp_body(data, RTCP_SDES, "SDES")
        chunks = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(body):
                raise RemoteMediaError(f"RTCP SDES announces {count} chunks but ends at chunk {len(chunks) + 1}")
            (ssrc,) = struct.unpack_from("!I", body, pos)
            pos += 4
            items = []
            while True:
                if pos >= len(body):
                    raise RemoteMediaError("RTCP SDES chunk has no terminating null item")
                kind = body[pos]
                if kind == 0:  # end of the item list, then pad to a 32-bit boundary
                    pos += 1
                    pos += -pos % 4
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise RemoteMediaError(f"RTCP SDES item {kind} runs past the packet")
                n = body[pos + 1]
                items.append((kind, bytes(body[pos + 2 : pos + 2 + n])))
                pos += 2 + n
            chunks.append((ssrc, tuple(items)))
        return cls(tuple(chunks))

    def __bytes__(self) -> bytes:
        body = b""
        for ssrc, items in self.chunks:
            chunk = struct.pack("!I", ssrc)
            for kind, value in items:
                chunk += bytes([kind, len(value[:255])]) + value[:255]
            chunk += b"\x00"
            chunk += b"\x00" * (-len(chunk) % 4)
            body += chunk
        return _rtcp_header(len(self.chunks), RTCP_SDES, len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """Any other RTCP packet (SDES, APP, feedback), kept as raw bytes."""

    packet_type: int
    """RTCP packet type number."""
    data: bytes
    """The whole packet, header included."""

    def __bytes__(self) -> bytes:
        return self.data


RtcpPacket = Union[RtcpSenderReport, RtcpReceiverReport, RtcpSourceDescription, RtcpBye, RtcpUnknown]
_RTCP_TYPES = {RTCP_SR: RtcpSenderReport, RTCP_RR: RtcpReceiverReport, RTCP_SDES: RtcpSourceDescription,
               RTCP_BYE: RtcpBye}


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: payload types 64-95 (RTCP 192-223) mark RTCP on a shared port."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Split a compound RTCP datagram (RFC 3550 §6.1) into packets.

    ``b"".join(bytes(p) for p in parse_rtcp(d)) == d`` for unpadded input.

    Raises:
        RemoteMediaError: a length field runs past the datagram, or a packet
            is malformed.
    """
    packets: list[RtcpPacket] = []
    pos = 0
    n = len(data)
    if n < 4:
        raise RemoteMediaError(f"RTCP datagram is {n} bytes, a header needs 4")
    while pos < n:
        if pos + 4 > n:
            raise RemoteMediaError(f"RTCP compound has {n - pos} trailing bytes at offset {pos}")
        _, pt, words = _RTCP_HEADER.unpack_from(data, pos)
        end = pos + 4 * (words + 1)
        if end > n:
            raise RemoteMediaError(f"RTCP packet at offset {pos} has length {end - pos}, past the datagram")
        chunk = bytes(data[pos:end])
        kind = _RTCP_TYPES.get(pt)
        packets.append(kind.parse(chunk) if kind else RtcpUnknown(pt, chunk))
        pos = end
    return packets


# --- payload types -----------------------------------------------------------

# RFC 3551 §6 table 4/5: the static audio payload types we may meet.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    13: ("CN", 8000),
    18: ("G729", 8000),
}


@dataclass(slots=True)
class PayloadTypeMap:
    """Payload type number ↔ (encoding, clock rate) for one RTP session.

    Built from the SDP media description: ``a=rtpmap:<pt> <name>/<rate>``
    entries (RFC 4566 §6) override the RFC 3551 static table; dynamic types
    (96-127) exist only when mapped.  Encoding names compare case-insensitively
    and are stored upper-case (``"PCMU"``, ``"TELEPHONE-EVENT"``).
    """

    entries: dict[int, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def from_sdp(cls, formats: Iterable[int], rtpmap: dict[int, str] | None = None) -> "PayloadTypeMap":
        """Build from an m= line's format list and its rtpmap values.

        Args:
            formats: payload numbers on the ``m=`` line, in preference order.
            rtpmap: ``{pt: "PCMU/8000"}`` from the ``a=rtpmap`` attributes.

        Raises:
            RemoteMediaError: a dynamic type has no rtpmap, or an rtpmap
                value is not ``name/rate``.
        """
        rtpmap = rtpmap or {}
        entries: dict[int, tuple[str, int]] = {}
        for pt in formats:
            if not 0 <= pt <= 127:
                raise RemoteMediaError(f"SDP payload type {pt} is outside 0-127")
            if pt in rtpmap:
                text = rtpmap[pt].strip()
                name, _, rest = text.partition("/")
                rate = rest.partition("/")[0]
                if not name or not rate.isdigit():
                    raise RemoteMediaError(f"SDP rtpmap for payload {pt} is {text!r}, expected name/rate")
                entries[pt] = (name.upper(), int(rate))
            elif pt in STATIC_PAYLOAD_TYPES:
                entries[pt] = STATIC_PAYLOAD_TYPES[pt]
            else:
                raise RemoteMediaError(f"SDP payload type {pt} is dynamic but has no rtpmap")
        return cls(entries)

    def encoding(self, payload_type: int) -> str | None:
        """The encoding name for a payload type, None when not negotiated."""
        e = self.entries.get(payload_type)
        return e[0] if e else None

    def payload_type(self, encoding: str, clock_rate: int = 8000) -> int | None:
        """The first payload number negotiated for an encoding, or None."""
        want = encoding.upper()
        for pt, (name, rate) in self.entries.items():
            if name == want and rate == clock_rate:
                return pt
        return None


# --- receive statistics -----------------------------------------------------

MAX_DROPOUT = 3000  # RFC 3550 A.1
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2
RTP_SEQ_MOD = 1 << 16


@dataclass(slots=True)
class ReceiveStatistics:
    """Receive-side figures of one RTP source (RFC 3550 A.1, A.3, A.8).

    Feed every packet with :meth:`add` and the arrival time in seconds (any
    monotonic origin); read :meth:`report_block` for RTCP and the properties
    for CDR call-quality figures.  Sans-IO: time is always passed in.
    """

    clock_rate: int = 8000
    ssrc: int | None = None
    max_seq: int = 0
    cycles: int = 0
    base_seq: int = 0
    bad_seq: int = RTP_SEQ_MOD + 1
    probation: int = MIN_SEQUENTIAL
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    jitter_q4: int = 0
    """A.8 jitter scaled by 16 (integer arithmetic as in the RFC's code)."""
    _transit: int | None = None
    _last_sr: int = 0
    _last_sr_time: float | None = None

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def add(self, packet: RtpPacket, arrival_s: float) -> bool:
        """Account one received packet; False when A.1 validation rejects it."""
        if self.ssrc is None:
            self.ssrc = packet.ssrc
            self._init_seq(packet.sequence_number)
            self.max_seq = (packet.sequence_number - 1) & 0xFFFF
            self.probation = MIN_SEQUENTIAL
        elif packet.ssrc != self.ssrc:
            # A new source on the leg (re-INVITE, transfer): restart the figures.
            self.ssrc = packet.ssrc
            self._transit = None
            self.jitter_q4 = 0
            self._init_seq(packet.sequence_number)
            self.max_seq = (packet.sequence_number - 1) & 0xFFFF
            self.probation = MIN_SEQUENTIAL
        if not self._update_seq(packet.sequence_number):
            return False
        # RFC 3550 A.8: D = (Rj - Ri) - (Sj - Si) in timestamp units
        arrival = int(arrival_s * self.clock_rate)
        transit = (arrival - packet.timestamp) & 0xFFFFFFFF
        if self._transit is not None:
            d = (transit - self._transit) & 0xFFFFFFFF
            if d >= 0x80000000:
                d -= 0x100000000
            d = abs(d)
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4)
        self._transit = transit
        return True

    def _update_seq(self, seq: int) -> bool:
        # RFC 3550 A.1 update_seq(), transcribed
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted below
        self.received += 1
        return True

    @property
    def extended_max_seq(self) -> int:
        """Extended highest sequence number received (A.3)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the first valid one (A.3)."""
        if self.ssrc is None or self.probation:
            return 0
        return self.extended_max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative when duplicates arrived."""
        return self.expected - self.received

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units (A.8)."""
        return self.jitter_q4 >> 4

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return 1000.0 * self.jitter / self.clock_rate

    def sender_report_received(self, report: RtcpSenderReport, arrival_s: float) -> None:
        """Remember the SR for the LSR/DLSR fields (§6.4.1)."""
        self._last_sr = ntp_middle_32(report.ntp_timestamp)
        self._last_sr_time = arrival_s

    def report_block(self, now_s: float) -> RtcpReportBlock:
        """A report block for this source, closing the current interval (A.3).

        Raises:
            LocalMediaError: nothing has been received yet.
        """
        if self.ssrc is None:
            raise LocalMediaError("no RTP received yet: cannot build a report block")
        expected = self.expected
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval == 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        dlsr = 0
        if self._last_sr_time is not None:
            dlsr = int((now_s - self._last_sr_time) * 65536) & 0xFFFFFFFF
        return RtcpReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            packets_lost=self.lost,
            highest_sequence=self.extended_max_seq & 0xFFFFFFFF,
            jitter=self.jitter,
            lsr=self._last_sr,
            dlsr=dlsr,
        )
