"""Batched socket IO over real loopback sockets: both twins deliver identical batches."""
from __future__ import annotations

import importlib
import socket
import time
from typing import Callable

import numpy as np
import pytest

from engine.purepython import pure_python_forced
from media import rtpio
from media.rtp import RtpPacket

pytestmark = pytest.mark.twin


def _compiled() -> tuple[Callable, Callable] | None:
    try:
        mod = importlib.import_module("media._rtpio")
    except ImportError:
        if pure_python_forced():
            return None
        pytest.fail("media._rtpio is not built (run make build); differential tests need it")
    return mod.recv_batch, mod.send_batch


def _sockets(n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    return socks


@pytest.fixture
def socks():
    made: list[socket.socket] = []

    def make(n: int) -> list[socket.socket]:
        s = _sockets(n)
        made.extend(s)
        return s

    yield make
    for s in made:
        s.close()


def _wait_queued(expect_total: int, socks_: list[socket.socket]) -> None:
    # loopback delivery is synchronous on Linux, but give the kernel a moment anyway
    time.sleep(0.01)


def _fill(senders, receivers, counts) -> list[tuple[int, bytes, int]]:
    """Each sender i sends counts[j] distinct RTP packets to receiver j; returns expectations."""
    expected = []
    for j, r in enumerate(receivers):
        for k in range(counts[j]):
            s = senders[(j + k) % len(senders)]
            pkt = bytes(RtpPacket(0, (j * 100 + k) & 0xFFFF, k * 160, j, bytes([j & 0xFF, k & 0xFF]) * 80))
            s.sendto(pkt, r.getsockname())
            expected.append((j, pkt, s.getsockname()[1]))
    return expected


def _recv_with(fn, receivers, cap=512, slot=256, max_per_fd=8):
    fds = np.array([r.fileno() for r in receivers], np.int32)
    data = np.zeros((cap, slot), np.uint8)
    lengths = np.zeros(cap, np.int32)
    owners = np.zeros(cap, np.int32)
    ips = np.zeros(cap, np.uint32)
    ports = np.zeros(cap, np.int32)
    n = fn(fds, data, lengths, owners, ips, ports, max_per_fd)
    return [(int(owners[i]), bytes(data[i, : lengths[i]]), int(ports[i]), int(ips[i])) for i in range(n)]


@pytest.mark.parametrize("impl", ["python", "compiled"])
def test_recv_batch_many_sockets(socks, impl) -> None:
    fns = {"python": rtpio.py_recv_batch}
    comp = _compiled()
    if impl == "compiled":
        if comp is None:
            pytest.skip("CTIENGINE_PUREPYTHON=1")
        fns["compiled"] = comp[0]
    senders = socks(3)
    receivers = socks(20)
    counts = [j % 4 for j in range(20)]  # some sockets are empty
    expected = _fill(senders, receivers, counts)
    _wait_queued(len(expected), receivers)
    got = _recv_with(fns[impl], receivers)
    assert [(o, b, p) for o, b, p, _ in got] == expected
    assert all(ip == 0x7F000001 for *_, ip in got)
    # drained: a second call gets nothing
    assert _recv_with(fns[impl], receivers) == []


def test_twins_identical_batches_with_limits(socks) -> None:
    comp = _compiled()
    if comp is None:
        pytest.skip("CTIENGINE_PUREPYTHON=1")
    senders = socks(2)
    receivers = socks(10)
    counts = [7, 0, 3, 12, 1, 0, 5, 9, 2, 4]
    results = []
    for fn in (rtpio.py_recv_batch, comp[0]):
        _fill(senders, receivers, counts)
        _wait_queued(sum(counts), receivers)
        # cap 25 rows and 4 per socket per call: both stop at the same places
        first = _recv_with(fn, receivers, cap=25, max_per_fd=4)
        rest = []
        while True:
            more = _recv_with(fn, receivers, cap=25, max_per_fd=4)
            if not more:
                break
            rest.append(more)
        results.append((first, rest))
    assert results[0] == results[1]
    assert len(results[0][0]) == 25


def test_truncation_same_in_both(socks) -> None:
    comp = _compiled()
    if comp is None:
        pytest.skip("CTIENGINE_PUREPYTHON=1")
    (tx,) = socks(1)
    (rx,) = socks(1)
    out = []
    for fn in (rtpio.py_recv_batch, comp[0]):
        tx.sendto(bytes(range(200)), rx.getsockname())
        _wait_queued(1, [rx])
        out.append(_recv_with(fn, [rx], slot=64))
    assert out[0] == out[1] and out[0][0][1] == bytes(range(64))


@pytest.mark.parametrize("impl", ["python", "compiled"])
def test_send_batch_mixed_sockets_and_destinations(socks, impl) -> None:
    comp = _compiled()
    fn = rtpio.py_send_batch
    if impl == "compiled":
        if comp is None:
            pytest.skip("CTIENGINE_PUREPYTHON=1")
        fn = comp[1]
    senders = socks(3)
    receivers = socks(5)
    rows = 150  # > 64 per run from one socket: several sendmmsg calls
    fds = np.array([senders[0].fileno()] * 100 + [senders[1].fileno()] * 30 + [senders[2].fileno()] * 20, np.int32)
    data = np.zeros((rows, 200), np.uint8)
    lengths = np.zeros(rows, np.int32)
    ips = np.full(rows, 0x7F000001, np.uint32)
    ports = np.zeros(rows, np.int32)
    for i in range(rows):
        payload = bytes(RtpPacket(8, i, i * 160, 1, bytes([i]) * (20 + i % 50)))
        data[i, : len(payload)] = np.frombuffer(payload, np.uint8)
        lengths[i] = len(payload)
        ports[i] = receivers[i % 5].getsockname()[1]
    assert fn(fds, data, lengths, ips, ports) == rows
    _wait_queued(rows, receivers)
    got = _recv_with(rtpio.py_recv_batch, receivers, cap=400, max_per_fd=100)
    by_rx: dict[int, list[bytes]] = {}
    for o, b, port, _ in got:
        by_rx.setdefault(o, []).append(b)
    for j in range(5):
        want = [bytes(data[i, : lengths[i]]) for i in range(rows) if i % 5 == j]
        assert by_rx[j] == want  # per-destination order kept


def test_send_to_closed_port_is_skipped_not_fatal(socks) -> None:
    (tx,) = socks(1)
    (rx,) = socks(1)
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    fds = np.array([tx.fileno()] * 3, np.int32)
    data = np.full((3, 16), 7, np.uint8)
    lengths = np.full(3, 16, np.int32)
    ips = np.full(3, 0x7F000001, np.uint32)
    ports = np.array([dead_port, rx.getsockname()[1], rx.getsockname()[1]], np.int32)
    assert rtpio.send_batch(fds, data, lengths, ips, ports) >= 2
    _wait_queued(2, [rx])
    got = _recv_with(rtpio.recv_batch, [tx, rx])
    assert [o for o, *_ in got].count(1) == 2


def test_recv_buffers_helper_and_ip_helpers(socks) -> None:
    (tx,) = socks(1)
    rx = socks(2)
    tx.sendto(b"abc", rx[1].getsockname())
    _wait_queued(1, rx)
    buf = rtpio.RecvBuffers(16, 32)
    n = buf.receive(np.array([r.fileno() for r in rx], np.int32))
    assert n == 1 and buf.owners[0] == 1 and bytes(buf.data[0, : buf.lengths[0]]) == b"abc"
    assert rtpio.int_to_ip(rtpio.ip_to_int("127.0.0.1")) == "127.0.0.1"
    expect = "python" if pure_python_forced() else "cython"
    assert rtpio.IMPLEMENTATION == expect
