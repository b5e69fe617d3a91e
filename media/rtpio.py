"""Batched UDP socket work for one media tick: receive from many sockets and
send many datagrams in one call.

Theory of operation
-------------------
Per-packet Python is the media ceiling (ARCHITECTURE.md: plain asyncio about
20k RTP packets/s per core, uvloop about 95k, C ``recvmmsg``/``sendmmsg``
about 180k).  The media clock therefore does its socket work once per 20 ms
tick, over every leg's socket at once, and never creates a Python object per
packet on the hot path: datagrams land in rows of one preallocated ``uint8``
array and their lengths, source addresses and the index of the socket they
came from land in parallel arrays.  RTP headers are then read from those rows
with numpy (see :mod:`media.engine`).

Two implementations with the same API and the same results:

* ``media/_rtpio.pyx`` (compiled): one ``recvmmsg(2)`` per socket that has
  data (``MSG_DONTWAIT``, up to 64 datagrams a call) and one ``sendmmsg(2)``
  per run of consecutive rows that leave from the same socket, all without the
  GIL, no Python object per datagram.
* this module (the pure twin, the readable reference): ``recvfrom_into`` /
  ``sendto`` per datagram on non-blocking sockets.

This module imports the compiled functions over its own unless
``CTIENGINE_PUREPYTHON=1`` (:func:`engine.purepython.pure_python_forced`).
``IMPLEMENTATION`` says which one is active.

Addresses are IPv4 (``AF_INET``): ``ips`` holds the address as a host-order
``uint32`` (``127.0.0.1`` is ``0x7F000001``) and ``ports`` the port number.
Every socket passed in must be a non-blocking ``AF_INET``/``SOCK_DGRAM``
socket (:mod:`media.ports` makes them so).  A datagram longer than a row is
truncated to the row width; errors on one socket (``ECONNREFUSED`` after an
ICMP unreachable, ``ENOBUFS``) skip that datagram and never abort the batch.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

import numpy as np

from engine.purepython import pure_python_forced

__all__ = ["recv_batch", "send_batch", "py_recv_batch", "py_send_batch", "RecvBuffers", "ip_to_int", "int_to_ip", "IMPLEMENTATION"]

IMPLEMENTATION = "python"


def ip_to_int(host: str) -> int:
    """``"127.0.0.1"`` → ``0x7F000001``."""
    return int(ipaddress.IPv4Address(host))


def int_to_ip(value: int) -> str:
    """``0x7F000001`` → ``"127.0.0.1"``."""
    return str(ipaddress.IPv4Address(int(value)))


def py_recv_batch(
    fds: np.ndarray,
    data: np.ndarray,
    lengths: np.ndarray,
    owners: np.ndarray,
    ips: np.ndarray,
    ports: np.ndarray,
    max_per_fd: int,
) -> int:
    """Receive every waiting datagram from each socket, without blocking.

    Args:
        fds: ``int32[k]`` file descriptors of non-blocking UDP sockets.
        data: ``uint8[cap, slot]`` C-contiguous rows, one datagram each.
        lengths: ``int32[cap]`` receives each datagram's stored length.
        owners: ``int32[cap]`` receives the index into ``fds`` it came from.
        ips: ``uint32[cap]`` receives the source IPv4 address (host order).
        ports: ``int32[cap]`` receives the source port.
        max_per_fd: at most this many datagrams are taken from one socket.

    Returns:
        The number of rows filled (rows ``0 .. n-1``), in socket order, then
        arrival order within a socket.  Stops early when ``cap`` rows are full.
    """
    cap, slot = data.shape
    n = 0
    for j in range(len(fds)):
        if n >= cap:
            break
        sock = socket.socket(fileno=int(fds[j]))
        try:
            for _ in range(max_per_fd):
                if n >= cap:
                    break
                try:
                    size, addr = sock.recvfrom_into(memoryview(data[n]), slot)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # ICMP-reported errors: skip, as the compiled twin does
                    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        continue
                    raise
                lengths[n] = size
                owners[n] = j
                ips[n] = ip_to_int(addr[0])
                ports[n] = addr[1]
                n += 1
        finally:
            sock.detach()
    return n


def py_send_batch(
    fds: np.ndarray,
    data: np.ndarray,
    lengths: np.ndarray,
    ips: np.ndarray,
    ports: np.ndarray,
) -> int:
    """Send row ``i`` of ``data[:, :lengths[i]]`` from ``fds[i]`` to ``(ips[i], ports[i])``.

    Args:
        fds: ``int32[n]`` the sending socket of each row.
        data: ``uint8[>=n, slot]`` C-contiguous rows.
        lengths: ``int32[n]`` bytes to send from each row.
        ips: ``uint32[n]`` destination IPv4 addresses (host order).
        ports: ``int32[n]`` destination ports.

    Returns:
        The number of datagrams the kernel accepted; a datagram refused by
        the kernel (full buffer, ICMP error) is skipped and not counted.
    """
    sent = 0
    current = -1
    sock: socket.socket | None = None
    try:
        for i in range(len(fds)):
            fd = int(fds[i])
            if fd != current:
                if sock is not None:
                    sock.detach()
                sock = socket.socket(fileno=fd)
                current = fd
            try:
                sock.sendto(memoryview(data[i])[: int(lengths[i])], (int_to_ip(ips[i]), int(ports[i])))
                sent += 1
            except OSError:
                continue
    finally:
        if sock is not None:
            sock.detach()
    return sent


recv_batch = py_recv_batch
send_batch = py_send_batch


@dataclass(slots=True)
class RecvBuffers:
    """Preallocated arrays for :func:`recv_batch` (``capacity`` rows of ``slot`` bytes)."""

    capacity: int
    slot: int = 256
    data: np.ndarray = None  # type: ignore[assignment]
    lengths: np.ndarray = None  # type: ignore[assignment]
    owners: np.ndarray = None  # type: ignore[assignment]
    ips: np.ndarray = None  # type: ignore[assignment]
    ports: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.data = np.zeros((self.capacity, self.slot), np.uint8)
        self.lengths = np.zeros(self.capacity, np.int32)
        self.owners = np.zeros(self.capacity, np.int32)
        self.ips = np.zeros(self.capacity, np.uint32)
        self.ports = np.zeros(self.capacity, np.int32)

    def receive(self, fds: np.ndarray, max_per_fd: int = 8) -> int:
        """:func:`recv_batch` into these buffers; returns the row count."""
        return recv_batch(fds, self.data, self.lengths, self.owners, self.ips, self.ports, max_per_fd)


if not pure_python_forced():
    try:
        from media._rtpio import recv_batch, send_batch  # type: ignore[assignment]  # noqa: F811

        IMPLEMENTATION = "cython"
    except ImportError:  # not built: the pure twin serves, slower
        pass
