"""SIP messages: parse, inspect, build and serialise (RFC 3261 §7, §20, §25).

Theory of operation
-------------------
:func:`parse_message` takes the bytes of exactly one message (a UDP datagram,
or a frame cut by :mod:`sip.framing`) and returns a :class:`Request` or a
:class:`Response`.  It works in two layers so the common path stays cheap:

1. **Eager** (always): the start line is split and checked, header lines are
   unfolded (RFC 3261 §7.3.1 LWS continuation) and split into a
   :class:`Headers` multi-map whose names are normalised (compact forms such
   as ``v``/``i``/``m`` become ``Via``/``Call-ID``/``Contact``, RFC 3261
   §7.3.3), and the scalar checks a UAS needs before anything else are done:
   SIP version (505), mandatory headers present and not duplicated,
   ``CSeq`` number and method, ``Max-Forwards`` and ``Content-Length``
   ranges, and the body is cut by ``Content-Length`` (extra datagram octets
   are ignored, RFC 3261 §18.3; a shorter body is a 400).
2. **Lazy** (on access, cached): structured values -- :class:`Via`,
   :class:`NameAddr` (From/To/Contact/Route), URIs (:mod:`sip.uri`).  With
   ``parse_message(data, validate=True)`` (the default) the headers every
   element relies on (all Via values, From, To, Contact, Route,
   Record-Route, the Request-URI, Date) are parsed before returning, so a
   malformed one is refused at once; the results are cached, so later
   accessor calls cost nothing.  ``validate=False`` skips that for callers
   that only need routing fields; accessors then raise the same
   :class:`~sip.errors.RemoteProtocolError` when they meet bad text.

Every fault raises :class:`~sip.errors.RemoteProtocolError` naming the
fault and carrying ``status_hint`` (400, 413, 416, 420, 505 ...);
:func:`error_response` turns such an error plus the offending bytes into the
response a UAS should send, or None when the input must be dropped
(responses, or too little parsed to address a reply).  Nothing else ever
escapes the parser (property-tested on random and mutated input).

Serialisation (``bytes(msg)``) reuses the received header text verbatim
while the headers are unchanged and the body length still matches, so a
proxy-style parse→serialise costs one concatenation.  Any change through
:class:`Headers` drops the raw text and the block is rebuilt from the
(name, value) pairs; ``Content-Length`` is always written to match the body.

Parsed objects (:class:`Via`, :class:`NameAddr`, URIs) are snapshots: to
change a header, set its text (``msg.headers.set("To", str(new_to))``).

The header multi-map and the structured values (:class:`Headers`,
:class:`Via`, :class:`NameAddr`) live in :mod:`sip.headers` and are
re-exported here.

What this module refuses to know: transactions, dialogs, transports (sipcore
owns them); it only offers builders such as :func:`make_response` that copy
the fields RFC 3261 §8.2.6 requires.
"""

import hashlib
import re
from collections.abc import Iterable
from typing import Union

from sip.errors import LocalProtocolError, RemoteProtocolError
from sip.grammar import is_token, split_commas
from sip.headers import (
    _HEADER_TABLE,
    _VIA_RE,
    CANONICAL_NAMES,
    MAX_EXPIRES,
    SINGLE_HEADERS,
    SIP_VERSION,
    Headers,
    NameAddr,
    Via,
    _key,
    canonical_name,
    clear_parse_caches,
)
from sip.uri import SipUri, Uri, parse_uri

__all__ = [
    "Headers",
    "Message",
    "Request",
    "Response",
    "Via",
    "NameAddr",
    "parse_message",
    "make_response",
    "make_request",
    "make_cancel",
    "make_ack",
    "error_response",
    "check_request",
    "BadExtensionError",
    "REASON_PHRASES",
    "SIP_VERSION",
    "canonical_name",
    "clear_parse_caches",
]

MAX_CSEQ = 2**32 - 1  # RFC 3261 §8.1.1.5: CSeq number MUST be < 2**32

# RFC 3261 §21 (plus RFC 3265, 3903, 4412, 6665 additions used by the stack).
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event",
    491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

# RFC 3261 §8.1.1: mandatory in every message (with Via).  Max-Forwards is
# tolerated missing for RFC 2543 peers (RFC 4475 §3.4.1).
_MANDATORY_SINGLE = ("from", "to", "call-id", "cseq")

_VERSION_RE = re.compile(r"[Ss][Ii][Pp]/(\d+)\.(\d+)\Z")
# RFC 1123 date as required by RFC 3261 §20.17: "Sat, 13 Nov 2010 23:29:00 GMT"
_DATE_RE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d{2}:\d{2}:\d{2} GMT\Z"
)
_UNFOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")


class BadExtensionError(RemoteProtocolError):
    """A request requires option tags we do not support (RFC 3261 §8.2.2.3, 420)."""

    def __init__(self, unsupported: list[str]) -> None:
        super().__init__(f"unsupported extension(s) required: {', '.join(unsupported)}", 420)
        self.unsupported = unsupported


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


class Message:
    """Common part of :class:`Request` and :class:`Response`.

    Attributes:
        headers: the :class:`Headers`.
        body: the body as bytes (``b""`` when none).
        version: ``"SIP/2.0"``.
    """

    __slots__ = ("headers", "body", "version", "_start", "_fields0", "_cl")

    def __init__(self, headers: Headers | Iterable[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        if headers is None:
            headers = Headers()
        elif not isinstance(headers, Headers):
            headers = Headers(headers)
        self.headers: Headers = headers
        self.body: bytes = bytes(body)
        self.version = SIP_VERSION
        self._start: bytes | None = None  # raw start line while unchanged
        self._fields0: tuple = ()  # start-line fields the raw line was parsed from
        self._cl: int = -1  # Content-Length as received (raw reuse check)

    # -- scalar accessors ----------------------------------------------------
    def _required(self, key: str) -> str:
        value = self.headers._first(key)
        if value is None:
            raise RemoteProtocolError(f"missing {CANONICAL_NAMES.get(key, key)} header")
        return value

    @property
    def call_id(self) -> str:
        """The Call-ID (RFC 3261 §20.8).  Raises RemoteProtocolError if missing."""
        return self._required("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        """``(number, method)`` from CSeq (RFC 3261 §20.16)."""
        cache = self.headers._cache
        value = cache.get("cseq")
        if value is None:
            value = cache["cseq"] = _parse_cseq(self._required("cseq"))
        return value  # type: ignore[return-value]

    @property
    def via(self) -> list[Via]:
        """Every Via value, top first (parsed on first access, cached)."""
        h = self.headers
        cache = h._cache
        value = cache.get("via")
        if value is None:
            # Same values as h.get_all("via"), without the name lookup.
            texts: list[str] = []
            for k, _, v in h._items:
                if k == "via":
                    if "," in v:
                        texts.extend(split_commas(v, "Via header"))
                    else:
                        texts.append(v)
            value = cache["via"] = [Via.parse(v) for v in texts]
        return value  # type: ignore[return-value]

    @property
    def top_via(self) -> Via:
        """The first Via value.  Raises RemoteProtocolError when there is none."""
        vias = self.via
        if not vias:
            raise RemoteProtocolError("missing Via header")
        return vias[0]

    def _name_addr(self, key: str, display: str) -> NameAddr:
        cache = self.headers._cache
        value = cache.get(key)
        if value is None:
            value = cache[key] = NameAddr.parse(self._required(key), f"{display} header")
        return value  # type: ignore[return-value]

    @property
    def from_(self) -> NameAddr:
        """The From address (``from_.tag``, ``from_.uri``)."""
        return self._name_addr("from", "From")

    @property
    def to(self) -> NameAddr:
        """The To address (``to.tag`` is None outside a dialog)."""
        return self._name_addr("to", "To")

    @property
    def from_tag(self) -> str | None:
        value = self.headers._cache.get("from")
        if value is None:
            value = self._name_addr("from", "From")
        return value.tag  # type: ignore[attr-defined]

    @property
    def to_tag(self) -> str | None:
        value = self.headers._cache.get("to")
        if value is None:
            value = self._name_addr("to", "To")
        return value.tag  # type: ignore[attr-defined]

    def _name_addr_list(self, key: str, display: str) -> list[NameAddr]:
        cache = self.headers._cache
        value = cache.get(key)
        if value is None:
            where = f"{display} header"
            value = cache[key] = [NameAddr.parse(v, where) for v in self.headers.get_all(key)]
        return value  # type: ignore[return-value]

    @property
    def contact(self) -> list[NameAddr]:
        """Contact addresses in order; empty for none and for ``Contact: *``."""
        if self.contact_is_wildcard:
            return []
        return self._name_addr_list("contact", "Contact")

    @property
    def contact_is_wildcard(self) -> bool:
        """True for ``Contact: *`` (REGISTER remove-all, RFC 3261 §10.2.2)."""
        first = None
        for k, _, v in self.headers._items:
            if k == "contact":
                if first is not None:
                    return False  # several lines
                first = v
        return first is not None and first.strip() == "*"

    @property
    def route(self) -> list[NameAddr]:
        return self._name_addr_list("route", "Route")

    @property
    def record_route(self) -> list[NameAddr]:
        return self._name_addr_list("record-route", "Record-Route")

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (RFC 3261 §20.22) or None when absent (RFC 2543 peers)."""
        value = self.headers._first("max-forwards")
        return None if value is None else _parse_max_forwards(value)

    @property
    def content_length(self) -> int | None:
        """The Content-Length header value, or None when absent."""
        value = self.headers._first("content-length")
        return None if value is None else _parse_content_length(value)

    @property
    def content_type(self) -> str | None:
        """Media type of Content-Type, lower case, without parameters (``application/sdp``)."""
        value = self.headers._first("content-type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower()

    @property
    def expires(self) -> int | None:
        """Expires header in seconds, clamped to 2**32-1; None if absent or not a number."""
        value = self.headers._first("expires")
        if value is None or not value.strip().isdigit():
            return None
        return min(int(value), MAX_EXPIRES)

    def _tokens(self, name: str) -> list[str]:
        return [v for v in self.headers.get_all(name) if v]

    @property
    def require(self) -> list[str]:
        return self._tokens("require")

    @property
    def proxy_require(self) -> list[str]:
        return self._tokens("proxy-require")

    @property
    def supported(self) -> list[str]:
        return self._tokens("supported")

    @property
    def allow(self) -> list[str]:
        return self._tokens("allow")

    # -- validation ----------------------------------------------------------
    def validate(self) -> None:
        """Parse every structured header the stack relies on; raise on the first fault.

        Covers all Via values, From, To, Contact (unless ``*``), Route,
        Record-Route, the Request-URI, and the Date format.

        Raises:
            RemoteProtocolError: the first malformed element, named.
        """
        h = self.headers
        keys = {item[0] for item in h._items}
        self.via
        self.from_.uri
        self.to.uri
        if "contact" in keys and not self.contact_is_wildcard:
            for na in self._name_addr_list("contact", "Contact"):
                na.uri
        if "route" in keys:
            for na in self.route:
                na.uri
        if "record-route" in keys:
            for na in self.record_route:
                na.uri
        date = h.get("date") if "date" in keys else None
        if date is not None and not _DATE_RE.match(date):
            # RFC 3261 §20.17: SIP-date is RFC 1123 with "GMT" only (RFC 4475 §3.1.2.12).
            raise RemoteProtocolError(f"Date header {date[:40]!r} is not an RFC 1123 GMT date")

    # -- serialisation -------------------------------------------------------
    def _start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _start_fields(self) -> tuple:  # pragma: no cover - overridden
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        body = self.body
        h = self.headers
        raw = h._raw
        start = self._start
        if start is not None and self._start_fields() != self._fields0:
            start = self._start = None
        if raw is not None and start is not None and self._cl == len(body):
            return start + raw + b"\r\n" + body
        if start is None:
            start = self._start_line().encode("utf-8", "surrogateescape") + b"\r\n"
        # Content-Length always matches the body (RFC 3261 §20.14); the
        # headers object is left as the user set it.
        cl = str(len(body))
        lines = []
        have_cl = False
        for key, name, value in h._items:
            if key == "content-length":
                if have_cl:
                    continue
                have_cl = True
                value = cl
            lines.append(f"{name}: {value}\r\n")
        if not have_cl:
            lines.append(f"Content-Length: {cl}\r\n")
        return start + "".join(lines).encode("utf-8", "surrogateescape") + b"\r\n" + body

    def to_bytes(self) -> bytes:
        """Same as ``bytes(msg)``."""
        return self.__bytes__()


class Request(Message):
    """A SIP request.

    Args:
        method: the method token (``INVITE``).
        uri: Request-URI as text or a parsed URI.
        headers: a :class:`Headers` or (name, value) pairs.
        body: body bytes.
    """

    __slots__ = ("method", "_uri_text", "_uri")

    def __init__(
        self,
        method: str,
        uri: Uri | str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        if isinstance(uri, str):
            self._uri_text = uri
            self._uri: Uri | None = None
        else:
            self._uri_text = str(uri)
            self._uri = uri

    @property
    def uri(self) -> Uri:
        """The Request-URI, parsed on first access (SipUri, TelUri or AbsoluteUri)."""
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self._uri_text, "Request-URI")
        return uri

    @uri.setter
    def uri(self, value: Uri | str) -> None:
        self._start = None
        if isinstance(value, str):
            self._uri_text, self._uri = value, None
        else:
            self._uri_text, self._uri = str(value), value

    @property
    def uri_text(self) -> str:
        """The Request-URI as text."""
        return self._uri_text

    def _start_line(self) -> str:
        return f"{self.method} {self._uri_text} {self.version}"

    def _start_fields(self) -> tuple:
        return (self.method, self._uri_text, self.version)

    def validate(self) -> None:
        super().validate()
        uri = self.uri
        if isinstance(uri, SipUri) and uri.headers:
            # RFC 3261 §19.1.5 / RFC 4475 §3.1.2.11: headers are not allowed in a Request-URI.
            raise RemoteProtocolError("Request-URI contains escaped headers ('?'), not allowed")

    def response(self, status_code: int, reason: str | None = None, **kwargs: object) -> "Response":
        """Shortcut for :func:`make_response` (``request.response(200, to_tag=...)``)."""
        return make_response(self, status_code, reason, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri_text}>"


class Response(Message):
    """A SIP response.

    Args:
        status_code: 100-699.
        reason: reason phrase; defaults to the RFC 3261 §21 phrase.
        headers, body: as for :class:`Request`.
    """

    __slots__ = ("status_code", "reason")

    def __init__(
        self,
        status_code: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status_code = status_code
        self.reason = REASON_PHRASES.get(status_code, "") if reason is None else reason

    @property
    def is_provisional(self) -> bool:
        return self.status_code < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def _start_line(self) -> str:
        return f"{self.version} {self.status_code} {self.reason}"

    def _start_fields(self) -> tuple:
        return (self.status_code, self.reason, self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.reason}>"


SipMessage = Union[Request, Response]


# ---------------------------------------------------------------------------
# Scalar parsers
# ---------------------------------------------------------------------------


def _parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise RemoteProtocolError(f"CSeq header {value[:40]!r} is not 'number method'")
    num, method = parts
    if not num.isdigit() or not num.isascii():
        raise RemoteProtocolError(f"CSeq number {num[:20]!r} is not a number")
    n = int(num)
    if n > MAX_CSEQ:
        raise RemoteProtocolError(f"CSeq number {num[:20]} exceeds 2**32-1")
    if not is_token(method):
        raise RemoteProtocolError(f"CSeq method {method[:20]!r} is not a token")
    return n, method


def _parse_max_forwards(value: str) -> int:
    v = value.strip()
    if not v.isdigit() or not v.isascii():
        raise RemoteProtocolError(f"Max-Forwards {v[:20]!r} is not a number")
    n = int(v)
    if n > 255:
        raise RemoteProtocolError(f"Max-Forwards {v[:20]} exceeds 255")
    return n


def _parse_content_length(value: str) -> int:
    v = value.strip()
    if not v.isdigit() or not v.isascii():
        raise RemoteProtocolError(f"Content-Length {v[:20]!r} is not a non-negative number")
    return int(v)


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def _check_version(version: str) -> None:
    if version == SIP_VERSION:
        return
    m = _VERSION_RE.match(version)
    if m is None:
        raise RemoteProtocolError(f"malformed SIP version {version[:20]!r}")
    if (m.group(1), m.group(2)) != ("2", "0"):
        raise RemoteProtocolError(f"SIP version {version[:20]} not supported", 505)


def _parse_request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        if line.endswith(" "):
            raise RemoteProtocolError("Request-Line has trailing whitespace")
        if "  " in line:
            raise RemoteProtocolError("Request-Line has several spaces between elements")
        if len(parts) < 3:
            raise RemoteProtocolError("Request-Line has no SIP-Version")
        if "\t" in line:
            raise RemoteProtocolError("Request-Line contains a tab")
        raise RemoteProtocolError("Request-URI contains whitespace")
    method, uri, version = parts
    if not is_token(method):
        raise RemoteProtocolError(f"method {method[:20]!r} is not a token")
    if uri[0] == "<":
        raise RemoteProtocolError("Request-URI is enclosed in <>")
    if "\t" in uri or "\t" in version:
        raise RemoteProtocolError("Request-Line contains a tab")
    _check_version(version)
    return method, uri


def _parse_status_line(line: str) -> tuple[int, str]:
    version, sep, rest = line.partition(" ")
    _check_version(version)
    code_text, _, reason = rest.partition(" ")
    if len(code_text) != 3 or not code_text.isdigit() or not code_text.isascii():
        raise RemoteProtocolError(f"status code {code_text[:20]!r} is not three digits")
    code = int(code_text)
    if code < 100 or code > 699:
        raise RemoteProtocolError(f"status code {code} outside 100-699")
    return code, reason


def parse_message(data: bytes | bytearray | memoryview, *, validate: bool = True) -> Request | Response:
    """Parse one SIP message.

    Args:
        data: the whole message (one datagram or one framed stream message).
            Leading CRLFs are skipped (RFC 3261 §7.5); octets after
            ``Content-Length`` are ignored (RFC 3261 §18.3); without
            ``Content-Length`` the body is the rest of *data*.
        validate: also parse every structured header the stack relies on (see
            :meth:`Message.validate`); with False those are parsed on access.

    Returns:
        a :class:`Request` or :class:`Response`.

    Raises:
        RemoteProtocolError: naming the fault, with ``status_hint``.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    head_end = data.find(b"\r\n\r\n", start)
    if head_end < 0:
        if not data.endswith(b"\r\n") or len(data) - start < 4:
            raise RemoteProtocolError("message has no empty line ending the header section")
        # RFC 5118 §4.5 copy: the datagram ends right after the last header line.
        head_end = len(data) - 2
        body_start = len(data)
    else:
        body_start = head_end + 4
    line_end = data.find(b"\r\n", start)
    head = data[line_end + 2 : head_end].decode("utf-8", "surrogateescape") if line_end < head_end else ""
    start_line = data[start:line_end].decode("utf-8", "surrogateescape")

    msg: Request | Response
    if start_line.startswith("SIP/") or start_line[:4].upper() == "SIP/":
        code, reason = _parse_status_line(start_line)
        msg = Response.__new__(Response)
        msg.status_code = code
        msg.reason = reason
        method = None
    else:
        method, uri = _parse_request_line(start_line)
        msg = Request.__new__(Request)
        msg.method = method
        msg._uri_text = uri
        msg._uri = None
    # What Message.__init__(msg, Headers(), b"") sets, without the calls.
    headers = Headers.__new__(Headers)
    headers._cache = {}
    msg.headers = headers
    msg.version = SIP_VERSION

    # -- header lines (RFC 3261 §7.3) --
    if "\r\n " in head or "\r\n\t" in head:
        head = _UNFOLD_RE.sub(" ", head)
    items: list[tuple[str, str, str]] = []
    append = items.append
    table = _HEADER_TABLE.get
    singles: dict[str, str] = {}  # values of the at-most-once headers
    single_keys = SINGLE_HEADERS
    has_via = False
    if head:
        crlf = head.count("\r\n")
        if head.count("\r") != crlf or head.count("\n") != crlf:
            raise RemoteProtocolError("header section contains a bare CR or LF")
        for line in head.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                if not line.strip():
                    raise RemoteProtocolError("empty line inside the header section")
                raise RemoteProtocolError(f"header line {line[:40]!r} has no ':'")
            entry = table(name)
            if entry is None:
                name = name.rstrip(" \t")
                entry = table(name.lower())
                if entry is None:
                    if not is_token(name):
                        raise RemoteProtocolError(f"header name {name[:40]!r} is not a token")
                    entry = (name.lower(), name)
            key = entry[0]
            value = value.strip(" \t")
            append((key, entry[1], value))
            if key in single_keys:
                if key in singles:
                    raise RemoteProtocolError(f"{entry[1]} header appears more than once")
                singles[key] = value
            elif key == "via":
                has_via = True
    headers._items = items
    headers._raw = data[line_end + 2 : head_end + 2] if line_end < head_end else b""
    msg._start = data[start : line_end + 2]
    msg._fields0 = msg._start_fields()

    # -- mandatory headers (RFC 3261 §8.1.1) --
    if not has_via:
        raise RemoteProtocolError("missing Via header")
    for key in _MANDATORY_SINGLE:
        if key not in singles:
            raise RemoteProtocolError(f"missing {CANONICAL_NAMES[key]} header")

    cseq = headers._cache["cseq"] = _parse_cseq(singles["cseq"])
    if method is not None:
        if cseq[1] != method:
            raise RemoteProtocolError(f"CSeq method {cseq[1][:20]} does not match request method {method[:20]}")
        mf = singles.get("max-forwards")
        if mf is not None:
            _parse_max_forwards(mf)

    # -- body framing (RFC 3261 §18.3, §20.14) --
    available = len(data) - body_start
    cl_text = singles.get("content-length")
    if cl_text is None:
        msg.body = data[body_start:]
        msg._cl = -2  # no header: force rebuild adding Content-Length on serialise
    else:
        cl = _parse_content_length(cl_text)
        if cl > available:
            raise RemoteProtocolError(f"Content-Length {cl} exceeds the {available} body octets received")
        msg.body = data[body_start : body_start + cl]
        msg._cl = cl

    if validate:
        msg.validate()
    return msg


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------

_DIALOG_CREATING = frozenset(("INVITE", "SUBSCRIBE", "REFER", "NOTIFY"))


def make_response(
    request: Request,
    status_code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response to *request* (RFC 3261 §8.2.6.2).

    Copies every Via (in order), From, To, Call-ID and CSeq; Timestamp for
    100 (§8.2.6.1); Record-Route for dialog-creating 101-299 responses
    (§12.1.1).  Adds ``;tag=to_tag`` to To when given and To has no tag yet
    (not on 100 Trying).

    Args:
        request: the request answered.
        status_code: 100-699.
        reason: reason phrase (default: RFC 3261 §21 text).
        to_tag: our dialog tag.
        headers: extra (name, value) pairs appended.
        body, content_type: body and its media type.
    """
    src = request.headers
    items: list[tuple[str, str, str]] = []
    to_line: tuple[str, str, str] | None = None
    copy_rr = 100 < status_code < 300 and request.method in _DIALOG_CREATING
    for item in src._items:
        key = item[0]
        if key == "via" or key == "from" or key == "call-id" or key == "cseq":
            items.append(item)
        elif key == "to":
            to_line = item
            items.append(item)
        elif key == "record-route" and copy_rr:
            items.append(item)
        elif key == "timestamp" and status_code == 100:
            items.append(item)
    if to_tag is not None and status_code != 100 and to_line is not None and request.to.tag is None:
        items[items.index(to_line)] = ("to", "To", f"{to_line[2]};tag={to_tag}")
    # Extra lines are checked and named exactly as Headers.add/set would.
    entry = Headers._entry
    for name, value in headers:
        items.append(entry(name, value))
    if content_type is not None:
        ct = entry("Content-Type", content_type)
        for i, item in enumerate(items):
            if item[0] == "content-type":  # Headers.set: one line, at the first's position
                items[i : len(items)] = [ct] + [it for it in items[i + 1 :] if it[0] != "content-type"]
                break
        else:
            items.append(ct)
    resp = Response(status_code, reason)
    resp.headers._items = items
    resp.body = body if type(body) is bytes else bytes(body)
    return resp


def make_request(
    method: str,
    uri: Uri | str,
    *,
    via: Via | str,
    from_: NameAddr | str,
    to: NameAddr | str,
    call_id: str,
    cseq: int,
    max_forwards: int = 70,
    contact: NameAddr | str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """Build a request with the mandatory headers of RFC 3261 §8.1.1 in the usual order."""
    req = Request(method, uri)
    h = req.headers
    h.add("Via", str(via))
    h.add("Max-Forwards", str(max_forwards))
    h.add("From", str(from_))
    h.add("To", str(to))
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        h.add("Contact", str(contact))
    for name, value in headers:
        h.add(name, value)
    if content_type is not None:
        h.set("Content-Type", content_type)
    req.body = bytes(body)
    return req


def make_cancel(request: Request) -> Request:
    """CANCEL for a pending request (RFC 3261 §9.1).

    Same Request-URI, Call-ID, From, To (no tag added), CSeq number with
    method CANCEL, only the top Via (same branch), and the Route set.
    """
    if request.method == "ACK":
        raise LocalProtocolError("an ACK cannot be cancelled")
    return _hop_request(request, "CANCEL", request.headers._first("to") or "")


def make_ack(request: Request, response: Response) -> Request:
    """ACK for a non-2xx final response to an INVITE (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From, CSeq number and Route of the INVITE; To from
    the response (with its tag); only the INVITE's top Via.  (The ACK for a
    2xx is a new in-dialog request built by the dialog layer, §13.2.2.4.)
    """
    if request.method != "INVITE" or response.status_code < 300:
        raise LocalProtocolError("make_ack() is for non-2xx final responses to INVITE")
    return _hop_request(request, "ACK", response.headers._first("to") or "")


def _hop_request(request: Request, method: str, to_value: str) -> Request:
    src = request.headers
    number, _ = request.cseq
    items: list[tuple[str, str, str]] = []
    top_via = request.top_via
    items.append(("via", "Via", str(top_via)))
    for key, display, value in src._items:
        if key in ("max-forwards", "from", "call-id", "route"):
            items.append((key, display, value))
        elif key == "to":
            items.append((key, display, to_value))
    items.append(("cseq", "CSeq", f"{number} {method}"))
    req = Request(method, request._uri if request._uri is not None else request._uri_text)
    req.headers._items = items
    return req


def _safe_reason(text: str) -> str:
    # Reason-Phrase = *(reserved / unreserved / escaped / UTF8 / SP / HTAB): keep it printable.
    cleaned = "".join(ch if (" " <= ch <= "~") else "?" for ch in text)
    return cleaned[:120]


def error_response(data: bytes, error: RemoteProtocolError) -> Response | None:
    """The response a UAS sends for input refused with *error*, or None (drop).

    A response is formed when *data* is a request whose top Via can be
    parsed (so the reply can be routed, RFC 3261 §18.2.2): the Via lines,
    and whichever of From, To, Call-ID and CSeq are present, are copied; a
    To tag is added (derived from the request, so retransmissions get the
    same tag).  The status is ``error.status_hint`` and the reason phrase
    names the fault (``"Bad Request: missing Call-ID header"``).  A 420
    carries ``Unsupported`` (RFC 3261 §8.2.2.3).  Responses are never
    answered (RFC 3261 §18.1.2): None.
    """
    try:
        return _error_response(bytes(data), error)
    except (RemoteProtocolError, ValueError, IndexError):
        return None


def _error_response(data: bytes, error: RemoteProtocolError) -> Response | None:
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    head_end = data.find(b"\r\n\r\n", start)
    if head_end < 0:
        head_end = len(data)
    head = data[start:head_end].decode("utf-8", "surrogateescape")
    head = _UNFOLD_RE.sub(" ", head)
    lines = head.split("\r\n")
    first = lines[0].split(" ", 1)[0]
    if not first or first.upper().startswith("SIP/") or not is_token(first):
        return None
    picked: list[tuple[str, str, str]] = []
    wanted = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
    to_value: str | None = None
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = _key(name.strip())
        if key in wanted:
            value = value.strip()
            if key == "to":
                if to_value is not None:
                    continue
                to_value = value
            elif key != "via" and any(k == key for k, _, _ in picked):
                continue
            picked.append((key, wanted[key], value))
    vias = [v for k, _, v in picked if k == "via"]
    if not vias:
        return None
    # Only the sent-by must be readable to route the reply (RFC 3261 §18.2.2);
    # a fault in later Via parameters is exactly what the 400 is about.
    if _VIA_RE.match(vias[0]) is None:
        return None
    code = error.status_hint if 300 <= error.status_hint <= 699 else 400
    phrase = REASON_PHRASES.get(code, "Bad Request")
    resp = Response(code, _safe_reason(f"{phrase}: {error.message}" if code == 400 else f"{phrase} ({error.message})"))
    if to_value is not None and ";tag=" not in to_value.replace(" ", "").lower():
        digest = hashlib.blake2s(data[:head_end], digest_size=6).hexdigest()
        picked = [(k, d, f"{v};tag={digest}" if k == "to" else v) for k, d, v in picked]
    resp.headers._items = picked
    if isinstance(error, BadExtensionError):
        resp.headers.add("Unsupported", ", ".join(error.unsupported))
    return resp


_DEFAULT_SCHEMES = ("sip", "sips", "tel")
_DEFAULT_SCHEME_SET = frozenset(_DEFAULT_SCHEMES)


def check_request(
    request: Request,
    *,
    schemes: Iterable[str] = _DEFAULT_SCHEMES,
    extensions: Iterable[str] = (),
    content_types: Iterable[str] | None = ("application/sdp",),
) -> None:
    """Application-level checks a UAS makes on a syntactically valid request.

    RFC 3261 §8.2.2.1: Request-URI scheme must be supported (416);
    §8.2.2.3: every ``Require`` option tag must be supported (420, raised as
    :class:`BadExtensionError` carrying the list for ``Unsupported``);
    §8.2.3: a body of an unsupported Content-Type is 415 (``content_types``
    None disables the check; ACK and bodies without Content-Type are exempt).

    Raises:
        RemoteProtocolError: with status_hint 416, 420 or 415.
    """
    uri = request.uri
    allowed_schemes = _DEFAULT_SCHEME_SET if schemes is _DEFAULT_SCHEMES else {s.lower() for s in schemes}
    if uri.scheme not in allowed_schemes:
        raise RemoteProtocolError(f"Request-URI scheme {uri.scheme!r} is not supported", 416)
    if request.method not in ("ACK", "CANCEL") and request.headers._first("require") is not None:
        supported = {e.lower() for e in extensions}
        missing = [tag for tag in request.require if tag.lower() not in supported]
        if missing:
            raise BadExtensionError(missing)
    if content_types is not None and request.body and request.method != "ACK":
        ctype = request.content_type
        if ctype is not None and ctype not in content_types and ctype not in {c.lower() for c in content_types}:
            raise RemoteProtocolError(f"Content-Type {ctype} is not supported", 415)


# Compiled twin (sip/_message.pyx includes this very file): see sip/compiled.py.
if __name__ == "sip.message":
    from sip.compiled import swap_in

    swap_in(globals(), "sip._message")
