"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966, RFC 5118).

Theory of operation
-------------------
:func:`parse_uri` turns URI text into one of three immutable-by-convention
objects:

* :class:`SipUri` for ``sip:`` and ``sips:`` -- user, password, host, port,
  ordered ``params`` (``;name=value``, a flag parameter maps to ``None``) and
  ``headers`` (``?name=value&...``).
* :class:`TelUri` for ``tel:`` (RFC 3966) -- the number and its parameters.
* :class:`AbsoluteUri` for any other scheme (RFC 3261 ``absoluteURI``): kept as
  text.  A UAS answers 416 when such a URI is the Request-URI (RFC 3261
  §8.2.2.1); parsing it is not an error.

Text is kept exactly as received (escapes included) so that ``str(uri)``
reproduces the input; comparison follows RFC 3261 §19.1.4 (unescape, case
rules for each component, parameter rules) through :meth:`SipUri.__eq__`.
IPv6 references are kept with their brackets in ``host`` (``"[2001:db8::1]"``)
as RFC 5118 recommends for re-serialisation; :attr:`SipUri.host_unbracketed`
strips them.
"""

import re
from typing import Union

from sip.errors import RemoteProtocolError

__all__ = [
    "SipUri",
    "TelUri",
    "AbsoluteUri",
    "Uri",
    "parse_uri",
    "unescape",
    "parse_host_port",
    "check_host",
    "host_ok",
    "split_params",
    "clear_uri_cache",
]

# RFC 3261 §25.1: escaped = "%" HEXDIG HEXDIG
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")

# RFC 3261 §25.1 hostname / IPv4address / IPv6reference.  The IPv6 pattern is
# the permissive RFC 3261 one (hex, ':' and a dotted tail); RFC 5118 §4.10 asks
# receivers to tolerate the 3-colon form it allows.
_LABEL = r"[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*"
_HOSTNAME_RE = re.compile(r"(?:" + _LABEL + r"\.)*[A-Za-z][A-Za-z0-9]*(?:-+[A-Za-z0-9]+)*\.?\Z")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(_OCTET + r"(?:\." + _OCTET + r"){3}\Z")
_DIGITS = frozenset("0123456789")
_DOTTED_RE = re.compile(r"[0-9]+(?:\.[0-9]+)+\Z")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
# RFC 3261 user = 1*( unreserved / escaped / user-unreserved ), password likewise.
_USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+\Z")
_PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*\Z")
# paramchar = param-unreserved / unreserved / escaped
_PARAMCHARS_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+\Z")
# hname/hvalue = 1*( hnv-unreserved / unreserved / escaped )
_HCHARS_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})*\Z")
# Fast path for the everyday URI: sip:user@host[:port][;params], no escapes,
# no password, no headers, hostname or IPv4 (everything else: general path).
_PCHARS = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+"
_FAST_SIP_RE = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,/]+)@)?"
    r"([A-Za-z0-9.\-]+)"
    r"(?::([0-9]{1,5}))?"
    r"((?:;" + _PCHARS + r"(?:=" + _PCHARS + r")?)*)\Z"
)
# absoluteURI body: no whitespace, no angle brackets, no quotes.
_ABS_BODY_RE = re.compile(r"[^\s<>\"]+\Z")


def unescape(text: str) -> str:
    """Replace ``%HH`` escapes by the characters they stand for (RFC 3261 §19.1.4).

    ``%00`` becomes a NUL character; nothing is truncated (RFC 4475 §3.1.1.4).
    Bytes that are not valid UTF-8 after unescaping are kept via surrogateescape.
    """
    if "%" not in text:
        return text
    raw = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16) + 0xDC00) if int(m.group(1), 16) >= 0x80 else chr(int(m.group(1), 16)), text)
    # Re-assemble multi-byte UTF-8 sequences that were escaped byte by byte.
    try:
        return raw.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")
    except UnicodeError:  # pragma: no cover - surrogateescape round-trips all bytes
        return raw


def _check_port(text: str, where: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise RemoteProtocolError(f"{where}: port {text!r} is not a number")
    port = int(text)
    if port > 65535:
        raise RemoteProtocolError(f"{where}: port {port} exceeds 65535")
    return port


def host_ok(host: str) -> bool:
    """Fast test: a valid hostname or IPv4 address (no brackets)."""
    if host[-1] in _DIGITS and _IPV4_RE.match(host) is not None:
        return True
    return _HOSTNAME_RE.match(host) is not None


def check_host(host: str, where: str = "host") -> None:
    """Validate a hostname, IPv4 address or bracketed IPv6 reference.

    Raises:
        RemoteProtocolError: naming the fault (RFC 3261 §25.1, RFC 5118 §4.2).
    """
    if not host:
        raise RemoteProtocolError(f"{where}: empty host")
    if host[0] == "[":
        if not _IPV6_RE.match(host) or host.count(":") < 2:
            raise RemoteProtocolError(f"{where}: malformed IPv6 reference {host!r}")
        return
    if host_ok(host):
        return
    if _DOTTED_RE.match(host):
        raise RemoteProtocolError(f"{where}: IPv4 address {host!r} out of range")
    if ":" in host:
        # RFC 5118 §4.2: an IPv6 address must be enclosed in brackets in a SIP URI.
        raise RemoteProtocolError(f"{where}: IPv6 address {host!r} is not enclosed in []")
    raise RemoteProtocolError(f"{where}: malformed host {host!r}")


def parse_host_port(text: str, where: str = "host") -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 references in brackets) and validate both parts.

    Raises:
        RemoteProtocolError: malformed host or port out of range.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RemoteProtocolError(f"{where}: unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and rest[0] != ":":
            raise RemoteProtocolError(f"{where}: junk after IPv6 reference in {text!r}")
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise RemoteProtocolError(f"{where}: IPv6 address {text!r} is not enclosed in []")
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
    check_host(host, where)
    port = _check_port(port_text, where) if port_text is not None else None
    return host, port


def split_params(text: str, where: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` (leading ``;`` already removed) into an ordered dict.

    Names keep their case; lookups on :class:`SipUri` lower-case them.
    """
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not name or not _PARAMCHARS_RE.match(name):
            raise RemoteProtocolError(f"{where}: malformed URI parameter {item!r}")
        if sep:
            if not value or not _PARAMCHARS_RE.match(value):
                raise RemoteProtocolError(f"{where}: malformed value of URI parameter {name!r}")
            params[name] = value
        else:
            params[name] = None
    return params


class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1).

    Attributes:
        scheme: ``"sip"`` or ``"sips"`` (lower case).
        user: user part as written (escapes kept), or None.
        password: password as written, or None.
        host: host as written; IPv6 references keep their brackets.
        port: port number or None when absent.
        params: ordered ``uri-parameters``; a flag parameter maps to None.
        headers: ordered ``headers`` (``?a=b&c=d``).
    """

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers")

    def __init__(
        self,
        host: str,
        user: str | None = None,
        *,
        scheme: str = "sip",
        port: int | None = None,
        password: str | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = dict(params) if params else {}
        self.headers: dict[str, str] = dict(headers) if headers else {}

    # -- parsing -------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, where: str = "URI") -> "SipUri":
        """Parse a SIP/SIPS URI.  Raises :class:`RemoteProtocolError` when malformed."""
        m = _FAST_SIP_RE.match(text)
        if m is not None:
            # Everyday shape (no escapes, password, headers or IPv6): one regex.
            scheme, user, host, port_text, ptext = m.groups()
            if not host_ok(host):
                check_host(host, where)  # raises the specific fault
            port = None
            if port_text is not None:
                port = int(port_text)
                if port > 65535:
                    raise RemoteProtocolError(f"{where}: port {port} exceeds 65535")
            params: dict[str, str | None] = {}
            if ptext:
                for item in ptext[1:].split(";"):
                    name, sep, value = item.partition("=")
                    params[name] = value if sep else None
            uri = object.__new__(cls)
            uri.scheme = scheme
            uri.user = user
            uri.password = None
            uri.host = host
            uri.port = port
            uri.params = params
            uri.headers = {}
            return uri
        return cls._parse_general(text, where)

    @classmethod
    def _parse_general(cls, text: str, where: str) -> "SipUri":
        scheme, colon, rest = text.partition(":")
        lscheme = scheme.lower()
        if not colon or lscheme not in ("sip", "sips"):
            raise RemoteProtocolError(f"{where}: not a SIP URI: {text!r}")
        if not rest:
            raise RemoteProtocolError(f"{where}: SIP URI {text!r} has no host")
        for ch in rest:
            if ch in " \t\r\n<>\"":
                raise RemoteProtocolError(f"{where}: SIP URI {text!r} contains {ch!r}")
        user = password = None
        at = rest.find("@")
        hostpart = rest
        if at >= 0:
            userinfo = rest[:at]
            candidate = rest[at + 1 :]
            # '@' may only appear in the userinfo delimiter; if the text before it
            # already ended the host (a header value), fall back to no userinfo.
            u, _, p = userinfo.partition(":")
            if userinfo and _USER_RE.match(u) and _PASSWORD_RE.match(p):
                user = u
                password = p if ":" in userinfo else None
                hostpart = candidate
            elif not userinfo:
                raise RemoteProtocolError(f"{where}: empty user part in {text!r}")
            else:
                head = rest.split(";", 1)[0].split("?", 1)[0]
                if "@" in head:
                    raise RemoteProtocolError(f"{where}: malformed user part in {text!r}")
        headers: dict[str, str] = {}
        q = hostpart.find("?")
        if q >= 0:
            htext = hostpart[q + 1 :]
            hostpart = hostpart[:q]
            for item in htext.split("&"):
                name, sep, value = item.partition("=")
                if not name or not sep or not _HCHARS_RE.match(name) or not _HCHARS_RE.match(value):
                    raise RemoteProtocolError(f"{where}: malformed URI header {item!r}")
                headers[name] = value
        params: dict[str, str | None] = {}
        semi = hostpart.find(";")
        if semi >= 0:
            params = split_params(hostpart[semi + 1 :], where)
            hostpart = hostpart[:semi]
        host, port = parse_host_port(hostpart, where)
        return cls(host, user, scheme=lscheme, port=port, password=password, params=params, headers=headers)

    # -- accessors -----------------------------------------------------------
    @property
    def host_unbracketed(self) -> str:
        """The host without IPv6 brackets (what socket APIs want)."""
        h = self.host
        return h[1:-1] if h.startswith("[") else h

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter lower-cased, or None."""
        value = self.param("transport")
        return value.lower() if value else None

    def param(self, name: str, default: str | None = None) -> str | None:
        """Value of a URI parameter, case-insensitive name (None for a flag)."""
        lname = name.lower()
        for key, value in self.params.items():
            if key.lower() == lname:
                return value
        return default

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(key.lower() == lname for key in self.params)

    @property
    def aor(self) -> str:
        """Address of record ``scheme:user@host`` (user unescaped, host lower-cased)."""
        host = self.host.lower()
        if self.user is None:
            return f"{self.scheme}:{host}"
        return f"{self.scheme}:{unescape(self.user)}@{host}"

    def copy(self, **changes: object) -> "SipUri":
        """A copy with some attributes replaced (``params``/``headers`` copied)."""
        uri = SipUri(
            self.host,
            self.user,
            scheme=self.scheme,
            port=self.port,
            password=self.password,
            params=self.params,
            headers=self.headers,
        )
        for key, value in changes.items():
            setattr(uri, key, value)
        return uri

    # -- serialisation -------------------------------------------------------
    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    def __repr__(self) -> str:
        return f"SipUri({str(self)!r})"

    # RFC 3261 §19.1.4 URI comparison.
    def _key(self) -> tuple:
        return (
            self.scheme,
            None if self.user is None else unescape(self.user),
            None if self.password is None else unescape(self.password),
            self.host.lower(),
            self.port,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipUri):
            return NotImplemented
        if self._key() != other._key():
            return False
        mine = {unescape(k).lower(): v for k, v in self.params.items()}
        theirs = {unescape(k).lower(): v for k, v in other.params.items()}
        # user, ttl, method and maddr must match if present in either.
        for name in ("user", "ttl", "method", "maddr", "transport"):
            a, b = mine.get(name), theirs.get(name)
            if (name in mine) != (name in theirs):
                return False
            if a is not None and b is not None and unescape(a).lower() != unescape(b).lower():
                return False
        for name in mine.keys() & theirs.keys():
            a, b = mine[name], theirs[name]
            if (a is None) != (b is None):
                return False
            if a is not None and b is not None and unescape(a).lower() != unescape(b).lower():
                return False
        mh = {k.lower(): unescape(v) for k, v in self.headers.items()}
        th = {k.lower(): unescape(v) for k, v in other.headers.items()}
        return mh == th

    def __hash__(self) -> int:
        return hash(self._key())


class TelUri:
    """A ``tel:`` URI (RFC 3966): ``number`` plus ordered ``params``."""

    __slots__ = ("number", "params")

    scheme = "tel"

    def __init__(self, number: str, params: dict[str, str | None] | None = None) -> None:
        self.number = number
        self.params: dict[str, str | None] = dict(params) if params else {}

    @classmethod
    def parse(cls, text: str, where: str = "URI") -> "TelUri":
        scheme, colon, rest = text.partition(":")
        if scheme.lower() != "tel" or not colon:
            raise RemoteProtocolError(f"{where}: not a tel URI: {text!r}")
        number, _, ptext = rest.partition(";")
        if not number or not re.fullmatch(r"\+?[0-9A-Fa-f*#.()\-]+|[0-9A-Fa-f*#.()\-]+", number):
            raise RemoteProtocolError(f"{where}: malformed telephone number {number!r}")
        params = split_params(ptext, where) if ptext else {}
        return cls(number, params)

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 §5.1.1)."""
        return "".join(ch for ch in self.number if ch not in ".-()")

    def __str__(self) -> str:
        out = ["tel:", self.number]
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        return "".join(out)

    def __repr__(self) -> str:
        return f"TelUri({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelUri):
            return NotImplemented
        return self.digits.lower() == other.digits.lower() and {
            k.lower(): (v.lower() if v else v) for k, v in self.params.items()
        } == {k.lower(): (v.lower() if v else v) for k, v in other.params.items()}

    def __hash__(self) -> int:
        return hash(self.digits.lower())


class AbsoluteUri:
    """A URI of a scheme this stack does not interpret (RFC 3261 ``absoluteURI``)."""

    __slots__ = ("scheme", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.scheme = text.partition(":")[0].lower()

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"AbsoluteUri({self.text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteUri):
            return NotImplemented
        return self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)


Uri = Union[SipUri, TelUri, AbsoluteUri]


# Successful parses by text.  The same URIs recur in every message of a call
# (Request-URI, Contact, From/To addresses), so a hit saves the parse; callers
# get a private copy, the cached object is never handed out.  Bounded: cleared
# when full.
_URI_CACHE: dict[str, Uri] = {}
URI_CACHE_SIZE = 2048


def _clone(uri: Uri) -> Uri:
    if type(uri) is SipUri:
        c = object.__new__(SipUri)
        c.scheme = uri.scheme
        c.user = uri.user
        c.password = uri.password
        c.host = uri.host
        c.port = uri.port
        c.params = dict(uri.params) if uri.params else {}
        c.headers = dict(uri.headers) if uri.headers else {}
        return c
    if type(uri) is TelUri:
        return TelUri(uri.number, uri.params)
    return uri  # AbsoluteUri has no mutable parts


def clear_uri_cache() -> None:
    """Forget cached URI parses (benchmarks measure cold parses with it)."""
    _URI_CACHE.clear()


def parse_uri(text: str, where: str = "URI") -> Uri:
    """Parse URI text into :class:`SipUri`, :class:`TelUri` or :class:`AbsoluteUri`.

    Args:
        text: the URI without enclosing ``<>``.
        where: names the place for error messages (``"Request-URI"``, ``"To header"``).

    Returns:
        a new object owned by the caller (repeated texts are served from a
        bounded cache of earlier successful parses, copied).

    Raises:
        RemoteProtocolError: the text is not a URI, or a SIP/tel URI is malformed.
    """
    hit = _URI_CACHE.get(text)
    if hit is not None:
        return _clone(hit)
    uri = _parse_uri(text, where)
    if len(_URI_CACHE) >= URI_CACHE_SIZE:
        _URI_CACHE.clear()
    _URI_CACHE[text] = _clone(uri)
    return uri


def _parse_uri(text: str, where: str) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.match(scheme):
        raise RemoteProtocolError(f"{where}: {text!r} is not a URI (no scheme)")
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        return SipUri.parse(text, where)
    if lscheme == "tel":
        return TelUri.parse(text, where)
    if not rest or not _ABS_BODY_RE.match(rest):
        raise RemoteProtocolError(f"{where}: malformed {lscheme} URI {text!r}")
    return AbsoluteUri(text)


# Compiled twin (sip/_uri.pyx includes this very file): see sip/compiled.py.
if __name__ == "sip.uri":
    from sip.compiled import swap_in

    swap_in(globals(), "sip._uri")
