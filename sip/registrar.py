"""Registrar: REGISTER handling over the location service (RFC 3261 §10.3).

Theory of operation
-------------------
``SipStack`` hands every REGISTER to :meth:`Registrar.handle_register`, which
returns ``(status, reason, headers)``; the stack sends that response through
the server transaction.  The steps follow §10.3:

1. authentication (step 4): ``authenticator.authenticate(request, now)``
   returns None when the request is authorised, else the response to send
   (401 with ``WWW-Authenticate`` and ``stale`` as needed, or 403).  The
   default :class:`DigestAuthenticator` wraps ``sip/auth.py`` with a
   ``lookup_password(user, realm) -> str | None`` callback;
2. the authenticated user must own the AOR (step 6), else 403;
3. ``Contact: *`` only with ``Expires: 0`` and alone (step 6), else 400;
4. each contact's expiry: its ``expires`` parameter, else the ``Expires``
   header, else ``default_expires_s``; below ``min_expires_s`` (and not 0)
   the whole request is refused with 423 and ``Min-Expires`` (step 7);
   longer than ``max_expires_s`` is shortened;
5. Call-ID/CSeq ordering per binding (step 7): an older or repeated CSeq of
   the same Call-ID is refused with 500;
6. the 200 lists every current binding with its remaining ``expires``.

Bindings remember the REGISTER's *source* address and transport, so a phone
behind NAT is reached where it really is (RFC 3581), and every change raises
``RegistrationChanged`` (the ACD's device reachability).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from .events import RegistrationChanged
from .location import Binding, LocationService
from .message import Request
from .uri import SipUri

logger = logging.getLogger(__name__)

Address = tuple[str, int]
Headers = list[tuple[str, str]]


class Authenticator(Protocol):
    """Decides whether a REGISTER is authorised."""

    def authenticate(self, request: Request, now: float) -> tuple[int, Headers, str | None] | None:
        """None when authorised, else (status, headers, reason) to answer with."""
        ...

    def authenticated_user(self, request: Request) -> str | None:
        """The user name the request authenticated as (after authenticate returned None)."""
        ...


class Registrar:
    """REGISTER handling (see the module docstring).

    Args:
        authenticator: an :class:`Authenticator` or None (accept everyone,
            for lab setups only).
        min_expires_s, max_expires_s, default_expires_s: §10.3 step 7 limits.
        domains: if given, only AORs in these domains are accepted (else 404).
        tenant: stamped on bindings and events.
    """

    def __init__(self, authenticator: Authenticator | None = None, *, min_expires_s: int = 60,
                 max_expires_s: int = 3600, default_expires_s: int = 3600,
                 domains: list[str] | None = None, tenant: str = "default") -> None:
        self.authenticator = authenticator
        self.min_expires_s = min_expires_s
        self.max_expires_s = max_expires_s
        self.default_expires_s = default_expires_s
        self.domains = {d.lower() for d in domains} if domains else None
        self.tenant = tenant
        self.location: LocationService | None = None
        self._emit: Callable[[RegistrationChanged], None] = lambda ev: None

    def attach(self, stack: Any) -> None:
        """Called by SipStack: share its timer heap and event queue."""
        self.location = LocationService(stack.timers, self._changed)
        self._emit = stack._events.append

    def _changed(self, aor: str, reason: str) -> None:
        assert self.location is not None
        logger.info("registration of %s %s (%d contacts)", aor, reason, len(self.location.lookup(aor)))
        self._emit(RegistrationChanged(aor, tuple(self.location.lookup(aor)), reason, self.tenant))

    def lookup(self, aor: str) -> list[Binding]:
        """Current bindings of ``aor`` (``"sip:alice@example.com"``)."""
        assert self.location is not None, "Registrar not attached to a SipStack"
        return self.location.lookup(aor)

    def handle_register(self, req: Request, source: Address, transport: str,
                        now: float) -> tuple[int, str | None, Headers]:
        """Process a REGISTER; returns (status, reason or None, extra headers)."""
        loc = self.location
        assert loc is not None, "Registrar not attached to a SipStack"
        to_uri = req.to.uri
        if not isinstance(to_uri, SipUri):
            return 404, "Not Found (AOR is not a SIP URI)", []
        aor = to_uri.aor
        if self.domains is not None and to_uri.host.lower() not in self.domains:
            return 404, f"Not Found (domain {to_uri.host} is not served here)", []
        if self.authenticator is not None:
            refused = self.authenticator.authenticate(req, now)
            if refused is not None:
                status, headers, reason = refused
                return status, reason, headers
            user = self.authenticator.authenticated_user(req)
            if user is not None and to_uri.user is not None and user != to_uri.user:
                return 403, f"Forbidden ({user} may not register {aor})", []
        call_id = req.call_id
        cseq = req.cseq[0]
        header_expires = req.expires
        if req.contact_is_wildcard:
            # §10.3 step 6: "*" only with Expires: 0 and no other Contact.
            if header_expires != 0:
                return 400, "Bad Request: Contact * requires Expires: 0", []
            if loc.remove_all(aor):
                loc.notify(aor, "unregistered")
            return 200, None, []
        changes: list[tuple[str, int, float]] = []
        for contact in req.contact:
            expires = contact.expires
            if expires is None:
                expires = header_expires if header_expires is not None else self.default_expires_s
            if 0 < expires < self.min_expires_s:
                return 423, None, [("Min-Expires", str(self.min_expires_s))]
            expires = min(expires, self.max_expires_s)
            if not loc.check_order(aor, contact.uri_text, call_id, cseq):
                return 500, "Server Internal Error (CSeq out of order for this Call-ID)", []
            q = contact.q
            changes.append((contact.uri_text, expires, 1.0 if q is None else q))
        reasons = set()
        for uri_text, expires, q in changes:
            reason = loc.update(aor, uri_text, expires, call_id, cseq, source, transport, now, q, self.tenant)
            if reason is not None:
                reasons.add(reason)
        if reasons:
            for reason in ("registered", "unregistered", "refreshed"):
                if reason in reasons:
                    loc.notify(aor, reason)
                    break
        headers = [("Contact", f"<{b.contact}>;expires={b.expires_in(now)}") for b in loc.lookup(aor)]
        return 200, None, headers
