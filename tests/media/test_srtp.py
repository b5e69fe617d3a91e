"""SRTP on media legs (media/srtp.py + MediaEngine.set_srtp): an SRTP leg bridged to
a plain leg over real loopback RTP.  The SRTP peer is pylibsrtp used directly (the
field library, independent of our wiring): the tone it sends is heard on the plain
side after the engine decrypts it, the tone it receives is only audible after it
decrypts, forged plain packets and tampered SRTP are dropped."""
from __future__ import annotations

import os

import numpy as np
import pylibsrtp
import pytest

from mediart_peers import AMPLITUDE, FRAME, RtpPeer, heard, tone_levels
from media import g711
from media.engine import MediaConfig, MediaEngine
from media.errors import LocalMediaError, RemoteMediaError
from media.rtp import RtpPacket, is_rtcp
from media.srtp import SrtpLeg
from sip.sdes import SUITES

pytestmark = pytest.mark.twin  # the engine runs on media.rtpio: both twins

TONES = {"secure": 500.0, "plain": 900.0, "forged": 1300.0}
SUITE = "AES_CM_128_HMAC_SHA1_80"


def session(key: bytes, outbound: bool) -> pylibsrtp.Session:
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind,
                                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))


def test_srtp_leg_roundtrip_and_refusals():
    k1, k2 = os.urandom(30), os.urandom(30)
    a, b = SrtpLeg(SUITE, k1, k2), SrtpLeg(SUITE, k2, k1)
    plain = bytes(RtpPacket(0, 1, 160, 0x1234, b"\xff" * FRAME))
    wire = a.protect(plain)
    assert len(wire) == len(plain) + 10 and wire[12:] != plain[12:]  # 80-bit tag, payload encrypted
    assert b.unprotect(wire) == plain
    with pytest.raises(RemoteMediaError):
        b.unprotect(wire)  # replay (RFC 3711 §3.3.2)
    tampered = bytearray(a.protect(bytes(RtpPacket(0, 2, 320, 0x1234, b"\xff" * FRAME))))
    tampered[20] ^= 1
    with pytest.raises(RemoteMediaError):
        b.unprotect(bytes(tampered))
    with pytest.raises(RemoteMediaError):
        b.unprotect(bytes(RtpPacket(0, 3, 480, 0x1234, b"\xff" * FRAME)))  # plain RTP
    assert b.auth_failures == 3 and b.unprotected == 1
    rtcp = b"\x80\xc9\x00\x01\x00\x00\x12\x34"  # an empty receiver report
    assert is_rtcp(a.protect_rtcp(rtcp)) and b.unprotect(a.protect_rtcp(rtcp)) == rtcp
    with pytest.raises(LocalMediaError, match="30 bytes"):
        SrtpLeg(SUITE, b"short", k1)
    with pytest.raises(LocalMediaError, match="not supported"):
        SrtpLeg("F8_128_HMAC_SHA1_80", k1, k2)
    assert set(SUITES) <= {"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"}


def test_srtp_leg_bridged_to_plain_leg_over_loopback():
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0))
    secure, plain = RtpPeer("secure", TONES["secure"]), RtpPeer("plain", TONES["plain"])
    engine_key, peer_key = os.urandom(30), os.urandom(30)
    tx, rx = session(peer_key, True), session(engine_key, False)
    raw_from_engine: list[bytes] = []
    try:
        leg_s = engine.create_leg("secure", remote=secure.address)
        leg_p = engine.create_leg("plain", remote=plain.address)
        engine.set_srtp("secure", SUITE, engine_key, peer_key)
        secure.target = ("127.0.0.1", leg_s.local_port)
        plain.target = ("127.0.0.1", leg_p.local_port)
        engine.create_room("r")
        engine.join("r", "secure")
        engine.join("r", "plain")
        forger = RtpPeer("forged", TONES["forged"])
        forger.ssrc = secure.ssrc
        for k in range(100):
            secure.sock.sendto(tx.protect(secure.packet()), secure.target)
            if k % 2:  # plain packets of the right size and SSRC, aimed at the SRTP leg
                forger.seq = secure.seq
                secure.sock.sendto(forger.packet(), secure.target)
            plain.send()
            engine.run_tick(k, 1000.0 + 0.02 * k)
            plain.drain()
            while True:
                try:
                    raw_from_engine.append(secure.sock.recv(2048))
                except BlockingIOError:
                    break
        # The plain side hears the secure peer's tone (decrypted by the engine), not the forgery.
        assert heard(plain.audio(), TONES) == {"secure"}
        srtp = engine.srtp_leg("secure")
        assert srtp.unprotected >= 90 and srtp.auth_failures >= 45
        assert engine.leg_statistics("secure").packets_received >= 90
        # What the engine sent to the secure peer is SRTP: undecodable as-is, the plain tone after unprotect.
        rtp_raw = [d for d in raw_from_engine if not is_rtcp(d)]
        assert len(rtp_raw) >= 90 and all(len(d) == 12 + FRAME + 10 for d in rtp_raw)
        as_is = np.concatenate([g711.ulaw_decode(np.frombuffer(d[12:12 + FRAME], np.uint8)) for d in rtp_raw[10:]])
        # (ciphertext decoded as G.711 is loud noise: no tone stands out of it)
        assert all(level < 0.2 * AMPLITUDE for level in tone_levels(as_is, list(TONES.values())).values())
        decrypted = [RtpPacket.parse(rx.unprotect(d)) for d in rtp_raw]
        pcm = np.concatenate([g711.ulaw_decode(np.frombuffer(p.payload, np.uint8))
                              for p in sorted(decrypted, key=lambda p: p.sequence_number)[10:]])
        assert heard(pcm, TONES) == {"plain"}
        engine.destroy_leg("secure")
        assert engine.legs.keys() == {"plain"}
    finally:
        engine.close()
        for p in (secure, plain):
            p.close()
