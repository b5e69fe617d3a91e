"""Stream framing of SIP messages over TCP/TLS (RFC 3261 §18.3, RFC 5626 §3.5.1).

Theory of operation
-------------------
A stream carries messages back to back; each one is a header section ended
by an empty line, then exactly ``Content-Length`` octets of body.  On a
stream the header is mandatory (RFC 3261 §18.3): a message without it cannot
be delimited, so the framer raises and the connection must be closed.

:class:`StreamFramer` is sans-IO: :meth:`~StreamFramer.feed` appends received
octets, :meth:`~StreamFramer.next_frame` returns the next complete item or
None when more octets are needed:

* ``bytes`` -- one whole message, to hand to :func:`sip.message.parse_message`;
* :data:`KeepAlive.PING` -- a double CRLF at a message boundary (RFC 5626
  §3.5.1 "ping"); the server must answer :data:`PONG` (a single CRLF);
* :data:`KeepAlive.PONG` -- a single CRLF that is not part of a ping (the
  answer to our ping when we are the client).  RFC 3261 §7.5 says CRLFs
  before a start line are ignored, so a server may simply discard PONGs.

A lone CRLF at the end of the buffer is ambiguous (the first half of a ping
or a whole pong).  In ``role="server"`` the framer waits for more octets; in
``role="client"`` (we sent the ping) it is reported as a PONG at once.

Faults raise :class:`~sip.errors.RemoteProtocolError` (missing, repeated or
negative Content-Length, header section or body over the configured limits
-- status hints 400, 513 and 413); the framer is then unusable and the
transport closes the connection.  :attr:`StreamFramer.failed_head` keeps the
header octets of the refused message so the transport can try
:func:`sip.message.error_response` before closing.
"""

from __future__ import annotations

import enum
import re

from sip.errors import RemoteProtocolError

__all__ = ["StreamFramer", "KeepAlive", "PING", "PONG"]

PING = b"\r\n\r\n"  # RFC 5626 §3.5.1: keep-alive ping (client → server)
PONG = b"\r\n"  # RFC 5626 §3.5.1: keep-alive pong (server → client)

# Content-Length / compact "l", at the start of a header line, value to end of line.
_CL_RE = re.compile(rb"\r\n(?:[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]|[Ll])[ \t]*:[ \t]*([^\r\n]*)")


class KeepAlive(enum.Enum):
    """Keep-alive items found between messages."""

    PING = "ping"  #: double CRLF received: answer with a single CRLF
    PONG = "pong"  #: single CRLF received


class StreamFramer:
    """Cut a byte stream into SIP messages and keep-alives.

    Args:
        role: ``"server"`` (default) or ``"client"``, see the module docstring.
        max_header_size: limit of a header section in octets (513 beyond).
        max_body_size: limit of a body in octets (413 beyond).
    """

    __slots__ = ("role", "max_header_size", "max_body_size", "_buf", "_scan", "_error", "failed_head")

    def __init__(self, role: str = "server", max_header_size: int = 65536, max_body_size: int = 1 << 20) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        self.role = role
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for the end of the header section
        self._error: RemoteProtocolError | None = None
        self.failed_head: bytes | None = None

    def feed(self, data: bytes) -> None:
        """Append octets received from the stream."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned."""
        return len(self._buf)

    def _fail(self, message: str, status_hint: int, head: bytes | None) -> RemoteProtocolError:
        self.failed_head = head
        self._error = RemoteProtocolError(message, status_hint)
        return self._error

    def next_frame(self) -> bytes | KeepAlive | None:
        """The next complete message or keep-alive, or None when more octets are needed.

        Raises:
            RemoteProtocolError: the stream cannot be framed any more (the
                same error again on later calls); close the connection.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        if not buf:
            return None
        if buf[0] == 0x0D:  # at a boundary: keep-alives (RFC 5626) or stray CRLFs (RFC 3261 §7.5)
            if buf.startswith(PING):
                del buf[:4]
                return KeepAlive.PING
            if buf.startswith(b"\r\n"):
                if len(buf) == 2:
                    if self.role == "client":
                        del buf[:2]
                        return KeepAlive.PONG
                    return None
                if buf[2] != 0x0D:
                    del buf[:2]
                    return KeepAlive.PONG
                if len(buf) < 4:
                    return None  # "\r\n\r" : wait for the rest of the ping
            elif len(buf) == 1:
                return None
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            if len(buf) > self.max_header_size:
                raise self._fail(
                    f"header section exceeds {self.max_header_size} octets", 513, bytes(buf[: self.max_header_size])
                )
            self._scan = max(0, len(buf) - 3)
            return None
        head = bytes(buf[:end + 2])
        if end > self.max_header_size:
            raise self._fail(f"header section exceeds {self.max_header_size} octets", 513, head)
        values = _CL_RE.findall(head)
        if not values:
            # RFC 3261 §18.3: Content-Length MUST be used with stream transports.
            raise self._fail("missing Content-Length header on a stream transport", 400, head)
        if len(values) > 1:
            raise self._fail("Content-Length header appears more than once", 400, head)
        text = values[0].strip()
        if not text.isdigit():
            raise self._fail(f"Content-Length {text[:20].decode('latin-1')!r} is not a non-negative number", 400, head)
        length = int(text)
        if length > self.max_body_size:
            raise self._fail(f"Content-Length {length} exceeds the {self.max_body_size}-octet limit", 413, head)
        total = end + 4 + length
        if len(buf) < total:
            self._scan = end  # header found; just wait for the body
            return None
        frame = bytes(buf[:total])
        del buf[:total]
        self._scan = 0
        return frame

    def frames(self) -> list[bytes | KeepAlive]:
        """Every complete item currently buffered (may raise like :meth:`next_frame`)."""
        out: list[bytes | KeepAlive] = []
        while True:
            item = self.next_frame()
            if item is None:
                return out
            out.append(item)
