"""SIP header fields: the header multi-map and the structured values (RFC 3261 §7.3, §20).

Theory of operation
-------------------
:class:`Headers` holds a message's header lines in order, with names
normalised (compact forms such as ``v``/``i``/``m`` become ``Via``/``Call-ID``/
``Contact``, RFC 3261 §7.3.3; lookups are case-insensitive).  Values stay
text; :meth:`Headers.get_all` splits the list headers on commas outside
quotes and ``<>`` (RFC 3261 §7.3.1) and never splits the others
(WWW-Authenticate, Authorization, Proxy-*, Date ...).

The structured values are parsed from that text on demand:

* :class:`Via` (RFC 3261 §20.42, RFC 3581 ``rport``, RFC 5118 IPv6),
* :class:`NameAddr` for From, To, Contact, Route, Record-Route (RFC 3261
  §20.10/§25.1: quoted or token display names, ``<uri>`` or ``addr-spec``,
  header parameters such as ``tag``), whose URI is parsed on first access.

Both have a one-regex fast path for the everyday shape and a general parser
that names the fault (:class:`~sip.errors.RemoteProtocolError`).  The parts
that recur across a call (``SIP/2.0/UDP host:port``, ``"name" <uri>``) are
kept in bounded caches of successful parses; each call returns a new
object, the per-message parameters (branch, tag) are parsed every time.

:mod:`sip.message` builds messages on top of this module and re-exports
:class:`Headers`, :class:`Via` and :class:`NameAddr`.
"""

import re
from collections.abc import Iterable, Iterator

from sip.errors import LocalProtocolError, RemoteProtocolError
from sip.grammar import format_params, is_token, parse_params, parse_quoted, quote, split_commas
from sip.uri import Uri, check_host, clear_uri_cache, host_ok, parse_uri

__all__ = [
    "Headers",
    "Via",
    "NameAddr",
    "canonical_name",
    "clear_parse_caches",
    "SIP_VERSION",
    "COMPACT_FORMS",
    "CANONICAL_NAMES",
    "LIST_HEADERS",
    "SINGLE_HEADERS",
]

SIP_VERSION = "SIP/2.0"
MAX_EXPIRES = 2**32 - 1  # RFC 3261 §20.19

# RFC 3261 §7.3.3 compact forms (+ RFC 3265 o/u, RFC 3515 r, RFC 3892 b,
# RFC 4028 x, RFC 3841 a/j/d, RFC 4474 y/n).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "u": "allow-events", "r": "refer-to", "b": "referred-by",
    "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "y": "identity", "n": "identity-info",
}

_CANONICAL_LIST = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "History-Info",
    "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires",
    "Min-SE", "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority",
    "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Service-Route", "Session-Expires", "Subject", "Subscription-State", "Supported",
    "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
]
CANONICAL_NAMES: dict[str, str] = {name.lower(): name for name in _CANONICAL_LIST}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): several
# lines and several comma-separated values are equivalent.  Everything else --
# notably WWW-Authenticate, Authorization, Proxy-Authenticate,
# Proxy-Authorization, Authentication-Info, Date, Subject, User-Agent, Server,
# From, To, Call-ID, CSeq -- is never split on commas.
LIST_HEADERS: frozenset[str] = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "History-Info", "In-Reply-To", "P-Asserted-Identity",
        "P-Preferred-Identity", "Path", "Proxy-Require", "Reason", "Record-Route",
        "Reject-Contact", "Request-Disposition", "Require", "Route", "Service-Route",
        "Supported", "Unsupported", "Via", "Warning",
    )
)

# Headers that may appear at most once (RFC 3261 §20 / table 2).  A duplicate
# of one of these is a 400 (RFC 4475 §3.3.8, §3.3.9).
SINGLE_HEADERS: frozenset[str] = frozenset(
    ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type",
     "expires", "min-expires", "date")
)

# RFC 3261 §20.42: via-parm = sent-protocol LWS sent-by *( SEMI via-params )
_VIA_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+(\[[0-9A-Fa-f:.]+\]|[^ \t;:]+)(?:[ \t]*:[ \t]*([0-9]+))?[ \t]*"
)
# The everyday Via: "SIP/2.0/UDP host[:port]" with single spaces.
_VIA_FAST_RE = re.compile(r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?(?=;|\Z)")
# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT (RFC 3261 §25.1), the common
# case only: a quoted display name without escapes or token words, and a URI
# without whitespace, quotes or angle brackets.  Anything else: general parser.
_NAME_ADDR_FAST_RE = re.compile(
    r'[ \t]*(?:"([^"\\]*)"[ \t]*|([A-Za-z0-9\-.!%*_+`\'~ \t]+))?<([^<>\s"]+)>[ \t]*(;.*)?\Z'
)

# Header name as received (any case, compact or full) -> (key, display name).
_HEADER_TABLE: dict[str, tuple[str, str]] = {}
for _key_name, _display in CANONICAL_NAMES.items():
    for _spelling in (_key_name, _display, _display.upper()):
        _HEADER_TABLE[_spelling] = (_key_name, _display)
for _letter, _key_name in COMPACT_FORMS.items():
    _display = CANONICAL_NAMES[_key_name]
    _HEADER_TABLE[_letter] = _HEADER_TABLE[_letter.upper()] = (_key_name, _display)


# Bounded caches of successful structured parses, keyed by the header text:
# From/To/Contact/Via texts recur across the messages of a call.
PARSE_CACHE_SIZE = 2048
_VIA_CACHE: dict[str, "Via"] = {}
_NAME_ADDR_CACHE: dict[str, "NameAddr"] = {}


def clear_parse_caches() -> None:
    """Forget every cached Via, address and URI parse (for cold-path benchmarks)."""
    _VIA_CACHE.clear()
    _NAME_ADDR_CACHE.clear()
    clear_uri_cache()


def canonical_name(name: str) -> str:
    """The normalised spelling of a header name (compact form expanded)."""
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    return CANONICAL_NAMES.get(key, name)


def _key(name: str) -> str:
    key = name.lower()
    return COMPACT_FORMS.get(key, key)


# ---------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------


class Headers:
    """Ordered, case-insensitive multi-map of header lines.

    Names are normalised on insertion (``v`` → ``Via``, ``call-id`` →
    ``Call-ID``); unknown names keep the spelling given.  Each entry is one
    header *line*; :meth:`get_all` also splits comma-separated list headers
    (``Via``, ``Contact``, ``Route`` ...) into individual values, while
    headers such as ``WWW-Authenticate`` or ``Date`` are never split.

    Example::

        h = Headers([("v", "SIP/2.0/UDP a.example;branch=z9hG4bK1")])
        h["Via"]            # 'SIP/2.0/UDP a.example;branch=z9hG4bK1'
        h.add("Route", "<sip:p1;lr>, <sip:p2;lr>")
        h.get_all("route")  # ['<sip:p1;lr>', '<sip:p2;lr>']
    """

    __slots__ = ("_items", "_raw", "_cache")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # (lower-case full name, display name, value)
        self._items: list[tuple[str, str, str]] = []
        self._raw: bytes | None = None
        self._cache: dict[str, object] = {}
        for name, value in items:
            self.add(name, value)

    # -- reading -------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first line named *name* (unsplit), or *default*."""
        key = _key(name)
        for k, _, v in self._items:
            if k == key:
                return v
        return default

    def _first(self, key: str) -> str | None:
        # internal: *key* is already a lower-case full name
        for k, _, v in self._items:
            if k == key:
                return v
        return None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        for k, _, _ in self._items:
            if k == key:
                return True
        return False

    def get_lines(self, name: str) -> list[str]:
        """Every line named *name*, unsplit, in order."""
        key = _key(name)
        return [v for k, _, v in self._items if k == key]

    def get_all(self, name: str) -> list[str]:
        """Every value of *name*: lines in order, list headers split on commas.

        Raises:
            RemoteProtocolError: a list header holds an empty element or an
                unterminated quoted string.
        """
        key = _key(name)
        lines = [v for k, _, v in self._items if k == key]
        if key not in LIST_HEADERS:
            return lines
        out: list[str] = []
        display = CANONICAL_NAMES.get(key, name)
        for line in lines:
            out.extend(split_commas(line, f"{display} header"))
        return out

    def count(self, name: str) -> int:
        """Number of lines named *name*."""
        key = _key(name)
        return sum(1 for k, _, _ in self._items if k == key)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._items:
            yield name, value

    def items(self) -> list[tuple[str, str]]:
        """All lines as (name, value) pairs in order."""
        return [(name, value) for _, name, value in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def copy(self) -> "Headers":
        h = Headers()
        h._items = list(self._items)
        return h

    # -- writing -------------------------------------------------------------
    def _changed(self) -> None:
        self._raw = None
        if self._cache:
            self._cache = {}

    @staticmethod
    def _entry(name: str, value: str) -> tuple[str, str, str]:
        if not isinstance(value, str):
            value = str(value)
        if "\r" in value or "\n" in value:
            raise LocalProtocolError(f"header {name} value contains CR or LF")
        key = _key(name)
        display = CANONICAL_NAMES.get(key)
        if display is None:
            if not is_token(name):
                raise LocalProtocolError(f"header name {name!r} is not a token")
            display = name
        return key, display, value

    def add(self, name: str, value: object) -> None:
        """Append a line."""
        self._items.append(self._entry(name, value))  # type: ignore[arg-type]
        self._changed()

    def prepend(self, name: str, value: object) -> None:
        """Insert a line before the first line of the same name (or at the top).

        This is how a proxy or UAC pushes its Via (RFC 3261 §16.6 step 8).
        """
        entry = self._entry(name, value)  # type: ignore[arg-type]
        for i, (k, _, _) in enumerate(self._items):
            if k == entry[0]:
                self._items.insert(i, entry)
                break
        else:
            self._items.insert(0, entry)
        self._changed()

    def set(self, name: str, value: object) -> None:
        """Replace every line of *name* by one line (kept at the first's position)."""
        entry = self._entry(name, value)  # type: ignore[arg-type]
        key = entry[0]
        out: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    out.append(entry)
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append(entry)
        self._items = out
        self._changed()

    def __setitem__(self, name: str, value: object) -> None:
        self.set(name, value)

    def remove(self, name: str) -> int:
        """Remove every line of *name*; returns how many were removed."""
        key = _key(name)
        before = len(self._items)
        self._items = [item for item in self._items if item[0] != key]
        removed = before - len(self._items)
        if removed:
            self._changed()
        return removed

    def __delitem__(self, name: str) -> None:
        if not self.remove(name):
            raise KeyError(name)

    def pop_first(self, name: str) -> str | None:
        """Remove the first *value* of a list header (e.g. the top Via or Route).

        A line holding several comma-separated values keeps the rest.
        """
        key = _key(name)
        for i, (k, display, v) in enumerate(self._items):
            if k == key:
                values = split_commas(v, f"{display} header") if key in LIST_HEADERS else [v]
                if len(values) > 1:
                    self._items[i] = (k, display, ", ".join(values[1:]))
                else:
                    del self._items[i]
                self._changed()
                return values[0]
        return None

    def to_bytes(self) -> bytes:
        """Serialise as ``Name: value CRLF`` lines (raw text reused when unchanged)."""
        raw = self._raw
        if raw is not None:
            return raw
        return "".join([f"{name}: {value}\r\n" for _, name, value in self._items]).encode(
            "utf-8", "surrogateescape"
        )


# ---------------------------------------------------------------------------
# Structured header values
# ---------------------------------------------------------------------------


class Via:
    """One Via value (RFC 3261 §20.42, RFC 3581 rport).

    Attributes:
        protocol: ``"SIP/2.0"``.
        transport: upper-case transport token (``UDP``, ``TCP``, ``TLS``, ``SCTP``, ``WS``...).
        host: sent-by host (IPv6 with brackets).
        port: sent-by port or None.
        params: ordered parameters (flag → None), names as received.
    """

    __slots__ = ("protocol", "transport", "host", "port", "params")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = SIP_VERSION,
    ) -> None:
        self.protocol = protocol
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = dict(params) if params else {}

    @classmethod
    def parse(cls, text: str) -> "Via":
        """Parse one Via value.  Raises :class:`RemoteProtocolError`.

        Successful parses are cached by text (bounded); each call returns a new object.
        """
        # The sent-protocol/sent-by part recurs (same peer), the parameters
        # (branch) change per transaction: cache the former, split the latter.
        semi = text.find(";")
        head = text if semi < 0 else text[:semi]
        hit = _VIA_CACHE.get(head)
        if hit is None:
            hit = cls._parse(head)
            if len(_VIA_CACHE) >= PARSE_CACHE_SIZE:
                _VIA_CACHE.clear()
            _VIA_CACHE[head] = hit
        via = object.__new__(cls)
        via.protocol = hit.protocol
        via.transport = hit.transport
        via.host = hit.host
        via.port = hit.port
        via.params = _via_params(text[semi:]) if semi >= 0 else {}
        return via

    @classmethod
    def _parse(cls, text: str) -> "Via":
        m = _VIA_FAST_RE.match(text)
        if m is not None:
            name, version = "SIP", "2.0"
            transport, host, port_text = m.groups()
        else:
            m = _VIA_RE.match(text)
            if m is None:
                raise RemoteProtocolError(f"Via header: malformed value {text[:60]!r}")
            name, version, transport, host, port_text = m.groups()
        if host[0] == "[" or not host_ok(host):
            try:
                check_host(host, "Via sent-by")
            except RemoteProtocolError as exc:
                raise RemoteProtocolError(f"Via header: {exc.message}") from None
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                raise RemoteProtocolError(f"Via header: sent-by port {port} exceeds 65535")
        if m.end() != len(text):
            raise RemoteProtocolError(f"Via header: unexpected text after sent-by in {text[:60]!r}")
        via = object.__new__(cls)
        via.protocol = SIP_VERSION if (name == "SIP" and version == "2.0") else f"{name.upper()}/{version}"
        via.transport = transport.upper()
        via.host = host
        via.port = port
        via.params = {}
        return via

    def _lower_params(self) -> dict[str, str | None]:
        return {k.lower(): v for k, v in self.params.items()}

    def param(self, name: str, default: str | None = None) -> str | None:
        """Parameter value by case-insensitive name (None for a flag)."""
        value = self.params.get(name, default)
        if value is not default or name in self.params:
            return value
        lname = name.lower()
        for key, v in self.params.items():
            if key.lower() == lname:
                return v
        return default

    def has_param(self, name: str) -> bool:
        params = self.params
        if name in params:
            return True
        lname = name.lower()
        for key in params:  # a plain loop: a generator costs more than the scan
            if key.lower() == lname:
                return True
        return False

    @property
    def branch(self) -> str | None:
        """The branch parameter (RFC 3261 §8.1.1.7), or None (RFC 2543 peer)."""
        return self.param("branch")

    @property
    def is_rfc3261_branch(self) -> bool:
        """True when the branch starts with the magic cookie ``z9hG4bK`` and has more."""
        b = self.branch
        return b is not None and b.startswith("z9hG4bK") and len(b) > 7

    @property
    def received(self) -> str | None:
        """The received parameter (RFC 3261 §18.2.1), brackets removed from IPv6."""
        value = self.param("received")
        if value and value.startswith("[") and value.endswith("]"):
            return value[1:-1]
        return value

    @property
    def rport(self) -> int | bool | None:
        """RFC 3581: an int once filled in, True when requested (flag), None when absent."""
        if not self.has_param("rport"):
            return None
        value = self.param("rport")
        return int(value) if value else True

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.protocol.upper(), self.transport, self.host.lower(), self.port, self._lower_params()
        ) == (other.protocol.upper(), other.transport, other.host.lower(), other.port, other._lower_params())

    __hash__ = None  # type: ignore[assignment]


def _via_params(text: str) -> dict[str, str | None]:
    """Parse and check Via parameters (text starts at the first ';')."""
    params = parse_params(text, "Via header")
    for key, value in params.items():
        lkey = key.lower()
        if lkey == "branch":
            if not value:
                raise RemoteProtocolError("Via header: branch parameter has no value")
        elif lkey == "rport":
            # RFC 3581: rport is a flag or a port number.
            if value is not None and (not value.isdigit() or int(value) > 65535):
                raise RemoteProtocolError(f"Via header: rport value {value[:20]!r} is not a port")
        elif lkey == "ttl":
            # RFC 3261 §20.42: ttl = 1*3DIGIT (0-255)
            if value is None or not value.isdigit() or int(value) > 255:
                raise RemoteProtocolError(f"Via header: ttl value {value!r} out of range")
    return params


class NameAddr:
    """A ``name-addr`` or ``addr-spec`` with header parameters (From, To, Contact, Route ...).

    Attributes:
        display_name: unquoted display name or None.
        uri_text: the URI as written (without ``<>``).
        params: header parameters after the address (``tag``, ``expires``, ``q`` ...).
    """

    __slots__ = ("display_name", "uri_text", "params", "_uri", "_where")

    def __init__(
        self,
        uri: Uri | str,
        display_name: str | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        self.display_name = display_name
        if isinstance(uri, str):
            self.uri_text = uri
            self._uri: Uri | None = None
        else:
            self.uri_text = str(uri)
            self._uri = uri
        self.params: dict[str, str | None] = dict(params) if params else {}
        self._where = "address"

    @classmethod
    def parse(cls, text: str, where: str = "header") -> "NameAddr":
        """Parse ``[display-name] <uri> *(;param)`` or ``addr-spec *(;param)``.

        Successful parses are cached by text (bounded); each call returns a
        new object.  The URI itself is parsed on first access of :attr:`uri`.

        Raises:
            RemoteProtocolError: unterminated quotes, a non-token unquoted
                display name, unclosed ``<``, an addr-spec holding ``?`` or
                ``,`` (RFC 3261 §20 requires ``<>`` then), malformed params.
        """
        # `display <uri>` recurs across a call, the parameters (tags) do not:
        # cache the part up to '>' and parse the parameters each time.
        gt = text.find(">")
        if gt > 0:
            prefix = text[: gt + 1]
            hit = _NAME_ADDR_CACHE.get(prefix)
            if hit is None:
                full = cls._parse(text, where)
                if prefix.endswith(f"<{full.uri_text}>"):  # first '>' closes the URI
                    if len(_NAME_ADDR_CACHE) >= PARSE_CACHE_SIZE:
                        _NAME_ADDR_CACHE.clear()
                    _NAME_ADDR_CACHE[prefix] = full
                params = dict(full.params) if full.params else {}
                hit = full
            else:
                rest = text[gt + 1 :].strip(" \t")
                params = parse_params(rest, where) if rest else {}
        else:
            hit = _NAME_ADDR_CACHE.get(text)
            if hit is None:
                hit = cls._parse(text, where)
                if len(_NAME_ADDR_CACHE) >= PARSE_CACHE_SIZE:
                    _NAME_ADDR_CACHE.clear()
                _NAME_ADDR_CACHE[text] = hit
            params = dict(hit.params) if hit.params else {}
        na = object.__new__(cls)
        na.display_name = hit.display_name
        na.uri_text = hit.uri_text
        na._uri = None
        na.params = params
        na._where = where
        return na

    @classmethod
    def _parse(cls, text: str, where: str) -> "NameAddr":
        m = _NAME_ADDR_FAST_RE.match(text)
        if m is not None:
            # Everyday shape: ["quoted" | token words] <uri> [;params], no escapes.
            quoted, words, uri_text, ptext = m.groups()
            na = object.__new__(cls)
            na.display_name = quoted if quoted is not None else (" ".join(words.split()) or None if words else None)
            na.uri_text = uri_text
            na._uri = None
            na.params = parse_params(ptext, where) if ptext else {}
            na._where = where
            return na
        s = text.strip()
        display: str | None = None
        if not s:
            raise RemoteProtocolError(f"{where}: empty address")
        if s[0] == '"':
            display, pos = parse_quoted(s, 0, where)
            rest = s[pos:].lstrip(" \t")
            if not rest.startswith("<"):
                raise RemoteProtocolError(f"{where}: quoted display name not followed by <URI>")
            s = rest
            lt = 0
        else:
            lt = s.find("<")
        if lt >= 0:
            if lt > 0:
                dn = s[:lt].strip()
                # display-name = *(token LWS) / quoted-string (RFC 4475 §3.1.2.15)
                if dn:
                    for word in dn.split():
                        if not is_token(word):
                            raise RemoteProtocolError(
                                f"{where}: unquoted display name {dn[:40]!r} contains non-token characters"
                            )
                    display = " ".join(dn.split())
            gt = s.find(">", lt)
            if gt < 0:
                raise RemoteProtocolError(f"{where}: '<' without matching '>'")
            uri_text = s[lt + 1 : gt]
            if not uri_text or uri_text != uri_text.strip() or any(c in uri_text for c in " \t<"):
                raise RemoteProtocolError(f"{where}: whitespace or '<' inside <{uri_text[:60]}>")
            rest = s[gt + 1 :]
        else:
            semi = s.find(";")
            uri_text = s if semi < 0 else s[:semi]
            rest = "" if semi < 0 else s[semi:]
            uri_text = uri_text.rstrip()
            # RFC 3261 §20: URIs with ',', '?' or ';' must use the name-addr form.
            if any(c in uri_text for c in "?, \t\"") or ":" not in uri_text:
                raise RemoteProtocolError(
                    f"{where}: address {uri_text[:60]!r} must be enclosed in <> (contains '?', ',' or LWS)"
                )
        rest = rest.strip()
        params = parse_params(rest, where) if rest else {}
        na = cls(uri_text, display, params)
        na._where = where
        return na

    @property
    def uri(self) -> Uri:
        """The parsed URI (parsed on first access, cached).  Raises RemoteProtocolError."""
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self.uri_text, self._where)
        return uri

    def param(self, name: str, default: str | None = None) -> str | None:
        """Header parameter by case-insensitive name (quotes kept)."""
        if name in self.params:
            return self.params[name]
        lname = name.lower()
        for key, v in self.params.items():
            if key.lower() == lname:
                return v
        return default

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3) or None."""
        return self.param("tag")

    @property
    def expires(self) -> int | None:
        """Contact ``expires`` parameter, clamped to 2**32-1 (RFC 3261 §20.10)."""
        value = self.param("expires")
        if value is None or not value.isdigit():
            return None
        return min(int(value), MAX_EXPIRES)

    @property
    def q(self) -> float | None:
        """Contact ``q`` parameter (0..1) or None."""
        value = self.param("q")
        try:
            return None if value is None else float(value)
        except ValueError:
            return None

    def with_tag(self, tag: str) -> "NameAddr":
        """A copy carrying ``tag`` (replacing any existing tag)."""
        params = {k: v for k, v in self.params.items() if k.lower() != "tag"}
        params["tag"] = tag
        na = NameAddr(self._uri if self._uri is not None else self.uri_text, self.display_name, params)
        return na

    def __str__(self) -> str:
        dn = "" if self.display_name is None else quote(self.display_name) + " "
        return f"{dn}<{self.uri_text}>{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (
            self.uri == other.uri
            and {k.lower(): v for k, v in self.params.items()} == {k.lower(): v for k, v in other.params.items()}
        )

    __hash__ = None  # type: ignore[assignment]


# Compiled twin (sip/_headers.pyx includes this very file): see sip/compiled.py.
if __name__ == "sip.headers":
    from sip.compiled import swap_in

    swap_in(globals(), "sip._headers")
