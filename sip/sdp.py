"""SDP (RFC 4566) and the offer/answer model (RFC 3264) for G.711 audio calls.

Theory of operation
-------------------
:class:`SessionDescription` is a faithful, typed view of one SDP body:
``SessionDescription.parse(body)`` reads every line (unknown attributes and
session lines are kept so ``bytes(sd)`` re-emits them, in RFC 4566 §5 order),
and refuses malformed input with :class:`~sip.errors.SdpError` (status hint
400) naming the line.

:class:`SdpSession` is one side of the offer/answer exchange of a call.  It
owns our ``o=`` line: the session id is fixed, the version is incremented
each time we send a description that differs from the previous one (RFC 3264
§8, RFC 4566 §5.2), and it turns the peer's description into a
:class:`NegotiatedMedia` that the media layer uses:

* codecs: PCMU (PT 0) and PCMA (PT 8), plus ``telephone-event/8000`` (RFC
  4733) whose dynamic payload type is taken from the offer's ``rtpmap``
  (RFC 3264 §6.1: the answer uses the offerer's numbers).  The answer lists
  the common codecs in the offerer's preference order; the first is used.
* ``ptime`` (RFC 4566 §6): the peer's packetisation time is reported; ours is
  announced.
* direction (RFC 3264 §6.1): ``sendrecv``/``sendonly``/``recvonly``/
  ``inactive``; the answer's direction is the offer's mirrored and limited
  by what we want (so a hold offer ``sendonly`` gets ``recvonly``).  The old
  RFC 2543 hold, ``c=0.0.0.0``, is read as "do not send to me" (RFC 3264
  §8.4).
* streams we do not handle (video, a second audio stream, unknown
  transport) are rejected by answering them with port 0 (RFC 3264 §6).  If
  no audio stream can be accepted, :class:`~sip.errors.NoCommonCodecError`
  (status hint 488) is raised so the UAS answers 488 Not Acceptable Here.
* IPv4 and IPv6 connection addresses (``IN IP4`` / ``IN IP6``, RFC 5118 §4.6).

This module knows nothing about RTP sockets or calls: addresses and ports go
in, descriptions and :class:`NegotiatedMedia` come out.
"""


import ipaddress
import re
from dataclasses import dataclass, field

from sip.errors import NoCommonCodecError, SdpError

__all__ = [
    "Origin",
    "Connection",
    "MediaDescription",
    "SessionDescription",
    "NegotiatedMedia",
    "SdpSession",
    "Codec",
    "PCMU",
    "PCMA",
    "TELEPHONE_EVENT",
    "DIRECTIONS",
    "answer_direction",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

# Lines allowed at session level, in the order RFC 4566 §5 requires.
_SESSION_ORDER = "vosiuepcbtrzkam"
_MEDIA_ORDER = "icbka"


@dataclass(frozen=True, slots=True)
class Codec:
    """An RTP payload format we can use (RFC 3551 static types, or dynamic)."""

    name: str
    clock_rate: int
    static_payload_type: int | None

    def matches(self, name: str, clock_rate: int) -> bool:
        return name.lower() == self.name.lower() and clock_rate == self.clock_rate


PCMU = Codec("PCMU", 8000, 0)  # RFC 3551 §6 table 4
PCMA = Codec("PCMA", 8000, 8)
TELEPHONE_EVENT = Codec("telephone-event", 8000, None)  # RFC 4733 §7.1.1
_STATIC = {0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000),
           13: ("CN", 8000), 18: ("G729", 8000)}
_TELEPHONE_EVENT_PT = 101  # our choice when we offer (dynamic range 96-127)
_WHITESPACE = re.compile(r"\s")


@dataclass(slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str
    session_id: int
    session_version: int
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    def __str__(self) -> str:
        return f"{self.username} {self.session_id} {self.session_version} {self.nettype} {self.addrtype} {self.address}"

    def copy(self) -> "Origin":
        """An independent copy (cheaper than ``dataclasses.replace``)."""
        return Origin(self.username, self.session_id, self.session_version, self.address, self.nettype,
                      self.addrtype)


@dataclass(slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>``."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @property
    def is_hold(self) -> bool:
        """RFC 2543 hold: ``c=IN IP4 0.0.0.0`` (RFC 3264 §8.4)."""
        return self.address in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class MediaDescription:
    """One ``m=`` section with its ``i= c= b= k= a=`` lines.

    Attributes:
        media: ``audio``, ``video`` ...
        port: transport port (0 = rejected/disabled stream).
        proto: ``RTP/AVP`` ...
        formats: payload types (strings, as in the ``m=`` line).
        connection: ``c=`` of this stream or None (the session's applies).
        attributes: ``a=`` lines as (name, value or None), in order.
        port_count: the ``/<number of ports>`` suffix or None.
        other: ``i=``, ``b=`` and ``k=`` lines as (type, value).
    """

    media: str
    port: int
    proto: str
    formats: list[str]
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    port_count: int | None = None
    other: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name:value`` (``""`` for a flag), or None."""
        for key, value in self.attributes:
            if key == name:
                return "" if value is None else value
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [value or "" for key, value in self.attributes if key == name]

    @property
    def rtpmap(self) -> dict[int, tuple[str, int, int | None]]:
        """``{pt: (encoding, clock_rate, channels)}`` from ``a=rtpmap`` plus static types.

        Raises:
            SdpError: a malformed rtpmap line.
        """
        out: dict[int, tuple[str, int, int | None]] = {}
        for fmt in self.formats:
            if fmt.isdigit() and int(fmt) in _STATIC:
                name, rate = _STATIC[int(fmt)]
                out[int(fmt)] = (name, rate, None)
        for value in self.attribute_values("rtpmap"):
            pt_text, _, spec = value.partition(" ")
            parts = spec.strip().split("/")
            if not pt_text.isdigit() or len(parts) < 2 or not parts[1].isdigit():
                raise SdpError(f"SDP: malformed a=rtpmap:{value[:40]}")
            channels = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
            out[int(pt_text)] = (parts[0], int(parts[1]), channels)
        return out

    @property
    def fmtp(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            pt_text, _, params = value.partition(" ")
            if pt_text.isdigit():
                out[int(pt_text)] = params.strip()
        return out

    @property
    def ptime_ms(self) -> int | None:
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            return int(float(value))
        except ValueError:
            raise SdpError(f"SDP: malformed a=ptime:{value[:20]}") from None

    @property
    def direction(self) -> str | None:
        """The stream's direction attribute if present (RFC 3264 §5.1)."""
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return None

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        for kind, value in self.other:
            if kind == "i":
                out.append(f"i={value}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        _other_lines(out, self.other, "b")
        _other_lines(out, self.other, "k")
        _attribute_lines(out, self.attributes)
        return out


@dataclass(slots=True)
class SessionDescription:
    """A whole SDP body (RFC 4566 §5).

    Attributes:
        origin: the ``o=`` line.
        session_name: ``s=`` (``"-"`` when there is none to give).
        connection: session-level ``c=`` or None.
        times: ``t=`` lines as (start, stop).
        attributes: session-level ``a=`` lines.
        media: the ``m=`` sections in order.
        other: other session lines (``i u e p b r z k``) as (type, value), in order.
        version: ``v=`` (always 0).
    """

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    times: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)
    version: int = 0

    @classmethod
    def parse(cls, data: bytes | str) -> "SessionDescription":
        """Parse an SDP body; lines may end in CRLF or LF (RFC 4566 §5).

        Raises:
            SdpError: naming the first malformed line (status hint 400).
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raise SdpError("SDP: body is not UTF-8") from None
        else:
            text = data
        lines = [line.rstrip("\r") for line in text.split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        if not lines or lines[0] != "v=0":
            raise SdpError("SDP: first line is not v=0")
        origin: Origin | None = None
        session_name: str | None = None
        sd_conn: Connection | None = None
        times: list[tuple[int, int]] = []
        attributes: list[tuple[str, str | None]] = []
        other: list[tuple[str, str]] = []
        media: list[MediaDescription] = []
        current: MediaDescription | None = None
        for number, line in enumerate(lines[1:], start=2):
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise SdpError(f"SDP line {number}: {line[:40]!r} is not <type>=<value>")
            kind, value = line[0], line[2:]
            if kind == "m":
                current = _parse_media(value, number)
                media.append(current)
            elif kind == "a":
                name, sep, aval = value.partition(":")
                if not name:
                    raise SdpError(f"SDP line {number}: empty attribute name")
                (attributes if current is None else current.attributes).append((name, aval if sep else None))
            elif kind == "c":
                conn = _parse_connection(value, number)
                if current is None:
                    sd_conn = conn
                else:
                    current.connection = conn
            elif current is not None:
                if kind not in "ibk":
                    raise SdpError(f"SDP line {number}: {kind}= not allowed inside a media section")
                current.other.append((kind, value))
            elif kind == "o":
                origin = _parse_origin(value, number)
            elif kind == "s":
                session_name = value
            elif kind == "t":
                parts = value.split()
                if len(parts) != 2 or not all(p.isdigit() for p in parts):
                    raise SdpError(f"SDP line {number}: malformed t={value[:40]}")
                times.append((int(parts[0]), int(parts[1])))
            elif kind in "iuepbrzk":
                other.append((kind, value))
            elif kind == "v":
                raise SdpError(f"SDP line {number}: repeated v= line")
            else:
                raise SdpError(f"SDP line {number}: unknown line type {kind}=")
        if origin is None:
            raise SdpError("SDP: missing o= line")
        if session_name is None:
            raise SdpError("SDP: missing s= line")
        if not times:
            raise SdpError("SDP: missing t= line")
        for index, m in enumerate(media):
            if m.connection is None and sd_conn is None and m.port != 0:
                raise SdpError(f"SDP: media section {index + 1} has no c= line and there is no session c=")
        return cls(origin, session_name, sd_conn, times, attributes, media, other)

    def media_connection(self, m: MediaDescription) -> Connection | None:
        """The connection that applies to *m* (its own ``c=`` or the session's)."""
        return m.connection if m.connection is not None else self.connection

    def __str__(self) -> str:
        out = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        _other_lines(out, self.other, "iuep")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        _other_lines(out, self.other, "b")
        for start, stop in self.times:
            out.append(f"t={start} {stop}")
        for kind in "rzk":
            _other_lines(out, self.other, kind)
        _attribute_lines(out, self.attributes)
        for m in self.media:
            out.extend(m.lines())
        return "\r\n".join(out) + "\r\n"

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")


def _other_lines(out: list, other: list, kinds: str) -> None:
    """Append the ``other`` lines whose type is one of ``kinds``, in their order (plain loops: no generators)."""
    for kind, value in other:
        if kind in kinds:
            out.append(f"{kind}={value}")


def _attribute_lines(out: list, attributes: list) -> None:
    for name, value in attributes:
        out.append(f"a={name}" if value is None else f"a={name}:{value}")


def _parse_origin(value: str, number: int) -> Origin:
    parts = value.split(" ")
    if len(parts) != 6 or not parts[1].isdigit() or not parts[2].isdigit():
        raise SdpError(f"SDP line {number}: malformed o={value[:60]}")
    username, sess_id, sess_version, nettype, addrtype, address = parts
    return Origin(username, int(sess_id), int(sess_version), address, nettype, addrtype)


def _parse_connection(value: str, number: int) -> Connection:
    parts = value.split(" ")
    if len(parts) != 3:
        raise SdpError(f"SDP line {number}: malformed c={value[:60]}")
    nettype, addrtype, address = parts
    if nettype == "IN":
        # Strip an optional multicast /ttl/count suffix before checking the address.
        host = address.split("/", 1)[0]
        if addrtype == "IP4":
            # A dotted quad or a host name (RFC 4566 §5.7 allows FQDNs) is
            # accepted; only an empty value or one with whitespace is refused.
            if not host or _WHITESPACE.search(host) is not None:
                raise SdpError(f"SDP line {number}: bad IP4 address {host[:40]!r}")
        elif addrtype == "IP6":
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise SdpError(f"SDP line {number}: bad IP6 address {host[:40]!r}") from None
    return Connection(address, addrtype, nettype)


def _parse_media(value: str, number: int) -> MediaDescription:
    parts = value.split(" ")
    if len(parts) < 4:
        raise SdpError(f"SDP line {number}: malformed m={value[:60]}")
    media, port_text, proto, *formats = parts
    port_main, _, count = port_text.partition("/")
    if not port_main.isdigit() or int(port_main) > 65535 or (count and not count.isdigit()):
        raise SdpError(f"SDP line {number}: bad port {port_text[:20]!r} in m= line")
    if not all(formats):
        raise SdpError(f"SDP line {number}: empty format in m= line")
    return MediaDescription(media, int(port_main), proto, formats, port_count=int(count) if count else None)


def answer_direction(offered: str, wanted: str = "sendrecv") -> str:
    """RFC 3264 §6.1: the answer's direction for an offered one, given what we want.

    ``sendonly`` offered → we may only receive; ``recvonly`` → only send;
    ``inactive`` → ``inactive``; ``sendrecv`` → whatever we want.
    """
    if offered not in DIRECTIONS or wanted not in DIRECTIONS:
        raise ValueError(f"unknown direction {offered!r} / {wanted!r}")
    peer_sends = offered in ("sendrecv", "sendonly")
    peer_receives = offered in ("sendrecv", "recvonly")
    we_send = wanted in ("sendrecv", "sendonly") and peer_receives
    we_receive = wanted in ("sendrecv", "recvonly") and peer_sends
    return _direction(we_send, we_receive)


def _direction(send: bool, receive: bool) -> str:
    if send and receive:
        return "sendrecv"
    if send:
        return "sendonly"
    if receive:
        return "recvonly"
    return "inactive"


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """Outcome of an offer/answer for the audio stream: what the RTP side must do.

    Attributes:
        remote_address: where to send RTP (``None`` if we must not send).
        remote_port: the peer's RTP port.
        payload_type: the RTP payload type of the chosen codec.
        codec: ``"PCMU"`` or ``"PCMA"``.
        clock_rate: 8000.
        telephone_event_payload_type: RFC 4733 payload type or None.
        ptime_ms: packetisation time the peer asked for (20 if unspecified).
        direction: our direction (``sendonly`` means we send only ...).
        remote_hold: the peer put us on hold (it does not want to receive).
        media_index: index of the audio stream in the m= lines.
    """

    remote_address: str | None
    remote_port: int
    payload_type: int
    codec: str
    clock_rate: int
    telephone_event_payload_type: int | None
    ptime_ms: int
    direction: str
    remote_hold: bool
    media_index: int

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly") and self.remote_address is not None

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


class SdpSession:
    """Our side of the SDP exchange for one call (RFC 3264).

    Args:
        address: our media IP address (IPv4 or IPv6 literal).
        session_id: ``o=`` session id (pick e.g. an NTP timestamp or random int).
        codecs: codecs we accept, in our preference order (PCMU, PCMA).
        telephone_event: offer/accept RFC 4733 DTMF.
        ptime_ms: our packetisation time.
        username: ``o=`` username.

    Example::

        local = SdpSession("192.0.2.20", session_id=42)
        answer, media = local.answer(SessionDescription.parse(invite.body), rtp_port=40000)
        body = bytes(answer)   # for the 200 OK
        media.payload_type, media.remote_address, media.remote_port
    """

    def __init__(
        self,
        address: str,
        session_id: int,
        *,
        codecs: tuple[Codec, ...] = (PCMU, PCMA),
        telephone_event: bool = True,
        ptime_ms: int = 20,
        username: str = "-",
    ) -> None:
        self.address = address
        self.addrtype = "IP6" if ":" in address else "IP4"
        self.codecs = codecs
        self.telephone_event = telephone_event
        self.ptime_ms = ptime_ms
        self.origin = Origin(username, session_id, session_id, address, "IN", self.addrtype)
        self._last_body: str | None = None
        self._last_offer: SessionDescription | None = None
        self._last_negotiated: NegotiatedMedia | None = None

    # -- versioning (RFC 3264 §8) --------------------------------------------
    def _stamp(self, sd: SessionDescription) -> SessionDescription:
        """Give *sd* our o= line, bumping the version if the content changed."""
        sd.origin = self.origin.copy()
        body = str(sd)
        if self._last_body is not None and body != self._last_body:
            self.origin.session_version += 1
            sd.origin = self.origin.copy()
            body = str(sd)
        self._last_body = body
        return sd

    @property
    def last_body(self) -> bytes | None:
        """The text of the description we sent last (what ``bytes(sd)`` gives), or None."""
        return None if self._last_body is None else self._last_body.encode("utf-8")

    # -- offers -------------------------------------------------------------
    def offer(self, rtp_port: int, *, direction: str = "sendrecv", hold_style: str = "rfc3264") -> SessionDescription:
        """Build an offer (initial, re-offer, or hold/resume).

        Args:
            rtp_port: our RTP port.
            direction: ``sendonly`` to hold the peer, ``inactive`` ...
            hold_style: ``"rfc2543"`` additionally puts ``c=0.0.0.0`` when
                we do not want to receive (for very old peers).
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}")
        address = self.address
        if hold_style == "rfc2543" and direction in ("sendonly", "inactive"):
            address = "0.0.0.0" if self.addrtype == "IP4" else "::"
        formats: list[str] = []
        attributes: list[tuple[str, str | None]] = []
        for codec in self.codecs:
            pt = codec.static_payload_type
            assert pt is not None
            formats.append(str(pt))
            attributes.append(("rtpmap", f"{pt} {codec.name}/{codec.clock_rate}"))
        if self.telephone_event:
            formats.append(str(_TELEPHONE_EVENT_PT))
            attributes.append(("rtpmap", f"{_TELEPHONE_EVENT_PT} telephone-event/8000"))
            attributes.append(("fmtp", f"{_TELEPHONE_EVENT_PT} 0-16"))
        attributes.append(("ptime", str(self.ptime_ms)))
        attributes.append((direction, None))
        m = MediaDescription("audio", rtp_port, "RTP/AVP", formats, attributes=attributes)
        sd = SessionDescription(self.origin, "-", Connection(address, self.addrtype), [(0, 0)], [], [m])
        sd = self._stamp(sd)
        self._last_offer = sd
        return sd

    def process_answer(self, answer: SessionDescription) -> NegotiatedMedia:
        """Read the peer's answer to our last :meth:`offer`.

        Raises:
            NoCommonCodecError: the answer rejected the audio stream or chose
                no codec we offered.
            SdpError: malformed answer (m= count differs from the offer).
        """
        offer = self._last_offer
        if offer is None:
            raise SdpError("SDP answer received but no offer was sent")
        if len(answer.media) != len(offer.media):
            raise SdpError(f"SDP answer has {len(answer.media)} m= lines, offer had {len(offer.media)}")
        m = answer.media[0]
        if m.port == 0:
            raise NoCommonCodecError("SDP answer rejected the audio stream (port 0)")
        our_direction = offer.media[0].direction or "sendrecv"
        return self._negotiate(answer, 0, our_direction, answering=False)

    # -- answers ------------------------------------------------------------
    def answer(
        self, offer: SessionDescription, rtp_port: int, *, direction: str = "sendrecv"
    ) -> tuple[SessionDescription, NegotiatedMedia]:
        """Answer a peer's offer (RFC 3264 §6).

        Args:
            offer: the parsed offer.
            rtp_port: our RTP port for the accepted audio stream.
            direction: what we want (``sendonly`` when we hold the peer).

        Returns:
            (answer description, negotiated media of the accepted stream).

        Raises:
            NoCommonCodecError: no audio stream can be accepted (answer 488).
        """
        chosen: int | None = None
        negotiated: NegotiatedMedia | None = None
        answer_media: list[MediaDescription] = []
        reasons: list[str] = []
        for index, m in enumerate(offer.media):
            rejected = MediaDescription(m.media, 0, m.proto, list(m.formats[:1]) or ["0"])
            if chosen is not None or m.media != "audio" or m.port == 0:
                answer_media.append(rejected)
                continue
            if m.proto not in ("RTP/AVP", "RTP/AVPF"):
                reasons.append(f"stream {index + 1}: transport {m.proto} not supported")
                answer_media.append(rejected)
                continue
            try:
                negotiated = self._negotiate(offer, index, direction, answering=True)
            except NoCommonCodecError as exc:
                reasons.append(f"stream {index + 1}: {exc.message}")
                answer_media.append(rejected)
                continue
            chosen = index
            answer_media.append(self._answer_media(m, rtp_port, negotiated))
        if chosen is None or negotiated is None:
            detail = "; ".join(reasons) or "no audio stream offered"
            raise NoCommonCodecError(f"no acceptable audio stream in the offer ({detail})")
        sd = SessionDescription(self.origin, "-", Connection(self.address, self.addrtype), [(0, 0)], [], answer_media)
        self._last_negotiated = negotiated
        return self._stamp(sd), negotiated

    def answer_body(
        self, offer: bytes | str, rtp_port: int, *, direction: str = "sendrecv"
    ) -> tuple[bytes, NegotiatedMedia]:
        """Parse an offer body and answer it: ``(answer body bytes, negotiated media)``.

        Same as ``answer(SessionDescription.parse(offer), ...)`` followed by
        ``bytes(answer)``, but the answer is rendered once (the version check
        of RFC 3264 §8 already renders it).

        Raises:
            SdpError: malformed offer (answer 400).
            NoCommonCodecError: no audio stream can be accepted (answer 488).
        """
        self.answer(SessionDescription.parse(offer), rtp_port, direction=direction)
        body = self._last_body
        assert body is not None
        return body.encode("utf-8"), self._last_negotiated  # type: ignore[return-value]

    def _answer_media(self, m: MediaDescription, rtp_port: int, neg: NegotiatedMedia) -> MediaDescription:
        formats: list[str] = []
        attributes: list[tuple[str, str | None]] = []
        for pt, spec in _mapped_formats(m, m.rtpmap):
            if any(c.matches(spec[0], spec[1]) for c in self.codecs):
                formats.append(str(pt))
                attributes.append(("rtpmap", f"{pt} {spec[0]}/{spec[1]}"))
        te = neg.telephone_event_payload_type
        if te is not None:
            formats.append(str(te))
            attributes.append(("rtpmap", f"{te} telephone-event/8000"))
            attributes.append(("fmtp", f"{te} {m.fmtp.get(te, '0-16')}"))
        attributes.append(("ptime", str(self.ptime_ms)))
        attributes.append((neg.direction, None))
        return MediaDescription("audio", rtp_port, m.proto, formats, attributes=attributes)

    def _negotiate(self, sd: SessionDescription, index: int, wanted: str, *, answering: bool) -> NegotiatedMedia:
        m = sd.media[index]
        rtpmap = m.rtpmap
        codec_pt: tuple[Codec, int] | None = None
        te_pt: int | None = None
        for pt, spec in _mapped_formats(m, rtpmap):
            if self.telephone_event and TELEPHONE_EVENT.matches(spec[0], spec[1]) and te_pt is None:
                te_pt = pt
                continue
            if codec_pt is None:
                for codec in self.codecs:
                    if codec.matches(spec[0], spec[1]):
                        codec_pt = (codec, pt)
                        break
        if codec_pt is None:
            offered = ", ".join(f"{rtpmap[int(f)][0]}" if f.isdigit() and int(f) in rtpmap else f for f in m.formats)
            raise NoCommonCodecError(f"no common codec (offered {offered}; we support {', '.join(c.name for c in self.codecs)})")
        conn = sd.media_connection(m)
        peer_direction = m.direction or _session_direction(sd) or "sendrecv"
        remote_hold = conn is not None and conn.is_hold
        if remote_hold:
            # RFC 3264 §8.4: c=0.0.0.0 means the peer does not want to receive.
            peer_direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(peer_direction, peer_direction)
        remote_hold = remote_hold or peer_direction in ("sendonly", "inactive")
        if answering:
            direction = answer_direction(peer_direction, wanted)
        else:
            # Our offer said `wanted`; the answer's direction limits it (mirror image).
            mirror = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(peer_direction, peer_direction)
            peer_allows_send = mirror in ("sendrecv", "sendonly")
            peer_allows_recv = mirror in ("sendrecv", "recvonly")
            direction = _direction(
                wanted in ("sendrecv", "sendonly") and peer_allows_send,
                wanted in ("sendrecv", "recvonly") and peer_allows_recv,
            )
        address = None if conn is None or conn.is_hold else conn.address.split("/", 1)[0]
        return NegotiatedMedia(
            remote_address=address,
            remote_port=m.port,
            payload_type=codec_pt[1],
            codec=codec_pt[0].name,
            clock_rate=codec_pt[0].clock_rate,
            telephone_event_payload_type=te_pt,
            ptime_ms=m.ptime_ms or 20,
            direction=direction,
            remote_hold=remote_hold,
            media_index=index,
        )


def _mapped_formats(m: MediaDescription, rtpmap: dict[int, tuple[str, int, int | None]]
                    ) -> list[tuple[int, tuple[str, int, int | None]]]:
    """The m= line's payload types that have a known encoding (``rtpmap`` = ``m.rtpmap``), in offer order."""
    return [(int(fmt), rtpmap[int(fmt)]) for fmt in m.formats if fmt.isdigit() and int(fmt) in rtpmap]


def _session_direction(sd: SessionDescription) -> str | None:
    for key, _ in sd.attributes:
        if key in DIRECTIONS:
            return key
    return None


# Compiled twin (sip/_sdp.pyx includes this very file): see sip/compiled.py.
if __name__ == "sip.sdp":
    from sip.compiled import swap_in

    swap_in(globals(), "sip._sdp")
