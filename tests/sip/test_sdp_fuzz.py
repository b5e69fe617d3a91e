"""Fuzzing the SDP parser, offer/answer and SDES (issue 12), seeded with the real SDP
bodies of the RFC 4475 torture messages (read in place from ../shared/testdata/rfc4475/)
plus our own plain and SDES offers: mutated bodies only ever raise the declared
:class:`sip.errors.SdpError` (488 family included), never anything else, and the
engine's per-leg SRTP decision (engine/mediasec.py) refuses or answers, never crashes.
Bounded: a few hundred examples, a few seconds."""
from __future__ import annotations

import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.errors import SdpError
from sip.sdes import crypto_lines, opportunistic_offer, secure_answer, secure_offer
from sip.sdp import SdpSession, SessionDescription

DIR = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "rfc4475"


def _rfc4475_sdp_bodies() -> list[bytes]:
    """The SDP bodies of every torture message declaring ``application/sdp``, cut after the
    header block (also those whose SIP framing our parser rightly refuses)."""
    bodies = []
    for path in sorted(DIR.glob("*.dat")):
        data = path.read_bytes()
        if b"application/sdp" not in data.lower():
            continue
        for sep in (b"\r\n\r\n", b"\n\n"):
            if sep in data:
                body = data.split(sep, 1)[1]
                if body.strip():
                    bodies.append(body)
                break
    return bodies


RFC4475_SDP = _rfc4475_sdp_bodies()
OURS = [bytes(SdpSession("127.0.0.1", 1).offer(4000)), bytes(secure_offer(SdpSession("127.0.0.1", 2), 4002)[0]),
        bytes(opportunistic_offer(SdpSession("127.0.0.1", 3), 4004)[0])]
SEEDS = RFC4475_SDP + OURS
TOKENS = [b"\r\n", b"\n", b"=", b" ", b"m=audio 0 RTP/SAVP 0\r\n", b"a=crypto:", b"inline:", b"|", b":",
          b"a=rtpmap:", b"/", b"c=IN IP6 ::1\r\n", b"RTP/SAVP", b"AES_CM_128_HMAC_SHA1_80", b"\x00", b"\xff", b"99999999"]


def test_seed_corpus_holds_the_rfc4475_sdp_bodies() -> None:
    # RFC 4475 carries SDP in most of its INVITEs: the fuzz starts from them, not from our
    # own offers only.
    assert len(RFC4475_SDP) >= 15, len(RFC4475_SDP)
    parsed = 0
    for body in RFC4475_SDP:
        try:
            SessionDescription.parse(body)
            parsed += 1
        except SdpError:
            pass
    assert parsed >= 10


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "duplicate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 20))]
        elif op == "duplicate" and data:
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 40))]
        else:
            data[pos:pos] = draw(st.sampled_from(TOKENS))
    return bytes(data)


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated())
def test_mutated_sdp_only_raises_sdp_errors(body: bytes) -> None:
    try:
        sd = SessionDescription.parse(body)
    except SdpError:
        return
    assert bytes(sd)  # whatever parses serializes
    for i, m in enumerate(sd.media):
        try:
            crypto_lines(sd, i)
        except SdpError:
            pass


@FUZZ
@given(mutated(), st.sampled_from(["required", "optional", "off"]), st.sampled_from(["TLS", "UDP"]))
def test_mutated_offers_are_answered_or_refused(body: bytes, mode: str, transport: str) -> None:
    from engine.mediasec import MediaSecurity

    class _Media:  # the SRTP keys land here instead of a live MediaEngine
        def __init__(self) -> None:
            self.legs: dict[str, object] = {"leg": object()}
            self.keys: list[tuple] = []

        def set_srtp(self, leg_id: str, suite: str, local: bytes, remote: bytes) -> None:
            assert transport == "TLS" and len(local) == 30 and len(remote) == 30
            self.keys.append((leg_id, suite))

    class _Centre:
        media = _Media()

    sec = MediaSecurity(_Centre())
    try:
        offer = SessionDescription.parse(body)
    except SdpError:
        return
    try:
        answer, _neg = sec.answer("leg", mode, transport, SdpSession("127.0.0.1", 9), offer, 5000)
    except SdpError:  # 400 / 488
        return
    text = bytes(answer)
    if transport != "TLS" or mode == "off":
        assert b"a=crypto" not in text  # RFC 4568 §8.3: never keys in clear (or when off)


@pytest.mark.parametrize("body", OURS[1:], ids=["savp", "osrtp"])
def test_secure_answer_accepts_our_offers(body: bytes) -> None:
    answer, _neg, keys = secure_answer(SdpSession("127.0.0.1", 5), SessionDescription.parse(body), 6000,
                                       opportunistic=True)
    assert len(keys.local_key) == 30 and b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in bytes(answer)
