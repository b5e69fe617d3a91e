"""Registrar: REGISTER handling over the location service (RFC 3261 §10.3).

Theory of operation
-------------------
``SipStack`` hands every REGISTER to :meth:`Registrar.handle_register`, which
returns ``(status, reason, headers)``; the stack sends that response through
the server transaction.  The steps follow §10.3:

1. authentication (step 4): ``authenticator.authenticate(request, now)``
   returns an :class:`AuthResult`: the user when authorised, else the
   response to send (401 with ``WWW-Authenticate`` and ``stale`` as needed,
   403, or 400 for malformed credentials).  The
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
import os
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .auth import AuthOutcome, DigestServer, compute_ha1
from .events import RegistrationChanged
from .location import Binding, LocationService
from .message import Request
from .uri import SipUri

logger = logging.getLogger(__name__)

Address = tuple[str, int]
Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What an authenticator decided about one request."""

    user: str | None = None
    """The authenticated user name when accepted (``status == 0``)."""
    status: int = 0
    """0 when accepted, else the status to answer (401, 403, 400)."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra headers of that answer (``WWW-Authenticate`` challenges)."""
    reason: str | None = None
    """Reason phrase of that answer (None: the RFC 3261 default)."""


class Authenticator(Protocol):
    """Decides whether a REGISTER is authorised."""

    def authenticate(self, request: Request, now: float) -> AuthResult:
        """Accept (``AuthResult(user=...)``) or refuse with the response to send."""
        ...


class DigestAuthenticator:
    """RFC 2617/7616/8760 digest for the registrar, over sipmsg's :class:`DigestServer`.

    Args:
        realm: protection realm (usually the SIP domain).
        lookup_password: ``(user, realm) -> password or None``; or
        lookup_ha1: ``(user, realm, algorithm) -> HA1 hex or None`` (stores
            that keep no clear passwords).
        secret: nonce signing key (random per process when None).
        nonce_lifetime_s: nonces older than this get ``stale=true``.
        algorithms: offered, strongest first.  MD5 only by default: SIPp 3.6
            and baresip 1.0 answer only the *first* challenge and fail on
            SHA-256 (measured in tests/interop), so ``("SHA-256", "MD5")``
            (RFC 8760) is for fleets whose phones pick among challenges.
    """

    def __init__(self, realm: str, lookup_password: Callable[[str, str], str | None] | None = None, *,
                 lookup_ha1: Callable[[str, str, str], str | None] | None = None,
                 secret: bytes | None = None, nonce_lifetime_s: float = 300.0,
                 algorithms: tuple[str, ...] = ("MD5",)) -> None:
        if (lookup_password is None) == (lookup_ha1 is None):
            raise ValueError("give exactly one of lookup_password or lookup_ha1")
        self.realm = realm
        self.server = DigestServer(realm, secret or os.urandom(32), nonce_lifetime_s=nonce_lifetime_s,
                                   algorithms=algorithms)
        if lookup_ha1 is None:
            assert lookup_password is not None
            pw = lookup_password

            def lookup_ha1(user: str, realm_: str, algorithm: str) -> str | None:
                password = pw(user, realm_)
                return None if password is None else compute_ha1(algorithm, user, realm_, password)
        self._ha1 = lookup_ha1

    def authenticate(self, request: Request, now: float) -> AuthResult:
        creds = request.headers.get_lines("Authorization")
        if not creds:
            return AuthResult(status=401, headers=tuple(self.server.challenge(now)))
        v = self.server.verify(request.method, creds[0], now, ha1_lookup=self._ha1)
        if v.outcome is AuthOutcome.ACCEPTED:
            return AuthResult(user=v.username)
        if v.outcome is AuthOutcome.STALE:
            return AuthResult(status=401, headers=tuple(self.server.challenge(now, stale=True)))
        if v.outcome is AuthOutcome.MALFORMED:
            return AuthResult(status=400, reason=f"Bad Request: {v.reason}"[:120])
        logger.warning("REGISTER from %s refused: %s", v.username, v.reason)
        if v.reason.startswith("nonce was not issued") or v.reason.startswith("authorization scheme"):
            return AuthResult(status=401, headers=tuple(self.server.challenge(now)))
        return AuthResult(status=403, reason=f"Forbidden ({v.reason})"[:120])


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
        # (source, user, accepted) after each digest decision with credentials
        # (issue 12: sip.guard bans repeated failures); None: nobody listens.
        self.auth_observer: Callable[[Address, str | None, bool], None] | None = None

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
            result = self.authenticator.authenticate(req, now)
            observer = self.auth_observer
            if result.status:
                if observer is not None and result.status == 403:
                    observer(source, to_uri.user, False)
                return result.status, result.reason, list(result.headers)
            user = result.user
            if user is not None and to_uri.user is not None and user != to_uri.user:
                if observer is not None:
                    observer(source, user, False)
                return 403, f"Forbidden ({user} may not register {aor})", []
            if observer is not None:
                observer(source, user, True)
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
