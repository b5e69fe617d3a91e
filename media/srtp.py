"""SRTP (RFC 3711) for media legs whose SDP negotiated SDES keys (RFC 4568).

Theory of operation
-------------------
The cipher work is libsrtp's, through the field library ``pylibsrtp`` (the
binding aiortc uses): one inbound and one outbound ``pylibsrtp.Session`` per
leg, keyed by :class:`sip.sdes.SrtpKeys` (our master key protects what we
send, the peer's unprotects what we receive).  This module only decides
which packets go through them:

* **send**: the media tick builds every leg's RTP packet in one numpy batch
  (:mod:`media.engine`); :func:`transmit_batch` sends the rows of plain legs
  with one ``sendmmsg`` as before and the rows of SRTP legs one by one,
  protected (10 bytes of auth tag more, so they cannot stay in the batch).
  RTCP of an SRTP leg leaves as SRTCP (:meth:`SrtpLeg.protect_rtcp`).
* **receive**: SRTP packets are 10 bytes longer than the engine's fast-path
  packet, so they take the per-packet path; the engine also excludes SRTP
  legs from the fast path, so a forged *plain* packet of the right size is
  never played.  :meth:`SrtpLeg.unprotect` authenticates and decrypts (RTCP
  packets as SRTCP); a packet that fails authentication or replay checks is
  counted in ``auth_failures`` and dropped.

Suites: ``AES_CM_128_HMAC_SHA1_80`` (RFC 4568 §6.2.1, mandatory) and
``AES_CM_128_HMAC_SHA1_32``.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pylibsrtp

from media.errors import LocalMediaError, RemoteMediaError
from media.rtp import is_rtcp

logger = logging.getLogger(__name__)

_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


class SrtpLeg:
    """The two SRTP sessions of one leg.

    Args:
        suite: an RFC 4568 suite name (see ``_PROFILES``).
        local_key: our master key || salt (30 bytes).
        remote_key: the peer's master key || salt (30 bytes).

    Raises:
        LocalMediaError: unknown suite or wrong key length.
    """

    def __init__(self, suite: str, local_key: bytes, remote_key: bytes) -> None:
        profile = _PROFILES.get(suite)
        if profile is None:
            raise LocalMediaError(f"SRTP suite {suite!r} not supported ({', '.join(_PROFILES)})")
        for name, key in (("local", local_key), ("remote", remote_key)):
            if len(key) != 30:
                raise LocalMediaError(f"SRTP {name} key must be 30 bytes (key and salt), got {len(key)}")
        self.suite = suite
        self._tx = pylibsrtp.Session(pylibsrtp.Policy(key=local_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                      srtp_profile=profile))
        self._rx = pylibsrtp.Session(pylibsrtp.Policy(key=remote_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                                      srtp_profile=profile))
        self.protected = 0
        self.unprotected = 0
        self.auth_failures = 0

    def protect(self, packet: bytes) -> bytes:
        """RTP → SRTP (RFC 3711 §3.3)."""
        self.protected += 1
        return self._tx.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        """RTCP → SRTCP (RFC 3711 §3.4)."""
        return self._tx.protect_rtcp(packet)

    def unprotect(self, packet: bytes) -> bytes:
        """SRTP or SRTCP → plain; raises :class:`RemoteMediaError` when it does not authenticate."""
        try:
            plain = self._rx.unprotect_rtcp(packet) if is_rtcp(packet) else self._rx.unprotect(packet)
        except pylibsrtp.Error as exc:
            self.auth_failures += 1
            raise RemoteMediaError(f"SRTP packet refused: {exc}") from None
        self.unprotected += 1
        return plain


def transmit_batch(send_batch: Any, legs_by_fd: dict[int, tuple[SrtpLeg, Any]], fds: np.ndarray, pkt: np.ndarray,
                   lengths: np.ndarray, ips: np.ndarray, ports: np.ndarray) -> int:
    """Send one tick's packets: plain legs batched, SRTP legs protected one by one.

    Args:
        send_batch: :func:`media.rtpio.send_batch`.
        legs_by_fd: socket fd → (SrtpLeg, socket) of the SRTP legs.
        fds, pkt, lengths, ips, ports: the tick's rows (see ``MediaEngine._send``).

    Returns:
        Packets handed to the kernel.
    """
    secure = np.isin(fds, np.fromiter(legs_by_fd, np.int64, len(legs_by_fd)))
    plain = ~secure
    sent = send_batch(fds[plain], pkt[plain], lengths[plain], ips[plain], ports[plain]) if plain.any() else 0
    from media.rtpio import int_to_ip

    for i in np.flatnonzero(secure):
        if not ports[i]:
            continue
        leg, sock = legs_by_fd[int(fds[i])]
        try:
            sock.sendto(leg.protect(bytes(pkt[i, :lengths[i]])), (int_to_ip(int(ips[i])), int(ports[i])))
            sent += 1
        except (OSError, pylibsrtp.Error) as exc:
            logger.debug("SRTP send failed: %s", exc)
    return sent
