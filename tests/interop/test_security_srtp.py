"""A real SRTP call between two endpoints of our own stack: SIP over TLS (a CA made
by the openssl CLI), SDES keys in the SDP (RFC 4568), two MediaEngines ticking on
the loop, each side playing its own tone; each side's received audio, decrypted
by the engine, is checked by Goertzel.  A rogue peer's plain RTP is refused."""
from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import socket
import sys

import numpy as np
import pytest

from media.engine import MediaConfig, MediaEngine
from media.player import ArraySource
from sip.events import AckReceived, RequestReceived, ResponseReceived
from sip.sdes import accept_answer, secure_answer, secure_offer
from sip.sdp import SdpSession, SessionDescription
from sip.tls import TlsSettings, client_context, enable_tls, server_context
from sip.useragent import SipEndpoint

pytestmark = pytest.mark.interop

if "tls_certs" not in sys.modules:  # the PKI helper beside the SIP TLS tests
    _spec = importlib.util.spec_from_file_location(
        "tls_certs", pathlib.Path(__file__).resolve().parents[1] / "sip" / "tls_certs.py")
    sys.modules["tls_certs"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["tls_certs"])  # type: ignore[union-attr]
tls_certs = sys.modules["tls_certs"]

RATE = 8000
ALICE_HZ, BOB_HZ = 697.0, 1209.0


def goertzel_power(x: np.ndarray, freq_hz: float) -> float:
    """Normalised power of ``freq_hz`` in ``x`` (Goertzel, one bin)."""
    coeff = 2 * np.cos(2 * np.pi * freq_hz / RATE)
    s1 = s2 = 0.0
    for v in x.astype(np.float64):
        s1, s2 = v + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return float(power / (len(x) ** 2 / 4))  # amplitude² of a full-scale bin


def tone(freq_hz: float, seconds: float) -> np.ndarray:
    n = np.arange(int(RATE * seconds))
    return np.round(8000 * np.sin(2 * np.pi * freq_hz * n / RATE)).astype(np.int16)


class Sink:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write_frame(self, frame: np.ndarray) -> None:
        self.frames.append(frame[0].copy())

    def close(self) -> None:
        pass

    def pcm(self) -> np.ndarray:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, np.int16)


async def until(ep: SipEndpoint, cls: type, timeout: float = 5.0):
    while True:
        ev = await ep.next_event(timeout)
        if isinstance(ev, cls):
            return ev


def test_srtp_call_over_tls_between_two_of_our_endpoints(tmp_path):
    pki = tls_certs.make_pki(tmp_path / "pki")

    async def scenario():
        bob = SipEndpoint("127.0.0.1", 0, tcp=False, user="bob")
        alice = SipEndpoint("127.0.0.1", 0, tcp=False, user="alice")
        media_a = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=1))
        media_b = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=1))
        sinks = {"a": Sink(), "b": Sink()}
        rogue = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await bob.start()
            await alice.start()
            tls_addr = await enable_tls(bob, server=server_context(pki.server_cert, pki.server_key))
            await enable_tls(alice, client=TlsSettings(client_context(pki.ca)))
            await media_a.start()
            await media_b.start()

            leg_a = media_a.create_leg("a", call_id="srtp-call")
            sdp_a = SdpSession("127.0.0.1", 1)
            offer, crypto = secure_offer(sdp_a, leg_a.local_port)
            alice.invite(f"sips:bob@127.0.0.1:{tls_addr[1]}", from_="<sips:alice@sip.test>", body=bytes(offer),
                         content_type="application/sdp")

            inv = await until(bob, RequestReceived)
            assert inv.transport == "TLS" and b"RTP/SAVP" in inv.request.body
            leg_b = media_b.create_leg("b", call_id="srtp-call")
            answer, neg_b, keys_b = secure_answer(SdpSession("127.0.0.1", 2),
                                                  SessionDescription.parse(inv.request.body), leg_b.local_port)
            media_b.set_srtp("b", keys_b.suite, keys_b.local_key, keys_b.remote_key)
            media_b.update_leg("b", remote=(neg_b.remote_address, neg_b.remote_port), codec=neg_b.codec)
            bob.respond(inv.transaction, 200, body=bytes(answer), content_type="application/sdp")

            resp = await until(alice, ResponseReceived)
            assert resp.response.status_code == 200
            neg_a, keys_a = accept_answer(sdp_a, SessionDescription.parse(resp.response.body), crypto)
            media_a.set_srtp("a", keys_a.suite, keys_a.local_key, keys_a.remote_key)
            media_a.update_leg("a", remote=(neg_a.remote_address, neg_a.remote_port), codec=neg_a.codec)
            await until(bob, AckReceived)

            for media, leg, hz, sink in ((media_a, "a", ALICE_HZ, sinks["a"]), (media_b, "b", BOB_HZ, sinks["b"])):
                media.create_room("r")
                media.join("r", leg)
                media.record("r", "rec", sink, [[leg]])
                media.play(ArraySource(tone(hz, 3.0)), leg_id=leg)
            # A rogue sender fires plain RTP at bob's SRTP port meanwhile.
            for seq in range(50):
                rogue.sendto(bytes([0x80, 0, 0, seq]) + bytes(8) + bytes([0xFF] * 160),
                             ("127.0.0.1", leg_b.local_port))
            await asyncio.sleep(2.0)

            for media, leg in ((media_a, "a"), (media_b, "b")):
                srtp = media.srtp_leg(leg)
                assert srtp.protected >= 60 and srtp.unprotected >= 60, (leg, srtp.protected, srtp.unprotected)
            assert media_b.srtp_leg("b").auth_failures >= 50
            (dialog,) = alice.stack.dialogs
            assert dialog.transport == "TLS"
            alice.bye(dialog)
        finally:
            rogue.close()
            for media in (media_a, media_b):
                await media.stop()
                media.close()
            await alice.stop()
            await bob.stop()
        return sinks

    sinks = asyncio.run(asyncio.wait_for(scenario(), 30))
    for name, own, other in (("a", ALICE_HZ, BOB_HZ), ("b", BOB_HZ, ALICE_HZ)):
        pcm = sinks[name].pcm()
        assert len(pcm) >= RATE, name
        window = pcm[len(pcm) // 4: len(pcm) // 4 + RATE // 2]  # 0.5 s of the talk
        heard_other, heard_own = goertzel_power(window, other), goertzel_power(window, own)
        # the far end's tone arrives at about its level (8000² ≈ 6.4e7); nothing of the rogue (0xFF = silence)
        assert heard_other > 1e7, (name, heard_other)
        assert heard_own < heard_other / 100, (name, heard_own)
