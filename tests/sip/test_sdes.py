"""sip/sdes.py: RFC 4568 a=crypto lines and SRTP offer/answer over SdpSession."""
from __future__ import annotations

import base64

import pytest

from sip.errors import NoCommonCodecError, SdpError
from sip.sdes import CryptoAttribute, accept_answer, crypto_lines, new_crypto, secure_answer, secure_offer
from sip.sdp import SdpSession, SessionDescription

KEY = bytes(range(30))
B64 = base64.b64encode(KEY).decode()


def test_parse_and_format_rfc4568_examples():
    # RFC 4568 §4 example shape: tag suite inline:key|lifetime|mki:length
    c = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20|1:32")
    assert (c.tag, c.suite, c.key, c.lifetime, c.mki) == (1, "AES_CM_128_HMAC_SHA1_80", KEY, "2^20", "1:32")
    assert not c.usable  # MKI: not supported
    plain = CryptoAttribute.parse(f"2 AES_CM_128_HMAC_SHA1_32 inline:{B64}")
    assert plain.usable and str(plain) == f"2 AES_CM_128_HMAC_SHA1_32 inline:{B64}"
    assert CryptoAttribute.parse(str(c)) == c
    assert not CryptoAttribute.parse(f"3 AES_CM_128_HMAC_SHA1_80 inline:{B64} KDR=1").usable
    assert not CryptoAttribute.parse("4 F8_128_HMAC_SHA1_80 inline:AAAA").usable


@pytest.mark.parametrize("value, fault", [
    ("AES_CM_128_HMAC_SHA1_80 inline:x", "malformed"),
    (f"1 AES_CM_128_HMAC_SHA1_80 key:{B64}", "not 'inline'"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "not base64"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "needs 30 bytes"),
])
def test_malformed_crypto_lines_name_the_fault(value, fault):
    with pytest.raises(SdpError, match=fault):
        CryptoAttribute.parse(value)


def test_offer_answer_exchanges_keys_both_ways():
    alice, bob = SdpSession("127.0.0.1", 1), SdpSession("127.0.0.1", 2)
    offer, ours = secure_offer(alice, 4000)
    text = bytes(offer).decode()
    assert "m=audio 4000 RTP/SAVP 0 8 101" in text and f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in text
    answer, neg_b, keys_b = secure_answer(bob, SessionDescription.parse(bytes(offer)), 5000)
    assert neg_b.codec == "PCMU" and keys_b.remote_key == ours.key and len(keys_b.local_key) == 30
    assert "RTP/SAVP" in bytes(answer).decode()
    neg_a, keys_a = accept_answer(alice, SessionDescription.parse(bytes(answer)), ours)
    assert neg_a.remote_port == 5000 and keys_a.local_key == ours.key and keys_a.remote_key == keys_b.local_key
    assert keys_a.suite == keys_b.suite == "AES_CM_128_HMAC_SHA1_80"


def test_answer_picks_the_first_usable_line_and_keeps_its_tag():
    bob = SdpSession("127.0.0.1", 2)
    offer = SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{B64}|2^20|1:4\r\n"
        f"a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:{B64}\r\n")
    answer, _, keys = secure_answer(bob, offer, 5000)
    (line,) = crypto_lines(answer)
    assert line.tag == 7 and line.suite == "AES_CM_128_HMAC_SHA1_32" and keys.remote_key == KEY


def test_plain_or_keyless_offers_and_answers_are_refused():
    bob = SdpSession("127.0.0.1", 2)
    plain = SdpSession("127.0.0.1", 3).offer(4000)
    with pytest.raises(NoCommonCodecError, match="RTP/SAVP"):
        secure_answer(bob, plain, 5000)
    offer, ours = secure_offer(SdpSession("127.0.0.1", 4), 4000)
    keyless = SessionDescription.parse(bytes(offer).replace(b"a=crypto:", b"a=x-crypto:"))
    with pytest.raises(NoCommonCodecError, match="no usable a=crypto"):
        secure_answer(bob, keyless, 5000)
    alice = SdpSession("127.0.0.1", 5)
    offer, ours = secure_offer(alice, 4000)
    downgraded = bob.answer(SessionDescription.parse(bytes(offer).replace(b"RTP/SAVP", b"RTP/AVP")), 5000)[0]
    with pytest.raises(NoCommonCodecError, match="dropped SRTP"):
        accept_answer(alice, downgraded, ours)
    other_tag = new_crypto(9)
    answer, _, _ = secure_answer(bob, SessionDescription.parse(bytes(offer)), 5000)
    with pytest.raises(NoCommonCodecError, match="tag 9"):
        accept_answer(alice, answer, other_tag)
