"""RTP/RTCP wire formats round-trip byte-exactly; statistics follow RFC 3550 A.1/A.3/A.8."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.errors import LocalMediaError, RemoteMediaError
from media.rtp import (
    PayloadTypeMap,
    ReceiveStatistics,
    RtcpBye,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpSourceDescription,
    RtcpUnknown,
    RtpPacket,
    is_rtcp,
    ntp_from_unix,
    ntp_middle_32,
    parse_rtcp,
    seq_diff,
)

# A PCMU packet as a SIP phone sends it: V=2, M=1, PT=0, seq 0x1234, ts 0xdeadbeef.
PCMU = bytes.fromhex("80801234deadbeef01020304") + b"\xff" * 160


def test_parse_known_bytes() -> None:
    p = RtpPacket.parse(PCMU)
    assert (p.payload_type, p.marker, p.sequence_number, p.timestamp, p.ssrc) == (0, True, 0x1234, 0xDEADBEEF, 0x01020304)
    assert p.payload == b"\xff" * 160 and p.csrc == () and p.extension_profile is None
    assert bytes(p) == PCMU


rtp_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension_profile=st.none() | st.integers(0, 0xFFFF),
    extension=st.integers(0, 4).map(lambda w: bytes(range(4 * w))),
    padding=st.integers(0, 12).map(lambda n: b"" if n == 0 else b"\x00" * (n - 1) + bytes([n])),
)


@settings(max_examples=300, deadline=None)
@given(rtp_packets)
def test_rtp_round_trip(p: RtpPacket) -> None:
    if p.extension_profile is None and p.extension:
        p = RtpPacket(p.payload_type, p.sequence_number, p.timestamp, p.ssrc, p.payload, p.marker, p.csrc, None, b"", p.padding)
    b = bytes(p)
    assert RtpPacket.parse(b) == p
    assert bytes(RtpPacket.parse(b)) == b


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_rtp_parse_never_crashes(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RemoteMediaError:
        return
    assert bytes(p) == data


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x80\x00", "fixed header needs 12"),
        (bytes.fromhex("40000001000000000000000a"), "version is 1"),
        (bytes.fromhex("83000001000000000000000a"), "CSRC count 3"),
        (bytes.fromhex("90000001000000000000000a"), "extension header runs past"),
        (bytes.fromhex("90000001000000000000000a00010002"), "extension of 2 words"),
        (bytes.fromhex("a0000001000000000000000a00"), "padding length 0"),
        (bytes.fromhex("a0000001000000000000000a20"), "padding length 32"),
    ],
)
def test_rtp_malformed_named(data: bytes, message: str) -> None:
    with pytest.raises(RemoteMediaError, match=message):
        RtpPacket.parse(data)


def test_rtp_local_errors() -> None:
    with pytest.raises(LocalMediaError, match="payload_type 128"):
        RtpPacket(128, 0, 0, 0)
    with pytest.raises(LocalMediaError, match="16 CSRCs"):
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16)))


block = st.builds(
    RtcpReportBlock,
    ssrc=st.integers(0, 0xFFFFFFFF),
    fraction_lost=st.integers(0, 255),
    packets_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=st.integers(0, 0xFFFFFFFF),
    jitter=st.integers(0, 0xFFFFFFFF),
    lsr=st.integers(0, 0xFFFFFFFF),
    dlsr=st.integers(0, 0xFFFFFFFF),
)
blocks = st.lists(block, max_size=5).map(tuple)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, (1 << 64) - 1),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    blocks,
    blocks,
)
def test_rtcp_sr_rr_round_trip(ssrc, ntp, rtp_ts, pc, oc, sr_blocks, rr_blocks) -> None:
    sr = RtcpSenderReport(ssrc, ntp, rtp_ts, pc, oc, sr_blocks)
    rr = RtcpReceiverReport(ssrc, rr_blocks)
    bye = RtcpBye((ssrc,), b"hangup")
    compound = bytes(sr) + bytes(rr) + bytes(bye)
    assert len(compound) % 4 == 0
    assert parse_rtcp(compound) == [sr, rr, bye]
    assert b"".join(bytes(p) for p in parse_rtcp(compound)) == compound
    assert RtcpSenderReport.parse(bytes(sr)) == sr and bytes(RtcpSenderReport.parse(bytes(sr))) == bytes(sr)
    assert RtcpReceiverReport.parse(bytes(rr)) == rr


def test_rtcp_known_rr_bytes() -> None:
    # RR from SSRC 1 with one block about SSRC 2: 10/256 lost, 5 cumulative lost
    data = bytes.fromhex("81c90007" "00000001" "00000002" "0a000005" "00010064" "00000020" "11223344" "00008000")
    (rr,) = parse_rtcp(data)
    assert isinstance(rr, RtcpReceiverReport)
    b = rr.reports[0]
    assert (b.ssrc, b.fraction_lost, b.packets_lost, b.highest_sequence, b.jitter, b.lsr, b.dlsr) == (
        2, 10, 5, 0x10064, 32, 0x11223344, 0x8000)
    assert bytes(rr) == data
    assert is_rtcp(data) and not is_rtcp(PCMU)


def test_rtcp_sdes_unknown_kept_and_errors() -> None:
    sdes = bytes.fromhex("81ca0003" "00000001" "01036162" "63000000")
    app = bytes.fromhex("80cc0002" "00000001" "74657374")
    rr = bytes(RtcpReceiverReport(1))
    pkts = parse_rtcp(rr + sdes + app)
    assert pkts[1] == RtcpSourceDescription.cname(1, "abc")
    assert isinstance(pkts[2], RtcpUnknown) and pkts[2].packet_type == 204
    assert b"".join(map(bytes, pkts)) == rr + sdes + app
    two = RtcpSourceDescription(((7, ((1, b"x" * 7), (2, b"name"))), (8, ())))
    assert RtcpSourceDescription.parse(bytes(two)) == two
    with pytest.raises(RemoteMediaError, match="no terminating null item"):
        RtcpSourceDescription.parse(bytes.fromhex("81ca0002" "00000001" "01026161"))
    with pytest.raises(RemoteMediaError, match="item 1 runs past"):
        RtcpSourceDescription.parse(bytes.fromhex("81ca0002" "00000001" "01056161"))
    with pytest.raises(RemoteMediaError, match="past the datagram"):
        parse_rtcp(rr + sdes[:-4])
    with pytest.raises(RemoteMediaError, match="announces 2 report blocks"):
        RtcpReceiverReport.parse(bytes.fromhex("82c90001" "00000001"))
    with pytest.raises(RemoteMediaError, match="a header needs 4"):
        parse_rtcp(b"\x80")


def test_ntp_helpers() -> None:
    ntp = ntp_from_unix(1.5)
    assert ntp >> 32 == 2_208_988_801 and ntp & 0xFFFFFFFF == 1 << 31
    assert ntp_middle_32(ntp) == ((2_208_988_801 & 0xFFFF) << 16) | 0x8000
    assert seq_diff(1, 0xFFFF) == 2 and seq_diff(0xFFFF, 1) == -2


def test_payload_type_map_from_sdp() -> None:
    m = PayloadTypeMap.from_sdp([8, 0, 101], {101: "telephone-event/8000"})
    assert m.encoding(0) == "PCMU" and m.encoding(8) == "PCMA" and m.encoding(101) == "TELEPHONE-EVENT"
    assert m.payload_type("telephone-event") == 101 and m.payload_type("PCMU") == 0
    assert m.encoding(9) is None
    m2 = PayloadTypeMap.from_sdp([0, 96], {0: "PCMU/8000", 96: "telephone-event/8000/1"})
    assert m2.payload_type("TELEPHONE-EVENT") == 96
    with pytest.raises(RemoteMediaError, match="payload type 97 is dynamic"):
        PayloadTypeMap.from_sdp([97])
    with pytest.raises(RemoteMediaError, match="expected name/rate"):
        PayloadTypeMap.from_sdp([96], {96: "opus"})


def _feed(stats: ReceiveStatistics, seqs: list[int], jitter_ms: list[float] | None = None) -> None:
    for i, s in enumerate(seqs):
        t = 0.02 * i + (jitter_ms[i] / 1000 if jitter_ms else 0.0)
        # timestamps follow the sequence number (20 ms = 160 samples)
        stats.add(RtpPacket(0, s & 0xFFFF, (s * 160) & 0xFFFFFFFF, 7), t)


def test_stats_no_loss_across_wrap() -> None:
    st_ = ReceiveStatistics()
    _feed(st_, list(range(65530, 65550)))
    assert st_.lost == 0 and st_.cycles == 1 << 16
    assert st_.extended_max_seq == 65549 and st_.jitter == 0
    blk = st_.report_block(1.0)
    assert blk.fraction_lost == 0 and blk.highest_sequence == 65549


def test_stats_loss_fraction_and_interval() -> None:
    st_ = ReceiveStatistics()
    seqs = [s for s in range(100, 200) if s % 10 != 5]  # 10 % lost
    _feed(st_, seqs)
    # the first packet is in probation (A.1): expected counts from the second
    assert st_.expected == 99 and st_.lost == 10
    blk = st_.report_block(2.0)
    assert blk.fraction_lost == (10 << 8) // 99 and blk.packets_lost == 10
    _feed(st_, list(range(200, 220)))
    assert st_.report_block(3.0).fraction_lost == 0


def test_stats_jitter_converges() -> None:
    # A.8: alternating +-2 ms transit gives |D| = 4 ms = 32 samples; J -> 32
    st_ = ReceiveStatistics()
    n = 400
    _feed(st_, list(range(n)), [2.0 if i % 2 else -2.0 for i in range(n)])
    assert 30 <= st_.jitter <= 32
    assert st_.jitter_ms == pytest.approx(st_.jitter / 8)


def test_stats_duplicates_and_new_ssrc() -> None:
    st_ = ReceiveStatistics()
    _feed(st_, [1, 2, 3, 3, 4])
    assert st_.lost == -1  # a duplicate makes the cumulative loss negative (A.3)
    st_.add(RtpPacket(0, 9000, 0, 99), 1.0)
    assert st_.ssrc == 99 and st_.received == 0
    assert struct.calcsize("!I") == 4
