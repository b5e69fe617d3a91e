"""Transport security of the call path: per-trunk SIP over TLS and SDES-SRTP on TLS legs.

Theory of operation
-------------------
The building blocks live in ``sip/`` and ``media/`` (:mod:`sip.tls`,
:mod:`sip.sdes`, :mod:`media.srtp`); this module decides, per leg, which of
them a call uses, so the call path (:mod:`engine.callpath`,
:mod:`engine.legs`, the phone consult line in :mod:`engine.callcontrol`)
only calls narrow hooks.  Supervisor phones are rung through
:meth:`engine.legs.Legs.dial_extension`, so they get a phone's mode too.

Trunks (``[trunks.NAME] transport = "tls"``):

* **dialling out** (:meth:`MediaSecurity.trunk_target`): the Request-URI is
  ``sips:NUMBER@HOST:PORT`` (RFC 3261 §26.2.2, port 5061 by default), sent
  over a TLS connection whose context trusts the trunk's ``tls_ca`` (else the
  system store), checks the certificate against ``tls_verify_name`` (else
  ``host``) and presents ``tls_cert`` when the carrier wants mutual TLS
  (:meth:`install`).  A failed check fails the leg; nothing goes out in clear.
* **accepting** (:meth:`admit_trunk_invite`): an INVITE from a TLS trunk's
  addresses that did not arrive over TLS is refused (403), and with
  ``tls_verify_name`` a client certificate the carrier presented (to a
  listener with ``tls_client_ca``, which verified its chain) must carry that
  name (RFC 5922 §7.1).
  Source addresses are still checked first (``host`` / ``accept_networks``).

SRTP with SDES keys (RFC 4568) is only ever negotiated on a leg whose
signalling runs over TLS (RFC 4568 §8.3: the keys are in the SDP).  The mode
of a leg is the trunk's ``srtp`` (forced ``off`` unless the trunk is TLS) or,
for a phone, ``[sip] phone_srtp`` when it registered over TLS (``off``
otherwise):

===========  ===============================  =========================================
mode         we offer                          we answer an offer of ...
===========  ===============================  =========================================
required     ``RTP/SAVP`` + ``a=crypto``       SAVP/AVP with usable crypto: SRTP; else 488
optional     ``RTP/AVP`` + ``a=crypto``        SAVP or AVP with crypto: SRTP; plain AVP: RTP
             (RFC 8643 opportunistic)
off          plain ``RTP/AVP``                 plain AVP (crypto lines ignored); SAVP: 488
===========  ===============================  =========================================

An answer that drops SRTP on a ``required`` leg fails the leg (BYE, 488).
Our key of a leg stays the same across re-INVITEs; a peer that re-keys gets
new SRTP sessions (RFC 4568 §7.1.4).  State: leg id → our crypto line, pruned
as media legs go away.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from sip.errors import NoCommonCodecError
from sip.sdes import (AVP, SAVP, CryptoAttribute, SrtpKeys, accept_answer, offers_crypto, opportunistic_offer,
                      secure_answer, secure_offer)
from sip.sdp import NegotiatedMedia, SdpSession, SessionDescription

logger = logging.getLogger("engine.mediasec")


@dataclass(frozen=True, slots=True)
class TrunkTarget:
    """Where and how a trunk INVITE goes."""

    uri: str
    dest: tuple[str, int]
    transport: str
    srtp: str


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class MediaSecurity:
    """Per-leg transport-security decisions of one call centre (see the module docstring)."""

    def __init__(self, centre: Any) -> None:
        self.centre = centre
        self._crypto: dict[str, tuple[str, CryptoAttribute, bytes]] = {}
        """leg id → (mode, our crypto line, the peer's key in use)."""
        self._offered: dict[str, tuple[str, CryptoAttribute]] = {}
        """leg id → (mode, the crypto line we offered) until the answer."""

    # ------------------------------------------------------------------ TLS trunks
    def install(self) -> None:
        """Give the endpoint one TLS client context per TLS trunk (call after the endpoint started).

        Raises:
            OSError / ssl.SSLError: a trunk's CA or client certificate cannot be loaded.
        """
        from sip.tls import TlsSettings, client_context

        cfg, ep = self.centre.config, self.centre.endpoint
        trunks = [t for t in cfg.trunks.values() if t.transport == "tls"]
        if not trunks:
            return
        tr = ep.transport
        if tr.tls is None:
            tr.tls = TlsSettings(client_context())
        for t in trunks:
            res = cfg.resolve_path
            ctx = client_context(res(t.tls_ca) if t.tls_ca else None,
                                 cert=res(t.tls_cert) if t.tls_cert else None,
                                 key=res(t.tls_key) if t.tls_key else None)
            addr = (self._resolve(t.host), t.sip_port)
            tr.tls.contexts[addr] = ctx
            tr.tls.server_names[addr] = t.tls_verify_name or t.host
            logger.info("trunk %s: SIP over TLS to %s:%d (certificate name %s, srtp %s)", t.name, *addr,
                        t.tls_verify_name or t.host, t.srtp_mode)

    def _resolve(self, host: str) -> str:
        if _is_ip(host):
            return host
        legs = getattr(self.centre, "legs", None)
        return legs._resolve(host) if legs is not None else socket.gethostbyname(host)

    def trunk_target(self, conf: Any, number: str) -> TrunkTarget:
        """Request-URI, destination, transport and SRTP mode of an INVITE out through trunk ``conf``."""
        host = self._resolve(conf.host)
        if conf.transport == "tls":  # RFC 3261 §26.2.2 / RFC 5630: sips: means TLS on every hop
            return TrunkTarget(f"sips:{number}@{conf.host}:{conf.sip_port}", (host, conf.sip_port), "TLS",
                               conf.srtp_mode)
        transport = conf.transport.upper()
        uri = f"sip:{number}@{conf.host}:{conf.sip_port}" + (";transport=tcp" if transport == "TCP" else "")
        return TrunkTarget(uri, (host, conf.sip_port), transport, "off")

    def admit_trunk_invite(self, trunk: Any, ev: Any) -> str | None:
        """None when this INVITE may be served as ``trunk``'s; else the refusal reason (answer 403)."""
        if trunk.transport != "tls":
            return None
        if ev.transport != "TLS":
            return "TLS required"
        if trunk.tls_verify_name:
            from sip.tls import certificate_names, peer_certificate

            # A listener without tls_client_ca asks for no certificate (the address and TLS
            # are the check); one with it has verified the chain, and the name must match.
            cert = peer_certificate(self.centre.endpoint.transport, ev.source)
            if cert is not None and trunk.tls_verify_name.lower() not in certificate_names(cert):
                return f"certificate is not {trunk.tls_verify_name}"
        return None

    # ------------------------------------------------------------------ SDES / SRTP
    def phone_mode(self, binding: Any) -> str:
        """SRTP mode towards a registered contact: ``[sip] phone_srtp`` over TLS, else off."""
        if getattr(binding, "transport", "") != "TLS":
            return "off"
        return self.centre.config.sip.phone_srtp

    def _prune(self) -> None:
        media = self.centre.media
        legs = media.legs if media is not None else {}
        for table in (self._crypto, self._offered):
            for leg_id in [k for k in table if k not in legs]:
                del table[leg_id]

    def _apply(self, leg_id: str, mode: str, ours: CryptoAttribute, keys: SrtpKeys) -> None:
        self.centre.media.set_srtp(leg_id, keys.suite, keys.local_key, keys.remote_key)
        self._crypto[leg_id] = (mode, ours, keys.remote_key)

    def answer(self, leg_id: str, mode: str, transport: str, session: SdpSession, offer: SessionDescription,
               rtp_port: int) -> tuple[SessionDescription, NegotiatedMedia]:
        """Answer ``offer`` on media leg ``leg_id`` per ``mode`` (SRTP set on the leg when negotiated).

        Raises:
            NoCommonCodecError: the offer does not fit the mode (answer 488), or no common codec.
            SdpError: a malformed crypto line.
        """
        self._prune()
        if transport != "TLS":
            mode = "off"  # RFC 4568 §8.3: never put keys into clear signalling
        offered = offers_crypto(offer)
        proto, usable = offered if offered is not None else (AVP, False)
        if mode == "off" or (proto == AVP and not usable):
            if proto == SAVP:
                raise NoCommonCodecError("RTP/SAVP offered but SRTP is off on this leg"
                                         + ("" if transport == "TLS" else " (signalling is not TLS)"))
            if mode == "required":
                raise NoCommonCodecError("SRTP required on this leg: plain RTP offer refused")
            return session.answer(offer, rtp_port)
        previous = self._crypto.get(leg_id)
        rand = (lambda n: previous[1].key) if previous is not None else None  # keep our key on re-INVITEs
        answer, neg, keys = secure_answer(session, offer, rtp_port, opportunistic=True,
                                          **({"random_bytes": rand} if rand else {}))
        ours = CryptoAttribute.parse(next(v for m in answer.media if m.media == "audio" and m.port
                                          for v in m.attribute_values("crypto")))
        if previous is None or previous[2] != keys.remote_key or previous[1].suite != keys.suite:
            self._apply(leg_id, mode, ours, keys)
        return answer, neg

    def reanswer(self, leg_id: str, transport: str, session: SdpSession, offer: SessionDescription,
                 rtp_port: int) -> tuple[SessionDescription, NegotiatedMedia]:
        """Answer a re-INVITE's offer on an existing leg (its SRTP mode kept; plain legs stay plain)."""
        previous = self._crypto.get(leg_id)
        if previous is None:
            return session.answer(offer, rtp_port)
        mode = previous[0]
        offered = offers_crypto(offer)
        if mode == "optional" and offered is not None and not offered[1] and offered[0] == AVP:
            raise NoCommonCodecError("re-INVITE drops SRTP on an encrypted leg")  # never downgrade silently
        return self.answer(leg_id, mode, transport, session, offer, rtp_port)

    def offer(self, leg_id: str, mode: str, session: SdpSession, rtp_port: int) -> SessionDescription:
        """Our offer for a new outgoing leg per ``mode`` (the caller has checked the transport)."""
        self._prune()
        if mode == "off":
            return session.offer(rtp_port)
        make = secure_offer if mode == "required" else opportunistic_offer
        sd, crypto = make(session, rtp_port)
        self._offered[leg_id] = (mode, crypto)
        return sd

    def accept(self, leg_id: str, session: SdpSession, answer: SessionDescription) -> NegotiatedMedia:
        """Read the answer to :meth:`offer` (SRTP set on the leg when negotiated).

        Raises:
            NoCommonCodecError: a ``required`` leg's answer without SRTP (the leg must fail).
        """
        pending = self._offered.get(leg_id)
        if pending is None:
            previous = self._crypto.get(leg_id)
            if previous is None:
                return session.process_answer(answer)
            pending = previous[:2]
        mode, crypto = pending
        neg, keys = accept_answer(session, answer, crypto, opportunistic=mode == "optional")
        if keys is not None:
            previous = self._crypto.get(leg_id)
            if previous is None or previous[2] != keys.remote_key:
                self._apply(leg_id, mode, crypto, keys)
        return neg

    def is_secure(self, leg_id: str) -> bool:
        """True when the leg's media is SRTP."""
        return leg_id in self._crypto
