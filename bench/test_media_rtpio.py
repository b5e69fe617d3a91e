"""Socket work of one media tick for 500 legs: batched Cython vs per-packet Python.

Each round is what the media clock does per tick: 500 leg sockets each send
one 172-byte RTP packet to a phone-side socket, and 500 packets waiting on
the leg sockets are received.  Three implementations in the same run:

* ``cython``: :mod:`media._rtpio` (``recvmmsg``/``sendmmsg``, GIL released),
* ``pure``: the pure twin (``recvfrom_into``/``sendto`` per packet),
* ``perpacket``: what an asyncio ``DatagramProtocol`` costs below the loop:
  a ``bytes`` object per packet from ``recv`` and a ``sendto`` per packet.

Run: ``.venv/bin/python -m pytest -q bench/test_media_rtpio.py --benchmark-json=bench/results/media_rtpio.json``.
"""
from __future__ import annotations

import importlib
import socket

import numpy as np
import pytest

from media import rtpio

LEGS = 500


@pytest.fixture(scope="module")
def rig():
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    phone.bind(("127.0.0.1", 0))
    phone.setblocking(False)
    legs = []
    for _ in range(LEGS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        legs.append(s)
    yield phone, legs
    phone.close()
    for s in legs:
        s.close()


def _arrays(phone, legs):
    fds = np.array([s.fileno() for s in legs], np.int32)
    data = np.zeros((LEGS, 172), np.uint8)
    data[:, 0] = 0x80
    lengths = np.full(LEGS, 172, np.int32)
    ips = np.full(LEGS, 0x7F000001, np.uint32)
    ports = np.full(LEGS, phone.getsockname()[1], np.int32)
    leg_ports = [s.getsockname()[1] for s in legs]
    return fds, data, lengths, ips, ports, leg_ports


def _feed(phone, leg_ports) -> None:
    pkt = b"\x80" * 172
    for p in leg_ports:
        phone.sendto(pkt, ("127.0.0.1", p))


def _drain(phone) -> None:
    while True:
        try:
            phone.recv(2048)
        except BlockingIOError:
            return


@pytest.mark.parametrize("impl", ["cython", "pure", "perpacket"])
def test_tick_io_500_legs(benchmark, rig, impl) -> None:
    phone, legs = rig
    fds, data, lengths, ips, ports, leg_ports = _arrays(phone, legs)
    buf = rtpio.RecvBuffers(2 * LEGS, 256)
    if impl == "cython":
        mod = importlib.import_module("media._rtpio")
        recv, send = mod.recv_batch, mod.send_batch
    else:
        recv, send = rtpio.py_recv_batch, rtpio.py_send_batch
    addr = ("127.0.0.1", phone.getsockname()[1])

    def tick_batched() -> int:
        n = recv(fds, buf.data, buf.lengths, buf.owners, buf.ips, buf.ports, 8)
        return n + send(fds, data, lengths, ips, ports)

    def tick_perpacket() -> int:
        n = 0
        for s in legs:
            try:
                while True:
                    s.recvfrom(2048)
                    n += 1
            except BlockingIOError:
                pass
        for s in legs:
            s.sendto(bytes(data[0]), addr)
        return n + LEGS

    fn = tick_batched if impl != "perpacket" else tick_perpacket

    def setup():
        _drain(phone)
        _feed(phone, leg_ports)

    benchmark.group = "tick-io-500-legs"
    benchmark.extra_info["packets_per_round"] = 2 * LEGS
    benchmark.pedantic(fn, setup=setup, rounds=30, iterations=1)
    _drain(phone)
