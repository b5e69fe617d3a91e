"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Theory of operation
-------------------
Server side -- :class:`DigestServer` (registrar, or a UAS that challenges):

* :meth:`~DigestServer.challenge` returns the ``WWW-Authenticate`` (401) or
  ``Proxy-Authenticate`` (407) header values, one per algorithm in
  preference order (RFC 8760 §2.4: SHA-512-256, SHA-256, then MD5 for old
  phones), all carrying the same nonce.
* Nonces are stateless: ``<timestamp hex><random hex>.<HMAC>`` signed with a
  server secret over timestamp, randomness and realm.  Their age is checked
  against ``nonce_lifetime_s`` with the ``now`` handed in (sans-IO); an
  expired but authentic nonce gives :attr:`AuthOutcome.STALE`, so the
  caller re-challenges with ``stale=true`` (RFC 7616 §3.3) and the phone
  retries without asking its user.
* ``qop=auth`` with nonce-count replay protection: the highest ``nc`` seen
  per nonce is remembered (bounded table, expired nonces purged); an ``nc``
  that does not increase is a replay (:attr:`AuthOutcome.REJECTED`).
* :meth:`~DigestServer.verify` checks an ``Authorization`` /
  ``Proxy-Authorization`` value given the request method and either the
  password or a lookup of ``HA1 = H(username:realm:password)`` (what a user
  store should keep instead of passwords).  Comparison is constant-time.

Client side -- :class:`DigestClient` (our trunks that challenge us): pick the
strongest supported challenge among a 401/407's headers, compute the
response (with ``qop=auth`` and our cnonce when offered, RFC 2617 compatible
otherwise) and keep the nonce count per nonce for the next requests.

Header values only: this module neither sends nor retries; the transaction
user (sipcore) resends the request with the header and a new CSeq.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sip.errors import RemoteProtocolError
from sip.grammar import is_token, quote

__all__ = [
    "ALGORITHMS",
    "AuthOutcome",
    "Verification",
    "DigestServer",
    "DigestClient",
    "parse_auth_header",
    "digest_response",
    "compute_ha1",
]

# RFC 7616 §3.2 / RFC 8760: algorithm name -> hashlib name.
ALGORITHMS: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
_PREFERENCE = ("SHA-512-256", "SHA-256", "MD5")


def _hash(algorithm: str, text: str) -> str:
    base = algorithm[:-5] if algorithm.endswith("-sess") else algorithm
    return hashlib.new(ALGORITHMS[base], text.encode("utf-8")).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """``H(username:realm:password)`` (RFC 7616 §3.4.2), what a user store may keep."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def digest_response(
    *,
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value of RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1 without qop).

    Args:
        algorithm: ``MD5``, ``SHA-256``, ``SHA-512-256`` or a ``-sess`` variant.
        ha1: ``H(username:realm:password)`` (the -sess step is applied here).
        nonce, cnonce, nc (8 hex digits), qop: from the exchange.
        method, uri: request method and digest-uri.
    """
    if algorithm.endswith("-sess"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest a=b, c="d"`` into (scheme, {lower-case name: unquoted value}).

    Raises:
        RemoteProtocolError: malformed credentials/challenge (unterminated
            quote, missing ``=``, repeated parameter).
    """
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if not is_token(scheme):
        raise RemoteProtocolError(f"authorization scheme {scheme[:20]!r} is not a token")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise RemoteProtocolError(f"auth parameter {rest[i:i + 20]!r} has no '='")
        name = rest[i:eq].strip().lower()
        if not is_token(name):
            raise RemoteProtocolError(f"auth parameter name {name[:20]!r} is not a token")
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            out: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise RemoteProtocolError(f"auth parameter {name} has an unterminated quoted string")
                ch = rest[i]
                if ch == "\\" and i + 1 < n:
                    out.append(rest[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    i += 1
                    break
                out.append(ch)
                i += 1
            val = "".join(out)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            val = rest[i:end].strip()
            i = end
        if name in params:
            raise RemoteProtocolError(f"auth parameter {name} appears twice")
        params[name] = val
    return scheme, params


class AuthOutcome(enum.Enum):
    """Result of :meth:`DigestServer.verify`."""

    ACCEPTED = "accepted"  #: credentials are right: go on
    STALE = "stale"  #: right password, expired nonce: re-challenge with stale=true
    REJECTED = "rejected"  #: wrong password, unknown user, replayed nc, foreign nonce: 401/403
    MALFORMED = "malformed"  #: unparseable or incomplete credentials: 400


@dataclass(frozen=True, slots=True)
class Verification:
    """What :meth:`DigestServer.verify` found.

    Attributes:
        outcome: see :class:`AuthOutcome`.
        username: the claimed username (None if unreadable).
        reason: human-readable cause, e.g. ``"nonce count 00000001 replayed"``.
    """

    outcome: AuthOutcome
    username: str | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.ACCEPTED


class DigestServer:
    """Issues challenges and verifies credentials for one realm.

    Args:
        realm: the protection realm (usually the SIP domain).
        secret: server key for signing nonces (keep it across restarts so
            outstanding nonces stay valid, or rotate to invalidate them).
        nonce_lifetime_s: after this a nonce is stale.
        algorithms: offered algorithms, strongest first.
        max_tracked_nonces: bound of the nonce-count table.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_lifetime_s: float = 300.0,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        max_tracked_nonces: int = 65536,
    ) -> None:
        self.realm = realm
        self._secret = secret
        self.nonce_lifetime_s = nonce_lifetime_s
        self.algorithms = tuple(algorithms)
        for alg in self.algorithms:
            if alg not in ALGORITHMS:
                raise ValueError(f"unsupported digest algorithm {alg!r}")
        self.max_tracked_nonces = max_tracked_nonces
        self._nc: OrderedDict[str, tuple[int, float]] = OrderedDict()  # nonce -> (highest nc, issued)

    # -- nonces ---------------------------------------------------------------
    def _sign(self, body: str) -> str:
        mac = hmac.new(self._secret, f"{body}:{self.realm}".encode(), hashlib.sha256).hexdigest()
        return mac[:32]

    def make_nonce(self, now: float) -> str:
        """A fresh signed nonce stamped with *now* (milliseconds)."""
        body = f"{int(now * 1000):x}{secrets.token_hex(8)}"
        return f"{body}.{self._sign(body)}"

    def _nonce_issued(self, nonce: str) -> float | None:
        body, dot, mac = nonce.partition(".")
        if not dot or len(body) <= 16 or not hmac.compare_digest(mac, self._sign(body)):
            return None
        try:
            return int(body[:-16], 16) / 1000.0
        except ValueError:
            return None

    # -- challenges -----------------------------------------------------------
    def challenge(self, now: float, *, stale: bool = False, proxy: bool = False) -> list[tuple[str, str]]:
        """Header lines for a 401 (``WWW-Authenticate``) or 407 (``Proxy-Authenticate``).

        One challenge per algorithm, strongest first, sharing one nonce
        (RFC 8760 §2.4).  ``stale=True`` after :attr:`AuthOutcome.STALE`.
        """
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        nonce = self.make_nonce(now)
        out = []
        for alg in self.algorithms:
            value = f'Digest realm={quote(self.realm)}, nonce="{nonce}", algorithm={alg}, qop="auth"'
            if stale:
                value += ", stale=true"
            out.append((name, value))
        return out

    # -- verification ----------------------------------------------------------
    def verify(
        self,
        method: str,
        credentials: str,
        now: float,
        *,
        password: str | None = None,
        ha1_lookup: Callable[[str, str, str], str | None] | None = None,
        uri: str | None = None,
    ) -> Verification:
        """Check an ``Authorization``/``Proxy-Authorization`` header value.

        Args:
            method: the request method (``REGISTER``).
            credentials: the header value.
            now: current time (same clock as :meth:`challenge`).
            password: the user's password, or
            ha1_lookup: ``(username, realm, algorithm) -> HA1 hex or None``.
            uri: if given, the ``uri`` parameter must equal it (RFC 2617 §3.2.2.5).

        Returns:
            a :class:`Verification`; never raises on bad input.
        """
        scheme = credentials.strip().partition(" ")[0]
        if scheme.lower() != "digest":
            # RFC 4475 §3.3.7: an unknown scheme is answered with our challenge.
            return Verification(AuthOutcome.REJECTED, None, f"authorization scheme {scheme[:20]!r} not supported")
        try:
            scheme, p = parse_auth_header(credentials)
        except RemoteProtocolError as exc:
            return Verification(AuthOutcome.MALFORMED, None, exc.message)
        username = p.get("username")
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        if missing:
            return Verification(AuthOutcome.MALFORMED, username, f"credentials lack {', '.join(missing)}")
        assert username is not None
        algorithm = p.get("algorithm", "MD5")
        base = algorithm[:-5] if algorithm.endswith("-sess") else algorithm
        if base not in ALGORITHMS or base not in self.algorithms:
            return Verification(AuthOutcome.REJECTED, username, f"algorithm {algorithm} not offered")
        if p["realm"] != self.realm:
            return Verification(AuthOutcome.REJECTED, username, f"realm {p['realm']!r} is not {self.realm!r}")
        if uri is not None and p["uri"] != uri:
            return Verification(AuthOutcome.REJECTED, username, "digest uri does not match the Request-URI")
        nonce = p["nonce"]
        issued = self._nonce_issued(nonce)
        if issued is None:
            return Verification(AuthOutcome.REJECTED, username, "nonce was not issued by this server")
        qop = p.get("qop")
        nc_text = p.get("nc")
        cnonce = p.get("cnonce")
        if qop is not None:
            if qop != "auth":
                return Verification(AuthOutcome.MALFORMED, username, f"qop {qop!r} not supported")
            if nc_text is None or cnonce is None or len(nc_text) != 8:
                return Verification(AuthOutcome.MALFORMED, username, "qop=auth without 8-digit nc and cnonce")
            try:
                nc = int(nc_text, 16)
            except ValueError:
                return Verification(AuthOutcome.MALFORMED, username, f"nonce count {nc_text!r} is not hex")
        else:
            nc = 0
        # Password check first, so a stale nonce with a wrong password is a rejection.
        if ha1_lookup is not None:
            ha1 = ha1_lookup(username, self.realm, base)
        elif password is not None:
            ha1 = compute_ha1(base, username, self.realm, password)
        else:
            raise TypeError("verify() needs password or ha1_lookup")
        if ha1 is None:
            return Verification(AuthOutcome.REJECTED, username, f"unknown user {username!r}")
        expected = digest_response(
            algorithm=algorithm, ha1=ha1, nonce=nonce, method=method, uri=p["uri"], qop=qop, nc=nc_text, cnonce=cnonce
        )
        if not hmac.compare_digest(expected, p["response"].lower()):
            return Verification(AuthOutcome.REJECTED, username, "wrong response (password mismatch)")
        if now - issued > self.nonce_lifetime_s or issued - now > 5.0:
            return Verification(AuthOutcome.STALE, username, "nonce expired")
        if qop is not None:
            seen = self._nc.get(nonce)
            if seen is not None and nc <= seen[0]:
                return Verification(AuthOutcome.REJECTED, username, f"nonce count {nc_text} replayed")
            self._remember(nonce, nc, issued, now)
        else:
            # RFC 2617 without qop has no counter: allow the nonce once per request is
            # impossible to tell apart from a retransmission; accept within its lifetime.
            pass
        return Verification(AuthOutcome.ACCEPTED, username, "ok")

    def _remember(self, nonce: str, nc: int, issued: float, now: float) -> None:
        table = self._nc
        table[nonce] = (nc, issued)
        table.move_to_end(nonce)
        if len(table) > self.max_tracked_nonces:
            # Drop expired nonces first; if still too many, the least recently used.
            for key in [k for k, (_, t) in table.items() if now - t > self.nonce_lifetime_s]:
                del table[key]
            while len(table) > self.max_tracked_nonces:
                table.popitem(last=False)


class DigestClient:
    """Answers digest challenges for requests we send (a trunk's 401/407).

    Args:
        username, password: our credentials for the trunk.
        cnonce_factory: returns a fresh cnonce (default: 16 random hex digits).

    Example::

        client = DigestClient("trunkuser", "s3cret")
        name, value = client.authorize(response_401.headers, "INVITE", "sip:+15551234@trunk.example")
        retry.headers.set(name, value)
    """

    def __init__(self, username: str, password: str, *, cnonce_factory: Callable[[], str] | None = None) -> None:
        self.username = username
        self.password = password
        self._cnonce = cnonce_factory or (lambda: secrets.token_hex(8))
        self._nc: dict[str, int] = {}

    @staticmethod
    def choose(values: Iterable[str]) -> tuple[str, dict[str, str]]:
        """Pick the strongest supported Digest challenge among header values.

        Raises:
            RemoteProtocolError: no usable Digest challenge.
        """
        best: tuple[int, dict[str, str]] | None = None
        for value in values:
            scheme, params = parse_auth_header(value)
            if scheme.lower() != "digest" or "nonce" not in params or "realm" not in params:
                continue
            alg = params.get("algorithm", "MD5")
            base = alg[:-5] if alg.endswith("-sess") else alg
            if base not in ALGORITHMS:
                continue
            rank = _PREFERENCE.index(base)
            if best is None or rank < best[0]:
                best = (rank, params)
        if best is None:
            raise RemoteProtocolError("no supported Digest challenge in the response", 401)
        return "Digest", best[1]

    def authorize(self, headers: object, method: str, uri: str) -> tuple[str, str]:
        """Build the credentials header for a 401/407 response.

        Args:
            headers: the response's :class:`sip.message.Headers`.
            method: method of the request being retried.
            uri: its Request-URI (the digest-uri).

        Returns:
            (header name, header value): ``Authorization`` for 401,
            ``Proxy-Authorization`` for 407.
        """
        from sip.message import Headers  # local: message imports nothing from auth

        assert isinstance(headers, Headers)
        www = headers.get_lines("www-authenticate")
        if www:
            return "Authorization", self.answer(www, method, uri)
        proxy = headers.get_lines("proxy-authenticate")
        if proxy:
            return "Proxy-Authorization", self.answer(proxy, method, uri)
        raise RemoteProtocolError("401/407 response carries no authentication challenge")

    def answer(self, challenges: Iterable[str], method: str, uri: str) -> str:
        """Credentials value answering the best of *challenges*."""
        _, ch = self.choose(challenges)
        algorithm = ch.get("algorithm", "MD5")
        base = algorithm[:-5] if algorithm.endswith("-sess") else algorithm
        realm, nonce = ch["realm"], ch["nonce"]
        qops = [q.strip() for q in ch.get("qop", "").split(",") if q.strip()]
        qop = "auth" if "auth" in qops else None
        if qops and qop is None:
            raise RemoteProtocolError(f"challenge qop {ch['qop']!r} not supported (only auth)", 401)
        ha1 = compute_ha1(base, self.username, realm, self.password)
        parts = [
            f"username={quote(self.username)}",
            f"realm={quote(realm)}",
            f"nonce={quote(nonce)}",
            f"uri={quote(uri)}",
        ]
        if qop is not None or algorithm.endswith("-sess"):
            cnonce = self._cnonce()
        else:
            cnonce = None
        if qop is not None:
            count = self._nc.get(nonce, 0) + 1
            self._nc[nonce] = count
            nc = f"{count:08x}"
        else:
            nc = None
        response = digest_response(
            algorithm=algorithm, ha1=ha1, nonce=nonce, method=method, uri=uri, qop=qop, nc=nc, cnonce=cnonce
        )
        parts.append(f'response="{response}"')
        parts.append(f"algorithm={algorithm}")
        if qop is not None:
            parts.append(f"qop={qop}")
            parts.append(f"nc={nc}")
        if cnonce is not None:
            parts.append(f"cnonce={quote(cnonce)}")
        if "opaque" in ch:
            parts.append(f"opaque={quote(ch['opaque'])}")
        return "Digest " + ", ".join(parts)
