"""UDP ports for RTP legs: one socket per leg from a configurable range.

Theory of operation
-------------------
RFC 3550 §11 asks for an even RTP port (RTCP traditionally on the next odd
one); this engine multiplexes RTCP on the RTP port (RFC 5761) and keeps the
odd port of each pair unbound, so a range of ``N`` ports serves ``N/2`` legs.
:class:`PortAllocator` walks the range round-robin (a port just released is
not handed out again at once, so late packets of an ended call do not reach
the next one), skips ports some other process holds (``EADDRINUSE``) and
raises :class:`media.errors.LocalMediaError` when the range is exhausted.
``port_range=None`` binds port 0 (the kernel picks) -- what tests use.

Sockets are non-blocking, ``AF_INET``/``SOCK_DGRAM``, with enlarged kernel
buffers so a late tick does not drop datagrams (:mod:`media.rtpio` reads them
in batches).
"""
from __future__ import annotations

import errno
import socket

from media.errors import LocalMediaError

__all__ = ["PortAllocator"]

SOCKET_BUFFER_BYTES = 256 * 1024


class PortAllocator:
    """Hands out bound, non-blocking UDP sockets on even ports of a range.

    Args:
        host: local IPv4 address to bind (``"0.0.0.0"`` for all).
        port_range: ``(first, last)`` inclusive, or None for kernel-chosen ports.
    """

    def __init__(self, host: str = "127.0.0.1", port_range: tuple[int, int] | None = (20000, 29999)) -> None:
        self.host = host
        self.port_range = port_range
        if port_range is not None:
            first, last = port_range
            if not (1024 <= first <= last <= 65535):
                raise LocalMediaError(f"RTP port range {first}-{last} must lie within 1024-65535")
            first += first % 2
            self._ports = list(range(first, last + 1, 2))
            if not self._ports:
                raise LocalMediaError(f"RTP port range {first}-{last} holds no even port")
        else:
            self._ports = []
        self._next = 0
        self.in_use: set[int] = set()

    @property
    def capacity(self) -> int | None:
        """How many legs the range can serve (None: unbounded)."""
        return len(self._ports) if self.port_range else None

    def _socket(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
            s.setblocking(False)
            s.bind((self.host, port))
        except BaseException:
            s.close()
            raise
        return s

    def allocate(self) -> socket.socket:
        """A bound socket for a new leg.

        Raises:
            LocalMediaError: every port of the range is taken.
        """
        if self.port_range is None:
            s = self._socket(0)
            self.in_use.add(s.getsockname()[1])
            return s
        for _ in range(len(self._ports)):
            port = self._ports[self._next]
            self._next = (self._next + 1) % len(self._ports)
            if port in self.in_use:
                continue
            try:
                s = self._socket(port)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            self.in_use.add(port)
            return s
        raise LocalMediaError(
            f"RTP port range {self.port_range[0]}-{self.port_range[1]} exhausted ({len(self.in_use)} legs)")

    def release(self, sock: socket.socket) -> None:
        """Close a leg's socket and return its port to the range."""
        try:
            port = sock.getsockname()[1]
        except OSError:
            port = None
        sock.close()
        self.in_use.discard(port)  # type: ignore[arg-type]
