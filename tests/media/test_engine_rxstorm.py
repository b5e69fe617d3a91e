"""A receive storm must not stop the media clock.

``MediaEngine._receive`` once called ``recv_batch`` again for as long as it
filled the receive buffer; every call restarted at the first socket.  With a
backlog on many legs (the load driver at 1,000 calls after a slow compile)
the loop drained the first sockets over and over, never returned while
packets kept arriving, and not one tick completed (engine at 100 % CPU,
no audio out).  A tick now makes one pass over the sockets and takes at most
``max_per_socket`` datagrams from each; the rest waits for the next tick.

The other half of that stall: a leg without a stream yet learned its SSRC
on the per-packet slow path, and so did every packet of that batch (all
were classified before the first one set the SSRC).  After adding 1,000
calls the first tick parsed 16,000 packets one by one (about 0.5 ms each)
and ran for seconds.  New streams are now adopted in one batch.
Real UDP sockets on loopback, bounded in packets and ticks.
"""
from __future__ import annotations

import socket

import pytest

from mediart_peers import RtpPeer
from media.engine import MediaConfig, MediaEngine

pytestmark = pytest.mark.twin

LEGS = 300          # 300 x 8 > the receive buffer (2 x capacity rows): several chunks per pass
BACKLOG = 20        # datagrams queued on every leg's socket before the tick
PER_SOCKET = 8


def _pending(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(2048, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return n
        n += 1


def test_one_tick_reads_each_socket_once_and_at_most_max_per_socket() -> None:
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0, rtp_timeout_s=0,
                                     max_per_socket=PER_SOCKET, latch_window_s=0))
    # a handful of peer sockets, each feeding many legs (one socket per leg would be 600 fds)
    peers = [RtpPeer(f"p{i}", 400.0 + 50 * i) for i in range(4)]
    legs = []
    try:
        for i in range(LEGS):
            peer = peers[i % len(peers)]
            leg = engine.create_leg(f"leg{i}", call_id=f"storm-{i}", remote=peer.address)
            legs.append(leg)
        for leg in legs:
            peer = peers[int(leg.leg_id[3:]) % len(peers)]
            peer.target = ("127.0.0.1", leg.local_port)
            for _ in range(BACKLOG):
                peer.send()
        assert engine._recv.capacity < LEGS * PER_SOCKET  # the storm exceeds one buffer
        slow = []
        per_packet = engine._slow_packet
        engine._slow_packet = lambda s, data, now: (slow.append(s), per_packet(s, data, now))  # type: ignore[method-assign]
        engine.run_tick(0, 100.0)
        # new legs' first packets (plain PCMU) take the batch path: none parsed one by one
        assert slow == []
        # every socket was visited once: exactly PER_SOCKET taken, the rest still queued
        remaining = [_pending(leg.sock) for leg in legs]
        assert remaining == [BACKLOG - PER_SOCKET] * LEGS
        # ... and each datagram was credited to its own leg (owners offset per chunk)
        received = [engine.leg_statistics(leg.leg_id).packets_received for leg in legs]
        assert received == [PER_SOCKET] * LEGS
    finally:
        engine.close()
        for p in peers:
            p.sock.close()


def test_ticks_keep_running_while_every_socket_is_flooded() -> None:
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0, rtp_timeout_s=0,
                                     max_per_socket=PER_SOCKET, latch_window_s=0))
    peer = RtpPeer("flood", 700.0)
    legs = [engine.create_leg(f"f{i}", call_id=f"flood-{i}", remote=peer.address) for i in range(LEGS)]
    try:
        for k in range(10):
            # each tick, every leg gets more than a tick can take (a sender faster than the clock)
            for leg in legs:
                peer.target = ("127.0.0.1", leg.local_port)
                for _ in range(PER_SOCKET + 2):
                    peer.send()
            engine.run_tick(k, 100.0 + 0.02 * k)
        received = [engine.leg_statistics(leg.leg_id).packets_received for leg in legs]
        # bounded work per tick: 10 ticks take 10 x PER_SOCKET per leg, no more, no fewer
        assert received == [10 * PER_SOCKET] * LEGS
    finally:
        engine.close()
        peer.sock.close()


def test_a_second_source_on_a_new_leg_still_takes_the_slow_path() -> None:
    """Batch adoption takes the first packet's SSRC; a packet from another SSRC in the
    same batch is still handled per packet (the RFC 3550 §8.2 new-source rule)."""
    engine = MediaEngine(MediaConfig(port_range=None, rtcp_interval_s=0, rtp_timeout_s=0, latch_window_s=0))
    first, second = RtpPeer("first", 500.0), RtpPeer("second", 900.0)
    try:
        leg = engine.create_leg("x", call_id="ssrc-1", remote=first.address)
        for p in (first, second):
            p.target = ("127.0.0.1", leg.local_port)
        first.send()
        first.send()
        second.send()
        slow = []
        per_packet = engine._slow_packet
        engine._slow_packet = lambda s, data, now: (slow.append(data), per_packet(s, data, now))  # type: ignore[method-assign]
        engine.run_tick(0, 100.0)
        assert len(slow) == 1 and int.from_bytes(slow[0][8:12], "big") == second.ssrc
        # the slow path switched the leg to the newest source (audio from a new SSRC resets the stream)
        assert int(engine._rx_ssrc[leg.slot]) == second.ssrc
        assert engine.leg_statistics("x").packets_received == 1
    finally:
        engine.close()
        first.sock.close()
        second.sock.close()
