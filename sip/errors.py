"""Errors raised by the SIP stack.

Two families, after h11's ``_util.py``:

* :class:`RemoteProtocolError` -- the peer sent something that violates RFC 3261
  (or a companion RFC).  It carries ``status_hint``, the response code a UAS
  should answer with (400, 413, 416, 420, 505 ...), and the message names the
  fault and its place, e.g. ``"Via header has no branch parameter"``.  The
  transport turns it into that response (see :func:`sip.message.error_response`)
  or drops the input when no response can be formed; the loop goes on.
* :class:`LocalProtocolError` -- our own code asked for something illegal (a
  bug): tests must see it, nothing catches it.
"""

from __future__ import annotations

__all__ = ["SipError", "RemoteProtocolError", "LocalProtocolError", "SdpError", "NoCommonCodecError"]


class SipError(Exception):
    """Base class of every error raised by :mod:`sip`."""


class RemoteProtocolError(SipError, ValueError):
    """The remote peer sent a message that violates the protocol.

    Args:
        message: what is wrong and where (``"CSeq number 4294967296 exceeds 2**32-1"``).
        status_hint: the SIP status code a UAS should answer with (default 400).
    """

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_hint = status_hint

    def __repr__(self) -> str:
        return f"RemoteProtocolError({self.message!r}, status_hint={self.status_hint})"


class LocalProtocolError(SipError):
    """Our own code tried to build or send something illegal (a bug)."""


class SdpError(RemoteProtocolError):
    """A session description is malformed (RFC 4566) or breaks offer/answer (RFC 3264).

    ``status_hint`` is 400 for syntax faults and 488 (Not Acceptable Here) for
    offers we cannot satisfy.
    """


class NoCommonCodecError(SdpError):
    """No media stream of the offer can be accepted: answer 488 (RFC 3264 §6)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 488)
