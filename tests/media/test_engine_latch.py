"""Symmetric RTP latching (media/latch.py) with real sockets on loopback: a
phone behind a NAT (its SDP address is not where its packets come from), and
the hijack fences -- the signalled address wins, the stream's SSRC and
payload type, one consistent source, the window, re-INVITEs."""
from __future__ import annotations

import socket

import pytest

from mediart_peers import RtpPeer, heard
from media.engine import MediaConfig, MediaEngine
from media.events import RtpLatched

pytestmark = pytest.mark.twin  # the engine runs on media.rtpio: both twins, end to end

TONES = {"phone": 700.0, "agent": 1100.0}


class Nat:
    """The engine, an agent peer bridged to a phone whose SDP names ``sdp`` (a socket
    that only listens) while it sends from ``phone`` -- the NAT's public side."""

    def __init__(self, **config) -> None:
        config.setdefault("rtcp_interval_s", 0)
        config.setdefault("rtp_timeout_s", 0)
        self.engine = MediaEngine(MediaConfig(port_range=None, **config))
        self.sdp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sdp.bind(("127.0.0.1", 0))
        self.sdp.setblocking(False)
        self.phone = RtpPeer("phone", TONES["phone"])
        self.agent = RtpPeer("agent", TONES["agent"])
        leg = self.engine.create_leg("phone", call_id="call-1", remote=self.sdp.getsockname())
        self.phone.target = ("127.0.0.1", leg.local_port)
        agent_leg = self.engine.create_leg("agent", call_id="call-1", remote=self.agent.address)
        self.agent.target = ("127.0.0.1", agent_leg.local_port)
        self.engine.create_room("call")
        self.engine.join("call", "phone")
        self.engine.join("call", "agent")
        self.k = 0
        self.others: list[RtpPeer] = []

    @property
    def now(self) -> float:
        return 100.0 + 0.02 * self.k

    def tick(self, senders: list[RtpPeer] | None = None) -> None:
        for p in (senders if senders is not None else [self.phone]):
            p.send()
        self.agent.send()
        self.engine.run_tick(self.k, self.now)
        self.k += 1
        for p in [self.phone, self.agent, *self.others]:
            p.drain()

    def sdp_received(self) -> int:
        n = 0
        while True:
            try:
                self.sdp.recv(2048)
            except BlockingIOError:
                return n
            n += 1

    def latched(self) -> list[RtpLatched]:
        out = []
        while (ev := self.engine.next_event()) is not None:
            if isinstance(ev, RtpLatched):
                out.append(ev)
        return out

    def close(self) -> None:
        self.engine.close()
        for p in [self.phone, self.agent, *self.others]:
            p.close()
        self.sdp.close()


@pytest.fixture
def nat():
    made: list[Nat] = []

    def make(**config) -> Nat:
        n = Nat(**config)
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()


def impostor(n: Nat, like: RtpPeer | None = None) -> RtpPeer:
    """A second sender aimed at the phone's leg (copying ``like``'s SSRC and sequence when given)."""
    p = RtpPeer("impostor", 1900.0)
    p.target = n.phone.target
    if like is not None:
        p.ssrc, p.seq, p.ts = like.ssrc, (like.seq + 2) & 0xFFFF, like.ts
    n.others.append(p)
    return p


def test_phone_behind_nat_is_latched_and_hears_the_agent(nat) -> None:
    n = nat()
    n.tick()
    n.tick()
    assert n.latched() == [] and n.phone.received == []  # two packets: not yet
    n.tick()
    events = n.latched()
    assert events == [RtpLatched("phone", "call-1", n.sdp.getsockname(), n.phone.address)]
    assert n.engine.legs["phone"].remote == n.phone.address
    before = n.sdp_received()
    assert 1 <= before <= 4  # what went to the SDP address before the latch
    for _ in range(60):
        n.tick()
    assert n.sdp_received() == 0
    assert heard(n.phone.audio(skip_frames=5), TONES) == {"agent"}
    assert heard(n.agent.audio(), TONES) == {"phone"}
    assert n.latched() == []  # once


def test_signalled_address_wins(nat) -> None:
    """A phone that sends from its SDP address is never latched away from it, even by
    a copy of its own stream (same SSRC, payload type and sequence) from elsewhere."""
    n = nat()
    honest = RtpPeer("honest", TONES["phone"])
    honest.sock.close()
    honest.sock = n.sdp  # the phone really is at its SDP address
    honest.target = n.phone.target
    fake = impostor(n, like=honest)
    n.tick([honest])
    for _ in range(20):
        n.tick([honest, fake])
    assert n.latched() == []
    assert n.engine.legs["phone"].remote == n.sdp.getsockname()


def test_wrong_ssrc_or_payload_type_never_latches(nat) -> None:
    n = nat()
    n.tick([n.phone])  # the stream (its SSRC) is established by the phone, which then goes quiet
    stranger = impostor(n)  # another SSRC: the engine plays it, but it cannot take the latch
    for _ in range(10):
        n.tick([stranger])
    odd = impostor(n, like=n.phone)
    odd.payload_type = 96  # not negotiated
    for _ in range(10):
        n.tick([odd])
    assert n.latched() == []
    assert n.engine.legs["phone"].remote == n.sdp.getsockname()


def test_alternating_sources_never_latch(nat) -> None:
    n = nat()
    twin = impostor(n, like=n.phone)
    for k in range(30):
        # the same stream from two addresses, one packet each in turn
        src = n.phone if k % 2 == 0 else twin
        other = twin if src is n.phone else n.phone
        src.send()
        other.seq, other.ts = src.seq, src.ts
        n.tick([])
    assert n.latched() == []


def test_no_latch_after_the_window_or_when_off(nat) -> None:
    n = nat(latch_window_s=1.0)
    for _ in range(60):  # 1.2 s: the phone sends nothing yet
        n.tick([])
    for _ in range(10):
        n.tick()
    assert n.latched() == []
    m = nat(latch_window_s=0)
    for _ in range(10):
        m.tick()
    assert m.latched() == [] and m.engine.legs["phone"].remote == m.sdp.getsockname()


def test_reinvite_keeps_or_reopens_the_latch(nat) -> None:
    n = nat(latch_window_s=1.0)
    for _ in range(5):
        n.tick()
    assert len(n.latched()) == 1
    # a re-INVITE with the same SDP address (hold, codec change) keeps the latch, even later
    for _ in range(60):
        n.tick()
    n.engine.update_leg("phone", remote=n.sdp.getsockname())
    assert n.engine.legs["phone"].remote == n.phone.address
    # a new SDP address opens a new window: the NAT moved the phone to a new port
    moved = RtpPeer("moved", TONES["phone"])
    moved.ssrc, moved.seq, moved.ts = n.phone.ssrc, n.phone.seq, n.phone.ts
    moved.target = n.phone.target
    n.others.append(moved)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    try:
        n.engine.update_leg("phone", remote=other.getsockname())
        for _ in range(4):
            n.tick([moved])
        assert [e.latched for e in n.latched()] == [moved.address]
        assert n.engine.legs["phone"].remote == moved.address
    finally:
        other.close()


def test_latch_config_keys_reach_the_media_engine() -> None:
    from engine.config import MediaSection

    m = MediaSection()
    assert (m.rtp_latch_window_s, m.rtp_latch_packets) == (10, 3)
    e = MediaEngine(MediaConfig(port_range=None, latch_window_s=float(m.rtp_latch_window_s),
                                latch_packets=m.rtp_latch_packets))
    try:
        assert (e._latch.window_s, e._latch.packets) == (10.0, 3)
    finally:
        e.close()
