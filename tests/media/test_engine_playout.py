"""The engine's per-leg jitter buffers (media/playout.py) over real loopback
RTP, driven with an injected clock: peers whose packets cross a simulated
network (random delay, reordering, loss) and whose clocks run ±0.5 % off the
engine's, for a minute of simulated time each.

The sender's audio is a talkspurt pattern that makes the delivered audio
checkable frame by frame: every second of the sender's clock, one frame of
2000 Hz (a "pip", its timestamp), 39 frames of 1000 Hz, 10 frames of
silence.  Both tones have a whole number of cycles per 20 ms frame, so a
repeated frame (concealment, insertion) is phase-continuous and every frame
the engine delivers must be either quiet or almost pure 1000/2000 Hz.
The pips give the end-to-end delay at each second: it must not grow.
"""
from __future__ import annotations

import heapq
import random

import numpy as np
import pytest

from mediart_peers import RtpPeer
from media import g711
from media.engine import MediaConfig, MediaEngine
from media.errors import LocalMediaError
from media.playout import PlayoutBuffers, PlayoutSettings

pytestmark = pytest.mark.twin  # the engine runs on media.rtpio: both twins, end to end

FRAME = 160
TICK = 0.02
T0 = 500.0
AMP = 6000.0
_n = np.arange(FRAME)
TONE = g711.ulaw_encode(np.round(AMP * np.sin(2 * np.pi * 1000 * _n / 8000)).astype(np.int16)).tobytes()
PIP = g711.ulaw_encode(np.round(AMP * np.sin(2 * np.pi * 2000 * _n / 8000)).astype(np.int16)).tobytes()
QUIET = g711.ulaw_encode(np.zeros(FRAME, np.int16)).tobytes()
FRAMES_PER_S = 50


def content(n: int) -> bytes:
    i = n % FRAMES_PER_S
    return PIP if i == 0 else TONE if i < 40 else QUIET


class JitteryPeer(RtpPeer):
    """A phone behind a bad network: frame ``n`` leaves at ``n * 20 ms / (1 + drift)``
    of the engine's clock and arrives after ``base + exponential(jitter)`` (bounded),
    some packets are lost, some held back so they arrive after their successor."""

    def __init__(self, name: str, rng: random.Random, drift: float, jitter_s, loss: float = 0.0,
                 swap: float = 0.0, base_s: float = 0.005, max_delay_s: float = 0.15) -> None:
        super().__init__(name, None)
        self.rng = rng
        self.drift = drift
        self.jitter_s = jitter_s  # a float, or a function of the send time
        self.loss = loss
        self.swap = swap
        self.base_s = base_s
        self.max_delay_s = max_delay_s
        self.n = 0
        self.queue: list[tuple[float, int, bytes]] = []
        self.sent_at: dict[int, float] = {}  # frame number -> send time (engine clock)
        self.lost: set[int] = set()

    def produce_until(self, t: float) -> None:
        while T0 + self.n * TICK / (1.0 + self.drift) <= t:
            n = self.n
            self.n += 1
            t_send = T0 + n * TICK / (1.0 + self.drift)
            data = self.packet(content(n))
            self.sent_at[n] = t_send
            # pips and their neighbours always arrive (they carry the delay measurement)
            if n % FRAMES_PER_S not in (0, 1, 49) and self.rng.random() < self.loss:
                self.lost.add(n)
                continue
            j = self.jitter_s(t_send - T0) if callable(self.jitter_s) else self.jitter_s
            delay = self.base_s + min(self.rng.expovariate(1.0 / j) if j else 0.0, self.max_delay_s)
            if self.rng.random() < self.swap:
                delay += 0.045  # overtaken by the next two packets
            heapq.heappush(self.queue, (t_send + delay, n, data))

    def deliver_until(self, t: float) -> None:
        self.produce_until(t)
        while self.queue and self.queue[0][0] <= t:
            self.send(heapq.heappop(self.queue)[2])


class Capture(RtpPeer):
    """The other end of the bridge: sends nothing, keeps what the engine sends (one packet a tick)."""

    def frames(self) -> list[np.ndarray]:
        # arrival order (one sender on loopback keeps it); the 16-bit sequence may wrap
        pkts = self.received
        assert all(((q.sequence_number - p.sequence_number) & 0xFFFF) == 1 for p, q in zip(pkts, pkts[1:])), \
            "a tick's packet is missing or out of order"
        return [g711.ulaw_decode(np.frombuffer(p.payload, np.uint8)) for p in pkts]


def goertzel_power(x: np.ndarray, k: int) -> float:
    """Power of DFT bin ``k`` of one frame (2000 Hz = bin 40, 1000 Hz = bin 20 of 160)."""
    return float(abs(np.dot(x, np.exp(-2j * np.pi * k * np.arange(len(x)) / len(x)))) ** 2)


def classify(frame: np.ndarray) -> str:
    x = frame.astype(np.float64)
    energy = float(np.dot(x, x)) * len(x)  # Parseval: sum over all bins of |X|^2 = N * sum x^2
    if np.abs(x).mean() < 150:
        return "quiet"
    p1, p2 = goertzel_power(x, 20), goertzel_power(x, 40)
    # a real signal's bin k and N-k share the power: two bins per tone
    pure = 2 * (p1 + p2) >= 0.9 * energy
    if not pure:
        return "other"
    return "pip" if p2 > p1 else "tone"


class Bench:
    """Engine ticked by hand at T0 + 20 ms × k; each jittery peer bridged to a capture leg."""

    def __init__(self, **config) -> None:
        config.setdefault("rtcp_interval_s", 0)
        config.setdefault("rtp_timeout_s", 0)
        self.engine = MediaEngine(MediaConfig(port_range=None, **config))
        self.peers: list[tuple[str, JitteryPeer, Capture]] = []
        self.k = 0

    def add(self, name: str, peer: JitteryPeer) -> Capture:
        cap = Capture(f"{name}-out", None)
        e = self.engine
        leg = e.create_leg(name, call_id=f"call-{name}", remote=peer.address)
        peer.target = ("127.0.0.1", leg.local_port)
        e.create_leg(f"{name}-out", call_id=f"call-{name}", remote=cap.address)
        e.create_room(f"room-{name}")
        e.join(f"room-{name}", name, hears=())
        e.join(f"room-{name}", f"{name}-out", hears=(name,))
        self.peers.append((name, peer, cap))
        return cap

    def run(self, seconds: float, every_tick=None) -> None:
        for _ in range(int(round(seconds / TICK))):
            now = T0 + TICK * self.k
            for _name, peer, _cap in self.peers:
                peer.deliver_until(now)
            self.engine.run_tick(self.k, now)
            for _name, _peer, cap in self.peers:
                cap.drain()
            if every_tick is not None:
                every_tick(self.k, now)
            self.k += 1

    def close(self) -> None:
        self.engine.close()
        for _name, peer, cap in self.peers:
            peer.close()
            cap.close()


@pytest.fixture
def bench():
    made: list[Bench] = []

    def make(**config) -> Bench:
        b = Bench(**config)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def pip_delays(peer: JitteryPeer, frames: list[np.ndarray], skip_s: float = 2.0) -> tuple[list[float], list[str]]:
    """(delay of each pip the capture heard, classification of every frame after ``skip_s``)."""
    kinds = [classify(f) for f in frames]
    period = FRAMES_PER_S * TICK / (1.0 + peer.drift)
    delays = []
    for j, kind in enumerate(kinds):
        if kind != "pip" or (j and kinds[j - 1] == "pip"):
            continue  # only onsets: a concealed pip repeats
        t_out = T0 + j * TICK
        m = int((t_out - T0) // period)  # the pip sent last before t_out (delays are < 1 s)
        delays.append(t_out - peer.sent_at[m * FRAMES_PER_S])
    return delays, kinds[int(skip_s / TICK):]


def test_minute_of_jitter_loss_reordering_and_drift(bench) -> None:
    b = bench()
    peers = {drift: JitteryPeer(name, random.Random(seed), drift=drift, jitter_s=0.012, loss=0.01, swap=0.02)
             for name, drift, seed in (("fast", 0.005, 7), ("slow", -0.005, 11))}
    caps = {drift: b.add(p.name, p) for drift, p in peers.items()}
    b.run(60.0)
    for drift, peer in peers.items():
        st = b.engine.leg_statistics(peer.name)
        delays, kinds = pip_delays(peer, caps[drift].frames())
        name = peer.name
        # every frame delivered is quiet or a clean 1000/2000 Hz frame: nothing else
        assert kinds.count("other") == 0, f"{name}: {kinds.count('other')} distorted frames"
        # nearly every pip came through, at a delay that is bounded and does not grow
        assert len(delays) >= 57, f"{name}: only {len(delays)} of 60 pips heard"
        assert max(delays) < 0.30, name
        first, last = np.median(delays[2:12]), np.median(delays[-10:])
        assert abs(last - first) < 0.05, f"{name}: delay moved from {first:.3f} s to {last:.3f} s"
        # the sender's 0.3 s of drift was absorbed one frame at a time, not by a jump
        assert st.resyncs == 0, name
        if drift > 0:
            assert 10 <= st.frames_dropped - st.frames_inserted <= 22, (st.frames_dropped, st.frames_inserted)
        else:
            assert st.frames_inserted >= 5, st.frames_inserted
        # continuity: the pattern has one quiet run per second; losses were concealed
        # (no extra gaps), so about one quiet run per second remains
        runs = sum(1 for i in range(1, len(kinds)) if kinds[i] == "quiet" and kinds[i - 1] != "quiet")
        assert 55 <= runs <= 61, f"{name}: {runs} quiet runs in 58 s"
        quiet_share = kinds.count("quiet") / len(kinds)
        assert abs(quiet_share - 0.2) < 0.03, (name, quiet_share)
        # the RFC 3550 figures saw what the network did
        assert st.packets_lost == len(peer.lost) > 10, name
        assert st.concealed_frames >= len(peer.lost), name
        # and the depth kept up with the slow sender: few late packets, few underruns
        # (without the drift steps: 65 late, 106 concealed for 27 lost, measured)
        assert st.late_packets <= 10 and st.concealed_frames <= len(peer.lost) + 10, (name, st)
        assert st.jitter_ms > 2, name


def test_depth_follows_the_jitter_up_and_down(bench) -> None:
    def jitter(t: float) -> float:
        return 0.030 if 8.0 <= t < 20.0 else 0.001

    b = bench()
    peer = JitteryPeer("a", random.Random(3), drift=0.0, jitter_s=jitter, max_delay_s=0.14)
    cap = b.add("a", peer)
    samples: list[tuple[float, float, int]] = []

    def watch(k: int, now: float) -> None:
        if k % 10 == 0:
            st = b.engine.leg_statistics("a")
            samples.append((now - T0, st.target_delay_ms, st.concealed_frames))

    b.run(36.0, watch)
    delays, kinds = pip_delays(peer, cap.frames())
    assert kinds.count("other") == 0

    def phase(lo: float, hi: float) -> list[float]:
        return [target for t, target, _ in samples if lo <= t < hi]

    calm, rough, calm_again = phase(5, 8), phase(14, 20), phase(33, 36)
    assert max(calm) <= 40.0
    assert min(rough) >= 2 * max(calm), (max(calm), min(rough))
    assert max(calm_again) < min(rough)
    # in the rough phase's second half the buffer holds: few concealed frames
    conc = {round(t): c for t, _, c in samples}
    assert conc[20] - conc[14] <= 10, f"{conc[20] - conc[14]} frames concealed in 6 s of rough network"
    # pips: the delay went up with the jitter, and came back down afterwards
    assert np.median(delays[3:8]) < np.median(delays[14:20]) - 0.02
    assert np.median(delays[-3:]) < np.median(delays[14:20]) - 0.02


def test_talkspurts_after_silence_suppression_restart_with_a_margin(bench) -> None:
    b = bench()
    peer = JitteryPeer("a", random.Random(5), drift=0.0, jitter_s=0.004)
    cap = b.add("a", peer)
    b.run(3.0)
    # the phone stops sending for 2 s (RFC 3551 §4.1 silence suppression): sequence
    # numbers continue, the timestamp jumps, the first packet after has the marker
    paused = peer.n
    peer.produce_until(T0 + 3.0)
    peer.queue.clear()
    skip = int(2.0 / TICK)
    peer.ts = (peer.ts + skip * FRAME) & 0xFFFFFFFF
    peer.n += skip
    peer.sent_at.update({n: T0 + n * TICK for n in range(paused, peer.n)})
    b.run(2.0)
    before = b.engine.leg_statistics("a")
    b.run(3.0)
    st = b.engine.leg_statistics("a")
    assert st.resyncs == 0 and st.late_packets == 0
    assert st.playout_delay_ms <= 80
    kinds = [classify(f) for f in cap.frames()]
    assert kinds.count("other") == 0
    # after the pause the tone is back, with no more concealment than the pause itself caused
    assert kinds[-120:].count("tone") >= 70
    assert st.concealed_frames - before.concealed_frames == 0


def test_sequence_jumps_resynchronise(bench) -> None:
    b = bench()
    peer = JitteryPeer("a", random.Random(9), drift=0.0, jitter_s=0.002)
    cap = b.add("a", peer)
    b.run(2.0)
    peer.seq = (peer.seq + 3000) & 0xFFFF  # far ahead of anything the ring holds
    b.run(2.0)
    assert b.engine.leg_statistics("a").resyncs == 1
    peer.seq = (peer.seq - 20000) & 0xFFFF  # moved back, same SSRC: five late packets, then idle
    b.run(2.0)
    st = b.engine.leg_statistics("a")
    assert st.resyncs == 2 and st.late_packets == 5
    kinds = [classify(f) for f in cap.frames()]
    assert kinds.count("other") == 0
    assert kinds[-40:].count("tone") >= 25  # playing again after each jump


def test_settings_are_checked() -> None:
    with pytest.raises(LocalMediaError, match="cannot hold jitter_max_ms"):
        MediaEngine(MediaConfig(port_range=None, playout_slots=8, jitter_max_ms=200))
    with pytest.raises(LocalMediaError, match="depth bounds"):
        PlayoutBuffers(PlayoutSettings(min_depth_ms=60, max_depth_ms=40))
    with pytest.raises(LocalMediaError, match="conceal_gains"):
        PlayoutBuffers(PlayoutSettings(conceal_gains=(1.5,)))
