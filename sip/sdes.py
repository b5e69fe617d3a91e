"""SDES: SRTP keys in SDP (RFC 4568 ``a=crypto``) on top of :mod:`sip.sdp`.

Theory of operation
-------------------
RFC 4568 carries the SRTP master key and salt in the SDP itself, so the keys
are only as secret as the signalling: use it on TLS legs only (RFC 4568 §8.3;
the engine refuses SDES over UDP/TCP).  One attribute per offered suite::

    a=crypto:<tag> <crypto-suite> inline:<base64(key||salt)>[|<lifetime>][|<MKI>:<length>] [<session params>]

(RFC 4568 §9.1 grammar.)  We implement the mandatory-to-implement suite
``AES_CM_128_HMAC_SHA1_80`` (§6.2.1; 16-byte key, 14-byte salt) and accept
``AES_CM_128_HMAC_SHA1_32``; a key with an MKI or session parameters is
skipped (we do not do MKI re-keying), as is any other suite.

The audio stream's transport is ``RTP/SAVP`` (RFC 3711 §12).  :class:`SdpSession`
negotiates codecs for ``RTP/AVP`` only, so the functions here wrap it:
:func:`secure_offer` turns our plain offer into an ``RTP/SAVP`` offer with
our crypto line; :func:`secure_answer` strips the peer's offer to plain
``RTP/AVP`` for :meth:`SdpSession.answer`, chooses the first acceptable
crypto line and puts ours (same tag, fresh key) into the answer;
:func:`accept_answer` reads the peer's answer to our offer.
:func:`opportunistic_offer` is RFC 8643's "best effort" variant: an
``RTP/AVP`` offer with a crypto line, encrypted when the peer answers one.  Each returns
:class:`SrtpKeys`: the suite and the two master keys (ours for sending, the
peer's for receiving), ready for :mod:`media.srtp`.

Pure: no sockets; the key generator is ``os.urandom`` unless one is passed.
"""
from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, replace
from typing import Callable

from .errors import NoCommonCodecError, SdpError
from .sdp import NegotiatedMedia, SdpSession, SessionDescription

SUITES = {"AES_CM_128_HMAC_SHA1_80": 30, "AES_CM_128_HMAC_SHA1_32": 30}  # key+salt bytes (RFC 4568 §6.2)
DEFAULT_SUITE = "AES_CM_128_HMAC_SHA1_80"
SAVP = "RTP/SAVP"
AVP = "RTP/AVP"

# RFC 4568 §9.1: "a=crypto:" tag 1*WSP crypto-suite 1*WSP key-params *(1*WSP session-param)
_CRYPTO_RE = re.compile(r"(\d{1,9})\s+([A-Za-z0-9_]+)\s+(\S+)(?:\s+(.*))?")


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One ``a=crypto`` line."""

    tag: int
    suite: str
    key: bytes
    """Master key || master salt (30 bytes for the AES_CM_128 suites)."""
    lifetime: str | None = None
    mki: str | None = None
    session_params: str = ""

    @classmethod
    def parse(cls, value: str) -> "CryptoAttribute":
        """Parse the value after ``a=crypto:``; raises :class:`SdpError` naming the fault."""
        m = _CRYPTO_RE.fullmatch(value.strip())
        if m is None:
            raise SdpError(f"a=crypto: malformed attribute {value[:60]!r}")
        tag, suite, key_params, params = m.groups()
        first = key_params.split(";")[0]  # several keys (";") only with MKI: we use the first
        if not first.startswith("inline:"):
            raise SdpError(f"a=crypto:{tag}: key method is not 'inline'")
        parts = first[len("inline:"):].split("|")
        try:
            key = base64.b64decode(parts[0], validate=True)
        except ValueError:
            raise SdpError(f"a=crypto:{tag}: key is not base64") from None
        lifetime = mki = None
        for extra in parts[1:]:
            if ":" in extra:
                mki = extra
            else:
                lifetime = extra
        expected = SUITES.get(suite)
        if expected is not None and len(key) != expected:
            raise SdpError(f"a=crypto:{tag}: {suite} needs {expected} bytes of key and salt, got {len(key)}")
        return cls(int(tag), suite, key, lifetime, mki, params or "")

    def __str__(self) -> str:
        key = "inline:" + base64.b64encode(self.key).decode()
        if self.lifetime:
            key += "|" + self.lifetime
        if self.mki:
            key += "|" + self.mki
        return f"{self.tag} {self.suite} {key}" + (f" {self.session_params}" if self.session_params else "")

    @property
    def usable(self) -> bool:
        """A suite we implement, no MKI, no session parameters."""
        return self.suite in SUITES and self.mki is None and not self.session_params


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """What the media layer needs for one SRTP leg."""

    suite: str
    local_key: bytes
    """Our master key || salt: protects what we send."""
    remote_key: bytes
    """The peer's master key || salt: unprotects what we receive."""


def new_crypto(tag: int = 1, suite: str = DEFAULT_SUITE, random_bytes: Callable[[int], bytes] = os.urandom) -> CryptoAttribute:
    """A fresh key for ``suite``."""
    return CryptoAttribute(tag, suite, random_bytes(SUITES[suite]))


def crypto_lines(sd: SessionDescription, index: int = 0) -> list[CryptoAttribute]:
    """The parsed ``a=crypto`` lines of stream ``index`` (malformed ones raise SdpError)."""
    return [CryptoAttribute.parse(v) for v in sd.media[index].attribute_values("crypto")]


def _with_media(sd: SessionDescription, index: int, proto: str, crypto: CryptoAttribute | None) -> SessionDescription:
    media = list(sd.media)
    m = media[index]
    attrs = [(k, v) for k, v in m.attributes if k != "crypto"]
    if crypto is not None:
        attrs.append(("crypto", str(crypto)))
    media[index] = replace(m, proto=proto, attributes=attrs)
    return replace(sd, media=media)


def secure_offer(session: SdpSession, rtp_port: int, *, crypto: CryptoAttribute | None = None,
                 direction: str = "sendrecv") -> tuple[SessionDescription, CryptoAttribute]:
    """Our ``RTP/SAVP`` offer with one crypto line; returns (offer, our crypto)."""
    crypto = crypto or new_crypto()
    plain = session.offer(rtp_port, direction=direction)
    return _with_media(plain, 0, SAVP, crypto), crypto


def opportunistic_offer(session: SdpSession, rtp_port: int, *, crypto: CryptoAttribute | None = None,
                        direction: str = "sendrecv") -> tuple[SessionDescription, CryptoAttribute]:
    """An ``RTP/AVP`` offer that also carries our crypto line (RFC 8643, opportunistic SRTP).

    A peer that knows SDES answers with its own crypto line and both sides
    encrypt; a peer that does not ignores the attribute and the call runs on
    plain RTP (read the answer with ``accept_answer(..., opportunistic=True)``).
    """
    crypto = crypto or new_crypto()
    plain = session.offer(rtp_port, direction=direction)
    return _with_media(plain, 0, AVP, crypto), crypto


def secure_answer(session: SdpSession, offer: SessionDescription, rtp_port: int, *,
                  direction: str = "sendrecv", random_bytes: Callable[[int], bytes] = os.urandom,
                  opportunistic: bool = False) -> tuple[SessionDescription, NegotiatedMedia, SrtpKeys]:
    """Answer an ``RTP/SAVP`` offer (RFC 4568 §7.1.2).

    With ``opportunistic``, an ``RTP/AVP`` stream with a usable crypto line
    (RFC 8643) is accepted too and answered in its own profile.

    Raises:
        NoCommonCodecError: no ``RTP/SAVP`` audio stream, or no usable crypto
            line (answer 488), or no common codec.
        SdpError: a malformed crypto line.
    """
    protos = (SAVP, AVP) if opportunistic else (SAVP,)
    index = next((i for i, m in enumerate(offer.media) if m.media == "audio" and m.port and m.proto in protos), None)
    if index is None:
        raise NoCommonCodecError("no RTP/SAVP audio stream in the offer (SRTP required)")
    chosen = next((c for c in crypto_lines(offer, index) if c.usable), None)
    if chosen is None:
        raise NoCommonCodecError(f"no usable a=crypto line (we support {', '.join(SUITES)} without MKI)")
    proto = offer.media[index].proto
    plain_offer = _with_media(offer, index, AVP, None)
    answer, neg = session.answer(plain_offer, rtp_port, direction=direction)
    ours = new_crypto(chosen.tag, chosen.suite, random_bytes)
    return _with_media(answer, index, proto, ours), neg, SrtpKeys(chosen.suite, ours.key, chosen.key)


def offers_crypto(offer: SessionDescription) -> tuple[str, bool] | None:
    """(profile, has a usable crypto line) of the offer's first live audio stream; None without one.

    Malformed crypto lines count as unusable here (the answer path raises on them).
    """
    for i, m in enumerate(offer.media):
        if m.media == "audio" and m.port:
            usable = False
            for value in m.attribute_values("crypto"):
                try:
                    usable = usable or CryptoAttribute.parse(value).usable
                except SdpError:
                    continue
            return m.proto, usable
    return None


def accept_answer(session: SdpSession, answer: SessionDescription, offered: CryptoAttribute, *,
                  opportunistic: bool = False) -> tuple[NegotiatedMedia, SrtpKeys | None]:
    """Read the answer to our :func:`secure_offer` (or :func:`opportunistic_offer`).

    Returns:
        The negotiated media and the keys; with ``opportunistic``, keys None
        when the peer answered plain ``RTP/AVP`` without our tag (plain RTP).

    Raises:
        NoCommonCodecError: the answer is not ``RTP/SAVP`` or names no crypto
            line with our tag and suite (RFC 4568 §7.1.3).
    """
    proto = answer.media[0].proto if answer.media else ""
    if opportunistic and proto == AVP:
        theirs = next((c for c in crypto_lines(answer) if c.tag == offered.tag), None)
        if theirs is None:
            return session.process_answer(answer), None
    elif proto != SAVP:
        raise NoCommonCodecError("the answer dropped SRTP (not RTP/SAVP)")
    theirs = next((c for c in crypto_lines(answer) if c.tag == offered.tag), None)
    if theirs is None or theirs.suite != offered.suite or not theirs.usable:
        raise NoCommonCodecError(f"the answer accepted no crypto line with tag {offered.tag}")
    neg = session.process_answer(_with_media(answer, 0, AVP, None))
    return neg, SrtpKeys(offered.suite, offered.key, theirs.key)
