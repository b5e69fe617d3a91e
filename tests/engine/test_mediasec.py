"""engine/mediasec.py without sockets: the SRTP mode table (what we offer, what we
answer, over TLS and in clear), key continuity on re-INVITEs, TLS trunk targets
and the TLS-only acceptance of a TLS trunk's INVITEs."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.config import Trunk
from engine.mediasec import MediaSecurity
from sip.errors import NoCommonCodecError
from sip.sdes import accept_answer, opportunistic_offer, secure_answer, secure_offer
from sip.sdp import SdpSession, SessionDescription


class FakeMedia:
    def __init__(self) -> None:
        self.legs: dict[str, object] = {"leg": object()}
        self.srtp: dict[str, tuple[str, bytes, bytes]] = {}

    def set_srtp(self, leg_id: str, suite: str, local_key: bytes, remote_key: bytes) -> None:
        self.srtp[leg_id] = (suite, local_key, remote_key)


def security() -> tuple[MediaSecurity, FakeMedia]:
    media = FakeMedia()
    return MediaSecurity(SimpleNamespace(media=media, config=None, endpoint=None)), media


def offer_of(kind: str) -> tuple[SessionDescription, object]:
    session = SdpSession("127.0.0.1", 1)
    if kind == "savp":
        return secure_offer(session, 4000)
    if kind == "osrtp":
        return opportunistic_offer(session, 4000)
    return session.offer(4000), None


# (mode, transport, offer) → "srtp" (keys set, crypto in the answer), "rtp" (plain answer), 488
TABLE = [
    ("required", "TLS", "savp", "srtp"), ("required", "TLS", "osrtp", "srtp"), ("required", "TLS", "plain", 488),
    ("optional", "TLS", "savp", "srtp"), ("optional", "TLS", "osrtp", "srtp"), ("optional", "TLS", "plain", "rtp"),
    ("off", "TLS", "savp", 488), ("off", "TLS", "osrtp", "rtp"), ("off", "TLS", "plain", "rtp"),
    # never keys in clear: UDP/TCP signalling is "off" whatever the mode
    ("required", "UDP", "savp", 488), ("required", "UDP", "osrtp", "rtp"), ("optional", "TCP", "osrtp", "rtp"),
]


@pytest.mark.parametrize("mode,transport,kind,expected", TABLE)
def test_answer_table(mode: str, transport: str, kind: str, expected) -> None:
    sec, media = security()
    offer, _ = offer_of(kind)
    if expected == 488:
        with pytest.raises(NoCommonCodecError):
            sec.answer("leg", mode, transport, SdpSession("127.0.0.1", 2), offer, 5000)
        assert not media.srtp
        return
    answer, neg = sec.answer("leg", mode, transport, SdpSession("127.0.0.1", 2), offer, 5000)
    text = bytes(answer)
    assert neg.remote_port == 4000
    if expected == "srtp":
        assert b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in text and "leg" in media.srtp
        assert (b"RTP/SAVP" in text) == (kind == "savp")  # answered in the offer's own profile
        assert sec.is_secure("leg")
    else:
        assert b"a=crypto" not in text and b"RTP/SAVP" not in text and not media.srtp


def test_reinvite_keeps_our_key_and_refuses_a_downgrade() -> None:
    sec, media = security()
    offer, _ = offer_of("savp")
    first, _ = sec.answer("leg", "optional", "TLS", SdpSession("127.0.0.1", 2), offer, 5000)
    keys = media.srtp["leg"]
    again, _ = sec.reanswer("leg", "TLS", SdpSession("127.0.0.1", 3), offer, 5000)
    ours = [line for line in bytes(first).split(b"\r\n") if line.startswith(b"a=crypto")]
    assert ours == [line for line in bytes(again).split(b"\r\n") if line.startswith(b"a=crypto")]
    assert media.srtp["leg"] == keys  # same peer key: the SRTP sessions are kept
    rekey, _ = offer_of("savp")  # the peer re-keys (RFC 4568 §7.1.4): new sessions, our key unchanged
    sec.reanswer("leg", "TLS", SdpSession("127.0.0.1", 4), rekey, 5000)
    assert media.srtp["leg"][1] == keys[1] and media.srtp["leg"][2] != keys[2]
    plain, _ = offer_of("plain")
    with pytest.raises(NoCommonCodecError, match="drops SRTP"):
        sec.reanswer("leg", "TLS", SdpSession("127.0.0.1", 5), plain, 5000)
    sec2, media2 = security()  # a plain leg stays plain on re-INVITE
    sec2.answer("leg", "off", "TLS", SdpSession("127.0.0.1", 2), plain, 5000)
    answer, _ = sec2.reanswer("leg", "TLS", SdpSession("127.0.0.1", 3), plain, 5000)
    assert b"a=crypto" not in bytes(answer) and not media2.srtp


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_offer_and_accept(mode: str) -> None:
    sec, media = security()
    session = SdpSession("127.0.0.1", 1)
    offer = sec.offer("leg", mode, session, 5000)
    assert (b"RTP/SAVP" in bytes(offer)) == (mode == "required") and b"a=crypto:1 " in bytes(offer)
    answer, _neg, _keys = secure_answer(SdpSession("127.0.0.1", 2), offer, 6000, opportunistic=True)
    neg = sec.accept("leg", session, answer)
    assert neg.remote_port == 6000 and "leg" in media.srtp
    # a peer that ignores the crypto line: optional runs plain RTP, required fails the leg
    sec2, media2 = security()
    session2 = SdpSession("127.0.0.1", 1)
    offer2 = sec2.offer("leg", mode, session2, 5000)
    plain_answer, _ = SdpSession("127.0.0.1", 3).answer(SessionDescription.parse(
        bytes(offer2).replace(b"RTP/SAVP", b"RTP/AVP")), 7000)
    if mode == "optional":
        assert sec2.accept("leg", session2, plain_answer).remote_port == 7000 and not media2.srtp
    else:
        with pytest.raises(NoCommonCodecError):
            sec2.accept("leg", session2, plain_answer)
    assert sec.offer("leg2", "off", SdpSession("127.0.0.1", 9), 5002).media[0].proto == "RTP/AVP"


def test_accept_answer_opportunistic_keys() -> None:
    session = SdpSession("127.0.0.1", 1)
    offer, crypto = opportunistic_offer(session, 5000)
    answer, _, theirs = secure_answer(SdpSession("127.0.0.1", 2), offer, 6000, opportunistic=True)
    _neg, keys = accept_answer(session, answer, crypto, opportunistic=True)
    assert keys is not None and keys.remote_key == theirs.local_key and keys.local_key == theirs.remote_key


def test_trunk_targets_and_tls_only_acceptance() -> None:
    sec, _ = security()
    tls = Trunk(name="carrier", host="192.0.2.10", transport="tls", srtp="required", tls_verify_name="sbc.test")
    udp = Trunk(name="old", host="192.0.2.20", srtp="required")
    t = sec.trunk_target(tls, "+4930111")
    assert (t.uri, t.dest, t.transport, t.srtp) == ("sips:+4930111@192.0.2.10:5061", ("192.0.2.10", 5061), "TLS",
                                                    "required")
    u = sec.trunk_target(udp, "+4930111")
    assert (u.uri, u.dest, u.transport, u.srtp) == ("sip:+4930111@192.0.2.20:5060", ("192.0.2.20", 5060), "UDP",
                                                    "off")
    assert sec.admit_trunk_invite(udp, SimpleNamespace(transport="UDP", source=("192.0.2.20", 5060))) is None
    assert sec.admit_trunk_invite(tls, SimpleNamespace(transport="UDP", source=("192.0.2.10", 5060))) \
        == "TLS required"
    # a listener that asked for no client certificate: address + TLS suffice
    source = ("192.0.2.10", 40000)
    sec.centre.endpoint = SimpleNamespace(transport=SimpleNamespace(_tcp_conns={}))
    assert sec.admit_trunk_invite(tls, SimpleNamespace(transport="TLS", source=source)) is None

    def conn(names):  # a mutual-TLS connection whose verified client certificate has these names
        cert = {"subjectAltName": tuple(("DNS", n) for n in names)}
        return SimpleNamespace(name="TLS", transport=SimpleNamespace(get_extra_info=lambda key: cert))

    sec.centre.endpoint.transport._tcp_conns[source] = conn(["phone.test"])
    assert sec.admit_trunk_invite(tls, SimpleNamespace(transport="TLS", source=source)) \
        == "certificate is not sbc.test"
    sec.centre.endpoint.transport._tcp_conns[source] = conn(["SBC.test"])
    assert sec.admit_trunk_invite(tls, SimpleNamespace(transport="TLS", source=source)) is None
