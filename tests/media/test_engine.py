"""MediaEngine over real loopback RTP: DTMF both ways, playout under loss and
reordering, statistics against the RFC 3550 reference, bad input, RTP
timeout, RTCP, players, recorders, directions, the asyncio clock, ports."""
from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from mediart_peers import AMPLITUDE, RtpPeer, heard
from media import g711
from media.dtmf import Rfc4733Receiver, dtmf_tone, rfc4733_packets
from media.engine import MediaConfig, MediaEngine
from media.errors import LocalMediaError
from media.events import DtmfReceived, PlaybackFinished, RecordingFailed, RtpTimedOut
from media.player import ArraySource
from media.ports import PortAllocator
from media.rtp import (RtcpReceiverReport, RtcpReportBlock, RtcpSenderReport, RtcpSourceDescription,
                       ReceiveStatistics, RtpPacket, parse_rtcp)

pytestmark = pytest.mark.twin  # the engine runs on media.rtpio: both twins, end to end

TONES = {"a": 500.0, "b": 900.0, "prompt": 1300.0}


class Rig:
    def __init__(self, **config) -> None:
        config.setdefault("rtcp_interval_s", 0)
        self.engine = MediaEngine(MediaConfig(port_range=None, **config))
        self.peers: dict[str, RtpPeer] = {}
        self.k = 0
        self.t0 = 1000.0

    def add(self, name: str, freq: float | None = None, **leg) -> RtpPeer:
        peer = RtpPeer(name, TONES.get(name) if freq is None else freq)
        leg_obj = self.engine.create_leg(name, call_id=f"call-{name}", remote=peer.address, **leg)
        peer.target = ("127.0.0.1", leg_obj.local_port)
        self.peers[name] = peer
        return peer

    @property
    def now(self) -> float:
        return self.t0 + 0.02 * self.k

    def tick(self, send: dict[str, list[bytes]] | None = None, silent: set[str] = frozenset()) -> None:
        for name, p in self.peers.items():
            if send is not None and name in send:
                for data in send[name]:
                    p.send(data)
            elif name not in silent:
                p.send()
        self.engine.run_tick(self.k, self.now)
        self.k += 1
        for p in self.peers.values():
            p.drain()

    def events(self) -> list:
        out = []
        while (ev := self.engine.next_event()) is not None:
            out.append(ev)
        return out

    def close(self) -> None:
        self.engine.close()
        for p in self.peers.values():
            p.close()


@pytest.fixture
def rig():
    made: list[Rig] = []

    def make(**config) -> Rig:
        r = Rig(**config)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def _bridge(r: Rig) -> None:
    r.engine.create_room("call")
    r.engine.join("call", "a")
    r.engine.join("call", "b")


def test_rfc4733_receive_once_per_digit(rig) -> None:
    r = rig()
    a = r.add("a")
    r.add("b")
    for _ in range(5):
        r.tick()
    ts = a.ts
    for payload, marker in rfc4733_packets("7", 120):
        r.tick(send={"a": [a.packet(payload, payload_type=101, marker=marker, timestamp=ts)]})
    for _ in range(3):
        r.tick()
    digits = [e for e in r.events() if isinstance(e, DtmfReceived)]
    assert [(e.leg_id, e.call_id, e.digit, e.source) for e in digits] == [("a", "call-a", "7", "rfc4733")]
    assert digits[0].duration_ms == pytest.approx(120)


def test_rfc4733_send(rig) -> None:
    r = rig()
    b = r.add("b")
    r.engine.send_dtmf("b", "12#", duration_ms=80)
    for _ in range(40):
        r.tick()
    events = [p for p in b.received if p.payload_type == 101]
    rx = Rfc4733Receiver()
    digits = []
    for p in events:
        digits += [d.digit for d in rx.receive(p.payload, p.timestamp, p.marker, p.ssrc, 0.0)]
    assert "".join(digits) == "12#"
    # one timestamp per event, the first packet of each with the marker bit (RFC 4733 §2.5.1.2)
    assert len({p.timestamp for p in events}) == 3
    assert sum(p.marker for p in events) == 3
    # sequence numbers stay contiguous across audio and events
    seqs = [p.sequence_number for p in b.received]
    assert all((y - x) & 0xFFFF == 1 for x, y in zip(seqs, seqs[1:]))
    with pytest.raises(LocalMediaError, match="not a DTMF digit"):
        r.engine.send_dtmf("b", "x")


def test_inband_dtmf(rig) -> None:
    r = rig()
    a = r.add("a", freq=0.0, inband_dtmf=True)
    tone = np.round(dtmf_tone("9", 120, level_dbm0=-8)).astype(np.int16)
    pcm = np.concatenate([np.zeros(800, np.int16), tone, np.zeros(1600, np.int16)])
    for i in range(0, len(pcm) - 159, 160):
        r.tick(send={"a": [a.packet(g711.ulaw_encode(pcm[i:i + 160]).tobytes())]})
    digits = [(e.digit, e.source) for e in r.events() if isinstance(e, DtmfReceived)]
    assert digits == [("9", "inband")]


def test_loss_is_counted_and_concealed(rig) -> None:
    r = rig()
    a = r.add("a")
    b = r.add("b")
    _bridge(r)
    dropped = 0
    for k in range(80):
        pkt = a.packet()
        if k > 5 and k % 10 == 0:
            dropped += 1
            r.tick(send={"a": []})
        else:
            r.tick(send={"a": [pkt]})
    st = r.engine.leg_statistics("a")
    # the jitter buffer's initial 40 ms margin holds the next frames: each loss
    # is concealed with exactly one frame, and the playout point moves on
    assert st.packets_lost == dropped and st.concealed_frames == dropped
    assert st.packets_received == 80 - dropped and st.late_packets == 0
    assert heard(b.audio(), TONES) == {"a"}


def test_reordering_within_a_tick_is_absorbed(rig) -> None:
    r = rig()
    a = r.add("a")
    r.add("b")
    _bridge(r)
    r.tick()
    for _ in range(20):
        p1, p2 = a.packet(), a.packet()
        r.tick(send={"a": [p2, p1]})  # two frames arrive swapped
        r.tick(send={"a": []})
    st = r.engine.leg_statistics("a")
    assert st.packets_lost == 0 and st.late_packets == 0 and st.concealed_frames == 0


def test_jitter_matches_rfc3550_reference(rig) -> None:
    r = rig()
    a = r.add("a")
    ref = ReceiveStatistics()
    for k in range(200):
        ts = a.ts + (80 if k % 3 == 0 else -40 if k % 3 == 1 else 0)  # timestamp wobble
        data = a.packet(timestamp=ts & 0xFFFFFFFF)
        a.ts = (a.ts + 160) & 0xFFFFFFFF
        ref.add(RtpPacket.parse(data), r.now)
        r.tick(send={"a": [data]})
    st = r.engine.leg_statistics("a")
    assert ref.jitter_ms > 2
    assert st.jitter_ms == pytest.approx(ref.jitter_ms, rel=0.05)


def test_new_ssrc_resets_stream(rig) -> None:
    r = rig()
    a = r.add("a")
    b = r.add("b")
    _bridge(r)
    for _ in range(20):
        r.tick()
    a.ssrc ^= 0xFFFF
    a.seq = (a.seq + 30000) & 0xFFFF
    for _ in range(60):
        r.tick()
    st = r.engine.leg_statistics("a")
    assert st.packets_received == 60 and st.packets_lost == 0
    b.received = b.received[30:]
    assert heard(b.audio(), TONES) == {"a"}


def test_bad_packets_are_dropped_and_counted(rig) -> None:
    r = rig()
    a = r.add("a")
    b = r.add("b")
    _bridge(r)
    junk = [b"", b"\x00" * 5, b"\x40" * 40, bytes.fromhex("8f00000100000000000000"), b"\xff" * 300]
    for k in range(60):
        extra = [junk[k % len(junk)]] if k % 2 else []
        if k % 7 == 3:
            extra.append(a.packet(b"\x00" * 33, payload_type=96))  # unnegotiated payload type
        r.tick(send={"a": extra + [a.packet()]})
    leg = r.engine.legs["a"]
    assert leg.malformed >= 30
    st = r.engine.leg_statistics("a")
    # the payload-96 packets share the stream's sequence space: received, not lost
    assert st.packets_received == st.packets_expected == 69 and st.packets_lost == 0
    assert heard(b.audio(), TONES) == {"a"}


def test_rtp_timeout_once_then_rearmed(rig) -> None:
    r = rig(rtp_timeout_s=0.3)
    r.engine.legs  # noqa: B018
    r.add("a")
    for _ in range(5):
        r.tick()
    for _ in range(40):
        r.tick(silent={"a"})
    evs = [e for e in r.events() if isinstance(e, RtpTimedOut)]
    assert len(evs) == 1 and evs[0].leg_id == "a" and evs[0].silent_s >= 0.3
    for _ in range(5):
        r.tick()
    for _ in range(40):
        r.tick(silent={"a"})
    assert len([e for e in r.events() if isinstance(e, RtpTimedOut)]) == 1


def test_rtcp_reports_both_ways(rig) -> None:
    r = rig(rtcp_interval_s=0.2)
    a = r.add("a", rtcp_mux=True)
    leg = r.engine.legs["a"]
    dropped = 0
    for k in range(60):
        if k % 5 == 2:
            a.packet()
            dropped += 1
            r.tick(send={"a": []})
        else:
            r.tick()
    compounds = [parse_rtcp(d) for d in a.rtcp]
    assert all(isinstance(c[-1], RtcpSourceDescription) and c[-1].chunks[0][0] == leg.ssrc for c in compounds)
    srs = [p for c in compounds for p in c if isinstance(p, RtcpSenderReport)]
    assert len(srs) >= 4 and srs[-1].ssrc == leg.ssrc
    blk = srs[-1].reports[0]
    assert blk.ssrc == a.ssrc and 0 < blk.packets_lost <= r.engine.leg_statistics("a").packets_lost
    assert blk.fraction_lost == pytest.approx(256 * 0.2, abs=15)
    # the remote's view of our stream comes from its RR
    rr = RtcpReceiverReport(a.ssrc, (RtcpReportBlock(leg.ssrc, 64, 3, 100, 160),))
    r.tick(send={"a": [bytes(rr), a.packet()]})
    st = r.engine.leg_statistics("a")
    assert st.remote_fraction_lost == 0.25 and st.remote_jitter_ms == 20.0


def test_play_to_leg_then_finished(rig) -> None:
    r = rig()
    a = r.add("a", freq=0.0)
    t = np.arange(8000)
    prompt = np.round(AMPLITUDE * np.sin(2 * np.pi * TONES["prompt"] * t / 8000)).astype(np.int16)
    pid = r.engine.play(ArraySource(prompt), leg_id="a")
    for _ in range(55):
        r.tick()
    assert heard(a.audio(skip_frames=0)[:8000], TONES) == {"prompt"}
    assert [e for e in r.events() if isinstance(e, PlaybackFinished)] == [PlaybackFinished(pid, "a", None, "completed")]
    assert not a.audio(skip_frames=51).any()  # silence after the prompt


def test_stop_playback_and_destroy_room(rig) -> None:
    r = rig()
    r.add("a")
    r.engine.create_room("x")
    r.engine.join("x", "a")
    p1 = r.engine.play(ArraySource(np.zeros(80000, np.int16)), room_id="x")
    p2 = r.engine.play(ArraySource(np.zeros(80000, np.int16)), leg_id="a")
    r.tick()
    r.engine.stop_playback(p2)
    r.engine.destroy_room("x")
    reasons = sorted((e.player_id, e.reason) for e in r.events() if isinstance(e, PlaybackFinished))
    assert reasons == sorted([(p1, "stopped"), (p2, "stopped")])
    assert r.engine.players == {} and r.engine.rooms == {}
    r.tick()


def test_failing_recorder_is_removed_calls_go_on(rig) -> None:
    class FullDisk:
        def write_frame(self, frame):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    r = rig()
    r.add("a")
    b = r.add("b")
    _bridge(r)
    r.engine.record("call", "rec", FullDisk(), channels=[["a"], ["b"]])
    for _ in range(40):
        r.tick()
    evs = [e for e in r.events() if isinstance(e, RecordingFailed)]
    assert len(evs) == 1 and "No space" in evs[0].error
    assert "rec" not in r.engine.rooms["call"].members
    assert heard(b.audio(), TONES) == {"a"}


def test_directions(rig) -> None:
    r = rig()
    a = r.add("a")
    b = r.add("b")
    _bridge(r)
    r.engine.update_leg("a", direction="recvonly")  # a put us on hold: we stop sending to a
    for _ in range(40):
        r.tick()
    assert len(a.received) == 0 and heard(b.audio(), TONES) == {"a"}
    r.engine.update_leg("a", direction="inactive")
    b.received.clear()
    for _ in range(40):
        r.tick()
    assert heard(b.audio(), TONES) == set()
    r.engine.update_leg("a", direction="sendrecv", codec="PCMA")
    a.codec = "PCMA"
    for _ in range(40):
        r.tick()
    assert heard(a.audio(), TONES) == {"b"}


def test_destroy_leg_and_errors(rig) -> None:
    r = rig()
    r.add("a")
    r.add("b")
    _bridge(r)
    for _ in range(10):
        r.tick()
    port = r.engine.legs["a"].local_port
    st = r.engine.destroy_leg("a")
    assert st.packets_received == 10 and st.packets_sent == 10
    assert "a" not in r.engine.rooms["call"].members
    assert port not in r.engine.ports.in_use
    r.peers.pop("a").close()
    r.tick()
    with pytest.raises(LocalMediaError, match="no leg a"):
        r.engine.destroy_leg("a")
    with pytest.raises(LocalMediaError, match="leg b already exists"):
        r.engine.create_leg("b")
    with pytest.raises(LocalMediaError, match="codec G729 not supported"):
        r.engine.update_leg("b", codec="G729")
    with pytest.raises(LocalMediaError, match="not an IPv4 address"):
        r.engine.update_leg("b", remote=("example.invalid", 4000))
    with pytest.raises(LocalMediaError, match="exactly one of leg_id and room_id"):
        r.engine.play(ArraySource(np.zeros(160, np.int16)))
    with pytest.raises(LocalMediaError, match="no room nope"):
        r.engine.join("nope", "b")


def test_asyncio_real_time() -> None:
    """Two peers on loop timers for 1.5 s against the engine on the same loop."""

    async def main() -> tuple[set[str], set[str], MediaEngine]:
        engine = MediaEngine(MediaConfig(port_range=None))
        peers = {n: RtpPeer(n, TONES[n]) for n in ("a", "b")}
        for n, p in peers.items():
            p.target = ("127.0.0.1", engine.create_leg(n, remote=p.address).local_port)
        engine.create_room("call")
        engine.join("call", "a")
        engine.join("call", "b")
        await engine.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k in range(75):
            await asyncio.sleep(max(0.0, t0 + 0.02 * k - loop.time()))
            for p in peers.values():
                p.send()
                p.drain()
        await asyncio.sleep(0.1)
        for p in peers.values():
            p.drain()
        await engine.stop()
        res = heard(peers["a"].audio(), TONES), heard(peers["b"].audio(), TONES)
        for p in peers.values():
            p.close()
        return res[0], res[1], engine

    a_hears, b_hears, engine = asyncio.run(main())
    assert a_hears == {"b"} and b_hears == {"a"}
    assert engine.tick_stats.count >= 70 and engine.legs == {}


def test_port_allocator_range() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    base = probe.getsockname()[1] & ~1
    probe.close()
    alloc = PortAllocator("127.0.0.1", (base, base + 5))
    assert alloc.capacity == 3
    socks = []
    try:
        while True:
            try:
                socks.append(alloc.allocate())
            except LocalMediaError as exc:
                assert "exhausted" in str(exc)
                break
        ports = [s.getsockname()[1] for s in socks]
        assert all(p % 2 == 0 and base <= p <= base + 5 for p in ports) and len(ports) <= 3
        if socks:
            alloc.release(socks.pop(0))
            s = alloc.allocate()
            socks.append(s)
    finally:
        for s in socks:
            s.close()
    with pytest.raises(LocalMediaError, match="within 1024-65535"):
        PortAllocator("127.0.0.1", (80, 90))


def test_capacity_grows_past_initial_arrays(rig) -> None:
    """150 legs (initial arrays hold 64) and 20 players (initial 16), all bridged."""
    r = rig()
    pairs = 75
    for c in range(pairs):
        r.add(f"a{c}", freq=300.0 + 40 * (c % 10))
        r.add(f"b{c}", freq=None)
        r.engine.create_room(f"room{c}")
        r.engine.join(f"room{c}", f"a{c}")
        r.engine.join(f"room{c}", f"b{c}")
    for c in range(20):
        r.engine.play(ArraySource(np.zeros(16000, np.int16)), room_id=f"room{c}", heard_by=[f"a{c}"])
    assert r.engine._cap >= 150 and r.engine._pcap >= 20
    for _ in range(30):
        r.tick()
    for c in range(pairs):
        b = r.peers[f"b{c}"]
        want = 300.0 + 40 * (c % 10)
        names = {"a": want} | {f"other{f}": f for f in (300.0 + 40 * i for i in range(10)) if f != want}
        assert heard(b.audio(skip_frames=5), names) == {"a"}, c
